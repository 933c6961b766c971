/* photon_cuda.cu - photon's training step on an NVIDIA GPU, with cuBLAS.

   The same GPT-2 model, loss, AdamW update and schedule as photon.h, run on
   one GPU. The interface is declared in photon.h (section GPU); build with

       nvcc -O3 -c photon_cuda.cu -o photon_cuda.o
       cc ... your_program.c photon_cuda.o -lcublas -lcudart -lstdc++

   where your_program.c (or another file) defines PHOTON_IMPLEMENTATION.

   How the step runs (the order of photon_forward / photon_backward):
     - matrix products go to cuBLAS (cublasGemmEx) in FP32 storage, with the
       compute type the caller picks: TF32 tensor cores (default), plain
       FP32, or BF16 tensor cores; accumulation is FP32 in every case;
     - the attention is one fused kernel per direction that streams keys in
       tiles through shared memory with an online softmax: the T x T matrix is
       never stored; the backward pass recomputes it from the saved
       log-sum-exp of each row;
     - the bias, residual add and the next LayerNorm run as one kernel, and so
       do the MLP's bias and GELU;
     - the output head's softmax, cross-entropy and its gradient run as one
       kernel that overwrites the logits with their gradient;
     - gradients are summed in a fixed order everywhere (no atomics): column
         sums go through per-chunk partial sums, the token-embedding gradient
         through a per-token list of positions built on the host; so the same
         inputs give the same bits on the same GPU;
     - the gradient norm is summed in double in fixed blocks, then clipping
       and AdamW run as one element-wise kernel per tensor.

   Every CUDA and cuBLAS status is checked: a launch or a cuBLAS call that
   fails is recorded and the step returns PHOTON_ERR_DEVICE (or
   PHOTON_ERR_MEMORY when the GPU is out of memory) with a message that
   names the call.

   For tests without a GPU, tests/cuda_emu.h runs the same kernels on the CPU
   (PHOTON_CUDA_EMULATE); see docs/TESTING.md. */
#include "photon.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef PHOTON_CUDA_EMULATE
#include "tests/cuda_emu.h"
#else
#include <cublas_v2.h>
#include <cuda_runtime.h>
/* Every launch goes through this macro so that a failed launch is recorded
   with the kernel's name (the emulator defines its own). */
#define PHOTON__LAUNCH(g, kernel, grid, block, ...)                                   \
    do {                                                                              \
        kernel<<<(grid), (block), 0, (g)->stream>>>(__VA_ARGS__);                     \
        photon__cu_launched((g), cudaPeekAtLastError(), #kernel);                   \
    } while (0)
#endif

#define PHOTON__CU_FULL_MASK 0xffffffffu
#define PHOTON__CU_LN_EPS 1e-5f
#define PHOTON__CU_GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define PHOTON__CU_NORM_BLOCK 65536           /* the CPU's block of the gradient norm */
#define PHOTON__CU_COLSUM_ROWS 32             /* rows per partial column sum */
#define PHOTON__CU_ATT_WARPS 8                /* query (or key) rows per attention block, one per warp */
#define PHOTON__CU_ATT_TILE 32                /* keys (or queries) per tile: one per lane */

/* ======================================================================= */
/* The GPU model                                                           */
/* ======================================================================= */

struct photon_cuda {
    photon_config config;
    size_t num_params;
    int num_tensors;
    photon_tensor_info *tensors; /* the host model's table, copied */
    int max_B, max_T;
    photon_cuda_precision precision;
    char name[256];
    cudaStream_t stream;
    cublasHandle_t blas;
    cublasComputeType_t compute;
    /* the first failure since the last check: which call, and why */
    int failed;
    photon_result failure_code;
    char failure[400];
    /* parameters, gradients and AdamW moments: four buffers of num_params */
    float *params, *grads, *m, *v;
    /* activations kept from the forward pass for the backward pass, each
       per layer where the CPU keeps them per layer */
    float *encoded, *ln1, *ln1_mean, *ln1_rstd, *qkv, *atty, *att_lse, *residual2, *ln2, *ln2_mean, *ln2_rstd;
    float *fch, *fch_gelu, *residual3, *lnf, *lnf_mean, *lnf_rstd, *logits, *losses;
    /* scratch: a projection's output before its residual add, and the
       gradients of one layer at a time */
    float *proj, *dres, *dln, *dqkv, *datty, *dfch, *att_D, *partial;
    double *norm_partial, *norm;
    /* the batch, and its positions grouped by token for the embedding gradient */
    int *inputs, *targets, *token_ids, *token_start, *token_positions;
    int num_distinct;
    /* host scratch for the same */
    int *host_count, *host_ids, *host_start, *host_positions;
    float *host_losses;
    void *arena; /* one allocation holds all the device buffers above */
    int B, T;    /* shape of the last forward pass */
};

static photon_result photon__cu_fail(photon_error *err, photon_result code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* Records the first failed call; checked (and cleared) by photon__cu_check. */
static void photon__cu_record(photon_cuda *g, photon_result code, const char *call, const char *why) {
    if (g->failed) return;
    g->failed = 1;
    g->failure_code = code;
    snprintf(g->failure, sizeof g->failure, "%s failed: %s", call, why);
}

static void photon__cu_launched(photon_cuda *g, cudaError_t e, const char *kernel) {
    if (e != cudaSuccess) photon__cu_record(g, PHOTON_ERR_DEVICE, kernel, cudaGetErrorString(e));
}

static photon_result photon__cu_status(photon_cuda *g, cudaError_t e, const char *call) {
    if (e == cudaSuccess) return PHOTON_OK;
    photon__cu_record(g, e == cudaErrorMemoryAllocation ? PHOTON_ERR_MEMORY : PHOTON_ERR_DEVICE, call,
                        cudaGetErrorString(e));
    return g->failure_code;
}

/* Waits for the GPU, then reports the first failure since the last check. */
static photon_result photon__cu_check(photon_cuda *g, const char *stage, photon_error *err) {
    photon_result r;
    photon__cu_status(g, cudaStreamSynchronize(g->stream), "cudaStreamSynchronize");
    photon__cu_status(g, cudaGetLastError(), "a kernel");
    if (!g->failed) return PHOTON_OK;
    r = g->failure_code;
    photon__cu_fail(err, r, "GPU %s, %s: %s", g->name, stage, g->failure);
    g->failed = 0;
    return r;
}

/* ======================================================================= */
/* Kernels                                                                 */
/* ======================================================================= */

/* Grid-wide index of this thread for element-wise kernels. */
__device__ static size_t photon__cu_gid(void) { return (size_t)blockIdx.x * blockDim.x + threadIdx.x; }

__device__ static float photon__cu_warp_sum(float x) {
    for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(PHOTON__CU_FULL_MASK, x, offset);
    return x;
}

__device__ static float photon__cu_warp_max(float x) {
    for (int offset = 16; offset > 0; offset >>= 1) x = fmaxf(x, __shfl_xor_sync(PHOTON__CU_FULL_MASK, x, offset));
    return x;
}

/* --- embedding: x[n,:] = wte[token n] + wpe[n mod T] --- */

__global__ static void photon__cu_encoder_forward(float *out, const int *inputs, const float *wte, const float *wpe,
                                               size_t N, int T, int C) {
    size_t i = photon__cu_gid();
    if (i >= N * C) return;
    size_t n = i / C, c = i % C;
    out[i] = wte[(size_t)inputs[n] * C + c] + wpe[(n % T) * C + c];
}

/* dwpe[t,c] += sum over batch rows b of dout[b,t,c], b in order */
__global__ static void photon__cu_encoder_backward_wpe(float *dwpe, const float *dout, int B, int T, int C) {
    size_t i = photon__cu_gid();
    if (i >= (size_t)T * C) return;
    float sum = 0.0f;
    for (int b = 0; b < B; b++) sum += dout[(size_t)b * T * C + i];
    dwpe[i] += sum;
}

/* One block per distinct token: dwte[token] += the rows of dout where the
   token occurs, in position order (positions[start[u] .. start[u+1])). */
__global__ static void photon__cu_encoder_backward_wte(float *dwte, const float *dout, const int *ids, const int *start,
                                                   const int *positions, int C) {
    int u = blockIdx.x;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float sum = 0.0f;
        for (int k = start[u]; k < start[u + 1]; k++) sum += dout[(size_t)positions[k] * C + c];
        dwte[(size_t)ids[u] * C + c] += sum;
    }
}

/* --- LayerNorm over the last dimension, one warp per row --- */

/* Normalizes row x (already in memory) into out, saving mean and 1/std. */
__device__ static void photon__cu_layernorm_row(float *out, float *mean, float *rstd, const float *x, const float *w,
                                             const float *b, int C, int lane) {
    float sum = 0.0f, var = 0.0f;
    for (int c = lane; c < C; c += 32) sum += x[c];
    float m = photon__cu_warp_sum(sum) / C;
    for (int c = lane; c < C; c += 32) var += (x[c] - m) * (x[c] - m);
    float s = 1.0f / sqrtf(photon__cu_warp_sum(var) / C + PHOTON__CU_LN_EPS);
    for (int c = lane; c < C; c += 32) out[c] = (x[c] - m) * s * w[c] + b[c];
    if (lane == 0) *mean = m, *rstd = s;
}

__global__ static void photon__cu_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                                                 const float *w, const float *b, int N, int C) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= N) return; /* whole warps leave together */
    size_t o = (size_t)row * C;
    photon__cu_layernorm_row(out + o, mean + row, rstd + row, inp + o, w, b, C, threadIdx.x % 32);
}

/* The end of a sub-block and the start of the next, fused:
   resid_out = resid_in + proj + bias, out = LayerNorm(resid_out). */
__global__ static void photon__cu_residual_layernorm_forward(float *resid_out, float *out, float *mean, float *rstd,
                                                          const float *resid_in, const float *proj,
                                                          const float *bias, const float *w, const float *b, int N,
                                                          int C) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    size_t o = (size_t)row * C;
    for (int c = lane; c < C; c += 32) resid_out[o + c] = resid_in[o + c] + proj[o + c] + bias[c];
    __syncwarp();
    photon__cu_layernorm_row(out + o, mean + row, rstd + row, resid_out + o, w, b, C, lane);
}

/* dx = rstd (g - mean(g) - xhat mean(g xhat)) with g = dout w, added to dres
   (accumulate) or written over it. */
__global__ static void photon__cu_layernorm_backward_dx(float *dres, const float *dout, const float *x, const float *w,
                                                     const float *mean, const float *rstd, int N, int C,
                                                     int accumulate) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    size_t o = (size_t)row * C;
    float m = mean[row], s = rstd[row], g_sum = 0.0f, gx_sum = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float g = dout[o + c] * w[c];
        g_sum += g;
        gx_sum += g * (x[o + c] - m) * s;
    }
    float g_mean = photon__cu_warp_sum(g_sum) / C, gx_mean = photon__cu_warp_sum(gx_sum) / C;
    for (int c = lane; c < C; c += 32) {
        float dx = (dout[o + c] * w[c] - g_mean - (x[o + c] - m) * s * gx_mean) * s;
        dres[o + c] = accumulate ? dres[o + c] + dx : dx;
    }
}

/* --- column sums (bias and LayerNorm weight gradients), in fixed order ---
   Stage 1: chunk k of PHOTON__CU_COLSUM_ROWS rows gives partial[k][c] = sum of
   d[n,c] and, with x, partial[chunks + k][c] = sum of d[n,c] xhat[n,c].
   Stage 2: db[c] += sum over k in order (and dw[c] likewise). */
__global__ static void photon__cu_colsum_partial(float *partial, const float *d, const float *x, const float *mean,
                                              const float *rstd, int N, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x, chunk = blockIdx.y, chunks = gridDim.y;
    if (c >= C) return;
    int end = min(N, (chunk + 1) * PHOTON__CU_COLSUM_ROWS);
    float sum = 0.0f, xsum = 0.0f;
    for (int n = chunk * PHOTON__CU_COLSUM_ROWS; n < end; n++) {
        float dv = d[(size_t)n * C + c];
        sum += dv;
        if (x) xsum += dv * (x[(size_t)n * C + c] - mean[n]) * rstd[n];
    }
    partial[(size_t)chunk * C + c] = sum;
    if (x) partial[(size_t)(chunks + chunk) * C + c] = xsum;
}

__global__ static void photon__cu_colsum_finish(float *db, float *dw, const float *partial, int chunks, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float sum = 0.0f, xsum = 0.0f;
    for (int k = 0; k < chunks; k++) sum += partial[(size_t)k * C + c];
    db[c] += sum;
    if (dw) {
        for (int k = 0; k < chunks; k++) xsum += partial[(size_t)(chunks + k) * C + c];
        dw[c] += xsum;
    }
}

/* --- bias, GELU (tanh approximation) --- */

__global__ static void photon__cu_bias_add(float *out, const float *bias, size_t N, int OC) {
    size_t i = photon__cu_gid();
    if (i < N * OC) out[i] += bias[i % OC];
}

__device__ static float photon__cu_gelu_inner(float x) { return PHOTON__CU_GELU_K * (x + 0.044715f * x * x * x); }

/* fch = fch + bias (kept for the backward pass), fch_gelu = GELU(fch) */
__global__ static void photon__cu_bias_gelu_forward(float *fch, float *fch_gelu, const float *bias, size_t N, int OC) {
    size_t i = photon__cu_gid();
    if (i >= N * OC) return;
    float x = fch[i] + bias[i % OC];
    fch[i] = x;
    fch_gelu[i] = 0.5f * x * (1.0f + tanhf(photon__cu_gelu_inner(x)));
}

/* d (the gradient of GELU's output) becomes the gradient of its input */
__global__ static void photon__cu_gelu_backward(float *d, const float *x, size_t n) {
    size_t i = photon__cu_gid();
    if (i >= n) return;
    float v = x[i], th = tanhf(photon__cu_gelu_inner(v)), sech2 = 1.0f - th * th;
    d[i] *= 0.5f * (1.0f + th) + 0.5f * v * sech2 * PHOTON__CU_GELU_K * (1.0f + 3.0f * 0.044715f * v * v);
}

/* --- causal attention, fused (flash-attention style, FP32) ---
   qkv (B,T,3C) holds q, k, v side by side; head h owns columns h*hs.. of
   each. A block takes PHOTON__CU_ATT_WARPS consecutive query rows of one (b, h),
   one warp per row; keys stream through shared memory in tiles of 32, one
   per lane. Each warp keeps the running maximum m, the running sum l of
   exp(score - m) and the weighted sum of values acc, rescaled whenever m
   grows, so the T x T matrix is never formed. lse = m + log l is saved per
   row: the backward pass recomputes every probability as exp(score - lse).
   HS is the largest head size the instantiation takes (a multiple of 32);
   smaller heads are zero-padded. Lane j owns dimensions j, j+32, ... */

/* Copies rows [t0, t0+rows) of one head's q, k or v block (column offset
   col) into tile[rows][stride], zero past T or past the head size. */
template <int HS>
__device__ static void photon__cu_load_rows(float *tile, int stride, int rows, const float *head, int col, int t0, int T,
                                         int hs, int C3) {
    for (int i = threadIdx.x; i < rows * HS; i += blockDim.x) {
        int r = i / HS, d = i % HS, t = t0 + r;
        tile[r * stride + d] = t < T && d < hs ? head[(size_t)t * C3 + col + d] : 0.0f;
    }
}

__device__ static float photon__cu_dot(const float *a, const float *b, int n) {
    float s = 0.0f;
    for (int d = 0; d < n; d++) s += a[d] * b[d];
    return s;
}

template <int HS>
__global__ static void photon__cu_attention_forward(float *out, float *lse, const float *qkv, int T, int C, int NH) {
    __shared__ float ks[PHOTON__CU_ATT_TILE][HS + 1], vs[PHOTON__CU_ATT_TILE][HS + 1], qs[PHOTON__CU_ATT_WARPS][HS];
    const int bh = blockIdx.y, b = bh / NH, h = bh % NH, hs = C / NH, C3 = 3 * C;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int t0 = blockIdx.x * PHOTON__CU_ATT_WARPS, t = t0 + warp;
    const int last = min(t0 + PHOTON__CU_ATT_WARPS, T) - 1; /* the block's last query row */
    const float *head = qkv + (size_t)b * T * C3 + h * hs;
    const float scale = 1.0f / sqrtf((float)hs);
    float m = -INFINITY, l = 0.0f, acc[HS / 32];
    for (int i = 0; i < HS / 32; i++) acc[i] = 0.0f;
    photon__cu_load_rows<HS>(&qs[0][0], HS, PHOTON__CU_ATT_WARPS, head, 0, t0, T, hs, C3);
    for (int k0 = 0; k0 <= last; k0 += PHOTON__CU_ATT_TILE) {
        __syncthreads(); /* everyone is done with the previous tile */
        photon__cu_load_rows<HS>(&ks[0][0], HS + 1, PHOTON__CU_ATT_TILE, head, C, k0, T, hs, C3);
        photon__cu_load_rows<HS>(&vs[0][0], HS + 1, PHOTON__CU_ATT_TILE, head, 2 * C, k0, T, hs, C3);
        __syncthreads();
        if (t > last || k0 > t) continue; /* the same for the whole warp */
        int key = k0 + lane, keys = min(PHOTON__CU_ATT_TILE, t - k0 + 1);
        float s = key <= t ? photon__cu_dot(qs[warp], ks[lane], hs) * scale : -INFINITY;
        float m_new = fmaxf(m, photon__cu_warp_max(s)); /* finite: key k0 <= t */
        float p = key <= t ? expf(s - m_new) : 0.0f, rescale = expf(m - m_new);
        l = l * rescale + photon__cu_warp_sum(p);
        for (int i = 0; i < HS / 32; i++) acc[i] *= rescale;
        for (int j = 0; j < keys; j++) {
            float pj = __shfl_sync(PHOTON__CU_FULL_MASK, p, j);
            for (int i = 0; i < HS / 32; i++) acc[i] += pj * vs[j][lane + 32 * i];
        }
        m = m_new;
    }
    if (t > last) return;
    float *o = out + ((size_t)b * T + t) * C + h * hs;
    for (int i = 0; i < HS / 32; i++)
        if (lane + 32 * i < hs) o[lane + 32 * i] = acc[i] / l;
    if (lane == 0) lse[(size_t)bh * T + t] = m + logf(l);
}

/* D[b,h,t] = dout . out over the head's columns: the softmax backward's
   sum_j p_j dp_j, formed once per row. One warp per row. */
__global__ static void photon__cu_attention_backward_rowdot(float *D, const float *dout, const float *out, int B, int T,
                                                         int C, int NH) {
    size_t row = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; /* (b, h, t) */
    int lane = threadIdx.x % 32, hs = C / NH;
    if (row >= (size_t)B * NH * T) return;
    int t = (int)(row % T), h = (int)(row / T % NH), b = (int)(row / T / NH);
    size_t o = ((size_t)b * T + t) * C + h * hs;
    float s = 0.0f;
    for (int d = lane; d < hs; d += 32) s += dout[o + d] * out[o + d];
    s = photon__cu_warp_sum(s);
    if (lane == 0) D[row] = s;
}

/* With p = exp(s - lse), dp = dout . v and ds = p (dp - D):
   dv[key] = sum over queries t >= key of p dout[t],
   dk[key] = scale * sum over queries of ds q[t].
   One warp per key row; query rows stream through shared memory. */
template <int HS>
__global__ static void photon__cu_attention_backward_dkdv(float *dqkv, const float *dout, const float *qkv,
                                                      const float *lse, const float *D, int T, int C, int NH) {
    __shared__ float qs[PHOTON__CU_ATT_TILE][HS + 1], dos[PHOTON__CU_ATT_TILE][HS + 1];
    __shared__ float lses[PHOTON__CU_ATT_TILE], Ds[PHOTON__CU_ATT_TILE];
    __shared__ float kw[PHOTON__CU_ATT_WARPS][HS], vw[PHOTON__CU_ATT_WARPS][HS];
    const int bh = blockIdx.y, b = bh / NH, h = bh % NH, hs = C / NH, C3 = 3 * C;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int k0 = blockIdx.x * PHOTON__CU_ATT_WARPS, key = k0 + warp;
    const float *head = qkv + (size_t)b * T * C3 + h * hs, *dhead = dout + (size_t)b * T * C + h * hs;
    const float scale = 1.0f / sqrtf((float)hs);
    float dk[HS / 32], dv[HS / 32];
    for (int i = 0; i < HS / 32; i++) dk[i] = dv[i] = 0.0f;
    photon__cu_load_rows<HS>(&kw[0][0], HS, PHOTON__CU_ATT_WARPS, head, C, k0, T, hs, C3);
    photon__cu_load_rows<HS>(&vw[0][0], HS, PHOTON__CU_ATT_WARPS, head, 2 * C, k0, T, hs, C3);
    for (int q0 = k0 / PHOTON__CU_ATT_TILE * PHOTON__CU_ATT_TILE; q0 < T; q0 += PHOTON__CU_ATT_TILE) {
        __syncthreads();
        photon__cu_load_rows<HS>(&qs[0][0], HS + 1, PHOTON__CU_ATT_TILE, head, 0, q0, T, hs, C3);
        photon__cu_load_rows<HS>(&dos[0][0], HS + 1, PHOTON__CU_ATT_TILE, dhead, 0, q0, T, hs, C);
        if (threadIdx.x < PHOTON__CU_ATT_TILE) {
            int tq = q0 + threadIdx.x;
            lses[threadIdx.x] = tq < T ? lse[(size_t)bh * T + tq] : 0.0f;
            Ds[threadIdx.x] = tq < T ? D[(size_t)bh * T + tq] : 0.0f;
        }
        __syncthreads();
        if (key >= T || q0 + PHOTON__CU_ATT_TILE <= key) continue; /* warp-uniform */
        int tq = q0 + lane, valid = tq < T && tq >= key;
        float p = valid ? expf(photon__cu_dot(qs[lane], kw[warp], hs) * scale - lses[lane]) : 0.0f;
        float ds = valid ? p * (photon__cu_dot(dos[lane], vw[warp], hs) - Ds[lane]) : 0.0f;
        for (int j = 0; j < PHOTON__CU_ATT_TILE; j++) {
            float pj = __shfl_sync(PHOTON__CU_FULL_MASK, p, j), dsj = __shfl_sync(PHOTON__CU_FULL_MASK, ds, j);
            for (int i = 0; i < HS / 32; i++) {
                dv[i] += pj * dos[j][lane + 32 * i];
                dk[i] += dsj * qs[j][lane + 32 * i];
            }
        }
    }
    if (key >= T) return;
    float *row = dqkv + ((size_t)b * T + key) * C3 + h * hs;
    for (int i = 0; i < HS / 32; i++)
        if (lane + 32 * i < hs) {
            row[C + lane + 32 * i] = dk[i] * scale;
            row[2 * C + lane + 32 * i] = dv[i];
        }
}

/* dq[t] = scale * sum over keys <= t of ds k[key]. One warp per query row;
   key rows stream through shared memory, as in the forward pass. */
template <int HS>
__global__ static void photon__cu_attention_backward_dq(float *dqkv, const float *dout, const float *qkv,
                                                    const float *lse, const float *D, int T, int C, int NH) {
    __shared__ float ks[PHOTON__CU_ATT_TILE][HS + 1], vs[PHOTON__CU_ATT_TILE][HS + 1];
    __shared__ float qw[PHOTON__CU_ATT_WARPS][HS], dow[PHOTON__CU_ATT_WARPS][HS];
    const int bh = blockIdx.y, b = bh / NH, h = bh % NH, hs = C / NH, C3 = 3 * C;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int t0 = blockIdx.x * PHOTON__CU_ATT_WARPS, t = t0 + warp;
    const int last = min(t0 + PHOTON__CU_ATT_WARPS, T) - 1;
    const float *head = qkv + (size_t)b * T * C3 + h * hs, *dhead = dout + (size_t)b * T * C + h * hs;
    const float scale = 1.0f / sqrtf((float)hs);
    const float row_lse = t <= last ? lse[(size_t)bh * T + t] : 0.0f, row_D = t <= last ? D[(size_t)bh * T + t] : 0.0f;
    float dq[HS / 32];
    for (int i = 0; i < HS / 32; i++) dq[i] = 0.0f;
    photon__cu_load_rows<HS>(&qw[0][0], HS, PHOTON__CU_ATT_WARPS, head, 0, t0, T, hs, C3);
    photon__cu_load_rows<HS>(&dow[0][0], HS, PHOTON__CU_ATT_WARPS, dhead, 0, t0, T, hs, C);
    for (int k0 = 0; k0 <= last; k0 += PHOTON__CU_ATT_TILE) {
        __syncthreads();
        photon__cu_load_rows<HS>(&ks[0][0], HS + 1, PHOTON__CU_ATT_TILE, head, C, k0, T, hs, C3);
        photon__cu_load_rows<HS>(&vs[0][0], HS + 1, PHOTON__CU_ATT_TILE, head, 2 * C, k0, T, hs, C3);
        __syncthreads();
        if (t > last || k0 > t) continue;
        int key = k0 + lane, keys = min(PHOTON__CU_ATT_TILE, t - k0 + 1);
        float p = key <= t ? expf(photon__cu_dot(qw[warp], ks[lane], hs) * scale - row_lse) : 0.0f;
        float ds = key <= t ? p * (photon__cu_dot(dow[warp], vs[lane], hs) - row_D) : 0.0f;
        for (int j = 0; j < keys; j++) {
            float dsj = __shfl_sync(PHOTON__CU_FULL_MASK, ds, j);
            for (int i = 0; i < HS / 32; i++) dq[i] += dsj * ks[j][lane + 32 * i];
        }
    }
    if (t > last) return;
    float *row = dqkv + ((size_t)b * T + t) * C3 + h * hs;
    for (int i = 0; i < HS / 32; i++)
        if (lane + 32 * i < hs) row[lane + 32 * i] = dq[i] * scale;
}

/* --- output head: softmax, cross-entropy and its gradient in one kernel ---
   One block per row of logits. A first pass finds the maximum and the sum of
   exp(logit - max) together (online, rescaling the sum when the maximum
   grows); loss = log(sum) + max - logit[target]. With grad, a second pass
   writes (softmax - onehot(target)) * dloss over the logits. */

/* Merges two (max, sum of exp(x - max)) pairs. */
__device__ static void photon__cu_softmax_merge(float *m, float *s, float m2, float s2) {
    if (m2 == -INFINITY) return;
    if (*m == -INFINITY) {
        *m = m2, *s = s2;
        return;
    }
    float mx = fmaxf(*m, m2);
    *s = *s * expf(*m - mx) + s2 * expf(m2 - mx);
    *m = mx;
}

__global__ static void photon__cu_classifier(float *logits, float *losses, const int *targets, int V, float dloss,
                                          int grad) {
    __shared__ float warp_m[32], warp_s[32];
    float *row = logits + (size_t)blockIdx.x * V;
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    int target = targets[blockIdx.x];
    float target_logit = row[target]; /* read before the second pass overwrites it */
    float m = -INFINITY, s = 0.0f;
    for (int v = threadIdx.x; v < V; v += blockDim.x) photon__cu_softmax_merge(&m, &s, row[v], 1.0f);
    for (int offset = 16; offset > 0; offset >>= 1) {
        float m2 = __shfl_xor_sync(PHOTON__CU_FULL_MASK, m, offset), s2 = __shfl_xor_sync(PHOTON__CU_FULL_MASK, s, offset);
        photon__cu_softmax_merge(&m, &s, m2, s2);
    }
    if (lane == 0) warp_m[warp] = m, warp_s[warp] = s;
    __syncthreads();
    m = -INFINITY, s = 0.0f;
    for (int w = 0; w < warps; w++) photon__cu_softmax_merge(&m, &s, warp_m[w], warp_s[w]); /* same order everywhere */
    if (threadIdx.x == 0) losses[blockIdx.x] = logf(s) + m - target_logit;
    if (!grad) return;
    float inv = 1.0f / s;
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        float p = expf(row[v] - m) * inv;
        row[v] = (p - (v == target ? 1.0f : 0.0f)) * dloss;
    }
}

/* --- gradient norm and AdamW --- */

/* partial[k] = sum of g[i]^2 over block k of PHOTON__CU_NORM_BLOCK, in double,
   reduced in a fixed tree (256 threads). */
__global__ static void photon__cu_sumsq_partial(double *partial, const float *g, size_t n) {
    __shared__ double sums[256];
    size_t begin = (size_t)blockIdx.x * PHOTON__CU_NORM_BLOCK, end = begin + PHOTON__CU_NORM_BLOCK < n ? begin + PHOTON__CU_NORM_BLOCK : n;
    double s = 0.0;
    for (size_t i = begin + threadIdx.x; i < end; i += blockDim.x) s += (double)g[i] * (double)g[i];
    sums[threadIdx.x] = s;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half >>= 1) {
        if ((int)threadIdx.x < half) sums[threadIdx.x] += sums[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[blockIdx.x] = sums[0];
}

__global__ static void photon__cu_sumsq_finish(double *out, const double *partial, int blocks) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    double s = 0.0;
    for (int k = 0; k < blocks; k++) s += partial[k];
    *out = s;
}

/* photon.h's AdamW: m, v moments; decoupled decay wd; clip scales the gradient. */
__global__ static void photon__cu_adamw(float *p, const float *g, float *m, float *v, size_t n, float clip, float b1,
                                     float b2, float eps, float bc1, float bc2, float lr, float wd) {
    size_t i = photon__cu_gid();
    if (i >= n) return;
    float grad = g[i] * clip;
    float mi = b1 * m[i] + (1.0f - b1) * grad, vi = b2 * v[i] + (1.0f - b2) * grad * grad;
    m[i] = mi;
    v[i] = vi;
    p[i] -= lr * ((mi / bc1) / (sqrtf(vi / bc2) + eps) + wd * p[i]);
}

/* ======================================================================= */
/* Launches                                                                */
/* ======================================================================= */

static unsigned photon__cu_blocks(size_t n, int threads) { return (unsigned)((n + threads - 1) / threads); }

/* Row-major out (M,N) = op(A) op(B) (+ out if beta is 1), for row-major
   A and B. cuBLAS is column-major, and a row-major matrix read
   column-major is its transpose, so this computes out^T = op(B)^T op(A)^T
   with the operands swapped. lda, ldb: row lengths of A and B as stored. */
static void photon__cu_gemm(photon_cuda *g, int M, int N, int K, const float *A, int lda, int trans_a, const float *B,
                         int ldb, int trans_b, float *out, float beta) {
    const float one = 1.0f;
    cublasStatus_t s = cublasGemmEx(g->blas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                                    N, M, K, &one, B, CUDA_R_32F, ldb, A, CUDA_R_32F, lda, &beta, out, CUDA_R_32F, N,
                                    g->compute, CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS) photon__cu_record(g, PHOTON_ERR_DEVICE, "cublasGemmEx", cublasGetStatusString(s));
}

/* out (N,OC) = inp (N,IC) W (IC,OC), W in the checkpoint's [in,out] layout */
static void photon__cu_matmul_forward(photon_cuda *g, float *out, const float *inp, const float *w, int N, int IC, int OC) {
    photon__cu_gemm(g, N, OC, IC, inp, IC, 0, w, OC, 0, out, 0.0f);
}

/* Sums of the columns of d (N,C) added to db; with x, also the sums of
   d * xhat (LayerNorm's weight gradient) added to dw. */
static void photon__cu_colsum(photon_cuda *g, float *db, float *dw, const float *d, const float *x, const float *mean,
                           const float *rstd, int N, int C) {
    unsigned chunks = photon__cu_blocks((size_t)N, PHOTON__CU_COLSUM_ROWS);
    dim3 grid(photon__cu_blocks((size_t)C, 256), chunks);
    PHOTON__LAUNCH(g, photon__cu_colsum_partial, grid, 256, g->partial, d, x, mean, rstd, N, C);
    PHOTON__LAUNCH(g, photon__cu_colsum_finish, photon__cu_blocks((size_t)C, 256), 256, db, dw, g->partial, (int)chunks, C);
}

/* din = dout W^T (written over din), dW += inp^T dout, db += column sums */
static void photon__cu_matmul_backward(photon_cuda *g, float *din, float *dw, float *db, const float *dout,
                                    const float *inp, const float *w, int N, int IC, int OC) {
    photon__cu_gemm(g, N, IC, OC, dout, OC, 0, w, OC, 1, din, 0.0f);
    photon__cu_gemm(g, IC, OC, N, inp, IC, 1, dout, OC, 0, dw, 1.0f);
    photon__cu_colsum(g, db, NULL, dout, NULL, NULL, NULL, N, OC);
}

static void photon__cu_layernorm_backward(photon_cuda *g, float *dres, float *dw, float *db, const float *dout,
                                       const float *x, const float *w, const float *mean, const float *rstd, int N,
                                       int C, int accumulate) {
    PHOTON__LAUNCH(g, photon__cu_layernorm_backward_dx, photon__cu_blocks((size_t)N, 8), 256, dres, dout, x, w, mean, rstd,
                   N, C, accumulate);
    photon__cu_colsum(g, db, dw, dout, x, mean, rstd, N, C);
}

/* The largest head size each attention instantiation takes. */
static int photon__cu_attention_hs(int hs) { return hs <= 32 ? 32 : hs <= 64 ? 64 : hs <= 128 ? 128 : 0; }

static void photon__cu_attention_forward_launch(photon_cuda *g, float *out, float *lse, const float *qkv, int B, int T,
                                             int C, int NH) {
    dim3 grid(photon__cu_blocks((size_t)T, PHOTON__CU_ATT_WARPS), (unsigned)(B * NH));
    switch (photon__cu_attention_hs(C / NH)) {
    case 32: PHOTON__LAUNCH(g, photon__cu_attention_forward<32>, grid, 32 * PHOTON__CU_ATT_WARPS, out, lse, qkv, T, C, NH); break;
    case 64: PHOTON__LAUNCH(g, photon__cu_attention_forward<64>, grid, 32 * PHOTON__CU_ATT_WARPS, out, lse, qkv, T, C, NH); break;
    default: PHOTON__LAUNCH(g, photon__cu_attention_forward<128>, grid, 32 * PHOTON__CU_ATT_WARPS, out, lse, qkv, T, C, NH); break;
    }
}

/* dqkv (written over) from dout, the saved qkv, out and lse; D: (B,NH,T) scratch */
static void photon__cu_attention_backward_launch(photon_cuda *g, float *dqkv, float *D, const float *dout,
                                              const float *qkv, const float *out, const float *lse, int B, int T,
                                              int C, int NH) {
    int threads = 32 * PHOTON__CU_ATT_WARPS;
    dim3 grid(photon__cu_blocks((size_t)T, PHOTON__CU_ATT_WARPS), (unsigned)(B * NH));
    PHOTON__LAUNCH(g, photon__cu_attention_backward_rowdot, photon__cu_blocks((size_t)B * NH * T, 8), 256, D, dout,
                   out, B, T, C, NH);
    switch (photon__cu_attention_hs(C / NH)) {
    case 32:
        PHOTON__LAUNCH(g, photon__cu_attention_backward_dkdv<32>, grid, threads, dqkv, dout, qkv, lse, D, T, C, NH);
        PHOTON__LAUNCH(g, photon__cu_attention_backward_dq<32>, grid, threads, dqkv, dout, qkv, lse, D, T, C, NH);
        break;
    case 64:
        PHOTON__LAUNCH(g, photon__cu_attention_backward_dkdv<64>, grid, threads, dqkv, dout, qkv, lse, D, T, C, NH);
        PHOTON__LAUNCH(g, photon__cu_attention_backward_dq<64>, grid, threads, dqkv, dout, qkv, lse, D, T, C, NH);
        break;
    default:
        PHOTON__LAUNCH(g, photon__cu_attention_backward_dkdv<128>, grid, threads, dqkv, dout, qkv, lse, D, T, C, NH);
        PHOTON__LAUNCH(g, photon__cu_attention_backward_dq<128>, grid, threads, dqkv, dout, qkv, lse, D, T, C, NH);
        break;
    }
}

/* ======================================================================= */
/* The model on the GPU: layout, forward, backward                         */
/* ======================================================================= */

/* Pointers to one block's tensors in a params or grads buffer: the same
   layout as photon.h (the checkpoint's order). */
typedef struct photon__cu_block {
    float *ln1w, *ln1b, *qkvw, *qkvb, *attprojw, *attprojb;
    float *ln2w, *ln2b, *fcw, *fcb, *fcprojw, *fcprojb;
} photon__cu_block;

static photon__cu_block photon__cu_block_at(float *buffer, const photon_config *c, int layer) {
    size_t C = (size_t)c->n_embd, block = C * (12 * C + 13);
    float *p = buffer + (size_t)c->vocab_size * C + (size_t)c->n_ctx * C + (size_t)layer * block;
    float **fields[12];
    photon__cu_block b;
    size_t sizes[12] = {C, C, 3 * C * C, 3 * C, C * C, C, C, C, 4 * C * C, 4 * C, 4 * C * C, C};
    fields[0] = &b.ln1w, fields[1] = &b.ln1b, fields[2] = &b.qkvw, fields[3] = &b.qkvb;
    fields[4] = &b.attprojw, fields[5] = &b.attprojb, fields[6] = &b.ln2w, fields[7] = &b.ln2b;
    fields[8] = &b.fcw, fields[9] = &b.fcb, fields[10] = &b.fcprojw, fields[11] = &b.fcprojb;
    for (int k = 0; k < 12; k++) {
        *fields[k] = p;
        p += sizes[k];
    }
    return b;
}

static float *photon__cu_wpe(float *buffer, const photon_config *c) {
    return buffer + (size_t)c->vocab_size * c->n_embd;
}
static float *photon__cu_lnf(float *buffer, const photon_config *c) { /* weight, then bias */
    return photon__cu_block_at(buffer, c, c->n_layer).ln1w;
}

/* The next `bytes` of the arena, 256-byte aligned (or NULL when only
   counting, base NULL). */
static void *photon__cu_carve(char *base, size_t *used, size_t bytes) {
    void *p = base ? base + *used : NULL;
    *used += (bytes + 255) / 256 * 256;
    return p;
}

/* Carves the device buffers out of one arena (or only counts bytes, if
   base is NULL). Returns the bytes needed. */
static size_t photon__cu_layout(photon_cuda *g, char *base) {
    const photon_config *c = &g->config;
    size_t N = (size_t)g->max_B * g->max_T, C = (size_t)c->n_embd, L = (size_t)c->n_layer;
    size_t NH = (size_t)c->n_head, V = (size_t)c->vocab_size, P = g->num_params, u = 0, f = sizeof(float);
    size_t chunks = (N + PHOTON__CU_COLSUM_ROWS - 1) / PHOTON__CU_COLSUM_ROWS;
    size_t norm_blocks = (P + PHOTON__CU_NORM_BLOCK - 1) / PHOTON__CU_NORM_BLOCK;
    g->params = (float *)photon__cu_carve(base, &u, P * f);
    g->grads = (float *)photon__cu_carve(base, &u, P * f);
    g->m = (float *)photon__cu_carve(base, &u, P * f);
    g->v = (float *)photon__cu_carve(base, &u, P * f);
    /* kept for the backward pass */
    g->encoded = (float *)photon__cu_carve(base, &u, N * C * f);
    g->ln1 = (float *)photon__cu_carve(base, &u, L * N * C * f);
    g->ln1_mean = (float *)photon__cu_carve(base, &u, L * N * f);
    g->ln1_rstd = (float *)photon__cu_carve(base, &u, L * N * f);
    g->qkv = (float *)photon__cu_carve(base, &u, L * N * 3 * C * f);
    g->atty = (float *)photon__cu_carve(base, &u, L * N * C * f);
    g->att_lse = (float *)photon__cu_carve(base, &u, L * N * NH * f);
    g->residual2 = (float *)photon__cu_carve(base, &u, L * N * C * f);
    g->ln2 = (float *)photon__cu_carve(base, &u, L * N * C * f);
    g->ln2_mean = (float *)photon__cu_carve(base, &u, L * N * f);
    g->ln2_rstd = (float *)photon__cu_carve(base, &u, L * N * f);
    g->fch = (float *)photon__cu_carve(base, &u, L * N * 4 * C * f);
    g->fch_gelu = (float *)photon__cu_carve(base, &u, L * N * 4 * C * f);
    g->residual3 = (float *)photon__cu_carve(base, &u, L * N * C * f);
    g->lnf = (float *)photon__cu_carve(base, &u, N * C * f);
    g->lnf_mean = (float *)photon__cu_carve(base, &u, N * f);
    g->lnf_rstd = (float *)photon__cu_carve(base, &u, N * f);
    g->logits = (float *)photon__cu_carve(base, &u, N * V * f);
    g->losses = (float *)photon__cu_carve(base, &u, N * f);
    /* scratch, reused by every layer */
    g->proj = (float *)photon__cu_carve(base, &u, N * C * f);
    g->dres = (float *)photon__cu_carve(base, &u, N * C * f);
    g->dln = (float *)photon__cu_carve(base, &u, N * C * f);
    g->dqkv = (float *)photon__cu_carve(base, &u, N * 3 * C * f);
    g->datty = (float *)photon__cu_carve(base, &u, N * C * f);
    g->dfch = (float *)photon__cu_carve(base, &u, N * 4 * C * f);
    g->att_D = (float *)photon__cu_carve(base, &u, N * NH * f);
    g->partial = (float *)photon__cu_carve(base, &u, 2 * chunks * 4 * C * f);
    g->norm_partial = (double *)photon__cu_carve(base, &u, norm_blocks * sizeof(double));
    g->norm = (double *)photon__cu_carve(base, &u, sizeof(double));
    /* the batch */
    g->inputs = (int *)photon__cu_carve(base, &u, N * sizeof(int));
    g->targets = (int *)photon__cu_carve(base, &u, N * sizeof(int));
    g->token_ids = (int *)photon__cu_carve(base, &u, N * sizeof(int));
    g->token_start = (int *)photon__cu_carve(base, &u, (N + 1) * sizeof(int));
    g->token_positions = (int *)photon__cu_carve(base, &u, N * sizeof(int));
    return u;
}

/* Groups the batch's positions by token (a counting sort, stable), so the
   embedding gradient sums each token's rows in position order. */
static void photon__cu_group_tokens(photon_cuda *g, const int *inputs, int N) {
    int V = g->config.vocab_size, u = 0;
    memset(g->host_count, 0, (size_t)V * sizeof(int));
    for (int n = 0; n < N; n++) g->host_count[inputs[n]]++;
    g->host_start[0] = 0;
    for (int v = 0; v < V; v++)
        if (g->host_count[v]) {
            g->host_ids[u] = v;
            g->host_start[u + 1] = g->host_start[u] + g->host_count[v];
            g->host_count[v] = g->host_start[u]; /* now: the next free slot of token v */
            u++;
        }
    for (int n = 0; n < N; n++) g->host_positions[g->host_count[inputs[n]]++] = n;
    g->num_distinct = u;
}

static photon_result photon__cu_check_tokens(const int *tokens, size_t n, int vocab, const char *what,
                                               photon_error *err) {
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= vocab)
            return photon__cu_fail(err, PHOTON_ERR_ARGUMENT,
                                     "%s token %d at index %zu is outside the vocabulary (0 to %d)", what, tokens[i], i,
                                     vocab - 1);
    return PHOTON_OK;
}

/* Copies the batch to the GPU after the same checks as photon_forward. */
static photon_result photon__cu_batch(photon_cuda *g, const int *inputs, const int *targets, int B, int T,
                                        photon_error *err) {
    size_t N = (size_t)B * T;
    photon_result r;
    if (B < 1 || T < 1 || T > g->config.n_ctx)
        return photon__cu_fail(err, PHOTON_ERR_ARGUMENT, "batch %d x sequence %d: both must be positive and the "
                                 "sequence at most the context length %d", B, T, g->config.n_ctx);
    if (B > g->max_B || T > g->max_T)
        return photon__cu_fail(err, PHOTON_ERR_ARGUMENT, "batch %d x sequence %d is larger than the %d x %d the GPU "
                                 "model was created for", B, T, g->max_B, g->max_T);
    if ((r = photon__cu_check_tokens(inputs, N, g->config.vocab_size, "input", err)) != PHOTON_OK) return r;
    if (targets && (r = photon__cu_check_tokens(targets, N, g->config.vocab_size, "target", err)) != PHOTON_OK)
        return r;
    photon__cu_group_tokens(g, inputs, (int)N);
    photon__cu_status(g, cudaMemcpyAsync(g->inputs, inputs, N * sizeof(int), cudaMemcpyHostToDevice, g->stream),
                        "cudaMemcpyAsync (inputs)");
    if (targets)
        photon__cu_status(g, cudaMemcpyAsync(g->targets, targets, N * sizeof(int), cudaMemcpyHostToDevice, g->stream),
                            "cudaMemcpyAsync (targets)");
    photon__cu_status(g, cudaMemcpyAsync(g->token_ids, g->host_ids, (size_t)g->num_distinct * sizeof(int),
                                           cudaMemcpyHostToDevice, g->stream), "cudaMemcpyAsync (token ids)");
    photon__cu_status(g, cudaMemcpyAsync(g->token_start, g->host_start, ((size_t)g->num_distinct + 1) * sizeof(int),
                                           cudaMemcpyHostToDevice, g->stream), "cudaMemcpyAsync (token starts)");
    photon__cu_status(g, cudaMemcpyAsync(g->token_positions, g->host_positions, N * sizeof(int),
                                           cudaMemcpyHostToDevice, g->stream), "cudaMemcpyAsync (token positions)");
    g->B = B;
    g->T = T;
    return PHOTON_OK;
}

/* The forward pass over the batch already on the GPU. With targets the
   losses are computed; with grad (training) the logits are then replaced by
   the gradient of the mean loss. */
static void photon__cu_forward_pass(photon_cuda *g, int targets, int grad) {
    const photon_config *c = &g->config;
    int B = g->B, T = g->T, C = c->n_embd, L = c->n_layer, NH = c->n_head, V = c->vocab_size;
    int N = B * T, rows = photon__cu_blocks((size_t)N, 8);
    size_t NC = (size_t)N * C;
    PHOTON__LAUNCH(g, photon__cu_encoder_forward, photon__cu_blocks(NC, 256), 256, g->encoded, g->inputs, g->params,
                   photon__cu_wpe(g->params, c), (size_t)N, T, C);
    /* ln_1 of the first block; every later LayerNorm is fused with the
       residual add before it */
    {
        photon__cu_block w = photon__cu_block_at(g->params, c, 0);
        PHOTON__LAUNCH(g, photon__cu_layernorm_forward, rows, 256, g->ln1, g->ln1_mean, g->ln1_rstd, g->encoded, w.ln1w,
                       w.ln1b, N, C);
    }
    for (int l = 0; l < L; l++) {
        photon__cu_block w = photon__cu_block_at(g->params, c, l);
        const float *residual = l == 0 ? g->encoded : g->residual3 + (size_t)(l - 1) * NC;
        float *ln1 = g->ln1 + l * NC, *qkv = g->qkv + l * NC * 3, *atty = g->atty + l * NC;
        float *lse = g->att_lse + (size_t)l * N * NH, *residual2 = g->residual2 + l * NC, *ln2 = g->ln2 + l * NC;
        float *fch = g->fch + l * NC * 4, *fch_gelu = g->fch_gelu + l * NC * 4, *residual3 = g->residual3 + l * NC;
        /* attention sub-block: x = x + proj(attn(ln_1(x))), then ln_2 */
        photon__cu_matmul_forward(g, qkv, ln1, w.qkvw, N, C, 3 * C);
        PHOTON__LAUNCH(g, photon__cu_bias_add, photon__cu_blocks(NC * 3, 256), 256, qkv, w.qkvb, (size_t)N, 3 * C);
        photon__cu_attention_forward_launch(g, atty, lse, qkv, B, T, C, NH);
        photon__cu_matmul_forward(g, g->proj, atty, w.attprojw, N, C, C);
        PHOTON__LAUNCH(g, photon__cu_residual_layernorm_forward, rows, 256, residual2, ln2, g->ln2_mean + (size_t)l * N,
                       g->ln2_rstd + (size_t)l * N, residual, g->proj, w.attprojb, w.ln2w, w.ln2b, N, C);
        /* MLP sub-block: x = x + proj(gelu(fc(ln_2(x)))), then the next ln_1 (or ln_f) */
        photon__cu_matmul_forward(g, fch, ln2, w.fcw, N, C, 4 * C);
        PHOTON__LAUNCH(g, photon__cu_bias_gelu_forward, photon__cu_blocks(NC * 4, 256), 256, fch, fch_gelu, w.fcb, (size_t)N,
                       4 * C);
        photon__cu_matmul_forward(g, g->proj, fch_gelu, w.fcprojw, N, 4 * C, C);
        if (l + 1 < L) {
            photon__cu_block next = photon__cu_block_at(g->params, c, l + 1);
            PHOTON__LAUNCH(g, photon__cu_residual_layernorm_forward, rows, 256, residual3, g->ln1 + (l + 1) * NC,
                           g->ln1_mean + (size_t)(l + 1) * N, g->ln1_rstd + (size_t)(l + 1) * N, residual2, g->proj,
                           w.fcprojb, next.ln1w, next.ln1b, N, C);
        } else {
            float *lnfw = photon__cu_lnf(g->params, c);
            PHOTON__LAUNCH(g, photon__cu_residual_layernorm_forward, rows, 256, residual3, g->lnf, g->lnf_mean,
                           g->lnf_rstd, residual2, g->proj, w.fcprojb, lnfw, lnfw + C, N, C);
        }
    }
    /* output head, tied to the token embedding: logits = lnf wte^T */
    photon__cu_gemm(g, N, V, C, g->lnf, C, 0, g->params, C, 1, g->logits, 0.0f);
    if (targets)
        PHOTON__LAUNCH(g, photon__cu_classifier, (unsigned)N, 512, g->logits, g->losses, g->targets, V, 1.0f / (float)N,
                       grad);
}

/* The backward pass, after a forward pass with grad: the logits already
   hold their gradient. Adds every parameter's gradient to g->grads. */
static void photon__cu_backward_pass(photon_cuda *g) {
    const photon_config *c = &g->config;
    int B = g->B, T = g->T, C = c->n_embd, L = c->n_layer, NH = c->n_head, V = c->vocab_size, N = B * T;
    size_t NC = (size_t)N * C;
    float *lnfw = photon__cu_lnf(g->params, c), *dlnfw = photon__cu_lnf(g->grads, c);
    /* head: dlnf = dlogits wte, dwte += dlogits^T lnf */
    photon__cu_gemm(g, N, C, V, g->logits, V, 0, g->params, C, 0, g->dln, 0.0f);
    photon__cu_gemm(g, V, C, N, g->logits, V, 1, g->lnf, C, 0, g->grads, 1.0f);
    /* ln_f: dres becomes the gradient of the last block's output */
    photon__cu_layernorm_backward(g, g->dres, dlnfw, dlnfw + C, g->dln, g->residual3 + (size_t)(L - 1) * NC, lnfw,
                               g->lnf_mean, g->lnf_rstd, N, C, 0);
    for (int l = L - 1; l >= 0; l--) {
        photon__cu_block w = photon__cu_block_at(g->params, c, l), dw = photon__cu_block_at(g->grads, c, l);
        const float *residual = l == 0 ? g->encoded : g->residual3 + (size_t)(l - 1) * NC;
        size_t o = l * NC, o1 = (size_t)l * N;
        /* MLP sub-block, in reverse; dres passes through the residual unchanged */
        photon__cu_matmul_backward(g, g->dfch, dw.fcprojw, dw.fcprojb, g->dres, g->fch_gelu + 4 * o, w.fcprojw, N, 4 * C, C);
        PHOTON__LAUNCH(g, photon__cu_gelu_backward, photon__cu_blocks(NC * 4, 256), 256, g->dfch, g->fch + 4 * o, NC * 4);
        photon__cu_matmul_backward(g, g->dln, dw.fcw, dw.fcb, g->dfch, g->ln2 + o, w.fcw, N, C, 4 * C);
        photon__cu_layernorm_backward(g, g->dres, dw.ln2w, dw.ln2b, g->dln, g->residual2 + o, w.ln2w, g->ln2_mean + o1,
                                   g->ln2_rstd + o1, N, C, 1);
        /* attention sub-block, in reverse */
        photon__cu_matmul_backward(g, g->datty, dw.attprojw, dw.attprojb, g->dres, g->atty + o, w.attprojw, N, C, C);
        photon__cu_attention_backward_launch(g, g->dqkv, g->att_D, g->datty, g->qkv + 3 * o, g->atty + o,
                                          g->att_lse + o1 * NH, B, T, C, NH);
        photon__cu_matmul_backward(g, g->dln, dw.qkvw, dw.qkvb, g->dqkv, g->ln1 + o, w.qkvw, N, C, 3 * C);
        photon__cu_layernorm_backward(g, g->dres, dw.ln1w, dw.ln1b, g->dln, residual, w.ln1w, g->ln1_mean + o1,
                                   g->ln1_rstd + o1, N, C, 1);
    }
    /* embeddings: dres is now the gradient of the encoder's output */
    PHOTON__LAUNCH(g, photon__cu_encoder_backward_wpe, photon__cu_blocks((size_t)T * C, 256), 256,
                   photon__cu_wpe(g->grads, c), g->dres, B, T, C);
    PHOTON__LAUNCH(g, photon__cu_encoder_backward_wte, (unsigned)g->num_distinct, 256, g->grads, g->dres, g->token_ids,
                   g->token_start, g->token_positions, C);
}

/* The global gradient norm, summed in double in fixed blocks and order. */
static photon_result photon__cu_grad_norm(photon_cuda *g, double *norm, photon_error *err) {
    unsigned blocks = photon__cu_blocks(g->num_params, PHOTON__CU_NORM_BLOCK);
    double sumsq = 0.0;
    photon_result r;
    PHOTON__LAUNCH(g, photon__cu_sumsq_partial, blocks, 256, g->norm_partial, g->grads, g->num_params);
    PHOTON__LAUNCH(g, photon__cu_sumsq_finish, 1, 32, g->norm, g->norm_partial, (int)blocks);
    photon__cu_status(g, cudaMemcpyAsync(&sumsq, g->norm, sizeof(double), cudaMemcpyDeviceToHost, g->stream),
                        "cudaMemcpyAsync (gradient norm)");
    if ((r = photon__cu_check(g, "gradient norm", err)) != PHOTON_OK) return r;
    *norm = sqrt(sumsq);
    return PHOTON_OK;
}

/* Copies the losses back and returns their mean, summed in double in order
   as photon_forward does. */
static photon_result photon__cu_mean_loss(photon_cuda *g, float *losses, float *loss, const char *stage,
                                            photon_error *err) {
    size_t N = (size_t)g->B * g->T;
    double sum = 0.0;
    photon_result r;
    photon__cu_status(g, cudaMemcpyAsync(g->host_losses, g->losses, N * sizeof(float), cudaMemcpyDeviceToHost,
                                           g->stream), "cudaMemcpyAsync (losses)");
    if ((r = photon__cu_check(g, stage, err)) != PHOTON_OK) return r;
    for (size_t i = 0; i < N; i++) sum += g->host_losses[i];
    if (losses) memcpy(losses, g->host_losses, N * sizeof(float));
    if (loss) *loss = (float)(sum / (double)N);
    return PHOTON_OK;
}

/* ======================================================================= */
/* The public interface                                                    */
/* ======================================================================= */

PHOTONDEF int photon_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* clear it: no driver or no device is not an error here */
        return 0;
    }
    return n;
}

PHOTONDEF const char *photon_cuda_device_name(const photon_cuda *g) { return g->name; }

PHOTONDEF size_t photon_cuda_memory(const photon_cuda *g) {
    photon_cuda counting = *g; /* the layout sets pointers: count on a copy */
    return photon__cu_layout(&counting, NULL);
}

PHOTONDEF void photon_cuda_free(photon_cuda *g) {
    if (!g) return;
    if (g->arena) cudaFree(g->arena);
    if (g->blas) cublasDestroy(g->blas);
    if (g->stream) cudaStreamDestroy(g->stream);
    free(g->tensors);
    free(g->host_count);
    free(g->host_ids);
    free(g->host_start);
    free(g->host_positions);
    free(g->host_losses);
    free(g);
}

static photon_result photon__cu_setup(photon_cuda *g, int device, photon_error *err) {
    cudaDeviceProp prop;
    cudaError_t e;
    cublasStatus_t s;
    size_t bytes = photon__cu_layout(g, NULL), N = (size_t)g->max_B * g->max_T;
    int count = photon_cuda_device_count();
    if (device < 0 || device >= count)
        return photon__cu_fail(err, PHOTON_ERR_DEVICE, "GPU %d requested, but %d CUDA device%s found", device, count,
                                 count == 1 ? " is" : "s are");
    if ((e = cudaSetDevice(device)) != cudaSuccess || (e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess)
        return photon__cu_fail(err, PHOTON_ERR_DEVICE, "GPU %d: %s", device, cudaGetErrorString(e));
    snprintf(g->name, sizeof g->name, "%s", prop.name);
    if ((e = cudaStreamCreate(&g->stream)) != cudaSuccess)
        return photon__cu_fail(err, PHOTON_ERR_DEVICE, "GPU %s: cudaStreamCreate failed: %s", g->name,
                                 cudaGetErrorString(e));
    if ((s = cublasCreate(&g->blas)) != CUBLAS_STATUS_SUCCESS || (s = cublasSetStream(g->blas, g->stream)) != CUBLAS_STATUS_SUCCESS)
        return photon__cu_fail(err, PHOTON_ERR_DEVICE, "GPU %s: cuBLAS initialisation failed: %s", g->name,
                                 cublasGetStatusString(s));
    if ((e = cudaMalloc(&g->arena, bytes)) != cudaSuccess) {
        g->arena = NULL;
        cudaGetLastError(); /* handled here: the next check must not see it */
        return photon__cu_fail(err, e == cudaErrorMemoryAllocation ? PHOTON_ERR_MEMORY : PHOTON_ERR_DEVICE,
                                 "GPU %s: cannot allocate %.2f GiB for the model, its optimizer and batch %d x %d: %s",
                                 g->name, bytes / 1073741824.0, g->max_B, g->max_T, cudaGetErrorString(e));
    }
    photon__cu_layout(g, (char *)g->arena);
    g->host_count = (int *)calloc((size_t)g->config.vocab_size, sizeof(int));
    g->host_ids = (int *)calloc(N, sizeof(int));
    g->host_start = (int *)calloc(N + 1, sizeof(int));
    g->host_positions = (int *)calloc(N, sizeof(int));
    g->host_losses = (float *)calloc(N, sizeof(float));
    if (!g->host_count || !g->host_ids || !g->host_start || !g->host_positions || !g->host_losses)
        return photon__cu_fail(err, PHOTON_ERR_MEMORY, "cannot allocate the host side of the GPU model");
    return PHOTON_OK;
}

PHOTONDEF photon_result photon_cuda_create(photon_cuda **out, const photon_model *model, int max_B, int max_T,
                                           int device, photon_cuda_precision precision, photon_error *err) {
    photon_cuda *g;
    photon_result r;
    int hs = model->config.n_embd / model->config.n_head;
    *out = NULL;
    if (max_B < 1 || max_T < 1 || max_T > model->config.n_ctx)
        return photon__cu_fail(err, PHOTON_ERR_ARGUMENT, "batch %d x sequence %d: both must be positive and the "
                                 "sequence at most the context length %d", max_B, max_T, model->config.n_ctx);
    if (!photon__cu_attention_hs(hs))
        return photon__cu_fail(err, PHOTON_ERR_ARGUMENT, "head size %d (width %d / %d heads): the GPU attention "
                                 "kernels take head sizes up to 128", hs, model->config.n_embd, model->config.n_head);
    /* CUDA grids are at most 65535 blocks high: the column sums take 32 rows
       per block row, the attention one (batch row, head) pair */
    if ((size_t)max_B * max_T > (size_t)65535 * PHOTON__CU_COLSUM_ROWS || (size_t)max_B * model->config.n_head > 65535)
        return photon__cu_fail(err, PHOTON_ERR_ARGUMENT, "batch %d x sequence %d with %d heads is more than one GPU "
                               "step takes (at most %d positions and 65535 rows x heads)", max_B, max_T,
                               model->config.n_head, 65535 * PHOTON__CU_COLSUM_ROWS);
    g = (photon_cuda *)calloc(1, sizeof *g);
    if (!g) return photon__cu_fail(err, PHOTON_ERR_MEMORY, "cannot allocate a GPU model");
    g->config = model->config;
    g->num_params = model->num_params;
    g->num_tensors = model->num_tensors;
    g->max_B = max_B;
    g->max_T = max_T;
    g->precision = precision;
    g->compute = precision == PHOTON_CUDA_FP32   ? CUBLAS_COMPUTE_32F
                 : precision == PHOTON_CUDA_BF16 ? CUBLAS_COMPUTE_32F_FAST_16BF
                                                 : CUBLAS_COMPUTE_32F_FAST_TF32;
    g->tensors = (photon_tensor_info *)malloc((size_t)model->num_tensors * sizeof(photon_tensor_info));
    if (!g->tensors) {
        free(g);
        return photon__cu_fail(err, PHOTON_ERR_MEMORY, "cannot allocate a GPU model");
    }
    memcpy(g->tensors, model->tensors, (size_t)model->num_tensors * sizeof(photon_tensor_info));
    if ((r = photon__cu_setup(g, device, err)) != PHOTON_OK ||
        (r = photon_cuda_upload(g, model, NULL, err)) != PHOTON_OK) {
        photon_cuda_free(g);
        return r;
    }
    *out = g;
    return PHOTON_OK;
}

static photon_result photon__cu_same_model(const photon_cuda *g, const photon_model *model, photon_error *err) {
    const photon_config *a = &g->config, *b = &model->config;
    if (a->vocab_size != b->vocab_size || a->n_ctx != b->n_ctx || a->n_layer != b->n_layer ||
        a->n_head != b->n_head || a->n_embd != b->n_embd)
        return photon__cu_fail(err, PHOTON_ERR_MISMATCH, "the host model's shape differs from the GPU model's");
    return PHOTON_OK;
}

/* Copies the parameters, and the AdamW moments if state is given, between
   host and GPU (to_gpu: host -> GPU). A fresh GPU model without a state
   gets zero moments. */
static photon_result photon__cu_transfer(photon_cuda *g, photon_model *model, photon_adamw_state *state, int to_gpu,
                                         photon_error *err) {
    size_t bytes = g->num_params * sizeof(float);
    float *host[3], *dev[3];
    const char *names[3] = {"cudaMemcpyAsync (parameters)", "cudaMemcpyAsync (AdamW m)", "cudaMemcpyAsync (AdamW v)"};
    int n = state ? 3 : 1;
    photon_result r = photon__cu_same_model(g, model, err);
    if (r != PHOTON_OK) return r;
    if (state && state->n != g->num_params)
        return photon__cu_fail(err, PHOTON_ERR_MISMATCH, "optimizer state holds %.0f values, the model %.0f "
                               "parameters", (double)state->n, (double)g->num_params);
    host[0] = model->params, dev[0] = g->params;
    if (state) host[1] = state->m, dev[1] = g->m, host[2] = state->v, dev[2] = g->v;
    for (int k = 0; k < n; k++)
        photon__cu_status(g, cudaMemcpyAsync(to_gpu ? (void *)dev[k] : (void *)host[k], to_gpu ? host[k] : dev[k], bytes,
                                             to_gpu ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost, g->stream),
                          names[k]);
    if (to_gpu && !state) {
        photon__cu_status(g, cudaMemsetAsync(g->m, 0, bytes, g->stream), "cudaMemsetAsync (AdamW m)");
        photon__cu_status(g, cudaMemsetAsync(g->v, 0, bytes, g->stream), "cudaMemsetAsync (AdamW v)");
    }
    return photon__cu_check(g, to_gpu ? "upload" : "download", err);
}

PHOTONDEF photon_result photon_cuda_upload(photon_cuda *g, const photon_model *model, const photon_adamw_state *state,
                                           photon_error *err) {
    /* only read: the casts let one function serve both directions */
    return photon__cu_transfer(g, (photon_model *)model, (photon_adamw_state *)state, 1, err);
}

PHOTONDEF photon_result photon_cuda_download(photon_cuda *g, photon_model *model, photon_adamw_state *state,
                                             photon_error *err) {
    return photon__cu_transfer(g, model, state, 0, err);
}

PHOTONDEF photon_result photon_cuda_forward(photon_cuda *g, const int *inputs, const int *targets, int B, int T,
                                            float *losses, float *loss, photon_error *err) {
    photon_result r = photon__cu_batch(g, inputs, targets, B, T, err);
    if (r != PHOTON_OK) return r;
    photon__cu_forward_pass(g, targets != NULL, 0);
    if (!targets) return photon__cu_check(g, "forward pass", err);
    return photon__cu_mean_loss(g, losses, loss, "forward pass", err);
}

/* One AdamW update of every tensor, as photon_adamw_update. */
static void photon__cu_adamw(photon_cuda *g, photon_adamw_state *s, const photon_adamw_config *hp, float lr,
                               double grad_norm) {
    float clip = 1.0f, bc1, bc2;
    if (hp->grad_clip > 0.0f && grad_norm > hp->grad_clip) clip = (float)(hp->grad_clip / (grad_norm + 1e-6));
    s->t++;
    bc1 = (float)(1.0 - pow(hp->beta1, (double)s->t));
    bc2 = (float)(1.0 - pow(hp->beta2, (double)s->t));
    for (int k = 0; k < g->num_tensors; k++) {
        const photon_tensor_info *t = &g->tensors[k];
        size_t o = t->offset;
        PHOTON__LAUNCH(g, photon__cu_adamw, photon__cu_blocks(t->size, 256), 256, g->params + o, g->grads + o, g->m + o,
                       g->v + o, t->size, clip, hp->beta1, hp->beta2, hp->eps, bc1, bc2, lr,
                       t->decay ? hp->weight_decay : 0.0f);
    }
}

PHOTONDEF photon_result photon_cuda_train_step(photon_cuda *g, photon_model *model, photon_adamw_state *state,
                                               const photon_adamw_config *hp, const photon_schedule *schedule,
                                               const int *inputs, const int *targets, int B, int T,
                                               photon_step_stats *stats, photon_error *err) {
    photon_step_stats st;
    photon_result r;
    if (state->n != g->num_params)
        return photon__cu_fail(err, PHOTON_ERR_ARGUMENT, "optimizer state holds %.0f values, the model %.0f "
                                 "parameters", (double)state->n, (double)g->num_params);
    if (!targets) return photon__cu_fail(err, PHOTON_ERR_ARGUMENT, "a training step needs targets");
    if ((r = photon__cu_batch(g, inputs, targets, B, T, err)) != PHOTON_OK) return r;
    photon__cu_status(g, cudaMemsetAsync(g->grads, 0, g->num_params * sizeof(float), g->stream),
                        "cudaMemsetAsync (gradients)");
    photon__cu_forward_pass(g, 1, 1);
    if ((r = photon__cu_mean_loss(g, NULL, &st.loss, "forward pass", err)) != PHOTON_OK) return r;
    if (!(st.loss - st.loss == 0.0f))
        return photon__cu_fail(err, PHOTON_ERR_NUMERIC, "loss is %f at global step %llu: training diverged", st.loss,
                                 (unsigned long long)model->step);
    photon__cu_backward_pass(g);
    if ((r = photon__cu_grad_norm(g, &st.grad_norm, err)) != PHOTON_OK) return r;
    if (!(st.grad_norm - st.grad_norm == 0.0))
        return photon__cu_fail(err, PHOTON_ERR_NUMERIC, "gradient norm is %f at global step %llu: training diverged",
                                 st.grad_norm, (unsigned long long)model->step);
    st.lr = photon_schedule_lr(schedule, model->step);
    photon__cu_adamw(g, state, hp, st.lr, st.grad_norm);
    /* the update's launches are checked at the next synchronisation; a
       failure there is reported by the next step or the download */
    model->step++;
    model->tokens_seen += (uint64_t)B * (uint64_t)T;
    if (stats) *stats = st;
    return PHOTON_OK;
}

static photon_result photon__cu_eval_forward(void *ctx, const int *inputs, const int *targets, int B, int T,
                                               float *losses, photon_error *err) {
    return photon_cuda_forward((photon_cuda *)ctx, inputs, targets, B, T, losses, NULL, err);
}

PHOTONDEF photon_result photon_cuda_evaluate(photon_cuda *g, const photon_dataset *ds, int B, int T,
                                             uint64_t max_tokens, photon_eval_result *result, photon_error *err) {
    if (B > g->max_B || T > g->max_T)
        return photon__cu_fail(err, PHOTON_ERR_ARGUMENT, "batch %d x sequence %d is larger than the %d x %d the GPU "
                                 "model was created for", B, T, g->max_B, g->max_T);
    return photon_evaluate_with(photon__cu_eval_forward, g, &g->config, ds, B, T, max_tokens, result, err);
}
