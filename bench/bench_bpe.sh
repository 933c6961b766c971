#!/usr/bin/env bash
# bench/bench_bpe.sh - speed of photon's BPE tokenizer on one core.
#
#   bash bench/bench_bpe.sh [FILE...]     default: ../shared/data/*.txt
#
# Builds bin/bench_bpe and bin/photon-data, concatenates the text (first
# 10 MB), then reports: the library's training time for an 8192-token
# vocabulary and its encoding speed (cold and warm pre-token cache), and the
# same work through the command line (train-tokenizer, encode), wall time.
# Targets (issue 4): encoding >= 20 MB/s; 8k vocabulary on 10 MB <= 30 s.
set -eu
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CC=${CC:-cc}
FLAGS="-std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -O2 -march=native"
mkdir -p bin
$CC $FLAGS -o bin/bench_bpe bench/bench_bpe.c -lm -pthread
$CC $FLAGS -o bin/photon-data tools/photon-data.c -lm -pthread
if [ $# -gt 0 ]; then FILES=("$@"); else FILES=("$ROOT"/../shared/data/*.txt); fi
[ -e "${FILES[0]}" ] || { echo "bench_bpe.sh: no text (give FILEs, or put the corpus in ../shared/data)" >&2; exit 2; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/bench-bpe.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
cat "${FILES[@]}" | head -c 10000000 >"$TMP/text.txt"

echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $(nproc) cores; $($CC --version | head -n 1)"
echo "== library (bench/bench_bpe.c), one thread"
./bin/bench_bpe "$TMP/text.txt"
echo "== command line, wall time"
t0=$(date +%s.%N)
./bin/photon-data train-tokenizer --quiet --vocab 8192 --out "$TMP/tok" "$TMP/text.txt"
t1=$(date +%s.%N)
./bin/photon-data encode --quiet --tokenizer "$TMP/tok" --out "$TMP/text.bin" "$TMP/text.txt"
t2=$(date +%s.%N)
./bin/photon-data decode --tokenizer "$TMP/tok" "$TMP/text.bin" | cmp - "$TMP/text.txt"
awk -v a="$t0" -v b="$t1" -v c="$t2" -v n="$(wc -c <"$TMP/text.txt")" 'BEGIN {
    printf "photon-data train-tokenizer --vocab 8192 (10 MB): %.2f s\n", b - a
    printf "photon-data encode (10 MB, incl. reading, loading the tokenizer, writing the shard): %.2f s, %.1f MB/s\n", c - b, n / (c - b) / 1e6
}'
