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
mapfile -t flags <merge-flags 2>/dev/null || flags=()
signers=""
[ -f ../allowed_signers ] && signers=../allowed_signers
rows=$(mktemp) candidates=()
trap 'rm -f "$rows" "$rows.merge" "$rows.err"' EXIT
for d in delta-*.safetensors; do
    [ -e "$d" ] || continue
    sig=null signer=null reason=""
    [ -f "$d.sig" ] && sig=$d.sig
    if [ -n "$signers" ]; then
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
status=0
if [ ${#candidates[@]} -gt 0 ]; then
    "$BIN/photon-merge" --base "$base" --verify "$next" "${flags[@]}" --json "${candidates[@]}" >"$rows.merge" 2>"$rows.err" ||
        status=1
    [ -s "$rows.merge" ] || python3 -c 'import json, sys; print(json.dumps({"verified": False, "error": sys.argv[1]}))' \
        "$(tail -n 1 "$rows.err")" >"$rows.merge"
else
    echo '{"verified": false, "error": "no delta passed its signature check"}' >"$rows.merge"; status=1
fi
rm -f "$rows.err"
python3 - "$rows" "$rows.merge" "$r" "$base" "$(sha "$base")" "$next" "$(sha "$next")" \
    "$(sha "${signers:-/nonexistent}")" "$(sha "../server-r$((r - 1)).safetensors")" "$(sha "../server-r$r.safetensors")" \
    "${flags[@]}" <<'PY'
import json, sys
rows, merge, r, base, base_sha, nxt, next_sha, signers_sha, state_in, state_out = sys.argv[1:11]
flags = sys.argv[11:]
merged = json.load(open(merge))
by_path = {d["path"]: d for d in merged.get("deltas", [])}
null = lambda v: None if v == "null" else v
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
print(json.dumps({
    "round": int(r), "base": base, "base_sha256": null(base_sha), "next": nxt, "next_sha256": null(next_sha),
    "server_state_in_sha256": null(state_in), "server_state_out_sha256": null(state_out),
    "allowed_signers_sha256": null(signers_sha), "merge_flags": flags,
    "merge_reproduced": bool(merged.get("verified")), "merge_error": merged.get("error"), "deltas": deltas},
    indent=1, sort_keys=True))
PY
exit $status
