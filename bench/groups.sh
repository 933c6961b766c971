#!/usr/bin/env bash
# groups.sh - flat FedAvg, a two-level tree, and personal tensors, per domain.
#
# Four clients, one domain each, in two groups by language (WorldLM's set-up,
# arXiv 2405.14446): en = English novels + English Wikipedia, eu = French
# (Monte Cristo) + German (Faust, Grimm). Every configuration trains the same
# tokens (ROUNDS x STEPS x batch 8 x seq 64 per client) with examples/federate.sh:
#   flat      one federation of four
#   tree      --group en=0,1 --group eu=2,3 (group deltas, then the root)
#   tree+ln   the tree, every client keeping its layer norms (h.*.ln_*,ln_f.*)
#   tree+last the tree, every client keeping its last block (h.1.*)
# and is evaluated on each domain's held-out text (bytes after the training
# slice): the global model for flat and tree, and for the personal runs each
# client's own model (photon-eval --state: the global backbone with its
# tensors) on its own domain, beside the bare global model.
#
#   bench/groups.sh [--quick] [--seeds "1 2 3"] [--out DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data="$root/../shared/data" out="$root/out/groups" seeds="1 2 3" rounds=8 steps=32 train=400000 held=60000
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) seeds=1 rounds=2 steps=4 train=60000 held=8000; shift ;;
    --seeds) seeds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --data-dir) data=$2; shift 2 ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "groups.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
names=(en-novels en-wiki fr-novel de-literature)
files=(en_gutenberg_novels.txt en_wikipedia_leipzig_2016_10K_sentences.txt fr_gutenberg_monte_cristo.txt
    de_literature_faust_grimm.txt)
for f in "${files[@]}"; do
    [ -f "$data/$f" ] || { echo "groups.sh: skipped: $data/$f is not there (../shared/data)" >&2; exit 0; }
done
work=$(mktemp -d "${TMPDIR:-/tmp}/photon-groups-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
for k in 0 1 2 3; do # training bytes from the start, held-out bytes after them
    head -c "$train" "$data/${files[k]}" >"$work/train$k.txt"
    { tail -c +$((train + 1)) "$data/${files[k]}" || true; } | head -c "$held" >"$work/held$k.txt" || true
done
cat "$work"/held0.txt "$work"/held1.txt "$work"/held2.txt "$work"/held3.txt >"$work/val.txt"
eval_loss() { "$root/bin/photon-eval" "$@" --seq 64 --json 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)["loss"])'; }
printf 'config\tseed\tdomain\tglobal_loss\tpersonal_loss\n' >"$out/summary.tsv"
start=$(date +%s)
for seed in $seeds; do
    for config in flat tree tree+ln tree+last; do
        fed="$work/$config-s$seed"
        mkdir -p "$fed"
        clients=()
        for k in 0 1 2 3; do mkdir -p "$fed/c$k/data"; cp "$work/train$k.txt" "$fed/c$k/data/"; clients+=(--client "$fed/c$k"); done
        flags=()
        case $config in
        tree) flags=(--group en=0,1 --group eu=2,3) ;;
        tree+ln) flags=(--group en=0,1 --group eu=2,3 --group-personal 'en=h.*.ln_*,ln_f.*' --group-personal 'eu=h.*.ln_*,ln_f.*') ;;
        tree+last) flags=(--group en=0,1 --group eu=2,3 --group-personal 'en=h.1.*' --group-personal 'eu=h.1.*') ;;
        esac
        bash "$root/examples/federate.sh" --agg "$fed/agg" "${clients[@]}" --val "$work/val.txt" --rounds "$rounds" \
            --local-steps "$steps" --layers 2 --heads 4 --width 64 --ctx 64 --batch 8 --seq 64 --lr 3e-3 --seed "$seed" \
            --jobs 2 "${flags[@]}" >"$fed/run.log" 2>&1
        global="$fed/agg/global-r$rounds.safetensors"
        for k in 0 1 2 3; do
            g=$(eval_loss --model "$global" --data "$work/held$k.txt")
            p=-
            [[ "$config" != tree+* ]] || p=$(eval_loss --model "$global" --state "$fed/c$k/state.safetensors" --data "$work/held$k.txt")
            printf '%s\t%s\t%s\t%s\t%s\n' "$config" "$seed" "${names[k]}" "$g" "$p" >>"$out/summary.tsv"
        done
        echo "groups.sh: $config seed $seed done ($(($(date +%s) - start)) s)" >&2
    done
done
python3 - "$out/summary.tsv" >"$out/table.md" <<'PY'
import csv, math, sys, statistics as st
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
configs = ["flat", "tree", "tree+ln", "tree+last"]
domains = ["en-novels", "en-wiki", "fr-novel", "de-literature"]
def ppl(c, d, key):
    v = [math.exp(float(r[key])) for r in rows if r["config"] == c and r["domain"] == d and r[key] != "-"]
    return (st.mean(v), st.stdev(v) if len(v) > 1 else 0.0) if v else None
print("| model | " + " | ".join(domains) + " |")
print("|---|" + "---|" * len(domains))
for c in configs:
    for key, label in (("global_loss", c + " (global model)"), ("personal_loss", c + " (each client's own model)")):
        cells = [ppl(c, d, key) for d in domains]
        if all(x is None for x in cells): continue
        print(f"| {label} | " + " | ".join(f"{m:.2f} ± {s:.2f}" for m, s in cells) + " |")
PY
cat "$out/table.md"
echo "groups.sh: $(($(date +%s) - start)) s; $out/summary.tsv, $out/table.md" >&2
