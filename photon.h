/* photon.h - federated pre-training of GPT-style language models, in one C header.

   USAGE
   -----
   In exactly one C or C++ file:

       #define PHOTON_IMPLEMENTATION
       #include "photon.h"

   Everywhere else include it without the define. The header needs libc and
   libm only. Options, defined before the include that has PHOTON_IMPLEMENTATION:

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
   (the delta), and an aggregator averages the deltas and applies an outer
   optimizer. This header holds every piece a client or an aggregator needs:

     1. the model: GPT-2's decoder-only transformer (token and learned position
        embeddings, pre-LayerNorm blocks with causal multi-head attention and a
        4x tanh-GELU MLP, a final LayerNorm and an output head tied to the token
        embedding), as forward/backward pairs over one parameter buffer;
     2. the local optimizer: AdamW with decoupled weight decay, global
        gradient-norm clipping, and a warmup + cosine learning-rate schedule
        that runs on a global step clock stored in the checkpoint;
     3. data: llm.c token shards and plain text read as bytes (vocab 256),
        served as batches of consecutive windows from a resumable position;
     4. files: safetensors checkpoints with Hugging Face GPT-2 tensor names
        (they load into transformers' GPT2LMHeadModel), and a client-state file
        (AdamW moments, data position) that never leaves the client. Every
        reader validates what the reference safetensors reader validates;
        every writer writes a temporary file, fsyncs it and renames it.

   The file formats are documented in docs/FORMAT.md.

   On an NVIDIA GPU the training step runs in photon_cuda.cu, a companion
   file built with nvcc and cuBLAS; its interface is declared below (section
   GPU) and writes the same files as the CPU.

   ERRORS
   ------
   The library never prints and never exits. Every function that can fail
   returns a photon_result and, when given a photon_error, fills it with a
   one-line message that names the file and the problem.

   DETERMINISM
   -----------
   The same seed, data and settings give bit-identical parameters and files on
   the same build and platform: every reduction runs in a fixed order.

   LICENSE: MIT, see LICENSE.
*/
#ifndef PHOTON_H
#define PHOTON_H

#include <stddef.h>
#include <stdint.h>

#define PHOTON_VERSION "0.1.0"
#define PHOTON_FORMAT_VERSION 1 /* the photon.version written into files */

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

/* ---------------------------------------------------------------- results */

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

/* ---------------------------------------------------------------- model */

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

/* ---------------------------------------------------------------- optimizer */

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

/* ---------------------------------------------------------------- data */

/* A token stream: the files given, concatenated in order. A file that starts
   with llm.c's shard magic is read as a shard (256 int32 header: magic
   20240520, version 1, token count; then uint16 tokens); any other file is
   text, one token per byte (vocab 256), or encoded with a BPE tokenizer
   (photon_dataset_load_bpe; the tokenizer is declared further down). */
struct photon_bpe;

typedef struct photon_dataset {
    uint16_t *tokens;
    size_t num_tokens;
    uint64_t text_bytes; /* bytes of text read (0 if any file was a shard) */
    uint16_t max_token;  /* largest token id present */
    uint64_t hash;       /* FNV-1a of the tokens: ties a client state to its data */
    char source[320];    /* the files, for messages: "a.txt" or "a.txt (+2 more files)" */
    /* bytes each token id stands for, so that bits per byte are exact: NULL
       for byte-level text (one byte each) or when unknown (shards without a
       tokenizer; then byte_level is 0 too) */
    uint32_t *token_len;
    int token_len_count;
    int byte_level;
} photon_dataset;

PHOTONDEF photon_result photon_dataset_load(photon_dataset *ds, const char *const *paths, int num_paths,
                                            photon_error *err);
/* The same with text encoded by a tokenizer (NULL: bytes); shards are read
   as they are, and the tokenizer then also tells their bytes. */
PHOTONDEF photon_result photon_dataset_load_bpe(photon_dataset *ds, const char *const *paths, int num_paths,
                                                struct photon_bpe *bpe, photon_error *err);
PHOTONDEF void photon_dataset_free(photon_dataset *ds);
/* Checks that every token is below vocab_size. */
PHOTONDEF photon_result photon_dataset_check_vocab(const photon_dataset *ds, int vocab_size, photon_error *err);

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

/* ---------------------------------------------------------------- sampling */

/* Draws the token that follows context[0..n) (the last n_ctx tokens are
   used) at the given temperature (0: the most likely token), with a
   deterministic generator state *rng. */
PHOTONDEF photon_result photon_sample_next(photon_model *model, const int *context, int n, float temperature,
                                           uint64_t *rng, int *token, photon_error *err);

/* ---------------------------------------------------------------- safetensors */

typedef enum photon_dtype {
    PHOTON_DTYPE_BOOL, PHOTON_DTYPE_U8, PHOTON_DTYPE_I8, PHOTON_DTYPE_F8_E5M2, PHOTON_DTYPE_F8_E4M3,
    PHOTON_DTYPE_I16, PHOTON_DTYPE_U16, PHOTON_DTYPE_F16, PHOTON_DTYPE_BF16, PHOTON_DTYPE_I32,
    PHOTON_DTYPE_U32, PHOTON_DTYPE_F32, PHOTON_DTYPE_F64, PHOTON_DTYPE_I64, PHOTON_DTYPE_U64,
    PHOTON_DTYPE_COUNT
} photon_dtype;

#define PHOTON_ST_MAX_DIMS 8
#define PHOTON_ST_MAX_HEADER 100000000u /* the reference reader's bound */

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
    void *handle; /* the open FILE: tensors are read from the file validated */
} photon_st_file;

/* Reads and validates the header: size bound, UTF-8, JSON syntax, known
   dtypes, shapes that match their byte spans, offsets with no overlap, hole
   or trailing bytes, no duplicate names, string-valued __metadata__. */
PHOTONDEF photon_result photon_st_open(photon_st_file *st, const char *path, photon_error *err);
PHOTONDEF void photon_st_close(photon_st_file *st);
PHOTONDEF const char *photon_st_meta(const photon_st_file *st, const char *key);
PHOTONDEF const photon_st_tensor *photon_st_find(const photon_st_file *st, const char *name);
/* Reads an F32 tensor of exactly `count` elements; refuses NaN and Inf. */
PHOTONDEF photon_result photon_st_read_f32(const photon_st_file *st, const photon_st_tensor *t, float *dst,
                                           size_t count, photon_error *err);

/* One F32 tensor to write. */
typedef struct photon_st_entry {
    const char *name;
    int ndim;
    uint64_t shape[PHOTON_ST_MAX_DIMS];
    const float *data;
} photon_st_entry;

/* Writes tensors in the order given, with __metadata__ keys in the order
   given, atomically (temporary file, fsync, rename). */
PHOTONDEF photon_result photon_st_write_f32(const char *path, const photon_st_entry *entries, int num_entries,
                                            const char *const *meta_keys, const char *const *meta_values,
                                            int num_meta, photon_error *err);

/* ---------------------------------------------------------------- checkpoints */

/* A model checkpoint: safetensors, Hugging Face GPT-2 names, metadata with the
   config and the step clock (docs/FORMAT.md). */
PHOTONDEF photon_result photon_checkpoint_save(const photon_model *model, const char *path, photon_error *err);
/* Loads a checkpoint into a new model (photon_model_free releases it). */
PHOTONDEF photon_result photon_checkpoint_load(photon_model *model, const char *path, photon_error *err);

/* What a client keeps between runs and rounds; never shipped. */
typedef struct photon_client_state {
    photon_adamw_state adamw;
    uint64_t step;          /* model->step when written */
    uint64_t data_position; /* loader position */
    uint64_t data_epoch;
    uint64_t data_tokens;   /* the dataset it belongs to: token count ... */
    uint64_t data_hash;     /* ... and hash */
} photon_client_state;

PHOTONDEF photon_result photon_client_state_save(const photon_client_state *state, const photon_config *config,
                                                 const char *path, photon_error *err);
/* Loads a client state written for this config; state->adamw is allocated. */
PHOTONDEF photon_result photon_client_state_load(photon_client_state *state, const photon_config *config,
                                                 const char *path, photon_error *err);

/* Writes the config.json with which transformers' GPT2LMHeadModel loads a
   photon checkpoint renamed to model.safetensors. */
PHOTONDEF photon_result photon_write_hf_config(const photon_config *config, const char *path, photon_error *err);

/* ---------------------------------------------------------------- federation */
/* A round of Photon, as files: every client trains from the same global
   checkpoint and writes a delta (global - local: the pseudo-gradient); the
   aggregator averages the deltas, weighted by the tokens each client trained
   on, and applies an outer optimizer to the global model. */

/* SHA-256, to tie each delta to the exact checkpoint it started from. */
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

/* What a delta file says about itself (docs/FORMAT.md). */
typedef struct photon_delta_info {
    char base_sha256[65];  /* the checkpoint file the client started from */
    uint64_t round;        /* the round it contributes to: the base's round + 1 */
    char client[64];       /* the client's id: letters, digits, '.', '_', '-' */
    uint64_t local_steps;  /* optimizer steps taken in this round */
    uint64_t tokens;       /* tokens trained on in this round: the FedAvg weight */
    float loss;            /* the last local training loss */
} photon_delta_info;

/* Writes base_params - model->params as a delta file. */
PHOTONDEF photon_result photon_delta_save(const photon_model *model, const float *base_params,
                                          const photon_delta_info *info, const char *path, photon_error *err);
/* Reads a delta written for a model of this config: its info and its values
   (num_params floats into values; NaN and Inf are refused). */
PHOTONDEF photon_result photon_delta_load(const photon_model *model, const char *path, photon_delta_info *info,
                                          float *values, photon_error *err);

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

typedef struct photon_merge_options {
    photon_outer_config outer;
    int skip_bad;    /* skip invalid deltas instead of failing */
    int min_clients; /* fewest valid deltas a merge accepts */
} photon_merge_options;

/* One delta's fate in a merge. */
typedef struct photon_merge_entry {
    const char *path;
    photon_delta_info info;
    char sha256[65];
    int accepted;
    double weight;         /* normalised: the accepted weights sum to 1 */
    char reason[512];      /* why it was refused, if it was */
} photon_merge_entry;

typedef struct photon_merge_result {
    photon_model model;         /* the next global model */
    photon_server_state state;  /* the server state after this round */
    int num_entries;
    photon_merge_entry *entries; /* in the merge order: sorted by client id */
    int accepted;
    /* the audit trail, written into the checkpoint's __metadata__ */
    int num_meta;
    char **meta_keys, **meta_values;
} photon_merge_result;

/* Merges the deltas into the base checkpoint. Deltas are validated (base
   hash, round, config, tensors, duplicate client ids, NaN/Inf), sorted by
   client id so the order of the arguments does not matter, and streamed
   one at a time. server_state_path may be NULL or name a file that does not
   exist yet (a first round). Free the result with photon_merge_result_free
   whatever the outcome: on failure its entries say which delta was refused. */
PHOTONDEF photon_result photon_merge(const char *base_path, const char *const *delta_paths, int num_deltas,
                                     const char *server_state_path, const photon_merge_options *options,
                                     photon_merge_result *result, photon_error *err);
PHOTONDEF void photon_merge_result_free(photon_merge_result *result);
/* Writes the merged checkpoint with its audit trail. */
PHOTONDEF photon_result photon_merge_save(const photon_merge_result *result, const char *path, photon_error *err);

/* ---------------------------------------------------------------- tokenizer */
/* Byte-level BPE as GPT-2 does it. The 256 bytes are the base symbols. Text
   is first cut into pre-tokens by GPT-2's pattern

       's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+

   (implemented by hand: \p{L} and \p{N} are Unicode's L* and N* general
   categories, \s the White_Space property, from the table in the
   implementation; a byte that is not part of valid UTF-8 counts as one
   symbol that is neither letter, number nor space). Merges then apply inside
   each pre-token, lowest rank first, every occurrence left to right, exactly
   as GPT-2's bpe() does. Decoding concatenates the tokens' bytes, so
   decode(encode(x)) == x for any bytes x, invalid UTF-8 included.

   On disk a tokenizer is GPT-2's pair of files: vocab.json (token string ->
   id, the string being the token's bytes through GPT-2's byte-to-unicode
   map) and merges.txt ("#version: 0.2", then "left right" per merge in rank
   order). photon writes them as transformers' GPT2Tokenizer.save_vocabulary
   does, byte for byte, and reads GPT-2's own files. Token ids are at most
   65535 (llm.c shards store uint16). */

#define PHOTON_BPE_MAX_VOCAB 65536
#define PHOTON_BPE_EOT "<|endoftext|>"

typedef struct photon_bpe_merge {
    int left, right; /* the pair merged */
    int result;      /* the token they become */
} photon_bpe_merge;

struct photon__bpe_state;

typedef struct photon_bpe {
    int vocab_size;            /* token ids 0 .. vocab_size-1 */
    int num_merges;
    photon_bpe_merge *merges;  /* in rank order: merges[0] applies first */
    int eot_token;             /* id of "<|endoftext|>", or -1 if absent */
    int byte_token[256];       /* the id of each single byte */
    uint32_t *token_start;     /* token t is token_bytes[token_start[t] .. token_start[t+1]) */
    unsigned char *token_bytes;
    struct photon__bpe_state *state; /* private: merge lookup, encoding cache, scratch */
} photon_bpe;

/* Counts pre-tokens of training text; feed it text with photon_bpe_trainer_add
   (pre-tokens never span two calls), then photon_bpe_train. */
typedef struct photon_bpe_trainer {
    uint64_t bytes;          /* text bytes added */
    uint64_t pretokens;      /* pre-tokens counted */
    size_t unique_pretokens; /* distinct pre-tokens */
    struct photon__bpe_counts *counts; /* private */
} photon_bpe_trainer;

typedef struct photon_bpe_train_options {
    int vocab_size;     /* 257 .. 65536: the 256 bytes, vocab_size-257 merges, "<|endoftext|>" last */
    uint64_t min_count; /* a pair seen fewer times is never merged (0: 2) */
    /* called now and then during the merges (may be NULL) */
    void (*progress)(void *ctx, int merges_done, int merges_target);
    void *progress_ctx;
} photon_bpe_train_options;

/* The byte-level vocabulary: 256 tokens, token id = byte value, no merges. */
PHOTONDEF photon_result photon_bpe_init_bytes(photon_bpe *bpe, photon_error *err);
PHOTONDEF void photon_bpe_free(photon_bpe *bpe);

PHOTONDEF photon_result photon_bpe_trainer_init(photon_bpe_trainer *trainer, photon_error *err);
PHOTONDEF photon_result photon_bpe_trainer_add(photon_bpe_trainer *trainer, const void *text, size_t len,
                                               photon_error *err);
PHOTONDEF void photon_bpe_trainer_free(photon_bpe_trainer *trainer);
/* Learns merges from the counted pre-tokens: repeatedly merges the pair of
   adjacent symbols that occurs most often (counted over every pre-token
   occurrence, overlapping pairs included), updating the counts of only the
   pairs each merge touches. Ties go to the pair with the smaller left token
   id, then the smaller right id (ids: bytes 0-255, then merges in the order
   made). A pair whose merged bytes already form a token, or spell
   "<|endoftext|>", is skipped. Stops early (a smaller vocabulary) when no
   pair occurs min_count times. Deterministic: the same text and options
   give the same vocabulary. */
PHOTONDEF photon_result photon_bpe_train(photon_bpe *bpe, const photon_bpe_trainer *trainer,
                                         const photon_bpe_train_options *options, photon_error *err);
/* Init, add one text, train, free: for a text held in memory. */
PHOTONDEF photon_result photon_bpe_train_text(photon_bpe *bpe, const void *text, size_t len,
                                              const photon_bpe_train_options *options, photon_error *err);

/* GPT-2's files. Saving writes each file to a temporary name and renames it
   into place. Loading refuses a corrupt file with a message that names the
   file and the line (merges.txt) or line and column (vocab.json). */
PHOTONDEF photon_result photon_bpe_load(photon_bpe *bpe, const char *vocab_path, const char *merges_path,
                                        photon_error *err);
PHOTONDEF photon_result photon_bpe_save(const photon_bpe *bpe, const char *vocab_path, const char *merges_path,
                                        photon_error *err);
/* The same with DIR/vocab.json and DIR/merges.txt. */
PHOTONDEF photon_result photon_bpe_load_dir(photon_bpe *bpe, const char *dir, photon_error *err);
PHOTONDEF photon_result photon_bpe_save_dir(const photon_bpe *bpe, const char *dir, photon_error *err);

/* Encodes len bytes of text into tokens, which must have room for len ids (a
   token is at least one byte); *num_tokens gets the count. The tokenizer
   keeps a cache of encoded pre-tokens, so one photon_bpe must not encode on
   two threads at once. */
PHOTONDEF photon_result photon_bpe_encode(photon_bpe *bpe, const void *text, size_t len, uint16_t *tokens,
                                          size_t *num_tokens, photon_error *err);
/* Decodes n tokens into out (capacity cap bytes); *len gets the number of
   bytes of the decoded text, also when out is NULL or too small (then only
   the size is computed, and a too-small buffer is an error). */
PHOTONDEF photon_result photon_bpe_decode(const photon_bpe *bpe, const uint16_t *tokens, size_t n, void *out,
                                          size_t cap, size_t *len, photon_error *err);
/* The bytes of one token (NULL for an id out of range). */
PHOTONDEF const unsigned char *photon_bpe_token(const photon_bpe *bpe, int id, size_t *len);
/* Where the pre-token that starts at byte pos ends (pos < len). */
PHOTONDEF size_t photon_bpe_split(const void *text, size_t len, size_t pos);
/* The Unicode version of the letter/number table ("14.0.0"). */
PHOTONDEF const char *photon_bpe_unicode_version(void);

/* Writes an llm.c token shard (256 int32 header: magic 20240520, version 1,
   token count; then the uint16 tokens, little-endian), atomically. */
PHOTONDEF photon_result photon_shard_write(const char *path, const uint16_t *tokens, size_t n, photon_error *err);

/* ---------------------------------------------------------------- GPU */
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

/* ---------------------------------------------------------------- threads */
/* Heavy loops run on a pool of threads (pthreads on POSIX; define
   PHOTON_NO_THREADS for a single-threaded build). Results do not depend on
   the number of threads. */
PHOTONDEF void photon_set_threads(int n); /* 0 (default): one per core */
PHOTONDEF int photon_threads(void);

/* ---------------------------------------------------------------- utilities */

/* splitmix64: a small, fast, deterministic generator; *state advances. */
PHOTONDEF uint64_t photon_rand_u64(uint64_t *state);
/* uniform in [0, 1) with 24 random bits */
PHOTONDEF float photon_rand_uniform(uint64_t *state);

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

/* POSIX, when the build declares it: stat, fsync, getpid, sysconf, pthreads */
#if (defined(__unix__) || defined(__APPLE__)) && \
    (defined(_POSIX_C_SOURCE) && _POSIX_C_SOURCE >= 200112L || defined(__APPLE__))
#include <fcntl.h>
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
/* Errors and memory                                                       */
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

/* Records an error (if the caller asked for one) and returns its code. */
static photon_result photon__fail(photon_error *err, photon_result code, const char *fmt, ...) PHOTON__PRINTF(3, 4);
static photon_result photon__fail(photon_error *err, photon_result code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
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

/* ======================================================================= */
/* Random numbers                                                          */
/* ======================================================================= */

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

/* ======================================================================= */
/* The model's parameters: one buffer, laid out tensor by tensor            */
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

/* Allocates parameters, gradients and the tensor table, all zero. */
static photon_result photon__model_alloc(photon_model *m, const photon_config *config, photon_error *err) {
    photon_result r = photon_config_validate(config, err);
    if (r != PHOTON_OK) return r;
    memset(m, 0, sizeof *m);
    m->config = *config;
    m->num_params = photon__num_params(config);
    m->params = (float *)photon__calloc(m->num_params, sizeof(float));
    m->grads = (float *)photon__calloc(m->num_params, sizeof(float));
    m->tensors = (photon_tensor_info *)photon__calloc((size_t)config->n_layer * 12 + 4, sizeof(photon_tensor_info));
    if (!m->params || !m->grads || !m->tensors) {
        photon_model_free(m);
        return photon__fail(err, PHOTON_ERR_MEMORY, "cannot allocate a model of %.0f parameters", (double)m->num_params);
    }
    photon__build_tensor_table(m);
    return PHOTON_OK;
}

PHOTONDEF photon_result photon_model_init(photon_model *m, const photon_config *config, uint64_t seed,
                                          photon_error *err) {
    photon_result r = photon__model_alloc(m, config, err);
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
/* Compute: a thread pool and the matrix product                           */
/* ======================================================================= */
/* Every heavy loop is cut into tasks whose results do not depend on which
   thread runs them or how many threads there are: a task owns a fixed part of
   the output and computes it in a fixed order. So the same inputs give the
   same bits on 1 thread or 64. */

typedef void (*photon__task_fn)(void *ctx, int task, int thread);

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

/* --- the matrix product C (M,N) (+)= op(A) (M,K) op(B) (K,N) ---
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

/* e^x in float, written so that loops over it vectorise: x = n ln2 + r with
   |r| <= ln2/2, e^r by its Taylor series to r^7 (truncation below 1e-8
   relative), 2^n through the exponent bits. Inputs are clamped to [-87, 88],
   where e^x stays a normal float. */
static float photon__expf(float x) {
    float n, r, p, scale;
    uint32_t bits;
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

/* ======================================================================= */
/* Layers: each forward is followed by its backward                        */
/* ======================================================================= */
/* Backward functions add (+=) into the gradients they are given, because a
   tensor may receive gradient from several places (the residual stream, the
   tied embedding). */

/* Most layers below run as parallel loops over a range of rows, columns or
   elements; a job holds a layer's arguments for its loop body. */
typedef struct photon__layer_job {
    float *out, *out2, *out3;
    const float *in, *in2, *in3, *in4, *in5;
    const int *tokens;
    int B, T, C, V;
    float scale;
} photon__layer_job;

static photon__layer_job photon__job(void) {
    photon__layer_job j;
    memset(&j, 0, sizeof j);
    return j;
}

/* --- embedding: x[b,t,:] = wte[token] + wpe[t] --- */

static void photon__encoder_forward_rows(void *ctx, size_t begin, size_t end, int thread) {
    const photon__layer_job *j = (const photon__layer_job *)ctx;
    size_t n;
    int i, C = j->C;
    (void)thread;
    for (n = begin; n < end; n++) {
        const float *tok = j->in + (size_t)j->tokens[n] * C, *pos = j->in2 + (n % (size_t)j->T) * C;
        float *o = j->out + n * C;
        for (i = 0; i < C; i++) o[i] = tok[i] + pos[i];
    }
}

static void photon__encoder_forward(float *out, const int *inputs, const float *wte, const float *wpe, int B, int T,
                                    int C) {
    photon__layer_job j = photon__job();
    j.out = out, j.tokens = inputs, j.in = wte, j.in2 = wpe, j.T = T, j.C = C;
    photon__parallel_range((size_t)B * T, 16, photon__encoder_forward_rows, &j);
}

/* Tokens repeat, so rows may add into the same row of dwte: each task owns a
   range of columns instead, and adds the rows in order. */
static void photon__encoder_backward_cols(void *ctx, size_t begin, size_t end, int thread) {
    const photon__layer_job *j = (const photon__layer_job *)ctx;
    size_t n, N = (size_t)j->B * j->T, c, C = (size_t)j->C;
    (void)thread;
    for (n = 0; n < N; n++) {
        const float *d = j->in + n * C;
        float *dtok = j->out + (size_t)j->tokens[n] * C, *dpos = j->out2 + (n % (size_t)j->T) * C;
        for (c = begin; c < end; c++) {
            dtok[c] += d[c];
            dpos[c] += d[c];
        }
    }
}

static void photon__encoder_backward(float *dwte, float *dwpe, const float *dout, const int *inputs, int B, int T,
                                     int C) {
    photon__layer_job j = photon__job();
    j.out = dwte, j.out2 = dwpe, j.in = dout, j.tokens = inputs, j.B = B, j.T = T, j.C = C;
    photon__parallel_range((size_t)C, 32, photon__encoder_backward_cols, &j);
}

/* --- LayerNorm over the last dimension, eps 1e-5, biased variance --- */

#define PHOTON__LN_EPS 1e-5f

/* in: x, in2: weight, in3: bias; out: y, out2: mean, out3: rstd */
static void photon__layernorm_forward_rows(void *ctx, size_t begin, size_t end, int thread) {
    const photon__layer_job *j = (const photon__layer_job *)ctx;
    size_t n;
    int i, C = j->C;
    (void)thread;
    for (n = begin; n < end; n++) {
        const float *x = j->in + n * C;
        float *o = j->out + n * C;
        float m = 0.0f, v = 0.0f, s;
        for (i = 0; i < C; i++) m += x[i];
        m /= C;
        for (i = 0; i < C; i++) v += (x[i] - m) * (x[i] - m);
        v /= C;
        s = 1.0f / sqrtf(v + PHOTON__LN_EPS);
        for (i = 0; i < C; i++) o[i] = (x[i] - m) * s * j->in2[i] + j->in3[i];
        j->out2[n] = m;
        j->out3[n] = s;
    }
}

static void photon__layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                                      const float *bias, int N, int C) {
    photon__layer_job j = photon__job();
    j.out = out, j.out2 = mean, j.out3 = rstd, j.in = inp, j.in2 = weight, j.in3 = bias, j.C = C;
    photon__parallel_range((size_t)N, 8, photon__layernorm_forward_rows, &j);
}

/* With xhat = (x - mean) * rstd and g = dout * weight:
   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), by rows;
   dweight = sum over rows of dout * xhat, dbias = sum of dout, by columns.
   in: dout, in2: x, in3: weight, in4: mean, in5: rstd; out: dx, out2: dweight, out3: dbias */
static void photon__layernorm_backward_rows(void *ctx, size_t begin, size_t end, int thread) {
    const photon__layer_job *j = (const photon__layer_job *)ctx;
    size_t n;
    int i, C = j->C;
    (void)thread;
    for (n = begin; n < end; n++) {
        const float *x = j->in2 + n * C, *d = j->in + n * C, *w = j->in3;
        float *dx = j->out + n * C, mean = j->in4[n], rstd = j->in5[n];
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
    const photon__layer_job *j = (const photon__layer_job *)ctx;
    size_t n, c, C = (size_t)j->C, N = (size_t)j->B;
    (void)thread;
    for (n = 0; n < N; n++) {
        const float *x = j->in2 + n * C, *d = j->in + n * C;
        float mean = j->in4[n], rstd = j->in5[n];
        for (c = begin; c < end; c++) {
            j->out2[c] += d[c] * ((x[c] - mean) * rstd);
            j->out3[c] += d[c];
        }
    }
}

static void photon__layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                       const float *weight, const float *mean, const float *rstd, int N, int C) {
    photon__layer_job j = photon__job();
    j.out = dinp, j.out2 = dweight, j.out3 = dbias, j.in = dout, j.in2 = inp, j.in3 = weight, j.in4 = mean;
    j.in5 = rstd, j.B = N, j.C = C;
    photon__parallel_range((size_t)N, 8, photon__layernorm_backward_rows, &j);
    photon__parallel_range((size_t)C, 32, photon__layernorm_backward_cols, &j);
}

/* --- linear layer: out (N,OC) = inp (N,IC) x W (IC,OC) + bias (OC) --- */

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

typedef struct photon__attention_job {
    float *out, *att, *dqkv;
    const float *qkv, *dout, *att_in;
    int B, T, C, NH;
} photon__attention_job;

/* One (batch row, head) pair: every query position t over keys t2 <= t. */
static void photon__attention_forward_task(void *ctx, int task, int thread) {
    const photon__attention_job *j = (const photon__attention_job *)ctx;
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
    photon__attention_job j;
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
    const photon__attention_job *j = (const photon__attention_job *)ctx;
    int T = j->T, C = j->C, NH = j->NH, hs = C / NH, b = task / NH, h = task % NH, t, t2, i;
    float scale = 1.0f / sqrtf((float)hs), *datt = photon__scratch(thread, (size_t)T);
    PHOTON_ASSERT(datt != NULL);
    for (t = 0; t < T; t++) {
        const float *q = j->qkv + ((size_t)b * T + t) * 3 * C + h * hs;
        float *dq = j->dqkv + ((size_t)b * T + t) * 3 * C + h * hs;
        const float *a = j->att_in + (((size_t)b * NH + h) * T + t) * T;
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
    photon__attention_job j;
    memset(&j, 0, sizeof j);
    j.dqkv = dqkv, j.dout = dout, j.qkv = qkv, j.att_in = att, j.B = B, j.T = T, j.C = C, j.NH = NH;
    photon__parallel(B * NH, photon__attention_backward_task, &j);
}

/* --- GELU, tanh approximation (GPT-2's "gelu_new") --- */

#define PHOTON__GELU_K 0.7978845608028654f /* sqrt(2/pi) */

#define PHOTON__CHUNK 256

/* th[i] = tanh(sqrt(2/pi) (x + 0.044715 x^3)) for a chunk of x */
static void photon__gelu_tanh(float *th, const float *x, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) th[i] = PHOTON__GELU_K * (x[i] + 0.044715f * x[i] * x[i] * x[i]);
    photon__tanh_array(th, th, n);
}

static void photon__gelu_forward_range(void *ctx, size_t begin, size_t end, int thread) {
    const photon__layer_job *j = (const photon__layer_job *)ctx;
    float th[PHOTON__CHUNK];
    size_t c, i;
    (void)thread;
    for (c = begin; c < end; c += PHOTON__CHUNK) {
        size_t n = end - c < PHOTON__CHUNK ? end - c : PHOTON__CHUNK;
        const float *x = j->in + c;
        photon__gelu_tanh(th, x, n);
        for (i = 0; i < n; i++) j->out[c + i] = 0.5f * x[i] * (1.0f + th[i]);
    }
}

static void photon__gelu_forward(float *out, const float *inp, size_t n) {
    photon__layer_job j = photon__job();
    j.out = out, j.in = inp;
    photon__parallel_range(n, 16384, photon__gelu_forward_range, &j);
}

static void photon__gelu_backward_range(void *ctx, size_t begin, size_t end, int thread) {
    const photon__layer_job *j = (const photon__layer_job *)ctx;
    float th[PHOTON__CHUNK];
    size_t c, i;
    (void)thread;
    for (c = begin; c < end; c += PHOTON__CHUNK) {
        size_t n = end - c < PHOTON__CHUNK ? end - c : PHOTON__CHUNK;
        const float *x = j->in + c, *d = j->in2 + c;
        photon__gelu_tanh(th, x, n);
        for (i = 0; i < n; i++) {
            float sech2 = 1.0f - th[i] * th[i];
            float local = 0.5f * (1.0f + th[i]) +
                          0.5f * x[i] * sech2 * PHOTON__GELU_K * (1.0f + 3.0f * 0.044715f * x[i] * x[i]);
            j->out[c + i] += local * d[i];
        }
    }
}

static void photon__gelu_backward(float *dinp, const float *inp, const float *dout, size_t n) {
    photon__layer_job j = photon__job();
    j.out = dinp, j.in = inp, j.in2 = dout;
    photon__parallel_range(n, 16384, photon__gelu_backward_range, &j);
}

/* --- residual connection: out = a + b --- */

static void photon__residual_forward_range(void *ctx, size_t begin, size_t end, int thread) {
    const photon__layer_job *j = (const photon__layer_job *)ctx;
    size_t i;
    (void)thread;
    for (i = begin; i < end; i++) j->out[i] = j->in[i] + j->in2[i];
}

static void photon__residual_forward(float *out, const float *a, const float *b, size_t n) {
    photon__layer_job j = photon__job();
    j.out = out, j.in = a, j.in2 = b;
    photon__parallel_range(n, 16384, photon__residual_forward_range, &j);
}

static void photon__residual_backward_range(void *ctx, size_t begin, size_t end, int thread) {
    const photon__layer_job *j = (const photon__layer_job *)ctx;
    size_t i;
    (void)thread;
    for (i = begin; i < end; i++) {
        j->out[i] += j->in[i];
        j->out2[i] += j->in[i];
    }
}

static void photon__residual_backward(float *da, float *db, const float *dout, size_t n) {
    photon__layer_job j = photon__job();
    j.out = da, j.out2 = db, j.in = dout;
    photon__parallel_range(n, 16384, photon__residual_backward_range, &j);
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
   finite where probs[target] underflows to zero.
   in: logits; tokens: targets (may be NULL); out: probs; out2: losses */

static void photon__softmax_crossentropy_rows(void *ctx, size_t begin, size_t end, int thread) {
    const photon__layer_job *j = (const photon__layer_job *)ctx;
    size_t n;
    int v, V = j->V;
    (void)thread;
    for (n = begin; n < end; n++) {
        const float *l = j->in + n * V;
        float *p = j->out + n * V;
        float maxval = photon__max(l, (size_t)V), sum, inv, target = j->tokens ? l[j->tokens[n]] : 0.0f;
        photon__exp_shifted(p, l, maxval, (size_t)V); /* p may be l */
        sum = photon__sum(p, (size_t)V);
        inv = 1.0f / sum;
        for (v = 0; v < V; v++) p[v] *= inv;
        if (j->tokens) j->out2[n] = logf(sum) - (target - maxval);
    }
}

static void photon__softmax_crossentropy_forward(float *probs, float *losses, const float *logits, const int *targets,
                                                 int N, int V) {
    photon__layer_job j = photon__job();
    j.out = probs, j.out2 = losses, j.in = logits, j.tokens = targets, j.V = V;
    photon__parallel_range((size_t)N, 1, photon__softmax_crossentropy_rows, &j);
}

/* d loss_n / d logits = (probs - onehot(target)) * dloss, written over the
   probabilities (out may be in: each element is read once, then written) */
static void photon__crossentropy_softmax_rows(void *ctx, size_t begin, size_t end, int thread) {
    const photon__layer_job *j = (const photon__layer_job *)ctx;
    size_t n;
    int v, V = j->V;
    (void)thread;
    for (n = begin; n < end; n++) {
        const float *p = j->in + n * V;
        float *d = j->out + n * V;
        for (v = 0; v < V; v++) d[v] = p[v] * j->scale;
        d[j->tokens[n]] -= j->scale;
    }
}

static void photon__crossentropy_softmax_backward(float *dlogits, const float *probs, const int *targets,
                                                  float dloss, int N, int V) {
    photon__layer_job j = photon__job();
    j.out = dlogits, j.in = probs, j.tokens = targets, j.scale = dloss, j.V = V;
    photon__parallel_range((size_t)N, 1, photon__crossentropy_softmax_rows, &j);
}

/* ======================================================================= */
/* The model: forward and backward over all layers                         */
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
/* The local optimizer: schedule, clipping, AdamW                          */
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
/* Data: token shards and text                                             */
/* ======================================================================= */

#define PHOTON__SHARD_MAGIC 20240520
#define PHOTON__SHARD_HEADER_BYTES 1024

/* Opens a regular file for reading and tells its size. A directory or a
   device is refused: fopen accepts them, but their "size" is meaningless. */
static photon_result photon__open_regular(const char *path, FILE **out, long *size, photon_error *err) {
    FILE *f;
#ifdef PHOTON__POSIX
    struct stat info;
    if (stat(path, &info) == 0 && !S_ISREG(info.st_mode))
        return photon__fail(err, PHOTON_ERR_IO, "%s: not a regular file", path);
#endif
    f = fopen(path, "rb");
    if (!f) return photon__fail(err, PHOTON_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0 || (*size = ftell(f)) < 0 || *size == LONG_MAX || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return photon__fail(err, PHOTON_ERR_IO, "%s: cannot determine its size (not a regular file?)", path);
    }
    *out = f;
    return PHOTON_OK;
}

/* Reads a whole file; the message names the file. */
static photon_result photon__read_file(const char *path, unsigned char **data, size_t *size, photon_error *err) {
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
    *size = (size_t)len;
    return PHOTON_OK;
}

static uint32_t photon__le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int photon__is_shard(const unsigned char *data, size_t size) {
    return size >= 4 && photon__le32(data) == PHOTON__SHARD_MAGIC;
}

/* Appends a file's tokens to ds; *is_text says whether it was text. */
static photon_result photon__append_file(photon_dataset *ds, const char *path, struct photon_bpe *bpe,
                                         int *is_text, photon_error *err) {
    unsigned char *data;
    uint16_t *encoded = NULL;
    size_t size, count, i, offset = 0;
    uint16_t *grown;
    photon_result r = photon__read_file(path, &data, &size, err);
    if (r != PHOTON_OK) return r;
    *is_text = !photon__is_shard(data, size);
    if (*is_text && bpe) {
        encoded = (uint16_t *)PHOTON_MALLOC((size ? size : 1) * sizeof(uint16_t));
        if (!encoded) r = photon__fail(err, PHOTON_ERR_MEMORY, "%s: cannot allocate %zu tokens", path, size);
        else {
            photon_error why;
            if ((r = photon_bpe_encode(bpe, data, size, encoded, &count, &why)) != PHOTON_OK)
                r = photon__fail(err, r, "%s: %s", path, why.message);
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
        if (version != 1) {
            PHOTON_FREE(data);
            return photon__fail(err, PHOTON_ERR_FORMAT, "%s: token shard version %u is not supported (expected 1)", path,
                                version);
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
    return photon_dataset_load_bpe(ds, paths, num_paths, NULL, err);
}

PHOTONDEF photon_result photon_dataset_load_bpe(photon_dataset *ds, const char *const *paths, int num_paths,
                                                struct photon_bpe *bpe, photon_error *err) {
    int i, all_text = 1;
    size_t k;
    memset(ds, 0, sizeof *ds);
    if (num_paths < 1) return photon__fail(err, PHOTON_ERR_ARGUMENT, "no data files given");
    for (i = 0; i < num_paths; i++) {
        int is_text;
        photon_result r = photon__append_file(ds, paths[i], bpe, &is_text, err);
        if (r != PHOTON_OK) {
            photon_dataset_free(ds);
            return r;
        }
        all_text &= is_text;
    }
    if (!all_text) ds->text_bytes = 0;
    ds->byte_level = all_text && !bpe;
    if (bpe) { /* the bytes of every token id, for exact bits per byte */
        ds->token_len = (uint32_t *)photon__calloc((size_t)bpe->vocab_size, sizeof(uint32_t));
        if (!ds->token_len) {
            photon_dataset_free(ds);
            return photon__fail(err, PHOTON_ERR_MEMORY, "cannot allocate the token lengths");
        }
        ds->token_len_count = bpe->vocab_size;
        for (i = 0; i < bpe->vocab_size; i++) {
            size_t len = 0;
            photon_bpe_token(bpe, i, &len);
            ds->token_len[i] = (uint32_t)len;
        }
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

/* ======================================================================= */
/* Sampling                                                                */
/* ======================================================================= */

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
/* Files: atomic writes                                                    */
/* ======================================================================= */
/* Every output is written to PATH.tmp (PATH.PID.tmp on POSIX, so that two
   writers do not share it), flushed to disk, then renamed over PATH, so a
   reader sees the old file or the whole new one, never a part. */

typedef struct photon__atomic {
    FILE *f;
    char *tmp;
    const char *path;
} photon__atomic;

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

/* After a rename, the directory entry itself must reach the disk too. */
static void photon__sync_directory(const char *path) {
#ifdef PHOTON__HAVE_FSYNC
    char dir[4096];
    const char *slash = strrchr(path, '/');
    int fd;
    if (!slash) snprintf(dir, sizeof dir, ".");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path) + (slash == path), path);
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

/* A growing text buffer for JSON headers. */
typedef struct photon__text {
    char *s;
    size_t len, cap;
    int failed;
} photon__text;

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

/* ======================================================================= */
/* safetensors: reading and validating                                     */
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

static int photon__valid_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        uint32_t cp;
        int k;
        if (len == 0 || i + (size_t)len > n) return 0;
        cp = len == 1 ? c : len == 2 ? (c & 0x1fu) : len == 3 ? (c & 0x0fu) : (c & 0x07u);
        for (k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3fu);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += (size_t)len;
    }
    return 1;
}

/* A small JSON reader over the header text. */
typedef struct photon__json {
    const char *s;
    size_t n, pos;
    const char *path;
    photon_error *err;
} photon__json;

static photon_result photon__json_error(photon__json *j, const char *what) {
    return photon__fail(j->err, PHOTON_ERR_FORMAT, "%s: invalid JSON in header at byte %zu: %s", j->path, j->pos, what);
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

static void photon__utf8_put(photon__text *t, uint32_t cp) {
    char b[4];
    size_t n;
    if (cp < 0x80) { b[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { b[0] = (char)(0xc0 | cp >> 6); b[1] = (char)(0x80 | (cp & 0x3f)); n = 2; }
    else if (cp < 0x10000) { b[0] = (char)(0xe0 | cp >> 12); b[1] = (char)(0x80 | (cp >> 6 & 0x3f)); b[2] = (char)(0x80 | (cp & 0x3f)); n = 3; }
    else { b[0] = (char)(0xf0 | cp >> 18); b[1] = (char)(0x80 | (cp >> 12 & 0x3f)); b[2] = (char)(0x80 | (cp >> 6 & 0x3f)); b[3] = (char)(0x80 | (cp & 0x3f)); n = 4; }
    photon__text_append(t, b, n);
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
        if (photon_st_meta(st, key)) {
            r = photon__fail(j->err, PHOTON_ERR_FORMAT, "%s: __metadata__ key '%.60s' appears twice", j->path, key);
            PHOTON_FREE(key);
            PHOTON_FREE(value);
            return r;
        }
        keys = (char **)PHOTON_MALLOC((size_t)(st->num_meta + 1) * sizeof(char *));
        values = (char **)PHOTON_MALLOC((size_t)(st->num_meta + 1) * sizeof(char *));
        if (!keys || !values) {
            PHOTON_FREE(keys);
            PHOTON_FREE(values);
            PHOTON_FREE(key);
            PHOTON_FREE(value);
            return photon__fail(j->err, PHOTON_ERR_MEMORY, "%s: out of memory reading __metadata__", j->path);
        }
        if (st->num_meta) {
            memcpy(keys, st->meta_keys, (size_t)st->num_meta * sizeof(char *));
            memcpy(values, st->meta_values, (size_t)st->num_meta * sizeof(char *));
        }
        PHOTON_FREE(st->meta_keys);
        PHOTON_FREE(st->meta_values);
        keys[st->num_meta] = key;
        values[st->num_meta] = value;
        st->meta_keys = keys;
        st->meta_values = values;
        st->num_meta++;
    } while (photon__json_accept(j, ','));
    return photon__json_accept(j, '}') ? PHOTON_OK : photon__json_error(j, "expected ',' or '}'");
}

static photon_result photon__st_add_tensor(photon_st_file *st, photon__json *j, char *name) {
    photon_st_tensor *grown;
    int i;
    photon_result r;
    for (i = 0; i < st->num_tensors; i++)
        if (strcmp(st->tensors[i].name, name) == 0) {
            r = photon__fail(j->err, PHOTON_ERR_FORMAT, "%s: tensor name '%.60s' appears twice", j->path, name);
            PHOTON_FREE(name);
            return r;
        }
    grown = (photon_st_tensor *)photon__calloc((size_t)st->num_tensors + 1, sizeof(photon_st_tensor));
    if (!grown) {
        PHOTON_FREE(name);
        return photon__fail(j->err, PHOTON_ERR_MEMORY, "%s: out of memory reading the header", j->path);
    }
    if (st->num_tensors) memcpy(grown, st->tensors, (size_t)st->num_tensors * sizeof(photon_st_tensor));
    PHOTON_FREE(st->tensors);
    st->tensors = grown;
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
static photon_result photon__st_check_layout(const photon_st_file *st, photon_error *err) {
    uint64_t data_size = st->file_size - st->data_start, expected = 0;
    int *order = (int *)photon__calloc((size_t)st->num_tensors + 1, sizeof(int)), i, k;
    photon_result r = PHOTON_OK;
    if (!order) return photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory checking offsets", st->path);
    for (i = 0; i < st->num_tensors; i++) { /* insertion sort by (begin, end) */
        for (k = i; k > 0; k--) {
            const photon_st_tensor *a = &st->tensors[order[k - 1]];
            if (a->begin < st->tensors[i].begin || (a->begin == st->tensors[i].begin && a->end <= st->tensors[i].end))
                break;
            order[k] = order[k - 1];
        }
        order[k] = i;
    }
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
    j.s = header;
    j.n = (size_t)header_len;
    j.pos = 0;
    j.path = path;
    j.err = err;
    if (!photon__valid_utf8((const unsigned char *)header, (size_t)header_len))
        r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: header is not valid UTF-8", path);
    else if ((r = photon__st_parse_header(st, &j)) == PHOTON_OK && (r = photon__st_check_spans(st, err)) == PHOTON_OK)
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
    PHOTON_FREE(st->path);
    memset(st, 0, sizeof *st);
}

PHOTONDEF const char *photon_st_meta(const photon_st_file *st, const char *key) {
    int i;
    for (i = 0; i < st->num_meta; i++)
        if (strcmp(st->meta_keys[i], key) == 0) return st->meta_values[i];
    return NULL;
}

PHOTONDEF const photon_st_tensor *photon_st_find(const photon_st_file *st, const char *name) {
    int i;
    for (i = 0; i < st->num_tensors; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    return NULL;
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

/* ======================================================================= */
/* safetensors: writing                                                    */
/* ======================================================================= */

PHOTONDEF photon_result photon_st_write_f32(const char *path, const photon_st_entry *entries, int num_entries,
                                            const char *const *meta_keys, const char *const *meta_values,
                                            int num_meta, photon_error *err) {
    photon__text h = {NULL, 0, 0, 0};
    photon__atomic out;
    uint64_t offset = 0, len;
    unsigned char len8[8];
    photon_result r;
    int i, k;
    if (!photon__little_endian()) return photon__fail(err, PHOTON_ERR_ARGUMENT, "photon needs a little-endian host");
    photon__text_puts(&h, "{");
    if (num_meta > 0) {
        photon__text_puts(&h, "\"__metadata__\":{");
        for (i = 0; i < num_meta; i++) {
            if (i) photon__text_puts(&h, ",");
            photon__text_json_string(&h, meta_keys[i]);
            photon__text_puts(&h, ":");
            photon__text_json_string(&h, meta_values[i]);
        }
        photon__text_puts(&h, "}");
    }
    for (i = 0; i < num_entries; i++) {
        uint64_t bytes = 4;
        for (k = 0; k < entries[i].ndim; k++) bytes *= entries[i].shape[k];
        if (i || num_meta > 0) photon__text_puts(&h, ",");
        photon__text_json_string(&h, entries[i].name);
        photon__text_puts(&h, ":{\"dtype\":\"F32\",\"shape\":[");
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
        uint64_t n = 1;
        for (k = 0; k < entries[i].ndim; k++) n *= entries[i].shape[k];
        if (n && fwrite(entries[i].data, 4, (size_t)n, out.f) != (size_t)n) break;
    }
    return photon__atomic_commit(&out, err);
}

/* ======================================================================= */
/* Checkpoints and client state                                            */
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
    if (version != PHOTON_FORMAT_VERSION)
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
   m->params); no other tensors may be there. */
static photon_result photon__read_params(const photon_st_file *st, const photon_model *m, float *dst,
                                         photon_error *err) {
    int i;
    photon_result r;
    for (i = 0; i < m->num_tensors; i++) {
        const photon_tensor_info *info = &m->tensors[i];
        const photon_st_tensor *t = photon_st_find(st, info->name);
        if (!t) return photon__fail(err, PHOTON_ERR_MISMATCH, "%s: tensor '%s' is missing", st->path, info->name);
        if (t->ndim != info->ndim || t->shape[0] != (uint64_t)info->shape[0] ||
            (info->ndim == 2 && t->shape[1] != (uint64_t)info->shape[1]))
            return photon__fail(err, PHOTON_ERR_MISMATCH, "%s: tensor '%s' has a shape other than the config's [%d%s%d]",
                                st->path, info->name, info->shape[0], info->ndim == 2 ? "," : "",
                                info->ndim == 2 ? info->shape[1] : 0);
        if ((r = photon_st_read_f32(st, t, dst + info->offset, info->size, err)) != PHOTON_OK) return r;
    }
    for (i = 0; i < st->num_tensors; i++) {
        int k, known = 0;
        for (k = 0; k < m->num_tensors && !known; k++) known = strcmp(st->tensors[i].name, m->tensors[k].name) == 0;
        if (!known)
            return photon__fail(err, PHOTON_ERR_MISMATCH, "%s: unexpected tensor '%s'", st->path, st->tensors[i].name);
    }
    return PHOTON_OK;
}

PHOTONDEF photon_result photon_checkpoint_load(photon_model *model, const char *path, photon_error *err) {
    photon_st_file st;
    photon_config config;
    photon_result r = photon_st_open(&st, path, err);
    memset(model, 0, sizeof *model);
    if (r != PHOTON_OK) return r;
    if ((r = photon__check_kind(&st, "checkpoint", err)) == PHOTON_OK &&
        (r = photon__read_config(&st, &config, err)) == PHOTON_OK &&
        (r = photon__model_alloc(model, &config, err)) == PHOTON_OK) {
        if ((r = photon__read_params(&st, model, model->params, err)) == PHOTON_OK &&
            (r = photon__parse_u64(&st, "photon.step", &model->step, err)) == PHOTON_OK &&
            (r = photon__parse_u64(&st, "photon.tokens_seen", &model->tokens_seen, err)) == PHOTON_OK &&
            (r = photon__parse_u64(&st, "photon.seed", &model->seed, err)) == PHOTON_OK)
            r = photon__parse_u64(&st, "photon.round", &model->round, err);
        if (r != PHOTON_OK) photon_model_free(model);
    }
    photon_st_close(&st);
    return r;
}

PHOTONDEF photon_result photon_client_state_save(const photon_client_state *s, const photon_config *config,
                                                 const char *path, photon_error *err) {
    photon_st_entry entries[2];
    photon__meta meta;
    char hash[20];
    memset(entries, 0, sizeof entries);
    entries[0].name = "adamw.m";
    entries[1].name = "adamw.v";
    entries[0].ndim = entries[1].ndim = 1;
    entries[0].shape[0] = entries[1].shape[0] = s->adamw.n;
    entries[0].data = s->adamw.m;
    entries[1].data = s->adamw.v;
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)s->data_hash);
    photon__meta_header(&meta, "client_state", config);
    photon__meta_u64(&meta, "photon.step", s->step);
    photon__meta_u64(&meta, "photon.adamw_step", s->adamw.t);
    photon__meta_u64(&meta, "photon.data_position", s->data_position);
    photon__meta_u64(&meta, "photon.data_epoch", s->data_epoch);
    photon__meta_u64(&meta, "photon.data_tokens", s->data_tokens);
    photon__meta_str(&meta, "photon.data_hash", hash);
    return photon_st_write_f32(path, entries, 2, meta.keys, meta.values, meta.n, err);
}

PHOTONDEF photon_result photon_client_state_load(photon_client_state *s, const photon_config *config,
                                                 const char *path, photon_error *err) {
    photon_st_file st;
    photon_config c;
    const photon_st_tensor *m, *v;
    const char *hash;
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
    n = photon__num_params(config);
    if (!m || !v || st.num_tensors != 2)
        r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: a client state holds exactly the tensors adamw.m and adamw.v", path);
    else if (m->ndim != 1 || v->ndim != 1 || m->shape[0] != n || v->shape[0] != n)
        r = photon__fail(err, PHOTON_ERR_MISMATCH, "%s: adamw.m and adamw.v must be vectors of %zu values, one per parameter",
                         path, n);
    else if ((r = photon_adamw_state_init(&s->adamw, n, err)) == PHOTON_OK &&
             (r = photon_st_read_f32(&st, m, s->adamw.m, n, err)) == PHOTON_OK &&
             (r = photon_st_read_f32(&st, v, s->adamw.v, n, err)) == PHOTON_OK &&
             (r = photon__parse_u64(&st, "photon.step", &s->step, err)) == PHOTON_OK &&
             (r = photon__parse_u64(&st, "photon.adamw_step", &s->adamw.t, err)) == PHOTON_OK &&
             (r = photon__parse_u64(&st, "photon.data_position", &s->data_position, err)) == PHOTON_OK &&
             (r = photon__parse_u64(&st, "photon.data_epoch", &s->data_epoch, err)) == PHOTON_OK &&
             (r = photon__parse_u64(&st, "photon.data_tokens", &s->data_tokens, err)) == PHOTON_OK) {
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
    if (r != PHOTON_OK) photon_adamw_state_free(&s->adamw);
    photon_st_close(&st);
    return r;
}

PHOTONDEF photon_result photon_write_hf_config(const photon_config *c, const char *path, photon_error *err) {
    photon__atomic out;
    photon_result r = photon_config_validate(c, err);
    if (r != PHOTON_OK) return r;
    if ((r = photon__atomic_open(&out, path, err)) != PHOTON_OK) return r;
    fprintf(out.f,
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
            c->vocab_size, c->n_ctx, c->n_ctx, c->n_embd, c->n_layer, c->n_head, c->vocab_size - 1, c->vocab_size - 1);
    return photon__atomic_commit(&out, err);
}


/* ======================================================================= */
/* Federation: SHA-256 (FIPS 180-4)                                        */
/* ======================================================================= */

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
    FILE *f = fopen(path, "rb");
    if (!f) return photon__fail(err, PHOTON_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
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

/* ======================================================================= */
/* Federation: deltas                                                      */
/* ======================================================================= */
/* A delta is the client's pseudo-gradient, global - local, in the
   checkpoint's tensor layout, with what the aggregator needs to weigh and
   audit it in __metadata__. */

static int photon__valid_client_id(const char *id) {
    size_t n = strlen(id);
    return n > 0 && n < 64 && strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

static int photon__valid_sha256(const char *hex) {
    return hex && strlen(hex) == 64 && strspn(hex, "0123456789abcdef") == 64;
}

/* The tensor entries of a buffer laid out as the model's parameters. */
static photon_st_entry *photon__entries(const photon_model *m, const float *buffer) {
    photon_st_entry *e = (photon_st_entry *)photon__calloc((size_t)m->num_tensors, sizeof(photon_st_entry));
    int i;
    for (i = 0; e && i < m->num_tensors; i++) {
        e[i].name = m->tensors[i].name;
        e[i].ndim = m->tensors[i].ndim;
        e[i].shape[0] = (uint64_t)m->tensors[i].shape[0];
        e[i].shape[1] = (uint64_t)m->tensors[i].shape[1];
        e[i].data = buffer + m->tensors[i].offset;
    }
    return e;
}

PHOTONDEF photon_result photon_delta_save(const photon_model *model, const float *base_params,
                                          const photon_delta_info *info, const char *path, photon_error *err) {
    float *delta;
    photon_st_entry *entries;
    photon__meta meta;
    char loss[32];
    photon_result r;
    size_t i;
    if (!photon__valid_client_id(info->client))
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "client id '%s' must be 1 to 63 letters, digits, '.', '_' or '-'",
                            info->client);
    if (!photon__valid_sha256(info->base_sha256))
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "base hash '%s' is not 64 lowercase hex digits", info->base_sha256);
    delta = (float *)photon__calloc(model->num_params, sizeof(float));
    entries = photon__entries(model, delta);
    if (!delta || !entries) {
        PHOTON_FREE(delta);
        PHOTON_FREE(entries);
        return photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", path);
    }
    for (i = 0; i < model->num_params; i++) delta[i] = base_params[i] - model->params[i];
    snprintf(loss, sizeof loss, "%.9g", (double)info->loss);
    photon__meta_header(&meta, "delta", &model->config);
    photon__meta_str(&meta, "photon.base_sha256", info->base_sha256);
    photon__meta_u64(&meta, "photon.round", info->round);
    photon__meta_str(&meta, "photon.client", info->client);
    photon__meta_u64(&meta, "photon.local_steps", info->local_steps);
    photon__meta_u64(&meta, "photon.tokens", info->tokens);
    photon__meta_str(&meta, "photon.loss", loss);
    r = photon_st_write_f32(path, entries, model->num_tensors, meta.keys, meta.values, meta.n, err);
    PHOTON_FREE(delta);
    PHOTON_FREE(entries);
    return r;
}

/* Reads a delta's header and metadata (not its values). */
static photon_result photon__delta_open(const photon_model *model, const char *path, photon_st_file *st,
                                        photon_delta_info *info, photon_error *err) {
    photon_config c;
    const char *v;
    photon_result r = photon_st_open(st, path, err);
    memset(info, 0, sizeof *info);
    if (r != PHOTON_OK) return r;
    if ((r = photon__check_kind(st, "delta", err)) != PHOTON_OK || (r = photon__read_config(st, &c, err)) != PHOTON_OK ||
        (r = photon__parse_u64(st, "photon.round", &info->round, err)) != PHOTON_OK ||
        (r = photon__parse_u64(st, "photon.local_steps", &info->local_steps, err)) != PHOTON_OK ||
        (r = photon__parse_u64(st, "photon.tokens", &info->tokens, err)) != PHOTON_OK)
        goto fail;
    if (memcmp(&c, &model->config, sizeof c) != 0) {
        r = photon__fail(err, PHOTON_ERR_MISMATCH, "%s: delta is for a model with vocab %d, ctx %d, %d layers, %d heads, "
                         "width %d, not this one", path, c.vocab_size, c.n_ctx, c.n_layer, c.n_head, c.n_embd);
        goto fail;
    }
    v = photon_st_meta(st, "photon.base_sha256");
    if (!photon__valid_sha256(v)) {
        r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: __metadata__ photon.base_sha256 is not 64 hex digits", path);
        goto fail;
    }
    memcpy(info->base_sha256, v, 65);
    v = photon_st_meta(st, "photon.client");
    if (!v || !photon__valid_client_id(v)) {
        r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: __metadata__ photon.client is missing or not a valid client id", path);
        goto fail;
    }
    snprintf(info->client, sizeof info->client, "%s", v);
    v = photon_st_meta(st, "photon.loss");
    {
        char *end = NULL;
        double loss = v ? strtod(v, &end) : NAN;
        if (!v || end == v || *end || !(loss - loss == 0.0)) {
            r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: __metadata__ photon.loss is missing or not a finite number", path);
            goto fail;
        }
        info->loss = (float)loss;
    }
    if (info->tokens == 0) {
        r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: delta trained on 0 tokens", path);
        goto fail;
    }
    return PHOTON_OK;
fail:
    photon_st_close(st);
    return r;
}

PHOTONDEF photon_result photon_delta_load(const photon_model *model, const char *path, photon_delta_info *info,
                                          float *values, photon_error *err) {
    photon_st_file st;
    photon_result r = photon__delta_open(model, path, &st, info, err);
    if (r != PHOTON_OK) return r;
    r = photon__read_params(&st, model, values, err);
    photon_st_close(&st);
    return r;
}

/* ======================================================================= */
/* Federation: outer optimizers                                            */
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
    for (k = 0; k < expected && r == PHOTON_OK; k++) {
        const photon_st_tensor *t = photon_st_find(&st, names[k]);
        if (!t || t->ndim != 1 || t->shape[0] != s->n)
            r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: tensor %s is missing or not a vector of %zu values", path,
                             names[k], s->n);
        else
            r = photon_st_read_f32(&st, t, k == 0 ? s->m : s->v, s->n, err);
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
/* Federation: the merge                                                   */
/* ======================================================================= */

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
    return c ? c : strcmp(a->sha256, b->sha256);
}

/* Pass 1: each delta's header, checked against the base. */
static void photon__merge_inspect(photon_merge_result *res, const char *base_hash, photon_merge_entry *e) {
    photon_st_file st;
    photon_error why;
    if (photon_sha256_file(e->path, e->sha256, &why) != PHOTON_OK ||
        photon__delta_open(&res->model, e->path, &st, &e->info, &why) != PHOTON_OK) {
        snprintf(e->reason, sizeof e->reason, "%s", why.message);
        return;
    }
    photon_st_close(&st);
    if (strcmp(e->info.base_sha256, base_hash) != 0)
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
} photon__inspect_job;

static void photon__inspect_task(void *ctx, int task, int thread) {
    photon__inspect_job *j = (photon__inspect_job *)ctx;
    (void)thread;
    photon__merge_inspect(j->res, j->base_hash, &j->res->entries[task]);
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

/* The audit trail: what was merged, how, and from what. */
static photon_result photon__merge_audit(photon_merge_result *res, const char *base_hash, const char *state_hash,
                                         const photon_merge_options *o, photon_error *err) {
    char key[64];
    int i, n = 0, skipped = 0;
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
        snprintf(key, sizeof key, "photon.delta.%d.local_steps", n++);
        if (r == PHOTON_OK) r = photon__audit_u64(res, key, e->info.local_steps, err);
    }
    for (i = 0; i < res->num_entries && r == PHOTON_OK; i++) {
        const photon_merge_entry *e = &res->entries[i];
        if (e->accepted) continue;
        snprintf(key, sizeof key, "photon.skipped.%d.sha256", skipped);
        r = photon__audit(res, key, e->sha256[0] ? e->sha256 : "unreadable", err);
        snprintf(key, sizeof key, "photon.skipped.%d.client", skipped++);
        if (r == PHOTON_OK) r = photon__audit(res, key, e->info.client[0] ? e->info.client : "unknown", err);
    }
    return r;
}

/* sum += w * values, elementwise; each element on its own, so in parallel. */
typedef struct photon__axpy_job {
    double *sum;
    const float *values;
    double w;
} photon__axpy_job;

static void photon__axpy_range(void *ctx, size_t begin, size_t end, int thread) {
    const photon__axpy_job *j = (const photon__axpy_job *)ctx;
    size_t i;
    (void)thread;
    for (i = begin; i < end; i++) j->sum[i] += j->w * (double)j->values[i];
}

/* Pass 2: read the accepted deltas one at a time and add them up, weighted,
   in double; a delta whose values are bad (NaN, Inf, unreadable) is refused
   here. Returns the sum of the weights. */
static double photon__merge_accumulate(photon_merge_result *res, const photon_merge_options *o, double *sum,
                                       float *values) {
    double total = 0.0;
    size_t n = res->model.num_params;
    int i;
    for (i = 0; i < res->num_entries; i++) {
        photon_merge_entry *e = &res->entries[i];
        photon_delta_info info;
        photon_error why;
        double w;
        if (!e->accepted) continue;
        if (photon_delta_load(&res->model, e->path, &info, values, &why) != PHOTON_OK) {
            e->accepted = 0;
            snprintf(e->reason, sizeof e->reason, "%s", why.message);
            if (!o->skip_bad) return 0.0;
            continue;
        }
        w = o->outer.uniform ? 1.0 : (double)e->info.tokens;
        {
            photon__axpy_job job;
            job.sum = sum, job.values = values, job.w = w;
            photon__parallel_range(n, 65536, photon__axpy_range, &job);
        }
        e->weight = w;
        total += w;
    }
    return total;
}

/* The first refused delta's reason, as the merge's error. */
static photon_result photon__merge_first_refusal(const photon_merge_result *res, photon_error *err) {
    int i;
    for (i = 0; i < res->num_entries; i++)
        if (!res->entries[i].accepted)
            return photon__fail(err, PHOTON_ERR_MISMATCH, "%s", res->entries[i].reason);
    return PHOTON_OK;
}

PHOTONDEF photon_result photon_merge(const char *base_path, const char *const *delta_paths, int num_deltas,
                                     const char *server_state_path, const photon_merge_options *o,
                                     photon_merge_result *res, photon_error *err) {
    char base_hash[65], state_hash[65] = "none";
    double *sum = NULL, total;
    float *values = NULL;
    uint64_t max_steps = 0, tokens = 0;
    size_t j, n;
    int i, k;
    photon_result r;
    memset(res, 0, sizeof *res);
    if (num_deltas < 1) return photon__fail(err, PHOTON_ERR_ARGUMENT, "no deltas to merge");
    if ((r = photon_sha256_file(base_path, base_hash, err)) != PHOTON_OK ||
        (r = photon_checkpoint_load(&res->model, base_path, err)) != PHOTON_OK)
        return r;
    n = res->model.num_params;
    PHOTON_FREE(res->model.grads); /* the merge needs no gradients */
    res->model.grads = NULL;
    if (server_state_path && photon__file_exists(server_state_path)) {
        if ((r = photon_sha256_file(server_state_path, state_hash, err)) != PHOTON_OK ||
            (r = photon_server_state_load(&res->state, &res->model.config, server_state_path, err)) != PHOTON_OK)
            goto fail;
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
    sum = (double *)photon__calloc(n, sizeof(double));
    values = (float *)photon__calloc(n, sizeof(float));
    if (!res->entries || !sum || !values) {
        r = photon__fail(err, PHOTON_ERR_MEMORY, "out of memory merging %d deltas", num_deltas);
        goto fail;
    }
    res->num_entries = num_deltas;
    for (i = 0; i < num_deltas; i++) res->entries[i].path = delta_paths[i];
    {   /* hashing the deltas is most of this pass: one task per delta */
        photon__inspect_job job;
        job.res = res;
        job.base_hash = base_hash;
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
    total = photon__merge_accumulate(res, o, sum, values);
    if (!o->skip_bad && (r = photon__merge_first_refusal(res, err)) != PHOTON_OK) goto fail;
    for (i = 0; i < num_deltas; i++)
        if (res->entries[i].accepted) {
            res->accepted++;
            res->entries[i].weight /= total;
            tokens += res->entries[i].info.tokens;
            if (res->entries[i].info.local_steps > max_steps) max_steps = res->entries[i].info.local_steps;
        }
    if (res->accepted < (o->min_clients > 1 ? o->min_clients : 1)) {
        r = photon__fail(err, PHOTON_ERR_ARGUMENT, "only %d valid deltas of %d; the merge needs at least %d", res->accepted,
                         num_deltas, o->min_clients > 1 ? o->min_clients : 1);
        goto fail;
    }
    for (j = 0; j < n; j++) values[j] = (float)(sum[j] / total); /* the weighted average delta */
    photon_outer_step(res->model.params, values, n, &o->outer, &res->state);
    for (j = 0; j < n; j++)
        if (!photon__is_finite(res->model.params[j])) {
            r = photon__fail(err, PHOTON_ERR_NUMERIC, "the outer step produced a non-finite parameter at index %zu", j);
            goto fail;
        }
    res->model.step += max_steps; /* every client follows one schedule */
    res->model.tokens_seen += tokens;
    res->model.round += 1;
    res->state.round = res->model.round;
    if ((r = photon__merge_audit(res, base_hash, state_hash, o, err)) != PHOTON_OK) goto fail;
    PHOTON_FREE(sum);
    PHOTON_FREE(values);
    return PHOTON_OK;
fail:
    PHOTON_FREE(sum);
    PHOTON_FREE(values);
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
    PHOTON_FREE(res->entries);
    photon_server_state_free(&res->state);
    photon_model_free(&res->model);
    memset(res, 0, sizeof *res);
}

PHOTONDEF photon_result photon_merge_save(const photon_merge_result *res, const char *path, photon_error *err) {
    return photon__checkpoint_write(&res->model, path, (const char *const *)res->meta_keys,
                                    (const char *const *)res->meta_values, res->num_meta, err);
}

/* ======================================================================= */
/* BPE: character classes of the pre-tokenizer                            */
/* ======================================================================= */

enum { PHOTON__BPE_OTHER = 0, PHOTON__BPE_LETTER = 1, PHOTON__BPE_NUMBER = 2, PHOTON__BPE_SPACE = 3 };

static const unsigned char photon__bpe_ascii[128] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 3, 3, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0,
};

/* Every code point's class, as runs: entry k is (first code point << 2 |
   class) and the run lasts until entry k+1 starts. Letters are general
   categories Lu Ll Lt Lm Lo, numbers Nd Nl No, spaces the White_Space
   property (what the `regex` module that GPT-2 uses means by \s). Code
   points that a newer Unicode assigns are "other" here, so text in a script
   added after this version pre-tokenizes differently from a newer regex. */
/* generated by scripts/photon_bpe_unicode.py from Unicode 14.0.0 (Python 3.11 unicodedata): 1534 runs */
#define PHOTON__BPE_UNICODE_VERSION "14.0.0"
static const uint32_t photon__bpe_unicode_runs[1534] = {
    0x0, 0x27, 0x38, 0x83, 0x84, 0xc2, 0xe8, 0x105,
    0x16c, 0x185, 0x1ec, 0x217, 0x218, 0x283, 0x284, 0x2a9,
    0x2ac, 0x2ca, 0x2d0, 0x2d5, 0x2d8, 0x2e6, 0x2e9, 0x2ec,
    0x2f2, 0x2fc, 0x301, 0x35c, 0x361, 0x3dc, 0x3e1, 0xb08,
    0xb19, 0xb48, 0xb81, 0xb94, 0xbb1, 0xbb4, 0xbb9, 0xbbc,
    0xdc1, 0xdd4, 0xdd9, 0xde0, 0xde9, 0xdf8, 0xdfd, 0xe00,
    0xe19, 0xe1c, 0xe21, 0xe2c, 0xe31, 0xe34, 0xe39, 0xe88,
    0xe8d, 0xfd8, 0xfdd, 0x1208, 0x1229, 0x14c0, 0x14c5, 0x155c,
    0x1565, 0x1568, 0x1581, 0x1624, 0x1741, 0x17ac, 0x17bd, 0x17cc,
    0x1881, 0x192c, 0x1982, 0x19a8, 0x19b9, 0x19c0, 0x19c5, 0x1b50,
    0x1b55, 0x1b58, 0x1b95, 0x1b9c, 0x1bb9, 0x1bc2, 0x1be9, 0x1bf4,
    0x1bfd, 0x1c00, 0x1c41, 0x1c44, 0x1c49, 0x1cc0, 0x1d35, 0x1e98,
    0x1ec5, 0x1ec8, 0x1f02, 0x1f29, 0x1fac, 0x1fd1, 0x1fd8, 0x1fe9,
    0x1fec, 0x2001, 0x2058, 0x2069, 0x206c, 0x2091, 0x2094, 0x20a1,
    0x20a4, 0x2101, 0x2164, 0x2181, 0x21ac, 0x21c1, 0x2220, 0x2225,
    0x223c, 0x2281, 0x2328, 0x2411, 0x24e8, 0x24f5, 0x24f8, 0x2541,
    0x2544, 0x2561, 0x2588, 0x259a, 0x25c0, 0x25c5, 0x2604, 0x2615,
    0x2634, 0x263d, 0x2644, 0x264d, 0x26a4, 0x26a9, 0x26c4, 0x26c9,
    0x26cc, 0x26d9, 0x26e8, 0x26f5, 0x26f8, 0x2739, 0x273c, 0x2771,
    0x2778, 0x277d, 0x2788, 0x279a, 0x27c1, 0x27c8, 0x27d2, 0x27e8,
    0x27f1, 0x27f4, 0x2815, 0x282c, 0x283d, 0x2844, 0x284d, 0x28a4,
    0x28a9, 0x28c4, 0x28c9, 0x28d0, 0x28d5, 0x28dc, 0x28e1, 0x28e8,
    0x2965, 0x2974, 0x2979, 0x297c, 0x299a, 0x29c0, 0x29c9, 0x29d4,
    0x2a15, 0x2a38, 0x2a3d, 0x2a48, 0x2a4d, 0x2aa4, 0x2aa9, 0x2ac4,
    0x2ac9, 0x2ad0, 0x2ad5, 0x2ae8, 0x2af5, 0x2af8, 0x2b41, 0x2b44,
    0x2b81, 0x2b88, 0x2b9a, 0x2bc0, 0x2be5, 0x2be8, 0x2c15, 0x2c34,
    0x2c3d, 0x2c44, 0x2c4d, 0x2ca4, 0x2ca9, 0x2cc4, 0x2cc9, 0x2cd0,
    0x2cd5, 0x2ce8, 0x2cf5, 0x2cf8, 0x2d71, 0x2d78, 0x2d7d, 0x2d88,
    0x2d9a, 0x2dc0, 0x2dc5, 0x2dca, 0x2de0, 0x2e0d, 0x2e10, 0x2e15,
    0x2e2c, 0x2e39, 0x2e44, 0x2e49, 0x2e58, 0x2e65, 0x2e6c, 0x2e71,
    0x2e74, 0x2e79, 0x2e80, 0x2e8d, 0x2e94, 0x2ea1, 0x2eac, 0x2eb9,
    0x2ee8, 0x2f41, 0x2f44, 0x2f9a, 0x2fcc, 0x3015, 0x3034, 0x3039,
    0x3044, 0x3049, 0x30a4, 0x30a9, 0x30e8, 0x30f5, 0x30f8, 0x3161,
    0x316c, 0x3175, 0x3178, 0x3181, 0x3188, 0x319a, 0x31c0, 0x31e2,
    0x31fc, 0x3201, 0x3204, 0x3215, 0x3234, 0x3239, 0x3244, 0x3249,
    0x32a4, 0x32a9, 0x32d0, 0x32d5, 0x32e8, 0x32f5, 0x32f8, 0x3375,
    0x337c, 0x3381, 0x3388, 0x339a, 0x33c0, 0x33c5, 0x33cc, 0x3411,
    0x3434, 0x3439, 0x3444, 0x3449, 0x34ec, 0x34f5, 0x34f8, 0x3539,
    0x353c, 0x3551, 0x355c, 0x3562, 0x357d, 0x3588, 0x359a, 0x35e4,
    0x35e9, 0x3600, 0x3615, 0x365c, 0x3669, 0x36c8, 0x36cd, 0x36f0,
    0x36f5, 0x36f8, 0x3701, 0x371c, 0x379a, 0x37c0, 0x3805, 0x38c4,
    0x38c9, 0x38d0, 0x3901, 0x391c, 0x3942, 0x3968, 0x3a05, 0x3a0c,
    0x3a11, 0x3a14, 0x3a19, 0x3a2c, 0x3a31, 0x3a90, 0x3a95, 0x3a98,
    0x3a9d, 0x3ac4, 0x3ac9, 0x3ad0, 0x3af5, 0x3af8, 0x3b01, 0x3b14,
    0x3b19, 0x3b1c, 0x3b42, 0x3b68, 0x3b71, 0x3b80, 0x3c01, 0x3c04,
    0x3c82, 0x3cd0, 0x3d01, 0x3d20, 0x3d25, 0x3db4, 0x3e21, 0x3e34,
    0x4001, 0x40ac, 0x40fd, 0x4102, 0x4128, 0x4141, 0x4158, 0x4169,
    0x4178, 0x4185, 0x4188, 0x4195, 0x419c, 0x41b9, 0x41c4, 0x41d5,
    0x4208, 0x4239, 0x423c, 0x4242, 0x4268, 0x4281, 0x4318, 0x431d,
    0x4320, 0x4335, 0x4338, 0x4341, 0x43ec, 0x43f1, 0x4924, 0x4929,
    0x4938, 0x4941, 0x495c, 0x4961, 0x4964, 0x4969, 0x4978, 0x4981,
    0x4a24, 0x4a29, 0x4a38, 0x4a41, 0x4ac4, 0x4ac9, 0x4ad8, 0x4ae1,
    0x4afc, 0x4b01, 0x4b04, 0x4b09, 0x4b18, 0x4b21, 0x4b5c, 0x4b61,
    0x4c44, 0x4c49, 0x4c58, 0x4c61, 0x4d6c, 0x4da6, 0x4df4, 0x4e01,
    0x4e40, 0x4e81, 0x4fd8, 0x4fe1, 0x4ff8, 0x5005, 0x59b4, 0x59bd,
    0x5a03, 0x5a05, 0x5a6c, 0x5a81, 0x5bac, 0x5bba, 0x5bc5, 0x5be4,
    0x5c01, 0x5c48, 0x5c7d, 0x5cc8, 0x5d01, 0x5d48, 0x5d81, 0x5db4,
    0x5db9, 0x5dc4, 0x5e01, 0x5ed0, 0x5f5d, 0x5f60, 0x5f71, 0x5f74,
    0x5f82, 0x5fa8, 0x5fc2, 0x5fe8, 0x6042, 0x6068, 0x6081, 0x61e4,
    0x6201, 0x6214, 0x621d, 0x62a4, 0x62a9, 0x62ac, 0x62c1, 0x63d8,
    0x6401, 0x647c, 0x651a, 0x6541, 0x65b8, 0x65c1, 0x65d4, 0x6601,
    0x66b0, 0x66c1, 0x6728, 0x6742, 0x676c, 0x6801, 0x685c, 0x6881,
    0x6954, 0x6a02, 0x6a28, 0x6a42, 0x6a68, 0x6a9d, 0x6aa0, 0x6c15,
    0x6cd0, 0x6d15, 0x6d34, 0x6d42, 0x6d68, 0x6e0d, 0x6e84, 0x6eb9,
    0x6ec2, 0x6ee9, 0x6f98, 0x7001, 0x7090, 0x7102, 0x7128, 0x7135,
    0x7142, 0x7169, 0x71f8, 0x7201, 0x7224, 0x7241, 0x72ec, 0x72f5,
    0x7300, 0x73a5, 0x73b4, 0x73b9, 0x73d0, 0x73d5, 0x73dc, 0x73e9,
    0x73ec, 0x7401, 0x7700, 0x7801, 0x7c58, 0x7c61, 0x7c78, 0x7c81,
    0x7d18, 0x7d21, 0x7d38, 0x7d41, 0x7d60, 0x7d65, 0x7d68, 0x7d6d,
    0x7d70, 0x7d75, 0x7d78, 0x7d7d, 0x7df8, 0x7e01, 0x7ed4, 0x7ed9,
    0x7ef4, 0x7ef9, 0x7efc, 0x7f09, 0x7f14, 0x7f19, 0x7f34, 0x7f41,
    0x7f50, 0x7f59, 0x7f70, 0x7f81, 0x7fb4, 0x7fc9, 0x7fd4, 0x7fd9,
    0x7ff4, 0x8003, 0x802c, 0x80a3, 0x80a8, 0x80bf, 0x80c0, 0x817f,
    0x8180, 0x81c2, 0x81c5, 0x81c8, 0x81d2, 0x81e8, 0x81fd, 0x8202,
    0x8228, 0x8241, 0x8274, 0x8409, 0x840c, 0x841d, 0x8420, 0x8429,
    0x8450, 0x8455, 0x8458, 0x8465, 0x8478, 0x8491, 0x8494, 0x8499,
    0x849c, 0x84a1, 0x84a4, 0x84a9, 0x84b8, 0x84bd, 0x84e8, 0x84f1,
    0x8500, 0x8515, 0x8528, 0x8539, 0x853c, 0x8542, 0x860d, 0x8616,
    0x8628, 0x9182, 0x9270, 0x93aa, 0x9400, 0x9dda, 0x9e50, 0xb001,
    0xb394, 0xb3ad, 0xb3bc, 0xb3c9, 0xb3d0, 0xb3f6, 0xb3f8, 0xb401,
    0xb498, 0xb49d, 0xb4a0, 0xb4b5, 0xb4b8, 0xb4c1, 0xb5a0, 0xb5bd,
    0xb5c0, 0xb601, 0xb65c, 0xb681, 0xb69c, 0xb6a1, 0xb6bc, 0xb6c1,
    0xb6dc, 0xb6e1, 0xb6fc, 0xb701, 0xb71c, 0xb721, 0xb73c, 0xb741,
    0xb75c, 0xb761, 0xb77c, 0xb8bd, 0xb8c0, 0xc003, 0xc004, 0xc015,
    0xc01e, 0xc020, 0xc086, 0xc0a8, 0xc0c5, 0xc0d8, 0xc0e2, 0xc0ed,
    0xc0f4, 0xc105, 0xc25c, 0xc275, 0xc280, 0xc285, 0xc3ec, 0xc3f1,
    0xc400, 0xc415, 0xc4c0, 0xc4c5, 0xc63c, 0xc64a, 0xc658, 0xc681,
    0xc700, 0xc7c1, 0xc800, 0xc882, 0xc8a8, 0xc922, 0xc940, 0xc946,
    0xc980, 0xca02, 0xca28, 0xcac6, 0xcb00, 0xd001, 0x13700, 0x13801,
    0x29234, 0x29341, 0x293f8, 0x29401, 0x29834, 0x29841, 0x29882, 0x298a9,
    0x298b0, 0x29901, 0x299bc, 0x299fd, 0x29a78, 0x29a81, 0x29b9a, 0x29bc0,
    0x29c5d, 0x29c80, 0x29c89, 0x29e24, 0x29e2d, 0x29f2c, 0x29f41, 0x29f48,
    0x29f4d, 0x29f50, 0x29f55, 0x29f68, 0x29fc9, 0x2a008, 0x2a00d, 0x2a018,
    0x2a01d, 0x2a02c, 0x2a031, 0x2a08c, 0x2a0c2, 0x2a0d8, 0x2a101, 0x2a1d0,
    0x2a209, 0x2a2d0, 0x2a342, 0x2a368, 0x2a3c9, 0x2a3e0, 0x2a3ed, 0x2a3f0,
    0x2a3f5, 0x2a3fc, 0x2a402, 0x2a429, 0x2a498, 0x2a4c1, 0x2a51c, 0x2a581,
    0x2a5f4, 0x2a611, 0x2a6cc, 0x2a73d, 0x2a742, 0x2a768, 0x2a781, 0x2a794,
    0x2a799, 0x2a7c2, 0x2a7e9, 0x2a7fc, 0x2a801, 0x2a8a4, 0x2a901, 0x2a90c,
    0x2a911, 0x2a930, 0x2a942, 0x2a968, 0x2a981, 0x2a9dc, 0x2a9e9, 0x2a9ec,
    0x2a9f9, 0x2aac0, 0x2aac5, 0x2aac8, 0x2aad5, 0x2aadc, 0x2aae5, 0x2aaf8,
    0x2ab01, 0x2ab04, 0x2ab09, 0x2ab0c, 0x2ab6d, 0x2ab78, 0x2ab81, 0x2abac,
    0x2abc9, 0x2abd4, 0x2ac05, 0x2ac1c, 0x2ac25, 0x2ac3c, 0x2ac45, 0x2ac5c,
    0x2ac81, 0x2ac9c, 0x2aca1, 0x2acbc, 0x2acc1, 0x2ad6c, 0x2ad71, 0x2ada8,
    0x2adc1, 0x2af8c, 0x2afc2, 0x2afe8, 0x2b001, 0x35e90, 0x35ec1, 0x35f1c,
    0x35f2d, 0x35ff0, 0x3e401, 0x3e9b8, 0x3e9c1, 0x3eb68, 0x3ec01, 0x3ec1c,
    0x3ec4d, 0x3ec60, 0x3ec75, 0x3ec78, 0x3ec7d, 0x3eca4, 0x3eca9, 0x3ecdc,
    0x3ece1, 0x3ecf4, 0x3ecf9, 0x3ecfc, 0x3ed01, 0x3ed08, 0x3ed0d, 0x3ed14,
    0x3ed19, 0x3eec8, 0x3ef4d, 0x3f4f8, 0x3f541, 0x3f640, 0x3f649, 0x3f720,
    0x3f7c1, 0x3f7f0, 0x3f9c1, 0x3f9d4, 0x3f9d9, 0x3fbf4, 0x3fc42, 0x3fc68,
    0x3fc85, 0x3fcec, 0x3fd05, 0x3fd6c, 0x3fd99, 0x3fefc, 0x3ff09, 0x3ff20,
    0x3ff29, 0x3ff40, 0x3ff49, 0x3ff60, 0x3ff69, 0x3ff74, 0x40001, 0x40030,
    0x40035, 0x4009c, 0x400a1, 0x400ec, 0x400f1, 0x400f8, 0x400fd, 0x40138,
    0x40141, 0x40178, 0x40201, 0x403ec, 0x4041e, 0x404d0, 0x40502, 0x405e4,
    0x4062a, 0x40630, 0x40a01, 0x40a74, 0x40a81, 0x40b44, 0x40b86, 0x40bf0,
    0x40c01, 0x40c82, 0x40c90, 0x40cb5, 0x40d06, 0x40d09, 0x40d2a, 0x40d2c,
    0x40d41, 0x40dd8, 0x40e01, 0x40e78, 0x40e81, 0x40f10, 0x40f21, 0x40f40,
    0x40f46, 0x40f58, 0x41001, 0x41278, 0x41282, 0x412a8, 0x412c1, 0x41350,
    0x41361, 0x413f0, 0x41401, 0x414a0, 0x414c1, 0x41590, 0x415c1, 0x415ec,
    0x415f1, 0x4162c, 0x41631, 0x4164c, 0x41651, 0x41658, 0x4165d, 0x41688,
    0x4168d, 0x416c8, 0x416cd, 0x416e8, 0x416ed, 0x416f4, 0x41801, 0x41cdc,
    0x41d01, 0x41d58, 0x41d81, 0x41da0, 0x41e01, 0x41e18, 0x41e1d, 0x41ec4,
    0x41ec9, 0x41eec, 0x42001, 0x42018, 0x42021, 0x42024, 0x42029, 0x420d8,
    0x420dd, 0x420e4, 0x420f1, 0x420f4, 0x420fd, 0x42158, 0x42162, 0x42181,
    0x421dc, 0x421e6, 0x42201, 0x4227c, 0x4229e, 0x422c0, 0x42381, 0x423cc,
    0x423d1, 0x423d8, 0x423ee, 0x42401, 0x4245a, 0x42470, 0x42481, 0x424e8,
    0x42601, 0x426e0, 0x426f2, 0x426f9, 0x42702, 0x42740, 0x4274a, 0x42801,
    0x42804, 0x42841, 0x42850, 0x42855, 0x42860, 0x42865, 0x428d8, 0x42902,
    0x42924, 0x42981, 0x429f6, 0x429fc, 0x42a01, 0x42a76, 0x42a80, 0x42b01,
    0x42b20, 0x42b25, 0x42b94, 0x42bae, 0x42bc0, 0x42c01, 0x42cd8, 0x42d01,
    0x42d58, 0x42d62, 0x42d81, 0x42dcc, 0x42de2, 0x42e01, 0x42e48, 0x42ea6,
    0x42ec0, 0x43001, 0x43124, 0x43201, 0x432cc, 0x43301, 0x433cc, 0x433ea,
    0x43401, 0x43490, 0x434c2, 0x434e8, 0x43982, 0x439fc, 0x43a01, 0x43aa8,
    0x43ac1, 0x43ac8, 0x43c01, 0x43c76, 0x43c9d, 0x43ca0, 0x43cc1, 0x43d18,
    0x43d46, 0x43d54, 0x43dc1, 0x43e08, 0x43ec1, 0x43f16, 0x43f30, 0x43f81,
    0x43fdc, 0x4400d, 0x440e0, 0x4414a, 0x441c0, 0x441c5, 0x441cc, 0x441d5,
    0x441d8, 0x4420d, 0x442c0, 0x44341, 0x443a4, 0x443c2, 0x443e8, 0x4440d,
    0x4449c, 0x444da, 0x44500, 0x44511, 0x44514, 0x4451d, 0x44520, 0x44541,
    0x445cc, 0x445d9, 0x445dc, 0x4460d, 0x446cc, 0x44705, 0x44714, 0x44742,
    0x44769, 0x4476c, 0x44771, 0x44774, 0x44786, 0x447d4, 0x44801, 0x44848,
    0x4484d, 0x448b0, 0x44a01, 0x44a1c, 0x44a21, 0x44a24, 0x44a29, 0x44a38,
    0x44a3d, 0x44a78, 0x44a7d, 0x44aa4, 0x44ac1, 0x44b7c, 0x44bc2, 0x44be8,
    0x44c15, 0x44c34, 0x44c3d, 0x44c44, 0x44c4d, 0x44ca4, 0x44ca9, 0x44cc4,
    0x44cc9, 0x44cd0, 0x44cd5, 0x44ce8, 0x44cf5, 0x44cf8, 0x44d41, 0x44d44,
    0x44d75, 0x44d88, 0x45001, 0x450d4, 0x4511d, 0x4512c, 0x45142, 0x45168,
    0x4517d, 0x45188, 0x45201, 0x452c0, 0x45311, 0x45318, 0x4531d, 0x45320,
    0x45342, 0x45368, 0x45601, 0x456bc, 0x45761, 0x45770, 0x45801, 0x458c0,
    0x45911, 0x45914, 0x45942, 0x45968, 0x45a01, 0x45aac, 0x45ae1, 0x45ae4,
    0x45b02, 0x45b28, 0x45c01, 0x45c6c, 0x45cc2, 0x45cf0, 0x45d01, 0x45d1c,
    0x46001, 0x460b0, 0x46281, 0x46382, 0x463cc, 0x463fd, 0x4641c, 0x46425,
    0x46428, 0x46431, 0x46450, 0x46455, 0x4645c, 0x46461, 0x464c0, 0x464fd,
    0x46500, 0x46505, 0x46508, 0x46542, 0x46568, 0x46681, 0x466a0, 0x466a9,
    0x46744, 0x46785, 0x46788, 0x4678d, 0x46790, 0x46801, 0x46804, 0x4682d,
    0x468cc, 0x468e9, 0x468ec, 0x46941, 0x46944, 0x46971, 0x46a28, 0x46a75,
    0x46a78, 0x46ac1, 0x46be4, 0x47001, 0x47024, 0x47029, 0x470bc, 0x47101,
    0x47104, 0x47142, 0x471b4, 0x471c9, 0x47240, 0x47401, 0x4741c, 0x47421,
    0x47428, 0x4742d, 0x474c4, 0x47519, 0x4751c, 0x47542, 0x47568, 0x47581,
    0x47598, 0x4759d, 0x475a4, 0x475a9, 0x47628, 0x47661, 0x47664, 0x47682,
    0x476a8, 0x47b81, 0x47bcc, 0x47ec1, 0x47ec4, 0x47f02, 0x47f54, 0x48001,
    0x48e68, 0x49002, 0x491bc, 0x49201, 0x49510, 0x4be41, 0x4bfc4, 0x4c001,
    0x4d0bc, 0x51001, 0x5191c, 0x5a001, 0x5a8e4, 0x5a901, 0x5a97c, 0x5a982,
    0x5a9a8, 0x5a9c1, 0x5aafc, 0x5ab02, 0x5ab28, 0x5ab41, 0x5abb8, 0x5ac01,
    0x5acc0, 0x5ad01, 0x5ad10, 0x5ad42, 0x5ad68, 0x5ad6e, 0x5ad88, 0x5ad8d,
    0x5ade0, 0x5adf5, 0x5ae40, 0x5b901, 0x5ba02, 0x5ba5c, 0x5bc01, 0x5bd2c,
    0x5bd41, 0x5bd44, 0x5be4d, 0x5be80, 0x5bf81, 0x5bf88, 0x5bf8d, 0x5bf90,
    0x5c001, 0x61fe0, 0x62001, 0x63358, 0x63401, 0x63424, 0x6bfc1, 0x6bfd0,
    0x6bfd5, 0x6bff0, 0x6bff5, 0x6bffc, 0x6c001, 0x6c48c, 0x6c541, 0x6c54c,
    0x6c591, 0x6c5a0, 0x6c5c1, 0x6cbf0, 0x6f001, 0x6f1ac, 0x6f1c1, 0x6f1f4,
    0x6f201, 0x6f224, 0x6f241, 0x6f268, 0x74b82, 0x74bd0, 0x74d82, 0x74de4,
    0x75001, 0x75154, 0x75159, 0x75274, 0x75279, 0x75280, 0x75289, 0x7528c,
    0x75295, 0x7529c, 0x752a5, 0x752b4, 0x752b9, 0x752e8, 0x752ed, 0x752f0,
    0x752f5, 0x75310, 0x75315, 0x75418, 0x7541d, 0x7542c, 0x75435, 0x75454,
    0x75459, 0x75474, 0x75479, 0x754e8, 0x754ed, 0x754fc, 0x75501, 0x75514,
    0x75519, 0x7551c, 0x75529, 0x75544, 0x75549, 0x75a98, 0x75aa1, 0x75b04,
    0x75b09, 0x75b6c, 0x75b71, 0x75bec, 0x75bf1, 0x75c54, 0x75c59, 0x75cd4,
    0x75cd9, 0x75d3c, 0x75d41, 0x75dbc, 0x75dc1, 0x75e24, 0x75e29, 0x75ea4,
    0x75ea9, 0x75f0c, 0x75f11, 0x75f30, 0x75f3a, 0x76000, 0x77c01, 0x77c7c,
    0x78401, 0x784b4, 0x784dd, 0x784f8, 0x78502, 0x78528, 0x78539, 0x7853c,
    0x78a41, 0x78ab8, 0x78b01, 0x78bb0, 0x78bc2, 0x78be8, 0x79f81, 0x79f9c,
    0x79fa1, 0x79fb0, 0x79fb5, 0x79fbc, 0x79fc1, 0x79ffc, 0x7a001, 0x7a314,
    0x7a31e, 0x7a340, 0x7a401, 0x7a510, 0x7a52d, 0x7a530, 0x7a542, 0x7a568,
    0x7b1c6, 0x7b2b0, 0x7b2b6, 0x7b2c0, 0x7b2c6, 0x7b2d4, 0x7b406, 0x7b4b8,
    0x7b4be, 0x7b4f8, 0x7b801, 0x7b810, 0x7b815, 0x7b880, 0x7b885, 0x7b88c,
    0x7b891, 0x7b894, 0x7b89d, 0x7b8a0, 0x7b8a5, 0x7b8cc, 0x7b8d1, 0x7b8e0,
    0x7b8e5, 0x7b8e8, 0x7b8ed, 0x7b8f0, 0x7b909, 0x7b90c, 0x7b91d, 0x7b920,
    0x7b925, 0x7b928, 0x7b92d, 0x7b930, 0x7b935, 0x7b940, 0x7b945, 0x7b94c,
    0x7b951, 0x7b954, 0x7b95d, 0x7b960, 0x7b965, 0x7b968, 0x7b96d, 0x7b970,
    0x7b975, 0x7b978, 0x7b97d, 0x7b980, 0x7b985, 0x7b98c, 0x7b991, 0x7b994,
    0x7b99d, 0x7b9ac, 0x7b9b1, 0x7b9cc, 0x7b9d1, 0x7b9e0, 0x7b9e5, 0x7b9f4,
    0x7b9f9, 0x7b9fc, 0x7ba01, 0x7ba28, 0x7ba2d, 0x7ba70, 0x7ba85, 0x7ba90,
    0x7ba95, 0x7baa8, 0x7baad, 0x7baf0, 0x7c402, 0x7c434, 0x7efc2, 0x7efe8,
    0x80001, 0xa9b80, 0xa9c01, 0xadce4, 0xadd01, 0xae078, 0xae081, 0xb3a88,
    0xb3ac1, 0xbaf84, 0xbe001, 0xbe878, 0xc0001, 0xc4d2c,
};

PHOTONDEF const char *photon_bpe_unicode_version(void) { return PHOTON__BPE_UNICODE_VERSION; }

static int photon__bpe_class_of(uint32_t cp) {
    size_t lo = 0, hi = sizeof photon__bpe_unicode_runs / sizeof photon__bpe_unicode_runs[0];
    while (hi - lo > 1) { /* the last run that starts at or before cp */
        size_t mid = (lo + hi) / 2;
        if ((photon__bpe_unicode_runs[mid] >> 2) <= cp) lo = mid;
        else hi = mid;
    }
    return (int)(photon__bpe_unicode_runs[lo] & 3u);
}

/* Decodes the character at s[i] (i < n): returns its length in bytes and
   sets *cp, or returns 0 if the bytes there are not well-formed UTF-8
   (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF). */
static size_t photon__bpe_utf8(const unsigned char *s, size_t n, size_t i, uint32_t *cp) {
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

/* The class of the character at s[i] and its length in bytes. A byte that
   does not start well-formed UTF-8 is one symbol of class "other". */
static int photon__bpe_char(const unsigned char *s, size_t n, size_t i, size_t *len) {
    uint32_t cp;
    if (s[i] < 0x80) {
        *len = 1;
        return photon__bpe_ascii[s[i]];
    }
    if (!(*len = photon__bpe_utf8(s, n, i, &cp))) {
        *len = 1;
        return PHOTON__BPE_OTHER;
    }
    return photon__bpe_class_of(cp);
}

/* The end of a run of characters of class cls that starts at i. */
static size_t photon__bpe_run(const unsigned char *s, size_t n, size_t i, int cls) {
    while (i < n) {
        size_t l;
        if (s[i] < 0x80) {
            if (photon__bpe_ascii[s[i]] != cls) break;
            i++;
            continue;
        }
        if (photon__bpe_char(s, n, i, &l) != cls) break;
        i += l;
    }
    return i;
}

/* GPT-2's pattern, alternative by alternative (the first that matches at pos
   wins, as in the regex):
     's 't 're 've 'm 'll 'd      a contraction
      ?\p{L}+  ?\p{N}+            an optional space, then a run of letters or of numbers
      ?[^\s\p{L}\p{N}]+           an optional space, then a run of other symbols
     \s+(?!\S)                    whitespace up to the end, or all of a run but its
                                  last character when a non-space follows
     \s+                          else the (single) whitespace character */
PHOTONDEF size_t photon_bpe_split(const void *text, size_t n, size_t pos) {
    const unsigned char *s = (const unsigned char *)text;
    size_t l, i, last;
    int cls;
    if (pos >= n) return n;
    if (s[pos] == '\'' && pos + 1 < n) {
        unsigned char d = s[pos + 1];
        if (d == 's' || d == 't' || d == 'm' || d == 'd') return pos + 2;
        if (pos + 2 < n) {
            unsigned char e = s[pos + 2];
            if ((d == 'r' && e == 'e') || (d == 'v' && e == 'e') || (d == 'l' && e == 'l')) return pos + 3;
        }
    }
    cls = photon__bpe_char(s, n, pos, &l);
    if (cls != PHOTON__BPE_SPACE) return photon__bpe_run(s, n, pos + l, cls);
    if (s[pos] == ' ' && pos + 1 < n) {
        int next = photon__bpe_char(s, n, pos + 1, &l);
        if (next != PHOTON__BPE_SPACE) return photon__bpe_run(s, n, pos + 1 + l, next);
    }
    i = pos;
    last = pos;
    while (i < n && photon__bpe_char(s, n, i, &l) == PHOTON__BPE_SPACE) {
        last = i;
        i += l;
    }
    if (i == n) return n;
    return last > pos ? last : i;
}

/* ======================================================================= */
/* BPE: GPT-2's byte-to-unicode map                                        */
/* ======================================================================= */
/* Bytes that are printable Latin-1 ('!'..'~', 0xa1..0xac, 0xae..0xff) stand
   for themselves; the other 68 become U+0100, U+0101, ... in byte order. */

static uint32_t photon__bpe_byte_cp(unsigned b) {
    unsigned k, n = 0;
    if ((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae)) return b;
    for (k = 0; k < b; k++)
        if (!((k >= 0x21 && k <= 0x7e) || (k >= 0xa1 && k <= 0xac) || (k >= 0xae))) n++;
    return 256 + n;
}

/* Tables of both directions, built once per call that needs them. */
typedef struct photon__bpe_charmap {
    unsigned char utf8[256][2]; /* every mapped character is 1 or 2 bytes of UTF-8 */
    unsigned char utf8_len[256];
    short byte_of[324];         /* code point -> byte, -1 if not in the map */
} photon__bpe_charmap;

static void photon__bpe_charmap_init(photon__bpe_charmap *m) {
    unsigned b;
    for (b = 0; b < 324; b++) m->byte_of[b] = -1;
    for (b = 0; b < 256; b++) {
        uint32_t cp = photon__bpe_byte_cp(b);
        m->byte_of[cp] = (short)b;
        if (cp < 0x80) {
            m->utf8[b][0] = (unsigned char)cp;
            m->utf8_len[b] = 1;
        } else {
            m->utf8[b][0] = (unsigned char)(0xc0 | cp >> 6);
            m->utf8[b][1] = (unsigned char)(0x80 | (cp & 0x3f));
            m->utf8_len[b] = 2;
        }
    }
}

/* Appends the mapped string of n bytes. */
static void photon__bpe_text_mapped(photon__text *t, const photon__bpe_charmap *m, const unsigned char *s, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) photon__text_append(t, (const char *)m->utf8[s[i]], m->utf8_len[s[i]]);
}

/* Turns a mapped string (UTF-8) back into bytes, in place; returns the new
   length, or -1 with *bad the offending code point (0x110000: not UTF-8). */
static long photon__bpe_unmap(const photon__bpe_charmap *m, unsigned char *s, size_t n, uint32_t *bad) {
    size_t i = 0, o = 0;
    while (i < n) {
        uint32_t cp;
        size_t l = photon__bpe_utf8(s, n, i, &cp);
        if (!l) {
            *bad = 0x110000;
            return -1;
        }
        if (cp >= 324 || m->byte_of[cp] < 0) {
            *bad = cp;
            return -1;
        }
        s[o++] = (unsigned char)m->byte_of[cp];
        i += l;
    }
    return (long)o;
}

/* ======================================================================= */
/* BPE: hash maps                                                          */
/* ======================================================================= */
/* Only speed depends on the hash: every result follows insertion order or an
   explicit ordering, never the layout of a table. */

static uint64_t photon__bpe_hash(const unsigned char *p, size_t n) {
    uint64_t h = 0x9e3779b97f4a7c15ull ^ ((uint64_t)n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        h = (h ^ v) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
        p += 8;
        n -= 8;
    }
    if (n) {
        uint64_t v = 0;
        memcpy(&v, p, n);
        h = (h ^ v) * 0x94d049bb133111ebull;
    }
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h;
}

/* Byte string -> uint64 value. Entries keep insertion order. A slot holds
   the entry's index + 1 in its low 32 bits and the top 32 bits of the hash
   in its high bits, so most mismatches are rejected without touching the
   entry. */
typedef struct photon__bpe_strent {
    uint64_t hash, value;
    size_t key_at; /* into keys */
    size_t key_len;
} photon__bpe_strent;

typedef struct photon__bpe_strmap {
    uint64_t *slots; /* 0: empty */
    size_t mask;
    size_t count, cap;
    photon__bpe_strent *ent;
    unsigned char *keys;
    size_t keys_len, keys_cap;
} photon__bpe_strmap;

static void photon__bpe_strmap_free(photon__bpe_strmap *m) {
    PHOTON_FREE(m->slots);
    PHOTON_FREE(m->ent);
    PHOTON_FREE(m->keys);
    memset(m, 0, sizeof *m);
}

static void photon__bpe_strmap_clear(photon__bpe_strmap *m) {
    if (m->slots) memset(m->slots, 0, (m->mask + 1) * sizeof(uint64_t));
    m->count = 0;
    m->keys_len = 0;
}

static long photon__bpe_strmap_find(const photon__bpe_strmap *m, const unsigned char *key, size_t len, uint64_t h) {
    size_t i;
    uint64_t tag = h & 0xffffffff00000000ull;
    if (!m->slots) return -1;
    for (i = (size_t)h & m->mask;; i = (i + 1) & m->mask) {
        uint64_t v = m->slots[i];
        const photon__bpe_strent *e;
        if (!v) return -1;
        if ((v & 0xffffffff00000000ull) != tag) continue;
        e = &m->ent[(v & 0xffffffffu) - 1];
        if (e->key_len == len && memcmp(m->keys + e->key_at, key, len) == 0) return (long)((v & 0xffffffffu) - 1);
    }
}

static int photon__bpe_grow(void **p, size_t *cap, size_t need, size_t elem) {
    size_t c = *cap ? *cap : 16;
    void *q;
    if (need <= *cap) return 1;
    while (c < need) {
        if (c > (size_t)-1 / 4 / elem) return 0;
        c *= 2;
    }
    q = PHOTON_MALLOC(c * elem);
    if (!q) return 0;
    if (*p && *cap) memcpy(q, *p, *cap * elem);
    PHOTON_FREE(*p);
    *p = q;
    *cap = c;
    return 1;
}

static void photon__bpe_strmap_place(uint64_t *slots, size_t mask, uint64_t h, size_t e) {
    size_t i = (size_t)h & mask;
    while (slots[i]) i = (i + 1) & mask;
    slots[i] = (h & 0xffffffff00000000ull) | (uint64_t)(e + 1);
}

/* Adds a key known to be absent; returns its entry, or -1 out of memory. */
static long photon__bpe_strmap_add(photon__bpe_strmap *m, const unsigned char *key, size_t len, uint64_t h,
                                   uint64_t value) {
    size_t e;
    if (m->count + 1 >= 0xffffffffu) return -1;
    if (!m->slots || (m->count + 1) * 2 > m->mask + 1) { /* keep the load at most 1/2 */
        size_t slots = m->slots ? (m->mask + 1) * 2 : 1024, k;
        uint64_t *grown = (uint64_t *)photon__calloc(slots, sizeof(uint64_t));
        if (!grown) return -1;
        for (k = 0; k < m->count; k++) photon__bpe_strmap_place(grown, slots - 1, m->ent[k].hash, k);
        PHOTON_FREE(m->slots);
        m->slots = grown;
        m->mask = slots - 1;
    }
    if (!photon__bpe_grow((void **)&m->ent, &m->cap, m->count + 1, sizeof *m->ent) ||
        !photon__bpe_grow((void **)&m->keys, &m->keys_cap, m->keys_len + len, 1))
        return -1;
    e = m->count++;
    memcpy(m->keys + m->keys_len, key, len);
    m->ent[e].key_at = m->keys_len;
    m->ent[e].key_len = len;
    m->ent[e].hash = h;
    m->ent[e].value = value;
    m->keys_len += len;
    photon__bpe_strmap_place(m->slots, m->mask, h, e);
    return (long)e;
}

/* (left, right) token pair -> uint32 value. */
typedef struct photon__bpe_pairmap {
    uint64_t *keys; /* left << 32 | right; empty: all ones */
    uint32_t *values;
    size_t mask, count;
} photon__bpe_pairmap;

#define PHOTON__BPE_NO_KEY 0xffffffffffffffffull

static uint64_t photon__bpe_pair_key(int a, int b) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)b; }

static size_t photon__bpe_pair_slot(uint64_t key, size_t mask) {
    uint64_t h = key * 0x9e3779b97f4a7c15ull;
    return (size_t)(h ^ (h >> 29)) & mask;
}

static void photon__bpe_pairmap_free(photon__bpe_pairmap *m) {
    PHOTON_FREE(m->keys);
    PHOTON_FREE(m->values);
    memset(m, 0, sizeof *m);
}

static long photon__bpe_pairmap_get(const photon__bpe_pairmap *m, uint64_t key) {
    size_t i;
    if (!m->keys) return -1;
    for (i = photon__bpe_pair_slot(key, m->mask);; i = (i + 1) & m->mask) {
        if (m->keys[i] == key) return (long)m->values[i];
        if (m->keys[i] == PHOTON__BPE_NO_KEY) return -1;
    }
}

/* Adds a key known to be absent; returns 0 out of memory. */
static int photon__bpe_pairmap_put(photon__bpe_pairmap *m, uint64_t key, uint32_t value) {
    size_t i;
    if (!m->keys || (m->count + 1) * 2 > m->mask + 1) {
        size_t slots = m->keys ? (m->mask + 1) * 2 : 1024, k;
        uint64_t *keys = (uint64_t *)PHOTON_MALLOC(slots * sizeof(uint64_t));
        uint32_t *values = (uint32_t *)PHOTON_MALLOC(slots * sizeof(uint32_t));
        if (!keys || !values) {
            PHOTON_FREE(keys);
            PHOTON_FREE(values);
            return 0;
        }
        for (k = 0; k < slots; k++) keys[k] = PHOTON__BPE_NO_KEY;
        for (k = 0; m->keys && k <= m->mask; k++) {
            if (m->keys[k] == PHOTON__BPE_NO_KEY) continue;
            i = photon__bpe_pair_slot(m->keys[k], slots - 1);
            while (keys[i] != PHOTON__BPE_NO_KEY) i = (i + 1) & (slots - 1);
            keys[i] = m->keys[k];
            values[i] = m->values[k];
        }
        PHOTON_FREE(m->keys);
        PHOTON_FREE(m->values);
        m->keys = keys;
        m->values = values;
        m->mask = slots - 1;
    }
    for (i = photon__bpe_pair_slot(key, m->mask); m->keys[i] != PHOTON__BPE_NO_KEY; i = (i + 1) & m->mask) {}
    m->keys[i] = key;
    m->values[i] = value;
    m->count++;
    return 1;
}

/* A binary min-heap of uint64 (the encoder's (rank << 32 | position)). */
static void photon__bpe_heap_push(uint64_t *h, size_t *n, uint64_t v) {
    size_t i = (*n)++;
    while (i > 0 && h[(i - 1) / 2] > v) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = v;
}

static uint64_t photon__bpe_heap_pop(uint64_t *h, size_t *n) {
    uint64_t top = h[0], v = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && h[c + 1] < h[c]) c++;
        if (h[c] >= v) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = v;
    return top;
}

/* ======================================================================= */
/* BPE: the tokenizer                                                      */
/* ======================================================================= */

#define PHOTON__BPE_CACHE_WORD 255              /* longest pre-token cached */
#define PHOTON__BPE_CACHE_ENTRIES (1u << 20)    /* the cache empties when it reaches this... */
#define PHOTON__BPE_CACHE_BYTES (48u << 20)     /* ...or this many key bytes */

struct photon__bpe_state {
    photon__bpe_pairmap ranks;  /* (left, right) -> merge rank */
    photon__bpe_strmap cache;   /* pre-token -> (offset into cache_ids << 8 | number of ids) */
    uint16_t *cache_ids;
    size_t cache_ids_len, cache_ids_cap;
    /* scratch for one pre-token */
    int32_t *id, *next, *prev;
    size_t scratch_cap;
    uint64_t *heap, *batch;
    size_t heap_cap;
};

PHOTONDEF void photon_bpe_free(photon_bpe *bpe) {
    if (!bpe) return;
    if (bpe->state) {
        struct photon__bpe_state *s = bpe->state;
        photon__bpe_pairmap_free(&s->ranks);
        photon__bpe_strmap_free(&s->cache);
        PHOTON_FREE(s->cache_ids);
        PHOTON_FREE(s->id);
        PHOTON_FREE(s->next);
        PHOTON_FREE(s->prev);
        PHOTON_FREE(s->heap);
        PHOTON_FREE(s->batch);
        PHOTON_FREE(s);
    }
    PHOTON_FREE(bpe->merges);
    PHOTON_FREE(bpe->token_start);
    PHOTON_FREE(bpe->token_bytes);
    memset(bpe, 0, sizeof *bpe);
    bpe->eot_token = -1;
}

/* Builds the lookup state once the tokens and merges are in place. */
static photon_result photon__bpe_finish(photon_bpe *bpe, photon_error *err) {
    int r;
    bpe->state = (struct photon__bpe_state *)photon__calloc(1, sizeof *bpe->state);
    if (!bpe->state) return photon__fail(err, PHOTON_ERR_MEMORY, "cannot allocate the tokenizer's tables");
    for (r = 0; r < bpe->num_merges; r++)
        if (!photon__bpe_pairmap_put(&bpe->state->ranks,
                                     photon__bpe_pair_key(bpe->merges[r].left, bpe->merges[r].right), (uint32_t)r))
            return photon__fail(err, PHOTON_ERR_MEMORY, "cannot allocate the tokenizer's merge table");
    return PHOTON_OK;
}

PHOTONDEF photon_result photon_bpe_init_bytes(photon_bpe *bpe, photon_error *err) {
    int b;
    memset(bpe, 0, sizeof *bpe);
    bpe->eot_token = -1;
    bpe->vocab_size = 256;
    bpe->token_start = (uint32_t *)PHOTON_MALLOC(257 * sizeof(uint32_t));
    bpe->token_bytes = (unsigned char *)PHOTON_MALLOC(256);
    if (!bpe->token_start || !bpe->token_bytes) {
        photon_bpe_free(bpe);
        return photon__fail(err, PHOTON_ERR_MEMORY, "cannot allocate the byte vocabulary");
    }
    for (b = 0; b < 256; b++) {
        bpe->token_start[b] = (uint32_t)b;
        bpe->token_bytes[b] = (unsigned char)b;
        bpe->byte_token[b] = b;
    }
    bpe->token_start[256] = 256;
    if (photon__bpe_finish(bpe, err) != PHOTON_OK) {
        photon_bpe_free(bpe);
        return PHOTON_ERR_MEMORY;
    }
    return PHOTON_OK;
}

PHOTONDEF const unsigned char *photon_bpe_token(const photon_bpe *bpe, int id, size_t *len) {
    if (id < 0 || id >= bpe->vocab_size) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = bpe->token_start[id + 1] - bpe->token_start[id];
    return bpe->token_bytes + bpe->token_start[id];
}

static int photon__bpe_scratch(struct photon__bpe_state *s, size_t n) {
    if (n <= s->scratch_cap) return 1;
    {
        size_t cap = s->scratch_cap ? s->scratch_cap : 256;
        while (cap < n) cap *= 2;
        PHOTON_FREE(s->id);
        PHOTON_FREE(s->next);
        PHOTON_FREE(s->prev);
        PHOTON_FREE(s->heap);
        PHOTON_FREE(s->batch);
        s->id = (int32_t *)PHOTON_MALLOC(cap * sizeof(int32_t));
        s->next = (int32_t *)PHOTON_MALLOC(cap * sizeof(int32_t));
        s->prev = (int32_t *)PHOTON_MALLOC(cap * sizeof(int32_t));
        /* the heap holds at most n-1 pairs at the start, then 2 per merge */
        s->heap = (uint64_t *)PHOTON_MALLOC(3 * cap * sizeof(uint64_t));
        s->batch = (uint64_t *)PHOTON_MALLOC(3 * cap * sizeof(uint64_t));
        if (!s->id || !s->next || !s->prev || !s->heap || !s->batch) {
            s->scratch_cap = 0;
            return 0;
        }
        s->scratch_cap = cap;
    }
    return 1;
}

/* BPE inside one pre-token of n >= 2 bytes, exactly as GPT-2's bpe(): take
   the lowest-ranked merge among the adjacent pairs, merge every occurrence
   of it left to right, repeat. Symbols are a linked list over the byte
   positions; a heap holds (rank, position) of candidate pairs. All entries
   of the lowest rank are taken out together and applied in position order;
   pairs that a merge creates go back into the heap and compete from the
   next round on (they never have that same rank: a merge's result differs
   from both of its parts). Entries whose pair has changed are skipped.
   Writes the ids to out; returns their count, or 0 out of memory. */
static size_t photon__bpe_word(photon_bpe *bpe, const unsigned char *w, size_t n, uint16_t *out) {
    struct photon__bpe_state *s = bpe->state;
    const photon__bpe_pairmap *ranks = &s->ranks;
    size_t i, nh = 0, count = 0;
    int32_t *id, *next, *prev;
    if (!photon__bpe_scratch(s, n)) return 0;
    id = s->id;
    next = s->next;
    prev = s->prev;
    for (i = 0; i < n; i++) {
        id[i] = bpe->byte_token[w[i]];
        next[i] = (int32_t)i + 1;
        prev[i] = (int32_t)i - 1;
    }
    for (i = 0; i + 1 < n; i++) {
        long r = photon__bpe_pairmap_get(ranks, photon__bpe_pair_key(id[i], id[i + 1]));
        if (r >= 0) photon__bpe_heap_push(s->heap, &nh, (uint64_t)r << 32 | i);
    }
    while (nh) {
        uint64_t rank = s->heap[0] >> 32;
        size_t nb = 0, k;
        const photon_bpe_merge *m = &bpe->merges[rank];
        while (nh && (s->heap[0] >> 32) == rank) s->batch[nb++] = photon__bpe_heap_pop(s->heap, &nh);
        for (k = 0; k < nb; k++) {
            int32_t p = (int32_t)(s->batch[k] & 0xffffffffu), q, o;
            long r;
            if (id[p] != m->left) continue; /* removed symbols have id -1 */
            q = next[p];
            if ((size_t)q >= n || id[q] != m->right) continue;
            id[p] = m->result;
            id[q] = -1;
            next[p] = next[q];
            if ((size_t)next[q] < n) prev[next[q]] = p;
            if ((o = prev[p]) >= 0 && (r = photon__bpe_pairmap_get(ranks, photon__bpe_pair_key(id[o], id[p]))) >= 0)
                photon__bpe_heap_push(s->heap, &nh, (uint64_t)r << 32 | (uint32_t)o);
            if ((size_t)(o = next[p]) < n && (r = photon__bpe_pairmap_get(ranks, photon__bpe_pair_key(id[p], id[o]))) >= 0)
                photon__bpe_heap_push(s->heap, &nh, (uint64_t)r << 32 | (uint32_t)p);
        }
    }
    for (i = 0; i < n; i = (size_t)next[i]) out[count++] = (uint16_t)id[i];
    return count;
}

PHOTONDEF photon_result photon_bpe_encode(photon_bpe *bpe, const void *text, size_t len, uint16_t *tokens,
                                          size_t *num_tokens, photon_error *err) {
    const unsigned char *s = (const unsigned char *)text;
    struct photon__bpe_state *st = bpe->state;
    size_t pos = 0, out = 0;
    *num_tokens = 0;
    if (!st) return photon__fail(err, PHOTON_ERR_ARGUMENT, "encode: the tokenizer is not initialised");
    if (bpe->num_merges == 0) { /* no merges: one token per byte */
        for (pos = 0; pos < len; pos++) tokens[pos] = (uint16_t)bpe->byte_token[s[pos]];
        *num_tokens = len;
        return PHOTON_OK;
    }
    while (pos < len) {
        size_t end = photon_bpe_split(s, len, pos), n = end - pos, got;
        const unsigned char *w = s + pos;
        uint64_t h;
        long e;
        if (n == 1) {
            tokens[out++] = (uint16_t)bpe->byte_token[*w];
            pos = end;
            continue;
        }
        if (n > PHOTON__BPE_CACHE_WORD) {
            if (!(got = photon__bpe_word(bpe, w, n, tokens + out)))
                return photon__fail(err, PHOTON_ERR_MEMORY, "encode: cannot allocate for a pre-token of %zu bytes", n);
            out += got;
            pos = end;
            continue;
        }
        h = photon__bpe_hash(w, n);
        e = photon__bpe_strmap_find(&st->cache, w, n, h);
        if (e >= 0) {
            uint64_t v = st->cache.ent[e].value;
            size_t k, cnt = (size_t)(v & 0xff);
            const uint16_t *ids = st->cache_ids + (v >> 8);
            for (k = 0; k < cnt; k++) tokens[out + k] = ids[k];
            out += cnt;
            pos = end;
            continue;
        }
        if (!(got = photon__bpe_word(bpe, w, n, tokens + out)))
            return photon__fail(err, PHOTON_ERR_MEMORY, "encode: cannot allocate for a pre-token of %zu bytes", n);
        if (st->cache.count >= PHOTON__BPE_CACHE_ENTRIES || st->cache.keys_len + n > PHOTON__BPE_CACHE_BYTES) {
            photon__bpe_strmap_clear(&st->cache);
            st->cache_ids_len = 0;
        }
        /* a failed insertion only costs speed */
        if (photon__bpe_grow((void **)&st->cache_ids, &st->cache_ids_cap, st->cache_ids_len + got, sizeof(uint16_t)) &&
            photon__bpe_strmap_add(&st->cache, w, n, h, (uint64_t)st->cache_ids_len << 8 | got) >= 0) {
            memcpy(st->cache_ids + st->cache_ids_len, tokens + out, got * sizeof(uint16_t));
            st->cache_ids_len += got;
        }
        out += got;
        pos = end;
    }
    *num_tokens = out;
    return PHOTON_OK;
}

PHOTONDEF photon_result photon_bpe_decode(const photon_bpe *bpe, const uint16_t *tokens, size_t n, void *out,
                                          size_t cap, size_t *len, photon_error *err) {
    size_t i, total = 0;
    unsigned char *o = (unsigned char *)out;
    *len = 0;
    for (i = 0; i < n; i++) {
        if (tokens[i] >= bpe->vocab_size)
            return photon__fail(err, PHOTON_ERR_ARGUMENT, "decode: token %zu is %u, outside the vocabulary of %d", i,
                                (unsigned)tokens[i], bpe->vocab_size);
        total += bpe->token_start[tokens[i] + 1] - bpe->token_start[tokens[i]];
    }
    *len = total;
    if (!out) return PHOTON_OK;
    if (cap < total)
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "decode: the text is %zu bytes, the buffer holds %zu", total, cap);
    for (i = 0; i < n; i++) {
        size_t a = bpe->token_start[tokens[i]], b = bpe->token_start[tokens[i] + 1];
        memcpy(o, bpe->token_bytes + a, b - a);
        o += b - a;
    }
    return PHOTON_OK;
}

/* ======================================================================= */
/* BPE: training                                                           */
/* ======================================================================= */

struct photon__bpe_counts {
    photon__bpe_strmap words; /* pre-token -> occurrences */
};

PHOTONDEF photon_result photon_bpe_trainer_init(photon_bpe_trainer *t, photon_error *err) {
    memset(t, 0, sizeof *t);
    t->counts = (struct photon__bpe_counts *)photon__calloc(1, sizeof *t->counts);
    if (!t->counts) return photon__fail(err, PHOTON_ERR_MEMORY, "cannot allocate the pre-token counts");
    return PHOTON_OK;
}

PHOTONDEF void photon_bpe_trainer_free(photon_bpe_trainer *t) {
    if (!t) return;
    if (t->counts) {
        photon__bpe_strmap_free(&t->counts->words);
        PHOTON_FREE(t->counts);
    }
    memset(t, 0, sizeof *t);
}

PHOTONDEF photon_result photon_bpe_trainer_add(photon_bpe_trainer *t, const void *text, size_t len,
                                               photon_error *err) {
    const unsigned char *s = (const unsigned char *)text;
    photon__bpe_strmap *m;
    size_t pos = 0;
    if (!t->counts) return photon__fail(err, PHOTON_ERR_ARGUMENT, "the trainer is not initialised");
    m = &t->counts->words;
    while (pos < len) {
        size_t end = photon_bpe_split(s, len, pos), n = end - pos;
        uint64_t h = photon__bpe_hash(s + pos, n);
        long e = photon__bpe_strmap_find(m, s + pos, n, h);
        if (e >= 0) {
            m->ent[e].value++;
        } else if (photon__bpe_strmap_add(m, s + pos, n, h, 1) < 0) {
            return photon__fail(err, PHOTON_ERR_MEMORY, "cannot allocate the count of pre-token %zu (%zu bytes)",
                                (size_t)t->pretokens, n);
        }
        t->pretokens++;
        pos = end;
    }
    t->bytes += len;
    t->unique_pretokens = m->count;
    return PHOTON_OK;
}

typedef struct photon__bpe_pair {
    int32_t a, b;
    int64_t count;     /* occurrences, weighted by pre-token counts */
    int32_t *words;    /* pre-tokens that have (or had) this pair; may repeat */
    size_t num_words, cap_words;
    int32_t last_word; /* the word appended last (skips repeats in a row) */
    uint32_t stamp;    /* the merge that last touched the count */
    int done;          /* merged, or skipped for good */
} photon__bpe_pair;

typedef struct photon__bpe_heapent {
    int64_t count;
    uint32_t pair;
} photon__bpe_heapent;

typedef struct photon__bpe_trainer_run {
    photon__bpe_pair *pairs;
    size_t num_pairs, cap_pairs;
    photon__bpe_pairmap index; /* (a, b) -> pair */
    photon__bpe_heapent *heap;
    size_t heap_len, heap_cap;
    uint32_t *touched;
    size_t num_touched, cap_touched;
    uint32_t stamp;
    int failed;
} photon__bpe_trainer_run;

/* Does heap entry x come before y? More occurrences first, then the smaller
   (left, right) ids. */
static int photon__bpe_before(const photon__bpe_trainer_run *t, const photon__bpe_heapent *x, const photon__bpe_heapent *y) {
    const photon__bpe_pair *p = &t->pairs[x->pair], *q = &t->pairs[y->pair];
    if (x->count != y->count) return x->count > y->count;
    if (p->a != q->a) return p->a < q->a;
    return p->b < q->b;
}

static void photon__bpe_tpush(photon__bpe_trainer_run *t, uint32_t pair) {
    photon__bpe_heapent v;
    size_t i;
    if (!photon__bpe_grow((void **)&t->heap, &t->heap_cap, t->heap_len + 1, sizeof *t->heap)) {
        t->failed = 1;
        return;
    }
    v.count = t->pairs[pair].count;
    v.pair = pair;
    i = t->heap_len++;
    while (i > 0 && photon__bpe_before(t, &v, &t->heap[(i - 1) / 2])) {
        t->heap[i] = t->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    t->heap[i] = v;
}

static photon__bpe_heapent photon__bpe_tpop(photon__bpe_trainer_run *t) {
    photon__bpe_heapent top = t->heap[0], v = t->heap[--t->heap_len];
    size_t i = 0, n = t->heap_len;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && photon__bpe_before(t, &t->heap[c + 1], &t->heap[c])) c++;
        if (!photon__bpe_before(t, &t->heap[c], &v)) break;
        t->heap[i] = t->heap[c];
        i = c;
    }
    if (n) t->heap[i] = v;
    return top;
}

/* Adds delta occurrences of (a, b), seen in word w. */
static void photon__bpe_count(photon__bpe_trainer_run *t, int32_t a, int32_t b, int64_t delta, int32_t w) {
    uint64_t key = photon__bpe_pair_key(a, b);
    long k = photon__bpe_pairmap_get(&t->index, key);
    photon__bpe_pair *p;
    if (t->failed) return;
    if (k < 0) {
        if (!photon__bpe_grow((void **)&t->pairs, &t->cap_pairs, t->num_pairs + 1, sizeof *t->pairs) ||
            !photon__bpe_pairmap_put(&t->index, key, (uint32_t)t->num_pairs)) {
            t->failed = 1;
            return;
        }
        k = (long)t->num_pairs++;
        p = &t->pairs[k];
        memset(p, 0, sizeof *p);
        p->a = a;
        p->b = b;
        p->last_word = -1;
        p->stamp = t->stamp;
        if (t->stamp) goto touch;
    }
    p = &t->pairs[k];
    if (p->stamp != t->stamp) {
        p->stamp = t->stamp;
    touch:
        if (!photon__bpe_grow((void **)&t->touched, &t->cap_touched, t->num_touched + 1, sizeof *t->touched)) {
            t->failed = 1;
            return;
        }
        t->touched[t->num_touched++] = (uint32_t)k;
    }
    p->count += delta;
    if (delta > 0 && p->last_word != w) {
        if (!photon__bpe_grow((void **)&p->words, &p->cap_words, p->num_words + 1, sizeof *p->words)) {
            t->failed = 1;
            return;
        }
        p->words[p->num_words++] = w;
        p->last_word = w;
    }
}

/* Merges every (A, B) of one word into C, left to right, and moves the pair
   counts: each merge removes (left neighbour, A), (B, right neighbour) and
   (A, B) and adds (left neighbour, C), (C, right neighbour). The left
   neighbour is read from the merged output, so "A B A B" correctly ends
   with (C, C). */
static void photon__bpe_merge_word(photon__bpe_trainer_run *t, int32_t *s, uint32_t *len, int64_t f, int32_t w,
                                   int32_t A, int32_t B, int32_t C) {
    size_t n = *len, i = 0, j = 0;
    while (i < n) {
        if (i + 1 < n && s[i] == A && s[i + 1] == B) {
            if (j > 0) {
                photon__bpe_count(t, s[j - 1], A, -f, w);
                photon__bpe_count(t, s[j - 1], C, f, w);
            }
            if (i + 2 < n) {
                photon__bpe_count(t, B, s[i + 2], -f, w);
                photon__bpe_count(t, C, s[i + 2], f, w);
            }
            photon__bpe_count(t, A, B, -f, w);
            s[j++] = C;
            i += 2;
        } else {
            s[j++] = s[i++];
        }
    }
    *len = (uint32_t)j;
}

PHOTONDEF photon_result photon_bpe_train(photon_bpe *bpe, const photon_bpe_trainer *trainer,
                                         const photon_bpe_train_options *o, photon_error *err) {
    const photon__bpe_strmap *words;
    photon__bpe_trainer_run t;
    photon__bpe_strmap tokmap;
    int32_t *sym = NULL;
    uint32_t *wlen = NULL, *wstamp = NULL, *tstart = NULL;
    unsigned char *tbytes = NULL, *buf = NULL;
    size_t tbytes_len = 0, tbytes_cap = 0, w, k, nw;
    photon_bpe_merge *merges = NULL;
    int ntok = 256, nmerge = 0, target, every;
    uint64_t min_count;
    const size_t eot_len = sizeof PHOTON_BPE_EOT - 1;
    photon_result r = PHOTON_ERR_MEMORY;

    memset(bpe, 0, sizeof *bpe);
    bpe->eot_token = -1;
    if (!trainer->counts) return photon__fail(err, PHOTON_ERR_ARGUMENT, "train: the trainer is not initialised");
    if (!o || o->vocab_size < 257 || o->vocab_size > PHOTON_BPE_MAX_VOCAB)
        return photon__fail(err, PHOTON_ERR_ARGUMENT,
                            "train: vocabulary size %d is out of range (257 to 65536: 256 bytes, merges, <|endoftext|>)",
                            o ? o->vocab_size : 0);
    words = &trainer->counts->words;
    nw = words->count;
    if (words->keys_len >= 0x7fffffffu || nw >= 0x7fffffffu)
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "train: too much distinct text (%zu bytes of distinct pre-tokens)",
                            words->keys_len);
    min_count = o->min_count ? o->min_count : 2;
    target = o->vocab_size - 1; /* tokens before <|endoftext|> */
    every = (target - 256) / 100 > 0 ? (target - 256) / 100 : 1;
    memset(&t, 0, sizeof t);
    memset(&tokmap, 0, sizeof tokmap);

    sym = (int32_t *)PHOTON_MALLOC((words->keys_len + 1) * sizeof(int32_t));
    wlen = (uint32_t *)PHOTON_MALLOC((nw + 1) * sizeof(uint32_t));
    wstamp = (uint32_t *)photon__calloc(nw + 1, sizeof(uint32_t));
    tstart = (uint32_t *)PHOTON_MALLOC(((size_t)o->vocab_size + 1) * sizeof(uint32_t));
    merges = (photon_bpe_merge *)PHOTON_MALLOC(((size_t)o->vocab_size - 256) * sizeof(photon_bpe_merge));
    buf = (unsigned char *)PHOTON_MALLOC(64);
    if (!sym || !wlen || !wstamp || !tstart || !merges || !buf) goto fail;
    for (k = 0; k < words->keys_len; k++) sym[k] = words->keys[k];
    for (w = 0; w < nw; w++) wlen[w] = (uint32_t)words->ent[w].key_len;

    /* the 256 byte tokens */
    for (k = 0; k < 256; k++) {
        unsigned char b = (unsigned char)k;
        if (!photon__bpe_grow((void **)&tbytes, &tbytes_cap, tbytes_len + 1, 1) ||
            photon__bpe_strmap_add(&tokmap, &b, 1, photon__bpe_hash(&b, 1), k) < 0)
            goto fail;
        tstart[k] = (uint32_t)tbytes_len;
        tbytes[tbytes_len++] = b;
    }
    tstart[256] = (uint32_t)tbytes_len;

    /* count every adjacent pair, then heap them */
    for (w = 0; w < nw; w++) {
        const int32_t *s = sym + words->ent[w].key_at;
        for (k = 0; k + 1 < wlen[w]; k++) photon__bpe_count(&t, s[k], s[k + 1], (int64_t)words->ent[w].value, (int32_t)w);
    }
    for (k = 0; k < t.num_pairs && !t.failed; k++)
        if (t.pairs[k].count > 0) photon__bpe_tpush(&t, (uint32_t)k);
    if (t.failed) goto fail;

    while (ntok < target && t.heap_len) {
        photon__bpe_heapent top = photon__bpe_tpop(&t);
        uint32_t pi = top.pair;
        photon__bpe_pair *p = &t.pairs[pi];
        size_t la, lb, nwl;
        int32_t A = p->a, B = p->b, C, *wl;
        if (p->done || top.count != p->count || p->count <= 0) continue; /* a stale entry */
        if ((uint64_t)p->count < min_count) break;
        la = tstart[A + 1] - tstart[A];
        lb = tstart[B + 1] - tstart[B];
        {
            size_t cap = 64;
            while (cap < la + lb) cap *= 2;
            if (cap > 64) {
                unsigned char *bigger = (unsigned char *)PHOTON_MALLOC(cap);
                if (!bigger) goto fail;
                PHOTON_FREE(buf);
                buf = bigger;
            }
        }
        memcpy(buf, tbytes + tstart[A], la);
        memcpy(buf + la, tbytes + tstart[B], lb);
        if ((la + lb == eot_len && memcmp(buf, PHOTON_BPE_EOT, eot_len) == 0) ||
            photon__bpe_strmap_find(&tokmap, buf, la + lb, photon__bpe_hash(buf, la + lb)) >= 0) {
            p->done = 1; /* its bytes are a token already: skipped for good */
            continue;
        }
        C = ntok++;
        if (!photon__bpe_grow((void **)&tbytes, &tbytes_cap, tbytes_len + la + lb, 1) ||
            photon__bpe_strmap_add(&tokmap, buf, la + lb, photon__bpe_hash(buf, la + lb), (uint64_t)C) < 0)
            goto fail;
        memcpy(tbytes + tbytes_len, buf, la + lb);
        tbytes_len += la + lb;
        tstart[C + 1] = (uint32_t)tbytes_len;
        merges[nmerge].left = A;
        merges[nmerge].right = B;
        merges[nmerge].result = C;
        nmerge++;
        p->done = 1;

        t.stamp++;
        t.num_touched = 0;
        wl = p->words; /* the list of (A, B) itself does not grow while it merges */
        nwl = p->num_words;
        for (k = 0; k < nwl; k++) {
            int32_t v = wl[k];
            if (wstamp[v] == t.stamp) continue;
            wstamp[v] = t.stamp;
            photon__bpe_merge_word(&t, sym + words->ent[v].key_at, &wlen[v], (int64_t)words->ent[v].value, v, A, B, C);
        }
        if (t.failed) goto fail;
        p = &t.pairs[pi];
        PHOTON_ASSERT(p->count == 0); /* the incremental counts met every occurrence */
        PHOTON_FREE(p->words);
        p->words = NULL;
        p->num_words = p->cap_words = 0;
        for (k = 0; k < t.num_touched; k++) {
            const photon__bpe_pair *q = &t.pairs[t.touched[k]];
            if (!q->done && q->count > 0) photon__bpe_tpush(&t, t.touched[k]);
        }
        if (t.failed) goto fail;
        if (o->progress && (nmerge % every == 0)) o->progress(o->progress_ctx, nmerge, target - 256);
    }

    /* <|endoftext|> last, as in GPT-2 */
    if (!photon__bpe_grow((void **)&tbytes, &tbytes_cap, tbytes_len + eot_len, 1)) goto fail;
    memcpy(tbytes + tbytes_len, PHOTON_BPE_EOT, eot_len);
    tbytes_len += eot_len;
    tstart[ntok + 1] = (uint32_t)tbytes_len;
    bpe->eot_token = ntok++;
    bpe->vocab_size = ntok;
    bpe->num_merges = nmerge;
    bpe->merges = merges;
    bpe->token_start = tstart;
    bpe->token_bytes = tbytes;
    merges = NULL;
    tstart = NULL;
    tbytes = NULL;
    for (k = 0; k < 256; k++) bpe->byte_token[k] = (int)k;
    if (o->progress) o->progress(o->progress_ctx, nmerge, target - 256);
    r = photon__bpe_finish(bpe, err);
    if (r != PHOTON_OK) photon_bpe_free(bpe);
    goto done;
fail:
    r = photon__fail(err, PHOTON_ERR_MEMORY, "train: out of memory after %d merges", nmerge);
done:
    for (k = 0; k < t.num_pairs; k++) PHOTON_FREE(t.pairs[k].words);
    PHOTON_FREE(t.pairs);
    photon__bpe_pairmap_free(&t.index);
    PHOTON_FREE(t.heap);
    PHOTON_FREE(t.touched);
    photon__bpe_strmap_free(&tokmap);
    PHOTON_FREE(sym);
    PHOTON_FREE(wlen);
    PHOTON_FREE(wstamp);
    PHOTON_FREE(tstart);
    PHOTON_FREE(tbytes);
    PHOTON_FREE(merges);
    PHOTON_FREE(buf);
    return r;
}

PHOTONDEF photon_result photon_bpe_train_text(photon_bpe *bpe, const void *text, size_t len,
                                              const photon_bpe_train_options *options, photon_error *err) {
    photon_bpe_trainer t;
    photon_result r;
    memset(bpe, 0, sizeof *bpe);
    bpe->eot_token = -1;
    if ((r = photon_bpe_trainer_init(&t, err)) != PHOTON_OK) return r;
    if ((r = photon_bpe_trainer_add(&t, text, len, err)) == PHOTON_OK) r = photon_bpe_train(bpe, &t, options, err);
    photon_bpe_trainer_free(&t);
    return r;
}

/* ======================================================================= */
/* BPE: GPT-2's files                                                      */
/* ======================================================================= */

typedef struct photon__bpe_name {
    const char *s;
    size_t n;
    int id;
} photon__bpe_name;

static int photon__bpe_name_cmp(const void *x, const void *y) {
    const photon__bpe_name *a = (const photon__bpe_name *)x, *b = (const photon__bpe_name *)y;
    size_t n = a->n < b->n ? a->n : b->n;
    int c = memcmp(a->s, b->s, n);
    if (c) return c;
    return a->n < b->n ? -1 : a->n > b->n ? 1 : 0;
}

/* vocab.json as transformers writes it: json.dumps(vocab, indent=2,
   sort_keys=True, ensure_ascii=False) + "\n". Keys sort by code point,
   which is the byte order of their UTF-8. merges.txt: "#version: 0.2", then
   one "left right" line per merge, each line ending in "\n". */
PHOTONDEF photon_result photon_bpe_save(const photon_bpe *bpe, const char *vocab_path, const char *merges_path,
                                        photon_error *err) {
    photon__bpe_charmap cm;
    photon__text names = {NULL, 0, 0, 0}, vocab = {NULL, 0, 0, 0}, merges = {NULL, 0, 0, 0};
    size_t *at = NULL;
    photon__bpe_name *order = NULL;
    photon__atomic fv, fm;
    int i, V = bpe->vocab_size;
    photon_result r;
    memset(&fv, 0, sizeof fv);
    memset(&fm, 0, sizeof fm);
    if (!bpe->token_start || V < 1)
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "%s: the tokenizer to save is empty", vocab_path);
    photon__bpe_charmap_init(&cm);
    at = (size_t *)PHOTON_MALLOC(((size_t)V + 1) * sizeof(size_t));
    order = (photon__bpe_name *)PHOTON_MALLOC((size_t)V * sizeof *order);
    if (!at || !order) goto oom;
    photon__text_append(&names, "", 0);
    for (i = 0; i < V; i++) {
        at[i] = names.len;
        photon__bpe_text_mapped(&names, &cm, bpe->token_bytes + bpe->token_start[i],
                                bpe->token_start[i + 1] - bpe->token_start[i]);
    }
    at[V] = names.len;
    if (names.failed) goto oom;
    for (i = 0; i < V; i++) {
        order[i].s = names.s + at[i];
        order[i].n = at[i + 1] - at[i];
        order[i].id = i;
    }
    qsort(order, (size_t)V, sizeof *order, photon__bpe_name_cmp);
    photon__text_puts(&vocab, "{\n");
    for (i = 0; i < V; i++) {
        size_t k, start = 0;
        photon__text_puts(&vocab, "  \"");
        for (k = 0; k < order[i].n; k++) { /* '"' and '\\' are the only mapped characters JSON escapes */
            char c = order[i].s[k];
            if (c == '"' || c == '\\') {
                photon__text_append(&vocab, order[i].s + start, k - start);
                photon__text_append(&vocab, "\\", 1);
                start = k;
            }
        }
        photon__text_append(&vocab, order[i].s + start, order[i].n - start);
        photon__text_puts(&vocab, "\": ");
        photon__text_u64(&vocab, (uint64_t)order[i].id);
        photon__text_puts(&vocab, i + 1 < V ? ",\n" : "\n");
    }
    photon__text_puts(&vocab, "}\n");
    photon__text_puts(&merges, "#version: 0.2\n");
    for (i = 0; i < bpe->num_merges; i++) {
        int a = bpe->merges[i].left, b = bpe->merges[i].right;
        photon__text_append(&merges, names.s + at[a], at[a + 1] - at[a]);
        photon__text_append(&merges, " ", 1);
        photon__text_append(&merges, names.s + at[b], at[b + 1] - at[b]);
        photon__text_append(&merges, "\n", 1);
    }
    if (vocab.failed || merges.failed) goto oom;
    /* both files are complete on disk before either is renamed into place */
    if ((r = photon__atomic_open(&fv, vocab_path, err)) != PHOTON_OK) goto out;
    if ((r = photon__atomic_open(&fm, merges_path, err)) != PHOTON_OK) {
        photon__atomic_abort(&fv);
        goto out;
    }
    fwrite(vocab.s, 1, vocab.len, fv.f);
    fwrite(merges.s, 1, merges.len, fm.f);
    if ((r = photon__atomic_commit(&fv, err)) != PHOTON_OK) {
        photon__atomic_abort(&fm);
        goto out;
    }
    r = photon__atomic_commit(&fm, err);
    goto out;
oom:
    r = photon__fail(err, PHOTON_ERR_MEMORY, "%s: cannot allocate the text of the tokenizer files", vocab_path);
out:
    PHOTON_FREE(at);
    PHOTON_FREE(order);
    PHOTON_FREE(names.s);
    PHOTON_FREE(vocab.s);
    PHOTON_FREE(merges.s);
    return r;
}

/* Line and column (from 1) of byte pos, counted on from the last call
   (positions only move forward while a file is read). */
typedef struct photon__bpe_where {
    size_t pos, line_start;
    int line;
} photon__bpe_where;

static void photon__bpe_line_col(photon__bpe_where *w, const char *s, size_t pos, int *line, int *col) {
    if (pos < w->pos) {
        w->pos = w->line_start = 0;
        w->line = 1;
    }
    for (; w->pos < pos; w->pos++)
        if (s[w->pos] == '\n') {
            w->line++;
            w->line_start = w->pos + 1;
        }
    *line = w->line;
    *col = (int)(pos - w->line_start) + 1;
}

/* Copies at most 40 bytes of a token's text for a message, whole characters only. */
static const char *photon__bpe_clip(char *buf, const char *s, size_t n) {
    size_t k = n;
    if (k > 40) {
        k = 40;
        while (k > 0 && ((unsigned char)s[k] & 0xc0) == 0x80) k--;
    }
    memcpy(buf, s, k);
    strcpy(buf + k, n > k ? "..." : "");
    return buf;
}

/* The JSON reader's messages speak of a safetensors header; vocab.json's
   name the line and column instead. */
static photon_result photon__bpe_json_fail(photon_error *err, const photon__json *j, const photon_error *inner) {
    const char *what = strstr(inner->message, " at byte ");
    photon__bpe_where w = {0, 0, 1};
    int line, col;
    if (inner->code != PHOTON_ERR_FORMAT || !what || !(what = strstr(what, ": "))) {
        if (err) *err = *inner;
        return inner->code;
    }
    photon__bpe_line_col(&w, j->s, j->pos, &line, &col);
    return photon__fail(err, PHOTON_ERR_FORMAT, "%s: invalid JSON at line %d, column %d: %s", j->path, line, col,
                        what + 2);
}

/* Loader scratch: one vocab.json entry. */
typedef struct photon__bpe_entry {
    size_t at, n; /* its bytes in the arena */
    uint64_t id;
    int line;
} photon__bpe_entry;

static photon_result photon__bpe_read_vocab(photon_bpe *bpe, const char *path, const photon__bpe_charmap *cm,
                                            photon__bpe_strmap *ids, photon_error *err) {
    unsigned char *data = NULL;
    size_t size = 0, k;
    photon__json j;
    photon_error inner;
    photon__bpe_entry *ents = NULL;
    size_t nents = 0, cap = 0;
    int *by_id = NULL;
    char clip[64];
    photon__bpe_strmap *m = ids;
    photon__bpe_where where = {0, 0, 1};
    photon_result r;
    if ((r = photon__read_file(path, &data, &size, err)) != PHOTON_OK) return r;
    memset(&inner, 0, sizeof inner);
    j.s = (const char *)data;
    j.n = size;
    j.pos = 0;
    j.path = path;
    j.err = &inner;
    if (!photon__json_accept(&j, '{')) {
        r = photon__bpe_json_fail(err, &j, (photon__json_error(&j, "expected '{' (a JSON object of token -> id)"), &inner));
        goto out;
    }
    if (!photon__json_accept(&j, '}')) {
        do {
            char *key = NULL;
            uint64_t id;
            uint32_t bad = 0;
            long n;
            int line, col;
            size_t start;
            photon__json_ws(&j);
            start = j.pos;
            if ((r = photon__json_string(&j, &key)) != PHOTON_OK ||
                (!photon__json_accept(&j, ':') && (r = photon__json_error(&j, "expected ':'")) != PHOTON_OK) ||
                (r = photon__json_uint(&j, &id)) != PHOTON_OK) {
                PHOTON_FREE(key);
                r = photon__bpe_json_fail(err, &j, &inner);
                goto out;
            }
            photon__bpe_line_col(&where, j.s, start, &line, &col);
            photon__bpe_clip(clip, key, strlen(key));
            n = photon__bpe_unmap(cm, (unsigned char *)key, strlen(key), &bad);
            if (n < 0) {
                if (bad == 0x110000)
                    r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: line %d: token \"%s\" is not valid UTF-8", path, line,
                                     clip);
                else
                    r = photon__fail(err, PHOTON_ERR_FORMAT,
                                     "%s: line %d: token \"%s\" has the character U+%04X, which is not in GPT-2's "
                                     "byte-to-unicode alphabet",
                                     path, line, clip, (unsigned)bad);
                PHOTON_FREE(key);
                goto out;
            }
            if (n == 0) {
                PHOTON_FREE(key);
                r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: line %d: a token is the empty string", path, line);
                goto out;
            }
            if (photon__bpe_strmap_find(m, (unsigned char *)key, (size_t)n, photon__bpe_hash((unsigned char *)key, (size_t)n)) >= 0) {
                PHOTON_FREE(key);
                r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: line %d, column %d: token \"%s\" appears twice", path,
                                 line, col, clip);
                goto out;
            }
            if (id >= PHOTON_BPE_MAX_VOCAB) {
                PHOTON_FREE(key);
                r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: line %d: id %llu is too large (photon's ids are below %d)",
                                 path, line, (unsigned long long)id, PHOTON_BPE_MAX_VOCAB);
                goto out;
            }
            if (!photon__bpe_grow((void **)&ents, &cap, nents + 1, sizeof *ents) ||
                photon__bpe_strmap_add(m, (unsigned char *)key, (size_t)n, photon__bpe_hash((unsigned char *)key, (size_t)n), id) < 0) {
                PHOTON_FREE(key);
                r = photon__fail(err, PHOTON_ERR_MEMORY, "%s: cannot allocate the vocabulary", path);
                goto out;
            }
            ents[nents].at = m->ent[m->count - 1].key_at;
            ents[nents].n = (size_t)n;
            ents[nents].id = id;
            ents[nents].line = line;
            nents++;
            PHOTON_FREE(key);
            if (nents > PHOTON_BPE_MAX_VOCAB) {
                r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: has more than %d tokens, photon's limit", path,
                                 PHOTON_BPE_MAX_VOCAB);
                goto out;
            }
        } while (photon__json_accept(&j, ','));
        if (!photon__json_accept(&j, '}')) {
            photon__json_error(&j, "expected ',' or '}'");
            r = photon__bpe_json_fail(err, &j, &inner);
            goto out;
        }
    }
    photon__json_ws(&j);
    if (j.pos != j.n) {
        photon__json_error(&j, "text after the closing '}'");
        r = photon__bpe_json_fail(err, &j, &inner);
        goto out;
    }
    if (nents == 0) {
        r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: holds no tokens", path);
        goto out;
    }
    by_id = (int *)PHOTON_MALLOC(nents * sizeof(int));
    bpe->token_start = (uint32_t *)PHOTON_MALLOC((nents + 1) * sizeof(uint32_t));
    bpe->token_bytes = (unsigned char *)PHOTON_MALLOC(m->keys_len + 1);
    if (!by_id || !bpe->token_start || !bpe->token_bytes) {
        r = photon__fail(err, PHOTON_ERR_MEMORY, "%s: cannot allocate the vocabulary", path);
        goto out;
    }
    for (k = 0; k < nents; k++) by_id[k] = -1;
    for (k = 0; k < nents; k++) {
        if (ents[k].id >= nents) {
            r = photon__fail(err, PHOTON_ERR_FORMAT,
                             "%s: line %d: id %llu, but the %zu tokens must have the ids 0 to %zu, one each", path,
                             ents[k].line, (unsigned long long)ents[k].id, nents, nents - 1);
            goto out;
        }
        if (by_id[ents[k].id] >= 0) {
            r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: line %d: id %llu is also the id of the token on line %d",
                             path, ents[k].line, (unsigned long long)ents[k].id, ents[by_id[ents[k].id]].line);
            goto out;
        }
        by_id[ents[k].id] = (int)k;
    }
    {
        size_t o = 0;
        for (k = 0; k < nents; k++) {
            const photon__bpe_entry *e = &ents[by_id[k]];
            bpe->token_start[k] = (uint32_t)o;
            memcpy(bpe->token_bytes + o, m->keys + e->at, e->n);
            o += e->n;
        }
        bpe->token_start[nents] = (uint32_t)o;
    }
    bpe->vocab_size = (int)nents;
    for (k = 0; k < 256; k++) {
        unsigned char b = (unsigned char)k;
        long e = photon__bpe_strmap_find(m, &b, 1, photon__bpe_hash(&b, 1));
        if (e < 0) {
            r = photon__fail(err, PHOTON_ERR_FORMAT,
                             "%s: has no token for the byte 0x%02x (\"%.*s\"); a byte-level vocabulary needs all 256",
                             path, (unsigned)k, (int)cm->utf8_len[k], (const char *)cm->utf8[k]);
            goto out;
        }
        bpe->byte_token[k] = (int)m->ent[e].value;
    }
    {
        long e = photon__bpe_strmap_find(m, (const unsigned char *)PHOTON_BPE_EOT, sizeof PHOTON_BPE_EOT - 1,
                                         photon__bpe_hash((const unsigned char *)PHOTON_BPE_EOT, sizeof PHOTON_BPE_EOT - 1));
        bpe->eot_token = e >= 0 ? (int)m->ent[e].value : -1;
    }
    r = PHOTON_OK;
out:
    PHOTON_FREE(data);
    PHOTON_FREE(ents);
    PHOTON_FREE(by_id);
    return r;
}

/* One side of a merge line: clipped for messages, then turned into its
   bytes in place and looked up. Returns the token id, or -1 with err set. */
static int photon__bpe_merge_part(char *s, size_t n, const char *path, int line, const char *vocab_path,
                                  const photon__bpe_charmap *cm, const photon__bpe_strmap *ids, size_t *bytes,
                                  photon_error *err) {
    char clip[64];
    uint32_t bad = 0;
    long len, e;
    photon__bpe_clip(clip, s, n);
    len = photon__bpe_unmap(cm, (unsigned char *)s, n, &bad);
    if (len < 0) {
        if (bad == 0x110000)
            photon__fail(err, PHOTON_ERR_FORMAT, "%s: line %d: \"%s\" is not valid UTF-8", path, line, clip);
        else
            photon__fail(err, PHOTON_ERR_FORMAT,
                         "%s: line %d: \"%s\" has the character U+%04X, which is not in GPT-2's byte-to-unicode alphabet",
                         path, line, clip, (unsigned)bad);
        return -1;
    }
    e = photon__bpe_strmap_find(ids, (const unsigned char *)s, (size_t)len, photon__bpe_hash((const unsigned char *)s, (size_t)len));
    if (e < 0) {
        photon__fail(err, PHOTON_ERR_FORMAT, "%s: line %d: \"%s\" is not a token of %s", path, line, clip, vocab_path);
        return -1;
    }
    *bytes = (size_t)len;
    return (int)ids->ent[e].value;
}

static photon_result photon__bpe_read_merges(photon_bpe *bpe, const char *path, const char *vocab_path,
                                             const photon__bpe_charmap *cm, const photon__bpe_strmap *ids,
                                             photon_error *err) {
    unsigned char *data = NULL, *joined = NULL;
    size_t size = 0, pos, lines = 0, k, cap = 0;
    int line = 1;
    photon__bpe_pairmap seen;
    photon_result r;
    memset(&seen, 0, sizeof seen);
    if ((r = photon__read_file(path, &data, &size, err)) != PHOTON_OK) return r;
    data[size] = '\0';
    if (size < 8 || memcmp(data, "#version", 8) != 0) {
        r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: line 1: expected the header \"#version: 0.2\"", path);
        goto out;
    }
    for (k = 0; k < size; k++) lines += data[k] == '\n';
    bpe->merges = (photon_bpe_merge *)PHOTON_MALLOC((lines + 1) * sizeof(photon_bpe_merge));
    if (!bpe->merges) {
        r = photon__fail(err, PHOTON_ERR_MEMORY, "%s: cannot allocate %zu merges", path, lines);
        goto out;
    }
    pos = 0;
    while (pos < size && data[pos] != '\n') pos++; /* the header line */
    pos++;
    while (pos < size) {
        size_t end = pos, sp, n1, n2, b1 = 0, b2 = 0;
        int left, right, result;
        long e;
        char clip1[64], clip2[64];
        line++;
        while (end < size && data[end] != '\n') end++;
        if (end == pos) {
            r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: line %d: empty line", path, line);
            goto out;
        }
        if (data[end - 1] == '\r') {
            r = photon__fail(err, PHOTON_ERR_FORMAT,
                             "%s: line %d: ends with a carriage return (CRLF line endings are not GPT-2's format)", path,
                             line);
            goto out;
        }
        for (sp = pos; sp < end && data[sp] != ' '; sp++) {}
        n1 = sp - pos;
        n2 = sp < end ? end - sp - 1 : 0;
        if (sp == end || n1 == 0 || n2 == 0 || memchr(data + sp + 1, ' ', n2)) {
            char clip[64];
            r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: line %d: expected two tokens separated by one space, got \"%s\"",
                             path, line, photon__bpe_clip(clip, (const char *)data + pos, end - pos));
            goto out;
        }
        photon__bpe_clip(clip1, (const char *)data + pos, n1);
        photon__bpe_clip(clip2, (const char *)data + sp + 1, n2);
        if ((left = photon__bpe_merge_part((char *)data + pos, n1, path, line, vocab_path, cm, ids, &b1, err)) < 0 ||
            (right = photon__bpe_merge_part((char *)data + sp + 1, n2, path, line, vocab_path, cm, ids, &b2, err)) < 0) {
            r = PHOTON_ERR_FORMAT;
            goto out;
        }
        if (!photon__bpe_grow((void **)&joined, &cap, b1 + b2, 1)) {
            r = photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", path);
            goto out;
        }
        memcpy(joined, data + pos, b1);
        memcpy(joined + b1, data + sp + 1, b2);
        e = photon__bpe_strmap_find(ids, joined, b1 + b2, photon__bpe_hash(joined, b1 + b2));
        if (e < 0) {
            r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: line %d: \"%s\" + \"%s\" is not a token of %s", path, line,
                             clip1, clip2, vocab_path);
            goto out;
        }
        result = (int)ids->ent[e].value;
        if ((e = photon__bpe_pairmap_get(&seen, photon__bpe_pair_key(left, right))) >= 0) {
            r = photon__fail(err, PHOTON_ERR_FORMAT, "%s: line %d: the merge \"%s %s\" is also on line %ld", path, line,
                             clip1, clip2, e + 2);
            goto out;
        }
        if (!photon__bpe_pairmap_put(&seen, photon__bpe_pair_key(left, right), (uint32_t)bpe->num_merges)) {
            r = photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", path);
            goto out;
        }
        bpe->merges[bpe->num_merges].left = left;
        bpe->merges[bpe->num_merges].right = right;
        bpe->merges[bpe->num_merges].result = result;
        bpe->num_merges++;
        pos = end + 1;
    }
    r = PHOTON_OK;
out:
    PHOTON_FREE(data);
    PHOTON_FREE(joined);
    photon__bpe_pairmap_free(&seen);
    return r;
}

PHOTONDEF photon_result photon_bpe_load(photon_bpe *bpe, const char *vocab_path, const char *merges_path,
                                        photon_error *err) {
    photon__bpe_charmap cm;
    photon__bpe_strmap ids;
    photon_result r;
    memset(bpe, 0, sizeof *bpe);
    bpe->eot_token = -1;
    memset(&ids, 0, sizeof ids);
    photon__bpe_charmap_init(&cm);
    r = photon__bpe_read_vocab(bpe, vocab_path, &cm, &ids, err);
    if (r == PHOTON_OK) r = photon__bpe_read_merges(bpe, merges_path, vocab_path, &cm, &ids, err);
    if (r == PHOTON_OK) r = photon__bpe_finish(bpe, err);
    if (r != PHOTON_OK) photon_bpe_free(bpe);
    photon__bpe_strmap_free(&ids);
    return r;
}

static photon_result photon__bpe_dir_paths(const char *dir, char **vocab, char **merges, photon_error *err) {
    size_t n = strlen(dir) + 16;
    *vocab = (char *)PHOTON_MALLOC(n);
    *merges = (char *)PHOTON_MALLOC(n);
    if (!*vocab || !*merges) {
        PHOTON_FREE(*vocab);
        PHOTON_FREE(*merges);
        return photon__fail(err, PHOTON_ERR_MEMORY, "%s: cannot allocate a file name", dir);
    }
    snprintf(*vocab, n, "%s/vocab.json", dir);
    snprintf(*merges, n, "%s/merges.txt", dir);
    return PHOTON_OK;
}

PHOTONDEF photon_result photon_bpe_load_dir(photon_bpe *bpe, const char *dir, photon_error *err) {
    char *v, *m;
    photon_result r;
    memset(bpe, 0, sizeof *bpe);
    bpe->eot_token = -1;
    if ((r = photon__bpe_dir_paths(dir, &v, &m, err)) != PHOTON_OK) return r;
    r = photon_bpe_load(bpe, v, m, err);
    PHOTON_FREE(v);
    PHOTON_FREE(m);
    return r;
}

PHOTONDEF photon_result photon_bpe_save_dir(const photon_bpe *bpe, const char *dir, photon_error *err) {
    char *v, *m;
    photon_result r;
    if ((r = photon__bpe_dir_paths(dir, &v, &m, err)) != PHOTON_OK) return r;
    r = photon_bpe_save(bpe, v, m, err);
    PHOTON_FREE(v);
    PHOTON_FREE(m);
    return r;
}

/* ======================================================================= */
/* Token shards                                                            */
/* ======================================================================= */

static void photon__bpe_put_le32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

PHOTONDEF photon_result photon_shard_write(const char *path, const uint16_t *tokens, size_t n, photon_error *err) {
    unsigned char header[1024], chunk[8192];
    photon__atomic a;
    size_t i = 0;
    photon_result r;
    if (n > 0x7fffffffu)
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "%s: %zu tokens do not fit one shard (at most 2147483647)", path, n);
    memset(header, 0, sizeof header);
    photon__bpe_put_le32(header, 20240520u);
    photon__bpe_put_le32(header + 4, 1);
    photon__bpe_put_le32(header + 8, (uint32_t)n);
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

#ifdef __cplusplus
}
#endif
#endif /* PHOTON_IMPLEMENTATION_DONE */
#endif /* PHOTON_IMPLEMENTATION */
