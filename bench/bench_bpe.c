/* bench_bpe.c - speed of photon's BPE tokenizer (one core).

   Concatenates the text files given (up to --mb megabytes, default 10),
   then times: counting pre-tokens and learning a --vocab (default 8192)
   vocabulary; encoding the whole text with that vocabulary on an empty
   pre-token cache (cold) and again (warm); decoding; pre-tokenizing alone.
   Each figure is the best of three runs, as wall-clock and CPU time of the
   one thread. Prints one line per figure. Build and run: bash bench/bench_bpe.sh */
#define PHOTON_IMPLEMENTATION
#include "../photon.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU seconds of this process: steadier than wall time on a shared machine */
static double cpu(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void check(photon_result r, const photon_error *err) {
    if (r != PHOTON_OK) {
        fprintf(stderr, "bench_bpe: %s\n", err->message);
        exit(1);
    }
}

int main(int argc, char **argv) {
    size_t cap = 10u * 1000 * 1000, len = 0, ntok = 0, pos, npre = 0, dlen;
    int vocab = 8192, k, nfiles = 0;
    unsigned char *text, *back;
    uint16_t *tokens;
    photon_bpe bpe, loaded;
    photon_bpe_train_options opt;
    photon_error err;
    double t_train[2] = {0, 0}, t_cold[2] = {0, 0}, t_warm[2] = {0, 0}, t_dec = 0, t_pre = 0;
    int rep;
    for (k = 1; k < argc; k++) {
        if (strcmp(argv[k], "--mb") == 0 && k + 1 < argc) cap = (size_t)(atof(argv[++k]) * 1e6);
        else if (strcmp(argv[k], "--vocab") == 0 && k + 1 < argc) vocab = atoi(argv[++k]);
        else argv[++nfiles] = argv[k];
    }
    if (!nfiles) {
        fprintf(stderr, "usage: bench_bpe [--mb M] [--vocab N] FILE...\n");
        return 2;
    }
    text = (unsigned char *)malloc(cap);
    for (k = 1; k <= nfiles && len < cap; k++) {
        FILE *f = fopen(argv[k], "rb");
        if (!f) {
            fprintf(stderr, "bench_bpe: cannot open %s\n", argv[k]);
            return 1;
        }
        len += fread(text + len, 1, cap - len, f);
        fclose(f);
    }
    printf("text: %.2f MB from %d files\n", len / 1e6, nfiles);

    memset(&opt, 0, sizeof opt);
    opt.vocab_size = vocab;
    tokens = (uint16_t *)malloc(len * sizeof(uint16_t));
    back = (unsigned char *)malloc(len);
    memset(tokens, 0, len * sizeof(uint16_t)); /* page faults are not tokenizing */
    memset(back, 0, len);
    for (rep = 0; rep < 3; rep++) {
        double w = now(), c = cpu();
        check(photon_bpe_train_text(&bpe, text, len, &opt, &err), &err);
        w = now() - w;
        c = cpu() - c;
        if (!rep || w < t_train[0]) t_train[0] = w;
        if (!rep || c < t_train[1]) t_train[1] = c;
        if (rep < 2) photon_bpe_free(&bpe);
    }
    printf("train: %d tokens (%d merges) from %.2f MB: %.2f s (cpu %.2f s)\n", bpe.vocab_size, bpe.num_merges, len / 1e6,
           t_train[0], t_train[1]);

    /* encode with the vocabulary as read back from its files; cold: a
       fresh tokenizer (empty pre-token cache) each time */
    check(photon_bpe_save(&bpe, "/tmp/bench_bpe_vocab.json", "/tmp/bench_bpe_merges.txt", &err), &err);
    for (rep = 0; rep < 3; rep++) {
        double w, c;
        check(photon_bpe_load(&loaded, "/tmp/bench_bpe_vocab.json", "/tmp/bench_bpe_merges.txt", &err), &err);
        w = now();
        c = cpu();
        check(photon_bpe_encode(&loaded, text, len, tokens, &ntok, &err), &err);
        w = now() - w;
        c = cpu() - c;
        if (!rep || w < t_cold[0]) t_cold[0] = w;
        if (!rep || c < t_cold[1]) t_cold[1] = c;
        w = now();
        c = cpu();
        check(photon_bpe_encode(&loaded, text, len, tokens, &ntok, &err), &err);
        w = now() - w;
        c = cpu() - c;
        if (!rep || w < t_warm[0]) t_warm[0] = w;
        if (!rep || c < t_warm[1]) t_warm[1] = c;
        if (rep < 2) photon_bpe_free(&loaded);
    }
    remove("/tmp/bench_bpe_vocab.json");
    remove("/tmp/bench_bpe_merges.txt");
    printf("encode: %zu tokens (%.2f bytes/token): %.1f MB/s cold cache (cpu %.1f), %.1f MB/s warm (cpu %.1f)\n", ntok,
           (double)len / ntok, len / t_cold[0] / 1e6, len / t_cold[1] / 1e6, len / t_warm[0] / 1e6, len / t_warm[1] / 1e6);

    for (rep = 0; rep < 3; rep++) {
        double w = now();
        check(photon_bpe_decode(&loaded, tokens, ntok, back, len, &dlen, &err), &err);
        w = now() - w;
        if (!rep || w < t_dec) t_dec = w;
    }
    printf("decode: %.1f MB/s, round trip %s\n", len / t_dec / 1e6,
           dlen == len && memcmp(back, text, len) == 0 ? "exact" : "WRONG");

    for (rep = 0; rep < 3; rep++) {
        double w = now();
        for (pos = 0, npre = 0; pos < len; npre++) pos = photon_bpe_split(text, len, pos);
        w = now() - w;
        if (!rep || w < t_pre) t_pre = w;
    }
    printf("pre-tokenize only: %zu pre-tokens, %.1f MB/s\n", npre, len / t_pre / 1e6);
    photon_bpe_free(&bpe);
    photon_bpe_free(&loaded);
    free(text);
    free(back);
    free(tokens);
    return 0;
}
