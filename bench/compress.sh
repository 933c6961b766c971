#!/usr/bin/env bash
# compress.sh - does compressing the clients' deltas (the uplink) cost quality?
# 4 clients, layouts iid4 and noniid4 (docs/RESULTS.md), 8 rounds x 64 local steps
# (the 1M group: 2^20 training tokens), FedAvg, seeds 1 2 3; every client of a run
# sends its delta in the same photon-train --delta-format: f32 (the reference),
# bf16, int8 or int4 (block-wise absmax, 128 values per F32 scale), with error
# feedback (what the encoding dropped stays in the client state and is added to
# the next round's delta) or without (--no-error-feedback). Draft: docs/compress-draft.md.
#
# Its own round loop (like bench/robust.sh): each round every client trains from the
# global checkpoint with its own state file and writes a delta in the run's format; then
#   photon-merge --base G --out NEXT DELTAS...
#
#   nice -n 5 bench/compress.sh
set -euo pipefail

usage() {
    cat <<'TXT'
usage: bench/compress.sh [options]

  --data-dir DIR    the text corpora (default: ../shared/data from the repo root)
  --out DIR         results (default: out/compress under the repo root): runs/LAYOUT-FORMAT-sSEED/
                    (merge log per round, final evaluation, delta sizes), summary.tsv,
                    rounds.tsv (the size of every delta of every round), table.md
  --work DIR        scratch directory (default: a new one under ${TMPDIR:-/tmp}, removed at the end)
  --steps N         local steps per round (default 64)
  --rounds N        rounds (default 8)
  --formats "F .."  f32 bf16 bf16-noef int8 int8-noef int4 int4-noef
                    (default: f32 int8 int8-noef int4 int4-noef bf16); FORMAT is
                    photon-train --delta-format FORMAT with error feedback,
                    FORMAT-noef adds --no-error-feedback
  --seeds "S .."    model initialisation seeds (default: 1 2 3)
  --layouts "L .."  iid4 noniid4 (default: both)
  --jobs J          federations run at once, one thread each (default: the number of cores)
  --quick           smoke run: 2 rounds of 4 steps, seed 1, formats f32 int8 int4-noef
  -h, --help

Layouts (docs/RESULTS.md "Data"): iid4: each domain's training bytes cut into 4
contiguous pieces, client k gets piece k of every domain, interleaved in 128-byte
turns; noniid4: client k has domain k only. Settings: GPT-2 2 layers, width 64,
2 heads, ctx 64, vocab 256; AdamW lr 2e-3, warmup 10, cosine to 10% at global step
rounds x steps; client batch 8 x 64; FedAvg (outer lr 1.0).
Final metric: held-out loss (nats/byte) of the last global model, each domain's
held-out 5% evaluated alone, the mean over all those bytes (as in docs/RESULTS.md).
TXT
}

here=$(cd "$(dirname "$0")/.." && pwd)
bin="$here/bin"
data_dir="$here/../shared/data" out="$here/out/compress" work="" steps=64 rounds=8 jobs=$(nproc 2>/dev/null || echo 2)
formats="f32 int8 int8-noef int4 int4-noef bf16" seeds="1 2 3" layouts="iid4 noniid4"
die() { echo "compress.sh: $*" >&2; exit 2; }
args="$*"
while [ $# -gt 0 ]; do
    case "$1" in
    -h | --help) usage; exit 0 ;;
    --data-dir) data_dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --formats) formats=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --layouts) layouts=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --quick) steps=4 rounds=2 seeds=1 formats="f32 int8 int4-noef"; shift ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
done
for t in photon-train photon-merge photon-eval; do [ -x "$bin/$t" ] || die "$bin/$t not found: run make first"; done
command -v python3 >/dev/null || die "needs python3 (to read the tools' JSON)"

# format_flags NAME: photon-train's flags for a format name
format_flags() {
    case "$1" in
    f32 | bf16 | int8 | int4) echo --delta-format "$1" ;;
    bf16-noef | int8-noef | int4-noef) echo --delta-format "${1%-noef}" --no-error-feedback ;;
    *) die "unknown format $1 (see --help)" ;;
    esac
}
for f in $formats; do format_flags "$f" >/dev/null; done
for l in $layouts; do case $l in iid4 | noniid4) ;; *) die "unknown layout $l" ;; esac; done
for s in $seeds; do [[ $s =~ ^[0-9]+$ ]] || die "bad seed $s"; done

# --- settings (docs/RESULTS.md: the federated runs) ---------------------------------
domains=(en_gutenberg_novels en_wikipedia_wikitext2_valid en_news_leipzig_2016_10K_sentences legal_en_spdx_license_texts)
short=(novels wiki news legal)
take=1000000 chunk=128 B=8 T=64 lr=2e-3
model=(--layers 2 --heads 2 --width 64 --ctx 64 --vocab 256)
train_flags=(--batch "$B" --seq "$T" --lr "$lr" --warmup 10 --total-steps $((rounds * steps)) --threads 1)

. "$here/bench/slices.sh" # piece, interleave, bench_dirs, log (shared with the other bench runs)
bench_dirs compress

# --- data: results.sh's slices and layouts ------------------------------------------
dd="$work/data" heldout=()
mkdir -p "$dd/train" "$dd/heldout" "$dd/iid4" "$dd/noniid4"
for i in "${!domains[@]}"; do
    s=${short[i]}
    head -c "$take" "$data_dir/${domains[i]}.txt" >"$dd/all-$s.txt"
    n=$(wc -c <"$dd/all-$s.txt") ntr=$((n * 95 / 100))
    head -c "$ntr" "$dd/all-$s.txt" >"$dd/train/$s.txt"
    tail -c +$((ntr + 1)) "$dd/all-$s.txt" >"$dd/heldout/$s.txt"
    heldout+=("$dd/heldout/$s.txt")
    rm "$dd/all-$s.txt"
    cp "$dd/train/$s.txt" "$dd/noniid4/c$i.txt"                         # noniid4: client k has domain k
done
for k in 0 1 2 3; do                                                    # iid4: piece k of every domain, 128-byte turns
    for s in "${short[@]}"; do piece "$dd/train/$s.txt" $k 4 >"$dd/iid4/p$k-$s.txt"; done
    interleave "$dd/iid4/c$k.txt" $chunk "$dd"/iid4/p$k-*.txt             # the glob's order (legal news novels wiki), as results.sh
    rm "$dd"/iid4/p$k-*.txt
done
{
    echo "data: first $take bytes of each domain in $data_dir; last 5% held out (the evaluation set)"
    for i in "${!short[@]}"; do
        printf '  %-7s training %d bytes, held-out %d bytes\n' "${short[i]}" "$(wc -c <"$dd/train/${short[i]}.txt")" "$(wc -c <"${heldout[i]}")"
    done
    for l in iid4 noniid4; do echo "  $l clients: $(for k in 0 1 2 3; do printf '%d ' "$(wc -c <"$dd/$l/c$k.txt")"; done)bytes"; done
    echo "settings: 4 clients, $rounds rounds x $steps local steps, batch $B x $T, lr $lr, warmup 10, cosine to 10% at global step $((rounds * steps)), fedavg"
    echo "formats: $formats; seeds: $seeds; layouts: $layouts"
    echo "command: bench/compress.sh $args"
    echo "git HEAD: $(git -C "$here" rev-parse HEAD) $(git -C "$here" status --short -- photon.h tools Makefile | tr '\n' ' ')"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; $jobs federations at once"
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
} | tee "$out/provenance.txt"

# --- one federation --------------------------------------------------------------------
# federate LAYOUT FORMAT SEED: writes runs/LAYOUT-FORMAT-sSEED/{merge-rN.log,eval-*.json,sizes.tsv,result.tsv}
federate() {
    local layout=$1 fmt=$2 seed=$3 name="$1-$2-s$3" rdir="$out/runs/$1-$2-s$3" w="$work/runs/$1-$2-s$3" r k g next status=ok loss=nan
    local -a deltas fflags
    read -r -a fflags <<<"$(format_flags "$fmt")"
    rm -rf "$rdir" "$w" && mkdir -p "$rdir" "$w"
    local t0
    t0=$(date +%s)
    : >"$rdir/sizes.tsv"
    "$bin/photon-train" --init "${model[@]}" --seed "$seed" --steps 0 --out "$w/global-r0.safetensors" 2>/dev/null
    for ((r = 1; r <= rounds; r++)); do
        g="$w/global-r$((r - 1)).safetensors" next="$w/global-r$r.safetensors"
        mkdir -p "$w/r$r"
        for k in 0 1 2 3; do
            "$bin/photon-train" --model "$g" --data "$dd/$layout/c$k.txt" --state "$w/state-c$k.safetensors" --steps "$steps" \
                "${train_flags[@]}" "${fflags[@]}" --delta-out "$w/r$r/delta-c$k.safetensors" --client-id "c$k" \
                --log-every "$steps" >/dev/null 2>"$w/train.log" || { status="round $r: c$k's training failed: $(tail -n 1 "$w/train.log")"; break 2; }
            printf '%s\t%s\t%s\t%d\tc%d\t%d\n' "$layout" "$fmt" "$seed" "$r" "$k" "$(wc -c <"$w/r$r/delta-c$k.safetensors")" >>"$rdir/sizes.tsv"
        done
        deltas=("$w/r$r"/delta-c*.safetensors)
        if ! "$bin/photon-merge" --base "$g" --out "$next" --threads 1 "${deltas[@]}" >"$rdir/merge-r$r.log" 2>&1; then
            status="round $r: photon-merge failed: $(tail -n 1 "$rdir/merge-r$r.log")"
            break
        fi
        rm -rf "$w/r$r" "$g"
    done
    if [ "$status" = ok ]; then
        for k in 0 1 2 3; do
            "$bin/photon-eval" --model "$w/global-r$rounds.safetensors" --data "${heldout[k]}" --seq $T --threads 1 --json \
                >"$rdir/eval-${short[k]}.json" 2>"$rdir/eval-${short[k]}.log" || status="evaluation failed: $(tail -n 1 "$rdir/eval-${short[k]}.log")"
        done
        [ "$status" = ok ] && loss=$(python3 -c 'import json, sys
e = [json.load(open(f)) for f in sys.argv[1:]]
print("%.5f" % (sum(x["loss"] * x["tokens"] for x in e) / sum(x["tokens"] for x in e)))' "$rdir"/eval-*.json)
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$layout" "$fmt" "$seed" "$loss" "$(($(date +%s) - t0))" "$status" >"$rdir/result.tsv"
    rm -rf "$w"
    log "$name: held-out loss $loss ($status, $(($(date +%s) - t0)) s)"
}

log "$(($(wc -w <<<"$layouts") * $(wc -w <<<"$formats") * $(wc -w <<<"$seeds"))) federations, $jobs at once"
n=0
# formats outermost, so a run cut short still has every layout and seed of the first formats
for fmt in $formats; do
    for seed in $seeds; do
        for layout in $layouts; do
            federate "$layout" "$fmt" "$seed" &
            n=$((n + 1))
            if [ $n -ge "$jobs" ]; then wait -n; n=$((n - 1)); fi
        done
    done
done
wait

# --- tables ------------------------------------------------------------------------------
wall=$(($(date +%s) - t_start))
python3 - "$out" "$wall" "$layouts" "$formats" "$seeds" <<'PY'
import statistics as st, sys
out, wall, layouts, formats, seeds = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split(), sys.argv[5].split()
res, sizes = {}, {}
for l in layouts:
    for f in formats:
        for s in seeds:
            d = f"{out}/runs/{l}-{f}-s{s}"
            x = open(f"{d}/result.tsv").read().rstrip("\n").split("\t")
            res[l, f, s] = (float(x[3]), x[5], int(x[4]))
            for line in open(f"{d}/sizes.tsv"):
                sizes.setdefault(f, []).append(int(line.split("\t")[5]))
with open(f"{out}/summary.tsv", "w") as o:
    o.write("layout\tformat\tseed\theldout_loss\twall_s\tstatus\n")
    for (l, f, s), v in res.items(): o.write(f"{l}\t{f}\t{s}\t{v[0]}\t{v[2]}\t{v[1]}\n")
with open(f"{out}/rounds.tsv", "w") as o:
    o.write("layout\tformat\tseed\tround\tclient\tdelta_bytes\n")
    for l in layouts:
        for f in formats:
            for s in seeds: o.write(open(f"{out}/runs/{l}-{f}-s{s}/sizes.tsv").read())
label = {"f32": "f32", "bf16": "bf16 EF", "bf16-noef": "bf16 no-EF", "int8": "int8 EF", "int8-noef": "int8 no-EF",
         "int4": "int4 EF", "int4-noef": "int4 no-EF"}
t = ["Final held-out loss (nats/byte; each domain's held-out 5% alone, mean over all its bytes): mean over seeds "
     "± sample std, per-seed values (seed " + ", ".join(seeds) + "), and the mean paired difference against f32 "
     "(per seed (loss - f32 loss) / f32 loss, then the mean; ± the sample std of the per-seed differences).\n",
     "| layout | format | held-out loss | per seed | vs f32 (paired) |", "|---|---|---:|---|---:|"]
for l in layouts:
    for f in formats:
        v = [res[l, f, s] for s in seeds]
        if any(x[1] != "ok" for x in v):
            t.append(f"| {l} | {label.get(f, f)} | failed | | |"); continue
        xs = [x[0] for x in v]
        sd = f" ± {st.stdev(xs):.4f}" if len(xs) > 1 else ""
        diff = ""
        if "f32" in formats and all(res[l, "f32", s][1] == "ok" for s in seeds):
            ds = [(res[l, f, s][0] - res[l, "f32", s][0]) / res[l, "f32", s][0] * 100 for s in seeds]
            diff = f"{st.mean(ds):+.2f}%" + (f" ± {st.stdev(ds):.2f}" if len(ds) > 1 else "")
        t.append(f"| {l} | {label.get(f, f)} | {st.mean(xs):.4f}{sd} | {', '.join('%.4f' % x for x in xs)} | {diff} |")
ref = st.mean(sizes["f32"]) if "f32" in sizes else None
t += ["", "Delta size per client per round (bytes; the file photon-train --delta-out writes, header included).\n",
      "| format | bytes (mean) | min-max | % of f32 |", "|---|---:|---:|---:|"]
for f in formats:
    if f not in sizes: continue
    m = st.mean(sizes[f])
    t.append(f"| {label.get(f, f)} | {m:,.0f} | {min(sizes[f]):,}-{max(sizes[f]):,} | " + (f"{m / ref * 100:.1f}%" if ref else "") + " |")
fails = [f"- {l}-{f}-s{s}: {v[1]}" for (l, f, s), v in res.items() if v[1] != "ok"]
if fails: t += ["", "Failed runs:"] + fails
t += ["", f"total wall time: {wall} s"]
open(f"{out}/table.md", "w").write("\n".join(t) + "\n")
print("\n".join(t))
PY
log "done: $out/table.md, $out/summary.tsv, $out/rounds.tsv"
