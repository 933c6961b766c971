/* fuzz_tokenizer_vocab.c - libFuzzer harness: the input as vocab.json with
   a fixed valid merges.txt (the tokenizer of fuzz_common.h); a tokenizer
   that loads encodes and decodes a fixed text. */
#define PHOTON_IMPLEMENTATION
#include "../../photon_bpe.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_tokenizer_half(1, data, size);
    return 0;
}
