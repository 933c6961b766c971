/* fuzz_checkpoint.c - libFuzzer harness: the input as a checkpoint (as it
   is, and with its payload hash made right: fuzz_each_payload).
   photon_checkpoint_load; a checkpoint that loads must have a valid config
   and finite parameters, and then runs one forward pass with a loss (as
   photon-eval and photon-train use it) on a fixed row of tokens. */
#define PHOTON_IMPLEMENTATION
#include "../../photon_bpe.h"
#include "fuzz_common.h"

static void one(const uint8_t *data, size_t size) {
    photon_model m;
    photon_error err;
    photon_result r;
    int inputs[4], targets[4], T, t;
    size_t i;
    float loss;
    r = photon_checkpoint_load(&m, fuzz_input("input", data, size), &err);
    fuzz_check_refusal(r, &err);
    if (r != PHOTON_OK) return;
    if (photon_config_validate(&m.config, &err) != PHOTON_OK) fuzz_die("a checkpoint loaded with a bad config", &err);
    for (i = 0; i < m.num_params; i++)
        if (!(m.params[i] - m.params[i] == 0.0f)) fuzz_die("a checkpoint loaded with NaN or Inf", NULL);
    T = m.config.n_ctx < 4 ? m.config.n_ctx : 4;
    for (t = 0; t < T; t++) {
        inputs[t] = (3 * t + 1) % m.config.vocab_size;
        targets[t] = (5 * t + 2) % m.config.vocab_size;
    }
    r = photon_forward(&m, inputs, targets, 1, T, &loss, &err);
    fuzz_check_refusal(r, &err);
    photon_model_free(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_each_payload(data, size, one);
    return 0;
}
