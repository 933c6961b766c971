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
# A client that fails to train, whose copy fails or whose delta is refused is
# left out of the round (its reason on stderr and in logs/round-R/left-out);
# the round merges if at least --min-clients deltas are accepted (default:
# every sampled client), else the run stops with exit 1.
#
# The settings that define the federation are kept in AGG/federation.json.
# Started again with the same command on an AGG that holds a run (after a
# kill, a failed round, or with a larger --rounds), it continues after the
# last complete round (its checkpoint, record.json and log line all there),
# redoing an interrupted one from its base and reusing the deltas it had
# already copied back; it refuses (exit 2) a command whose settings differ.
# Client state is only cleared when a federation starts.
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
  compression:         --delta-format f32|bf16|int8|int4 (each client's delta, with error
                       feedback kept in its state; --no-error-feedback turns it off)
                       --update-format f32|bf16|int8|int4: the aggregator also writes
                       AGG/update-rR.safetensors, and a client that holds round R-1's
                       checkpoint gets that update instead and rebuilds round R's
                       checkpoint from it bit for bit (photon-merge --apply); others
                       get the whole checkpoint. log.tsv counts bytes down and up
  merge:               --outer NAME --outer-lr X --momentum M --weighting tokens|uniform
                       robust (photon-merge --help): --aggregate RULE --trim F --byzantine F
                       --krum-select M --clip-norm X|auto[:F] --max-norm-ratio R --screen FILE
                       --screen-tokens N --screen-max-rise X --screen-from median|base (a
                       refused delta is left out of its round only with --skip-bad)
  groups (a federation of federations, docs/ALGORITHM.md):
                       --group NAME=I,J,...  the clients (their --client positions, from 0)
                       of sub-federation NAME; with groups every client is in exactly one.
                       Each round each group's deltas merge into a group delta
                       (photon-merge --delta-out, AGG/round-R/group-NAME.safetensors), and
                       the group deltas into the global model (the outer optimizer and the
                       robust rules run there); members' deltas are kept in
                       AGG/round-R/group-NAME/, per-group figures in logs/round-R/groups.tsv
                       --group-sample K  members per group per round (default: all)
                       --group-personal NAME=GLOB  the group's members keep these tensors
                       (photon-train --personal), and its merge refuses a delta carrying one
  --personal GLOB      every client keeps these tensors to itself (photon-train --personal;
                       repeat or comma-separate)
  --skip-bad           leave out a delta photon-merge refuses (stale, NaN, ...) or whose
                       signature fails, instead of stopping the round; with it
                       --min-clients defaults to 1
  --min-clients K      merge a round if at least K deltas are accepted; a client that
                       fails to train, whose copy fails or whose delta is refused is left
                       out, with its reason on stderr and in AGG/logs/round-R/left-out.
                       Below K the run stops with exit 1 (default: every sampled client)
  --sign-key FILE      each client signs its delta with this SSH private key (a path on
                       the client, relative to its directory): ssh-keygen -Y sign,
                       namespace photon-delta, giving delta.safetensors.sig
  --allowed-signers F  an OpenSSH allowed_signers file whose principals are the client
                       ids (c0-NAME, c1-NAME, ...: see the round logs): every delta must
                       be signed by the key registered for the id written inside it;
                       one that is not is refused with the reason and left out of the
                       round (see --min-clients). Kept as AGG/allowed_signers
  --bin DIR            the photon tools here (default: bin/ beside this script)
  --remote-bin DIR     the photon tools on remote clients (default: PATH)
  --ssh CMD            the remote shell for rsync and remote training (default: ssh)
  -h, --help

Given an AGG that holds a federation (AGG/federation.json), the same command
continues it after its last complete round: a kill, a failed round or a larger
--rounds. A command whose settings (model, seed, local steps, batch, seq,
training and merge flags, tokenizer, clients, sampling, allowed signers) differ
from the recorded ones is refused with exit 2; only --rounds may grow.
TXT
}

here=$(cd "$(dirname "$0")/.." && pwd)
bin="$here/bin" remote_bin="" ssh_cmd="ssh"
agg="" clients=() val=() rounds=4 steps=64 sample=0 seed=1 jobs=$(nproc 2>/dev/null || echo 2)
model_flags=() train_flags=() merge_flags=() update_format="" outer=fedavg tokenizer="" sign_key="" allowed_signers="" skip_bad=0
batch=8 seq=64 min_clients=0
groups=() group_members=() group_personal=() group_sample=0 personal="" group_personal_args=()

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
    --reset-optimizer | --no-error-feedback) train_flags+=("$1"); shift ;;
    --delta-format) train_flags+=("$1" "$2"); shift 2 ;;
    --update-format) update_format=$2; merge_flags+=("$1" "$2"); shift 2 ;;
    --outer) outer=$2; shift 2 ;;
    --outer-lr | --momentum | --weighting) merge_flags+=("$1" "$2"); shift 2 ;;
    --aggregate | --trim | --byzantine | --krum-select | --clip-norm | --max-norm-ratio | --screen-tokens | --screen-max-rise | \
        --screen-from) merge_flags+=("$1" "$2"); shift 2 ;;
    --screen) [ -f "${2:-}" ] || die "--screen needs a readable FILE, got '${2:-}'"
        merge_flags+=("$1" "$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"); shift 2 ;;
    --group) [[ "${2:-}" =~ ^[A-Za-z0-9._-]{1,40}=[0-9]+(,[0-9]+)*$ ]] || die "--group needs NAME=I,J,... (client positions), got '${2:-}'"
        groups+=("${2%%=*}") group_members+=("${2#*=}"); shift 2 ;;
    --group-sample) group_sample=$2; shift 2 ;;
    --group-personal) [[ "${2:-}" == *=?* ]] || die "--group-personal needs NAME=GLOB, got '${2:-}'"
        group_personal_args+=("$2"); shift 2 ;;
    --personal) personal="${personal:+$personal,}$2"; shift 2 ;;
    --skip-bad) skip_bad=1; shift ;;
    --min-clients) min_clients=$2; shift 2 ;;
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
for n in "$rounds" "$steps" "$sample" "$seed" "$jobs" "$batch" "$seq" "$min_clients"; do
    [[ "$n" =~ ^[0-9]+$ ]] || die "expected a number, got '$n'"
done
[[ "$group_sample" =~ ^[0-9]+$ ]] || die "expected a number, got '$group_sample'"
group_of=()
for ((g = 0; g < ${#groups[@]}; g++)); do
    for ((h = 0; h < g; h++)); do [ "${groups[h]}" != "${groups[g]}" ] || die "--group ${groups[g]} is given twice"; done
    for c in ${group_members[g]//,/ }; do
        [ "$c" -lt ${#clients[@]} ] || die "--group ${groups[g]}: there is no client $c (${#clients[@]} clients, from 0)"
        [ -z "${group_of[c]:-}" ] || die "client $c is in two groups (${groups[${group_of[c]}]} and ${groups[g]})"
        group_of[c]=$g
    done
done
for ((c = 0; c < ${#clients[@]} && ${#groups[@]} > 0; c++)); do
    [ -n "${group_of[c]:-}" ] || die "client $c (${clients[c]}) is in no --group: with groups every client is in one"
done
for a in "${group_personal_args[@]}"; do
    found=0
    for ((g = 0; g < ${#groups[@]}; g++)); do
        [ "${groups[g]}" != "${a%%=*}" ] || { group_personal[g]=${a#*=} found=1; }
    done
    [ "$found" = 1 ] || die "--group-personal ${a%%=*}: no such --group"
done
[ ${#groups[@]} -gt 0 ] || [ "$group_sample" = 0 ] || die "--group-sample goes with --group"
[ ${#groups[@]} -eq 0 ] || [ "$sample" = 0 ] || die "with groups, sample within each group: --group-sample, not --sample"
[ -z "$personal" ] || [ ${#group_personal_args[@]} -eq 0 ] || die "give --personal (every client) or --group-personal, not both"
[ "$sample" -gt 0 ] && [ "$sample" -le ${#clients[@]} ] || sample=${#clients[@]}
if [ ${#groups[@]} -gt 0 ]; then # the clients a round samples: K of each group (or all of it)
    sample=0
    for ((g = 0; g < ${#groups[@]}; g++)); do
        n=$(tr ',' '\n' <<<"${group_members[g]}" | wc -l)
        [ "$group_sample" -gt 0 ] && [ "$group_sample" -lt "$n" ] && n=$group_sample
        sample=$((sample + n))
    done
fi
[ "$min_clients" -le "$sample" ] || die "--min-clients $min_clients is more than the $sample clients sampled each round"
if [ "$min_clients" = 0 ]; then if [ "$skip_bad" = 1 ]; then min_clients=1; else min_clients=$sample; fi; fi
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

# send_global C: round r's base ($prev) to client C: with --update-format, as
# update-r(r-1) when the client holds the checkpoint that update was made
# from (photon-merge --apply rebuilds $prev there, checked against its
# SHA-256), else the whole file. Sets sent (bytes) and how (update|checkpoint).
send_global() {
    local c=$1 dir=${clients[$1]} upd="$agg/update-r$((r - 1)).safetensors" from have
    how=checkpoint sent=$(file_bytes "$prev")
    if [ -n "$update_format" ] && [ -f "$upd" ] && [ "$r" -gt 1 ]; then
        from=$(sha256sum "$agg/global-r$((r - 2)).safetensors" | cut -c1-64)
        have=$(run_in "$dir" "sha256sum global.safetensors 2>/dev/null | cut -c1-64" 2>/dev/null || true)
        if [ "$have" = "$from" ] && copy "$upd" "$dir/update.safetensors" &&
            run_in "$dir" "$(photon "$dir" photon-merge) --base global.safetensors --apply update.safetensors \
--out global.next.safetensors && mv -f global.next.safetensors global.safetensors"; then
            how=update sent=$(file_bytes "$upd")
            return 0
        fi
    fi
    copy "$prev" "$dir/global.safetensors"
}

# json FILE KEY...: fields of the JSON a photon tool printed, as written there (null: null), on one line
json() { python3 -c 'import json, sys; d = json.load(open(sys.argv[1]), parse_float=str)
print(" ".join("null" if d[k] is None else str(d[k]) for k in sys.argv[2:]))' "$@"; }

# A client's name in its delta: its index and the last part of its path.
ids=()
for ((i = 0; i < ${#clients[@]}; i++)); do
    base=$(basename "${clients[i]#*:}" | tr -c 'A-Za-z0-9._\n-' '_')
    ids[i]="c$i-${base:0:40}"
done
client_id() { echo "${ids[$1]}"; }

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
# with groups: K members of each group (--group-sample), each group's draw seeded by the round and the group
sample_groups() {
    local round=$1 g i j t state k
    local -a order
    for ((g = 0; g < ${#groups[@]}; g++)); do
        read -r -a order <<<"${group_members[g]//,/ }"
        k=${#order[@]}
        [ "$group_sample" -gt 0 ] && [ "$group_sample" -lt "$k" ] && k=$group_sample
        state=$((seed * 1000003 + round * 1009 + g))
        for ((i = ${#order[@]} - 1; i > 0; i--)); do
            state=$((state * 6364136223846793005 + 1442695040888963407))
            j=$((((state >> 33) & 0x7fffffff) % (i + 1)))
            t=${order[i]} order[i]=${order[j]} order[j]=$t
        done
        printf '%s\n' "${order[@]:0:$k}"
    done | sort -n | tr '\n' ' '
}
# where client C's delta of this round is kept: in its group's directory, if any
delta_file() { if [ ${#groups[@]} -gt 0 ]; then echo "$rd/group-${groups[${group_of[$1]}]}/delta-${ids[$1]}.safetensors"; else echo "$rd/delta-${ids[$1]}.safetensors"; fi; }
# client C's own tensors (photon-train --personal): every client's, or its group's
personal_of() { if [ ${#groups[@]} -gt 0 ]; then echo "${group_personal[${group_of[$1]}]:-}"; else echo "$personal"; fi; }

photon() { # the photon tools on a client's machine
    if is_remote "$1"; then echo "${remote_bin:+$remote_bin/}$2"; else echo "$bin/$2"; fi
}

# write_atomic FILE: stdin to FILE through a temporary beside it, so that a
# kill leaves the old file or the new one, never a part
write_atomic() { cat >"$1.tmp" && mv -f "$1.tmp" "$1"; }

# --- the federation's settings: recorded on the first start, compared on a continue ---

sha_of() { if [ $# -gt 0 ]; then cat "$@" | sha256sum | cut -c1-64; else echo none; fi; }
settings() { # one "flag<TAB>value" line per setting (compared as a set: their order does not matter)
    local i
    printf '%s\t%s\n' --seed "$seed" --rounds "$rounds" --local-steps "$steps" --batch "$batch" --seq "$seq" \
        --sample "$sample" --outer "$outer"
    for ((i = 0; i < ${#model_flags[@]}; i += 2)); do printf '%s\t%s\n' "${model_flags[i]}" "${model_flags[i + 1]}"; done
    for ((i = 0; i < ${#train_flags[@]}; i++)); do
        if [ "${train_flags[i]}" = --reset-optimizer ] || [ "${train_flags[i]}" = --no-error-feedback ]; then
            printf '%s\tyes\n' "${train_flags[i]}"
        else printf '%s\t%s\n' "${train_flags[i]}" "${train_flags[i + 1]}"; i=$((i + 1)); fi
    done
    for ((i = 0; i < ${#merge_flags[@]}; i += 2)); do printf '%s\t%s\n' "${merge_flags[i]}" "${merge_flags[i + 1]}"; done
    printf '%s\t%s\n' --tokenizer "$(sha_of ${tokenizer:+"$tokenizer/vocab.json" "$tokenizer/merges.txt"})" \
        --allowed-signers "$(sha_of ${allowed_signers:+"$allowed_signers"})"
    for ((i = 0; i < ${#clients[@]}; i++)); do printf '%s\t%s\n' --client "${clients[i]}"; done
    for ((i = 0; i < ${#groups[@]}; i++)); do
        printf '%s\t%s\n' --group "${groups[i]}=${group_members[i]}" --group-personal "${groups[i]}=${group_personal[i]:-}"
    done
    [ ${#groups[@]} -eq 0 ] || printf '%s\t%s\n' --group-sample "$group_sample"
    [ -z "$personal" ] || printf '%s\t%s\n' --personal "$personal"
}
# compare_settings FEDERATION_JSON: prints the new JSON (the recorded one, --rounds
# grown) on stdout, or exits 2 with the first setting that differs
compare_settings() {
    settings | python3 -c '
import json, sys
new = {}
for line in sys.stdin.read().splitlines():
    k, v = line.split("\t", 1)
    if k in ("--client", "--group", "--group-personal"): new.setdefault(k, []).append(v)
    else: new[k] = v
if len(sys.argv) < 2:
    print(json.dumps(new, indent=1, sort_keys=True)); sys.exit()
try:
    old = json.load(open(sys.argv[1]))
except Exception as e:
    print(f"federate.sh: {sys.argv[1]}: cannot read the recorded settings ({e})", file=sys.stderr); sys.exit(2)
show = lambda k, v: "no " + k if v is None else (" ".join(k + " " + c for c in v) if isinstance(v, list) else k + " " + v)
for k in sorted(set(old) | set(new), key=lambda k: (k == "--client", k)):
    o, n = old.get(k), new.get(k)
    if o == n or (k == "--rounds" and o is not None and n.isdigit() and o.isdigit() and int(n) > int(o)): continue
    why = ", and --rounds may only grow" if k == "--rounds" else ""
    print(f"federate.sh: {sys.argv[1]} was started with {show(k, o)}; this command gives {show(k, n)}{why} (give the same settings to continue it, or a new --agg)", file=sys.stderr)
    sys.exit(2)
print(json.dumps(new, indent=1, sort_keys=True))
' "$@"
}

# the log's line for round R, if it is there whole (10 fields; 8 before bytes_down and bytes_up)
log_line() { awk -F'\t' -v r="$1" 'NR > 1 && $1 == r && (NF == 10 || NF == 8) { print; exit }' "$agg/log.tsv" 2>/dev/null; }
round_done() { # round R is complete: its checkpoint, its record and its log line are all there
    if [ "$1" = 0 ]; then [ -f "$agg/global-r0.safetensors" ] && [ -f "$agg/eval-r0.json" ]
    else [ -f "$agg/global-r$1.safetensors" ] && [ -f "$agg/round-$1/record.json" ]; fi && [ -n "$(log_line "$1")" ]
}

# --- a new federation, or the continue of one ------------------------------

tok_flags=() client_tok=""
if [ -n "$tokenizer" ]; then
    [ -f "$tokenizer/vocab.json" ] && [ -f "$tokenizer/merges.txt" ] || die "--tokenizer $tokenizer lacks vocab.json or merges.txt"
    tok_flags=(--tokenizer "$tokenizer") client_tok="--tokenizer tokenizer"
fi
done_r=-1
if [ -f "$agg/federation.json" ]; then
    recorded=$(compare_settings "$agg/federation.json") || exit 2
    # the last complete round; anything after it was cut short and is redone
    while [ "$done_r" -lt "$rounds" ] && round_done $((done_r + 1)); do done_r=$((done_r + 1)); done
    if [ "$done_r" -ge 0 ]; then
        { head -n 1 "$agg/log.tsv"; for ((r = 0; r <= done_r; r++)); do log_line "$r"; done; } | write_atomic "$agg/log.tsv"
    fi
    r=$((done_r + 1))
    rm -f "$agg/global-r$r.safetensors" "$agg/server-r$r.safetensors" "$agg/eval-r$r.json" "$agg"/*.tmp \
        "$agg/round-$r/record.json" "$agg/round-$r/merge-flags" "$agg/round-$r"/.*.tmp "$agg/round-$r"/*.tmp
    [ "$recorded" = "$(cat "$agg/federation.json")" ] || printf '%s\n' "$recorded" | write_atomic "$agg/federation.json"
    if [ "$done_r" -ge "$rounds" ]; then
        echo "federate.sh: $agg: all $rounds rounds are done (a larger --rounds continues it)" >&2
        exit 0
    fi
    [ "$done_r" -lt 0 ] || echo "federate.sh: $agg: continuing after round $done_r of $rounds" >&2
else
    [ ! -e "$agg/log.tsv" ] ||
        die "$agg holds a federation without federation.json (an older federate.sh): its settings cannot be checked; give a new --agg"
    compare_settings | write_atomic "$agg/federation.json"
fi
total_steps=$((rounds * steps))

# --- round 0: the initial global model ---------------------------------------

if [ "$done_r" -lt 0 ]; then # no client has trained in this federation yet
    [ -z "$allowed_signers" ] || cp "$allowed_signers" "$agg/allowed_signers" # kept: the rounds' records refer to it
    global0="$agg/global-r0.safetensors"
    "$bin/photon-train" --init "${tok_flags[@]}" "${model_flags[@]}" --seed "$seed" --steps 0 --out "$global0" 2>/dev/null
    # a new federation: clients start with fresh optimizer state and data position
    for dir in "${clients[@]}"; do
        run_in "$dir" "rm -rf state.safetensors global.safetensors delta.safetensors delta.safetensors.sig tokenizer"
        if [ -n "$tokenizer" ]; then copy "${tokenizer%/}/" "$dir/tokenizer"; fi
    done
    "$bin/photon-eval" --model "$global0" "${tok_flags[@]}" --data "${val[@]}" --seq "$seq" --json | write_atomic "$agg/eval-r0.json"
    loss0=$(json "$agg/eval-r0.json" loss)
    {
        printf 'round\tclients\teval_loss\tperplexity\tbits_per_byte\tbytes_moved\tseconds\tmerged\tbytes_down\tbytes_up\n'
        printf '0\t0\t%.4f\t%.3f\t-\t0\t0\t0\t0\t0\n' "$loss0" "$(awk -v l="$loss0" 'BEGIN{print exp(l)}')"
    } | write_atomic "$agg/log.tsv"
    done_r=0
fi
cat "$agg/log.tsv"

for ((r = done_r + 1; r <= rounds; r++)); do
    start=$(date +%s.%N)
    prev="$agg/global-r$((r - 1)).safetensors" next="$agg/global-r$r.safetensors"
    rd="$agg/round-$r" lg="$agg/logs/round-$r"
    mkdir -p "$rd" "$lg"
    rm -f "$lg/left-out"
    if [ ${#groups[@]} -gt 0 ]; then chosen=$(sample_groups "$r"); else chosen=$(sample_clients "$r"); fi
    for ((g = 0; g < ${#groups[@]}; g++)); do mkdir -p "$rd/group-${groups[g]}"; done
    moved=0 down=0 up=0 todo=()
    declare -A why=()
    # a delta this round already copied back (before a kill) is kept, not trained again
    for c in $chosen; do
        id=${ids[c]}
        if [ -f "$(delta_file "$c")" ]; then moved=$((moved + $(file_bytes "$prev"))); else todo+=("$c"); fi
    done
    # 2. the global checkpoint goes out: as last round's update to a client
    # that holds the checkpoint it was made from, else whole
    out=()
    : >"$lg/bytes.tsv"
    for c in "${todo[@]}"; do
        if send_global "$c" 2>"$lg/copy-${ids[c]}.log"; then
            out+=("$c") moved=$((moved + sent)) down=$((down + sent))
            printf '%s\tdown\t%s\t%d\n' "${ids[c]}" "$how" "$sent" >>"$lg/bytes.tsv"
        else
            why[$c]="copying the global checkpoint to it failed: $(tail -n 1 "$lg/copy-${ids[c]}.log")"
        fi
    done
    # 3. local training, at most $jobs at a time
    pids=() pidc=()
    finish() { # waits for the oldest training job, and brings its delta back
        local c=${pidc[0]} id=${ids[${pidc[0]}]}
        if wait "${pids[0]}"; then fetch "$c"; else why[$c]="training failed: $(tail -n 1 "$lg/train-$id.log")"; fi
        pids=("${pids[@]:1}") pidc=("${pidc[@]:1}")
    }
    # 4. the delta comes back as soon as it is made, to a temporary name then into place
    # (its signature first): one there is whole, and a continue takes it as it is
    fetch() {
        local c=$1 id=${ids[$1]} d
        d=$(delta_file "$c")
        rm -f "$d.sig"
        if [ -n "$sign_key" ]; then
            copy "${clients[c]}/delta.safetensors.sig" "$rd/.sig-$id.tmp" 2>/dev/null && mv -f "$rd/.sig-$id.tmp" "$d.sig" || true
        fi
        if copy "${clients[c]}/delta.safetensors" "$rd/.delta-$id.tmp" 2>"$lg/copy-$id.log"; then
            mv -f "$rd/.delta-$id.tmp" "$d"
        else
            rm -f "$rd/.delta-$id.tmp" "$d.sig"
            why[$c]="copying its delta back failed: $(tail -n 1 "$lg/copy-$id.log")"
        fi
    }
    for c in "${out[@]}"; do
        dir=${clients[c]} id=${ids[c]}
        cmd="$(photon "$dir" photon-train) --model global.safetensors --data data/* --state state.safetensors \
--steps $steps --batch $batch --seq $seq --total-steps $total_steps ${train_flags[*]} $client_tok \
--delta-out delta.safetensors --client-id $id --log-every $steps"
        mine=$(personal_of "$c")
        [ -z "$mine" ] || cmd="$cmd --personal '$mine'"
        if [ -n "$sign_key" ]; then
            cmd="$cmd && rm -f delta.safetensors.sig && ssh-keygen -Y sign -q -f '$sign_key' -n photon-delta delta.safetensors"
        else
            cmd="$cmd && rm -f delta.safetensors.sig"
        fi
        run_in "$dir" "$cmd" 2>"$lg/train-$id.log" &
        pids+=($!) pidc+=("$c")
        if [ ${#pids[@]} -ge "$jobs" ]; then finish; fi
    done
    while [ ${#pids[@]} -gt 0 ]; do finish; done
    # 5. the signatures
    deltas=()
    for c in $chosen; do
        id=${ids[c]} d=$(delta_file "$c")
        [ -f "$d" ] || continue
        moved=$((moved + $(file_bytes "$d"))) up=$((up + $(file_bytes "$d")))
        printf '%s\tup\tdelta\t%d\n' "$id" "$(file_bytes "$d")" >>"$lg/bytes.tsv"
        if [ -n "$allowed_signers" ] &&
            ! BIN=$bin "$here/examples/delta-sig.sh" verify "$agg/allowed_signers" "$d" >/dev/null 2>"$lg/signature-$id.log"; then
            why[$c]=$(tail -n 1 "$lg/signature-$id.log")
            continue
        fi
        deltas+=("$d")
    done
    # with groups: each group's deltas into its group delta (fedavg at lr 1: the outer
    # optimizer and the robust rules run at the root), which the root then merges
    merge_groups() {
        local g name members d gflags sampled tokens
        root_inputs=() root_min=1
        printf 'group\tsampled\tmerged\ttokens\n' >"$lg/groups.tsv"
        for ((g = 0; g < ${#groups[@]}; g++)); do
            name=${groups[g]} members=() sampled=0
            for c in $chosen; do [ "${group_of[c]}" != "$g" ] || sampled=$((sampled + 1)); done
            for d in "${deltas[@]}"; do [[ "$d" != "$rd/group-$name/"* ]] || members+=("$d"); done
            [ ${#members[@]} -gt 0 ] || { printf '%s\t%d\t0\t0\n' "$name" "$sampled" >>"$lg/groups.tsv"; continue; }
            gflags=(--group-id "g-$name" --max-local-steps "$steps")
            [ -z "${group_personal[g]:-}" ] || gflags+=(--personal "${group_personal[g]}")
            [ "$skip_bad" = 0 ] || gflags+=(--skip-bad)
            printf '%s\n' "${gflags[@]}" >"$rd/group-$name/merge-flags"
            if ! "$bin/photon-merge" --base "$prev" --delta-out "$rd/group-$name.safetensors" \
                "${gflags[@]}" --json "${members[@]}" >"$lg/merge-group-$name.json" 2>"$lg/merge-group-$name.log"; then
                echo "federate.sh: the merge of group $name in round $r failed:" >&2
                cat "$lg/merge-group-$name.log" >&2
                exit 1
            fi
            merge_jsons+=("$lg/merge-group-$name.json")
            root_inputs+=("$rd/group-$name.safetensors")
            read -r tokens < <(python3 -c 'import json, sys; d = json.load(open(sys.argv[1]))
print(sum(x["tokens"] for x in d["deltas"] if x["accepted"]))' "$lg/merge-group-$name.json")
            printf '%s\t%d\t%d\t%s\n' "$name" "$sampled" "$(json "$lg/merge-group-$name.json" merged)" "$tokens" >>"$lg/groups.tsv"
        done
    }
    # left_out: one line per client left out, "ID: reason", in the round's logs
    left_out() {
        local c
        for c in $chosen; do [ -z "${why[$c]:-}" ] || printf '%s: %s\n' "${ids[c]}" "${why[$c]}"; done
    }
    stop() { # fewer than --min-clients accepted: one line, and the run stops (the same command continues it)
        left_out >"$lg/left-out"
        echo "federate.sh: round $r: $1 of $(echo $chosen | wc -w) sampled clients' deltas accepted, fewer than --min-clients $min_clients ($(left_out | tr '\n' ';' | sed 's/;$//; s/;/; /g')); the same command continues the run" >&2
        exit 1
    }
    [ ${#deltas[@]} -ge "$min_clients" ] && [ ${#deltas[@]} -gt 0 ] || stop ${#deltas[@]}
    # 6. merge and evaluate
    state_flags=()
    if [ "$outer" != fedavg ]; then
        state_flags=(--server-state "$agg/server-r$((r - 1)).safetensors" --server-state-out "$agg/server-r$r.safetensors")
    fi
    round_flags=(--outer "$outer" "${merge_flags[@]}" --max-local-steps "$steps")
    [ "$skip_bad" = 0 ] || round_flags+=(--skip-bad)
    update_flags=()
    [ -z "$update_format" ] || update_flags=(--update-out "$agg/update-r$r.safetensors")
    root_inputs=("${deltas[@]}") root_min=$min_clients merge_jsons=("$lg/merge.json")
    if [ ${#groups[@]} -gt 0 ]; then merge_groups; fi
    if ! "$bin/photon-merge" --base "$prev" --out "$next" "${round_flags[@]}" "${state_flags[@]}" --min-clients "$root_min" \
        "${update_flags[@]}" --json "${root_inputs[@]}" >"$lg/merge.json" 2>"$lg/merge.log"; then
        if [ "$skip_bad" = 1 ] && grep -q 'valid deltas' "$lg/merge.log"; then # photon-merge left out too many
            while IFS= read -r line; do
                f=${line#photon-merge: refused } f=${f%%: *} f=${f##*/delta-} f=${f%.safetensors}
                for c in $chosen; do [ "${ids[c]}" != "$f" ] || why[$c]="refused by photon-merge: ${line#photon-merge: refused }"; done
            done < <(grep '^photon-merge: refused ' "$lg/merge.log")
            refused=$(grep -c '^photon-merge: refused ' "$lg/merge.log" || true)
            stop $((${#deltas[@]} - refused))
        fi
        echo "federate.sh: the merge of round $r failed:" >&2
        cat "$lg/merge.log" >&2
        exit 1
    fi
    merged=0
    while IFS=$'\t' read -r f reason; do # the deltas photon-merge left out (--skip-bad)
        [ -n "$reason" ] || { [[ "${f##*/}" == group-* ]] || merged=$((merged + 1)); continue; }
        for c in $chosen; do [ "delta-${ids[c]}.safetensors" != "${f##*/}" ] || why[$c]="refused by photon-merge: $reason"; done
    done < <(python3 -c 'import json, sys
for f in sys.argv[1:]:
    for d in json.load(open(f)).get("deltas", []):
        print(d["path"] + "\t" + ("" if d["accepted"] else d["reason"]))' "${merge_jsons[@]}")
    left_out >"$lg/left-out"
    [ -s "$lg/left-out" ] || rm -f "$lg/left-out"
    while IFS= read -r line; do echo "federate.sh: round $r: left out $line" >&2; done < <(left_out)
    # 7. the record: what was merged, from what, how (recomputed by verify-round.sh)
    printf '%s\n' "${round_flags[@]}" >"$rd/merge-flags"
    [ "$outer" = fedavg ] || printf '%s\n' --server-state "../server-r$((r - 1)).safetensors" >>"$rd/merge-flags"
    BIN=$bin "$here/examples/round-record.sh" "$agg" "$r" >"$rd/record.json.tmp" ||
        { echo "federate.sh: round $r: the merge does not reproduce from its record" >&2; exit 1; }
    mv -f "$rd/record.json.tmp" "$rd/record.json"
    "$bin/photon-eval" --model "$next" "${tok_flags[@]}" --data "${val[@]}" --seq "$seq" --json | write_atomic "$agg/eval-r$r.json"
    read -r loss bpb < <(json "$agg/eval-r$r.json" loss bits_per_byte)
    secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}')
    line=$(printf '%d\t%d\t%.4f\t%.3f\t%s\t%d\t%s\t%d\t%d\t%d' "$r" "$(echo $chosen | wc -w)" "$loss" \
        "$(awk -v l="$loss" 'BEGIN{print exp(l)}')" "$(awk -v b="$bpb" 'BEGIN{if (b == "null") print "-"; else printf "%.4f", b}')" \
        "$moved" "$secs" "$merged" "$down" "$up")
    { cat "$agg/log.tsv"; printf '%s\n' "$line"; } | write_atomic "$agg/log.tsv"
    printf '%s\n' "$line"
    unset why
done
