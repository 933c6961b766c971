/* photon-data: text in, what photon trains on out.

   train-tokenizer learns a GPT-2 style byte-level BPE vocabulary and writes
   it as vocab.json + merges.txt (transformers' GPT2Tokenizer reads them);
   encode turns text into llm.c token shards (optionally with a held-out
   tail of every file); decode turns a shard back into its exact bytes; split
   deals a corpus out to federated clients, IID or by source. Same flags and
   inputs give the same output bytes. */
#define PHOTON_IMPLEMENTATION
#include "cli.h"

#include <dirent.h>

static const char *usage =
    "usage: photon-data train-tokenizer --vocab N --out DIR FILE...\n"
    "       photon-data encode --tokenizer DIR|bytes --out SHARD [--val-frac F --val-out SHARD] FILE...\n"
    "       photon-data decode --tokenizer DIR|bytes SHARD\n"
    "       photon-data split --clients N --by iid|source --out DIR FILE...\n"
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
    struct stat info;
    FILE *f;
    unsigned char *data;
    long len;
    if (stat(path, &info) == 0 && !S_ISREG(info.st_mode)) cli_die("%s: not a regular file", path);
    f = fopen(path, "rb");
    if (!f) cli_die("%s: cannot open: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        cli_die("%s: cannot determine its size", path);
    data = (unsigned char *)malloc((size_t)len + 1);
    if (!data) cli_die("%s: cannot allocate %ld bytes to read it", path, len);
    if (fread(data, 1, (size_t)len, f) != (size_t)len) cli_die("%s: read failed", path);
    fclose(f);
    *size = (size_t)len;
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
        free(text);
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

/* Writes each shard beside its target as PATH.pending, then renames them all,
   so a failure leaves both outputs as they were. */
static void write_shards(const char *const *paths, const token_buf *const *bufs, int n) {
    char pending[2][4096];
    photon_error err;
    int k;
    for (k = 0; k < n; k++) {
        snprintf(pending[k], sizeof pending[k], "%s.pending", paths[k]);
        if (photon_shard_write(pending[k], bufs[k]->ids, bufs[k]->n, &err) != PHOTON_OK) {
            while (k-- > 0) remove(pending[k]);
            cli_fail(&err);
        }
    }
    for (k = 0; k < n; k++)
        if (rename(pending[k], paths[k]) != 0) cli_die("%s: cannot rename into place: %s", paths[k], strerror(errno));
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
        free(text);
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

/* The files of a staged output directory, removed again if anything fails. */
static char staging[4096];
static char **staged;
static int num_staged;

static void unstage(void) {
    int k;
    for (k = num_staged - 1; k >= 0; k--) {
        if (remove(staged[k]) != 0 && errno != ENOENT) rmdir(staged[k]);
        free(staged[k]);
    }
    num_staged = 0;
    if (staging[0]) rmdir(staging);
}

#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 1, 2), noreturn))
#endif
static void split_die(const char *fmt, ...) {
    va_list ap;
    unstage();
    va_start(ap, fmt);
    cli_vdie(fmt, ap);
}

static const char *stage_path(const char *rel, int is_dir) {
    size_t n = strlen(staging) + strlen(rel) + 2;
    char *p = (char *)malloc(n);
    if (!p) split_die("out of memory");
    snprintf(p, n, "%s/%s", staging, rel);
    if (is_dir && mkdir(p, 0777) != 0) split_die("%s: cannot create the directory: %s", p, strerror(errno));
    staged = (char **)realloc(staged, (size_t)(num_staged + 1) * sizeof(char *));
    if (!staged) split_die("out of memory");
    staged[num_staged++] = p;
    return p;
}

typedef struct out_file {
    FILE *f;
    const char *path;
} out_file;

static void out_open(out_file *o, const char *rel) {
    o->path = stage_path(rel, 0);
    o->f = fopen(o->path, "wb");
    if (!o->f) split_die("%s: cannot create: %s", o->path, strerror(errno));
}

static void out_write(out_file *o, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, o->f) != n) split_die("%s: cannot write: %s", o->path, strerror(errno));
}

static void out_close(out_file *o) {
    if (fflush(o->f) != 0 || fsync(fileno(o->f)) != 0 || fclose(o->f) != 0)
        split_die("%s: cannot write: %s", o->path, strerror(errno));
    o->f = NULL;
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* The end of the IID chunk that starts at pos: the first line end at or
   after pos + chunk - 1, if one comes within another chunk; else pos + chunk
   moved forward to a character boundary. */
static size_t chunk_end(const unsigned char *s, size_t n, size_t pos, size_t chunk) {
    size_t target = pos + chunk, i, limit;
    if (target >= n) return n;
    limit = target + chunk < n ? target + chunk : n;
    for (i = target - 1; i < limit; i++)
        if (s[i] == '\n') return i + 1;
    while (target < n && (s[target] & 0xc0) == 0x80) target++;
    return target;
}

static int cmd_split(int argc, char **argv) {
    cli_args a;
    long long clients = 0, chunk = 65536;
    const char *by = NULL, *out = NULL;
    const char **files = (const char **)calloc((size_t)argc, sizeof(char *));
    int nfiles = 0, k, c;
    size_t *sizes, total = 0;
    unsigned char **texts;
    out_file manifest;
    struct stat info;
    char rel[4096];
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
        for (c = 0; c < k; c++)
            if (strcmp(base_name(files[k]), base_name(files[c])) == 0)
                cli_usage_error("split: two inputs are named %s", base_name(files[k]));
    }
    if (strcmp(by, "source") == 0 && clients > nfiles)
        cli_usage_error("split --by source: %lld clients but only %d files (each client needs a whole file)", clients, nfiles);
    if (stat(out, &info) == 0) {
        DIR *d;
        struct dirent *e;
        if (!S_ISDIR(info.st_mode)) cli_die("%s: exists and is not a directory", out);
        if (!(d = opendir(out))) cli_die("%s: cannot read the directory: %s", out, strerror(errno));
        while ((e = readdir(d)) != NULL)
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
                cli_die("%s: exists and is not empty; split writes a new directory", out);
        closedir(d);
    }
    snprintf(staging, sizeof staging, "%s.%ld.tmp", out, (long)getpid());
    if (mkdir(staging, 0777) != 0) {
        staging[0] = '\0';
        cli_die("%s: cannot create the directory: %s", out, strerror(errno));
    }

    sizes = (size_t *)calloc((size_t)nfiles, sizeof(size_t));
    texts = (unsigned char **)calloc((size_t)nfiles, sizeof(unsigned char *));
    if (!sizes || !texts) split_die("out of memory");
    for (k = 0; k < nfiles; k++) {
        FILE *f;
        long len;
        if (stat(files[k], &info) == 0 && !S_ISREG(info.st_mode)) split_die("%s: not a regular file", files[k]);
        if (!(f = fopen(files[k], "rb"))) split_die("%s: cannot open: %s", files[k], strerror(errno));
        if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
            split_die("%s: cannot determine its size", files[k]);
        sizes[k] = (size_t)len;
        if (!(texts[k] = (unsigned char *)malloc(sizes[k] + 1))) split_die("%s: out of memory", files[k]);
        if (fread(texts[k], 1, sizes[k], f) != sizes[k]) split_die("%s: read failed", files[k]);
        fclose(f);
        total += sizes[k];
    }
    if (total == 0) split_die("the files are empty");
    for (c = 0; c < clients; c++) {
        snprintf(rel, sizeof rel, "client-%d", c);
        stage_path(rel, 1);
    }
    out_open(&manifest, "manifest.tsv");
    {
        const char *head = "client\tfile\tsource\tbytes\tchunks\n";
        out_write(&manifest, head, strlen(head));
    }

    if (strcmp(by, "source") == 0) {
        /* largest first (ties: command-line order), each to the client with
           the fewest bytes so far (ties: the lowest index) */
        int *order = (int *)calloc((size_t)nfiles, sizeof(int)), *owner = (int *)calloc((size_t)nfiles, sizeof(int));
        size_t *load = (size_t *)calloc((size_t)clients, sizeof(size_t));
        if (!order || !owner || !load) split_die("out of memory");
        for (k = 0; k < nfiles; k++) order[k] = k;
        for (k = 1; k < nfiles; k++) { /* insertion sort: stable */
            int v = order[k], j = k;
            while (j > 0 && sizes[order[j - 1]] < sizes[v]) {
                order[j] = order[j - 1];
                j--;
            }
            order[j] = v;
        }
        for (k = 0; k < nfiles; k++) {
            int best = 0;
            for (c = 1; c < clients; c++)
                if (load[c] < load[best]) best = c;
            owner[order[k]] = best;
            load[best] += sizes[order[k]];
        }
        for (c = 0; c < clients; c++) {
            int any = 0;
            for (k = 0; k < nfiles; k++) any |= owner[k] == c;
            if (!any) split_die("client-%d would get no file (empty files?)", c);
            for (k = 0; k < nfiles; k++) {
                out_file f;
                char line[8192];
                if (owner[k] != c) continue;
                snprintf(rel, sizeof rel, "client-%d/%s", c, base_name(files[k]));
                out_open(&f, rel);
                out_write(&f, texts[k], sizes[k]);
                out_close(&f);
                snprintf(line, sizeof line, "client-%d\t%s\t%s\t%zu\t1\n", c, base_name(files[k]), files[k], sizes[k]);
                out_write(&manifest, line, strlen(line));
            }
            progress("client-%d: %zu bytes", c, load[c]);
        }
        free(order);
        free(owner);
        free(load);
    } else {
        /* the corpus as one text; chunk i goes to client i mod N */
        unsigned char *all = (unsigned char *)malloc(total);
        size_t *start = (size_t *)calloc((size_t)nfiles + 1, sizeof(size_t)), pos, nchunks = 0;
        size_t *src_bytes = (size_t *)calloc((size_t)nfiles * (size_t)clients, sizeof(size_t));
        size_t *src_chunks = (size_t *)calloc((size_t)nfiles * (size_t)clients, sizeof(size_t));
        out_file *data = (out_file *)calloc((size_t)clients, sizeof(out_file));
        if (!all || !start || !src_bytes || !src_chunks || !data) split_die("out of memory");
        for (k = 0; k < nfiles; k++) {
            start[k + 1] = start[k] + sizes[k];
            memcpy(all + start[k], texts[k], sizes[k]);
        }
        for (pos = 0; pos < total; nchunks++) pos = chunk_end(all, total, pos, (size_t)chunk);
        if (nchunks < (size_t)clients)
            split_die("%zu bytes make only %zu chunks of about %lld bytes, fewer than %lld clients; use a smaller --chunk",
                      total, nchunks, chunk, clients);
        for (c = 0; c < clients; c++) {
            snprintf(rel, sizeof rel, "client-%d/data.txt", c);
            out_open(&data[c], rel);
        }
        nchunks = 0;
        for (pos = 0; pos < total; nchunks++) {
            size_t end = chunk_end(all, total, pos, (size_t)chunk);
            c = (int)(nchunks % (size_t)clients);
            out_write(&data[c], all + pos, end - pos);
            for (k = 0; k < nfiles; k++) { /* what each source gave to this chunk */
                size_t lo = start[k] > pos ? start[k] : pos, hi = start[k + 1] < end ? start[k + 1] : end;
                if (lo < hi) {
                    src_bytes[(size_t)c * (size_t)nfiles + (size_t)k] += hi - lo;
                    src_chunks[(size_t)c * (size_t)nfiles + (size_t)k]++;
                }
            }
            pos = end;
        }
        for (c = 0; c < clients; c++) {
            size_t got = 0;
            out_close(&data[c]);
            for (k = 0; k < nfiles; k++) {
                char line[8192];
                size_t b = src_bytes[(size_t)c * (size_t)nfiles + (size_t)k];
                if (!b) continue;
                got += b;
                snprintf(line, sizeof line, "client-%d\tdata.txt\t%s\t%zu\t%zu\n", c, files[k], b,
                         src_chunks[(size_t)c * (size_t)nfiles + (size_t)k]);
                out_write(&manifest, line, strlen(line));
            }
            progress("client-%d: %zu bytes", c, got);
        }
        free(all);
        free(start);
        free(src_bytes);
        free(src_chunks);
        free(data);
    }
    out_close(&manifest);
    /* the whole directory appears at once (rename replaces an empty directory) */
    if (rename(staging, out) != 0) split_die("%s: cannot rename into place: %s", out, strerror(errno));
    progress("wrote %s: %lld clients, %zu bytes, manifest %s/manifest.tsv", out, clients, total, out);
    for (k = 0; k < num_staged; k++) free(staged[k]);
    free(staged);
    for (k = 0; k < nfiles; k++) free(texts[k]);
    free(texts);
    free(sizes);
    free(files);
    return 0;
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv) {
    int k;
    cli_prog = "photon-data";
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
    if (argc < 2) cli_usage_error("needs a command: train-tokenizer, encode, decode or split");
    if (strcmp(argv[1], "train-tokenizer") == 0) return cmd_train(argc, argv);
    if (strcmp(argv[1], "encode") == 0) return cmd_encode(argc, argv);
    if (strcmp(argv[1], "decode") == 0) return cmd_decode(argc, argv);
    if (strcmp(argv[1], "split") == 0) return cmd_split(argc, argv);
    cli_usage_error("unknown command '%s' (train-tokenizer, encode, decode or split)", argv[1]);
}
