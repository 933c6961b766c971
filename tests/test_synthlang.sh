#!/usr/bin/env bash
# tests/test_synthlang.sh BINDIR - checks BINDIR/synthlang (builds nothing).
#
# The key check: the entropy rate synthlang reports matches an empirical
# estimate from its own text. The text is re-segmented into tokens (words and
# "."), the conditional entropy of a token given the previous one is estimated
# from bigram counts (plug-in estimate), and divided by the mean number of
# bytes per token; the two must agree within 3%.
# Prints "ok - ..." / "FAIL - ..." and a last line "N passed, N failed"
# (tests/lib.sh).
# shellcheck disable=SC2016,SC2020  # bash -c scripts take their arguments as $1..
set -u

BIN="${1:?usage: tests/test_synthlang.sh BINDIR}/synthlang"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$ROOT/tests/lib.sh"
scratch synthlang
if [ ! -x "$BIN" ]; then
    fail "$BIN is not an executable"
    summary
    exit
fi

# ---- --help, --version ----
"$BIN" --help >"$W/help" 2>"$W/stderr"
check "--help exits 0 and prints usage on stdout" test $? -eq 0 -a -s "$W/help" -a ! -s "$W/stderr"
check "--help mentions every flag" bash -c 'for f in --bytes --out --seed --dialect --sample-seed --words --successors --json --version; do grep -q -- "$f" "$1" || exit 1; done' _ "$W/help"
"$BIN" --version >"$W/version" 2>"$W/stderr"
check "--version exits 0 and prints one line on stdout" test $? -eq 0 -a "$(wc -l <"$W/version")" -eq 1 -a ! -s "$W/stderr"

# ---- usage errors: exit 2, one line on stderr ----
bad_args() { # bad_args DESCRIPTION ARGS...: synthlang ARGS is a usage error
    local d=$1
    shift
    run "$BIN" "$@"
    if [ "$rc" -eq 2 ] && one_line "$W/err" 2>/dev/null && grep -q '^synthlang: .*(see synthlang --help)$' "$W/err" &&
        [ ! -s "$W/out" ]; then
        pass "usage error exits 2: $d"
    else
        fail "usage error exits 2: $d (rc $rc: $(head -c 200 "$W/err"))"
    fi
}
bad_args "no arguments"
bad_args "unknown option" --bytes 10 --frobnicate
bad_args "positional argument" --bytes 10 extra
bad_args "missing value" --bytes
bad_args "bytes not a number" --bytes 12x
bad_args "negative bytes" --bytes -5
bad_args "bad seed" --bytes 10 --seed abc
bad_args "--json without --out" --bytes 10 --json
bad_args "--json with a value" --bytes 10 --json=1 --out "$W/x"
bad_args "one word" --bytes 10 --words 1
bad_args "too many words" --bytes 10 --words 100000
bad_args "one successor" --bytes 10 --successors 1
bad_args "more successors than words" --bytes 10 --words 4 --successors 5
bad_args "empty --out" --bytes 10 --out=

# ---- I/O error: exit 1, the file named ----
"$BIN" --bytes 10 --out "$W/no/such/dir/x.txt" >/dev/null 2>"$W/stderr"
rc=$?
check "I/O error exits 1 and names the file" test $rc -eq 1 -a "$(wc -l <"$W/stderr")" -eq 1 -a \
    "$(grep -c "$W/no/such/dir/x.txt" "$W/stderr")" -eq 1

mkdir "$W/dir"
"$BIN" --bytes 10 --out "$W/dir" >/dev/null 2>"$W/stderr"
rc=$?
check "--out DIRECTORY exits 1 and leaves it alone" test $rc -eq 1 -a -d "$W/dir" -a ! -e "$W/dir.tmp" -a \
    "$(grep -c "$W/dir" "$W/stderr")" -eq 1

# ---- output ----
"$BIN" --bytes 12345 --out "$W/a" 2>"$W/stderr"
rc=$?
check "--out writes exactly N bytes" test $rc -eq 0 -a "$(wc -c <"$W/a")" -eq 12345
check "no FILE.tmp is left behind" test ! -e "$W/a.tmp"
check "the entropy rate is printed on stderr" grep -q 'entropy rate [0-9.]* bits/byte' "$W/stderr"
"$BIN" --bytes 0 --out "$W/empty" 2>/dev/null
check "--bytes 0 writes an empty file" test $? -eq 0 -a -f "$W/empty" -a ! -s "$W/empty"
check "text is lowercase words, spaces and '.\\n' line ends" bash -c \
    'head -c 12000 "$1" | sed "\$d" | LC_ALL=C grep -qv "^[a-z]\{1,\}\( [a-z]\{1,\}\)*\.$" && exit 1 || exit 0' _ "$W/a"
"$BIN" --bytes 12345 >"$W/stdout" 2>/dev/null
check "stdout and --out give the same bytes" cmp -s "$W/a" "$W/stdout"
"$BIN" --bytes=12345 --seed=1 --dialect=0 >"$W/eq" 2>/dev/null
check "--flag=value works like --flag value" cmp -s "$W/a" "$W/eq"
"$BIN" --bytes 5000 --out "$W/prefix" 2>/dev/null
check "a shorter file is a prefix of a longer one" cmp -s "$W/prefix" <(head -c 5000 "$W/a")

# ---- determinism ----
gen() { "$BIN" --bytes 50000 "$@" 2>/dev/null; }
gen --seed 7 --dialect 2 --sample-seed 11 >"$W/d1"
gen --seed 7 --dialect 2 --sample-seed 11 >"$W/d2"
check "same flags give byte-identical output" cmp -s "$W/d1" "$W/d2"
gen --seed 7 --dialect 2 --sample-seed 12 >"$W/d3"
check "different sample seeds give different text" bash -c '! cmp -s "$1" "$2"' _ "$W/d1" "$W/d3"
gen --seed 7 --dialect 3 --sample-seed 11 >"$W/d4"
check "different dialects give different text" bash -c '! cmp -s "$1" "$2"' _ "$W/d1" "$W/d4"
gen --seed 8 --dialect 2 --sample-seed 11 >"$W/d5"
check "different seeds give different text" bash -c '! cmp -s "$1" "$2"' _ "$W/d1" "$W/d5"
gen --seed 7 --dialect 2 >"$W/d6"
gen --seed 7 --dialect 3 >"$W/d7"
check "default sample seeds differ between dialects" bash -c '! cmp -s "$1" "$2"' _ "$W/d6" "$W/d7"

json() { "$BIN" --json --out "$W/j" "$@" 2>/dev/null; }
field() { sed -n "s/.*\"$1\": *\([-0-9.e+]*\).*/\1/p"; }
j0=$(json --bytes 10 --seed 7 --dialect 0 --sample-seed 1)
j0b=$(json --bytes 10 --seed 7 --dialect 0 --sample-seed 2)
j1=$(json --bytes 10 --seed 7 --dialect 1)
check "--json prints the documented fields" bash -c 'for f in entropy_bits_per_byte entropy_nats_per_byte words successors seed dialect bytes; do grep -q "\"$f\":" <<<"$1" || exit 1; done' _ "$j0"
if command -v python3 >/dev/null; then
    check "--json is valid JSON" python3 -c 'import json, sys; json.loads(sys.argv[1])' "$j0"
else
    skip "--json is valid JSON: python3 not found"
fi
check "the sample seed does not change the entropy rate" test "$(field entropy_bits_per_byte <<<"$j0")" = "$(field entropy_bits_per_byte <<<"$j0b")"
check "dialects have different entropy rates" test "$(field entropy_bits_per_byte <<<"$j0")" != "$(field entropy_bits_per_byte <<<"$j1")"
check "nats = bits * ln 2" awk -v b="$(field entropy_bits_per_byte <<<"$j0")" -v n="$(field entropy_nats_per_byte <<<"$j0")" \
    'BEGIN { d = n - b * log(2); exit !(b > 0 && d < 1e-8 && d > -1e-8) }'

# ---- dialects share the lexicon ----
vocab() { "$BIN" --bytes 300000 "$@" 2>/dev/null | tr ' .\n' '\n\n\n' | sed '$d' | grep . | LC_ALL=C sort -u; }
vocab --seed 5 --dialect 0 >"$W/v0"
vocab --seed 5 --dialect 9 >"$W/v9"
check "dialects of a seed share the lexicon (96 words each)" test "$(wc -l <"$W/v0")" -eq 96 -a "$(wc -l <"$W/v9")" -eq 96 \
    -a "$(LC_ALL=C comm -3 "$W/v0" "$W/v9" | wc -l)" -eq 0

# ---- the entropy rate matches an empirical estimate ----
# Tokens: words and "."; the first token follows a "." (the walk starts at a
# sentence start) and the last, possibly cut, token is dropped. H(next | prev)
# is estimated from bigram counts; bytes per token = bytes / tokens.
estimate() { # estimate FILE -> bits per byte
    LC_ALL=C awk '
        { n = split($0, f, " ")
          for (i = 1; i <= n; i++) {
              w = f[i]
              if (substr(w, length(w)) == ".") { tok[++T] = substr(w, 1, length(w) - 1); tok[++T] = "." }
              else tok[++T] = w
          }
        }
        END {
            T--  # the last token may be cut
            prev = "."
            for (t = 1; t <= T; t++) { big[prev SUBSEP tok[t]]++; ctx[prev]++; prev = tok[t] }
            h = 0
            for (k in big) { split(k, p, SUBSEP); h += big[k] * log(ctx[p[1]] / big[k]) }
            h = h / T / log(2)
            printf "%.6f %.6f %.6f\n", h / (bytes / T), h, bytes / T
        }
        { bytes += length($0) + 1 }' "$1"
}
entropy_check() { # entropy_check ARGS...
    "$BIN" --bytes 2000000 --json --out "$W/big" "$@" >"$W/json" 2>/dev/null || { fail "entropy: synthlang $* failed"; return; }
    local reported est
    reported=$(field entropy_bits_per_byte <"$W/json")
    est=$(estimate "$W/big")
    if awk -v r="$reported" -v e="${est%% *}" 'BEGIN { d = (e - r) / r; if (d < 0) d = -d; exit !(r > 0 && d < 0.03) }'; then
        pass "entropy rate matches the bigram estimate within 3% ($*): reported $reported bits/byte, estimated ${est%% *}"
    else
        fail "entropy rate matches the bigram estimate within 3% ($*): reported $reported bits/byte, estimated $est"
    fi
    # the mean bytes per token is measured far more precisely than the entropy
    reported=$(field bytes_per_token <"$W/json")
    est=${est##* }
    if awk -v r="$reported" -v e="$est" 'BEGIN { d = (e - r) / r; if (d < 0) d = -d; exit !(r > 0 && d < 0.005) }'; then
        pass "bytes per token matches the text within 0.5% ($*): reported $reported, measured $est"
    else
        fail "bytes per token matches the text within 0.5% ($*): reported $reported, measured $est"
    fi
}
entropy_check --seed 1 --dialect 0
entropy_check --seed 1 --dialect 3 --sample-seed 99
entropy_check --seed 42 --words 40 --successors 3

summary
