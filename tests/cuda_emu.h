/* cuda_emu.h - runs photon_cuda.cu's kernels on the CPU, for tests on
   machines without a GPU (C++ only; photon_cuda.cu includes it when
   PHOTON_CUDA_EMULATE is defined).

   It stands in for the parts of the CUDA runtime and cuBLAS that
   photon_cuda.cu uses:
     - every GPU thread is a fiber with its own stack (started with
       makecontext, then switched with _setjmp/_longjmp, which skip the
       signal-mask system call of swapcontext); a block's fibers run one at a
       time and switch only at __syncthreads (all live threads of the block),
       __syncwarp and the warp shuffles (all 32 lanes of the warp). A barrier that can never be reached (a shuffle in
       divergent code, a __syncthreads some threads skip while others wait)
       stops the program with "cuda_emu: deadlock" instead of hanging;
     - __shared__ variables are static: the blocks of a launch run one after
       another, and each block writes its shared memory before reading it;
     - device memory is host memory, filled with NaN bytes when allocated so
       that a kernel which leaves part of its output unwritten shows NaN;
     - cublasGemmEx is a plain column-major product that rounds its operands
       to TF32 or BF16 as the compute type says, accumulating in FP32.
   What it cannot show: races between threads that a real GPU runs at the
   same time, speed, and the real cuBLAS. */
#ifndef PHOTON_CUDA_EMU_H
#define PHOTON_CUDA_EMU_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <setjmp.h>
#include <string.h>
#include <ucontext.h>

#include <functional>

/* ---------------------------------------------------------------- language */

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }

/* ---------------------------------------------------------------- fibers */

#define PHOTON_EMU_MAX_THREADS 1024
#define PHOTON_EMU_STACK (64 * 1024)

enum { PHOTON_EMU_RUNNABLE, PHOTON_EMU_WAITING, PHOTON_EMU_DONE };

struct photon_emu_thread {
    ucontext_t start; /* where it begins */
    jmp_buf resume;   /* where it waits */
    dim3 index;
    int state, started, shuffles;
};

struct photon_emu_group { /* a barrier: the block's, or one warp's */
    int arrived, live;
};

static struct photon_emu_state {
    photon_emu_thread threads[PHOTON_EMU_MAX_THREADS];
    char *stacks;
    ucontext_t scheduler_start;
    jmp_buf scheduler;
    int count, current;
    dim3 grid, block, block_index;
    photon_emu_group block_barrier, warp_barrier[PHOTON_EMU_MAX_THREADS / 32];
    unsigned char slots[2][PHOTON_EMU_MAX_THREADS][8]; /* shuffle exchange, two rounds, one per thread */
    const std::function<void()> *body;
} photon_emu;

#define threadIdx (photon_emu.threads[photon_emu.current].index)
#define blockIdx (photon_emu.block_index)
#define blockDim (photon_emu.block)
#define gridDim (photon_emu.grid)

/* Waits at a barrier until every live member has arrived. */
static inline void photon_emu_wait(photon_emu_group *g, int first, int count) {
    photon_emu_thread *self = &photon_emu.threads[photon_emu.current];
    if (++g->arrived == g->live) { /* the last to arrive releases the others */
        g->arrived = 0;
        for (int i = first; i < first + count; i++)
            if (photon_emu.threads[i].state == PHOTON_EMU_WAITING) photon_emu.threads[i].state = PHOTON_EMU_RUNNABLE;
        return;
    }
    self->state = PHOTON_EMU_WAITING;
    if (!_setjmp(self->resume)) _longjmp(photon_emu.scheduler, 1);
}

static inline void __syncthreads(void) { photon_emu_wait(&photon_emu.block_barrier, 0, photon_emu.count); }

static inline void photon_emu_warp_wait(void) {
    int warp = photon_emu.current / 32;
    photon_emu_wait(&photon_emu.warp_barrier[warp], warp * 32, 32);
}

static inline void __syncwarp(unsigned mask = 0xffffffffu) {
    (void)mask;
    photon_emu_warp_wait();
}

/* Shuffles alternate between two sets of slots: a lane can only write the
   set again after the next barrier, which every lane reaches only after it
   has read this one. */
template <class T> static inline T __shfl_sync(unsigned mask, T value, int src_lane) {
    int self = photon_emu.current, src = (self & ~31) | (src_lane & 31);
    int round = photon_emu.threads[self].shuffles++ & 1;
    T out;
    (void)mask;
    memcpy(photon_emu.slots[round][self], &value, sizeof value);
    photon_emu_warp_wait(); /* every lane has written its value */
    memcpy(&out, photon_emu.slots[round][src], sizeof out);
    return out;
}

template <class T> static inline T __shfl_xor_sync(unsigned mask, T value, int lane_mask) {
    return __shfl_sync(mask, value, (photon_emu.current & 31) ^ lane_mask);
}

static inline void photon_emu_entry(void) {
    (*photon_emu.body)();
    photon_emu_thread *self = &photon_emu.threads[photon_emu.current];
    self->state = PHOTON_EMU_DONE;
    /* a thread that has left no longer counts at the barriers */
    int warp = photon_emu.current / 32;
    photon_emu_group *groups[2] = {&photon_emu.block_barrier, &photon_emu.warp_barrier[warp]};
    int first[2] = {0, warp * 32}, count[2] = {photon_emu.count, 32};
    for (int k = 0; k < 2; k++) {
        photon_emu_group *g = groups[k];
        g->live--;
        if (g->live > 0 && g->arrived == g->live) {
            g->arrived = 0;
            for (int i = first[k]; i < first[k] + count[k]; i++)
                if (photon_emu.threads[i].state == PHOTON_EMU_WAITING) photon_emu.threads[i].state = PHOTON_EMU_RUNNABLE;
        }
    }
    _longjmp(photon_emu.scheduler, 1); /* never returns */
}

/* Runs thread i until it waits at a barrier or ends. */
static __attribute__((noinline)) void photon_emu_switch_to(int i) {
    photon_emu_thread *t = &photon_emu.threads[i];
    photon_emu.current = i;
    if (_setjmp(photon_emu.scheduler)) return; /* back from the thread */
    if (!t->started) {
        t->started = 1;
        swapcontext(&photon_emu.scheduler_start, &t->start);
    }
    _longjmp(t->resume, 1);
}

static inline void photon_emu_run_block(void) {
    int n = photon_emu.count, done = 0;
    if (!photon_emu.stacks) {
        photon_emu.stacks = (char *)malloc((size_t)PHOTON_EMU_MAX_THREADS * PHOTON_EMU_STACK);
        if (!photon_emu.stacks) abort();
    }
    photon_emu.block_barrier.arrived = 0, photon_emu.block_barrier.live = n;
    for (int w = 0; w < (n + 31) / 32; w++) {
        photon_emu.warp_barrier[w].arrived = 0;
        photon_emu.warp_barrier[w].live = n - w * 32 < 32 ? n - w * 32 : 32;
    }
    for (int i = 0; i < n; i++) {
        photon_emu_thread *t = &photon_emu.threads[i];
        getcontext(&t->start);
        t->start.uc_stack.ss_sp = photon_emu.stacks + (size_t)i * PHOTON_EMU_STACK;
        t->start.uc_stack.ss_size = PHOTON_EMU_STACK;
        t->start.uc_link = NULL;
        makecontext(&t->start, photon_emu_entry, 0);
        t->started = 0;
        t->shuffles = 0;
        t->index = dim3((unsigned)(i % photon_emu.block.x), (unsigned)(i / photon_emu.block.x % photon_emu.block.y),
                        (unsigned)(i / (photon_emu.block.x * photon_emu.block.y)));
        t->state = PHOTON_EMU_RUNNABLE;
    }
    while (done < n) {
        int progressed = 0;
        done = 0;
        for (int i = 0; i < n; i++) {
            if (photon_emu.threads[i].state == PHOTON_EMU_RUNNABLE) {
                photon_emu_switch_to(i);
                progressed = 1;
            }
            done += photon_emu.threads[i].state == PHOTON_EMU_DONE;
        }
        if (!progressed && done < n) {
            fprintf(stderr, "cuda_emu: deadlock: %d of %d threads of block (%u,%u) wait at a barrier that the others "
                            "never reach\n", n - done, n, photon_emu.block_index.x, photon_emu.block_index.y);
            abort();
        }
    }
}

static inline void photon_emu_launch(dim3 grid, dim3 block, const std::function<void()> &body) {
    int n = (int)(block.x * block.y * block.z);
    if (n < 1 || n > PHOTON_EMU_MAX_THREADS || grid.x < 1 || grid.y < 1 || grid.z < 1) {
        fprintf(stderr, "cuda_emu: invalid launch of %u x %u x %u blocks of %d threads\n", grid.x, grid.y, grid.z, n);
        abort();
    }
    photon_emu.grid = grid, photon_emu.block = block, photon_emu.count = n, photon_emu.body = &body;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                photon_emu.block_index = dim3(x, y, z);
                photon_emu_run_block();
            }
}

#define PHOTON__LAUNCH(g, kernel, grid, block, ...)                                   \
    do {                                                                              \
        photon_emu_launch(dim3(grid), dim3(block), [&]() { kernel(__VA_ARGS__); });   \
        photon__cu_launched((g), cudaSuccess, #kernel);                             \
    } while (0)

/* ---------------------------------------------------------------- runtime */

typedef enum cudaError { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2 } cudaError_t;
typedef void *cudaStream_t;
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2, cudaMemcpyDeviceToDevice = 3 };

struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem;
    int multiProcessorCount, major, minor;
};

static const char *cudaGetErrorString(cudaError_t e) {
    return e == cudaSuccess ? "no error" : e == cudaErrorMemoryAllocation ? "out of memory" : "invalid argument";
}
static inline cudaError_t cudaGetDeviceCount(int *n) {
    *n = 1;
    return cudaSuccess;
}
static inline cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidValue; }
static inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int device) {
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "cuda_emu (CPU)");
    p->multiProcessorCount = 1;
    return device == 0 ? cudaSuccess : cudaErrorInvalidValue;
}
static inline cudaError_t cudaGetLastError(void) { return cudaSuccess; }
static inline cudaError_t cudaPeekAtLastError(void) { return cudaSuccess; }
static inline cudaError_t cudaStreamCreate(cudaStream_t *s) {
    *s = (cudaStream_t)&photon_emu;
    return cudaSuccess;
}
static inline cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
static inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
static inline cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
/* PHOTON_EMU_MEMORY_LIMIT (bytes) makes larger allocations fail, for tests
   of the out-of-memory path */
static inline cudaError_t cudaMalloc(void **p, size_t bytes) {
    const char *limit = getenv("PHOTON_EMU_MEMORY_LIMIT");
    if (limit && bytes > (size_t)strtoull(limit, NULL, 10)) return cudaErrorMemoryAllocation;
    *p = malloc(bytes ? bytes : 1);
    if (!*p) return cudaErrorMemoryAllocation;
    memset(*p, 0xff, bytes); /* NaN in every float */
    return cudaSuccess;
}
template <class T> static inline cudaError_t cudaMalloc(T **p, size_t bytes) { return cudaMalloc((void **)p, bytes); }
static inline cudaError_t cudaFree(void *p) {
    free(p);
    return cudaSuccess;
}
static inline cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind) {
    memcpy(dst, src, n);
    return cudaSuccess;
}
static inline cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind, cudaStream_t) {
    memcpy(dst, src, n);
    return cudaSuccess;
}
static inline cudaError_t cudaMemsetAsync(void *dst, int value, size_t n, cudaStream_t) {
    memset(dst, value, n);
    return cudaSuccess;
}

/* ---------------------------------------------------------------- cuBLAS */

typedef void *cublasHandle_t;
typedef enum { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_INVALID_VALUE = 7 } cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;
typedef enum { CUDA_R_32F = 0 } cudaDataType;
typedef enum {
    CUBLAS_COMPUTE_32F = 68,
    CUBLAS_COMPUTE_32F_FAST_16BF = 75,
    CUBLAS_COMPUTE_32F_FAST_TF32 = 77
} cublasComputeType_t;
typedef enum { CUBLAS_GEMM_DEFAULT = -1 } cublasGemmAlgo_t;

static const char *cublasGetStatusString(cublasStatus_t s) {
    return s == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS" : "CUBLAS_STATUS_INVALID_VALUE";
}
static inline cublasStatus_t cublasCreate(cublasHandle_t *h) {
    *h = (cublasHandle_t)&photon_emu;
    return CUBLAS_STATUS_SUCCESS;
}
static inline cublasStatus_t cublasDestroy(cublasHandle_t) { return CUBLAS_STATUS_SUCCESS; }
static inline cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }

/* x rounded to nearest (ties to even) with `bits` mantissa bits kept */
static inline float photon_emu_round(float x, int bits) {
    uint32_t u, drop = 23 - bits;
    memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) == 0x7f800000u) return x; /* Inf, NaN */
    u += ((1u << (drop - 1)) - 1) + ((u >> drop) & 1);
    u &= ~((1u << drop) - 1);
    memcpy(&x, &u, 4);
    return x;
}

/* C (m,n) = alpha op(A) op(B) + beta C, all column-major, as cuBLAS. */
static inline cublasStatus_t cublasGemmEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                   const void *alpha, const void *A, cudaDataType, int lda, const void *B,
                                   cudaDataType, int ldb, const void *beta, void *C, cudaDataType, int ldc,
                                   cublasComputeType_t compute, cublasGemmAlgo_t) {
    const float *a = (const float *)A, *b = (const float *)B;
    float *c = (float *)C, al = *(const float *)alpha, be = *(const float *)beta;
    int bits = compute == CUBLAS_COMPUTE_32F_FAST_TF32 ? 10 : compute == CUBLAS_COMPUTE_32F_FAST_16BF ? 7 : 23;
    if (m < 0 || n < 0 || k < 0 || lda < (ta ? k : m) || ldb < (tb ? n : k) || ldc < m)
        return CUBLAS_STATUS_INVALID_VALUE;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            float sum = 0.0f;
            for (int p = 0; p < k; p++) {
                float x = ta ? a[p + (size_t)i * lda] : a[i + (size_t)p * lda];
                float y = tb ? b[j + (size_t)p * ldb] : b[p + (size_t)j * ldb];
                if (bits < 23) x = photon_emu_round(x, bits), y = photon_emu_round(y, bits);
                sum += x * y;
            }
            float *out = &c[i + (size_t)j * ldc];
            *out = be == 0.0f ? al * sum : al * sum + be * *out; /* beta 0: C is not read, as in cuBLAS */
        }
    return CUBLAS_STATUS_SUCCESS;
}

#endif
