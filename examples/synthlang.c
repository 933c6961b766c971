/* synthlang.c - text in synthetic languages whose entropy rate is known
   exactly, so that a trained model's loss can be compared with the floor.

   Build:  cc -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -O2 \
              -o bin/synthlang examples/synthlang.c -lm
   Use:    synthlang --seed 1 --dialect 0 --bytes 1000000 --out train.txt

   THE LANGUAGE
   A language is fixed by (seed, dialect, words W, successors K). It has
   n = W + 1 tokens: W words and the sentence end ".".

   - Lexicon (depends on seed and W only, so every dialect shares it): word
     i is 1 to 3 syllables, each a consonant, a vowel and, one time in
     three, a closing consonant ("ka", "mol", "tisbe"); all W are distinct.
   - Transitions: a first-order Markov chain over tokens. Token i has K
     distinct successors s_i[0..K-1] (never i itself) with integer weights
         w_i[k] = floor(2^24 / (k + q_i)),   q_i in {1,2,3,4},
     a Zipf-like law (q_i = 1 is Zipf's 1/(k+1); a larger q_i is flatter),
     and P(i -> s_i[k]) = w_i[k] / sum_k w_i[k] exactly. Sampling draws an
     integer uniformly from [0, sum_k w_i[k]), so the walk uses exactly these
     rational probabilities and is byte-identical on every platform.
   - Irreducibility: a random cyclic order of all n tokens is drawn once from
     the seed, and every token keeps its cycle successor among its K
     successors (at a random rank), so every token reaches every other.
     Aperiodicity: the period (the gcd of the cycle lengths, found from BFS
     levels: gcd over edges u->v of level(u) + 1 - level(v)) is computed and
     the random part is re-drawn until it is 1. An irreducible aperiodic
     chain has a unique stationary distribution pi and the walk's statistics
     converge to it; pi is computed by power iteration (pi <- pi P from the
     uniform distribution until the L1 change is below 1e-13), which
     converges only for such a chain, so it doubles as a check.
   - Dialect 0 is the base language of the seed. Dialect D > 0 keeps the
     lexicon and the cycle, picks floor(n/2) tokens with a generator seeded
     from (seed, D) and re-draws their successor lists and q_i (keeping
     each one's cycle successor).

   THE TEXT
   The walk starts in the state "." (a sentence start; not written). Each
   word is written as its letters followed by one space, except that no
   space is written when the next token is "."; "." is written ".\n". So a
   sentence is "mol ka tisbe.\n" and the text has one sentence per line.
   Words are made of the letters a-z only, so splitting the text at spaces
   and at ".\n" recovers the token sequence: the byte stream is an
   injective, sequential function of the token sequence (the bytes of the
   first t tokens are fixed once token t+1 is drawn).

   THE ENTROPY RATE
   Let H_i = -sum_k p_ik log2 p_ik (bits) be the entropy of token i's
   successor distribution and b_i the expected number of bytes written for
   token i including its separator:
       b_i = len_i + 1 - P(i -> ".")    for a word (the space is omitted
                                          exactly when "." comes next),
       b_. = 2                          for ".".
   The entropy rate of the token chain is h = sum_i pi_i H_i bits/token.
   Because the map from tokens to bytes is injective with a delay of one
   token, H(first m bytes) = H(tokens written in them) + O(1), and by the
   ergodic theorem m bytes hold m / B + o(m) tokens, B = sum_i pi_i b_i. So
   the entropy rate of the byte stream is exactly
       h_bytes = (sum_i pi_i H_i) / (sum_i pi_i b_i)  bits/byte,
   printed with nats/byte = bits/byte * ln 2. This is the lowest average
   cross-entropy per byte any model can have on long text. It is reached by
   a model that knows the previous whole word, which always lies within the
   last 20 bytes (words have at most 9 letters); a model evaluated on windows of length T pays a little more near
   the start of each window, where its context is cut.

   OUTPUT LENGTH
   Exactly N bytes are written (--bytes N): the text is cut at byte N, so
   the last word or sentence is usually incomplete. Same flags, same bytes.
   --out FILE writes FILE.tmp and renames it to FILE, so FILE is never
   seen half written; an existing device or pipe is written in place.

   Usage errors print one line and exit 2; I/O errors exit 1. */

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SYNTHLANG_VERSION "0.1.0"
#define MAX_WORDS 65536
#define MAX_SUCCESSORS 64
#define MAX_WORD_LEN 9 /* 3 syllables of at most 3 letters */

static const char *usage_text =
    "usage: synthlang --bytes N [--out FILE] [options]\n"
    "Writes N bytes of text in a synthetic language (a Markov chain over words)\n"
    "whose entropy rate is known exactly, and prints that rate on stderr.\n"
    "\n"
    "  --bytes N          how many bytes to write (required); the text is cut at\n"
    "                     exactly N bytes, usually inside a word\n"
    "  --out FILE         write to FILE (through FILE.tmp, then renamed; a device\n"
    "                     or pipe is written in place); default stdout\n"
    "  --seed S           the language (default 1)\n"
    "  --dialect D        the dialect (default 0): dialects of a seed share the\n"
    "                     lexicon; D > 0 re-draws the transitions of half the words\n"
    "  --sample-seed X    the seed of the random walk (default derived from the\n"
    "                     seed and dialect); draw train and validation text from\n"
    "                     the same language with different sample seeds\n"
    "  --words W          lexicon size, 2 to 65536 (default 96)\n"
    "  --successors K     successors per word, 2 to min(W, 64) (default 6)\n"
    "  --json             print the language's entropy rate and parameters as JSON\n"
    "                     on stdout (needs --out)\n"
    "  --help, --version\n"
    "\n"
    "Flags take their value as the next argument or after '=' (--bytes=1000).\n"
    "Same flags, same bytes. Exit status: 0 ok, 1 I/O error, 2 usage error.\n";

/* ---- random numbers: splitmix64 ---- */

static uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* a stream seed from a purpose tag and two numbers */
static uint64_t derive(uint64_t tag, uint64_t a, uint64_t b) { return mix64(mix64(mix64(tag) ^ a) ^ b); }

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rng_next(rng *r) {
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* uniform on [0, n), n > 0, without modulo bias */
static uint64_t rng_below(rng *r, uint64_t n) {
    uint64_t limit = (uint64_t)0 - ((uint64_t)0 - n) % n; /* largest multiple of n, mod 2^64 */
    uint64_t x;
    if (limit == 0) return rng_next(r) % n; /* n divides 2^64 */
    do x = rng_next(r);
    while (x >= limit);
    return x % n;
}

enum { TAG_LEXICON = 1, TAG_CYCLE, TAG_BASE, TAG_DIALECT, TAG_SAMPLE };

/* ---- the language ---- */

typedef struct language {
    int W, K, n, end;     /* n = W + 1 tokens; token `end` = W is "." */
    char (*word)[MAX_WORD_LEN + 1];
    int *len;             /* bytes of each token's text, without separator */
    int *cycle_next;      /* the successor that keeps the chain irreducible */
    int *succ;            /* n * K successors, by rank */
    uint32_t *weight;     /* n * K integer weights */
    uint64_t *total;      /* n: sum of each row's weights */
    int *q;               /* n: each row's Zipf offset */
    double *pi;           /* stationary distribution */
    double bits_per_token, bytes_per_token, bits_per_byte;
    long iterations;      /* of the power iteration */
} language;

static void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size);
    if (!p) {
        fprintf(stderr, "synthlang: out of memory\n");
        exit(1);
    }
    return p;
}

static uint64_t hash_string(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    while (*s) h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
    return h;
}

static void make_lexicon(language *L, uint64_t seed) {
    static const char consonants[] = "bdfgklmnprstvz", vowels[] = "aeiou", codas[] = "lmnrs";
    size_t cap = 4;
    int *table, i;
    rng r;
    while (cap < 2 * (size_t)L->W) cap *= 2;
    table = (int *)xcalloc(cap, sizeof(int)); /* open addressing; 0 = empty, else index + 1 */
    r.s = derive(TAG_LEXICON, seed, 0);
    for (i = 0; i < L->W; i++) {
        for (;;) {
            char *w = L->word[i];
            int syllables = 1 + (int)rng_below(&r, 3), s, m = 0, dup = 0;
            size_t slot;
            for (s = 0; s < syllables; s++) {
                w[m++] = consonants[rng_below(&r, sizeof consonants - 1)];
                w[m++] = vowels[rng_below(&r, sizeof vowels - 1)];
                if (rng_below(&r, 3) == 0) w[m++] = codas[rng_below(&r, sizeof codas - 1)];
            }
            w[m] = '\0';
            for (slot = hash_string(w) & (cap - 1); table[slot]; slot = (slot + 1) & (cap - 1))
                if (strcmp(L->word[table[slot] - 1], w) == 0) {
                    dup = 1;
                    break;
                }
            if (dup) continue;
            table[slot] = i + 1;
            L->len[i] = m;
            break;
        }
    }
    strcpy(L->word[L->end], ".");
    L->len[L->end] = 1;
    free(table);
}

/* Draws row i: the cycle successor plus K-1 other distinct tokens (never i),
   in random order, and the row's Zipf offset. */
static void draw_row(language *L, int i, rng *r) {
    int *s = L->succ + (size_t)i * L->K, k, j;
    uint32_t *w = L->weight + (size_t)i * L->K;
    uint64_t total = 0;
    s[0] = L->cycle_next[i];
    for (k = 1; k < L->K; k++) {
        for (;;) {
            int c = (int)rng_below(r, (uint64_t)L->n), dup = (c == i);
            for (j = 0; j < k && !dup; j++) dup = (s[j] == c);
            if (!dup) {
                s[k] = c;
                break;
            }
        }
    }
    for (k = L->K - 1; k > 0; k--) { /* Fisher-Yates: the cycle edge gets a random rank */
        int t;
        j = (int)rng_below(r, (uint64_t)k + 1);
        t = s[k], s[k] = s[j], s[j] = t;
    }
    L->q[i] = 1 + (int)rng_below(r, 4);
    for (k = 0; k < L->K; k++) {
        w[k] = (uint32_t)((1u << 24) / (uint32_t)(k + L->q[i]));
        total += w[k];
    }
    L->total[i] = total;
}

static long gcd_long(long a, long b) {
    if (a < 0) a = -a;
    if (b < 0) b = -b;
    while (b) {
        long t = a % b;
        a = b, b = t;
    }
    return a;
}

/* The period of the (strongly connected) chain: gcd over edges u->v of
   level(u) + 1 - level(v), levels from a BFS from token 0. */
static long chain_period(const language *L) {
    int *level = (int *)xcalloc((size_t)L->n, sizeof(int)), *queue = (int *)xcalloc((size_t)L->n, sizeof(int));
    int head = 0, tail = 0, u, k;
    long g = 0;
    for (u = 0; u < L->n; u++) level[u] = -1;
    level[0] = 0;
    queue[tail++] = 0;
    while (head < tail) {
        u = queue[head++];
        for (k = 0; k < L->K; k++) {
            int v = L->succ[(size_t)u * L->K + k];
            if (level[v] < 0) {
                level[v] = level[u] + 1;
                queue[tail++] = v;
            }
        }
    }
    for (u = 0; u < L->n; u++)
        for (k = 0; k < L->K; k++) {
            int v = L->succ[(size_t)u * L->K + k];
            if (level[u] < 0 || level[v] < 0) {
                g = 0; /* not reached: cannot happen with the cycle */
                goto done;
            }
            g = gcd_long(g, (long)level[u] + 1 - level[v]);
        }
done:
    free(level);
    free(queue);
    return tail == L->n ? g : 0;
}

/* Power iteration for the stationary distribution; returns 0 if it does not
   converge. */
static int stationary(language *L) {
    double *next = (double *)xcalloc((size_t)L->n, sizeof(double));
    int i, k;
    long it;
    for (i = 0; i < L->n; i++) L->pi[i] = 1.0 / L->n;
    for (it = 1; it <= 1000000; it++) {
        double sum = 0, change = 0;
        memset(next, 0, (size_t)L->n * sizeof(double));
        for (i = 0; i < L->n; i++) {
            double m = L->pi[i] / (double)L->total[i];
            for (k = 0; k < L->K; k++)
                next[L->succ[(size_t)i * L->K + k]] += m * (double)L->weight[(size_t)i * L->K + k];
        }
        for (i = 0; i < L->n; i++) sum += next[i];
        for (i = 0; i < L->n; i++) {
            next[i] /= sum;
            change += fabs(next[i] - L->pi[i]);
            L->pi[i] = next[i];
        }
        if (change < 1e-13) {
            L->iterations = it;
            free(next);
            return 1;
        }
    }
    free(next);
    return 0;
}

static void entropy_rate(language *L) {
    double h = 0, b = 0;
    int i, k;
    for (i = 0; i < L->n; i++) {
        double H = 0, bytes, p_end = 0;
        for (k = 0; k < L->K; k++) {
            double p = (double)L->weight[(size_t)i * L->K + k] / (double)L->total[i];
            H -= p * log2(p);
            if (L->succ[(size_t)i * L->K + k] == L->end) p_end = p;
        }
        bytes = i == L->end ? 2.0 : L->len[i] + 1.0 - p_end;
        h += L->pi[i] * H;
        b += L->pi[i] * bytes;
    }
    L->bits_per_token = h;
    L->bytes_per_token = b;
    L->bits_per_byte = h / b;
}

static void draw_all_rows(language *L, uint64_t seed, int attempt) {
    rng r;
    int i;
    r.s = derive(TAG_BASE, seed, (uint64_t)attempt);
    for (i = 0; i < L->n; i++) draw_row(L, i, &r);
}

static void no_chain(void) {
    fprintf(stderr, "synthlang: could not draw an aperiodic chain for these flags\n");
    exit(1);
}

static void build_language(language *L, int W, int K, uint64_t seed, uint64_t dialect) {
    int *perm, *pick, i, base, attempt;
    rng r;
    L->W = W, L->K = K, L->n = W + 1, L->end = W;
    L->word = (char(*)[MAX_WORD_LEN + 1])xcalloc((size_t)L->n, sizeof *L->word);
    L->len = (int *)xcalloc((size_t)L->n, sizeof(int));
    L->cycle_next = (int *)xcalloc((size_t)L->n, sizeof(int));
    L->succ = (int *)xcalloc((size_t)L->n * K, sizeof(int));
    L->weight = (uint32_t *)xcalloc((size_t)L->n * K, sizeof(uint32_t));
    L->total = (uint64_t *)xcalloc((size_t)L->n, sizeof(uint64_t));
    L->q = (int *)xcalloc((size_t)L->n, sizeof(int));
    L->pi = (double *)xcalloc((size_t)L->n, sizeof(double));
    perm = (int *)xcalloc((size_t)L->n, sizeof(int));
    pick = (int *)xcalloc((size_t)L->n, sizeof(int));

    make_lexicon(L, seed);

    /* the cycle through all tokens */
    r.s = derive(TAG_CYCLE, seed, 0);
    for (i = 0; i < L->n; i++) perm[i] = i;
    for (i = L->n - 1; i > 0; i--) {
        int j = (int)rng_below(&r, (uint64_t)i + 1), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    for (i = 0; i < L->n; i++) L->cycle_next[perm[i]] = perm[(i + 1) % L->n];

    /* the base language (dialect 0): re-drawn while it is periodic */
    for (base = 0;; base++) {
        if (base >= 1000) no_chain();
        draw_all_rows(L, seed, base);
        if (chain_period(L) == 1 && stationary(L)) break;
    }

    /* a dialect: half the rows re-drawn over the base, again until aperiodic */
    for (attempt = 0; dialect != 0; attempt++) {
        if (attempt >= 1000) no_chain();
        if (attempt > 0) draw_all_rows(L, seed, base);
        r.s = derive(TAG_DIALECT, seed, derive(TAG_DIALECT, dialect, (uint64_t)attempt));
        for (i = 0; i < L->n; i++) pick[i] = i;
        for (i = 0; i < L->n / 2; i++) { /* partial Fisher-Yates: n/2 distinct tokens */
            int j = i + (int)rng_below(&r, (uint64_t)(L->n - i)), t = pick[i];
            pick[i] = pick[j], pick[j] = t;
            draw_row(L, pick[i], &r);
        }
        if (chain_period(L) == 1 && stationary(L)) break;
    }
    entropy_rate(L);
    free(perm);
    free(pick);
}

static void free_language(language *L) {
    free(L->word);
    free(L->len);
    free(L->cycle_next);
    free(L->succ);
    free(L->weight);
    free(L->total);
    free(L->q);
    free(L->pi);
}

/* ---- writing ---- */

typedef struct sink {
    FILE *f;
    const char *name;
    char buf[1 << 16];
    size_t used;
    unsigned long long left; /* bytes still to write */
} sink;

static void io_fail(const char *name, const char *tmp) {
    fprintf(stderr, "synthlang: %s: %s\n", name, strerror(errno ? errno : EIO));
    if (tmp) remove(tmp);
    exit(1);
}

static int sink_flush(sink *s) {
    if (s->used && fwrite(s->buf, 1, s->used, s->f) != s->used) return 0;
    s->used = 0;
    return 1;
}

/* appends up to s->left bytes; returns 0 on a write error */
static int sink_put(sink *s, const char *p, size_t m) {
    if (m > s->left) m = (size_t)s->left;
    s->left -= m;
    while (m) {
        size_t room = sizeof s->buf - s->used, c = m < room ? m : room;
        memcpy(s->buf + s->used, p, c);
        s->used += c, p += c, m -= c;
        if (s->used == sizeof s->buf && !sink_flush(s)) return 0;
    }
    return 1;
}

static int generate(const language *L, uint64_t sample_seed, sink *s) {
    rng r;
    int state = L->end;
    r.s = derive(TAG_SAMPLE, sample_seed, 0);
    while (s->left > 0) {
        const int *succ = L->succ + (size_t)state * L->K;
        const uint32_t *w = L->weight + (size_t)state * L->K;
        uint64_t x = rng_below(&r, L->total[state]);
        int k = 0, next;
        while (x >= w[k]) x -= w[k++];
        next = succ[k];
        if (state != L->end && next != L->end && !sink_put(s, " ", 1)) return 0;
        if (next == L->end) {
            if (!sink_put(s, ".\n", 2)) return 0;
        } else if (!sink_put(s, L->word[next], (size_t)L->len[next])) {
            return 0;
        }
        state = next;
    }
    return sink_flush(s);
}

/* ---- command line ---- */

#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 1, 2), noreturn))
#endif
static void usage_error(const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "synthlang: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see synthlang --help)\n");
    exit(2);
}

static unsigned long long parse_u64(const char *flag, const char *s, unsigned long long max) {
    char *end;
    unsigned long long v;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || errno || *end || v > max)
        usage_error("%s needs an integer from 0 to %llu, got '%s'", flag, max, s);
    return v;
}

int main(int argc, char **argv) {
    unsigned long long seed = 1, dialect = 0, bytes = 0, sample_seed = 0, words = 96, successors = 6;
    int have_bytes = 0, have_sample_seed = 0, json = 0, i;
    const char *out = NULL;
    char *tmp = NULL;
    language L;
    sink *s;
    struct stat st;

    for (i = 1; i < argc; i++) {
        const char *arg = argv[i], *value = NULL, *eq;
        char flag[64];
        if (strncmp(arg, "--", 2) != 0) usage_error("unexpected argument '%s'", arg);
        eq = strchr(arg, '=');
        if (eq) {
            size_t m = (size_t)(eq - arg) < sizeof flag - 1 ? (size_t)(eq - arg) : sizeof flag - 1;
            memcpy(flag, arg, m);
            flag[m] = '\0';
            value = eq + 1;
        } else {
            snprintf(flag, sizeof flag, "%s", arg);
        }
        if (strcmp(flag, "--help") == 0 || strcmp(flag, "--version") == 0 || strcmp(flag, "--json") == 0) {
            if (value) usage_error("%s takes no value", flag);
            if (strcmp(flag, "--help") == 0) {
                fputs(usage_text, stdout);
                return 0;
            }
            if (strcmp(flag, "--version") == 0) {
                printf("synthlang %s\n", SYNTHLANG_VERSION);
                return 0;
            }
            json = 1;
            continue;
        }
        if (strcmp(flag, "--seed") && strcmp(flag, "--dialect") && strcmp(flag, "--bytes") && strcmp(flag, "--out") &&
            strcmp(flag, "--sample-seed") && strcmp(flag, "--words") && strcmp(flag, "--successors"))
            usage_error("unknown option %s", flag);
        if (!value) {
            if (i + 1 >= argc) usage_error("%s needs a value", flag);
            value = argv[++i];
        }
        if (strcmp(flag, "--out") == 0) {
            if (!*value) usage_error("%s needs a file name", flag);
            out = value;
        } else if (strcmp(flag, "--seed") == 0) {
            seed = parse_u64(flag, value, UINT64_MAX);
        } else if (strcmp(flag, "--dialect") == 0) {
            dialect = parse_u64(flag, value, UINT64_MAX);
        } else if (strcmp(flag, "--sample-seed") == 0) {
            sample_seed = parse_u64(flag, value, UINT64_MAX);
            have_sample_seed = 1;
        } else if (strcmp(flag, "--bytes") == 0) {
            bytes = parse_u64(flag, value, (unsigned long long)1 << 50);
            have_bytes = 1;
        } else if (strcmp(flag, "--words") == 0) {
            words = parse_u64(flag, value, MAX_WORDS);
        } else {
            successors = parse_u64(flag, value, UINT64_MAX);
        }
    }
    if (!have_bytes) usage_error("--bytes is required");
    if (json && !out) usage_error("--json prints to stdout and needs --out for the text");
    if (words < 2) usage_error("--words must be at least 2, got %llu", words);
    if (successors < 2 || successors > words || successors > MAX_SUCCESSORS)
        usage_error("--successors needs 2 to %llu with --words %llu, got %llu",
                    words < MAX_SUCCESSORS ? words : (unsigned long long)MAX_SUCCESSORS, words, successors);
    if (!have_sample_seed) sample_seed = derive(TAG_SAMPLE, seed, dialect);

    build_language(&L, (int)words, (int)successors, seed, dialect);

    s = (sink *)xcalloc(1, sizeof *s);
    s->left = bytes;
    if (out && stat(out, &st) == 0 && S_ISDIR(st.st_mode)) {
        errno = EISDIR;
        io_fail(out, NULL);
    } else if (out && stat(out, &st) == 0 && !S_ISREG(st.st_mode)) {
        /* a device or pipe (/dev/stdout, a FIFO): written in place, since
           renaming a file over it would replace it */
        s->name = out;
        errno = 0;
        s->f = fopen(out, "wb");
        if (!s->f) io_fail(out, NULL);
    } else if (out) {
        size_t m = strlen(out) + 5;
        tmp = (char *)xcalloc(m, 1);
        snprintf(tmp, m, "%s.tmp", out);
        s->name = tmp;
        errno = 0;
        s->f = fopen(tmp, "wb");
        if (!s->f) io_fail(tmp, NULL);
    } else {
        s->name = "<stdout>";
        s->f = stdout;
    }
    errno = 0;
    if (!generate(&L, sample_seed, s)) io_fail(s->name, tmp);
    if (out) {
        errno = 0;
        if (fflush(s->f) != 0 || ferror(s->f)) io_fail(s->name, tmp);
        if (fclose(s->f) != 0) io_fail(s->name, tmp);
        errno = 0;
        if (tmp && rename(tmp, out) != 0) io_fail(out, tmp);
    } else {
        errno = 0;
        if (fflush(stdout) != 0 || ferror(stdout)) io_fail("<stdout>", NULL);
    }

    fprintf(stderr,
            "synthlang: seed %llu dialect %llu (%d words, %d successors): entropy rate %.6f bits/byte = %.6f "
            "nats/byte (%.4f bits/token, %.4f bytes/token)\n",
            seed, dialect, L.W, L.K, L.bits_per_token / L.bytes_per_token,
            L.bits_per_token / L.bytes_per_token * log(2.0), L.bits_per_token, L.bytes_per_token);
    if (json) {
        printf("{\"entropy_bits_per_byte\": %.10f, \"entropy_nats_per_byte\": %.10f, \"bits_per_token\": %.10f, "
               "\"bytes_per_token\": %.10f, \"words\": %d, \"successors\": %d, \"seed\": %llu, \"dialect\": %llu, "
               "\"sample_seed\": %llu, \"bytes\": %llu}\n",
               L.bits_per_byte, L.bits_per_byte * log(2.0), L.bits_per_token, L.bytes_per_token, L.W, L.K, seed,
               dialect, sample_seed, bytes);
        if (fflush(stdout) != 0 || ferror(stdout)) io_fail("<stdout>", NULL);
    }
    free_language(&L);
    free(s);
    free(tmp);
    return 0;
}
