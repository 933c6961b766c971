#!/usr/bin/env bash
# round.sh - one federated round over local directories, step by step: the
# template of examples/federate.sh (which adds rounds, sampling, rsync/ssh).
#
#   examples/round.sh [BIN [WORK]]    (or BIN=... WORK=...; default bin/ and out/round)
#
# Three clients, each with its own dialect of synthlang's language in
# WORK/clientN/data/. The global checkpoint is copied to each client, which
# trains from it (keeping its own optimizer state) and writes a delta;
# photon-merge merges the deltas into the next global checkpoint and
# photon-eval evaluates it on held-out text. Needs python3 for the JSON.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "${1:-${BIN:-$here/bin}}" && pwd) work=${2:-${WORK:-$here/out/round}}
command -v python3 >/dev/null || { echo "round.sh: python3 is needed to read the tools' JSON" >&2; exit 1; }
# json FILE KEY: a field of the JSON a photon tool printed, as written there (null: null)
json() { python3 -c 'import json, sys; v = json.load(open(sys.argv[1]), parse_float=str)[sys.argv[2]]; print("null" if v is None else v)' "$1" "$2"; }
# a fresh WORK each run; an existing directory only if an earlier round.sh made it
if [ -e "$work" ] && [ -n "$(ls -A "$work")" ] && [ ! -e "$work/global-r0.safetensors" ]; then
    echo "round.sh: $work exists and is not from round.sh; give another WORK" >&2; exit 2
fi
rm -rf "$work" && mkdir -p "$work" && work=$(cd "$work" && pwd)
for c in 0 1 2; do
    mkdir -p "$work/client$c/data"
    "$bin/synthlang" --seed 1 --dialect $c --bytes 60000 --out "$work/client$c/data/train.txt" 2>/dev/null
    "$bin/synthlang" --seed 1 --dialect $c --bytes 4000 --sample-seed 7 --out "$work/val$c.txt" 2>/dev/null
done
global=$work/global-r0.safetensors next=$work/global-r1.safetensors
"$bin/photon-train" --init --layers 1 --heads 2 --width 32 --ctx 32 --steps 0 --out "$global" 2>/dev/null
for c in 0 1 2; do  # on each client: the global checkpoint in, a delta out
    cp "$global" "$work/client$c/global.safetensors"
    (cd "$work/client$c" && "$bin/photon-train" --model global.safetensors --data data/* --state state.safetensors \
        --steps 30 --batch 4 --seq 32 --lr 5e-3 --delta-out delta.safetensors --client-id "client$c" --json >train.json 2>train.log)
    printf 'client%d: %d steps, final training loss %.4f\n' $c "$(json "$work/client$c/train.json" steps)" \
        "$(json "$work/client$c/train.json" final_loss)"
done
"$bin/photon-merge" --base "$global" --out "$next" --json "$work"/client*/delta.safetensors >"$work/merge.json" 2>"$work/merge.log"
"$bin/photon-eval" --model "$global" --data "$work"/val*.txt --json >"$work/eval-r0.json"
"$bin/photon-eval" --model "$next" --data "$work"/val*.txt --json >"$work/eval.json"
echo "merged $(json "$work/merge.json" merged) deltas into $next"
printf 'held-out loss: %.4f before the round, %.4f after (nats/byte)\n' "$(json "$work/eval-r0.json" loss)" \
    "$(json "$work/eval.json" loss)"
