#!/usr/bin/env bash
# round-record.sh AGG ROUND - the record of one merged round of
# examples/federate.sh, on stdout as JSON: everything needed to re-check it.
#
# AGG holds global-rN.safetensors (and server-rN.safetensors for outer
# optimizers with state), allowed_signers (when deltas were signed) and
# round-N/: the deltas delta-ID.safetensors, their signatures .sig, and
# merge-flags (the photon-merge options used, one per line). The record
# names the base and next checkpoints and their SHA-256, each delta with its
# SHA-256, signature and signer, or the reason it was refused (its signature,
# then photon-merge's checks), and the merge settings. It is recomputed from
# the files alone: federate.sh writes it as record.json after each merge, and
# verify-round.sh recomputes and compares it, so a change to any kept file
# shows. Exits 1 if the merge does not reproduce the next checkpoint.
#
# A round of groups (federate.sh --group) also holds, per group NAME,
# group-NAME.safetensors (the group delta the root merged, made by the
# aggregator: no signature) and group-NAME/ with the members' deltas, their
# signatures and merge-flags (with its --group-id); the record then lists
# each group with its members, and each group delta must reproduce from them
# (photon-merge --verify).
#
# A round of a group's aggregator (examples/aggregator.sh --parent) made
# round-N/aggregate.safetensors, the group delta it sent up, instead of
# global-rN: that is the "next" the record names and the merge reproduces
# (its merge-flags hold its --group-id).
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$here/bin}
[ $# -eq 2 ] || { echo "usage: round-record.sh AGG ROUND" >&2; exit 2; }
agg=$(cd "$1" && pwd) r=$2
[[ "$r" =~ ^[1-9][0-9]*$ ]] || { echo "round-record.sh: the round is a number from 1, got '$r'" >&2; exit 2; }
dir="$agg/round-$r"
[ -d "$dir" ] || { echo "round-record.sh: $dir: no such round" >&2; exit 1; }
sha() { if [ -f "$1" ]; then sha256sum "$1" | cut -c1-64; else echo null; fi; }
cd "$dir" || exit 1
base=../global-r$((r - 1)).safetensors next=../global-r$r.safetensors
[ ! -f aggregate.safetensors ] || next=aggregate.safetensors
mapfile -t flags <merge-flags 2>/dev/null || flags=()
signers=""
[ -f ../allowed_signers ] && signers=../allowed_signers
rows=$(mktemp) groups_rows=$(mktemp)
trap 'rm -f "$rows" "$rows".* "$groups_rows" "$groups_rows".*' EXIT
# level ROWS MERGE NEXT FLAGS_FILE DELTA...: one row per
# delta (its signature checked, except a group delta's, which the aggregator
# made), then photon-merge --verify NEXT from those whose signature holds, its
# JSON in MERGE; returns 1 if that does not reproduce NEXT
level() {
    local rows=$1 merge=$2 nxt=$3 flagsfile=$4 d sig signer reason
    local -a fl=() candidates=()
    shift 4
    mapfile -t fl <"$flagsfile" 2>/dev/null || fl=()
    : >"$rows"
    for d in "$@"; do
        [ -e "$d" ] || continue
        sig=null signer=null reason=""
        [ -f "$d.sig" ] && sig=$d.sig
        if [ -n "$signers" ] && [[ "${d##*/}" != group-* ]]; then
            if signer=$(BIN=$BIN "$here/examples/delta-sig.sh" verify "$signers" "$d" 2>"$rows.err"); then
                candidates+=("$d")
            else
                signer=null reason=$(tail -n 1 "$rows.err" | tr -c '[:print:]\n' '?')
            fi
        else
            candidates+=("$d")
        fi
        printf '%s\t%s\t%s\t%s\t%s\n' "$d" "$(sha "$d")" "$sig" "$signer" "$reason" >>"$rows"
    done
    rm -f "$rows.err"
    if [ ${#candidates[@]} -gt 0 ]; then
        "$BIN/photon-merge" --base "$base" --verify "$nxt" "${fl[@]}" --json "${candidates[@]}" >"$merge" \
            2>"$rows.err" || { [ -s "$merge" ] || python3 -c 'import json, sys; print(json.dumps({"verified": False, "error": sys.argv[1]}))' \
            "$(tail -n 1 "$rows.err")" >"$merge"; rm -f "$rows.err"; return 1; }
    else
        echo '{"verified": false, "error": "no delta passed its signature check"}' >"$merge"
        return 1
    fi
    rm -f "$rows.err"
}
status=0
level "$rows" "$rows.merge" "$next" merge-flags delta-*.safetensors group-*.safetensors || status=1
for g in group-*/; do
    [ -d "$g" ] || continue
    g=${g%/} name=${g#group-}
    level "$groups_rows.$name" "$groups_rows.$name.merge" "$g.safetensors" "$g/merge-flags" \
        "$g"/delta-*.safetensors || status=1
    printf '%s\t%s\n' "$name" "$(sha "$g.safetensors")" >>"$groups_rows"
done
python3 - "$rows" "$rows.merge" "$groups_rows" "$r" "$base" "$(sha "$base")" "$next" "$(sha "$next")" \
    "$(sha "${signers:-/nonexistent}")" "$(sha "../server-r$((r - 1)).safetensors")" "$(sha "../server-r$r.safetensors")" \
    "${flags[@]}" <<'PY'
import json, sys
rows, merge, groups, r, base, base_sha, nxt, next_sha, signers_sha, state_in, state_out = sys.argv[1:12]
flags = sys.argv[12:]
null = lambda v: None if v == "null" else v
def level(rows, merge):
    merged = json.load(open(merge))
    by_path = {d["path"]: d for d in merged.get("deltas", [])}
    deltas = []
    for line in open(rows).read().splitlines():
        f, sha, sig, signer, reason = line.split("\t")
        d = {"file": f, "sha256": sha, "signature": null(sig), "signer": null(signer)}
        m = by_path.get(f)
        if reason:
            d["accepted"], d["refused_by"], d["reason"] = False, "signature", reason
        elif m is None or not m["accepted"]:
            d["accepted"], d["refused_by"], d["reason"] = False, "merge", m["reason"] if m else "not merged"
        else:
            d["accepted"], d["client"], d["weight"], d["tokens"] = True, m["client"], m["weight"], m["tokens"]
        deltas.append(d)
    return merged, deltas
merged, deltas = level(rows, merge)
record = {}
group_list = []
for line in open(groups).read().splitlines():
    name, sha = line.split("\t")
    gm, gd = level(f"{groups}.{name}", f"{groups}.{name}.merge")
    try:
        gflags = open(f"group-{name}/merge-flags").read().splitlines()
    except OSError:
        gflags = []
    group_list.append({"group": name, "file": f"group-{name}.safetensors", "sha256": null(sha), "merge_flags": gflags,
                       "merge_reproduced": bool(gm.get("verified")), "merge_error": gm.get("error"), "deltas": gd})
if group_list:
    record["groups"] = group_list
print(json.dumps({**record,
    "round": int(r), "base": base, "base_sha256": null(base_sha), "next": nxt, "next_sha256": null(next_sha),
    "server_state_in_sha256": null(state_in), "server_state_out_sha256": null(state_out),
    "allowed_signers_sha256": null(signers_sha), "merge_flags": flags,
    "merge_reproduced": bool(merged.get("verified")), "merge_error": merged.get("error"), "deltas": deltas},
    indent=1, sort_keys=True))
PY
exit $status
