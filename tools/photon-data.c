/* photon-data: text in, what photon trains on out.

   train-tokenizer learns a GPT-2 style byte-level BPE vocabulary and writes
   it as vocab.json + merges.txt (transformers' GPT2Tokenizer reads them);
   encode turns text into llm.c token shards (optionally with a held-out
   tail of every file); decode turns a shard back into its exact bytes; split
   deals a corpus out to federated clients, IID or by source. Same flags and
   inputs give the same output bytes. */
#define PHOTON_IMPLEMENTATION
#include "cli.h"


static const char *usage =
    "usage: photon-data train-tokenizer --vocab N --out DIR FILE...\n"
    "       photon-data encode --tokenizer DIR|bytes --out SHARD [--val-frac F --val-out SHARD] FILE...\n"
    "       photon-data decode --tokenizer DIR|bytes SHARD\n"
    "       photon-data split --clients N --by iid|source --out DIR FILE...\n"
    "       photon-data import --out CKPT [--json] SOURCE\n"
    "\n"
    "Prepares text for photon: a byte-level BPE tokenizer as GPT-2's, token shards,\n"
    "and a corpus split among federated clients.\n"
    "\n"
    "train-tokenizer    learn a vocabulary from the files; writes DIR/vocab.json and\n"
    "                   DIR/merges.txt in GPT-2's format (DIR is created if missing)\n"
    "  --vocab N        tokens in all, 257 to 65536: the 256 bytes, N-257 merges and\n"
    "                   <|endoftext|> (the last id)\n"
    "  --min-count N    never merge a pair seen fewer than N times (default 2)\n"
    "\n"
    "encode             text -> one llm.c token shard (256 int32 header, uint16 tokens)\n"
    "  --tokenizer DIR  a directory with vocab.json and merges.txt, or 'bytes' for one\n"
    "                   token per byte (vocab 256)\n"
    "  --out SHARD      the tokens of every file, in order\n"
    "  --val-frac F     put the last F (0 < F < 1) of each file's text in --val-out\n"
    "  --val-out SHARD  instead (cut at a character boundary)\n"
    "\n"
    "decode             a token shard -> its text, byte for byte, on stdout\n"
    "\n"
    "split              a corpus -> DIR/client-0 .. DIR/client-(N-1) and DIR/manifest.tsv\n"
    "  --clients N      number of clients\n"
    "  --by iid         the files, concatenated, cut into chunks of about --chunk bytes\n"
    "                   (ending at a line end) dealt out in turn: every client gets a\n"
    "                   mix of every source, in DIR/client-i/data.txt\n"
    "  --by source      whole files: each client its own sources, balanced by size\n"
    "                   (largest first, to the client with the fewest bytes so far)\n"
    "  --chunk BYTES    chunk size for --by iid (default 65536)\n"
    "  --out DIR        must not exist or be empty; appears complete or not at all\n"
    "\n"
    "import             a Hugging Face GPT-2 model -> a photon checkpoint (step 0, round 0)\n"
    "                   to start a federation from; SOURCE is a folder with config.json\n"
    "                   and model.safetensors (or shards and model.safetensors.index.json),\n"
    "                   or one .safetensors or index file with config.json beside it.\n"
    "                   F16 and BF16 are widened to F32; names with or without the\n"
    "                   \"transformer.\" prefix; what photon's GPT-2 cannot represent is\n"
    "                   refused naming the config key. vocab.json and merges.txt in the\n"
    "                   folder are checked, and usable as --tokenizer FOLDER\n"
    "  --out CKPT       the photon checkpoint (the source files' SHA-256 in its metadata)\n"
    "  --json           print what was imported as JSON on stdout\n"
    "\n"
    "  --quiet          no progress on stderr\n"
    "  --help, --version\n";

static int quiet;

#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 1, 2)))
#endif
static void progress(const char *fmt, ...) {
    va_list ap;
    if (quiet) return;
    fprintf(stderr, "%s: ", cli_prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}


/* Reads a whole file (a regular file: directories and devices are refused). */
static unsigned char *read_all(const char *path, size_t *size) {
    unsigned char *data;
    photon_error err;
    if (photon_read_file(path, &data, size, &err) != PHOTON_OK) cli_fail(&err);
    return data;
}

static void load_tokenizer(photon_bpe *bpe, const char *spec) {
    photon_error err;
    if (strcmp(spec, "bytes") == 0) {
        if (photon_bpe_init_bytes(bpe, &err) != PHOTON_OK) cli_fail(&err);
        return;
    }
    if (photon_bpe_load_dir(bpe, spec, &err) != PHOTON_OK) cli_fail(&err);
}

/* A directory that exists, created if missing (its parent must exist). */
static void make_dir(const char *path) {
    struct stat info;
    if (stat(path, &info) == 0) {
        if (!S_ISDIR(info.st_mode)) cli_die("%s: exists and is not a directory", path);
        return;
    }
    if (mkdir(path, 0777) != 0) cli_die("%s: cannot create the directory: %s", path, strerror(errno));
}

/* ------------------------------------------------------------------ train-tokenizer */

static double train_start;

static void train_progress(void *ctx, int done, int target) {
    static int last = -1;
    int tenth = target ? (int)(10LL * done / target) : 10;
    (void)ctx;
    if (tenth == last) return;
    last = tenth;
    progress("merges %d/%d (%.1f s)", done, target, cli_now() - train_start);
}

static int cmd_train(int argc, char **argv) {
    cli_args a;
    long long vocab = 0, min_count = 2;
    const char *out = NULL;
    const char **files = (const char **)calloc((size_t)argc, sizeof(char *));
    int nfiles = 0, k;
    photon_bpe_trainer trainer;
    photon_bpe_train_options opt;
    photon_bpe bpe;
    photon_error err;
    char vpath[4096], mpath[4096];
    double start = cli_now();
    a.argc = argc;
    a.argv = argv;
    a.i = 1;
    while (cli_next(&a)) {
        if (!a.flag[0]) files[nfiles++] = argv[a.i];
        else if (cli_is(&a, "--vocab")) vocab = cli_int(&a, 257, PHOTON_BPE_MAX_VOCAB);
        else if (cli_is(&a, "--min-count")) min_count = cli_int(&a, 1, LLONG_MAX);
        else if (cli_is(&a, "--out")) out = cli_value(&a);
        else if (cli_is(&a, "--quiet")) { cli_no_value(&a); quiet = 1; }
        else cli_usage_error("train-tokenizer: unknown option %s", a.flag);
    }
    if (!vocab) cli_usage_error("train-tokenizer needs --vocab N");
    if (!out) cli_usage_error("train-tokenizer needs --out DIR");
    if (!nfiles) cli_usage_error("train-tokenizer needs text FILEs");
    make_dir(out);
    snprintf(vpath, sizeof vpath, "%s/vocab.json", out);
    snprintf(mpath, sizeof mpath, "%s/merges.txt", out);
    cli_check_output(vpath);
    cli_check_output(mpath);

    if (photon_bpe_trainer_init(&trainer, &err) != PHOTON_OK) cli_fail(&err);
    for (k = 0; k < nfiles; k++) {
        size_t size;
        unsigned char *text = read_all(files[k], &size);
        if (photon_bpe_trainer_add(&trainer, text, size, &err) != PHOTON_OK) {
            fprintf(stderr, "%s: %s: %s\n", cli_prog, files[k], err.message);
            return 1;
        }
        photon_free(text);
        progress("counted %s (%zu bytes): %llu pre-tokens so far, %zu distinct", files[k], size,
                 (unsigned long long)trainer.pretokens, trainer.unique_pretokens);
    }
    memset(&opt, 0, sizeof opt);
    opt.vocab_size = (int)vocab;
    opt.min_count = (uint64_t)min_count;
    opt.progress = train_progress;
    train_start = cli_now();
    if (photon_bpe_train(&bpe, &trainer, &opt, &err) != PHOTON_OK) cli_fail(&err);
    if (bpe.vocab_size < vocab)
        progress("note: no pair occurs %lld times after %d merges, so the vocabulary has %d tokens, not %lld",
                 min_count, bpe.num_merges, bpe.vocab_size, vocab);
    if (photon_bpe_save(&bpe, vpath, mpath, &err) != PHOTON_OK) cli_fail(&err);
    progress("wrote %s and %s: %d tokens (%d merges) from %llu bytes in %.1f s", vpath, mpath, bpe.vocab_size,
             bpe.num_merges, (unsigned long long)trainer.bytes, cli_now() - start);
    photon_bpe_trainer_free(&trainer);
    photon_bpe_free(&bpe);
    free(files);
    return 0;
}

/* ------------------------------------------------------------------ encode */

typedef struct token_buf {
    uint16_t *ids;
    size_t n, cap;
} token_buf;

static void encode_into(photon_bpe *bpe, token_buf *b, const unsigned char *text, size_t len, const char *path) {
    photon_error err;
    size_t got;
    if (b->n + len > b->cap) {
        size_t cap = b->cap ? b->cap : 1 << 16;
        while (cap < b->n + len) cap *= 2;
        b->ids = (uint16_t *)realloc(b->ids, cap * sizeof(uint16_t));
        if (!b->ids) cli_die("%s: cannot allocate %zu tokens", path, cap);
        b->cap = cap;
    }
    if (photon_bpe_encode(bpe, text, len, b->ids + b->n, &got, &err) != PHOTON_OK) cli_die("%s: %s", path, err.message);
    b->n += got;
}

/* Writes the shards together: both appear, or neither changes. */
static void write_shards(const char *const *paths, const token_buf *const *bufs, int n) {
    photon_outputs outputs;
    photon_error err;
    const char *temp = NULL;
    int k;
    photon_outputs_init(&outputs);
    for (k = 0; k < n; k++)
        if (photon_outputs_add(&outputs, paths[k], &temp, &err) != PHOTON_OK ||
            photon_shard_write(temp, bufs[k]->ids, bufs[k]->n, &err) != PHOTON_OK) {
            photon_outputs_abort(&outputs);
            cli_fail(&err);
        }
    if (photon_outputs_commit(&outputs, &err) != PHOTON_OK) cli_fail(&err);
}

static int cmd_encode(int argc, char **argv) {
    cli_args a;
    const char *tok = NULL, *out = NULL, *val_out = NULL;
    double val_frac = 0;
    int have_frac = 0, nfiles = 0, k;
    const char **files = (const char **)calloc((size_t)argc, sizeof(char *));
    photon_bpe bpe;
    token_buf train, val;
    uint64_t bytes = 0;
    double start;
    a.argc = argc;
    a.argv = argv;
    a.i = 1;
    while (cli_next(&a)) {
        if (!a.flag[0]) files[nfiles++] = argv[a.i];
        else if (cli_is(&a, "--tokenizer")) tok = cli_value(&a);
        else if (cli_is(&a, "--out")) out = cli_value(&a);
        else if (cli_is(&a, "--val-out")) val_out = cli_value(&a);
        else if (cli_is(&a, "--val-frac")) {
            val_frac = cli_float(&a, 0, 1);
            have_frac = 1;
            if (val_frac <= 0 || val_frac >= 1) cli_usage_error("--val-frac needs a number between 0 and 1 (exclusive)");
        } else if (cli_is(&a, "--quiet")) { cli_no_value(&a); quiet = 1; }
        else cli_usage_error("encode: unknown option %s", a.flag);
    }
    if (!tok) cli_usage_error("encode needs --tokenizer DIR|bytes");
    if (!out) cli_usage_error("encode needs --out SHARD");
    if (have_frac != (val_out != NULL)) cli_usage_error("--val-frac and --val-out go together");
    if (val_out && strcmp(val_out, out) == 0) cli_usage_error("--val-out must differ from --out");
    if (!nfiles) cli_usage_error("encode needs text FILEs");
    cli_check_output(out);
    if (val_out) cli_check_output(val_out);
    load_tokenizer(&bpe, tok);
    memset(&train, 0, sizeof train);
    memset(&val, 0, sizeof val);
    start = cli_now();
    for (k = 0; k < nfiles; k++) {
        size_t size, cut, before = train.n + val.n;
        double t0 = cli_now(), dt;
        unsigned char *text = read_all(files[k], &size);
        cut = size;
        if (val_out) { /* the last val_frac of the bytes, from a character boundary on */
            cut = size - (size_t)((double)size * val_frac);
            while (cut < size && (text[cut] & 0xc0) == 0x80) cut++;
        }
        encode_into(&bpe, &train, text, cut, files[k]);
        if (val_out) encode_into(&bpe, &val, text + cut, size - cut, files[k]);
        dt = cli_now() - t0;
        progress("%s: %zu bytes -> %zu tokens (%.2f bytes/token, %.1f MB/s)", files[k], size, train.n + val.n - before,
                 train.n + val.n > before ? (double)size / (double)(train.n + val.n - before) : 0.0,
                 dt > 0 ? (double)size / dt / 1e6 : 0.0);
        bytes += size;
        photon_free(text);
    }
    if (train.n == 0) cli_die("%s: no text to encode: the files are empty", out);
    if (val_out && val.n == 0) cli_die("%s: the validation split is empty (the files are too short for --val-frac %g)", val_out, val_frac);
    {
        const char *paths[2];
        const token_buf *bufs[2];
        paths[0] = out;
        bufs[0] = &train;
        paths[1] = val_out;
        bufs[1] = &val;
        write_shards(paths, bufs, val_out ? 2 : 1);
    }
    if (val_out)
        progress("wrote %s (%zu tokens) and %s (%zu tokens) from %llu bytes, vocabulary %d, in %.1f s", out, train.n,
                 val_out, val.n, (unsigned long long)bytes, bpe.vocab_size, cli_now() - start);
    else
        progress("wrote %s: %zu tokens from %llu bytes, vocabulary %d, in %.1f s", out, train.n,
                 (unsigned long long)bytes, bpe.vocab_size, cli_now() - start);
    free(train.ids);
    free(val.ids);
    photon_bpe_free(&bpe);
    free(files);
    return 0;
}

/* ------------------------------------------------------------------ decode */

static int cmd_decode(int argc, char **argv) {
    cli_args a;
    const char *tok = NULL, *shard = NULL;
    photon_bpe bpe;
    photon_dataset ds;
    photon_error err;
    size_t i, cap = 1 << 20;
    unsigned char *buf;
    a.argc = argc;
    a.argv = argv;
    a.i = 1;
    while (cli_next(&a)) {
        if (!a.flag[0]) {
            if (shard) cli_usage_error("decode takes one SHARD");
            shard = argv[a.i];
        } else if (cli_is(&a, "--tokenizer")) tok = cli_value(&a);
        else if (cli_is(&a, "--quiet")) { cli_no_value(&a); quiet = 1; }
        else cli_usage_error("decode: unknown option %s", a.flag);
    }
    if (!tok) cli_usage_error("decode needs --tokenizer DIR|bytes");
    if (!shard) cli_usage_error("decode needs a SHARD");
    load_tokenizer(&bpe, tok);
    if (photon_dataset_load(&ds, &shard, 1, &err) != PHOTON_OK) cli_fail(&err);
    if (ds.text_bytes != 0) cli_die("%s: not a token shard (it does not start with llm.c's magic 20240520)", shard);
    if (ds.max_token >= bpe.vocab_size)
        cli_die("%s: holds token %u, outside the %d-token vocabulary of %s", shard, (unsigned)ds.max_token, bpe.vocab_size,
            tok);
    buf = (unsigned char *)malloc(cap);
    if (!buf) cli_die("out of memory");
    for (i = 0; i < ds.num_tokens;) { /* in pieces whose text fits the buffer */
        size_t n = 0, bytes = 0, len;
        while (i + n < ds.num_tokens) {
            size_t l;
            photon_bpe_token(&bpe, ds.tokens[i + n], &l);
            if (n && bytes + l > cap) break;
            bytes += l;
            n++;
        }
        if (bytes > cap) {
            free(buf);
            cap = bytes;
            if (!(buf = (unsigned char *)malloc(cap))) cli_die("out of memory");
        }
        if (photon_bpe_decode(&bpe, ds.tokens + i, n, buf, cap, &len, &err) != PHOTON_OK) cli_die("%s: %s", shard, err.message);
        if (fwrite(buf, 1, len, stdout) != len) cli_die("cannot write to stdout: %s", strerror(errno));
        i += n;
    }
    if (fflush(stdout) != 0 || ferror(stdout)) cli_die("cannot write to stdout: %s", strerror(errno));
    free(buf);
    photon_dataset_free(&ds);
    photon_bpe_free(&bpe);
    return 0;
}

/* ------------------------------------------------------------------ split */

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static int cmd_split(int argc, char **argv) {
    cli_args a;
    long long clients = 0, chunk = 65536;
    const char *by = NULL, *out = NULL;
    const char **files = (const char **)calloc((size_t)argc, sizeof(char *));
    const char **names = (const char **)calloc((size_t)argc, sizeof(char *));
    unsigned char **texts = (unsigned char **)calloc((size_t)argc, sizeof(unsigned char *));
    size_t *sizes = (size_t *)calloc((size_t)argc, sizeof(size_t)), total = 0;
    int nfiles = 0, k, c;
    photon_split_plan plan;
    photon_error err;
    if (!files || !names || !texts || !sizes) cli_die("out of memory");
    a.argc = argc;
    a.argv = argv;
    a.i = 1;
    while (cli_next(&a)) {
        if (!a.flag[0]) files[nfiles++] = argv[a.i];
        else if (cli_is(&a, "--clients")) clients = cli_int(&a, 1, 100000);
        else if (cli_is(&a, "--by")) by = cli_value(&a);
        else if (cli_is(&a, "--chunk")) chunk = cli_int(&a, 1, LLONG_MAX / 4);
        else if (cli_is(&a, "--out")) out = cli_value(&a);
        else if (cli_is(&a, "--quiet")) { cli_no_value(&a); quiet = 1; }
        else cli_usage_error("split: unknown option %s", a.flag);
    }
    if (!clients) cli_usage_error("split needs --clients N");
    if (!by || (strcmp(by, "iid") != 0 && strcmp(by, "source") != 0)) cli_usage_error("split needs --by iid or --by source");
    if (!out) cli_usage_error("split needs --out DIR");
    if (!nfiles) cli_usage_error("split needs text FILEs");
    for (k = 0; k < nfiles; k++) {
        if (strpbrk(files[k], "\t\n\r")) cli_usage_error("split: file names with tabs or line breaks do not fit the manifest");
        names[k] = base_name(files[k]);
        for (c = 0; c < k; c++)
            if (strcmp(names[k], names[c]) == 0) cli_usage_error("split: two inputs are named %s", names[k]);
    }
    if (strcmp(by, "source") == 0 && clients > nfiles)
        cli_usage_error("split --by source: %lld clients but only %d files (each client needs a whole file)", clients, nfiles);
    if (photon_output_dir_check(out, &err) != PHOTON_OK) cli_fail(&err);
    for (k = 0; k < nfiles; k++) {
        texts[k] = read_all(files[k], &sizes[k]);
        total += sizes[k];
    }
    if (photon_split_plan_make(&plan, strcmp(by, "iid") == 0 ? PHOTON_SPLIT_IID : PHOTON_SPLIT_SOURCE, (int)clients,
                               (const unsigned char *const *)texts, sizes, nfiles, (size_t)chunk, &err) != PHOTON_OK ||
        photon_split_write(&plan, names, files, (const unsigned char *const *)texts, sizes, out, &err) != PHOTON_OK)
        cli_fail(&err);
    for (c = 0; c < clients; c++) {
        uint64_t got = 0;
        for (k = 0; k < nfiles; k++) got += plan.bytes[(size_t)c * nfiles + k];
        progress("client-%d: %llu bytes", c, (unsigned long long)got);
    }
    progress("wrote %s: %lld clients, %zu bytes, manifest %s/manifest.tsv", out, clients, total, out);
    photon_split_plan_free(&plan);
    for (k = 0; k < nfiles; k++) photon_free(texts[k]);
    free(texts);
    free(sizes);
    free((void *)names);
    free((void *)files);
    return 0;
}

/* ------------------------------------------------------------------ import */

static int cmd_import(int argc, char **argv) {
    cli_args a;
    const char *out = NULL, *source = NULL, *temp = NULL;
    int json = 0;
    photon_hf_import_info info;
    photon_outputs outputs;
    photon_error err;
    photon_bpe bpe;
    double start = cli_now();
    a.argc = argc;
    a.argv = argv;
    a.i = 1;
    while (cli_next(&a)) {
        if (!a.flag[0] && !source) source = argv[a.i];
        else if (!a.flag[0]) cli_usage_error("import takes one SOURCE, got '%s' too", argv[a.i]);
        else if (cli_is(&a, "--out")) out = cli_value(&a);
        else if (cli_is(&a, "--json")) { cli_no_value(&a); json = 1; }
        else if (cli_is(&a, "--quiet")) { cli_no_value(&a); quiet = 1; }
        else cli_usage_error("import: unknown option %s", a.flag);
    }
    if (!out) cli_usage_error("import needs --out CKPT");
    if (!source) cli_usage_error("import needs a SOURCE folder or file");
    photon_outputs_init(&outputs); /* the checkpoint appears only once its tokenizer has been checked too */
    if (photon_outputs_add(&outputs, out, &temp, &err) != PHOTON_OK || photon_hf_import(source, temp, &info, &err) != PHOTON_OK) {
        photon_outputs_abort(&outputs);
        cli_fail(&err);
    }
    if (info.has_tokenizer) {
        if (photon_bpe_load_dir(&bpe, info.tokenizer_dir, &err) != PHOTON_OK) {
            photon_outputs_abort(&outputs);
            cli_fail(&err);
        }
        if (bpe.vocab_size != info.config.vocab_size) {
            photon_outputs_abort(&outputs);
            cli_die("%s: the tokenizer has %d tokens, config.json a vocabulary of %d", info.tokenizer_dir,
                    bpe.vocab_size, info.config.vocab_size);
        }
        photon_bpe_free(&bpe);
    }
    if (photon_outputs_commit(&outputs, &err) != PHOTON_OK) cli_fail(&err);
    progress("wrote %s: %d layers, %d heads, width %d, context %d, vocabulary %d, from %d file%s%s in %.1f s", out,
             info.config.n_layer, info.config.n_head, info.config.n_embd, info.config.n_ctx, info.config.vocab_size,
             info.num_files, info.num_files == 1 ? "" : "s", info.widened ? " (widened to F32)" : "", cli_now() - start);
    if (info.has_tokenizer) progress("the tokenizer in %s checks out: give it as --tokenizer %s", info.tokenizer_dir, info.tokenizer_dir);
    if (json) {
        printf("{\"out\":");
        cli_json_string(stdout, out);
        printf(",\"vocab_size\":%d,\"n_ctx\":%d,\"n_layer\":%d,\"n_head\":%d,\"n_embd\":%d,\"files\":%d,"
               "\"widened_tensors\":%d,\"prefixed\":%s,\"tokenizer\":",
               info.config.vocab_size, info.config.n_ctx, info.config.n_layer, info.config.n_head, info.config.n_embd,
               info.num_files, info.widened, info.prefixed ? "true" : "false");
        if (info.has_tokenizer) cli_json_string(stdout, info.tokenizer_dir);
        else printf("null");
        printf("}\n");
    }
    return 0;
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv) {
    int k;
    cli_start("photon-data");
    for (k = 1; k < argc; k++) {
        if (strcmp(argv[k], "--help") == 0 || strcmp(argv[k], "-h") == 0) {
            fputs(usage, stdout);
            return 0;
        }
        if (strcmp(argv[k], "--version") == 0) {
            printf("photon-data %s (photon.h, Unicode %s)\n", PHOTON_VERSION, photon_bpe_unicode_version());
            return 0;
        }
    }
    if (argc < 2) cli_usage_error("needs a command: train-tokenizer, encode, decode, split or import");
    if (strcmp(argv[1], "train-tokenizer") == 0) return cmd_train(argc, argv);
    if (strcmp(argv[1], "encode") == 0) return cmd_encode(argc, argv);
    if (strcmp(argv[1], "decode") == 0) return cmd_decode(argc, argv);
    if (strcmp(argv[1], "split") == 0) return cmd_split(argc, argv);
    if (strcmp(argv[1], "import") == 0) return cmd_import(argc, argv);
    cli_usage_error("unknown command '%s' (train-tokenizer, encode, decode, split or import)", argv[1]);
}
