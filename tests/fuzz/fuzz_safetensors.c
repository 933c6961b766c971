/* fuzz_safetensors.c - libFuzzer harness: the input as a safetensors file.
   photon_st_open, the metadata and tensor look-ups, and photon_st_read_f32
   of every F32 tensor (up to 1 << 20 values each). */
#define PHOTON_IMPLEMENTATION
#include "../../photon_bpe.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    photon_st_file st;
    photon_error err;
    photon_result r;
    int i;
    r = photon_st_open(&st, fuzz_input("input", data, size), &err);
    fuzz_check_refusal(r, &err);
    if (r != PHOTON_OK) return 0;
    for (i = 0; i < st.num_meta; i++)
        if (photon_st_meta(&st, st.meta_keys[i]) != st.meta_values[i]) fuzz_die("photon_st_meta finds another value", NULL);
    for (i = 0; i < st.num_tensors; i++) {
        const photon_st_tensor *t = &st.tensors[i];
        size_t count = (size_t)((t->end - t->begin) / 4);
        float *values;
        if (photon_st_find(&st, t->name) != t) fuzz_die("photon_st_find finds another tensor", NULL);
        if (t->dtype != PHOTON_DTYPE_F32 || count > (1u << 20)) continue;
        values = (float *)malloc(count ? count * sizeof(float) : 1);
        if (!values) fuzz_die("out of memory", NULL);
        r = photon_st_read_f32(&st, t, values, count, &err);
        fuzz_check_refusal(r, &err);
        free(values);
    }
    photon_st_close(&st);
    return 0;
}
