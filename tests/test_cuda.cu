/* test_cuda.cu - photon_cuda.cu against photon.h's CPU implementation.

   Built twice: by nvcc for a real GPU (bin/cuda/test_cuda; it prints that it
   was skipped when no GPU is present), and by g++ with PHOTON_CUDA_EMULATE
   (bin/emu/test_cuda), which runs the same kernels on the CPU through
   tests/cuda_emu.h, so the kernels' logic is checked on every machine.

   Every comparison uses random inputs (never zeros), outputs poisoned with
   NaN before the kernel runs, and the normalized mean squared error
   sum (gpu - cpu)^2 / sum cpu^2: at most 1e-7 for FP32 element-wise kernels
   and 5e-4 for tensor-core matrix products; and no NaN or Inf anywhere.
   Arguments select tests by name (--list prints them; tests/check.h). */
#define PHOTON_IMPLEMENTATION
#include "../photon.h"

#include "../photon_cuda.cu"

#include <vector>

#include "check.h"

typedef std::vector<float> vec;

static const double FP32_TOL = 1e-7, TENSOR_TOL = 5e-4;
static uint64_t rng = 0x5eed;

static vec random_vec(size_t n, float scale) {
    vec v(n);
    for (size_t i = 0; i < n; i++) v[i] = (2.0f * photon_rand_uniform(&rng) - 1.0f) * scale;
    return v;
}

static std::vector<int> random_tokens(size_t n, int V) {
    std::vector<int> t(n);
    for (size_t i = 0; i < n; i++) t[i] = (int)(photon_rand_u64(&rng) % (uint64_t)V);
    return t;
}

/* ---------------------------------------------------------------- device buffers */

static std::vector<void *> allocations;

static float *dev_poisoned(size_t n) { /* NaN in every float */
    void *p = NULL;
    if (cudaMalloc(&p, n * sizeof(float) + 4) != cudaSuccess) {
        fprintf(stderr, "test_cuda: cudaMalloc failed\n");
        exit(1);
    }
    cudaMemsetAsync(p, 0xff, n * sizeof(float) + 4, 0);
    allocations.push_back(p);
    return (float *)p;
}

static float *dev_copy(const vec &v) {
    float *d = dev_poisoned(v.size());
    cudaMemcpy(d, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice);
    return d;
}

static int *dev_ints(const std::vector<int> &v) {
    int *d = (int *)dev_poisoned(v.size());
    cudaMemcpy(d, v.data(), v.size() * sizeof(int), cudaMemcpyHostToDevice);
    return d;
}

static vec host_copy(const float *d, size_t n) {
    vec v(n);
    cudaDeviceSynchronize();
    cudaMemcpy(v.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost);
    return v;
}

static void free_all(void) {
    for (size_t i = 0; i < allocations.size(); i++) cudaFree(allocations[i]);
    allocations.clear();
}

/* ---------------------------------------------------------------- comparisons */

static double nmse(const float *got, const float *want, size_t n, size_t *bad) {
    double num = 0.0, den = 0.0;
    *bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (!(got[i] - got[i] == 0.0f)) (*bad)++;
        num += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
        den += (double)want[i] * want[i];
    }
    return den > 0 ? num / den : num;
}

static void expect_close(const char *name, const float *got, const float *want, size_t n, double tol) {
    char detail[200];
    size_t bad;
    double e = nmse(got, want, n, &bad);
    snprintf(detail, sizeof detail, "normalized MSE %.3g (limit %.0e), %zu of %zu values NaN or Inf", e, tol, bad, n);
    expect(bad == 0 && e <= tol, name, detail);
    if (bad == 0 && e <= tol) printf("    %s: normalized MSE %.3g\n", name, e);
}

static void expect_close(const char *name, const vec &got, const vec &want, double tol) {
    expect_close(name, got.data(), want.data(), want.size(), tol);
}

/* ---------------------------------------------------------------- a GPU context */

static photon_config small_config(int V, int ctx, int L, int NH, int C) {
    photon_config c;
    c.vocab_size = V, c.n_ctx = ctx, c.n_layer = L, c.n_head = NH, c.n_embd = C;
    return c;
}

static photon_cuda *open_gpu(photon_model *m, const photon_config *c, int B, int T, photon_cuda_precision p) {
    photon_error err;
    photon_cuda *g = NULL;
    if (photon_model_init(m, c, 7, &err) != PHOTON_OK || photon_cuda_create(&g, m, B, T, 0, p, &err) != PHOTON_OK) {
        fprintf(stderr, "test_cuda: %s\n", err.message);
        exit(1);
    }
    return g;
}

static int gpu_ok(photon_cuda *g, const char *what) {
    photon_error err;
    photon_result r = photon__cu_check(g, what, &err);
    if (r != PHOTON_OK) expect(0, what, err.message);
    return r == PHOTON_OK;
}

/* ---------------------------------------------------------------- kernels */

static void test_encoder(photon_cuda *g, int B, int T, int C, int V) {
    size_t N = (size_t)B * T;
    std::vector<int> tokens = random_tokens(N, V / 4); /* repeats, so dwte rows add up */
    std::vector<int> targets = random_tokens(N, V);
    vec wte = random_vec((size_t)V * C, 1), wpe = random_vec((size_t)T * C, 1), dout = random_vec(N * C, 1);
    vec dwte = random_vec((size_t)V * C, 1), dwpe = random_vec((size_t)T * C, 1);
    vec out(N * C), cwte = dwte, cwpe = dwpe;
    photon_error err;
    photon__encoder_forward(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C);
    photon__encoder_backward(cwte.data(), cwpe.data(), dout.data(), tokens.data(), B, T, C);

    float *d_out = dev_poisoned(N * C), *d_wte = dev_copy(wte), *d_wpe = dev_copy(wpe), *d_dout = dev_copy(dout);
    float *d_dwte = dev_copy(dwte), *d_dwpe = dev_copy(dwpe);
    expect(photon__cu_batch(g, tokens.data(), targets.data(), B, T, &err) == PHOTON_OK, "encoder: batch uploads",
           err.message);
    PHOTON__LAUNCH(g, photon__cu_encoder_forward, photon__cu_blocks(N * C, 256), 256, d_out, g->inputs, d_wte, d_wpe, N, T, C);
    PHOTON__LAUNCH(g, photon__cu_encoder_backward_wpe, photon__cu_blocks((size_t)T * C, 256), 256, d_dwpe, d_dout, B, T, C);
    PHOTON__LAUNCH(g, photon__cu_encoder_backward_wte, (unsigned)g->num_distinct, 256, d_dwte, d_dout, g->token_ids,
                   g->token_start, g->token_positions, C);
    if (!gpu_ok(g, "encoder kernels")) return;
    expect_close("encoder forward", host_copy(d_out, N * C), out, FP32_TOL);
    expect_close("encoder backward: wte (repeated tokens)", host_copy(d_dwte, wte.size()), cwte, FP32_TOL);
    expect_close("encoder backward: wpe", host_copy(d_dwpe, wpe.size()), cwpe, FP32_TOL);
}

static void test_layernorm(photon_cuda *g, int N, int C) {
    vec x = random_vec((size_t)N * C, 2), w = random_vec(C, 1), b = random_vec(C, 1), res = random_vec((size_t)N * C, 1);
    vec proj = random_vec((size_t)N * C, 1), bias = random_vec(C, 1), dout = random_vec((size_t)N * C, 1);
    vec dx0 = random_vec((size_t)N * C, 1), dw0 = random_vec(C, 1), db0 = random_vec(C, 1);
    vec out((size_t)N * C), mean(N), rstd(N), r((size_t)N * C), out2((size_t)N * C), mean2(N), rstd2(N);
    vec dx = dx0, dw = dw0, db = db0;
    for (size_t i = 0; i < r.size(); i++) r[i] = res[i] + proj[i] + bias[i % C];
    photon__layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
    photon__layernorm_forward(out2.data(), mean2.data(), rstd2.data(), r.data(), w.data(), b.data(), N, C);
    photon__layernorm_backward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), mean.data(),
                               rstd.data(), N, C);

    float *d_x = dev_copy(x), *d_w = dev_copy(w), *d_b = dev_copy(b), *d_out = dev_poisoned((size_t)N * C);
    float *d_mean = dev_poisoned(N), *d_rstd = dev_poisoned(N), *d_r = dev_poisoned((size_t)N * C);
    float *d_out2 = dev_poisoned((size_t)N * C), *d_mean2 = dev_poisoned(N), *d_rstd2 = dev_poisoned(N);
    float *d_dout = dev_copy(dout), *d_dx = dev_copy(dx0), *d_dw = dev_copy(dw0), *d_db = dev_copy(db0);
    unsigned rows = photon__cu_blocks((size_t)N, 8);
    PHOTON__LAUNCH(g, photon__cu_layernorm_forward, rows, 256, d_out, d_mean, d_rstd, d_x, d_w, d_b, N, C);
    PHOTON__LAUNCH(g, photon__cu_residual_layernorm_forward, rows, 256, d_r, d_out2, d_mean2, d_rstd2, dev_copy(res),
                   dev_copy(proj), dev_copy(bias), d_w, d_b, N, C);
    photon__cu_layernorm_backward(g, d_dx, d_dw, d_db, d_dout, d_x, d_w, d_mean, d_rstd, N, C, 1);
    if (!gpu_ok(g, "layernorm kernels")) return;
    expect_close("layernorm forward: output", host_copy(d_out, out.size()), out, FP32_TOL);
    expect_close("layernorm forward: mean", host_copy(d_mean, N), mean, FP32_TOL);
    expect_close("layernorm forward: rstd", host_copy(d_rstd, N), rstd, FP32_TOL);
    expect_close("residual + bias + layernorm: residual", host_copy(d_r, r.size()), r, FP32_TOL);
    expect_close("residual + bias + layernorm: output", host_copy(d_out2, out2.size()), out2, FP32_TOL);
    expect_close("layernorm backward: dx (accumulated)", host_copy(d_dx, dx.size()), dx, FP32_TOL);
    expect_close("layernorm backward: dweight", host_copy(d_dw, C), dw, FP32_TOL);
    expect_close("layernorm backward: dbias", host_copy(d_db, C), db, FP32_TOL);
}

static void test_matmul(photon_cuda *g, int N, int IC, int OC, photon_cuda_precision p, const char *pname) {
    vec x = random_vec((size_t)N * IC, 1), w = random_vec((size_t)IC * OC, 1), dout = random_vec((size_t)N * OC, 1);
    vec dw0 = random_vec(w.size(), 1), db0 = random_vec(OC, 1), out((size_t)N * OC), din((size_t)N * IC, 0.0f);
    vec dw = dw0, db = db0;
    double tol = p == PHOTON_CUDA_FP32 ? FP32_TOL : TENSOR_TOL;
    char name[120];
    photon__matmul_forward(out.data(), x.data(), w.data(), NULL, N, IC, OC);
    photon__matmul_backward(din.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), N, IC, OC);
    cublasComputeType_t saved = g->compute;
    g->compute = p == PHOTON_CUDA_FP32 ? CUBLAS_COMPUTE_32F
                 : p == PHOTON_CUDA_BF16 ? CUBLAS_COMPUTE_32F_FAST_16BF : CUBLAS_COMPUTE_32F_FAST_TF32;
    float *d_x = dev_copy(x), *d_w = dev_copy(w), *d_out = dev_poisoned(out.size()), *d_dout = dev_copy(dout);
    float *d_din = dev_poisoned(din.size()), *d_dw = dev_copy(dw0), *d_db = dev_copy(db0);
    photon__cu_matmul_forward(g, d_out, d_x, d_w, N, IC, OC);
    photon__cu_matmul_backward(g, d_din, d_dw, d_db, d_dout, d_x, d_w, N, IC, OC);
    g->compute = saved;
    if (!gpu_ok(g, "matmul")) return;
    snprintf(name, sizeof name, "matmul %dx%dx%d %s: forward", N, IC, OC, pname);
    expect_close(name, host_copy(d_out, out.size()), out, tol);
    snprintf(name, sizeof name, "matmul %dx%dx%d %s: dinput", N, IC, OC, pname);
    expect_close(name, host_copy(d_din, din.size()), din, tol);
    snprintf(name, sizeof name, "matmul %dx%dx%d %s: dweight (accumulated)", N, IC, OC, pname);
    expect_close(name, host_copy(d_dw, dw.size()), dw, tol);
    snprintf(name, sizeof name, "matmul %dx%dx%d: dbias (accumulated)", N, IC, OC);
    expect_close(name, host_copy(d_db, OC), db, FP32_TOL);
}

static void test_gelu(photon_cuda *g, size_t N, int OC) {
    size_t n = N * OC;
    vec x = random_vec(n, 3), bias = random_vec(OC, 1), dout = random_vec(n, 1), pre(n), out(n), din(n, 0.0f);
    for (size_t i = 0; i < n; i++) pre[i] = x[i] + bias[i % OC];
    photon__gelu_forward(out.data(), pre.data(), n);
    photon__gelu_backward(din.data(), pre.data(), dout.data(), n);
    float *d_fch = dev_copy(x), *d_gelu = dev_poisoned(n), *d_d = dev_copy(dout);
    PHOTON__LAUNCH(g, photon__cu_bias_gelu_forward, photon__cu_blocks(n, 256), 256, d_fch, d_gelu, dev_copy(bias), N, OC);
    PHOTON__LAUNCH(g, photon__cu_gelu_backward, photon__cu_blocks(n, 256), 256, d_d, d_fch, n);
    if (!gpu_ok(g, "gelu kernels")) return;
    expect_close("bias + GELU forward: pre-activation kept", host_copy(d_fch, n), pre, FP32_TOL);
    expect_close("bias + GELU forward: output", host_copy(d_gelu, n), out, FP32_TOL);
    expect_close("GELU backward", host_copy(d_d, n), din, FP32_TOL);
}

static void test_attention(photon_cuda *g, int B, int T, int C, int NH) {
    size_t N = (size_t)B * T;
    vec qkv = random_vec(N * 3 * C, 2), dout = random_vec(N * C, 1), out(N * C), att((size_t)B * NH * T * T);
    vec dqkv(N * 3 * C, 0.0f);
    char name[120];
    photon__attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH);
    photon__attention_backward(dqkv.data(), dout.data(), qkv.data(), att.data(), B, T, C, NH);
    float *d_qkv = dev_copy(qkv), *d_out = dev_poisoned(out.size()), *d_lse = dev_poisoned((size_t)B * NH * T);
    float *d_dout = dev_copy(dout), *d_dqkv = dev_poisoned(dqkv.size()), *d_D = dev_poisoned((size_t)B * NH * T);
    photon__cu_attention_forward_launch(g, d_out, d_lse, d_qkv, B, T, C, NH);
    photon__cu_attention_backward_launch(g, d_dqkv, d_D, d_dout, d_qkv, d_out, d_lse, B, T, C, NH);
    if (!gpu_ok(g, "attention kernels")) return;
    snprintf(name, sizeof name, "fused attention forward, head size %d, T %d", C / NH, T);
    expect_close(name, host_copy(d_out, out.size()), out, FP32_TOL);
    snprintf(name, sizeof name, "fused attention backward, head size %d, T %d", C / NH, T);
    expect_close(name, host_copy(d_dqkv, dqkv.size()), dqkv, FP32_TOL);
}

static void test_classifier(photon_cuda *g, int N, int V) {
    vec logits = random_vec((size_t)N * V, 4), probs((size_t)N * V), losses(N);
    std::vector<int> targets = random_tokens(N, V);
    float dloss = 1.0f / N;
    photon__softmax_crossentropy_forward(probs.data(), losses.data(), logits.data(), targets.data(), N, V);
    photon__crossentropy_softmax_backward(probs.data(), probs.data(), targets.data(), dloss, N, V);
    float *d_logits = dev_copy(logits), *d_losses = dev_poisoned(N), *d_eval = dev_copy(logits);
    float *d_eval_losses = dev_poisoned(N);
    int *d_targets = dev_ints(targets);
    PHOTON__LAUNCH(g, photon__cu_classifier, (unsigned)N, 512, d_logits, d_losses, d_targets, V, dloss, 1);
    PHOTON__LAUNCH(g, photon__cu_classifier, (unsigned)N, 512, d_eval, d_eval_losses, d_targets, V, dloss, 0);
    if (!gpu_ok(g, "classifier")) return;
    expect_close("softmax + cross-entropy: losses", host_copy(d_losses, N), losses, FP32_TOL);
    expect_close("softmax + cross-entropy: dlogits written over the logits", host_copy(d_logits, probs.size()), probs,
                 FP32_TOL);
    expect_close("softmax + cross-entropy without gradient: losses", host_copy(d_eval_losses, N), losses, FP32_TOL);
    vec untouched = host_copy(d_eval, logits.size());
    expect(memcmp(untouched.data(), logits.data(), logits.size() * sizeof(float)) == 0,
           "softmax + cross-entropy without gradient leaves the logits", NULL);
}

/* AdamW and the gradient norm: one update from random parameters, gradients
   and moments, on the CPU directly and on the GPU. */
static void test_adamw(void) {
    photon_model m;
    photon_adamw_state s, gs;
    photon_adamw_config hp = {0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
    photon_config c = small_config(50, 16, 1, 2, 64);
    photon_cuda *g = open_gpu(&m, &c, 1, 8, PHOTON_CUDA_TF32);
    photon_error err;
    vec p = random_vec(m.num_params, 1), grads = random_vec(m.num_params, 0.05f);
    photon_adamw_state_init(&s, m.num_params, &err);
    photon_adamw_state_init(&gs, m.num_params, &err);
    vec mm = random_vec(m.num_params, 0.01f), vv = random_vec(m.num_params, 0.01f);
    for (size_t i = 0; i < m.num_params; i++) vv[i] = fabsf(vv[i]);
    memcpy(m.params, p.data(), p.size() * 4);
    memcpy(m.grads, grads.data(), grads.size() * 4);
    memcpy(s.m, mm.data(), mm.size() * 4), memcpy(s.v, vv.data(), vv.size() * 4);
    s.t = gs.t = 3;
    photon_cuda_upload(g, &m, &s, &err);
    cudaMemcpy(g->grads, grads.data(), grads.size() * 4, cudaMemcpyHostToDevice);
    double cpu_norm = photon_grad_norm(&m), gpu_norm = 0.0;
    expect(photon__cu_grad_norm(g, &gpu_norm, &err) == PHOTON_OK, "gradient norm runs", err.message);
    {
        char d[120];
        snprintf(d, sizeof d, "GPU %.17g, CPU %.17g", gpu_norm, cpu_norm);
        expect(fabs(gpu_norm - cpu_norm) <= 1e-12 * cpu_norm, "gradient norm (double, fixed blocks) matches the CPU", d);
    }
    /* the norm is above grad_clip, so clipping scales the step */
    photon_adamw_update(&m, &s, &hp, 3e-3f, cpu_norm);
    photon__cu_adamw(g, &gs, &hp, 3e-3f, cpu_norm);
    expect(gs.t == s.t, "AdamW advances the step count", NULL);
    photon_model back;
    photon_model_init(&back, &c, 1, &err);
    photon_cuda_download(g, &back, &gs, &err);
    /* the update itself, not the parameters it is added to (a missing decay
       term hides under the parameters' size) */
    vec cpu_update(m.num_params), gpu_update(m.num_params);
    for (size_t i = 0; i < m.num_params; i++) cpu_update[i] = m.params[i] - p[i], gpu_update[i] = back.params[i] - p[i];
    expect_close("AdamW (clipped, decayed): the update", gpu_update, cpu_update, FP32_TOL);
    expect_close("AdamW (clipped): first moments", gs.m, s.m, m.num_params, FP32_TOL);
    expect_close("AdamW (clipped): second moments", gs.v, s.v, m.num_params, FP32_TOL);
    photon_model_free(&back);
    photon_adamw_state_free(&s);
    photon_adamw_state_free(&gs);
    photon_cuda_free(g);
    photon_model_free(&m);
}

/* ---------------------------------------------------------------- whole model */

static void randomize(photon_model *m) { /* every parameter, LayerNorm and biases too */
    for (size_t i = 0; i < m->num_params; i++) m->params[i] = (2.0f * photon_rand_uniform(&rng) - 1.0f) * 0.1f;
    for (int k = 0; k < m->num_tensors; k++)
        if (strstr(m->tensors[k].name, "ln_") && strstr(m->tensors[k].name, "weight"))
            for (size_t i = 0; i < m->tensors[k].size; i++) m->params[m->tensors[k].offset + i] += 1.0f;
}

static void test_whole_step(photon_cuda_precision p, const char *pname, double tol) {
    photon_model m;
    photon_config c = small_config(300, 48, 2, 2, 64);
    int B = 3, T = 37;
    size_t N = (size_t)B * T;
    photon_cuda *g = open_gpu(&m, &c, B, T, p);
    photon_error err;
    std::vector<int> in = random_tokens(N, c.vocab_size), tg = random_tokens(N, c.vocab_size);
    float cpu_loss = 0, gpu_loss = 0;
    char name[160], d[160];
    randomize(&m);
    photon_cuda_upload(g, &m, NULL, &err);
    photon_zero_grad(&m);
    photon_forward(&m, in.data(), tg.data(), B, T, &cpu_loss, &err);
    photon_backward(&m, &err);
    vec gpu_losses(N);
    expect(photon__cu_batch(g, in.data(), tg.data(), B, T, &err) == PHOTON_OK, "whole step: batch", err.message);
    cudaMemsetAsync(g->grads, 0, m.num_params * 4, g->stream);
    photon__cu_forward_pass(g, 1, 1);
    expect(photon__cu_mean_loss(g, gpu_losses.data(), &gpu_loss, "forward", &err) == PHOTON_OK, "whole step: forward",
           err.message);
    photon__cu_backward_pass(g);
    if (!gpu_ok(g, "whole step: backward")) return;
    snprintf(name, sizeof name, "whole step %s: mean loss", pname);
    snprintf(d, sizeof d, "GPU %.7f, CPU %.7f", gpu_loss, cpu_loss);
    expect(fabsf(gpu_loss - cpu_loss) <= 1e-4f * cpu_loss, name, d);
    snprintf(name, sizeof name, "whole step %s: per-token losses", pname);
    expect_close(name, gpu_losses.data(), m.acts.losses, N, tol);
    vec grads = host_copy(g->grads, m.num_params);
    for (int k = 0; k < m.num_tensors; k++) {
        const photon_tensor_info *t = &m.tensors[k];
        if (k > 2 && k < m.num_tensors - 14 && !strstr(t->name, "h.1.")) continue; /* every tensor of one block */
        snprintf(name, sizeof name, "whole step %s: gradient of %s", pname, t->name);
        expect_close(name, grads.data() + t->offset, m.grads + t->offset, t->size, tol);
    }
    /* the same inputs give the same bits */
    cudaMemsetAsync(g->grads, 0, m.num_params * 4, g->stream);
    photon__cu_forward_pass(g, 1, 1);
    photon__cu_backward_pass(g);
    vec again = host_copy(g->grads, m.num_params);
    snprintf(name, sizeof name, "whole step %s: a second run gives bit-identical gradients", pname);
    expect(memcmp(again.data(), grads.data(), grads.size() * 4) == 0, name, NULL);
    photon_cuda_free(g);
    photon_model_free(&m);
}

/* ---------------------------------------------------------------- training */

/* Text for the training tests: a real corpus when ../shared/data has one,
   else a generated one. */
static photon_result load_text(photon_dataset *ds, photon_error *err) {
    const char *candidates[] = {"../shared/data/tinyshakespeare.txt", "../../shared/data/tinyshakespeare.txt"};
    for (size_t k = 0; k < sizeof candidates / sizeof candidates[0]; k++) {
        FILE *f = fopen(candidates[k], "rb");
        if (f) {
            fclose(f);
            printf("# training text: %s\n", candidates[k]);
            return photon_dataset_load(ds, &candidates[k], 1, err);
        }
    }
    const char *path = tmp_path("text.txt");
    FILE *f = fopen(path, "wb");
    uint64_t r = 42;
    const char *words[] = {"the ", "river ", "runs ", "under ", "a ", "bridge ", "of ", "stone ", "and ", "light. "};
    for (int i = 0; i < 20000; i++) fputs(words[photon_rand_u64(&r) % 10], f);
    fclose(f);
    printf("# training text: generated (no corpus under ../shared/data)\n");
    return photon_dataset_load(ds, &path, 1, err);
}

static photon_adamw_config train_hp(void) {
    photon_adamw_config hp = {0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
    return hp;
}

/* 50 steps from the same model and data on both devices: the loss curves
   agree within 1% at every step. */
static void test_training_curves(const photon_dataset *ds) {
    photon_model cpu, gm;
    photon_config c = small_config(256, 64, 2, 2, 64);
    int B = 4, T = 32, steps = 50, worst_step = 0;
    photon_cuda *g = open_gpu(&gm, &c, B, T, PHOTON_CUDA_TF32);
    photon_adamw_state cs, gs;
    photon_adamw_config hp = train_hp();
    photon_schedule sched = {3e-3f, 5, (uint64_t)steps, 0.1f};
    photon_loader cl, gl;
    photon_error err;
    std::vector<int> in((size_t)B * T), tg((size_t)B * T);
    double worst = 0.0;
    photon_model_init(&cpu, &c, 7, &err);
    photon_adamw_state_init(&cs, cpu.num_params, &err);
    photon_adamw_state_init(&gs, cpu.num_params, &err);
    photon_loader_init(&cl, ds, B, T, &err);
    photon_loader_init(&gl, ds, B, T, &err);
    float first = 0, last_cpu = 0, last_gpu = 0;
    for (int s = 0; s < steps; s++) {
        photon_step_stats a = photon_step_stats(), b = a;
        photon_loader_next(&cl, in.data(), tg.data());
        if (photon_train_step(&cpu, &cs, &hp, &sched, in.data(), tg.data(), B, T, &a, &err) != PHOTON_OK ||
            photon_cuda_train_step(g, &gm, &gs, &hp, &sched, in.data(), tg.data(), B, T, &b, &err) != PHOTON_OK) {
            expect(0, "50 training steps run", err.message);
            return;
        }
        photon_loader_next(&gl, in.data(), tg.data());
        double rel = fabs(a.loss - b.loss) / a.loss;
        if (rel > worst) worst = rel, worst_step = s + 1;
        if (s == 0) first = a.loss;
        last_cpu = a.loss, last_gpu = b.loss;
    }
    char d[200];
    snprintf(d, sizeof d, "worst relative difference %.3g%% at step %d; loss %.4f -> CPU %.4f, GPU %.4f", worst * 100,
             worst_step, first, last_cpu, last_gpu);
    expect(worst <= 0.01 && last_cpu < first - 0.5f, "50 steps: GPU and CPU loss curves agree within 1%", d);
    printf("    %s\n", d);
    expect(gm.step == cpu.step && gm.tokens_seen == cpu.tokens_seen && gs.t == cs.t,
           "50 steps: the GPU advances the same step clocks", NULL);
    photon_adamw_state_free(&cs);
    photon_adamw_state_free(&gs);
    photon_cuda_free(g);
    photon_model_free(&gm);
    photon_model_free(&cpu);
}

/* Trains `steps` steps of model m from its state s, on the GPU or the CPU. */
static int train(photon_model *m, photon_adamw_state *s, photon_loader *l, int steps, int on_gpu, int B, int T,
                 photon_error *err) {
    photon_adamw_config hp = train_hp();
    photon_schedule sched = {3e-3f, 2, 20, 0.1f};
    std::vector<int> in((size_t)B * T), tg((size_t)B * T);
    photon_cuda *g = NULL;
    if (on_gpu && (photon_cuda_create(&g, m, B, T, 0, PHOTON_CUDA_FP32, err) != PHOTON_OK ||
                   photon_cuda_upload(g, m, s, err) != PHOTON_OK))
        return 0;
    for (int k = 0; k < steps; k++) {
        photon_loader_next(l, in.data(), tg.data());
        photon_result r = on_gpu ? photon_cuda_train_step(g, m, s, &hp, &sched, in.data(), tg.data(), B, T, NULL, err)
                                 : photon_train_step(m, s, &hp, &sched, in.data(), tg.data(), B, T, NULL, err);
        if (r != PHOTON_OK) return 0;
    }
    if (on_gpu) {
        photon_result r = photon_cuda_download(g, m, s, err);
        photon_cuda_free(g);
        if (r != PHOTON_OK) return 0;
    }
    return 1;
}

/* Saves the model and its client state, then loads them into fresh ones:
   what a round does between two runs of photon-train. */
static int save_and_load(photon_model *m, photon_adamw_state *s, photon_loader *l, const photon_dataset *ds,
                         photon_error *err) {
    const char *ck = tmp_path("ck.safetensors"), *st = tmp_path("state.safetensors");
    photon_client_state cs;
    memset(&cs, 0, sizeof cs);
    cs.adamw = *s;
    cs.step = m->step, cs.data_position = l->position, cs.data_epoch = l->epoch;
    cs.data_tokens = ds->num_tokens, cs.data_hash = ds->hash;
    if (photon_checkpoint_save(m, ck, err) != PHOTON_OK || photon_client_state_save(&cs, &m->config, st, err) != PHOTON_OK)
        return 0;
    photon_model_free(m);
    photon_adamw_state_free(s);
    memset(&cs, 0, sizeof cs);
    if (photon_checkpoint_load(m, ck, err) != PHOTON_OK || photon_client_state_load(&cs, &m->config, st, err) != PHOTON_OK)
        return 0;
    *s = cs.adamw;
    l->position = cs.data_position, l->epoch = cs.data_epoch;
    remove(ck), remove(st);
    return 1;
}

/* CPU 10 steps; GPU 5 -> files -> CPU 5; CPU 5 -> files -> GPU 5: the same
   model within FP32 rounding, the same clocks. */
static void test_resume_across_devices(const photon_dataset *ds) {
    photon_config c = small_config(256, 32, 1, 2, 64);
    photon_model ref, a, b;
    photon_adamw_state rs, as, bs;
    photon_loader rl, al, bl;
    photon_error err;
    int B = 2, T = 24, ok = 1;
    photon_model *models[3] = {&ref, &a, &b};
    photon_adamw_state *states[3] = {&rs, &as, &bs};
    photon_loader *loaders[3] = {&rl, &al, &bl};
    for (int k = 0; k < 3; k++) {
        photon_model_init(models[k], &c, 11, &err);
        photon_adamw_state_init(states[k], models[k]->num_params, &err);
        photon_loader_init(loaders[k], ds, B, T, &err);
    }
    ok = ok && train(&ref, &rs, &rl, 10, 0, B, T, &err);
    ok = ok && train(&a, &as, &al, 5, 1, B, T, &err) && save_and_load(&a, &as, &al, ds, &err) &&
         train(&a, &as, &al, 5, 0, B, T, &err);
    ok = ok && train(&b, &bs, &bl, 5, 0, B, T, &err) && save_and_load(&b, &bs, &bl, ds, &err) &&
         train(&b, &bs, &bl, 5, 1, B, T, &err);
    expect(ok, "resume across devices: training and files", ok ? NULL : err.message);
    if (!ok) return;
    expect_close("GPU -> checkpoint + state -> CPU resumes the CPU run", a.params, ref.params, ref.num_params, 1e-6);
    expect_close("CPU -> checkpoint + state -> GPU resumes the CPU run", b.params, ref.params, ref.num_params, 1e-6);
    expect_close("the AdamW moments after GPU -> CPU", as.v, rs.v, rs.n, 1e-5);
    expect(a.step == 10 && b.step == 10 && as.t == 10 && bs.t == 10 && al.position == rl.position &&
               bl.position == rl.position,
           "resume across devices: step clocks and data positions carry over", NULL);
    for (int k = 0; k < 3; k++) {
        photon_adamw_state_free(states[k]);
        photon_model_free(models[k]);
    }
}

/* ---------------------------------------------------------------- failures */

static void test_errors(void) {
    photon_model m;
    photon_config wide = small_config(50, 16, 1, 1, 256), c = small_config(50, 16, 1, 2, 64);
    photon_cuda *g = NULL;
    photon_error err;
    photon_model_init(&m, &wide, 1, &err);
    expect(photon_cuda_create(&g, &m, 2, 8, 0, PHOTON_CUDA_TF32, &err) == PHOTON_ERR_ARGUMENT &&
               strstr(err.message, "head size 256"),
           "a head size over 128 is refused with a message", err.message);
    photon_model_free(&m);
    photon_model_init(&m, &c, 1, &err);
    expect(photon_cuda_create(&g, &m, 2, 8, 5, PHOTON_CUDA_TF32, &err) == PHOTON_ERR_DEVICE &&
               strstr(err.message, "GPU 5 requested"),
           "a GPU number that does not exist is refused", err.message);
    expect(photon_cuda_create(&g, &m, 1 << 20, 16, 0, PHOTON_CUDA_TF32, &err) == PHOTON_ERR_ARGUMENT &&
               strstr(err.message, "more than one GPU step takes") && g == NULL,
           "a batch beyond the GPU's grid limits is refused", err.message);
#ifdef PHOTON_CUDA_EMULATE
    setenv("PHOTON_EMU_MEMORY_LIMIT", "1000000", 1);
    expect(photon_cuda_create(&g, &m, 4096, 16, 0, PHOTON_CUDA_TF32, &err) == PHOTON_ERR_MEMORY &&
               strstr(err.message, "cannot allocate") && g == NULL,
           "out of GPU memory is PHOTON_ERR_MEMORY with a message", err.message);
    unsetenv("PHOTON_EMU_MEMORY_LIMIT");
#else /* 2M positions of a 4-layer, 1024-wide model: about 550 GB of activations */
    photon_model big;
    photon_config bigc = small_config(50, 1024, 4, 8, 1024);
    photon_model_init(&big, &bigc, 1, &err);
    expect(photon_cuda_create(&g, &big, 2040, 1024, 0, PHOTON_CUDA_TF32, &err) == PHOTON_ERR_MEMORY &&
               strstr(err.message, "cannot allocate") && g == NULL,
           "out of GPU memory is PHOTON_ERR_MEMORY with a message", err.message);
    photon_model_free(&big);
#endif
    if (photon_cuda_create(&g, &m, 2, 8, 0, PHOTON_CUDA_TF32, &err) != PHOTON_OK) {
        expect(0, "a GPU model is created", err.message);
        return;
    }
    photon_adamw_state s;
    photon_adamw_config hp = train_hp();
    photon_schedule sched = {1e-3f, 0, 10, 0.1f};
    int in[16], tg[16];
    for (int i = 0; i < 16; i++) in[i] = i % 50, tg[i] = (i + 1) % 50;
    photon_adamw_state_init(&s, m.num_params, &err);
    expect(photon_cuda_train_step(g, &m, &s, &hp, &sched, in, tg, 3, 8, NULL, &err) == PHOTON_ERR_ARGUMENT &&
               strstr(err.message, "larger than"),
           "a batch larger than the GPU model's is refused", err.message);
    tg[5] = 50;
    expect(photon_cuda_train_step(g, &m, &s, &hp, &sched, in, tg, 2, 8, NULL, &err) == PHOTON_ERR_ARGUMENT &&
               strstr(err.message, "target token 50 at index 5"),
           "a target outside the vocabulary is refused", err.message);
    tg[5] = 6;
    m.params[m.tensors[2].offset + 3] = NAN; /* a NaN weight in the first block */
    photon_cuda_upload(g, &m, NULL, &err);
    expect(photon_cuda_train_step(g, &m, &s, &hp, &sched, in, tg, 2, 8, NULL, &err) == PHOTON_ERR_NUMERIC &&
               strstr(err.message, "diverged") && m.step == 0,
           "a NaN loss stops the step before any update", err.message);
    photon_adamw_state_free(&s);
    photon_cuda_free(g);
    photon_model_free(&m);
}

/* The kernels share one GPU context. */
static void test_kernels(void) {
    photon_model m;
    photon_config c = small_config(97, 64, 1, 2, 64);
    photon_cuda *g = open_gpu(&m, &c, 4, 45, PHOTON_CUDA_TF32);
    printf("# device: %s\n", photon_cuda_device_name(g));
    test_encoder(g, 3, 45, 64, 97);
    test_layernorm(g, 70, 96);
    test_matmul(g, 70, 48, 80, PHOTON_CUDA_FP32, "FP32");
    test_matmul(g, 70, 48, 80, PHOTON_CUDA_TF32, "TF32");
    test_matmul(g, 70, 48, 80, PHOTON_CUDA_BF16, "BF16");
    test_gelu(g, 70, 96);
    test_attention(g, 2, 45, 32, 2);  /* head size 16 */
    test_attention(g, 2, 45, 64, 2);  /* 32 */
    test_attention(g, 1, 70, 128, 2); /* 64 */
    test_attention(g, 1, 40, 256, 2); /* 128 */
    test_classifier(g, 9, 1000);
    photon_cuda_free(g);
    photon_model_free(&m);
    free_all();
}

static void test_whole_step_fp32(void) { test_whole_step(PHOTON_CUDA_FP32, "FP32", FP32_TOL); }
static void test_whole_step_tf32(void) { test_whole_step(PHOTON_CUDA_TF32, "TF32", TENSOR_TOL); }
static void test_whole_step_bf16(void) { test_whole_step(PHOTON_CUDA_BF16, "BF16", TENSOR_TOL); }

/* The training tests share one text. */
static void test_training(void) {
    photon_dataset ds;
    photon_error err;
    if (load_text(&ds, &err) != PHOTON_OK) {
        expect(0, "training text loads", err.message);
    } else {
        test_training_curves(&ds);
        test_resume_across_devices(&ds);
        photon_dataset_free(&ds);
    }
}

static const check_test tests[] = {
    CHECK_TEST(kernels),
    CHECK_TEST(adamw),
    CHECK_TEST(whole_step_fp32),
    CHECK_TEST(whole_step_tf32),
    CHECK_TEST(whole_step_bf16),
    CHECK_TEST(training),
    CHECK_TEST(errors),
};

int main(int argc, char **argv) {
    int status = check_args(tests, sizeof tests / sizeof tests[0], argc, argv);
    if (status >= 0) return status;
    if (photon_cuda_device_count() == 0) {
        printf("test_cuda: skipped: no CUDA device present (bin/emu/test_cuda runs the same checks on the CPU)\n");
        return 0;
    }
    photon_set_threads(1);
    return check_run(tests, sizeof tests / sizeof tests[0]);
}
