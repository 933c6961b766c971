#!/usr/bin/env bash
# results.sh - reproduces docs/RESULTS.md: Photon's claims at small scale on
# real text (Sani, Iacob et al., "Photon: Federated LLM Pre-Training",
# arXiv 2411.02908).
#
#   1. federated (4 or 8 clients, 64 local steps, batch 8, high LR) against
#      centralized training on the same number of tokens;
#   2. FedAvg (outer lr 1.0) against DiLoCo's outer Nesterov (lr 0.7, m 0.9);
#   3. IID shards (every client a slice of the mixed corpus) against one
#      domain per client (non-IID);
#   4. partial participation: 2 of 8 clients per round;
#   plus what helps: more rounds of fewer local steps, a higher learning rate.
#
# Every run trains on the same 1,048,576 byte tokens (2^20). Each run reports
# held-out perplexity and bits per byte on the last 5% of every domain (never
# trained on), bytes sent per client, and wall time. A data-parallel baseline
# that all-reduces the gradient every step would send 2 x P x 4 bytes per
# worker per step (ring all-reduce, fp32, P parameters).
#
# Data: the first 1 MB of each domain file (or the whole file if shorter);
# its last 5% is held out, the rest is training data. Slices, client
# directories and checkpoints live in a scratch directory outside the
# repository (removed at the end unless --keep-work); logs, evaluations,
# final checkpoints and the tables land in --out (default out/results/).
#
# Run from anywhere; it takes ~20 minutes on 2 cores (44 runs, 65M training tokens in all):
#   nice -n 5 bench/results.sh
set -euo pipefail

usage() {
    cat <<'TXT'
usage: bench/results.sh [options]

  --data-dir DIR   the text corpora (default: ../shared/data from the repo root);
                   if the domain files are missing, prints why and exits 0
  --out DIR        results directory (default: out/results under the repo root)
  --work DIR       scratch directory for data slices, clients and checkpoints
                   (default: a new directory under ${TMPDIR:-/tmp}, removed at the end)
  --keep-work      keep the scratch directory
  --runs "A B"     only these runs (names as in the summary; default: all)
  --quick          smoke test: 1/16 of the local steps, 1/4 of the rounds
  --jobs J         clients trained at once (default: the number of cores)
  --no-build       use bin/ and examples/ as they are; by default the tools,
                   examples/federate.sh and examples/centralized.sh are copied to
                   the scratch directory and built once there, so a rebuild of
                   bin/ during the run cannot mix two versions of the code
  -h, --help
TXT
}

here=$(cd "$(dirname "$0")/.." && pwd)
bin="$here/bin"
data_dir="$here/../shared/data" out="$here/out/results" work="" keep=0 quick=0 only="" build=1 jobs=$(nproc 2>/dev/null || echo 2)
die() { echo "results.sh: $*" >&2; exit 2; }
args="$*"
while [ $# -gt 0 ]; do
    case "$1" in
    -h | --help) usage; exit 0 ;;
    --data-dir) data_dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --keep-work) keep=1; shift ;;
    --runs) only=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --jobs) jobs=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
done

command -v python3 >/dev/null || { echo "results.sh: python3 is needed to read the tools' JSON" >&2; exit 1; }
# json FILE KEY: a field of the JSON a photon tool printed, as written there (null: null)
json() { python3 -c 'import json, sys; v = json.load(open(sys.argv[1]), parse_float=str)[sys.argv[2]]; print("null" if v is None else v)' "$1" "$2"; }

# --- settings ------------------------------------------------------------------

domains=(en_gutenberg_novels en_wikipedia_wikitext2_valid en_news_leipzig_2016_10K_sentences legal_en_spdx_license_texts)
short=(novels wiki news legal)
take=1000000       # bytes read from the start of each domain file
chunk=128          # interleaving granularity of mixed (IID) data, bytes
val_small=4096     # bytes of each held-out file in the per-round evaluation
L=2 H=2 C=64 CTX=64 V=256
B=8 T=64
model=(--layers $L --heads $H --width $C --ctx $CTX --vocab $V)
common=(--warmup 10)

# Each run: name | kind | client layout | clients per round | rounds | local steps |
# outer optimizer | peak lr | batch (centralized) | reference run (its centralized
# baseline at equal tokens) | seeds (model initialisation and client sampling).
# A centralized run's "rounds x local steps" are its evaluation points x the
# steps between them: the same global step clock as the federation.
S3=1,2,3
runs_table="
central-lr2e-3               central -       -  8 64 -                2e-3 32 central-lr2e-3    $S3
central-lr4e-3               central -       -  8 64 -                4e-3 32 central-lr2e-3    $S3
central-lr1e-3               central -       -  8 64 -                1e-3 32 central-lr2e-3    1
fed4-iid-fedavg              fed     iid4    4  8 64 fedavg           2e-3 -  central-lr2e-3    $S3
fed4-iid-nesterov            fed     iid4    4  8 64 nesterov         2e-3 -  central-lr2e-3    $S3
fed4-noniid-fedavg           fed     noniid4 4  8 64 fedavg           2e-3 -  central-lr2e-3    $S3
fed4-noniid-nesterov         fed     noniid4 4  8 64 nesterov         2e-3 -  central-lr2e-3    $S3
fed8-noniid-fedavg-all       fed     noniid8 8  4 64 fedavg           2e-3 -  central-lr2e-3    $S3
fed8-noniid-fedavg-s2        fed     noniid8 2 16 64 fedavg           2e-3 -  central-lr2e-3    $S3
fed8-noniid-nesterov-s2      fed     noniid8 2 16 64 nesterov         2e-3 -  central-lr2e-3    $S3
fed4-iid-fedavg-lr4e-3       fed     iid4    4  8 64 fedavg           4e-3 -  central-lr4e-3    $S3
fed4-iid-fedavg-lr1e-3       fed     iid4    4  8 64 fedavg           1e-3 -  central-lr1e-3    1
fed4-iid-fedavg-r16x32       fed     iid4    4 16 32 fedavg           2e-3 -  central-lr2e-3    $S3
fed4-iid-fedavg-r32x16       fed     iid4    4 32 16 fedavg           2e-3 -  central-lr2e-3    1
fed4-iid-nesterov-r16x32     fed     iid4    4 16 32 nesterov         2e-3 -  central-lr2e-3    1
fed4-iid-nesterov-m0.5       fed     iid4    4  8 64 nesterov:0.7:0.5 2e-3 -  central-lr2e-3    1
central-4M-lr2e-3            central -       - 32 64 -                2e-3 32 central-4M-lr2e-3 1
central-4M-lr4e-3            central -       - 32 64 -                4e-3 32 central-4M-lr2e-3 1
fed4-4M-iid-fedavg           fed     iid4    4 32 64 fedavg           2e-3 -  central-4M-lr2e-3 1
fed4-4M-iid-nesterov         fed     iid4    4 32 64 nesterov         2e-3 -  central-4M-lr2e-3 1
fed4-4M-noniid-fedavg        fed     noniid4 4 32 64 fedavg           2e-3 -  central-4M-lr2e-3 1
fed4-4M-noniid-nesterov      fed     noniid4 4 32 64 nesterov         2e-3 -  central-4M-lr2e-3 1
"

# --- the data --------------------------------------------------------------------

missing=()
for d in "${domains[@]}"; do [ -r "$data_dir/$d.txt" ] || missing+=("$data_dir/$d.txt"); done
if [ ${#missing[@]} -gt 0 ]; then
    echo "results.sh: skipped: the corpora are not here (missing: ${missing[*]});" \
        "pass --data-dir DIR with the files of shared/data (see its README.md)" >&2
    exit 0
fi
data_dir=$(cd "$data_dir" && pwd)

if [ -z "$work" ]; then
    work=$(mktemp -d "${TMPDIR:-/tmp}/photon-results.XXXXXX")
    [ "$keep" = 1 ] || trap 'rm -rf "$work"' EXIT
else
    mkdir -p "$work"
fi
mkdir -p "$out/runs"
out=$(cd "$out" && pwd) work=$(cd "$work" && pwd)
log() { echo "[$(date +%H:%M:%S)] $*"; }
script_start=$(date +%s.%N)
now_minus() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}'; }

# --- the tools: a snapshot of the sources, built once -------------------------------------

if [ "$build" = 1 ]; then
    src="$work/src"
    rm -rf "$src" && mkdir -p "$src/examples"
    cp -r "$here/photon.h" "$here/Makefile" "$here/tools" "$src/"
    cp "$here/examples/federate.sh" "$here/examples/centralized.sh" "$here/examples/synthlang.c" "$src/examples/"
    log "building a snapshot of the tools in $src"
    make -s -C "$src" bin/photon-train bin/photon-eval bin/photon-merge >"$out/build.log" 2>&1 ||
        { cat "$out/build.log" >&2; die "the build failed"; }
    tools="$src/bin" ex="$src/examples"
else
    tools="$bin" ex="$here/examples"
fi
for t in photon-train photon-merge photon-eval; do [ -x "$tools/$t" ] || die "$tools/$t not found: run make first"; done
bin=$tools
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "command: bench/results.sh $args"
    echo "git HEAD: $(git -C "$here" rev-parse HEAD 2>/dev/null || echo '?')"
    echo "uncommitted changes in the code used: $(git -C "$here" status --short -- photon.h tools Makefile examples/federate.sh examples/centralized.sh 2>/dev/null | tr '\n' ' ')"
    echo "sha256 photon.h: $(sha256sum "${src:-$here}/photon.h" | cut -d' ' -f1)"
    echo "the code against HEAD: code-vs-HEAD.diff"
    echo "tools: $tools ($([ "$build" = 1 ] && echo 'built from a snapshot' || echo 'as found'))"
    echo "compiler: $(${CC:-cc} --version 2>/dev/null | sed -n 1p)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; jobs $jobs"
} >"$out/provenance.txt"
git -C "$here" diff HEAD -- photon.h tools Makefile examples/federate.sh examples/centralized.sh \
    >"$out/code-vs-HEAD.diff" 2>/dev/null || true

# interleave OUT CHUNK FILE...: chunk k of every file, then chunk k+1 of every file, ...
interleave() {
    local dst=$1 size=$2 i
    shift 2
    local tmp="$work/interleave.$$"
    rm -rf "$tmp" && mkdir -p "$tmp"
    i=0
    for f in "$@"; do split -b "$size" -a 6 -d "$f" "$tmp/$(printf '%03d' "$i")-"; i=$((i + 1)); done
    (cd "$tmp" && ls | LC_ALL=C sort -t- -k2,2 -k1,1 | xargs cat) >"$dst"
    rm -rf "$tmp"
}

# piece FILE K N: the K-th of N contiguous pieces of FILE, on stdout
piece() {
    local size n0 n1
    size=$(wc -c <"$1")
    n0=$((size * $2 / $3)) n1=$((size * ($2 + 1) / $3))
    dd if="$1" iflag=skip_bytes,count_bytes skip="$n0" count=$((n1 - n0)) bs=65536 status=none
}

log "data: first $take bytes of each domain in $data_dir; last 5% held out"
dd="$work/data"
rm -rf "$dd" && mkdir -p "$dd/train" "$dd/heldout" "$dd/valsmall"
heldout=() valsmall=() train=()
for i in "${!domains[@]}"; do
    f="$data_dir/${domains[i]}.txt" s=${short[i]}
    head -c "$take" "$f" >"$dd/all-$s.txt"
    n=$(wc -c <"$dd/all-$s.txt") ntr=$((n * 95 / 100))
    head -c "$ntr" "$dd/all-$s.txt" >"$dd/train/$s.txt"
    tail -c +$((ntr + 1)) "$dd/all-$s.txt" >"$dd/heldout/$s.txt"
    head -c "$val_small" "$dd/heldout/$s.txt" >"$dd/valsmall/$s.txt"
    rm "$dd/all-$s.txt"
    heldout+=("$dd/heldout/$s.txt") valsmall+=("$dd/valsmall/$s.txt") train+=("$dd/train/$s.txt")
    printf '  %-8s %-40s train %8d bytes, held out %6d bytes\n' "$s" "${domains[i]}.txt" "$ntr" $((n - ntr))
done >"$out/data.txt"
cat "$out/data.txt"

# client layouts: a directory per client with its data in data/
make_layout() {
    local name=$1 dir="$dd/layout-$1" k i
    mkdir -p "$dir"
    case "$name" in
    iid4) # client k: piece k of every domain, interleaved in $chunk-byte chunks
        for k in 0 1 2 3; do
            for i in "${!short[@]}"; do piece "${train[i]}" $k 4 >"$dir/p$k-${short[i]}.txt"; done
            interleave "$dir/iid$k.txt" "$chunk" "$dir"/p$k-*.txt
            rm "$dir"/p$k-*.txt
        done ;;
    noniid4) # client k: domain k
        for i in "${!short[@]}"; do cp "${train[i]}" "$dir/${short[i]}.txt"; done ;;
    noniid8) # clients 2k and 2k+1: the two halves of domain k
        for i in "${!short[@]}"; do
            piece "${train[i]}" 0 2 >"$dir/${short[i]}-a.txt"
            piece "${train[i]}" 1 2 >"$dir/${short[i]}-b.txt"
        done ;;
    esac
}
layout_files() { # the client data files of a layout, one per client, in client order
    case "$1" in
    iid4) echo "$dd/layout-iid4/iid0.txt $dd/layout-iid4/iid1.txt $dd/layout-iid4/iid2.txt $dd/layout-iid4/iid3.txt" ;;
    noniid4) for s in "${short[@]}"; do printf '%s ' "$dd/layout-noniid4/$s.txt"; done ;;
    noniid8) for s in "${short[@]}"; do printf '%s %s ' "$dd/layout-noniid8/$s-a.txt" "$dd/layout-noniid8/$s-b.txt"; done ;;
    esac
}
for l in iid4 noniid4 noniid8; do make_layout "$l"; done
mkdir -p "$dd/central"
interleave "$dd/central/mixed.txt" "$chunk" "${train[@]}"   # the centralized runs' data: every domain, in $chunk-byte turns
{
    echo "client layouts (bytes of training data per client):"
    for l in iid4 noniid4 noniid8; do
        printf '  %-8s' "$l"
        for f in $(layout_files "$l"); do printf ' %s=%d' "$(basename "$f" .txt)" "$(wc -c <"$f")"; done
        echo
    done
} | tee -a "$out/data.txt"

# --- evaluation ----------------------------------------------------------------------

# eval_heldout CKPT JSONDIR: every held-out domain on its own; prints
# "loss ppl bpb tokens loss_novels loss_wiki ..." (loss: mean over all held-out tokens)
eval_heldout() {
    local ck=$1 dir=$2 i
    mkdir -p "$dir"
    for i in "${!short[@]}"; do
        "$bin/photon-eval" --model "$ck" --data "${heldout[i]}" --seq $T --json >"$dir/heldout-${short[i]}.json"
    done
    for i in "${!short[@]}"; do
        echo "$(json "$dir/heldout-${short[i]}.json" loss) $(json "$dir/heldout-${short[i]}.json" tokens)"
    done | awk '{ l[NR] = $1; n[NR] = $2; s += $1 * $2; t += $2 }
        END { m = s / t; printf "%.5f %.4f %.5f %d", m, exp(m), m / log(2), t; for (i = 1; i <= NR; i++) printf " %.4f", l[i]; print "" }'
}

# --- the runs --------------------------------------------------------------------------

P=$((V * C + CTX * C + L * (12 * C * C + 13 * C) + 2 * C))   # GPT-2 parameters (tied lm head)
summary="$out/summary.tsv"
printf 'run\tseed\tkind\tlayout\tclients_per_round\tclients\trounds\tlocal_steps\touter\tlr\ttokens\theldout_loss\tperplexity\tbits_per_byte\theldout_tokens\tloss_novels\tloss_wiki\tloss_news\tloss_legal\tbytes_per_client_round\tbytes_total\tbytes_per_client_mean\tdp_bytes_per_worker\twall_s\treference\n' >"$summary"

selected() { [ -z "$only" ] || [[ " $only " == *" $1 "* ]]; }

# attempt N CMD...: runs CMD up to N times (a run that fails, e.g. killed from outside, is
# started again from scratch; every failure is logged with its stderr)
attempt() {
    local n=$1 i
    shift
    for ((i = 1; i <= n; i++)); do
        if "$@"; then return 0; fi
        log "FAILED (attempt $i of $n): $2; its stderr:"
        sed 's/^/    /' "$3/stderr.txt" >&2 || true
    done
    die "giving up after $n attempts"
}

# run_central WDIR RDIR FLAGS...: centralized.sh on the mixed corpus
run_central() {
    local wdir=$1 rdir=$2
    shift 2
    rm -rf "$wdir"
    "$ex/centralized.sh" --out "$wdir" --data "$dd/central/mixed.txt" --chunk 1000000000 --val "${valsmall[@]}" "$@" \
        >"$rdir/stdout.txt" 2>"$rdir/stderr.txt"
}

# run_fed WDIR RDIR LAYOUT FLAGS...: fresh client directories (data linked in), then federate.sh
run_fed() {
    local wdir=$1 rdir=$2 layout=$3 c
    local -a files cflags
    shift 3
    rm -rf "$wdir" && mkdir -p "$wdir"
    files=($(layout_files "$layout"))
    for c in "${!files[@]}"; do
        mkdir -p "$wdir/client$c/data"
        ln -s "${files[c]}" "$wdir/client$c/data/$(basename "${files[c]}")"
        cflags+=(--client "$wdir/client$c")
    done
    "$ex/federate.sh" --agg "$wdir/agg" "${cflags[@]}" --val "${valsmall[@]}" "$@" \
        >"$rdir/stdout.txt" 2>"$rdir/stderr.txt" || return 1  # federate.sh prints a failed merge's log on stderr
}

# one_run NAME SEED KIND LAYOUT K ROUNDS STEPS OUTER LR CBATCH REF: trains, evaluates, appends to the summary
one_run() {
    local name=$1 seed=$2 kind=$3 layout=$4 k=$5 rounds=$6 steps=$7 outer=$8 lr=$9 cbatch=${10} ref=${11}
    local rdir="$out/runs/$name/seed$seed" wdir="$work/runs/$name-seed$seed" t0 wall wall_all final tokens nclients
    local per_round=0 total=0 per_client=0 dp=0 olr om loss ppl bpb ntok l1 l2 l3 l4 c r f
    local -a files cflags oflags d1
    rm -rf "$rdir" "$wdir" && mkdir -p "$rdir"
    t0=$(date +%s.%N)
    if [ "$kind" = central ]; then
        log "$name seed $seed: centralized, $((rounds * steps)) steps of $cbatch x $T tokens, lr $lr"
        # centralized.sh gets the mixed corpus made once above (the same interleaving it
        # would do with --chunk $chunk, which costs ~20 s of file splitting per run); no --bin:
        # it uses the bin/ beside it (the snapshot's, or bin/ with --no-build)
        attempt 2 run_central "$wdir" "$rdir" --rounds "$rounds" --local-steps "$steps" --batch "$cbatch" --seq $T \
            "${model[@]}" --lr "$lr" "${common[@]}" --seed "$seed"
        wall=$(now_minus "$t0")
        cp "$wdir/log.tsv" "$wdir/train.log" "$wdir/model.safetensors" "$rdir/"
        tokens=$((rounds * steps * cbatch * T)) nclients=1 k=1
    else
        files=($(layout_files "$layout"))
        nclients=${#files[@]}
        log "$name seed $seed: $rounds rounds, $k of $nclients clients ($layout), $steps local steps of $B x $T, lr $lr, outer $outer"
        case "$outer" in # fedavg: outer lr 1.0; nesterov: DiLoCo's lr 0.7, momentum 0.9; nesterov:LR:M
        fedavg) oflags=(--outer fedavg --outer-lr 1.0) ;;
        nesterov) oflags=(--outer nesterov --outer-lr 0.7 --momentum 0.9) ;;
        nesterov:*:*) IFS=: read -r _ olr om <<<"$outer"; oflags=(--outer nesterov --outer-lr "$olr" --momentum "$om") ;;
        *) die "unknown outer optimizer $outer" ;;
        esac
        attempt 2 run_fed "$wdir" "$rdir" "$layout" --rounds "$rounds" --local-steps "$steps" --sample "$k" --seed "$seed" \
            --jobs "$jobs" --batch $B --seq $T "${model[@]}" --lr "$lr" "${common[@]}" "${oflags[@]}"
        wall=$(now_minus "$t0")
        cp "$wdir/agg/log.tsv" "$rdir/"
        cat "$wdir"/agg/logs/round-*/merge.log >"$rdir/merge.log"
        cp "$wdir/agg/global-r$rounds.safetensors" "$rdir/model.safetensors"
        mkdir -p "$rdir/train-logs"
        for ((r = 1; r <= rounds; r++)); do
            for f in "$wdir/agg/logs/round-$r"/train-*.log; do cp "$f" "$rdir/train-logs/r$r-$(basename "$f")"; done
        done
        tokens=$((rounds * k * steps * B * T))
        total=$(awk -F'\t' 'NR > 2 { s += $6 } END { printf "%d", s }' "$rdir/log.tsv")
        d1=("$wdir/agg/round-1"/delta-*.safetensors)
        per_round=$(($(wc -c <"$wdir/agg/global-r0.safetensors") + $(wc -c <"${d1[0]}")))
        per_client=$((total / nclients))
        dp=$((rounds * steps * 2 * P * 4)) # data parallel: k workers of batch B, the same global steps; 2 x P x 4 bytes a step
    fi
    final="$rdir/model.safetensors"
    read -r loss ppl bpb ntok l1 l2 l3 l4 <<<"$(eval_heldout "$final" "$rdir")"
    wall_all=$(now_minus "$t0")
    rm -rf "$wdir"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$name" "$seed" "$kind" "$layout" "$k" "$nclients" "$rounds" "$steps" "$outer" "$lr" "$tokens" "$loss" "$ppl" \
        "$bpb" "$ntok" "$l1" "$l2" "$l3" "$l4" "$per_round" "$total" "$per_client" "$dp" "$wall" "$ref" >>"$summary"
    log "$name seed $seed: held-out perplexity $ppl ($bpb bits/byte); ${wall}s training, ${wall_all}s with the final evaluation"
}

while read -r name kind layout k rounds steps outer lr cbatch ref seeds; do
    [ -n "$name" ] || continue
    selected "$name" || continue
    if [ "$quick" = 1 ]; then steps=$(((steps + 15) / 16)) rounds=$(((rounds + 3) / 4)); fi
    for seed in ${seeds//,/ }; do
        one_run "$name" "$seed" "$kind" "$layout" "$k" "$rounds" "$steps" "$outer" "$lr" "$cbatch" "$ref"
    done
done <<<"$runs_table"

# --- tables ------------------------------------------------------------------------------

first=$(awk -F'\t' 'NR == 2 { print $1 "/seed" $2 }' "$summary")
[ -n "$first" ] || die "no run selected"
ckpt_bytes=$(wc -c <"$out/runs/$first/model.safetensors")
{
    echo "## Settings"
    echo
    echo "- model: GPT-2, $L layers, width $C, $H heads, context $CTX, vocab $V (bytes): P = $P parameters" \
        "(checkpoint file $ckpt_bytes bytes = 4P + $((ckpt_bytes - 4 * P)) bytes of header)"
    echo "- training: AdamW (betas 0.9/0.95, wd 0.1, clip 1.0), warmup 10 steps, cosine decay to 10% of the peak lr" \
        "at the last global step; federated clients keep their AdamW state between rounds"
    echo "- federated: client batch $B x $T; centralized: batch 32 x $T (the tokens of 4 clients per step), same global step clock"
    echo "- held-out: the last 5% of the first $take bytes of each domain ($(awk -F'\t' 'NR == 2 { print $15 }' "$summary")" \
        "bytes); loss is the mean over all held-out bytes"
    echo "- data parallel (DP) bytes per worker: global steps x 2 x P x 4 (ring all-reduce of fp32 gradients every step," \
        "as many workers as clients per round, each with batch $B)"
    echo
    awk -F'\t' '
        function rel(x, y) { return y == "" || y == 0 ? "n/a" : sprintf("%+.2f%%", (x / y - 1) * 100) }
        NR == 1 { next }
        {
            n = $1
            if (!(n in cnt)) { order[++nr] = n; kind[n] = $3; layout[n] = $4; k[n] = $5; nc[n] = $6; rounds[n] = $7
                steps[n] = $8; outer[n] = $9; lr[n] = $10; tokens[n] = $11; ref[n] = $25; pr[n] = $20; dp[n] = $23 }
            cnt[n]++; seeds[n] = seeds[n] (cnt[n] > 1 ? "," : "") $2
            ppl[n, $2] = $13; sp[n] += $13; sq[n] += $13 * $13; sb[n] += $14
            for (d = 1; d <= 4; d++) dom[n, d] += exp($(15 + d))
            bpc[n] += $22; tot[n] += $21; wall[n] += $24
        }
        END {
            for (i = 1; i <= nr; i++) { n = order[i]; mean[n] = sp[n] / cnt[n]
                sd[n] = cnt[n] > 1 ? sqrt((sq[n] - cnt[n] * mean[n] ^ 2) / (cnt[n] - 1)) : 0
                if (kind[n] == "central" && (!(tokens[n] in best) || mean[n] < mean[best[tokens[n]]])) best[tokens[n]] = n }
            printf "## Held-out results\n\n"
            printf "Perplexity per byte (mean over the seeds listed; +- the sample standard deviation); the gap is to the"
            printf " centralized run at the same tokens (reference), as a ratio of mean perplexities, and [min, max] of the gaps"
            printf " seed by seed (same seed: same initial model).\n\n"
            printf "| run | tokens | clients / round | rounds x local steps | outer | lr | seeds | held-out ppl | bits/byte | gap to reference | per-seed gaps | gap to best centralized | novels | wiki | news | legal | wall s |\n"
            printf "|---|---:|---|---|---|---|---|---:|---:|---|---|---|---:|---:|---:|---:|---:|\n"
            for (i = 1; i <= nr; i++) {
                n = order[i]; r = ref[n]; lo = ""; hi = ""
                split(seeds[n], ss, ",")
                for (j in ss) if ((r, ss[j]) in ppl) { g = ppl[n, ss[j]] / ppl[r, ss[j]] - 1
                    if (lo == "" || g < lo) lo = g; if (hi == "" || g > hi) hi = g }
                printf "| %s | %.2fM | %s | %s x %s | %s | %s | %s | %.3f +- %.3f | %.4f | %s (%s) | %s | %s | %.2f | %.2f | %.2f | %.2f | %.0f |\n",
                    n, tokens[n] / 1048576, (kind[n] == "central" ? "1 worker, batch 32" : k[n] " of " nc[n]), rounds[n], steps[n],
                    outer[n], lr[n], seeds[n], mean[n], sd[n], sb[n] / cnt[n], (n == r ? "-" : rel(mean[n], mean[r])), r,
                    (n == r || lo == "" ? "-" : sprintf("[%+.2f%%, %+.2f%%]", lo * 100, hi * 100)),
                    (n == best[tokens[n]] ? "- (best)" : rel(mean[n], mean[best[tokens[n]]]) " (" best[tokens[n]] ")"),
                    dom[n, 1] / cnt[n], dom[n, 2] / cnt[n], dom[n, 3] / cnt[n], dom[n, 4] / cnt[n], wall[n] / cnt[n]
            }
            printf "\n(novels .. legal: perplexity on each domain'"'"'s held-out bytes, mean over seeds; tokens in units of 2^20)\n\n"
            printf "## Communication\n\n"
            printf "| run | bytes per client per round (checkpoint down + delta up) | rounds a client joins (mean) | bytes per client (mean) | DP bytes per worker | DP / federated |\n"
            printf "|---|---:|---:|---:|---:|---:|\n"
            for (i = 1; i <= nr; i++) {
                n = order[i]
                if (kind[n] == "central") continue
                b = bpc[n] / cnt[n]
                printf "| %s | %d | %.1f | %.0f | %d | %.0fx |\n", n, pr[n], tot[n] / cnt[n] / pr[n] / nc[n], b, dp[n], dp[n] / b
            }
        }' "$summary"
    echo
    echo "total wall time of results.sh: $(now_minus "$script_start") s"
} >"$out/tables.md"
cat "$out/tables.md"
log "done: $summary, $out/tables.md, per-run logs in $out/runs/"
