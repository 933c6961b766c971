/* fuzz_shard.c - libFuzzer harness: the input as a data file (an llm.c
   token shard, or text): photon_dataset_load (text as bytes), then, if it
   loaded, photon_loader_init and a few photon_loader_next (every token the
   loader serves must be one of the dataset's); then photon_dataset_load_bpe
   through the fixed tokenizer of fuzz_common.h, where text must decode back
   to the input byte for byte. */
#define PHOTON_IMPLEMENTATION
#include "../../photon_bpe.h"
#include "fuzz_common.h"

static photon_bpe bpe;

/* The input through the tokenizer: a text's tokens decode to its bytes. */
static void through_tokenizer(const char *const *paths, const uint8_t *data, size_t size) {
    photon_dataset ds;
    photon_error err;
    photon_result r;
    char *back;
    size_t len = 0;
    if (!bpe.vocab_size) {
        photon_bpe_train_options o;
        memset(&o, 0, sizeof o);
        o.vocab_size = FUZZ_TOKENIZER_VOCAB;
        if (photon_bpe_train_text(&bpe, fuzz_tokenizer_text, sizeof fuzz_tokenizer_text - 1, &o, &err) != PHOTON_OK)
            fuzz_die("photon_bpe_train_text", &err);
    }
    r = photon_dataset_load_bpe(&ds, paths, 1, &bpe, &err);
    fuzz_check_refusal(r, &err);
    if (r != PHOTON_OK) return;
    if (ds.text_bytes) {
        if (ds.text_bytes != size) fuzz_die("text_bytes is not the size of the text", NULL);
        back = (char *)malloc(size);
        if (!back) fuzz_die("out of memory", NULL);
        if (photon_bpe_decode(&bpe, ds.tokens, ds.num_tokens, back, size, &len, &err) != PHOTON_OK)
            fuzz_die("the tokens of a text do not decode", &err);
        if (len != size || memcmp(back, data, size) != 0) fuzz_die("decode(encode(text)) != text", NULL);
        free(back);
    }
    photon_dataset_free(&ds);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    enum { B = 2, T = 3 };
    const char *path;
    photon_dataset ds;
    photon_loader ld;
    photon_error err;
    photon_result r;
    int inputs[B * T], targets[B * T], step, i;
    path = fuzz_input("input", data, size);
    const char *const paths[1] = {path};
    r = photon_dataset_load(&ds, paths, 1, &err);
    fuzz_check_refusal(r, &err);
    if (r != PHOTON_OK) return 0;
    r = photon_dataset_check_vocab(&ds, 256, &err);
    fuzz_check_refusal(r, &err);
    r = photon_loader_init(&ld, &ds, B, T, &err);
    fuzz_check_refusal(r, &err);
    for (step = 0; r == PHOTON_OK && step < 4; step++) {
        photon_loader_next(&ld, inputs, targets);
        for (i = 0; i < B * T; i++)
            if (inputs[i] > ds.max_token || targets[i] > ds.max_token)
                fuzz_die("the loader served a token past max_token", NULL);
    }
    photon_dataset_free(&ds);
    through_tokenizer(paths, data, size);
    return 0;
}
