/* fuzz_delta.c - libFuzzer harness: the input as a delta, read as
   photon-merge reads it: photon_merge of the input into a fixed base
   checkpoint (the tiny model of fuzz_common.h, written once), FedAvg, no
   server state, skip_bad 0; then photon_delta_load of it directly. Each
   input as it is and with its payload hash made right (fuzz_each_payload). */
#define PHOTON_IMPLEMENTATION
#include "../../photon_bpe.h"
#include "fuzz_common.h"

static photon_model base;
static float *values;

static void one(const uint8_t *data, size_t size) {
    const char *base_path = fuzz_path("base.safetensors"), *delta;
    photon_merge_options o;
    photon_merge_result res;
    photon_delta_info info;
    photon_error err;
    photon_result r;
    size_t i;
    fuzz_init();
    if (!values) {
        fuzz_write_base(base_path);
        if (photon_checkpoint_load(&base, base_path, &err) != PHOTON_OK) fuzz_die("the base does not load", &err);
        values = (float *)malloc(base.num_params * sizeof(float));
        if (!values) fuzz_die("out of memory", NULL);
    }
    delta = fuzz_input("delta.safetensors", data, size);
    const char *const deltas[1] = {delta};
    memset(&o, 0, sizeof o);
    photon_outer_defaults(&o.outer, PHOTON_OUTER_FEDAVG);
    o.skip_bad = 0;
    r = photon_merge(base_path, deltas, 1, NULL, &o, &res, &err);
    fuzz_check_refusal(r, &err);
    if (r == PHOTON_OK) {
        if (res.accepted != 1) fuzz_die("a merge succeeded without accepting its delta", NULL);
        for (i = 0; i < res.model.num_params; i++)
            if (!(res.model.params[i] - res.model.params[i] == 0.0f)) fuzz_die("a merge made NaN or Inf", NULL);
    }
    photon_merge_result_free(&res);
    r = photon_delta_load(&base, delta, &info, values, &err);
    fuzz_check_refusal(r, &err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_each_payload(data, size, one);
    return 0;
}
