/* make_seeds.c - writes the seed corpus of the libFuzzer harnesses:
   valid files of every kind, made with photon's own writers, into DIR/NAME/
   for each harness NAME. Built with the normal compiler; the seeds are made
   at test time and never committed.

       bin/fuzz/make_seeds DIR */
#define PHOTON_IMPLEMENTATION
#include "../../photon_bpe.h"
#include "fuzz_common.h"

#include <errno.h>
#include <sys/stat.h>

static const char *dir;

/* DIR/sub/name, made on the way (one level of sub). */
static const char *seed_path(const char *sub, const char *name) {
    static char paths[8][4096];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, sizeof paths[0], "%s/%s", dir, sub);
    if (mkdir(p, 0777) != 0 && errno != EEXIST) {
        perror(p);
        exit(1);
    }
    snprintf(p, sizeof paths[0], "%s/%s/%s", dir, sub, name);
    return p;
}

static void check(photon_result r, const char *what, const photon_error *err) {
    if (r != PHOTON_OK) {
        fprintf(stderr, "make_seeds: %s: %s\n", what, err->message);
        exit(1);
    }
}

static size_t num_params(void) {
    photon_model m;
    photon_error err;
    size_t n;
    check(photon_model_init(&m, &fuzz_config, FUZZ_SEED, &err), "photon_model_init", &err);
    n = m.num_params;
    photon_model_free(&m);
    return n;
}

/* Every safetensors file is a seed of the safetensors harness too. */
static void copy_to_safetensors(const char *from, const char *name) {
    unsigned char *data;
    size_t size;
    photon_error err;
    check(photon_read_file(from, &data, &size, &err), "photon_read_file", &err);
    fuzz_write(seed_path("safetensors", name), data, size);
    photon_free(data);
}

static void checkpoints(void) {
    photon_config other = {17, 3, 2, 2, 4};
    photon_model m;
    photon_error err;
    fuzz_write_base(seed_path("checkpoint", "base.safetensors"));
    copy_to_safetensors(seed_path("checkpoint", "base.safetensors"), "checkpoint-base.safetensors");
    check(photon_model_init(&m, &other, 7, &err), "photon_model_init", &err);
    m.step = 12, m.tokens_seen = 3456, m.round = 3;
    check(photon_checkpoint_save(&m, seed_path("checkpoint", "later.safetensors"), &err), "photon_checkpoint_save", &err);
    copy_to_safetensors(seed_path("checkpoint", "later.safetensors"), "checkpoint-later.safetensors");
    photon_model_free(&m);
}

static void deltas(void) {
    const char *clients[2] = {"client-0", "site_B.2"};
    photon_model base, local;
    photon_delta_info info;
    photon_error err;
    char name[64], base_path[4096];
    int k;
    snprintf(base_path, sizeof base_path, "%s/base.tmp", dir); /* the file fuzz_delta.c merges into */
    fuzz_write_base(base_path);
    check(photon_checkpoint_load(&base, base_path, &err), "photon_checkpoint_load", &err);
    memset(&info, 0, sizeof info);
    check(photon_sha256_file(base_path, info.base_sha256, &err), "photon_sha256_file", &err);
    for (k = 0; k < 5; k++) { /* f32 twice, then bf16, int8 and int4 */
        check(photon_model_init(&local, &fuzz_config, 100 + (uint64_t)k, &err), "photon_model_init", &err);
        snprintf(info.client, sizeof info.client, "%s", clients[k % 2]);
        info.format = k < 2 ? PHOTON_DELTA_F32 : (photon_delta_format)(k - 1);
        info.round = base.round + 1;
        info.local_steps = 10 + (uint64_t)k;
        info.batch = 1 + (uint64_t)k;
        info.seq = (uint64_t)fuzz_config.n_ctx; /* tokens = steps x batch x seq, as every delta now records */
        info.tokens = info.local_steps * info.batch * info.seq;
        info.loss = 2.5f + (float)k;
        snprintf(name, sizeof name, "delta-%d.safetensors", k);
        check(photon_delta_save_as(&local, base.params, &info, NULL, seed_path("delta", name), &err), "photon_delta_save_as",
              &err);
        copy_to_safetensors(seed_path("delta", name), name);
        photon_model_free(&local);
    }
    photon_model_free(&base);
    unlink(base_path);
}

static void client_states(void) {
    photon_client_state s;
    photon_error err;
    size_t i, n = num_params();
    memset(&s, 0, sizeof s);
    check(photon_adamw_state_init(&s.adamw, n, &err), "photon_adamw_state_init", &err);
    for (i = 0; i < n; i++) {
        s.adamw.m[i] = 0.001f * (float)((int)(i % 7) - 3);
        s.adamw.v[i] = 1e-6f * (float)(i % 5);
    }
    s.adamw.t = 5, s.step = 5, s.data_position = 30, s.data_epoch = 1, s.data_tokens = 100;
    s.data_hash = 0x0123456789abcdefull;
    check(photon_client_state_save(&s, &fuzz_config, seed_path("client_state", "state.safetensors"), &err),
          "photon_client_state_save", &err);
    copy_to_safetensors(seed_path("client_state", "state.safetensors"), "client-state.safetensors");
    photon_adamw_state_free(&s.adamw);
}

static void server_states(void) {
    photon_server_state s;
    photon_error err;
    char name[64];
    const char *path;
    size_t i, n = num_params();
    int kind;
    for (kind = PHOTON_OUTER_FEDAVG; kind <= PHOTON_OUTER_YOGI; kind++) {
        check(photon_server_state_init(&s, (photon_outer_kind)kind, n, 1e-3f, &err), "photon_server_state_init", &err);
        for (i = 0; s.m && i < n; i++) s.m[i] = 0.01f * (float)((int)(i % 9) - 4);
        s.round = 2;
        snprintf(name, sizeof name, "%s.safetensors", photon_outer_name((photon_outer_kind)kind));
        path = seed_path("server_state", name);
        check(photon_server_state_save(&s, &fuzz_config, path, &err), "photon_server_state_save", &err);
        snprintf(name, sizeof name, "server-%s.safetensors", photon_outer_name((photon_outer_kind)kind));
        copy_to_safetensors(path, name);
        photon_server_state_free(&s);
    }
}

/* A file of other dtypes, a scalar, an empty tensor and metadata, laid out
   by hand (photon writes F32 only). */
static void other_dtypes(void) {
    static const char header[] =
        "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"caf\\u00e9\"},"
        "\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},"
        "\"b\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[4,12]},"
        "\"c\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[12,28]},"
        "\"d\":{\"dtype\":\"BOOL\",\"shape\":[0],\"data_offsets\":[28,28]},"
        "\"e\":{\"dtype\":\"BF16\",\"shape\":[1,1],\"data_offsets\":[28,30]}}";
    unsigned char file[8 + sizeof header + 8 + 30];
    size_t len = sizeof header - 1, padded = (len + 7) / 8 * 8, i;
    float c[4] = {1.0f, -2.0f, 0.5f, 3.25f};
    memset(file, ' ', sizeof file);
    for (i = 0; i < 8; i++) file[i] = (unsigned char)(padded >> (8 * i));
    memcpy(file + 8, header, len);
    memset(file + 8 + padded, 0, 30);
    file[8 + padded] = 0x00, file[8 + padded + 1] = 0x3c; /* 1.0 in F16 */
    file[8 + padded + 4] = 42;
    memcpy(file + 8 + padded + 12, c, sizeof c); /* little-endian hosts */
    file[8 + padded + 29] = 0x3f;
    fuzz_write(seed_path("safetensors", "dtypes.safetensors"), file, 8 + padded + 30);
}

static void tokenizers(void) {
    photon_bpe bpe;
    photon_error err;
    fuzz_write_tokenizer(seed_path("tokenizer_vocab", "vocab.json"), seed_path("tokenizer_merges", "merges.txt"));
    check(photon_bpe_init_bytes(&bpe, &err), "photon_bpe_init_bytes", &err);
    check(photon_bpe_save(&bpe, seed_path("tokenizer_vocab", "bytes-vocab.json"),
                          seed_path("tokenizer_merges", "bytes-merges.txt"), &err),
          "photon_bpe_save", &err);
    photon_bpe_free(&bpe);
}

static void shards(void) {
    uint16_t tokens[64];
    photon_error err;
    size_t i;
    for (i = 0; i < 64; i++) tokens[i] = (uint16_t)((i * 37) % 300);
    check(photon_shard_write(seed_path("shard", "tokens.bin"), tokens, 64, &err), "photon_shard_write", &err);
    check(photon_shard_write(seed_path("shard", "short.bin"), tokens, 7, &err), "photon_shard_write", &err);
    fuzz_write(seed_path("shard", "text.txt"), fuzz_tokenizer_text, sizeof fuzz_tokenizer_text - 1);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    dir = argv[1];
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        perror(dir);
        return 1;
    }
    photon_set_threads(1);
    checkpoints();
    deltas();
    client_states();
    server_states();
    other_dtypes();
    tokenizers();
    shards();
    return 0;
}
