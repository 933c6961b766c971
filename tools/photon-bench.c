/* photon-bench: speed and memory of training steps and of photon-merge.

   For each model it times training steps (the median of several after
   warm-up) and prints ms/step, tokens/s, achieved GFLOP/s and the fraction
   of this machine's matmul peak, which it measures itself on a large square
   product; and the peak resident memory against what the step must hold
   (parameters, gradients, two AdamW moments, the activations). With
   --device cuda (a CUDA build) it times the GPU's training step instead and
   gives model FLOPs utilisation against the GPU's published dense peak for
   the precision used. --merge times
   photon-merge over 8 deltas of GPT-2 124M. Run one configuration per
   process: peak memory is the process's. */
#define PHOTON_IMPLEMENTATION
#include "cli.h"

#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

static const char *usage =
    "usage: photon-bench [--config small|gpt2] [--merge] [options]\n"
    "\n"
    "  --config NAME     small: vocab 50257, 4 layers, 4 heads, width 256, ctx 256\n"
    "                    gpt2:  GPT-2 124M, vocab 50257, 12 layers, 12 heads, width 768, ctx 1024\n"
    "  --batch B --seq T batch and sequence of the timed steps (default 4 x 64)\n"
    "  --steps N         timed steps after 2 warm-up steps (default 5)\n"
    "  --merge           time photon-merge over --deltas deltas of GPT-2 124M instead\n"
    "  --deltas N        deltas for --merge (default 8)\n"
    "  --delta-format F  their format for --merge: f32 (default), bf16, int8, int4\n"
    "  --dir DIR         where --merge writes its files (default /tmp)\n"
    "  --threads N       threads (default: one per core)\n"
    "  --device cpu|cuda time the CPU's step (default) or the GPU's (a CUDA build)\n"
    "  --precision P     GPU matrix products: tf32 (default), fp32 or bf16\n"
    "  --peak-tflops X   the GPU's dense peak for the precision used, for MFU (default:\n"
    "                    known for A100, H100 and H200)\n"
    "  --peak            only measure the matmul peak\n"
    "  --json            one JSON object on stdout\n"
    "  --help, --version\n";

static double peak_rss_mb(int who) {
    struct rusage ru;
    getrusage(who, &ru);
    return (double)ru.ru_maxrss / 1024.0; /* Linux reports KiB */
}

/* GFLOP/s of the library's matrix product on an n x n x n problem, best of 3. */
static double matmul_peak(int n) {
    float *a = (float *)malloc((size_t)n * n * 4), *b = (float *)malloc((size_t)n * n * 4), *c = (float *)malloc((size_t)n * n * 4);
    double best = 1e30;
    size_t i;
    int r;
    for (i = 0; i < (size_t)n * n; i++) a[i] = (float)(i % 13) * 0.01f, b[i] = (float)(i % 7) * 0.01f;
    photon_gemm(n, n, n, a, n, 0, b, n, 0, c, n, 0);
    for (r = 0; r < 3; r++) {
        double t0 = cli_now(), t;
        photon_gemm(n, n, n, a, n, 0, b, n, 0, c, n, 0);
        t = cli_now() - t0;
        if (t < best) best = t;
    }
    free(a), free(b), free(c);
    return 2.0 * n * n * n / best / 1e9;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Model FLOPs of one step: 6 per parameter per token in the matrix products
   (all but the position table), plus attention's scores and mixing, 12 L T C. */
static double step_flops(const photon_model *m, int B, int T) {
    const photon_config *c = &m->config;
    return (6.0 * (double)(m->num_params - (size_t)c->n_ctx * c->n_embd) + 12.0 * c->n_layer * (double)T * c->n_embd) *
           B * T;
}

#ifdef PHOTON_CUDA
/* Dense tensor-core peak in TFLOP/s of the GPUs whose figures are published
   (NVIDIA's data sheets; SXM boards unless the name says PCIe), or 0. */
static double gpu_peak_tflops(const char *name, photon_cuda_precision p) {
    int pcie = strstr(name, "PCIe") != NULL;
    if (strstr(name, "H100") || strstr(name, "H200"))
        return p == PHOTON_CUDA_BF16 ? (pcie ? 756.0 : 989.4) : p == PHOTON_CUDA_TF32 ? (pcie ? 378.0 : 494.7) : (pcie ? 51.2 : 66.9);
    if (strstr(name, "A100")) return p == PHOTON_CUDA_BF16 ? 312.0 : p == PHOTON_CUDA_TF32 ? 156.0 : 19.5;
    return 0.0;
}
#endif

static void bench_training(const char *name, const photon_config *cfg, int B, int T, int steps, int json) {
    photon_model m;
    photon_adamw_state st;
    photon_adamw_config hp = {0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
    photon_schedule sched = {1e-4f, 0, 1000, 0.1f};
    photon_error err;
    int *in = (int *)malloc((size_t)B * T * sizeof(int)), *tg = (int *)malloc((size_t)B * T * sizeof(int)), s, i;
    double *times = (double *)malloc((size_t)steps * sizeof(double)), median, flops, gflops, peak, need_mb, rss;
    uint64_t rng = 1;
    if (photon_model_init(&m, cfg, 1, &err) != PHOTON_OK || photon_adamw_state_init(&st, m.num_params, &err) != PHOTON_OK)
        cli_fail(&err);
    for (i = 0; i < B * T; i++) in[i] = (int)(photon_rand_u64(&rng) % (uint64_t)cfg->vocab_size),
                             tg[i] = (int)(photon_rand_u64(&rng) % (uint64_t)cfg->vocab_size);
    for (s = -2; s < steps; s++) {
        double t0 = cli_now();
        if (photon_train_step(&m, &st, &hp, &sched, in, tg, B, T, NULL, &err) != PHOTON_OK) cli_fail(&err);
        if (s >= 0) times[s] = cli_now() - t0;
    }
    qsort(times, (size_t)steps, sizeof(double), compare_doubles);
    median = times[steps / 2];
    flops = step_flops(&m, B, T);
    gflops = flops / median / 1e9;
    peak = matmul_peak(2048);
    need_mb = (16.0 * (double)m.num_params + 4.0 * (double)photon_activation_floats(cfg, B, T)) /
              1048576.0;
    rss = peak_rss_mb(RUSAGE_SELF);
    if (json) {
        printf("{\"config\":\"%s\",\"params\":%zu,\"batch\":%d,\"seq\":%d,\"threads\":%d,\"ms_per_step\":%.1f,"
               "\"tokens_per_s\":%.0f,\"gflops\":%.1f,\"matmul_peak_gflops\":%.1f,\"fraction_of_peak\":%.3f,"
               "\"peak_rss_mb\":%.0f,\"needed_mb\":%.0f}\n",
               name, m.num_params, B, T, photon_threads(), median * 1e3, B * T / median, gflops, peak, gflops / peak,
               rss, need_mb);
    } else {
        printf("%s: %.1fM parameters, batch %d x %d, %d threads\n", name, m.num_params / 1e6, B, T, photon_threads());
        printf("  %.1f ms/step (median of %d), %.0f tokens/s, %.1f GFLOP/s = %.0f%% of the matmul peak (%.1f GFLOP/s)\n",
               median * 1e3, steps, B * T / median, gflops, 100.0 * gflops / peak, peak);
        printf("  peak memory %.0f MiB; parameters, gradients, AdamW moments and the saved activations take %.0f MiB "
               "(%.2fx)\n",
               rss, need_mb, rss / need_mb);
    }
    free(in), free(tg), free(times);
    photon_adamw_state_free(&st);
    photon_model_free(&m);
}

#ifdef PHOTON_CUDA
static void bench_gpu_training(const char *name, const photon_config *cfg, int B, int T, int steps,
                               const cli_device *dev, double peak_tflops, int json) {
    photon_model m;
    photon_adamw_state st;
    photon_adamw_config hp = {0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
    photon_schedule sched = {1e-4f, 0, 1000, 0.1f};
    photon_error err;
    photon_cuda *gpu;
    int *in = (int *)malloc((size_t)B * T * sizeof(int)), *tg = (int *)malloc((size_t)B * T * sizeof(int)), s, i;
    double *times = (double *)malloc((size_t)steps * sizeof(double)), median, tflops, mfu;
    const char *precision = dev->precision == PHOTON_CUDA_FP32 ? "fp32" : dev->precision == PHOTON_CUDA_BF16 ? "bf16" : "tf32";
    uint64_t rng = 1;
    if (photon_model_init(&m, cfg, 1, &err) != PHOTON_OK || photon_adamw_state_init(&st, m.num_params, &err) != PHOTON_OK)
        cli_fail(&err);
    for (i = 0; i < B * T; i++) in[i] = (int)(photon_rand_u64(&rng) % (uint64_t)cfg->vocab_size),
                             tg[i] = (int)(photon_rand_u64(&rng) % (uint64_t)cfg->vocab_size);
    gpu = cli_gpu_open(dev, &m, &st, B, T);
    /* each step waits for the GPU (its loss and gradient norm come back), so
       wall-clock steps are GPU steps */
    for (s = -3; s < steps; s++) {
        double t0 = cli_now();
        if (photon_cuda_train_step(gpu, &m, &st, &hp, &sched, in, tg, B, T, NULL, &err) != PHOTON_OK) cli_fail(&err);
        if (s >= 0) times[s] = cli_now() - t0;
    }
    qsort(times, (size_t)steps, sizeof(double), compare_doubles);
    median = times[steps / 2];
    tflops = step_flops(&m, B, T) / median / 1e12;
    if (peak_tflops <= 0) peak_tflops = gpu_peak_tflops(photon_cuda_device_name(gpu), dev->precision);
    mfu = peak_tflops > 0 ? tflops / peak_tflops : NAN;
    if (json) {
        printf("{\"config\":\"%s\",\"device\":", name);
        cli_json_string(stdout, photon_cuda_device_name(gpu));
        printf(",\"precision\":\"%s\",\"params\":%zu,\"batch\":%d,\"seq\":%d,\"ms_per_step\":%.2f,"
               "\"tokens_per_s\":%.0f,\"tflops\":%.2f,\"peak_tflops\":%.1f,\"mfu\":",
               precision, m.num_params, B, T, median * 1e3, B * T / median, tflops, peak_tflops);
        cli_json_number(stdout, mfu);
        printf(",\"gpu_memory_mb\":%.0f}\n", photon_cuda_memory(gpu) / 1048576.0);
    } else {
        printf("%s on %s (%s): %.1fM parameters, batch %d x %d\n", name, photon_cuda_device_name(gpu), precision,
               m.num_params / 1e6, B, T);
        printf("  %.2f ms/step (median of %d), %.0f tokens/s, %.1f TFLOP/s", median * 1e3, steps, B * T / median, tflops);
        if (mfu == mfu) printf(" = %.1f%% MFU (peak %.1f TFLOP/s)\n", 100.0 * mfu, peak_tflops);
        else printf(" (MFU: peak unknown for this GPU, give --peak-tflops)\n");
        printf("  GPU memory held by the model: %.0f MiB\n", photon_cuda_memory(gpu) / 1048576.0);
    }
    cli_gpu_close(gpu, NULL, NULL);
    free(in), free(tg), free(times);
    photon_adamw_state_free(&st);
    photon_model_free(&m);
}
#endif

static void bench_merge(const char *dir, int num_deltas, photon_delta_format format, int json) {
    photon_config cfg = {50257, 1024, 12, 12, 768};
    char base[4096], paths[64][4096], base_hash[65];
    const char *delta_paths[64];
    double seconds, gbytes = 0.0, rss, t0, delta_bytes = 0.0, f32_bytes = 0.0;
    int k, status;
    pid_t child;
    photon_error err;
    {   /* the files: a base and deltas from slightly different local models */
        photon_model m;
        float *base_params;
        size_t i;
        uint64_t rng = 7;
        if (photon_model_init(&m, &cfg, 1, &err) != PHOTON_OK) cli_fail(&err);
        snprintf(base, sizeof base, "%s/photon-bench-base.safetensors", dir);
        if (photon_checkpoint_save(&m, base, &err) != PHOTON_OK) cli_fail(&err);
        base_params = (float *)malloc(m.num_params * sizeof(float));
        memcpy(base_params, m.params, m.num_params * sizeof(float));
        if (photon_sha256_file(base, base_hash, &err) != PHOTON_OK) cli_fail(&err);
        for (k = 0; k < num_deltas; k++) {
            photon_delta_info info;
            memset(&info, 0, sizeof info);
            memcpy(info.base_sha256, base_hash, sizeof base_hash);
            info.round = 1, info.local_steps = 64, info.batch = 4, info.seq = 64, info.tokens = 64 * 4 * 64;
            info.loss = 3.0f;
            snprintf(info.client, sizeof info.client, "bench-%d", k);
            info.format = format;
            for (i = 0; i < m.num_params; i++) m.params[i] = base_params[i] + 1e-3f * (photon_rand_uniform(&rng) - 0.5f);
            snprintf(paths[k], sizeof paths[k], "%s/photon-bench-delta-%d.safetensors", dir, k);
            if (photon_delta_save_as(&m, base_params, &info, NULL, paths[k], &err) != PHOTON_OK) cli_fail(&err);
            delta_paths[k] = paths[k];
            {
                struct stat sb;
                if (stat(paths[k], &sb) == 0) delta_bytes = (double)sb.st_size;
            }
            f32_bytes = (double)m.num_params * 4;
            gbytes += delta_bytes / 1e9;
        }
        free(base_params);
        photon_model_free(&m);
    }
    /* the merge in a child process, so its peak memory is its own */
    t0 = cli_now();
    child = fork();
    if (child == 0) {
        photon_merge_options o;
        photon_merge_result res;
        memset(&o, 0, sizeof o);
        photon_outer_defaults(&o.outer, PHOTON_OUTER_FEDAVG);
        o.min_clients = 1;
        if (photon_merge(base, delta_paths, num_deltas, NULL, &o, &res, &err) != PHOTON_OK) cli_fail(&err);
        photon_merge_result_free(&res);
        exit(0);
    }
    waitpid(child, &status, 0);
    seconds = cli_now() - t0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        cli_die("the merge failed");
    }
    rss = peak_rss_mb(RUSAGE_CHILDREN);
    if (json)
        printf("{\"merge_deltas\":%d,\"delta_format\":\"%s\",\"delta_bytes\":%.0f,\"delta_vs_f32\":%.4f,\"threads\":%d,"
               "\"seconds\":%.2f,\"gbytes_read\":%.2f,\"peak_rss_mb\":%.0f,\"model_mb\":%.0f}\n",
               num_deltas, photon_delta_format_name(format), delta_bytes, delta_bytes / f32_bytes, photon_threads(), seconds,
               gbytes, rss, f32_bytes / 1048576.0);
    else
        printf("merge: %d %s deltas of GPT-2 124M, %.1f MB each (%.1f%% of the f32 values), in %.2f s; peak memory %.0f "
               "MiB = %.1f models\n", num_deltas, photon_delta_format_name(format), delta_bytes / 1e6,
               100.0 * delta_bytes / f32_bytes, seconds, rss, rss / (f32_bytes / 1048576.0));
    remove(base);
    for (k = 0; k < num_deltas; k++) remove(paths[k]);
}

int main(int argc, char **argv) {
    cli_args a;
    const char *config = "small", *dir = "/tmp";
    int B = 4, T = 64, steps = 5, merge = 0, deltas = 8, json = 0, peak_only = 0;
    photon_delta_format format = PHOTON_DELTA_F32;
    double peak_tflops = 0.0;
    cli_device dev;
    cli_start("photon-bench");
    cli_device_init(&dev);
    dev.requested = 0; /* the CPU unless --device cuda */
    cli_begin(&a, argc, argv);
    while (cli_next(&a)) {
        cli_help_or_version(&a, usage); /* exits if it was one of them */
        if (cli_device_flag(&a, &dev)) {
            /* --device, --precision */
        } else if (cli_is(&a, "--peak-tflops")) {
            peak_tflops = cli_float(&a, 0.001, 1e6);
        } else if (cli_is(&a, "--config")) {
            config = cli_value(&a);
            if (strcmp(config, "small") != 0 && strcmp(config, "gpt2") != 0)
                cli_usage_error("--config must be small or gpt2, got '%s'", config);
        } else if (cli_is(&a, "--batch")) {
            B = (int)cli_int(&a, 1, 4096);
        } else if (cli_is(&a, "--seq")) {
            T = (int)cli_int(&a, 1, 1024);
        } else if (cli_is(&a, "--steps")) {
            steps = (int)cli_int(&a, 1, 1000);
        } else if (cli_is(&a, "--merge")) {
            cli_no_value(&a);
            merge = 1;
        } else if (cli_is(&a, "--delta-format")) {
            const char *v = cli_value(&a);
            int f = photon_delta_format_parse(v);
            if (f < 0) cli_usage_error("--delta-format must be f32, bf16, int8 or int4, got '%s'", v);
            format = (photon_delta_format)f;
        } else if (cli_is(&a, "--deltas")) {
            deltas = (int)cli_int(&a, 1, 64);
        } else if (cli_is(&a, "--dir")) {
            dir = cli_value(&a);
        } else if (cli_is(&a, "--threads")) {
            photon_set_threads((int)cli_int(&a, 1, PHOTON__MAX_THREADS));
        } else if (cli_is(&a, "--peak")) {
            cli_no_value(&a);
            peak_only = 1;
        } else if (cli_is(&a, "--json")) {
            cli_no_value(&a);
            json = 1;
        } else {
            cli_usage_error("unknown option %s", a.flag[0] ? a.flag : argv[a.i]);
        }
    }
    cli_device_resolve(&dev);
    if (dev.use_cuda && (peak_only || merge)) cli_usage_error("--device cuda times training steps only");
    if (peak_only) {
        double p = matmul_peak(2048);
        if (json) printf("{\"threads\":%d,\"matmul_peak_gflops\":%.1f}\n", photon_threads(), p);
        else printf("matmul peak: %.1f GFLOP/s on a 2048^3 product, %d threads\n", p, photon_threads());
    } else if (merge) {
        bench_merge(dir, deltas, format, json);
    } else {
        int small = strcmp(config, "small") == 0;
        photon_config small_cfg = {50257, 256, 4, 4, 256}, gpt2_cfg = {50257, 1024, 12, 12, 768};
        const photon_config *cfg = small ? &small_cfg : &gpt2_cfg;
        const char *name = small ? "small (vocab 50257, 4 layers, 4 heads, width 256)"
                                 : "GPT-2 124M (vocab 50257, 12 layers, 12 heads, width 768)";
        if (T > cfg->n_ctx) cli_usage_error("--seq %d is longer than the context %d", T, cfg->n_ctx);
#ifdef PHOTON_CUDA
        if (dev.use_cuda) bench_gpu_training(name, cfg, B, T, steps, &dev, peak_tflops, json);
        else
#endif
            bench_training(name, cfg, B, T, steps, json);
        (void)peak_tflops;
    }
    return 0;
}
