#!/usr/bin/env bash
# test_example.sh BINDIR - the sample program in photon.h's documentation,
# cut out of the header, built with photon.h alone (no photon_bpe.h) and
# run: one client round on generated text, then the merge. Its global model
# must load as round 1, and its delta and client state as what they are.
# Prints "ok - ..." / "FAIL - ..." and a last line "N passed, N failed".
set -u
BIN=$(cd "${1:-bin}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CC=${CC:-cc}
. "$ROOT/tests/lib.sh"
scratch example
cd "$W" || exit 2

# the program: every line of the EXAMPLE block, indented 7 spaces, inside main
{
    printf '#define PHOTON_IMPLEMENTATION\n#include "photon.h"\n#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n'
    printf 'int main(void) {\n'
    sed -n '/^   EXAMPLE:/,/^   `make test-example`/p' "$ROOT/photon.h" | grep '^       ' | sed 's/^       //'
    printf 'free(base);\nphoton_adamw_state_free(&cs.adamw);\nphoton_dataset_free(&ds);\nphoton_model_free(&m);\n'
    printf 'return 0;\n}\n'
} >example.c
cp "$ROOT/photon.h" .
check "the header's example is there to cut out" grep -q photon_merge_save example.c
check "the example builds with photon.h alone (C99, warnings as errors)" \
    "$CC" -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -O2 -o example example.c -lm -pthread
check "the example builds as C++" "${CXX:-c++}" -std=c++11 -Wall -Wextra -Werror -x c++ -c example.c -o example.o

"$BIN/synthlang" --seed 5 --words 30 --bytes 60000 --out client-0.txt 2>/dev/null
"$BIN/photon-train" --init --layers 1 --heads 2 --width 32 --ctx 64 --steps 0 --out global.safetensors 2>/dev/null
check "the example runs: one local round, a delta, a client state, a merge" ./example
check "its merged model is round 1, 100 steps on" bash -c \
    "'$BIN/photon-eval' --model global-next.safetensors --data client-0.txt --max-tokens 512 --json >eval.json &&
     '$BIN/photon-merge' --base global.safetensors --verify global-next.safetensors delta-0.safetensors --json |
     python3 -c 'import json,sys; d=json.load(sys.stdin); assert d[\"round\"]==1 and d[\"step\"]==100 and d[\"verified\"], d'"
check "its client state resumes a second round where the first stopped" bash -c \
    "'$BIN/photon-train' --model global-next.safetensors --data client-0.txt --state state.safetensors --steps 1 \
        --batch 8 --seq 64 --out again.safetensors 2>err && ! grep -q note: err"
summary
