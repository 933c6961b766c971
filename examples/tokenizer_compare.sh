#!/usr/bin/env bash
# tokenizer_compare.sh - held-out bits per byte of one model size trained on
# byte-level tokens and on BPE tokens, at equal compute (the same steps of
# the same batch x sequence, so the same tokens through the same layers;
# the BPE model's larger embedding and head cost a little more).
#
#   examples/tokenizer_compare.sh [--data-dir DIR] [--steps N] [--vocab N...]
#
# Data: the first 1 MB of four domains of ../shared/data (novels, Wikipedia,
# news, legal); the last 5% of each is held out. Writes out/tokenizers/.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin="$here/bin" data_dir="$here/../shared/data" steps=1024 vocabs=(1024 4096)
while [ $# -gt 0 ]; do
    case "$1" in
    --data-dir) data_dir=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --vocab) shift; vocabs=(); while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do vocabs+=("$1"); shift; done ;;
    -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "tokenizer_compare.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
files=(en_gutenberg_novels.txt en_wikipedia_wikitext2_valid.txt en_news_leipzig_2016_10K_sentences.txt
       legal_en_spdx_license_texts.txt)
[ -f "$data_dir/${files[0]}" ] || { echo "tokenizer_compare.sh: skipped: no corpora in $data_dir" >&2; exit 0; }
command -v python3 >/dev/null || { echo "tokenizer_compare.sh: python3 is needed to read the tools' JSON" >&2; exit 1; }
# json FILE KEY: a field of the JSON a photon tool printed, as written there (null: null)
json() { python3 -c 'import json, sys; v = json.load(open(sys.argv[1]), parse_float=str)[sys.argv[2]]; print("null" if v is None else v)' "$1" "$2"; }
out="$here/out/tokenizers"
rm -rf "$out" && mkdir -p "$out"
train=() val=()
for f in "${files[@]}"; do
    head -c 1000000 "$data_dir/$f" >"$out/all.tmp"
    n=$(wc -c <"$out/all.tmp")
    head -c $((n * 95 / 100)) "$out/all.tmp" >"$out/train-$f"
    tail -c $((n - n * 95 / 100)) "$out/all.tmp" >"$out/val-$f"
    train+=("$out/train-$f") val+=("$out/val-$f")
done
rm -f "$out/all.tmp"
# the same bytes, interleaved in 64 KB chunks so that batches mix the domains
for i in "${!train[@]}"; do split -b 65536 -a 6 -d "${train[i]}" "$out/chunk-$i-"; done
(cd "$out" && ls chunk-* | sort -t- -k3,3 -k2,2 | xargs cat) >"$out/train.txt" && rm -f "$out"/chunk-*

model=(--layers 2 --heads 2 --width 64 --ctx 64)
run() { # NAME [--tokenizer DIR]
    local name=$1
    shift
    local t0 t1
    t0=$(date +%s.%N)
    "$bin/photon-train" --init "$@" "${model[@]}" --data "$out/train.txt" --steps "$steps" --batch 16 --seq 64 \
        --lr 2e-3 --warmup 32 --out "$out/$name.safetensors" --log-every "$steps" 2>"$out/$name.log"
    t1=$(date +%s.%N)
    "$bin/photon-eval" --model "$out/$name.safetensors" "$@" --data "${val[@]}" --seq 64 --json >"$out/$name.json"
    printf '%s\t%s\t%s\t%s\t%.1f\n' "$name" "$(json "$out/$name.json" bits_per_byte)" \
        "$(json "$out/$name.json" loss)" "$(json "$out/$name.json" tokens)" \
        "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b - a}')"
}
printf 'tokens\theld-out bits/byte\theld-out loss (nats/token)\theld-out tokens\ttraining seconds\n'
run bytes
for v in "${vocabs[@]}"; do
    "$bin/photon-data" train-tokenizer --quiet --vocab "$v" --out "$out/bpe$v" "${train[@]}"
    run "bpe$v" --tokenizer "$out/bpe$v"
done
