#!/usr/bin/env bash
# delta-sig.sh - sign a delta with the silo's SSH key, or verify that a delta
# was signed by the key registered for the client id written inside it.
# OpenSSH does the cryptography (ssh-keygen -Y, namespace photon-delta).
#
#   delta-sig.sh sign KEY DELTA            writes DELTA.sig
#   delta-sig.sh verify ALLOWED DELTA      exit 0 and "CLIENT KEY-FINGERPRINT" on stdout,
#                                          or exit 1 and one line saying why on stderr
#
# ALLOWED is an OpenSSH allowed_signers file whose principals are client ids:
#   alice namespaces="photon-delta" ssh-ed25519 AAAA...
# A delta is accepted only if DELTA.sig verifies, in the photon-delta
# namespace, against the key registered for the client id in the delta's own
# header (photon-merge --inspect). BIN (default: bin/ beside this script)
# holds photon-merge.
set -u
NS=photon-delta
here=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$here/bin}
die() { echo "delta-sig.sh: $*" >&2; exit 2; }
refuse() { # one printable line: ssh-keygen may echo bytes of a corrupt signature
    printf '%s: refused: %s\n' "$delta" "$(printf '%s' "$*" | tr -c '[:print:]' '?')" >&2
    exit 1
}
command -v ssh-keygen >/dev/null || die "ssh-keygen (OpenSSH) is needed"

case "${1:-}" in
sign)
    [ $# -eq 3 ] || die "usage: delta-sig.sh sign KEY DELTA"
    key=$2 delta=$3
    rm -f "$delta.sig"
    ssh-keygen -Y sign -q -f "$key" -n "$NS" "$delta" </dev/null || die "$delta: ssh-keygen could not sign it with $key"
    ;;
verify)
    [ $# -eq 3 ] || die "usage: delta-sig.sh verify ALLOWED_SIGNERS DELTA"
    allowed=$2 delta=$3 sig=$3.sig
    [ -f "$allowed" ] || die "$allowed: no such allowed_signers file"
    [ -f "$sig" ] || refuse "unsigned (no $(basename "$sig"))"
    # 1. whose key made the signature (before anything in the delta is parsed)
    if ! who=$(ssh-keygen -Y find-principals -f "$allowed" -s "$sig" 2>&1); then
        case $who in
        *"Couldn't parse"* | *armor* | *"invalid format"*) refuse "malformed signature $(basename "$sig")" ;;
        *) refuse "signed by a key that $(basename "$allowed") does not list ($(basename "$sig"))" ;;
        esac
    fi
    signer=$(printf '%s\n' "$who" | head -1)
    # 2. the signature over these bytes, in photon's namespace
    if ! out=$(ssh-keygen -Y verify -f "$allowed" -I "$signer" -n "$NS" -s "$sig" <"$delta" 2>&1); then
        case $out in
        *namespace*) refuse "the signature $(basename "$sig") is for another namespace, not $NS" ;;
        *"incorrect signature"* | *"verification failed"*) refuse "its bytes changed after '$signer' signed it ($(basename "$sig"))" ;;
        *) refuse "the signature $(basename "$sig") of '$signer' does not verify: ${out//$'\n'/ }" ;;
        esac
    fi
    # 3. the signer is the client the delta names
    info=$("$BIN/photon-merge" --inspect "$delta" 2>"$delta.inspect.err") ||
        { why=$(tail -n 1 "$delta.inspect.err"); rm -f "$delta.inspect.err"; refuse "${why#photon-merge: }"; }
    rm -f "$delta.inspect.err"
    client=$(printf '%s' "$info" | python3 -c 'import json, sys; print(json.load(sys.stdin)["client"])') ||
        refuse "cannot read its client id"
    if ! printf '%s\n' "$who" | grep -qxF -- "$client"; then # the id as it is: '.' is not a wildcard
        refuse "says it is from '$client' but is signed with the key of '$signer'"
    fi
    fingerprint=$(printf '%s' "$out" | grep -o 'SHA256:[A-Za-z0-9+/=]*' | head -1)
    echo "$client $fingerprint"
    ;;
*) die "usage: delta-sig.sh sign KEY DELTA | verify ALLOWED_SIGNERS DELTA" ;;
esac
