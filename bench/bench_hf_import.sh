#!/usr/bin/env bash
# bench_hf_import.sh [BIN] - peak memory of photon-data import on GPT-2 124M
# shapes (vocab 50257, context 1024, 12 layers, 12 heads, width 768), against
# the model's F32 size. The source is a photon checkpoint with its
# config.json: the same GPT-2 safetensors layout transformers writes. The
# import streams each file once and holds the parameters once.
set -eu
BIN=$(cd "${1:-bin}" && pwd)
W=$(mktemp -d "${TMPDIR:-/tmp}/photon-hf-bench.XXXXXX")
trap 'rm -rf "$W"' EXIT
mkdir "$W/gpt2"
"$BIN/photon-train" --init --vocab 50257 --ctx 1024 --layers 12 --heads 12 --width 768 --steps 0 \
    --out "$W/gpt2/model.safetensors" 2>/dev/null
"$BIN/photon-eval" --model "$W/gpt2/model.safetensors" --hf-config "$W/gpt2/config.json" 2>/dev/null
bytes=$(stat -c %s "$W/gpt2/model.safetensors")
start=$(date +%s.%N)
/usr/bin/time -f '%M' -o "$W/rss" "$BIN/photon-data" import "$W/gpt2" --out "$W/imported.safetensors" --quiet
end=$(date +%s.%N)
rss_kib=$(tail -n 1 "$W/rss")
awk -v r="$rss_kib" -v b="$bytes" -v s="$start" -v e="$end" 'BEGIN {
    printf "hf import: GPT-2 124M (%.0f MB of F32) in %.2f s; peak memory %.0f MiB = %.2fx the model\n",
        b / 1e6, e - s, r / 1024, r * 1024 / b }'
