/* fuzz_server_state.c - libFuzzer harness: the input as a server state of
   the tiny model (photon_server_state_load; the file names its outer
   optimizer, and the seeds hold one of each kind), as it is and with its
   payload hash made right (fuzz_each_payload). */
#define PHOTON_IMPLEMENTATION
#include "../../photon_bpe.h"
#include "fuzz_common.h"

static void one(const uint8_t *data, size_t size) {
    photon_server_state s;
    photon_error err;
    photon_result r;
    r = photon_server_state_load(&s, &fuzz_config, fuzz_input("input", data, size), &err);
    fuzz_check_refusal(r, &err);
    if (r != PHOTON_OK) return;
    if ((int)s.kind < 0 || s.kind > PHOTON_OUTER_YOGI) fuzz_die("a server state loaded with an unknown kind", NULL);
    photon_server_state_free(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_each_payload(data, size, one);
    return 0;
}
