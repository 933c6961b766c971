#!/usr/bin/env bash
# client.sh - one silo of a federation of independent parties
# (docs/PROTOCOL.md). It needs only rsync (over outbound ssh, for
# HOST:PATH) to the exchange: it waits for a round it has not trained,
# fetches the round's global checkpoint and checks it against round.json,
# trains with its own client state (AdamW moments and data position kept
# from round to round), signs its delta with its SSH key and uploads it into
# the round's inbox, then waits for the next round; it ends after the last.
# If the federation moved on while it trained, it drops that delta and
# trains the round now open from the new global model, keeping its state.
# Its data, state and key never leave --work and --data.
#
# Killed at any moment and started again with the same command, it goes on:
# photon-train finishes or skips a delta it already made for the round's
# base, and an upload cut short is sent again.
set -euo pipefail

usage() {
    cat <<'TXT'
usage: examples/client.sh --exchange DIR|HOST:PATH --id ID --key SSH_KEY --data FILE... [options]

  --exchange DIR|HOST:PATH  the exchange directory, reached with rsync (over ssh)
  --id ID                   this member's client id, as the federation's
                            allowed_signers names it (letters, digits, . _ -)
  --key SSH_KEY             the SSH private key that signs this member's deltas
                            (ssh-keygen -Y sign, namespace photon-delta)
  --data FILE...            this member's training data (text or token shards)
  --personal GLOB           tensors this member keeps to itself (photon-train --personal;
                            repeat it): never uploaded, laid over each new global model.
                            The round's own "personal" globs (a group's) are kept too
  --time-budget SECONDS     train as many of the round's local steps as fit (a slow
                            silo does less work; the merge weighs it by its tokens)
  --work DIR                this member's files: state, checkpoint, delta, logs
                            (default: client-ID)
  --poll SECONDS            how often the exchange is read (default 2)
  --threads N               CPU threads for training (default: one per core)
  --bin DIR                 the photon tools (default: bin/ beside this script)
  --ssh CMD                 the remote shell rsync uses for HOST:PATH (default: ssh)
  -h, --help

Prints one line per round it delivered on stdout (tab-separated: round,
steps, tokens, final training loss, bytes up, bytes down, seconds); progress
on stderr. The settings of each round (local steps, batch, sequence, learning
rate and schedule) come from the aggregator's round.json; a client takes only
those photon-train flags from it.
TXT
}

here=$(cd "$(dirname "$0")/.." && pwd)
bin="$here/bin" EX="" EX_SSH=ssh id="" key="" data=() budget="" work="" poll=2 threads="" own_personal=()
die() { echo "client.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in -h | --help | --data) ;; --*) [ $# -ge 2 ] || die "$1 needs a value" ;; esac
    case "$1" in
    -h | --help) usage; exit 0 ;;
    --exchange) EX=$2; shift 2 ;;
    --id) id=$2; shift 2 ;;
    --key) key=$2; shift 2 ;;
    --data) shift; while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do data+=("$1"); shift; done ;;
    --time-budget) budget=$2; shift 2 ;;
    --personal) own_personal+=("$2"); shift 2 ;;
    --work) work=$2; shift 2 ;;
    --poll) poll=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --ssh) EX_SSH=$2; shift 2 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
done
# shellcheck source=exchange.sh
source "$here/examples/exchange.sh"
[ -n "$EX" ] || die "--exchange is required"
ex_id_valid "$id" || die "--id must be 1 to 63 letters, digits, '.', '_' or '-'"
[ -n "$key" ] && [ -f "$key" ] || die "--key: give this member's SSH private key (no such file: '$key')"
[ ${#data[@]} -gt 0 ] || die "--data is required"
for f in "${data[@]}"; do [ -f "$f" ] || die "--data $f: no such file"; done
for g in "${own_personal[@]}"; do [[ "$g" =~ ^[A-Za-z0-9._*?,-]+$ ]] || die "--personal $g: a tensor-name glob is letters, digits, . _ - * ? (comma-separated)"; done
[ -z "$budget" ] || [[ "$budget" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--time-budget expects seconds, got '$budget'"
[[ "$poll" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--poll expects seconds, got '$poll'"
[ -z "$threads" ] || [[ "$threads" =~ ^[0-9]+$ ]] || die "--threads expects a number, got '$threads'"
[ -x "$bin/photon-train" ] || die "$bin/photon-train not found: run make first"
for t in rsync python3 ssh-keygen sha256sum; do command -v "$t" >/dev/null || { echo "client.sh: $t is needed" >&2; exit 1; }; done
work=${work:-client-$id}
mkdir -p "$work/logs"
work=$(cd "$work" && pwd)
meta=$work/exchange
log() { echo "client.sh: $id: $*" >&2; }
now() { date +%s.%N; }

# round_args R: round R's round.json, checked (ex_round_args)
round_args() { ex_round_args "$meta/round-$1/round.json" "$1"; }

# rounds this member delivered (one number a line), and the last of them
delivered() { tail -n 1 "$work/delivered" 2>/dev/null || echo 0; }

# fetch_base NAME SHA: the round's checkpoint as work/global.safetensors,
# checked against the hash round.json gives (kept if it already is that one)
fetch_base() {
    local name=$1 sha=$2 got
    if [ -f "$work/global.safetensors" ] && [ "$(ex_sha256 "$work/global.safetensors")" = "$sha" ]; then return 0; fi
    ex_get "$name" "$work/global.safetensors.part" || { log "cannot fetch $name from $EX (trying again)"; return 1; }
    got=$(ex_sha256 "$work/global.safetensors.part")
    if [ "$got" != "$sha" ]; then
        log "$EX/$name has SHA-256 $got, round.json says $sha: not trained from (trying again)"
        rm -f "$work/global.safetensors.part"
        return 1
    fi
    bytes_down=$((bytes_down + $(ex_bytes "$work/global.safetensors.part")))
    mv "$work/global.safetensors.part" "$work/global.safetensors"
}

# fetch_update NAME FROM SHA: when this member holds the checkpoint FROM
# (last round's base) and the round offers the update NAME made from it,
# rebuild the round's base from the update (photon-merge --apply checks it
# against the SHA-256 the update names; then SHA, round.json's, is checked
# too); else fail, and fetch_base fetches the whole checkpoint
fetch_update() {
    local name=$1 from=$2 sha=$3
    [ "$name" != - ] && [ -f "$work/global.safetensors" ] && [ "$(ex_sha256 "$work/global.safetensors")" = "$from" ] || return 1
    ex_get "$name" "$work/update.safetensors.part" || return 1
    if "$bin/photon-merge" --base "$work/global.safetensors" --apply "$work/update.safetensors.part" \
        --out "$work/global.next.safetensors" 2>"$work/logs/apply.log" &&
        [ "$(ex_sha256 "$work/global.next.safetensors")" = "$sha" ]; then
        bytes_down=$((bytes_down + $(ex_bytes "$work/update.safetensors.part")))
        mv "$work/global.next.safetensors" "$work/global.safetensors"
        rm -f "$work/update.safetensors.part"
        return 0
    fi
    log "the update $name did not rebuild the round's checkpoint: $(tail -n 1 "$work/logs/apply.log") (fetching it whole)"
    rm -f "$work/update.safetensors.part" "$work/global.next.safetensors"
    return 1
}

# personal_flags GLOBS: the photon-train --personal flags for this member's
# own globs and the round's (GLOBS, comma-joined or '-'), in one order
# (ex_globs), so that the same choice gives the same flags every round (the
# state refuses another set)
personal_flags() {
    local g
    personal=()
    while read -r g; do personal+=(--personal "$g"); done < <(ex_globs "${own_personal[@]}" "$1")
}

# train R: photon-train from the round's base with this member's state
train() {
    local r=$1 extra=("${personal[@]}")
    [ -z "$budget" ] || extra+=(--time-budget "$budget")
    [ -z "$threads" ] || extra+=(--threads "$threads")
    "$bin/photon-train" --model "$work/global.safetensors" --data "${data[@]}" --state "$work/state.safetensors" \
        "${args[@]}" "${extra[@]}" --delta-out "$work/delta.safetensors" --client-id "$id" --json \
        >"$work/logs/train-r$r.json" 2>"$work/logs/train-r$r.log"
}

# the federation moved on (a later round is open, or it ended)
moved_on() {
    ex_meta "$meta" 2>/dev/null || return 1
    [ "$(ex_latest_round "$meta")" -gt "$1" ] || [ -f "$meta/final.json" ]
}

bytes_down=0 sat_out=0
while true; do
    if ! ex_meta "$meta" 2>"$work/logs/exchange.log"; then
        log "cannot read $EX: $(tail -n 1 "$work/logs/exchange.log") (trying again)"
        sleep "$poll"
        continue
    fi
    if [ -f "$meta/final.json" ]; then
        log "the federation has ended after round $(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["rounds"])' "$meta/final.json")"
        exit 0
    fi
    r=$(ex_latest_round "$meta")
    if [ "$r" -eq 0 ] || [ "$r" -le "$(delivered)" ] || [ "$r" = "$sat_out" ]; then sleep "$poll"; continue; fi
    start=$(now)
    mapfile -t lines < <(round_args "$r") || true
    if [ ${#lines[@]} -lt 6 ]; then
        log "round $r: $(round_args "$r" 2>&1 >/dev/null | tail -n 1) (waiting for a round it can take)"
        sleep "$poll"
        continue
    fi
    if ! python3 -c 'import json, sys; sys.exit(sys.argv[2] not in json.load(open(sys.argv[1]))["members"])' \
        "$meta/round-$r/round.json" "$id"; then
        log "round $r: not asked to train this round (the aggregator drew other members); waiting for the next"
        sat_out=$r
        continue
    fi
    base=${lines[0]} base_sha=${lines[1]} update=${lines[2]} since=${lines[3]} args=("${lines[@]:5}")
    personal_flags "${lines[4]}"
    fetch_update "$update" "$since" "$base_sha" || fetch_base "$base" "$base_sha" || { sleep "$poll"; continue; }
    log "round $r: training from $base"
    if ! train "$r"; then
        echo "client.sh: $id: round $r: photon-train failed: $(tail -n 1 "$work/logs/train-r$r.log")" >&2
        exit 1
    fi
    if moved_on "$r"; then
        log "round $r closed while this member trained; its delta is dropped (the state is kept)"
        rm -f "$work/delta.safetensors" "$work/delta.safetensors.sig"
        continue
    fi
    rm -f "$work/delta.safetensors.sig"
    ssh-keygen -Y sign -q -f "$key" -n photon-delta "$work/delta.safetensors" </dev/null ||
        { echo "client.sh: $id: cannot sign with $key" >&2; exit 1; }
    # the signature first: a delta under its final name is a complete delivery
    if ! ex_upload "$work/delta.safetensors.sig" "round-$r/inbox/$id.safetensors.sig" 2>"$work/logs/upload.log" ||
        ! ex_upload "$work/delta.safetensors" "round-$r/inbox/$id.safetensors" 2>>"$work/logs/upload.log"; then
        log "round $r: the upload failed: $(tail -n 1 "$work/logs/upload.log") (trying again)"
        sleep "$poll"
        continue
    fi
    echo "$r" >>"$work/delivered"
    up=$(($(ex_bytes "$work/delta.safetensors") + $(ex_bytes "$work/delta.safetensors.sig")))
    python3 - "$work/logs/train-r$r.json" "$r" "$up" "$bytes_down" "$start" "$(now)" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
loss = t.get("final_loss")
print("%s\t%d\t%d\t%s\t%s\t%s\t%.1f" % (sys.argv[2], t["steps"], t["tokens"], "-" if loss is None else "%.4f" % loss,
                                       sys.argv[3], sys.argv[4], float(sys.argv[6]) - float(sys.argv[5])))
PY
    log "round $r: delivered"
    bytes_down=0
done
