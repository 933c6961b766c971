/* photon_bpe.h - GPT-2's byte-level BPE tokenizer for photon, in one C header.

   USAGE
   -----
   photon_bpe.h needs photon.h beside it (it includes it) and shares its
   implementation macro: in the one file that defines PHOTON_IMPLEMENTATION,
   include photon_bpe.h too (before or after photon.h) and the tokenizer is
   compiled with the library, using the same machinery (JSON reader, atomic
   files, UTF-8, result codes, PHOTON_MALLOC/PHOTON_FREE, PHOTONDEF):

       #define PHOTON_IMPLEMENTATION
       #include "photon_bpe.h"   // also brings photon.h

   photon.h does not need this header: without it photon trains on bytes and
   llm.c token shards. With it, photon_bpe_encoder() turns a tokenizer into
   the photon_encoder that photon_dataset_load_with reads text through, and
   photon_dataset_load_bpe does both in one call.

   WHAT IT DOES
   ------------
   Byte-level BPE as GPT-2 does it. The 256 bytes are the base symbols. Text
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
   65535 (llm.c shards store uint16).

   CONTENTS
   --------
       >>bpe_api           the public interface (below)
       >>bpe_pretokenizer  character classes and GPT-2's pre-tokenizer pattern
       >>bpe_bytemap       GPT-2's byte-to-unicode map
       >>bpe_maps          hash maps (machinery)
       >>bpe_encode        encoding and decoding
       >>bpe_train         learning the merges
       >>bpe_files         GPT-2's vocab.json and merges.txt
       >>bpe_data          the tokenizer as photon's data encoder

   LICENSE: MIT, see LICENSE.
*/
#ifndef PHOTON_BPE_H
#define PHOTON_BPE_H

#include "photon.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- >>bpe_api */
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

/* The tokenizer as photon's data encoder (>>data in photon.h): bpe must
   outlive the encoder, and encodes on one thread at a time. */
PHOTONDEF photon_encoder photon_bpe_encoder(photon_bpe *bpe);
/* photon_hf_export with this tokenizer's files beside the model. */
PHOTONDEF photon_result photon_bpe_hf_export(const photon_bpe *bpe, const char *checkpoint_path, const char *dir,
                                             photon_error *err);
/* photon_dataset_load_with through the tokenizer (NULL: bytes). */
PHOTONDEF photon_result photon_dataset_load_bpe(photon_dataset *ds, const char *const *paths, int num_paths,
                                                photon_bpe *bpe, photon_error *err);

#ifdef __cplusplus
}
#endif
#endif /* PHOTON_BPE_H */

/* ======================================================================= */
/*                            IMPLEMENTATION                               */
/* ======================================================================= */
#ifdef PHOTON_IMPLEMENTATION
#ifndef PHOTON_BPE_IMPLEMENTATION_DONE
#define PHOTON_BPE_IMPLEMENTATION_DONE

#ifdef __cplusplus
extern "C" {
#endif

/* ======================================================================= */
/* >>bpe_pretokenizer: character classes and GPT-2's pattern               */
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

/* The class of the character at s[i] and its length in bytes. A byte that
   does not start well-formed UTF-8 is one symbol of class "other". */
static int photon__bpe_char(const unsigned char *s, size_t n, size_t i, size_t *len) {
    uint32_t cp;
    if (s[i] < 0x80) {
        *len = 1;
        return photon__bpe_ascii[s[i]];
    }
    if (!(*len = photon__utf8_decode(s, n, i, &cp))) {
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
/* >>bpe_bytemap: GPT-2's byte-to-unicode map                              */
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
        size_t l = photon__utf8_decode(s, n, i, &cp);
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
/* >>bpe_maps: hash maps (machinery)                                       */
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
/* >>bpe_encode: encoding and decoding                                     */
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
/* >>bpe_train: learning the merges                                        */
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
/* >>bpe_files: GPT-2's vocab.json and merges.txt                          */
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
static photon_result photon__bpe_texts(const photon_bpe *bpe, photon__text *vocab, photon__text *merges,
                                       const char *what, photon_error *err) {
    photon__bpe_charmap cm;
    photon__text names = {NULL, 0, 0, 0};
    size_t *at = NULL;
    photon__bpe_name *order = NULL;
    int i, V = bpe->vocab_size;
    photon_result r = PHOTON_OK;
    if (!bpe->token_start || V < 1)
        return photon__fail(err, PHOTON_ERR_ARGUMENT, "%s: the tokenizer to save is empty", what);
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
    photon__text_puts(vocab, "{\n");
    for (i = 0; i < V; i++) {
        size_t k, start = 0;
        photon__text_puts(vocab, "  \"");
        for (k = 0; k < order[i].n; k++) { /* '"' and '\\' are the only mapped characters JSON escapes */
            char c = order[i].s[k];
            if (c == '"' || c == '\\') {
                photon__text_append(vocab, order[i].s + start, k - start);
                photon__text_append(vocab, "\\", 1);
                start = k;
            }
        }
        photon__text_append(vocab, order[i].s + start, order[i].n - start);
        photon__text_puts(vocab, "\": ");
        photon__text_u64(vocab, (uint64_t)order[i].id);
        photon__text_puts(vocab, i + 1 < V ? ",\n" : "\n");
    }
    photon__text_puts(vocab, "}\n");
    photon__text_puts(merges, "#version: 0.2\n");
    for (i = 0; i < bpe->num_merges; i++) {
        int a = bpe->merges[i].left, b = bpe->merges[i].right;
        photon__text_append(merges, names.s + at[a], at[a + 1] - at[a]);
        photon__text_append(merges, " ", 1);
        photon__text_append(merges, names.s + at[b], at[b + 1] - at[b]);
        photon__text_append(merges, "\n", 1);
    }
    if (vocab->failed || merges->failed) goto oom;
    goto out;
oom:
    r = photon__fail(err, PHOTON_ERR_MEMORY, "%s: cannot allocate the text of the tokenizer files", what);
out:
    PHOTON_FREE(at);
    PHOTON_FREE(order);
    PHOTON_FREE(names.s);
    return r;
}

PHOTONDEF photon_result photon_bpe_save(const photon_bpe *bpe, const char *vocab_path, const char *merges_path,
                                        photon_error *err) {
    photon__text vocab = {NULL, 0, 0, 0}, merges = {NULL, 0, 0, 0};
    photon__atomic fv, fm;
    photon_result r;
    memset(&fv, 0, sizeof fv);
    memset(&fm, 0, sizeof fm);
    if ((r = photon__bpe_texts(bpe, &vocab, &merges, vocab_path, err)) != PHOTON_OK) goto out;
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
out:
    PHOTON_FREE(vocab.s);
    PHOTON_FREE(merges.s);
    return r;
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
    photon__bpe_entry *ents = NULL;
    size_t nents = 0, cap = 0;
    int *by_id = NULL;
    char clip[64];
    photon__bpe_strmap *m = ids;
    photon_result r;
    if ((r = photon_read_file(path, &data, &size, err)) != PHOTON_OK) return r;
    photon__json_init(&j, (const char *)data, size, path, err);
    if (!photon__json_accept(&j, '{')) {
        r = photon__json_error(&j, "expected '{' (a JSON object of token -> id)");
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
                goto out;
            }
            photon__json_where(&j, start, &line, &col);
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
            r = photon__json_error(&j, "expected ',' or '}'");
            goto out;
        }
    }
    photon__json_ws(&j);
    if (j.pos != j.n) {
        r = photon__json_error(&j, "text after the closing '}'");
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
    if ((r = photon_read_file(path, &data, &size, err)) != PHOTON_OK) return r;
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
/* >>bpe_data: the tokenizer as photon's data encoder                      */
/* ======================================================================= */

static photon_result photon__bpe_encode_cb(void *ctx, const void *text, size_t len, uint16_t *tokens,
                                           size_t *num_tokens, photon_error *err) {
    return photon_bpe_encode((photon_bpe *)ctx, text, len, tokens, num_tokens, err);
}

static size_t photon__bpe_token_bytes_cb(void *ctx, int id) {
    size_t len = 0;
    photon_bpe_token((const photon_bpe *)ctx, id, &len);
    return len;
}

PHOTONDEF photon_encoder photon_bpe_encoder(photon_bpe *bpe) {
    photon_encoder e;
    e.encode = photon__bpe_encode_cb;
    e.token_bytes = photon__bpe_token_bytes_cb;
    e.ctx = bpe;
    e.vocab_size = bpe->vocab_size;
    return e;
}

PHOTONDEF photon_result photon_dataset_load_bpe(photon_dataset *ds, const char *const *paths, int num_paths,
                                                photon_bpe *bpe, photon_error *err) {
    photon_encoder e;
    if (!bpe) return photon_dataset_load_with(ds, paths, num_paths, NULL, err);
    e = photon_bpe_encoder(bpe);
    return photon_dataset_load_with(ds, paths, num_paths, &e, err);
}

/* The folder's tokenizer: GPT-2's two files, and a tokenizer_config.json
   with which transformers' AutoTokenizer loads them (GPT2Tokenizer, the
   end-of-text token as bos, eos and unk when the vocabulary has one). */
PHOTONDEF photon_result photon_bpe_hf_export(const photon_bpe *bpe, const char *checkpoint_path, const char *dir,
                                             photon_error *err) {
    photon__text vocab = {NULL, 0, 0, 0}, merges = {NULL, 0, 0, 0}, config = {NULL, 0, 0, 0};
    photon_hf_file files[3];
    photon_result r = photon__bpe_texts(bpe, &vocab, &merges, dir, err);
    photon__text_puts(&config, "{\n  \"tokenizer_class\": \"GPT2Tokenizer\",\n  \"add_prefix_space\": false,\n");
    if (bpe->eot_token >= 0)
        photon__text_puts(&config, "  \"bos_token\": \"<|endoftext|>\",\n  \"eos_token\": \"<|endoftext|>\",\n"
                                   "  \"unk_token\": \"<|endoftext|>\",\n");
    photon__text_puts(&config, "  \"model_max_length\": 1000000000000000019884624838656\n}\n");
    if (r == PHOTON_OK && config.failed) r = photon__fail(err, PHOTON_ERR_MEMORY, "%s: out of memory", dir);
    if (r == PHOTON_OK) {
        files[0].name = "vocab.json", files[0].data = vocab.s, files[0].size = vocab.len;
        files[1].name = "merges.txt", files[1].data = merges.s, files[1].size = merges.len;
        files[2].name = "tokenizer_config.json", files[2].data = config.s, files[2].size = config.len;
        r = photon_hf_export(checkpoint_path, dir, files, 3, bpe->eot_token, err);
    }
    PHOTON_FREE(vocab.s);
    PHOTON_FREE(merges.s);
    PHOTON_FREE(config.s);
    return r;
}

#ifdef __cplusplus
}
#endif
#endif /* PHOTON_BPE_IMPLEMENTATION_DONE */
#endif /* PHOTON_IMPLEMENTATION */
