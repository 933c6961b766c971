/* cli.h - the small command-line helpers the photon tools share.

   Conventions: --help and --version print to stdout and exit 0; a usage
   error prints one line to stderr and exits 2; a failure of the library
   prints its one-line message and exits 1. Flags take their value as the
   next argument or after '=' (--steps 10, --steps=10). */
#ifndef PHOTON_CLI_H
#define PHOTON_CLI_H

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../photon_bpe.h"

static const char *cli_prog = "photon";

/* At exit: results that did not reach stdout (a full disk, a closed pipe)
   are a failure, exit status 1, not a silent success. */
static void cli_check_stdout(void) {
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "%s: cannot write the results to stdout: %s\n", cli_prog, strerror(errno ? errno : EIO));
        _exit(1);
    }
}

/* Names the tool in messages and checks stdout at exit. */
static inline void cli_start(const char *prog) {
    cli_prog = prog;
    atexit(cli_check_stdout);
}

/* --accept-unhashed: read files of photon format 1, which carry no payload
   hash (their data cannot be checked). */
#define CLI_ACCEPT_UNHASHED_HELP                                                             \
    "  --accept-unhashed    read files of photon format 1 (written before payload hashes;\n" \
    "                       their data cannot be checked), which are refused otherwise\n"

#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 1, 2), noreturn))
#endif
static inline void cli_usage_error(const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "%s: ", cli_prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see %s --help)\n", cli_prog);
    exit(2);
}

/* A failure: one line "prog: message" on stderr, exit 1. */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((noreturn))
#endif
static inline void cli_vdie(const char *fmt, va_list ap) {
    fprintf(stderr, "%s: ", cli_prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    exit(1);
}

#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 1, 2), noreturn))
#endif
static inline void cli_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    cli_vdie(fmt, ap);
}

#if defined(__GNUC__) || defined(__clang__)
__attribute__((noreturn))
#endif
static inline void cli_fail(const photon_error *err) {
    cli_die("%s", err->message);
}

/* One parsed command line: the flag of argv[*i] and its value, if any. */
typedef struct cli_args {
    int argc, i;
    char **argv;
    char flag[64];
    const char *inline_value; /* after '=' */
} cli_args;

/* Advances to the next argument; returns 0 when none are left. Arguments
   that do not start with "--" come back with flag "" (positional). */
static inline int cli_next(cli_args *a) {
    const char *arg, *eq;
    if (++a->i >= a->argc) return 0;
    arg = a->argv[a->i];
    a->inline_value = NULL;
    if (strncmp(arg, "--", 2) != 0) {
        a->flag[0] = '\0';
        return 1;
    }
    eq = strchr(arg, '=');
    if (eq) {
        size_t n = (size_t)(eq - arg) < sizeof a->flag - 1 ? (size_t)(eq - arg) : sizeof a->flag - 1;
        memcpy(a->flag, arg, n);
        a->flag[n] = '\0';
        a->inline_value = eq + 1;
    } else {
        snprintf(a->flag, sizeof a->flag, "%s", arg);
    }
    return 1;
}

static inline int cli_is(const cli_args *a, const char *flag) { return strcmp(a->flag, flag) == 0; }

/* Starts parsing argv. */
static inline void cli_begin(cli_args *a, int argc, char **argv) {
    a->argc = argc;
    a->argv = argv;
    a->i = 0;
}

/* --help prints the usage and --version the version, on stdout, and exit 0;
   any other flag returns. */
static inline void cli_help_or_version(const cli_args *a, const char *usage) {
    if (cli_is(a, "--help")) {
        fputs(usage, stdout);
        exit(0);
    }
    if (cli_is(a, "--version")) {
        printf("%s %s (file format %d)\n", cli_prog, PHOTON_VERSION, PHOTON_FORMAT_VERSION);
        exit(0);
    }
}

/* FILE... after a flag: every argument up to the next flag, appended to list. */
static inline void cli_files(cli_args *a, const char **list, int *n) {
    int before = *n;
    if (a->inline_value) list[(*n)++] = a->inline_value;
    while (a->i + 1 < a->argc && strncmp(a->argv[a->i + 1], "--", 2) != 0) list[(*n)++] = a->argv[++a->i];
    if (*n == before) cli_usage_error("%s needs at least one file", a->flag);
}

static const char *cli_value(cli_args *a) {
    if (a->inline_value) return a->inline_value;
    if (a->i + 1 >= a->argc) cli_usage_error("%s needs a value", a->flag);
    return a->argv[++a->i];
}

static inline void cli_no_value(const cli_args *a) {
    if (a->inline_value) cli_usage_error("%s takes no value", a->flag);
}

static inline long long cli_int(cli_args *a, long long min, long long max) {
    const char *s = cli_value(a);
    char *end;
    long long v;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        cli_usage_error("%s needs an integer from %lld to %lld, got '%s'", a->flag, min, max, s);
    return v;
}

static inline double cli_float(cli_args *a, double min, double max) {
    const char *s = cli_value(a);
    char *end;
    double v;
    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= min && v <= max))
        cli_usage_error("%s needs a number from %g to %g, got '%s'", a->flag, min, max, s);
    return v;
}

/* Seconds on a monotonic clock, for progress reports. */
static inline double cli_now(void) {
#if defined(CLOCK_MONOTONIC)
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#else
    return (double)clock() / CLOCKS_PER_SEC;
#endif
}

/* Fails early, before any work, if an output path cannot be written. */
static inline void cli_check_output(const char *path) {
    photon_error err;
    if (photon_output_check(path, &err) != PHOTON_OK) cli_fail(&err);
}

/* Loads --tokenizer DIR (NULL: bytes) and checks it against the model's
   vocabulary; returns NULL for bytes. */
static inline photon_bpe *cli_tokenizer(const char *dir, photon_bpe *bpe, const photon_config *config,
                                        const char *model_name) {
    photon_error err;
    if (!dir) return NULL;
    if (photon_bpe_load_dir(bpe, dir, &err) != PHOTON_OK) cli_fail(&err);
    if (bpe->vocab_size != config->vocab_size) {
        cli_die("%s: the tokenizer has %d tokens, %s has a vocabulary of %d", dir, bpe->vocab_size, model_name,
                config->vocab_size);
    }
    return bpe;
}

/* --device and --precision: where training and evaluation run. The GPU
   calls exist only in a build with the CUDA backend (make cuda defines
   PHOTON_CUDA and links photon_cuda.cu). */
typedef struct cli_device {
    int requested; /* -1: not given, 0: cpu, 1: cuda */
    int use_cuda;  /* the outcome of cli_device_resolve */
    int have_precision;
    photon_cuda_precision precision;
} cli_device;

#define CLI_DEVICE_HELP                                                                     \
    "  --device cpu|cuda    where the model runs (default: cuda in a CUDA build (make\n"    \
    "                       cuda) with a GPU present, else cpu); files are the same\n"      \
    "  --precision P        GPU matrix products: tf32 (default), fp32, or bf16 (FP32\n"     \
    "                       master weights and accumulation in every case)\n"

static inline void cli_device_init(cli_device *d) {
    d->requested = -1;
    d->use_cuda = 0;
    d->have_precision = 0;
    d->precision = PHOTON_CUDA_TF32;
}

/* Takes --device or --precision; returns 0 for any other flag. */
static inline int cli_device_flag(cli_args *a, cli_device *d) {
    const char *v;
    if (cli_is(a, "--device")) {
        v = cli_value(a);
        if (strcmp(v, "cpu") == 0) d->requested = 0;
        else if (strcmp(v, "cuda") == 0) d->requested = 1;
        else cli_usage_error("--device is cpu or cuda, got '%s'", v);
        return 1;
    }
    if (cli_is(a, "--precision")) {
        v = cli_value(a);
        if (strcmp(v, "tf32") == 0) d->precision = PHOTON_CUDA_TF32;
        else if (strcmp(v, "fp32") == 0) d->precision = PHOTON_CUDA_FP32;
        else if (strcmp(v, "bf16") == 0) d->precision = PHOTON_CUDA_BF16;
        else cli_usage_error("--precision is tf32, fp32 or bf16, got '%s'", v);
        d->have_precision = 1;
        return 1;
    }
    return 0;
}

/* Decides the device: an explicit cuda needs the backend (a usage error
   without it) and a GPU (a failure without one). */
static inline void cli_device_resolve(cli_device *d) {
#ifdef PHOTON_CUDA
    int gpus = photon_cuda_device_count();
    if (d->requested == 1 && gpus == 0) cli_die("--device cuda: no CUDA device is present");
    d->use_cuda = d->requested == 1 || (d->requested == -1 && gpus > 0);
#else
    if (d->requested == 1)
        cli_usage_error("--device cuda: this build has no CUDA backend (build the tools with make cuda)");
    d->use_cuda = 0;
#endif
    if (d->have_precision && !d->use_cuda) cli_usage_error("--precision applies to --device cuda only");
}

/* The model on the GPU (NULL on the CPU), with room for B x T batches and
   the optimizer state if given. */
static inline photon_cuda *cli_gpu_open(const cli_device *d, const photon_model *model,
                                        const photon_adamw_state *state, int B, int T) {
    photon_cuda *gpu = NULL;
    if (!d->use_cuda) return NULL;
#ifdef PHOTON_CUDA
    {
        photon_error err;
        if (photon_cuda_create(&gpu, model, B, T, 0, d->precision, &err) != PHOTON_OK) cli_fail(&err);
        if (state && photon_cuda_upload(gpu, model, state, &err) != PHOTON_OK) cli_fail(&err);
        fprintf(stderr, "%s: running on %s (%s)\n", cli_prog, photon_cuda_device_name(gpu),
                d->precision == PHOTON_CUDA_FP32 ? "fp32" : d->precision == PHOTON_CUDA_BF16 ? "bf16" : "tf32");
    }
#else
    (void)model, (void)state, (void)B, (void)T;
#endif
    return gpu;
}

/* Brings the trained parameters (and optimizer state) back to the host and
   frees the GPU model. */
static inline void cli_gpu_close(photon_cuda *gpu, photon_model *model, photon_adamw_state *state) {
#ifdef PHOTON_CUDA
    photon_error err;
    if (!gpu) return;
    if (model && photon_cuda_download(gpu, model, state, &err) != PHOTON_OK) cli_fail(&err);
    photon_cuda_free(gpu);
#else
    (void)gpu, (void)model, (void)state;
#endif
}

static inline photon_result cli_train_step(photon_cuda *gpu, photon_model *model, photon_adamw_state *state,
                                           const photon_adamw_config *hp, const photon_schedule *schedule,
                                           const int *inputs, const int *targets, int B, int T,
                                           photon_step_stats *stats, photon_error *err) {
#ifdef PHOTON_CUDA
    if (gpu) return photon_cuda_train_step(gpu, model, state, hp, schedule, inputs, targets, B, T, stats, err);
#endif
    (void)gpu;
    return photon_train_step(model, state, hp, schedule, inputs, targets, B, T, stats, err);
}

static inline photon_result cli_evaluate(photon_cuda *gpu, photon_model *model, const photon_dataset *ds, int B,
                                         int T, uint64_t max_tokens, photon_eval_result *res, photon_error *err) {
#ifdef PHOTON_CUDA
    if (gpu) return photon_cuda_evaluate(gpu, ds, B, T, max_tokens, res, err);
#endif
    (void)gpu;
    return photon_evaluate(model, ds, B, T, max_tokens, res, err);
}

/* Prints s as a JSON string literal. */
static inline void cli_json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

/* A finite number, or null (JSON has no NaN). */
static inline void cli_json_number(FILE *f, double v) {
    if (v - v == 0.0) fprintf(f, "%.17g", v);
    else fputs("null", f);
}

#endif
