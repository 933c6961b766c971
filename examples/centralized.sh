#!/usr/bin/env bash
# centralized.sh - the baseline for a federation: the same model trained on
# one worker, on all the clients' data, for the same number of tokens.
#
# A federation of K clients per round, S local steps of B x T tokens, R
# rounds trains on R*K*S*B*T tokens. The centralized run takes R*S steps of
# K*B rows (the same tokens, and the same global step clock for the
# learning-rate schedule), evaluating after every S steps so its table lines
# up with federate.sh's. The clients' files are cut into chunks (--chunk,
# 4 KB by default) and interleaved, so that the domains alternate every few
# steps, as in a data-parallel run over shuffled data (the loader reads
# consecutive windows, so one batch of 32 x 64 tokens still comes mostly
# from one chunk).
set -euo pipefail

usage() {
    cat <<'TXT'
usage: examples/centralized.sh --out DIR --data FILE... --val FILE... [options]

  --out DIR          working directory (checkpoints, log.tsv)
  --data FILE...     all the clients' training data
  --val FILE...      held-out data
  --rounds R         evaluation points (default 4)
  --local-steps S    steps between evaluations (default 64)
  --batch B          rows per step: the federation's clients per round x its batch (default 8)
  --seq T            tokens per row (default 64)
  --chunk BYTES      interleaving granularity (default 4096)
  --seed N           model seed (default 1)
  model: --vocab --ctx --layers --heads --width; training: --lr --warmup --min-lr-frac --weight-decay
  --tokenizer DIR    a BPE tokenizer for the text (default: bytes)
  --bin DIR          the photon tools (default: bin/ beside this script)
TXT
}

here=$(cd "$(dirname "$0")/.." && pwd)
bin="$here/bin" out="" data=() val=() rounds=4 steps=64 batch=8 seq=64 chunk=4096 seed=1
model_flags=() train_flags=() tok_flags=()
die() { echo "centralized.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
    -h | --help) usage; exit 0 ;;
    --out) out=$2; shift 2 ;;
    --data) shift; while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do data+=("$1"); shift; done ;;
    --val) shift; while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do val+=("$1"); shift; done ;;
    --rounds) rounds=$2; shift 2 ;;
    --local-steps) steps=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --seq) seq=$2; shift 2 ;;
    --chunk) chunk=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --vocab | --ctx | --layers | --heads | --width) model_flags+=("$1" "$2"); shift 2 ;;
    --tokenizer) tok_flags=(--tokenizer "$2"); shift 2 ;;
    --lr | --warmup | --min-lr-frac | --weight-decay) train_flags+=("$1" "$2"); shift 2 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
done
[ -n "$out" ] && [ ${#data[@]} -gt 0 ] && [ ${#val[@]} -gt 0 ] || die "--out, --data and --val are required"
command -v python3 >/dev/null || { echo "centralized.sh: python3 is needed to read the tools' JSON" >&2; exit 1; }
# json FILE KEY: a field of the JSON a photon tool printed, as written there (null: null)
json() { python3 -c 'import json, sys; v = json.load(open(sys.argv[1]), parse_float=str)[sys.argv[2]]; print("null" if v is None else v)' "$1" "$2"; }
mkdir -p "$out/chunks"
rm -f "$out"/chunks/*

# interleave: chunk k of every file, then chunk k+1 of every file, ...
for i in "${!data[@]}"; do split -b "$chunk" -a 6 -d "${data[i]}" "$out/chunks/$(printf '%03d' "$i")-"; done
(cd "$out/chunks" && ls | sort -t- -k2,2 -k1,1 | xargs cat) >"$out/train.txt"
rm -rf "$out/chunks"

ckpt="$out/model.safetensors" state="$out/state.safetensors"
rm -f "$state"
"$bin/photon-train" --init "${tok_flags[@]}" "${model_flags[@]}" --seed "$seed" --steps 0 --out "$ckpt" 2>/dev/null
printf 'round\ttokens\teval_loss\tperplexity\tseconds\n' | tee "$out/log.tsv"
for ((r = 1; r <= rounds; r++)); do
    start=$(date +%s.%N)
    "$bin/photon-train" --model "$ckpt" "${tok_flags[@]}" --data "$out/train.txt" --state "$state" --steps "$steps" --batch "$batch" \
        --seq "$seq" --total-steps $((rounds * steps)) "${train_flags[@]}" --out "$ckpt" --log-every "$steps" \
        2>>"$out/train.log"
    loss=$("$bin/photon-eval" --model "$ckpt" "${tok_flags[@]}" --data "${val[@]}" --seq "$seq" --json | json /dev/stdin loss)
    secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}')
    printf '%d\t%d\t%.4f\t%.3f\t%s\n' "$r" $((r * steps * batch * seq)) "$loss" "$(awk -v l="$loss" 'BEGIN{print exp(l)}')" \
        "$secs" | tee -a "$out/log.tsv"
done
