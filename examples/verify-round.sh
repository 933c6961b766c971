#!/usr/bin/env bash
# verify-round.sh ROUND_DIR... | AGG - re-checks rounds of examples/federate.sh
# from the files they kept: every signature against the kept
# allowed_signers, the merge bit for bit (photon-merge --verify), and the
# round record (record.json) recomputed and compared byte for byte, so that
# a change to any byte of any kept file is named. Given the aggregator's
# directory, it checks the chain: every round from 1 to the last, each one's
# base the checkpoint the round before made. Exit 0 if all hold, else 1 with
# one line per problem.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 1 ] || { echo "usage: verify-round.sh ROUND_DIR... | AGG" >&2; exit 2; }
rounds=()
if [ $# -eq 1 ] && [ -f "$1/federation.json" ] && grep -q '"group_id"' "$1/federation.json"; then
    # a group's aggregator (aggregator.sh --parent): every round it merged; the
    # chain between them is its parent's, checked there
    for d in "$1"/round-*/; do [ -f "$d/record.json" ] && rounds+=("${d%/}"); done
    [ ${#rounds[@]} -gt 0 ] || { echo "verify-round.sh: $1 holds no merged round" >&2; exit 1; }
elif [ $# -eq 1 ] && [ -f "$1/global-r0.safetensors" ]; then # the whole chain: 1 to the last, no gaps
    agg=$(cd "$1" && pwd) last=0
    for f in "$agg"/global-r*.safetensors "$agg"/round-*; do
        n=${f##*/global-r} n=${n%.safetensors} n=${n##*/round-}
        [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -gt "$last" ] && last=$n
    done
    [ "$last" -gt 0 ] || { echo "verify-round.sh: $agg holds no merged round" >&2; exit 1; }
    for ((r = 1; r <= last; r++)); do
        [ -f "$agg/global-r$r.safetensors" ] || { echo "verify-round.sh: the chain is broken: no global-r$r.safetensors" >&2; exit 1; }
        [ -d "$agg/round-$r" ] || { echo "verify-round.sh: the chain is broken: no round-$r/ for global-r$r.safetensors" >&2; exit 1; }
        rounds+=("$agg/round-$r")
    done
else
    rounds=("$@")
fi
bad=0
problem() { echo "verify-round.sh: $*" >&2; bad=1; }
for dir in "${rounds[@]}"; do
    dir=$(cd "$dir" 2>/dev/null && pwd) || { problem "$dir: no such directory"; continue; }
    r=${dir##*/round-} agg=${dir%/round-*}
    [ -f "$dir/record.json" ] || { problem "round $r: no record.json"; continue; }
    fresh=$(BIN=${BIN:-$here/bin} "$here/examples/round-record.sh" "$agg" "$r")
    if ! cmp -s <(printf '%s\n' "$fresh") "$dir/record.json"; then
        what=$(python3 - "$dir/record.json" <(printf '%s\n' "$fresh") <<'PY'
import json, sys
try:
    kept = json.load(open(sys.argv[1]))
except Exception as e:
    print(f"record.json is not the record it was ({e})"); sys.exit()
now = json.load(open(sys.argv[2]))
out = []
files = {"base_sha256": kept.get("base"), "next_sha256": kept.get("next"), "allowed_signers_sha256": "../allowed_signers",
         "server_state_in_sha256": "the server state in", "server_state_out_sha256": "the server state out",
         "merge_flags": "merge-flags", "merge_reproduced": kept.get("next"), "merge_error": "the merge"}
for k in sorted(set(kept) | set(now)):
    if k == "deltas": continue
    if kept.get(k) != now.get(k):
        out.append(f"{files.get(k, k)}: {k} recorded {str(kept.get(k))[:16]}..., the files now give {str(now.get(k))[:16]}...")
kd = {d["file"]: d for d in kept.get("deltas", [])}
nd = {d["file"]: d for d in now.get("deltas", [])}
for f in sorted(set(kd) | set(nd)):
    if kd.get(f) != nd.get(f):
        diff = [x for x in sorted(set(kd.get(f, {})) | set(nd.get(f, {}))) if kd.get(f, {}).get(x) != nd.get(f, {}).get(x)]
        out.append(f"{f}: {', '.join(diff)} changed" + (f" ({nd[f].get('reason')})" if f in nd and nd[f].get("reason") else ""))
print("; ".join(out) or "record.json differs from the record the files give (formatting)")
PY
)
        problem "round $r: $what"
    fi
    if ! python3 -c 'import json, sys; d = json.loads(sys.argv[1])
sys.exit(0 if d["merge_reproduced"] and all(g["merge_reproduced"] for g in d.get("groups", [])) else 1)' "$fresh"; then
        made=global-r$r.safetensors
        [ ! -f "$dir/aggregate.safetensors" ] || made=round-$r/aggregate.safetensors # a group's
        problem "round $r: photon-merge does not reproduce $made from the accepted deltas$(
            python3 -c 'import json, sys; e = json.loads(sys.argv[1]).get("merge_error"); print(": " + e if e else "")' "$fresh")"
    fi
done
[ "$bad" = 0 ] && echo "verify-round.sh: ${#rounds[@]} round(s) verified"
exit $bad
