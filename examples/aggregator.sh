#!/usr/bin/env bash
# aggregator.sh - the aggregator of a federation of independent parties
# (docs/PROTOCOL.md). It meets the clients only through the exchange
# directory: it publishes each round there (the global checkpoint and
# round-N/round.json), judges the signed deltas the clients upload into the
# round's inbox, merges those that pass at quorum, and publishes the next
# round. It needs no access to any client, and no client failure stops it.
#
# Its own files stay in --work, in the layout of examples/federate.sh
# (global-rN.safetensors, round-N/ with the merged deltas, merge-flags and
# record.json), so examples/verify-round.sh re-checks the whole chain.
# Killed at any moment and started again with the same command, it goes on
# where it stopped: a round is merged once, and nothing published changes.
#
# With --parent it is a group's aggregator (a sub-federation, WorldLM's
# federations of federations): to the parent it is one member, with --id and
# --key; to its own members it is their aggregator. Each round the parent
# opens, it republishes on its own exchange (same base, same training
# settings), merges its members' deltas into one group delta (photon-merge
# --delta-out: their token-weighted mean, their tokens, their audit), signs
# it and uploads it into the parent's inbox. The parent merges it like any
# member's delta, and the tree gives the flat merge within float rounding
# (docs/ALGORITHM.md). The outer optimizer runs at the root only.
set -euo pipefail

usage() {
    cat <<'TXT'
usage: examples/aggregator.sh --exchange DIR|HOST:PATH --allowed-signers FILE [options]

  --exchange DIR|HOST:PATH  the exchange directory every party reaches with rsync
  --allowed-signers FILE    the members: an OpenSSH allowed_signers file whose
                            principals are the client ids (namespace photon-delta)
  --work DIR                the aggregator's own files (default: aggregator)
  --rounds R                federated rounds (default 4)
  --min-clients K           fewest valid deltas a round merges (default 1)
  --sample K                ask K members each round (default: all), drawn from the
                            federation's seed (a group's: its id) and the round; the
                            round.json lists them, and the others sit the round out
  --deadline SECONDS        how long a round waits for every member (default 600); at
                            the deadline it merges if it holds K valid deltas, else it
                            keeps waiting and says so
  --poll SECONDS            how often the inbox is read (default 2)
  --val FILE...             held-out data each new global model is evaluated on
  model (round 0):          --vocab N --ctx N --layers N --heads N --width N --seed N
  local training:           --local-steps S (default 64) --batch B --seq T --lr X --warmup N
                            --min-lr-frac X --weight-decay X --reset-optimizer
  merge:                    --outer NAME --outer-lr X --momentum M --weighting tokens|uniform
                            robust (photon-merge --help): --aggregate RULE --trim F --byzantine F
                            --krum-select M --clip-norm X|auto[:F] --max-norm-ratio R --screen FILE
                            --screen-tokens N --screen-max-rise X --screen-from median|base
  compression:              --delta-format f32|bf16|int8|int4 (the members' deltas, error
                            feedback in their states; --no-error-feedback) --update-format F:
                            each round's update is published beside its checkpoint, and a
                            member holding the checkpoint before fetches that instead
  --personal GLOB           tensors every member keeps to itself (photon-train --personal;
                            repeat it): published in round.json for the members, and
                            declared to the merge, which refuses a delta carrying one
  a group (sub-federation): --parent DIR|HOST:PATH --id ID --key SSH_KEY: the parent's
                            exchange, this group's member id there, and the key that signs
                            its group deltas. The rounds, the model and the local training
                            come from the parent's round.json, so the options above for
                            those are refused; the merge is fedavg (the root's outer
                            optimizer runs once, at the root); --deadline should end before
                            the parent's. A round the parent closes first is dropped.
  --bin DIR                 the photon tools (default: bin/ beside this script)
  --ssh CMD                 the remote shell rsync uses for HOST:PATH (default: ssh)
  -h, --help

Prints one line per round on stdout (tab-separated: round, merged, refused,
held-out loss, bytes in, bytes out, seconds, and each refusal's reason);
progress on stderr. The settings that define the federation are kept in
WORK/federation.json: a restart with other ones is refused (--min-clients,
--deadline, --poll and --val may change; they apply from the next round
published).
TXT
}

here=$(cd "$(dirname "$0")/.." && pwd)
bin="$here/bin" EX="" EX_SSH=ssh work=aggregator rounds=4 min_clients=1 deadline=600 poll=2 signers=""
val=() model_flags=() train_flags=() merge_flags=() update_format="" outer=fedavg seed=1 steps=64 batch=8 seq=64
PARENT="" gid="" gkey="" personal=() root_only=() sample=""
die() { echo "aggregator.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in -h | --help | --reset-optimizer | --no-error-feedback | --val) ;; --*) [ $# -ge 2 ] || die "$1 needs a value" ;; esac
    case "$1" in # what a group takes from its parent
    --rounds | --val | --vocab | --ctx | --layers | --heads | --width | --seed | --local-steps | --batch | --seq | --lr | --warmup | \
        --min-lr-frac | --weight-decay | --reset-optimizer | --no-error-feedback | --delta-format | --update-format | --outer | \
        --outer-lr | --momentum) root_only+=("$1") ;;
    esac
    case "$1" in
    -h | --help) usage; exit 0 ;;
    --exchange) EX=$2; shift 2 ;;
    --allowed-signers) signers=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --min-clients) min_clients=$2; shift 2 ;;
    --sample) sample=$2; shift 2 ;;
    --deadline) deadline=$2; shift 2 ;;
    --poll) poll=$2; shift 2 ;;
    --val) shift; while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do val+=("$1"); shift; done ;;
    --vocab | --ctx | --layers | --heads | --width) model_flags+=("$1" "$2"); shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --local-steps) steps=$2; shift 2 ;;
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
    --personal) [[ "$2" =~ ^[A-Za-z0-9._*?,-]+$ ]] || die "--personal $2: a tensor-name glob is letters, digits, . _ - * ? (comma-separated)"
        personal+=("$2"); shift 2 ;; # split and sorted by ex_globs
    --parent) PARENT=$2; shift 2 ;;
    --id) gid=$2; shift 2 ;;
    --key) gkey=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --ssh) EX_SSH=$2; shift 2 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
done
if [ -n "$PARENT" ]; then
    [ ${#root_only[@]} -eq 0 ] || die "a group takes its rounds, model and training from the parent, and runs fedavg: no ${root_only[*]}"
    [[ "$gid" =~ ^[A-Za-z0-9._-]{1,63}$ ]] || die "--parent needs --id: this group's member id at the parent (letters, digits, . _ -)"
    [ -n "$gkey" ] && [ -f "$gkey" ] || die "--parent needs --key: the SSH private key that signs this group's deltas (no such file: '$gkey')"
elif [ -n "$gid" ] || [ -n "$gkey" ]; then
    die "--id and --key go with --parent: the member id and key of a group at its parent"
fi
[ -n "$EX" ] || die "--exchange is required"
[ -n "$signers" ] || die "--allowed-signers is required: every delta must be signed by its member"
[ -f "$signers" ] || die "--allowed-signers $signers: no such file"
for n in "$rounds" "$min_clients" "$deadline" "$steps" "$batch" "$seq" "$seed"; do
    [[ "$n" =~ ^[0-9]+$ ]] || die "expected a whole number, got '$n'"
done
[[ "$poll" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--poll expects seconds, got '$poll'"
[ "$rounds" -ge 1 ] && [ "$min_clients" -ge 1 ] && [ "$steps" -ge 1 ] || die "--rounds, --min-clients and --local-steps are at least 1"
for t in photon-train photon-merge photon-eval; do [ -x "$bin/$t" ] || die "$bin/$t not found: run make first"; done
for t in rsync python3 ssh-keygen sha256sum; do command -v "$t" >/dev/null || { echo "aggregator.sh: $t is needed" >&2; exit 1; }; done
# shellcheck source=exchange.sh
source "$here/examples/exchange.sh"
mapfile -t personal < <(ex_globs "${personal[@]}")
mapfile -t members < <(awk '!/^[[:space:]]*(#|$)/ {print $1}' "$signers" | tr ',' '\n' | sort -u)
[ ${#members[@]} -gt 0 ] || die "$signers lists no member"
for m in "${members[@]}"; do ex_id_valid "$m" || die "$signers: '$m' is not a client id (letters, digits, . _ -)"; done
[ "$min_clients" -le ${#members[@]} ] || die "--min-clients $min_clients is more than the ${#members[@]} members of $signers"
if [ -n "$sample" ]; then
    [[ "$sample" =~ ^[1-9][0-9]*$ ]] && [ "$sample" -le ${#members[@]} ] ||
        die "--sample expects 1 to ${#members[@]} (the members of $signers), got '$sample'"
    [ "$min_clients" -le "$sample" ] || die "--min-clients $min_clients is more than the $sample members --sample asks"
fi

log() { echo "aggregator.sh: $*" >&2; }
now() { date +%s; }
json() { python3 -c 'import json, sys; v = json.load(open(sys.argv[1]))[sys.argv[2]]; print("null" if v is None else v)' "$1" "$2"; }
mkdir -p "$work/logs"
work=$(cd "$work" && pwd)
# what a kill left half-written: a fetch (.part) and rsync's temporaries in the inbox mirrors
find "$work" -maxdepth 1 -name '*.part' -delete
rm -rf "$work/.parent" "$work"/.publish.* # a group's copy of its parent's round files (fetched again); publish's trees
find "$work" -mindepth 3 -maxdepth 3 -path "$work/round-*/inbox/.*" -type f -delete
declared=() # the personal tensors the merge refuses to see
for g in "${personal[@]}"; do declared+=(--personal "$g"); done
if [ -z "$PARENT" ]; then
    total_steps=$((rounds * steps))
    train_args=(--steps "$steps" --batch "$batch" --seq "$seq" --total-steps "$total_steps" "${train_flags[@]}")
    round_flags=(--outer "$outer" "${merge_flags[@]}" "${declared[@]}" --max-local-steps "$steps" --skip-bad)
    round_personal=("${personal[@]}")
else # set each round from the parent's round.json (group_round)
    rounds=0 seed=0 train_args=() round_flags=(--outer fedavg "${merge_flags[@]}" --group-id "$gid")
fi

# --- the federation's settings: fixed at the start, checked at each restart --

settings() {
    python3 - "$EX" "$rounds" "$seed" "$(ex_sha256 "$signers")" "$gid" "${#model_flags[@]}" "${model_flags[@]}" \
        "${#train_args[@]}" "${train_args[@]}" "${#round_flags[@]}" "${round_flags[@]}" "${#personal[@]}" "${personal[@]}" \
        "${members[@]}" "${sample:-all}" <<'PY'
import json, sys
a = sys.argv[1:]
out = {"rounds": int(a[1]), "seed": int(a[2]), "allowed_signers_sha256": a[3]}  # not the exchange: it may move
if a[4]:  # a group: its rounds, model and training are the parent's
    out = {"group_id": a[4], "allowed_signers_sha256": a[3]}
i = 5
for key in ("model_flags", "train_args", "merge_flags", "personal"):
    n = int(a[i]); out[key] = a[i + 1:i + 1 + n]; i += 1 + n
if a[4]:
    del out["model_flags"], out["train_args"]
if not out["personal"]:
    del out["personal"]  # the settings of a federation without personal tensors read as before
if a[-1] != "all":
    out["sample"] = int(a[-1])
a = a[:-1]
out["members"] = a[i:]
print(json.dumps(out, indent=1, sort_keys=True))
PY
}

check_settings() {
    local kept=$work/federation.json
    if [ ! -f "$kept" ]; then
        settings >"$kept.tmp" && mv "$kept.tmp" "$kept"
        return
    fi
    python3 - "$kept" <(settings) <<'PY' || exit 2
import json, sys
kept, now = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
for k in sorted(set(kept) | set(now)):
    if kept.get(k) != now.get(k):
        print(f"aggregator.sh: {sys.argv[1]} was started with {k} {kept.get(k)}, this command gives {now.get(k)};"
              " a federation keeps its settings (start a new one in a new --work and --exchange)", file=sys.stderr)
        sys.exit(1)
PY
}

# --- publishing ------------------------------------------------------------

# publish WHAT REL...: the files WORK/REL (REL ending in / : an empty
# directory) to the same paths on the exchange, in one rsync; a link that
# fails is tried again every poll interval
publish() {
    local what=$1 rel tree
    shift
    tree=$(mktemp -d "$work/.publish.XXXXXX")
    for rel in "$@"; do
        mkdir -p "$tree/$(dirname "$rel")"
        case $rel in
        */) mkdir -p "$tree/$rel" ;;
        *) ln "$work/$rel" "$tree/$rel" 2>/dev/null || cp "$work/$rel" "$tree/$rel" ;;
        esac
    done
    until ex_publish "$tree"; do log "publishing $what on $EX failed; trying again in ${poll}s"; sleep "$poll"; done
    rm -rf "$tree"
}

# draw R: the members asked to train round R, one a line: all of them, or
# with --sample K, K drawn from the federation's seed (a group's: its id)
# and R, so that anyone can redraw them
draw() {
    python3 - "$1" "${sample:-0}" "${gid:-$seed}" "${members[@]}" <<'PY'
import random, sys
r, k, key, members = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sorted(sys.argv[4:])
print("\n".join(sorted(random.Random(f"photon-sample:{key}:{r}").sample(members, k)) if k else members))
PY
}

# publish_round R: round R opens: its base checkpoint, the record of the
# round before, then round-R/round.json (what a client waits for) and its
# empty inbox. The round.json is written once, with the deadline it keeps.
publish_round() {
    local r=$1 base=global-r$(($1 - 1)).safetensors
    if [ ! -f "$work/round-$r/round.json" ]; then
        local asked=()
        mapfile -t asked < <(draw "$r")
        mkdir -p "$work/round-$r"
        update=null update_from=null
        if [ "$r" -gt 1 ] && [ -f "$work/update-r$((r - 1)).safetensors" ]; then
            update=update-r$((r - 1)).safetensors update_from=$(ex_sha256 "$work/global-r$((r - 2)).safetensors")
        fi
        python3 - "$r" "$base" "$(ex_sha256 "$work/$base")" "$(now)" "$deadline" "$min_clients" "$rounds" \
            "$update" "$update_from" "$(IFS=,; echo "${round_personal[*]}")" "${#asked[@]}" "${asked[@]}" \
            "${train_args[@]}" >"$work/round-$r/round.json.tmp" <<'PY'
import json, sys
a = sys.argv[1:]
n = int(a[10])
null = lambda v: None if v == "null" else v
rj = {
    "format": "photon-round", "version": 1, "round": int(a[0]), "rounds": int(a[6]),
    "base": a[1], "base_sha256": a[2], "published_unix": int(a[3]), "deadline_unix": int(a[3]) + int(a[4]),
    "update": null(a[7]), "update_from_sha256": null(a[8]),
    "min_clients": int(a[5]), "members": a[11:11 + n], "train_args": a[11 + n:]}
if a[9]:
    rj["personal"] = a[9].split(",")  # every member keeps these to itself (client.sh)
print(json.dumps(rj, indent=1, sort_keys=True))
PY
        mv "$work/round-$r/round.json.tmp" "$work/round-$r/round.json"
    fi
    if [ -n "$PARENT" ]; then publish "round $r's base" "$base" # each record went out when its round merged
    elif [ "$r" -gt 1 ] && [ -f "$work/update-r$((r - 1)).safetensors" ]; then
        publish "round $r's base" "$base" "update-r$((r - 1)).safetensors" "round-$((r - 1))/record.json"
    elif [ "$r" -gt 1 ]; then publish "round $r's base" "$base" "round-$((r - 1))/record.json"
    else publish "round $r's base" "$base"; fi
    publish "round $r" "round-$r/round.json" "round-$r/inbox/"
    log "round $r is open: $(json "$work/round-$r/round.json" min_clients) of $(asked_count "$r") members needed by $(date -d @"$(json "$work/round-$r/round.json" deadline_unix)" +%T)"
}

# publish_final: the last round's checkpoint and record, then final.json
publish_final() {
    local last=global-r$rounds.safetensors
    publish "the final model" "$last" "round-$rounds/record.json"
    if [ ! -f "$work/final.json" ]; then
        printf '{"format": "photon-final", "rounds": %d, "final": "%s", "final_sha256": "%s"}\n' \
            "$rounds" "$last" "$(ex_sha256 "$work/$last")" >"$work/final.json.tmp"
        mv "$work/final.json.tmp" "$work/final.json"
    fi
    publish final.json final.json
}

# --- judging the deliveries --------------------------------------------------

declare -A verdict reason judged kind
# judge R ID: a member's delivery in the round's inbox mirror, checked as
# the merge will check it: the signature of the key its id is registered
# with (examples/delta-sig.sh), the id it was delivered under, then
# photon-merge --check against the round's base.
judge() {
    local r=$1 id=$2 inbox=$work/round-$r/inbox delta out signer
    delta=$inbox/$id.safetensors
    judged[$id]=$(delivery_sha "$r" "$id")
    kind[$id]=signature
    if ! signer=$(BIN=$bin "$here/examples/delta-sig.sh" verify "$work/allowed_signers" "$delta" 2>"$work/logs/judge.err"); then
        out=$(tail -n 1 "$work/logs/judge.err")
        verdict[$id]=refused reason[$id]=${out##*refused: }
        return
    fi
    signer=${signer%% *}
    if [ "$signer" != "$id" ]; then
        verdict[$id]=refused kind[$id]=name reason[$id]="delivered as '$id' but it is the delta of '$signer'"
        return
    fi
    kind[$id]=merge
    local decl=() g
    for g in "${round_personal[@]}"; do decl+=(--personal "$g"); done
    [ -z "$PARENT" ] || decl+=(--group-id "$gid") # as the group's merge judges: the same tensors from every member
    if out=$("$bin/photon-merge" --base "$work/global-r$((r - 1)).safetensors" --check --max-local-steps "$steps" \
        "${decl[@]}" "$delta" 2>/dev/null); then
        verdict[$id]=accepted reason[$id]=""
    else
        verdict[$id]=refused
        reason[$id]=$(python3 -c 'import json, sys; print(json.loads(sys.stdin.readline())["reason"])' <<<"$out" 2>/dev/null ||
            echo "photon-merge cannot check it")
        reason[$id]=${reason[$id]#"$delta: "}
    fi
}

# delivery_sha R ID: what identifies a delivery: the hashes of the delta and of its signature
delivery_sha() {
    local f=$work/round-$1/inbox/$2.safetensors
    echo "$(ex_sha256 "$f")-$([ -f "$f.sig" ] && ex_sha256 "$f.sig")"
}

# fetch_inbox R: the round's inbox on the exchange, mirrored (names that
# start with '.' are uploads still under way); prints the ids delivered
fetch_inbox() {
    local r=$1 f id
    mkdir -p "$work/round-$r/inbox"
    ex_rsync -a --exclude='.*' "$EX/round-$r/inbox/" "$work/round-$r/inbox/" 2>/dev/null ||
        log "round $r: cannot read the inbox on $EX (trying again)"
    for f in "$work/round-$r/inbox"/*.safetensors; do
        [ -e "$f" ] || continue
        id=${f##*/} id=${id%.safetensors}
        echo "$id"
    done
}

asked_count() { python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["members"]))' "$work/round-$1/round.json"; }

accepted_count() {
    local id n=0
    for id in "${!verdict[@]}"; do [ "${verdict[$id]}" = accepted ] && n=$((n + 1)); done
    echo "$n"
}

# collect R: waits until every member has delivered a valid delta, or the
# deadline has passed with at least the round's minimum; a group's fails
# when the parent closes round R first
collect() {
    local r=$1 dl k id said_wait=0 n sha
    dl=$(json "$work/round-$r/round.json" deadline_unix)
    k=$(json "$work/round-$r/round.json" min_clients)
    verdict=() reason=() judged=() kind=()
    declare -A noted=() asked=() member=()
    for id in "${members[@]}"; do member[$id]=1; done
    for id in $(python3 -c 'import json, sys; print(" ".join(json.load(open(sys.argv[1]))["members"]))' "$work/round-$r/round.json"); do
        asked[$id]=1
    done
    while true; do
        for id in $(fetch_inbox "$r"); do
            if ! ex_id_valid "$id"; then # not a name photon-merge could record
                [ -n "${noted[$id]:-}" ] || { noted[$id]=1; log "round $r: '$id.safetensors' in the inbox is not named by a client id; ignored"; }
                continue
            fi
            [ "${verdict[$id]:-}" = accepted ] && continue # a valid delivery is final
            if [ -n "${member[$id]:-}" ] && [ -z "${asked[$id]:-}" ]; then # a member outside the round's sample: left in inbox/, out of the merge and the record
                [ -n "${noted[$id]:-}" ] || { noted[$id]=1; log "round $r: $id was not asked to train this round; its delivery is left out"; }
                continue
            fi
            sha=$(delivery_sha "$r" "$id")
            [ "${judged[$id]:-}" = "$sha" ] && continue
            judge "$r" "$id"
            if [ "${verdict[$id]}" = accepted ]; then log "round $r: $id delivered a valid delta"
            else log "round $r: $id's delta is refused: ${reason[$id]}"; fi
        done
        n=$(accepted_count) # members only: a signature verifies only with a member's key
        [ "$n" -eq ${#asked[@]} ] && return
        [ -z "$PARENT" ] || ! parent_moved_on "$r" || return 1
        if [ "$(now)" -ge "$dl" ]; then
            [ "$n" -ge "$k" ] && return
            if [ $said_wait = 0 ]; then
                log "round $r: the deadline has passed with $n valid delta(s); $k needed, waiting for more"
                said_wait=1
            fi
        fi
        sleep "$poll"
    done
}

# --- merging -----------------------------------------------------------------

# merge R: the judged deliveries become round-R/delta-ID.safetensors (with
# their signatures), merged into global-rR; the round's record follows
merge_round() {
    local r=$1 id cands=() state_flags=() dir=$work/round-$r k
    k=$(json "$dir/round.json" min_clients)
    rm -f "$dir"/delta-*
    for id in $(printf '%s\n' "${!verdict[@]}" | sort); do
        [ "${kind[$id]}" = name ] && continue # not under its own name: it stays in inbox/, out of the record
        cp "$dir/inbox/$id.safetensors" "$dir/delta-$id.safetensors"
        [ -f "$dir/inbox/$id.safetensors.sig" ] && cp "$dir/inbox/$id.safetensors.sig" "$dir/delta-$id.safetensors.sig"
        [ "$(ex_sha256 "$dir/delta-$id.safetensors")" = "${judged[$id]%%-*}" ] || { log "round $r: $id's delta changed while it was judged"; exit 1; }
        [ "${kind[$id]}" = signature ] || cands+=("$dir/delta-$id.safetensors")
    done
    if [ "$outer" != fedavg ]; then
        state_flags=(--server-state "$work/server-r$((r - 1)).safetensors" --server-state-out "$work/server-r$r.safetensors")
    fi
    { printf '%s\n' "${round_flags[@]}" --min-clients "$k"
      [ "$outer" = fedavg ] || printf '%s\n' --server-state "../server-r$((r - 1)).safetensors"; } >"$dir/merge-flags"
    mkdir -p "$dir/logs"
    update_flags=()
    [ -z "$update_format" ] || update_flags=(--update-out "$work/update-r$r.safetensors")
    local out=(--out "$work/global-r$r.safetensors")
    if [ -n "$PARENT" ]; then # the group delta goes up; the --group-id is in round_flags
        rm -f "$dir/aggregate.safetensors" "$dir/aggregate.safetensors.sig" "$dir/delivered"
        out=(--delta-out "$dir/aggregate.safetensors")
    fi
    "$bin/photon-merge" --base "$work/global-r$((r - 1)).safetensors" "${out[@]}" \
        "${round_flags[@]}" --min-clients "$k" "${state_flags[@]}" "${update_flags[@]}" --json "${cands[@]}" \
        >"$dir/merge.json" 2>"$dir/logs/merge.log" ||
        { log "round $r: the merge failed: $(tail -n 1 "$dir/logs/merge.log")"; exit 1; }
    BIN=$bin "$here/examples/round-record.sh" "$work" "$r" >"$dir/record.json.tmp" ||
        { log "round $r: the merge does not reproduce from its record"; exit 1; }
    mv "$dir/record.json.tmp" "$dir/record.json"
}

# the round's line: on stdout, and once in WORK/log.tsv
report_round() {
    local r=$1 dir=$work/round-$1 loss="-" merged refused reasons secs bytes_in=0 bytes_out f
    if [ ${#val[@]} -gt 0 ]; then
        if [ ! -s "$work/eval-r$r.json" ]; then
            if "$bin/photon-eval" --model "$work/global-r$r.safetensors" --data "${val[@]}" --seq "$seq" --json \
                >"$work/eval-r$r.json.tmp" 2>"$work/logs/eval-r$r.log"; then
                mv "$work/eval-r$r.json.tmp" "$work/eval-r$r.json"
            else
                log "round $r: the evaluation failed: $(tail -n 1 "$work/logs/eval-r$r.log")"
            fi
        fi
        [ ! -s "$work/eval-r$r.json" ] ||
            loss=$(python3 -c 'import json, sys; print("%.4f" % json.load(open(sys.argv[1]))["loss"])' "$work/eval-r$r.json")
    fi
    for f in "$dir"/inbox/*; do [ -f "$f" ] && bytes_in=$((bytes_in + $(ex_bytes "$f"))); done
    if [ -n "$PARENT" ]; then # the group delta and its signature, up; the record, down
        bytes_out=$(( $(ex_bytes "$dir/aggregate.safetensors") + $(ex_bytes "$dir/aggregate.safetensors.sig") + $(ex_bytes "$dir/record.json") ))
    else
        bytes_out=$(( $(ex_bytes "$work/global-r$r.safetensors") + $(ex_bytes "$dir/record.json") ))
    fi
    [ ! -f "$work/update-r$r.safetensors" ] || bytes_out=$((bytes_out + $(ex_bytes "$work/update-r$r.safetensors")))
    read -r merged refused reasons < <(python3 - "$dir/record.json" "$dir/inbox" "$dir/round.json" "${members[@]}" <<'PY'
import json, os, sys
rec = json.load(open(sys.argv[1]))
asked = json.load(open(sys.argv[3]))["members"]
merged = [d for d in rec["deltas"] if d["accepted"]]
refused = [d for d in rec["deltas"] if not d["accepted"]]
recorded = {d["file"][len("delta-"):-len(".safetensors")] for d in rec["deltas"]}
reasons = ["%s: %s" % (d["file"][len("delta-"):-len(".safetensors")], d["reason"]) for d in refused]
for f in sorted(os.listdir(sys.argv[2])):  # not asked, or delivered under another member's name: not in the record
    who = f[:-len(".safetensors")]
    if f.endswith(".safetensors") and who not in recorded and who in sys.argv[4:]:
        reasons.append("%s: %s" % (who, "delivered under another member's name" if who in asked else "not asked to train this round"))
print(len(merged), len(reasons), "; ".join(reasons).replace("\t", " ").replace("\n", " ") or "-")
PY
)
    secs=$(( $(now) - $(json "$dir/round.json" published_unix) ))
    line=$(printf '%d\t%d\t%d\t%s\t%d\t%d\t%d\t%s' "$r" "$merged" "$refused" "$loss" "$bytes_in" "$bytes_out" "$secs" "$reasons")
    echo "$line"
    grep -q "^$r	" "$work/log.tsv" 2>/dev/null || echo "$line" >>"$work/log.tsv"
}

# --- a new aggregator machine: the federation's rounds, from the exchange -----

# adopt: this --work holds nothing, the exchange holds a federation with
# these settings: its published checkpoints, rounds, deliveries and records
# become this --work, and verify-round.sh must pass on them before it goes on
adopt() {
    local meta=$1 r last=0 rec
    [ "$outer" = fedavg ] || die "$EX holds a federation, and --outer $outer keeps its server state only in the --work that ran it"
    python3 - "$meta/federation.json" <(settings) <<'PY' || exit 2
import json, sys
kept, now = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
for k in sorted(set(kept) | set(now)):
    if kept.get(k) != now.get(k):
        print(f"aggregator.sh: the exchange's federation.json was started with {k} {kept.get(k)}, this command gives {now.get(k)}",
              file=sys.stderr)
        sys.exit(1)
PY
    log "$work holds nothing of this federation: taking its rounds from $EX"
    ex_get global-r0.safetensors "$work/global-r0.safetensors" || die "cannot fetch global-r0.safetensors from $EX"
    for ((r = 1; r <= $(ex_latest_round "$meta"); r++)); do
        mkdir -p "$work/round-$r/inbox"
        cp "$meta/round-$r/round.json" "$work/round-$r/round.json"
        [ -f "$meta/round-$r/record.json" ] || continue
        ex_get "global-r$r.safetensors" "$work/global-r$r.safetensors" || die "cannot fetch global-r$r.safetensors from $EX"
        ex_rsync -a --exclude='.*' "$EX/round-$r/inbox/" "$work/round-$r/inbox/" || die "cannot fetch round $r's inbox from $EX"
        python3 - "$meta/round-$r/record.json" "$work/round-$r" <<'PY' || die "round $r: the exchange's record does not match its inbox"
import json, shutil, sys, hashlib
rec, dir = json.load(open(sys.argv[1])), sys.argv[2]
for d in rec["deltas"]:
    src = dir + "/inbox/" + d["file"][len("delta-"):]
    if hashlib.sha256(open(src, "rb").read()).hexdigest() != d["sha256"]:
        sys.exit(f"{src} is not the delta the record names")
    shutil.copyfile(src, dir + "/" + d["file"])
    if d["signature"]:
        shutil.copyfile(src + ".sig", dir + "/" + d["signature"])
open(dir + "/merge-flags", "w").write("".join(f + "\n" for f in rec["merge_flags"]))
PY
        cp "$meta/round-$r/record.json" "$work/round-$r/record.json"
        last=$r
    done
    if [ "$last" -gt 0 ]; then
        BIN=$bin "$here/examples/verify-round.sh" "$work" >/dev/null 2>"$work/logs/adopt.log" ||
            die "the rounds on $EX do not verify: $(head -n 1 "$work/logs/adopt.log")"
    fi
    cp "$meta/federation.json" "$work/federation.json"
    log "took rounds 1 to $last from $EX; every one verifies"
}

# --- a group: one member of its parent ---------------------------------------

parent_meta=$work/.parent
# on_parent CMD...: an exchange function (exchange.sh) run against the parent's exchange
on_parent() { EX=$PARENT "$@"; }

# the parent has closed round R (a later round is open, or it ended)
parent_moved_on() {
    on_parent ex_meta "$parent_meta" 2>/dev/null || return 1
    [ "$(ex_latest_round "$parent_meta")" -gt "$1" ] || [ -f "$parent_meta/final.json" ]
}

# parent_fetch NAME SHA: the parent's checkpoint NAME as WORK/NAME, checked
# against the SHA-256 the parent's round.json or final.json gives (kept if
# it already is that one); fails, saying why, for the caller to try again
parent_fetch() {
    local name=$1 sha=$2 got
    [ ! -f "$work/$name" ] || [ "$(ex_sha256 "$work/$name")" != "$sha" ] || return 0
    on_parent ex_get "$name" "$work/$name.part" 2>/dev/null || { log "cannot fetch $name from $PARENT (trying again)"; return 1; }
    got=$(ex_sha256 "$work/$name.part")
    if [ "$got" != "$sha" ]; then
        log "$PARENT/$name has SHA-256 $got, the parent says $sha (trying again)"
        rm -f "$work/$name.part"
        return 1
    fi
    mv "$work/$name.part" "$work/$name"
}

# group_round R: the parent's round R, for this group: its round.json
# checked (ex_round_args) and its base fetched and checked, the round
# republished here with the same base and training, the members' deltas
# collected and merged into the group delta, its record published, and the
# group delta sent up. Fails (to be tried again) when the parent's round
# cannot be taken yet.
group_round() {
    local r=$1 lines=() base sha g
    mapfile -t lines < <(ex_round_args "$parent_meta/round-$r/round.json" "$r") || true
    if [ ${#lines[@]} -lt 6 ]; then
        log "round $r: the parent's $(ex_round_args "$parent_meta/round-$r/round.json" "$r" 2>&1 >/dev/null | tail -n 1) (waiting)"
        return 1
    fi
    base=${lines[0]} sha=${lines[1]} train_args=("${lines[@]:5}")
    [ "$base" = "global-r$((r - 1)).safetensors" ] || { log "round $r: the parent's round trains from $base, not global-r$((r - 1)) (waiting)"; return 1; }
    rounds=$(json "$parent_meta/round-$r/round.json" rounds)
    steps=$(printf '%s\n' "${train_args[@]}" | grep -A1 -x -- --steps | tail -n 1)
    mapfile -t round_personal < <(ex_globs "${lines[4]}" "${personal[@]}") # the parent's and the group's own
    round_flags=(--outer fedavg "${merge_flags[@]}" --group-id "$gid")
    for g in "${round_personal[@]}"; do round_flags+=(--personal "$g"); done
    round_flags+=(--max-local-steps "$steps" --skip-bad)
    parent_fetch "$base" "$sha" || return 1
    publish_round "$r"
    if ! collect "$r"; then
        log "round $r: the parent closed it before this group merged; nothing goes up"
        touch "$work/round-$r/dropped"
        return 0
    fi
    merge_round "$r"
    publish "round $r's record" "round-$r/record.json"
    send_up "$r"
}

# send_up R: the group delta, signed with the group's key, into the
# parent's round-R inbox under the group's id (the signature first, as a
# client uploads); dropped if the parent closes the round first
send_up() {
    local r=$1 dir=$work/round-$1
    rm -f "$dir/aggregate.safetensors.sig" # ed25519 signs the same bytes alike: a restart signs again
    ssh-keygen -Y sign -q -f "$gkey" -n photon-delta "$dir/aggregate.safetensors" </dev/null ||
        { echo "aggregator.sh: cannot sign with $gkey" >&2; exit 1; }
    until on_parent ex_upload "$dir/aggregate.safetensors.sig" "round-$r/inbox/$gid.safetensors.sig" 2>"$work/logs/upload.log" &&
        on_parent ex_upload "$dir/aggregate.safetensors" "round-$r/inbox/$gid.safetensors" 2>>"$work/logs/upload.log"; do
        if parent_moved_on "$r"; then
            log "round $r: the parent closed it before the group delta arrived; it is dropped"
            touch "$dir/dropped"
            return 0
        fi
        log "round $r: sending the group delta up failed: $(tail -n 1 "$work/logs/upload.log") (trying again)"
        sleep "$poll"
    done
    touch "$dir/delivered"
    report_round "$r"
}

# group_final: the parent has ended: its final checkpoint, checked against
# its final.json, is published here with this exchange's own final.json,
# and the members end too
group_final() {
    local name sha
    name=$(json "$parent_meta/final.json" final) sha=$(json "$parent_meta/final.json" final_sha256)
    [[ "$name" =~ ^global-r[0-9]+\.safetensors$ ]] || die "the parent's final.json names '$name', not a checkpoint"
    until parent_fetch "$name" "$sha"; do sleep "$poll"; done
    rounds=$(json "$parent_meta/final.json" rounds)
    publish "the final model" "$name"
    if [ ! -f "$work/final.json" ]; then
        printf '{"format": "photon-final", "rounds": %d, "final": "%s", "final_sha256": "%s"}\n' "$rounds" "$name" "$sha" \
            >"$work/final.json.tmp"
        mv "$work/final.json.tmp" "$work/final.json"
    fi
    publish final.json final.json
    log "the parent's federation is complete: $work/$name ($rounds rounds)"
}

# group_main: follows the parent's rounds until it ends. A round is taken
# once: merged and sent up (round-R/delivered), or dropped (round-R/dropped);
# a restart sends up a group delta whose upload was cut short.
group_main() {
    local r
    while true; do
        if ! on_parent ex_meta "$parent_meta" 2>"$work/logs/parent.log"; then
            log "cannot read the parent $PARENT: $(tail -n 1 "$work/logs/parent.log") (trying again)"
            sleep "$poll"
            continue
        fi
        if [ -f "$parent_meta/final.json" ]; then group_final; return; fi
        r=$(ex_latest_round "$parent_meta")
        if [ "$r" -eq 0 ] || [ -f "$work/round-$r/delivered" ] || [ -f "$work/round-$r/dropped" ]; then
            sleep "$poll"
        elif [ -f "$work/round-$r/record.json" ] && [ -f "$work/round-$r/aggregate.safetensors" ]; then
            send_up "$r"
        else
            group_round "$r" || sleep "$poll"
        fi
    done
}

# --- the federation ----------------------------------------------------------

header=$'round\tmerged\trefused\teval_loss\tbytes_in\tbytes_out\tseconds\treasons'
if [ ! -f "$work/federation.json" ]; then
    ex_meta "$work/.exchange"
    if [ -f "$work/.exchange/federation.json" ] && [ -n "$PARENT" ]; then
        die "$EX already holds a federation: a group's aggregator goes on only from the --work that ran it"
    elif [ -f "$work/.exchange/federation.json" ]; then
        cp "$signers" "$work/allowed_signers" # the rounds' records refer to it
        adopt "$work/.exchange"
    elif [ "$(ex_latest_round "$work/.exchange")" != 0 ] || [ -f "$work/.exchange/final.json" ]; then
        die "$EX holds rounds of a federation without its federation.json; it is not this aggregator's"
    fi
    rm -rf "$work/.exchange"
fi
check_settings
cp "$signers" "$work/allowed_signers.tmp" && mv "$work/allowed_signers.tmp" "$work/allowed_signers"
if [ -z "$PARENT" ] && [ ! -f "$work/global-r0.safetensors" ]; then # a group's comes from its parent
    "$bin/photon-train" --init "${model_flags[@]}" --seed "$seed" --steps 0 --out "$work/global-r0.safetensors" 2>/dev/null
fi
publish federation.json federation.json # the settings, for an aggregator that has to start again elsewhere
echo "$header"
[ -f "$work/log.tsv" ] || echo "$header" >"$work/log.tsv"
if [ -n "$PARENT" ]; then
    group_main
    exit 0
fi

last=0 # the last round merged with its record; a merge cut short is done again
while [ -f "$work/global-r$((last + 1)).safetensors" ] && [ -f "$work/round-$((last + 1))/record.json" ]; do last=$((last + 1)); done
[ "$last" -le "$rounds" ] || die "$work holds $last rounds, more than --rounds $rounds"
if [ -f "$work/global-r$((last + 1)).safetensors" ]; then
    log "round $((last + 1)): its merge was cut short; merging it again"
    rm -f "$work/global-r$((last + 1)).safetensors" "$work/server-r$((last + 1)).safetensors"
fi
[ "$last" -eq 0 ] || report_round "$last" >/dev/null # its line, if a kill came before it
for ((r = last + 1; r <= rounds; r++)); do
    publish_round "$r"
    collect "$r"
    merge_round "$r"
    report_round "$r"
done
publish_final
log "the federation is complete: $work/global-r$rounds.safetensors ($rounds rounds)"
