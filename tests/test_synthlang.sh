#!/usr/bin/env bash
# tests/test_synthlang.sh BINDIR - checks BINDIR/synthlang (builds nothing).
#
# The key check: the entropy rate synthlang reports matches an empirical
# estimate from its own text. The text is re-segmented into tokens (words and
# "."), the conditional entropy of a token given the previous one is estimated
# from bigram counts (plug-in estimate), and divided by the mean number of
# bytes per token; the two must agree within 3%.
# shellcheck disable=SC2016,SC2020  # bash -c scripts take their arguments as $1..
set -u

BIN="${1:?usage: tests/test_synthlang.sh BINDIR}/synthlang"
[ -x "$BIN" ] || { echo "FAIL - $BIN is not an executable"; echo "0 passed, 1 failed"; exit 1; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0
ok() { echo "ok - $1"; pass=$((pass + 1)); }
bad() { echo "FAIL - $1"; fail=$((fail + 1)); }
check() { # check DESCRIPTION COMMAND...
    local d=$1
    shift
    if "$@"; then ok "$d"; else bad "$d"; fi
}

# ---- --help, --version ----
"$BIN" --help >"$TMP/help" 2>"$TMP/err"
check "--help exits 0 and prints usage on stdout" test $? -eq 0 -a -s "$TMP/help" -a ! -s "$TMP/err"
check "--help mentions every flag" bash -c 'for f in --bytes --out --seed --dialect --sample-seed --words --successors --json --version; do grep -q -- "$f" "$1" || exit 1; done' _ "$TMP/help"
"$BIN" --version >"$TMP/version" 2>"$TMP/err"
check "--version exits 0 and prints one line on stdout" test $? -eq 0 -a "$(wc -l <"$TMP/version")" -eq 1 -a ! -s "$TMP/err"

# ---- usage errors: exit 2, one line on stderr ----
usage_error() { # usage_error DESCRIPTION ARGS...
    local d=$1
    shift
    "$BIN" "$@" >"$TMP/out" 2>"$TMP/err"
    local rc=$?
    if [ $rc -eq 2 ] && [ "$(wc -l <"$TMP/err")" -eq 1 ] && grep -q '^synthlang: .*(see synthlang --help)$' "$TMP/err" &&
        [ ! -s "$TMP/out" ]; then
        ok "usage error exits 2: $d"
    else
        bad "usage error exits 2: $d (rc $rc: $(head -c 200 "$TMP/err"))"
    fi
}
usage_error "no arguments"
usage_error "unknown option" --bytes 10 --frobnicate
usage_error "positional argument" --bytes 10 extra
usage_error "missing value" --bytes
usage_error "bytes not a number" --bytes 12x
usage_error "negative bytes" --bytes -5
usage_error "bad seed" --bytes 10 --seed abc
usage_error "--json without --out" --bytes 10 --json
usage_error "--json with a value" --bytes 10 --json=1 --out "$TMP/x"
usage_error "one word" --bytes 10 --words 1
usage_error "too many words" --bytes 10 --words 100000
usage_error "one successor" --bytes 10 --successors 1
usage_error "more successors than words" --bytes 10 --words 4 --successors 5
usage_error "empty --out" --bytes 10 --out=

# ---- I/O error: exit 1, the file named ----
"$BIN" --bytes 10 --out "$TMP/no/such/dir/x.txt" >/dev/null 2>"$TMP/err"
rc=$?
check "I/O error exits 1 and names the file" test $rc -eq 1 -a "$(wc -l <"$TMP/err")" -eq 1 -a \
    "$(grep -c "$TMP/no/such/dir/x.txt" "$TMP/err")" -eq 1

mkdir "$TMP/dir"
"$BIN" --bytes 10 --out "$TMP/dir" >/dev/null 2>"$TMP/err"
rc=$?
check "--out DIRECTORY exits 1 and leaves it alone" test $rc -eq 1 -a -d "$TMP/dir" -a ! -e "$TMP/dir.tmp" -a \
    "$(grep -c "$TMP/dir" "$TMP/err")" -eq 1

# ---- output ----
"$BIN" --bytes 12345 --out "$TMP/a" 2>"$TMP/err"
rc=$?
check "--out writes exactly N bytes" test $rc -eq 0 -a "$(wc -c <"$TMP/a")" -eq 12345
check "no FILE.tmp is left behind" test ! -e "$TMP/a.tmp"
check "the entropy rate is printed on stderr" grep -q 'entropy rate [0-9.]* bits/byte' "$TMP/err"
"$BIN" --bytes 0 --out "$TMP/empty" 2>/dev/null
check "--bytes 0 writes an empty file" test $? -eq 0 -a -f "$TMP/empty" -a ! -s "$TMP/empty"
check "text is lowercase words, spaces and '.\\n' line ends" bash -c \
    'head -c 12000 "$1" | sed "\$d" | LC_ALL=C grep -qv "^[a-z]\{1,\}\( [a-z]\{1,\}\)*\.$" && exit 1 || exit 0' _ "$TMP/a"
"$BIN" --bytes 12345 >"$TMP/stdout" 2>/dev/null
check "stdout and --out give the same bytes" cmp -s "$TMP/a" "$TMP/stdout"
"$BIN" --bytes=12345 --seed=1 --dialect=0 >"$TMP/eq" 2>/dev/null
check "--flag=value works like --flag value" cmp -s "$TMP/a" "$TMP/eq"
"$BIN" --bytes 5000 --out "$TMP/prefix" 2>/dev/null
check "a shorter file is a prefix of a longer one" cmp -s "$TMP/prefix" <(head -c 5000 "$TMP/a")

# ---- determinism ----
run() { "$BIN" --bytes 50000 "$@" 2>/dev/null; }
run --seed 7 --dialect 2 --sample-seed 11 >"$TMP/d1"
run --seed 7 --dialect 2 --sample-seed 11 >"$TMP/d2"
check "same flags give byte-identical output" cmp -s "$TMP/d1" "$TMP/d2"
run --seed 7 --dialect 2 --sample-seed 12 >"$TMP/d3"
check "different sample seeds give different text" bash -c '! cmp -s "$1" "$2"' _ "$TMP/d1" "$TMP/d3"
run --seed 7 --dialect 3 --sample-seed 11 >"$TMP/d4"
check "different dialects give different text" bash -c '! cmp -s "$1" "$2"' _ "$TMP/d1" "$TMP/d4"
run --seed 8 --dialect 2 --sample-seed 11 >"$TMP/d5"
check "different seeds give different text" bash -c '! cmp -s "$1" "$2"' _ "$TMP/d1" "$TMP/d5"
run --seed 7 --dialect 2 >"$TMP/d6"
run --seed 7 --dialect 3 >"$TMP/d7"
check "default sample seeds differ between dialects" bash -c '! cmp -s "$1" "$2"' _ "$TMP/d6" "$TMP/d7"

json() { "$BIN" --json --out "$TMP/j" "$@" 2>/dev/null; }
field() { sed -n "s/.*\"$1\": *\([-0-9.e+]*\).*/\1/p"; }
j0=$(json --bytes 10 --seed 7 --dialect 0 --sample-seed 1)
j0b=$(json --bytes 10 --seed 7 --dialect 0 --sample-seed 2)
j1=$(json --bytes 10 --seed 7 --dialect 1)
check "--json prints the documented fields" bash -c 'for f in entropy_bits_per_byte entropy_nats_per_byte words successors seed dialect bytes; do grep -q "\"$f\":" <<<"$1" || exit 1; done' _ "$j0"
check "--json is valid JSON" bash -c 'command -v python3 >/dev/null || exit 0; python3 -c "import json,sys; json.loads(sys.argv[1])" "$1"' _ "$j0"
check "the sample seed does not change the entropy rate" test "$(field entropy_bits_per_byte <<<"$j0")" = "$(field entropy_bits_per_byte <<<"$j0b")"
check "dialects have different entropy rates" test "$(field entropy_bits_per_byte <<<"$j0")" != "$(field entropy_bits_per_byte <<<"$j1")"
check "nats = bits * ln 2" awk -v b="$(field entropy_bits_per_byte <<<"$j0")" -v n="$(field entropy_nats_per_byte <<<"$j0")" \
    'BEGIN { d = n - b * log(2); exit !(b > 0 && d < 1e-8 && d > -1e-8) }'

# ---- dialects share the lexicon ----
vocab() { "$BIN" --bytes 300000 "$@" 2>/dev/null | tr ' .\n' '\n\n\n' | sed '$d' | grep . | LC_ALL=C sort -u; }
vocab --seed 5 --dialect 0 >"$TMP/v0"
vocab --seed 5 --dialect 9 >"$TMP/v9"
check "dialects of a seed share the lexicon (96 words each)" test "$(wc -l <"$TMP/v0")" -eq 96 -a "$(wc -l <"$TMP/v9")" -eq 96 \
    -a "$(LC_ALL=C comm -3 "$TMP/v0" "$TMP/v9" | wc -l)" -eq 0

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
    "$BIN" --bytes 2000000 --json --out "$TMP/big" "$@" >"$TMP/json" 2>/dev/null || { bad "entropy: synthlang $* failed"; return; }
    local reported est
    reported=$(field entropy_bits_per_byte <"$TMP/json")
    est=$(estimate "$TMP/big")
    if awk -v r="$reported" -v e="${est%% *}" 'BEGIN { d = (e - r) / r; if (d < 0) d = -d; exit !(r > 0 && d < 0.03) }'; then
        ok "entropy rate matches the bigram estimate within 3% ($*): reported $reported bits/byte, estimated ${est%% *}"
    else
        bad "entropy rate matches the bigram estimate within 3% ($*): reported $reported bits/byte, estimated $est"
    fi
    # the mean bytes per token is measured far more precisely than the entropy
    reported=$(field bytes_per_token <"$TMP/json")
    est=${est##* }
    if awk -v r="$reported" -v e="$est" 'BEGIN { d = (e - r) / r; if (d < 0) d = -d; exit !(r > 0 && d < 0.005) }'; then
        ok "bytes per token matches the text within 0.5% ($*): reported $reported, measured $est"
    else
        bad "bytes per token matches the text within 0.5% ($*): reported $reported, measured $est"
    fi
}
entropy_check --seed 1 --dialect 0
entropy_check --seed 1 --dialect 3 --sample-seed 99
entropy_check --seed 42 --words 40 --successors 3

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
