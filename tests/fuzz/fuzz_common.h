/* fuzz_common.h - what the libFuzzer harnesses in tests/fuzz/ and their seed
   writer (make_seeds.c) share. Include it after photon_bpe.h, in the file
   that defines PHOTON_IMPLEMENTATION.

   The readers take paths, so each harness writes the fuzzer's input into a
   temporary directory made once per process (mkdtemp) and calls the public
   API on it. The model is tiny (vocab 16, ctx 4, 1 layer, 1 head, width 4)
   so that a run takes microseconds, and the library runs on one thread.

   The files a harness holds fixed (the base checkpoint of a merge, the
   tokenizer file it does not fuzz) are written by the same functions that
   make_seeds.c uses, from the same seed and text, so that they are byte for
   byte the files the seeds were made against (a delta's base hash matches,
   a merges.txt names tokens of the vocab.json). */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FUZZ_SEED 1
#define FUZZ_TOKENIZER_VOCAB 300 /* at most; on fuzz_tokenizer_text training stops at 292 */

static const photon_config fuzz_config = {16, 4, 1, 1, 4};

/* The text the fixed tokenizer is trained on and that every loaded tokenizer
   encodes and decodes. */
static const char fuzz_tokenizer_text[] =
    "The quick brown fox jumps over the lazy dog. The dog sleeps, the fox runs.\n"
    "It's 2024: they've said we'll see 3.14 apples and 42 pears; don't they?\n"
    "Caf\xc3\xa9 na\xc3\xafve \xe2\x80\x94 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e text, tabs\tand  spaces   here.\n"
    "<|endoftext|>The quick brown fox again, and again, and again.\n";

static inline void fuzz_die(const char *what, const photon_error *err) {
    fprintf(stderr, "fuzz: %s%s%s\n", what, err ? ": " : "", err ? err->message : "");
    abort();
}

/* ---- the per-process directory ---- */

#define FUZZ_MAX_FILES 16
static char fuzz__dir[4096];
static char *fuzz__files[FUZZ_MAX_FILES];
static int fuzz__num_files;
static volatile int fuzz__exiting; /* set once the cleanup has run */

/* At exit. libFuzzer may exit at -max_total_time from another thread while
   a unit runs: that unit then finds its directory gone (fuzz_write). */
static inline void fuzz__cleanup(void) {
    int i;
    fuzz__exiting = 1;
    for (i = 0; i < fuzz__num_files; i++) unlink(fuzz__files[i]); /* the paths stay: a unit may still hold one */
    if (fuzz__dir[0]) rmdir(fuzz__dir);
}

/* DIR/name in the per-process directory (made on the first call, removed
   at a normal exit; a crash leaves it); the same name gives the same
   pointer. */
static inline const char *fuzz_path(const char *name) {
    int i;
    size_t n;
    char *p;
    if (!fuzz__dir[0]) {
        /* TMPDIR, else /dev/shm: in memory, six times the executions per
           second of /tmp on a disk */
        const char *tmp = getenv("TMPDIR");
        if (!tmp || !*tmp) tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(fuzz__dir, sizeof fuzz__dir, "%s/photon-fuzz-XXXXXX", tmp);
        if (!mkdtemp(fuzz__dir)) {
            perror(fuzz__dir);
            abort();
        }
        atexit(fuzz__cleanup);
    }
    for (i = 0; i < fuzz__num_files; i++)
        if (strcmp(strrchr(fuzz__files[i], '/') + 1, name) == 0) return fuzz__files[i];
    if (fuzz__num_files == FUZZ_MAX_FILES) fuzz_die("too many temporary files", NULL);
    n = strlen(fuzz__dir) + strlen(name) + 2;
    p = (char *)malloc(n);
    if (!p) fuzz_die("out of memory", NULL);
    snprintf(p, n, "%s/%s", fuzz__dir, name);
    fuzz__files[fuzz__num_files++] = p;
    return p;
}

static inline void fuzz_write(const char *path, const void *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        if (fuzz__exiting) _exit(0); /* the run is over, not a bug */
        perror(path);
        abort();
    }
}

/* Once per process: one thread, and the directory. */
static inline void fuzz_init(void) {
    static int done;
    if (done) return;
    done = 1;
    photon_set_threads(1);
    fuzz_path("input");
}

/* Writes the fuzzer's input to DIR/name and returns the path (and makes
   the process ready, fuzz_init, the first time). */
static inline const char *fuzz_input(const char *name, const uint8_t *data, size_t size) {
    const char *path;
    fuzz_init();
    path = fuzz_path(name);
    fuzz_write(path, data, size);
    return path;
}

/* Photon's files record the SHA-256 of their data section
   (photon.data_sha256), which no mutation gets right: a changed tensor byte
   would only ever test the hash check. So a harness runs the input as it is
   and, where its recorded hash (as photon's writer spells it) is not its
   data's, again with the hash made right, which takes the bytes on to the
   readers' other checks. */
typedef void (*fuzz_fn)(const uint8_t *data, size_t size);

static inline void fuzz_each_payload(const uint8_t *data, size_t size, fuzz_fn fn) {
    static const char key[] = "\"photon.data_sha256\":\"";
    const size_t k = sizeof key - 1;
    uint64_t header = 0;
    size_t i, at;
    photon_sha256 sha;
    char hex[65];
    uint8_t *fixed;
    int j;
    fn(data, size);
    if (size < 8) return;
    for (j = 7; j >= 0; j--) header = header << 8 | data[j];
    if (header > size - 8 || header < k + 64) return;
    for (at = 8; at + k + 64 <= 8 + header; at++)
        if (data[at] == '"' && memcmp(data + at, key, k) == 0) break;
    if (at + k + 64 > 8 + header) return;
    photon_sha256_init(&sha);
    photon_sha256_update(&sha, data + 8 + header, size - 8 - (size_t)header);
    photon_sha256_final(&sha, hex);
    if (memcmp(data + at + k, hex, 64) == 0) return;
    fixed = (uint8_t *)malloc(size);
    if (!fixed) fuzz_die("out of memory", NULL);
    memcpy(fixed, data, size);
    for (i = 0; i < 64; i++) fixed[at + k + i] = (uint8_t)hex[i];
    fn(fixed, size);
    free(fixed);
}

static inline int fuzz__env(const char *name) {
    const char *v = getenv(name);
    return v && strcmp(v, "1") == 0;
}

/* A refusal must say so on one line (photon.h, ERRORS): a code that is not
   OK and a message that is not empty and holds no line break. In the
   environment, FUZZ_VERBOSE=1 prints each refusal (why a seed or a unit
   does not load); FUZZ_ALLOW_MULTILINE=1 (FUZZ_KNOWN=1) lets a message of
   several lines pass, for a time when that bug is reported and not fixed
   (the multiline-message reproducers in tests/fuzz/crashes/, fixed in
   0e47255). */
static inline void fuzz_check_refusal(photon_result r, const photon_error *err) {
    static int verbose = -1, multiline;
    if (r == PHOTON_OK) return;
    if (verbose < 0) verbose = fuzz__env("FUZZ_VERBOSE"), multiline = fuzz__env("FUZZ_ALLOW_MULTILINE");
    if (verbose) fprintf(stderr, "fuzz: refused (%s): %s\n", photon_result_string(r), err->message);
    if (!err->message[0]) fuzz_die("a refusal without a message", NULL);
    if (!multiline && (strchr(err->message, '\n') || strchr(err->message, '\r')))
        fuzz_die("a refusal message of several lines", err);
}

/* ---- the fixed files ---- */

/* The base checkpoint of the delta harness and of its seeds. */
static inline void fuzz_write_base(const char *path) {
    photon_model m;
    photon_error err;
    if (photon_model_init(&m, &fuzz_config, FUZZ_SEED, &err) != PHOTON_OK) fuzz_die("photon_model_init", &err);
    if (photon_checkpoint_save(&m, path, &err) != PHOTON_OK) fuzz_die("photon_checkpoint_save", &err);
    photon_model_free(&m);
}

/* The tokenizer the tokenizer harnesses hold half fixed, and its seeds. */
static inline void fuzz_write_tokenizer(const char *vocab_path, const char *merges_path) {
    photon_bpe bpe;
    photon_error err;
    photon_bpe_train_options o;
    memset(&o, 0, sizeof o);
    o.vocab_size = FUZZ_TOKENIZER_VOCAB;
    if (photon_bpe_train_text(&bpe, fuzz_tokenizer_text, sizeof fuzz_tokenizer_text - 1, &o, &err) != PHOTON_OK)
        fuzz_die("photon_bpe_train_text", &err);
    if (photon_bpe_save(&bpe, vocab_path, merges_path, &err) != PHOTON_OK) fuzz_die("photon_bpe_save", &err);
    photon_bpe_free(&bpe);
}

/* Loads a tokenizer; if it loads, encodes and decodes the fixed text, which
   must come back byte for byte (decode(encode(x)) == x for any bytes). */
static inline void fuzz_tokenizer(const char *vocab_path, const char *merges_path) {
    photon_bpe bpe;
    photon_error err;
    uint16_t tokens[sizeof fuzz_tokenizer_text];
    char back[sizeof fuzz_tokenizer_text];
    size_t n = sizeof fuzz_tokenizer_text - 1, num_tokens = 0, len = 0, i;
    photon_result r = photon_bpe_load(&bpe, vocab_path, merges_path, &err);
    fuzz_check_refusal(r, &err);
    if (r != PHOTON_OK) return;
    if (photon_bpe_encode(&bpe, fuzz_tokenizer_text, n, tokens, &num_tokens, &err) != PHOTON_OK)
        fuzz_die("a loaded tokenizer does not encode", &err);
    if (num_tokens > n) fuzz_die("more tokens than bytes", NULL);
    for (i = 0; i < num_tokens; i++)
        if ((int)tokens[i] >= bpe.vocab_size) fuzz_die("a token id past the vocabulary", NULL);
    if (photon_bpe_decode(&bpe, tokens, num_tokens, back, sizeof back, &len, &err) != PHOTON_OK)
        fuzz_die("a loaded tokenizer does not decode its own tokens", &err);
    if (len != n || memcmp(back, fuzz_tokenizer_text, n) != 0) fuzz_die("decode(encode(text)) != text", NULL);
    photon_bpe_free(&bpe);
}

/* The two tokenizer harnesses: the input as vocab.json (input_is_vocab 1)
   or as merges.txt (0), the other file the fixed tokenizer's. */
static inline void fuzz_tokenizer_half(int input_is_vocab, const uint8_t *data, size_t size) {
    static int ready;
    const char *vocab, *merges;
    fuzz_init();
    if (!ready) {
        ready = 1;
        fuzz_write_tokenizer(fuzz_path("vocab.json"), fuzz_path("merges.txt"));
    }
    vocab = input_is_vocab ? fuzz_input("input-vocab.json", data, size) : fuzz_path("vocab.json");
    merges = input_is_vocab ? fuzz_path("merges.txt") : fuzz_input("input-merges.txt", data, size);
    fuzz_tokenizer(vocab, merges);
}

/* What every harness defines (libFuzzer's entry point). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif /* FUZZ_COMMON_H */
