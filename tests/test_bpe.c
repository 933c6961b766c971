/* test_bpe.c - unit tests of photon's byte-level BPE (in photon.h).

   The pre-tokenizer on GPT-2's own cases, the merge order of a hand-worked
   example, training against a from-scratch trainer that recounts every pair
   at every step, encoding against a transcription of GPT-2's bpe(), round
   trips on random bytes (invalid UTF-8 included) and on every file of
   ../shared/data when it is there, GPT-2's file format byte for byte,
   determinism, corrupt files refused, shards. Prints "ok - ..." /
   "FAIL - ..." per check and a last line "N passed, N failed". Run from the
   repository root; files go to PHOTON_TEST_DIR (default /tmp). Arguments
   select tests by name (--list prints them; tests/check.h). */
#define PHOTON_IMPLEMENTATION
#include "../photon_bpe.h"
#include "check.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


static char *test_strdup(const char *s) {
    char *p = (char *)malloc(strlen(s) + 1);
    strcpy(p, s);
    return p;
}

static void write_text(const char *path, const char *s, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fwrite(s, 1, n, f);
    fclose(f);
}

static unsigned char *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    unsigned char *d;
    long len;
    *n = 0;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    fseek(f, 0, SEEK_SET);
    d = (unsigned char *)malloc((size_t)len + 1);
    *n = fread(d, 1, (size_t)len, f);
    fclose(f);
    return d;
}

/* encode then decode; returns 1 when the bytes come back exactly */
static int round_trip(photon_bpe *bpe, const unsigned char *s, size_t n, size_t *ntok) {
    uint16_t *t = (uint16_t *)malloc((n + 1) * sizeof(uint16_t));
    unsigned char *back = (unsigned char *)malloc(n + 1);
    size_t len = 0;
    int ok = photon_bpe_encode(bpe, s, n, t, ntok, NULL) == PHOTON_OK &&
             photon_bpe_decode(bpe, t, *ntok, back, n, &len, NULL) == PHOTON_OK && len == n && memcmp(back, s, n) == 0;
    free(t);
    free(back);
    return ok;
}

/* ======================================================================= */
/* Pre-tokenizer                                                           */
/* ======================================================================= */

/* s with control and non-ASCII bytes as \xNN, for one-line messages. */
static const char *printable(const char *s) {
    static char buf[2][600];
    static int next;
    char *b = buf[next++ % 2];
    size_t o = 0;
    for (; *s && o + 5 < sizeof buf[0]; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c < 0x7f) b[o++] = (char)c;
        else o += (size_t)sprintf(b + o, "\\x%02x", c);
    }
    b[o] = '\0';
    return b;
}

/* Pieces joined by '|' (no case below contains '|'); expectations written
   from the regex (and checked against Python's `regex` module). */
static void check_split(const char *text, const char *want) {
    char got[512], name[600];
    size_t n = strlen(text), pos = 0, o = 0;
    while (pos < n) {
        size_t end = photon_bpe_split(text, n, pos);
        if (o) got[o++] = '|';
        memcpy(got + o, text + pos, end - pos);
        o += end - pos;
        pos = end;
    }
    got[o] = '\0';
    snprintf(name, sizeof name, "split \"%s\"", printable(want));
    expect(strcmp(got, want) == 0, name, printable(got));
}

static void test_split(void) {
    check_split("Hello world", "Hello| world");
    check_split("I'm don't they're we've he'll I'd it's", "I|'m| don|'t| they|'re| we|'ve| he|'ll| I|'d| it|'s");
    check_split("'S 'sup ''s", "'|S| '|sup| ''|s");                 /* contractions are lower case only */
    check_split("abc123 4.5 x", "abc|123| 4|.|5| x");
    check_split("a  b", "a| | b");                                   /* \s+(?!\S) leaves the last space */
    check_split("a\n\n b", "a|\n\n| b");
    check_split("a \n", "a| \n");                                    /* trailing whitespace: one piece */
    check_split("x\ty", "x|\t|y");                                   /* a lone tab is not ' ?' */
    check_split("!!! ?? ...ok", "!!!| ??| ...|ok");
    check_split("caf\xc3\xa9 na\xc3\xafve \xe6\x97\xa5\xe6\x9c\xac", "caf\xc3\xa9| na\xc3\xafve| \xe6\x97\xa5\xe6\x9c\xac");
    check_split("e\xcc\x81t\xc3\xa9", "e|\xcc\x81|t\xc3\xa9");         /* a combining mark is not a letter */
    check_split("\xd9\xa3\xe2\x85\xa7x", "\xd9\xa3\xe2\x85\xa7|x");    /* Arabic-Indic 3 and Roman VIII are numbers */
    check_split("a\xe3\x80\x80\xe3\x80\x80" "b", "a|\xe3\x80\x80|\xe3\x80\x80|b"); /* U+3000: space, not ' ' */
    check_split("a\xc2\xa0" "b", "a|\xc2\xa0|b");                      /* NBSP: space, but not ' ' */
    check_split("a\xff\xfe" "b \x80z", "a|\xff\xfe|b| \x80|z");        /* invalid bytes: other symbols */
    check_split("\xe6\x97" "a", "\xe6\x97|a");                         /* a truncated sequence */
    check_split("\xed\xa0\x80", "\xed\xa0\x80");                       /* a surrogate: 3 invalid bytes, one run */
    check_split("\xf0\x9f\x98\x80\xf0\x9f\x98\x80 ok", "\xf0\x9f\x98\x80\xf0\x9f\x98\x80| ok");
    check_split("\x1c" "a", "\x1c|a");                                 /* U+001C is not White_Space */
    {
        const char *s = "x";
        expect(photon_bpe_split(s, 1, 0) == 1 && photon_bpe_split(s, 1, 1) == 1, "split at and past the end", NULL);
    }
    expect(strcmp(photon_bpe_unicode_version(), "14.0.0") == 0, "Unicode table version 14.0.0", photon_bpe_unicode_version());
}

/* ======================================================================= */
/* The hand-worked example                                                 */
/* ======================================================================= */
/* Text "abab\nabab\ncdcd\ncdcd\nab\neee\n". Pre-tokens: "abab" x2, "cdcd" x2,
   "ab", "eee", and five single "\n" (no pairs). Pair counts, overlapping
   pairs counted ("eee" has (e,e) twice):
       (a,b) = 2*2 + 1 = 5   (c,d) = 4   (b,a) = 2   (d,c) = 2   (e,e) = 2
   1. (a,b) 5 -> 256 "ab".  abab = [ab ab]: (ab,ab) = 2, (b,a) = 0.
   2. (c,d) 4 -> 257 "cd".  cdcd = [cd cd]: (cd,cd) = 2, (d,c) = 0.
   Now (e,e), (ab,ab) and (cd,cd) all count 2: the tie goes to the smaller
   left id, e = 101 < 256 < 257:
   3. (e,e) -> 258 "ee".    "eee" = [ee e] (left to right): (ee,e) = 1.
   4. (ab,ab) -> 259 "abab".
   5. (cd,cd) -> 260 "cdcd".
   (ee,e) = 1 is below the default min count 2: training stops, and
   <|endoftext|> takes id 261. With min count 1 a sixth merge (ee,e) -> "eee"
   follows. A vocabulary of 259 keeps the first two merges. */
static void test_hand_example(void) {
    const char *text = "abab\nabab\ncdcd\ncdcd\nab\neee\n";
    photon_bpe bpe;
    photon_bpe_train_options o;
    photon_error err;
    static const int want[5][3] = {{'a', 'b', 256}, {'c', 'd', 257}, {'e', 'e', 258}, {256, 256, 259}, {257, 257, 260}};
    int k, ok;
    memset(&o, 0, sizeof o);
    o.vocab_size = 1000;
    ok = photon_bpe_train_text(&bpe, text, strlen(text), &o, &err) == PHOTON_OK;
    expect(ok && bpe.num_merges == 5 && bpe.vocab_size == 262 && bpe.eot_token == 261, "hand example: 5 merges, EOT 261",
           ok ? NULL : err.message);
    if (ok && bpe.num_merges == 5) {
        int same = 1;
        for (k = 0; k < 5; k++)
            same &= bpe.merges[k].left == want[k][0] && bpe.merges[k].right == want[k][1] && bpe.merges[k].result == want[k][2];
        expect(same, "hand example: merge order a+b, c+d, e+e (tie: smaller left id), ab+ab, cd+cd", NULL);
    }
    if (ok) {
        uint16_t t[16];
        size_t n;
        size_t len;
        const unsigned char *eot = photon_bpe_token(&bpe, 261, &len);
        expect(len == 13 && memcmp(eot, "<|endoftext|>", 13) == 0, "hand example: the last token is <|endoftext|>", NULL);
        photon_bpe_encode(&bpe, "eee abcd\nabab", 13, t, &n, NULL);
        /* "eee" -> ee e; " abcd" -> ' ' a b c d -> ' ' ab cd; "\n"; "abab" -> abab */
        expect(n == 7 && t[0] == 258 && t[1] == 'e' && t[2] == ' ' && t[3] == 256 && t[4] == 257 && t[5] == '\n' &&
                   t[6] == 259,
               "hand example: encoding uses the merges in rank order", NULL);
    }
    photon_bpe_free(&bpe);
    o.min_count = 1;
    ok = photon_bpe_train_text(&bpe, text, strlen(text), &o, &err) == PHOTON_OK;
    expect(ok && bpe.num_merges == 6 && bpe.merges[5].left == 258 && bpe.merges[5].right == 'e',
           "hand example: min count 1 adds ee+e", NULL);
    photon_bpe_free(&bpe);
    o.min_count = 0;
    o.vocab_size = 259;
    ok = photon_bpe_train_text(&bpe, text, strlen(text), &o, &err) == PHOTON_OK;
    expect(ok && bpe.num_merges == 2 && bpe.vocab_size == 259 && bpe.merges[1].left == 'c',
           "hand example: vocabulary 259 keeps two merges", NULL);
    photon_bpe_free(&bpe);
}

/* ======================================================================= */
/* Training against a trainer that recounts everything at every step       */
/* ======================================================================= */

typedef struct naive_word {
    int *sym;
    int n;
    long long freq;
} naive_word;

static int cmp_bytes(const void *x, const void *y) {
    const unsigned char *const *a = (const unsigned char *const *)x, *const *b = (const unsigned char *const *)y;
    size_t la = a[1] - a[0], lb = b[1] - b[0], n = la < lb ? la : lb;
    int c = memcmp(a[0], b[0], n);
    return c ? c : (la < lb ? -1 : la > lb);
}

/* The same rules as photon_bpe_train, computed the slow way. Fills merges
   (left, right) and returns their count. V must be small (counts are a
   V x V table). */
static int naive_train(const unsigned char *text, size_t len, int V, long long min_count, int (*merges)[2]) {
    const unsigned char **pieces;
    size_t np = 0, pos = 0, k;
    naive_word *w;
    int nw = 0, ntok = 256, nm = 0, i, j;
    unsigned char **tok = (unsigned char **)calloc((size_t)V, sizeof(char *));
    size_t *tlen = (size_t *)calloc((size_t)V, sizeof(size_t));
    long long *count = (long long *)malloc((size_t)V * V * sizeof(long long));
    char *banned = (char *)calloc((size_t)V * V, 1);
    pieces = (const unsigned char **)malloc(2 * (len + 1) * sizeof(char *));
    while (pos < len) {
        size_t end = photon_bpe_split(text, len, pos);
        pieces[2 * np] = text + pos;
        pieces[2 * np + 1] = text + end;
        np++;
        pos = end;
    }
    qsort(pieces, np, 2 * sizeof(char *), cmp_bytes);
    w = (naive_word *)calloc(np + 1, sizeof(naive_word));
    for (k = 0; k < np; k++) {
        if (nw && cmp_bytes(&pieces[2 * k], &pieces[2 * (k - 1)]) == 0) {
            w[nw - 1].freq++;
            continue;
        }
        w[nw].n = (int)(pieces[2 * k + 1] - pieces[2 * k]);
        w[nw].sym = (int *)malloc((size_t)w[nw].n * sizeof(int));
        for (i = 0; i < w[nw].n; i++) w[nw].sym[i] = pieces[2 * k][i];
        w[nw].freq = 1;
        nw++;
    }
    for (i = 0; i < 256; i++) {
        tok[i] = (unsigned char *)malloc(1);
        tok[i][0] = (unsigned char)i;
        tlen[i] = 1;
    }
    while (ntok < V - 1) {
        int ba = -1, bb = -1, c;
        long long best = 0;
        unsigned char *s;
        size_t sl;
        memset(count, 0, (size_t)V * V * sizeof(long long));
        for (i = 0; i < nw; i++)
            for (j = 0; j + 1 < w[i].n; j++) count[(size_t)w[i].sym[j] * V + w[i].sym[j + 1]] += w[i].freq;
        for (i = 0; i < ntok; i++) /* row-major scan: ties go to the smaller (left, right) */
            for (j = 0; j < ntok; j++)
                if (!banned[(size_t)i * V + j] && count[(size_t)i * V + j] > best) {
                    best = count[(size_t)i * V + j];
                    ba = i;
                    bb = j;
                }
        if (ba < 0 || best < min_count) break;
        sl = tlen[ba] + tlen[bb];
        s = (unsigned char *)malloc(sl);
        memcpy(s, tok[ba], tlen[ba]);
        memcpy(s + tlen[ba], tok[bb], tlen[bb]);
        banned[(size_t)ba * V + bb] = 1;
        for (c = 0; c < ntok; c++)
            if (tlen[c] == sl && memcmp(tok[c], s, sl) == 0) break;
        if (c < ntok || (sl == 13 && memcmp(s, "<|endoftext|>", 13) == 0)) {
            free(s);
            continue;
        }
        tok[ntok] = s;
        tlen[ntok] = sl;
        merges[nm][0] = ba;
        merges[nm][1] = bb;
        nm++;
        for (i = 0; i < nw; i++) { /* merge left to right */
            int o = 0;
            for (j = 0; j < w[i].n;) {
                if (j + 1 < w[i].n && w[i].sym[j] == ba && w[i].sym[j + 1] == bb) {
                    w[i].sym[o++] = ntok;
                    j += 2;
                } else {
                    w[i].sym[o++] = w[i].sym[j++];
                }
            }
            w[i].n = o;
        }
        ntok++;
    }
    for (i = 0; i < nw; i++) free(w[i].sym);
    for (i = 0; i < ntok; i++) free(tok[i]);
    free(w);
    free(tok);
    free(tlen);
    free(count);
    free(banned);
    free(pieces);
    return nm;
}

/* Text from a few words and separators, with repeats, so that many pairs tie. */
static size_t random_text(unsigned char *s, size_t n, uint64_t *rng, const char *const *words, int nwords) {
    size_t o = 0;
    while (o + 16 < n) {
        const char *w = words[photon_rand_u64(rng) % (uint64_t)nwords];
        size_t l = strlen(w);
        memcpy(s + o, w, l);
        o += l;
    }
    return o;
}

static void test_train_vs_naive(void) {
    static const char *const words[] = {"the", " the", " cat", " sat", " on", " mat", "\n", " a", "aaaa", " baba",
                                        "abab", " 123", "12", " !!", "...", " don't", " \xc3\xa9t\xc3\xa9", "  ",
                                        "\xff", " caf\xc3\xa9", " x", "y", " mississippi", " ssss"};
    unsigned char *text = (unsigned char *)malloc(40000);
    uint64_t rng = 7;
    size_t len = random_text(text, 40000, &rng, words, (int)(sizeof words / sizeof words[0]));
    int (*want)[2] = (int (*)[2])malloc(600 * sizeof *want);
    int nm, k, same, trial;
    for (trial = 0; trial < 3; trial++) {
        photon_bpe bpe;
        photon_bpe_train_options o;
        char name[128];
        const unsigned char *t = text;
        size_t l = len;
        memset(&o, 0, sizeof o);
        o.vocab_size = trial == 2 ? 400 : 500;
        o.min_count = trial == 1 ? 1 : 0;
        if (trial == 1) { /* also real text, when the corpus is there */
            size_t n;
            unsigned char *shake = read_bytes("../shared/data/tinyshakespeare.txt", &n);
            if (shake) {
                t = shake;
                l = n < 60000 ? n : 60000;
            }
        }
        nm = naive_train(t, l, o.vocab_size, o.min_count ? (long long)o.min_count : 2, want);
        same = photon_bpe_train_text(&bpe, t, l, &o, NULL) == PHOTON_OK && bpe.num_merges == nm;
        for (k = 0; same && k < nm; k++) same = bpe.merges[k].left == want[k][0] && bpe.merges[k].right == want[k][1];
        snprintf(name, sizeof name, "training equals a full recount at every step (%s, vocab %d, %d merges)",
                 t == text ? "generated text" : "tinyshakespeare", o.vocab_size, nm);
        expect(same, name, NULL);
        photon_bpe_free(&bpe);
        if (t != text) free((void *)t);
    }
    free(want);
    free(text);
}

/* ======================================================================= */
/* Encoding against GPT-2's bpe(), transcribed                             */
/* ======================================================================= */

/* GPT-2: while some adjacent pair has a rank, take the lowest, merge all its
   occurrences left to right. */
static int gpt2_bpe(const photon_bpe *bpe, const unsigned char *w, int n, int *out) {
    int k, m = n;
    for (k = 0; k < n; k++) out[k] = bpe->byte_token[w[k]];
    for (;;) {
        int best = -1, r, i, o;
        for (i = 0; i + 1 < m; i++)
            for (r = 0; r < bpe->num_merges && (best < 0 || r < best); r++)
                if (bpe->merges[r].left == out[i] && bpe->merges[r].right == out[i + 1]) {
                    best = r;
                    break;
                }
        if (best < 0) return m;
        for (i = 0, o = 0; i < m;) {
            if (i + 1 < m && out[i] == bpe->merges[best].left && out[i + 1] == bpe->merges[best].right) {
                out[o++] = bpe->merges[best].result;
                i += 2;
            } else {
                out[o++] = out[i++];
            }
        }
        m = o;
    }
}

static void test_encode_vs_gpt2(void) {
    static const char *const words[] = {"ab", "ba", "a", "b", " ab", "aab", "bba", "c", " ", "abc", "\n", "\xc3\xa9"};
    unsigned char *text = (unsigned char *)malloc(30000);
    uint64_t rng = 11;
    size_t len = random_text(text, 30000, &rng, words, (int)(sizeof words / sizeof words[0])), pos, n;
    photon_bpe bpe;
    photon_bpe_train_options o;
    uint16_t *t = (uint16_t *)malloc(40000 * sizeof(uint16_t));
    int *ref = (int *)malloc(40000 * sizeof(int));
    int same = 1, trial, longest = 0;
    memset(&o, 0, sizeof o);
    o.vocab_size = 600;
    photon_bpe_train_text(&bpe, text, len, &o, NULL);
    /* fresh random text of the same kind, with some very long pre-tokens
       (past the cache's limit) */
    for (trial = 0; trial < 3 && same; trial++) {
        size_t k;
        rng = 100 + (uint64_t)trial;
        len = random_text(text, 30000, &rng, words, (int)(sizeof words / sizeof words[0]));
        if (trial == 2)
            for (k = 0; k < 3000; k++) text[k] = "aab"[photon_rand_u64(&rng) % 3];
        photon_bpe_encode(&bpe, text, len, t, &n, NULL);
        for (pos = 0, k = 0; pos < len && same;) {
            size_t end = photon_bpe_split(text, len, pos);
            int m = gpt2_bpe(&bpe, text + pos, (int)(end - pos), ref), i;
            if ((int)(end - pos) > longest) longest = (int)(end - pos);
            for (i = 0; i < m && same; i++) same = k + (size_t)i < n && t[k + i] == ref[i];
            k += (size_t)m;
            pos = end;
        }
        same = same && k == n;
    }
    {
        char name[128];
        snprintf(name, sizeof name, "encoding equals GPT-2's bpe() on random text (%d merges, pre-tokens up to %d bytes)",
                 bpe.num_merges, longest);
        expect(same, name, NULL);
    }
    photon_bpe_free(&bpe);
    free(text);
    free(t);
    free(ref);
}

/* ======================================================================= */
/* Round trips                                                             */
/* ======================================================================= */

static void test_round_trips(void) {
    photon_bpe bpe, bytes;
    photon_bpe_train_options o;
    uint64_t rng = 3;
    size_t n = 200000, k, ntok;
    unsigned char *s = (unsigned char *)malloc(n);
    int ok = 1, trial;
    /* a vocabulary learned from random bytes biased to text, invalid UTF-8 included */
    for (k = 0; k < n; k++) {
        uint64_t r = photon_rand_u64(&rng);
        s[k] = (r & 3) ? (unsigned char)"etaoin shrdlu\n'0123"[(r >> 8) % 19] : (unsigned char)(r >> 16);
    }
    memset(&o, 0, sizeof o);
    o.vocab_size = 1000;
    photon_bpe_train_text(&bpe, s, n, &o, NULL);
    photon_bpe_init_bytes(&bytes, NULL);
    for (trial = 0; trial < 4; trial++) {
        size_t len = n >> trial;
        for (k = 0; k < len; k++) {
            uint64_t r = photon_rand_u64(&rng);
            s[k] = trial == 3 ? (unsigned char)r : (r & 3) ? (unsigned char)"etaoin shrdlu\n'0123"[(r >> 8) % 19] : (unsigned char)(r >> 16);
        }
        ok &= round_trip(&bpe, s, len, &ntok) && round_trip(&bytes, s, len, &ntok) && ntok == len;
    }
    /* every byte value, long runs, lone lead and continuation bytes */
    for (k = 0; k < 256; k++) s[k] = (unsigned char)k;
    ok &= round_trip(&bpe, s, 256, &ntok);
    memset(s, ' ', 5000);
    ok &= round_trip(&bpe, s, 5000, &ntok);
    memset(s, 0xc3, 5000);
    ok &= round_trip(&bpe, s, 5000, &ntok) && round_trip(&bpe, s, 0, &ntok) && ntok == 0;
    expect(ok && bpe.vocab_size == 1000, "round trip: random bytes with invalid UTF-8 (trained and byte vocabularies)", NULL);
    photon_bpe_free(&bpe);
    photon_bpe_free(&bytes);
    free(s);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

static void test_shared_data(void) {
    const char *dir = "../shared/data";
    DIR *d = opendir(dir);
    struct dirent *e;
    char *names[256], path[1024], name[1200];
    int nn = 0, k;
    photon_bpe bpe;
    photon_bpe_trainer tr;
    photon_bpe_train_options o;
    if (!d) {
        printf("skip - round trip on ../shared/data: not there\n");
        return;
    }
    while ((e = readdir(d)) != NULL && nn < 256)
        if (e->d_name[0] != '.') names[nn++] = test_strdup(e->d_name);
    closedir(d);
    qsort(names, (size_t)nn, sizeof(char *), cmp_str);
    /* a 2048 vocabulary from the first 256 KB of every file */
    photon_bpe_trainer_init(&tr, NULL);
    for (k = 0; k < nn; k++) {
        size_t n;
        unsigned char *s;
        snprintf(path, sizeof path, "%s/%s", dir, names[k]);
        if ((s = read_bytes(path, &n)) != NULL) photon_bpe_trainer_add(&tr, s, n < 262144 ? n : 262144, NULL);
        free(s);
    }
    memset(&o, 0, sizeof o);
    o.vocab_size = 2048;
    photon_bpe_train(&bpe, &tr, &o, NULL);
    photon_bpe_trainer_free(&tr);
    for (k = 0; k < nn; k++) {
        size_t n = 0, ntok = 0;
        unsigned char *s;
        int good;
        snprintf(path, sizeof path, "%s/%s", dir, names[k]);
        s = read_bytes(path, &n);
        good = s && round_trip(&bpe, s, n, &ntok);
        snprintf(name, sizeof name, "round trip: %s (%zu bytes, %zu tokens)", names[k], n, good ? ntok : 0);
        expect(good, name, NULL);

        free(s);
        free(names[k]);
    }
    photon_bpe_free(&bpe);
}

/* ======================================================================= */
/* GPT-2's files                                                           */
/* ======================================================================= */

/* bytes_to_unicode(), transcribed from GPT-2's encoder.py */
static void gpt2_byte_map(unsigned cp[256]) {
    int bs[256], n = 0, extra = 0, b, k;
    for (b = '!'; b <= '~'; b++) bs[n++] = b;
    for (b = 0xa1; b <= 0xac; b++) bs[n++] = b;
    for (b = 0xae; b <= 0xff; b++) bs[n++] = b;
    for (k = 0; k < n; k++) cp[bs[k]] = (unsigned)bs[k];
    for (b = 0; b < 256; b++) {
        int in = 0;
        for (k = 0; k < n; k++) in |= bs[k] == b;
        if (!in) cp[b] = 256u + (unsigned)extra++;
    }
}

typedef struct named {
    unsigned cps[64];
    int n, id;
} named;

static int cmp_named(const void *x, const void *y) { /* by code points, as Python sorts str */
    const named *a = (const named *)x, *b = (const named *)y;
    int k;
    for (k = 0; k < a->n && k < b->n; k++)
        if (a->cps[k] != b->cps[k]) return a->cps[k] < b->cps[k] ? -1 : 1;
    return a->n - b->n;
}

static size_t put_cp(char *o, unsigned cp, int escape) {
    if (escape && cp >= 0x80) return (size_t)sprintf(o, "\\u%04x", cp);
    if (cp < 0x80) {
        if (cp == '"' || cp == '\\') {
            o[0] = '\\';
            o[1] = (char)cp;
            return 2;
        }
        o[0] = (char)cp;
        return 1;
    }
    o[0] = (char)(0xc0 | cp >> 6);
    o[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
}

static size_t put_plain(char *o, unsigned cp) { /* merges.txt escapes nothing */
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    o[0] = (char)(0xc0 | cp >> 6);
    o[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
}

/* vocab.json and merges.txt for bpe, by the rules of Python's json.dumps
   (indent=2, sort_keys=True, ensure_ascii=False) in transformers'
   save_vocabulary, independently of photon's writer. compact: OpenAI's
   original style instead (one line, ids in order, \u escapes). */
static size_t expected_files(const photon_bpe *bpe, char *vocab, char *merges, int compact) {
    unsigned cp[256];
    named *nm = (named *)calloc((size_t)bpe->vocab_size, sizeof(named));
    int i, k;
    size_t o = 0, m = 0;
    gpt2_byte_map(cp);
    for (i = 0; i < bpe->vocab_size; i++) {
        size_t len;
        const unsigned char *t = photon_bpe_token(bpe, i, &len);
        for (k = 0; k < (int)len; k++) nm[i].cps[k] = cp[t[k]];
        nm[i].n = (int)len;
        nm[i].id = i;
    }
    for (i = 0; i < bpe->num_merges; i++) {
        const named *a = &nm[bpe->merges[i].left], *b = &nm[bpe->merges[i].right];
        if (i == 0) m += (size_t)sprintf(merges + m, "#version: 0.2\n");
        for (k = 0; k < a->n; k++) m += put_plain(merges + m, a->cps[k]);
        merges[m++] = ' ';
        for (k = 0; k < b->n; k++) m += put_plain(merges + m, b->cps[k]);
        merges[m++] = '\n';
    }
    if (!bpe->num_merges) m += (size_t)sprintf(merges + m, "#version: 0.2\n");
    merges[m] = '\0';
    if (!compact) qsort(nm, (size_t)bpe->vocab_size, sizeof(named), cmp_named);
    o += (size_t)sprintf(vocab + o, compact ? "{" : "{\n");
    for (i = 0; i < bpe->vocab_size; i++) {
        o += (size_t)sprintf(vocab + o, compact ? (i ? ", \"" : "\"") : "  \"");
        for (k = 0; k < nm[i].n; k++) o += put_cp(vocab + o, nm[i].cps[k], compact);
        o += (size_t)sprintf(vocab + o, "\": %d%s", nm[i].id, compact ? "" : i + 1 < bpe->vocab_size ? ",\n" : "\n");
    }
    o += (size_t)sprintf(vocab + o, compact ? "}" : "}\n");
    free(nm);
    return o;
}

static int file_equals(const char *path, const char *want) {
    size_t n;
    unsigned char *d = read_bytes(path, &n);
    int ok = d && n == strlen(want) && memcmp(d, want, n) == 0;
    free(d);
    return ok;
}

static void test_gpt2_files(void) {
    const char *text = "abab\nabab\ncdcd\ncdcd\nab\neee\n\"\\\"\\ \"\\\"\\ \xc3\xa9\xc3\xa9 \xc3\xa9\xc3\xa9";
    photon_bpe bpe, again, bytes;
    photon_bpe_train_options o;
    photon_error err;
    char *vocab = (char *)malloc(1 << 16), *merges = (char *)malloc(1 << 16);
    const char *vp = tmp_path("vocab.json"), *mp = tmp_path("merges.txt");
    int ok;
    memset(&o, 0, sizeof o);
    o.vocab_size = 300;
    photon_bpe_train_text(&bpe, text, strlen(text), &o, NULL);
    /* merges of '"' and '\\' are written plain in merges.txt, escaped in vocab.json */
    expected_files(&bpe, vocab, merges, 0);
    ok = photon_bpe_save(&bpe, vp, mp, &err) == PHOTON_OK;
    expect(ok && file_equals(vp, vocab), "vocab.json written byte for byte as transformers writes it", ok ? vocab : err.message);
    expect(ok && file_equals(mp, merges), "merges.txt written byte for byte as transformers writes it", NULL);
    expect(strncmp(vocab, "{\n  \"!\": 33,\n  \"\\\"\": 34,\n", 25) == 0 && strstr(vocab, "  \"\\u") == NULL &&
               strstr(vocab, "\"\xc4\xa0\": 32,\n") != NULL && strstr(vocab, "\"\xc4\x8a\": 10,\n") != NULL &&
               strstr(vocab, "\"<|endoftext|>\": ") != NULL,
           "vocab.json: '!' first, '\"' escaped, space is U+0120, newline U+010A", NULL);
    /* read back: the same tokenizer, and written again the same bytes */
    ok = photon_bpe_load(&again, vp, mp, &err) == PHOTON_OK;
    expect(ok, "vocab.json + merges.txt load", ok ? NULL : err.message);
    if (ok) {
        int same = again.vocab_size == bpe.vocab_size && again.num_merges == bpe.num_merges &&
                   again.eot_token == bpe.eot_token &&
                   memcmp(again.token_start, bpe.token_start, ((size_t)bpe.vocab_size + 1) * sizeof(uint32_t)) == 0 &&
                   memcmp(again.token_bytes, bpe.token_bytes, bpe.token_start[bpe.vocab_size]) == 0 &&
                   memcmp(again.merges, bpe.merges, (size_t)bpe.num_merges * sizeof(photon_bpe_merge)) == 0;
        const char *vp2 = tmp_path("vocab2.json"), *mp2 = tmp_path("merges2.txt");
        expect(same, "loaded tokenizer equals the saved one", NULL);
        photon_bpe_save(&again, vp2, mp2, NULL);
        expect(file_equals(vp2, vocab) && file_equals(mp2, merges), "load then save gives the same bytes", NULL);
        remove(vp2);
        remove(mp2);
        photon_bpe_free(&again);
    }
    /* OpenAI's original style: one line, \u escapes, ids in order */
    expected_files(&bpe, vocab, merges + 0, 1);
    write_text(vp, vocab, strlen(vocab));
    ok = photon_bpe_load(&again, vp, mp, &err) == PHOTON_OK;
    if (ok) {
        const char *vp2 = tmp_path("vocab3.json");
        char *canon = (char *)malloc(1 << 16), *dummy = (char *)malloc(1 << 16);
        expected_files(&bpe, canon, dummy, 0);
        photon_bpe_save(&again, vp2, tmp_path("merges3.txt"), NULL);
        ok = file_equals(vp2, canon);
        remove(vp2);
        remove(tmp_path("merges3.txt"));
        free(canon);
        free(dummy);
        photon_bpe_free(&again);
    }
    expect(ok, "vocab.json in GPT-2's original style (\\u escapes, one line) loads", ok ? NULL : err.message);
    /* the byte vocabulary: 256 entries, merges.txt only its header */
    photon_bpe_init_bytes(&bytes, NULL);
    expected_files(&bytes, vocab, merges, 0);
    ok = photon_bpe_save(&bytes, vp, mp, NULL) == PHOTON_OK && file_equals(vp, vocab) && file_equals(mp, "#version: 0.2\n");
    expect(ok, "byte vocabulary written as GPT-2 files (256 tokens, no merges)", NULL);
    photon_bpe_free(&bytes);
    remove(vp);
    remove(mp);
    photon_bpe_free(&bpe);
    free(vocab);
    free(merges);
}

/* ======================================================================= */
/* Corrupt files                                                           */
/* ======================================================================= */

static char *replace(const char *s, const char *from, const char *to) {
    const char *at = strstr(s, from);
    size_t n = strlen(s) + strlen(to) + 1;
    char *o = (char *)malloc(n);
    if (!at) {
        strcpy(o, s);
        return o;
    }
    memcpy(o, s, (size_t)(at - s));
    strcpy(o + (at - s), to);
    strcat(o, at + strlen(from));
    return o;
}

static void check_refused(const char *what, const char *vocab, const char *merges, const char *bad_path,
                          const char *phrase) {
    const char *vp = tmp_path("bad-vocab.json"), *mp = tmp_path("bad-merges.txt");
    photon_bpe bpe;
    photon_error err;
    photon_result r;
    char name[256], detail[700];
    write_text(vp, vocab, strlen(vocab));
    write_text(mp, merges, strlen(merges));
    memset(&err, 0, sizeof err);
    r = photon_bpe_load(&bpe, vp, mp, &err);
    snprintf(name, sizeof name, "refused: %s", what);
    snprintf(detail, sizeof detail, "got %d \"%s\"", (int)r, err.message);
    expect(r == PHOTON_ERR_FORMAT && strstr(err.message, strcmp(bad_path, "vocab") == 0 ? vp : mp) &&
               strstr(err.message, phrase) != NULL,
           name, detail);
    if (r == PHOTON_OK) photon_bpe_free(&bpe);
    remove(vp);
    remove(mp);
}

static void test_corrupt(void) {
    const char *text = "abab\nabab\ncdcd\ncdcd\nab\neee\n";
    photon_bpe bpe;
    photon_bpe_train_options o;
    char *v = (char *)malloc(1 << 16), *m = (char *)malloc(1 << 16), *t;
    memset(&o, 0, sizeof o);
    o.vocab_size = 300;
    photon_bpe_train_text(&bpe, text, strlen(text), &o, NULL);
    photon_bpe_save(&bpe, tmp_path("good-vocab.json"), tmp_path("good-merges.txt"), NULL);
    {
        size_t n;
        unsigned char *d = read_bytes(tmp_path("good-vocab.json"), &n);
        memcpy(v, d, n);
        v[n] = '\0';
        free(d);
        d = read_bytes(tmp_path("good-merges.txt"), &n);
        memcpy(m, d, n);
        m[n] = '\0';
        free(d);
        remove(tmp_path("good-vocab.json"));
        remove(tmp_path("good-merges.txt"));
    }
    /* the good pair loads */
    {
        const char *vp = tmp_path("v.json"), *mp = tmp_path("m.txt");
        photon_bpe ok;
        write_text(vp, v, strlen(v));
        write_text(mp, m, strlen(m));
        expect(photon_bpe_load(&ok, vp, mp, NULL) == PHOTON_OK, "the uncorrupted files load", NULL);
        photon_bpe_free(&ok);
        remove(vp);
        remove(mp);
    }
    check_refused("empty vocab.json", "", m, "vocab", "line 1, column 1: expected '{'");
    check_refused("vocab.json is an array", "[1, 2]", m, "vocab", "expected '{'");
    check_refused("vocab.json with no tokens", "{}\n", m, "vocab", "holds no tokens");
    t = test_strdup(v);
    t[strlen(t) - 30] = '\0';
    check_refused("truncated vocab.json", t, m, "vocab", "invalid JSON at line");
    free(t);
    t = replace(v, "  \"#\": 35,\n", "  \"#\": 35,\n  \"!\": 35,\n");
    check_refused("a token twice", t, m, "vocab", "line 5, column 3: token \"!\" appears twice");
    free(t);
    t = replace(v, "\"#\": 35,", "\"#\": 9999,");
    check_refused("an id out of range", t, m, "vocab", "line 4: id 9999, but the 262 tokens must have the ids 0 to 261");
    free(t);
    t = replace(v, "\"#\": 35,", "\"#\": 34,");
    check_refused("two tokens with one id", t, m, "vocab", "id 34 is also the id of the token on line 3");
    free(t);
    t = replace(v, "\"#\": 35,", "\"#\": -35,");
    check_refused("a negative id", t, m, "vocab", "line 4, column 8: expected a non-negative integer");
    free(t);
    t = replace(v, "\"#\": 35,", "\"#\": 3.5,");
    check_refused("a fractional id", t, m, "vocab", "expected an integer, found a fraction");
    free(t);
    t = replace(v, "\"#\": 35,", "\"# x\": 35,");
    check_refused("a character outside the byte alphabet", t, m, "vocab",
                  "line 4: token \"# x\" has the character U+0020, which is not in GPT-2's byte-to-unicode alphabet");
    free(t);
    t = replace(v, "\"#\": 35,", "\"\xe2\x82\xac\": 35,");
    check_refused("a 3-byte character", t, m, "vocab", "has the character U+20AC");
    free(t);
    t = replace(v, "\"#\": 35,", "\"\xff\": 35,");
    check_refused("invalid UTF-8 in vocab.json", t, m, "vocab", "is not valid UTF-8");
    free(t);
    {   /* drop byte 0x23 '#' and renumber nothing: the ids then have a hole too, so check the byte message first */
        char *u = replace(v, "  \"#\": 35,\n", "  \"#x\": 35,\n");
        char *w2 = replace(u, "\"#x\"", "\"#\xc4\xa0\"");
        check_refused("no token for a byte", w2, m, "vocab", "has no token for the byte 0x23 (\"#\")");
        free(u);
        free(w2);
    }
    t = (char *)malloc(strlen(v) + 8);
    sprintf(t, "%sx", v);
    check_refused("text after the object", t, m, "vocab", "text after the closing '}'");
    free(t);

    t = replace(m, "#version: 0.2\n", "");
    check_refused("merges.txt without its header", v, t, "merges", "line 1: expected the header \"#version: 0.2\"");
    free(t);
    t = replace(m, "c d\n", "c d\n\n");
    check_refused("an empty line", v, t, "merges", "line 4: empty line");
    free(t);
    t = replace(m, "c d\n", "c d e\n");
    check_refused("three tokens on a line", v, t, "merges", "line 3: expected two tokens separated by one space, got \"c d e\"");
    free(t);
    t = replace(m, "c d\n", "c  d\n");
    check_refused("two spaces", v, t, "merges", "line 3: expected two tokens separated by one space");
    free(t);
    t = replace(m, "c d\n", "zz d\n");
    check_refused("a merge of an unknown token", v, t, "merges", "line 3: \"zz\" is not a token of");
    free(t);
    t = replace(m, "c d\n", "c e\n");
    check_refused("a merge whose result is not a token", v, t, "merges", "line 3: \"c\" + \"e\" is not a token of");
    free(t);
    t = replace(m, "c d\n", "c d\na b\n");
    check_refused("a merge twice", v, t, "merges", "line 4: the merge \"a b\" is also on line 2");
    free(t);
    t = replace(m, "c d\n", "c d\r\n");
    check_refused("CRLF line ends", v, t, "merges", "line 3: ends with a carriage return");
    free(t);
    t = replace(m, "c d\n", "c d\t\n");
    check_refused("a tab", v, t, "merges", "has the character U+0009");
    free(t);
    {
        photon_bpe x;
        photon_error err;
        photon_result r = photon_bpe_load(&x, tmp_path("no-such-vocab.json"), tmp_path("no-such-merges.txt"), &err);
        expect(r == PHOTON_ERR_IO && strstr(err.message, "no-such-vocab.json"), "a missing vocab.json is an I/O error",
               err.message);
    }
    photon_bpe_free(&bpe);
    free(v);
    free(m);
}

/* ======================================================================= */
/* Determinism, arguments, shards                                          */
/* ======================================================================= */

static void test_determinism(void) {
    size_t n = 0;
    unsigned char *s = read_bytes("../shared/data/en_news_leipzig_2016_10K_sentences.txt", &n);
    photon_bpe a, b;
    photon_bpe_trainer t;
    photon_bpe_train_options o;
    const char *files[4] = {tmp_path("a-vocab.json"), tmp_path("a-merges.txt"), tmp_path("b-vocab.json"),
                            tmp_path("b-merges.txt")};
    size_t n1, n2;
    unsigned char *d1, *d2;
    int same, corpus = s != NULL;
    if (!s) { /* no corpus: generated text */
        uint64_t rng = 5;
        static const char *const words[] = {" the", " quick", " brown", " fox", "\n", " 42", ",", " jumps"};
        s = (unsigned char *)malloc(300000);
        n = random_text(s, 300000, &rng, words, 8);
    }
    memset(&o, 0, sizeof o);
    o.vocab_size = 3000;
    photon_bpe_train_text(&a, s, n, &o, NULL);
    /* the same text again, fed through a second trainer */
    photon_bpe_trainer_init(&t, NULL);
    photon_bpe_trainer_add(&t, s, n, NULL);
    photon_bpe_train(&b, &t, &o, NULL);
    photon_bpe_trainer_free(&t);
    photon_bpe_save(&a, files[0], files[1], NULL);
    photon_bpe_save(&b, files[2], files[3], NULL);
    d1 = read_bytes(files[0], &n1);
    d2 = read_bytes(files[2], &n2);
    same = d1 && d2 && n1 == n2 && memcmp(d1, d2, n1) == 0;
    free(d1);
    free(d2);
    d1 = read_bytes(files[1], &n1);
    d2 = read_bytes(files[3], &n2);
    same = same && d1 && d2 && n1 == n2 && memcmp(d1, d2, n1) == 0;
    free(d1);
    free(d2);
    expect(same && (a.vocab_size == 3000 || !corpus), "same text and settings give the same vocabulary files", NULL);
    {   /* the encoding cache does not change results: encode twice, cold and warm */
        uint16_t *t1 = (uint16_t *)malloc(n * sizeof(uint16_t)), *t2 = (uint16_t *)malloc(n * sizeof(uint16_t));
        size_t c1, c2;
        photon_bpe_encode(&a, s, n, t1, &c1, NULL);
        photon_bpe_encode(&a, s, n, t2, &c2, NULL);
        expect(c1 == c2 && memcmp(t1, t2, c1 * sizeof(uint16_t)) == 0, "encoding is the same with a warm cache", NULL);
        free(t1);
        free(t2);
    }
    {   /* text that spells <|endoftext|> is text: it round-trips and never gives the EOT id */
        const char *x = "a<|endoftext|>b <|endoftext|>";
        uint16_t ids[64];
        size_t c, k;
        int none = 1;
        photon_bpe_encode(&a, x, strlen(x), ids, &c, NULL);
        for (k = 0; k < c; k++) none &= ids[k] != a.eot_token;
        expect(none && round_trip(&a, (const unsigned char *)x, strlen(x), &c), "<|endoftext|> in text is plain text", NULL);
    }
    for (n1 = 0; n1 < 4; n1++) remove(files[n1]);
    photon_bpe_free(&a);
    photon_bpe_free(&b);
    free(s);
}

static void test_arguments(void) {
    photon_bpe bpe;
    photon_bpe_train_options o;
    photon_error err;
    uint16_t bad[2] = {65, 300};
    size_t len;
    char out[8];
    memset(&o, 0, sizeof o);
    o.vocab_size = 256;
    expect(photon_bpe_train_text(&bpe, "ab", 2, &o, &err) == PHOTON_ERR_ARGUMENT && strstr(err.message, "257 to 65536"),
           "vocabulary size 256 refused for training", err.message);
    o.vocab_size = 65537;
    expect(photon_bpe_train_text(&bpe, "ab", 2, &o, &err) == PHOTON_ERR_ARGUMENT, "vocabulary size 65537 refused", NULL);
    photon_bpe_init_bytes(&bpe, NULL);
    expect(photon_bpe_decode(&bpe, bad, 2, NULL, 0, &len, &err) == PHOTON_ERR_ARGUMENT &&
               strstr(err.message, "token 1 is 300, outside the vocabulary of 256"),
           "decode refuses a token outside the vocabulary", err.message);
    expect(photon_bpe_decode(&bpe, bad, 1, out, 0, &len, &err) == PHOTON_ERR_ARGUMENT && len == 1,
           "decode refuses a small buffer and says the size", NULL);
    expect(photon_bpe_token(&bpe, 256, &len) == NULL && photon_bpe_token(&bpe, -1, &len) == NULL,
           "photon_bpe_token: NULL out of range", NULL);
    o.vocab_size = 400;
    photon_bpe_free(&bpe);
    expect(photon_bpe_train_text(&bpe, "", 0, &o, &err) == PHOTON_OK && bpe.vocab_size == 257 && bpe.num_merges == 0,
           "training on no text gives the bytes and <|endoftext|>", NULL);
    photon_bpe_free(&bpe);
}

static void test_shard(void) {
    uint16_t t[3] = {1, 0x1234, 65535};
    const char *p = tmp_path("shard.bin");
    photon_dataset ds;
    size_t n;
    unsigned char *d;
    int ok = photon_shard_write(p, t, 3, NULL) == PHOTON_OK;
    d = read_bytes(p, &n);
    ok = ok && d && n == 1030 && d[0] == 0x88 && d[1] == 0xd8 && d[2] == 0x34 && d[3] == 0x01 && d[4] == 1 && d[8] == 3 &&
         d[1024] == 1 && d[1026] == 0x34 && d[1027] == 0x12 && d[1028] == 0xff;
    free(d);
    ok = ok && photon_dataset_load(&ds, &p, 1, NULL) == PHOTON_OK && ds.num_tokens == 3 && ds.tokens[1] == 0x1234;
    if (ok) photon_dataset_free(&ds);
    expect(ok, "shard: llm.c header (magic 20240520, version 1, count) and little-endian tokens; photon reads it", NULL);
    remove(p);
}

static const check_test tests[] = {
    CHECK_TEST(split),
    CHECK_TEST(hand_example),
    CHECK_TEST(train_vs_naive),
    CHECK_TEST(encode_vs_gpt2),
    CHECK_TEST(round_trips),
    CHECK_TEST(shared_data),
    CHECK_TEST(gpt2_files),
    CHECK_TEST(corrupt),
    CHECK_TEST(determinism),
    CHECK_TEST(arguments),
    CHECK_TEST(shard),
};

int main(int argc, char **argv) { return check_main(tests, sizeof tests / sizeof tests[0], argc, argv); }
