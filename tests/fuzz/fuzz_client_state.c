/* fuzz_client_state.c - libFuzzer harness: the input as a client state of
   the tiny model (photon_client_state_load), as it is and with its payload
   hash made right (fuzz_each_payload). */
#define PHOTON_IMPLEMENTATION
#include "../../photon_bpe.h"
#include "fuzz_common.h"

static void one(const uint8_t *data, size_t size) {
    photon_client_state s;
    photon_error err;
    photon_result r;
    r = photon_client_state_load(&s, &fuzz_config, fuzz_input("input", data, size), &err);
    fuzz_check_refusal(r, &err);
    if (r != PHOTON_OK) return;
    if (s.data_position > s.data_tokens) fuzz_die("a client state loaded with its position past its data", NULL);
    photon_adamw_state_free(&s.adamw);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_each_payload(data, size, one);
    return 0;
}
