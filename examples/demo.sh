#!/usr/bin/env bash
# demo.sh - `make demo`: a small Photon federation, end to end, on 2 cores.
#
# Without DATA, the corpus comes from synthlang: four dialects of one
# synthetic language, one per client (non-IID), whose entropy rate is known
# exactly, so the table can say how close the federated model gets to the
# best any model can do. With DATA=DIR, the text files in DIR are dealt out
# to up to four clients (file i to client i mod 4); the last 5% of each file
# is held out for evaluation.
#
# The same model is then trained centrally on the same tokens, for
# comparison. BPE=N trains an N-token BPE vocabulary on the clients' text
# first (photon-data train-tokenizer) and uses it everywhere instead of
# bytes. Everything lands in out/demo/.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin="$here/bin"
out="${OUT:-$here/out/demo}"
data_dir="${DATA:-}"
rounds="${ROUNDS:-32}" steps="${STEPS:-40}" batch=8 seq=64
model=(--layers 2 --heads 2 --width 64 --ctx 64)
train=(--lr ${LR:-4e-3} --warmup 10)

command -v python3 >/dev/null || { echo "demo: python3 is needed to read the tools' JSON" >&2; exit 1; }
# json FILE KEY: a field of the JSON a photon tool printed, as written there (null: null)
json() { python3 -c 'import json, sys; v = json.load(open(sys.argv[1]), parse_float=str)[sys.argv[2]]; print("null" if v is None else v)' "$1" "$2"; }

rm -rf "$out"
mkdir -p "$out"
clients=() val=() floor=""
if [ -z "$data_dir" ]; then
    words=48 successors=4 sum=0
    for d in 0 1 2 3; do
        mkdir -p "$out/client$d/data"
        "$bin/synthlang" --seed 1 --dialect "$d" --words $words --successors $successors --bytes 400000 \
            --out "$out/client$d/data/train.txt" 2>/dev/null
        h=$("$bin/synthlang" --seed 1 --dialect "$d" --words $words --successors $successors --bytes 16000 \
            --sample-seed 4242 --out "$out/val-dialect$d.txt" --json 2>/dev/null |
            json /dev/stdin entropy_nats_per_byte)
        sum=$(awk -v s="$sum" -v h="$h" 'BEGIN{print s + h}')
        clients+=("$out/client$d") val+=("$out/val-dialect$d.txt")
    done
    floor=$(awk -v s="$sum" 'BEGIN{printf "%.4f", s / 4}')
    echo "demo: 4 clients, each with its own dialect of a synthetic language (entropy rate $floor nats/byte)"
else
    files=("$data_dir"/*)
    [ -f "${files[0]}" ] || { echo "demo: no files in $data_dir" >&2; exit 1; }
    n=${#files[@]}; [ "$n" -le 4 ] || n=4
    for ((c = 0; c < n; c++)); do mkdir -p "$out/client$c/data"; clients+=("$out/client$c"); done
    for i in "${!files[@]}"; do
        f=${files[i]} c=$((i % n)) size=$(wc -c <"${files[i]}")
        head -c $((size * 95 / 100)) "$f" >"$out/client$c/data/$(basename "$f")"
        tail -c $((size - size * 95 / 100)) "$f" >"$out/val-$(basename "$f")"
        val+=("$out/val-$(basename "$f")")
    done
    echo "demo: $n clients with the files of $data_dir (5% of each held out)"
fi
K=${#clients[@]}
train_files=()
for c in "${clients[@]}"; do train_files+=("$c"/data/*); done
tok=()
if [ -n "${BPE:-}" ]; then
    "$bin/photon-data" train-tokenizer --quiet --vocab "$BPE" --out "$out/tokenizer" "${train_files[@]}"
    tok=(--tokenizer "$out/tokenizer")
    echo "demo: a $BPE-token BPE vocabulary, trained on the clients' text, shared by all"
fi
client_flags=()
for c in "${clients[@]}"; do client_flags+=(--client "$c"); done

echo "demo: federated: $rounds rounds x $K clients x $steps local steps of $batch x $seq tokens"
"$here/examples/federate.sh" --agg "$out/aggregator" "${client_flags[@]}" --val "${val[@]}" --rounds "$rounds" \
    --local-steps "$steps" --batch $batch --seq $seq "${model[@]}" "${train[@]}" "${tok[@]}"
echo
echo "demo: centralized, the same tokens: $((rounds * steps)) steps of $((K * batch)) x $seq tokens on one worker"
"$here/examples/centralized.sh" --out "$out/centralized" --data "${train_files[@]}" --val "${val[@]}" \
    --rounds "$rounds" --local-steps "$steps" --batch $((K * batch)) --seq $seq "${model[@]}" "${train[@]}" "${tok[@]}"

fed=$(tail -n 1 "$out/aggregator/log.tsv" | cut -f3)
cen=$(tail -n 1 "$out/centralized/log.tsv" | cut -f3)
echo
if [ ${#tok[@]} -eq 0 ]; then
    echo "demo: held-out loss (nats/byte): federated $fed, centralized $cen${floor:+, entropy floor $floor}"
else
    echo "demo: held-out loss (nats/token): federated $fed, centralized $cen; bits per byte in the tables' logs"
fi
awk -v f="$fed" -v c="$cen" 'BEGIN{printf "demo: federated perplexity is %+.2f%% against centralized at equal tokens\n", (exp(f)/exp(c) - 1) * 100}'
echo "demo: files, logs and checkpoints are in $out"
