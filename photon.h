/* photon.h - federated pre-training of GPT-style language models, in one C header.

   USAGE
   -----
   In exactly one C or C++ file:

       #define PHOTON_IMPLEMENTATION
       #include "photon.h"

   Everywhere else include it without the define. The header needs libc and
   libm only. The byte-level BPE tokenizer is a second header, photon_bpe.h,
   that photon.h does not need: photon.h trains on bytes and llm.c token
   shards by itself, and on BPE text through a caller-supplied encoder (see
   >>data), which photon_bpe.h provides. Options, defined before the include
   that has PHOTON_IMPLEMENTATION:

       PHOTON_MALLOC(n), PHOTON_FREE(p)  your allocator (default malloc/free)
       PHOTON_ASSERT(x)                  internal invariants (default assert)
       PHOTONDEF                         linkage of the public functions
                                         (default extern; PHOTON_STATIC makes
                                         them static)
       PHOTON_NO_FSYNC                   skip fsync() before the atomic rename
       PHOTON_NO_THREADS                 run single-threaded (no pthreads)
       PHOTON_NO_SIMD                    portable C instead of AVX2/AVX-512 kernels

   On POSIX systems files are fsync()ed before they are renamed into place and
   heavy loops run on a pthread pool (link with -pthread where the libc needs
   it); a strict -std=c99 build must define _POSIX_C_SOURCE=200809L for these
   (otherwise photon runs single-threaded without fsync). Kernels use AVX2 or
   AVX-512 when the compiler targets them (-march=native), else portable C.

   WHAT IT DOES
   ------------
   Photon (Sani, Iacob et al., arXiv 2411.02908) pre-trains a language model
   across silos that never share data and talk rarely: each client trains its
   own copy for many local steps, then sends only the change of its weights
   (the delta, or pseudo-gradient), and an aggregator averages the deltas by
   tokens and applies an outer optimizer. This header holds every piece a
   client or an aggregator needs, in the order a round uses them:

     1. the model: GPT-2's decoder-only transformer (token and learned position
        embeddings, pre-LayerNorm blocks with causal multi-head attention and a
        4x tanh-GELU MLP, a final LayerNorm and an output head tied to the token
        embedding), as forward/backward pairs over one parameter buffer;
     2. the local optimizer: AdamW with decoupled weight decay, global
        gradient-norm clipping, and a warmup + cosine learning-rate schedule
        that runs on a global step clock stored in the checkpoint;
     3. data: llm.c token shards, plain text read as bytes (vocab 256) or
        through an encoder, served as batches of consecutive windows from a
        resumable position; a corpus dealt out to clients (IID or by source);
        evaluation in nats, perplexity and exact bits per byte; sampling;
     4. files: safetensors with every check the reference reader makes;
        checkpoints with Hugging Face GPT-2 tensor names (they load into
        transformers' GPT2LMHeadModel) and a client-state file (AdamW moments,
        data position) that never leaves the client;
     5. federation: deltas tied by SHA-256 to the checkpoint they start from;
        outer optimizers (FedAvg, DiLoCo's Nesterov, FedAdam, FedYogi) with
        their server state; the merge, which validates, weighs by tokens
        (or combines by a robust rule: median, trimmed mean, Multi-Krum,
        norm clipping, screening on held-out data), streams the deltas in
        chunks and writes an audit trail of what each client did;
     6. an APPENDIX of machinery the algorithm calls but does not depend on
        for its meaning: a deterministic thread pool, a blocked matrix
        product with AVX2/AVX-512 micro-kernels, vectorised exp/tanh, random
        numbers, atomic files, JSON, UTF-8 and SHA-256.

   The file formats are documented in docs/FORMAT.md, the algorithm with
   pointers into this file in docs/ALGORITHM.md. On an NVIDIA GPU the training
   step runs in photon_cuda.cu, a companion built with nvcc and cuBLAS; its
   interface is declared below (>>gpu) and writes the same files as the CPU.

   CONTENTS
   --------
   Each part's declarations and its implementation carry the same tag; search
   for it (e.g. ">>merge") to jump between them.

       >>errors       result codes, messages, memory
       >>params       the parameter buffer and its tensor table
       >>layers       each layer's forward, then its backward
       >>model        forward and backward over all layers
       >>adamw        schedule, gradient clipping, AdamW, one training step
       >>data         token shards, text, encoders, the loader, client splits
       >>eval         evaluation and sampling
       >>safetensors  reading (validated) and writing
       >>checkpoint   checkpoints and client state
       >>hf           Hugging Face GPT-2 folders: import and export
       >>delta        the pseudo-gradient as a file
       >>outer        outer optimizers and server state
       >>merge        one federated round on the aggregator
       >>gpu          the CUDA backend's interface (photon_cuda.cu)
       >>machinery    APPENDIX: >>threads >>gemm >>vmath >>random >>files
                      >>json >>utf8 >>sha256

   EXAMPLE: one client round, then the merge
   ------------------------------------------
       photon_model m; photon_dataset ds; photon_loader ld; photon_client_state cs;
       photon_error err; photon_delta_info info; photon_merge_result res; photon_merge_options mo;
       photon_adamw_config hp = {0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
       photon_schedule lr = {1e-3f, 10, 1000, 0.1f};
       const char *data[] = {"client-0.txt"}, *deltas[] = {"delta-0.safetensors"};
       int in[8 * 64], tg[8 * 64], s, resumed;
       float *base;
       photon_checkpoint_load(&m, "global.safetensors", &err);       // every call returns
       photon_dataset_load(&ds, data, 1, &err);                      // a photon_result:
       photon_loader_init(&ld, &ds, 8, 64, &err);                    // check each one
       photon_client_state_resume(&cs, &m, &ds, &ld, "state.safetensors", &resumed, &err);
       base = (float *)malloc(m.num_params * sizeof *base);
       memcpy(base, m.params, m.num_params * sizeof *base);
       for (s = 0; s < 100; s++) {                                   // local steps
           photon_loader_next(&ld, in, tg);
           photon_train_step(&m, &cs.adamw, &hp, &lr, in, tg, 8, 64, NULL, &err);
       }
       memset(&info, 0, sizeof info);
       photon_sha256_file("global.safetensors", info.base_sha256, &err);
       snprintf(info.client, sizeof info.client, "client-0");
       info.round = m.round + 1, info.local_steps = 100, info.batch = 8, info.seq = 64;
       info.tokens = 100 * 8 * 64;                                   // steps x batch x seq
       photon_delta_save(&m, base, &info, deltas[0], &err);          // ships
       photon_client_state_record(&cs, &m, &ds, &ld);
       photon_client_state_save(&cs, &m.config, "state.safetensors", &err);  // stays
       // the aggregator, with every client's delta:
       memset(&mo, 0, sizeof mo);
       photon_outer_defaults(&mo.outer, PHOTON_OUTER_FEDAVG);
       photon_merge("global.safetensors", deltas, 1, NULL, &mo, &res, &err);
       photon_merge_save(&res, "global-next.safetensors", &err);
       photon_merge_result_free(&res);

   `make test-example` cuts this program out of the header, builds it with
   photon.h alone and runs it on generated text (tests/test_example.sh).

   ERRORS
   ------
   The library never prints and never exits. Every function that can fail
   returns a photon_result and, when given a photon_error, fills it with a
   one-line message that names the file and the problem.

   DETERMINISM
   -----------
   The same seed, data and settings give bit-identical parameters and files on
   the same build and platform, whatever the number of threads: every
   reduction runs in a fixed order.

   LICENSE: MIT, see LICENSE.
*/
#ifndef PHOTON_H
#define PHOTON_H

#include <stddef.h>
#include <stdint.h>

#define PHOTON_VERSION "0.1.0"
#define PHOTON_FORMAT_VERSION 2 /* the photon.version written into files (2: payload hashes) */

#ifndef PHOTONDEF
#ifdef PHOTON_STATIC
#define PHOTONDEF static
#else
#define PHOTONDEF extern
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- >>errors */

typedef enum photon_result {
    PHOTON_OK = 0,
    PHOTON_ERR_ARGUMENT,  /* a caller passed an invalid value */
    PHOTON_ERR_MEMORY,    /* an allocation failed */
    PHOTON_ERR_IO,        /* a file could not be opened, read or written */
    PHOTON_ERR_FORMAT,    /* a file is corrupt or not of the expected kind */
    PHOTON_ERR_MISMATCH,  /* a valid file does not fit the model or data */
    PHOTON_ERR_NUMERIC,   /* NaN or Inf where numbers must be finite */
    PHOTON_ERR_DEVICE     /* the GPU, its driver or cuBLAS failed (photon_cuda.cu) */
} photon_result;

typedef struct photon_error {
    photon_result code;
    char message[512];
} photon_error;

/* A fixed description of each result code ("ok", "invalid argument", ...). */
PHOTONDEF const char *photon_result_string(photon_result code);
/* Frees memory the library allocated for the caller (photon_read_file). */
PHOTONDEF void photon_free(void *p);

/* ---------------------------------------------------------------- >>params */

typedef struct photon_config {
    int vocab_size; /* V: number of token ids */
    int n_ctx;      /* maximum sequence length (positions) */
    int n_layer;    /* L: transformer blocks */
    int n_head;     /* NH: attention heads; n_embd % n_head == 0 */
    int n_embd;     /* C: width of the residual stream */
} photon_config;

/* One named tensor of the parameter buffer, with its Hugging Face name. */
typedef struct photon_tensor_info {
    char name[48];
    int ndim;
    int shape[2];
    size_t offset; /* in floats, into params/grads */
    size_t size;   /* in floats */
    int decay;     /* 1 for matrices and embeddings: AdamW weight decay applies */
} photon_tensor_info;

/* Views of the activations saved by the forward pass for the backward pass.
   Shapes use B (batch), T (sequence), C (width), NH (heads), V (vocab). */
typedef struct photon_activations {
    float *encoded;                     /* (B,T,C) token + position embedding */
    float *ln1, *ln1_mean, *ln1_rstd;   /* (L,B,T,C), (L,B,T), (L,B,T) */
    float *qkv;                         /* (L,B,T,3C) */
    float *atty;                        /* (L,B,T,C) attention output, heads concatenated */
    float *att;                         /* (L,B,NH,T,T) attention probabilities */
    float *attproj;                     /* (L,B,T,C) */
    float *residual2;                   /* (L,B,T,C) stream after attention */
    float *ln2, *ln2_mean, *ln2_rstd;   /* (L,B,T,C), (L,B,T), (L,B,T) */
    float *fch, *fch_gelu;              /* (L,B,T,4C) */
    float *fcproj;                      /* (L,B,T,C) */
    float *residual3;                   /* (L,B,T,C) stream after the MLP */
    float *lnf, *lnf_mean, *lnf_rstd;   /* (B,T,C), (B,T), (B,T) */
    float *logits, *probs;              /* (B,T,V), one buffer: probs overwrite logits */
    float *losses;                      /* (B,T) */
} photon_activations;

typedef struct photon_model {
    photon_config config;
    /* parameters and their gradients, each one contiguous buffer laid out as
       the tensors table says (the checkpoint's order) */
    size_t num_params;
    float *params;
    float *grads;
    int num_tensors;
    photon_tensor_info *tensors;
    /* training clock, stored in the checkpoint */
    uint64_t step;        /* global optimizer steps taken by this model's lineage */
    uint64_t tokens_seen; /* tokens trained on by this model's lineage */
    uint64_t seed;        /* the seed the model was initialised with */
    uint64_t round;       /* federated rounds merged into it (0: none) */
    char file_sha256[65]; /* SHA-256 of the file it was loaded from ("" if none), from the loading pass */
    /* activations of the last forward pass, allocated on first use */
    int max_B, max_T;     /* capacity of the buffers below */
    int B, T;             /* shape of the last forward pass */
    int has_targets;      /* did the last forward compute a loss? */
    float loss;           /* mean loss of the last forward pass */
    float *act_memory, *grad_act_memory;
    photon_activations acts, grad_acts;
    int *inputs, *targets; /* (B,T) copies of the last batch */
} photon_model;

/* Checks a configuration; the message says which field is wrong. */
PHOTONDEF photon_result photon_config_validate(const photon_config *config, photon_error *err);

/* Allocates a model and initialises it as GPT-2 does, deterministically from
   seed: weights normal(0, 0.02), residual output projections normal(0,
   0.02/sqrt(2 L)), biases zero, LayerNorm gains one. */
PHOTONDEF photon_result photon_model_init(photon_model *model, const photon_config *config,
                                          uint64_t seed, photon_error *err);
PHOTONDEF void photon_model_free(photon_model *model);

/* Runs the model on B rows of T tokens (T <= n_ctx). With targets (may be
   NULL) it also computes the mean cross-entropy into *loss. The next-token
   probabilities of the last pass are in model->acts.probs, (B,T,V): the
   softmax runs in place over the logits, and photon_backward then overwrites
   them with their gradient. */
PHOTONDEF photon_result photon_forward(photon_model *model, const int *inputs, const int *targets,
                                       int B, int T, float *loss, photon_error *err);
/* Sets every parameter gradient to zero. */
PHOTONDEF void photon_zero_grad(photon_model *model);
/* Adds the gradient of the last forward pass's mean loss to model->grads. */
PHOTONDEF photon_result photon_backward(photon_model *model, photon_error *err);

/* ---------------------------------------------------------------- >>adamw */

/* Learning rate: linear warmup to peak_lr over warmup_steps, then cosine decay
   to min_lr_frac * peak_lr at total_steps, then constant. Read at the global
   step, so a run that resumes continues the schedule. */
typedef struct photon_schedule {
    float peak_lr;
    uint64_t warmup_steps;
    uint64_t total_steps;
    float min_lr_frac;
} photon_schedule;

typedef struct photon_adamw_config {
    float beta1, beta2, eps;
    float weight_decay; /* decoupled; matrices and embeddings only */
    float grad_clip;    /* maximum global gradient L2 norm; 0 disables clipping */
} photon_adamw_config;

/* The client's optimizer state: first and second moments and their step
   count (bias correction). Kept between rounds by default, as in Photon. */
typedef struct photon_adamw_state {
    size_t n;
    float *m, *v;
    uint64_t t;
} photon_adamw_state;

PHOTONDEF float photon_schedule_lr(const photon_schedule *schedule, uint64_t step);
PHOTONDEF photon_result photon_adamw_state_init(photon_adamw_state *state, size_t n, photon_error *err);
PHOTONDEF void photon_adamw_state_free(photon_adamw_state *state);
/* The L2 norm of all gradients, accumulated in double in a fixed order. */
PHOTONDEF double photon_grad_norm(const photon_model *model);
/* One AdamW update of every parameter with learning rate lr. Gradients are
   first scaled so that their global norm is at most grad_clip. */
PHOTONDEF void photon_adamw_update(photon_model *model, photon_adamw_state *state,
                                   const photon_adamw_config *hp, float lr, double grad_norm);

typedef struct photon_step_stats {
    float loss;
    float lr;
    double grad_norm; /* before clipping */
} photon_step_stats;

/* One local training step on a batch: zero the gradients, forward, backward,
   refuse NaN/Inf, clip, update with the schedule's rate at the global step,
   and advance the step clock (model->step, model->tokens_seen). */
PHOTONDEF photon_result photon_train_step(photon_model *model, photon_adamw_state *state,
                                          const photon_adamw_config *hp, const photon_schedule *schedule,
                                          const int *inputs, const int *targets, int B, int T,
                                          photon_step_stats *stats, photon_error *err);

/* ---------------------------------------------------------------- >>data */

/* A token stream: the files given, concatenated in order. A file that starts
   with llm.c's shard magic is read as a shard (256 int32 header: magic
   20240520, version 1, token count; then uint16 tokens); any other file is
   text, one token per byte (vocab 256), or tokens from an encoder. */
typedef struct photon_dataset {
    uint16_t *tokens;
    size_t num_tokens;
    uint64_t text_bytes; /* bytes of text read (0 if any file was a shard) */
    uint16_t max_token;  /* largest token id present */
    uint64_t hash;       /* FNV-1a of the tokens: ties a client state to its data */
    char source[320];    /* the files, for messages: "a.txt" or "a.txt (+2 more files)" */
    /* bytes each token id stands for, so that bits per byte are exact: NULL
       for byte-level text (one byte each) or when unknown (shards without an
       encoder; then byte_level is 0 too) */
    uint32_t *token_len;
    int token_len_count;
    int byte_level;
} photon_dataset;

/* Turns text into tokens for photon_dataset_load_with (photon_bpe.h's
   photon_bpe_encoder makes one from a BPE tokenizer). encode must write at
   most len tokens (a token stands for at least one byte); token_bytes tells
   how many bytes of text token id stands for, so that evaluation reports
   exact bits per byte (NULL: unknown). */
typedef struct photon_encoder {
    photon_result (*encode)(void *ctx, const void *text, size_t len, uint16_t *tokens, size_t *num_tokens,
                            photon_error *err);
    size_t (*token_bytes)(void *ctx, int id);
    void *ctx;
    int vocab_size; /* token ids 0 .. vocab_size-1 */
} photon_encoder;

/* Text read as bytes; shards as they are. */
PHOTONDEF photon_result photon_dataset_load(photon_dataset *ds, const char *const *paths, int num_paths,
                                            photon_error *err);
/* Text through the encoder (NULL: bytes); shards as they are, and the
   encoder then also tells their bytes. */
PHOTONDEF photon_result photon_dataset_load_with(photon_dataset *ds, const char *const *paths, int num_paths,
                                                 const photon_encoder *encoder, photon_error *err);
PHOTONDEF void photon_dataset_free(photon_dataset *ds);
/* Checks that every token is below vocab_size. */
PHOTONDEF photon_result photon_dataset_check_vocab(const photon_dataset *ds, int vocab_size, photon_error *err);

/* Writes an llm.c token shard (256 int32 header: magic 20240520, version 1,
   token count; then the uint16 tokens, little-endian), atomically. */
PHOTONDEF photon_result photon_shard_write(const char *path, const uint16_t *tokens, size_t n, photon_error *err);

/* Serves batches of B windows of T+1 consecutive tokens, in order, wrapping
   to the start (a new epoch) when a batch would run past the end. */
typedef struct photon_loader {
    const photon_dataset *ds;
    int B, T;
    uint64_t position; /* token index where the next batch starts */
    uint64_t epoch;    /* completed passes over the data */
} photon_loader;

PHOTONDEF photon_result photon_loader_init(photon_loader *loader, const photon_dataset *ds, int B, int T,
                                           photon_error *err);
/* Fills inputs and targets, each (B,T). */
PHOTONDEF void photon_loader_next(photon_loader *loader, int *inputs, int *targets);

/* A corpus dealt out to federated clients, as photon-data split writes it.
   By source, whole files go to clients: largest first (ties: the order
   given), each to the client with the fewest bytes so far (ties: the lowest
   index). IID, the files are one text cut into chunks of about chunk bytes,
   each ending at the first line end at or after chunk-1 bytes if one comes
   within another chunk (else at the next character boundary after chunk
   bytes), and chunk i goes to client i mod N: every client gets a mix of
   every source. */
typedef enum photon_split_kind { PHOTON_SPLIT_IID, PHOTON_SPLIT_SOURCE } photon_split_kind;

typedef struct photon_split_chunk {
    size_t begin, end; /* bytes of the concatenated text (IID) */
    int client;
} photon_split_chunk;

typedef struct photon_split_plan {
    photon_split_kind kind;
    int num_clients, num_sources;
    int *owner;                  /* by source: the client of each source */
    size_t num_chunks;           /* IID: the chunks, in order */
    photon_split_chunk *chunks;
    /* the manifest: [client * num_sources + source] bytes and chunks each
       source gave each client */
    uint64_t *bytes, *pieces;
} photon_split_plan;

/* Plans the split of num_sources texts (sizes[k] bytes at texts[k]; chunk
   is used by IID only). Refuses empty input, more clients than files by
   source, and fewer chunks than clients IID, saying why. */
PHOTONDEF photon_result photon_split_plan_make(photon_split_plan *plan, photon_split_kind kind, int num_clients,
                                               const unsigned char *const *texts, const size_t *sizes,
                                               int num_sources, size_t chunk, photon_error *err);
PHOTONDEF void photon_split_plan_free(photon_split_plan *plan);
/* Writes the planned split as a new directory that appears complete or not
   at all: DIR/client-i/NAME (by source: each file under its own name;
   IID: data.txt) and DIR/manifest.tsv (client, file, source, bytes, chunks).
   names[k] is source k's file name (no '/'), paths[k] its path as given;
   dir must not exist or be empty. */
PHOTONDEF photon_result photon_split_write(const photon_split_plan *plan, const char *const *names,
                                           const char *const *paths, const unsigned char *const *texts,
                                           const size_t *sizes, const char *dir, photon_error *err);

/* ---------------------------------------------------------------- >>eval */

/* Mean loss over consecutive non-overlapping windows of T+1 tokens (window w
   predicts tokens w*T+1 .. w*T+T), at most max_tokens predictions (0: all). */
typedef struct photon_eval_result {
    double loss;          /* mean cross-entropy, nats per token */
    double perplexity;    /* exp(loss) */
    double bits_per_byte; /* total bits / bytes of text predicted; NAN if unknown */
    uint64_t tokens;      /* tokens predicted */
} photon_eval_result;

PHOTONDEF photon_result photon_evaluate(photon_model *model, const photon_dataset *ds, int B, int T,
                                        uint64_t max_tokens, photon_eval_result *result, photon_error *err);
/* The same evaluation with another forward pass (photon_cuda_evaluate uses
   the GPU's): forward(ctx, inputs, targets, rows, T, losses, err) must write
   the (rows,T) per-token losses. */
typedef photon_result (*photon_forward_fn)(void *ctx, const int *inputs, const int *targets, int B, int T,
                                           float *losses, photon_error *err);
PHOTONDEF photon_result photon_evaluate_with(photon_forward_fn forward, void *ctx, const photon_config *config,
                                             const photon_dataset *ds, int B, int T, uint64_t max_tokens,
                                             photon_eval_result *result, photon_error *err);

/* Draws the token that follows context[0..n) (the last n_ctx tokens are
   used) at the given temperature (0: the most likely token), with a
   deterministic generator state *rng. */
PHOTONDEF photon_result photon_sample_next(photon_model *model, const int *context, int n, float temperature,
                                           uint64_t *rng, int *token, photon_error *err);

/* ---------------------------------------------------------------- >>safetensors */

typedef enum photon_dtype {
    PHOTON_DTYPE_BOOL, PHOTON_DTYPE_U8, PHOTON_DTYPE_I8, PHOTON_DTYPE_F8_E5M2, PHOTON_DTYPE_F8_E4M3,
    PHOTON_DTYPE_I16, PHOTON_DTYPE_U16, PHOTON_DTYPE_F16, PHOTON_DTYPE_BF16, PHOTON_DTYPE_I32,
    PHOTON_DTYPE_U32, PHOTON_DTYPE_F32, PHOTON_DTYPE_F64, PHOTON_DTYPE_I64, PHOTON_DTYPE_U64,
    PHOTON_DTYPE_COUNT
} photon_dtype;

#define PHOTON_ST_MAX_DIMS 8
/* Bounds of what photon reads, well above what it writes (a merge of
   thousands of clients, models of up to 1000 layers, Hugging Face imports)
   and below what could stall a reader: the reference reader allows a
   100 MB header. */
#define PHOTON_ST_MAX_HEADER (16u << 20)
#define PHOTON_ST_MAX_TENSORS 65536
#define PHOTON_ST_MAX_META 16384

typedef struct photon_st_tensor {
    char *name;
    photon_dtype dtype;
    int ndim;
    uint64_t shape[PHOTON_ST_MAX_DIMS];
    uint64_t begin, end; /* byte offsets into the data section */
} photon_st_tensor;

/* An open, validated safetensors file: its header parsed, its data unread. */
typedef struct photon_st_file {
    char *path;
    uint64_t file_size;
    uint64_t data_start; /* 8 + header length */
    int num_tensors;
    photon_st_tensor *tensors;
    int num_meta;
    char **meta_keys, **meta_values;
    int *tensor_order, *meta_order; /* indices sorted by name, for lookups */
    void *handle; /* the open FILE: tensors are read from the file validated */
} photon_st_file;

/* Reads and validates the header: size bound, UTF-8, JSON syntax, known
   dtypes, shapes that match their byte spans, offsets with no overlap, hole
   or trailing bytes, no duplicate names, string-valued __metadata__. */
PHOTONDEF photon_result photon_st_open(photon_st_file *st, const char *path, photon_error *err);
PHOTONDEF void photon_st_close(photon_st_file *st);
PHOTONDEF const char *photon_st_meta(const photon_st_file *st, const char *key);
PHOTONDEF const photon_st_tensor *photon_st_find(const photon_st_file *st, const char *name);
/* Reads an F32 tensor of exactly `count` elements; refuses NaN and Inf.
   This random access does not check photon.data_sha256; photon's loaders
   (checkpoints, deltas, client and server state) read the whole file once
   and do. */
PHOTONDEF photon_result photon_st_read_f32(const photon_st_file *st, const photon_st_tensor *t, float *dst,
                                           size_t count, photon_error *err);

/* One tensor to write: F32 values at data or, when bytes is set, elements
   of dtype at bytes (little-endian, as stored). */
typedef struct photon_st_entry {
    const char *name;
    int ndim;
    uint64_t shape[PHOTON_ST_MAX_DIMS];
    const float *data;
    photon_dtype dtype; /* with bytes */
    const void *bytes;
} photon_st_entry;

/* Writes tensors in the order given, with __metadata__ keys in the order
   given and last photon.data_sha256, the SHA-256 of the data section (every
   tensor's bytes, in order), atomically (temporary file, fsync, rename). */
PHOTONDEF photon_result photon_st_write(const char *path, const photon_st_entry *entries, int num_entries,
                                        const char *const *meta_keys, const char *const *meta_values, int num_meta,
                                        photon_error *err);
/* The same, named for the F32 tensors most files hold. */
PHOTONDEF photon_result photon_st_write_f32(const char *path, const photon_st_entry *entries, int num_entries,
                                            const char *const *meta_keys, const char *const *meta_values,
                                            int num_meta, photon_error *err);
/* Files of photon format 1 (before payload hashes) carry no
   photon.data_sha256 and are refused, saying so, unless this is set
   (process-wide, like photon_set_threads; the tools' --accept-unhashed). */
PHOTONDEF void photon_accept_unhashed(int yes);

/* ---------------------------------------------------------------- >>checkpoint */

/* A model checkpoint: safetensors, Hugging Face GPT-2 names, metadata with the
   config and the step clock (docs/FORMAT.md). */
PHOTONDEF photon_result photon_checkpoint_save(const photon_model *model, const char *path, photon_error *err);
/* Loads a checkpoint into a new model (photon_model_free releases it). */
PHOTONDEF photon_result photon_checkpoint_load(photon_model *model, const char *path, photon_error *err);

/* The outputs a client state was committed with (photon.commit.* keys,
   docs/FORMAT.md §3). photon-train renames the state last of its outputs,
   so the state names the delta it belongs to, and after a crash the next
   run can tell an interrupted commit and finish it. "" means none. */
typedef struct photon_commit_record {
    char prev_state_sha256[65]; /* the state file this one was resumed from ("none": a fresh state) */
    char delta[4096];           /* the delta written with it, its path as given ... */
    char delta_sha256[65];      /* ... the SHA-256 of the whole file ... */
    char base_sha256[65];       /* ... and of the checkpoint it was taken against */
    char out[4096];             /* the checkpoint written with it, as given */
    char out_sha256[65];
} photon_commit_record;

/* What a client keeps between runs and rounds; never shipped. */
typedef struct photon_client_state {
    photon_adamw_state adamw;
    uint64_t step;          /* model->step when written */
    uint64_t data_position; /* loader position */
    uint64_t data_epoch;
    uint64_t data_tokens;   /* the dataset it belongs to: token count ... */
    uint64_t data_hash;     /* ... and hash */
    photon_commit_record commit; /* the outputs it was committed with */
    float *residual;        /* error feedback: what the delta format dropped so far (num_params; NULL: none) */
    char personal[256];     /* the patterns of the tensors this client keeps ("" none) ... */
    float *personal_values; /* ... and their values, the matching tensors in the model's order (NULL: none) */
    size_t personal_count;
    char file_sha256[65];   /* set by a load: the SHA-256 of the file, from the loading pass ("" if none) */
} photon_client_state;

PHOTONDEF photon_result photon_client_state_save(const photon_client_state *state, const photon_config *config,
                                                 const char *path, photon_error *err);
PHOTONDEF void photon_client_state_free(photon_client_state *state);
/* Records the model's current values of the tensors patterns match as the
   state's personal tensors (after local training, before saving). */
PHOTONDEF photon_result photon_personal_keep(photon_client_state *state, const photon_model *model, const char *patterns,
                                             photon_error *err);
/* Lays the state's personal tensors over the model (a new global model
   before local training, or for evaluating the personalised model);
   refused if the state's patterns do not fit this model. */
PHOTONDEF photon_result photon_personal_apply(const photon_client_state *state, photon_model *model, photon_error *err);
/* Loads a client state written for this config; state->adamw (and the
   residual, if the file holds one) is allocated: photon_client_state_free. */
PHOTONDEF photon_result photon_client_state_load(photon_client_state *state, const photon_config *config,
                                                 const char *path, photon_error *err);
/* Where a client picks up: loads the client state at path (if a file is
   there; a file that does not load is an error, never a fresh start) and
   puts the loader where that state stopped; with no file, a fresh state of
   zero moments and the loader at the start. A state written for other data
   (token count or hash) is refused. *resumed (may be NULL) says which. The
   state's step may differ from the model's (a client that skipped rounds):
   compare state->step with model->step to tell. */
PHOTONDEF photon_result photon_client_state_resume(photon_client_state *state, const photon_model *model,
                                                   const photon_dataset *ds, photon_loader *loader, const char *path,
                                                   int *resumed, photon_error *err);
/* Records where training stands (the model's step, the loader's position,
   the dataset) in state, before photon_client_state_save. It starts a new
   commit record: the state it was loaded from (state->file_sha256), no
   outputs; the caller then fills state->commit's delta and out. */
PHOTONDEF void photon_client_state_record(photon_client_state *state, const photon_model *model,
                                          const photon_dataset *ds, const photon_loader *loader);
/* The commit record of the client state at path, from its header alone
   (the tensors are not read). */
PHOTONDEF photon_result photon_client_state_read_commit(const char *path, photon_commit_record *commit,
                                                        photon_error *err);
/* What photon_client_state_reconcile did: pid is the killed run whose
   commit it finished (0: none), commit that run's record. */
typedef struct photon_recovery {
    long pid;
    photon_commit_record commit;
} photon_recovery;
/* Finishes a commit that a killed run left halfway (POSIX; elsewhere it
   does nothing). Call it holding the state's lock (photon_lock_acquire),
   before anything reads the state. It looks for PATH.<pid>.pending of a
   process that no longer runs whose state loads, was resumed from the file
   now at path (or from none, when none is there) and whose every recorded
   output is in place, under its final name or as its own pending file,
   with the recorded SHA-256: such a run had written all its outputs. The
   pending outputs are then renamed into place, the state last. Without
   that evidence nothing is touched (photon_outputs_cleanup then removes
   the leftovers). */
PHOTONDEF photon_result photon_client_state_reconcile(const char *path, photon_recovery *recovery, photon_error *err);
/* Zeroes the AdamW moments and their step count (a fresh optimizer each
   round; the data position is kept). */
PHOTONDEF void photon_adamw_state_reset(photon_adamw_state *state);

/* Writes the config.json with which transformers' GPT2LMHeadModel loads a
   photon checkpoint renamed to model.safetensors. */
PHOTONDEF photon_result photon_write_hf_config(const photon_config *config, const char *path, photon_error *err);

/* ---------------------------------------------------------------- >>hf */
/* Hugging Face GPT-2 folders: a federation may start from an open model
   and hand its result back as one. */

typedef struct photon_hf_import_info {
    photon_config config;
    int num_files;       /* safetensors files read (more than one: a sharded checkpoint) */
    int widened;         /* tensors stored as F16 or BF16, widened to F32 */
    int prefixed;        /* names had transformers' "transformer." prefix */
    int has_tokenizer;   /* vocab.json and merges.txt stand beside the model */
    char tokenizer_dir[4096]; /* where they are (give it as --tokenizer) */
} photon_hf_import_info;

/* Reads a Hugging Face GPT-2 model and writes it as a photon checkpoint at
   out_path (step 0, round 0; the source files and their SHA-256 in its
   metadata). source is a folder with config.json and model.safetensors,
   or with shards listed in model.safetensors.index.json; or one
   .safetensors file (or an index .json) with config.json beside it.
   Tensor names may carry transformers' "transformer." prefix or not; F16
   and BF16 are widened to F32. What photon's model cannot represent is
   refused naming the config key (another activation or epsilon,
   scale_attn_by_inverse_layer_idx, a separate lm_head that differs from
   wte, ...). Each file is read once, in order, and the parameters are held
   once in memory. */
PHOTONDEF photon_result photon_hf_import(const char *source, const char *out_path, photon_hf_import_info *info,
                                         photon_error *err);

/* A file to put in an exported folder (a tokenizer's). */
typedef struct photon_hf_file {
    const char *name;
    const void *data;
    size_t size;
} photon_hf_file;

/* Writes a checkpoint as a folder that transformers' from_pretrained loads:
   config.json, model.safetensors (the checkpoint's own bytes), a README.md
   model card from its metadata (rounds, clients, tokens, its source), and
   the files given (photon_bpe_hf_export adds a tokenizer's), as a new
   directory that appears complete or not at all. eos_token_id is the
   end-of-text token (-1: the last id). */
PHOTONDEF photon_result photon_hf_export(const char *checkpoint_path, const char *dir, const photon_hf_file *files,
                                         int num_files, int eos_token_id, photon_error *err);

/* ---------------------------------------------------------------- >>delta */
/* A round of Photon, as files: every client trains from the same global
   checkpoint and writes a delta (global - local: the pseudo-gradient); the
   aggregator averages the deltas, weighted by the tokens each client trained
   on, and applies an outer optimizer to the global model. */

/* What travels. A delta (and the global update of the downlink) is stored
   in one of four formats (docs/FORMAT.md, "Delta formats"):
     f32   every value as it is (4 bytes);
     bf16  every value rounded to bfloat16, nearest even (2 bytes);
     int8  blocks of 128 consecutive values of a tensor share one F32 scale,
           the block's largest magnitude / 127 (the float below it where
           127 x scale would overflow); each value is the nearest code in
           -127..127, halves away from zero (1 byte + 4/128);
     int4  the same with codes -7..7, two to a byte (half a byte + 4/128).
   Decoding is code x scale in float, the same everywhere, so a merge of
   compressed deltas re-verifies bit for bit. */
typedef enum photon_delta_format {
    PHOTON_DELTA_F32,
    PHOTON_DELTA_BF16,
    PHOTON_DELTA_INT8,
    PHOTON_DELTA_INT4
} photon_delta_format;

#define PHOTON_QUANT_BLOCK 128

PHOTONDEF const char *photon_delta_format_name(photon_delta_format format);
/* "f32", "bf16", "int8" or "int4"; -1 for anything else */
PHOTONDEF int photon_delta_format_parse(const char *name);
/* Bytes of the codes of n values (f32: 4n, bf16: 2n, int8: n, int4: (n+1)/2),
   and the number of scales (int8, int4: one per block; else 0). */
PHOTONDEF size_t photon_delta_code_bytes(photon_delta_format format, size_t n);
PHOTONDEF size_t photon_delta_scale_count(photon_delta_format format, size_t n);
/* Encodes n values (one tensor): codes (photon_delta_code_bytes) and
   scales (photon_delta_scale_count floats; NULL for f32 and bf16). An int4
   tensor of odd length pads its last byte's high half with code 0. */
PHOTONDEF void photon_quantize(photon_delta_format format, const float *x, size_t n, void *codes, float *scales);
/* Decodes them into out; refuses (PHOTON_ERR_FORMAT, naming the element or
   block) a code out of range (int8 -128, int4 nibble 0, an int4 pad that is
   not code 0), a scale that is negative or not finite, and a value that
   decodes to NaN or Inf. */
PHOTONDEF photon_result photon_dequantize(photon_delta_format format, const void *codes, const float *scales, size_t n,
                                          float *out, photon_error *err);

/* What a delta file says about itself (docs/FORMAT.md). */
typedef struct photon_delta_info {
    char base_sha256[65];  /* the checkpoint file the client started from */
    uint64_t round;        /* the round it contributes to: the base's round + 1 */
    char client[64];       /* the client's id: letters, digits, '.', '_', '-' */
    uint64_t local_steps;  /* optimizer steps taken in this round (at least 1) */
    uint64_t batch, seq;   /* each step's batch rows and sequence length (seq <= n_ctx) */
    uint64_t tokens;       /* tokens trained on in this round, local_steps x batch x seq: the FedAvg weight */
    float loss;            /* the last local training loss */
    photon_delta_format format; /* how its values are stored */
    char personal[256];    /* the tensor-name globs the client keeps to itself (comma-separated; "" none):
                              those tensors are absent from the delta (photon_personal_mask) */
    uint64_t members;      /* 0: one client's delta; K: a sub-federation's aggregate of K deltas (a group
                              delta: photon_merge with group_id). A group delta's tokens are its members'
                              sum, its local_steps their largest, batch and seq 0 */
    char sha256[65];       /* set by photon_delta_load: the file's own SHA-256, from the loading pass */
} photon_delta_info;

/* Partial personalisation (WorldLM; FedPer): a client may keep some
   tensors to itself. Patterns are tensor-name globs ('*' any run of
   characters, '?' one), comma-separated, e.g. "h.*.ln_*,h.11.*". Those
   tensors never leave the client: they are absent from its delta, kept in
   its client state and laid over each new global model before training;
   the merge leaves them as the base has them. */
PHOTONDEF int photon_glob_match(const char *pattern, const char *name);
/* mask[t] = 1 for each of the model's tensors that a pattern matches. Refused
   (PHOTON_ERR_ARGUMENT): an empty or over-long list, a character outside
   A-Z a-z 0-9 . _ - * ?, a pattern that matches no tensor, and patterns that
   match every tensor (nothing would be shared). */
PHOTONDEF photon_result photon_personal_mask(const photon_model *model, const char *patterns, unsigned char *mask,
                                             photon_error *err);

/* Client ids: 1 to 63 letters, digits, '.', '_' or '-' (they name files
   and signers). */
PHOTONDEF int photon_client_id_valid(const char *id);

/* Writes base_params - model->params as a delta file (f32). */
PHOTONDEF photon_result photon_delta_save(const photon_model *model, const float *base_params,
                                          const photon_delta_info *info, const char *path, photon_error *err);
/* The same in info->format. With residual (num_params floats, may be NULL:
   no error feedback) the delta sent is v = base - params + residual, and
   residual becomes v - decode(encode(v)): what the format dropped this
   round, added to the next round's delta before it is encoded. */
PHOTONDEF photon_result photon_delta_save_as(const photon_model *model, const float *base_params,
                                             const photon_delta_info *info, float *residual, const char *path,
                                             photon_error *err);
/* What a delta says about itself, from its header alone (its values are not
   read; the config is the file's own): for tools that route or check
   deltas before a merge, e.g. to verify a signature by the client id. */
PHOTONDEF photon_result photon_delta_read_info(const char *path, photon_delta_info *info, photon_config *config,
                                               photon_error *err);
/* Reads a delta written for a model of this config, in any format: its
   info and its decoded values (num_params floats into values; NaN and Inf
   are refused), in one pass over the file that also checks its payload hash
   and hashes the file.
   Nothing the delta says about itself goes unchecked: tokens must be
   local_steps x batch x seq, and no counter may overflow. */
PHOTONDEF photon_result photon_delta_load(const photon_model *model, const char *path, photon_delta_info *info,
                                          float *values, photon_error *err);

/* ---------------------------------------------------------------- >>outer */
typedef enum photon_outer_kind {
    PHOTON_OUTER_FEDAVG,   /* x = x - lr avg (Photon: lr 1.0) */
    PHOTON_OUTER_NESTEROV, /* DiLoCo: b = mu b + avg; x = x - lr (avg + mu b) */
    PHOTON_OUTER_ADAM,     /* FedAdam (Reddi et al. 2021) */
    PHOTON_OUTER_YOGI      /* FedYogi (Reddi et al. 2021) */
} photon_outer_kind;

typedef struct photon_outer_config {
    photon_outer_kind kind;
    float lr;       /* server learning rate */
    float momentum; /* Nesterov's mu */
    float beta1, beta2, tau; /* FedAdam/FedYogi: moment decay rates and adaptivity floor */
    int uniform;    /* 1: every delta weighs the same; 0: weighted by tokens */
} photon_outer_config;

/* Sets the defaults of an outer optimizer: fedavg lr 1.0; nesterov lr 0.7,
   momentum 0.9; adam and yogi lr 0.01, beta1 0.9, beta2 0.99, tau 1e-3. */
PHOTONDEF void photon_outer_defaults(photon_outer_config *outer, photon_outer_kind kind);
PHOTONDEF const char *photon_outer_name(photon_outer_kind kind);
/* "fedavg", "nesterov", "adam" or "yogi"; returns -1 for anything else */
PHOTONDEF int photon_outer_parse(const char *name);

/* The aggregator's optimizer state between rounds (momentum, moments). */
typedef struct photon_server_state {
    photon_outer_kind kind;
    size_t n;
    float *m, *v; /* NULL where the optimizer has none */
    uint64_t round; /* the round whose checkpoint it was written with */
    char file_sha256[65]; /* SHA-256 of the file it was loaded from ("" if none) */
} photon_server_state;

PHOTONDEF photon_result photon_server_state_init(photon_server_state *s, photon_outer_kind kind, size_t n,
                                                 float tau, photon_error *err);
PHOTONDEF void photon_server_state_free(photon_server_state *s);
PHOTONDEF photon_result photon_server_state_save(const photon_server_state *s, const photon_config *config,
                                                 const char *path, photon_error *err);
PHOTONDEF photon_result photon_server_state_load(photon_server_state *s, const photon_config *config,
                                                 const char *path, photon_error *err);

/* One outer step: params are updated in place from the averaged delta avg. */
PHOTONDEF void photon_outer_step(float *params, const float *avg, size_t n, const photon_outer_config *outer,
                                 photon_server_state *state);

/* ---------------------------------------------------------------- >>merge */
/* A signature proves who sent a delta, not that it is any good: a client
   with a bug, a diverged run or bad intent can send a delta that is finite,
   well formed and ruinous. So besides the mean (FedAvg's rule) the merge
   offers rules that a few bad deltas cannot drag far, norm bounds, and
   screening on held-out data (docs/ALGORITHM.md, "Robust merges"). The
   robust rules treat every delta alike (they ignore token weights) except
   Multi-Krum, which averages the deltas it selects with the merge's
   weighting. All of them stream the deltas in fixed chunks and give the
   same bits whatever the chunk size and the thread count. */
typedef enum photon_aggregate_kind {
    PHOTON_AGGREGATE_MEAN,         /* the weighted mean (tokens or uniform) */
    PHOTON_AGGREGATE_MEDIAN,       /* coordinate-wise median; of an even count, the mean of the middle two */
    PHOTON_AGGREGATE_TRIMMED_MEAN, /* coordinate-wise: cut floor(trim x n) values from each end, mean of the rest */
    PHOTON_AGGREGATE_MULTI_KRUM    /* the mean of the deltas with the lowest Krum scores (Blanchard et al. 2017) */
} photon_aggregate_kind;

PHOTONDEF const char *photon_aggregate_name(photon_aggregate_kind kind);
/* "mean", "median", "trimmed-mean" or "multi-krum"; -1 for anything else */
PHOTONDEF int photon_aggregate_parse(const char *name);

typedef struct photon_merge_options {
    photon_outer_config outer;
    int skip_bad;    /* skip invalid deltas instead of failing */
    int min_clients; /* fewest valid deltas a merge accepts */
    uint64_t max_local_steps; /* refuse a delta of more local steps (0: no bound) */
    uint64_t max_tokens;      /* refuse a delta of more tokens (0: no bound) */
    /* robust merging; all zero: the plain mean, as before */
    photon_aggregate_kind aggregate;
    double trim;           /* trimmed mean: the fraction cut from each end, 0 <= trim < 0.5 */
    int byzantine;         /* multi-krum: f, the bad deltas it withstands; needs n > 2f + 2 deltas */
    int krum_select;       /* multi-krum: how many deltas it averages (0: n - f) */
    double clip_norm;      /* > 0: each delta is scaled down to at most this L2 norm */
    double clip_auto;      /* > 0 (instead of clip_norm): the bound is this times the median norm of the round */
    double max_norm_ratio; /* > 0: refuse a delta whose norm exceeds this times the median norm */
    const photon_dataset *screen; /* not NULL: each delta is applied alone to the base and evaluated on this */
    uint64_t screen_tokens;       /* tokens of it to predict (0: all) */
    int screen_seq;               /* window length (0: the context length) */
    double screen_max_rise;       /* refuse a delta that raises the loss by more than this, in nats per token, */
    int screen_from_median;       /* ... over the base's loss (0) or over the median of the deltas' losses (1) */
    size_t chunk; /* values of each delta held at once (0: 65536; a multiple of 4096): memory, not results */
    /* the downlink: with compress_update the next global model becomes
       base + decode(encode(next - base)) in update_format, what a client
       holding the base rebuilds from the update file (photon_update_save) */
    int compress_update;
    photon_delta_format update_format;
    /* a federation of federations: with group_id (a client id) the merge
       makes this sub-federation's group delta instead of the next global
       checkpoint: the members' aggregate against the same base, weighing
       the sum of their tokens, with the audit trail listing them, which a
       parent merge takes like any client's delta (photon_merge_save writes
       it). Only FedAvg at lr 1 may run below the root (the parent's outer
       optimizer sees the members' mean unchanged), with no server state
       and no downlink update */
    const char *group_id;
    /* the federation's (or group's) declaration: tensors its members keep
       to themselves; a delta that carries one is refused, and they stay as
       the base has them ("" or NULL: none) */
    const char *personal;
} photon_merge_options;

/* One delta's fate in a merge. */
typedef struct photon_merge_entry {
    const char *path;
    photon_delta_info info;
    char sha256[65];       /* the file's SHA-256 ("unreadable" if it could not be read) */
    int accepted;          /* its values entered the aggregate */
    double weight;         /* normalised: the accepted weights sum to 1 (median, trimmed mean: 1/n each) */
    char reason[512];      /* why it was refused, if it was */
    /* what the delta was and what the rules did with it; NAN where not computed */
    double norm;           /* L2 norm of the delta as sent */
    double scale;          /* the factor norm clipping applied (1: not clipped) */
    double cosine;         /* cosine similarity of its (clipped) values with the aggregate */
    double screen_loss;    /* screening: the loss of base - delta on the held-out sample */
    double krum_score;     /* multi-krum: summed squared distances to its n - f - 2 nearest */
    double trimmed;        /* median, trimmed mean: the fraction of its values the rule cut */
    int left_out_by_rule;  /* valid, but the rule did not take it (multi-krum's unselected): not an error */
    char refused_by[16];   /* "checks", "norm", "screening" or "multi-krum" (empty if accepted) */
    unsigned char *absent; /* per model tensor: 1 if the delta leaves it out (a personal tensor); NULL: none */
} photon_merge_entry;

typedef struct photon_merge_result {
    photon_model model;         /* the next global model */
    photon_server_state state;  /* the server state after this round */
    int num_entries;
    photon_merge_entry *entries; /* in the merge order: sorted by client id */
    int accepted;
    double clip_bound;          /* the norm bound clipping used (0: none) */
    double median_norm;         /* the median norm of the valid deltas */
    double screen_base_loss;    /* screening: the base's own loss on the sample (NAN: no screening) */
    double screen_reference;    /* screening: the loss a rise is measured from (the base's, or the median) */
    /* with group_id: the group delta's values (the aggregate), the largest
       local step count and the tokens of its members */
    float *aggregate;
    uint64_t max_local_steps, tokens;
    char group_id[64];
    /* the encoded global update, with compress_update (for photon_update_save) */
    photon_delta_format update_format;
    unsigned char *update_codes;
    float *update_scales;
    char base_sha256[65];
    /* the audit trail, written into the checkpoint's __metadata__ */
    int num_meta;
    char **meta_keys, **meta_values;
} photon_merge_result;

/* Merges the deltas into the base checkpoint. Deltas are validated (base
   hash, round, config, tensors, duplicate client ids, NaN/Inf), sorted by
   client id so the order of the arguments does not matter, measured one at
   a time (norm, screening), then streamed together in chunks through the
   aggregation rule. server_state_path may be NULL or name a file that does
   not exist yet (a first round). Free the result with
   photon_merge_result_free whatever the outcome: on failure its entries say
   which delta was refused. */
PHOTONDEF photon_result photon_merge(const char *base_path, const char *const *delta_paths, int num_deltas,
                                     const char *server_state_path, const photon_merge_options *options,
                                     photon_merge_result *result, photon_error *err);
PHOTONDEF void photon_merge_result_free(photon_merge_result *result);
/* Writes the merged checkpoint with its audit trail (with group_id: the
   group delta, its audit trail in its metadata). */
PHOTONDEF photon_result photon_merge_save(const photon_merge_result *result, const char *path, photon_error *err);
/* Re-checks a merge: writes it to a temporary file beside path and
   compares the two byte for byte; *matches gets the answer. */
PHOTONDEF photon_result photon_merge_verify(const photon_merge_result *result, const char *path, int *matches,
                                            photon_error *err);

/* The downlink. A merge with compress_update writes, besides the next
   checkpoint, the update file: next - base encoded in update_format, with
   the base's SHA-256, the next checkpoint's metadata and its SHA-256
   (next_sha256: the file photon_merge_save wrote). A client holding the
   base rebuilds the next checkpoint from it, bit for bit: photon_update_apply
   writes base + decode(update) with that metadata, and refuses (writing
   nothing at out_path's place) unless the result has that SHA-256. */
PHOTONDEF photon_result photon_update_save(const photon_merge_result *result, const char *next_sha256, const char *path,
                                           photon_error *err);
PHOTONDEF photon_result photon_update_apply(const char *base_path, const char *update_path, const char *out_path,
                                            photon_error *err);

/* ---------------------------------------------------------------- >>gpu */
/* Declared here, defined in photon_cuda.cu: compile that file with nvcc and
   link it and cuBLAS beside the translation unit that holds
   PHOTON_IMPLEMENTATION (`make cuda` does this for the tools). The GPU keeps
   its own copy of the parameters, gradients, AdamW moments and activations;
   the step clocks stay in the host's photon_model and photon_adamw_state, and
   the host's parameters are brought up to date by photon_cuda_download. So
   the files written after GPU training are the same kind as after CPU
   training, and either device resumes what the other wrote. */
typedef enum photon_cuda_precision {
    PHOTON_CUDA_TF32 = 0, /* matrix products on tensor cores in TF32, FP32 accumulation (default) */
    PHOTON_CUDA_FP32,     /* matrix products in full FP32 (no tensor cores) */
    PHOTON_CUDA_BF16      /* operands rounded to BF16 on tensor cores, FP32 accumulation and master weights */
} photon_cuda_precision;

typedef struct photon_cuda photon_cuda; /* a model resident on one GPU */

/* GPUs usable now (0 without a driver or a device; never fails). */
PHOTONDEF int photon_cuda_device_count(void);
/* Creates the GPU copy of model (its parameters, and zero AdamW moments)
   with room for batches up to max_B x max_T, on device number `device`. */
PHOTONDEF photon_result photon_cuda_create(photon_cuda **gpu, const photon_model *model, int max_B, int max_T,
                                           int device, photon_cuda_precision precision, photon_error *err);
PHOTONDEF void photon_cuda_free(photon_cuda *gpu);
/* The device's name, e.g. "NVIDIA H100 80GB HBM3". */
PHOTONDEF const char *photon_cuda_device_name(const photon_cuda *gpu);
/* Bytes of GPU memory the model holds (parameters, gradients, moments,
   activations and scratch; cuBLAS's workspace not counted). */
PHOTONDEF size_t photon_cuda_memory(const photon_cuda *gpu);
/* Copies parameters (and AdamW moments, if state is not NULL) host -> GPU. */
PHOTONDEF photon_result photon_cuda_upload(photon_cuda *gpu, const photon_model *model,
                                           const photon_adamw_state *state, photon_error *err);
/* Copies parameters (and AdamW moments, if state is not NULL) GPU -> host. */
PHOTONDEF photon_result photon_cuda_download(photon_cuda *gpu, photon_model *model, photon_adamw_state *state,
                                             photon_error *err);
/* Forward pass on the GPU; with targets, the (B,T) per-token losses go to
   losses (host memory, may be NULL) and their mean to *loss (may be NULL). */
PHOTONDEF photon_result photon_cuda_forward(photon_cuda *gpu, const int *inputs, const int *targets, int B, int T,
                                            float *losses, float *loss, photon_error *err);
/* photon_train_step on the GPU: the same checks, schedule, clipping and
   AdamW, and the same step clocks advanced in model and state. */
PHOTONDEF photon_result photon_cuda_train_step(photon_cuda *gpu, photon_model *model, photon_adamw_state *state,
                                               const photon_adamw_config *hp, const photon_schedule *schedule,
                                               const int *inputs, const int *targets, int B, int T,
                                               photon_step_stats *stats, photon_error *err);
/* photon_evaluate on the GPU. */
PHOTONDEF photon_result photon_cuda_evaluate(photon_cuda *gpu, const photon_dataset *ds, int B, int T,
                                             uint64_t max_tokens, photon_eval_result *result, photon_error *err);

/* ================================================================ >>machinery */
/* APPENDIX: the machinery the algorithm runs on, public for tools and
   programs that embed photon. */

/* ---------------------------------------------------------------- >>threads */
/* Heavy loops run on a pool of threads (pthreads on POSIX; define
   PHOTON_NO_THREADS for a single-threaded build). Results do not depend on
   the number of threads. */
PHOTONDEF void photon_set_threads(int n); /* 0 (default): one per core */
PHOTONDEF int photon_threads(void);

/* ---------------------------------------------------------------- >>gemm */
/* C (M,N) (+)= op(A) (M,K) op(B) (K,N), row-major with leading dimensions
   lda, ldb, ldc; op transposes when trans_* is 1; accumulate 0 overwrites C.
   Deterministic whatever the thread count. */
PHOTONDEF void photon_gemm(int M, int N, int K, const float *A, int lda, int trans_a, const float *B, int ldb,
                           int trans_b, float *C, int ldc, int accumulate);
/* Floats of the activations a forward pass of B x T tokens keeps for the
   backward pass (what photon_forward allocates, gradients not counted). */
PHOTONDEF size_t photon_activation_floats(const photon_config *config, int B, int T);

/* ---------------------------------------------------------------- >>random */
/* splitmix64: a small, fast, deterministic generator; *state advances. */
PHOTONDEF uint64_t photon_rand_u64(uint64_t *state);
/* uniform in [0, 1) with 24 random bits */
PHOTONDEF float photon_rand_uniform(uint64_t *state);

/* ---------------------------------------------------------------- >>files */
/* Reads a whole regular file (a directory, device or FIFO is refused before
   anything is read) into a new buffer with one spare NUL byte after its
   size bytes; free it with photon_free. */
PHOTONDEF photon_result photon_read_file(const char *path, unsigned char **data, size_t *size, photon_error *err);
/* Writes size bytes to path atomically: a temporary file, fsync, rename,
   fsync of the directory. */
PHOTONDEF photon_result photon_write_file(const char *path, const void *data, size_t size, photon_error *err);

/* Outputs that appear together or not at all. For each target, write the
   file (with any photon writer) to the temporary name photon_outputs_add
   gives; photon_outputs_commit then renames every temporary over its target
   and fsyncs their directories, photon_outputs_abort removes them. A crash
   between two renames of a commit leaves some targets new and some old,
   and the rest of the group under its temporary names: photon-train puts
   the client state last and records in it the SHA-256 of the others, so
   the next run can finish the commit (photon_client_state_reconcile) and
   remove what is left (photon_outputs_cleanup). */
#define PHOTON_OUTPUTS_MAX 8
typedef struct photon_outputs {
    int count;
    char target[PHOTON_OUTPUTS_MAX][4096];
    char temp[PHOTON_OUTPUTS_MAX][4096 + 32];
    int stop_before_rename; /* for tests: K > 0 stops the commit before its K-th rename, as a crash would */
} photon_outputs;

/* Fails early, before any work, if path cannot take an output: it exists
   and is not a regular file (a rename would replace a device such as
   /dev/null), or its directory does not take new files. */
PHOTONDEF photon_result photon_output_check(const char *path, photon_error *err);
/* The same for a directory that photon writes as a whole (a split): it
   must not exist, or be an empty directory. */
PHOTONDEF photon_result photon_output_dir_check(const char *dir, photon_error *err);
/* Whether two files hold the same bytes (read in blocks, not whole). */
PHOTONDEF photon_result photon_files_equal(const char *a, const char *b, int *equal, photon_error *err);

PHOTONDEF void photon_outputs_init(photon_outputs *out);
/* Checks the target as photon_output_check does. */
PHOTONDEF photon_result photon_outputs_add(photon_outputs *out, const char *target, const char **temp,
                                           photon_error *err);
/* Renames the temporaries in the order they were added (put the file that
   records the group last). A failure before the first rename removes them
   all; a failure after one (or stop_before_rename) leaves the rest where
   they are, for the next run to finish (photon_client_state_reconcile),
   and says what was committed and what is pending. */
PHOTONDEF photon_result photon_outputs_commit(photon_outputs *out, photon_error *err);
PHOTONDEF void photon_outputs_abort(photon_outputs *out);
/* Removes what killed runs left beside target (POSIX; elsewhere nothing):
   TARGET.<pid>.pending, .tmp, .probe and .pending.<pid>.tmp, each only when
   its pid is not this process and no process of that id runs. A running
   process's files are never touched. Adds to *removed and *bytes. */
PHOTONDEF photon_result photon_outputs_cleanup(const char *target, int *removed, uint64_t *bytes, photon_error *err);

/* A lock on a file that one process at a time may update: a POSIX write
   lock (fcntl) on PATH.lock, created if absent and kept afterwards
   (removing it would race with the next locker). The kernel releases it
   when the process ends, however it ends. A second process is refused
   with "PATH: in use by another process (pid N holds PATH.lock)". Without
   POSIX it does nothing. */
typedef struct photon_lock {
    int fd; /* -1: not held */
} photon_lock;
PHOTONDEF photon_result photon_lock_acquire(photon_lock *lock, const char *path, photon_error *err);
PHOTONDEF void photon_lock_release(photon_lock *lock);

/* ---------------------------------------------------------------- >>sha256 */
/* SHA-256 (FIPS 180-4), to tie each delta to the exact checkpoint it started
   from. */
typedef struct photon_sha256 {
    uint32_t h[8];
    uint64_t length;
    unsigned char block[64];
    size_t fill;
} photon_sha256;

PHOTONDEF void photon_sha256_init(photon_sha256 *s);
PHOTONDEF void photon_sha256_update(photon_sha256 *s, const void *data, size_t n);
PHOTONDEF void photon_sha256_final(photon_sha256 *s, char hex[65]);
PHOTONDEF photon_result photon_sha256_file(const char *path, char hex[65], photon_error *err);

#ifdef __cplusplus
}
#endif
#endif /* PHOTON_H */

/* ======================================================================= */
/*                            IMPLEMENTATION                               */
/* ======================================================================= */
#ifdef PHOTON_IMPLEMENTATION
#ifndef PHOTON_IMPLEMENTATION_DONE
#define PHOTON_IMPLEMENTATION_DONE

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if !defined(PHOTON_NO_SIMD) && (defined(__AVX2__) || defined(__AVX512F__) || defined(__SHA__))
#if defined(__GNUC__) && !defined(__clang__) /* GCC 12's AVX-512 header trips its own warning in C++ */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

/* POSIX, when the build declares it: stat, fsync, getpid, kill, fcntl locks, sysconf, pthreads */
#if (defined(__unix__) || defined(__APPLE__)) && \
    (defined(_POSIX_C_SOURCE) && _POSIX_C_SOURCE >= 200112L || defined(__APPLE__))
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#define PHOTON__POSIX 1
#endif
#if defined(PHOTON__POSIX) && !defined(PHOTON_NO_FSYNC)
#define PHOTON__HAVE_FSYNC 1
#endif
#if defined(PHOTON__POSIX) && !defined(PHOTON_NO_THREADS)
#include <pthread.h>
#define PHOTON__HAVE_THREADS 1
#endif

#ifndef PHOTON_MALLOC
#define PHOTON_MALLOC(n) malloc(n)
#define PHOTON_FREE(p) free(p)
#endif
#ifndef PHOTON_ASSERT
#include <assert.h>
#define PHOTON_ASSERT(x) assert(x)
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ======================================================================= */
/* >>errors: results and memory                                            */
/* ======================================================================= */

PHOTONDEF const char *photon_result_string(photon_result code) {
    switch (code) {
    case PHOTON_OK: return "ok";
    case PHOTON_ERR_ARGUMENT: return "invalid argument";
    case PHOTON_ERR_MEMORY: return "out of memory";
    case PHOTON_ERR_IO: return "input/output error";
    case PHOTON_ERR_FORMAT: return "corrupt or invalid file";
    case PHOTON_ERR_MISMATCH: return "file does not match";
    case PHOTON_ERR_NUMERIC: return "NaN or infinity";
    case PHOTON_ERR_DEVICE: return "GPU error";
    }
    return "unknown error";
}

#if defined(__GNUC__) || defined(__clang__)
#define PHOTON__PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define PHOTON__PRINTF(f, a)
#endif

#if defined(__GNUC__) || defined(__clang__) /* for a readable definition kept beside a fast one */
#define PHOTON__MAYBE_UNUSED __attribute__((unused))
#else
#define PHOTON__MAYBE_UNUSED
#endif

/* Records an error (if the caller asked for one) and returns its code. The
   message stays one line whatever it quotes: a control character from a
   file (a newline inside a token, a name) becomes a space. */
static photon_result photon__fail(photon_error *err, photon_result code, const char *fmt, ...) PHOTON__PRINTF(3, 4);
static photon_result photon__fail(photon_error *err, photon_result code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        char *c;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
        for (c = err->message; *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = ' ';
    }
    return code;
}

static void *photon__calloc(size_t count, size_t size) {
    void *p;
    if (size != 0 && count > (size_t)-1 / size) return NULL;
    p = PHOTON_MALLOC(count * size);
    if (p) memset(p, 0, count * size);
    return p;
}

static char *photon__strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = (char *)PHOTON_MALLOC(n);
    if (p) memcpy(p, s, n);
    return p;
}

static int photon__is_finite(float x) { return x - x == 0.0f; }

PHOTONDEF void photon_free(void *p) { PHOTON_FREE(p); }

/* ======================================================================= */
/* The machinery the algorithm calls, declared here and defined in the     */
/* APPENDIX after the merge (>>machinery), so that what follows reads as   */
/* the algorithm.                                                          */
/* ======================================================================= */

/* >>threads: fn(ctx, task, thread) for every task, on the pool; results
   must not depend on which thread runs a task. parallel_range cuts n items
   into tasks of a multiple of grain items, at boundaries that do not depend
   on the thread count. scratch is per-thread memory, kept between calls. */
typedef void (*photon__task_fn)(void *ctx, int task, int thread);
static void photon__parallel(int num_tasks, photon__task_fn fn, void *ctx);
static void photon__parallel_range(size_t n, size_t grain, void (*body)(void *ctx, size_t begin, size_t end, int thread),
                                   void *ctx);
static float *photon__scratch(int thread, size_t floats);

/* >>gemm: C (+)= op(A) op(B) (photon_gemm is its public name) */
static void photon__gemm(int M, int N, int K, const float *A, int lda, int trans_a, const float *B, int ldb,
                         int trans_b, float *C, int ldc, int accumulate);

/* >>vmath: e^(src - shift) and tanh over arrays; sum and max of n floats,
   each in a fixed order */
static void photon__exp_shifted(float *dst, const float *src, float shift, size_t n);
static void photon__tanh_array(float *dst, const float *u, size_t n);
static float photon__sum(const float *x, size_t n);
static float photon__max(const float *x, size_t n);

/* >>random: a standard normal draw */
static double photon__rand_normal(uint64_t *state);

/* >>files: a file written to a temporary name and renamed over its path on
   commit; a regular file opened for reading with its size; whether a path
   exists; little-endian words */
typedef struct photon__atomic {
    FILE *f;
    char *tmp;
    const char *path;
} photon__atomic;
static photon_result photon__atomic_open(photon__atomic *a, const char *path, photon_error *err);
static photon_result photon__atomic_commit(photon__atomic *a, photon_error *err);
static void photon__atomic_abort(photon__atomic *a);
static photon_result photon__open_regular(const char *path, FILE **out, long *size, photon_error *err);
static int photon__file_exists(const char *path);
static void photon__sync_directory(const char *path);
#ifdef PHOTON__POSIX /* what killed runs left: where, and whose */
static void photon__split_path(const char *path, char *dir, size_t size, const char **base);
static long photon__leftover_pid(const char *name, const char *base, int pending_only);
static int photon__pid_gone(long pid);
#endif
typedef struct photon__staged_dir { /* a new directory, written aside and renamed into place */
    const char *dir;
    char staging[4200], current[8448];
    FILE *f;
    char **made;
    int num_made;
    photon_error *err;
} photon__staged_dir;
static photon_result photon__staged_begin(photon__staged_dir *d, const char *dir, photon_error *err);
static photon_result photon__staged_mkdir(photon__staged_dir *d, const char *rel);
static photon_result photon__staged_open(photon__staged_dir *d, const char *rel);
static photon_result photon__staged_write(photon__staged_dir *d, const void *p, size_t n);
static photon_result photon__staged_close(photon__staged_dir *d);
static photon_result photon__staged_publish(photon__staged_dir *d);
static void photon__staged_abort(photon__staged_dir *d);
static uint32_t photon__le32(const unsigned char *p);
static void photon__put_le32(unsigned char *p, uint32_t v);

/* >>json: a growing text buffer (for writing JSON) and a reader whose
   errors name the file, line and column */
typedef struct photon__text {
    char *s;
    size_t len, cap;
    int failed;
} photon__text;
static void photon__text_append(photon__text *t, const char *s, size_t n);
static void photon__text_puts(photon__text *t, const char *s);
static void photon__text_u64(photon__text *t, uint64_t v);
static void photon__text_json_string(photon__text *t, const char *s);

typedef struct photon__json {
    const char *s;
    size_t n, pos;
    const char *path;
    photon_error *err;
    size_t line_pos, line_start; /* line counting, forward only: linear in the text */
    int line;
} photon__json;
static void photon__json_init(photon__json *j, const char *s, size_t n, const char *path, photon_error *err);
static photon_result photon__json_error(photon__json *j, const char *what);
static void photon__json_where(photon__json *j, size_t pos, int *line, int *col);
static void photon__json_ws(photon__json *j);
static int photon__json_accept(photon__json *j, char c);
static photon_result photon__json_string(photon__json *j, char **out);
static photon_result photon__json_uint(photon__json *j, uint64_t *out);
static photon_result photon__json_skip(photon__json *j, int depth);
static photon_result photon__json_uint_array(photon__json *j, uint64_t *out, int max, int *count, const char *name,
                                             const char *field);
static photon_result photon__json_scalar(photon__json *j, int *kind, double *num, char **str);

/* >>utf8: the character at s[i] (0: not well-formed UTF-8) */
static size_t photon__utf8_decode(const unsigned char *s, size_t n, size_t i, uint32_t *cp);
static int photon__valid_utf8(const unsigned char *s, size_t n);
static void photon__utf8_put(photon__text *t, uint32_t cp);

/* ======================================================================= */
/* >>params: the model's parameters, one buffer laid out tensor by tensor  */
/* ======================================================================= */
/* The order is the checkpoint's: wte, wpe, then each block h.0 .. h.{L-1}
   (its twelve tensors contiguous), then ln_f. Matrices are stored as Hugging
   Face's Conv1D stores them, [in, out], so that y = x W + b and a checkpoint
   is a straight copy of the buffer. */

PHOTONDEF photon_result photon_config_validate(const photon_config *c, photon_error *err) {
    if (c->vocab_size < 1 || c->vocab_size > 65536)
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "vocab size %d is out of range (1 to 65536)", c->vocab_size);
    if (c->n_ctx < 1 || c->n_ctx > 65536)
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "context length %d is out of range (1 to 65536)", c->n_ctx);
    if (c->n_layer < 1 || c->n_layer > 1000)
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "layer count %d is out of range (1 to 1000)", c->n_layer);
    if (c->n_head < 1 || c->n_embd < 1 || c->n_embd > 65536)
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "heads %d and width %d must be positive (width at most 65536)",
                            c->n_head, c->n_embd);
    if (c->n_embd % c->n_head != 0)
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "width %d is not a multiple of the head count %d", c->n_embd,
                            c->n_head);
    return PHOTON_OK;
}

/* The twelve tensors of one block, in order. shape[k] < 0 means -shape[k]*C. */
static const struct {
    const char *suffix;
    int ndim;
    int width_mult[2]; /* each dimension as a multiple of C */
    int decay;
} photon__block_tensors[12] = {
    {"ln_1.weight", 1, {1, 0}, 0},
    {"ln_1.bias", 1, {1, 0}, 0},
    {"attn.c_attn.weight", 2, {1, 3}, 1},
    {"attn.c_attn.bias", 1, {3, 0}, 0},
    {"attn.c_proj.weight", 2, {1, 1}, 1},
    {"attn.c_proj.bias", 1, {1, 0}, 0},
    {"ln_2.weight", 1, {1, 0}, 0},
    {"ln_2.bias", 1, {1, 0}, 0},
    {"mlp.c_fc.weight", 2, {1, 4}, 1},
    {"mlp.c_fc.bias", 1, {4, 0}, 0},
    {"mlp.c_proj.weight", 2, {4, 1}, 1},
    {"mlp.c_proj.bias", 1, {1, 0}, 0},
};

/* Pointers to one block's tensors inside a params or grads buffer. */
typedef struct photon__block {
    float *ln1w, *ln1b, *qkvw, *qkvb, *attprojw, *attprojb;
    float *ln2w, *ln2b, *fcw, *fcb, *fcprojw, *fcprojb;
} photon__block;

static size_t photon__block_size(int C) { return (size_t)C * (12 * (size_t)C + 13); }

static photon__block photon__block_at(float *buffer, const photon_config *c, int layer) {
    size_t C = (size_t)c->n_embd;
    float *p = buffer + (size_t)c->vocab_size * C + (size_t)c->n_ctx * C + (size_t)layer * photon__block_size(c->n_embd);
    photon__block b;
    b.ln1w = p; p += C;
    b.ln1b = p; p += C;
    b.qkvw = p; p += C * 3 * C;
    b.qkvb = p; p += 3 * C;
    b.attprojw = p; p += C * C;
    b.attprojb = p; p += C;
    b.ln2w = p; p += C;
    b.ln2b = p; p += C;
    b.fcw = p; p += C * 4 * C;
    b.fcb = p; p += 4 * C;
    b.fcprojw = p; p += 4 * C * C;
    b.fcprojb = p;
    return b;
}

static float *photon__wte(float *buffer) { return buffer; }
static float *photon__wpe(float *buffer, const photon_config *c) { return buffer + (size_t)c->vocab_size * c->n_embd; }
static float *photon__lnf(float *buffer, const photon_config *c) { /* weight, then bias */
    return photon__block_at(buffer, c, c->n_layer).ln1w;
}

static void photon__add_tensor(photon_model *m, size_t *offset, const char *name, int ndim, int d0, int d1,
                               int decay) {
    photon_tensor_info *t = &m->tensors[m->num_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = ndim == 2 ? d1 : 1;
    t->offset = *offset;
    t->size = (size_t)d0 * (size_t)t->shape[1];
    t->decay = decay;
    *offset += t->size;
}

/* Fills the tensor table; its offsets agree with photon__block_at. */
static void photon__build_tensor_table(photon_model *m) {
    const photon_config *c = &m->config;
    int C = c->n_embd, l, k;
    size_t offset = 0;
    char name[48];
    m->num_tensors = 0;
    photon__add_tensor(m, &offset, "wte.weight", 2, c->vocab_size, C, 1);
    photon__add_tensor(m, &offset, "wpe.weight", 2, c->n_ctx, C, 1);
    for (l = 0; l < c->n_layer; l++) {
        for (k = 0; k < 12; k++) {
            snprintf(name, sizeof name, "h.%d.%s", l, photon__block_tensors[k].suffix);
            photon__add_tensor(m, &offset, name, photon__block_tensors[k].ndim,
                               photon__block_tensors[k].width_mult[0] * C, photon__block_tensors[k].width_mult[1] * C,
                               photon__block_tensors[k].decay);
        }
    }
    photon__add_tensor(m, &offset, "ln_f.weight", 1, C, 0, 0);
    photon__add_tensor(m, &offset, "ln_f.bias", 1, C, 0, 0);
    PHOTON_ASSERT(offset == m->num_params);
}

static size_t photon__num_params(const photon_config *c) {
    size_t C = (size_t)c->n_embd;
    return (size_t)c->vocab_size * C + (size_t)c->n_ctx * C + (size_t)c->n_layer * photon__block_size(c->n_embd) + 2 * C;
}

/* Allocates parameters, gradients (if with_grads) and the tensor table, all zero. */
static photon_result photon__model_alloc(photon_model *m, const photon_config *config, int with_grads,
                                         photon_error *err) {
    photon_result r = photon_config_validate(config, err);
    if (r != PHOTON_OK) return r;
    memset(m, 0, sizeof *m);
    m->config = *config;
    m->num_params = photon__num_params(config);
    m->params = (float *)photon__calloc(m->num_params, sizeof(float));
    m->grads = with_grads ? (float *)photon__calloc(m->num_params, sizeof(float)) : NULL;
    m->tensors = (photon_tensor_info *)photon__calloc((size_t)config->n_layer * 12 + 4, sizeof(photon_tensor_info));
    if (!m->params || (with_grads && !m->grads) || !m->tensors) {
        photon_model_free(m);
        return photon__fail(err, PHOTON_ERR_MEMORY, "cannot allocate a model of %.0f parameters", (double)m->num_params);
    }
    photon__build_tensor_table(m);
    return PHOTON_OK;
}

PHOTONDEF photon_result photon_model_init(photon_model *m, const photon_config *config, uint64_t seed,
                                          photon_error *err) {
    photon_result r = photon__model_alloc(m, config, 1, err);
    uint64_t rng = seed;
    double residual_std = 0.02 / sqrt(2.0 * config->n_layer);
    int i;
    size_t j;
    if (r != PHOTON_OK) return r;
    m->seed = seed;
    for (i = 0; i < m->num_tensors; i++) {
        const photon_tensor_info *t = &m->tensors[i];
        float *p = m->params + t->offset;
        size_t len = strlen(t->name);
        int is_layernorm_gain = strstr(t->name, "ln_") && strcmp(t->name + len - 6, "weight") == 0;
        int is_residual_proj = strstr(t->name, "c_proj.weight") != NULL;
        if (t->ndim == 2) {
            double std = is_residual_proj ? residual_std : 0.02;
            for (j = 0; j < t->size; j++) p[j] = (float)(std * photon__rand_normal(&rng));
        } else if (is_layernorm_gain) {
            for (j = 0; j < t->size; j++) p[j] = 1.0f;
        } /* biases stay zero */
    }
    return PHOTON_OK;
}

PHOTONDEF void photon_model_free(photon_model *m) {
    PHOTON_FREE(m->params);
    PHOTON_FREE(m->grads);
    PHOTON_FREE(m->tensors);
    PHOTON_FREE(m->act_memory);
    PHOTON_FREE(m->grad_act_memory);
    PHOTON_FREE(m->inputs);
    PHOTON_FREE(m->targets);
    memset(m, 0, sizeof *m);
}

PHOTONDEF void photon_zero_grad(photon_model *m) { memset(m->grads, 0, m->num_params * sizeof(float)); }

/* ======================================================================= */
/* >>layers: each forward is followed by its backward                      */
/* ======================================================================= */
/* Backward functions add (+=) into the gradients they are given, because a
   tensor may receive gradient from several places (the residual stream, the
   tied embedding). */

/* Most layers below run as parallel loops over a range of rows, columns or
   elements (photon__parallel_range); each layer's arguments travel to its
   loop body in a struct named after the layer, with the names the maths
   uses. */

/* --- embedding: out[b,t,:] = wte[token] + wpe[t] --- */

typedef struct photon__encoder_args {
    float *out;                          /* forward: (B,T,C) */
    float *dwte, *dwpe;                  /* backward: (V,C), (n_ctx,C) */
    const float *wte, *wpe, *dout;
    const int *tokens;                   /* (B,T) */
    int B, T, C;
} photon__encoder_args;

static void photon__encoder_forward_rows(void *ctx, size_t begin, size_t end, int thread) {
    const photon__encoder_args *a = (const photon__encoder_args *)ctx;
    size_t n;
    int i, C = a->C;
    (void)thread;
    for (n = begin; n < end; n++) {
        const float *tok = a->wte + (size_t)a->tokens[n] * C, *pos = a->wpe + (n % (size_t)a->T) * C;
        float *o = a->out + n * C;
        for (i = 0; i < C; i++) o[i] = tok[i] + pos[i];
    }
}

static void photon__encoder_forward(float *out, const int *inputs, const float *wte, const float *wpe, int B, int T,
                                    int C) {
    photon__encoder_args a;
    memset(&a, 0, sizeof a);
    a.out = out, a.tokens = inputs, a.wte = wte, a.wpe = wpe, a.B = B, a.T = T, a.C = C;
    photon__parallel_range((size_t)B * T, 16, photon__encoder_forward_rows, &a);
}

/* Tokens repeat, so rows may add into the same row of dwte: each task owns a
   range of columns instead, and adds the rows in order. */
static void photon__encoder_backward_cols(void *ctx, size_t begin, size_t end, int thread) {
    const photon__encoder_args *a = (const photon__encoder_args *)ctx;
    size_t n, N = (size_t)a->B * a->T, c, C = (size_t)a->C;
    (void)thread;
    for (n = 0; n < N; n++) {
        const float *d = a->dout + n * C;
        float *dtok = a->dwte + (size_t)a->tokens[n] * C, *dpos = a->dwpe + (n % (size_t)a->T) * C;
        for (c = begin; c < end; c++) {
            dtok[c] += d[c];
            dpos[c] += d[c];
        }
    }
}

static void photon__encoder_backward(float *dwte, float *dwpe, const float *dout, const int *inputs, int B, int T,
                                     int C) {
    photon__encoder_args a;
    memset(&a, 0, sizeof a);
    a.dwte = dwte, a.dwpe = dwpe, a.dout = dout, a.tokens = inputs, a.B = B, a.T = T, a.C = C;
    photon__parallel_range((size_t)C, 32, photon__encoder_backward_cols, &a);
}

/* --- LayerNorm over the last dimension, eps 1e-5, biased variance --- */

#define PHOTON__LN_EPS 1e-5f

typedef struct photon__layernorm_args {
    float *out, *mean, *rstd;            /* forward: (N,C), (N), (N) */
    float *dx, *dweight, *dbias;         /* backward: (N,C), (C), (C) */
    const float *x, *weight, *bias;      /* (N,C), (C), (C) */
    const float *dout, *saved_mean, *saved_rstd;
    int N, C;
} photon__layernorm_args;

static void photon__layernorm_forward_rows(void *ctx, size_t begin, size_t end, int thread) {
    const photon__layernorm_args *a = (const photon__layernorm_args *)ctx;
    size_t n;
    int i, C = a->C;
    (void)thread;
    for (n = begin; n < end; n++) {
        const float *x = a->x + n * C;
        float *o = a->out + n * C;
        float m = 0.0f, v = 0.0f, s;
        for (i = 0; i < C; i++) m += x[i];
        m /= C;
        for (i = 0; i < C; i++) v += (x[i] - m) * (x[i] - m);
        v /= C;
        s = 1.0f / sqrtf(v + PHOTON__LN_EPS);
        for (i = 0; i < C; i++) o[i] = (x[i] - m) * s * a->weight[i] + a->bias[i];
        a->mean[n] = m;
        a->rstd[n] = s;
    }
}

static void photon__layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                                      const float *bias, int N, int C) {
    photon__layernorm_args a;
    memset(&a, 0, sizeof a);
    a.out = out, a.mean = mean, a.rstd = rstd, a.x = inp, a.weight = weight, a.bias = bias, a.N = N, a.C = C;
    photon__parallel_range((size_t)N, 8, photon__layernorm_forward_rows, &a);
}

/* With xhat = (x - mean) * rstd and g = dout * weight:
   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), by rows;
   dweight = sum over rows of dout * xhat, dbias = sum of dout, by columns. */
static void photon__layernorm_backward_rows(void *ctx, size_t begin, size_t end, int thread) {
    const photon__layernorm_args *a = (const photon__layernorm_args *)ctx;
    size_t n;
    int i, C = a->C;
    (void)thread;
    for (n = begin; n < end; n++) {
        const float *x = a->x + n * C, *d = a->dout + n * C, *w = a->weight;
        float *dx = a->dx + n * C, mean = a->saved_mean[n], rstd = a->saved_rstd[n];
        float g_mean = 0.0f, gx_mean = 0.0f;
        for (i = 0; i < C; i++) {
            float xhat = (x[i] - mean) * rstd;
            g_mean += d[i] * w[i];
            gx_mean += d[i] * w[i] * xhat;
        }
        g_mean /= C;
        gx_mean /= C;
        for (i = 0; i < C; i++) {
            float xhat = (x[i] - mean) * rstd;
            dx[i] += (d[i] * w[i] - g_mean - xhat * gx_mean) * rstd;
        }
    }
}

static void photon__layernorm_backward_cols(void *ctx, size_t begin, size_t end, int thread) {
    const photon__layernorm_args *a = (const photon__layernorm_args *)ctx;
    size_t n, c, C = (size_t)a->C, N = (size_t)a->N;
    (void)thread;
    for (n = 0; n < N; n++) {
        const float *x = a->x + n * C, *d = a->dout + n * C;
        float mean = a->saved_mean[n], rstd = a->saved_rstd[n];
        for (c = begin; c < end; c++) {
            a->dweight[c] += d[c] * ((x[c] - mean) * rstd);
            a->dbias[c] += d[c];
        }
    }
}

static void photon__layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                       const float *weight, const float *mean, const float *rstd, int N, int C) {
    photon__layernorm_args a;
    memset(&a, 0, sizeof a);
    a.dx = dinp, a.dweight = dweight, a.dbias = dbias, a.dout = dout, a.x = inp, a.weight = weight;
    a.saved_mean = mean, a.saved_rstd = rstd, a.N = N, a.C = C;
    photon__parallel_range((size_t)N, 8, photon__layernorm_backward_rows, &a);
    photon__parallel_range((size_t)C, 32, photon__layernorm_backward_cols, &a);
}

/* --- linear layer: out (N,OC) = inp (N,IC) x W (IC,OC) + bias (OC) --- */

/* The definition, as three loops: out[n][o] = bias[o] + sum_i inp[n][i] W[i][o].
   The fast version below computes the same with photon__gemm (>>gemm);
   tests/test_photon.c checks that the two agree. */
PHOTON__MAYBE_UNUSED static void photon__matmul_forward_naive(float *out, const float *inp, const float *w, const float *bias, int N, int IC,
                                         int OC) {
    int n, o, i;
    for (n = 0; n < N; n++)
        for (o = 0; o < OC; o++) {
            float acc = bias ? bias[o] : 0.0f;
            for (i = 0; i < IC; i++) acc += inp[(size_t)n * IC + i] * w[(size_t)i * OC + o];
            out[(size_t)n * OC + o] = acc;
        }
}

static void photon__matmul_forward(float *out, const float *inp, const float *w, const float *bias, int N, int IC,
                                   int OC) {
    int n;
    for (n = 0; n < N; n++) {
        if (bias) memcpy(out + (size_t)n * OC, bias, (size_t)OC * sizeof(float));
        else memset(out + (size_t)n * OC, 0, (size_t)OC * sizeof(float));
    }
    photon__gemm(N, OC, IC, inp, IC, 0, w, OC, 0, out, OC, 1);
}

/* Column sums of a (N,C) matrix added to sums (C): each task owns a range of
   columns and adds the rows in order. */
typedef struct photon__colsum_job {
    float *sums;
    const float *m;
    int N, C;
} photon__colsum_job;

static void photon__colsum_body(void *ctx, size_t begin, size_t end, int thread) {
    const photon__colsum_job *j = (const photon__colsum_job *)ctx;
    int n;
    size_t c;
    (void)thread;
    for (n = 0; n < j->N; n++) {
        const float *row = j->m + (size_t)n * j->C;
        for (c = begin; c < end; c++) j->sums[c] += row[c];
    }
}

static void photon__colsum(float *sums, const float *m, int N, int C) {
    photon__colsum_job j;
    j.sums = sums, j.m = m, j.N = N, j.C = C;
    photon__parallel_range((size_t)C, 64, photon__colsum_body, &j);
}

/* dinp += dout W^T, dW += inp^T dout, dbias += column sums of dout. */
static void photon__matmul_backward(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                                    const float *w, int N, int IC, int OC) {
    photon__gemm(N, IC, OC, dout, OC, 0, w, OC, 1, dinp, IC, 1);
    photon__gemm(IC, OC, N, inp, IC, 1, dout, OC, 0, dw, OC, 1);
    if (dbias) photon__colsum(dbias, dout, N, OC);
}

/* --- causal multi-head self-attention ---
   qkv (B,T,3C) holds q, k, v side by side; head h owns columns h*hs..h*hs+hs
   of each. For position t, head h: att[t2] = softmax_t2<=t(q.k[t2] / sqrt(hs)),
   out = sum_t2 att[t2] v[t2]. att (B,NH,T,T) is kept for the backward pass. */

typedef struct photon__attention_args {
    float *out, *att;                    /* forward: (B,T,C), (B,NH,T,T) */
    float *dqkv;                         /* backward: (B,T,3C) */
    const float *qkv, *dout, *saved_att;
    int B, T, C, NH;
} photon__attention_args;

/* One (batch row, head) pair: every query position t over keys t2 <= t. */
static void photon__attention_forward_task(void *ctx, int task, int thread) {
    const photon__attention_args *j = (const photon__attention_args *)ctx;
    int T = j->T, C = j->C, NH = j->NH, hs = C / NH, b = task / NH, h = task % NH, t, t2, i;
    float scale = 1.0f / sqrtf((float)hs);
    (void)thread;
    for (t = 0; t < T; t++) {
        const float *q = j->qkv + ((size_t)b * T + t) * 3 * C + h * hs;
        float *a = j->att + (((size_t)b * NH + h) * T + t) * T;
        float *o = j->out + ((size_t)b * T + t) * C + h * hs;
        float maxval = -FLT_MAX, sum = 0.0f;
        for (t2 = 0; t2 <= t; t2++) {
            const float *k = j->qkv + ((size_t)b * T + t2) * 3 * C + C + h * hs;
            float s = 0.0f;
            for (i = 0; i < hs; i++) s += q[i] * k[i];
            s *= scale;
            a[t2] = s;
            if (s > maxval) maxval = s;
        }
        photon__exp_shifted(a, a, maxval, (size_t)t + 1);
        for (t2 = 0; t2 <= t; t2++) sum += a[t2];
        for (t2 = 0; t2 <= t; t2++) a[t2] /= sum;
        for (t2 = t + 1; t2 < T; t2++) a[t2] = 0.0f;
        for (i = 0; i < hs; i++) o[i] = 0.0f;
        for (t2 = 0; t2 <= t; t2++) {
            const float *v = j->qkv + ((size_t)b * T + t2) * 3 * C + 2 * C + h * hs;
            for (i = 0; i < hs; i++) o[i] += a[t2] * v[i];
        }
    }
}

static void photon__attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH) {
    photon__attention_args j;
    memset(&j, 0, sizeof j);
    j.out = out, j.att = att, j.qkv = qkv, j.B = B, j.T = T, j.C = C, j.NH = NH;
    photon__parallel(B * NH, photon__attention_forward_task, &j);
}

/* datt[t2] = dout.v[t2]; the softmax backward gives
   dscore[t2] = att[t2] (datt[t2] - sum_j att[j] datt[j]); then
   dq += dscore[t2] k[t2] / sqrt(hs), dk[t2] += dscore[t2] q / sqrt(hs),
   dv[t2] += att[t2] dout. A (batch row, head) pair writes only its own
   columns of dqkv, so the pairs run in parallel. */
static void photon__attention_backward_task(void *ctx, int task, int thread) {
    const photon__attention_args *j = (const photon__attention_args *)ctx;
    int T = j->T, C = j->C, NH = j->NH, hs = C / NH, b = task / NH, h = task % NH, t, t2, i;
    float scale = 1.0f / sqrtf((float)hs), *datt = photon__scratch(thread, (size_t)T);
    PHOTON_ASSERT(datt != NULL);
    for (t = 0; t < T; t++) {
        const float *q = j->qkv + ((size_t)b * T + t) * 3 * C + h * hs;
        float *dq = j->dqkv + ((size_t)b * T + t) * 3 * C + h * hs;
        const float *a = j->saved_att + (((size_t)b * NH + h) * T + t) * T;
        const float *d = j->dout + ((size_t)b * T + t) * C + h * hs;
        float weighted = 0.0f;
        for (t2 = 0; t2 <= t; t2++) {
            const float *v = j->qkv + ((size_t)b * T + t2) * 3 * C + 2 * C + h * hs;
            float *dv = j->dqkv + ((size_t)b * T + t2) * 3 * C + 2 * C + h * hs;
            float s = 0.0f;
            for (i = 0; i < hs; i++) {
                s += d[i] * v[i];
                dv[i] += a[t2] * d[i];
            }
            datt[t2] = s;
            weighted += a[t2] * s;
        }
        for (t2 = 0; t2 <= t; t2++) {
            const float *k = j->qkv + ((size_t)b * T + t2) * 3 * C + C + h * hs;
            float *dk = j->dqkv + ((size_t)b * T + t2) * 3 * C + C + h * hs;
            float dscore = a[t2] * (datt[t2] - weighted) * scale;
            for (i = 0; i < hs; i++) {
                dq[i] += dscore * k[i];
                dk[i] += dscore * q[i];
            }
        }
    }
}

static void photon__attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, int B,
                                       int T, int C, int NH) {
    photon__attention_args j;
    memset(&j, 0, sizeof j);
    j.dqkv = dqkv, j.dout = dout, j.qkv = qkv, j.saved_att = att, j.B = B, j.T = T, j.C = C, j.NH = NH;
    photon__parallel(B * NH, photon__attention_backward_task, &j);
}

/* --- GELU, tanh approximation (GPT-2's "gelu_new") --- */

#define PHOTON__GELU_K 0.7978845608028654f /* sqrt(2/pi) */

#define PHOTON__CHUNK 256

/* elementwise layers: GELU and the residual add */
typedef struct photon__elementwise_args {
    float *out, *dx;          /* forward, backward of GELU */
    float *da, *db;           /* backward of the residual */
    const float *x, *a, *b, *dout;
} photon__elementwise_args;

/* th[i] = tanh(sqrt(2/pi) (x + 0.044715 x^3)) for a chunk of x */
static void photon__gelu_tanh(float *th, const float *x, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) th[i] = PHOTON__GELU_K * (x[i] + 0.044715f * x[i] * x[i] * x[i]);
    photon__tanh_array(th, th, n);
}

static void photon__gelu_forward_range(void *ctx, size_t begin, size_t end, int thread) {
    const photon__elementwise_args *a = (const photon__elementwise_args *)ctx;
    float th[PHOTON__CHUNK];
    size_t c, i;
    (void)thread;
    for (c = begin; c < end; c += PHOTON__CHUNK) {
        size_t n = end - c < PHOTON__CHUNK ? end - c : PHOTON__CHUNK;
        const float *x = a->x + c;
        photon__gelu_tanh(th, x, n);
        for (i = 0; i < n; i++) a->out[c + i] = 0.5f * x[i] * (1.0f + th[i]);
    }
}

static void photon__gelu_forward(float *out, const float *inp, size_t n) {
    photon__elementwise_args a;
    memset(&a, 0, sizeof a);
    a.out = out, a.x = inp;
    photon__parallel_range(n, 16384, photon__gelu_forward_range, &a);
}

static void photon__gelu_backward_range(void *ctx, size_t begin, size_t end, int thread) {
    const photon__elementwise_args *a = (const photon__elementwise_args *)ctx;
    float th[PHOTON__CHUNK];
    size_t c, i;
    (void)thread;
    for (c = begin; c < end; c += PHOTON__CHUNK) {
        size_t n = end - c < PHOTON__CHUNK ? end - c : PHOTON__CHUNK;
        const float *x = a->x + c, *d = a->dout + c;
        photon__gelu_tanh(th, x, n);
        for (i = 0; i < n; i++) {
            float sech2 = 1.0f - th[i] * th[i];
            float local = 0.5f * (1.0f + th[i]) +
                          0.5f * x[i] * sech2 * PHOTON__GELU_K * (1.0f + 3.0f * 0.044715f * x[i] * x[i]);
            a->dx[c + i] += local * d[i];
        }
    }
}

static void photon__gelu_backward(float *dinp, const float *inp, const float *dout, size_t n) {
    photon__elementwise_args a;
    memset(&a, 0, sizeof a);
    a.dx = dinp, a.x = inp, a.dout = dout;
    photon__parallel_range(n, 16384, photon__gelu_backward_range, &a);
}

/* --- residual connection: out = a + b --- */

static void photon__residual_forward_range(void *ctx, size_t begin, size_t end, int thread) {
    const photon__elementwise_args *r = (const photon__elementwise_args *)ctx;
    size_t i;
    (void)thread;
    for (i = begin; i < end; i++) r->out[i] = r->a[i] + r->b[i];
}

static void photon__residual_forward(float *out, const float *a, const float *b, size_t n) {
    photon__elementwise_args r;
    memset(&r, 0, sizeof r);
    r.out = out, r.a = a, r.b = b;
    photon__parallel_range(n, 16384, photon__residual_forward_range, &r);
}

static void photon__residual_backward_range(void *ctx, size_t begin, size_t end, int thread) {
    const photon__elementwise_args *r = (const photon__elementwise_args *)ctx;
    size_t i;
    (void)thread;
    for (i = begin; i < end; i++) {
        r->da[i] += r->dout[i];
        r->db[i] += r->dout[i];
    }
}

static void photon__residual_backward(float *da, float *db, const float *dout, size_t n) {
    photon__elementwise_args r;
    memset(&r, 0, sizeof r);
    r.da = da, r.db = db, r.dout = dout;
    photon__parallel_range(n, 16384, photon__residual_backward_range, &r);
}

/* --- output head, tied to the token embedding: logits (N,V) = x (N,C) wte^T --- */

static void photon__head_forward(float *logits, const float *x, const float *wte, int N, int C, int V) {
    photon__gemm(N, V, C, x, C, 0, wte, C, 1, logits, V, 0);
}

/* dx += dlogits wte, dwte += dlogits^T x */
static void photon__head_backward(float *dx, float *dwte, const float *dlogits, const float *x, const float *wte,
                                  int N, int C, int V) {
    photon__gemm(N, C, V, dlogits, V, 0, wte, C, 0, dx, C, 1);
    photon__gemm(V, C, N, dlogits, V, 1, x, C, 0, dwte, C, 1);
}

/* --- softmax and cross-entropy: probs = softmax(logits), loss = -log probs[target] ---
   The loss is computed as logsumexp(logits) - logits[target], which stays
   finite where probs[target] underflows to zero. */

typedef struct photon__crossentropy_args {
    float *probs, *losses;               /* forward: (N,V), (N) */
    float *dlogits;                      /* backward: (N,V), may be probs */
    const float *logits;                 /* (N,V), may be probs */
    const float *saved_probs;
    const int *targets;                  /* (N), may be NULL in the forward pass */
    float dloss;                         /* d (mean loss) / d loss_n */
    int V;
} photon__crossentropy_args;

static void photon__softmax_crossentropy_rows(void *ctx, size_t begin, size_t end, int thread) {
    const photon__crossentropy_args *a = (const photon__crossentropy_args *)ctx;
    size_t n;
    int v, V = a->V;
    (void)thread;
    for (n = begin; n < end; n++) {
        const float *l = a->logits + n * V;
        float *p = a->probs + n * V;
        float maxval = photon__max(l, (size_t)V), sum, inv, target = a->targets ? l[a->targets[n]] : 0.0f;
        photon__exp_shifted(p, l, maxval, (size_t)V); /* p may be l */
        sum = photon__sum(p, (size_t)V);
        inv = 1.0f / sum;
        for (v = 0; v < V; v++) p[v] *= inv;
        if (a->targets) a->losses[n] = logf(sum) - (target - maxval);
    }
}

static void photon__softmax_crossentropy_forward(float *probs, float *losses, const float *logits, const int *targets,
                                                 int N, int V) {
    photon__crossentropy_args a;
    memset(&a, 0, sizeof a);
    a.probs = probs, a.losses = losses, a.logits = logits, a.targets = targets, a.V = V;
    photon__parallel_range((size_t)N, 1, photon__softmax_crossentropy_rows, &a);
}

/* d loss_n / d logits = (probs - onehot(target)) * dloss, written over the
   probabilities (dlogits may be probs: each element is read once, then
   written) */
static void photon__crossentropy_softmax_rows(void *ctx, size_t begin, size_t end, int thread) {
    const photon__crossentropy_args *a = (const photon__crossentropy_args *)ctx;
    size_t n;
    int v, V = a->V;
    (void)thread;
    for (n = begin; n < end; n++) {
        const float *p = a->saved_probs + n * V;
        float *d = a->dlogits + n * V;
        for (v = 0; v < V; v++) d[v] = p[v] * a->dloss;
        d[a->targets[n]] -= a->dloss;
    }
}

static void photon__crossentropy_softmax_backward(float *dlogits, const float *probs, const int *targets,
                                                  float dloss, int N, int V) {
    photon__crossentropy_args a;
    memset(&a, 0, sizeof a);
    a.dlogits = dlogits, a.saved_probs = probs, a.targets = targets, a.dloss = dloss, a.V = V;
    photon__parallel_range((size_t)N, 1, photon__crossentropy_softmax_rows, &a);
}

/* ======================================================================= */
/* >>model: forward and backward over all layers                           */
/* ======================================================================= */

/* Points the activation views into `base` (or only counts, if base is NULL)
   and returns the number of floats they take for B rows of T tokens. */
/* The gradient buffers hold only what the backward pass reads: no
   statistics, no attention matrix (its gradient is formed row by row), no
   logits (their gradient overwrites the probabilities in place). */
static size_t photon__activation_layout(photon_activations *a, float *base, const photon_config *c, int B, int T,
                                        int gradients) {
    size_t N = (size_t)B * T, C = (size_t)c->n_embd, L = (size_t)c->n_layer;
    size_t NH = (size_t)c->n_head, V = (size_t)c->vocab_size, used = 0, k;
    size_t g = gradients ? 0 : 1; /* multiplies what only the forward keeps */
    float **fields[] = {&a->encoded, &a->ln1, &a->ln1_mean, &a->ln1_rstd, &a->qkv, &a->atty, &a->att,
                        &a->attproj, &a->residual2, &a->ln2, &a->ln2_mean, &a->ln2_rstd, &a->fch, &a->fch_gelu,
                        &a->fcproj, &a->residual3, &a->lnf, &a->lnf_mean, &a->lnf_rstd, &a->logits, &a->probs,
                        &a->losses};
    size_t sizes[] = {N * C, L * N * C, g * L * N, g * L * N, L * N * 3 * C, L * N * C, g * L * B * NH * T * T,
                      L * N * C, L * N * C, L * N * C, g * L * N, g * L * N, L * N * 4 * C, L * N * 4 * C,
                      L * N * C, L * N * C, N * C, g * N, g * N, g * N * V, 0,
                      g * N};
    for (k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        *fields[k] = base && sizes[k] ? base + used : NULL;
        used += sizes[k];
    }
    a->probs = a->logits; /* softmax runs in place */
    return used;
}

PHOTONDEF size_t photon_activation_floats(const photon_config *config, int B, int T) {
    photon_activations probe;
    return photon__activation_layout(&probe, NULL, config, B, T, 0);
}

/* Makes sure the activation buffers hold B rows of T tokens. */
static photon_result photon__ensure_activations(photon_model *m, int B, int T, photon_error *err) {
    size_t n;
    if (m->act_memory && B <= m->max_B && T <= m->max_T) return PHOTON_OK;
    if (B < m->max_B) B = m->max_B;
    if (T < m->max_T) T = m->max_T;
    PHOTON_FREE(m->act_memory);
    PHOTON_FREE(m->grad_act_memory);
    PHOTON_FREE(m->inputs);
    PHOTON_FREE(m->targets);
    n = photon__activation_layout(&m->acts, NULL, &m->config, B, T, 0);
    m->act_memory = (float *)photon__calloc(n, sizeof(float));
    n = photon__activation_layout(&m->grad_acts, NULL, &m->config, B, T, 1);
    m->grad_act_memory = (float *)photon__calloc(n, sizeof(float));
    m->inputs = (int *)photon__calloc((size_t)B * T, sizeof(int));
    m->targets = (int *)photon__calloc((size_t)B * T, sizeof(int));
    if (!m->act_memory || !m->grad_act_memory || !m->inputs || !m->targets) {
        m->max_B = m->max_T = 0;
        return photon__fail(err, PHOTON_ERR_MEMORY, "cannot allocate activations for batch %d x sequence %d", B, T);
    }
    m->max_B = B;
    m->max_T = T;
    return PHOTON_OK;
}

static photon_result photon__check_tokens(const int *tokens, size_t n, int vocab, const char *what,
                                          photon_error *err) {
    size_t i;
    for (i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= vocab)
            return photon__fail(err, PHOTON_ERR_ARGUMENT, "%s token %d at index %zu is outside the vocabulary (0 to %d)",
                                what, tokens[i], i, vocab - 1);
    return PHOTON_OK;
}

PHOTONDEF photon_result photon_forward(photon_model *m, const int *inputs, const int *targets, int B, int T,
                                       float *loss, photon_error *err) {
    const photon_config *c = &m->config;
    int C = c->n_embd, NH = c->n_head, V = c->vocab_size, L = c->n_layer, l;
    size_t N = (size_t)B * T, NC;
    photon_activations *a = &m->acts;
    photon_result r;
    if (B < 1 || T < 1 || T > c->n_ctx)
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "batch %d x sequence %d: both must be positive and the sequence at "
                            "most the context length %d", B, T, c->n_ctx);
    if ((r = photon__check_tokens(inputs, N, V, "input", err)) != PHOTON_OK) return r;
    if (targets && (r = photon__check_tokens(targets, N, V, "target", err)) != PHOTON_OK) return r;
    if ((r = photon__ensure_activations(m, B, T, err)) != PHOTON_OK) return r;
    photon__activation_layout(a, m->act_memory, c, B, T, 0);
    photon__activation_layout(&m->grad_acts, m->grad_act_memory, c, B, T, 1);
    m->B = B;
    m->T = T;
    m->has_targets = targets != NULL;
    memcpy(m->inputs, inputs, N * sizeof(int));
    if (targets) memcpy(m->targets, targets, N * sizeof(int));
    NC = N * (size_t)C;

    photon__encoder_forward(a->encoded, inputs, photon__wte(m->params), photon__wpe(m->params, c), B, T, C);
    for (l = 0; l < L; l++) {
        photon__block w = photon__block_at(m->params, c, l);
        const float *residual = l == 0 ? a->encoded : a->residual3 + (size_t)(l - 1) * NC;
        float *ln1 = a->ln1 + l * NC, *ln1_mean = a->ln1_mean + l * N, *ln1_rstd = a->ln1_rstd + l * N;
        float *qkv = a->qkv + l * NC * 3, *atty = a->atty + l * NC, *att = a->att + l * N * NH * T;
        float *attproj = a->attproj + l * NC, *residual2 = a->residual2 + l * NC;
        float *ln2 = a->ln2 + l * NC, *ln2_mean = a->ln2_mean + l * N, *ln2_rstd = a->ln2_rstd + l * N;
        float *fch = a->fch + l * NC * 4, *fch_gelu = a->fch_gelu + l * NC * 4;
        float *fcproj = a->fcproj + l * NC, *residual3 = a->residual3 + l * NC;
        /* attention sub-block: x = x + proj(attn(ln_1(x))) */
        photon__layernorm_forward(ln1, ln1_mean, ln1_rstd, residual, w.ln1w, w.ln1b, (int)N, C);
        photon__matmul_forward(qkv, ln1, w.qkvw, w.qkvb, (int)N, C, 3 * C);
        photon__attention_forward(atty, att, qkv, B, T, C, NH);
        photon__matmul_forward(attproj, atty, w.attprojw, w.attprojb, (int)N, C, C);
        photon__residual_forward(residual2, residual, attproj, NC);
        /* MLP sub-block: x = x + proj(gelu(fc(ln_2(x)))) */
        photon__layernorm_forward(ln2, ln2_mean, ln2_rstd, residual2, w.ln2w, w.ln2b, (int)N, C);
        photon__matmul_forward(fch, ln2, w.fcw, w.fcb, (int)N, C, 4 * C);
        photon__gelu_forward(fch_gelu, fch, NC * 4);
        photon__matmul_forward(fcproj, fch_gelu, w.fcprojw, w.fcprojb, (int)N, 4 * C, C);
        photon__residual_forward(residual3, residual2, fcproj, NC);
    }
    {
        float *lnf = photon__lnf(m->params, c);
        photon__layernorm_forward(a->lnf, a->lnf_mean, a->lnf_rstd, a->residual3 + (size_t)(L - 1) * NC, lnf, lnf + C,
                                  (int)N, C);
    }
    photon__head_forward(a->logits, a->lnf, photon__wte(m->params), (int)N, C, V);
    photon__softmax_crossentropy_forward(a->probs, a->losses, a->logits, targets, (int)N, V);
    if (targets) {
        double sum = 0.0;
        size_t i;
        for (i = 0; i < N; i++) sum += a->losses[i];
        m->loss = (float)(sum / (double)N);
        if (loss) *loss = m->loss;
    }
    return PHOTON_OK;
}

PHOTONDEF photon_result photon_backward(photon_model *m, photon_error *err) {
    const photon_config *c = &m->config;
    int B = m->B, T = m->T, C = c->n_embd, NH = c->n_head, V = c->vocab_size, L = c->n_layer, l;
    size_t N = (size_t)B * T, NC = N * (size_t)C;
    const photon_activations *a = &m->acts;
    photon_activations *g = &m->grad_acts;
    float *lnfw = photon__lnf(m->params, c), *dlnfw = photon__lnf(m->grads, c);
    if (!m->act_memory || !m->has_targets)
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "backward needs a forward pass with targets first");
    memset(m->grad_act_memory, 0, photon__activation_layout(g, NULL, c, B, T, 1) * sizeof(float));
    photon__activation_layout(g, m->grad_act_memory, c, B, T, 1);
    g->logits = g->probs = a->probs; /* dlogits overwrite the probabilities */

    /* the loss is the mean over the N positions */
    photon__crossentropy_softmax_backward(g->logits, a->probs, m->targets, 1.0f / (float)N, (int)N, V);
    photon__head_backward(g->lnf, photon__wte(m->grads), g->logits, a->lnf, photon__wte(m->params), (int)N, C, V);
    photon__layernorm_backward(g->residual3 + (size_t)(L - 1) * NC, dlnfw, dlnfw + C, g->lnf,
                               a->residual3 + (size_t)(L - 1) * NC, lnfw, a->lnf_mean, a->lnf_rstd, (int)N, C);
    for (l = L - 1; l >= 0; l--) {
        photon__block w = photon__block_at(m->params, c, l), dw = photon__block_at(m->grads, c, l);
        const float *residual = l == 0 ? a->encoded : a->residual3 + (size_t)(l - 1) * NC;
        float *dresidual = l == 0 ? g->encoded : g->residual3 + (size_t)(l - 1) * NC;
        size_t o = l * NC, o1 = l * N;
        /* MLP sub-block, in reverse */
        photon__residual_backward(g->residual2 + o, g->fcproj + o, g->residual3 + o, NC);
        photon__matmul_backward(g->fch_gelu + 4 * o, dw.fcprojw, dw.fcprojb, g->fcproj + o, a->fch_gelu + 4 * o,
                                w.fcprojw, (int)N, 4 * C, C);
        photon__gelu_backward(g->fch + 4 * o, a->fch + 4 * o, g->fch_gelu + 4 * o, 4 * NC);
        photon__matmul_backward(g->ln2 + o, dw.fcw, dw.fcb, g->fch + 4 * o, a->ln2 + o, w.fcw, (int)N, C, 4 * C);
        photon__layernorm_backward(g->residual2 + o, dw.ln2w, dw.ln2b, g->ln2 + o, a->residual2 + o, w.ln2w,
                                   a->ln2_mean + o1, a->ln2_rstd + o1, (int)N, C);
        /* attention sub-block, in reverse */
        photon__residual_backward(dresidual, g->attproj + o, g->residual2 + o, NC);
        photon__matmul_backward(g->atty + o, dw.attprojw, dw.attprojb, g->attproj + o, a->atty + o, w.attprojw,
                                (int)N, C, C);
        photon__attention_backward(g->qkv + 3 * o, g->atty + o, a->qkv + 3 * o, a->att + o1 * NH * T, B, T, C, NH);
        photon__matmul_backward(g->ln1 + o, dw.qkvw, dw.qkvb, g->qkv + 3 * o, a->ln1 + o, w.qkvw, (int)N, C, 3 * C);
        photon__layernorm_backward(dresidual, dw.ln1w, dw.ln1b, g->ln1 + o, residual, w.ln1w, a->ln1_mean + o1,
                                   a->ln1_rstd + o1, (int)N, C);
    }
    photon__encoder_backward(photon__wte(m->grads), photon__wpe(m->grads, c), g->encoded, m->inputs, B, T, C);
    return PHOTON_OK;
}

/* ======================================================================= */
/* >>adamw: the local optimizer (schedule, clipping, AdamW)                */
/* ======================================================================= */

PHOTONDEF float photon_schedule_lr(const photon_schedule *s, uint64_t step) {
    double progress;
    if (step < s->warmup_steps) return (float)((double)s->peak_lr * (double)(step + 1) / (double)s->warmup_steps);
    if (s->total_steps <= s->warmup_steps) return s->peak_lr; /* no decay span */
    progress = (double)(step - s->warmup_steps) / (double)(s->total_steps - s->warmup_steps);
    if (progress > 1.0) progress = 1.0;
    return (float)((double)s->peak_lr *
                   (s->min_lr_frac + (1.0 - s->min_lr_frac) * 0.5 * (1.0 + cos(3.141592653589793 * progress))));
}

PHOTONDEF photon_result photon_adamw_state_init(photon_adamw_state *s, size_t n, photon_error *err) {
    s->n = n;
    s->t = 0;
    s->m = (float *)photon__calloc(n, sizeof(float));
    s->v = (float *)photon__calloc(n, sizeof(float));
    if (!s->m || !s->v) {
        photon_adamw_state_free(s);
        return photon__fail(err, PHOTON_ERR_MEMORY, "cannot allocate AdamW moments for %.0f parameters", (double)n);
    }
    return PHOTON_OK;
}

PHOTONDEF void photon_adamw_state_reset(photon_adamw_state *s) {
    if (s->n) {
        memset(s->m, 0, s->n * sizeof(float));
        memset(s->v, 0, s->n * sizeof(float));
    }
    s->t = 0;
}

PHOTONDEF void photon_adamw_state_free(photon_adamw_state *s) {
    PHOTON_FREE(s->m);
    PHOTON_FREE(s->v);
    s->m = s->v = NULL;
    s->n = 0;
    s->t = 0;
}

/* The sum of squares in fixed blocks of 2^16 gradients, each in double,
   then the blocks in order: the same bits on any number of threads. */
#define PHOTON__NORM_BLOCK 65536

typedef struct photon__norm_job {
    const float *g;
    size_t n;
    double *partial;
} photon__norm_job;

static void photon__norm_task(void *ctx, int task, int thread) {
    const photon__norm_job *j = (const photon__norm_job *)ctx;
    size_t i = (size_t)task * PHOTON__NORM_BLOCK, end = i + PHOTON__NORM_BLOCK < j->n ? i + PHOTON__NORM_BLOCK : j->n;
    double sum = 0.0;
    (void)thread;
    for (; i < end; i++) sum += (double)j->g[i] * (double)j->g[i];
    j->partial[task] = sum;
}

PHOTONDEF double photon_grad_norm(const photon_model *m) {
    photon__norm_job j;
    int blocks = (int)((m->num_params + PHOTON__NORM_BLOCK - 1) / PHOTON__NORM_BLOCK), b;
    double sum = 0.0;
    j.g = m->grads;
    j.n = m->num_params;
    j.partial = (double *)photon__calloc((size_t)blocks, sizeof(double));
    if (!j.partial) { /* no memory for the partial sums: the same blocks, one after another */
        for (b = 0; b < blocks; b++) {
            double block = 0.0;
            size_t i, end = (size_t)(b + 1) * PHOTON__NORM_BLOCK;
            for (i = (size_t)b * PHOTON__NORM_BLOCK; i < m->num_params && i < end; i++)
                block += (double)m->grads[i] * (double)m->grads[i];
            sum += block;
        }
        return sqrt(sum);
    }
    photon__parallel(blocks, photon__norm_task, &j);
    for (b = 0; b < blocks; b++) sum += j.partial[b];
    PHOTON_FREE(j.partial);
    return sqrt(sum);
}

/* AdamW (Loshchilov & Hutter), as PyTorch computes it, with t counted from 1:
     m = b1 m + (1 - b1) g          v = b2 v + (1 - b2) g^2
     p = p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) - lr wd p
   The decay term applies to matrices and embeddings only. */
typedef struct photon__adamw_job {
    float *p, *g, *m, *v;
    float clip, bc1, bc2, lr, wd;
    const photon_adamw_config *hp;
} photon__adamw_job;

static void photon__adamw_range(void *ctx, size_t begin, size_t end, int thread) {
    const photon__adamw_job *j = (const photon__adamw_job *)ctx;
    float b1 = j->hp->beta1, b2 = j->hp->beta2, eps = j->hp->eps;
    size_t i;
    (void)thread;
    for (i = begin; i < end; i++) {
        float grad = j->g[i] * j->clip;
        j->m[i] = b1 * j->m[i] + (1.0f - b1) * grad;
        j->v[i] = b2 * j->v[i] + (1.0f - b2) * grad * grad;
        j->p[i] -= j->lr * ((j->m[i] / j->bc1) / (sqrtf(j->v[i] / j->bc2) + eps) + j->wd * j->p[i]);
    }
}

PHOTONDEF void photon_adamw_update(photon_model *model, photon_adamw_state *s, const photon_adamw_config *hp,
                                   float lr, double grad_norm) {
    photon__adamw_job j;
    int k;
    j.clip = 1.0f;
    if (hp->grad_clip > 0.0f && grad_norm > hp->grad_clip) j.clip = (float)(hp->grad_clip / (grad_norm + 1e-6));
    s->t++;
    j.bc1 = (float)(1.0 - pow(hp->beta1, (double)s->t));
    j.bc2 = (float)(1.0 - pow(hp->beta2, (double)s->t));
    j.lr = lr;
    j.hp = hp;
    for (k = 0; k < model->num_tensors; k++) {
        const photon_tensor_info *t = &model->tensors[k];
        j.wd = t->decay ? hp->weight_decay : 0.0f;
        j.p = model->params + t->offset, j.g = model->grads + t->offset;
        j.m = s->m + t->offset, j.v = s->v + t->offset;
        photon__parallel_range(t->size, 16384, photon__adamw_range, &j);
    }
}

PHOTONDEF photon_result photon_train_step(photon_model *model, photon_adamw_state *state,
                                          const photon_adamw_config *hp, const photon_schedule *schedule,
                                          const int *inputs, const int *targets, int B, int T,
                                          photon_step_stats *stats, photon_error *err) {
    photon_step_stats st;
    photon_result r;
    if (state->n != model->num_params)
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "optimizer state holds %.0f values, the model %.0f parameters",
                            (double)state->n, (double)model->num_params);
    photon_zero_grad(model);
    if ((r = photon_forward(model, inputs, targets, B, T, &st.loss, err)) != PHOTON_OK) return r;
    if (!photon__is_finite(st.loss))
        return photon__fail(err, PHOTON_ERR_NUMERIC, "loss is %f at global step %llu: training diverged", st.loss,
                            (unsigned long long)model->step);
    if ((r = photon_backward(model, err)) != PHOTON_OK) return r;
    st.grad_norm = photon_grad_norm(model);
    if (!(st.grad_norm - st.grad_norm == 0.0))
        return photon__fail(err, PHOTON_ERR_NUMERIC, "gradient norm is %f at global step %llu: training diverged",
                            st.grad_norm, (unsigned long long)model->step);
    st.lr = photon_schedule_lr(schedule, model->step);
    photon_adamw_update(model, state, hp, st.lr, st.grad_norm);
    model->step++;
    model->tokens_seen += (uint64_t)B * (uint64_t)T;
    if (stats) *stats = st;
    return PHOTON_OK;
}

/* ======================================================================= */
/* >>data: token shards, text, the loader, client splits                   */
/* ======================================================================= */

#define PHOTON__SHARD_MAGIC 20240520
#define PHOTON__SHARD_VERSION 1
#define PHOTON__SHARD_HEADER_BYTES 1024

static int photon__is_shard(const unsigned char *data, size_t size) {
    return size >= 4 && photon__le32(data) == PHOTON__SHARD_MAGIC;
}

/* Appends a file's tokens to ds; *is_text says whether it was text. */
static photon_result photon__append_file(photon_dataset *ds, const char *path, const photon_encoder *encoder,
                                         int *is_text, photon_error *err) {
    unsigned char *data;
    uint16_t *encoded = NULL;
    size_t size, count, i, offset = 0;
    uint16_t *grown;
    photon_result r = photon_read_file(path, &data, &size, err);
    if (r != PHOTON_OK) return r;
    *is_text = !photon__is_shard(data, size);
    if (*is_text && encoder) {
        encoded = (uint16_t *)PHOTON_MALLOC((size ? size : 1) * sizeof(uint16_t));
        if (!encoded) r = photon__fail(err, PHOTON_ERR_MEMORY, "%s: cannot allocate %zu tokens", path, size);
        else {
            photon_error why;
            if ((r = encoder->encode(encoder->ctx, data, size, encoded, &count, &why)) != PHOTON_OK)
                r = photon__fail(err, r, "%s: %s", path, why.message);
            else if (count > size) /* the buffer holds size tokens: a broken encoder, not a file problem */
                r = photon__fail(err, PHOTON_ERR_ARGUMENT, "%s: the encoder returned %zu tokens for %zu bytes", path,
                                 count, size);
        }
        if (r != PHOTON_OK) {
            PHOTON_FREE(encoded);
            PHOTON_FREE(data);
            return r;
        }
        ds->text_bytes += size;
    } else if (*is_text) {
        count = size;
        ds->text_bytes += size;
    } else {
        uint32_t version, ntok;
        if (size < PHOTON__SHARD_HEADER_BYTES) {
            PHOTON_FREE(data);
            return photon__fail(err, PHOTON_ERR_FORMAT, "%s: token shard is truncated: %zu bytes, the header alone is 1024",
                                path, size);
        }
        version = photon__le32(data + 4);
        ntok = photon__le32(data + 8);
        if (version != PHOTON__SHARD_VERSION) {
            PHOTON_FREE(data);
            return photon__fail(err, PHOTON_ERR_FORMAT, "%s: token shard version %u is not supported (expected %d)",
                                path, version, PHOTON__SHARD_VERSION);
        }
        if (size != PHOTON__SHARD_HEADER_BYTES + 2 * (size_t)ntok) {
            PHOTON_FREE(data);
            return photon__fail(err, PHOTON_ERR_FORMAT,
                                "%s: token shard header says %u tokens (%zu bytes) but the file holds %zu bytes", path,
                                ntok, PHOTON__SHARD_HEADER_BYTES + 2 * (size_t)ntok, size);
        }
        count = ntok;
        offset = PHOTON__SHARD_HEADER_BYTES;
    }
    if (count == 0) {
        PHOTON_FREE(data);
        PHOTON_FREE(encoded);
        return photon__fail(err, PHOTON_ERR_FORMAT, "%s: holds no tokens", path);
    }
    grown = (uint16_t *)PHOTON_MALLOC((ds->num_tokens + count) * sizeof(uint16_t));
    if (!grown) {
        PHOTON_FREE(data);
        PHOTON_FREE(encoded);
        return photon__fail(err, PHOTON_ERR_MEMORY, "%s: cannot allocate %zu tokens", path, ds->num_tokens + count);
    }
    if (ds->num_tokens) memcpy(grown, ds->tokens, ds->num_tokens * sizeof(uint16_t));
    for (i = 0; i < count; i++) {
        uint16_t t = encoded ? encoded[i]
                     : *is_text ? data[i] : (uint16_t)(data[offset + 2 * i] | data[offset + 2 * i + 1] << 8);
        grown[ds->num_tokens + i] = t;
    }
    PHOTON_FREE(encoded);
    PHOTON_FREE(ds->tokens);
    ds->tokens = grown;
    ds->num_tokens += count;
    PHOTON_FREE(data);
    return PHOTON_OK;
}

PHOTONDEF photon_result photon_dataset_load(photon_dataset *ds, const char *const *paths, int num_paths,
                                            photon_error *err) {
    return photon_dataset_load_with(ds, paths, num_paths, NULL, err);
}

PHOTONDEF photon_result photon_dataset_load_with(photon_dataset *ds, const char *const *paths, int num_paths,
                                                 const photon_encoder *encoder, photon_error *err) {
    int i, all_text = 1;
    size_t k;
    memset(ds, 0, sizeof *ds);
    if (num_paths < 1) return photon__fail(err, PHOTON_ERR_ARGUMENT, "no data files given");
    for (i = 0; i < num_paths; i++) {
        int is_text;
        photon_result r = photon__append_file(ds, paths[i], encoder, &is_text, err);
        if (r != PHOTON_OK) {
            photon_dataset_free(ds);
            return r;
        }
        all_text &= is_text;
    }
    if (!all_text) ds->text_bytes = 0;
    ds->byte_level = all_text && !encoder;
    if (encoder && encoder->token_bytes) { /* the bytes of every token id, for exact bits per byte */
        ds->token_len = (uint32_t *)photon__calloc((size_t)encoder->vocab_size, sizeof(uint32_t));
        if (!ds->token_len) {
            photon_dataset_free(ds);
            return photon__fail(err, PHOTON_ERR_MEMORY, "cannot allocate the token lengths");
        }
        ds->token_len_count = encoder->vocab_size;
        for (i = 0; i < encoder->vocab_size; i++) ds->token_len[i] = (uint32_t)encoder->token_bytes(encoder->ctx, i);
    }
    if (num_paths == 1) snprintf(ds->source, sizeof ds->source, "%.300s", paths[0]);
    else snprintf(ds->source, sizeof ds->source, "%.280s (+%d more files)", paths[0], num_paths - 1);
    ds->hash = 0xcbf29ce484222325ull; /* FNV-1a over the little-endian tokens */
    for (k = 0; k < ds->num_tokens; k++) {
        ds->hash = (ds->hash ^ (ds->tokens[k] & 0xff)) * 0x100000001b3ull;
        ds->hash = (ds->hash ^ (ds->tokens[k] >> 8)) * 0x100000001b3ull;
        if (ds->tokens[k] > ds->max_token) ds->max_token = ds->tokens[k];
    }
    return PHOTON_OK;
}

PHOTONDEF void photon_dataset_free(photon_dataset *ds) {
    PHOTON_FREE(ds->tokens);
    PHOTON_FREE(ds->token_len);
    memset(ds, 0, sizeof *ds);
}

PHOTONDEF photon_result photon_dataset_check_vocab(const photon_dataset *ds, int vocab_size, photon_error *err) {
    if ((int)ds->max_token >= vocab_size)
        return photon__fail(err, PHOTON_ERR_MISMATCH, "%s: holds token id %d but the model's vocabulary has %d entries%s",
                            ds->source, ds->max_token, vocab_size,
                            ds->byte_level ? " (text is read as bytes: vocab 256 needed)" : "");
    return PHOTON_OK;
}

/* The writer of what photon__append_file reads: the 256-word header, then
   the tokens as little-endian uint16. */
PHOTONDEF photon_result photon_shard_write(const char *path, const uint16_t *tokens, size_t n, photon_error *err) {
    unsigned char header[PHOTON__SHARD_HEADER_BYTES], chunk[8192];
    photon__atomic a;
    size_t i = 0;
    photon_result r;
    if (n > 0x7fffffffu)
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "%s: %zu tokens do not fit one shard (at most 2147483647)", path, n);
    memset(header, 0, sizeof header);
    photon__put_le32(header, PHOTON__SHARD_MAGIC);
    photon__put_le32(header + 4, PHOTON__SHARD_VERSION);
    photon__put_le32(header + 8, (uint32_t)n);
    if ((r = photon__atomic_open(&a, path, err)) != PHOTON_OK) return r;
    fwrite(header, 1, sizeof header, a.f);
    while (i < n) {
        size_t k, m = n - i < sizeof chunk / 2 ? n - i : sizeof chunk / 2;
        for (k = 0; k < m; k++) {
            chunk[2 * k] = (unsigned char)(tokens[i + k] & 0xff);
            chunk[2 * k + 1] = (unsigned char)(tokens[i + k] >> 8);
        }
        fwrite(chunk, 1, 2 * m, a.f);
        i += m;
    }
    return photon__atomic_commit(&a, err);
}

PHOTONDEF photon_result photon_loader_init(photon_loader *loader, const photon_dataset *ds, int B, int T,
                                           photon_error *err) {
    memset(loader, 0, sizeof *loader);
    if (B < 1 || T < 1) return photon__fail(err, PHOTON_ERR_ARGUMENT, "batch %d and sequence %d must be positive", B, T);
    if ((uint64_t)ds->num_tokens < (uint64_t)B * T + 1)
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "%s: holds %zu tokens; a batch of %d x %d needs at least %llu",
                            ds->source, ds->num_tokens, B, T, (unsigned long long)B * T + 1);
    loader->ds = ds;
    loader->B = B;
    loader->T = T;
    return PHOTON_OK;
}

PHOTONDEF void photon_loader_next(photon_loader *loader, int *inputs, int *targets) {
    uint64_t need = (uint64_t)loader->B * loader->T;
    int b, t;
    if (loader->position > loader->ds->num_tokens || loader->position + need + 1 > loader->ds->num_tokens) {
        loader->position = 0;
        loader->epoch++;
    }
    for (b = 0; b < loader->B; b++) {
        const uint16_t *w = loader->ds->tokens + loader->position + (size_t)b * loader->T;
        for (t = 0; t < loader->T; t++) {
            inputs[b * loader->T + t] = w[t];
            targets[b * loader->T + t] = w[t + 1];
        }
    }
    loader->position += need;
}

/* --- a corpus dealt out to clients (photon-data split) --- */

/* The end of the IID chunk that starts at pos: the first line end at or
   after pos + chunk - 1, if one comes within another chunk; else pos + chunk
   moved forward to a character boundary. */
static size_t photon__chunk_end(const unsigned char *s, size_t n, size_t pos, size_t chunk) {
    size_t target = pos + chunk, i, limit;
    if (target >= n) return n;
    limit = target + chunk < n ? target + chunk : n;
    for (i = target - 1; i < limit; i++)
        if (s[i] == '\n') return i + 1;
    while (target < n && (s[target] & 0xc0) == 0x80) target++;
    return target;
}

/* Whole files, largest first (ties: the order given), each to the client
   with the fewest bytes so far (ties: the lowest index). */
static photon_result photon__split_by_source(photon_split_plan *p, const size_t *sizes, photon_error *err) {
    int ns = p->num_sources, nc = p->num_clients, k, c;
    int *order = (int *)photon__calloc((size_t)ns, sizeof(int));
    uint64_t *load = (uint64_t *)photon__calloc((size_t)nc, sizeof(uint64_t));
    photon_result r = PHOTON_OK;
    p->owner = (int *)photon__calloc((size_t)ns, sizeof(int));
    if (!order || !load || !p->owner) r = photon__fail(err, PHOTON_ERR_MEMORY, "cannot allocate the split plan");
    for (k = 0; r == PHOTON_OK && k < ns; k++) { /* insertion sort: stable */
        int v = k, at = k;
        while (at > 0 && sizes[order[at - 1]] < sizes[v]) {
            order[at] = order[at - 1];
            at--;
        }
        order[at] = v;
    }
    for (k = 0; r == PHOTON_OK && k < ns; k++) {
        int best = 0;
        for (c = 1; c < nc; c++)
            if (load[c] < load[best]) best = c;
        p->owner[order[k]] = best;
        load[best] += sizes[order[k]];
        p->bytes[(size_t)best * ns + order[k]] = sizes[order[k]];
        p->pieces[(size_t)best * ns + order[k]] = 1;
    }
    for (c = 0; r == PHOTON_OK && c < nc; c++)
        if (load[c] == 0) r = photon__fail(err, PHOTON_ERR_ARGUMENT, "client-%d would get no file (empty files?)", c);
    PHOTON_FREE(order);
    PHOTON_FREE(load);
    return r;
}

/* The corpus as one text; chunk i goes to client i mod N. */
static photon_result photon__split_iid(photon_split_plan *p, const unsigned char *const *texts, const size_t *sizes,
                                       size_t total, size_t chunk, photon_error *err) {
    int ns = p->num_sources, k;
    unsigned char *all = (unsigned char *)PHOTON_MALLOC(total);
    size_t *start = (size_t *)photon__calloc((size_t)ns + 1, sizeof(size_t)), pos, i;
    photon_result r = PHOTON_OK;
    if (!all || !start) r = photon__fail(err, PHOTON_ERR_MEMORY, "cannot allocate %zu bytes for the split", total);
    for (k = 0; r == PHOTON_OK && k < ns; k++) {
        start[k + 1] = start[k] + sizes[k];
        if (sizes[k]) memcpy(all + start[k], texts[k], sizes[k]);
    }
    for (pos = 0; r == PHOTON_OK && pos < total; p->num_chunks++) pos = photon__chunk_end(all, total, pos, chunk);
    if (r == PHOTON_OK && p->num_chunks < (size_t)p->num_clients)
        r = photon__fail(err, PHOTON_ERR_ARGUMENT, "%zu bytes make only %zu chunks of about %zu bytes, fewer than %d "
                         "clients; use a smaller chunk", total, p->num_chunks, chunk, p->num_clients);
    if (r == PHOTON_OK && !(p->chunks = (photon_split_chunk *)photon__calloc(p->num_chunks, sizeof *p->chunks)))
        r = photon__fail(err, PHOTON_ERR_MEMORY, "cannot allocate the split plan");
    for (i = 0, pos = 0; r == PHOTON_OK && i < p->num_chunks; i++) {
        photon_split_chunk *ch = &p->chunks[i];
        ch->begin = pos;
        ch->end = pos = photon__chunk_end(all, total, pos, chunk);
        ch->client = (int)(i % (size_t)p->num_clients);
        for (k = 0; k < ns; k++) { /* what each source gave to this chunk */
            size_t lo = start[k] > ch->begin ? start[k] : ch->begin, hi = start[k + 1] < ch->end ? start[k + 1] : ch->end;
            if (lo < hi) {
                p->bytes[(size_t)ch->client * ns + k] += hi - lo;
                p->pieces[(size_t)ch->client * ns + k]++;
            }
        }
    }
    PHOTON_FREE(all);
    PHOTON_FREE(start);
    return r;
}

PHOTONDEF photon_result photon_split_plan_make(photon_split_plan *p, photon_split_kind kind, int num_clients,
                                               const unsigned char *const *texts, const size_t *sizes,
                                               int num_sources, size_t chunk, photon_error *err) {
    size_t total = 0;
    int k;
    photon_result r;
    memset(p, 0, sizeof *p);
    if (num_clients < 1 || num_sources < 1 || (kind == PHOTON_SPLIT_IID && chunk < 1))
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "a split needs clients, files and (IID) a chunk size of 1 or more");
    if (kind == PHOTON_SPLIT_SOURCE && num_clients > num_sources)
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "%d clients but only %d files (each client needs a whole file)",
                            num_clients, num_sources);
    for (k = 0; k < num_sources; k++) total += sizes[k];
    if (total == 0) return photon__fail(err, PHOTON_ERR_ARGUMENT, "the files are empty");
    p->kind = kind;
    p->num_clients = num_clients;
    p->num_sources = num_sources;
    p->bytes = (uint64_t *)photon__calloc((size_t)num_clients * (size_t)num_sources, sizeof(uint64_t));
    p->pieces = (uint64_t *)photon__calloc((size_t)num_clients * (size_t)num_sources, sizeof(uint64_t));
    if (!p->bytes || !p->pieces) r = photon__fail(err, PHOTON_ERR_MEMORY, "cannot allocate the split plan");
    else if (kind == PHOTON_SPLIT_SOURCE) r = photon__split_by_source(p, sizes, err);
    else r = photon__split_iid(p, texts, sizes, total, chunk, err);
    if (r != PHOTON_OK) photon_split_plan_free(p);
    return r;
}

PHOTONDEF void photon_split_plan_free(photon_split_plan *p) {
    PHOTON_FREE(p->owner);
    PHOTON_FREE(p->chunks);
    PHOTON_FREE(p->bytes);
    PHOTON_FREE(p->pieces);
    memset(p, 0, sizeof *p);
}

/* The client files of a planned split, written into the staged directory:
   by source, each client's files under their own names; IID, each client's
   chunks in order into data.txt. */
static photon_result photon__split_write_clients(const photon_split_plan *p, photon__staged_dir *d,
                                                 const char *const *names, const unsigned char *const *texts,
                                                 const size_t *sizes) {
    int ns = p->num_sources, c, k;
    char rel[4200];
    photon_result r = PHOTON_OK;
    for (c = 0; r == PHOTON_OK && c < p->num_clients; c++) {
        snprintf(rel, sizeof rel, "client-%d", c);
        r = photon__staged_mkdir(d, rel);
    }
    if (p->kind == PHOTON_SPLIT_SOURCE) {
        for (k = 0; r == PHOTON_OK && k < ns; k++) {
            snprintf(rel, sizeof rel, "client-%d/%s", p->owner[k], names[k]);
            if ((r = photon__staged_open(d, rel)) == PHOTON_OK) r = photon__staged_write(d, texts[k], sizes[k]);
            if (r == PHOTON_OK) r = photon__staged_close(d);
        }
        return r;
    }
    for (c = 0; r == PHOTON_OK && c < p->num_clients; c++) {
        size_t i, src = 0, src_start = 0;
        snprintf(rel, sizeof rel, "client-%d/data.txt", c);
        if ((r = photon__staged_open(d, rel)) != PHOTON_OK) break;
        for (i = 0; r == PHOTON_OK && i < p->num_chunks; i++) {
            size_t pos = p->chunks[i].begin;
            while (r == PHOTON_OK && pos < p->chunks[i].end) { /* the chunk, source by source */
                size_t take;
                while (pos >= src_start + sizes[src]) src_start += sizes[src++];
                take = p->chunks[i].end < src_start + sizes[src] ? p->chunks[i].end - pos : src_start + sizes[src] - pos;
                if (p->chunks[i].client == c) r = photon__staged_write(d, texts[src] + (pos - src_start), take);
                pos += take;
            }
        }
        if (r == PHOTON_OK) r = photon__staged_close(d);
    }
    return r;
}

static photon_result photon__split_write_manifest(const photon_split_plan *p, photon__staged_dir *d,
                                                  const char *const *names, const char *const *paths) {
    int ns = p->num_sources, c, k;
    char line[8400];
    const char *head = "client\tfile\tsource\tbytes\tchunks\n";
    photon_result r = photon__staged_open(d, "manifest.tsv");
    if (r == PHOTON_OK) r = photon__staged_write(d, head, strlen(head));
    for (c = 0; c < p->num_clients; c++)
        for (k = 0; r == PHOTON_OK && k < ns; k++) {
            size_t at = (size_t)c * ns + k;
            if (!p->bytes[at]) continue;
            snprintf(line, sizeof line, "client-%d\t%s\t%s\t%llu\t%llu\n", c,
                     p->kind == PHOTON_SPLIT_SOURCE ? names[k] : "data.txt", paths[k], (unsigned long long)p->bytes[at],
                     (unsigned long long)p->pieces[at]);
            r = photon__staged_write(d, line, strlen(line));
        }
    return r == PHOTON_OK ? photon__staged_close(d) : r;
}

PHOTONDEF photon_result photon_split_write(const photon_split_plan *p, const char *const *names,
                                           const char *const *paths, const unsigned char *const *texts,
                                           const size_t *sizes, const char *dir, photon_error *err) {
    photon__staged_dir d;
    photon_result r;
    int k;
    for (k = 0; k < p->num_sources; k++) {
        int j;
        if (!names[k][0] || strchr(names[k], '/') || strpbrk(paths[k], "\t\n\r"))
            return photon__fail(err, PHOTON_ERR_ARGUMENT, "%s: a file name for a split has no '/', tab or line break",
                                paths[k]);
        for (j = 0; j < k; j++)
            if (strcmp(names[j], names[k]) == 0)
                return photon__fail(err, PHOTON_ERR_ARGUMENT, "%s and %s: two sources named %s", paths[j], paths[k],
                                    names[k]);
    }
    if ((r = photon__staged_begin(&d, dir, err)) != PHOTON_OK) return r;
    r = photon__split_write_clients(p, &d, names, texts, sizes);
    if (r == PHOTON_OK) r = photon__split_write_manifest(p, &d, names, paths);
    return r == PHOTON_OK ? photon__staged_publish(&d) : (photon__staged_abort(&d), r);
}

/* ======================================================================= */
/* >>eval: evaluation and sampling                                         */
/* ======================================================================= */

/* The CPU's forward pass, as photon_evaluate_with calls it. */
static photon_result photon__cpu_forward(void *ctx, const int *inputs, const int *targets, int B, int T, float *losses,
                                         photon_error *err) {
    photon_model *m = (photon_model *)ctx;
    photon_result r = photon_forward(m, inputs, targets, B, T, NULL, err);
    if (r == PHOTON_OK) memcpy(losses, m->acts.losses, (size_t)B * T * sizeof(float));
    return r;
}

PHOTONDEF photon_result photon_evaluate(photon_model *m, const photon_dataset *ds, int B, int T, uint64_t max_tokens,
                                        photon_eval_result *res, photon_error *err) {
    return photon_evaluate_with(photon__cpu_forward, m, &m->config, ds, B, T, max_tokens, res, err);
}

PHOTONDEF photon_result photon_evaluate_with(photon_forward_fn forward, void *ctx, const photon_config *config,
                                             const photon_dataset *ds, int B, int T, uint64_t max_tokens,
                                             photon_eval_result *res, photon_error *err) {
    uint64_t windows, w, bytes = 0;
    double sum = 0.0;
    int *inputs, *targets;
    float *losses;
    photon_result r = PHOTON_OK;
    memset(res, 0, sizeof *res);
    if (B < 1 || T < 1 || T > config->n_ctx)
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "batch %d x sequence %d: both must be positive and the sequence at "
                            "most the context length %d", B, T, config->n_ctx);
    if (ds->num_tokens < (size_t)T + 1)
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "%s: holds %zu tokens; evaluation at sequence %d needs %d",
                            ds->source, ds->num_tokens, T, T + 1);
    if ((r = photon_dataset_check_vocab(ds, config->vocab_size, err)) != PHOTON_OK) return r;
    windows = (ds->num_tokens - 1) / (size_t)T;
    if (max_tokens > 0 && windows > (max_tokens / (uint64_t)T ? max_tokens / (uint64_t)T : 1))
        windows = max_tokens / (uint64_t)T ? max_tokens / (uint64_t)T : 1;
    inputs = (int *)photon__calloc((size_t)B * T, sizeof(int));
    targets = (int *)photon__calloc((size_t)B * T, sizeof(int));
    losses = (float *)photon__calloc((size_t)B * T, sizeof(float));
    if (!inputs || !targets || !losses) r = photon__fail(err, PHOTON_ERR_MEMORY, "cannot allocate an evaluation batch");
    for (w = 0; r == PHOTON_OK && w < windows; w += (uint64_t)B) {
        int rows = windows - w < (uint64_t)B ? (int)(windows - w) : B, b, t;
        size_t i;
        for (b = 0; b < rows; b++)
            for (t = 0; t < T; t++) {
                inputs[b * T + t] = ds->tokens[(w + b) * T + t];
                targets[b * T + t] = ds->tokens[(w + b) * T + t + 1];
            }
        r = forward(ctx, inputs, targets, rows, T, losses, err);
        for (i = 0; r == PHOTON_OK && i < (size_t)rows * T; i++) {
            sum += losses[i];
            bytes += ds->byte_level ? 1
                     : ds->token_len && targets[i] < ds->token_len_count ? ds->token_len[targets[i]] : 0;
        }
    }
    PHOTON_FREE(inputs);
    PHOTON_FREE(targets);
    PHOTON_FREE(losses);
    if (r != PHOTON_OK) return r;
    res->tokens = windows * (uint64_t)T;
    res->loss = sum / (double)res->tokens;
    res->perplexity = exp(res->loss);
    /* bits over the bytes the predicted tokens stand for, counted exactly */
    res->bits_per_byte = (ds->byte_level || ds->token_len) && bytes ? sum / log(2.0) / (double)bytes : NAN;
    if (!(res->loss - res->loss == 0.0))
        return photon__fail(err, PHOTON_ERR_NUMERIC, "evaluation loss is not finite (%f)", res->loss);
    return PHOTON_OK;
}

PHOTONDEF photon_result photon_sample_next(photon_model *m, const int *context, int n, float temperature,
                                           uint64_t *rng, int *token, photon_error *err) {
    int T = n < m->config.n_ctx ? n : m->config.n_ctx, V = m->config.vocab_size, v, best = 0;
    const float *probs;
    double sum = 0.0, u, acc = 0.0, inv_t = 1.0 / temperature;
    photon_result r;
    if (n < 1) return photon__fail(err, PHOTON_ERR_ARGUMENT, "sampling needs at least one context token");
    if ((r = photon_forward(m, context + (n - T), NULL, 1, T, NULL, err)) != PHOTON_OK) return r;
    /* softmax(logits / t) is proportional to probs^(1/t) */
    probs = m->acts.probs + (size_t)(T - 1) * V;
    for (v = 1; v < V; v++)
        if (probs[v] > probs[best]) best = v;
    if (temperature <= 0.0f) {
        *token = best;
        return PHOTON_OK;
    }
    for (v = 0; v < V; v++) sum += pow((double)probs[v] / probs[best], inv_t);
    u = photon_rand_uniform(rng) * sum;
    for (v = 0; v < V; v++) {
        acc += pow((double)probs[v] / probs[best], inv_t);
        if (u < acc) break;
    }
    *token = v < V ? v : best;
    return PHOTON_OK;
}

/* ======================================================================= */
/* >>safetensors: reading and validating                                   */
/* ======================================================================= */
/* Layout: 8-byte little-endian header length N, N bytes of JSON, then the
   tensor data. The JSON maps each tensor name to {"dtype", "shape",
   "data_offsets": [begin, end]} (offsets into the data section), plus an
   optional "__metadata__" object of strings. */

static const char *const photon__dtype_names[PHOTON_DTYPE_COUNT] = {
    "BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64"};
static const int photon__dtype_sizes[PHOTON_DTYPE_COUNT] = {1, 1, 1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 8, 8, 8};

static int photon__little_endian(void) {
    uint32_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* {"dtype": ..., "shape": [...], "data_offsets": [b, e]}; other keys ignored. */
static photon_result photon__st_parse_tensor(photon__json *j, photon_st_tensor *t) {
    int have_dtype = 0, have_shape = 0, have_offsets = 0, k;
    photon_result r;
    if (!photon__json_accept(j, '{')) return photon__json_error(j, "expected an object for a tensor");
    if (!photon__json_accept(j, '}')) {
        do {
            char *key;
            if ((r = photon__json_string(j, &key)) != PHOTON_OK) return r;
            if (!photon__json_accept(j, ':')) {
                PHOTON_FREE(key);
                return photon__json_error(j, "expected ':'");
            }
            if ((strcmp(key, "dtype") == 0 && have_dtype) || (strcmp(key, "shape") == 0 && have_shape) ||
                (strcmp(key, "data_offsets") == 0 && have_offsets)) {
                r = photon__fail(j->err, PHOTON_ERR_FORMAT, "%s: tensor '%s' has field '%s' twice", j->path, t->name, key);
                PHOTON_FREE(key);
                return r;
            }
            if (strcmp(key, "dtype") == 0) {
                char *dtype;
                PHOTON_FREE(key);
                if ((r = photon__json_string(j, &dtype)) != PHOTON_OK) return r;
                for (k = 0; k < PHOTON_DTYPE_COUNT; k++)
                    if (strcmp(dtype, photon__dtype_names[k]) == 0) break;
                if (k == PHOTON_DTYPE_COUNT) {
                    r = photon__fail(j->err, PHOTON_ERR_FORMAT, "%s: tensor '%s' has unknown dtype '%.40s'", j->path,
                                     t->name, dtype);
                    PHOTON_FREE(dtype);
                    return r;
                }
                PHOTON_FREE(dtype);
                t->dtype = (photon_dtype)k;
                have_dtype = 1;
            } else if (strcmp(key, "shape") == 0) {
                PHOTON_FREE(key);
                r = photon__json_uint_array(j, t->shape, PHOTON_ST_MAX_DIMS, &t->ndim, t->name, "shape");
                if (r != PHOTON_OK) return r;
                have_shape = 1;
            } else if (strcmp(key, "data_offsets") == 0) {
                uint64_t off[2];
                int n;
                PHOTON_FREE(key);
                if ((r = photon__json_uint_array(j, off, 2, &n, t->name, "data_offsets")) != PHOTON_OK) return r;
                if (n != 2)
                    return photon__fail(j->err, PHOTON_ERR_FORMAT, "%s: tensor '%s': data_offsets needs 2 entries, has %d",
                                        j->path, t->name, n);
                t->begin = off[0];
                t->end = off[1];
                have_offsets = 1;
            } else {
                PHOTON_FREE(key);
                if ((r = photon__json_skip(j, 1)) != PHOTON_OK) return r;
            }
        } while (photon__json_accept(j, ','));
        if (!photon__json_accept(j, '}')) return photon__json_error(j, "expected ',' or '}'");
    }
    if (!have_dtype || !have_shape || !have_offsets)
        return photon__fail(j->err, PHOTON_ERR_FORMAT, "%s: tensor '%s' lacks '%s'", j->path, t->name,
                            !have_dtype ? "dtype" : !have_shape ? "shape" : "data_offsets");
    return PHOTON_OK;
}

/* Arrays that grow by doubling: a new allocation is needed when the count
   reaches 0, 8, 16, 32, ... */
static int photon__grows(int n) { return n == 0 || (n >= 8 && (n & (n - 1)) == 0); }
static size_t photon__grown(int n) { return n == 0 ? 8 : 2 * (size_t)n; }

static photon_result photon__st_parse_metadata(photon__json *j, photon_st_file *st) {
    photon_result r;
    photon__json_ws(j);
    if (j->pos + 4 <= j->n && memcmp(j->s + j->pos, "null", 4) == 0) { /* the reference reader allows null */
        j->pos += 4;
        return PHOTON_OK;
    }
    if (!photon__json_accept(j, '{')) return photon__json_error(j, "__metadata__ must be an object");
    if (photon__json_accept(j, '}')) return PHOTON_OK;
    do {
        char *key, *value, **keys, **values;
        if ((r = photon__json_string(j, &key)) != PHOTON_OK) return r;
        photon__json_ws(j);
        if (!photon__json_accept(j, ':')) {
            PHOTON_FREE(key);
            return photon__json_error(j, "expected ':'");
        }
        photon__json_ws(j);
        if (j->pos >= j->n || j->s[j->pos] != '"') {
            r = photon__fail(j->err, PHOTON_ERR_FORMAT, "%s: __metadata__ value of '%.60s' is not a string", j->path, key);
            PHOTON_FREE(key);
            return r;
        }
        if ((r = photon__json_string(j, &value)) != PHOTON_OK) {
            PHOTON_FREE(key);
            return r;
        }
        if (st->num_meta == PHOTON_ST_MAX_META) {
            r = photon__fail(j->err, PHOTON_ERR_FORMAT, "%s: more than %d __metadata__ keys; photon writes fewer", j->path,
                             PHOTON_ST_MAX_META);
            PHOTON_FREE(key);
            PHOTON_FREE(value);
            return r;
        }
        if (photon__grows(st->num_meta)) { /* capacity doubles: the header is read in linear time */
            keys = (char **)PHOTON_MALLOC(photon__grown(st->num_meta) * sizeof(char *));
            values = (char **)PHOTON_MALLOC(photon__grown(st->num_meta) * sizeof(char *));
        } else {
            keys = st->meta_keys, values = st->meta_values;
        }
        if (!keys || !values) {
            PHOTON_FREE(keys);
            PHOTON_FREE(values);
            PHOTON_FREE(key);
            PHOTON_FREE(value);
            return photon__fail(j->err, PHOTON_ERR_MEMORY, "%s: out of memory reading __metadata__", j->path);
        }
        if (keys != st->meta_keys) {
            if (st->num_meta) {
                memcpy(keys, st->meta_keys, (size_t)st->num_meta * sizeof(char *));
                memcpy(values, st->meta_values, (size_t)st->num_meta * sizeof(char *));
            }
            PHOTON_FREE(st->meta_keys);
            PHOTON_FREE(st->meta_values);
        }
        keys[st->num_meta] = key;
        values[st->num_meta] = value;
        st->meta_keys = keys;
        st->meta_values = values;
        st->num_meta++;
    } while (photon__json_accept(j, ','));
    return photon__json_accept(j, '}') ? PHOTON_OK : photon__json_error(j, "expected ',' or '}'");
}

static photon_result photon__st_add_tensor(photon_st_file *st, photon__json *j, char *name) {
    if (st->num_tensors == PHOTON_ST_MAX_TENSORS) {
        PHOTON_FREE(name);
        return photon__fail(j->err, PHOTON_ERR_FORMAT, "%s: more than %d tensors; photon writes fewer", j->path,
                            PHOTON_ST_MAX_TENSORS);
    }
    if (photon__grows(st->num_tensors)) {
        photon_st_tensor *grown = (photon_st_tensor *)photon__calloc(photon__grown(st->num_tensors), sizeof(photon_st_tensor));
        if (!grown) {
            PHOTON_FREE(name);
            return photon__fail(j->err, PHOTON_ERR_MEMORY, "%s: out of memory reading the header", j->path);
        }
        if (st->num_tensors) memcpy(grown, st->tensors, (size_t)st->num_tensors * sizeof(photon_st_tensor));
        PHOTON_FREE(st->tensors);
        st->tensors = grown;
    }
    memset(&st->tensors[st->num_tensors], 0, sizeof st->tensors[0]);
    st->tensors[st->num_tensors].name = name;
    st->num_tensors++;
    return photon__st_parse_tensor(j, &st->tensors[st->num_tensors - 1]);
}

static photon_result photon__st_parse_header(photon_st_file *st, photon__json *j) {
    photon_result r;
    int have_metadata = 0;
    if (j->pos >= j->n || j->s[j->pos] != '{') /* the reference reader allows no space before it */
        return photon__fail(j->err, PHOTON_ERR_FORMAT, "%s: header does not start with '{'", j->path);
    j->pos++;
    if (!photon__json_accept(j, '}')) {
        do {
            char *key;
            if ((r = photon__json_string(j, &key)) != PHOTON_OK) return r;
            if (!photon__json_accept(j, ':')) {
                PHOTON_FREE(key);
                return photon__json_error(j, "expected ':'");
            }
            if (strcmp(key, "__metadata__") == 0) {
                PHOTON_FREE(key);
                if (have_metadata++) return photon__fail(j->err, PHOTON_ERR_FORMAT, "%s: __metadata__ appears twice", j->path);
                r = photon__st_parse_metadata(j, st);
            } else {
                r = photon__st_add_tensor(st, j, key);
            }
            if (r != PHOTON_OK) return r;
        } while (photon__json_accept(j, ','));
        if (!photon__json_accept(j, '}')) return photon__json_error(j, "expected ',' or '}'");
    }
    photon__json_ws(j);
    if (j->pos != j->n) return photon__json_error(j, "trailing characters after the header object");
    return PHOTON_OK;
}

/* Names sorted for lookup; a name twice is refused. */
typedef struct photon__name_at {
    const char *name;
    int at;
} photon__name_at;

static int photon__name_at_cmp(const void *a, const void *b) {
    int c = strcmp(((const photon__name_at *)a)->name, ((const photon__name_at *)b)->name);
    return c ? c : ((const photon__name_at *)a)->at - ((const photon__name_at *)b)->at;
}

static photon_result photon__st_sort_names(const photon_st_file *st, char *const *names, size_t stride, int n,
                                           int **order, const char *what, photon_error *err) {
    photon__name_at *sorted = (photon__name_at *)photon__calloc((size_t)n + 1, sizeof *sorted);
    int i;
    *order = (int *)photon__calloc((size_t)n + 1, sizeof(int));
    if (!sorted || !*order) {
        PHOTON_FREE(sorted);
        return photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory reading the header", st->path);
    }
    for (i = 0; i < n; i++) {
        sorted[i].name = *(char *const *)((const char *)names + (size_t)i * stride);
        sorted[i].at = i;
    }
    qsort(sorted, (size_t)n, sizeof *sorted, photon__name_at_cmp);
    for (i = 0; i < n; i++) {
        (*order)[i] = sorted[i].at;
        if (i > 0 && strcmp(sorted[i].name, sorted[i - 1].name) == 0) {
            photon_result r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: %s '%.60s' appears twice", st->path, what,
                                           sorted[i].name);
            PHOTON_FREE(sorted);
            return r;
        }
    }
    PHOTON_FREE(sorted);
    return PHOTON_OK;
}

static photon_result photon__st_index(photon_st_file *st, photon_error *err) {
    photon_result r = photon__st_sort_names(st, st->num_tensors ? &st->tensors[0].name : NULL, sizeof(photon_st_tensor),
                                            st->num_tensors, &st->tensor_order, "tensor name", err);
    if (r == PHOTON_OK)
        r = photon__st_sort_names(st, st->meta_keys, sizeof(char *), st->num_meta, &st->meta_order,
                                  "__metadata__ key", err);
    return r;
}

/* Each tensor's shape must account for exactly its byte span. */
static photon_result photon__st_check_spans(const photon_st_file *st, photon_error *err) {
    int i, k;
    for (i = 0; i < st->num_tensors; i++) {
        const photon_st_tensor *t = &st->tensors[i];
        uint64_t bytes = (uint64_t)photon__dtype_sizes[t->dtype];
        if (t->begin > t->end)
            return photon__fail(err, PHOTON_ERR_FORMAT, "%s: tensor '%s' has data_offsets [%llu, %llu] that run backwards",
                                st->path, t->name, (unsigned long long)t->begin, (unsigned long long)t->end);
        for (k = 0; k < t->ndim; k++) {
            if (t->shape[k] != 0 && bytes > UINT64_MAX / t->shape[k])
                return photon__fail(err, PHOTON_ERR_FORMAT, "%s: tensor '%s' has a shape whose size overflows", st->path,
                                    t->name);
            bytes *= t->shape[k];
        }
        if (bytes != t->end - t->begin)
            return photon__fail(err, PHOTON_ERR_FORMAT,
                                "%s: tensor '%s' has a shape of %llu bytes (%s) but data_offsets span %llu bytes", st->path,
                                t->name, (unsigned long long)bytes, photon__dtype_names[t->dtype],
                                (unsigned long long)(t->end - t->begin));
    }
    return PHOTON_OK;
}

/* Sorted by offset, the tensors must tile the data section exactly. */
typedef struct photon__span_at {
    uint64_t begin, end;
    int at;
} photon__span_at;

static int photon__span_at_cmp(const void *a, const void *b) {
    const photon__span_at *x = (const photon__span_at *)a, *y = (const photon__span_at *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->at - y->at;
}

static photon_result photon__st_check_layout(const photon_st_file *st, photon_error *err) {
    uint64_t data_size = st->file_size - st->data_start, expected = 0;
    photon__span_at *spans = (photon__span_at *)photon__calloc((size_t)st->num_tensors + 1, sizeof *spans);
    int *order = (int *)photon__calloc((size_t)st->num_tensors + 1, sizeof(int)), i;
    photon_result r = PHOTON_OK;
    if (!order || !spans) {
        PHOTON_FREE(order);
        PHOTON_FREE(spans);
        return photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory checking offsets", st->path);
    }
    for (i = 0; i < st->num_tensors; i++)
        spans[i].begin = st->tensors[i].begin, spans[i].end = st->tensors[i].end, spans[i].at = i;
    qsort(spans, (size_t)st->num_tensors, sizeof *spans, photon__span_at_cmp);
    for (i = 0; i < st->num_tensors; i++) order[i] = spans[i].at;
    PHOTON_FREE(spans);
    for (i = 0; i < st->num_tensors && r == PHOTON_OK; i++) {
        const photon_st_tensor *t = &st->tensors[order[i]];
        if (t->begin < expected)
            r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: tensor '%s' overlaps tensor '%s'", st->path, t->name,
                             st->tensors[order[i - 1]].name);
        else if (t->begin > expected)
            r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: hole of %llu bytes before tensor '%s'", st->path,
                             (unsigned long long)(t->begin - expected), t->name);
        expected = t->end;
    }
    PHOTON_FREE(order);
    if (r != PHOTON_OK) return r;
    if (expected > data_size)
        return photon__fail(err, PHOTON_ERR_FORMAT, "%s: truncated: the header declares %llu bytes of tensor data, the file "
                            "holds %llu", st->path, (unsigned long long)expected, (unsigned long long)data_size);
    if (expected < data_size)
        return photon__fail(err, PHOTON_ERR_FORMAT, "%s: %llu trailing bytes after the last tensor", st->path,
                            (unsigned long long)(data_size - expected));
    return PHOTON_OK;
}

PHOTONDEF photon_result photon_st_open(photon_st_file *st, const char *path, photon_error *err) {
    FILE *f;
    unsigned char len8[8];
    uint64_t header_len = 0;
    long size;
    char *header;
    photon__json j;
    photon_result r;
    int k;
    memset(st, 0, sizeof *st);
    if (!photon__little_endian()) return photon__fail(err, PHOTON_ERR_ARGUMENT, "photon needs a little-endian host");
    if ((r = photon__open_regular(path, &f, &size, err)) != PHOTON_OK) return r;
    st->file_size = (uint64_t)size;
    if (size < 8 || fread(len8, 1, 8, f) != 8) {
        fclose(f);
        return photon__fail(err, PHOTON_ERR_FORMAT, "%s: too short for safetensors (%ld bytes, the length field alone is 8)",
                            path, size);
    }
    for (k = 7; k >= 0; k--) header_len = header_len << 8 | len8[k];
    if (header_len > PHOTON_ST_MAX_HEADER) {
        fclose(f);
        return photon__fail(err, PHOTON_ERR_FORMAT, "%s: header length %llu exceeds the limit of %u bytes", path,
                            (unsigned long long)header_len, PHOTON_ST_MAX_HEADER);
    }
    if (header_len > st->file_size - 8) {
        fclose(f);
        return photon__fail(err, PHOTON_ERR_FORMAT, "%s: truncated: header length %llu runs past the end of the file (%ld bytes)",
                            path, (unsigned long long)header_len, size);
    }
    header = (char *)PHOTON_MALLOC((size_t)header_len + 1);
    if (!header) {
        fclose(f);
        return photon__fail(err, PHOTON_ERR_MEMORY, "%s: cannot allocate the header", path);
    }
    if (fread(header, 1, (size_t)header_len, f) != (size_t)header_len) {
        PHOTON_FREE(header);
        fclose(f);
        return photon__fail(err, PHOTON_ERR_IO, "%s: read failed", path);
    }
    st->handle = f;
    header[header_len] = '\0';
    st->path = photon__strdup(path);
    st->data_start = 8 + header_len;
    if (!st->path) {
        PHOTON_FREE(header);
        photon_st_close(st);
        return photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", path);
    }
    photon__json_init(&j, header, (size_t)header_len, path, err);
    if (!photon__valid_utf8((const unsigned char *)header, (size_t)header_len))
        r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: header is not valid UTF-8", path);
    else if ((r = photon__st_parse_header(st, &j)) == PHOTON_OK && (r = photon__st_index(st, err)) == PHOTON_OK &&
             (r = photon__st_check_spans(st, err)) == PHOTON_OK)
        r = photon__st_check_layout(st, err);
    PHOTON_FREE(header);
    if (r != PHOTON_OK) photon_st_close(st);
    return r;
}

PHOTONDEF void photon_st_close(photon_st_file *st) {
    int i;
    if (st->handle) fclose((FILE *)st->handle);
    for (i = 0; i < st->num_tensors; i++) PHOTON_FREE(st->tensors[i].name);
    for (i = 0; i < st->num_meta; i++) {
        PHOTON_FREE(st->meta_keys[i]);
        PHOTON_FREE(st->meta_values[i]);
    }
    PHOTON_FREE(st->tensors);
    PHOTON_FREE(st->meta_keys);
    PHOTON_FREE(st->meta_values);
    PHOTON_FREE(st->tensor_order);
    PHOTON_FREE(st->meta_order);
    PHOTON_FREE(st->path);
    memset(st, 0, sizeof *st);
}

/* Binary search of the sorted names; -1 if absent. */
static int photon__st_lookup(char *const *names, size_t stride, const int *order, int n, const char *name) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(*(char *const *)((const char *)names + (size_t)order[mid] * stride), name);
        if (c == 0) return order[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

PHOTONDEF const char *photon_st_meta(const photon_st_file *st, const char *key) {
    int at = st->meta_order ? photon__st_lookup(st->meta_keys, sizeof(char *), st->meta_order, st->num_meta, key) : -1;
    return at >= 0 ? st->meta_values[at] : NULL;
}

PHOTONDEF const photon_st_tensor *photon_st_find(const photon_st_file *st, const char *name) {
    int at = st->tensor_order && st->num_tensors
                 ? photon__st_lookup(&st->tensors[0].name, sizeof(photon_st_tensor), st->tensor_order, st->num_tensors, name)
                 : -1;
    return at >= 0 ? &st->tensors[at] : NULL;
}

PHOTONDEF photon_result photon_st_read_f32(const photon_st_file *st, const photon_st_tensor *t, float *dst,
                                           size_t count, photon_error *err) {
    FILE *f = (FILE *)st->handle;
    size_t i;
    if (t->dtype != PHOTON_DTYPE_F32)
        return photon__fail(err, PHOTON_ERR_MISMATCH, "%s: tensor '%s' is %s; photon reads F32 only", st->path, t->name,
                            photon__dtype_names[t->dtype]);
    if (t->end - t->begin != (uint64_t)count * 4)
        return photon__fail(err, PHOTON_ERR_MISMATCH, "%s: tensor '%s' holds %llu values, expected %zu", st->path, t->name,
                            (unsigned long long)((t->end - t->begin) / 4), count);
    if (fseek(f, (long)(st->data_start + t->begin), SEEK_SET) != 0 || fread(dst, 4, count, f) != count)
        return photon__fail(err, PHOTON_ERR_IO, "%s: cannot read tensor '%s' (file truncated while reading?)", st->path,
                            t->name);
    for (i = 0; i < count; i++)
        if (!photon__is_finite(dst[i]))
            return photon__fail(err, PHOTON_ERR_NUMERIC, "%s: tensor '%s' holds %s at element %zu", st->path, t->name,
                                dst[i] != dst[i] ? "NaN" : "Inf", i);
    return PHOTON_OK;
}

/* IEEE half and bfloat16 to float, exactly (every value of either is a float). */
static float photon__f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 0x1f, m = h & 0x3ff, bits;
    float f;
    if (e == 0 && m == 0) bits = sign;
    else if (e == 0) { /* subnormal: m * 2^-24 */
        f = (float)m * 5.9604644775390625e-08f;
        return sign ? -f : f;
    } else if (e == 31) bits = sign | 0x7f800000u | (m << 13);
    else bits = sign | ((e + 112) << 23) | (m << 13);
    memcpy(&f, &bits, 4);
    return f;
}

static float photon__bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Copies (F32) or widens (F16, BF16) one tensor's bytes, read as a stream:
   the raw bytes of a 2-byte tensor go to the upper half of its float span
   and are widened front to back in place once complete (element i's float
   is written after half i is read, and no later half lies below it). */
static photon_result photon__st_take(const photon_st_file *st, const photon_st_tensor *t, float *dst, uint64_t pos,
                                     const unsigned char *chunk, size_t n, photon_error *err) {
    uint64_t lo = pos > t->begin ? pos : t->begin, hi = pos + n < t->end ? pos + n : t->end, count, i;
    int width = t->dtype == PHOTON_DTYPE_F32 ? 4 : 2;
    unsigned char *bytes = (unsigned char *)dst;
    if (lo >= hi) return PHOTON_OK;
    if (t->dtype == PHOTON_DTYPE_I8 || t->dtype == PHOTON_DTYPE_U8) { /* codes, as stored: decoded by their reader */
        memcpy(bytes + (lo - t->begin), chunk + (lo - pos), (size_t)(hi - lo));
        return PHOTON_OK;
    }
    count = (t->end - t->begin) / (uint64_t)width;
    memcpy(bytes + (width == 4 ? 0 : 2 * count) + (lo - t->begin), chunk + (lo - pos), (size_t)(hi - lo));
    if (hi != t->end) return PHOTON_OK;
    for (i = 0; i < count; i++) {
        if (width == 2) {
            uint16_t h = (uint16_t)(bytes[2 * count + 2 * i] | bytes[2 * count + 2 * i + 1] << 8);
            dst[i] = t->dtype == PHOTON_DTYPE_F16 ? photon__f16_to_f32(h) : photon__bf16_to_f32(h);
        }
        if (!photon__is_finite(dst[i]))
            return photon__fail(err, PHOTON_ERR_NUMERIC, "%s: tensor '%s' holds %s at element %llu", st->path, t->name,
                                dst[i] != dst[i] ? "NaN" : "Inf", (unsigned long long)i);
    }
    return PHOTON_OK;
}

/* One tensor that photon__st_stream reads into dst. */
typedef struct photon__st_sink {
    const photon_st_tensor *t;
    float *dst;
} photon__st_sink;

static int photon__sink_cmp(const void *a, const void *b) {
    uint64_t x = ((const photon__st_sink *)a)->t->begin, y = ((const photon__st_sink *)b)->t->begin;
    return x < y ? -1 : x > y;
}

static int photon__accept_unhashed_files;

PHOTONDEF void photon_accept_unhashed(int yes) { photon__accept_unhashed_files = yes != 0; }

/* Reads the file once, start to end, in 1 MiB chunks: the SHA-256 of the
   whole file into file_hex (if not NULL; the merge's audit trail records
   it), the SHA-256 of the data section, checked against the
   photon.data_sha256 the writer recorded when check_payload is set, and the
   bytes of each sink's tensor into its place (F32 as stored, F16 and BF16
   widened), each checked finite once complete. */
static photon_result photon__st_stream(const photon_st_file *st, photon__st_sink *sinks, int n, int check_payload,
                                       char file_hex[65], photon_error *err) {
    FILE *f = (FILE *)st->handle;
    unsigned char *chunk = (unsigned char *)PHOTON_MALLOC(1 << 20);
    const char *recorded = photon_st_meta(st, "photon.data_sha256");
    photon_sha256 whole, payload;
    char hex[65];
    uint64_t pos = 0;
    size_t got;
    int k;
    photon_result r = chunk ? PHOTON_OK : photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", st->path);
    if (r == PHOTON_OK && check_payload && !recorded && !photon__accept_unhashed_files)
        r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: records no photon.data_sha256 (written before photon format 2?); "
                         "refused unless unhashed files are accepted (--accept-unhashed)", st->path);
    if (n > 1) qsort(sinks, (size_t)n, sizeof *sinks, photon__sink_cmp);
    photon_sha256_init(&whole);
    photon_sha256_init(&payload);
    if (r == PHOTON_OK && fseek(f, 0, SEEK_SET) != 0) r = photon__fail(err, PHOTON_ERR_IO, "%s: cannot seek", st->path);
    while (r == PHOTON_OK && pos < st->file_size && (got = fread(chunk, 1, 1 << 20, f)) > 0) {
        size_t skip = pos < st->data_start ? (size_t)(st->data_start - pos < got ? st->data_start - pos : got) : 0;
        uint64_t at = pos + skip - st->data_start; /* where the chunk's data part starts in the data section */
        if (pos + got > st->file_size) got = (size_t)(st->file_size - pos); /* grown since it was opened */
        photon_sha256_update(&whole, chunk, got);
        if (got > skip) photon_sha256_update(&payload, chunk + skip, got - skip);
        for (k = 0; r == PHOTON_OK && got > skip && k < n; k++)
            r = photon__st_take(st, sinks[k].t, sinks[k].dst, at, chunk + skip, got - skip, err);
        pos += got;
    }
    if (r == PHOTON_OK && pos != st->file_size)
        r = photon__fail(err, PHOTON_ERR_IO, "%s: read %llu of %llu bytes (truncated while reading?)", st->path,
                         (unsigned long long)pos, (unsigned long long)st->file_size);
    PHOTON_FREE(chunk);
    if (r != PHOTON_OK) return r;
    photon_sha256_final(&payload, hex);
    if (check_payload && recorded && strcmp(hex, recorded) != 0)
        return photon__fail(err, PHOTON_ERR_FORMAT, "%s: its tensor data does not match the SHA-256 it records "
                            "(photon.data_sha256 %.12s..., the data hashes to %.12s...): the file is corrupt or was "
                            "changed", st->path, recorded, hex);
    if (file_hex) photon_sha256_final(&whole, file_hex);
    return PHOTON_OK;
}

/* ======================================================================= */
/* >>safetensors: writing                                                  */
/* ======================================================================= */

PHOTONDEF photon_result photon_st_write_f32(const char *path, const photon_st_entry *entries, int num_entries,
                                            const char *const *meta_keys, const char *const *meta_values,
                                            int num_meta, photon_error *err) {
    return photon_st_write(path, entries, num_entries, meta_keys, meta_values, num_meta, err);
}

/* An entry's bytes: its F32 data, or its raw bytes of its dtype. */
static const void *photon__entry_bytes(const photon_st_entry *e, uint64_t *size, photon_dtype *dtype) {
    uint64_t n = 1;
    int k;
    for (k = 0; k < e->ndim; k++) n *= e->shape[k];
    *dtype = e->bytes ? e->dtype : PHOTON_DTYPE_F32;
    *size = n * (uint64_t)photon__dtype_sizes[*dtype];
    return e->bytes ? e->bytes : (const void *)e->data;
}

PHOTONDEF photon_result photon_st_write(const char *path, const photon_st_entry *entries, int num_entries,
                                        const char *const *meta_keys, const char *const *meta_values, int num_meta,
                                        photon_error *err) {
    photon__text h = {NULL, 0, 0, 0};
    photon_dtype dtype;
    photon__atomic out;
    photon_sha256 payload;
    char payload_hex[65];
    uint64_t offset = 0, len;
    unsigned char len8[8];
    photon_result r;
    int i, k;
    if (!photon__little_endian()) return photon__fail(err, PHOTON_ERR_ARGUMENT, "photon needs a little-endian host");
    photon_sha256_init(&payload); /* the data section, as it will be written */
    for (i = 0; i < num_entries; i++) {
        uint64_t size;
        const void *bytes = photon__entry_bytes(&entries[i], &size, &dtype);
        if (size) photon_sha256_update(&payload, bytes, (size_t)size);
    }
    photon_sha256_final(&payload, payload_hex);
    photon__text_puts(&h, "{\"__metadata__\":{");
    for (i = 0; i < num_meta; i++) {
        photon__text_json_string(&h, meta_keys[i]);
        photon__text_puts(&h, ":");
        photon__text_json_string(&h, meta_values[i]);
        photon__text_puts(&h, ",");
    }
    photon__text_puts(&h, "\"photon.data_sha256\":");
    photon__text_json_string(&h, payload_hex);
    photon__text_puts(&h, "}");
    for (i = 0; i < num_entries; i++) {
        uint64_t bytes;
        photon__entry_bytes(&entries[i], &bytes, &dtype);
        photon__text_puts(&h, ",");
        photon__text_json_string(&h, entries[i].name);
        photon__text_puts(&h, ":{\"dtype\":\"");
        photon__text_puts(&h, photon__dtype_names[dtype]);
        photon__text_puts(&h, "\",\"shape\":[");
        for (k = 0; k < entries[i].ndim; k++) {
            if (k) photon__text_puts(&h, ",");
            photon__text_u64(&h, entries[i].shape[k]);
        }
        photon__text_puts(&h, "],\"data_offsets\":[");
        photon__text_u64(&h, offset);
        photon__text_puts(&h, ",");
        photon__text_u64(&h, offset + bytes);
        photon__text_puts(&h, "]}");
        offset += bytes;
    }
    photon__text_puts(&h, "}");
    while ((8 + h.len) % 8 != 0) photon__text_puts(&h, " "); /* align the data section to 8 bytes */
    if (h.failed) {
        PHOTON_FREE(h.s);
        return photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory building the header", path);
    }
    if ((r = photon__atomic_open(&out, path, err)) != PHOTON_OK) {
        PHOTON_FREE(h.s);
        return r;
    }
    len = h.len;
    for (k = 0; k < 8; k++) len8[k] = (unsigned char)(len >> (8 * k));
    fwrite(len8, 1, 8, out.f);
    fwrite(h.s, 1, h.len, out.f);
    PHOTON_FREE(h.s);
    for (i = 0; i < num_entries; i++) {
        uint64_t size;
        const void *bytes = photon__entry_bytes(&entries[i], &size, &dtype);
        if (size && fwrite(bytes, 1, (size_t)size, out.f) != (size_t)size) break;
    }
    return photon__atomic_commit(&out, err);
}

/* ======================================================================= */
/* >>checkpoint: checkpoints and client state                              */
/* ======================================================================= */

static photon_result photon__parse_u64(const photon_st_file *st, const char *key, uint64_t *out, photon_error *err) {
    const char *s = photon_st_meta(st, key);
    uint64_t v = 0;
    const char *p;
    if (!s) return photon__fail(err, PHOTON_ERR_FORMAT, "%s: __metadata__ lacks %s", st->path, key);
    for (p = s; *p; p++) {
        if (*p < '0' || *p > '9' || v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
            return photon__fail(err, PHOTON_ERR_FORMAT, "%s: __metadata__ %s is not a non-negative integer: '%.40s'",
                                st->path, key, s);
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (p == s) return photon__fail(err, PHOTON_ERR_FORMAT, "%s: __metadata__ %s is empty", st->path, key);
    *out = v;
    return PHOTON_OK;
}

/* Checks photon.kind and photon.version. */
static photon_result photon__check_kind(const photon_st_file *st, const char *kind, photon_error *err) {
    const char *k = photon_st_meta(st, "photon.kind");
    uint64_t version;
    photon_result r;
    if (!k)
        return photon__fail(err, PHOTON_ERR_FORMAT, "%s: not a photon file (__metadata__ has no photon.kind)", st->path);
    if (strcmp(k, kind) != 0)
        return photon__fail(err, PHOTON_ERR_MISMATCH, "%s: is a photon %.40s, expected a %s", st->path, k, kind);
    if ((r = photon__parse_u64(st, "photon.version", &version, err)) != PHOTON_OK) return r;
    if (version == 1 && !photon__accept_unhashed_files)
        return photon__fail(err, PHOTON_ERR_FORMAT, "%s: format version 1, written before payload hashes: its data "
                            "cannot be checked; refused unless unhashed files are accepted (--accept-unhashed)", st->path);
    if (version != PHOTON_FORMAT_VERSION && version != 1)
        return photon__fail(err, PHOTON_ERR_FORMAT, "%s: format version %llu; this photon reads version %d", st->path,
                            (unsigned long long)version, PHOTON_FORMAT_VERSION);
    return PHOTON_OK;
}

static photon_result photon__read_config(const photon_st_file *st, photon_config *c, photon_error *err) {
    const char *keys[5] = {"photon.vocab_size", "photon.n_ctx", "photon.n_layer", "photon.n_head", "photon.n_embd"};
    int *fields[5];
    uint64_t v;
    int k;
    photon_result r;
    photon_error why;
    fields[0] = &c->vocab_size;
    fields[1] = &c->n_ctx;
    fields[2] = &c->n_layer;
    fields[3] = &c->n_head;
    fields[4] = &c->n_embd;
    for (k = 0; k < 5; k++) {
        if ((r = photon__parse_u64(st, keys[k], &v, err)) != PHOTON_OK) return r;
        if (v > 1000000)
            return photon__fail(err, PHOTON_ERR_FORMAT, "%s: __metadata__ %s is out of range: %llu", st->path, keys[k],
                                (unsigned long long)v);
        *fields[k] = (int)v;
    }
    if (photon_config_validate(c, &why) != PHOTON_OK)
        return photon__fail(err, PHOTON_ERR_FORMAT, "%s: invalid model config in __metadata__: %s", st->path,
                            why.message);
    return PHOTON_OK;
}

/* Metadata values are strings; numbers are written in decimal. */
typedef struct photon__meta {
    int n;
    const char *keys[24];
    const char *values[24];
    char storage[24][24];
} photon__meta;

static void photon__meta_str(photon__meta *m, const char *key, const char *value) {
    m->keys[m->n] = key;
    m->values[m->n++] = value;
}

static void photon__meta_u64(photon__meta *m, const char *key, uint64_t value) {
    snprintf(m->storage[m->n], sizeof m->storage[m->n], "%llu", (unsigned long long)value);
    photon__meta_str(m, key, m->storage[m->n]);
}

static void photon__meta_header(photon__meta *m, const char *kind, const photon_config *c) {
    m->n = 0;
    photon__meta_str(m, "format", "pt"); /* transformers refuses safetensors without it */
    photon__meta_u64(m, "photon.version", PHOTON_FORMAT_VERSION);
    photon__meta_str(m, "photon.kind", kind);
    photon__meta_u64(m, "photon.vocab_size", (uint64_t)c->vocab_size);
    photon__meta_u64(m, "photon.n_ctx", (uint64_t)c->n_ctx);
    photon__meta_u64(m, "photon.n_layer", (uint64_t)c->n_layer);
    photon__meta_u64(m, "photon.n_head", (uint64_t)c->n_head);
    photon__meta_u64(m, "photon.n_embd", (uint64_t)c->n_embd);
}

/* Writes a model with the checkpoint's metadata, then any extra keys. */
static photon_result photon__checkpoint_write(const photon_model *model, const char *path, const char *const *extra_keys,
                                              const char *const *extra_values, int num_extra, photon_error *err) {
    photon_st_entry *entries = (photon_st_entry *)photon__calloc((size_t)model->num_tensors, sizeof(photon_st_entry));
    const char **keys = (const char **)photon__calloc((size_t)num_extra + 24, sizeof(char *));
    const char **values = (const char **)photon__calloc((size_t)num_extra + 24, sizeof(char *));
    photon__meta meta;
    photon_result r;
    int i;
    if (!entries || !keys || !values) {
        PHOTON_FREE(entries);
        PHOTON_FREE((void *)keys);
        PHOTON_FREE((void *)values);
        return photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", path);
    }
    for (i = 0; i < model->num_tensors; i++) {
        const photon_tensor_info *t = &model->tensors[i];
        entries[i].name = t->name;
        entries[i].ndim = t->ndim;
        entries[i].shape[0] = (uint64_t)t->shape[0];
        entries[i].shape[1] = (uint64_t)t->shape[1];
        entries[i].data = model->params + t->offset;
    }
    photon__meta_header(&meta, "checkpoint", &model->config);
    photon__meta_u64(&meta, "photon.step", model->step);
    photon__meta_u64(&meta, "photon.tokens_seen", model->tokens_seen);
    photon__meta_u64(&meta, "photon.seed", model->seed);
    photon__meta_u64(&meta, "photon.round", model->round);
    for (i = 0; i < meta.n; i++) keys[i] = meta.keys[i], values[i] = meta.values[i];
    for (i = 0; i < num_extra; i++) keys[meta.n + i] = extra_keys[i], values[meta.n + i] = extra_values[i];
    r = photon_st_write_f32(path, entries, model->num_tensors, keys, values, meta.n + num_extra, err);
    PHOTON_FREE(entries);
    PHOTON_FREE((void *)keys);
    PHOTON_FREE((void *)values);
    return r;
}

PHOTONDEF photon_result photon_checkpoint_save(const photon_model *model, const char *path, photon_error *err) {
    return photon__checkpoint_write(model, path, NULL, NULL, 0, err);
}

/* Reads every tensor of the model's table from st into dst (laid out as
   m->params) in one pass over the file, checking its payload hash; no
   other tensors may be there. file_hex (may be NULL) gets the file's hash. */
static photon_result photon__read_params(const photon_st_file *st, const photon_model *m, float *dst, char file_hex[65],
                                         photon_error *err) {
    photon__st_sink *sinks = (photon__st_sink *)photon__calloc((size_t)m->num_tensors + 1, sizeof *sinks);
    photon_result r = sinks ? PHOTON_OK : photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", st->path);
    int i;
    for (i = 0; r == PHOTON_OK && i < m->num_tensors; i++) {
        const photon_tensor_info *info = &m->tensors[i];
        const photon_st_tensor *t = photon_st_find(st, info->name);
        if (!t) r = photon__fail(err, PHOTON_ERR_MISMATCH, "%s: tensor '%s' is missing", st->path, info->name);
        else if (t->ndim != info->ndim || t->shape[0] != (uint64_t)info->shape[0] ||
                 (info->ndim == 2 && t->shape[1] != (uint64_t)info->shape[1]))
            r = photon__fail(err, PHOTON_ERR_MISMATCH, "%s: tensor '%s' has a shape other than the config's [%d%s%d]",
                             st->path, info->name, info->shape[0], info->ndim == 2 ? "," : "",
                             info->ndim == 2 ? info->shape[1] : 0);
        else if (t->dtype != PHOTON_DTYPE_F32)
            r = photon__fail(err, PHOTON_ERR_MISMATCH, "%s: tensor '%s' is %s; photon reads F32 only", st->path, t->name,
                             photon__dtype_names[t->dtype]);
        else
            sinks[i].t = t, sinks[i].dst = dst + info->offset;
    }
    /* names are unique and each of the model's is there: any other is extra */
    for (i = 0; r == PHOTON_OK && st->num_tensors > m->num_tensors && i < st->num_tensors; i++) {
        int k, known = 0;
        for (k = 0; k < m->num_tensors && !known; k++) known = sinks[k].t == &st->tensors[i];
        if (!known) r = photon__fail(err, PHOTON_ERR_MISMATCH, "%s: unexpected tensor '%s'", st->path, st->tensors[i].name);
    }
    if (r == PHOTON_OK) r = photon__st_stream(st, sinks, m->num_tensors, 1, file_hex, err);
    PHOTON_FREE(sinks);
    return r;
}

PHOTONDEF photon_result photon_checkpoint_load(photon_model *model, const char *path, photon_error *err) {
    photon_st_file st;
    photon_config config;
    photon_result r = photon_st_open(&st, path, err);
    memset(model, 0, sizeof *model);
    if (r != PHOTON_OK) return r;
    if ((r = photon__check_kind(&st, "checkpoint", err)) == PHOTON_OK &&
        (r = photon__read_config(&st, &config, err)) == PHOTON_OK &&
        (r = photon__model_alloc(model, &config, 1, err)) == PHOTON_OK) {
        if ((r = photon__read_params(&st, model, model->params, model->file_sha256, err)) == PHOTON_OK &&
            (r = photon__parse_u64(&st, "photon.step", &model->step, err)) == PHOTON_OK &&
            (r = photon__parse_u64(&st, "photon.tokens_seen", &model->tokens_seen, err)) == PHOTON_OK &&
            (r = photon__parse_u64(&st, "photon.seed", &model->seed, err)) == PHOTON_OK)
            r = photon__parse_u64(&st, "photon.round", &model->round, err);
        if (r != PHOTON_OK) photon_model_free(model);
    }
    photon_st_close(&st);
    return r;
}

static int photon__valid_sha256(const char *hex) {
    return hex && strlen(hex) == 64 && strspn(hex, "0123456789abcdef") == 64;
}

/* The commit record's keys, in the order written, with their fields. */
#define PHOTON__COMMIT_KEYS 6
static void photon__commit_fields(photon_commit_record *c, const char **keys, char **fields) {
    keys[0] = "photon.commit.prev_state_sha256", fields[0] = c->prev_state_sha256;
    keys[1] = "photon.commit.delta", fields[1] = c->delta;
    keys[2] = "photon.commit.delta_sha256", fields[2] = c->delta_sha256;
    keys[3] = "photon.commit.base_sha256", fields[3] = c->base_sha256;
    keys[4] = "photon.commit.out", fields[4] = c->out;
    keys[5] = "photon.commit.out_sha256", fields[5] = c->out_sha256;
}

/* Reads the photon.commit.* keys; each may be absent (states written
   before them have none), a hash must be one, a path fit its field. */
static photon_result photon__read_commit(const photon_st_file *st, photon_commit_record *c, photon_error *err) {
    const char *keys[PHOTON__COMMIT_KEYS];
    char *fields[PHOTON__COMMIT_KEYS];
    int k;
    memset(c, 0, sizeof *c);
    photon__commit_fields(c, keys, fields);
    for (k = 0; k < PHOTON__COMMIT_KEYS; k++) {
        const char *v = photon_st_meta(st, keys[k]);
        int is_path = fields[k] == c->delta || fields[k] == c->out;
        if (!v) continue;
        if (is_path ? strlen(v) >= sizeof c->delta : !photon__valid_sha256(v) && !(k == 0 && strcmp(v, "none") == 0))
            return photon__fail(err, PHOTON_ERR_FORMAT, "%s: __metadata__ %s is not %s: '%.40s'", st->path, keys[k],
                                is_path ? "a path of under 4096 bytes" : "a SHA-256 (64 lowercase hex digits)", v);
        memcpy(fields[k], v, strlen(v) + 1);
    }
    return PHOTON_OK;
}

PHOTONDEF photon_result photon_client_state_save(const photon_client_state *s, const photon_config *config,
                                                 const char *path, photon_error *err) {
    photon_st_entry entries[4];
    photon__meta meta;
    char hash[20];
    int n = 2;
    memset(entries, 0, sizeof entries);
    entries[0].name = "adamw.m";
    entries[1].name = "adamw.v";
    entries[2].name = "residual";
    entries[0].ndim = entries[1].ndim = entries[2].ndim = 1;
    entries[0].shape[0] = entries[1].shape[0] = entries[2].shape[0] = s->adamw.n;
    entries[0].data = s->adamw.m;
    entries[1].data = s->adamw.v;
    entries[2].data = s->residual;
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)s->data_hash);
    photon__meta_header(&meta, "client_state", config);
    photon__meta_u64(&meta, "photon.step", s->step);
    photon__meta_u64(&meta, "photon.adamw_step", s->adamw.t);
    photon__meta_u64(&meta, "photon.data_position", s->data_position);
    photon__meta_u64(&meta, "photon.data_epoch", s->data_epoch);
    photon__meta_u64(&meta, "photon.data_tokens", s->data_tokens);
    photon__meta_str(&meta, "photon.data_hash", hash);
    {   /* the commit record: only the keys that say something */
        photon_commit_record *c = (photon_commit_record *)&s->commit;
        const char *keys[PHOTON__COMMIT_KEYS];
        char *fields[PHOTON__COMMIT_KEYS];
        int k;
        photon__commit_fields(c, keys, fields);
        for (k = 0; k < PHOTON__COMMIT_KEYS; k++)
            if (fields[k][0]) photon__meta_str(&meta, keys[k], fields[k]);
    }
    if (s->residual) n = 3;
    else entries[2] = entries[3];
    if (s->personal_values) { /* the tensors this client keeps to itself */
        entries[n].name = "personal";
        entries[n].ndim = 1;
        entries[n].shape[0] = s->personal_count;
        entries[n].data = s->personal_values;
        n++;
        photon__meta_str(&meta, "photon.personal", s->personal);
    }
    return photon_st_write_f32(path, entries, n, meta.keys, meta.values, meta.n, err);
}

/* The tensors PATTERNS names in M: a mask (the caller frees it) and how
   many values they hold. */
static photon_result photon__personal_select(const photon_model *m, const char *patterns, unsigned char **mask,
                                             size_t *count, photon_error *err) {
    int t;
    photon_result r;
    *count = 0;
    if (!(*mask = (unsigned char *)photon__calloc((size_t)m->num_tensors, 1)))
        return photon__fail(err, PHOTON_ERR_MEMORY, "out of memory");
    r = photon_personal_mask(m, patterns, *mask, err);
    for (t = 0; r == PHOTON_OK && t < m->num_tensors; t++) *count += (*mask)[t] ? m->tensors[t].size : 0;
    return r;
}

/* The masked tensors of M, packed one after another in tensor order: into
   PACKED from M's parameters, or (INTO not NULL) from PACKED into INTO,
   the parameters of a model laid out as M. */
static void photon__personal_copy(const photon_model *m, const unsigned char *mask, float *packed, float *into) {
    size_t at = 0;
    int t;
    for (t = 0; t < m->num_tensors; t++)
        if (mask[t]) {
            const photon_tensor_info *ti = &m->tensors[t];
            if (into) memcpy(into + ti->offset, packed + at, ti->size * sizeof(float));
            else memcpy(packed + at, m->params + ti->offset, ti->size * sizeof(float));
            at += ti->size;
        }
}

PHOTONDEF photon_result photon_personal_keep(photon_client_state *s, const photon_model *m, const char *patterns,
                                             photon_error *err) {
    unsigned char *mask = NULL;
    size_t count;
    photon_result r = photon__personal_select(m, patterns, &mask, &count, err);
    if (r == PHOTON_OK && count != s->personal_count) {
        PHOTON_FREE(s->personal_values);
        s->personal_count = 0;
        if (!(s->personal_values = (float *)photon__calloc(count, sizeof(float))))
            r = photon__fail(err, PHOTON_ERR_MEMORY, "out of memory for %zu personal values", count);
        else
            s->personal_count = count;
    }
    if (r == PHOTON_OK) {
        photon__personal_copy(m, mask, s->personal_values, NULL);
        snprintf(s->personal, sizeof s->personal, "%s", patterns);
    }
    PHOTON_FREE(mask);
    return r;
}

PHOTONDEF photon_result photon_personal_apply(const photon_client_state *s, photon_model *m, photon_error *err) {
    unsigned char *mask = NULL;
    size_t count;
    photon_result r;
    if (!s->personal_values) return PHOTON_OK;
    r = photon__personal_select(m, s->personal, &mask, &count, err);
    if (r == PHOTON_OK && count != s->personal_count)
        r = photon__fail(err, PHOTON_ERR_MISMATCH, "the state's personal tensors (%s) hold %zu values; in this model "
                         "they have %zu", s->personal, s->personal_count, count);
    if (r == PHOTON_OK) photon__personal_copy(m, mask, s->personal_values, m->params);
    PHOTON_FREE(mask);
    return r;
}

/* One pass over a state file with up to four F32 tensors (a, c, d may be NULL). */
static photon_result photon__stream_state(const photon_st_file *st, const photon_st_tensor *a, float *da,
                                        const photon_st_tensor *b, float *db, const photon_st_tensor *c, float *dc,
                                        const photon_st_tensor *d, float *dd, char file_hex[65], photon_error *err) {
    photon__st_sink sinks[4];
    int n = 0;
    if (a) sinks[n].t = a, sinks[n++].dst = da;
    if (b) sinks[n].t = b, sinks[n++].dst = db;
    if (c) sinks[n].t = c, sinks[n++].dst = dc;
    if (d) sinks[n].t = d, sinks[n++].dst = dd;
    return photon__st_stream(st, sinks, n, 1, file_hex, err);
}

PHOTONDEF void photon_client_state_free(photon_client_state *s) {
    photon_adamw_state_free(&s->adamw);
    PHOTON_FREE(s->residual);
    s->residual = NULL;
    PHOTON_FREE(s->personal_values);
    s->personal_values = NULL;
    s->personal_count = 0;
}

PHOTONDEF photon_result photon_client_state_load(photon_client_state *s, const photon_config *config,
                                                 const char *path, photon_error *err) {
    photon_st_file st;
    photon_config c;
    const photon_st_tensor *m, *v, *e, *p;
    const char *hash, *patterns;
    size_t n = 0;
    photon_result r = photon_st_open(&st, path, err);
    memset(s, 0, sizeof *s);
    if (r != PHOTON_OK) return r;
    if ((r = photon__check_kind(&st, "client_state", err)) != PHOTON_OK ||
        (r = photon__read_config(&st, &c, err)) != PHOTON_OK) {
        photon_st_close(&st);
        return r;
    }
    if (memcmp(&c, config, sizeof c) != 0) {
        photon_st_close(&st);
        return photon__fail(err, PHOTON_ERR_MISMATCH,
                            "%s: client state is for a model with vocab %d, ctx %d, %d layers, %d heads, width %d; this "
                            "model has vocab %d, ctx %d, %d layers, %d heads, width %d",
                            path, c.vocab_size, c.n_ctx, c.n_layer, c.n_head, c.n_embd, config->vocab_size, config->n_ctx,
                            config->n_layer, config->n_head, config->n_embd);
    }
    m = photon_st_find(&st, "adamw.m");
    v = photon_st_find(&st, "adamw.v");
    e = photon_st_find(&st, "residual");
    p = photon_st_find(&st, "personal");
    patterns = photon_st_meta(&st, "photon.personal");
    n = photon__num_params(config);
    if (!m || !v || st.num_tensors != (e ? 3 : 2) + (p ? 1 : 0))
        r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: a client state holds exactly the tensors adamw.m and adamw.v (and "
                         "residual, with error feedback; personal, with personal tensors)", path);
    else if (!p != !patterns || (p && (p->ndim != 1 || p->dtype != PHOTON_DTYPE_F32 || p->shape[0] == 0 ||
                                       p->shape[0] >= n || strlen(patterns) >= sizeof s->personal)))
        r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: personal tensors need both the F32 vector 'personal' (fewer values "
                         "than the model) and their patterns in photon.personal", path);
    else if (p && !(s->personal_values = (float *)photon__calloc((size_t)p->shape[0], sizeof(float))))
        r = photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", path);
    else if (m->ndim != 1 || v->ndim != 1 || m->shape[0] != n || v->shape[0] != n ||
             (e && (e->ndim != 1 || e->shape[0] != n)))
        r = photon__fail(err, PHOTON_ERR_MISMATCH, "%s: adamw.m, adamw.v and residual must be vectors of %zu values, one "
                         "per parameter", path, n);
    else if (m->dtype != PHOTON_DTYPE_F32 || v->dtype != PHOTON_DTYPE_F32 || (e && e->dtype != PHOTON_DTYPE_F32))
        r = photon__fail(err, PHOTON_ERR_MISMATCH, "%s: adamw.m, adamw.v and residual must be F32", path);
    else if (e && !(s->residual = (float *)photon__calloc(n, sizeof(float))))
        r = photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", path);
    else if ((r = photon_adamw_state_init(&s->adamw, n, err)) == PHOTON_OK &&
             (r = photon__stream_state(&st, m, s->adamw.m, v, s->adamw.v, e, s->residual, p, s->personal_values,
                                       s->file_sha256, err)) == PHOTON_OK &&
             (r = photon__read_commit(&st, &s->commit, err)) == PHOTON_OK &&
             (r = photon__parse_u64(&st, "photon.step", &s->step, err)) == PHOTON_OK &&
             (r = photon__parse_u64(&st, "photon.adamw_step", &s->adamw.t, err)) == PHOTON_OK &&
             (r = photon__parse_u64(&st, "photon.data_position", &s->data_position, err)) == PHOTON_OK &&
             (r = photon__parse_u64(&st, "photon.data_epoch", &s->data_epoch, err)) == PHOTON_OK &&
             (r = photon__parse_u64(&st, "photon.data_tokens", &s->data_tokens, err)) == PHOTON_OK) {
        if (p) {
            snprintf(s->personal, sizeof s->personal, "%s", patterns);
            s->personal_count = (size_t)p->shape[0];
        }
        hash = photon_st_meta(&st, "photon.data_hash");
        if (!hash || strlen(hash) != 16 || strspn(hash, "0123456789abcdef") != 16)
            r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: __metadata__ photon.data_hash is not 16 hex digits", path);
        else
            s->data_hash = (uint64_t)strtoull(hash, NULL, 16);
        if (r == PHOTON_OK && s->data_position > s->data_tokens)
            r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: data position %llu lies beyond the %llu data tokens", path,
                             (unsigned long long)s->data_position, (unsigned long long)s->data_tokens);
    }
    if (r == PHOTON_OK) {
        size_t i;
        for (i = 0; i < n && r == PHOTON_OK; i++)
            if (s->adamw.v[i] < 0.0f)
                r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: adamw.v holds a negative second moment at element %zu",
                                 path, i);
    }
    if (r != PHOTON_OK) photon_client_state_free(s);
    photon_st_close(&st);
    return r;
}

PHOTONDEF photon_result photon_client_state_resume(photon_client_state *s, const photon_model *model,
                                                   const photon_dataset *ds, photon_loader *loader, const char *path,
                                                   int *resumed, photon_error *err) {
    photon_result r;
    if (resumed) *resumed = 0;
    if (!path || !photon__file_exists(path)) { /* a first round: zero moments, the data from its start */
        memset(s, 0, sizeof *s);
        return photon_adamw_state_init(&s->adamw, model->num_params, err);
    }
    if ((r = photon_client_state_load(s, &model->config, path, err)) != PHOTON_OK) return r;
    if (s->data_hash != ds->hash || s->data_tokens != ds->num_tokens) {
        r = photon__fail(err, PHOTON_ERR_MISMATCH, "%s: client state belongs to other data (%llu tokens, hash %016llx); "
                         "these files hold %llu tokens, hash %016llx", path, (unsigned long long)s->data_tokens,
                         (unsigned long long)s->data_hash, (unsigned long long)ds->num_tokens,
                         (unsigned long long)ds->hash);
        photon_client_state_free(s);
        return r;
    }
    loader->position = s->data_position;
    loader->epoch = s->data_epoch;
    if (resumed) *resumed = 1;
    return PHOTON_OK;
}

PHOTONDEF void photon_client_state_record(photon_client_state *s, const photon_model *model, const photon_dataset *ds,
                                          const photon_loader *loader) {
    s->step = model->step;
    s->data_position = loader->position;
    s->data_epoch = loader->epoch;
    s->data_tokens = ds->num_tokens;
    s->data_hash = ds->hash;
    memset(&s->commit, 0, sizeof s->commit); /* a new commit, on top of the file it was resumed from */
    snprintf(s->commit.prev_state_sha256, sizeof s->commit.prev_state_sha256, "%s",
             s->file_sha256[0] ? s->file_sha256 : "none");
}

PHOTONDEF photon_result photon_client_state_read_commit(const char *path, photon_commit_record *commit,
                                                        photon_error *err) {
    photon_st_file st;
    photon_result r = photon_st_open(&st, path, err);
    memset(commit, 0, sizeof *commit);
    if (r != PHOTON_OK) return r;
    if ((r = photon__check_kind(&st, "client_state", err)) == PHOTON_OK) r = photon__read_commit(&st, commit, err);
    photon_st_close(&st);
    return r;
}

/* --- finishing a commit that a killed run left halfway (POSIX: it asks whether a pid runs) --- */
#ifdef PHOTON__POSIX

/* Whether the file at path has the SHA-256 hex (a missing file has not). */
static int photon__has_sha256(const char *path, const char *hex) {
    char got[65];
    photon_error ignored;
    return hex[0] && photon__file_exists(path) && photon_sha256_file(path, got, &ignored) == PHOTON_OK &&
           strcmp(got, hex) == 0;
}

/* Where an output that a run of pid recorded is now: 1 still pending
   (temp gets its name), 2 in place (or none recorded), 0 neither. */
static int photon__output_place(const char *target, const char *hex, long pid, char *temp, size_t size) {
    if (!target[0]) return 2;
    snprintf(temp, size, "%s.%ld.pending", target, pid);
    if (photon__has_sha256(temp, hex)) return 1;
    return photon__has_sha256(target, hex) ? 2 : 0;
}

/* Whether a pending state loads (with the config its header gives); its
   record into c. */
static int photon__pending_state_loads(const char *path, photon_commit_record *c) {
    photon_st_file st;
    photon_config config;
    photon_client_state s;
    photon_error ignored;
    int ok;
    if (photon_st_open(&st, path, &ignored) != PHOTON_OK) return 0;
    ok = photon__check_kind(&st, "client_state", &ignored) == PHOTON_OK &&
         photon__read_config(&st, &config, &ignored) == PHOTON_OK;
    photon_st_close(&st);
    if (!ok || photon_client_state_load(&s, &config, path, &ignored) != PHOTON_OK) return 0;
    *c = s.commit;
    photon_client_state_free(&s);
    return 1;
}

/* Finishes the commit of the pending state temp (of the dead run pid) if
   the evidence is complete; *done says whether it did. */
static photon_result photon__roll_forward(const char *path, const char *temp, long pid, const char *final_hex,
                                          photon_recovery *rec, int *done, photon_error *err) {
    photon_commit_record c;
    char out_temp[4096 + 32], delta_temp[4096 + 32];
    int out_at, delta_at;
    *done = 0;
    if (!photon__pending_state_loads(temp, &c) || strcmp(c.prev_state_sha256, final_hex) != 0) return PHOTON_OK;
    out_at = photon__output_place(c.out, c.out_sha256, pid, out_temp, sizeof out_temp);
    delta_at = photon__output_place(c.delta, c.delta_sha256, pid, delta_temp, sizeof delta_temp);
    if (!out_at || !delta_at) return PHOTON_OK;
    if ((out_at == 1 && rename(out_temp, c.out) != 0) || (delta_at == 1 && rename(delta_temp, c.delta) != 0) ||
        rename(temp, path) != 0) /* in photon-train's order: the state last */
        return photon__fail(err, PHOTON_ERR_IO, "%s: cannot finish the commit of a killed run (pid %ld): %s", path, pid,
                            strerror(errno));
    if (c.out[0]) photon__sync_directory(c.out);
    if (c.delta[0]) photon__sync_directory(c.delta);
    photon__sync_directory(path);
    rec->pid = pid;
    rec->commit = c;
    *done = 1;
    return PHOTON_OK;
}

#endif

PHOTONDEF photon_result photon_client_state_reconcile(const char *path, photon_recovery *rec, photon_error *err) {
    memset(rec, 0, sizeof *rec);
#ifdef PHOTON__POSIX
    {
        char dir[4096], temp[8192], final_hex[65] = "none";
        const char *base;
        DIR *listing;
        struct dirent *e;
        int done = 0;
        photon_result r = PHOTON_OK;
        if (photon__file_exists(path) && (r = photon_sha256_file(path, final_hex, err)) != PHOTON_OK) return r;
        photon__split_path(path, dir, sizeof dir, &base);
        if (!(listing = opendir(dir)))
            return photon__fail(err, PHOTON_ERR_IO, "%s: cannot read the directory: %s", dir, strerror(errno));
        while (r == PHOTON_OK && !done && (e = readdir(listing)) != NULL) {
            long pid = photon__leftover_pid(e->d_name, base, 1);
            if (!photon__pid_gone(pid)) continue;
            snprintf(temp, sizeof temp, "%s/%s", dir, e->d_name);
            r = photon__roll_forward(path, temp, pid, final_hex, rec, &done, err);
        }
        closedir(listing);
        return r;
    }
#else
    (void)path, (void)err;
    return PHOTON_OK;
#endif
}


/* ======================================================================= */
/* >>hf: Hugging Face GPT-2 folders, in and out                            */
/* ======================================================================= */

/* config.json, as far as photon reads it: the shape, and every setting
   whose other values photon's model cannot represent. */
typedef struct photon__hf_config {
    photon_config c;
    int have[5];                 /* vocab_size, n_positions, n_layer, n_head, n_embd */
    int untied;                  /* tie_word_embeddings false */
    double n_inner;              /* 0: null or absent */
} photon__hf_config;

/* Checks one config.json key against what photon's GPT-2 is; *num is the
   value when it is a number, str when a string, flag when true/false. */
static photon_result photon__hf_config_key(photon__hf_config *h, const char *path, const char *key, int kind,
                                           double num, const char *str, photon_error *err) {
    static const char *const shape[5] = {"vocab_size", "n_positions", "n_layer", "n_head", "n_embd"};
    int *fields[5], k, flag = kind == 2 && num != 0.0;
    fields[0] = &h->c.vocab_size, fields[1] = &h->c.n_ctx, fields[2] = &h->c.n_layer, fields[3] = &h->c.n_head;
    fields[4] = &h->c.n_embd;
    for (k = 0; k < 5; k++)
        if (strcmp(key, shape[k]) == 0 || (k == 1 && strcmp(key, "n_ctx") == 0 && !h->have[1])) {
            if (kind != 1 || num != floor(num) || num < 1 || num > 1e6)
                return photon__fail(err, PHOTON_ERR_FORMAT, "%s: %s is not a positive integer", path, key);
            *fields[k] = (int)num;
            h->have[k] = strcmp(key, "n_ctx") != 0;
            return PHOTON_OK;
        }
    if (strcmp(key, "model_type") == 0 && !(kind == 3 && strcmp(str, "gpt2") == 0))
        return photon__fail(err, PHOTON_ERR_MISMATCH, "%s: model_type '%.40s': photon reads GPT-2 models only", path,
                            kind == 3 ? str : "?");
    if (strcmp(key, "activation_function") == 0 &&
        !(kind == 3 && (strcmp(str, "gelu_new") == 0 || strcmp(str, "gelu_pytorch_tanh") == 0)))
        return photon__fail(err, PHOTON_ERR_MISMATCH, "%s: activation_function '%.40s': photon's MLP is the tanh GELU "
                            "(gelu_new)", path, kind == 3 ? str : "?");
    if (strcmp(key, "layer_norm_epsilon") == 0 && !(kind == 1 && fabs(num - 1e-5) <= 1e-12))
        return photon__fail(err, PHOTON_ERR_MISMATCH, "%s: layer_norm_epsilon %g: photon's LayerNorm uses 1e-05", path,
                            num);
    if (strcmp(key, "n_inner") == 0 && kind != 0) h->n_inner = kind == 1 ? num : -1.0; /* checked once n_embd is known */
    if ((strcmp(key, "scale_attn_by_inverse_layer_idx") == 0 || strcmp(key, "add_cross_attention") == 0) && flag)
        return photon__fail(err, PHOTON_ERR_MISMATCH, "%s: %s is true: photon's GPT-2 has no such attention", path, key);
    if (strcmp(key, "scale_attn_weights") == 0 && kind == 2 && !flag)
        return photon__fail(err, PHOTON_ERR_MISMATCH, "%s: scale_attn_weights is false: photon scales attention by "
                            "1/sqrt(head size)", path);
    if (strcmp(key, "tie_word_embeddings") == 0 && kind == 2) h->untied = !flag;
    return PHOTON_OK;
}

static photon_result photon__hf_read_config(const char *path, photon__hf_config *h, char hex[65], photon_error *err) {
    unsigned char *data;
    size_t size;
    photon__json j;
    photon_result r;
    photon_error why;
    int k;
    memset(h, 0, sizeof *h);
    if ((r = photon_read_file(path, &data, &size, err)) != PHOTON_OK) return r;
    {   /* the hash of the very text that is parsed */
        photon_sha256 sha;
        photon_sha256_init(&sha);
        photon_sha256_update(&sha, data, size);
        photon_sha256_final(&sha, hex);
    }
    photon__json_init(&j, (const char *)data, size, path, err);
    if (!photon__json_accept(&j, '{')) r = photon__json_error(&j, "expected a JSON object");
    else if (!photon__json_accept(&j, '}')) {
        do {
            char *key = NULL, *str = NULL;
            int kind = 4;
            double num = 0.0;
            if ((r = photon__json_string(&j, &key)) == PHOTON_OK)
                r = photon__json_accept(&j, ':') ? photon__json_scalar(&j, &kind, &num, &str)
                                                 : photon__json_error(&j, "expected ':'");
            if (r == PHOTON_OK) r = photon__hf_config_key(h, path, key, kind, num, str, err);
            PHOTON_FREE(key);
            PHOTON_FREE(str);
        } while (r == PHOTON_OK && photon__json_accept(&j, ','));
        if (r == PHOTON_OK && !photon__json_accept(&j, '}')) r = photon__json_error(&j, "expected ',' or '}'");
    }
    PHOTON_FREE(data);
    for (k = 0; r == PHOTON_OK && k < 5; k++)
        if (!h->have[k]) {
            static const char *const shape[5] = {"vocab_size", "n_positions", "n_layer", "n_head", "n_embd"};
            r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: has no %s", path, shape[k]);
        }
    if (r == PHOTON_OK && h->n_inner != 0.0 && h->n_inner != 4.0 * h->c.n_embd)
        r = photon__fail(err, PHOTON_ERR_MISMATCH, "%s: n_inner %g: photon's MLP is 4 x n_embd wide (n_inner null)",
                         path, h->n_inner);
    if (r == PHOTON_OK && photon_config_validate(&h->c, &why) != PHOTON_OK)
        r = photon__fail(err, PHOTON_ERR_MISMATCH, "%s: %s", path, why.message);
    return r;
}

/* The safetensors files of a source (at most PHOTON__HF_MAX_FILES shards),
   and config.json's path. */
#define PHOTON__HF_MAX_FILES 1024

typedef struct photon__hf_source {
    char config[4200];
    int num_files;
    char **files;
    char **weight_map_names, **weight_map_files; /* the index's, if any */
    int num_mapped;
} photon__hf_source;

static void photon__hf_source_free(photon__hf_source *s) {
    int k;
    for (k = 0; k < s->num_files; k++) PHOTON_FREE(s->files[k]);
    for (k = 0; k < s->num_mapped; k++) PHOTON_FREE(s->weight_map_names[k]), PHOTON_FREE(s->weight_map_files[k]);
    PHOTON_FREE(s->files);
    PHOTON_FREE(s->weight_map_names);
    PHOTON_FREE(s->weight_map_files);
    memset(s, 0, sizeof *s);
}

static photon_result photon__hf_add_file(photon__hf_source *s, const char *path, photon_error *err) {
    char **grown;
    int k;
    for (k = 0; k < s->num_files; k++)
        if (strcmp(s->files[k], path) == 0) return PHOTON_OK;
    if (s->num_files == PHOTON__HF_MAX_FILES)
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "%s: more than %d shards; photon imports at most that many", path,
                            PHOTON__HF_MAX_FILES);
    grown = (char **)PHOTON_MALLOC((size_t)(s->num_files + 1) * sizeof(char *));
    if (!grown) return photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", path);
    if (s->num_files) memcpy(grown, s->files, (size_t)s->num_files * sizeof(char *));
    PHOTON_FREE(s->files);
    s->files = grown;
    if (!(s->files[s->num_files] = photon__strdup(path))) return photon__fail(err, PHOTON_ERR_MEMORY, "out of memory");
    s->num_files++;
    return PHOTON_OK;
}

/* model.safetensors.index.json: {"metadata": {...}, "weight_map": {name: file}};
   the files are relative to the index's directory. */
static photon_result photon__hf_read_index(photon__hf_source *s, const char *path, const char *dir, photon_error *err) {
    unsigned char *data;
    size_t size;
    photon__json j;
    photon_result r;
    int have_map = 0;
    if ((r = photon_read_file(path, &data, &size, err)) != PHOTON_OK) return r;
    photon__json_init(&j, (const char *)data, size, path, err);
    if (!photon__json_accept(&j, '{')) r = photon__json_error(&j, "expected a JSON object");
    else if (!photon__json_accept(&j, '}')) {
        do {
            char *key = NULL;
            if ((r = photon__json_string(&j, &key)) != PHOTON_OK) break;
            if (!photon__json_accept(&j, ':')) r = photon__json_error(&j, "expected ':'");
            else if (strcmp(key, "weight_map") != 0) r = photon__json_skip(&j, 1);
            else if (!photon__json_accept(&j, '{')) r = photon__json_error(&j, "weight_map is not an object");
            else if (have_map = 1, !photon__json_accept(&j, '}')) {
                do {
                    char *name = NULL, *file = NULL, full[4200];
                    if ((r = photon__json_string(&j, &name)) == PHOTON_OK)
                        r = photon__json_accept(&j, ':') ? photon__json_string(&j, &file)
                                                         : photon__json_error(&j, "expected ':'");
                    if (r == PHOTON_OK && (strchr(file, '/') || !file[0]))
                        r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: weight_map names the file '%.60s'; shards are "
                                         "files beside the index", path, file);
                    if (r == PHOTON_OK) {
                        char **n2 = (char **)PHOTON_MALLOC((size_t)(s->num_mapped + 1) * sizeof(char *));
                        char **f2 = (char **)PHOTON_MALLOC((size_t)(s->num_mapped + 1) * sizeof(char *));
                        snprintf(full, sizeof full, "%s/%s", dir, file);
                        if (!n2 || !f2) r = photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", path);
                        else {
                            if (s->num_mapped) memcpy(n2, s->weight_map_names, (size_t)s->num_mapped * sizeof(char *));
                            if (s->num_mapped) memcpy(f2, s->weight_map_files, (size_t)s->num_mapped * sizeof(char *));
                            PHOTON_FREE(s->weight_map_names), PHOTON_FREE(s->weight_map_files);
                            s->weight_map_names = n2, s->weight_map_files = f2;
                            n2[s->num_mapped] = name, f2[s->num_mapped] = photon__strdup(full);
                            s->num_mapped++;
                            name = NULL;
                            r = f2[s->num_mapped - 1] ? photon__hf_add_file(s, full, err)
                                                      : photon__fail(err, PHOTON_ERR_MEMORY, "out of memory");
                        }
                        if (!n2 || !f2) PHOTON_FREE(n2), PHOTON_FREE(f2);
                    }
                    PHOTON_FREE(name);
                    PHOTON_FREE(file);
                } while (r == PHOTON_OK && photon__json_accept(&j, ','));
                if (r == PHOTON_OK && !photon__json_accept(&j, '}')) r = photon__json_error(&j, "expected ',' or '}'");
            }
            PHOTON_FREE(key);
        } while (r == PHOTON_OK && photon__json_accept(&j, ','));
        if (r == PHOTON_OK && !photon__json_accept(&j, '}')) r = photon__json_error(&j, "expected ',' or '}'");
    }
    PHOTON_FREE(data);
    if (r == PHOTON_OK && (!have_map || s->num_files == 0))
        r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: has no weight_map of tensors to files", path);
    return r;
}

/* Finds the files: a folder, a .safetensors file, or an index .json. */
static photon_result photon__hf_find(photon__hf_source *s, const char *source, photon_error *err) {
    char dir[4096], path[4200];
    size_t n = strlen(source);
    int is_dir = 0;
    memset(s, 0, sizeof *s);
#ifdef PHOTON__POSIX
    {
        struct stat info;
        if (stat(source, &info) != 0)
            return photon__fail(err, PHOTON_ERR_IO, "%s: cannot open: %s", source, strerror(errno));
        is_dir = S_ISDIR(info.st_mode);
    }
#endif
    if (n >= sizeof dir) return photon__fail(err, PHOTON_ERR_ARGUMENT, "%.200s...: path too long", source);
    if (is_dir) snprintf(dir, sizeof dir, "%s", source);
    else {
        const char *slash = strrchr(source, '/');
        snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - source) : 1, slash ? source : ".");
    }
    snprintf(s->config, sizeof s->config, "%s/config.json", dir);
    if (!is_dir && n > 5 && strcmp(source + n - 5, ".json") == 0) return photon__hf_read_index(s, source, dir, err);
    if (!is_dir) return photon__hf_add_file(s, source, err);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (photon__file_exists(path)) return photon__hf_read_index(s, path, dir, err);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (!photon__file_exists(path))
        return photon__fail(err, PHOTON_ERR_IO, "%s: holds neither model.safetensors nor model.safetensors.index.json "
                            "(photon reads safetensors, not pytorch_model.bin)", source);
    return photon__hf_add_file(s, path, err);
}

/* Where each photon tensor comes from: its source name, file and place. */
typedef struct photon__hf_tensor {
    const photon_st_tensor *t; /* in files[file], open */
    int file, info;            /* info: index into the model's tensor table, -1 for lm_head */
} photon__hf_tensor;

/* Maps a source tensor name to the model's table: "transformer." or no
   prefix; the attention-mask buffers older transformers saved are ignored
   (-2); lm_head.weight is -1; anything else is unknown (-3). */
static int photon__hf_match(const photon_model *m, const char *name, int *prefixed) {
    const char *n = strncmp(name, "transformer.", 12) == 0 ? name + 12 : name;
    size_t len = strlen(n);
    int k;
    if (strcmp(name, "lm_head.weight") == 0) return -1;
    if ((len > 10 && strcmp(n + len - 10, ".attn.bias") == 0) || (len > 17 && strcmp(n + len - 17, ".attn.masked_bias") == 0))
        return -2;
    for (k = 0; k < m->num_tensors; k++)
        if (strcmp(n, m->tensors[k].name) == 0) {
            *prefixed = n != name;
            return k;
        }
    return -3;
}

/* The tensors of one open file that the model takes, in file order; each
   name may come from one file only. */
static photon_result photon__hf_plan_file(const photon_model *m, const photon_st_file *st, int file, char *seen,
                                          photon__hf_tensor *want, int *num_want, int *prefixed, photon_error *err) {
    int i, k;
    *num_want = 0;
    for (i = 0; i < st->num_tensors; i++) {
        const photon_st_tensor *t = &st->tensors[i];
        int at = photon__hf_match(m, t->name, prefixed), ndim = at >= 0 ? m->tensors[at].ndim : 2;
        uint64_t d0 = at >= 0 ? (uint64_t)m->tensors[at].shape[0] : (uint64_t)m->config.vocab_size;
        uint64_t d1 = at >= 0 ? (uint64_t)m->tensors[at].shape[1] : (uint64_t)m->config.n_embd;
        if (at == -2) continue;
        if (at == -3) return photon__fail(err, PHOTON_ERR_MISMATCH, "%s: unexpected tensor '%s' (not GPT-2's)", st->path, t->name);
        if (seen[at + 1]++)
            return photon__fail(err, PHOTON_ERR_FORMAT, "%s: tensor '%s' appears in more than one file", st->path,
                                t->name);
        if (t->dtype != PHOTON_DTYPE_F32 && t->dtype != PHOTON_DTYPE_F16 && t->dtype != PHOTON_DTYPE_BF16)
            return photon__fail(err, PHOTON_ERR_MISMATCH, "%s: tensor '%s' is %s; photon imports F32, F16 and BF16",
                                st->path, t->name, photon__dtype_names[t->dtype]);
        if (t->ndim != ndim || t->shape[0] != d0 || (ndim == 2 && t->shape[1] != d1))
            return photon__fail(err, PHOTON_ERR_MISMATCH, "%s: tensor '%s' has a shape other than config.json's "
                                "[%llu%s%llu]", st->path, t->name, (unsigned long long)d0, ndim == 2 ? "," : "",
                                ndim == 2 ? (unsigned long long)d1 : 0ull);
        for (k = *num_want; k > 0 && want[k - 1].t->begin > t->begin; k--) want[k] = want[k - 1];
        want[k].t = t, want[k].file = file, want[k].info = at;
        (*num_want)++;
    }
    return PHOTON_OK;
}

static const char *photon__base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* The provenance keys: photon.source.K.file and .sha256, K from 0: room
   for three keys and two per file (PHOTON__HF_MAX_FILES). */
typedef struct photon__hf_provenance {
    int n;
    char keys[3 + 2 * PHOTON__HF_MAX_FILES][40], values[3 + 2 * PHOTON__HF_MAX_FILES][80];
    const char *kp[3 + 2 * PHOTON__HF_MAX_FILES], *vp[3 + 2 * PHOTON__HF_MAX_FILES];
} photon__hf_provenance;

static void photon__hf_note(photon__hf_provenance *p, const char *key, const char *value) {
    if (p->n >= 3 + 2 * PHOTON__HF_MAX_FILES) return; /* photon__hf_find refuses more files */
    snprintf(p->keys[p->n], sizeof p->keys[0], "%s", key);
    snprintf(p->values[p->n], sizeof p->values[0], "%.79s", value);
    p->kp[p->n] = p->keys[p->n], p->vp[p->n] = p->values[p->n];
    p->n++;
}

/* Reads every file of the source into the model's parameters (lm_head, if
   any, into *lm_head) and notes each file's hash. */
static photon_result photon__hf_read_all(photon_model *m, const photon__hf_source *src, photon_hf_import_info *info,
                                         float **lm_head, photon__hf_provenance *prov, photon_error *err) {
    char *seen = (char *)photon__calloc((size_t)m->num_tensors + 1, 1);
    photon__hf_tensor *want = NULL;
    float **dst = NULL;
    photon_result r = seen ? PHOTON_OK : photon__fail(err, PHOTON_ERR_MEMORY, "out of memory");
    int f, k;
    for (f = 0; r == PHOTON_OK && f < src->num_files; f++) {
        photon_st_file st;
        int num_want = 0;
        char hex[65], key[40];
        if ((r = photon_st_open(&st, src->files[f], err)) != PHOTON_OK) break;
        want = (photon__hf_tensor *)photon__calloc((size_t)st.num_tensors + 1, sizeof *want);
        dst = (float **)photon__calloc((size_t)st.num_tensors + 1, sizeof *dst);
        if (!want || !dst) r = photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", st.path);
        if (r == PHOTON_OK) r = photon__hf_plan_file(m, &st, f, seen, want, &num_want, &info->prefixed, err);
        for (k = 0; r == PHOTON_OK && k < num_want; k++) {
            if (want[k].info >= 0) dst[k] = m->params + m->tensors[want[k].info].offset;
            else if (!(dst[k] = *lm_head = (float *)photon__calloc((size_t)m->config.vocab_size * m->config.n_embd, 4)))
                r = photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory for lm_head.weight", st.path);
            if (want[k].t->dtype != PHOTON_DTYPE_F32) info->widened++;
        }
        if (r == PHOTON_OK) {
            photon__st_sink *sinks = (photon__st_sink *)photon__calloc((size_t)num_want + 1, sizeof *sinks);
            if (!sinks) r = photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", st.path);
            for (k = 0; sinks && k < num_want; k++) sinks[k].t = want[k].t, sinks[k].dst = dst[k];
            if (r == PHOTON_OK) r = photon__st_stream(&st, sinks, num_want, 0, hex, err);
            PHOTON_FREE(sinks);
        }
        if (r == PHOTON_OK) {
            snprintf(key, sizeof key, "photon.source.%d.file", f);
            photon__hf_note(prov, key, photon__base_name(src->files[f]));
            snprintf(key, sizeof key, "photon.source.%d.sha256", f);
            photon__hf_note(prov, key, hex);
        }
        PHOTON_FREE(want), PHOTON_FREE(dst);
        want = NULL, dst = NULL;
        photon_st_close(&st);
    }
    for (k = 0; r == PHOTON_OK && k < m->num_tensors; k++)
        if (!seen[k + 1])
            r = photon__fail(err, PHOTON_ERR_MISMATCH, "%s: has no tensor %s (or transformer.%s)",
                             src->num_files == 1 ? src->files[0] : "the source", m->tensors[k].name, m->tensors[k].name);
    PHOTON_FREE(seen);
    info->num_files = src->num_files;
    return r;
}

PHOTONDEF photon_result photon_hf_import(const char *source, const char *out_path, photon_hf_import_info *info,
                                         photon_error *err) {
    photon__hf_source src;
    photon__hf_config hc;
    photon__hf_provenance *prov = (photon__hf_provenance *)photon__calloc(1, sizeof *prov);
    photon_model m;
    float *lm_head = NULL;
    char hex[65], count[16], vocab[4200], merges[4300];
    photon_result r;
    memset(info, 0, sizeof *info);
    memset(&m, 0, sizeof m);
    if (!prov) return photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", source);
    if ((r = photon__hf_find(&src, source, err)) != PHOTON_OK) {
        photon__hf_source_free(&src);
        PHOTON_FREE(prov);
        return r;
    }
    if ((r = photon__hf_read_config(src.config, &hc, hex, err)) == PHOTON_OK &&
        (r = photon__model_alloc(&m, &hc.c, 0, err)) == PHOTON_OK) {
        info->config = hc.c;
        photon__hf_note(prov, "photon.source", "huggingface");
        photon__hf_note(prov, "photon.source.config_sha256", hex);
        snprintf(count, sizeof count, "%d", src.num_files);
        photon__hf_note(prov, "photon.source.files", count);
        r = photon__hf_read_all(&m, &src, info, &lm_head, prov, err);
    }
    if (r == PHOTON_OK && hc.untied && !lm_head)
        r = photon__fail(err, PHOTON_ERR_MISMATCH, "%s: tie_word_embeddings is false but there is no lm_head.weight",
                         src.config);
    if (r == PHOTON_OK && hc.untied && memcmp(lm_head, m.params, (size_t)hc.c.vocab_size * hc.c.n_embd * 4) != 0)
        r = photon__fail(err, PHOTON_ERR_MISMATCH, "%s: tie_word_embeddings is false and lm_head.weight differs from "
                         "wte.weight: photon's output head is tied to the token embedding", src.config);
    if (r == PHOTON_OK) r = photon__checkpoint_write(&m, out_path, prov->kp, prov->vp, prov->n, err);
    snprintf(vocab, sizeof vocab, "%.4090s", src.config);
    vocab[strlen(vocab) - strlen("config.json")] = '\0';
    snprintf(info->tokenizer_dir, sizeof info->tokenizer_dir, "%.*s", vocab[0] ? (int)strlen(vocab) - 1 : 1,
             vocab[0] ? vocab : ".");
    snprintf(merges, sizeof merges, "%.4190smerges.txt", vocab);
    snprintf(vocab + strlen(vocab), sizeof vocab - strlen(vocab), "vocab.json");
    info->has_tokenizer = photon__file_exists(vocab) && photon__file_exists(merges);
    PHOTON_FREE(lm_head);
    PHOTON_FREE(prov);
    photon_model_free(&m);
    photon__hf_source_free(&src);
    return r;
}

/* --- export --- */

static void photon__hf_config_text(photon__text *t, const photon_config *c, int eos) {
    char buf[1200];
    snprintf(buf, sizeof buf,
             "{\n"
             "  \"architectures\": [\"GPT2LMHeadModel\"],\n"
             "  \"model_type\": \"gpt2\",\n"
             "  \"vocab_size\": %d,\n"
             "  \"n_positions\": %d,\n"
             "  \"n_ctx\": %d,\n"
             "  \"n_embd\": %d,\n"
             "  \"n_layer\": %d,\n"
             "  \"n_head\": %d,\n"
             "  \"n_inner\": null,\n"
             "  \"activation_function\": \"gelu_new\",\n"
             "  \"layer_norm_epsilon\": 1e-05,\n"
             "  \"initializer_range\": 0.02,\n"
             "  \"resid_pdrop\": 0.0,\n"
             "  \"embd_pdrop\": 0.0,\n"
             "  \"attn_pdrop\": 0.0,\n"
             "  \"scale_attn_weights\": true,\n"
             "  \"tie_word_embeddings\": true,\n"
             "  \"bos_token_id\": %d,\n"
             "  \"eos_token_id\": %d\n"
             "}\n",
             c->vocab_size, c->n_ctx, c->n_ctx, c->n_embd, c->n_layer, c->n_head, eos, eos);
    photon__text_puts(t, buf);
}

PHOTONDEF photon_result photon_write_hf_config(const photon_config *c, const char *path, photon_error *err) {
    photon__text t = {NULL, 0, 0, 0};
    photon_result r = photon_config_validate(c, err);
    if (r != PHOTON_OK) return r;
    photon__hf_config_text(&t, c, c->vocab_size - 1);
    r = t.failed ? photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", path) : photon_write_file(path, t.s, t.len, err);
    PHOTON_FREE(t.s);
    return r;
}

/* A model card from what the checkpoint says about itself. */
static void photon__hf_card(photon__text *t, const photon_st_file *st, const photon_config *c) {
    const char *keys[4] = {"photon.round", "photon.step", "photon.tokens_seen", "photon.clients"};
    const char *labels[4] = {"federated rounds merged into it", "global optimizer steps", "tokens trained on",
                             "clients in its last round"};
    const char *v;
    char line[600];
    int k;
    photon__text_puts(t, "---\nlibrary_name: transformers\ntags:\n- gpt2\n- photon\n- federated-learning\n---\n\n");
    photon__text_puts(t, "# A GPT-2 model pre-trained with photon\n\n");
    photon__text_puts(t, "Trained by federated averaging across silos with photon (federated pre-training in plain C, "
                         "after Sani, Iacob et al., arXiv 2411.02908): every silo trained its own copy for many local "
                         "steps and sent only the change of its weights.\n\n");
    snprintf(line, sizeof line, "- shape: %d layers, %d heads, width %d, context %d, vocabulary %d\n", c->n_layer,
             c->n_head, c->n_embd, c->n_ctx, c->vocab_size);
    photon__text_puts(t, line);
    for (k = 0; k < 4; k++)
        if ((v = photon_st_meta(st, keys[k])) != NULL) {
            snprintf(line, sizeof line, "- %s: %.80s\n", labels[k], v);
            photon__text_puts(t, line);
        }
    for (k = 0; k < 1000; k++) {
        char key[48];
        const char *tok;
        snprintf(key, sizeof key, "photon.delta.%d.client", k);
        if (!(v = photon_st_meta(st, key))) break;
        snprintf(key, sizeof key, "photon.delta.%d.tokens", k);
        tok = photon_st_meta(st, key);
        snprintf(line, sizeof line, "  - client %.63s: %s tokens\n", v, tok ? tok : "?");
        photon__text_puts(t, line);
    }
    if ((v = photon_st_meta(st, "photon.source")) != NULL) {
        const char *h = photon_st_meta(st, "photon.source.0.sha256");
        snprintf(line, sizeof line, "- started from a %.40s model (first file's SHA-256 %.64s)\n", v, h ? h : "?");
        photon__text_puts(t, line);
    }
    v = photon_st_meta(st, "photon.version");
    snprintf(line, sizeof line, "\nWritten by photon %s (file format %s).\n", PHOTON_VERSION, v ? v : "?");
    photon__text_puts(t, line);
}

PHOTONDEF photon_result photon_hf_export(const char *checkpoint_path, const char *dir, const photon_hf_file *files,
                                         int num_files, int eos_token_id, photon_error *err) {
    photon_st_file st;
    photon_config c;
    photon__text config = {NULL, 0, 0, 0}, card = {NULL, 0, 0, 0};
    photon__staged_dir d;
    unsigned char *chunk = NULL;
    photon_result r = photon_st_open(&st, checkpoint_path, err);
    int k;
    if (r != PHOTON_OK) return r;
    if ((r = photon__check_kind(&st, "checkpoint", err)) == PHOTON_OK && (r = photon__read_config(&st, &c, err)) == PHOTON_OK &&
        (r = photon_output_dir_check(dir, err)) == PHOTON_OK) {
        photon__hf_config_text(&config, &c, eos_token_id >= 0 && eos_token_id < c.vocab_size ? eos_token_id : c.vocab_size - 1);
        photon__hf_card(&card, &st, &c);
        chunk = (unsigned char *)PHOTON_MALLOC(1 << 20);
        if (config.failed || card.failed || !chunk) r = photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", dir);
    }
    if (r == PHOTON_OK && (r = photon__staged_begin(&d, dir, err)) == PHOTON_OK) {
        FILE *f = (FILE *)st.handle;
        size_t n;
        if ((r = photon__staged_open(&d, "config.json")) == PHOTON_OK && (r = photon__staged_write(&d, config.s, config.len)) == PHOTON_OK)
            r = photon__staged_close(&d);
        if (r == PHOTON_OK && (r = photon__staged_open(&d, "README.md")) == PHOTON_OK &&
            (r = photon__staged_write(&d, card.s, card.len)) == PHOTON_OK)
            r = photon__staged_close(&d);
        if (r == PHOTON_OK && (r = photon__staged_open(&d, "model.safetensors")) == PHOTON_OK) {
            /* the checkpoint's bytes, exactly as opened, its payload hash checked on the way */
            photon_sha256 payload;
            const char *recorded = photon_st_meta(&st, "photon.data_sha256");
            uint64_t pos = 0;
            char hex[65];
            photon_sha256_init(&payload);
            if (fseek(f, 0, SEEK_SET) != 0) r = photon__fail(err, PHOTON_ERR_IO, "%s: cannot seek", checkpoint_path);
            while (r == PHOTON_OK && pos < st.file_size &&
                   (n = fread(chunk, 1, st.file_size - pos < (1u << 20) ? (size_t)(st.file_size - pos) : (1u << 20), f)) > 0) {
                size_t skip = pos < st.data_start ? (size_t)(st.data_start - pos < n ? st.data_start - pos : n) : 0;
                photon_sha256_update(&payload, chunk + skip, n - skip);
                r = photon__staged_write(&d, chunk, n);
                pos += n;
            }
            photon_sha256_final(&payload, hex);
            if (r == PHOTON_OK && pos != st.file_size)
                r = photon__fail(err, PHOTON_ERR_IO, "%s: read %llu of %llu bytes (truncated while reading?)",
                                 checkpoint_path, (unsigned long long)pos, (unsigned long long)st.file_size);
            if (r == PHOTON_OK && recorded && strcmp(recorded, hex) != 0)
                r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: its tensor data does not match the SHA-256 it records "
                                 "(photon.data_sha256): the file is corrupt or was changed; nothing exported",
                                 checkpoint_path);
            if (r == PHOTON_OK && !recorded && !photon__accept_unhashed_files)
                r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: records no photon.data_sha256", checkpoint_path);
            if (r == PHOTON_OK) r = photon__staged_close(&d);
        }
        for (k = 0; r == PHOTON_OK && k < num_files; k++) {
            if (strcmp(files[k].name, "config.json") == 0 || strcmp(files[k].name, "model.safetensors") == 0 ||
                strcmp(files[k].name, "README.md") == 0)
                r = photon__fail(err, PHOTON_ERR_ARGUMENT, "%s: '%s' is written by the export itself", dir, files[k].name);
            else if (strchr(files[k].name, '/') || !files[k].name[0])
                r = photon__fail(err, PHOTON_ERR_ARGUMENT, "%s: '%s' is not a plain file name", dir, files[k].name);
            else if ((r = photon__staged_open(&d, files[k].name)) == PHOTON_OK &&
                     (r = photon__staged_write(&d, files[k].data, files[k].size)) == PHOTON_OK)
                r = photon__staged_close(&d);
        }
        if (r == PHOTON_OK) r = photon__staged_publish(&d);
        else photon__staged_abort(&d);
    }
    PHOTON_FREE(chunk);
    PHOTON_FREE(config.s);
    PHOTON_FREE(card.s);
    photon_st_close(&st);
    return r;
}

/* ======================================================================= */
/* >>delta: the pseudo-gradient as a file                                  */
/* ======================================================================= */
/* A delta is the client's pseudo-gradient, global - local, in the
   checkpoint's tensor layout, with what the aggregator needs to weigh and
   audit it in __metadata__. */

PHOTONDEF int photon_client_id_valid(const char *id) {
    size_t n = strlen(id);
    return n > 0 && n < 64 && strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

PHOTONDEF int photon_glob_match(const char *p, const char *name) {
    if (*p == '\0') return *name == '\0';
    if (*p == '*') return photon_glob_match(p + 1, name) || (*name && photon_glob_match(p, name + 1));
    return *name && (*p == '?' || *p == *name) && photon_glob_match(p + 1, name + 1);
}

/* Whether a tensor name matches one of the comma-separated patterns. */
static int photon__personal_matches(const char *patterns, const char *name) {
    char one[256];
    const char *at = patterns;
    while (*at) {
        size_t k = strcspn(at, ",");
        if (k > 0 && k < sizeof one) {
            memcpy(one, at, k);
            one[k] = '\0';
            if (photon_glob_match(one, name)) return 1;
        }
        at += k + (at[k] == ',');
    }
    return 0;
}

PHOTONDEF photon_result photon_personal_mask(const photon_model *m, const char *patterns, unsigned char *mask,
                                             photon_error *err) {
    const char *at = patterns;
    int t, kept = 0;
    size_t n = strlen(patterns);
    if (n == 0 || n >= 256 || strspn(patterns, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-*?,") != n)
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "personal tensors '%.300s': 1 to 255 characters of tensor-name globs "
                            "(A-Z a-z 0-9 . _ - * ?), comma-separated", patterns);
    while (*at) { /* every pattern names something */
        char one[256];
        size_t k = strcspn(at, ",");
        int hit = 0;
        memcpy(one, at, k);
        one[k] = '\0';
        for (t = 0; t < m->num_tensors && !hit; t++) hit = k > 0 && photon_glob_match(one, m->tensors[t].name);
        if (!hit)
            return photon__fail(err, PHOTON_ERR_ARGUMENT, "personal tensors: '%s' matches no tensor of this model (%d "
                                "layers: wte, wpe, h.0.* to h.%d.*, ln_f.*)", one, m->config.n_layer, m->config.n_layer - 1);
        at += k + (at[k] == ',');
    }
    for (t = 0; t < m->num_tensors; t++) kept += mask[t] = (unsigned char)photon__personal_matches(patterns, m->tensors[t].name);
    if (kept == m->num_tensors)
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "personal tensors '%s' match every tensor: nothing would be shared",
                            patterns);
    return PHOTON_OK;
}

/* tokens = local_steps x batch x seq, every factor at least 1, the sequence
   within the context, and no product that overflows: what a delta says it
   trained on follows from how it trained. */
static int photon__delta_counts_agree(const photon_delta_info *d, const photon_config *c) {
    if (d->local_steps < 1 || d->batch < 1 || d->seq < 1 || d->seq > (uint64_t)c->n_ctx) return 0;
    if (d->batch > UINT64_MAX / d->seq || d->local_steps > UINT64_MAX / (d->batch * d->seq)) return 0;
    return d->tokens == d->local_steps * d->batch * d->seq;
}

/* ---- delta formats ---- */

PHOTONDEF const char *photon_delta_format_name(photon_delta_format f) {
    switch (f) {
    case PHOTON_DELTA_BF16: return "bf16";
    case PHOTON_DELTA_INT8: return "int8";
    case PHOTON_DELTA_INT4: return "int4";
    default: return "f32";
    }
}

PHOTONDEF int photon_delta_format_parse(const char *name) {
    int k;
    for (k = PHOTON_DELTA_F32; k <= PHOTON_DELTA_INT4; k++)
        if (strcmp(name, photon_delta_format_name((photon_delta_format)k)) == 0) return k;
    return -1;
}

static int photon__format_is_int(photon_delta_format f) { return f == PHOTON_DELTA_INT8 || f == PHOTON_DELTA_INT4; }
static int photon__format_max_code(photon_delta_format f) { return f == PHOTON_DELTA_INT8 ? 127 : 7; }

PHOTONDEF size_t photon_delta_code_bytes(photon_delta_format f, size_t n) {
    return f == PHOTON_DELTA_F32 ? 4 * n : f == PHOTON_DELTA_BF16 ? 2 * n : f == PHOTON_DELTA_INT8 ? n : (n + 1) / 2;
}

PHOTONDEF size_t photon_delta_scale_count(photon_delta_format f, size_t n) {
    return photon__format_is_int(f) ? (n + PHOTON_QUANT_BLOCK - 1) / PHOTON_QUANT_BLOCK : 0;
}

/* float to bfloat16, nearest even; a finite value that would round to
   infinity keeps the largest finite bfloat16 of its sign. */
static uint16_t photon__f32_to_bf16(float x) {
    uint32_t bits;
    uint16_t h;
    memcpy(&bits, &x, 4);
    h = (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
    if ((h & 0x7f80u) == 0x7f80u && (bits & 0x7f800000u) != 0x7f800000u) h = (uint16_t)((bits >> 16 & 0x8000u) | 0x7f7fu);
    return h;
}

/* The value a code stands for: the same float product everywhere. */
static float photon__decode(int code, float scale) { return (float)code * scale; }

/* The nearest code to x at this scale, halves away from zero, within +-max. */
static int photon__encode(float x, float scale, int max) {
    double q = (double)x / (double)scale;
    double c = q >= 0 ? floor(q + 0.5) : -floor(0.5 - q);
    return c > max ? max : c < -max ? -max : (int)c;
}

PHOTONDEF void photon_quantize(photon_delta_format f, const float *x, size_t n, void *codes, float *scales) {
    unsigned char *out = (unsigned char *)codes;
    size_t i, b, blocks = photon_delta_scale_count(f, n);
    int max = photon__format_max_code(f);
    if (f == PHOTON_DELTA_F32) {
        memcpy(codes, x, n * 4);
        return;
    }
    if (f == PHOTON_DELTA_BF16) {
        for (i = 0; i < n; i++) {
            uint16_t h = photon__f32_to_bf16(x[i]);
            out[2 * i] = (unsigned char)(h & 0xff), out[2 * i + 1] = (unsigned char)(h >> 8);
        }
        return;
    }
    if (f == PHOTON_DELTA_INT4) memset(out, 0x88, (n + 1) / 2); /* code 0 everywhere, the pad included */
    for (b = 0; b < blocks; b++) {
        size_t lo = b * PHOTON_QUANT_BLOCK, hi = lo + PHOTON_QUANT_BLOCK < n ? lo + PHOTON_QUANT_BLOCK : n;
        float a = 0.0f, s;
        for (i = lo; i < hi; i++) a = fabsf(x[i]) > a ? fabsf(x[i]) : a;
        s = a / (float)max;
        if (!photon__is_finite((float)max * s)) s = FLT_MAX / (float)max; /* near FLT_MAX: the top code must decode */
        while (!photon__is_finite((float)max * s)) s = nextafterf(s, 0.0f);
        scales[b] = s;
        for (i = lo; i < hi; i++) {
            int c = s > 0.0f ? photon__encode(x[i], s, max) : 0;
            if (f == PHOTON_DELTA_INT8) out[i] = (unsigned char)(signed char)c;
            else out[i / 2] = (unsigned char)(i % 2 ? (out[i / 2] & 0x0f) | (c + 8) << 4 : (out[i / 2] & 0xf0) | (c + 8));
        }
    }
}

PHOTONDEF photon_result photon_dequantize(photon_delta_format f, const void *codes, const float *scales, size_t n,
                                          float *out, photon_error *err) {
    const unsigned char *in = (const unsigned char *)codes;
    size_t i, b;
    if (f == PHOTON_DELTA_F32) memcpy(out, codes, n * 4);
    if (f == PHOTON_DELTA_BF16)
        for (i = 0; i < n; i++) out[i] = photon__bf16_to_f32((uint16_t)(in[2 * i] | in[2 * i + 1] << 8));
    for (b = 0; photon__format_is_int(f) && b < photon_delta_scale_count(f, n); b++)
        if (!(scales[b] >= 0.0f) || !photon__is_finite(scales[b]))
            return photon__fail(err, PHOTON_ERR_FORMAT, "block %zu has scale %g: a scale is a finite number, at least 0",
                                b, (double)scales[b]);
    for (i = 0; photon__format_is_int(f) && i < n; i++) {
        int c = f == PHOTON_DELTA_INT8 ? (int)(signed char)in[i] : (int)((i % 2 ? in[i / 2] >> 4 : in[i / 2] & 0x0f)) - 8;
        if (c < -photon__format_max_code(f))
            return photon__fail(err, PHOTON_ERR_FORMAT, "element %zu has code %d, out of range (-%d..%d)", i, c,
                                photon__format_max_code(f), photon__format_max_code(f));
        out[i] = photon__decode(c, scales[i / PHOTON_QUANT_BLOCK]);
    }
    if (f == PHOTON_DELTA_INT4 && n % 2 && in[n / 2] >> 4 != 8)
        return photon__fail(err, PHOTON_ERR_FORMAT, "the pad after the last of %zu values is code %d, not 0", n,
                            (in[n / 2] >> 4) - 8);
    for (i = 0; i < n; i++)
        if (!photon__is_finite(out[i]))
            return photon__fail(err, PHOTON_ERR_FORMAT, "element %zu decodes to %s", i, out[i] != out[i] ? "NaN" : "Inf");
    return PHOTON_OK;
}

/* The names of a delta's stored tensors: the model's names, and for the
   integer formats "NAME.scales" before each. */
typedef struct photon__coded {
    photon_st_entry *entries;
    int num_entries;
    unsigned char *codes; /* every tensor's codes, in the model's order */
    float *scales;        /* every tensor's scales */
    char *names;          /* the ".scales" names, 64 bytes each */
} photon__coded;

static void photon__coded_free(photon__coded *c) {
    PHOTON_FREE(c->entries);
    PHOTON_FREE(c->codes);
    PHOTON_FREE(c->scales);
    PHOTON_FREE(c->names);
    memset(c, 0, sizeof *c);
}

/* Room for a whole parameter vector in format f, and the table of its
   tensors as stored, leaving out those absent[] marks (absent may be NULL). */
static int photon__coded_init_masked(photon__coded *c, const photon_model *m, photon_delta_format f,
                                     const unsigned char *absent) {
    size_t code_at = 0, scale_at = 0, codes = 0, scales = 0;
    int i, e = 0;
    memset(c, 0, sizeof *c);
    for (i = 0; i < m->num_tensors; i++) {
        codes += photon_delta_code_bytes(f, m->tensors[i].size);
        scales += photon_delta_scale_count(f, m->tensors[i].size);
    }
    c->entries = (photon_st_entry *)photon__calloc((size_t)m->num_tensors * 2, sizeof(photon_st_entry));
    c->codes = (unsigned char *)PHOTON_MALLOC(codes + 1);
    c->scales = (float *)photon__calloc(scales + 1, sizeof(float));
    c->names = (char *)photon__calloc((size_t)m->num_tensors, 64);
    if (!c->entries || !c->codes || !c->scales || !c->names) {
        photon__coded_free(c);
        return 0;
    }
    for (i = 0; i < m->num_tensors; i++) {
        const photon_tensor_info *t = &m->tensors[i];
        size_t n = t->size, nb = photon_delta_scale_count(f, n);
        if (absent && absent[i]) { /* not stored; its room in the buffers stays unused */
            code_at += photon_delta_code_bytes(f, n);
            scale_at += nb;
            continue;
        }
        if (nb) {
            snprintf(c->names + 64 * (size_t)i, 64, "%s.scales", t->name);
            c->entries[e].name = c->names + 64 * (size_t)i;
            c->entries[e].ndim = 1;
            c->entries[e].shape[0] = nb;
            c->entries[e].data = c->scales + scale_at;
            e++;
        }
        c->entries[e].name = t->name;
        c->entries[e].ndim = f == PHOTON_DELTA_INT4 ? 1 : t->ndim;
        c->entries[e].shape[0] = f == PHOTON_DELTA_INT4 ? (uint64_t)(n + 1) / 2 : (uint64_t)t->shape[0];
        c->entries[e].shape[1] = (uint64_t)t->shape[1];
        c->entries[e].dtype = f == PHOTON_DELTA_F32    ? PHOTON_DTYPE_F32
                              : f == PHOTON_DELTA_BF16 ? PHOTON_DTYPE_BF16
                              : f == PHOTON_DELTA_INT8 ? PHOTON_DTYPE_I8
                                                       : PHOTON_DTYPE_U8;
        c->entries[e].bytes = c->codes + code_at;
        e++;
        code_at += photon_delta_code_bytes(f, n);
        scale_at += nb;
    }
    c->num_entries = e;
    return 1;
}

static int photon__coded_init(photon__coded *c, const photon_model *m, photon_delta_format f) {
    return photon__coded_init_masked(c, m, f, NULL);
}

/* Encodes the parameter vector v tensor by tensor into c; with residual,
   residual = v - decode(encode(v)). */
static void photon__coded_fill(photon__coded *c, const photon_model *m, photon_delta_format f, const float *v,
                               float *residual, float *scratch) {
    size_t code_at = 0, scale_at = 0, j;
    int i;
    for (i = 0; i < m->num_tensors; i++) {
        const photon_tensor_info *t = &m->tensors[i];
        photon_quantize(f, v + t->offset, t->size, c->codes + code_at, c->scales + scale_at);
        if (residual) {
            photon_dequantize(f, c->codes + code_at, c->scales + scale_at, t->size, scratch, NULL);
            for (j = 0; j < t->size; j++) residual[t->offset + j] = v[t->offset + j] - scratch[j];
        }
        code_at += photon_delta_code_bytes(f, t->size);
        scale_at += photon_delta_scale_count(f, t->size);
    }
}

PHOTONDEF photon_result photon_delta_save(const photon_model *model, const float *base_params,
                                          const photon_delta_info *info, const char *path, photon_error *err) {
    photon_delta_info f32 = *info;
    f32.format = PHOTON_DELTA_F32;
    return photon_delta_save_as(model, base_params, &f32, NULL, path, err);
}

PHOTONDEF photon_result photon_delta_save_as(const photon_model *model, const float *base_params,
                                             const photon_delta_info *info, float *residual, const char *path,
                                             photon_error *err) {
    float *delta, *scratch = NULL;
    photon__coded coded;
    size_t largest = 0, j;
    int i;
    photon__meta meta;
    char loss[32];
    unsigned char *absent = NULL;
    photon_result r;
    if (info->personal[0]) { /* the personal tensors stay home */
        if (!(absent = (unsigned char *)photon__calloc((size_t)model->num_tensors, 1)))
            return photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", path);
        if ((r = photon_personal_mask(model, info->personal, absent, err)) != PHOTON_OK) {
            PHOTON_FREE(absent);
            return r;
        }
    }
    if (!photon_client_id_valid(info->client))
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "client id '%s' must be 1 to 63 letters, digits, '.', '_' or '-'",
                            info->client);
    if (!photon__valid_sha256(info->base_sha256))
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "base hash '%s' is not 64 lowercase hex digits", info->base_sha256);
    if (!photon__delta_counts_agree(info, &model->config))
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "%s: %llu local steps of %llu x %llu tokens are not the %llu tokens "
                            "the delta claims (or the sequence exceeds the context)", path,
                            (unsigned long long)info->local_steps, (unsigned long long)info->batch,
                            (unsigned long long)info->seq, (unsigned long long)info->tokens);
    if ((int)info->format < PHOTON_DELTA_F32 || (int)info->format > PHOTON_DELTA_INT4)
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "%s: unknown delta format %d", path, (int)info->format);
    for (i = 0; i < model->num_tensors; i++) largest = model->tensors[i].size > largest ? model->tensors[i].size : largest;
    delta = (float *)photon__calloc(model->num_params, sizeof(float));
    if (residual) scratch = (float *)photon__calloc(largest, sizeof(float));
    if (!delta || (residual && !scratch) || !photon__coded_init_masked(&coded, model, info->format, absent)) {
        PHOTON_FREE(delta);
        PHOTON_FREE(scratch);
        PHOTON_FREE(absent);
        return photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", path);
    }
    for (j = 0; j < model->num_params; j++) delta[j] = base_params[j] - model->params[j] + (residual ? residual[j] : 0.0f);
    for (i = 0; absent && i < model->num_tensors; i++) /* nothing of a personal tensor is sent, nor owed */
        if (absent[i]) memset(delta + model->tensors[i].offset, 0, model->tensors[i].size * sizeof(float));
    photon__coded_fill(&coded, model, info->format, delta, residual, scratch);
    snprintf(loss, sizeof loss, "%.9g", (double)info->loss);
    photon__meta_header(&meta, "delta", &model->config);
    photon__meta_str(&meta, "photon.base_sha256", info->base_sha256);
    photon__meta_u64(&meta, "photon.round", info->round);
    photon__meta_str(&meta, "photon.client", info->client);
    photon__meta_u64(&meta, "photon.local_steps", info->local_steps);
    photon__meta_u64(&meta, "photon.batch", info->batch);
    photon__meta_u64(&meta, "photon.seq", info->seq);
    photon__meta_u64(&meta, "photon.tokens", info->tokens);
    photon__meta_str(&meta, "photon.loss", loss);
    if (info->format != PHOTON_DELTA_F32) photon__meta_str(&meta, "photon.delta_format", photon_delta_format_name(info->format));
    if (photon__format_is_int(info->format)) photon__meta_u64(&meta, "photon.quant_block", PHOTON_QUANT_BLOCK);
    if (absent) photon__meta_str(&meta, "photon.personal", info->personal);
    r = photon_st_write(path, coded.entries, coded.num_entries, meta.keys, meta.values, meta.n, err);
    PHOTON_FREE(delta);
    PHOTON_FREE(scratch);
    PHOTON_FREE(absent);
    photon__coded_free(&coded);
    return r;
}

/* photon.delta_format (absent: f32) and, for int8 and int4, photon.quant_block. */
static photon_result photon__read_format(photon_st_file *st, const char *path, photon_delta_format *format,
                                         photon_error *err) {
    const char *v = photon_st_meta(st, "photon.delta_format");
    uint64_t block = 0;
    int f = v ? photon_delta_format_parse(v) : PHOTON_DELTA_F32;
    photon_result r;
    if (f < 0)
        return photon__fail(err, PHOTON_ERR_FORMAT, "%s: __metadata__ photon.delta_format '%.20s' is not f32, bf16, int8 "
                            "or int4", path, v);
    *format = (photon_delta_format)f;
    if (!photon__format_is_int(*format)) return PHOTON_OK;
    if ((r = photon__parse_u64(st, "photon.quant_block", &block, err)) != PHOTON_OK) return r;
    if (block != PHOTON_QUANT_BLOCK)
        return photon__fail(err, PHOTON_ERR_FORMAT, "%s: block size %llu; photon's %s blocks hold %d values", path,
                            (unsigned long long)block, v, PHOTON_QUANT_BLOCK);
    return PHOTON_OK;
}

/* A group delta's counts follow from the members its audit trail lists
   (photon.delta.N.tokens, .local_steps): tokens their sum, local_steps
   their largest, photon.clients their number. */
static photon_result photon__group_counts(photon_st_file *st, const char *path, photon_delta_info *info,
                                          photon_error *err) {
    uint64_t clients = 0, k, sum = 0, most = 0;
    char key[64];
    photon_result r;
    if ((r = photon__parse_u64(st, "photon.members", &info->members, err)) != PHOTON_OK ||
        (r = photon__parse_u64(st, "photon.clients", &clients, err)) != PHOTON_OK)
        return r;
    if (info->members < 1 || info->members != clients || info->members > 1u << 20)
        return photon__fail(err, PHOTON_ERR_FORMAT, "%s: group delta of %llu members lists %llu merged deltas", path,
                            (unsigned long long)info->members, (unsigned long long)clients);
    for (k = 0; k < info->members; k++) {
        uint64_t t, steps;
        snprintf(key, sizeof key, "photon.delta.%llu.tokens", (unsigned long long)k);
        if ((r = photon__parse_u64(st, key, &t, err)) != PHOTON_OK) return r;
        snprintf(key, sizeof key, "photon.delta.%llu.local_steps", (unsigned long long)k);
        if ((r = photon__parse_u64(st, key, &steps, err)) != PHOTON_OK) return r;
        if (t == 0 || steps == 0 || sum > UINT64_MAX - t)
            return photon__fail(err, PHOTON_ERR_FORMAT, "%s: member %llu of the group claims %llu tokens in %llu steps%s",
                                path, (unsigned long long)k, (unsigned long long)t, (unsigned long long)steps,
                                sum > UINT64_MAX - t ? " (the sum passes 2^64-1)" : "");
        sum += t;
        most = steps > most ? steps : most;
    }
    if (sum != info->tokens || most != info->local_steps)
        return photon__fail(err, PHOTON_ERR_FORMAT, "%s: a group delta claims %llu tokens and %llu local steps; its members "
                            "add up to %llu tokens, at most %llu steps", path, (unsigned long long)info->tokens,
                            (unsigned long long)info->local_steps, (unsigned long long)sum, (unsigned long long)most);
    return PHOTON_OK;
}

/* What a delta's header says, each field checked; *c gets its config. */
static photon_result photon__delta_header(photon_st_file *st, const char *path, photon_delta_info *info, photon_config *c,
                                          photon_error *err) {
    const char *v;
    photon_result r;
    memset(info, 0, sizeof *info);
    if ((r = photon__check_kind(st, "delta", err)) != PHOTON_OK || (r = photon__read_config(st, c, err)) != PHOTON_OK ||
        (r = photon__parse_u64(st, "photon.round", &info->round, err)) != PHOTON_OK ||
        (r = photon__parse_u64(st, "photon.local_steps", &info->local_steps, err)) != PHOTON_OK ||
        (r = photon__parse_u64(st, "photon.tokens", &info->tokens, err)) != PHOTON_OK)
        return r;
    if (photon_st_meta(st, "photon.members")) { /* a group delta: its counts are its members' */
        if ((r = photon__group_counts(st, path, info, err)) != PHOTON_OK) return r;
    } else if (strcmp(photon_st_meta(st, "photon.version"), "1") != 0) { /* format 1 deltas had neither batch nor seq */
        if ((r = photon__parse_u64(st, "photon.batch", &info->batch, err)) != PHOTON_OK ||
            (r = photon__parse_u64(st, "photon.seq", &info->seq, err)) != PHOTON_OK)
            return r;
        if (!photon__delta_counts_agree(info, c)) {
            r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: claims %llu tokens, but %llu local steps of %llu x %llu tokens "
                             "make %s", path, (unsigned long long)info->tokens, (unsigned long long)info->local_steps,
                             (unsigned long long)info->batch, (unsigned long long)info->seq,
                             info->seq > (uint64_t)c->n_ctx ? "a sequence longer than the context"
                                                             : "another number (or overflow)");
            return r;
        }
    }
    v = photon_st_meta(st, "photon.base_sha256");
    if (!photon__valid_sha256(v))
        return photon__fail(err, PHOTON_ERR_FORMAT, "%s: __metadata__ photon.base_sha256 is not 64 hex digits", path);
    memcpy(info->base_sha256, v, 65);
    v = photon_st_meta(st, "photon.client");
    if (!v || !photon_client_id_valid(v))
        return photon__fail(err, PHOTON_ERR_FORMAT, "%s: __metadata__ photon.client is missing or not a valid client id",
                            path);
    snprintf(info->client, sizeof info->client, "%s", v);
    v = photon_st_meta(st, "photon.loss");
    {
        char *end = NULL;
        double loss = v ? strtod(v, &end) : NAN;
        if (!v || end == v || *end || !(loss - loss == 0.0))
            return photon__fail(err, PHOTON_ERR_FORMAT, "%s: __metadata__ photon.loss is missing or not a finite number",
                                path);
        info->loss = (float)loss;
    }
    if (info->tokens == 0) return photon__fail(err, PHOTON_ERR_FORMAT, "%s: delta trained on 0 tokens", path);
    v = photon_st_meta(st, "photon.personal");
    if (v) {
        size_t n = strlen(v);
        if (n == 0 || n >= sizeof info->personal ||
            strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-*?,") != n)
            return photon__fail(err, PHOTON_ERR_FORMAT, "%s: __metadata__ photon.personal is not a list of tensor-name "
                                "globs", path);
        memcpy(info->personal, v, n + 1);
    }
    return photon__read_format(st, path, &info->format, err);
}

/* Reads a delta's header and metadata (not its values), for this model. */
static photon_result photon__delta_open(const photon_model *model, const char *path, photon_st_file *st,
                                        photon_delta_info *info, photon_error *err) {
    photon_config c;
    photon_result r = photon_st_open(st, path, err);
    memset(info, 0, sizeof *info);
    if (r != PHOTON_OK) return r;
    if ((r = photon__delta_header(st, path, info, &c, err)) == PHOTON_OK && memcmp(&c, &model->config, sizeof c) != 0)
        r = photon__fail(err, PHOTON_ERR_MISMATCH, "%s: delta is for a model with vocab %d, ctx %d, %d layers, %d heads, "
                         "width %d, not this one", path, c.vocab_size, c.n_ctx, c.n_layer, c.n_head, c.n_embd);
    if (r != PHOTON_OK) photon_st_close(st);
    return r;
}

PHOTONDEF photon_result photon_delta_read_info(const char *path, photon_delta_info *info, photon_config *config,
                                               photon_error *err) {
    photon_st_file st;
    photon_config c;
    photon_result r = photon_st_open(&st, path, err);
    memset(info, 0, sizeof *info);
    if (r != PHOTON_OK) return r;
    r = photon__delta_header(&st, path, info, config ? config : &c, err);
    photon_st_close(&st);
    return r;
}

/* A stored tensor of a delta in format f is what f makes of the model's
   tensor t: NAME (F32 or BF16 in its shape, I8 in its shape, U8 of
   (n+1)/2 bytes) and, for int8 and int4, NAME.scales (F32, one per block). */
static photon_result photon__check_coded(const photon_st_file *st, const photon_tensor_info *t, photon_delta_format f,
                                         const photon_st_tensor **codes, const photon_st_tensor **scales,
                                         photon_error *err) {
    char name[64];
    photon_dtype want = f == PHOTON_DELTA_F32    ? PHOTON_DTYPE_F32
                        : f == PHOTON_DELTA_BF16 ? PHOTON_DTYPE_BF16
                        : f == PHOTON_DELTA_INT8 ? PHOTON_DTYPE_I8
                                                 : PHOTON_DTYPE_U8;
    uint64_t bytes = photon_delta_code_bytes(f, t->size), nb = photon_delta_scale_count(f, t->size);
    snprintf(name, sizeof name, "%s.scales", t->name);
    *codes = photon_st_find(st, t->name);
    *scales = nb ? photon_st_find(st, name) : NULL;
    if (!*codes || (nb && !*scales))
        return photon__fail(err, PHOTON_ERR_MISMATCH, "%s: a %s delta holds tensor '%s'%s%s%s: it is missing", st->path,
                            photon_delta_format_name(f), t->name, nb ? " and '" : "", nb ? name : "", nb ? "'" : "");
    if ((*codes)->dtype != want || (*codes)->end - (*codes)->begin != bytes)
        return photon__fail(err, PHOTON_ERR_MISMATCH, "%s: tensor '%s' of a %s delta must be %s, %llu bytes", st->path,
                            t->name, photon_delta_format_name(f), photon__dtype_names[want], (unsigned long long)bytes);
    if (nb && ((*scales)->dtype != PHOTON_DTYPE_F32 || (*scales)->end - (*scales)->begin != 4 * nb))
        return photon__fail(err, PHOTON_ERR_MISMATCH, "%s: tensor '%s' must be F32, %llu scales (one per %d values)", st->path,
                            name, (unsigned long long)nb, PHOTON_QUANT_BLOCK);
    return PHOTON_OK;
}

/* Which of the model's tensors a delta leaves out (absent[t] = 1): only
   tensors it declares personal, and it carries none of those. */
static photon_result photon__delta_absent(const photon_st_file *st, const photon_model *m, const photon_delta_info *info,
                                          unsigned char *absent, photon_error *err) {
    int t;
    for (t = 0; t < m->num_tensors; t++) {
        const char *name = m->tensors[t].name;
        int present = photon_st_find(st, name) != NULL;
        int personal = info->personal[0] && photon__personal_matches(info->personal, name);
        if (!present && !personal)
            return photon__fail(err, PHOTON_ERR_MISMATCH, "%s: tensor '%s' is missing (and the delta does not declare it "
                                "personal)", st->path, name);
        if (present && personal)
            return photon__fail(err, PHOTON_ERR_MISMATCH, "%s: carries tensor '%s', which it declares personal (%s)",
                                st->path, name, info->personal);
        absent[t] = (unsigned char)!present;
    }
    return PHOTON_OK;
}

/* Reads a delta in one pass and decodes it into values; the tensors absent
   marks (may be NULL) are not in the file and read as 0. */
static photon_result photon__read_coded(const photon_st_file *st, const photon_model *m, photon_delta_format f,
                                        const unsigned char *absent, float *values, char file_hex[65],
                                        photon_error *err) {
    photon__coded c;
    photon__st_sink *sinks = (photon__st_sink *)photon__calloc((size_t)m->num_tensors * 2 + 1, sizeof *sinks);
    size_t code_at = 0, scale_at = 0;
    int i, n = 0;
    photon_result r;
    memset(&c, 0, sizeof c);
    r = sinks && photon__coded_init(&c, m, f) ? PHOTON_OK
                                                            : photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", st->path);
    for (i = 0; r == PHOTON_OK && i < m->num_tensors; i++) {
        const photon_st_tensor *codes, *scales;
        if (absent && absent[i]) {
            memset(values + m->tensors[i].offset, 0, m->tensors[i].size * sizeof(float));
            code_at += photon_delta_code_bytes(f, m->tensors[i].size);
            scale_at += photon_delta_scale_count(f, m->tensors[i].size);
            continue;
        }
        if ((r = photon__check_coded(st, &m->tensors[i], f, &codes, &scales, err)) != PHOTON_OK) break;
        sinks[n].t = codes, sinks[n++].dst = f == PHOTON_DELTA_BF16 || f == PHOTON_DELTA_F32
                                                 ? values + m->tensors[i].offset
                                                 : (float *)(void *)(c.codes + code_at);
        if (scales) sinks[n].t = scales, sinks[n++].dst = c.scales + scale_at;
        code_at += photon_delta_code_bytes(f, m->tensors[i].size);
        scale_at += photon_delta_scale_count(f, m->tensors[i].size);
    }
    if (r == PHOTON_OK && st->num_tensors != n)
        r = photon__fail(err, PHOTON_ERR_MISMATCH, "%s: a %s delta holds %d tensors, this one %d", st->path,
                         photon_delta_format_name(f), n, st->num_tensors);
    if (r == PHOTON_OK) r = photon__st_stream(st, sinks, n, 1, file_hex, err);
    for (i = 0, code_at = scale_at = 0; r == PHOTON_OK && photon__format_is_int(f) && i < m->num_tensors; i++) {
        const photon_tensor_info *t = &m->tensors[i];
        photon_error why;
        if ((!absent || !absent[i]) && photon_dequantize(f, c.codes + code_at, c.scales + scale_at, t->size, values + t->offset, &why) != PHOTON_OK)
            r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: tensor '%s': %s", st->path, t->name, why.message);
        code_at += photon_delta_code_bytes(f, t->size);
        scale_at += photon_delta_scale_count(f, t->size);
    }
    PHOTON_FREE(sinks);
    if (c.entries) photon__coded_free(&c);
    return r;
}

PHOTONDEF photon_result photon_delta_load(const photon_model *model, const char *path, photon_delta_info *info,
                                          float *values, photon_error *err) {
    photon_st_file st;
    unsigned char *absent = NULL;
    photon_result r = photon__delta_open(model, path, &st, info, err);
    if (r != PHOTON_OK) return r;
    if (info->personal[0]) { /* some tensors stayed with the client */
        absent = (unsigned char *)photon__calloc((size_t)model->num_tensors, 1);
        r = absent ? photon__delta_absent(&st, model, info, absent, err)
                   : photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", path);
    }
    if (r == PHOTON_OK)
        r = info->format == PHOTON_DELTA_F32 && !absent
                ? photon__read_params(&st, model, values, info->sha256, err)
                : photon__read_coded(&st, model, info->format, absent, values, info->sha256, err);
    PHOTON_FREE(absent);
    photon_st_close(&st);
    return r;
}

/* ======================================================================= */
/* >>outer: outer optimizers and server state                              */
/* ======================================================================= */
/* The averaged delta avg plays the part of a gradient for the global
   model: FedAvg steps against it; DiLoCo adds Nesterov momentum; FedAdam and
   FedYogi (Reddi et al., "Adaptive Federated Optimization", 2021) scale it by
   a second moment, with v starting at tau^2 and no bias correction. */

static const char *const photon__outer_names[4] = {"fedavg", "nesterov", "adam", "yogi"};

PHOTONDEF const char *photon_outer_name(photon_outer_kind kind) { return photon__outer_names[kind]; }

PHOTONDEF int photon_outer_parse(const char *name) {
    int k;
    for (k = 0; k < 4; k++)
        if (strcmp(name, photon__outer_names[k]) == 0) return k;
    return -1;
}

PHOTONDEF void photon_outer_defaults(photon_outer_config *o, photon_outer_kind kind) {
    memset(o, 0, sizeof *o);
    o->kind = kind;
    o->lr = kind == PHOTON_OUTER_FEDAVG ? 1.0f : kind == PHOTON_OUTER_NESTEROV ? 0.7f : 0.01f;
    o->momentum = 0.9f;
    o->beta1 = 0.9f;
    o->beta2 = 0.99f;
    o->tau = 1e-3f;
}

PHOTONDEF void photon_outer_step(float *p, const float *d, size_t n, const photon_outer_config *o,
                                 photon_server_state *s) {
    size_t i;
    switch (o->kind) {
    case PHOTON_OUTER_FEDAVG:
        for (i = 0; i < n; i++) p[i] -= o->lr * d[i];
        break;
    case PHOTON_OUTER_NESTEROV: /* as torch.optim.SGD(nesterov=True, dampening=0) */
        for (i = 0; i < n; i++) {
            s->m[i] = o->momentum * s->m[i] + d[i];
            p[i] -= o->lr * (d[i] + o->momentum * s->m[i]);
        }
        break;
    case PHOTON_OUTER_ADAM:
        for (i = 0; i < n; i++) {
            s->m[i] = o->beta1 * s->m[i] + (1.0f - o->beta1) * d[i];
            s->v[i] = o->beta2 * s->v[i] + (1.0f - o->beta2) * d[i] * d[i];
            p[i] -= o->lr * s->m[i] / (sqrtf(s->v[i]) + o->tau);
        }
        break;
    case PHOTON_OUTER_YOGI:
        for (i = 0; i < n; i++) {
            float d2 = d[i] * d[i], diff = s->v[i] - d2;
            float sign = diff > 0.0f ? 1.0f : diff < 0.0f ? -1.0f : 0.0f;
            s->m[i] = o->beta1 * s->m[i] + (1.0f - o->beta1) * d[i];
            s->v[i] = s->v[i] - (1.0f - o->beta2) * d2 * sign;
            p[i] -= o->lr * s->m[i] / (sqrtf(s->v[i]) + o->tau);
        }
        break;
    }
}

PHOTONDEF photon_result photon_server_state_init(photon_server_state *s, photon_outer_kind kind, size_t n, float tau,
                                                 photon_error *err) {
    size_t i;
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->n = n;
    if (kind != PHOTON_OUTER_FEDAVG) s->m = (float *)photon__calloc(n, sizeof(float));
    if (kind == PHOTON_OUTER_ADAM || kind == PHOTON_OUTER_YOGI) s->v = (float *)photon__calloc(n, sizeof(float));
    if ((kind != PHOTON_OUTER_FEDAVG && !s->m) || ((kind == PHOTON_OUTER_ADAM || kind == PHOTON_OUTER_YOGI) && !s->v)) {
        photon_server_state_free(s);
        return photon__fail(err, PHOTON_ERR_MEMORY, "cannot allocate the server state");
    }
    for (i = 0; s->v && i < n; i++) s->v[i] = tau * tau;
    return PHOTON_OK;
}

PHOTONDEF void photon_server_state_free(photon_server_state *s) {
    PHOTON_FREE(s->m);
    PHOTON_FREE(s->v);
    memset(s, 0, sizeof *s);
}

PHOTONDEF photon_result photon_server_state_save(const photon_server_state *s, const photon_config *config,
                                                 const char *path, photon_error *err) {
    photon_st_entry e[2];
    photon__meta meta;
    int n = 0;
    memset(e, 0, sizeof e);
    if (s->m) e[n].name = "outer.m", e[n].ndim = 1, e[n].shape[0] = s->n, e[n++].data = s->m;
    if (s->v) e[n].name = "outer.v", e[n].ndim = 1, e[n].shape[0] = s->n, e[n++].data = s->v;
    photon__meta_header(&meta, "server_state", config);
    photon__meta_str(&meta, "photon.outer", photon_outer_name(s->kind));
    photon__meta_u64(&meta, "photon.round", s->round);
    return photon_st_write_f32(path, e, n, meta.keys, meta.values, meta.n, err);
}

PHOTONDEF photon_result photon_server_state_load(photon_server_state *s, const photon_config *config,
                                                 const char *path, photon_error *err) {
    photon_st_file st;
    photon_config c;
    const char *outer;
    const char *names[2] = {"outer.m", "outer.v"};
    int kind, k, expected;
    photon_result r = photon_st_open(&st, path, err);
    memset(s, 0, sizeof *s);
    if (r != PHOTON_OK) return r;
    if ((r = photon__check_kind(&st, "server_state", err)) != PHOTON_OK ||
        (r = photon__read_config(&st, &c, err)) != PHOTON_OK)
        goto done;
    if (memcmp(&c, config, sizeof c) != 0) {
        r = photon__fail(err, PHOTON_ERR_MISMATCH, "%s: server state is for another model config", path);
        goto done;
    }
    outer = photon_st_meta(&st, "photon.outer");
    kind = outer ? photon_outer_parse(outer) : -1;
    if (kind < 0) {
        r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: __metadata__ photon.outer is missing or unknown", path);
        goto done;
    }
    if ((r = photon_server_state_init(s, (photon_outer_kind)kind, photon__num_params(config), 0.0f, err)) != PHOTON_OK ||
        (r = photon__parse_u64(&st, "photon.round", &s->round, err)) != PHOTON_OK)
        goto done;
    expected = (s->m != NULL) + (s->v != NULL);
    if (st.num_tensors != expected) {
        r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: a %s server state holds %d tensors, this one %d", path, outer,
                         expected, st.num_tensors);
        goto done;
    }
    {
        const photon_st_tensor *t[2] = {NULL, NULL};
        for (k = 0; k < expected && r == PHOTON_OK; k++) {
            t[k] = photon_st_find(&st, names[k]);
            if (!t[k] || t[k]->ndim != 1 || t[k]->shape[0] != s->n || t[k]->dtype != PHOTON_DTYPE_F32)
                r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: tensor %s is missing or not an F32 vector of %zu values",
                                 path, names[k], s->n);
        }
        if (r == PHOTON_OK) r = photon__stream_state(&st, t[0], s->m, t[1], s->v, NULL, NULL, NULL, NULL, s->file_sha256, err);
    }
    if (r == PHOTON_OK && s->v) {
        size_t i;
        for (i = 0; i < s->n && r == PHOTON_OK; i++)
            if (s->v[i] < 0.0f)
                r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: outer.v holds a negative second moment at element %zu", path, i);
    }
done:
    if (r != PHOTON_OK) photon_server_state_free(s);
    photon_st_close(&st);
    return r;
}

/* ======================================================================= */
/* >>merge: one federated round on the aggregator                          */
/* ======================================================================= */

/* The merge, in three steps. Measure: each valid delta is read alone (its
   payload hash, NaN/Inf and header checked as it loads) for its L2 norm and,
   with screening, the loss of base - delta on held-out data. Judge: the
   norm bound and the screening threshold refuse deltas, clipping sets each
   one's scale, Multi-Krum picks the deltas it averages. Aggregate: the
   deltas taken are read together, a chunk of each at a time, and every
   coordinate gets the rule's value. Sums over a delta (norms, distances,
   dot products) run in blocks of PHOTON__MERGE_BLOCK values, each block in
   double and the blocks added in order, so neither the chunk size (a
   multiple of the block) nor the thread count changes a bit. */
#define PHOTON__MERGE_BLOCK 4096
#define PHOTON__MERGE_CHUNK 65536

PHOTONDEF const char *photon_aggregate_name(photon_aggregate_kind kind) {
    switch (kind) {
    case PHOTON_AGGREGATE_MEDIAN: return "median";
    case PHOTON_AGGREGATE_TRIMMED_MEAN: return "trimmed-mean";
    case PHOTON_AGGREGATE_MULTI_KRUM: return "multi-krum";
    default: return "mean";
    }
}

PHOTONDEF int photon_aggregate_parse(const char *name) {
    int k;
    for (k = PHOTON_AGGREGATE_MEAN; k <= PHOTON_AGGREGATE_MULTI_KRUM; k++)
        if (strcmp(name, photon_aggregate_name((photon_aggregate_kind)k)) == 0) return k;
    return -1;
}

/* Anything beyond the plain mean: such merges record their rule, settings
   and measurements in the audit trail (plain merges keep the keys they
   always had, so their records still verify). */
static int photon__merge_is_robust(const photon_merge_options *o) {
    return o->aggregate != PHOTON_AGGREGATE_MEAN || o->clip_norm > 0 || o->clip_auto > 0 || o->max_norm_ratio > 0 ||
           o->screen != NULL;
}

static size_t photon__merge_chunk(const photon_merge_options *o) { return o->chunk ? o->chunk : PHOTON__MERGE_CHUNK; }

/* Appends one audit key (both strings are copied). */
static photon_result photon__audit(photon_merge_result *res, const char *key, const char *value, photon_error *err) {
    char **keys = (char **)PHOTON_MALLOC((size_t)(res->num_meta + 1) * sizeof(char *));
    char **values = (char **)PHOTON_MALLOC((size_t)(res->num_meta + 1) * sizeof(char *));
    if (!keys || !values) {
        PHOTON_FREE(keys);
        PHOTON_FREE(values);
        return photon__fail(err, PHOTON_ERR_MEMORY, "out of memory writing the audit trail");
    }
    if (res->num_meta) {
        memcpy(keys, res->meta_keys, (size_t)res->num_meta * sizeof(char *));
        memcpy(values, res->meta_values, (size_t)res->num_meta * sizeof(char *));
    }
    PHOTON_FREE(res->meta_keys);
    PHOTON_FREE(res->meta_values);
    res->meta_keys = keys;
    res->meta_values = values;
    keys[res->num_meta] = photon__strdup(key);
    values[res->num_meta] = photon__strdup(value);
    res->num_meta++;
    return keys[res->num_meta - 1] && values[res->num_meta - 1]
               ? PHOTON_OK
               : photon__fail(err, PHOTON_ERR_MEMORY, "out of memory writing the audit trail");
}

static photon_result photon__audit_num(photon_merge_result *res, const char *key, double v, photon_error *err) {
    char buf[40];
    snprintf(buf, sizeof buf, "%.9g", v);
    return photon__audit(res, key, buf, err);
}

static photon_result photon__audit_u64(photon_merge_result *res, const char *key, uint64_t v, photon_error *err) {
    char buf[24];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
    return photon__audit(res, key, buf, err);
}

static int photon__entry_order(const photon_merge_entry *a, const photon_merge_entry *b) {
    int c = strcmp(a->info.client, b->info.client);
    return c ? c : strcmp(a->path, b->path);
}

/* Which tensors a delta may leave out (its personal ones). A federation's
   declaration (o->personal) binds every member: a delta that carries a
   declared tensor is refused. Deltas that leave out different tensors (some
   clients personalise, others do not) are averaged tensor by tensor over
   those that carry each; but the coordinate-wise rules and Multi-Krum
   compare whole deltas, and a group delta has one weight for all its
   tensors, so there every delta must leave out exactly the declared ones:
   the declaration, not the order the deltas come in, says which delta is
   the odd one. Returns 1 with e->reason set when E is refused. */
static int photon__merge_check_carriage(const photon_merge_result *res, const photon_merge_options *o,
                                        photon_merge_entry *e) {
    int uniform = o->aggregate != PHOTON_AGGREGATE_MEAN || o->group_id != NULL, t;
    for (t = 0; t < res->model.num_tensors; t++) {
        const char *name = res->model.tensors[t].name;
        int declared = o->personal && o->personal[0] && photon__personal_matches(o->personal, name);
        int absent = e->absent && e->absent[t];
        if (declared && !absent) {
            snprintf(e->reason, sizeof e->reason, "%s: carries tensor '%s', which this federation declares personal (%s)",
                     e->path, name, o->personal);
            return 1;
        }
        if (uniform && absent && !declared) {
            snprintf(e->reason, sizeof e->reason, "%s: leaves out tensor '%s' (personal: %s), which this merge does not "
                     "declare personal; %s needs every delta to carry the same tensors",
                     e->path, name, e->info.personal, o->group_id ? "a group delta (one weight for all its tensors)"
                                                                 : photon_aggregate_name(o->aggregate));
            return 1;
        }
    }
    return 0;
}

/* Pass 1: each delta's header, checked against the base. */
/* Pass 1 reads only headers (photon_st_open refuses a FIFO, a device or a
   directory before reading anything): the file hash comes with the values
   in pass 2. */
static void photon__merge_inspect(photon_merge_result *res, const char *base_hash, const photon_merge_options *o,
                                  photon_merge_entry *e) {
    photon_st_file st;
    photon_error why;
    snprintf(e->sha256, sizeof e->sha256, "unreadable");
    if (photon__delta_open(&res->model, e->path, &st, &e->info, &why) != PHOTON_OK) {
        snprintf(e->reason, sizeof e->reason, "%s", why.message);
        return;
    }
    if (e->info.personal[0]) { /* which tensors it left at home */
        if (!(e->absent = (unsigned char *)photon__calloc((size_t)res->model.num_tensors, 1)))
            snprintf(e->reason, sizeof e->reason, "%s: out of memory", e->path);
        else if (photon__delta_absent(&st, &res->model, &e->info, e->absent, &why) != PHOTON_OK)
            snprintf(e->reason, sizeof e->reason, "%s", why.message);
    }
    photon_st_close(&st);
    if (e->reason[0]) return;
    if (photon__merge_check_carriage(res, o, e)) return;
    if (o->max_local_steps && e->info.local_steps > o->max_local_steps)
        snprintf(e->reason, sizeof e->reason, "%s: %llu local steps, more than this round allows (%llu)", e->path,
                 (unsigned long long)e->info.local_steps, (unsigned long long)o->max_local_steps);
    else if (o->max_tokens && e->info.tokens > o->max_tokens)
        snprintf(e->reason, sizeof e->reason, "%s: %llu tokens, more than this round allows (%llu)", e->path,
                 (unsigned long long)e->info.tokens, (unsigned long long)o->max_tokens);
    else if (strcmp(e->info.base_sha256, base_hash) != 0)
        snprintf(e->reason, sizeof e->reason, "%s: stale: trained from checkpoint %.12s..., the base is %.12s...",
                 e->path, e->info.base_sha256, base_hash);
    else if (e->info.round != res->model.round + 1)
        snprintf(e->reason, sizeof e->reason, "%s: delta is for round %llu, this merge makes round %llu", e->path,
                 (unsigned long long)e->info.round, (unsigned long long)res->model.round + 1);
    else
        e->accepted = 1;
}

typedef struct photon__inspect_job {
    photon_merge_result *res;
    const char *base_hash;
    const photon_merge_options *o;
} photon__inspect_job;

static void photon__inspect_task(void *ctx, int task, int thread) {
    photon__inspect_job *j = (photon__inspect_job *)ctx;
    (void)thread;
    photon__merge_inspect(j->res, j->base_hash, j->o, &j->res->entries[task]);
}

/* Refuses every delta whose client id appears more than once. */
static void photon__merge_refuse_repeats(photon_merge_result *res) {
    int i, k;
    for (i = 0; i < res->num_entries; i++)
        for (k = 0; k < res->num_entries; k++) {
            photon_merge_entry *e = &res->entries[i];
            if (k != i && e->info.client[0] && strcmp(e->info.client, res->entries[k].info.client) == 0 && e->accepted) {
                e->accepted = 0;
                snprintf(e->reason, sizeof e->reason, "%s: client id '%s' appears in more than one delta (also %s)",
                         e->path, e->info.client, res->entries[k].path);
            }
        }
}

/* A robust merge's rule and settings, so that a re-check with other
   settings cannot match. */
static photon_result photon__merge_audit_rules(photon_merge_result *res, const photon_merge_options *o, photon_error *err) {
    char buf[64];
    photon_result r = photon__audit(res, "photon.aggregate", photon_aggregate_name(o->aggregate), err);
    if (r == PHOTON_OK && o->aggregate == PHOTON_AGGREGATE_TRIMMED_MEAN) r = photon__audit_num(res, "photon.trim", o->trim, err);
    if (r == PHOTON_OK && o->aggregate == PHOTON_AGGREGATE_MULTI_KRUM) {
        r = photon__audit_u64(res, "photon.byzantine", (uint64_t)o->byzantine, err);
        if (r == PHOTON_OK) r = photon__audit_u64(res, "photon.krum_select", (uint64_t)o->krum_select, err);
    }
    if (o->clip_norm > 0) snprintf(buf, sizeof buf, "%.9g", o->clip_norm);
    else if (o->clip_auto > 0) snprintf(buf, sizeof buf, "auto:%.9g", o->clip_auto);
    else snprintf(buf, sizeof buf, "none");
    if (r == PHOTON_OK) r = photon__audit(res, "photon.clip", buf, err);
    if (r == PHOTON_OK) r = photon__audit_num(res, "photon.clip_bound", res->clip_bound, err);
    if (r == PHOTON_OK) r = photon__audit_num(res, "photon.median_norm", res->median_norm, err);
    if (r == PHOTON_OK) r = photon__audit_num(res, "photon.max_norm_ratio", o->max_norm_ratio, err);
    if (r == PHOTON_OK && o->screen) {
        snprintf(buf, sizeof buf, "%016llx", (unsigned long long)o->screen->hash);
        r = photon__audit(res, "photon.screen.data_fnv1a", buf, err);
        if (r == PHOTON_OK) r = photon__audit_u64(res, "photon.screen.data_tokens", (uint64_t)o->screen->num_tokens, err);
        if (r == PHOTON_OK) r = photon__audit_u64(res, "photon.screen.tokens", o->screen_tokens, err);
        if (r == PHOTON_OK) r = photon__audit_u64(res, "photon.screen.seq", (uint64_t)o->screen_seq, err);
        if (r == PHOTON_OK) r = photon__audit_num(res, "photon.screen.max_rise", o->screen_max_rise, err);
        if (r == PHOTON_OK) r = photon__audit(res, "photon.screen.from", o->screen_from_median ? "median" : "base", err);
        if (r == PHOTON_OK) r = photon__audit_num(res, "photon.screen.base_loss", res->screen_base_loss, err);
    }
    return r;
}

/* What was measured of one delta (photon.delta.N.* or photon.skipped.N.*);
   what was not measured is left out. */
static photon_result photon__merge_audit_measures(photon_merge_result *res, const photon_merge_entry *e, const char *list,
                                                  int n, photon_error *err) {
    const char *names[5] = {"norm", "scale", "cosine", "screen_loss", "krum_score"};
    double v[5];
    char key[64];
    int k;
    photon_result r = PHOTON_OK;
    v[0] = e->norm, v[1] = e->scale, v[2] = e->cosine, v[3] = e->screen_loss, v[4] = e->krum_score;
    for (k = 0; k < 5 && r == PHOTON_OK; k++) {
        if (v[k] != v[k] || (k == 1 && !e->accepted)) continue;
        snprintf(key, sizeof key, "photon.%s.%d.%s", list, n, names[k]);
        r = photon__audit_num(res, key, v[k], err);
    }
    snprintf(key, sizeof key, "photon.%s.%d.trimmed", list, n);
    if (r == PHOTON_OK && e->trimmed == e->trimmed) r = photon__audit_num(res, key, e->trimmed, err);
    return r;
}

/* The audit trail: what was merged, how, and from what. */
static photon_result photon__merge_audit(photon_merge_result *res, const char *base_hash, const char *state_hash,
                                         const photon_merge_options *o, photon_error *err) {
    char key[64];
    int i, n = 0, skipped = 0, robust = photon__merge_is_robust(o);
    photon_result r = PHOTON_OK;
    const photon_outer_config *oc = &o->outer;
    r = photon__audit(res, "photon.base_sha256", base_hash, err);
    if (r == PHOTON_OK) r = photon__audit(res, "photon.server_state_sha256", state_hash, err);
    if (r == PHOTON_OK) r = photon__audit(res, "photon.outer", photon_outer_name(oc->kind), err);
    if (r == PHOTON_OK) r = photon__audit_num(res, "photon.outer_lr", oc->lr, err);
    if (r == PHOTON_OK && oc->kind == PHOTON_OUTER_NESTEROV) r = photon__audit_num(res, "photon.momentum", oc->momentum, err);
    if (r == PHOTON_OK && (oc->kind == PHOTON_OUTER_ADAM || oc->kind == PHOTON_OUTER_YOGI)) {
        r = photon__audit_num(res, "photon.beta1", oc->beta1, err);
        if (r == PHOTON_OK) r = photon__audit_num(res, "photon.beta2", oc->beta2, err);
        if (r == PHOTON_OK) r = photon__audit_num(res, "photon.tau", oc->tau, err);
    }
    if (r == PHOTON_OK) r = photon__audit(res, "photon.weighting", oc->uniform ? "uniform" : "tokens", err);
    if (r == PHOTON_OK && robust) r = photon__merge_audit_rules(res, o, err);
    if (r == PHOTON_OK && o->compress_update)
        r = photon__audit(res, "photon.update_format", photon_delta_format_name(o->update_format), err);
    if (r == PHOTON_OK && o->personal && o->personal[0]) r = photon__audit(res, "photon.declared_personal", o->personal, err);
    if (r == PHOTON_OK) r = photon__audit_u64(res, "photon.clients", (uint64_t)res->accepted, err);
    for (i = 0; i < res->num_entries && r == PHOTON_OK; i++) {
        const photon_merge_entry *e = &res->entries[i];
        char weight[40];
        if (!e->accepted) continue;
        snprintf(weight, sizeof weight, "%.17g", e->weight);
        snprintf(key, sizeof key, "photon.delta.%d.client", n);
        r = photon__audit(res, key, e->info.client, err);
        snprintf(key, sizeof key, "photon.delta.%d.sha256", n);
        if (r == PHOTON_OK) r = photon__audit(res, key, e->sha256, err);
        snprintf(key, sizeof key, "photon.delta.%d.weight", n);
        if (r == PHOTON_OK) r = photon__audit(res, key, weight, err);
        snprintf(key, sizeof key, "photon.delta.%d.tokens", n);
        if (r == PHOTON_OK) r = photon__audit_u64(res, key, e->info.tokens, err);
        snprintf(key, sizeof key, "photon.delta.%d.local_steps", n);
        if (r == PHOTON_OK) r = photon__audit_u64(res, key, e->info.local_steps, err);
        snprintf(key, sizeof key, "photon.delta.%d.format", n); /* f32 deltas keep the keys they always had */
        if (r == PHOTON_OK && e->info.format != PHOTON_DELTA_F32)
            r = photon__audit(res, key, photon_delta_format_name(e->info.format), err);
        snprintf(key, sizeof key, "photon.delta.%d.members", n); /* the nesting: a group delta lists its own */
        if (r == PHOTON_OK && e->info.members) r = photon__audit_u64(res, key, e->info.members, err);
        snprintf(key, sizeof key, "photon.delta.%d.personal", n); /* what it kept to itself */
        if (r == PHOTON_OK && e->info.personal[0]) r = photon__audit(res, key, e->info.personal, err);
        if (r == PHOTON_OK && robust) r = photon__merge_audit_measures(res, e, "delta", n, err);
        n++;
    }
    for (i = 0; i < res->num_entries && r == PHOTON_OK; i++) {
        const photon_merge_entry *e = &res->entries[i];
        if (e->accepted) continue;
        snprintf(key, sizeof key, "photon.skipped.%d.sha256", skipped);
        r = photon__audit(res, key, e->sha256[0] ? e->sha256 : "unreadable", err);
        snprintf(key, sizeof key, "photon.skipped.%d.client", skipped);
        if (r == PHOTON_OK) r = photon__audit(res, key, e->info.client[0] ? e->info.client : "unknown", err);
        snprintf(key, sizeof key, "photon.skipped.%d.refused_by", skipped);
        if (r == PHOTON_OK && robust) r = photon__audit(res, key, e->refused_by[0] ? e->refused_by : "checks", err);
        if (r == PHOTON_OK && robust) r = photon__merge_audit_measures(res, e, "skipped", skipped, err);
        skipped++;
    }
    return r;
}

/* Where the lineage started (photon.source*: a Hugging Face import) goes on
   from round to round. */
static photon_result photon__merge_carry_provenance(photon_merge_result *res, const char *base_path, photon_error *err) {
    photon_st_file st;
    photon_result r = photon_st_open(&st, base_path, err);
    int k;
    for (k = 0; r == PHOTON_OK && k < st.num_meta; k++)
        if (strncmp(st.meta_keys[k], "photon.source", 13) == 0) r = photon__audit(res, st.meta_keys[k], st.meta_values[k], err);
    photon_st_close(&st);
    return r;
}

/* ---- measure ---- */

typedef struct photon__sumsq_job {
    const float *x;
    size_t n;
    double *partial; /* one per block */
} photon__sumsq_job;

static void photon__sumsq_blocks(void *ctx, size_t begin, size_t end, int thread) {
    const photon__sumsq_job *j = (const photon__sumsq_job *)ctx;
    size_t b, i;
    (void)thread;
    for (b = begin; b < end; b++) {
        size_t hi = (b + 1) * PHOTON__MERGE_BLOCK < j->n ? (b + 1) * PHOTON__MERGE_BLOCK : j->n;
        double s = 0.0;
        for (i = b * PHOTON__MERGE_BLOCK; i < hi; i++) s += (double)j->x[i] * (double)j->x[i];
        j->partial[b] = s;
    }
}

/* The L2 norm of x[0..n), by blocks; partial holds one double per block. */
static double photon__blocked_norm(const float *x, size_t n, double *partial) {
    photon__sumsq_job job;
    size_t b, blocks = (n + PHOTON__MERGE_BLOCK - 1) / PHOTON__MERGE_BLOCK;
    double s = 0.0;
    job.x = x, job.n = n, job.partial = partial;
    photon__parallel_range(blocks, 1, photon__sumsq_blocks, &job);
    for (b = 0; b < blocks; b++) s += partial[b];
    return sqrt(s);
}

/* The held-out loss of params on the screening sample. */
static photon_result photon__screen_loss(photon_model *m, const photon_merge_options *o, double *loss,
                                         photon_error *err) {
    photon_eval_result ev;
    int T = o->screen_seq > 0 ? o->screen_seq : m->config.n_ctx;
    photon_result r = photon_evaluate(m, o->screen, 8, T, o->screen_tokens, &ev, err);
    *loss = r == PHOTON_OK ? ev.loss : NAN;
    return r;
}

/* Reads one delta whole: checks it, takes its file hash, its norm and (with
   screening) the loss of the base with it applied alone. 0 if refused. */
static int photon__merge_measure_one(photon_merge_result *res, const photon_merge_options *o, photon_merge_entry *e,
                                     float *values, const float *base, double *partial) {
    photon_delta_info info;
    photon_error why;
    size_t j, n = res->model.num_params;
    if (photon_delta_load(&res->model, e->path, &info, values, &why) != PHOTON_OK) {
        snprintf(e->reason, sizeof e->reason, "%s", why.message);
        return 0;
    }
    memcpy(e->sha256, info.sha256, sizeof e->sha256); /* the file hash, from the same pass */
    if (strcmp(info.base_sha256, e->info.base_sha256) != 0 || strcmp(info.client, e->info.client) != 0 ||
        info.round != e->info.round || info.local_steps != e->info.local_steps || info.batch != e->info.batch ||
        info.seq != e->info.seq || info.tokens != e->info.tokens || info.format != e->info.format ||
        info.members != e->info.members) { /* replaced since */
        snprintf(e->reason, sizeof e->reason, "%s: changed while it was being merged (its header differs from the "
                 "one checked)", e->path);
        return 0;
    }
    e->norm = photon__blocked_norm(values, n, partial);
    if (o->screen) { /* base - delta: the client's own model, evaluated in the base's place */
        photon_error ev;
        for (j = 0; j < n; j++) res->model.params[j] = base[j] - values[j];
        if (photon__screen_loss(&res->model, o, &e->screen_loss, &ev) != PHOTON_OK) {
            snprintf(e->reason, sizeof e->reason, "%.200s: screening: applied alone to the base it gives %.250s", e->path,
                     ev.code == PHOTON_ERR_NUMERIC ? "a non-finite loss" : ev.message);
            memcpy(res->model.params, base, n * sizeof(float));
            snprintf(e->refused_by, sizeof e->refused_by, "screening");
            return 0;
        }
        memcpy(res->model.params, base, n * sizeof(float));
    }
    return 1;
}

/* Measures every valid delta; 0 if one was refused and bad deltas are not
   skipped. */
static int photon__merge_measure(photon_merge_result *res, const photon_merge_options *o, float *values,
                                 const float *base, double *partial) {
    int i;
    for (i = 0; i < res->num_entries; i++) {
        photon_merge_entry *e = &res->entries[i];
        if (!e->accepted) continue;
        if (!photon__merge_measure_one(res, o, e, values, base, partial)) {
            e->accepted = 0;
            if (!e->refused_by[0]) snprintf(e->refused_by, sizeof e->refused_by, "checks");
            if (!o->skip_bad) return 0;
        }
    }
    return 1;
}

/* ---- judge ---- */

static void photon__sort_doubles(double *v, int n) {
    int i, k;
    for (i = 1; i < n; i++)
        for (k = i; k > 0 && v[k - 1] > v[k]; k--) {
            double t = v[k];
            v[k] = v[k - 1];
            v[k - 1] = t;
        }
}

/* The median of the accepted deltas' norms (of an even count, the mean of
   the middle two); 0 if none. */
static double photon__median_norm(const photon_merge_result *res, double *scratch) {
    int i, m = 0;
    for (i = 0; i < res->num_entries; i++)
        if (res->entries[i].accepted) scratch[m++] = res->entries[i].norm;
    if (m == 0) return 0.0;
    photon__sort_doubles(scratch, m);
    return m % 2 ? scratch[m / 2] : 0.5 * (scratch[m / 2 - 1] + scratch[m / 2]);
}

/* The norm bound and the screening threshold: a delta they refuse is
   refused like any bad delta (the merge fails unless bad deltas are
   skipped). Then clipping sets every remaining delta's scale. */
static int photon__merge_judge(photon_merge_result *res, const photon_merge_options *o, double *scratch) {
    int i, ok = 1, m = 0;
    res->median_norm = photon__median_norm(res, scratch);
    if (o->screen) { /* what a rise is measured from: the base, or the typical delta of this round */
        for (i = 0; i < res->num_entries; i++)
            if (res->entries[i].accepted) scratch[m++] = res->entries[i].screen_loss;
        photon__sort_doubles(scratch, m);
        res->screen_reference = !o->screen_from_median ? res->screen_base_loss
                                : m % 2                ? scratch[m / 2]
                                : m                    ? 0.5 * (scratch[m / 2 - 1] + scratch[m / 2])
                                                       : res->screen_base_loss;
    }
    for (i = 0; i < res->num_entries; i++) {
        photon_merge_entry *e = &res->entries[i];
        if (!e->accepted) continue;
        if (o->max_norm_ratio > 0 && e->norm > o->max_norm_ratio * res->median_norm) {
            snprintf(e->reason, sizeof e->reason, "%s: norm %.6g is %.3g times the median norm %.6g of this round's "
                     "deltas (the bound is %g times)", e->path, e->norm, e->norm / res->median_norm, res->median_norm,
                     o->max_norm_ratio);
            e->accepted = 0;
            snprintf(e->refused_by, sizeof e->refused_by, "norm");
        } else if (o->screen && e->screen_loss - res->screen_reference > o->screen_max_rise) {
            snprintf(e->reason, sizeof e->reason, "%s: screening: applied alone to the base it gives a held-out loss "
                     "of %.6g, %.4g above %s %.6g (at most %g allowed)", e->path, e->screen_loss,
                     e->screen_loss - res->screen_reference, o->screen_from_median ? "the median delta's" : "the base's",
                     res->screen_reference, o->screen_max_rise);
            e->accepted = 0;
            snprintf(e->refused_by, sizeof e->refused_by, "screening");
        }
        if (!e->accepted) ok = 0;
    }
    if (!ok && !o->skip_bad) return 0;
    res->clip_bound = o->clip_norm > 0 ? o->clip_norm : o->clip_auto > 0 ? o->clip_auto * photon__median_norm(res, scratch)
                                                                         : 0.0;
    for (i = 0; i < res->num_entries; i++) {
        photon_merge_entry *e = &res->entries[i];
        e->scale = e->accepted && res->clip_bound > 0 && e->norm > res->clip_bound ? res->clip_bound / e->norm : 1.0;
    }
    return 1;
}

/* ---- aggregate: the accepted deltas streamed together ---- */

/* One delta read front to back in chunks, its file hash taken again on the
   way, so that a file changed since it was measured is caught. */
typedef struct photon__delta_stream {
    photon_st_file st;
    photon_sha256 hash;
    const photon_model *m;
    photon_delta_format format;
    int tensor;            /* the model tensor being read ... */
    size_t pos;            /* ... and how many of its values are done */
    float *scales;         /* int8, int4: the current tensor's scales */
    size_t scales_cap;
    unsigned char *bytes;  /* staging for codes */
    size_t bytes_cap;
    unsigned char held;    /* int4: the byte whose high half is the next value (pos odd) */
    const unsigned char *absent; /* the tensors the file leaves out (read as 0); NULL: none */
} photon__delta_stream;

/* Opens a measured delta for streaming. Its tensors must lie in the data
   section in the model's order (as photon writes them; int8 and int4 each
   tensor's scales just before its codes), so the data can be decoded front
   to back. */
static photon_result photon__stream_open(const photon_model *m, const photon_merge_entry *e, photon__delta_stream *s,
                                         photon_error *err) {
    photon_delta_info info;
    unsigned char buf[4096];
    uint64_t left, at = 0;
    int i;
    photon_result r;
    memset(s, 0, sizeof *s);
    if ((r = photon__delta_open(m, e->path, &s->st, &info, err)) != PHOTON_OK) return r;
    s->m = m, s->format = info.format;
    s->absent = e->absent;
    for (i = 0; r == PHOTON_OK && i < m->num_tensors; i++) {
        const photon_tensor_info *ti = &m->tensors[i];
        const photon_st_tensor *codes = photon_st_find(&s->st, ti->name), *scales = NULL;
        if (e->absent && e->absent[i]) continue; /* a personal tensor: not in the file */
        size_t nb = photon_delta_scale_count(info.format, ti->size);
        char name[64];
        snprintf(name, sizeof name, "%s.scales", ti->name);
        if (nb) {
            scales = photon_st_find(&s->st, name);
            if (scales && scales->begin == at) at += 4 * (uint64_t)nb;
            else at = UINT64_MAX;
        }
        if (!codes || codes->begin != at)
            r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: tensor '%s' is not where the model's order puts it; the merge "
                             "streams deltas whose tensors are stored in the model's order, as photon writes them",
                             e->path, ti->name);
        at += photon_delta_code_bytes(info.format, ti->size);
    }
    photon_sha256_init(&s->hash);
    if (r == PHOTON_OK && fseek((FILE *)s->st.handle, 0, SEEK_SET) != 0)
        r = photon__fail(err, PHOTON_ERR_IO, "%s: cannot seek", e->path);
    for (left = s->st.data_start; r == PHOTON_OK && left > 0;) { /* the header, for the file hash */
        size_t want = left < sizeof buf ? (size_t)left : sizeof buf;
        if (fread(buf, 1, want, (FILE *)s->st.handle) != want)
            r = photon__fail(err, PHOTON_ERR_IO, "%s: read failed (truncated while merging?)", e->path);
        photon_sha256_update(&s->hash, buf, want);
        left -= want;
    }
    if (r != PHOTON_OK) photon_st_close(&s->st);
    return r;
}

/* Reads n bytes of the data section into dst, hashing them. */
static photon_result photon__stream_bytes(photon__delta_stream *s, void *dst, size_t n, photon_error *err) {
    if (fread(dst, 1, n, (FILE *)s->st.handle) != n)
        return photon__fail(err, PHOTON_ERR_IO, "%s: read failed (truncated while merging?)", s->st.path);
    photon_sha256_update(&s->hash, dst, n);
    return PHOTON_OK;
}

/* Room for n bytes of staging. */
static int photon__stream_room(unsigned char **buf, size_t *cap, size_t n) {
    if (*cap >= n) return 1;
    PHOTON_FREE(*buf);
    *buf = (unsigned char *)PHOTON_MALLOC(n);
    *cap = *buf ? n : 0;
    return *buf != NULL;
}

/* The next k values of the current tensor, decoded as photon_dequantize
   decodes them (the measuring pass checked every code and scale; the file
   hash at the end proves these are the same bytes). */
static photon_result photon__stream_decode(photon__delta_stream *s, const photon_tensor_info *t, float *dst, size_t k,
                                           photon_error *err) {
    size_t i, first = s->pos, n;
    photon_result r;
    if (s->format == PHOTON_DELTA_F32) return photon__stream_bytes(s, dst, 4 * k, err);
    if (s->format == PHOTON_DELTA_BF16) {
        if (!photon__stream_room(&s->bytes, &s->bytes_cap, 2 * k))
            return photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", s->st.path);
        if ((r = photon__stream_bytes(s, s->bytes, 2 * k, err)) != PHOTON_OK) return r;
        for (i = 0; i < k; i++) dst[i] = photon__bf16_to_f32((uint16_t)(s->bytes[2 * i] | s->bytes[2 * i + 1] << 8));
        return PHOTON_OK;
    }
    if (s->format == PHOTON_DELTA_INT8) {
        if (!photon__stream_room(&s->bytes, &s->bytes_cap, k))
            return photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", s->st.path);
        if ((r = photon__stream_bytes(s, s->bytes, k, err)) != PHOTON_OK) return r;
        for (i = 0; i < k; i++)
            dst[i] = photon__decode((int)(signed char)s->bytes[i], s->scales[(first + i) / PHOTON_QUANT_BLOCK]);
        return PHOTON_OK;
    }
    /* int4: value j is the low half of byte j/2 when j is even, the high half when odd */
    n = (first + k + 1) / 2 - (first + 1) / 2; /* the bytes that start in [first, first + k) */
    if (!photon__stream_room(&s->bytes, &s->bytes_cap, n + 1))
        return photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", s->st.path);
    if ((r = photon__stream_bytes(s, s->bytes, n, err)) != PHOTON_OK) return r;
    for (i = 0; i < k; i++) {
        size_t j = first + i;
        unsigned char byte = j % 2 ? (j / 2 == (first + 1) / 2 - 1 && first % 2 ? s->held : s->bytes[j / 2 - (first + 1) / 2])
                                   : s->bytes[j / 2 - (first + 1) / 2];
        int code = (j % 2 ? byte >> 4 : byte & 0x0f) - 8;
        dst[i] = photon__decode(code, s->scales[j / PHOTON_QUANT_BLOCK]);
    }
    if (n) s->held = s->bytes[n - 1];
    (void)t;
    return PHOTON_OK;
}

/* The next count values of the parameter vector, in the model's order,
   across tensors. */
static photon_result photon__stream_read(photon__delta_stream *s, float *dst, size_t count, photon_error *err) {
    photon_result r = PHOTON_OK;
    while (r == PHOTON_OK && count > 0) {
        const photon_tensor_info *t = &s->m->tensors[s->tensor];
        size_t k = t->size - s->pos < count ? t->size - s->pos : count, nb = photon_delta_scale_count(s->format, t->size);
        if (s->absent && s->absent[s->tensor]) { /* left out: zeros, weighing nothing */
            memset(dst, 0, k * sizeof(float));
            dst += k, count -= k, s->pos += k;
            if (s->pos == t->size) s->pos = 0, s->tensor++;
            continue;
        }
        if (s->pos == 0 && nb) { /* a new tensor: its scales come first */
            if (s->scales_cap < nb) {
                PHOTON_FREE(s->scales);
                s->scales = (float *)PHOTON_MALLOC(nb * sizeof(float));
                s->scales_cap = s->scales ? nb : 0;
                if (!s->scales) return photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", s->st.path);
            }
            if ((r = photon__stream_bytes(s, s->scales, 4 * nb, err)) != PHOTON_OK) return r;
        }
        r = photon__stream_decode(s, t, dst, k, err);
        dst += k, count -= k, s->pos += k;
        if (s->pos == t->size) s->pos = 0, s->tensor++;
    }
    return r;
}

/* Closes the stream; 1 if the file still hashes as it did when measured. */
static int photon__stream_close(photon__delta_stream *s, const char *sha256) {
    char hex[65];
    unsigned char extra;
    int same;
    if (!s->st.handle) return 0;
    same = fread(&extra, 1, 1, (FILE *)s->st.handle) == 0; /* nothing after the last tensor */
    photon_sha256_final(&s->hash, hex);
    photon_st_close(&s->st);
    PHOTON_FREE(s->scales);
    PHOTON_FREE(s->bytes);
    return same && strcmp(hex, sha256) == 0;
}

/* What the rules need while the chunks pass. */
typedef struct photon__agg_job {
    const photon_merge_options *o;
    int m;                 /* deltas taken */
    const float *chunk;    /* m rows of `stride` values: delta i's chunk at chunk + i*stride */
    size_t stride, count;  /* values per row allocated, values in this chunk */
    const double *scale, *weight; /* per delta: the clipping factor; the weight (tokens, or 1) */
    double total;          /* the sum of the weights */
    const double *tweight; /* the mean's weights per delta and tensor (0 where a delta leaves the tensor out) ... */
    const double *ttotal;  /* ... and their sum per tensor */
    const photon_model *model; /* its tensor table: which tensor a coordinate belongs to */
    size_t begin;          /* the chunk's first coordinate */
    float *out;            /* the aggregate of this chunk */
    double *dots;          /* per block: m dot products with the aggregate, then its squared norm */
    double *pairs;         /* multi-krum, per block: the m*(m-1)/2 squared distances */
    uint32_t *cut;         /* per block: how many of each delta's values the rule cut */
    int failed;            /* a task could not get its scratch memory */
} photon__agg_job;

/* The rule's value for one coordinate, from the m deltas' (scaled) values;
   cut[i] counts the deltas the rule left out. */
static float photon__rule_value(const photon__agg_job *j, int t, const double *v, double *sorted, int *order,
                                uint32_t *cut) {
    int m = j->m, i, k, lo, hi, T = j->model->num_tensors;
    double s = 0.0;
    if (j->o->aggregate == PHOTON_AGGREGATE_MEAN || j->o->aggregate == PHOTON_AGGREGATE_MULTI_KRUM) {
        /* the deltas that carry tensor t, by weight (all of them, unless some keep it personal) */
        for (i = 0; i < m; i++) s += j->tweight[(size_t)i * (size_t)T + (size_t)t] * v[i];
        return j->ttotal[t] > 0 ? (float)(s / j->ttotal[t]) : 0.0f;
    }
    for (i = 0; i < m; i++) order[i] = i; /* sort by value, ties by merge order */
    for (i = 1; i < m; i++)
        for (k = i; k > 0 && (v[order[k - 1]] > v[order[k]]); k--) {
            int t = order[k];
            order[k] = order[k - 1];
            order[k - 1] = t;
        }
    for (i = 0; i < m; i++) sorted[i] = v[order[i]];
    if (j->o->aggregate == PHOTON_AGGREGATE_MEDIAN) lo = (m - 1) / 2, hi = m / 2 + 1;
    else lo = (int)floor(j->o->trim * m), hi = m - lo;
    for (i = 0; i < m; i++)
        if (i < lo || i >= hi) cut[order[i]]++;
    for (i = lo; i < hi; i++) s += sorted[i];
    return (float)(s / (hi - lo));
}

static void photon__agg_blocks(void *ctx, size_t begin, size_t end, int thread) {
    const photon__agg_job *j = (const photon__agg_job *)ctx;
    int m = j->m, i;
    double *v = (double *)photon__scratch(thread, (size_t)m * 6 + 8), *sorted = v + m;
    int *order = (int *)(sorted + m);
    size_t b, c;
    if (!v) { /* out of memory: the pass fails */
        ((photon__agg_job *)ctx)->failed = 1;
        return;
    }
    for (b = begin; b < end; b++) {
        size_t hi = (b + 1) * PHOTON__MERGE_BLOCK < j->count ? (b + 1) * PHOTON__MERGE_BLOCK : j->count;
        double *dots = j->dots + b * (size_t)(m + 1);
        uint32_t *cut = j->cut + b * (size_t)m;
        int t = 0;
        for (i = 0; i <= m; i++) dots[i] = 0.0;
        for (i = 0; i < m; i++) cut[i] = 0;
        for (c = b * PHOTON__MERGE_BLOCK; c < hi; c++) {
            double a;
            while (j->begin + c >= j->model->tensors[t].offset + j->model->tensors[t].size) t++;
            for (i = 0; i < m; i++) v[i] = (double)j->chunk[(size_t)i * j->stride + c] * j->scale[i];
            j->out[c] = photon__rule_value(j, t, v, sorted, order, cut);
            a = (double)j->out[c];
            for (i = 0; i < m; i++) dots[i] += v[i] * a;
            dots[m] += a * a;
        }
    }
}

static void photon__krum_blocks(void *ctx, size_t begin, size_t end, int thread) {
    const photon__agg_job *j = (const photon__agg_job *)ctx;
    int m = j->m, a, k;
    size_t b, c, npairs = (size_t)m * (size_t)(m - 1) / 2;
    (void)thread;
    for (b = begin; b < end; b++) {
        size_t hi = (b + 1) * PHOTON__MERGE_BLOCK < j->count ? (b + 1) * PHOTON__MERGE_BLOCK : j->count, p = 0;
        double *pairs = j->pairs + b * npairs;
        for (a = 0; a < m; a++)
            for (k = a + 1; k < m; k++, p++) {
                const float *x = j->chunk + (size_t)a * j->stride, *y = j->chunk + (size_t)k * j->stride;
                double s = 0.0;
                for (c = b * PHOTON__MERGE_BLOCK; c < hi; c++) {
                    double d = (double)x[c] * j->scale[a] - (double)y[c] * j->scale[k];
                    s += d * d;
                }
                pairs[p] = s;
            }
    }
}

/* One chunk of every stream, each read (and hashed) by its own task. */
typedef struct photon__read_job {
    photon__delta_stream *streams;
    float *chunk;
    size_t stride, count;
    photon_result *results;
    photon_error *errors;
} photon__read_job;

static void photon__read_task(void *ctx, int task, int thread) {
    photon__read_job *j = (photon__read_job *)ctx;
    (void)thread;
    j->results[task] = photon__stream_read(&j->streams[task], j->chunk + (size_t)task * j->stride, j->count,
                                           &j->errors[task]);
}

/* Streams the taken deltas (take[0..m)) chunk by chunk through one pass:
   the aggregate into agg (and the dot products dots_total, the cut counts)
   or, with agg NULL, Multi-Krum's pairwise squared distances into
   pairs_total. *changed gets the entry whose file changed since it was
   measured (-1: none). */
static photon_result photon__merge_stream(photon_merge_result *res, photon__agg_job *job, const int *take, float *agg,
                                          double *pairs_total, double *dots_total, uint64_t *cut_total, int *changed,
                                          photon_error *err) {
    size_t n = res->model.num_params, stride = job->stride, begin, b, blocks = stride / PHOTON__MERGE_BLOCK;
    size_t npairs = (size_t)job->m * (size_t)(job->m - 1) / 2;
    photon__delta_stream *streams = (photon__delta_stream *)photon__calloc((size_t)job->m, sizeof *streams);
    photon_result *results = (photon_result *)photon__calloc((size_t)job->m, sizeof(photon_result));
    photon_error *errors = (photon_error *)photon__calloc((size_t)job->m, sizeof(photon_error));
    int i, opened = 0;
    photon_result r = streams && results && errors ? PHOTON_OK
                                                   : photon__fail(err, PHOTON_ERR_MEMORY, "out of memory opening the deltas");
    *changed = -1;
    for (i = 0; r == PHOTON_OK && i < job->m; i++) {
        r = photon__stream_open(&res->model, &res->entries[take[i]], &streams[i], err);
        if (r == PHOTON_OK) opened++;
        else if (r == PHOTON_ERR_FORMAT || r == PHOTON_ERR_MISMATCH) *changed = take[i]; /* not the file measured */
        /* out of memory or files, or a file gone: the merge fails, naming it */
    }
    for (begin = 0; r == PHOTON_OK && begin < n; begin += stride) {
        photon__read_job reads;
        job->count = n - begin < stride ? n - begin : stride;
        reads.streams = streams, reads.chunk = (float *)job->chunk, reads.stride = stride, reads.count = job->count;
        reads.results = results, reads.errors = errors;
        photon__parallel(job->m, photon__read_task, &reads); /* each delta's chunk read and hashed on its own */
        for (i = 0; r == PHOTON_OK && i < job->m; i++)
            if ((r = results[i]) != PHOTON_OK) {
                *changed = take[i];
                if (err) *err = errors[i];
            }
        if (r != PHOTON_OK) break;
        blocks = (job->count + PHOTON__MERGE_BLOCK - 1) / PHOTON__MERGE_BLOCK;
        if (agg) {
            job->out = agg + begin;
            job->begin = begin;
            photon__parallel_range(blocks, 1, photon__agg_blocks, job);
            if (job->failed) {
                r = photon__fail(err, PHOTON_ERR_MEMORY, "out of memory aggregating %d deltas", job->m);
                break;
            }
            for (b = 0; b < blocks; b++) { /* block sums, in order */
                for (i = 0; i <= job->m; i++) dots_total[i] += job->dots[b * (size_t)(job->m + 1) + (size_t)i];
                for (i = 0; i < job->m; i++) cut_total[i] += job->cut[b * (size_t)job->m + (size_t)i];
            }
        } else {
            size_t p;
            photon__parallel_range(blocks, 1, photon__krum_blocks, job);
            for (b = 0; b < blocks; b++)
                for (p = 0; p < npairs; p++) pairs_total[p] += job->pairs[b * npairs + p];
        }
    }
    for (i = 0; i < opened; i++)
        if (!photon__stream_close(&streams[i], res->entries[take[i]].sha256) && r == PHOTON_OK) {
            *changed = take[i];
            r = photon__fail(err, PHOTON_ERR_MISMATCH, "%s: changed while it was being merged", res->entries[take[i]].path);
        }
    PHOTON_FREE(streams);
    PHOTON_FREE(results);
    PHOTON_FREE(errors);
    return r;
}

/* Multi-Krum: each delta's score is the sum of its squared distances to its
   n - f - 2 nearest others; the `select` lowest scores are taken (ties in
   merge order). The others stay valid but are left out by the rule. */
static void photon__krum_select(photon_merge_result *res, const photon_merge_options *o, const int *take, int m,
                                const double *pairs, double *scratch) {
    int i, k, f = o->byzantine, select = o->krum_select > 0 && o->krum_select < m - f ? o->krum_select : m - f, *rank;
    for (i = 0; i < m; i++) {
        int c = 0, a, b;
        double s = 0.0;
        for (k = 0; k < m; k++) {
            if (k == i) continue;
            a = i < k ? i : k, b = i < k ? k : i;
            scratch[c++] = pairs[(size_t)a * (2 * (size_t)m - (size_t)a - 1) / 2 + (size_t)(b - a - 1)];
        }
        photon__sort_doubles(scratch, c);
        for (k = 0; k < m - f - 2; k++) s += scratch[k];
        res->entries[take[i]].krum_score = s;
    }
    rank = (int *)scratch; /* the scores are kept in the entries */
    for (i = 0; i < m; i++) rank[i] = i;
    for (i = 1; i < m; i++)
        for (k = i; k > 0 && res->entries[take[rank[k - 1]]].krum_score > res->entries[take[rank[k]]].krum_score; k--) {
            int t = rank[k];
            rank[k] = rank[k - 1];
            rank[k - 1] = t;
        }
    for (i = select; i < m; i++) {
        photon_merge_entry *e = &res->entries[take[rank[i]]];
        e->accepted = 0;
        e->left_out_by_rule = 1;
        snprintf(e->refused_by, sizeof e->refused_by, "multi-krum");
        snprintf(e->reason, sizeof e->reason, "%s: multi-krum: score %.6g ranks %d of %d; the %d lowest are averaged",
                 e->path, e->krum_score, i + 1, m, select);
    }
}

/* The indices of the accepted entries, in merge order; their count. */
static int photon__merge_taken(const photon_merge_result *res, int *take) {
    int i, m = 0;
    for (i = 0; i < res->num_entries; i++)
        if (res->entries[i].accepted) take[m++] = i;
    return m;
}

/* The weights of the taken deltas (tokens, or 1 each) and their sum; each
   entry records its share (1/m for the coordinate-wise rules, which weigh
   every delta alike). */
static double photon__merge_weights(photon_merge_result *res, const photon_merge_options *o, const int *take, int m,
                                    double *weight, double *tweight, double *ttotal) {
    double total = 0.0;
    int i, t, T = res->model.num_tensors;
    for (i = 0; i < m; i++) {
        weight[i] = o->outer.uniform ? 1.0 : (double)res->entries[take[i]].info.tokens;
        total += weight[i];
    }
    for (t = 0; t < T; t++) { /* per tensor, over the deltas that carry it, summed in the same order */
        ttotal[t] = 0.0;
        for (i = 0; i < m; i++) {
            const unsigned char *absent = res->entries[take[i]].absent;
            double w = absent && absent[t] ? 0.0 : weight[i];
            tweight[(size_t)i * (size_t)T + (size_t)t] = w;
            ttotal[t] += w;
        }
    }
    for (i = 0; i < m; i++)
        res->entries[take[i]].weight = o->aggregate == PHOTON_AGGREGATE_MEDIAN ||
                                               o->aggregate == PHOTON_AGGREGATE_TRIMMED_MEAN
                                           ? 1.0 / m
                                           : weight[i] / total;
    return total;
}

/* The aggregate of the accepted deltas into agg, by the rule. A delta
   changed since it was measured is refused and, if bad deltas are
   skipped, the pass runs again without it. */
static photon_result photon__merge_aggregate(photon_merge_result *res, const photon_merge_options *o, float *agg,
                                             photon_error *caller_err) {
    photon_error local, *err = &local;
    int n_all = res->num_entries, m, i, changed = -1;
    size_t stride = photon__merge_chunk(o), blocks = stride / PHOTON__MERGE_BLOCK, npairs;
    photon__agg_job job;
    int *take = (int *)photon__calloc((size_t)n_all + 1, sizeof(int));
    double *scale = (double *)photon__calloc((size_t)n_all + 1, sizeof(double));
    double *weight = (double *)photon__calloc((size_t)n_all + 1, sizeof(double));
    double *dots_total = (double *)photon__calloc((size_t)n_all + 2, sizeof(double));
    double *pairs_total = NULL, *scratch = (double *)photon__calloc((size_t)n_all + 1, sizeof(double));
    uint64_t *cut_total = (uint64_t *)photon__calloc((size_t)n_all + 1, sizeof(uint64_t));
    double *tweight = NULL, *ttotal = NULL;
    photon_result r = PHOTON_OK;
    memset(&job, 0, sizeof job);
    npairs = (size_t)n_all * (size_t)(n_all > 0 ? n_all - 1 : 0) / 2;
    job.chunk = (float *)photon__calloc((size_t)n_all * stride + 1, sizeof(float));
    job.dots = (double *)photon__calloc(blocks * (size_t)(n_all + 1), sizeof(double));
    job.cut = (uint32_t *)photon__calloc(blocks * (size_t)n_all + 1, sizeof(uint32_t));
    if (o->aggregate == PHOTON_AGGREGATE_MULTI_KRUM) {
        job.pairs = (double *)photon__calloc(blocks * npairs + 1, sizeof(double));
        pairs_total = (double *)photon__calloc(npairs + 1, sizeof(double));
    }
    if (!take || !scale || !weight || !dots_total || !scratch || !cut_total || !job.chunk || !job.dots || !job.cut ||
        (o->aggregate == PHOTON_AGGREGATE_MULTI_KRUM && (!job.pairs || !pairs_total)))
        r = photon__fail(err, PHOTON_ERR_MEMORY, "out of memory: %d deltas of %zu values at a time", n_all, stride);
    job.o = o, job.stride = stride, job.scale = scale, job.weight = weight, job.model = &res->model;
    tweight = (double *)photon__calloc((size_t)(n_all + 1) * (size_t)res->model.num_tensors, sizeof(double));
    ttotal = (double *)photon__calloc((size_t)res->model.num_tensors, sizeof(double));
    if (!tweight || !ttotal) r = photon__fail(err, PHOTON_ERR_MEMORY, "out of memory weighing %d deltas", n_all);
    job.tweight = tweight, job.ttotal = ttotal;
    for (;;) {
        if (r != PHOTON_OK) break;
        if (changed >= 0) { /* refuse the changed delta, then judge again without it */
            photon_merge_entry *e = &res->entries[changed];
            e->accepted = 0;
            snprintf(e->reason, sizeof e->reason, "%s", local.message);
            snprintf(e->refused_by, sizeof e->refused_by, "checks");
            if (!o->skip_bad) {
                r = photon__fail(err, PHOTON_ERR_MISMATCH, "%s", e->reason);
                break;
            }
            for (i = 0; i < n_all; i++)
                if (res->entries[i].left_out_by_rule) {
                    res->entries[i].left_out_by_rule = 0;
                    res->entries[i].accepted = 1;
                    res->entries[i].reason[0] = '\0';
                }
            photon__merge_judge(res, o, scratch);
            changed = -1;
        }
        m = photon__merge_taken(res, take);
        if (m == 0) break;
        job.m = m;
        for (i = 0; i < m; i++) scale[i] = res->entries[take[i]].scale;
        if (o->aggregate == PHOTON_AGGREGATE_MULTI_KRUM) {
            if (m <= 2 * o->byzantine + 2) {
                r = photon__fail(err, PHOTON_ERR_ARGUMENT, "multi-krum with f = %d needs more than %d deltas; %d are valid",
                                 o->byzantine, 2 * o->byzantine + 2, m);
                break;
            }
            memset(pairs_total, 0, (npairs + 1) * sizeof(double));
            if (photon__merge_stream(res, &job, take, NULL, pairs_total, NULL, NULL, &changed, err) != PHOTON_OK) {
                if (changed >= 0) continue;
                r = local.code;
                break;
            }
            photon__krum_select(res, o, take, m, pairs_total, scratch);
            m = photon__merge_taken(res, take);
            job.m = m;
            for (i = 0; i < m; i++) scale[i] = res->entries[take[i]].scale;
        }
        job.total = photon__merge_weights(res, o, take, m, weight, tweight, ttotal);
        memset(dots_total, 0, (size_t)(n_all + 2) * sizeof(double));
        memset(cut_total, 0, (size_t)(n_all + 1) * sizeof(uint64_t));
        if (photon__merge_stream(res, &job, take, agg, NULL, dots_total, cut_total, &changed, err) != PHOTON_OK) {
            if (changed >= 0) continue;
            r = local.code;
            break;
        }
        for (i = 0; i < m; i++) {
            photon_merge_entry *e = &res->entries[take[i]];
            double nd = e->norm * e->scale, na = sqrt(dots_total[m]);
            e->cosine = nd > 0 && na > 0 ? dots_total[i] / (nd * na) : 0.0;
            if (o->aggregate == PHOTON_AGGREGATE_MEDIAN || o->aggregate == PHOTON_AGGREGATE_TRIMMED_MEAN)
                e->trimmed = (double)cut_total[i] / (double)res->model.num_params;
        }
        break;
    }
    PHOTON_FREE(take);
    PHOTON_FREE(scale);
    PHOTON_FREE(weight);
    PHOTON_FREE(dots_total);
    PHOTON_FREE(pairs_total);
    PHOTON_FREE(scratch);
    PHOTON_FREE(cut_total);
    PHOTON_FREE((void *)job.chunk);
    PHOTON_FREE(job.dots);
    PHOTON_FREE(job.cut);
    PHOTON_FREE(job.pairs);
    PHOTON_FREE(tweight);
    PHOTON_FREE(ttotal);
    return r == PHOTON_OK ? r : photon__fail(caller_err, r, "%s", local.message);
}

/* The downlink: next - base encoded, and the next model replaced by what
   the encoding gives back, base + decode(encode(next - base)) (scratch: a
   parameter vector), so that the aggregator and every client that applies
   the update hold the same bits. The encoding is kept for
   photon_update_save. */
static photon_result photon__merge_compress_update(photon_merge_result *res, const photon_merge_options *o,
                                                   const float *base, float *scratch, photon_error *err) {
    photon__coded c;
    size_t j, n = res->model.num_params, code_at = 0, scale_at = 0;
    int i;
    if (!base || !photon__coded_init(&c, &res->model, o->update_format))
        return photon__fail(err, PHOTON_ERR_MEMORY, "out of memory encoding the update");
    for (j = 0; j < n; j++) scratch[j] = res->model.params[j] - base[j];
    photon__coded_fill(&c, &res->model, o->update_format, scratch, NULL, NULL);
    for (i = 0; i < res->model.num_tensors; i++) {
        const photon_tensor_info *t = &res->model.tensors[i];
        photon_dequantize(o->update_format, c.codes + code_at, c.scales + scale_at, t->size, scratch + t->offset, NULL);
        code_at += photon_delta_code_bytes(o->update_format, t->size);
        scale_at += photon_delta_scale_count(o->update_format, t->size);
    }
    for (j = 0; j < n; j++) {
        res->model.params[j] = base[j] + scratch[j];
        if (!photon__is_finite(res->model.params[j])) {
            photon__coded_free(&c);
            return photon__fail(err, PHOTON_ERR_NUMERIC, "the %s update gives a non-finite parameter at index %zu",
                                photon_delta_format_name(o->update_format), j);
        }
    }
    res->update_format = o->update_format;
    res->update_codes = c.codes, res->update_scales = c.scales;
    c.codes = NULL, c.scales = NULL;
    photon__coded_free(&c);
    return PHOTON_OK;
}

/* The first refused delta's reason, as the merge's error. */
static photon_result photon__merge_first_refusal(const photon_merge_result *res, photon_error *err) {
    int i;
    for (i = 0; i < res->num_entries; i++)
        if (!res->entries[i].accepted && !res->entries[i].left_out_by_rule)
            return photon__fail(err, PHOTON_ERR_MISMATCH, "%s", res->entries[i].reason);
    return PHOTON_OK;
}

/* The outer step on every tensor some delta carried; a tensor every delta
   left out (personal everywhere) stays as the base has it, and so does its
   server state. */
static void photon__merge_outer_step(photon_merge_result *res, const float *avg, const photon_outer_config *outer) {
    int t, i;
    for (t = 0; t < res->model.num_tensors; t++) {
        const photon_tensor_info *ti = &res->model.tensors[t];
        photon_server_state view = res->state;
        int carried = 0;
        for (i = 0; i < res->num_entries && !carried; i++)
            carried = res->entries[i].accepted && !(res->entries[i].absent && res->entries[i].absent[t]);
        if (!carried) continue;
        if (view.m) view.m += ti->offset;
        if (view.v) view.v += ti->offset;
        photon_outer_step(res->model.params + ti->offset, avg + ti->offset, ti->size, outer, &view);
    }
}

/* Settings the rules cannot work with. */
static photon_result photon__merge_check_options(const photon_merge_options *o, photon_error *err) {
    if ((int)o->aggregate < PHOTON_AGGREGATE_MEAN || (int)o->aggregate > PHOTON_AGGREGATE_MULTI_KRUM)
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "unknown aggregation rule %d", (int)o->aggregate);
    if (!(o->trim >= 0.0 && o->trim < 0.5))
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "trim %g: the fraction cut from each end must be at least 0 and "
                            "below 0.5", o->trim);
    if (o->byzantine < 0 || o->krum_select < 0)
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "multi-krum's f (%d) and selection (%d) cannot be negative",
                            o->byzantine, o->krum_select);
    if (!(o->clip_norm >= 0.0 && o->clip_auto >= 0.0 && o->max_norm_ratio >= 0.0) || (o->clip_norm > 0 && o->clip_auto > 0))
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "norm bounds: clip %g, auto %g, ratio %g (each at least 0, and "
                            "one clipping bound at most)", o->clip_norm, o->clip_auto, o->max_norm_ratio);
    if (o->screen && !(o->screen_max_rise - o->screen_max_rise == 0.0))
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "screening: the allowed rise must be a finite number");
    if (o->chunk % PHOTON__MERGE_BLOCK != 0)
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "chunk of %zu values: must be a multiple of %d", o->chunk,
                            PHOTON__MERGE_BLOCK);
    if (o->group_id && !photon_client_id_valid(o->group_id))
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "group id '%s' must be 1 to 63 letters, digits, '.', '_' or '-'",
                            o->group_id);
    if (o->group_id && (o->outer.kind != PHOTON_OUTER_FEDAVG || o->outer.lr != 1.0f))
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "a group delta passes its members' mean up unchanged: outer "
                            "optimizers (here %s at lr %g) run at the root only, so a group merge takes fedavg at lr 1",
                            photon_outer_name(o->outer.kind), (double)o->outer.lr);
    if (o->group_id && o->compress_update)
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "a group delta goes up, not down: no update format with a group id");
    return PHOTON_OK;
}

PHOTONDEF photon_result photon_merge(const char *base_path, const char *const *delta_paths, int num_deltas,
                                     const char *server_state_path, const photon_merge_options *o,
                                     photon_merge_result *res, photon_error *err) {
    char base_hash[65], state_hash[65] = "none";
    double *partial = NULL, *scratch = NULL;
    float *values = NULL, *base = NULL;
    uint64_t max_steps = 0, tokens = 0;
    size_t j, n;
    int i, k;
    photon_result r;
    memset(res, 0, sizeof *res);
    res->screen_base_loss = NAN;
    if (num_deltas < 1) return photon__fail(err, PHOTON_ERR_ARGUMENT, "no deltas to merge");
    if ((r = photon__merge_check_options(o, err)) != PHOTON_OK) return r;
    if (o->group_id && server_state_path)
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "a group merge keeps no server state (%s): the root's outer "
                            "optimizer does", server_state_path);
    if ((r = photon_checkpoint_load(&res->model, base_path, err)) != PHOTON_OK) return r;
    memcpy(base_hash, res->model.file_sha256, sizeof base_hash); /* from the loading pass */
    n = res->model.num_params;
    PHOTON_FREE(res->model.grads); /* the merge needs no gradients */
    res->model.grads = NULL;
    if (server_state_path && photon__file_exists(server_state_path)) {
        if ((r = photon_server_state_load(&res->state, &res->model.config, server_state_path, err)) != PHOTON_OK) goto fail;
        memcpy(state_hash, res->state.file_sha256, sizeof state_hash);
        if (res->state.kind != o->outer.kind) {
            r = photon__fail(err, PHOTON_ERR_MISMATCH, "%s: server state is for outer optimizer %s, this merge uses %s",
                             server_state_path, photon_outer_name(res->state.kind), photon_outer_name(o->outer.kind));
            goto fail;
        }
        if (res->state.round != res->model.round) {
            r = photon__fail(err, PHOTON_ERR_MISMATCH, "%s: server state belongs to round %llu, the base checkpoint to round %llu",
                             server_state_path, (unsigned long long)res->state.round,
                             (unsigned long long)res->model.round);
            goto fail;
        }
    } else if ((r = photon_server_state_init(&res->state, o->outer.kind, n, o->outer.tau, err)) != PHOTON_OK) {
        goto fail;
    }
    res->entries = (photon_merge_entry *)photon__calloc((size_t)num_deltas, sizeof(photon_merge_entry));
    partial = (double *)photon__calloc(n / PHOTON__MERGE_BLOCK + 1, sizeof(double));
    scratch = (double *)photon__calloc((size_t)num_deltas + 1, sizeof(double));
    values = (float *)photon__calloc(n, sizeof(float));
    memcpy(res->base_sha256, base_hash, sizeof res->base_sha256);
    if ((o->screen || o->compress_update) && (base = (float *)photon__calloc(n, sizeof(float))) != NULL)
        memcpy(base, res->model.params, n * sizeof(float));
    if (!res->entries || !partial || !scratch || !values) {
        r = photon__fail(err, PHOTON_ERR_MEMORY, "out of memory merging %d deltas", num_deltas);
        goto fail;
    }
    res->num_entries = num_deltas;
    for (i = 0; i < num_deltas; i++) {
        photon_merge_entry *e = &res->entries[i];
        e->path = delta_paths[i];
        e->norm = e->cosine = e->screen_loss = e->krum_score = e->trimmed = NAN;
        e->scale = 1.0;
    }
    {   /* reading the deltas' headers: one task per delta */
        photon__inspect_job job;
        job.res = res;
        job.base_hash = base_hash;
        job.o = o;
        photon__parallel(num_deltas, photon__inspect_task, &job);
    }
    photon__merge_refuse_repeats(res);
    for (i = 1; i < num_deltas; i++) /* insertion sort by client id: argument order does not matter */
        for (k = i; k > 0 && photon__entry_order(&res->entries[k - 1], &res->entries[k]) > 0; k--) {
            photon_merge_entry t = res->entries[k];
            res->entries[k] = res->entries[k - 1];
            res->entries[k - 1] = t;
        }
    if (!o->skip_bad && (r = photon__merge_first_refusal(res, err)) != PHOTON_OK) goto fail;
    if (o->screen) { /* the base's own loss on the sample: what each delta is judged against */
        photon_error why;
        if (!base || photon__screen_loss(&res->model, o, &res->screen_base_loss, &why) != PHOTON_OK) {
            r = photon__fail(err, base ? why.code : PHOTON_ERR_MEMORY, "screening data %s: %s", o->screen->source,
                             base ? why.message : "out of memory");
            goto fail;
        }
    }
    if (!photon__merge_measure(res, o, values, base, partial) || !photon__merge_judge(res, o, scratch)) {
        r = photon__merge_first_refusal(res, err);
        goto fail;
    }
    if ((r = photon__merge_aggregate(res, o, values, err)) != PHOTON_OK) goto fail;
    for (i = 0; i < num_deltas; i++)
        if (res->entries[i].accepted) {
            res->accepted++;
            if (tokens > UINT64_MAX - res->entries[i].info.tokens) {
                r = photon__fail(err, PHOTON_ERR_ARGUMENT, "the deltas' tokens add up past 2^64-1 (%s claims %llu)",
                                 res->entries[i].path, (unsigned long long)res->entries[i].info.tokens);
                goto fail;
            }
            tokens += res->entries[i].info.tokens;
            if (res->entries[i].info.local_steps > max_steps) max_steps = res->entries[i].info.local_steps;
        }
    if (res->model.step > UINT64_MAX - max_steps || res->model.tokens_seen > UINT64_MAX - tokens ||
        res->model.round == UINT64_MAX) {
        r = photon__fail(err, PHOTON_ERR_ARGUMENT, "%s: the global step, token or round count would pass 2^64-1 "
                         "(step %llu + %llu, tokens %llu + %llu)", base_path, (unsigned long long)res->model.step,
                         (unsigned long long)max_steps, (unsigned long long)res->model.tokens_seen,
                         (unsigned long long)tokens);
        goto fail;
    }
    if (res->accepted < (o->min_clients > 1 ? o->min_clients : 1)) {
        r = photon__fail(err, PHOTON_ERR_ARGUMENT, "only %d valid deltas of %d; the merge needs at least %d", res->accepted,
                         num_deltas, o->min_clients > 1 ? o->min_clients : 1);
        goto fail;
    }
    if (o->group_id) { /* a group delta: the aggregate goes up as it is; the base stays */
        snprintf(res->group_id, sizeof res->group_id, "%s", o->group_id);
        res->aggregate = values, values = NULL;
        res->max_local_steps = max_steps, res->tokens = tokens;
    } else {
        photon__merge_outer_step(res, values, &o->outer);
    }
    for (j = 0; j < n; j++)
        if (!photon__is_finite(res->model.params[j])) {
            r = photon__fail(err, PHOTON_ERR_NUMERIC, "the outer step produced a non-finite parameter at index %zu", j);
            goto fail;
        }
    if (o->compress_update && (r = photon__merge_compress_update(res, o, base, values, err)) != PHOTON_OK) goto fail;
    res->model.step += max_steps; /* every client follows one schedule */
    res->model.tokens_seen += tokens;
    res->model.round += 1;
    res->state.round = res->model.round;
    for (i = 0; i < num_deltas; i++) /* a refused delta is named in the audit trail by its hash, if it has one */
        if (!res->entries[i].accepted && strcmp(res->entries[i].sha256, "unreadable") == 0 &&
            photon_sha256_file(res->entries[i].path, res->entries[i].sha256, NULL) != PHOTON_OK)
            snprintf(res->entries[i].sha256, sizeof res->entries[i].sha256, "unreadable");
    if ((r = photon__merge_audit(res, base_hash, state_hash, o, err)) != PHOTON_OK ||
        (r = photon__merge_carry_provenance(res, base_path, err)) != PHOTON_OK)
        goto fail;
fail:
    PHOTON_FREE(partial);
    PHOTON_FREE(scratch);
    PHOTON_FREE(values);
    PHOTON_FREE(base);
    return r;
}

PHOTONDEF void photon_merge_result_free(photon_merge_result *res) {
    int i;
    for (i = 0; i < res->num_meta; i++) {
        PHOTON_FREE(res->meta_keys[i]);
        PHOTON_FREE(res->meta_values[i]);
    }
    PHOTON_FREE(res->meta_keys);
    PHOTON_FREE(res->meta_values);
    for (i = 0; i < res->num_entries; i++) PHOTON_FREE(res->entries[i].absent);
    PHOTON_FREE(res->entries);
    PHOTON_FREE(res->update_codes);
    PHOTON_FREE(res->update_scales);
    PHOTON_FREE(res->aggregate);
    photon_server_state_free(&res->state);
    photon_model_free(&res->model);
    memset(res, 0, sizeof *res);
}

/* A group delta: the aggregate in f32 against the base, with the delta's
   header (the group's id, round, counts, the token-weighted mean of its
   members' losses, photon.members) and the group merge's audit trail. */
static photon_result photon__group_delta_write(const photon_merge_result *res, const char *path, photon_error *err) {
    photon__coded coded;
    photon__meta meta;
    const char **keys;
    const char **values;
    const photon_merge_entry *first = NULL;
    double loss = 0.0;
    char loss_text[32];
    int i, k, n = 0;
    photon_result r;
    for (i = 0; i < res->num_entries; i++)
        if (res->entries[i].accepted) loss += (double)res->entries[i].info.loss * (double)res->entries[i].info.tokens;
    snprintf(loss_text, sizeof loss_text, "%.9g", (double)(float)(loss / (double)res->tokens));
    photon__meta_header(&meta, "delta", &res->model.config);
    photon__meta_u64(&meta, "photon.round", res->model.round);
    photon__meta_str(&meta, "photon.client", res->group_id);
    photon__meta_u64(&meta, "photon.local_steps", res->max_local_steps);
    photon__meta_u64(&meta, "photon.tokens", res->tokens);
    photon__meta_str(&meta, "photon.loss", loss_text);
    photon__meta_u64(&meta, "photon.members", (uint64_t)res->accepted);
    for (i = 0; i < res->num_entries && !first; i++) /* its members all leave out the same tensors (if any) */
        if (res->entries[i].accepted && res->entries[i].absent) first = &res->entries[i];
    if (first) photon__meta_str(&meta, "photon.personal", first->info.personal);
    keys = (const char **)PHOTON_MALLOC((size_t)(meta.n + res->num_meta) * sizeof(char *));
    values = (const char **)PHOTON_MALLOC((size_t)(meta.n + res->num_meta) * sizeof(char *));
    if (!keys || !values || !photon__coded_init_masked(&coded, &res->model, PHOTON_DELTA_F32, first ? first->absent : NULL)) {
        PHOTON_FREE(keys);
        PHOTON_FREE(values);
        return photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", path);
    }
    for (k = 0; k < meta.n; k++) keys[n] = meta.keys[k], values[n++] = meta.values[k];
    for (k = 0; k < res->num_meta; k++) /* the audit trail; photon.base_sha256 is the delta's own base */
        keys[n] = res->meta_keys[k], values[n++] = res->meta_values[k];
    photon__coded_fill(&coded, &res->model, PHOTON_DELTA_F32, res->aggregate, NULL, NULL);
    r = photon_st_write(path, coded.entries, coded.num_entries, keys, values, n, err);
    photon__coded_free(&coded);
    PHOTON_FREE(keys);
    PHOTON_FREE(values);
    return r;
}

PHOTONDEF photon_result photon_merge_save(const photon_merge_result *res, const char *path, photon_error *err) {
    if (res->aggregate) return photon__group_delta_write(res, path, err);
    return photon__checkpoint_write(&res->model, path, (const char *const *)res->meta_keys,
                                    (const char *const *)res->meta_values, res->num_meta, err);
}

PHOTONDEF photon_result photon_merge_verify(const photon_merge_result *res, const char *path, int *matches,
                                            photon_error *err) {
    char tmp[4096 + 32];
    photon_result r;
    *matches = 0;
#ifdef PHOTON__POSIX /* in the temporary directory: an auditor may check a copy it cannot write beside */
    {
        const char *dir = getenv("TMPDIR");
        snprintf(tmp, sizeof tmp, "%.2000s/photon-%ld-%.1900s.verify", dir && *dir ? dir : "/tmp", (long)getpid(),
                 photon__base_name(path));
    }
#else
    snprintf(tmp, sizeof tmp, "%.4096s.verify", path);
#endif
    if ((r = photon_merge_save(res, tmp, err)) == PHOTON_OK) r = photon_files_equal(tmp, path, matches, err);
    remove(tmp);
    return r;
}

/* ---- the downlink: the global update as a file ---- */

/* Bytes of codes and count of scales of a whole parameter vector in f. */
static void photon__coded_size(const photon_model *m, photon_delta_format f, size_t *codes, size_t *scales) {
    int i;
    *codes = *scales = 0;
    for (i = 0; i < m->num_tensors; i++) {
        *codes += photon_delta_code_bytes(f, m->tensors[i].size);
        *scales += photon_delta_scale_count(f, m->tensors[i].size);
    }
}

PHOTONDEF photon_result photon_update_save(const photon_merge_result *res, const char *next_sha256, const char *path,
                                           photon_error *err) {
    const photon_model *m = &res->model;
    photon__coded c;
    photon__meta meta;
    const char **k, **v;
    char *names;
    size_t codes, scales;
    int i, n = 0, total = 2 * res->num_meta + 24;
    photon_result r;
    if (!res->update_codes)
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "%s: this merge made no compressed update", path);
    if (!photon__valid_sha256(next_sha256))
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "%s: next checkpoint hash '%.70s' is not 64 hex digits", path,
                            next_sha256);
    k = (const char **)photon__calloc((size_t)total, sizeof(char *));
    v = (const char **)photon__calloc((size_t)total, sizeof(char *));
    names = (char *)photon__calloc((size_t)total, 48);
    if (!k || !v || !names || !photon__coded_init(&c, m, res->update_format)) {
        PHOTON_FREE((void *)k);
        PHOTON_FREE((void *)v);
        PHOTON_FREE(names);
        return photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", path);
    }
    photon__coded_size(m, res->update_format, &codes, &scales);
    memcpy(c.codes, res->update_codes, codes);
    memcpy(c.scales, res->update_scales, scales * sizeof(float));
    photon__meta_header(&meta, "update", &m->config);
    photon__meta_str(&meta, "photon.base_sha256", res->base_sha256);
    photon__meta_str(&meta, "photon.next_sha256", next_sha256);
    if (res->update_format != PHOTON_DELTA_F32)
        photon__meta_str(&meta, "photon.delta_format", photon_delta_format_name(res->update_format));
    if (photon__format_is_int(res->update_format)) photon__meta_u64(&meta, "photon.quant_block", PHOTON_QUANT_BLOCK);
    photon__meta_u64(&meta, "photon.next.step", m->step);
    photon__meta_u64(&meta, "photon.next.tokens_seen", m->tokens_seen);
    photon__meta_u64(&meta, "photon.next.seed", m->seed);
    photon__meta_u64(&meta, "photon.next.round", m->round);
    for (i = 0; i < meta.n; i++) k[n] = meta.keys[i], v[n++] = meta.values[i];
    for (i = 0; i < res->num_meta; i++) { /* the next checkpoint's audit trail, in order */
        snprintf(names + 48 * (size_t)(2 * i), 48, "photon.next.meta.%d.key", i);
        snprintf(names + 48 * (size_t)(2 * i + 1), 48, "photon.next.meta.%d.value", i);
        k[n] = names + 48 * (size_t)(2 * i), v[n++] = res->meta_keys[i];
        k[n] = names + 48 * (size_t)(2 * i + 1), v[n++] = res->meta_values[i];
    }
    r = photon_st_write(path, c.entries, c.num_entries, k, v, n, err);
    PHOTON_FREE((void *)k);
    PHOTON_FREE((void *)v);
    PHOTON_FREE(names);
    photon__coded_free(&c);
    return r;
}

/* The next checkpoint's counters and audit trail, from an update's header. */
static photon_result photon__update_next(photon_st_file *st, photon_model *m, char ***keys, char ***values, int *count,
                                         photon_error *err) {
    photon_result r;
    int i;
    *keys = *values = NULL;
    *count = 0;
    if ((r = photon__parse_u64(st, "photon.next.step", &m->step, err)) != PHOTON_OK ||
        (r = photon__parse_u64(st, "photon.next.tokens_seen", &m->tokens_seen, err)) != PHOTON_OK ||
        (r = photon__parse_u64(st, "photon.next.seed", &m->seed, err)) != PHOTON_OK ||
        (r = photon__parse_u64(st, "photon.next.round", &m->round, err)) != PHOTON_OK)
        return r;
    while (1) {
        char key[48];
        snprintf(key, sizeof key, "photon.next.meta.%d.key", *count);
        if (!photon_st_meta(st, key)) break;
        (*count)++;
    }
    *keys = (char **)photon__calloc((size_t)*count + 1, sizeof(char *));
    *values = (char **)photon__calloc((size_t)*count + 1, sizeof(char *));
    if (!*keys || !*values) return photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", st->path);
    for (i = 0; i < *count; i++) {
        char key[48];
        const char *kv, *vv;
        snprintf(key, sizeof key, "photon.next.meta.%d.key", i);
        kv = photon_st_meta(st, key);
        snprintf(key, sizeof key, "photon.next.meta.%d.value", i);
        vv = photon_st_meta(st, key);
        if (!vv) return photon__fail(err, PHOTON_ERR_FORMAT, "%s: __metadata__ lacks %s", st->path, key);
        (*keys)[i] = (char *)kv, (*values)[i] = (char *)vv; /* owned by st */
    }
    return PHOTON_OK;
}

PHOTONDEF photon_result photon_update_apply(const char *base_path, const char *update_path, const char *out_path,
                                            photon_error *err) {
    photon_model m;
    photon_st_file st;
    photon_config c;
    photon_delta_format format;
    float *update = NULL;
    char **keys = NULL, **values = NULL, hash[65], tmp[4096 + 16];
    const char *want_base, *want_next;
    int count = 0;
    size_t j;
    photon_result r = photon_checkpoint_load(&m, base_path, err);
    if (r != PHOTON_OK) return r;
    if ((r = photon_st_open(&st, update_path, err)) != PHOTON_OK) {
        photon_model_free(&m);
        return r;
    }
    want_base = photon_st_meta(&st, "photon.base_sha256");
    want_next = photon_st_meta(&st, "photon.next_sha256");
    if ((r = photon__check_kind(&st, "update", err)) != PHOTON_OK || (r = photon__read_config(&st, &c, err)) != PHOTON_OK ||
        (r = photon__read_format(&st, update_path, &format, err)) != PHOTON_OK)
        goto done;
    if (memcmp(&c, &m.config, sizeof c) != 0) {
        r = photon__fail(err, PHOTON_ERR_MISMATCH, "%s: update is for another model config than %s", update_path, base_path);
        goto done;
    }
    if (!want_base || !want_next || !photon__valid_sha256(want_base) || !photon__valid_sha256(want_next)) {
        r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: __metadata__ photon.base_sha256 or photon.next_sha256 is missing or "
                         "not a SHA-256", update_path);
        goto done;
    }
    if (strcmp(want_base, m.file_sha256) != 0) {
        r = photon__fail(err, PHOTON_ERR_MISMATCH, "%s: stale: the update is for base %.12s..., %s is %.12s... (fetch the "
                         "full checkpoint)", update_path, want_base, base_path, m.file_sha256);
        goto done;
    }
    if (!(update = (float *)photon__calloc(m.num_params, sizeof(float)))) {
        r = photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", update_path);
        goto done;
    }
    r = format == PHOTON_DELTA_F32 ? photon__read_params(&st, &m, update, NULL, err)
                                   : photon__read_coded(&st, &m, format, NULL, update, NULL, err);
    if (r == PHOTON_OK) r = photon__update_next(&st, &m, &keys, &values, &count, err);
    if (r != PHOTON_OK) goto done;
    for (j = 0; j < m.num_params; j++) m.params[j] += update[j];
    snprintf(tmp, sizeof tmp, "%.4096s.apply", out_path); /* checked before it takes out_path's place */
    if ((r = photon__checkpoint_write(&m, tmp, (const char *const *)keys, (const char *const *)values, count, err)) ==
            PHOTON_OK &&
        (r = photon_sha256_file(tmp, hash, err)) == PHOTON_OK) {
        if (strcmp(hash, want_next) != 0)
            r = photon__fail(err, PHOTON_ERR_MISMATCH, "%s: base + update hashes to %.12s..., not the %.12s... the update "
                             "names: nothing written", update_path, hash, want_next);
        else if (rename(tmp, out_path) != 0)
            r = photon__fail(err, PHOTON_ERR_IO, "%s: cannot rename into place: %s", out_path, strerror(errno));
    }
    remove(tmp);
done:
    PHOTON_FREE(update);
    PHOTON_FREE(keys);
    PHOTON_FREE(values);
    photon_st_close(&st);
    photon_model_free(&m);
    return r;
}

/* ======================================================================= */
/* >>machinery: APPENDIX. What the algorithm above runs on: threads, the  */
/* matrix product, vectorised maths, random numbers, files, JSON, UTF-8    */
/* and SHA-256. None of it changes what the algorithm computes; all of it  */
/* keeps results independent of the thread count.                        */
/* ======================================================================= */

/* ----------------------------------------------------------------------- */
/* >>threads: a deterministic thread pool                                  */
/* ----------------------------------------------------------------------- */
/* Every heavy loop is cut into tasks whose results do not depend on which
   thread runs them or how many threads there are: a task owns a fixed part of
   the output and computes it in a fixed order. So the same inputs give the
   same bits on 1 thread or 64. */

#define PHOTON__MAX_THREADS 64

#ifdef PHOTON__HAVE_THREADS
typedef struct photon__pool {
    pthread_mutex_t lock;
    pthread_cond_t start, done;
    pthread_t workers[PHOTON__MAX_THREADS];
    int num_threads;      /* including the caller */
    int generation;       /* bumped for each parallel region */
    int next_task, num_tasks, active;
    int want;             /* workers with a lower index take part */
    photon__task_fn fn;
    void *ctx;
} photon__pool;

static photon__pool photon__the_pool;
static pthread_mutex_t photon__region_lock = PTHREAD_MUTEX_INITIALIZER;

/* Claims tasks until none are left. */
static void photon__pool_drain(photon__pool *p, int thread) {
    for (;;) {
        int task;
        pthread_mutex_lock(&p->lock);
        task = p->next_task < p->num_tasks ? p->next_task++ : -1;
        pthread_mutex_unlock(&p->lock);
        if (task < 0) return;
        p->fn(p->ctx, task, thread);
    }
}

static void *photon__pool_worker(void *arg) {
    photon__pool *p = &photon__the_pool;
    int thread = (int)(size_t)arg, seen = 0;
    for (;;) {
        pthread_mutex_lock(&p->lock);
        while (p->generation == seen) pthread_cond_wait(&p->start, &p->lock);
        seen = p->generation;
        pthread_mutex_unlock(&p->lock);
        if (thread < p->want) photon__pool_drain(p, thread);
        pthread_mutex_lock(&p->lock);
        if (--p->active == 0) pthread_cond_signal(&p->done);
        pthread_mutex_unlock(&p->lock);
    }
    return NULL;
}
#endif

static int photon__requested_threads; /* 0: one per core */

PHOTONDEF void photon_set_threads(int n) { photon__requested_threads = n < 0 ? 0 : n; }

PHOTONDEF int photon_threads(void) {
#ifdef PHOTON__HAVE_THREADS
    int n = photon__requested_threads;
    if (n == 0) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > PHOTON__MAX_THREADS ? PHOTON__MAX_THREADS : n;
#else
    return 1;
#endif
}

/* Runs fn(ctx, task, thread) for task = 0 .. num_tasks-1 on the pool. */
static void photon__parallel(int num_tasks, photon__task_fn fn, void *ctx) {
#ifdef PHOTON__HAVE_THREADS
    photon__pool *p = &photon__the_pool;
    int want = photon_threads();
    /* one region at a time, also when serial: thread 0's scratch is shared */
    pthread_mutex_lock(&photon__region_lock);
    if (num_tasks <= 1 || want <= 1) {
        int t;
        for (t = 0; t < num_tasks; t++) fn(ctx, t, 0);
        pthread_mutex_unlock(&photon__region_lock);
        return;
    }
    if (p->num_threads == 0) {
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->start, NULL);
        pthread_cond_init(&p->done, NULL);
        p->num_threads = 1;
    }
    while (p->num_threads < want) { /* workers are started once and kept */
        if (pthread_create(&p->workers[p->num_threads], NULL, photon__pool_worker, (void *)(size_t)p->num_threads) != 0)
            break;
        p->num_threads++;
    }
    pthread_mutex_lock(&p->lock);
    p->fn = fn;
    p->ctx = ctx;
    p->next_task = 0;
    p->num_tasks = num_tasks;
    p->want = want;
    p->active = p->num_threads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->lock);
    photon__pool_drain(p, 0);
    pthread_mutex_lock(&p->lock);
    while (p->active > 0) pthread_cond_wait(&p->done, &p->lock);
    pthread_mutex_unlock(&p->lock);
    pthread_mutex_unlock(&photon__region_lock);
#else
    int t;
    for (t = 0; t < num_tasks; t++) fn(ctx, t, 0);
#endif
}

/* Per-thread scratch memory, grown on demand and kept (packing buffers,
   attention rows). Returns NULL if it cannot grow. */
static float *photon__scratch_buf[PHOTON__MAX_THREADS];
static size_t photon__scratch_size[PHOTON__MAX_THREADS];

static float *photon__scratch(int thread, size_t floats) {
    if (photon__scratch_size[thread] < floats) {
        PHOTON_FREE(photon__scratch_buf[thread]);
        photon__scratch_buf[thread] = (float *)PHOTON_MALLOC(floats * sizeof(float) + 64);
        photon__scratch_size[thread] = photon__scratch_buf[thread] ? floats : 0;
    }
    return photon__scratch_buf[thread];
}

/* Splits n items into tasks of a multiple of `grain` items. Loops that
   work in chunks (GELU) see the same chunk boundaries on any number of
   threads, so their vector and scalar tails fall on the same elements. */
typedef struct photon__range_job {
    size_t n, per_task;
    void (*body)(void *ctx, size_t begin, size_t end, int thread);
    void *ctx;
} photon__range_job;

static void photon__range_task(void *ctx, int task, int thread) {
    photon__range_job *j = (photon__range_job *)ctx;
    size_t begin = (size_t)task * j->per_task, end = begin + j->per_task < j->n ? begin + j->per_task : j->n;
    j->body(j->ctx, begin, end, thread);
}

static void photon__parallel_range(size_t n, size_t grain, void (*body)(void *, size_t, size_t, int), void *ctx) {
    photon__range_job j;
    size_t tasks = (n + grain - 1) / grain, max_tasks = 4 * (size_t)photon_threads();
    if (tasks > max_tasks) tasks = max_tasks;
    if (tasks < 1) tasks = 1;
    j.n = n;
    j.per_task = (n + tasks - 1) / tasks;
    j.per_task = (j.per_task + grain - 1) / grain * grain; /* ranges start at multiples of grain, whatever the threads */
    j.body = body;
    j.ctx = ctx;
    photon__parallel((int)((n + j.per_task - 1) / (j.per_task ? j.per_task : 1)), photon__range_task, &j);
}

/* ----------------------------------------------------------------------- */
/* >>gemm: the matrix product                                              */
/* ----------------------------------------------------------------------- */
/* The matrix product C (M,N) (+)= op(A) (M,K) op(B) (K,N).
   Blocked as BLIS does: a KC x NC panel of op(B) and an MC x KC panel of
   op(A) are packed into contiguous slivers of NR columns and MR rows, and a
   register-tiled micro-kernel computes each MR x NR tile of C from them. The
   packing reads A and B in either layout, so no transpose is materialised:
   y = x W, dx = dy W^T and dW = x^T dy are all this one routine. Tasks are
   MC x NC tiles of C, each computed by one thread over the whole K in a
   fixed order. */

#if defined(__AVX512F__) && !defined(PHOTON_NO_SIMD)
#define PHOTON__MR 8
#define PHOTON__NR 32
#elif defined(__AVX2__) && defined(__FMA__) && !defined(PHOTON_NO_SIMD)
#define PHOTON__MR 6
#define PHOTON__NR 16
#else
#define PHOTON__MR 4
#define PHOTON__NR 16
#endif
#define PHOTON__KC 256
#define PHOTON__MC (16 * PHOTON__MR)
#define PHOTON__NC 512

/* c[i*ldc + j] += sum_k a[k*MR + i] * b[k*NR + j] over one MR x NR tile. */
static void photon__kernel(int kc, const float *a, const float *b, float *c, int ldc) {
#if defined(__AVX512F__) && !defined(PHOTON_NO_SIMD)
    __m512 acc[PHOTON__MR][2];
    int i, k;
    for (i = 0; i < PHOTON__MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (k = 0; k < kc; k++) {
        __m512 b0 = _mm512_loadu_ps(b + k * PHOTON__NR), b1 = _mm512_loadu_ps(b + k * PHOTON__NR + 16);
        for (i = 0; i < PHOTON__MR; i++) {
            __m512 ai = _mm512_set1_ps(a[k * PHOTON__MR + i]);
            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
        }
    }
    for (i = 0; i < PHOTON__MR; i++) {
        _mm512_storeu_ps(c + i * ldc, _mm512_add_ps(_mm512_loadu_ps(c + i * ldc), acc[i][0]));
        _mm512_storeu_ps(c + i * ldc + 16, _mm512_add_ps(_mm512_loadu_ps(c + i * ldc + 16), acc[i][1]));
    }
#elif defined(__AVX2__) && defined(__FMA__) && !defined(PHOTON_NO_SIMD)
    __m256 acc[PHOTON__MR][2];
    int i, k;
    for (i = 0; i < PHOTON__MR; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (k = 0; k < kc; k++) {
        __m256 b0 = _mm256_loadu_ps(b + k * PHOTON__NR), b1 = _mm256_loadu_ps(b + k * PHOTON__NR + 8);
        for (i = 0; i < PHOTON__MR; i++) {
            __m256 ai = _mm256_set1_ps(a[k * PHOTON__MR + i]);
            acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
        }
    }
    for (i = 0; i < PHOTON__MR; i++) {
        _mm256_storeu_ps(c + i * ldc, _mm256_add_ps(_mm256_loadu_ps(c + i * ldc), acc[i][0]));
        _mm256_storeu_ps(c + i * ldc + 8, _mm256_add_ps(_mm256_loadu_ps(c + i * ldc + 8), acc[i][1]));
    }
#else
    float acc[PHOTON__MR][PHOTON__NR];
    int i, j, k;
    memset(acc, 0, sizeof acc);
    for (k = 0; k < kc; k++)
        for (i = 0; i < PHOTON__MR; i++)
            for (j = 0; j < PHOTON__NR; j++) acc[i][j] += a[k * PHOTON__MR + i] * b[k * PHOTON__NR + j];
    for (i = 0; i < PHOTON__MR; i++)
        for (j = 0; j < PHOTON__NR; j++) c[i * ldc + j] += acc[i][j];
#endif
}

typedef struct photon__gemm_job {
    int M, N, K, lda, ldb, ldc, trans_a, trans_b;
    int tiles_n, groups_n, group_size; /* a task: one block of mc rows, a group of NC blocks of columns */
    int mc;                            /* rows per block: MC, or all of a short M (packed once, not twice) */
    const float *A, *B;
    float *C;
} photon__gemm_job;

/* Packs an r x kc block of a matrix into a sliver of `width` lanes:
   dst[k*width + l] = element (lane l, step k), lanes past r are zero. The
   source holds lane l, step k at src[l*lane_stride + k*step_stride]; the
   loops run along whichever stride is 1, so reads stay contiguous. */
static void photon__pack(float *dst, int width, int r, int kc, const float *src, size_t lane_stride,
                         size_t step_stride) {
    int l, k;
    if (r < width) memset(dst, 0, (size_t)width * kc * sizeof(float));
    if (step_stride == 1) {
        for (l = 0; l < r; l++)
            for (k = 0; k < kc; k++) dst[k * width + l] = src[l * lane_stride + k];
    } else if (lane_stride == 1 && r == width) {
        for (k = 0; k < kc; k++) memcpy(dst + k * width, src + k * step_stride, (size_t)width * sizeof(float));
    } else {
        for (k = 0; k < kc; k++)
            for (l = 0; l < r; l++) dst[k * width + l] = src[l * lane_stride + k * step_stride];
    }
}

/* op(A) rows i0 .. i0+mc, steps p0 .. p0+kc, in slivers of MR rows. */
static void photon__pack_a(const photon__gemm_job *g, int i0, int mc, int p0, int kc, float *dst) {
    int s;
    for (s = 0; s < mc; s += PHOTON__MR) {
        int r = mc - s < PHOTON__MR ? mc - s : PHOTON__MR;
        size_t row = (size_t)(i0 + s);
        if (g->trans_a) photon__pack(dst, PHOTON__MR, r, kc, g->A + (size_t)p0 * g->lda + row, 1, (size_t)g->lda);
        else photon__pack(dst, PHOTON__MR, r, kc, g->A + row * g->lda + p0, (size_t)g->lda, 1);
        dst += (size_t)PHOTON__MR * kc;
    }
}

/* op(B) steps p0 .. p0+kc, columns j0 .. j0+nc, in slivers of NR columns. */
static void photon__pack_b(const photon__gemm_job *g, int j0, int nc, int p0, int kc, float *dst) {
    int s;
    for (s = 0; s < nc; s += PHOTON__NR) {
        int r = nc - s < PHOTON__NR ? nc - s : PHOTON__NR;
        size_t col = (size_t)(j0 + s);
        if (g->trans_b) photon__pack(dst, PHOTON__NR, r, kc, g->B + col * g->ldb + p0, (size_t)g->ldb, 1);
        else photon__pack(dst, PHOTON__NR, r, kc, g->B + (size_t)p0 * g->ldb + col, 1, (size_t)g->ldb);
        dst += (size_t)PHOTON__NR * kc;
    }
}

/* One MC x NC block of C: the kernels over packed slivers, edge tiles through
   a small buffer so that only the part inside C is added. */
static void photon__gemm_block(const photon__gemm_job *g, int i0, int mc, int j0, int nc, int kc, const float *pa,
                               const float *pb, float *edge) {
    int ir, jr, i, j;
    for (jr = 0; jr < nc; jr += PHOTON__NR)
        for (ir = 0; ir < mc; ir += PHOTON__MR) {
            const float *a = pa + (size_t)ir * kc, *b = pb + (size_t)jr * kc;
            float *c = g->C + (size_t)(i0 + ir) * g->ldc + j0 + jr;
            if (ir + PHOTON__MR <= mc && jr + PHOTON__NR <= nc) {
                photon__kernel(kc, a, b, c, g->ldc);
            } else {
                int rows = mc - ir < PHOTON__MR ? mc - ir : PHOTON__MR, cols = nc - jr < PHOTON__NR ? nc - jr : PHOTON__NR;
                memset(edge, 0, PHOTON__MR * PHOTON__NR * sizeof(float));
                photon__kernel(kc, a, b, edge, PHOTON__NR);
                for (i = 0; i < rows; i++)
                    for (j = 0; j < cols; j++) c[(size_t)i * g->ldc + j] += edge[i * PHOTON__NR + j];
            }
        }
}

/* A task packs its rows of op(A) once per KC step and reuses them for every
   column block of its group; every element of C still sums over K in the
   same order, whatever the grouping. */
static void photon__gemm_task(void *ctx, int task, int thread) {
    const photon__gemm_job *g = (const photon__gemm_job *)ctx;
    int i0 = (task / g->groups_n) * g->mc, first = (task % g->groups_n) * g->group_size;
    int last = first + g->group_size < g->tiles_n ? first + g->group_size : g->tiles_n;
    int mc = g->M - i0 < g->mc ? g->M - i0 : g->mc, p0, t;
    float *buf = photon__scratch(thread, (size_t)PHOTON__KC * (2 * PHOTON__MC + PHOTON__NC) + PHOTON__MR * PHOTON__NR);
    float *pa = buf, *pb = buf + (size_t)PHOTON__KC * 2 * PHOTON__MC, *edge = pb + (size_t)PHOTON__KC * PHOTON__NC;
    PHOTON_ASSERT(buf != NULL);
    for (p0 = 0; p0 < g->K; p0 += PHOTON__KC) {
        int kc = g->K - p0 < PHOTON__KC ? g->K - p0 : PHOTON__KC;
        photon__pack_a(g, i0, mc, p0, kc, pa);
        for (t = first; t < last; t++) {
            int j0 = t * PHOTON__NC, nc = g->N - j0 < PHOTON__NC ? g->N - j0 : PHOTON__NC;
            photon__pack_b(g, j0, nc, p0, kc, pb);
            photon__gemm_block(g, i0, mc, j0, nc, kc, pa, pb, edge);
        }
    }
}

/* C (+)= op(A) op(B); with accumulate 0, C is overwritten. */
static void photon__gemm(int M, int N, int K, const float *A, int lda, int trans_a, const float *B, int ldb,
                         int trans_b, float *C, int ldc, int accumulate) {
    photon__gemm_job g;
    int i;
    if (!accumulate)
        for (i = 0; i < M; i++) memset(C + (size_t)i * ldc, 0, (size_t)N * sizeof(float));
    if (M == 0 || N == 0 || K == 0) return;
    g.M = M, g.N = N, g.K = K, g.A = A, g.B = B, g.C = C, g.lda = lda, g.ldb = ldb, g.ldc = ldc;
    g.trans_a = trans_a, g.trans_b = trans_b;
    g.tiles_n = (N + PHOTON__NC - 1) / PHOTON__NC;
    {   /* enough tasks to keep every thread busy, no more: fewer repacks of A */
        int tiles_m, want = 3 * photon_threads();
        g.mc = M <= 2 * PHOTON__MC && (N + PHOTON__NC - 1) / PHOTON__NC >= want ? (M + PHOTON__MR - 1) / PHOTON__MR * PHOTON__MR
                                                                                 : PHOTON__MC;
        tiles_m = (M + g.mc - 1) / g.mc;
        g.groups_n = tiles_m >= want ? 1 : (want + tiles_m - 1) / tiles_m;
        if (g.groups_n > g.tiles_n) g.groups_n = g.tiles_n;
        g.group_size = (g.tiles_n + g.groups_n - 1) / g.groups_n;
        g.groups_n = (g.tiles_n + g.group_size - 1) / g.group_size;
        photon__parallel(tiles_m * g.groups_n, photon__gemm_task, &g);
    }
}

PHOTONDEF void photon_gemm(int M, int N, int K, const float *A, int lda, int trans_a, const float *B, int ldb,
                           int trans_b, float *C, int ldc, int accumulate) {
    photon__gemm(M, N, K, A, lda, trans_a, B, ldb, trans_b, C, ldc, accumulate);
}

/* ----------------------------------------------------------------------- */
/* >>vmath: vectorised exp, tanh, sum and max                              */
/* ----------------------------------------------------------------------- */
/* e^x in float, written so that loops over it vectorise: x = n ln2 + r with
   |r| <= ln2/2, e^r by its Taylor series to r^7 (truncation below 1e-8
   relative), 2^n through the exponent bits. Inputs are clamped to [-87, 88],
   where e^x stays a normal float; NaN is returned as it is (the vector paths
   clamp it, as MINPS/MAXPS do, so no lane converts NaN to an integer). */
static float photon__expf(float x) {
    float n, r, p, scale;
    uint32_t bits;
    if (x != x) return x; /* NaN stays NaN (and never reaches the float-to-int conversion below) */
    x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
    n = floorf(x * 1.44269504088896341f + 0.5f);
    r = x - n * 0.693145751953125f;     /* ln 2, high bits: n * this is exact */
    r = r - n * 1.428606765330187e-06f; /* ln 2, the rest */
    p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    bits = (uint32_t)((int32_t)n + 127) << 23;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* The sum and the maximum of n floats in 16 interleaved lanes, then the
   lanes in order: a fixed order that vectorises without -ffast-math. */
static float photon__sum(const float *x, size_t n) {
    float lane[16] = {0}, total = 0.0f;
    size_t i = 0;
    int k;
    for (; i + 16 <= n; i += 16)
        for (k = 0; k < 16; k++) lane[k] += x[i + k];
    for (k = 0; i < n; i++, k++) lane[k] += x[i];
    for (k = 0; k < 16; k++) total += lane[k];
    return total;
}

static float photon__max(const float *x, size_t n) {
    float lane[16], best = -FLT_MAX;
    size_t i = 0;
    int k;
    for (k = 0; k < 16; k++) lane[k] = -FLT_MAX;
    for (; i + 16 <= n; i += 16)
        for (k = 0; k < 16; k++) lane[k] = x[i + k] > lane[k] ? x[i + k] : lane[k];
    for (k = 0; i < n; i++, k++) lane[k] = x[i] > lane[k] ? x[i] : lane[k];
    for (k = 0; k < 16; k++) best = lane[k] > best ? lane[k] : best;
    return best;
}

/* dst[i] = e^(src[i] - shift) for n values (dst may be src): the same
   steps as photon__expf, 16 or 8 lanes at a time where the CPU has them. */
static void photon__exp_shifted(float *dst, const float *src, float shift, size_t n) {
    size_t i = 0;
#if defined(__AVX512F__) && !defined(PHOTON_NO_SIMD)
    const __m512 lo = _mm512_set1_ps(-87.0f), hi = _mm512_set1_ps(88.0f), sh = _mm512_set1_ps(shift);
    for (; i + 16 <= n; i += 16) {
        __m512 x = _mm512_max_ps(_mm512_min_ps(_mm512_sub_ps(_mm512_loadu_ps(src + i), sh), hi), lo);
        __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693145751953125f), x), p = _mm512_set1_ps(1.0f / 5040.0f);
        __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(k), _mm512_set1_epi32(127)), 23);
        r = _mm512_fnmadd_ps(k, _mm512_set1_ps(1.428606765330187e-06f), r);
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
        _mm512_storeu_ps(dst + i, _mm512_mul_ps(p, _mm512_castsi512_ps(e)));
    }
#elif defined(__AVX2__) && defined(__FMA__) && !defined(PHOTON_NO_SIMD)
    const __m256 lo = _mm256_set1_ps(-87.0f), hi = _mm256_set1_ps(88.0f), sh = _mm256_set1_ps(shift);
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_max_ps(_mm256_min_ps(_mm256_sub_ps(_mm256_loadu_ps(src + i), sh), hi), lo);
        __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693145751953125f), x), p = _mm256_set1_ps(1.0f / 5040.0f);
        __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
        r = _mm256_fnmadd_ps(k, _mm256_set1_ps(1.428606765330187e-06f), r);
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
        _mm256_storeu_ps(dst + i, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
    }
#endif
    for (; i < n; i++) dst[i] = photon__expf(src[i] - shift);
}

/* tanh(u) = 1 - 2 / (e^{2u} + 1) for n values, in chunks: the arithmetic
   loops vectorise, the exponentials go through photon__exp_shifted. */
static void photon__tanh_array(float *dst, const float *u, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) dst[i] = 2.0f * u[i];
    photon__exp_shifted(dst, dst, 0.0f, n);
    for (i = 0; i < n; i++) dst[i] = 1.0f - 2.0f / (dst[i] + 1.0f);
}

/* ----------------------------------------------------------------------- */
/* >>random: random numbers                                                */
/* ----------------------------------------------------------------------- */

PHOTONDEF uint64_t photon_rand_u64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

PHOTONDEF float photon_rand_uniform(uint64_t *state) {
    return (float)(photon_rand_u64(state) >> 40) / 16777216.0f;
}

/* Standard normal by Box-Muller, computed in double. */
static double photon__rand_normal(uint64_t *state) {
    double u1 = ((double)(photon_rand_u64(state) >> 11) + 1.0) / 9007199254740993.0; /* (0,1] */
    double u2 = (double)(photon_rand_u64(state) >> 11) / 9007199254740992.0;         /* [0,1) */
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* ----------------------------------------------------------------------- */
/* >>files: reading whole files, atomic writes, groups of outputs          */
/* ----------------------------------------------------------------------- */
/* Every output is written to PATH.tmp (PATH.PID.tmp on POSIX, so that two
   writers do not share it), flushed to disk, then renamed over PATH, so a
   reader sees the old file or the whole new one, never a part. A group of
   outputs goes to PATH.PID.pending each, then is renamed in order; a
   process killed on the way leaves those names behind, with its pid in
   them, so that a later run can tell a dead writer's files from a live
   one's (photon_outputs_cleanup) and finish what it committed (>>checkpoint,
   photon_client_state_reconcile). */

static photon_result photon__atomic_open(photon__atomic *a, const char *path, photon_error *err) {
    size_t n = strlen(path) + 32;
    a->path = path;
    a->f = NULL;
    a->tmp = (char *)PHOTON_MALLOC(n);
    if (!a->tmp) return photon__fail(err, PHOTON_ERR_MEMORY, "%s: cannot allocate a file name", path);
#ifdef PHOTON__POSIX
    {   /* a rename would replace a device such as /dev/null with a file */
        struct stat info;
        if (stat(path, &info) == 0 && !S_ISREG(info.st_mode)) {
            PHOTON_FREE(a->tmp);
            a->tmp = NULL;
            return photon__fail(err, PHOTON_ERR_IO, "%s: exists and is not a regular file; photon writes regular files only",
                                path);
        }
    }
    snprintf(a->tmp, n, "%s.%ld.tmp", path, (long)getpid());
#else
    snprintf(a->tmp, n, "%s.tmp", path);
#endif
    a->f = fopen(a->tmp, "wb");
    if (!a->f) {
        photon_result r = photon__fail(err, PHOTON_ERR_IO, "%s: cannot create: %s", a->tmp, strerror(errno));
        PHOTON_FREE(a->tmp);
        a->tmp = NULL;
        return r;
    }
    return PHOTON_OK;
}

static void photon__atomic_abort(photon__atomic *a) {
    if (a->f) fclose(a->f);
    if (a->tmp) remove(a->tmp);
    PHOTON_FREE(a->tmp);
    a->f = NULL;
    a->tmp = NULL;
}

#ifdef PHOTON__POSIX
/* The directory part of path ("." if none) into dir, and its last part. */
static void photon__split_path(const char *path, char *dir, size_t size, const char **base) {
    const char *slash = strrchr(path, '/');
    *base = slash ? slash + 1 : path;
    if (!slash) snprintf(dir, size, ".");
    else snprintf(dir, size, "%.*s", (int)(slash - path) + (slash == path), path);
}
#endif

/* After a rename, the directory entry itself must reach the disk too. */
static void photon__sync_directory(const char *path) {
#ifdef PHOTON__HAVE_FSYNC
    char dir[4096];
    const char *base;
    int fd;
    photon__split_path(path, dir, sizeof dir, &base);
    fd = open(dir, O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
#else
    (void)path;
#endif
}

static photon_result photon__atomic_commit(photon__atomic *a, photon_error *err) {
    int failed = ferror(a->f) || fflush(a->f) != 0;
#ifdef PHOTON__HAVE_FSYNC
    if (!failed) failed = fsync(fileno(a->f)) != 0;
#endif
    if (fclose(a->f) != 0) failed = 1;
    a->f = NULL;
    if (failed || rename(a->tmp, a->path) != 0) {
        photon_result r = photon__fail(err, PHOTON_ERR_IO, "%s: cannot write: %s", a->path, strerror(errno));
        photon__atomic_abort(a);
        return r;
    }
    photon__sync_directory(a->path);
    PHOTON_FREE(a->tmp);
    a->tmp = NULL;
    return PHOTON_OK;
}

/* Opens a regular file for reading and tells its size. A directory, a
   device or a FIFO is refused before anything is read: fopen accepts them,
   their "size" is meaningless, and a FIFO or /dev/zero would stall the
   reader. On POSIX the file is opened without blocking and checked with
   fstat, so a path swapped for a FIFO after a stat cannot stall it either. */
static photon_result photon__open_regular(const char *path, FILE **out, long *size, photon_error *err) {
    FILE *f;
#ifdef PHOTON__POSIX
    struct stat info;
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    memset(&info, 0, sizeof info);
    if (fd < 0) return photon__fail(err, PHOTON_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
        close(fd);
        return photon__fail(err, PHOTON_ERR_IO, "%s: not a regular file (%s)", path,
                            S_ISDIR(info.st_mode) ? "a directory" : S_ISFIFO(info.st_mode) ? "a FIFO"
                            : S_ISCHR(info.st_mode) || S_ISBLK(info.st_mode) ? "a device" : "not a plain file");
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    if (!(f = fdopen(fd, "rb"))) {
        close(fd);
        return photon__fail(err, PHOTON_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
#else
    f = fopen(path, "rb");
    if (!f) return photon__fail(err, PHOTON_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
#endif
    if (fseek(f, 0, SEEK_END) != 0 || (*size = ftell(f)) < 0 || *size == LONG_MAX || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return photon__fail(err, PHOTON_ERR_IO, "%s: cannot determine its size (not a regular file?)", path);
    }
    *out = f;
    return PHOTON_OK;
}

PHOTONDEF photon_result photon_read_file(const char *path, unsigned char **data, size_t *size, photon_error *err) {
    FILE *f;
    long len;
    photon_result r;
    *data = NULL;
    *size = 0;
    if ((r = photon__open_regular(path, &f, &len, err)) != PHOTON_OK) return r;
    *data = (unsigned char *)PHOTON_MALLOC((size_t)len + 1);
    if (!*data) {
        fclose(f);
        return photon__fail(err, PHOTON_ERR_MEMORY, "%s: cannot allocate %ld bytes to read it", path, len);
    }
    if (fread(*data, 1, (size_t)len, f) != (size_t)len) {
        fclose(f);
        PHOTON_FREE(*data);
        *data = NULL;
        return photon__fail(err, PHOTON_ERR_IO, "%s: read failed", path);
    }
    fclose(f);
    (*data)[len] = 0;
    *size = (size_t)len;
    return PHOTON_OK;
}

static uint32_t photon__le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void photon__put_le32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

/* Whether a path exists (an unreadable file exists too: its reader then
   reports why, instead of the caller starting afresh over it). */
static int photon__file_exists(const char *path) {
#ifdef PHOTON__POSIX
    struct stat info;
    return stat(path, &info) == 0;
#else
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
#endif
}

PHOTONDEF photon_result photon_write_file(const char *path, const void *data, size_t size, photon_error *err) {
    photon__atomic a;
    photon_result r = photon__atomic_open(&a, path, err);
    if (r != PHOTON_OK) return r;
    if (size && fwrite(data, 1, size, a.f) != size) {
        r = photon__fail(err, PHOTON_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
        photon__atomic_abort(&a);
        return r;
    }
    return photon__atomic_commit(&a, err);
}

/* --- outputs that appear together --- */

PHOTONDEF void photon_outputs_init(photon_outputs *o) { o->count = 0, o->stop_before_rename = 0; }

PHOTONDEF photon_result photon_output_check(const char *path, photon_error *err) {
    char probe[4096 + 32];
    FILE *f;
#ifdef PHOTON__POSIX
    struct stat info;
    if (stat(path, &info) == 0 && !S_ISREG(info.st_mode))
        return photon__fail(err, PHOTON_ERR_IO, "%s: exists and is not a regular file", path);
    snprintf(probe, sizeof probe, "%.4096s.%ld.probe", path, (long)getpid());
#else
    snprintf(probe, sizeof probe, "%.4096s.probe", path);
#endif
    if (!(f = fopen(probe, "wb")))
        return photon__fail(err, PHOTON_ERR_IO, "%s: cannot create files there: %s", path, strerror(errno));
    fclose(f);
    remove(probe);
    return PHOTON_OK;
}

PHOTONDEF photon_result photon_files_equal(const char *a, const char *b, int *equal, photon_error *err) {
    unsigned char *x = (unsigned char *)PHOTON_MALLOC(1 << 16), *y = (unsigned char *)PHOTON_MALLOC(1 << 16);
    FILE *fa = NULL, *fb = NULL;
    long sa = 0, sb = 0;
    photon_result r = x && y ? PHOTON_OK : photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", a);
    *equal = 0;
    if (r == PHOTON_OK && (r = photon__open_regular(a, &fa, &sa, err)) == PHOTON_OK)
        r = photon__open_regular(b, &fb, &sb, err);
    if (r == PHOTON_OK && sa == sb) {
        size_t na, nb;
        *equal = 1;
        do {
            na = fread(x, 1, 1 << 16, fa);
            nb = fread(y, 1, 1 << 16, fb);
            if (na != nb || memcmp(x, y, na) != 0) *equal = 0;
        } while (*equal && na > 0);
        if (ferror(fa) || ferror(fb)) r = photon__fail(err, PHOTON_ERR_IO, "%s: read failed", ferror(fa) ? a : b);
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    PHOTON_FREE(x);
    PHOTON_FREE(y);
    return r;
}

/* Whether two paths name one existing file (hard links, "./x" and "x"). */
static int photon__same_file(const char *a, const char *b) {
#ifdef PHOTON__POSIX
    struct stat x, y;
    return stat(a, &x) == 0 && stat(b, &y) == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
#else
    (void)a, (void)b;
    return 0;
#endif
}

PHOTONDEF photon_result photon_outputs_add(photon_outputs *o, const char *target, const char **temp, photon_error *err) {
    photon_result r;
    if (o->count == PHOTON_OUTPUTS_MAX)
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "%s: more than %d outputs in one group", target, PHOTON_OUTPUTS_MAX);
    if (strlen(target) >= sizeof o->target[0])
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "%.200s...: path too long", target);
    if ((r = photon_output_check(target, err)) != PHOTON_OK) return r;
    {   /* two outputs of one group on one file would overwrite each other (and an input given as an output) */
        int k;
        for (k = 0; k < o->count; k++)
            if (strcmp(o->target[k], target) == 0 || photon__same_file(o->target[k], target))
                return photon__fail(err, PHOTON_ERR_ARGUMENT, "%s: named twice as an output (also as %s)", target,
                                    o->target[k]);
    }
#ifdef PHOTON__POSIX
    snprintf(o->temp[o->count], sizeof o->temp[0], "%s.%ld.pending", target, (long)getpid());
#else
    snprintf(o->temp[o->count], sizeof o->temp[0], "%s.pending", target);
#endif
    snprintf(o->target[o->count], sizeof o->target[0], "%s", target);
    if (temp) *temp = o->temp[o->count];
    o->count++;
    return PHOTON_OK;
}

/* A commit that stops before its rename k: the first k targets are new,
   the rest stay pending, for the next run to finish; the group is
   forgotten, so that an abort does not remove what that run needs. */
static photon_result photon__outputs_stop(photon_outputs *o, int k, const char *why, photon_error *err) {
    char done[PHOTON_OUTPUTS_MAX * 204] = "nothing", left[PHOTON_OUTPUTS_MAX * 204] = "";
    int i;
    for (i = 0; i < o->count; i++) {
        char *list = i < k ? done : left;
        size_t at = i == 0 || i == k ? 0 : strlen(list);
        snprintf(list + at, sizeof done - at, "%s%.200s", at ? ", " : "", i < k ? o->target[i] : o->temp[i]);
        if (i < k) photon__sync_directory(o->target[i]);
    }
    o->count = 0;
    return photon__fail(err, PHOTON_ERR_IO, "%s: %s; committed: %s; left pending: %s", o->target[k], why, done, left);
}

/* Every temporary is complete (each writer fsynced it) before the first
   rename, so a failure before the renames leaves every target as it was. */
PHOTONDEF photon_result photon_outputs_commit(photon_outputs *o, photon_error *err) {
    int k;
    for (k = 0; k < o->count; k++)
        if (!photon__file_exists(o->temp[k])) {
            photon_outputs_abort(o);
            return photon__fail(err, PHOTON_ERR_IO, "%s: was not written", o->temp[k]);
        }
    for (k = 0; k < o->count; k++) {
        if (o->stop_before_rename == k + 1)
            return photon__outputs_stop(o, k, "stopped before this rename (a fault was injected)", err);
        if (rename(o->temp[k], o->target[k]) != 0) {
            char why[300];
            photon_result r;
            snprintf(why, sizeof why, "cannot rename into place: %s", strerror(errno));
            if (k > 0) return photon__outputs_stop(o, k, why, err);
            r = photon__fail(err, PHOTON_ERR_IO, "%s: %s", o->target[k], why);
            photon_outputs_abort(o);
            return r;
        }
    }
    for (k = 0; k < o->count; k++) photon__sync_directory(o->target[k]);
    o->count = 0;
    return PHOTON_OK;
}

PHOTONDEF void photon_outputs_abort(photon_outputs *o) {
    int k;
    for (k = 0; k < o->count; k++) remove(o->temp[k]);
    o->count = 0;
}

/* --- what killed runs leave behind, and the lock that keeps a second
   process off a file --- */

#ifdef PHOTON__POSIX
/* The pid in the name of a temporary of base that photon's writers make:
   BASE.<pid>.pending (photon_outputs_add), BASE.<pid>.tmp (the atomic
   writer), BASE.<pid>.probe (photon_output_check), BASE.<pid>.pending.<pid>.tmp
   (the atomic writer of a pending file); only the first when pending_only.
   0 for any other name. */
static long photon__leftover_pid(const char *name, const char *base, int pending_only) {
    size_t n = strlen(base);
    const char *p, *rest;
    long pid = 0;
    if (strncmp(name, base, n) != 0 || name[n] != '.') return 0;
    for (p = name + n + 1; *p >= '0' && *p <= '9' && pid < 1L << 30; p++) pid = pid * 10 + (*p - '0');
    rest = p;
    if (rest == name + n + 1) return 0;
    if (strcmp(rest, ".pending") == 0) return pid;
    if (pending_only) return 0;
    if (strcmp(rest, ".tmp") == 0 || strcmp(rest, ".probe") == 0) return pid;
    if (strncmp(rest, ".pending.", 9) != 0) return 0;
    for (p = rest + 9; *p >= '0' && *p <= '9'; p++) continue;
    return p > rest + 9 && strcmp(p, ".tmp") == 0 ? pid : 0;
}

/* Whether no process of this id runs (never this one). A process of
   another user answers EPERM: it runs, and its files stay. */
static int photon__pid_gone(long pid) {
    return pid > 0 && pid != (long)getpid() && kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}
#endif

PHOTONDEF photon_result photon_outputs_cleanup(const char *target, int *removed, uint64_t *bytes, photon_error *err) {
#ifdef PHOTON__POSIX
    char dir[4096], path[8192];
    const char *base;
    DIR *listing;
    struct dirent *e;
    struct stat info;
    photon__split_path(target, dir, sizeof dir, &base);
    if (!(listing = opendir(dir))) return PHOTON_OK; /* nothing left there; the output's own check says why */
    while ((e = readdir(listing)) != NULL) {
        if (!photon__pid_gone(photon__leftover_pid(e->d_name, base, 0))) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (lstat(path, &info) != 0 || !S_ISREG(info.st_mode)) continue; /* a staged directory is not ours to remove */
        if (remove(path) != 0) {
            photon_result r = photon__fail(err, PHOTON_ERR_IO, "%s: cannot remove what a killed run left: %s", path,
                                           strerror(errno));
            closedir(listing);
            return r;
        }
        *removed += 1;
        *bytes += (uint64_t)info.st_size;
    }
    closedir(listing);
#else
    (void)target, (void)removed, (void)bytes, (void)err;
#endif
    return PHOTON_OK;
}

#ifdef PHOTON__POSIX
/* Names the process that holds the lock on fd, for the refusal. */
static photon_result photon__lock_refused(int fd, const char *path, const char *name, photon_error *err) {
    struct flock held;
    memset(&held, 0, sizeof held);
    held.l_type = F_WRLCK;
    held.l_whence = SEEK_SET;
    if (fcntl(fd, F_GETLK, &held) == 0 && held.l_type != F_UNLCK)
        return photon__fail(err, PHOTON_ERR_IO, "%s: in use by another process (pid %ld holds %s)", path,
                            (long)held.l_pid, name);
    return photon__fail(err, PHOTON_ERR_IO, "%s: in use by another process (it held %s)", path, name);
}
#endif

PHOTONDEF photon_result photon_lock_acquire(photon_lock *lock, const char *path, photon_error *err) {
    lock->fd = -1;
#ifdef PHOTON__POSIX
    {
        char name[4096 + 8];
        struct flock want;
        struct stat info;
        int fd;
        photon_result r;
        if (strlen(path) >= 4096) return photon__fail(err, PHOTON_ERR_ARGUMENT, "%.200s...: path too long", path);
        if (stat(path, &info) == 0 && !S_ISREG(info.st_mode)) /* no /dev/null.lock beside a device */
            return photon__fail(err, PHOTON_ERR_IO, "%s: exists and is not a regular file", path);
        snprintf(name, sizeof name, "%s.lock", path);
        if ((fd = open(name, O_RDWR | O_CREAT, 0666)) < 0)
            return photon__fail(err, PHOTON_ERR_IO, "%s: cannot open its lock file %s: %s", path, name, strerror(errno));
        memset(&want, 0, sizeof want);
        want.l_type = F_WRLCK; /* the whole file */
        want.l_whence = SEEK_SET;
        if (fcntl(fd, F_SETLK, &want) == 0) {
            lock->fd = fd;
            return PHOTON_OK;
        }
        r = errno == EACCES || errno == EAGAIN
                ? photon__lock_refused(fd, path, name, err)
                : photon__fail(err, PHOTON_ERR_IO, "%s: cannot lock %s: %s", path, name, strerror(errno));
        close(fd);
        return r;
    }
#else
    (void)path, (void)err;
    return PHOTON_OK;
#endif
}

/* Closing the descriptor drops the lock; the file stays. */
PHOTONDEF void photon_lock_release(photon_lock *lock) {
#ifdef PHOTON__POSIX
    if (lock->fd >= 0) close(lock->fd);
#endif
    lock->fd = -1;
}

/* --- a new directory that appears complete or not at all ---
   Its files are written into DIR.PID.tmp, each fsynced; publishing renames
   that over DIR (which rename allows when DIR is an empty directory) and
   fsyncs the parent; aborting removes what was made, newest first. */

static photon_result photon__staged_fail(photon__staged_dir *d, photon_result code, const char *what, const char *path) {
    return photon__fail(d->err, code, "%s: %s: %s", path, what, strerror(errno));
}

/* Remembers a made path, so that an abort can remove it. */
static photon_result photon__staged_note(photon__staged_dir *d, const char *path) {
    char **grown = (char **)PHOTON_MALLOC((size_t)(d->num_made + 1) * sizeof(char *));
    if (!grown) return photon__fail(d->err, PHOTON_ERR_MEMORY, "%s: out of memory", d->dir);
    if (d->num_made) memcpy(grown, d->made, (size_t)d->num_made * sizeof(char *));
    PHOTON_FREE(d->made);
    d->made = grown;
    if (!(d->made[d->num_made] = photon__strdup(path))) return photon__fail(d->err, PHOTON_ERR_MEMORY, "out of memory");
    d->num_made++;
    return PHOTON_OK;
}

PHOTONDEF photon_result photon_output_dir_check(const char *dir, photon_error *err) {
#ifdef PHOTON__POSIX
    struct stat info;
    DIR *listing;
    struct dirent *e;
    if (stat(dir, &info) != 0) return PHOTON_OK;
    if (!S_ISDIR(info.st_mode)) return photon__fail(err, PHOTON_ERR_IO, "%s: exists and is not a directory", dir);
    if (!(listing = opendir(dir)))
        return photon__fail(err, PHOTON_ERR_IO, "%s: cannot read the directory: %s", dir, strerror(errno));
    while ((e = readdir(listing)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            closedir(listing);
            return photon__fail(err, PHOTON_ERR_IO, "%s: exists and is not empty; photon writes a new directory", dir);
        }
    closedir(listing);
    return PHOTON_OK;
#else
    return photon__fail(err, PHOTON_ERR_ARGUMENT, "%s: writing a directory needs a POSIX build", dir);
#endif
}

static photon_result photon__staged_begin(photon__staged_dir *d, const char *dir, photon_error *err) {
    photon_result r;
    memset(d, 0, sizeof *d);
    d->err = err;
    d->dir = dir;
    if ((r = photon_output_dir_check(dir, err)) != PHOTON_OK) return r;
#ifdef PHOTON__POSIX
    snprintf(d->staging, sizeof d->staging, "%s.%ld.tmp", dir, (long)getpid());
    if (mkdir(d->staging, 0777) != 0) return photon__staged_fail(d, PHOTON_ERR_IO, "cannot create the directory", dir);
#endif
    return PHOTON_OK;
}

static photon_result photon__staged_mkdir(photon__staged_dir *d, const char *rel) {
    char path[8448];
    snprintf(path, sizeof path, "%s/%s", d->staging, rel);
#ifdef PHOTON__POSIX
    if (mkdir(path, 0777) != 0) return photon__staged_fail(d, PHOTON_ERR_IO, "cannot create the directory", path);
#endif
    return photon__staged_note(d, path);
}

static photon_result photon__staged_open(photon__staged_dir *d, const char *rel) {
    snprintf(d->current, sizeof d->current, "%s/%s", d->staging, rel);
    if (!(d->f = fopen(d->current, "wb"))) return photon__staged_fail(d, PHOTON_ERR_IO, "cannot create", d->current);
    return photon__staged_note(d, d->current);
}

static photon_result photon__staged_write(photon__staged_dir *d, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, d->f) != n) return photon__staged_fail(d, PHOTON_ERR_IO, "cannot write", d->current);
    return PHOTON_OK;
}

static photon_result photon__staged_close(photon__staged_dir *d) {
    int failed = fflush(d->f) != 0;
#ifdef PHOTON__HAVE_FSYNC
    if (!failed) failed = fsync(fileno(d->f)) != 0;
#endif
    if (fclose(d->f) != 0) failed = 1;
    d->f = NULL;
    return failed ? photon__staged_fail(d, PHOTON_ERR_IO, "cannot write", d->current) : PHOTON_OK;
}

static void photon__staged_free(photon__staged_dir *d) {
    int k;
    for (k = 0; k < d->num_made; k++) PHOTON_FREE(d->made[k]);
    PHOTON_FREE(d->made);
    d->made = NULL;
    d->num_made = 0;
}

static void photon__staged_abort(photon__staged_dir *d) {
    int k;
    if (d->f) fclose(d->f);
    d->f = NULL;
    for (k = d->num_made - 1; k >= 0; k--)
        remove(d->made[k]); /* a file or an empty directory */
    if (d->staging[0]) remove(d->staging);
    photon__staged_free(d);
}

static photon_result photon__staged_publish(photon__staged_dir *d) {
    photon_result r = PHOTON_OK;
    if (rename(d->staging, d->dir) != 0) {
        r = photon__staged_fail(d, PHOTON_ERR_IO, "cannot rename into place", d->dir);
        photon__staged_abort(d);
        return r;
    }
    photon__sync_directory(d->dir);
    photon__staged_free(d);
    return r;
}

/* ----------------------------------------------------------------------- */
/* >>json: writing text and reading JSON                                   */
/* ----------------------------------------------------------------------- */

/* A growing text buffer; a failed allocation is remembered, and checked
   once at the end. */

static void photon__text_append(photon__text *t, const char *s, size_t n) {
    if (t->failed) return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        char *grown;
        while (cap < t->len + n + 1) cap *= 2;
        grown = (char *)PHOTON_MALLOC(cap);
        if (!grown) {
            t->failed = 1;
            return;
        }
        if (t->len) memcpy(grown, t->s, t->len);
        PHOTON_FREE(t->s);
        t->s = grown;
        t->cap = cap;
    }
    memcpy(t->s + t->len, s, n);
    t->len += n;
    t->s[t->len] = '\0';
}

static void photon__text_puts(photon__text *t, const char *s) { photon__text_append(t, s, strlen(s)); }

static void photon__text_u64(photon__text *t, uint64_t v) {
    char buf[24];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
    photon__text_puts(t, buf);
}

/* Appends s as a JSON string literal. */
static void photon__text_json_string(photon__text *t, const char *s) {
    photon__text_puts(t, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            photon__text_append(t, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            photon__text_puts(t, esc);
        } else {
            photon__text_append(t, s, 1);
        }
    }
    photon__text_puts(t, "\"");
}

/* A JSON reader over a text held in memory (a safetensors header,
   vocab.json). Errors name the file, the line and the column; lines are
   counted forward from the last place asked about, so a whole read costs
   time linear in the text. */
static void photon__json_init(photon__json *j, const char *s, size_t n, const char *path, photon_error *err) {
    j->s = s;
    j->n = n;
    j->pos = 0;
    j->path = path;
    j->err = err;
    j->line_pos = j->line_start = 0;
    j->line = 1;
}

/* Line and column (from 1) of byte pos. */
static void photon__json_where(photon__json *j, size_t pos, int *line, int *col) {
    if (pos < j->line_pos) { /* backwards: count again from the start */
        j->line_pos = j->line_start = 0;
        j->line = 1;
    }
    for (; j->line_pos < pos && j->line_pos < j->n; j->line_pos++)
        if (j->s[j->line_pos] == '\n') {
            j->line++;
            j->line_start = j->line_pos + 1;
        }
    *line = j->line;
    *col = (int)(pos - j->line_start) + 1;
}

static photon_result photon__json_error(photon__json *j, const char *what) {
    int line, col;
    photon__json_where(j, j->pos, &line, &col);
    return photon__fail(j->err, PHOTON_ERR_FORMAT, "%s: invalid JSON at line %d, column %d: %s", j->path, line, col,
                        what);
}

static void photon__json_ws(photon__json *j) {
    while (j->pos < j->n && (j->s[j->pos] == ' ' || j->s[j->pos] == '\t' || j->s[j->pos] == '\n' || j->s[j->pos] == '\r'))
        j->pos++;
}

/* Skips whitespace and consumes c if it is next. */
static int photon__json_accept(photon__json *j, char c) {
    photon__json_ws(j);
    if (j->pos < j->n && j->s[j->pos] == c) {
        j->pos++;
        return 1;
    }
    return 0;
}

static int photon__hex4(const char *s, uint32_t *v) {
    int k;
    *v = 0;
    for (k = 0; k < 4; k++) {
        char c = s[k];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return 0;
        *v = *v << 4 | (uint32_t)d;
    }
    return 1;
}

/* Reads a string literal into a new allocation (*out, NUL-terminated). */
static photon_result photon__json_string(photon__json *j, char **out) {
    photon__text t = {NULL, 0, 0, 0};
    *out = NULL;
    if (!photon__json_accept(j, '"')) return photon__json_error(j, "expected a string");
    photon__text_append(&t, "", 0);
    for (;;) {
        char c;
        if (j->pos >= j->n) {
            PHOTON_FREE(t.s);
            return photon__json_error(j, "unterminated string");
        }
        c = j->s[j->pos++];
        if (c == '"') break;
        if ((unsigned char)c < 0x20) {
            PHOTON_FREE(t.s);
            return photon__json_error(j, "control character in string");
        }
        if (c != '\\') {
            photon__text_append(&t, &c, 1);
            continue;
        }
        if (j->pos >= j->n) {
            PHOTON_FREE(t.s);
            return photon__json_error(j, "unterminated string");
        }
        c = j->s[j->pos++];
        switch (c) {
        case '"': case '\\': case '/': photon__text_append(&t, &c, 1); break;
        case 'b': photon__text_append(&t, "\b", 1); break;
        case 'f': photon__text_append(&t, "\f", 1); break;
        case 'n': photon__text_append(&t, "\n", 1); break;
        case 'r': photon__text_append(&t, "\r", 1); break;
        case 't': photon__text_append(&t, "\t", 1); break;
        case 'u': {
            uint32_t cp, lo;
            if (j->pos + 4 > j->n || !photon__hex4(j->s + j->pos, &cp)) {
                PHOTON_FREE(t.s);
                return photon__json_error(j, "bad \\u escape");
            }
            j->pos += 4;
            if (cp >= 0xd800 && cp <= 0xdbff) { /* a surrogate pair */
                if (j->pos + 6 > j->n || j->s[j->pos] != '\\' || j->s[j->pos + 1] != 'u' ||
                    !photon__hex4(j->s + j->pos + 2, &lo) || lo < 0xdc00 || lo > 0xdfff) {
                    PHOTON_FREE(t.s);
                    return photon__json_error(j, "unpaired surrogate in \\u escape");
                }
                j->pos += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                PHOTON_FREE(t.s);
                return photon__json_error(j, "unpaired surrogate in \\u escape");
            }
            if (cp == 0) {
                PHOTON_FREE(t.s);
                return photon__json_error(j, "NUL character in string");
            }
            photon__utf8_put(&t, cp);
            break;
        }
        default:
            PHOTON_FREE(t.s);
            return photon__json_error(j, "unknown escape in string");
        }
    }
    if (t.failed) {
        PHOTON_FREE(t.s);
        return photon__fail(j->err, PHOTON_ERR_MEMORY, "%s: out of memory reading the header", j->path);
    }
    *out = t.s;
    return PHOTON_OK;
}

/* A non-negative integer, as the reference reader's usize fields demand. */
static photon_result photon__json_uint(photon__json *j, uint64_t *out) {
    size_t start;
    photon__json_ws(j);
    start = j->pos;
    *out = 0;
    while (j->pos < j->n && j->s[j->pos] >= '0' && j->s[j->pos] <= '9') {
        uint64_t d = (uint64_t)(j->s[j->pos] - '0');
        if (*out > (UINT64_MAX - d) / 10) return photon__json_error(j, "integer too large");
        *out = *out * 10 + d;
        j->pos++;
    }
    if (j->pos == start) return photon__json_error(j, "expected a non-negative integer");
    if (j->pos - start > 1 && j->s[start] == '0') return photon__json_error(j, "leading zero in integer");
    if (j->pos < j->n && (j->s[j->pos] == '.' || j->s[j->pos] == 'e' || j->s[j->pos] == 'E'))
        return photon__json_error(j, "expected an integer, found a fraction");
    return PHOTON_OK;
}

static int photon__json_digits(photon__json *j) {
    size_t start = j->pos;
    while (j->pos < j->n && j->s[j->pos] >= '0' && j->s[j->pos] <= '9') j->pos++;
    return j->pos > start;
}

/* A number by JSON's grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static photon_result photon__json_number(photon__json *j, size_t start) {
    j->pos = start;
    if (j->s[j->pos] == '-') j->pos++;
    if (j->pos < j->n && j->s[j->pos] == '0') j->pos++;
    else if (!photon__json_digits(j)) return photon__json_error(j, "bad number");
    if (j->pos < j->n && j->s[j->pos] == '.') {
        j->pos++;
        if (!photon__json_digits(j)) return photon__json_error(j, "bad number");
    }
    if (j->pos < j->n && (j->s[j->pos] == 'e' || j->s[j->pos] == 'E')) {
        j->pos++;
        if (j->pos < j->n && (j->s[j->pos] == '+' || j->s[j->pos] == '-')) j->pos++;
        if (!photon__json_digits(j)) return photon__json_error(j, "bad number");
    }
    return PHOTON_OK;
}

/* Skips any JSON value (for fields this reader does not use). */
static photon_result photon__json_skip(photon__json *j, int depth) {
    photon_result r;
    char c;
    if (depth > 64) return photon__json_error(j, "nesting too deep");
    photon__json_ws(j);
    if (j->pos >= j->n) return photon__json_error(j, "unexpected end");
    c = j->s[j->pos];
    if (c == '"') {
        char *s;
        if ((r = photon__json_string(j, &s)) == PHOTON_OK) PHOTON_FREE(s);
        return r;
    }
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        j->pos++;
        if (photon__json_accept(j, close)) return PHOTON_OK;
        do {
            if (c == '{') {
                char *key;
                if ((r = photon__json_string(j, &key)) != PHOTON_OK) return r;
                PHOTON_FREE(key);
                if (!photon__json_accept(j, ':')) return photon__json_error(j, "expected ':'");
            }
            if ((r = photon__json_skip(j, depth + 1)) != PHOTON_OK) return r;
        } while (photon__json_accept(j, ','));
        return photon__json_accept(j, close) ? PHOTON_OK : photon__json_error(j, "expected ',' or a closing bracket");
    }
    {
        const char *words[3] = {"true", "false", "null"};
        int k;
        for (k = 0; k < 3; k++) {
            size_t len = strlen(words[k]);
            if (j->pos + len <= j->n && memcmp(j->s + j->pos, words[k], len) == 0) {
                j->pos += len;
                return PHOTON_OK;
            }
        }
    }
    if (c == '-' || (c >= '0' && c <= '9')) return photon__json_number(j, j->pos);
    return photon__json_error(j, "unexpected character");
}

/* Reads [u, u, ...] into out (at most max values); *count gets how many. */
static photon_result photon__json_uint_array(photon__json *j, uint64_t *out, int max, int *count, const char *name,
                                             const char *field) {
    photon_result r;
    *count = 0;
    if (!photon__json_accept(j, '[')) return photon__json_error(j, "expected an array");
    if (photon__json_accept(j, ']')) return PHOTON_OK;
    do {
        if (*count == max)
            return photon__fail(j->err, PHOTON_ERR_FORMAT, "%s: tensor '%s' has more than %d entries in %s", j->path,
                                name, max, field);
        if ((r = photon__json_uint(j, &out[(*count)++])) != PHOTON_OK) return r;
    } while (photon__json_accept(j, ','));
    return photon__json_accept(j, ']') ? PHOTON_OK : photon__json_error(j, "expected ',' or ']'");
}

/* One JSON value: kind 0 null, 1 number, 2 true/false (num 1/0), 3 string
   (*str allocated), 4 anything else (skipped). */
static photon_result photon__json_scalar(photon__json *j, int *kind, double *num, char **str) {
    size_t start;
    photon__json_ws(j);
    *kind = 4, *num = 0.0, *str = NULL;
    if (j->pos >= j->n) return photon__json_error(j, "unexpected end");
    start = j->pos;
    switch (j->s[j->pos]) {
    case '"': *kind = 3; return photon__json_string(j, str);
    case 't': case 'f': case 'n': {
        photon_result r = photon__json_skip(j, 1);
        *kind = j->s[start] == 'n' ? 0 : 2;
        *num = j->s[start] == 't';
        return r;
    }
    case '{': case '[': return photon__json_skip(j, 1);
    default: {
        photon_result r = photon__json_skip(j, 1);
        if (r == PHOTON_OK) *kind = 1, *num = strtod(j->s + start, NULL);
        return r;
    }
    }
}

/* ----------------------------------------------------------------------- */
/* >>utf8: decoding and encoding UTF-8                                     */
/* ----------------------------------------------------------------------- */

/* Decodes the character at s[i] (i < n): returns its length in bytes and
   sets *cp, or returns 0 if the bytes there are not well-formed UTF-8
   (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF). */
static size_t photon__utf8_decode(const unsigned char *s, size_t n, size_t i, uint32_t *cp) {
    unsigned c = s[i], lo = 0x80, hi = 0xbf;
    size_t need, k;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        need = 1;
        *cp = c & 0x1fu;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 2;
        *cp = c & 0x0fu;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3;
        *cp = c & 0x07u;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else {
        return 0;
    }
    if (n - i <= need) return 0;
    for (k = 1; k <= need; k++) {
        unsigned b = s[i + k];
        if (b < (k == 1 ? lo : 0x80u) || b > (k == 1 ? hi : 0xbfu)) return 0;
        *cp = *cp << 6 | (b & 0x3fu);
    }
    return need + 1;
}

static int photon__valid_utf8(const unsigned char *s, size_t n) {
    size_t i = 0, len;
    uint32_t cp;
    while (i < n) {
        if (!(len = photon__utf8_decode(s, n, i, &cp))) return 0;
        i += len;
    }
    return 1;
}

/* Appends code point cp as UTF-8. */
static void photon__utf8_put(photon__text *t, uint32_t cp) {
    char b[4];
    size_t n;
    if (cp < 0x80) { b[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { b[0] = (char)(0xc0 | cp >> 6); b[1] = (char)(0x80 | (cp & 0x3f)); n = 2; }
    else if (cp < 0x10000) { b[0] = (char)(0xe0 | cp >> 12); b[1] = (char)(0x80 | (cp >> 6 & 0x3f)); b[2] = (char)(0x80 | (cp & 0x3f)); n = 3; }
    else { b[0] = (char)(0xf0 | cp >> 18); b[1] = (char)(0x80 | (cp >> 12 & 0x3f)); b[2] = (char)(0x80 | (cp >> 6 & 0x3f)); b[3] = (char)(0x80 | (cp & 0x3f)); n = 4; }
    photon__text_append(t, b, n);
}

/* ----------------------------------------------------------------------- */
/* >>sha256: SHA-256 (FIPS 180-4)                                          */
/* ----------------------------------------------------------------------- */

static const uint32_t photon__sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#if defined(__SHA__) && defined(__SSE4_1__) && !defined(PHOTON_NO_SIMD)
/* The same compression with the CPU's SHA instructions (about 5x faster):
   the state is kept as the (ABEF, CDGH) register pair they work on, and each
   group of four rounds extends the message schedule by four words. */
static void photon__sha256_block(photon_sha256 *s, const unsigned char *p) {
    const __m128i byteswap = _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3);
    __m128i m[16], abef, cdgh, abef0, cdgh0, msg, t;
    int i;
    t = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&s->h[0]), 0xB1); /* CDAB */
    cdgh = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&s->h[4]), 0x1B); /* EFGH */
    abef = _mm_alignr_epi8(t, cdgh, 8);
    cdgh = _mm_blend_epi16(cdgh, t, 0xF0);
    abef0 = abef, cdgh0 = cdgh;
    for (i = 0; i < 16; i++) {
        if (i < 4)
            m[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), byteswap);
        else
            m[i] = _mm_sha256msg2_epu32(
                _mm_add_epi32(_mm_sha256msg1_epu32(m[i - 4], m[i - 3]), _mm_alignr_epi8(m[i - 1], m[i - 2], 4)), m[i - 1]);
        msg = _mm_add_epi32(m[i], _mm_loadu_si128((const __m128i *)&photon__sha256_k[4 * i]));
        cdgh = _mm_sha256rnds2_epu32(cdgh, abef, msg);
        abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(msg, 0x0E));
    }
    abef = _mm_add_epi32(abef, abef0);
    cdgh = _mm_add_epi32(cdgh, cdgh0);
    t = _mm_shuffle_epi32(abef, 0x1B);  /* FEBA */
    cdgh = _mm_shuffle_epi32(cdgh, 0xB1); /* DCHG */
    _mm_storeu_si128((__m128i *)&s->h[0], _mm_blend_epi16(t, cdgh, 0xF0)); /* DCBA */
    _mm_storeu_si128((__m128i *)&s->h[4], _mm_alignr_epi8(cdgh, t, 8));   /* HGFE */
}
#else
static uint32_t photon__rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void photon__sha256_block(photon_sha256 *s, const unsigned char *p) {
    uint32_t w[64], a, b, c, d, e, f, g, h;
    int i;
    for (i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (i = 16; i < 64; i++) {
        uint32_t s0 = photon__rotr(w[i - 15], 7) ^ photon__rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = photon__rotr(w[i - 2], 17) ^ photon__rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
    for (i = 0; i < 64; i++) {
        uint32_t t1 = h + (photon__rotr(e, 6) ^ photon__rotr(e, 11) ^ photon__rotr(e, 25)) + ((e & f) ^ (~e & g)) +
                      photon__sha256_k[i] + w[i];
        uint32_t t2 = (photon__rotr(a, 2) ^ photon__rotr(a, 13) ^ photon__rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    s->h[0] += a, s->h[1] += b, s->h[2] += c, s->h[3] += d, s->h[4] += e, s->h[5] += f, s->h[6] += g, s->h[7] += h;
}
#endif

PHOTONDEF void photon_sha256_init(photon_sha256 *s) {
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, h0, sizeof h0);
    s->length = 0;
    s->fill = 0;
}

PHOTONDEF void photon_sha256_update(photon_sha256 *s, const void *data, size_t n) {
    const unsigned char *p = (const unsigned char *)data;
    s->length += n;
    while (n > 0) {
        size_t take = 64 - s->fill < n ? 64 - s->fill : n;
        memcpy(s->block + s->fill, p, take);
        s->fill += take, p += take, n -= take;
        if (s->fill == 64) {
            photon__sha256_block(s, s->block);
            s->fill = 0;
        }
    }
}

PHOTONDEF void photon_sha256_final(photon_sha256 *s, char hex[65]) {
    unsigned char pad[72];
    uint64_t bits = s->length * 8;
    size_t padlen = (s->fill < 56 ? 56 : 120) - s->fill;
    int i;
    memset(pad, 0, sizeof pad);
    pad[0] = 0x80;
    for (i = 0; i < 8; i++) pad[padlen + (size_t)i] = (unsigned char)(bits >> (56 - 8 * i));
    photon_sha256_update(s, pad, padlen + 8);
    for (i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", (unsigned)(s->h[i / 4] >> (24 - 8 * (i % 4))) & 0xffu);
}

PHOTONDEF photon_result photon_sha256_file(const char *path, char hex[65], photon_error *err) {
    unsigned char buf[1 << 16];
    size_t n;
    photon_sha256 s;
    FILE *f;
    long size;
    photon_result r = photon__open_regular(path, &f, &size, err); /* a FIFO or a device is refused unread */
    if (r != PHOTON_OK) return r;
    photon_sha256_init(&s);
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) photon_sha256_update(&s, buf, n);
    if (ferror(f)) {
        fclose(f);
        return photon__fail(err, PHOTON_ERR_IO, "%s: read failed", path);
    }
    fclose(f);
    photon_sha256_final(&s, hex);
    return PHOTON_OK;
}

#ifdef __cplusplus
}
#endif
#endif /* PHOTON_IMPLEMENTATION_DONE */
#endif /* PHOTON_IMPLEMENTATION */
