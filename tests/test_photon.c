/* test_photon.c - unit tests of photon.h.

   Every backward pass against central finite differences, every file reader
   against corrupt input, the optimizer against a direct computation, and
   determinism. Prints "ok - ..." / "FAIL - ..." per check and a last line
   "N passed, N failed". Run from the repository root; files go to a
   temporary directory (PHOTON_TEST_DIR, default /tmp). Arguments select
   tests by name (--list prints them; tests/check.h). */
#define PHOTON_IMPLEMENTATION
#include "../photon.h"
#include "check.h"

#include <math.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <string.h>


static void fill_random(float *x, size_t n, float scale, uint64_t *rng) {
    size_t i;
    for (i = 0; i < n; i++) x[i] = scale * (2.0f * photon_rand_uniform(rng) - 1.0f);
}

static float *random_floats(size_t n, float scale, uint64_t *rng) {
    float *x = (float *)calloc(n, sizeof(float));
    fill_random(x, n, scale, rng);
    return x;
}

/* ======================================================================= */
/* Finite differences                                                      */
/* ======================================================================= */
/* Each layer is checked through a scalar objective f = sum(out * R) for a
   fixed random R, computed in double: its gradient with respect to the
   layer's output is R, so the backward pass is run with dout = R and its
   results are compared with central differences of f element by element.
   The error is max |analytic - numeric| / max |numeric|. GRAD_TOL is tight
   enough that a gradient wrong by 1% fails; check_grad proves that on every
   run by scaling the analytic gradient by 1.01 and expecting a failure. */

#define GRAD_TOL 2.5e-3

typedef double (*objective_fn)(void *ctx);

/* Five-point central differences: f'(x) = (8 (f(x+h) - f(x-h)) - (f(x+2h) - f(x-2h))) / 12h + O(h^4),
   so h can be large enough for float rounding to stay small. */
static double fd_error(float *x, size_t n, const float *analytic, objective_fn f, void *ctx, float h) {
    double max_diff = 0.0, max_ref = 1e-12;
    size_t i;
    for (i = 0; i < n; i++) {
        float save = x[i];
        double f1p, f1m, f2p, f2m, numeric;
        x[i] = save + h;
        f1p = f(ctx);
        x[i] = save - h;
        f1m = f(ctx);
        x[i] = save + 2 * h;
        f2p = f(ctx);
        x[i] = save - 2 * h;
        f2m = f(ctx);
        x[i] = save;
        numeric = (8.0 * (f1p - f1m) - (f2p - f2m)) / (12.0 * (double)h);
        if (fabs(numeric - analytic[i]) > max_diff) max_diff = fabs(numeric - analytic[i]);
        if (fabs(numeric) > max_ref) max_ref = fabs(numeric);
    }
    return max_diff / max_ref;
}

static void check_grad(const char *name, float *x, size_t n, const float *analytic, objective_fn f, void *ctx,
                       float h) {
    char label[160], detail[96];
    float *wrong = (float *)malloc(n * sizeof(float));
    double e = fd_error(x, n, analytic, f, ctx, h), e_wrong;
    size_t i;
    for (i = 0; i < n; i++) wrong[i] = analytic[i] * 1.01f;
    e_wrong = fd_error(x, n, wrong, f, ctx, h);
    snprintf(label, sizeof label, "gradient %s matches finite differences (error %.1e)", name, e);
    snprintf(detail, sizeof detail, "relative error %.2e > %.1e", e, GRAD_TOL);
    expect(e < GRAD_TOL, label, detail);
    snprintf(label, sizeof label, "gradient %s check catches a 1%% error (error %.1e)", name, e_wrong);
    snprintf(detail, sizeof detail, "error of the mutated gradient only %.2e", e_wrong);
    expect(e_wrong > GRAD_TOL, label, detail);
    free(wrong);
}

static double dot_double(const float *a, const float *b, size_t n) {
    double s = 0.0;
    size_t i;
    for (i = 0; i < n; i++) s += (double)a[i] * (double)b[i];
    return s;
}

/* --- one context per layer: inputs, parameters, output and R --- */

typedef struct layer_case {
    int B, T, C, OC, NH, V;
    float *inp, *w, *bias, *out, *R, *mean, *rstd, *att;
    int *tokens;
} layer_case;

static double ln_objective(void *p) {
    layer_case *c = (layer_case *)p;
    photon__layernorm_forward(c->out, c->mean, c->rstd, c->inp, c->w, c->bias, c->B * c->T, c->C);
    return dot_double(c->out, c->R, (size_t)c->B * c->T * c->C);
}

static void test_layernorm_grad(void) {
    uint64_t rng = 11;
    layer_case c;
    size_t N = 6, C = 16;
    float *din = (float *)calloc(N * C, 4), *dw = (float *)calloc(C, 4), *db = (float *)calloc(C, 4);
    memset(&c, 0, sizeof c);
    c.B = 2, c.T = 3, c.C = (int)C;
    c.inp = random_floats(N * C, 2.0f, &rng);
    c.w = random_floats(C, 1.5f, &rng);
    c.bias = random_floats(C, 0.5f, &rng);
    c.out = (float *)calloc(N * C, 4);
    c.R = random_floats(N * C, 1.0f, &rng);
    c.mean = (float *)calloc(N, 4);
    c.rstd = (float *)calloc(N, 4);
    ln_objective(&c);
    photon__layernorm_backward(din, dw, db, c.R, c.inp, c.w, c.mean, c.rstd, (int)N, (int)C);
    check_grad("layernorm d input", c.inp, N * C, din, ln_objective, &c, 1e-2f);
    check_grad("layernorm d weight", c.w, C, dw, ln_objective, &c, 1e-2f);
    check_grad("layernorm d bias", c.bias, C, db, ln_objective, &c, 1e-2f);
    free(din), free(dw), free(db), free(c.inp), free(c.w), free(c.bias), free(c.out), free(c.R), free(c.mean),
        free(c.rstd);
}

static double matmul_objective(void *p) {
    layer_case *c = (layer_case *)p;
    photon__matmul_forward(c->out, c->inp, c->w, c->bias, c->B * c->T, c->C, c->OC);
    return dot_double(c->out, c->R, (size_t)c->B * c->T * c->OC);
}

static void test_matmul_grad(void) {
    uint64_t rng = 12;
    layer_case c;
    size_t N = 5, IC = 12, OC = 20;
    float *din = (float *)calloc(N * IC, 4), *dw = (float *)calloc(IC * OC, 4), *db = (float *)calloc(OC, 4);
    memset(&c, 0, sizeof c);
    c.B = 1, c.T = (int)N, c.C = (int)IC, c.OC = (int)OC;
    c.inp = random_floats(N * IC, 1.0f, &rng);
    c.w = random_floats(IC * OC, 0.5f, &rng);
    c.bias = random_floats(OC, 0.5f, &rng);
    c.out = (float *)calloc(N * OC, 4);
    c.R = random_floats(N * OC, 1.0f, &rng);
    matmul_objective(&c);
    photon__matmul_backward(din, dw, db, c.R, c.inp, c.w, (int)N, (int)IC, (int)OC);
    check_grad("linear d input", c.inp, N * IC, din, matmul_objective, &c, 1e-2f);
    check_grad("linear d weight", c.w, IC * OC, dw, matmul_objective, &c, 1e-2f);
    check_grad("linear d bias", c.bias, OC, db, matmul_objective, &c, 1e-2f);
    free(din), free(dw), free(db), free(c.inp), free(c.w), free(c.bias), free(c.out), free(c.R);
}

static double attention_objective(void *p) {
    layer_case *c = (layer_case *)p;
    photon__attention_forward(c->out, c->att, c->inp, c->B, c->T, c->C, c->NH);
    return dot_double(c->out, c->R, (size_t)c->B * c->T * c->C);
}

static void test_attention_grad(void) {
    uint64_t rng = 13;
    layer_case c;
    size_t B = 2, T = 5, C = 8, NH = 2;
    float *dqkv = (float *)calloc(B * T * 3 * C, 4);
    memset(&c, 0, sizeof c);
    c.B = (int)B, c.T = (int)T, c.C = (int)C, c.NH = (int)NH;
    c.inp = random_floats(B * T * 3 * C, 1.5f, &rng);
    c.out = (float *)calloc(B * T * C, 4);
    c.att = (float *)calloc(B * NH * T * T, 4);
    c.R = random_floats(B * T * C, 1.0f, &rng);
    attention_objective(&c);
    photon__attention_backward(dqkv, c.R, c.inp, c.att, (int)B, (int)T, (int)C, (int)NH);
    check_grad("attention d qkv", c.inp, B * T * 3 * C, dqkv, attention_objective, &c, 1e-2f);
    {   /* causality: the output at t must not depend on any position after t */
        float *before = (float *)malloc(C * 4);
        int causal = 1;
        attention_objective(&c);
        memcpy(before, c.out, C * 4); /* b = 0, t = 0 */
        fill_random(c.inp + 1 * 3 * C, (T - 1) * 3 * C, 3.0f, &rng);
        attention_objective(&c);
        causal = memcmp(before, c.out, C * 4) == 0;
        expect(causal, "attention is causal: later tokens do not change earlier outputs", NULL);
        free(before);
    }
    free(dqkv), free(c.inp), free(c.out), free(c.att), free(c.R);
}

static double gelu_objective(void *p) {
    layer_case *c = (layer_case *)p;
    photon__gelu_forward(c->out, c->inp, (size_t)c->T);
    return dot_double(c->out, c->R, (size_t)c->T);
}

static void test_gelu_grad(void) {
    uint64_t rng = 14;
    layer_case c;
    size_t n = 64;
    float *din = (float *)calloc(n, 4);
    memset(&c, 0, sizeof c);
    c.T = (int)n;
    c.inp = random_floats(n, 4.0f, &rng);
    c.out = (float *)calloc(n, 4);
    c.R = random_floats(n, 1.0f, &rng);
    photon__gelu_backward(din, c.inp, c.R, n);
    check_grad("gelu d input", c.inp, n, din, gelu_objective, &c, 1e-2f);
    free(din), free(c.inp), free(c.out), free(c.R);
}

static double residual_objective(void *p) {
    layer_case *c = (layer_case *)p;
    photon__residual_forward(c->out, c->inp, c->w, (size_t)c->T);
    return dot_double(c->out, c->R, (size_t)c->T);
}

static void test_residual_grad(void) {
    uint64_t rng = 15;
    layer_case c;
    size_t n = 32;
    float *da = (float *)calloc(n, 4), *db = (float *)calloc(n, 4);
    memset(&c, 0, sizeof c);
    c.T = (int)n;
    c.inp = random_floats(n, 1.0f, &rng);
    c.w = random_floats(n, 1.0f, &rng);
    c.out = (float *)calloc(n, 4);
    c.R = random_floats(n, 1.0f, &rng);
    photon__residual_backward(da, db, c.R, n);
    check_grad("residual d a", c.inp, n, da, residual_objective, &c, 1e-2f);
    check_grad("residual d b", c.w, n, db, residual_objective, &c, 1e-2f);
    free(da), free(db), free(c.inp), free(c.w), free(c.out), free(c.R);
}

static double encoder_objective(void *p) {
    layer_case *c = (layer_case *)p;
    photon__encoder_forward(c->out, c->tokens, c->w, c->bias, c->B, c->T, c->C);
    return dot_double(c->out, c->R, (size_t)c->B * c->T * c->C);
}

static void test_encoder_grad(void) {
    uint64_t rng = 16;
    layer_case c;
    int tokens[6] = {3, 1, 3, 0, 2, 3}; /* repeated ids: their gradients must add up */
    size_t V = 5, T = 3, C = 4;
    float *dwte = (float *)calloc(V * C, 4), *dwpe = (float *)calloc(T * C, 4);
    memset(&c, 0, sizeof c);
    c.B = 2, c.T = (int)T, c.C = (int)C;
    c.tokens = tokens;
    c.w = random_floats(V * C, 1.0f, &rng);
    c.bias = random_floats(T * C, 1.0f, &rng);
    c.out = (float *)calloc(2 * T * C, 4);
    c.R = random_floats(2 * T * C, 1.0f, &rng);
    photon__encoder_backward(dwte, dwpe, c.R, tokens, 2, (int)T, (int)C);
    check_grad("embedding d wte", c.w, V * C, dwte, encoder_objective, &c, 1e-2f);
    check_grad("embedding d wpe", c.bias, T * C, dwpe, encoder_objective, &c, 1e-2f);
    free(dwte), free(dwpe), free(c.w), free(c.bias), free(c.out), free(c.R);
}

static double head_objective(void *p) {
    layer_case *c = (layer_case *)p;
    photon__head_forward(c->out, c->inp, c->w, c->T, c->C, c->V);
    return dot_double(c->out, c->R, (size_t)c->T * c->V);
}

static void test_head_grad(void) {
    uint64_t rng = 17;
    layer_case c;
    size_t N = 4, C = 8, V = 11;
    float *dx = (float *)calloc(N * C, 4), *dw = (float *)calloc(V * C, 4);
    memset(&c, 0, sizeof c);
    c.T = (int)N, c.C = (int)C, c.V = (int)V;
    c.inp = random_floats(N * C, 1.0f, &rng);
    c.w = random_floats(V * C, 1.0f, &rng);
    c.out = (float *)calloc(N * V, 4);
    c.R = random_floats(N * V, 1.0f, &rng);
    photon__head_backward(dx, dw, c.R, c.inp, c.w, (int)N, (int)C, (int)V);
    check_grad("tied head d input", c.inp, N * C, dx, head_objective, &c, 1e-2f);
    check_grad("tied head d wte", c.w, V * C, dw, head_objective, &c, 1e-2f);
    free(dx), free(dw), free(c.inp), free(c.w), free(c.out), free(c.R);
}

static double xent_objective(void *p) {
    layer_case *c = (layer_case *)p;
    double s = 0.0;
    int n;
    photon__softmax_crossentropy_forward(c->out, c->mean, c->inp, c->tokens, c->T, c->V);
    for (n = 0; n < c->T; n++) s += c->mean[n];
    return s / c->T;
}

static void test_crossentropy_grad(void) {
    uint64_t rng = 18;
    layer_case c;
    int targets[5] = {0, 6, 2, 6, 9};
    size_t N = 5, V = 10;
    float *dlogits = (float *)calloc(N * V, 4);
    memset(&c, 0, sizeof c);
    c.T = (int)N, c.V = (int)V;
    c.tokens = targets;
    c.inp = random_floats(N * V, 3.0f, &rng);
    c.out = (float *)calloc(N * V, 4);
    c.mean = (float *)calloc(N, 4);
    xent_objective(&c);
    photon__crossentropy_softmax_backward(dlogits, c.out, targets, 1.0f / (float)N, (int)N, (int)V);
    check_grad("softmax cross-entropy d logits", c.inp, N * V, dlogits, xent_objective, &c, 1e-2f);
    free(dlogits), free(c.inp), free(c.out), free(c.mean);
}

/* --- the whole model: mean loss with respect to every tensor ---
   Through all layers float rounding in the loss is about 1e-7, too close to
   the size of single small gradient entries, so each tensor is checked along
   the direction d of its own gradient (scaled to max |d| = 1), where the
   signal is largest: the derivative of the loss along d by the five-point
   rule against grad . d. A wrong gradient points elsewhere, and one scaled
   by 1.01 moves grad . d by 1%: both must fail. */

typedef struct model_case {
    photon_model *m;
    const int *inputs, *targets;
    int B, T;
} model_case;

static double model_loss(model_case *c) {
    size_t i, N = (size_t)c->B * c->T;
    double s = 0.0;
    photon_forward(c->m, c->inputs, c->targets, c->B, c->T, NULL, NULL);
    for (i = 0; i < N; i++) s += c->m->acts.losses[i];
    return s / (double)N;
}

/* The loss at p + step * d over one tensor (p is restored). */
static double model_loss_along(model_case *c, float *p, const float *d, size_t n, double step) {
    float *save = (float *)malloc(n * sizeof(float));
    double loss;
    size_t i;
    memcpy(save, p, n * sizeof(float));
    for (i = 0; i < n; i++) p[i] = (float)(p[i] + step * d[i]);
    loss = model_loss(c);
    memcpy(p, save, n * sizeof(float));
    free(save);
    return loss;
}

static void test_model_grad(void) {
    photon_config cfg = {13, 8, 2, 2, 8};
    photon_model m;
    model_case c;
    int inputs[2 * 6], targets[2 * 6], i;
    uint64_t rng = 19;
    float *analytic, *d;
    double h = 1e-2;
    photon_model_init(&m, &cfg, 7, NULL);
    fill_random(m.params, m.num_params, 0.3f, &rng); /* larger than GPT-2's init: every path carries signal */
    for (i = 0; i < 12; i++) {
        inputs[i] = (int)(photon_rand_u64(&rng) % 13);
        targets[i] = (int)(photon_rand_u64(&rng) % 13);
    }
    c.m = &m, c.inputs = inputs, c.targets = targets, c.B = 2, c.T = 6;
    photon_zero_grad(&m);
    model_loss(&c);
    photon_backward(&m, NULL);
    analytic = (float *)malloc(m.num_params * sizeof(float));
    d = (float *)malloc(m.num_params * sizeof(float));
    memcpy(analytic, m.grads, m.num_params * sizeof(float));
    for (i = 0; i < m.num_tensors; i++) {
        const photon_tensor_info *t = &m.tensors[i];
        float *p = m.params + t->offset;
        double worst = 0.0, worst_mutated = 1.0;
        char label[128], detail[64];
        double numeric, exact, scale = 0.0;
        size_t j;
        for (j = 0; j < t->size; j++)
            if (fabs(analytic[t->offset + j]) > scale) scale = fabs(analytic[t->offset + j]);
        for (j = 0; j < t->size; j++) d[j] = (float)(analytic[t->offset + j] / scale);
        numeric = (8.0 * (model_loss_along(&c, p, d, t->size, h) - model_loss_along(&c, p, d, t->size, -h)) -
                   (model_loss_along(&c, p, d, t->size, 2 * h) - model_loss_along(&c, p, d, t->size, -2 * h))) /
                  (12.0 * h);
        exact = dot_double(analytic + t->offset, d, t->size);
        worst = fabs(exact - numeric) / fabs(numeric);
        worst_mutated = fabs(1.01 * exact - numeric) / fabs(numeric);
        snprintf(label, sizeof label, "model gradient d %s matches finite differences (error %.1e)", t->name, worst);
        snprintf(detail, sizeof detail, "relative error %.2e", worst);
        expect(worst < GRAD_TOL, label, detail);
        snprintf(label, sizeof label, "model gradient d %s check catches a 1%% error (error %.1e)", t->name,
                 worst_mutated);
        expect(worst_mutated > GRAD_TOL, label, NULL);
    }
    free(analytic);
    free(d);
    photon_model_free(&m);
}

/* ======================================================================= */
/* Model basics                                                            */
/* ======================================================================= */

static void test_init(void) {
    photon_config cfg = {64, 16, 4, 2, 32};
    photon_model a, b, c;
    photon_error err;
    double sum2 = 0.0, sum2_proj = 0.0;
    size_t i;
    int k, ok_ln = 1, ok_bias = 1;
    photon_model_init(&a, &cfg, 42, NULL);
    photon_model_init(&b, &cfg, 42, NULL);
    photon_model_init(&c, &cfg, 43, NULL);
    expect(memcmp(a.params, b.params, a.num_params * 4) == 0, "init: the same seed gives identical parameters", NULL);
    expect(memcmp(a.params, c.params, a.num_params * 4) != 0, "init: another seed gives other parameters", NULL);
    for (i = 0; i < (size_t)64 * 32; i++) sum2 += (double)a.params[i] * a.params[i];
    for (k = 0; k < a.num_tensors; k++) {
        const photon_tensor_info *t = &a.tensors[k];
        const float *p = a.params + t->offset;
        if (strstr(t->name, "c_proj.weight"))
            for (i = 0; i < t->size; i++) sum2_proj += (double)p[i] * p[i] / (double)(t->size * 8);
        if (strstr(t->name, "ln_") && strstr(t->name, "weight"))
            for (i = 0; i < t->size; i++) ok_ln &= p[i] == 1.0f;
        if (strstr(t->name, "bias"))
            for (i = 0; i < t->size; i++) ok_bias &= p[i] == 0.0f;
    }
    expect(fabs(sqrt(sum2 / (64 * 32)) - 0.02) < 0.001, "init: embeddings have std 0.02", NULL);
    expect(fabs(sqrt(sum2_proj) - 0.02 / sqrt(8.0)) < 0.0005, "init: residual projections have std 0.02/sqrt(2L)", NULL);
    expect(ok_ln, "init: LayerNorm gains are one", NULL);
    expect(ok_bias, "init: biases are zero", NULL);
    expect(a.num_params == 64 * 32 + 16 * 32 + 4 * (12 * 32 * 32 + 13 * 32) + 2 * 32, "init: parameter count", NULL);
    expect(strcmp(a.tensors[2].name, "h.0.ln_1.weight") == 0 &&
               strcmp(a.tensors[a.num_tensors - 1].name, "ln_f.bias") == 0,
           "init: tensors carry Hugging Face GPT-2 names", NULL);
    photon_model_free(&a);
    photon_model_free(&b);
    photon_model_free(&c);
    cfg.n_head = 3;
    expect(photon_model_init(&a, &cfg, 1, &err) == PHOTON_ERR_ARGUMENT && strstr(err.message, "multiple"),
           "init: a width that is not a multiple of the heads is refused", err.message);
}

static void test_forward_checks(void) {
    photon_config cfg = {10, 4, 1, 1, 4};
    photon_model m;
    photon_error err;
    int in[5] = {1, 2, 3, 4, 5}, bad[4] = {1, 2, 10, 3};
    float loss;
    photon_model_init(&m, &cfg, 1, NULL);
    expect(photon_forward(&m, in, in, 1, 5, &loss, &err) == PHOTON_ERR_ARGUMENT && strstr(err.message, "context"),
           "forward: a sequence longer than the context is refused", err.message);
    expect(photon_forward(&m, bad, in, 1, 4, &loss, &err) == PHOTON_ERR_ARGUMENT && strstr(err.message, "vocabulary"),
           "forward: a token outside the vocabulary is refused", err.message);
    expect(photon_forward(&m, in, in + 1, 1, 4, &loss, &err) == PHOTON_OK && fabs(loss - log(10.0)) < 0.1,
           "forward: an initial model's loss is near ln(V)", NULL);
    photon_model_free(&m);
}

/* ======================================================================= */
/* Optimizer                                                               */
/* ======================================================================= */

static void test_schedule(void) {
    photon_schedule s = {1.0f, 10, 110, 0.1f};
    photon_schedule none = {0.5f, 0, 100, 0.1f};
    expect(fabs(photon_schedule_lr(&s, 0) - 0.1) < 1e-7, "schedule: warmup starts at peak/warmup", NULL);
    expect(fabs(photon_schedule_lr(&s, 9) - 1.0) < 1e-7, "schedule: warmup reaches the peak", NULL);
    expect(fabs(photon_schedule_lr(&s, 10) - 1.0) < 1e-7, "schedule: decay starts at the peak", NULL);
    expect(fabs(photon_schedule_lr(&s, 60) - 0.55) < 1e-6, "schedule: half way the cosine is at the mean", NULL);
    expect(fabs(photon_schedule_lr(&s, 110) - 0.1) < 1e-7, "schedule: ends at min_lr_frac x peak", NULL);
    expect(fabs(photon_schedule_lr(&s, 1000) - 0.1) < 1e-7, "schedule: stays at the floor after the end", NULL);
    expect(photon_schedule_lr(&none, 0) == 0.5f, "schedule: warmup 0 uses the full rate at the first step", NULL);
}

/* AdamW against the formula computed in double, over several steps, with
   clipping active and decay on matrices only. */
static void test_adamw(void) {
    photon_config cfg = {8, 4, 1, 2, 4};
    photon_model m;
    photon_adamw_state st;
    photon_adamw_config hp = {0.9f, 0.95f, 1e-8f, 0.1f, 0.5f};
    double *p, *mm, *vv, max_err = 0.0, max_p = 0.0;
    float lrs[3] = {1e-2f, 5e-3f, 2e-3f};
    uint64_t rng = 5;
    size_t i;
    int step, k;
    photon_model_init(&m, &cfg, 3, NULL);
    photon_adamw_state_init(&st, m.num_params, NULL);
    p = (double *)calloc(m.num_params, 8);
    mm = (double *)calloc(m.num_params, 8);
    vv = (double *)calloc(m.num_params, 8);
    for (i = 0; i < m.num_params; i++) p[i] = m.params[i];
    for (step = 1; step <= 3; step++) {
        double norm, clip;
        fill_random(m.grads, m.num_params, 0.2f, &rng);
        norm = photon_grad_norm(&m);
        clip = norm > hp.grad_clip ? hp.grad_clip / (norm + 1e-6) : 1.0;
        for (k = 0; k < m.num_tensors; k++) {
            const photon_tensor_info *t = &m.tensors[k];
            double wd = t->decay ? hp.weight_decay : 0.0;
            for (i = t->offset; i < t->offset + t->size; i++) {
                double g = m.grads[i] * clip;
                mm[i] = 0.9 * mm[i] + 0.1 * g;
                vv[i] = 0.95 * vv[i] + 0.05 * g * g;
                p[i] -= lrs[step - 1] * ((mm[i] / (1 - pow(0.9, step))) / (sqrt(vv[i] / (1 - pow(0.95, step))) + 1e-8) +
                                         wd * p[i]);
            }
        }
        photon_adamw_update(&m, &st, &hp, lrs[step - 1], norm);
        expect(norm > hp.grad_clip, "adamw: the test gradients are large enough to be clipped", NULL);
    }
    for (i = 0; i < m.num_params; i++) {
        if (fabs(m.params[i] - p[i]) > max_err) max_err = fabs(m.params[i] - p[i]);
        if (fabs(p[i]) > max_p) max_p = fabs(p[i]);
    }
    expect(max_err / max_p < 1e-5, "adamw: three steps match the direct computation in double", NULL);
    expect(st.t == 3, "adamw: the step count advances", NULL);
    {   /* decay touches matrices, not biases or LayerNorm: with zero gradient, only decay moves parameters */
        photon_adamw_state fresh;
        float before_w = m.params[m.tensors[4].offset], before_b = m.params[m.tensors[3].offset];
        photon_adamw_state_init(&fresh, m.num_params, NULL);
        photon_zero_grad(&m);
        photon_adamw_update(&m, &fresh, &hp, 0.1f, 0.0);
        expect(m.params[m.tensors[4].offset] == before_w - 0.1f * 0.1f * before_w,
               "adamw: decoupled decay applies to matrices", NULL);
        expect(m.params[m.tensors[3].offset] == before_b, "adamw: no decay on LayerNorm parameters", NULL);
        photon_adamw_state_free(&fresh);
    }
    free(p), free(mm), free(vv);
    photon_adamw_state_free(&st);
    photon_model_free(&m);
}

static void test_train_determinism(void) {
    photon_config cfg = {16, 8, 2, 2, 8};
    photon_model a, b;
    photon_adamw_state sa, sb;
    photon_adamw_config hp = {0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
    photon_schedule sched = {1e-2f, 2, 10, 0.1f};
    int inputs[16], targets[16], i, s;
    float first = 0.0f, last = 0.0f;
    photon_step_stats st;
    memset(&st, 0, sizeof st);
    for (i = 0; i < 16; i++) inputs[i] = i % 7, targets[i] = (i + 1) % 7;
    photon_model_init(&a, &cfg, 9, NULL);
    photon_model_init(&b, &cfg, 9, NULL);
    photon_adamw_state_init(&sa, a.num_params, NULL);
    photon_adamw_state_init(&sb, b.num_params, NULL);
    for (s = 0; s < 10; s++) {
        photon_train_step(&a, &sa, &hp, &sched, inputs, targets, 2, 8, &st, NULL);
        if (s == 0) first = st.loss;
        last = st.loss;
        photon_train_step(&b, &sb, &hp, &sched, inputs, targets, 2, 8, NULL, NULL);
    }
    expect(memcmp(a.params, b.params, a.num_params * 4) == 0 && memcmp(sa.v, sb.v, a.num_params * 4) == 0,
           "training: the same seed and batches give bit-identical parameters", NULL);
    expect(last < first - 0.5f, "training: ten steps on one batch lower its loss", NULL);
    expect(a.step == 10 && a.tokens_seen == 160, "training: step clock and token count advance", NULL);
    photon_adamw_state_free(&sa);
    photon_adamw_state_free(&sb);
    photon_model_free(&a);
    photon_model_free(&b);
}

/* ======================================================================= */
/* Data                                                                    */
/* ======================================================================= */

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
}

static void write_shard(const char *path, const uint16_t *tokens, uint32_t n, uint32_t claimed, uint32_t version) {
    int32_t header[256];
    FILE *f = fopen(path, "wb");
    memset(header, 0, sizeof header);
    header[0] = 20240520;
    header[1] = (int32_t)version;
    header[2] = (int32_t)claimed;
    fwrite(header, 4, 256, f);
    fwrite(tokens, 2, n, f);
    fclose(f);
}

static void test_data(void) {
    uint16_t tokens[100];
    photon_dataset ds;
    photon_loader ld;
    photon_error err;
    const char *shard = tmp_path("data.bin"), *text = tmp_path("data.txt"), *paths[2];
    int inputs[10], targets[10], i, ok = 1;
    for (i = 0; i < 100; i++) tokens[i] = (uint16_t)(i * 3);
    write_shard(shard, tokens, 100, 100, 1);
    write_bytes(text, "abc", 3);
    paths[0] = shard, paths[1] = text;
    expect(photon_dataset_load(&ds, paths, 2, &err) == PHOTON_OK && ds.num_tokens == 103 && ds.tokens[99] == 297 &&
               ds.tokens[100] == 'a' && ds.text_bytes == 0 && ds.max_token == 297,
           "data: a shard and a text file concatenate", err.message);
    expect(photon_dataset_check_vocab(&ds, 256, &err) == PHOTON_ERR_MISMATCH && strstr(err.message, "297"),
           "data: tokens beyond the vocabulary are refused", err.message);
    photon_dataset_free(&ds);
    paths[0] = shard;
    photon_dataset_load(&ds, paths, 1, NULL);
    photon_loader_init(&ld, &ds, 2, 5, NULL);
    photon_loader_next(&ld, inputs, targets);
    for (i = 0; i < 10; i++) ok &= inputs[i] == 3 * i && targets[i] == 3 * (i + 1);
    expect(ok && ld.position == 10, "loader: B windows of T+1 consecutive tokens", NULL);
    for (i = 0; i < 9; i++) photon_loader_next(&ld, inputs, targets); /* positions 10..90: the last fits (90+11 > 100 wraps) */
    expect(ld.epoch == 1 && ld.position == 10 && inputs[0] == 0, "loader: wraps to a new epoch at the end", NULL);
    expect(photon_loader_init(&ld, &ds, 10, 10, &err) == PHOTON_ERR_ARGUMENT && strstr(err.message, "needs at least"),
           "loader: data shorter than one batch is refused", err.message);
    photon_dataset_free(&ds);

    write_shard(shard, tokens, 100, 101, 1);
    expect(photon_dataset_load(&ds, paths, 1, &err) == PHOTON_ERR_FORMAT && strstr(err.message, "header says 101") &&
               strstr(err.message, shard),
           "data: a shard whose size disagrees with its header is refused", err.message);
    write_shard(shard, tokens, 100, 100, 2);
    expect(photon_dataset_load(&ds, paths, 1, &err) == PHOTON_ERR_FORMAT && strstr(err.message, "version 2"),
           "data: an unknown shard version is refused", err.message);
    write_shard(shard, tokens, 0, 0, 1);
    expect(photon_dataset_load(&ds, paths, 1, &err) == PHOTON_ERR_FORMAT && strstr(err.message, "no tokens"),
           "data: an empty shard is refused", err.message);
    paths[0] = tmp_path("does-not-exist.txt");
    expect(photon_dataset_load(&ds, paths, 1, &err) == PHOTON_ERR_IO && strstr(err.message, "does-not-exist"),
           "data: a missing file is named", err.message);
}

/* Evaluation sums per-window losses in order: the batch size cannot change it. */
static void test_eval_batch_invariance(void) {
    photon_config cfg = {256, 16, 1, 2, 16};
    photon_model m;
    photon_dataset ds;
    photon_eval_result r1, r3;
    const char *text = tmp_path("eval.txt"), *paths[1];
    char buf[300];
    int i;
    for (i = 0; i < 300; i++) buf[i] = (char)('a' + (i * 7) % 26);
    write_bytes(text, buf, 300);
    paths[0] = text;
    photon_dataset_load(&ds, paths, 1, NULL);
    photon_model_init(&m, &cfg, 1, NULL);
    photon_evaluate(&m, &ds, 1, 16, 0, &r1, NULL);
    photon_evaluate(&m, &ds, 3, 16, 0, &r3, NULL);
    expect(r1.loss == r3.loss && r1.tokens == 18 * 16, "eval: batch size does not change the loss", NULL);
    expect(fabs(r1.bits_per_byte - r1.loss / log(2.0)) < 1e-12, "eval: bits per byte of byte-level text", NULL);
    photon_evaluate(&m, &ds, 4, 16, 40, &r1, NULL);
    expect(r1.tokens == 32, "eval: --max-tokens caps whole windows", NULL);
    photon_dataset_free(&ds);
    photon_model_free(&m);
}

/* ======================================================================= */
/* safetensors and checkpoints                                             */
/* ======================================================================= */

static void test_safetensors_roundtrip(void) {
    float a[6] = {1, -2, 3.5f, 4, 5, 6e-30f}, b[3] = {7, 8, 9}, ra[6], rb[3];
    photon_st_entry e[2];
    const char *keys[2] = {"format", "note"}, *values[2] = {"pt", "quote \" and \\ and \ttab"};
    const char *path = tmp_path("roundtrip.safetensors");
    photon_st_file st;
    photon_error err;
    int ok;
    memset(e, 0, sizeof e);
    e[0].name = "a.weight", e[0].ndim = 2, e[0].shape[0] = 2, e[0].shape[1] = 3, e[0].data = a;
    e[1].name = "b", e[1].ndim = 1, e[1].shape[0] = 3, e[1].data = b;
    ok = photon_st_write_f32(path, e, 2, keys, values, 2, &err) == PHOTON_OK && photon_st_open(&st, path, &err) == PHOTON_OK;
    expect(ok, "safetensors: write then open", err.message);
    if (!ok) return;
    expect(st.num_tensors == 2 && st.tensors[0].shape[1] == 3 && st.data_start % 8 == 0,
           "safetensors: names, shapes, 8-byte aligned data", NULL);
    expect(photon_st_read_f32(&st, photon_st_find(&st, "a.weight"), ra, 6, NULL) == PHOTON_OK &&
               photon_st_read_f32(&st, photon_st_find(&st, "b"), rb, 3, NULL) == PHOTON_OK &&
               memcmp(a, ra, sizeof a) == 0 && memcmp(b, rb, sizeof b) == 0,
           "safetensors: tensor data round trips exactly", NULL);
    expect(strcmp(photon_st_meta(&st, "note"), values[1]) == 0, "safetensors: metadata strings round trip with escapes",
           NULL);
    photon_st_close(&st);
}

/* Writes 8-byte length + header + data_len zero bytes. */
static void write_raw(const char *path, const char *header, size_t data_len, uint64_t claimed_len) {
    FILE *f = fopen(path, "wb");
    unsigned char len8[8];
    int k;
    for (k = 0; k < 8; k++) len8[k] = (unsigned char)(claimed_len >> (8 * k));
    fwrite(len8, 1, 8, f);
    /* a claimed length longer than the string writes the string's NUL too */
    fwrite(header, 1, claimed_len > strlen(header) && claimed_len <= strlen(header) + 1 ? claimed_len : strlen(header), f);
    for (; data_len > 0; data_len--) fputc(0, f);
    fclose(f);
}

static void expect_st_error(const char *name, const char *header, size_t data_len, long long claimed,
                            const char *needle) {
    const char *path = tmp_path("corrupt.safetensors");
    photon_st_file st;
    photon_error err;
    photon_result r;
    char label[128];
    memset(&err, 0, sizeof err);
    write_raw(path, header, data_len, claimed < 0 ? strlen(header) : (uint64_t)claimed);
    r = photon_st_open(&st, path, &err);
    snprintf(label, sizeof label, "safetensors reader refuses %s", name);
    expect(r == PHOTON_ERR_FORMAT && strstr(err.message, needle) && strstr(err.message, path) && !strchr(err.message, '\n'),
           label, err.message);
    if (r == PHOTON_OK) photon_st_close(&st);
}

static void test_safetensors_corrupt(void) {
    const char *path = tmp_path("short.safetensors");
    photon_st_file st;
    photon_error err;
    write_bytes(path, "abc", 3);
    expect(photon_st_open(&st, path, &err) == PHOTON_ERR_FORMAT && strstr(err.message, "too short"),
           "safetensors reader refuses a file shorter than 8 bytes", err.message);
    expect_st_error("a header over 100 MB", "{}", 0, 200000000, "exceeds the limit");
    expect_st_error("a header running past the end", "{}", 0, 50, "runs past the end");
    expect_st_error("a header that is not an object", "[]", 0, -1, "does not start with");
    expect_st_error("broken JSON", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4, -1,
                    "invalid JSON");
    expect_st_error("trailing characters", "{} x", 0, -1, "trailing characters");
    expect_st_error("invalid UTF-8", "{\"\xff\":1}", 0, -1, "UTF-8");
    expect_st_error("an unknown dtype", "{\"a\":{\"dtype\":\"F17\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, -1,
                    "unknown dtype");
    expect_st_error("a shape that does not fill its span",
                    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, -1, "data_offsets span");
    expect_st_error("offsets that run backwards", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}",
                    4, -1, "run backwards");
    expect_st_error("overlapping tensors",
                    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                    8, -1, "overlaps");
    expect_st_error("a hole between tensors",
                    "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
                    12, -1, "hole of 4 bytes");
    expect_st_error("truncated tensor data", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 10,
                    -1, "truncated");
    expect_st_error("trailing bytes", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 6, -1,
                    "2 trailing bytes");
    expect_st_error("duplicate names",
                    "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                    "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                    8, -1, "appears twice");
    expect_st_error("a metadata value that is not a string", "{\"__metadata__\":{\"k\":1}}", 0, -1, "not a string");
    expect_st_error("a tensor without data_offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, -1,
                    "lacks 'data_offsets'");
    expect_st_error("a fractional shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4, -1,
                    "fraction");
    expect_st_error("space before the header object", " {}", 0, -1, "does not start with");
    expect_st_error("a tensor field given twice",
                    "{\"a\":{\"dtype\":\"F64\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, -1,
                    "field 'dtype' twice");
    expect_st_error("a metadata key given twice", "{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0, -1,
                    "appears twice");
    expect_st_error("a malformed number in an ignored field",
                    "{\"a\":{\"x\":1-2e,\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, -1,
                    "invalid JSON");
    expect_st_error("a NUL byte in the header", "{\"a\":{\"x\":1", 0, 12, "invalid JSON");
    expect_st_error("a string ending in a backslash", "{\"a\\", 0, -1, "unterminated string");
    {
        const char *ok = "{\"__metadata__\":null,\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],"
                         "\"x\":[1.5e-3,true,null,{\"y\":\"\\u00e9\"}]}}";
        photon_st_file st2;
        write_raw(tmp_path("ok.safetensors"), ok, 4, strlen(ok));
        expect(photon_st_open(&st2, tmp_path("ok.safetensors"), &err) == PHOTON_OK,
               "safetensors reader accepts null metadata and ignores unknown fields", err.message);
        photon_st_close(&st2);
    }
    expect_st_error("a negative shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, -1,
                    "non-negative integer");
}

/* Writes a checkpoint-like file from a model, with one thing changed. */
static photon_result load_variant(const photon_model *m, const char *path, const char *drop, const char *extra,
                                  const char *kind, const char *version, const char *width, photon_error *err) {
    photon_st_entry e[64];
    photon__meta meta;
    photon_model loaded;
    photon_result r;
    int i, n = 0;
    memset(e, 0, sizeof e);
    for (i = 0; i < m->num_tensors; i++) {
        if (drop && strcmp(m->tensors[i].name, drop) == 0) continue;
        e[n].name = m->tensors[i].name;
        e[n].ndim = m->tensors[i].ndim;
        e[n].shape[0] = (uint64_t)m->tensors[i].shape[0];
        e[n].shape[1] = (uint64_t)m->tensors[i].shape[1];
        e[n++].data = m->params + m->tensors[i].offset;
    }
    if (extra) {
        e[n] = e[n - 1];
        e[n++].name = extra;
    }
    photon__meta_header(&meta, kind, &m->config);
    if (version) meta.values[1] = version;
    if (width) meta.values[7] = width;
    photon__meta_u64(&meta, "photon.step", 0);
    photon__meta_u64(&meta, "photon.tokens_seen", 0);
    photon__meta_u64(&meta, "photon.seed", 0);
    photon__meta_u64(&meta, "photon.round", 0);
    photon_st_write_f32(path, e, n, meta.keys, meta.values, meta.n, NULL);
    r = photon_checkpoint_load(&loaded, path, err);
    if (r == PHOTON_OK) photon_model_free(&loaded);
    return r;
}

static void test_checkpoint(void) {
    photon_config cfg = {32, 8, 2, 2, 8};
    photon_model m, back;
    photon_error err;
    const char *path = tmp_path("ckpt.safetensors"), *bad = tmp_path("bad.safetensors");
    photon_model_init(&m, &cfg, 5, NULL);
    m.step = 123, m.tokens_seen = 4567;
    expect(photon_checkpoint_save(&m, path, &err) == PHOTON_OK && photon_checkpoint_load(&back, path, &err) == PHOTON_OK,
           "checkpoint: save and load", err.message);
    expect(memcmp(&back.config, &cfg, sizeof cfg) == 0 && back.step == 123 && back.tokens_seen == 4567 && back.seed == 5 &&
               memcmp(back.params, m.params, m.num_params * 4) == 0,
           "checkpoint: config, clock and parameters round trip exactly", NULL);
    photon_model_free(&back);
    expect(load_variant(&m, bad, "h.1.mlp.c_fc.bias", NULL, "checkpoint", NULL, NULL, &err) == PHOTON_ERR_MISMATCH &&
               strstr(err.message, "'h.1.mlp.c_fc.bias' is missing"),
           "checkpoint: a missing tensor is named", err.message);
    expect(load_variant(&m, bad, NULL, "h.9.extra", "checkpoint", NULL, NULL, &err) == PHOTON_ERR_MISMATCH &&
               strstr(err.message, "unexpected tensor 'h.9.extra'"),
           "checkpoint: an unexpected tensor is named", err.message);
    expect(load_variant(&m, bad, NULL, NULL, "delta", NULL, NULL, &err) == PHOTON_ERR_MISMATCH &&
               strstr(err.message, "expected a checkpoint"),
           "checkpoint: a file of another kind is refused", err.message);
    expect(load_variant(&m, bad, NULL, NULL, "checkpoint", "3", NULL, &err) == PHOTON_ERR_FORMAT &&
               strstr(err.message, "format version 3"),
           "checkpoint: a newer format version is refused", err.message);
    expect(load_variant(&m, bad, NULL, NULL, "checkpoint", "1", NULL, &err) == PHOTON_ERR_FORMAT &&
               strstr(err.message, "format version 1, written before payload hashes") && strstr(err.message, bad),
           "checkpoint: format 1 (no payload hash) is refused, saying why", err.message);
    photon_accept_unhashed(1);
    expect(load_variant(&m, bad, NULL, NULL, "checkpoint", "1", NULL, &err) == PHOTON_OK,
           "checkpoint: format 1 loads when unhashed files are accepted", err.message);
    photon_accept_unhashed(0);
    expect(load_variant(&m, bad, NULL, NULL, "checkpoint", NULL, "7", &err) == PHOTON_ERR_FORMAT &&
               strstr(err.message, "invalid model config"),
           "checkpoint: an invalid config is refused", err.message);
    expect(load_variant(&m, bad, NULL, NULL, "checkpoint", NULL, "16", &err) == PHOTON_ERR_MISMATCH &&
               strstr(err.message, "shape other than"),
           "checkpoint: shapes that disagree with the config are refused", err.message);
    write_raw(bad, "{}", 0, 2);
    expect(photon_checkpoint_load(&back, bad, &err) == PHOTON_ERR_FORMAT && strstr(err.message, "not a photon file"),
           "checkpoint: a safetensors file without photon metadata is refused", err.message);
    {
        photon_st_file st;
        float x[2];
        const char *h = "{\"wte.weight\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}";
        write_raw(bad, h, 4, strlen(h));
        photon_st_open(&st, bad, NULL);
        expect(photon_st_read_f32(&st, photon_st_find(&st, "wte.weight"), x, 2, &err) == PHOTON_ERR_MISMATCH &&
                   strstr(err.message, "F16"),
               "checkpoint: a non-F32 tensor is refused", err.message);
        photon_st_close(&st);
    }
    {   /* NaN in a tensor */
        float save = m.params[m.tensors[3].offset];
        m.params[m.tensors[3].offset] = NAN;
        photon_checkpoint_save(&m, bad, NULL);
        expect(photon_checkpoint_load(&back, bad, &err) == PHOTON_ERR_NUMERIC && strstr(err.message, "NaN") &&
                   strstr(err.message, m.tensors[3].name),
               "checkpoint: NaN in a tensor is refused", err.message);
        m.params[m.tensors[3].offset] = save;
    }
    expect(photon_checkpoint_save(&m, tmp_path("no-such-dir/x.safetensors"), &err) == PHOTON_ERR_IO &&
               strstr(err.message, "no-such-dir"),
           "checkpoint: an unwritable path is reported", err.message);
    photon_model_free(&m);
}

static void test_client_state(void) {
    photon_config cfg = {16, 4, 1, 1, 4}, other = {16, 4, 1, 1, 8};
    photon_client_state s, back;
    photon_error err;
    const char *path = tmp_path("state.safetensors");
    uint64_t rng = 3;
    size_t i;
    photon_model m;
    photon_model_init(&m, &cfg, 1, NULL);
    memset(&s, 0, sizeof s);
    photon_adamw_state_init(&s.adamw, m.num_params, NULL);
    fill_random(s.adamw.m, m.num_params, 1.0f, &rng);
    for (i = 0; i < m.num_params; i++) s.adamw.v[i] = photon_rand_uniform(&rng);
    s.adamw.t = 17, s.step = 99, s.data_position = 12345, s.data_epoch = 2, s.data_tokens = 777777,
    s.data_hash = 0xfedcba9876543210ull;
    expect(photon_client_state_save(&s, &cfg, path, &err) == PHOTON_OK &&
               photon_client_state_load(&back, &cfg, path, &err) == PHOTON_OK,
           "client state: save and load", err.message);
    expect(back.adamw.t == 17 && back.step == 99 && back.data_position == 12345 && back.data_epoch == 2 &&
               back.data_tokens == 777777 && back.data_hash == s.data_hash &&
               memcmp(back.adamw.m, s.adamw.m, m.num_params * 4) == 0 &&
               memcmp(back.adamw.v, s.adamw.v, m.num_params * 4) == 0,
           "client state: moments, counters and data position round trip", NULL);
    photon_adamw_state_free(&back.adamw);
    s.data_position = s.data_tokens + 1;
    photon_client_state_save(&s, &cfg, path, NULL);
    expect(photon_client_state_load(&back, &cfg, path, &err) == PHOTON_ERR_FORMAT && strstr(err.message, "beyond"),
           "client state: a data position past the data is refused", err.message);
    s.data_position = 12345;
    photon_client_state_save(&s, &cfg, path, NULL);
    expect(photon_client_state_load(&back, &other, path, &err) == PHOTON_ERR_MISMATCH && strstr(err.message, "width 4"),
           "client state: a state of another model config is refused", err.message);
    {
        photon_model loaded;
        expect(photon_checkpoint_load(&loaded, path, &err) == PHOTON_ERR_MISMATCH &&
                   strstr(err.message, "client_state, expected a checkpoint"),
               "client state: is not accepted as a checkpoint", err.message);
    }
    photon_adamw_state_free(&s.adamw);
    photon_model_free(&m);
}


/* ======================================================================= */
/* The library's file primitives, client splits and resume                 */
/* ======================================================================= */

/* The fast linear layer against its three-loop definition, and the public
   matrix product with every transpose against a direct double sum. */
static void test_matmul_naive(void) {
    int N = 37, IC = 53, OC = 71, n, o, k, ta, tb;
    uint64_t rng = 11;
    float *x = random_floats((size_t)N * IC, 1.0f, &rng), *w = random_floats((size_t)IC * OC, 1.0f, &rng);
    float *b = random_floats((size_t)OC, 1.0f, &rng), *fast = (float *)calloc((size_t)N * OC, 4);
    float *slow = (float *)calloc((size_t)N * OC, 4);
    double worst = 0.0;
    for (k = 0; k < 2; k++) {
        photon__matmul_forward(fast, x, w, k ? b : NULL, N, IC, OC);
        photon__matmul_forward_naive(slow, x, w, k ? b : NULL, N, IC, OC);
        for (n = 0; n < N * OC; n++) worst = fmax(worst, fabs((double)fast[n] - slow[n]) / (1.0 + fabs((double)slow[n])));
    }
    expect(worst < 1e-5, "linear layer: the fast matrix product agrees with the three-loop definition", NULL);
    for (ta = 0; ta < 2; ta++)
        for (tb = 0; tb < 2; tb++) { /* C (N,OC) = op(A) op(B), K = IC */
            char name[96];
            worst = 0.0;
            photon_gemm(N, OC, IC, x, ta ? N : IC, ta, w, tb ? IC : OC, tb, fast, OC, 0);
            for (n = 0; n < N; n++)
                for (o = 0; o < OC; o++) {
                    double sum = 0.0;
                    for (k = 0; k < IC; k++)
                        sum += (double)(ta ? x[(size_t)k * N + n] : x[(size_t)n * IC + k]) *
                               (double)(tb ? w[(size_t)o * IC + k] : w[(size_t)k * OC + o]);
                    worst = fmax(worst, fabs(fast[(size_t)n * OC + o] - sum) / (1.0 + fabs(sum)));
                }
            snprintf(name, sizeof name, "photon_gemm (transpose A %d, B %d) against a double sum", ta, tb);
            expect(worst < 1e-5, name, NULL);
        }
    free(x), free(w), free(b), free(fast), free(slow);
}

/* An encoder of two bytes per token: what photon.h needs from a tokenizer. */
static photon_result pair_encode(void *ctx, const void *text, size_t len, uint16_t *tokens, size_t *num_tokens,
                                 photon_error *err) {
    const unsigned char *s = (const unsigned char *)text;
    size_t i;
    int lie = *(int *)ctx;
    (void)err;
    for (i = 0; i + 1 < len; i += 2) tokens[i / 2] = (uint16_t)(s[i] % 16 * 16 + s[i + 1] % 16);
    *num_tokens = lie ? len + 1 : len / 2;
    return PHOTON_OK;
}
static size_t pair_bytes(void *ctx, int id) { return (void)ctx, (void)id, 2; }

static void test_encoder_and_shards(void) {
    photon_config cfg = {256, 8, 1, 2, 8};
    photon_model m;
    photon_adamw_state st;
    photon_adamw_config hp = {0.9f, 0.95f, 1e-8f, 0.0f, 1.0f};
    photon_schedule lr = {1e-2f, 0, 10, 1.0f};
    photon_dataset ds, back;
    photon_loader ld;
    photon_eval_result ev;
    photon_encoder enc;
    photon_error err;
    const char *text = tmp_path("enc.txt"), *shard = tmp_path("enc.bin"), *paths[1];
    int lie = 0, in[16], tg[16], s, ok = 1;
    char buf[400];
    size_t i;
    for (i = 0; i < sizeof buf; i++) buf[i] = (char)('a' + (i * 7) % 23);
    write_bytes(text, buf, sizeof buf);
    enc.encode = pair_encode, enc.token_bytes = pair_bytes, enc.ctx = &lie, enc.vocab_size = 256;
    paths[0] = text;
    expect(photon_dataset_load_with(&ds, paths, 1, &enc, &err) == PHOTON_OK && ds.num_tokens == 200 &&
               !ds.byte_level && ds.token_len && ds.token_len[5] == 2,
           "data: text goes through a caller's encoder (photon.h needs no tokenizer)", err.message);
    expect(photon_shard_write(shard, ds.tokens, ds.num_tokens, &err) == PHOTON_OK, "shards: write", err.message);
    paths[0] = shard;
    expect(photon_dataset_load(&back, paths, 1, &err) == PHOTON_OK && back.num_tokens == ds.num_tokens &&
               memcmp(back.tokens, ds.tokens, ds.num_tokens * 2) == 0 && back.hash == ds.hash,
           "shards: what photon_shard_write writes reads back token for token", err.message);
    photon_model_init(&m, &cfg, 3, NULL);
    photon_adamw_state_init(&st, m.num_params, NULL);
    photon_loader_init(&ld, &back, 2, 8, NULL);
    for (s = 0; s < 3 && ok; s++) {
        photon_loader_next(&ld, in, tg);
        ok = photon_train_step(&m, &st, &hp, &lr, in, tg, 2, 8, NULL, &err) == PHOTON_OK;
    }
    expect(ok && photon_evaluate(&m, &ds, 4, 8, 0, &ev, &err) == PHOTON_OK && fabs(ev.bits_per_byte * 2 * log(2.0) -
                                                                                    ev.loss) < 1e-9,
           "shards: photon.h alone trains on a shard; bits per byte follow the encoder's token bytes", err.message);
    photon_dataset_free(&ds);
    paths[0] = text;
    lie = 1;
    expect(photon_dataset_load_with(&ds, paths, 1, &enc, &err) == PHOTON_ERR_ARGUMENT &&
               strstr(err.message, "encoder returned 401 tokens for 400 bytes"),
           "data: an encoder that returns more tokens than bytes is refused", err.message);
    photon_dataset_free(&back);
    photon_adamw_state_free(&st);
    photon_model_free(&m);
}

static void test_files(void) {
    const char *a = tmp_path("out-a"), *b = tmp_path("out-b"), *dir = tmp_path("out-dir"), *t1, *t2;
    photon_outputs out;
    photon_error err;
    unsigned char *data = NULL;
    size_t size = 0;
    int equal = 0;
    remove(a), remove(b);
    expect(photon_write_file(a, "old", 3, &err) == PHOTON_OK && photon_read_file(a, &data, &size, &err) == PHOTON_OK &&
               size == 3 && memcmp(data, "old", 4) == 0,
           "files: write atomically, read whole (with a NUL after the bytes)", err.message);
    photon_free(data);
    photon_outputs_init(&out);
    expect(photon_outputs_add(&out, a, &t1, &err) == PHOTON_OK && photon_outputs_add(&out, b, &t2, &err) == PHOTON_OK &&
               strcmp(t1, a) != 0,
           "outputs: each target gets a temporary name", err.message);
    photon_write_file(t1, "new", 3, NULL);
    expect(photon_outputs_commit(&out, &err) == PHOTON_ERR_IO && strstr(err.message, "was not written") &&
               photon_read_file(a, &data, &size, NULL) == PHOTON_OK && memcmp(data, "old", 3) == 0 &&
               !photon__file_exists(b) && !photon__file_exists(t1),
           "outputs: with one output missing, nothing is renamed and the temporaries go", err.message);
    photon_free(data);
    photon_outputs_add(&out, a, &t1, NULL);
    photon_outputs_add(&out, b, &t2, NULL);
    photon_write_file(t1, "new", 3, NULL);
    photon_write_file(t2, "two", 3, NULL);
    expect(photon_outputs_commit(&out, &err) == PHOTON_OK && photon_files_equal(a, b, &equal, &err) == PHOTON_OK &&
               !equal && photon_read_file(b, &data, &size, NULL) == PHOTON_OK && memcmp(data, "two", 3) == 0 &&
               !photon__file_exists(t1) && !photon__file_exists(t2),
           "outputs: a commit renames every output into place", err.message);
    photon_free(data);
    photon_outputs_add(&out, a, &t1, NULL);
    photon_write_file(t1, "three", 5, NULL);
    photon_outputs_abort(&out);
    expect(photon_read_file(a, &data, &size, NULL) == PHOTON_OK && size == 3 && !photon__file_exists(t1),
           "outputs: an abort leaves the target and removes the temporary", NULL);
    photon_free(data);
    photon_outputs_add(&out, a, &t1, NULL);
    expect(photon_outputs_add(&out, a, &t2, &err) == PHOTON_ERR_ARGUMENT && strstr(err.message, "named twice as an output"),
           "outputs: one file named twice in a group is refused (it would overwrite itself)", err.message);
    photon_outputs_abort(&out);
    mkdir(dir, 0777);
    expect(photon_outputs_add(&out, dir, &t1, &err) == PHOTON_ERR_IO && strstr(err.message, "not a regular file"),
           "outputs: a target that is a directory is refused before any work", err.message);
    expect(photon_read_file(dir, &data, &size, &err) == PHOTON_ERR_IO && strstr(err.message, "not a regular file") &&
               strstr(err.message, dir),
           "files: reading a directory is refused, naming it", err.message);
    expect(photon_read_file("no\nsuch\tfile", &data, &size, &err) == PHOTON_ERR_IO && !strchr(err.message, '\n') &&
               !strchr(err.message, '\t') && strstr(err.message, "no such file"),
           "errors: a message stays one line whatever it quotes", err.message);
    expect(photon_output_check("/nonexistent-dir/x", &err) == PHOTON_ERR_IO && strstr(err.message, "cannot create"),
           "files: an output in a directory that does not exist is refused early", err.message);
    photon_write_file(b, "new", 3, NULL);
    expect(photon_files_equal(a, b, &equal, &err) == PHOTON_OK && equal, "files: equal contents compare equal",
           err.message);
    remove(a), remove(b), remove(dir);
}

/* A split against the rule written by hand: by source, largest first to the
   lightest client; IID, chunks that end at line ends, dealt in turn. */
static void test_split_plan(void) {
    const unsigned char *texts[4] = {(const unsigned char *)"aaaaa", (const unsigned char *)"bbbbbbbbb",
                                     (const unsigned char *)"ccc", (const unsigned char *)"ddddddddd"};
    size_t sizes[4] = {5, 9, 3, 9}, at = 0, k;
    const unsigned char *lines[2] = {(const unsigned char *)"one\ntwo\nthree\nfour\n",
                                     (const unsigned char *)"five\nsix\nseven\n"};
    size_t line_sizes[2] = {19, 15};
    const char *names[2] = {"a.txt", "b.txt"}, *paths[2] = {"in/a.txt", "in/b.txt"};
    const char *dir = tmp_path("split");
    photon_split_plan p;
    photon_error err;
    unsigned char *data;
    size_t size;
    int ok = 1;
    uint64_t bytes = 0;
    expect(photon_split_plan_make(&p, PHOTON_SPLIT_SOURCE, 2, texts, sizes, 4, 0, &err) == PHOTON_OK &&
               p.owner[0] == 0 && p.owner[1] == 0 && p.owner[2] == 1 && p.owner[3] == 1 && p.bytes[0 * 4 + 1] == 9 &&
               p.pieces[1 * 4 + 2] == 1,
           "split by source: largest first, ties in the order given, to the lightest client", err.message);
    photon_split_plan_free(&p);
    expect(photon_split_plan_make(&p, PHOTON_SPLIT_SOURCE, 5, texts, sizes, 4, 0, &err) == PHOTON_ERR_ARGUMENT &&
               strstr(err.message, "5 clients but only 4 files"),
           "split by source: more clients than files is refused", err.message);
    expect(photon_split_plan_make(&p, PHOTON_SPLIT_IID, 2, lines, line_sizes, 2, 6, &err) == PHOTON_OK &&
               p.num_chunks > 2,
           "split IID: plans", err.message);
    for (k = 0; k < p.num_chunks; k++) {
        const photon_split_chunk *c = &p.chunks[k];
        ok &= c->begin == at && c->end > c->begin && c->client == (int)(k % 2);
        at = c->end;
    }
    for (k = 0; k < 4; k++) bytes += p.bytes[k];
    ok &= at == 34 && bytes == 34 && p.chunks[0].end == 8; /* "one\ntwo\n": the first line end at or after 5 */
    expect(ok, "split IID: chunks tile the text, end at line ends and go to clients in turn", NULL);
    expect(photon_split_write(&p, names, paths, lines, line_sizes, dir, &err) == PHOTON_OK,
           "split: writes its directory", err.message);
    {
        char path[600];
        snprintf(path, sizeof path, "%s/manifest.tsv", dir);
        ok = photon_read_file(path, &data, &size, &err) == PHOTON_OK &&
             strncmp((const char *)data, "client\tfile\tsource\tbytes\tchunks\nclient-0\tdata.txt\tin/a.txt\t", 57) == 0;
        photon_free(data);
        snprintf(path, sizeof path, "%s/client-1/data.txt", dir);
        ok &= photon_read_file(path, &data, &size, &err) == PHOTON_OK && strncmp((const char *)data, "three\n", 6) == 0;
        photon_free(data);
    }
    expect(ok, "split: the manifest and each client's text", err.message);
    expect(photon_split_write(&p, names, paths, lines, line_sizes, dir, &err) == PHOTON_ERR_IO &&
               strstr(err.message, "exists and is not empty"),
           "split: a non-empty directory is refused", err.message);
    {
        const char *same[2] = {"a.txt", "a.txt"};
        expect(photon_split_write(&p, same, paths, lines, line_sizes, tmp_path("split-same"), &err) == PHOTON_ERR_ARGUMENT &&
                   strstr(err.message, "two sources named a.txt"),
               "split: two sources of one name are refused (one would overwrite the other)", err.message);
    }
    photon_split_plan_free(&p);
    expect(photon_split_plan_make(&p, PHOTON_SPLIT_IID, 20, lines, line_sizes, 2, 6, &err) == PHOTON_ERR_ARGUMENT &&
               strstr(err.message, "fewer than 20 clients"),
           "split IID: fewer chunks than clients is refused", err.message);
    sizes[0] = sizes[1] = sizes[2] = sizes[3] = 0;
    expect(photon_split_plan_make(&p, PHOTON_SPLIT_SOURCE, 1, texts, sizes, 4, 0, &err) == PHOTON_ERR_ARGUMENT &&
               strstr(err.message, "empty"),
           "split: empty input is refused", err.message);
}

/* Where a client picks up: fresh, resumed, or refused for other data. */
static void test_client_state_resume(void) {
    photon_config cfg = {256, 8, 1, 2, 8};
    photon_model m;
    photon_dataset ds, other;
    photon_loader ld;
    photon_client_state cs;
    photon_error err;
    const char *text = tmp_path("resume.txt"), *text2 = tmp_path("resume2.txt"), *state = tmp_path("resume.st"),
               *paths[1];
    int resumed = -1;
    remove(state);
    write_bytes(text, "the quick brown fox jumps over the lazy dog, again and again", 60);
    write_bytes(text2, "another text entirely, of another length", 40);
    photon_model_init(&m, &cfg, 1, NULL);
    paths[0] = text;
    photon_dataset_load(&ds, paths, 1, NULL);
    paths[0] = text2;
    photon_dataset_load(&other, paths, 1, NULL);
    photon_loader_init(&ld, &ds, 1, 8, NULL);
    expect(photon_client_state_resume(&cs, &m, &ds, &ld, state, &resumed, &err) == PHOTON_OK && resumed == 0 &&
               cs.adamw.n == m.num_params && cs.adamw.t == 0 && ld.position == 0,
           "resume: no state file is a fresh start", err.message);
    ld.position = 24, ld.epoch = 1, m.step = 7, cs.adamw.t = 7;
    photon_client_state_record(&cs, &m, &ds, &ld);
    photon_client_state_save(&cs, &m.config, state, NULL);
    photon_adamw_state_free(&cs.adamw);
    ld.position = 0, ld.epoch = 0;
    expect(photon_client_state_resume(&cs, &m, &ds, &ld, state, &resumed, &err) == PHOTON_OK && resumed == 1 &&
               ld.position == 24 && ld.epoch == 1 && cs.step == 7 && cs.adamw.t == 7,
           "resume: the loader goes on where the state stopped", err.message);
    photon_adamw_state_reset(&cs.adamw);
    expect(cs.adamw.t == 0 && cs.adamw.m[0] == 0.0f, "resume: a reset optimizer keeps no moments", NULL);
    photon_adamw_state_free(&cs.adamw);
    expect(photon_client_state_resume(&cs, &m, &other, &ld, state, &resumed, &err) == PHOTON_ERR_MISMATCH &&
               strstr(err.message, "belongs to other data") && strstr(err.message, state),
           "resume: a state of other data is refused, naming the file", err.message);
    write_bytes(state, "junk", 4);
    expect(photon_client_state_resume(&cs, &m, &ds, &ld, state, &resumed, &err) == PHOTON_ERR_FORMAT,
           "resume: a state file that does not load is an error, not a fresh start", err.message);
    expect(photon_client_id_valid("silo-3.eu_west") && !photon_client_id_valid("") &&
               !photon_client_id_valid("a/b") && !photon_client_id_valid("has space") &&
               !photon_client_id_valid("0123456789012345678901234567890123456789012345678901234567890123"),
           "client ids: letters, digits, '.', '_', '-', 1 to 63 of them", NULL);
    photon_dataset_free(&ds);
    photon_dataset_free(&other);
    photon_model_free(&m);
}

/* ======================================================================= */
/* Federation                                                              */
/* ======================================================================= */

static int files_equal(const char *a, const char *b) {
    unsigned char *x, *y;
    size_t nx, ny;
    int same;
    if (photon_read_file(a, &x, &nx, NULL) != PHOTON_OK) return 0;
    if (photon_read_file(b, &y, &ny, NULL) != PHOTON_OK) {
        free(x);
        return 0;
    }
    same = nx == ny && memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return same;
}

static void test_sha256(void) {
    photon_sha256 s;
    char hex[65];
    const char *abc = "abc";
    char million[1000];
    int i;
    photon_sha256_init(&s);
    photon_sha256_update(&s, abc, 3);
    photon_sha256_final(&s, hex);
    expect(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0, "sha256 of 'abc' (FIPS 180-4)",
           hex);
    photon_sha256_init(&s);
    memset(million, 'a', sizeof million);
    for (i = 0; i < 1000; i++) photon_sha256_update(&s, million, sizeof million);
    photon_sha256_final(&s, hex);
    expect(strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0,
           "sha256 of a million 'a' (FIPS 180-4)", hex);
}

/* A small federation in memory: a base checkpoint and client deltas made
   from known local weights. */
typedef struct fed_case {
    photon_model base;
    char base_path[512], base_hash[65];
    char delta_paths[4][512];
    uint64_t tokens[4];
} fed_case;

static void fed_write_base(fed_case *f, const char *name) {
    snprintf(f->base_path, sizeof f->base_path, "%s", tmp_path(name));
    photon_checkpoint_save(&f->base, f->base_path, NULL);
    photon_sha256_file(f->base_path, f->base_hash, NULL);
}

/* Client k's delta: random values of scale 0.01 written as base - local. */
static void fed_write_delta(fed_case *f, int k, const char *client, float *delta_out, uint64_t *rng) {
    photon_model local;
    photon_delta_info info;
    char name[64];
    size_t i;
    memset(&info, 0, sizeof info);
    photon_model_init(&local, &f->base.config, 1, NULL);
    fill_random(delta_out, f->base.num_params, 0.01f, rng);
    for (i = 0; i < f->base.num_params; i++) local.params[i] = f->base.params[i] - delta_out[i];
    /* what the file holds is base - local, rounded in float: use that as the truth */
    for (i = 0; i < f->base.num_params; i++) delta_out[i] = f->base.params[i] - local.params[i];
    memcpy(info.base_sha256, f->base_hash, 65);
    info.round = f->base.round + 1;
    snprintf(info.client, sizeof info.client, "%s", client);
    info.local_steps = 10 * (uint64_t)(k + 1); /* divides every token count the tests use */
    info.seq = 1;
    info.batch = f->tokens[k] / info.local_steps;
    info.tokens = f->tokens[k];
    info.loss = 1.5f;
    snprintf(name, sizeof name, "delta%d.safetensors", k);
    snprintf(f->delta_paths[k], sizeof f->delta_paths[k], "%s", tmp_path(name));
    photon_delta_save(&local, f->base.params, &info, f->delta_paths[k], NULL);
    photon_model_free(&local);
}

/* Each outer optimizer over three rounds against the formulas in double,
   with token weighting; the server state goes through its file each round. */
static void test_outer_optimizers(void) {
    photon_config cfg = {12, 4, 1, 2, 4};
    int kind;
    for (kind = 0; kind < 4; kind++) {
        fed_case f;
        photon_merge_options o;
        size_t n, j;
        double *x, *m, *v, max_err = 0.0, max_x = 0.0;
        float *deltas[3];
        const char *paths[3];
        char state[512];
        uint64_t rng = 100 + (uint64_t)kind;
        int round, k, ok = 1;
        char label[96];
        memset(&f, 0, sizeof f);
        memset(&o, 0, sizeof o);
        photon_outer_defaults(&o.outer, (photon_outer_kind)kind);
        o.outer.lr = kind < 2 ? 0.8f : 0.05f;
        o.min_clients = 1;
        snprintf(state, sizeof state, "%s", tmp_path("server.safetensors"));
        photon_model_init(&f.base, &cfg, 2, NULL);
        n = f.base.num_params;
        x = (double *)calloc(n, 8), m = (double *)calloc(n, 8), v = (double *)calloc(n, 8);
        for (j = 0; j < n; j++) x[j] = f.base.params[j], v[j] = (double)o.outer.tau * o.outer.tau;
        for (k = 0; k < 3; k++) deltas[k] = (float *)calloc(n, 4), f.tokens[k] = 1000 * (uint64_t)(k + 1);
        remove(state);
        for (round = 1; round <= 3; round++) {
            photon_merge_result res;
            photon_error err;
            char id[16];
            fed_write_base(&f, "fedbase.safetensors");
            for (k = 0; k < 3; k++) {
                snprintf(id, sizeof id, "c%d", k);
                fed_write_delta(&f, k, id, deltas[k], &rng);
                paths[k] = f.delta_paths[k];
            }
            if (photon_merge(f.base_path, paths, 3, kind ? state : NULL, &o, &res, &err) != PHOTON_OK) {
                expect(0, "outer optimizer merge runs", err.message);
                photon_merge_result_free(&res);
                ok = 0;
                break;
            }
            for (j = 0; j < n; j++) { /* the direct computation */
                double d = (1000.0 * deltas[0][j] + 2000.0 * deltas[1][j] + 3000.0 * deltas[2][j]) / 6000.0;
                double b1 = o.outer.beta1, b2 = o.outer.beta2, mu = o.outer.momentum, lr = o.outer.lr;
                if (kind == PHOTON_OUTER_FEDAVG) x[j] -= lr * d;
                if (kind == PHOTON_OUTER_NESTEROV) m[j] = mu * m[j] + d, x[j] -= lr * (d + mu * m[j]);
                if (kind == PHOTON_OUTER_ADAM || kind == PHOTON_OUTER_YOGI) {
                    m[j] = b1 * m[j] + (1 - b1) * d;
                    if (kind == PHOTON_OUTER_ADAM) v[j] = b2 * v[j] + (1 - b2) * d * d;
                    else v[j] = v[j] - (1 - b2) * d * d * (v[j] > d * d ? 1.0 : v[j] < d * d ? -1.0 : 0.0);
                    x[j] -= lr * m[j] / (sqrt(v[j]) + o.outer.tau);
                }
            }
            ok &= res.model.round == (uint64_t)round && res.model.step == f.base.step + 30 &&
                  res.model.tokens_seen == f.base.tokens_seen + 6000;
            if (kind) photon_server_state_save(&res.state, &cfg, state, NULL);
            photon_model_free(&f.base);
            f.base = res.model; /* the next round starts from the merged model */
            memset(&res.model, 0, sizeof res.model);
            photon_merge_result_free(&res);
        }
        for (j = 0; j < n; j++) {
            if (fabs(f.base.params[j] - x[j]) > max_err) max_err = fabs(f.base.params[j] - x[j]);
            if (fabs(x[j]) > max_x) max_x = fabs(x[j]);
        }
        snprintf(label, sizeof label, "outer %s: three rounds match the direct computation (error %.1e)",
                 photon_outer_name((photon_outer_kind)kind), max_err / max_x);
        expect(ok && max_err / max_x < 1e-5, label, NULL);
        snprintf(label, sizeof label, "outer %s: round, global step and tokens advance",
                 photon_outer_name((photon_outer_kind)kind));
        expect(ok, label, NULL);
        for (k = 0; k < 3; k++) free(deltas[k]);
        free(x), free(m), free(v);
        photon_model_free(&f.base);
    }
}

static void test_merge_weighting_and_order(void) {
    photon_config cfg = {12, 4, 1, 2, 4};
    fed_case f;
    photon_merge_options o;
    photon_merge_result res;
    float *d[2];
    const char *paths[2], *rev[2];
    uint64_t rng = 7;
    size_t j, n;
    double err_tok = 0.0, err_uni = 0.0;
    memset(&f, 0, sizeof f);
    memset(&o, 0, sizeof o);
    photon_outer_defaults(&o.outer, PHOTON_OUTER_FEDAVG);
    photon_model_init(&f.base, &cfg, 4, NULL);
    n = f.base.num_params;
    f.tokens[0] = 300, f.tokens[1] = 100;
    fed_write_base(&f, "wbase.safetensors");
    d[0] = (float *)calloc(n, 4), d[1] = (float *)calloc(n, 4);
    fed_write_delta(&f, 0, "zulu", d[0], &rng);
    fed_write_delta(&f, 1, "alpha", d[1], &rng);
    paths[0] = f.delta_paths[0], paths[1] = f.delta_paths[1];
    rev[0] = paths[1], rev[1] = paths[0];
    photon_merge(f.base_path, paths, 2, NULL, &o, &res, NULL);
    for (j = 0; j < n; j++) {
        double want = f.base.params[j] - (0.75 * d[0][j] + 0.25 * d[1][j]);
        if (fabs(res.model.params[j] - want) > err_tok) err_tok = fabs(res.model.params[j] - want);
    }
    expect(err_tok < 1e-6 && strcmp(res.entries[0].info.client, "alpha") == 0 && res.entries[1].weight == 0.75,
           "merge: deltas are weighted by tokens, in client-id order", NULL);
    photon_merge_save(&res, tmp_path("merged-a.safetensors"), NULL);
    photon_merge_result_free(&res);
    photon_merge(f.base_path, rev, 2, NULL, &o, &res, NULL);
    photon_merge_save(&res, tmp_path("merged-b.safetensors"), NULL);
    photon_merge_result_free(&res);
    expect(files_equal(tmp_path("merged-a.safetensors"), tmp_path("merged-b.safetensors")),
           "merge: the order of the arguments does not change a byte", NULL);
    {
        photon_st_file st;
        photon_st_open(&st, tmp_path("merged-a.safetensors"), NULL);
        expect(photon_st_meta(&st, "photon.base_sha256") && strcmp(photon_st_meta(&st, "photon.base_sha256"), f.base_hash) == 0 &&
                   strcmp(photon_st_meta(&st, "photon.delta.1.client"), "zulu") == 0 &&
                   strcmp(photon_st_meta(&st, "photon.delta.1.weight"), "0.75") == 0 &&
                   strcmp(photon_st_meta(&st, "photon.outer"), "fedavg") == 0 &&
                   strcmp(photon_st_meta(&st, "photon.round"), "1") == 0,
               "merge: the checkpoint records base hash, clients, weights and the outer optimizer", NULL);
        photon_st_close(&st);
    }
    o.outer.uniform = 1;
    photon_merge(f.base_path, paths, 2, NULL, &o, &res, NULL);
    for (j = 0; j < n; j++) {
        double want = f.base.params[j] - 0.5 * ((double)d[0][j] + d[1][j]);
        if (fabs(res.model.params[j] - want) > err_uni) err_uni = fabs(res.model.params[j] - want);
    }
    expect(err_uni < 1e-6, "merge: uniform weighting averages the deltas equally", NULL);
    photon_merge_result_free(&res);
    free(d[0]), free(d[1]);
    photon_model_free(&f.base);
}

/* ======================================================================= */
/* Robust merges: each rule against a direct float64 computation           */
/* ======================================================================= */

/* Writes delta k of `values` (as base - local; values gets what the file
   holds, rounded in float) and its path. */
static void robust_delta(const photon_model *base, const char *base_hash, int k, uint64_t tokens, float *values,
                         char *path) {
    photon_model local;
    photon_delta_info info;
    char name[64];
    size_t i;
    memset(&info, 0, sizeof info);
    photon_model_init(&local, &base->config, 1, NULL);
    for (i = 0; i < base->num_params; i++) local.params[i] = base->params[i] - values[i];
    for (i = 0; i < base->num_params; i++) values[i] = base->params[i] - local.params[i];
    memcpy(info.base_sha256, base_hash, 65);
    info.round = base->round + 1;
    snprintf(info.client, sizeof info.client, "c%d", k);
    info.local_steps = 1;
    info.batch = tokens;
    info.seq = 1;
    info.tokens = tokens;
    info.loss = 2.0f;
    snprintf(name, sizeof name, "robust%d.safetensors", k);
    snprintf(path, 512, "%s", tmp_path(name));
    photon_delta_save(&local, base->params, &info, path, NULL);
    photon_model_free(&local);
}

static int robust_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The rule in double, from the deltas' values: agg[j] and which deltas it
   took (taken[i]). */
static void robust_reference(int n, float *const *d, const uint64_t *tokens, const photon_merge_options *o, size_t np,
                             double *agg, int *taken) {
    double norm[8], scale[8], sorted[8], dist[8][8], score[8], bound = 0.0, total = 0.0;
    size_t j;
    int i, k, select = 0;
    for (i = 0; i < n; i++) {
        double s = 0.0;
        for (j = 0; j < np; j++) s += (double)d[i][j] * d[i][j];
        norm[i] = sqrt(s);
        sorted[i] = norm[i];
    }
    qsort(sorted, (size_t)n, sizeof(double), robust_cmp);
    if (o->clip_norm > 0) bound = o->clip_norm;
    if (o->clip_auto > 0) bound = o->clip_auto * (n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]));
    for (i = 0; i < n; i++) scale[i] = bound > 0 && norm[i] > bound ? bound / norm[i] : 1.0, taken[i] = 1;
    if (o->aggregate == PHOTON_AGGREGATE_MULTI_KRUM) {
        int f = o->byzantine, order[8];
        select = o->krum_select ? o->krum_select : n - f;
        for (i = 0; i < n; i++)
            for (k = 0; k < n; k++) {
                double s = 0.0;
                for (j = 0; j < np; j++) {
                    double x = d[i][j] * scale[i] - d[k][j] * scale[k];
                    s += x * x;
                }
                dist[i][k] = s;
            }
        for (i = 0; i < n; i++) {
            double row[8];
            int c = 0;
            for (k = 0; k < n; k++)
                if (k != i) row[c++] = dist[i][k];
            qsort(row, (size_t)c, sizeof(double), robust_cmp);
            score[i] = 0.0;
            for (k = 0; k < n - f - 2; k++) score[i] += row[k];
            order[i] = i;
        }
        for (i = 1; i < n; i++) /* stable: ties keep the merge order */
            for (k = i; k > 0 && score[order[k - 1]] > score[order[k]]; k--) {
                int t = order[k];
                order[k] = order[k - 1];
                order[k - 1] = t;
            }
        for (i = 0; i < n; i++) taken[order[i]] = i < select;
    }
    for (i = 0; i < n; i++)
        if (taken[i]) total += (double)tokens[i];
    for (j = 0; j < np; j++) {
        double v[8], s = 0.0;
        int lo, hi;
        if (o->aggregate == PHOTON_AGGREGATE_MEAN || o->aggregate == PHOTON_AGGREGATE_MULTI_KRUM) {
            for (i = 0; i < n; i++)
                if (taken[i]) s += (double)tokens[i] * d[i][j] * scale[i];
            agg[j] = s / total;
            continue;
        }
        for (i = 0; i < n; i++) v[i] = d[i][j] * scale[i];
        qsort(v, (size_t)n, sizeof(double), robust_cmp);
        if (o->aggregate == PHOTON_AGGREGATE_MEDIAN) {
            agg[j] = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
            continue;
        }
        lo = (int)floor(o->trim * n), hi = n - lo;
        for (i = lo; i < hi; i++) s += v[i];
        agg[j] = s / (hi - lo);
    }
}

typedef struct robust_case {
    const char *label;
    int n;
    photon_aggregate_kind rule;
    double trim, clip_norm, clip_auto;
    int byzantine, krum_select;
    int ties, outlier; /* delta 1 repeats delta 0; the last delta is 50 times larger */
} robust_case;

static void robust_run_case(const robust_case *c) {
    photon_config cfg = {64, 16, 1, 2, 32};
    photon_model base;
    photon_merge_options o;
    photon_merge_result res;
    photon_error err;
    char base_path[512], base_hash[65], paths[8][512], label[200];
    const char *list[8];
    float *d[8];
    uint64_t tokens[8], rng = 1234 + (uint64_t)c->n;
    double *agg, worst = 0.0, top = 0.0;
    int taken[8], i, same_taken = 1;
    size_t j, np;
    photon_model_init(&base, &cfg, 5, NULL);
    np = base.num_params;
    snprintf(base_path, sizeof base_path, "%s", tmp_path("robust-base.safetensors"));
    photon_checkpoint_save(&base, base_path, NULL);
    photon_sha256_file(base_path, base_hash, NULL);
    for (i = 0; i < c->n; i++) {
        d[i] = (float *)calloc(np, sizeof(float));
        fill_random(d[i], np, 0.01f, &rng);
        if (c->ties && i == 1) memcpy(d[1], d[0], np * sizeof(float));
        if (c->outlier && i == c->n - 1)
            for (j = 0; j < np; j++) d[i][j] *= 50.0f;
        tokens[i] = 100 * (uint64_t)(i + 1);
        robust_delta(&base, base_hash, i, tokens[i], d[i], paths[i]);
        list[i] = paths[i];
    }
    memset(&o, 0, sizeof o);
    photon_outer_defaults(&o.outer, PHOTON_OUTER_FEDAVG);
    o.aggregate = c->rule, o.trim = c->trim, o.byzantine = c->byzantine, o.krum_select = c->krum_select;
    o.clip_norm = c->clip_norm, o.clip_auto = c->clip_auto;
    agg = (double *)calloc(np, sizeof(double));
    robust_reference(c->n, d, tokens, &o, np, agg, taken);
    if (photon_merge(base_path, list, c->n, NULL, &o, &res, &err) != PHOTON_OK) {
        snprintf(label, sizeof label, "robust merge: %s runs", c->label);
        expect(0, label, err.message);
    } else {
        for (j = 0; j < np; j++) { /* fedavg at lr 1: next = base - aggregate */
            double e = fabs((double)res.model.params[j] - ((double)base.params[j] - agg[j]));
            if (e > worst) worst = e;
            if (fabs(agg[j]) > top) top = fabs(agg[j]);
        }
        for (i = 0; i < c->n; i++) same_taken &= res.entries[i].accepted == taken[i];
        snprintf(label, sizeof label, "robust merge: %s matches the float64 computation (error %.1e of %.1e)", c->label,
                 worst, top);
        expect(worst <= 2e-7 * (top + 1.0) && same_taken, label, NULL);
    }
    photon_merge_result_free(&res);
    { /* the chunk size and the thread count do not change a byte */
        char a[512], b[512];
        snprintf(a, sizeof a, "%s", tmp_path("robust-a.safetensors"));
        snprintf(b, sizeof b, "%s", tmp_path("robust-b.safetensors"));
        o.chunk = 4096;
        photon_set_threads(1);
        photon_merge(base_path, list, c->n, NULL, &o, &res, NULL);
        photon_merge_save(&res, a, NULL);
        photon_merge_result_free(&res);
        o.chunk = 3 * 4096;
        photon_set_threads(2);
        photon_merge(base_path, list, c->n, NULL, &o, &res, NULL);
        photon_merge_save(&res, b, NULL);
        photon_merge_result_free(&res);
        photon_set_threads(0);
        snprintf(label, sizeof label, "robust merge: %s: chunks of 4096 on 1 thread and 12288 on 2 give the same bytes",
                 c->label);
        expect(files_equal(a, b), label, NULL);
    }
    for (i = 0; i < c->n; i++) free(d[i]);
    free(agg);
    photon_model_free(&base);
}

static void test_robust_rules(void) {
    static const robust_case cases[] = {
        {"median of 3", 3, PHOTON_AGGREGATE_MEDIAN, 0, 0, 0, 0, 0, 0, 0},
        {"median of 4 with ties", 4, PHOTON_AGGREGATE_MEDIAN, 0, 0, 0, 0, 0, 1, 0},
        {"median of 5 with an outlier", 5, PHOTON_AGGREGATE_MEDIAN, 0, 0, 0, 0, 0, 0, 1},
        {"trimmed mean of 5, trim 0 (cuts nothing)", 5, PHOTON_AGGREGATE_TRIMMED_MEAN, 0.0, 0, 0, 0, 0, 0, 0},
        {"trimmed mean of 5, trim 0.4 (cuts all but one)", 5, PHOTON_AGGREGATE_TRIMMED_MEAN, 0.4, 0, 0, 0, 0, 0, 1},
        {"trimmed mean of 4, trim 0.25, ties", 4, PHOTON_AGGREGATE_TRIMMED_MEAN, 0.25, 0, 0, 0, 0, 1, 1},
        {"trimmed mean of 6, trim 0.49 (cuts all but two)", 6, PHOTON_AGGREGATE_TRIMMED_MEAN, 0.49, 0, 0, 0, 0, 0, 0},
        {"multi-krum of 6, f 1, an outlier", 6, PHOTON_AGGREGATE_MULTI_KRUM, 0, 0, 0, 1, 0, 0, 1},
        {"krum of 5 (select 1), f 1", 5, PHOTON_AGGREGATE_MULTI_KRUM, 0, 0, 0, 1, 1, 0, 1},
        {"multi-krum of 7, f 2, ties", 7, PHOTON_AGGREGATE_MULTI_KRUM, 0, 0, 0, 2, 0, 1, 1},
        {"mean clipped to a fixed norm", 4, PHOTON_AGGREGATE_MEAN, 0, 0.6, 0, 0, 0, 0, 1},
        {"mean clipped to the median norm", 5, PHOTON_AGGREGATE_MEAN, 0, 0, 1.0, 0, 0, 0, 1},
        {"median of clipped deltas (auto:0.5)", 4, PHOTON_AGGREGATE_MEDIAN, 0, 0, 0.5, 0, 0, 0, 1},
    };
    size_t k;
    for (k = 0; k < sizeof cases / sizeof cases[0]; k++) robust_run_case(&cases[k]);
}

/* A group merge of one sub-federation, written as a group delta. */
static photon_result group_merge(const char *base_path, const char *const *paths, int n, const char *id, int uniform,
                                 const char *out, photon_error *err) {
    photon_merge_options o;
    photon_merge_result res;
    photon_result r;
    memset(&o, 0, sizeof o);
    photon_outer_defaults(&o.outer, PHOTON_OUTER_FEDAVG);
    o.outer.uniform = uniform;
    o.group_id = id;
    r = photon_merge(base_path, paths, n, NULL, &o, &res, err);
    if (r == PHOTON_OK) r = photon_merge_save(&res, out, err);
    photon_merge_result_free(&res);
    return r;
}

/* The largest excess of |tree - flat| over the documented bound (<= 0:
   within it everywhere), with the number of coordinates that differ. */
static double tree_excess(const photon_model *base, const photon_model *flat, const photon_model *tree, float *g[2],
                          const uint64_t tg[2], size_t *differ) {
    size_t j;
    double worst = -1.0, u = ldexp(1.0, -24), T = (double)tg[0] + (double)tg[1];
    *differ = 0;
    for (j = 0; j < base->num_params; j++) {
        double af = (double)base->params[j] - flat->params[j], at = (double)base->params[j] - tree->params[j];
        double ulp_f = ldexp(1.0, ilogb(fabs(flat->params[j]) + 1e-38) - 23), ulp_t = ldexp(1.0, ilogb(fabs(tree->params[j]) + 1e-38) - 23);
        double bound = u * ((double)tg[0] * fabs(g[0][j]) + (double)tg[1] * fabs(g[1][j])) / T * (1 + 1e-9) +
                       u * (fabs(af) + fabs(at)) + 0.5 * (ulp_f + ulp_t) + 1e-45;
        double ex = fabs((double)flat->params[j] - tree->params[j]) - bound;
        if (flat->params[j] != tree->params[j]) (*differ)++;
        if (ex > worst) worst = ex;
    }
    return worst;
}

/* A federation of federations: 2 groups of 2 and 3 members with different
   token counts. The two-level tree of token-weighted means gives the flat
   merge within the bound docs/ALGORITHM.md derives; a group of one member
   and a root over one group relay bit for bit; the tree's own counts are
   the flat ones; group merges refuse outer optimizers and server state. */
static void test_group_merge(void) {
    photon_config cfg = {64, 16, 1, 2, 32};
    photon_model base, flat, tree, gm;
    photon_merge_options o;
    photon_merge_result res;
    photon_error err;
    photon_delta_info info;
    char base_path[512], base_hash[65], paths[5][512], ga[512], gb[512], gu[512], next_flat[512], next_tree[512];
    const char *list[5], *groups[2];
    static const uint64_t tokens[5] = {100, 250, 37, 512, 90};
    uint64_t tg[2], rng = 2024;
    float *d, *g[2];
    size_t j, differ;
    double worst;
    int i;
    photon_model_init(&base, &cfg, 8, NULL);
    snprintf(base_path, sizeof base_path, "%s", tmp_path("group-base.safetensors"));
    photon_checkpoint_save(&base, base_path, NULL);
    photon_sha256_file(base_path, base_hash, NULL);
    d = (float *)calloc(base.num_params, sizeof(float));
    for (i = 0; i < 5; i++) {
        fill_random(d, base.num_params, 0.01f * (float)(i + 1), &rng);
        robust_delta(&base, base_hash, i, tokens[i], d, paths[i]);
        list[i] = paths[i];
    }
    memset(&o, 0, sizeof o);
    photon_outer_defaults(&o.outer, PHOTON_OUTER_FEDAVG);
    snprintf(next_flat, sizeof next_flat, "%s", tmp_path("group-flat.safetensors"));
    snprintf(next_tree, sizeof next_tree, "%s", tmp_path("group-tree.safetensors"));
    snprintf(ga, sizeof ga, "%s", tmp_path("group-a.safetensors"));
    snprintf(gb, sizeof gb, "%s", tmp_path("group-b.safetensors"));
    snprintf(gu, sizeof gu, "%s", tmp_path("group-u.safetensors"));
    photon_merge(base_path, list, 5, NULL, &o, &res, NULL);
    photon_merge_save(&res, next_flat, NULL);
    photon_merge_result_free(&res);
    expect(group_merge(base_path, list, 2, "ga", 0, ga, &err) == PHOTON_OK &&
               group_merge(base_path, list + 2, 3, "gb", 0, gb, &err) == PHOTON_OK,
           "group merge: groups of 2 and 3 members write group deltas", err.message);
    expect(photon_delta_read_info(gb, &info, NULL, &err) == PHOTON_OK && info.members == 3 && info.tokens == 37 + 512 + 90 &&
               info.local_steps == 1 && strcmp(info.client, "gb") == 0 && strcmp(info.base_sha256, base_hash) == 0 &&
               info.round == 1,
           "group merge: the group delta weighs its members' tokens, against the same base, for the same round", NULL);
    groups[0] = ga, groups[1] = gb;
    expect(photon_merge(base_path, groups, 2, NULL, &o, &res, &err) == PHOTON_OK && res.model.tokens_seen == 989 &&
               res.model.step == 1 && res.model.round == 1,
           "group merge: the root merges group deltas like clients' deltas, with the flat counts", err.message);
    photon_merge_save(&res, next_tree, NULL);
    {
        photon_st_file st;
        photon_st_open(&st, next_tree, NULL);
        expect(photon_st_meta(&st, "photon.delta.1.members") && strcmp(photon_st_meta(&st, "photon.delta.1.members"), "3") == 0 &&
                   strcmp(photon_st_meta(&st, "photon.delta.1.client"), "gb") == 0,
               "group merge: the root's audit trail records the nesting", NULL);
        photon_st_close(&st);
        photon_st_open(&st, gb, NULL);
        expect(photon_st_meta(&st, "photon.delta.2.client") && strcmp(photon_st_meta(&st, "photon.delta.2.client"), "c4") == 0 &&
                   photon_st_meta(&st, "photon.delta.2.sha256") && photon_st_meta(&st, "photon.delta.2.weight"),
               "group merge: the group delta's audit trail lists its members: ids, hashes, weights", NULL);
        photon_st_close(&st);
    }
    {
        int matches = 0;
        expect(photon_merge_verify(&res, next_tree, &matches, NULL) == PHOTON_OK && matches,
               "group merge: the root of a tree verifies", NULL);
    }
    photon_merge_result_free(&res);
    photon_checkpoint_load(&flat, next_flat, NULL);
    photon_checkpoint_load(&tree, next_tree, NULL);
    g[0] = (float *)calloc(base.num_params, sizeof(float)), g[1] = (float *)calloc(base.num_params, sizeof(float));
    photon_checkpoint_load(&gm, base_path, NULL);
    photon_delta_load(&gm, ga, &info, g[0], NULL);
    tg[0] = info.tokens;
    photon_delta_load(&gm, gb, &info, g[1], NULL);
    tg[1] = info.tokens;
    worst = tree_excess(&base, &flat, &tree, g, tg, &differ);
    {
        char detail[160];
        snprintf(detail, sizeof detail, "%zu of %zu parameters differ; worst excess over the bound %.3g", differ,
                 base.num_params, worst);
        expect(worst <= 0.0, "group merge: two levels of token-weighted means give the flat merge within the bound", detail);
        fprintf(stderr, "# tree vs flat: %s\n", detail);
    }
    /* the bound is not loose: a group weighing its members alike breaks it */
    expect(group_merge(base_path, list + 2, 3, "gb", 1, gu, &err) == PHOTON_OK, "group merge: a uniform group merges", err.message);
    groups[1] = gu;
    photon_merge(base_path, groups, 2, NULL, &o, &res, NULL);
    photon_delta_load(&gm, gu, &info, g[1], NULL);
    photon_model_free(&tree);
    memcpy(&tree, &res.model, sizeof tree); /* borrowed for the comparison */
    worst = tree_excess(&base, &flat, &tree, g, tg, &differ);
    memset(&tree, 0, sizeof tree);
    expect(worst > 0.0, "group merge: the bound catches a group that weighs its members alike", NULL);
    photon_merge_result_free(&res);
    /* relays are exact: a group of one member, a root over one group */
    expect(group_merge(base_path, list + 3, 1, "solo", 0, gu, &err) == PHOTON_OK, "group merge: a group of one", err.message);
    photon_delta_load(&gm, gu, &info, g[1], NULL);
    photon_delta_load(&gm, paths[3], &info, d, NULL);
    for (j = 0; j < base.num_params && g[1][j] == d[j]; j++) {}
    expect(j == base.num_params, "group merge: a group of one member passes its delta up bit for bit", NULL);
    expect(group_merge(base_path, list, 5, "all", 0, gu, &err) == PHOTON_OK, "group merge: one group of all five", err.message);
    groups[0] = gu;
    photon_merge(base_path, groups, 1, NULL, &o, &res, NULL);
    photon_merge_save(&res, next_tree, NULL);
    photon_merge_result_free(&res);
    {
        photon_model one;
        photon_checkpoint_load(&one, next_tree, NULL);
        for (j = 0; j < base.num_params && one.params[j] == flat.params[j]; j++) {}
        expect(j == base.num_params, "group merge: a root over one group of everyone is the flat merge bit for bit", NULL);
        photon_model_free(&one);
    }
    /* what a group merge refuses */
    o.group_id = "ga";
    photon_outer_defaults(&o.outer, PHOTON_OUTER_NESTEROV);
    expect(photon_merge(base_path, list, 2, NULL, &o, &res, &err) == PHOTON_ERR_ARGUMENT && strstr(err.message, "root only"),
           "group merge: an outer optimizer below the root is refused", err.message);
    photon_merge_result_free(&res);
    photon_outer_defaults(&o.outer, PHOTON_OUTER_FEDAVG);
    o.outer.lr = 0.5f;
    expect(photon_merge(base_path, list, 2, NULL, &o, &res, &err) == PHOTON_ERR_ARGUMENT && strstr(err.message, "lr 0.5"),
           "group merge: fedavg at another lr below the root is refused", err.message);
    photon_merge_result_free(&res);
    o.outer.lr = 1.0f;
    expect(photon_merge(base_path, list, 2, tmp_path("group-server.st"), &o, &res, &err) == PHOTON_ERR_ARGUMENT &&
               strstr(err.message, "server state"),
           "group merge: a server state below the root is refused", err.message);
    photon_merge_result_free(&res);
    o.group_id = "bad id";
    expect(photon_merge(base_path, list, 2, NULL, &o, &res, &err) == PHOTON_ERR_ARGUMENT && strstr(err.message, "group id"),
           "group merge: an invalid group id is refused", err.message);
    photon_merge_result_free(&res);
    free(d);
    free(g[0]);
    free(g[1]);
    photon_model_free(&base);
    photon_model_free(&flat);
    photon_model_free(&tree);
    photon_model_free(&gm);
}

/* Personal tensors: a delta that leaves some out is averaged tensor by
   tensor over the deltas that carry each (against a float64 computation);
   a tensor every delta leaves out stays as the base has it, with Nesterov
   too; a declaration refuses a delta that carries a declared tensor; the
   robust rules and group deltas refuse mixed carriage; the client state
   keeps the personal values and lays them back. */
static void test_personal_tensors(void) {
    photon_config cfg = {64, 16, 2, 2, 32};
    photon_model base, local;
    photon_merge_options o;
    photon_merge_result res;
    photon_error err;
    photon_delta_info info;
    photon_client_state cs, back;
    char base_path[512], base_hash[65], paths[3][512];
    const char *list[3];
    static const uint64_t tokens[3] = {100, 300, 50};
    float *d[3];
    unsigned char mask[64];
    size_t j;
    int i, t, ok = 1, same = 1;
    double worst = 0.0;
    photon_model_init(&base, &cfg, 9, NULL);
    snprintf(base_path, sizeof base_path, "%s", tmp_path("personal-base.safetensors"));
    photon_checkpoint_save(&base, base_path, NULL);
    photon_sha256_file(base_path, base_hash, NULL);
    expect(photon_glob_match("h.*.ln_*", "h.1.ln_2.bias") && !photon_glob_match("h.*.ln_*", "ln_f.bias") &&
               photon_glob_match("h.1?.*", "h.10.mlp.c_fc.weight") && !photon_glob_match("h.1?.*", "h.1.mlp.c_fc.weight"),
           "personal: globs match tensor names ('*' any run, '?' one character)", NULL);
    expect(photon_personal_mask(&base, "h.7.*", mask, &err) == PHOTON_ERR_ARGUMENT && strstr(err.message, "matches no tensor"),
           "personal: a pattern that matches no tensor is refused", err.message);
    expect(photon_personal_mask(&base, "*", mask, &err) == PHOTON_ERR_ARGUMENT && strstr(err.message, "every tensor"),
           "personal: patterns that match every tensor are refused", err.message);
    expect(photon_personal_mask(&base, "h.0 ln", mask, &err) == PHOTON_ERR_ARGUMENT, "personal: a space is refused", err.message);
    photon_personal_mask(&base, "h.0.ln_1.*", mask, NULL);
    photon_model_init(&local, &cfg, 1, NULL);
    for (i = 0; i < 3; i++) {
        uint64_t rng = 50 + (uint64_t)i;
        d[i] = (float *)calloc(base.num_params, sizeof(float));
        fill_random(d[i], base.num_params, 0.01f, &rng);
        for (j = 0; j < base.num_params; j++) local.params[j] = base.params[j] - d[i][j];
        for (j = 0; j < base.num_params; j++) d[i][j] = base.params[j] - local.params[j];
        memset(&info, 0, sizeof info);
        memcpy(info.base_sha256, base_hash, 65);
        info.round = 1, info.local_steps = 1, info.batch = tokens[i], info.seq = 1, info.tokens = tokens[i];
        info.loss = 2.0f;
        snprintf(info.client, sizeof info.client, "p%d", i);
        if (i == 0) snprintf(info.personal, sizeof info.personal, "h.0.ln_1.*");
        snprintf(paths[i], sizeof paths[i], "%s", tmp_path(i == 0 ? "personal0.st" : i == 1 ? "personal1.st" : "personal2.st"));
        photon_delta_save(&local, base.params, &info, paths[i], NULL);
        list[i] = paths[i];
    }
    memset(&o, 0, sizeof o);
    photon_outer_defaults(&o.outer, PHOTON_OUTER_FEDAVG);
    expect(photon_merge(base_path, list, 3, NULL, &o, &res, &err) == PHOTON_OK, "personal: a mixed federation merges",
           err.message);
    for (t = 0; t < base.num_tensors; t++) {
        const photon_tensor_info *ti = &base.tensors[t];
        for (j = ti->offset; j < ti->offset + ti->size; j++) {
            double num = 0, den = 0, want;
            for (i = 0; i < 3; i++)
                if (!(i == 0 && mask[t])) num += (double)tokens[i] * d[i][j], den += (double)tokens[i];
            want = (double)base.params[j] - num / den;
            if (fabs(res.model.params[j] - want) > worst) worst = fabs(res.model.params[j] - want);
        }
    }
    expect(worst < 1e-6, "personal: each tensor is the token-weighted mean over the deltas that carry it (float64)", NULL);
    photon_merge_result_free(&res);
    o.personal = "h.0.ln_1.*";
    expect(photon_merge(base_path, list, 3, NULL, &o, &res, &err) == PHOTON_ERR_MISMATCH && strstr(err.message, "personal1.st") &&
               strstr(err.message, "declares personal"),
           "personal: a declared personal tensor in a delta is refused, naming the delta", err.message);
    photon_merge_result_free(&res);
    o.skip_bad = 1;
    photon_outer_defaults(&o.outer, PHOTON_OUTER_NESTEROV);
    expect(photon_merge(base_path, list, 3, NULL, &o, &res, &err) == PHOTON_OK && res.accepted == 1, "personal: with skip_bad the declaring client alone merges", err.message);
    for (t = 0; t < base.num_tensors; t++)
        if (mask[t])
            for (j = base.tensors[t].offset; j < base.tensors[t].offset + base.tensors[t].size; j++)
                same &= res.model.params[j] == base.params[j] && res.state.m[j] == 0.0f;
    expect(same, "personal: a tensor no delta carries stays as the base has it, and so does its momentum", NULL);
    photon_merge_result_free(&res);
    memset(&o, 0, sizeof o);
    photon_outer_defaults(&o.outer, PHOTON_OUTER_FEDAVG);
    o.aggregate = PHOTON_AGGREGATE_MEDIAN;
    expect(photon_merge(base_path, list, 3, NULL, &o, &res, &err) == PHOTON_ERR_MISMATCH && strstr(err.message, "personal0.st") &&
               strstr(err.message, "leaves out tensor 'h.0.ln_1.") && strstr(err.message, "median"),
           "personal: the median refuses a delta that leaves out undeclared tensors, naming it", err.message);
    photon_merge_result_free(&res);
    o.aggregate = PHOTON_AGGREGATE_MEAN, o.group_id = "g", o.skip_bad = 1;
    expect(photon_merge(base_path, list, 3, NULL, &o, &res, &err) == PHOTON_OK && res.accepted == 2 && !res.entries[0].accepted &&
               strstr(res.entries[0].reason, "group delta"),
           "personal: a group delta skips the member that leaves out tensors nobody declared", err.message);
    photon_merge_result_free(&res);
    o.personal = "h.0.ln_1.*";
    expect(photon_merge(base_path, list, 3, NULL, &o, &res, &err) == PHOTON_OK && res.accepted == 1 && res.entries[0].accepted,
           "personal: a group that declares them keeps the member that leaves them out, and skips those that carry them",
           err.message);
    photon_merge_result_free(&res);
    o.skip_bad = 0, o.personal = NULL;
    expect(photon_merge(base_path, list, 3, NULL, &o, &res, &err) == PHOTON_ERR_MISMATCH && strstr(err.message, "group delta"),
           "personal: without skip_bad a group delta's odd member fails the merge", err.message);
    photon_merge_result_free(&res);
    /* the client state keeps them */
    memset(&cs, 0, sizeof cs);
    photon_adamw_state_init(&cs.adamw, base.num_params, NULL);
    expect(photon_personal_keep(&cs, &local, "h.0.ln_1.*,ln_f.*", &err) == PHOTON_OK &&
               cs.personal_count == 4 * (size_t)cfg.n_embd &&
               photon_client_state_save(&cs, &cfg, tmp_path("personal-state.st"), &err) == PHOTON_OK &&
               photon_client_state_load(&back, &cfg, tmp_path("personal-state.st"), &err) == PHOTON_OK &&
               strcmp(back.personal, "h.0.ln_1.*,ln_f.*") == 0 && back.personal_count == cs.personal_count &&
               memcmp(back.personal_values, cs.personal_values, cs.personal_count * sizeof(float)) == 0,
           "personal: the client state saves and loads its personal tensors", err.message);
    expect(photon_personal_apply(&back, &base, &err) == PHOTON_OK, "personal: laid over a model", err.message);
    for (t = 0; t < base.num_tensors; t++) {
        int personal = photon_glob_match("h.0.ln_1.*", base.tensors[t].name) || photon_glob_match("ln_f.*", base.tensors[t].name);
        for (j = base.tensors[t].offset; j < base.tensors[t].offset + base.tensors[t].size; j++)
            ok &= personal ? base.params[j] == local.params[j] : base.params[j] != local.params[j] || d[0][j] == 0.0f;
    }
    expect(ok, "personal: exactly the personal tensors take the state's values", NULL);
    photon_client_state_free(&cs);
    photon_client_state_free(&back);
    for (i = 0; i < 3; i++) free(d[i]);
    photon_model_free(&base);
    photon_model_free(&local);
}

/* Norm bounds refuse like any bad delta; settings that cannot work are
   refused before anything is read. */
static void test_robust_refusals(void) {
    photon_config cfg = {64, 16, 1, 2, 32};
    photon_model base;
    photon_merge_options o;
    photon_merge_result res;
    photon_error err;
    char base_path[512], base_hash[65], paths[5][512];
    const char *list[5];
    float *d;
    uint64_t rng = 99;
    size_t j;
    int i;
    photon_model_init(&base, &cfg, 6, NULL);
    snprintf(base_path, sizeof base_path, "%s", tmp_path("robust-base2.safetensors"));
    photon_checkpoint_save(&base, base_path, NULL);
    photon_sha256_file(base_path, base_hash, NULL);
    d = (float *)calloc(base.num_params, sizeof(float));
    for (i = 0; i < 4; i++) {
        fill_random(d, base.num_params, 0.01f, &rng);
        if (i == 3)
            for (j = 0; j < base.num_params; j++) d[j] *= 10.0f;
        robust_delta(&base, base_hash, i, 100, d, paths[i]);
        list[i] = paths[i];
    }
    memset(&o, 0, sizeof o);
    photon_outer_defaults(&o.outer, PHOTON_OUTER_FEDAVG);
    o.max_norm_ratio = 3.0;
    expect(photon_merge(base_path, list, 4, NULL, &o, &res, &err) == PHOTON_ERR_MISMATCH && strstr(err.message, "robust3") &&
               strstr(err.message, "median norm"),
           "robust merge: a delta 10x the median norm fails the merge (ratio bound 3), naming it", err.message);
    photon_merge_result_free(&res);
    o.skip_bad = 1;
    expect(photon_merge(base_path, list, 4, NULL, &o, &res, &err) == PHOTON_OK && res.accepted == 3 &&
               !res.entries[3].accepted && strcmp(res.entries[3].refused_by, "norm") == 0,
           "robust merge: with skip_bad the same delta is left out, refused by the norm bound", NULL);
    photon_merge_result_free(&res);
    o.max_norm_ratio = 0, o.skip_bad = 0;
    o.aggregate = PHOTON_AGGREGATE_MULTI_KRUM, o.byzantine = 1;
    expect(photon_merge(base_path, list, 4, NULL, &o, &res, &err) == PHOTON_ERR_ARGUMENT && strstr(err.message, "more than 4"),
           "robust merge: multi-krum with f 1 refuses 4 deltas (needs n > 2f + 2)", err.message);
    photon_merge_result_free(&res);
    o.aggregate = PHOTON_AGGREGATE_TRIMMED_MEAN, o.byzantine = 0, o.trim = 0.5;
    expect(photon_merge(base_path, list, 4, NULL, &o, &res, &err) == PHOTON_ERR_ARGUMENT && strstr(err.message, "0.5"),
           "robust merge: trim 0.5 is refused", err.message);
    photon_merge_result_free(&res);
    o.trim = 0.2, o.chunk = 5000;
    expect(photon_merge(base_path, list, 4, NULL, &o, &res, &err) == PHOTON_ERR_ARGUMENT && strstr(err.message, "4096"),
           "robust merge: a chunk that is not a multiple of 4096 is refused", err.message);
    photon_merge_result_free(&res);
    o.chunk = 0, o.aggregate = (photon_aggregate_kind)7;
    expect(photon_merge(base_path, list, 4, NULL, &o, &res, &err) == PHOTON_ERR_ARGUMENT && strstr(err.message, "unknown"),
           "robust merge: an unknown rule is refused", err.message);
    photon_merge_result_free(&res);
    free(d);
    photon_model_free(&base);
}

/* ======================================================================= */
/* Compressed deltas: formats against a direct computation                 */
/* ======================================================================= */

static long file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

/* The codes and decoded values of x in format f, computed directly. */
static void quant_reference(photon_delta_format f, const float *x, size_t n, int *codes, float *decoded) {
    int max = f == PHOTON_DELTA_INT8 ? 127 : 7;
    size_t b, i;
    for (b = 0; b * 128 < n; b++) {
        size_t lo = b * 128, hi = lo + 128 < n ? lo + 128 : n;
        float a = 0.0f, s;
        for (i = lo; i < hi; i++)
            if (fabsf(x[i]) > a) a = fabsf(x[i]);
        s = a / (float)max;
        if (isinf((float)max * s)) s = nextafterf(s, 0.0f);
        for (i = lo; i < hi; i++) {
            double q = s > 0 ? (double)x[i] / s : 0.0, r = q < 0 ? -floor(-q + 0.5) : floor(q + 0.5);
            int c = r > max ? max : r < -max ? -max : (int)r;
            codes[i] = c;
            decoded[i] = (float)c * s;
        }
    }
}

static void test_quantize_roundtrip(void) {
    static const size_t sizes[] = {1, 2, 127, 128, 129, 255, 300, 1000};
    float *x = (float *)calloc(1000, sizeof(float)), *y = (float *)calloc(1000, sizeof(float));
    float *ref = (float *)calloc(1000, sizeof(float)), scales[8];
    int *codes = (int *)calloc(1000, sizeof(int));
    unsigned char *bytes = (unsigned char *)calloc(2000, 1);
    uint64_t rng = 5;
    int f, kind, ok_codes = 1, ok_bound = 1, ok_bf16 = 1;
    size_t k, i;
    char label[160];
    for (kind = 0; kind < 5; kind++) /* random, zeros, constant, the largest float, subnormals */
        for (k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            size_t n = sizes[k];
            fill_random(x, n, 1.0f, &rng);
            for (i = 0; i < n; i++) {
                if (kind == 1) x[i] = 0.0f;
                if (kind == 2) x[i] = -0.375f;
                if (kind == 3 && i % 7 == 0) x[i] = i % 2 ? -FLT_MAX : FLT_MAX;
                if (kind == 4) x[i] = x[i] * 1e-39f; /* subnormal */
            }
            for (f = PHOTON_DELTA_INT8; f <= PHOTON_DELTA_INT4; f++) {
                photon_error err;
                photon_quantize((photon_delta_format)f, x, n, bytes, scales);
                quant_reference((photon_delta_format)f, x, n, codes, ref);
                if (photon_dequantize((photon_delta_format)f, bytes, scales, n, y, &err) != PHOTON_OK) ok_codes = 0;
                for (i = 0; i < n; i++) {
                    int c = f == PHOTON_DELTA_INT8 ? (int)(signed char)bytes[i]
                                                   : (int)(i % 2 ? bytes[i / 2] >> 4 : bytes[i / 2] & 15) - 8;
                    float s = scales[i / 128];
                    if (c != codes[i] || y[i] != ref[i]) ok_codes = 0;
                    /* the error bound: half a step, and the step's own rounding; 0 where the scale underflowed */
                    if (fabs((double)x[i] - y[i]) > 0.5 * s * (1 + 1e-6) + fabs((double)y[i]) * 1.2e-7 &&
                        !(s == 0 && fabs(x[i]) < 1e-40))
                        ok_bound = 0;
                }
                if (f == PHOTON_DELTA_INT4 && n % 2 && bytes[n / 2] >> 4 != 8) ok_codes = 0;
            }
            photon_quantize(PHOTON_DELTA_BF16, x, n, bytes, NULL);
            photon_dequantize(PHOTON_DELTA_BF16, bytes, NULL, n, y, NULL);
            for (i = 0; i < n; i++) { /* nearest bfloat16: within half its step, 2^-8 of the value (2^-133 below 2^-126) */
                double e = fabs((double)x[i] - y[i]), bound = fabs((double)x[i]) * (1.0 / 256) + 1e-40;
                if (e > bound || !isfinite(y[i])) ok_bf16 = 0;
            }
        }
    expect(ok_codes, "int8 and int4: codes and decoded values equal a direct computation (block sizes 1 to 1000, zeros, "
                     "constants, the largest float, subnormals; the int4 pad is code 0)", NULL);
    expect(ok_bound, "int8 and int4: every value within half a step of its block's scale", NULL);
    expect(ok_bf16, "bf16: every value within 2^-8 of itself, the largest float stays finite", NULL);
    { /* ties: halves go away from zero */
        float t[4] = {1.0f, 0.5f / 127, -1.5f / 127, 0.25f / 127};
        photon_quantize(PHOTON_DELTA_INT8, t, 4, bytes, scales);
        snprintf(label, sizeof label, "int8: halves round away from zero (codes %d %d %d %d)", (signed char)bytes[0],
                 (signed char)bytes[1], (signed char)bytes[2], (signed char)bytes[3]);
        expect((signed char)bytes[0] == 127 && (signed char)bytes[1] == 1 && (signed char)bytes[2] == -2 &&
                   (signed char)bytes[3] == 0, label, NULL);
    }
    { /* what a reader must refuse */
        photon_error err;
        float s[1] = {1.0f}, bad[1] = {NAN};
        unsigned char c8[2] = {0x80, 0}, c4[1] = {0x08}, pad[1] = {0x98};
        expect(photon_dequantize(PHOTON_DELTA_INT8, c8, s, 2, y, &err) == PHOTON_ERR_FORMAT && strstr(err.message, "-128"),
               "int8: code -128 is refused", err.message);
        expect(photon_dequantize(PHOTON_DELTA_INT4, c4, s, 2, y, &err) == PHOTON_ERR_FORMAT && strstr(err.message, "-8"),
               "int4: nibble 0 (code -8) is refused", err.message);
        expect(photon_dequantize(PHOTON_DELTA_INT4, pad, s, 1, y, &err) == PHOTON_ERR_FORMAT && strstr(err.message, "pad"),
               "int4: a pad other than code 0 is refused", err.message);
        expect(photon_dequantize(PHOTON_DELTA_INT8, c8 + 1, bad, 1, y, &err) == PHOTON_ERR_FORMAT && strstr(err.message, "scale"),
               "int8: a NaN scale is refused", err.message);
        s[0] = 3e38f, c8[0] = 127;
        expect(photon_dequantize(PHOTON_DELTA_INT8, c8, s, 1, y, &err) == PHOTON_ERR_FORMAT && strstr(err.message, "Inf"),
               "int8: a scale that decodes to Inf is refused", err.message);
    }
    free(x), free(y), free(ref), free(codes), free(bytes);
}

/* Error feedback keeps exactly what the format dropped; a merge of mixed
   formats is the merge of their decoded values (within the formats' error
   of the true deltas), streamed in chunks that cut tensors at odd places. */
static void test_delta_formats(void) {
    photon_config cfg = {61, 16, 1, 3, 33}; /* odd tensor sizes: int4 halves that straddle chunks */
    photon_model base, local;
    photon_delta_info info, back;
    photon_merge_options o;
    photon_merge_result res;
    photon_error err;
    char base_path[512], base_hash[65], paths[3][512];
    const char *list[3];
    float *truth[3], *decoded[3], *residual, *v;
    uint64_t rng = 11;
    size_t j, n;
    int k, exact = 1, ef = 1;
    double worst = 0.0, bound = 0.0;
    photon_model_init(&base, &cfg, 7, NULL);
    n = base.num_params;
    snprintf(base_path, sizeof base_path, "%s", tmp_path("fmt-base.safetensors"));
    photon_checkpoint_save(&base, base_path, NULL);
    photon_sha256_file(base_path, base_hash, NULL);
    photon_model_init(&local, &cfg, 1, NULL);
    residual = (float *)calloc(n, sizeof(float));
    v = (float *)calloc(n, sizeof(float));
    for (k = 0; k < 3; k++) {
        photon_delta_format f = k == 0 ? PHOTON_DELTA_F32 : k == 1 ? PHOTON_DELTA_INT8 : PHOTON_DELTA_INT4;
        truth[k] = (float *)calloc(n, sizeof(float));
        decoded[k] = (float *)calloc(n, sizeof(float));
        fill_random(truth[k], n, 0.01f, &rng);
        for (j = 0; j < n; j++) local.params[j] = base.params[j] - truth[k][j];
        for (j = 0; j < n; j++) truth[k][j] = base.params[j] - local.params[j];
        memset(&info, 0, sizeof info);
        memcpy(info.base_sha256, base_hash, 65);
        info.round = 1, info.local_steps = 1, info.batch = 100 * (uint64_t)(k + 1), info.seq = 1;
        info.tokens = info.batch, info.loss = 2.0f, info.format = f;
        snprintf(info.client, sizeof info.client, "f%d", k);
        snprintf(paths[k], sizeof paths[k], "%s", tmp_path(k == 0 ? "fmt0.safetensors" : k == 1 ? "fmt1.safetensors" : "fmt2.safetensors"));
        list[k] = paths[k];
        if (k == 2) fill_random(residual, n, 0.002f, &rng); /* a residual from an earlier round */
        for (j = 0; j < n; j++) v[j] = truth[k][j] + (k == 2 ? residual[j] : 0.0f);
        photon_delta_save_as(&local, base.params, &info, k == 2 ? residual : NULL, paths[k], NULL);
        if (photon_delta_load(&base, paths[k], &back, decoded[k], &err) != PHOTON_OK || back.format != f) {
            expect(0, "compressed deltas load", err.message);
            exact = 0;
        }
        if (k == 2) {
            for (j = 0; j < n; j++) ef &= residual[j] == v[j] - decoded[2][j];
            memcpy(truth[2], v, n * sizeof(float)); /* what was meant to travel */
        }
    }
    expect(ef, "error feedback: the residual is exactly (delta + old residual) - what the int4 file decodes to", NULL);
    memset(&o, 0, sizeof o);
    photon_outer_defaults(&o.outer, PHOTON_OUTER_FEDAVG);
    o.chunk = 4096;
    if (photon_merge(base_path, list, 3, NULL, &o, &res, &err) != PHOTON_OK) {
        expect(0, "a merge of f32, int8 and int4 deltas runs", err.message);
    } else {
        for (j = 0; j < n; j++) {
            double dec = (100.0 * decoded[0][j] + 200.0 * decoded[1][j] + 300.0 * decoded[2][j]) / 600.0;
            double tru = (100.0 * truth[0][j] + 200.0 * truth[1][j] + 300.0 * truth[2][j]) / 600.0;
            float want = base.params[j] - (float)dec;
            exact &= res.model.params[j] == want;
            if (fabs(((double)base.params[j] - res.model.params[j]) - tru) > worst)
                worst = fabs(((double)base.params[j] - res.model.params[j]) - tru);
        }
        for (k = 1; k < 3; k++) /* each format's largest error, weighted */
            for (j = 0, v[0] = 0; j < n; j++)
                if (fabs((double)truth[k][j] - decoded[k][j]) > v[0]) v[0] = (float)fabs((double)truth[k][j] - decoded[k][j]);
        bound = 0.0;
        for (k = 1; k < 3; k++) {
            double e = 0.0;
            for (j = 0; j < n; j++)
                if (fabs((double)truth[k][j] - decoded[k][j]) > e) e = fabs((double)truth[k][j] - decoded[k][j]);
            bound += e * (k == 1 ? 200.0 : 300.0) / 600.0;
        }
        expect(exact, "a merge of f32, int8 and int4 deltas (chunks of 4096 across odd-sized int4 tensors) equals the "
                      "float64 mean of their decoded values", NULL);
        {
            char label[200];
            snprintf(label, sizeof label, "  ... and the float64 mean of the true deltas within the formats' error (%.2e <= %.2e)",
                     worst, bound + 1e-7);
            expect(worst <= bound + 1e-7, label, NULL);
        }
        {
            photon_st_file st;
            photon_merge_save(&res, tmp_path("fmt-next.safetensors"), NULL);
            photon_st_open(&st, tmp_path("fmt-next.safetensors"), NULL);
            expect(photon_st_meta(&st, "photon.delta.1.format") && strcmp(photon_st_meta(&st, "photon.delta.1.format"), "int8") == 0 &&
                       !photon_st_meta(&st, "photon.delta.0.format"),
                   "the audit trail names each compressed delta's format (f32 deltas keep the keys they had)", NULL);
            photon_st_close(&st);
        }
    }
    photon_merge_result_free(&res);
    { /* the downlink: base + decoded update is the next checkpoint, bit for bit */
        char next[512], update[512], applied[512], sha[65];
        snprintf(next, sizeof next, "%s", tmp_path("fmt-next4.safetensors"));
        snprintf(update, sizeof update, "%s", tmp_path("fmt-update4.safetensors"));
        snprintf(applied, sizeof applied, "%s", tmp_path("fmt-applied4.safetensors"));
        o.compress_update = 1, o.update_format = PHOTON_DELTA_INT4;
        remove(applied);
        expect(photon_merge(base_path, list, 3, NULL, &o, &res, &err) == PHOTON_OK &&
                   photon_merge_save(&res, next, &err) == PHOTON_OK && photon_sha256_file(next, sha, &err) == PHOTON_OK &&
                   photon_update_save(&res, sha, update, &err) == PHOTON_OK &&
                   photon_update_apply(base_path, update, applied, &err) == PHOTON_OK && files_equal(next, applied),
               "an int4 update applied to the base rebuilds the next checkpoint bit for bit", err.message);
        { /* an update naming another result: refused, and what stood at out_path is still there */
            FILE *keep = fopen(applied, "wb");
            char bad[512];
            snprintf(bad, sizeof bad, "%s", tmp_path("fmt-badupdate.safetensors"));
            if (keep) fputs("keep", keep), fclose(keep);
            photon_update_save(&res, "0000000000000000000000000000000000000000000000000000000000000000", bad, NULL);
            expect(photon_update_apply(base_path, bad, applied, &err) == PHOTON_ERR_MISMATCH &&
                       strstr(err.message, "nothing written") && file_size(applied) == 4,
                   "an update whose result is not the checkpoint it names is refused; the file at out_path stays",
                   err.message);
        }
        photon_merge_result_free(&res);
        remove(applied);
        expect(photon_update_apply(next, update, applied, &err) == PHOTON_ERR_MISMATCH && strstr(err.message, "stale") &&
                   !files_equal(next, applied),
               "an update applied to another base is refused as stale, writing nothing", err.message);
    }
    for (k = 0; k < 3; k++) free(truth[k]), free(decoded[k]);
    free(residual), free(v);
    photon_model_free(&local);
    photon_model_free(&base);
}

/* Every refusal names the delta; by default one bad delta fails the merge. */
/* ======================================================================= */
/* Integrity: payload hashes, checked counters, readers that cannot stall  */
/* ======================================================================= */

/* Flips one bit of byte `at` of the data section (after the header). */
static void flip_data_byte(const char *path, uint64_t at) {
    FILE *f = fopen(path, "r+b");
    unsigned char len8[8], c;
    uint64_t header = 0;
    int k;
    if (fread(len8, 1, 8, f) != 8) return;
    for (k = 7; k >= 0; k--) header = header << 8 | len8[k];
    fseek(f, (long)(8 + header + at), SEEK_SET);
    c = (unsigned char)fgetc(f);
    fseek(f, (long)(8 + header + at), SEEK_SET);
    fputc(c ^ 0x10, f);
    fclose(f);
}

static uint64_t data_bytes(const char *path) {
    photon_st_file st;
    uint64_t n = 0;
    if (photon_st_open(&st, path, NULL) == PHOTON_OK) n = st.file_size - st.data_start, photon_st_close(&st);
    return n;
}

static void copy_file(const char *from, const char *to) {
    unsigned char *data;
    size_t size;
    if (photon_read_file(from, &data, &size, NULL) == PHOTON_OK) photon_write_file(to, data, size, NULL), photon_free(data);
}

/* Each kind of file with one flipped bit at the start, middle and end of its
   data is refused by its loader, naming the file and the hash. */
static void test_payload_hashes(void) {
    photon_config cfg = {16, 4, 1, 1, 4};
    photon_model m, back, local;
    photon_client_state cs, cs2;
    photon_server_state ss, ss2;
    photon_delta_info info;
    photon_error err;
    const char *ckpt = tmp_path("ph-ckpt.st"), *delta = tmp_path("ph-delta.st"), *state = tmp_path("ph-state.st"),
               *server = tmp_path("ph-server.st"), *flipped = tmp_path("ph-flipped.st");
    const char *paths[4], *kinds[4] = {"checkpoint", "delta", "client state", "server state"};
    float *values;
    int k, w, ok;
    photon_model_init(&m, &cfg, 1, NULL);
    photon_model_init(&local, &cfg, 2, NULL);
    values = (float *)calloc(m.num_params, 4);
    photon_checkpoint_save(&m, ckpt, NULL);
    memset(&info, 0, sizeof info);
    photon_sha256_file(ckpt, info.base_sha256, NULL);
    snprintf(info.client, sizeof info.client, "c");
    info.round = 1, info.local_steps = 2, info.batch = 3, info.seq = 4, info.tokens = 24;
    photon_delta_save(&local, m.params, &info, delta, NULL);
    memset(&cs, 0, sizeof cs);
    photon_adamw_state_init(&cs.adamw, m.num_params, NULL);
    photon_client_state_save(&cs, &cfg, state, NULL);
    photon_server_state_init(&ss, PHOTON_OUTER_ADAM, m.num_params, 1e-3f, NULL);
    photon_server_state_save(&ss, &cfg, server, NULL);
    paths[0] = ckpt, paths[1] = delta, paths[2] = state, paths[3] = server;
    expect(photon_checkpoint_load(&back, ckpt, &err) == PHOTON_OK && photon_sha256_file(ckpt, info.base_sha256, NULL) == PHOTON_OK &&
               strcmp(back.file_sha256, info.base_sha256) == 0,
           "payload: a checkpoint loads, and the loading pass gives the file's SHA-256", err.message);
    photon_model_free(&back);
    for (k = 0; k < 4; k++)
        for (w = 0; w < 3; w++) {
            uint64_t n = data_bytes(paths[k]), at = w == 0 ? 0 : w == 1 ? n / 2 : n - 1;
            photon_result r;
            char name[160];
            copy_file(paths[k], flipped);
            flip_data_byte(flipped, at);
            r = k == 0 ? photon_checkpoint_load(&back, flipped, &err)
                : k == 1 ? photon_delta_load(&m, flipped, &info, values, &err)
                : k == 2 ? photon_client_state_load(&cs2, &cfg, flipped, &err)
                         : photon_server_state_load(&ss2, &cfg, flipped, &err);
            ok = r == PHOTON_ERR_FORMAT && strstr(err.message, flipped) && strstr(err.message, "photon.data_sha256");
            snprintf(name, sizeof name, "payload: a %s with a bit flipped at the %s of its data is refused", kinds[k],
                     w == 0 ? "start" : w == 1 ? "middle" : "end");
            expect(ok, name, err.message);
            if (k == 0) { /* the export copies the file's bytes: it checks them as it copies */
                const char *dir = tmp_path("ph-export");
                snprintf(name, sizeof name, "payload: a checkpoint flipped at the %s is not exported",
                         w == 0 ? "start" : w == 1 ? "middle" : "end");
                expect(photon_hf_export(flipped, dir, NULL, 0, -1, &err) == PHOTON_ERR_FORMAT &&
                           strstr(err.message, "photon.data_sha256") && !photon__file_exists(dir),
                       name, err.message);
            }
        }
    photon_adamw_state_free(&cs.adamw);
    photon_server_state_free(&ss);
    free(values);
    photon_model_free(&local);
    photon_model_free(&m);
}

/* Writes a delta whose metadata says what the caller wants (the writer
   refuses inconsistent counts, so the file is written through the
   safetensors layer). */
static void write_delta_claiming(const photon_model *base, const char *base_hash, const char *path, const char *steps,
                                 const char *batch, const char *seq, const char *tokens, const char *client) {
    photon_st_entry e[64];
    photon__meta meta;
    float *zero = (float *)calloc(base->num_params, 4);
    int i;
    memset(e, 0, sizeof e);
    for (i = 0; i < base->num_tensors; i++) {
        e[i].name = base->tensors[i].name;
        e[i].ndim = base->tensors[i].ndim;
        e[i].shape[0] = (uint64_t)base->tensors[i].shape[0];
        e[i].shape[1] = (uint64_t)base->tensors[i].shape[1];
        e[i].data = zero + base->tensors[i].offset;
    }
    photon__meta_header(&meta, "delta", &base->config);
    photon__meta_str(&meta, "photon.base_sha256", base_hash);
    photon__meta_u64(&meta, "photon.round", base->round + 1);
    photon__meta_str(&meta, "photon.client", client);
    photon__meta_str(&meta, "photon.local_steps", steps);
    if (batch) photon__meta_str(&meta, "photon.batch", batch); /* NULL: a delta without batch and seq */
    if (seq) photon__meta_str(&meta, "photon.seq", seq);
    photon__meta_str(&meta, "photon.tokens", tokens);
    photon__meta_str(&meta, "photon.loss", "1.5");
    photon_st_write_f32(path, e, base->num_tensors, meta.keys, meta.values, meta.n, NULL);
    free(zero);
}

/* Nothing a delta says about itself goes unchecked. */
static void test_delta_counters(void) {
    photon_config cfg = {16, 4, 1, 1, 4};
    photon_model m;
    photon_merge_options o;
    photon_merge_result res;
    photon_error err;
    char hash[65];
    const char *base = tmp_path("ctr-base.st"), *d = tmp_path("ctr-d.st"), *d2 = tmp_path("ctr-d2.st"), *paths[2];
    photon_model_init(&m, &cfg, 1, NULL);
    photon_checkpoint_save(&m, base, NULL);
    photon_sha256_file(base, hash, NULL);
    memset(&o, 0, sizeof o);
    photon_outer_defaults(&o.outer, PHOTON_OUTER_FEDAVG);
    paths[0] = d, paths[1] = d2;
    write_delta_claiming(&m, hash, d, "10", "2", "4", "1000000000000000000", "big");
    expect(photon_merge(base, paths, 1, NULL, &o, &res, &err) == PHOTON_ERR_MISMATCH &&
               strstr(err.message, "claims 1000000000000000000 tokens, but 10 local steps of 2 x 4"),
           "counters: tokens that are not steps x batch x sequence are refused", err.message);
    photon_merge_result_free(&res);
    write_delta_claiming(&m, hash, d, "1", "1", "5", "5", "long");
    expect(photon_merge(base, paths, 1, NULL, &o, &res, &err) == PHOTON_ERR_MISMATCH &&
               strstr(err.message, "longer than the context"),
           "counters: a sequence longer than the model's context is refused", err.message);
    photon_merge_result_free(&res);
    write_delta_claiming(&m, hash, d, "4611686018427387904", "4", "1", "0", "wrap");
    expect(photon_merge(base, paths, 1, NULL, &o, &res, &err) == PHOTON_ERR_MISMATCH && strstr(err.message, "overflow"),
           "counters: a product past 2^64-1 is refused, not wrapped", err.message);
    photon_merge_result_free(&res);
    write_delta_claiming(&m, hash, d, "4611686018427387904", "2", "1", "9223372036854775808", "half-a");
    write_delta_claiming(&m, hash, d2, "4611686018427387904", "2", "1", "9223372036854775808", "half-b");
    expect(photon_merge(base, paths, 2, NULL, &o, &res, &err) == PHOTON_ERR_ARGUMENT && strstr(err.message, "2^64-1"),
           "counters: tokens that add up past 2^64-1 are refused", err.message);
    photon_merge_result_free(&res);
    write_delta_claiming(&m, hash, d, "10", NULL, NULL, "1000000000", "stripped");
    photon_accept_unhashed(1);
    expect(photon_merge(base, paths, 1, NULL, &o, &res, &err) == PHOTON_ERR_MISMATCH && strstr(err.message, "lacks photon.batch"),
           "counters: a format-2 delta without batch and sequence is refused, even when unhashed files are accepted",
           err.message);
    photon_accept_unhashed(0);
    photon_merge_result_free(&res);
    write_delta_claiming(&m, hash, d, "1000000", "1", "1", "1000000", "many-steps");
    o.max_local_steps = 1000;
    expect(photon_merge(base, paths, 1, NULL, &o, &res, &err) == PHOTON_ERR_MISMATCH &&
               strstr(err.message, "1000000 local steps, more than this round allows (1000)"),
           "counters: local steps beyond the round's bound are refused", err.message);
    photon_merge_result_free(&res);
    o.max_local_steps = 0, o.max_tokens = 999;
    expect(photon_merge(base, paths, 1, NULL, &o, &res, &err) == PHOTON_ERR_MISMATCH &&
               strstr(err.message, "more than this round allows (999)"),
           "counters: tokens beyond the round's bound are refused", err.message);
    photon_merge_result_free(&res);
    o.max_tokens = 0;
    m.step = UINT64_MAX - 5; /* a global clock at its edge */
    photon_checkpoint_save(&m, base, NULL);
    photon_sha256_file(base, hash, NULL);
    write_delta_claiming(&m, hash, d, "10", "1", "1", "10", "late");
    expect(photon_merge(base, paths, 1, NULL, &o, &res, &err) == PHOTON_ERR_ARGUMENT &&
               strstr(err.message, "would pass 2^64-1"),
           "counters: a global step that would pass 2^64-1 is refused", err.message);
    photon_merge_result_free(&res);
    {
        photon_delta_info info;
        memset(&info, 0, sizeof info);
        memcpy(info.base_sha256, hash, 65);
        snprintf(info.client, sizeof info.client, "w");
        info.round = 1, info.local_steps = 2, info.batch = 2, info.seq = 2, info.tokens = 9;
        expect(photon_delta_save(&m, m.params, &info, d, &err) == PHOTON_ERR_ARGUMENT && strstr(err.message, "9 tokens"),
               "counters: the writer refuses counts that disagree too", err.message);
    }
    m.params[3] = NAN;
    photon_checkpoint_save(&m, base, NULL);
    {
        photon_model back;
        expect(photon_checkpoint_load(&back, base, &err) == PHOTON_ERR_NUMERIC && strstr(err.message, "NaN") &&
                   strstr(err.message, base),
               "a checkpoint holding NaN is refused on load", err.message);
    }
    photon_model_free(&m);
}

/* What could stall a reader is refused before it is read. */
static void test_readers_cannot_stall(void) {
    photon_config cfg = {16, 4, 1, 1, 4};
    photon_model m, back;
    photon_merge_options o;
    photon_merge_result res;
    photon_st_file st;
    photon_error err;
    char hex[65], *header;
    const char *fifo = tmp_path("stall.fifo"), *dir = tmp_path("stall.dir"), *base = tmp_path("stall-base.st");
    const char *many = tmp_path("stall-many.st"), *paths[1];
    size_t at, cap = 1100000;
    int k;
    FILE *f;
    photon_model_init(&m, &cfg, 1, NULL);
    photon_checkpoint_save(&m, base, NULL);
    memset(&o, 0, sizeof o);
    photon_outer_defaults(&o.outer, PHOTON_OUTER_FEDAVG);
    remove(fifo);
    mkfifo(fifo, 0600);
    mkdir(dir, 0700);
    expect(photon_checkpoint_load(&back, fifo, &err) == PHOTON_ERR_IO && strstr(err.message, "a FIFO"),
           "stall: a FIFO given as a checkpoint is refused unread", err.message);
    expect(photon_sha256_file(fifo, hex, &err) == PHOTON_ERR_IO && strstr(err.message, "a FIFO"),
           "stall: hashing a FIFO is refused unread", err.message);
    paths[0] = fifo;
    expect(photon_merge(base, paths, 1, NULL, &o, &res, &err) == PHOTON_ERR_MISMATCH && strstr(err.message, "a FIFO"),
           "stall: a FIFO given to the merge as a delta is refused", err.message);
    photon_merge_result_free(&res);
    paths[0] = base;
    expect(photon_merge(fifo, paths, 1, NULL, &o, &res, &err) == PHOTON_ERR_IO && strstr(err.message, "a FIFO"),
           "stall: a FIFO given to the merge as its base is refused", err.message);
    photon_merge_result_free(&res);
    expect(photon_checkpoint_load(&back, "/dev/zero", &err) == PHOTON_ERR_IO && strstr(err.message, "a device"),
           "stall: /dev/zero is refused unread", err.message);
    expect(photon_checkpoint_load(&back, dir, &err) == PHOTON_ERR_IO && strstr(err.message, "a directory"),
           "stall: a directory is refused", err.message);
    /* a 1 MB header of tens of thousands of metadata keys */
    header = (char *)malloc(cap + 64);
    at = (size_t)snprintf(header, cap, "{\"__metadata__\":{");
    for (k = 0; at < cap - 40; k++) at += (size_t)snprintf(header + at, cap - at, "%s\"k%d\":\"v\"", k ? "," : "", k);
    at += (size_t)snprintf(header + at, cap + 64 - at, "}}");
    f = fopen(many, "wb");
    {
        unsigned char len8[8];
        for (k = 0; k < 8; k++) len8[k] = (unsigned char)((uint64_t)at >> (8 * k));
        fwrite(len8, 1, 8, f);
        fwrite(header, 1, at, f);
    }
    fclose(f);
    expect(photon_st_open(&st, many, &err) == PHOTON_ERR_FORMAT && strstr(err.message, "more than 16384 __metadata__ keys"),
           "stall: a 1 MB header of many keys is refused at photon's bound", err.message);
    free(header);
    remove(fifo), remove(dir), remove(many);
    photon_model_free(&m);
}

static void test_merge_refusals(void) {
    photon_config cfg = {12, 4, 1, 2, 4}, other = {12, 4, 1, 2, 8};
    fed_case f;
    photon_merge_options o;
    photon_merge_result res;
    photon_error err;
    float *d = NULL;
    const char *paths[3];
    uint64_t rng = 8;
    char stale_path[512], nan_path[512], cfg_path[512];
    memset(&f, 0, sizeof f);
    memset(&o, 0, sizeof o);
    photon_outer_defaults(&o.outer, PHOTON_OUTER_FEDAVG);
    photon_model_init(&f.base, &cfg, 4, NULL);
    d = (float *)calloc(f.base.num_params, 4);
    f.tokens[0] = f.tokens[1] = f.tokens[2] = 100;
    /* a stale delta: written against another base */
    fed_write_base(&f, "rbase-old.safetensors");
    fed_write_delta(&f, 2, "old", d, &rng);
    snprintf(stale_path, sizeof stale_path, "%s", tmp_path("stale.safetensors"));
    rename(f.delta_paths[2], stale_path);
    f.base.params[0] += 1.0f;
    fed_write_base(&f, "rbase.safetensors");
    fed_write_delta(&f, 0, "a", d, &rng);
    fed_write_delta(&f, 1, "b", d, &rng);
    paths[0] = f.delta_paths[0], paths[1] = f.delta_paths[1], paths[2] = stale_path;
    expect(photon_merge(f.base_path, paths, 3, NULL, &o, &res, &err) == PHOTON_ERR_MISMATCH &&
               strstr(err.message, "stale") && strstr(err.message, stale_path),
           "merge refuses a stale delta, by name", err.message);
    photon_merge_result_free(&res);
    o.skip_bad = 1, o.min_clients = 2;
    expect(photon_merge(f.base_path, paths, 3, NULL, &o, &res, &err) == PHOTON_OK && res.accepted == 2 &&
               !res.entries[2].accepted,
           "merge --skip-bad merges the rest when enough remain", err.message);
    photon_merge_result_free(&res);
    o.min_clients = 3;
    expect(photon_merge(f.base_path, paths, 3, NULL, &o, &res, &err) == PHOTON_ERR_ARGUMENT &&
               strstr(err.message, "only 2 valid deltas of 3"),
           "merge --skip-bad fails below --min-clients", err.message);
    photon_merge_result_free(&res);
    o.skip_bad = 0, o.min_clients = 1;
    paths[2] = f.delta_paths[0];
    expect(photon_merge(f.base_path, paths, 3, NULL, &o, &res, &err) == PHOTON_ERR_MISMATCH &&
               strstr(err.message, "client id 'a' appears in more than one delta"),
           "merge refuses a repeated client id", err.message);
    photon_merge_result_free(&res);
    {   /* NaN in a delta's values */
        photon_model bad;
        photon_delta_info info;
        memset(&info, 0, sizeof info);
        photon_model_init(&bad, &cfg, 1, NULL);
        memcpy(bad.params, f.base.params, bad.num_params * 4);
        bad.params[5] = NAN;
        memcpy(info.base_sha256, f.base_hash, 65);
        info.round = 1, info.local_steps = 1, info.batch = 10, info.seq = 1, info.tokens = 10;
        snprintf(info.client, sizeof info.client, "nan-client");
        snprintf(nan_path, sizeof nan_path, "%s", tmp_path("nan.safetensors"));
        photon_delta_save(&bad, f.base.params, &info, nan_path, NULL);
        paths[2] = nan_path;
        expect(photon_merge(f.base_path, paths, 3, NULL, &o, &res, &err) == PHOTON_ERR_MISMATCH &&
                   strstr(err.message, "NaN") && strstr(err.message, nan_path),
               "merge refuses a delta holding NaN", err.message);
        photon_merge_result_free(&res);
        photon_model_free(&bad);
        /* a delta of another config */
        photon_model_init(&bad, &other, 1, NULL);
        snprintf(cfg_path, sizeof cfg_path, "%s", tmp_path("othercfg.safetensors"));
        snprintf(info.client, sizeof info.client, "wide");
        photon_delta_save(&bad, bad.params, &info, cfg_path, NULL);
        paths[2] = cfg_path;
        expect(photon_merge(f.base_path, paths, 3, NULL, &o, &res, &err) == PHOTON_ERR_MISMATCH &&
                   strstr(err.message, "width 8") && strstr(err.message, cfg_path),
               "merge refuses a delta of another model config", err.message);
        photon_merge_result_free(&res);
        photon_model_free(&bad);
    }
    paths[2] = f.base_path;
    expect(photon_merge(f.base_path, paths, 3, NULL, &o, &res, &err) == PHOTON_ERR_MISMATCH &&
               strstr(err.message, "is a photon checkpoint, expected a delta"),
           "merge refuses a checkpoint given as a delta", err.message);
    photon_merge_result_free(&res);
    {   /* server state of another outer optimizer */
        photon_server_state ss;
        photon_server_state_init(&ss, PHOTON_OUTER_ADAM, f.base.num_params, 1e-3f, NULL);
        photon_server_state_save(&ss, &cfg, tmp_path("adam-state.safetensors"), NULL);
        photon_server_state_free(&ss);
        photon_outer_defaults(&o.outer, PHOTON_OUTER_NESTEROV);
        expect(photon_merge(f.base_path, paths, 2, tmp_path("adam-state.safetensors"), &o, &res, &err) ==
                       PHOTON_ERR_MISMATCH &&
                   strstr(err.message, "for outer optimizer adam, this merge uses nesterov"),
               "merge refuses a server state of another outer optimizer", err.message);
        photon_merge_result_free(&res);
    }
    free(d);
    photon_model_free(&f.base);
}


/* ======================================================================= */
/* The optimised kernels against the first, unoptimised implementation     */
/* ======================================================================= */
/* tests/golden_step.safetensors holds the loss and every gradient of one
   training step, computed by the straightforward loops of commit fc482d3
   (before blocking, packing and threads). Odd sizes make every kernel run
   its edge cases. PHOTON_WRITE_GOLDEN=1 rewrites the file (only do that from
   the reference implementation). */

static void golden_case(photon_model *m, int *inputs, int *targets) {
    photon_config cfg = {67, 16, 2, 3, 24};
    uint64_t rng = 2024;
    int i;
    photon_model_init(m, &cfg, 5, NULL);
    for (i = 0; i < (int)m->num_params; i++) m->params[i] += 0.05f * (2.0f * photon_rand_uniform(&rng) - 1.0f);
    for (i = 0; i < 3 * 13; i++) {
        inputs[i] = (int)(photon_rand_u64(&rng) % 67);
        targets[i] = (int)(photon_rand_u64(&rng) % 67);
    }
}

static void test_golden_step(void) {
    photon_model m;
    int inputs[39], targets[39];
    float loss;
    const char *path = "tests/golden_step.safetensors";
    golden_case(&m, inputs, targets);
    photon_zero_grad(&m);
    photon_forward(&m, inputs, targets, 3, 13, &loss, NULL);
    photon_backward(&m, NULL);
    if (getenv("PHOTON_WRITE_GOLDEN")) {
        photon_st_entry e[2];
        char loss_text[32];
        const char *keys[1] = {"loss"}, *values[1];
        memset(e, 0, sizeof e);
        snprintf(loss_text, sizeof loss_text, "%.9g", (double)loss);
        values[0] = loss_text;
        e[0].name = "grads", e[0].ndim = 1, e[0].shape[0] = m.num_params, e[0].data = m.grads;
        photon_st_write_f32(path, e, 1, keys, values, 1, NULL);
        printf("wrote %s\n", path);
    } else {
        photon_st_file st;
        photon_error err;
        float *want = (float *)calloc(m.num_params, sizeof(float));
        double max_err = 0.0, want_loss;
        int k;
        if (photon_st_open(&st, path, &err) != PHOTON_OK) {
            expect(0, "golden step file opens (run from the repository root)", err.message);
            free(want);
            photon_model_free(&m);
            return;
        }
        photon_st_read_f32(&st, photon_st_find(&st, "grads"), want, m.num_params, NULL);
        want_loss = strtod(photon_st_meta(&st, "loss"), NULL);
        photon_st_close(&st);
        expect(fabs(loss - want_loss) / want_loss < 1e-5, "training step: loss agrees with the unoptimised path", NULL);
        for (k = 0; k < m.num_tensors; k++) { /* per tensor, relative to its largest gradient */
            const photon_tensor_info *t = &m.tensors[k];
            double e = 0.0, scale = 1e-30;
            size_t j;
            for (j = 0; j < t->size; j++) {
                if (fabs(want[t->offset + j]) > scale) scale = fabs(want[t->offset + j]);
                if (fabs(m.grads[t->offset + j] - want[t->offset + j]) > e)
                    e = fabs(m.grads[t->offset + j] - want[t->offset + j]);
            }
            if (e / scale > max_err) max_err = e / scale;
        }
        {
            char label[128];
            snprintf(label, sizeof label, "training step: every gradient agrees with the unoptimised path (error %.1e)",
                     max_err);
            expect(max_err < 1e-4, label, NULL);
        }
        free(want);
    }
    photon_model_free(&m);
}


/* The same step on 1 to 4 threads gives the same bits: every reduction
   runs in fixed blocks, whatever the thread count. Sizes above one GEMM tile
   (MC, NC, KC) so that the work really splits. */
static void test_thread_determinism(void) {
    photon_config cfg = {5000, 32, 2, 2, 288}; /* a head wide enough for the short-M GEMM path */
    photon_model m;
    photon_adamw_state st;
    photon_adamw_config hp = {0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
    photon_schedule sched = {1e-3f, 0, 10, 0.1f};
    int inputs[5 * 31], targets[5 * 31], i, k, same = 1;
    float *first = NULL;
    uint64_t rng = 77;
    int quick = getenv("PHOTON_TEST_QUICK") != NULL; /* under ASan, where a step of this model takes 10 s: 1 and 4 threads, one step */
    for (i = 0; i < 5 * 31; i++) inputs[i] = (int)(photon_rand_u64(&rng) % 5000), targets[i] = (int)(photon_rand_u64(&rng) % 5000);
    for (k = 1; k <= 4; k += quick ? 3 : 1) { /* at 4 threads the head's GEMM switches to MC row blocks */
        photon_set_threads(k);
        photon_model_init(&m, &cfg, 3, NULL);
        photon_adamw_state_init(&st, m.num_params, NULL);
        photon_train_step(&m, &st, &hp, &sched, inputs, targets, 5, 31, NULL, NULL);
        if (!quick) photon_train_step(&m, &st, &hp, &sched, inputs, targets, 5, 31, NULL, NULL);
        if (!first) {
            first = (float *)malloc(m.num_params * sizeof(float));
            memcpy(first, m.params, m.num_params * sizeof(float));
        } else {
            same &= memcmp(first, m.params, m.num_params * sizeof(float)) == 0;
        }
        photon_adamw_state_free(&st);
        photon_model_free(&m);
    }
    photon_set_threads(0);
    expect(same, quick ? "training: 1 and 4 threads give bit-identical parameters (quick)"
                       : "training: 1, 2, 3 and 4 threads give bit-identical parameters", NULL);
    free(first);
}

/* Whether a child process fails to take the lock on path, with a message
   naming this process (fcntl locks belong to processes: a second
   descriptor in this one would be granted). */
static int child_refused(const char *path) {
    pid_t child = fork();
    int status = 0;
    if (child == 0) {
        photon_lock lock;
        photon_error e;
        char want[64];
        snprintf(want, sizeof want, "in use by another process (pid %ld holds", (long)getppid());
        _exit(photon_lock_acquire(&lock, path, &e) == PHOTON_ERR_IO && strstr(e.message, want) ? 0 : 1);
    }
    return child > 0 && waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* In a child that then ends, as a killed photon-train would: a delta and a
   client state recorded against it (prev: what the state was resumed
   from), the commit stopped before the state's rename. Returns its pid. */
static long child_commit_stopped(const char *delta, const char *state, const char *prev) {
    pid_t child = fork();
    int status = 0;
    if (child == 0) {
        photon_config cfg = {16, 4, 1, 1, 4};
        photon_client_state s;
        photon_outputs out;
        const char *t1, *t2;
        int ok;
        memset(&s, 0, sizeof s);
        photon_adamw_state_init(&s.adamw, photon__num_params(&cfg), NULL);
        snprintf(s.commit.prev_state_sha256, sizeof s.commit.prev_state_sha256, "%s", prev);
        snprintf(s.commit.delta, sizeof s.commit.delta, "%s", delta);
        photon_outputs_init(&out);
        out.stop_before_rename = 2;
        ok = photon_outputs_add(&out, delta, &t1, NULL) == PHOTON_OK &&
             photon_outputs_add(&out, state, &t2, NULL) == PHOTON_OK &&
             photon_write_file(t1, "a delta", 7, NULL) == PHOTON_OK &&
             photon_sha256_file(t1, s.commit.delta_sha256, NULL) == PHOTON_OK &&
             photon_client_state_save(&s, &cfg, t2, NULL) == PHOTON_OK &&
             photon_outputs_commit(&out, NULL) == PHOTON_ERR_IO;
        _exit(ok ? 0 : 1);
    }
    return child > 0 && waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? (long)child
                                                                                                           : -1;
}

static void test_commit_recovery(void) {
    const char *a = tmp_path("c-a"), *b = tmp_path("c-b"), *delta = tmp_path("c-delta"), *state = tmp_path("c-state");
    const char *t1, *t2;
    char pending[600], hex[65];
    photon_outputs out;
    photon_lock lock;
    photon_recovery rec;
    photon_commit_record c;
    photon_error err;
    int removed = 0;
    uint64_t bytes = 0;
    long pid;
    remove(a), remove(b), remove(delta), remove(state);
    expect(photon_lock_acquire(&lock, state, &err) == PHOTON_OK, "lock: taken", err.message);
    expect(child_refused(state), "lock: a second process is refused, naming the holder", NULL);
    photon_lock_release(&lock);
    expect(!child_refused(state), "lock: released, another process takes it", NULL);

    photon_outputs_init(&out);
    photon_outputs_add(&out, a, &t1, NULL);
    photon_outputs_add(&out, b, &t2, NULL);
    photon_write_file(t1, "one", 3, NULL);
    photon_write_file(t2, "two", 3, NULL);
    out.stop_before_rename = 2;
    expect(photon_outputs_commit(&out, &err) == PHOTON_ERR_IO && strstr(err.message, "a fault was injected") &&
               strstr(err.message, "committed: ") && strstr(err.message, "left pending: "),
           "outputs: a commit stopped halfway says what it committed and what is pending", err.message);
    photon_outputs_abort(&out);
    expect(photon__file_exists(a) && photon__file_exists(t2) && !photon__file_exists(b),
           "outputs: a commit stopped halfway keeps the pending files, also through an abort", NULL);
    remove(t2);

    pid = child_commit_stopped(delta, state, "none");
    snprintf(pending, sizeof pending, "%s.%ld.pending", state, pid);
    expect(pid > 0 && photon__file_exists(pending) && photon__file_exists(delta) && !photon__file_exists(state),
           "reconcile: a killed run left its delta in place, its state pending", NULL);
    expect(photon_client_state_reconcile(state, &rec, &err) == PHOTON_OK && rec.pid == pid &&
               !photon__file_exists(pending) && photon_client_state_read_commit(state, &c, &err) == PHOTON_OK &&
               photon_sha256_file(delta, hex, &err) == PHOTON_OK && strcmp(c.delta_sha256, hex) == 0,
           "reconcile: the commit is finished, the state names the delta there", err.message);
    expect(photon_client_state_reconcile(state, &rec, &err) == PHOTON_OK && rec.pid == 0,
           "reconcile: with nothing left halfway it does nothing", err.message);
    pid = child_commit_stopped(delta, state, "none"); /* resumed from no state, but one is there now */
    snprintf(pending, sizeof pending, "%s.%ld.pending", state, pid);
    expect(pid > 0 && photon_client_state_reconcile(state, &rec, &err) == PHOTON_OK && rec.pid == 0 &&
               photon__file_exists(pending),
           "reconcile: a pending state resumed from another file is not rolled forward", err.message);
    expect(photon_outputs_cleanup(state, &removed, &bytes, &err) == PHOTON_OK && removed == 1 && bytes > 0 &&
               !photon__file_exists(pending) && photon__file_exists(state),
           "cleanup: a dead run's pending state goes, the state stays", err.message);
    snprintf(pending, sizeof pending, "%s.%ld.pending", state, (long)getpid());
    photon_write_file(pending, "mine", 4, NULL);
    removed = 0;
    expect(photon_outputs_cleanup(state, &removed, &bytes, &err) == PHOTON_OK && removed == 0 &&
               photon__file_exists(pending),
           "cleanup: a running process's pending file stays", err.message);
    remove(pending), remove(a), remove(delta), remove(state);
    snprintf(pending, sizeof pending, "%s.lock", state);
    remove(pending);
}

static const check_test tests[] = {
    CHECK_TEST(layernorm_grad),
    CHECK_TEST(matmul_grad),
    CHECK_TEST(attention_grad),
    CHECK_TEST(gelu_grad),
    CHECK_TEST(residual_grad),
    CHECK_TEST(encoder_grad),
    CHECK_TEST(head_grad),
    CHECK_TEST(crossentropy_grad),
    CHECK_TEST(model_grad),
    CHECK_TEST(init),
    CHECK_TEST(forward_checks),
    CHECK_TEST(schedule),
    CHECK_TEST(adamw),
    CHECK_TEST(train_determinism),
    CHECK_TEST(data),
    CHECK_TEST(eval_batch_invariance),
    CHECK_TEST(safetensors_roundtrip),
    CHECK_TEST(safetensors_corrupt),
    CHECK_TEST(checkpoint),
    CHECK_TEST(client_state),
    CHECK_TEST(matmul_naive),
    CHECK_TEST(encoder_and_shards),
    CHECK_TEST(files),
    CHECK_TEST(commit_recovery),
    CHECK_TEST(split_plan),
    CHECK_TEST(client_state_resume),
    CHECK_TEST(sha256),
    CHECK_TEST(outer_optimizers),
    CHECK_TEST(merge_weighting_and_order),
    CHECK_TEST(merge_refusals),
    CHECK_TEST(robust_rules),
    CHECK_TEST(robust_refusals),
    CHECK_TEST(group_merge),
    CHECK_TEST(personal_tensors),
    CHECK_TEST(quantize_roundtrip),
    CHECK_TEST(delta_formats),
    CHECK_TEST(payload_hashes),
    CHECK_TEST(delta_counters),
    CHECK_TEST(readers_cannot_stall),
    CHECK_TEST(golden_step),
    CHECK_TEST(thread_determinism),
};

int main(int argc, char **argv) { return check_main(tests, sizeof tests / sizeof tests[0], argc, argv); }
