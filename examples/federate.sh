#!/usr/bin/env bash
# federate.sh - a whole Photon federation over directories, with rsync.
#
# One directory is the aggregator's; each client directory holds its own
# data in data/ (text files or llm.c token shards). A client directory may
# be local or remote (host:path, reached with rsync and ssh; the photon
# tools must then be installed on that host, see --remote-bin). Each round:
#
#   1. sample K of the N clients (seeded, so a run can be repeated);
#   2. copy the global checkpoint to each sampled client with rsync;
#   3. run photon-train there: local steps from the global weights, keeping
#      the client's AdamW state and data position in its state file, and
#      writing a delta (global - local) - in parallel as cores allow;
#   4. copy the deltas back with rsync;
#   5. with --allowed-signers, check each delta's SSH signature (made on the
#      client with --sign-key) against the key registered for the client id
#      inside it, refusing (and logging) any that fails;
#   6. photon-merge them into the next global checkpoint (refusing a delta of
#      more local steps than the round asked for), then photon-eval it on
#      held-out data; one line per round goes to stdout and to log.tsv;
#   7. keep the round's record (round-R/record.json, examples/round-record.sh),
#      which examples/verify-round.sh re-checks from the kept files.
#
# Nothing but the checkpoint goes to a client and nothing but the delta
# comes back: data, optimizer state and data position never leave it.
set -euo pipefail

usage() {
    cat <<'TXT'
usage: examples/federate.sh --agg DIR --client DIR [--client DIR ...] --val FILE... [options]

  --agg DIR            the aggregator's directory (global checkpoints, deltas, log)
  --client DIR         a client directory holding data/ (local, or host:path over ssh);
                       repeat for each client
  --val FILE...        held-out data the aggregator evaluates each global model on
  --rounds R           federated rounds (default 4)
  --local-steps S      local optimizer steps per round (default 64)
  --sample K           clients per round, drawn at random each round (default: all)
  --seed N             seed of the model and of client sampling (default 1)
  --jobs J             clients trained at once (default: the number of cores)
  --tokenizer DIR      a BPE tokenizer (photon-data train-tokenizer) shared by all:
                       copied to every client, and the model's vocabulary
  model (first round only): --vocab N --ctx N --layers N --heads N --width N
  local training:      --batch B --seq T --lr X --warmup N --min-lr-frac X --weight-decay X
                       --reset-optimizer (fresh AdamW moments every round)
  merge:               --outer NAME --outer-lr X --momentum M --weighting tokens|uniform --skip-bad
  --sign-key FILE      each client signs its delta with this SSH private key (a path on
                       the client, relative to its directory): ssh-keygen -Y sign,
                       namespace photon-delta, giving delta.safetensors.sig
  --allowed-signers F  an OpenSSH allowed_signers file whose principals are the client
                       ids (c0-NAME, c1-NAME, ...: see the round logs): every delta must
                       be signed by the key registered for the id written inside it;
                       one that is not is refused with the reason (--skip-bad: the round
                       goes on without it). Kept as AGG/allowed_signers
  --bin DIR            the photon tools here (default: bin/ beside this script)
  --remote-bin DIR     the photon tools on remote clients (default: PATH)
  --ssh CMD            the remote shell for rsync and remote training (default: ssh)
  -h, --help
TXT
}

here=$(cd "$(dirname "$0")/.." && pwd)
bin="$here/bin" remote_bin="" ssh_cmd="ssh"
agg="" clients=() val=() rounds=4 steps=64 sample=0 seed=1 jobs=$(nproc 2>/dev/null || echo 2)
model_flags=() train_flags=() merge_flags=() outer=fedavg tokenizer="" sign_key="" allowed_signers="" skip_bad=0
batch=8 seq=64

die() { echo "federate.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
    -h | --help) usage; exit 0 ;;
    --agg) agg=$2; shift 2 ;;
    --client) clients+=("$2"); shift 2 ;;
    --val) shift; while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do val+=("$1"); shift; done ;;
    --rounds) rounds=$2; shift 2 ;;
    --local-steps) steps=$2; shift 2 ;;
    --sample) sample=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --vocab | --ctx | --layers | --heads | --width) model_flags+=("$1" "$2"); shift 2 ;;
    --tokenizer) tokenizer=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --seq) seq=$2; shift 2 ;;
    --lr | --warmup | --min-lr-frac | --weight-decay) train_flags+=("$1" "$2"); shift 2 ;;
    --reset-optimizer) train_flags+=("$1"); shift ;;
    --outer) outer=$2; shift 2 ;;
    --outer-lr | --momentum | --weighting) merge_flags+=("$1" "$2"); shift 2 ;;
    --skip-bad) merge_flags+=("$1"); skip_bad=1; shift ;;
    --sign-key) sign_key=$2; shift 2 ;;
    --allowed-signers) allowed_signers=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --remote-bin) remote_bin=$2; shift 2 ;;
    --ssh) ssh_cmd=$2; shift 2 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
done
[ -n "$agg" ] || die "--agg is required"
[ ${#clients[@]} -gt 0 ] || die "at least one --client is required"
[ ${#val[@]} -gt 0 ] || die "--val is required"
for n in "$rounds" "$steps" "$sample" "$seed" "$jobs" "$batch" "$seq"; do
    [[ "$n" =~ ^[0-9]+$ ]] || die "expected a number, got '$n'"
done
[ "$sample" -gt 0 ] && [ "$sample" -le ${#clients[@]} ] || sample=${#clients[@]}
for t in photon-train photon-merge photon-eval; do
    [ -x "$bin/$t" ] || die "$bin/$t not found: run make first"
done
command -v python3 >/dev/null || { echo "federate.sh: python3 is needed to read the tools' JSON" >&2; exit 1; }
if [ -n "$allowed_signers" ]; then
    [ -f "$allowed_signers" ] || die "--allowed-signers $allowed_signers: no such file"
    command -v ssh-keygen >/dev/null || die "--allowed-signers needs ssh-keygen (OpenSSH)"
fi
mkdir -p "$agg"

# --- helpers ---------------------------------------------------------------

is_remote() { [[ "$1" == *:* ]]; }

# Runs a shell command inside a client directory, locally or over ssh.
run_in() {
    local dir=$1 cmd=$2
    if is_remote "$dir"; then
        $ssh_cmd "${dir%%:*}" "cd '${dir#*:}' && $cmd"
    else
        (cd "$dir" && bash -c "$cmd")
    fi
}

# rsync where it is installed; plain cp serves local directories without it
copy() {
    # --ignore-times: a checkpoint rewritten within the same second with the
    # same size would otherwise be skipped, and a client would train from
    # last round's weights (photon-merge would refuse its delta as stale)
    if command -v rsync >/dev/null; then rsync -a --ignore-times -e "$ssh_cmd" "$1" "$2"
    elif ! is_remote "$1" && ! is_remote "$2"; then cp -r "$1" "$2"
    else echo "federate.sh: rsync is needed for remote clients (apt-get install rsync)" >&2; exit 1
    fi
}

file_bytes() { wc -c <"$1" | tr -d ' '; }

# json FILE KEY: a field of the JSON a photon tool printed, as written there (null: null)
json() { python3 -c 'import json, sys; v = json.load(open(sys.argv[1]), parse_float=str)[sys.argv[2]]; print("null" if v is None else v)' "$1" "$2"; }

# A client's name in its delta: its index and the last part of its path.
client_id() {
    local base
    base=$(basename "${clients[$1]#*:}" | tr -c 'A-Za-z0-9._\n-' '_')
    echo "c$1-${base:0:40}"
}

# K of the N clients for a round: a seeded Fisher-Yates shuffle with our own
# 64-bit LCG, so every bash gives the same sample.
sample_clients() {
    local round=$1 n=${#clients[@]} i j t state
    local -a order
    for ((i = 0; i < n; i++)); do order[i]=$i; done
    state=$((seed * 1000003 + round))
    for ((i = n - 1; i > 0; i--)); do
        state=$((state * 6364136223846793005 + 1442695040888963407))
        j=$((((state >> 33) & 0x7fffffff) % (i + 1)))
        t=${order[i]} order[i]=${order[j]} order[j]=$t
    done
    echo "${order[@]:0:$sample}" | tr ' ' '\n' | sort -n | tr '\n' ' '
}

photon() { # the photon tools on a client's machine
    if is_remote "$1"; then echo "${remote_bin:+$remote_bin/}$2"; else echo "$bin/$2"; fi
}

# --- round 0: the initial global model ---------------------------------------

[ ! -e "$agg/log.tsv" ] || die "$agg already holds a federation (log.tsv); give a new --agg"
[ -z "$allowed_signers" ] || cp "$allowed_signers" "$agg/allowed_signers" # kept: the rounds' records refer to it
global0="$agg/global-r0.safetensors"
tok_flags=() client_tok=""
if [ -n "$tokenizer" ]; then
    [ -f "$tokenizer/vocab.json" ] && [ -f "$tokenizer/merges.txt" ] || die "--tokenizer $tokenizer lacks vocab.json or merges.txt"
    tok_flags=(--tokenizer "$tokenizer") client_tok="--tokenizer tokenizer"
fi
"$bin/photon-train" --init "${tok_flags[@]}" "${model_flags[@]}" --seed "$seed" --steps 0 --out "$global0" 2>/dev/null
# a new federation: clients start with fresh optimizer state and data position
for dir in "${clients[@]}"; do
    run_in "$dir" "rm -rf state.safetensors global.safetensors delta.safetensors tokenizer"
    if [ -n "$tokenizer" ]; then copy "${tokenizer%/}/" "$dir/tokenizer"; fi
done
"$bin/photon-eval" --model "$global0" "${tok_flags[@]}" --data "${val[@]}" --seq "$seq" --json >"$agg/eval-r0.json"
loss0=$(json "$agg/eval-r0.json" loss)
total_steps=$((rounds * steps))

printf 'round\tclients\teval_loss\tperplexity\tbits_per_byte\tbytes_moved\tseconds\n' | tee "$agg/log.tsv"
printf '0\t0\t%.4f\t%.3f\t-\t0\t0\n' "$loss0" "$(awk -v l="$loss0" 'BEGIN{print exp(l)}')" | tee -a "$agg/log.tsv"

for ((r = 1; r <= rounds; r++)); do
    start=$(date +%s.%N)
    prev="$agg/global-r$((r - 1)).safetensors" next="$agg/global-r$r.safetensors"
    mkdir -p "$agg/round-$r" "$agg/logs/round-$r"
    chosen=$(sample_clients "$r")
    moved=0
    # 2. the global checkpoint goes out
    for c in $chosen; do
        copy "$prev" "${clients[c]}/global.safetensors"
        moved=$((moved + $(file_bytes "$prev")))
    done
    # 3. local training, at most $jobs at a time
    pids=() failed=0
    for c in $chosen; do
        dir=${clients[c]} id=$(client_id "$c")
        cmd="$(photon "$dir" photon-train) --model global.safetensors --data data/* --state state.safetensors \
--steps $steps --batch $batch --seq $seq --total-steps $total_steps ${train_flags[*]} $client_tok \
--delta-out delta.safetensors --client-id $id --log-every $steps"
        if [ -n "$sign_key" ]; then
            cmd="$cmd && rm -f delta.safetensors.sig && ssh-keygen -Y sign -q -f '$sign_key' -n photon-delta delta.safetensors"
        else
            cmd="$cmd && rm -f delta.safetensors.sig"
        fi
        run_in "$dir" "$cmd" 2>"$agg/logs/round-$r/train-$id.log" &
        pids+=($!)
        if [ ${#pids[@]} -ge "$jobs" ]; then wait "${pids[0]}" || failed=1; pids=("${pids[@]:1}"); fi
    done
    for p in "${pids[@]}"; do wait "$p" || failed=1; done
    [ "$failed" = 0 ] || { echo "federate.sh: a client failed in round $r; see $agg/logs/round-$r/train-*.log" >&2; exit 1; }
    # 4. the deltas come back
    deltas=()
    for c in $chosen; do
        id=$(client_id "$c")
        copy "${clients[c]}/delta.safetensors" "$agg/round-$r/delta-$id.safetensors"
        if [ -n "$sign_key" ]; then copy "${clients[c]}/delta.safetensors.sig" "$agg/round-$r/delta-$id.safetensors.sig" 2>/dev/null || true; fi
        moved=$((moved + $(file_bytes "$agg/round-$r/delta-$id.safetensors")))
        if [ -n "$allowed_signers" ] &&
            ! BIN=$bin "$here/examples/delta-sig.sh" verify "$agg/allowed_signers" "$agg/round-$r/delta-$id.safetensors" \
                >/dev/null 2>"$agg/logs/round-$r/signature-$id.log"; then
            why=$(tail -n 1 "$agg/logs/round-$r/signature-$id.log")
            if [ "$skip_bad" = 1 ]; then echo "federate.sh: round $r: $why; going on without it" >&2; continue; fi
            echo "federate.sh: round $r: $why; the round stops (--skip-bad goes on without it)" >&2
            exit 1
        fi
        deltas+=("$agg/round-$r/delta-$id.safetensors")
    done
    [ ${#deltas[@]} -gt 0 ] || { echo "federate.sh: round $r: no delta passed its checks" >&2; exit 1; }
    # 5. merge and evaluate
    state_flags=()
    if [ "$outer" != fedavg ]; then
        state_flags=(--server-state "$agg/server-r$((r - 1)).safetensors" --server-state-out "$agg/server-r$r.safetensors")
    fi
    round_flags=(--outer "$outer" "${merge_flags[@]}" --max-local-steps "$steps")
    if ! "$bin/photon-merge" --base "$prev" --out "$next" "${round_flags[@]}" "${state_flags[@]}" \
        "${deltas[@]}" 2>"$agg/logs/round-$r/merge.log"; then
        echo "federate.sh: the merge of round $r failed:" >&2
        cat "$agg/logs/round-$r/merge.log" >&2
        exit 1
    fi
    # 7. the record: what was merged, from what, how (recomputed by verify-round.sh)
    printf '%s\n' "${round_flags[@]}" >"$agg/round-$r/merge-flags"
    [ "$outer" = fedavg ] || printf '%s\n' --server-state "../server-r$((r - 1)).safetensors" >>"$agg/round-$r/merge-flags"
    BIN=$bin "$here/examples/round-record.sh" "$agg" "$r" >"$agg/round-$r/record.json" ||
        { echo "federate.sh: round $r: the merge does not reproduce from its record" >&2; exit 1; }
    "$bin/photon-eval" --model "$next" "${tok_flags[@]}" --data "${val[@]}" --seq "$seq" --json >"$agg/eval-r$r.json"
    loss=$(json "$agg/eval-r$r.json" loss)
    bpb=$(json "$agg/eval-r$r.json" bits_per_byte)
    secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}')
    printf '%d\t%d\t%.4f\t%.3f\t%s\t%d\t%s\n' "$r" "$(echo $chosen | wc -w)" "$loss" \
        "$(awk -v l="$loss" 'BEGIN{print exp(l)}')" "$(awk -v b="$bpb" 'BEGIN{if (b == "null") print "-"; else printf "%.4f", b}')" \
        "$moved" "$secs" | tee -a "$agg/log.tsv"
done
