#!/usr/bin/env bash
# test_integrity.sh BINDIR - every file that travels proves its integrity and
# its sender, and nothing in it can fool or stall the aggregator.
#
# A bit flipped at the start, middle or end of the data of a checkpoint, a
# delta, a client state or a server state is refused by every tool that
# reads it, and nothing is written; photon-merge --skip-bad skips only the
# flipped delta. With real ssh-keygen: a signed delta is accepted; an
# unsigned one, one signed by an unknown key, with another client's key,
# changed after signing, or signed in another namespace is refused, each with
# its own message; federate.sh --sign-key/--allowed-signers merges signed
# rounds and refuses a client with the wrong key. FIFOs, /dev/zero,
# directories and a 1 MB header are refused at once; results that cannot
# reach stdout exit 1. verify-round.sh passes an untouched federation of 3
# rounds and fails, naming the file, after one byte of any kept file changes.
# Prints "ok - ..." / "FAIL - ..." / "skip - ..." and "N passed, N failed".
set -u
BIN=$(cd "${1:-bin}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/tests/lib.sh"
scratch integrity
cd "$W" || exit 2
export BIN

model=(--layers 1 --heads 2 --width 16 --ctx 32)
flip() { # FILE WHERE: one bit of the data section at start|middle|end (the header length is the first 8 bytes)
    python3 - "$1" "$2" <<'PY'
import struct, sys
raw = bytearray(open(sys.argv[1], "rb").read())
start = 8 + struct.unpack("<Q", raw[:8])[0]
at = {"start": start, "middle": (start + len(raw)) // 2, "end": len(raw) - 1}[sys.argv[2]]
raw[at] ^= 0x10
open(sys.argv[1], "wb").write(raw)
PY
}
nothing_written() { for f in "$@"; do [ ! -e "$f" ] || { echo "$f was written" >&2; return 1; }; done; }
if ! command -v python3 >/dev/null; then
    skip "integrity: python3 is needed to flip bits at chosen places"
    summary
    exit $?
fi

# --- payload hashes: a bit flipped anywhere in the data is refused by every reader ---
"$BIN/synthlang" --seed 2 --words 24 --bytes 20000 --out data.txt 2>/dev/null
"$BIN/photon-train" --init "${model[@]}" --steps 0 --out g0.st 2>/dev/null
for c in a b; do
    "$BIN/photon-train" --model g0.st --data data.txt --state s$c.st --steps 2 --batch 2 --seq 16 --delta-out d$c.st \
        --client-id $c 2>/dev/null
done
"$BIN/photon-merge" --base g0.st --out n1.st --outer nesterov --server-state srv.st da.st db.st 2>/dev/null
for where in start middle end; do
    cp g0.st bad-g.st && flip bad-g.st $where
    check "checkpoint flipped at the $where: photon-train refuses it" expect_exit 1 "bad-g.st: its tensor data does not match" \
        "$BIN/photon-train" --model bad-g.st --data data.txt --steps 1 --batch 2 --seq 16 --out x1.st
    check "checkpoint flipped at the $where: photon-eval refuses it" expect_exit 1 "bad-g.st: its tensor data does not match" \
        "$BIN/photon-eval" --model bad-g.st --data data.txt --hf-export x-dir
    check "checkpoint flipped at the $where: photon-merge refuses it as the base" expect_exit 1 "bad-g.st: its tensor data" \
        "$BIN/photon-merge" --base bad-g.st --out x2.st da.st
    cp da.st bad-d.st && flip bad-d.st $where
    check "delta flipped at the $where: photon-merge refuses it" expect_exit 1 "bad-d.st: its tensor data does not match" \
        "$BIN/photon-merge" --base g0.st --out x3.st bad-d.st db.st
    cp sa.st bad-s.st && flip bad-s.st $where
    check "client state flipped at the $where: photon-train refuses it" expect_exit 1 "bad-s.st: its tensor data" \
        "$BIN/photon-train" --model g0.st --data data.txt --state bad-s.st --steps 1 --batch 2 --seq 16 --out x4.st
    cp srv.st bad-srv.st && flip bad-srv.st $where
    check "server state flipped at the $where: photon-merge refuses it" expect_exit 1 "bad-srv.st: its tensor data" \
        "$BIN/photon-merge" --base n1.st --out x5.st --outer nesterov --server-state bad-srv.st da.st
    check "  ... and nothing was written" nothing_written x1.st x-dir x2.st x3.st x4.st x5.st
    check "  ... and the refused client state is left as it was" bash -c "! cmp -s bad-s.st sa.st"
done
cp da.st bad-d.st && flip bad-d.st middle
LATE=1 check "merge --skip-bad skips only the flipped delta" expect_exit 0 "merged 1 of 2" \
    "$BIN/photon-merge" --base g0.st --out skip.st --skip-bad bad-d.st db.st
check "  ... and names it, with the reason" grep -q "skipped bad-d.st: its tensor data does not match" "$W/cmd.err"

# --- what a delta says about itself ---
python3 - da.st lie.st <<'PY'
import hashlib, json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n])
h["__metadata__"]["photon.tokens"] = "1000000000000000000"
text = json.dumps(h, separators=(",", ":")).encode()
text += b" " * (-(8 + len(text)) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(text)) + text + raw[8 + n:])
PY
check "a delta claiming 10^18 tokens is refused" expect_exit 1 "claims 1000000000000000000 tokens, but 2 local steps of 2 x 16" \
    "$BIN/photon-merge" --base g0.st --out x6.st lie.st db.st
check "a delta of more local steps than the round allows is refused" expect_exit 1 "2 local steps, more than this round allows \(1\)" \
    "$BIN/photon-merge" --base g0.st --out x6.st --max-local-steps 1 da.st
check "--max-local-steps 0 is a usage error" expect_exit 2 "--max-local-steps needs an integer" \
    "$BIN/photon-merge" --base g0.st --out x6.st --max-local-steps 0 da.st

# --- nothing can stall the aggregator ---
mkfifo fifo.st && mkdir dir.st
check "a FIFO given as a delta is refused at once" expect_exit 1 "fifo.st: not a regular file \(a FIFO\)" \
    timeout 10 "$BIN/photon-merge" --base g0.st --out x7.st fifo.st
check "a FIFO given as the base is refused at once" expect_exit 1 "fifo.st: not a regular file \(a FIFO\)" \
    timeout 10 "$BIN/photon-merge" --base fifo.st --out x7.st da.st
check "/dev/zero given as a delta is refused at once" expect_exit 1 "/dev/zero: not a regular file \(a device\)" \
    timeout 10 "$BIN/photon-merge" --base g0.st --out x7.st /dev/zero
check "a directory given as a delta is refused" expect_exit 1 "dir.st: not a regular file \(a directory\)" \
    timeout 10 "$BIN/photon-merge" --base g0.st --out x7.st dir.st
python3 -c '
import struct
body = b"{\"__metadata__\":{" + b",".join(b"\"k%d\":\"v\"" % i for i in range(80000)) + b"}}"
open("many.st", "wb").write(struct.pack("<Q", len(body)) + body)'
check "a 1 MB header of 80,000 keys is refused within seconds" expect_exit 1 "more than 16384 __metadata__ keys" \
    timeout 10 "$BIN/photon-merge" --base g0.st --out x7.st many.st
if [ -w /dev/full ]; then
    LATE=1 check "--json into a full disk exits 1" expect_exit 1 "cannot write the results to stdout" \
        bash -c "'$BIN/photon-merge' --base g0.st --out x8.st --json da.st db.st >/dev/full"
else
    skip "--json into a full disk: no /dev/full here"
fi

# --- signatures, with OpenSSH ---
if ! command -v ssh-keygen >/dev/null; then
    skip "signed deltas: ssh-keygen (OpenSSH) not found"
    summary
    exit $?
fi
SIG="$ROOT/examples/delta-sig.sh"
for k in a b eve; do ssh-keygen -q -t ed25519 -N '' -C $k -f key-$k; done
for k in a b; do echo "$k namespaces=\"photon-delta\" $(cat key-$k.pub)" >>allowed_signers; done
cp da.st signed.st && "$SIG" sign key-a signed.st
check "a delta signed by its client's key is accepted" bash -c "'$SIG' verify allowed_signers signed.st | grep -q '^a SHA256:'"
cp da.st unsigned.st
check "an unsigned delta is refused" expect_exit 1 "unsigned.st: refused: unsigned" "$SIG" verify allowed_signers unsigned.st
cp da.st eve.st && "$SIG" sign key-eve eve.st
check "a delta signed by an unknown key is refused" expect_exit 1 "signed by a key that allowed_signers does not list" \
    "$SIG" verify allowed_signers eve.st
cp da.st stolen.st && "$SIG" sign key-b stolen.st
check "a delta signed with another client's key is refused" expect_exit 1 "says it is from 'a' but is signed with the key of 'b'" \
    "$SIG" verify allowed_signers stolen.st
cp da.st changed.st && "$SIG" sign key-a changed.st && flip changed.st middle
check "a delta whose bytes changed after signing is refused" expect_exit 1 "its bytes changed after 'a' signed it" \
    "$SIG" verify allowed_signers changed.st
cp da.st ns.st && ssh-keygen -Y sign -q -f key-a -n other-namespace ns.st
check "a signature of the wrong namespace is refused" expect_exit 1 "another namespace, not photon-delta" \
    "$SIG" verify allowed_signers ns.st
"$BIN/photon-train" --model g0.st --data data.txt --steps 1 --batch 2 --seq 16 --delta-out dot.st --client-id . 2>/dev/null
"$SIG" sign key-a dot.st
check "a client id is matched as it is: '.' is not a wildcard for 'a'" expect_exit 1 "says it is from '.' but is signed with the key of 'a'" \
    "$SIG" verify allowed_signers dot.st
echo garbage >bad.st.sig && cp da.st bad.st
check "a malformed signature is refused" expect_exit 1 "malformed signature" "$SIG" verify allowed_signers bad.st

# a federation of 3 rounds with signed deltas, its records, and verify-round
mkdir -p fed
for c in 0 1; do
    mkdir -p fed/c$c/data fed/c$c/keys
    "$BIN/synthlang" --seed 7 --dialect $c --words 24 --bytes 20000 --out fed/c$c/data/train.txt 2>/dev/null
    ssh-keygen -q -t ed25519 -N '' -C c$c -f fed/c$c/keys/id
    echo "c$c-c$c namespaces=\"photon-delta\" $(cat fed/c$c/keys/id.pub)" >>fed/allowed
done
"$BIN/synthlang" --seed 7 --words 24 --bytes 3000 --sample-seed 3 --out fed/val.txt 2>/dev/null
fedflags=(--rounds 3 --local-steps 3 --batch 2 --seq 16 "${model[@]}" --lr 3e-3 --bin "$BIN" --val fed/val.txt)
check "federate.sh with --sign-key and --allowed-signers: 3 signed rounds" "$ROOT/examples/federate.sh" --agg fed/agg \
    --client fed/c0 --client fed/c1 --sign-key keys/id --allowed-signers fed/allowed "${fedflags[@]}"
check "  ... each round kept its signatures and a record naming the signers" bash -c \
    "ls fed/agg/round-3/delta-c0-c0.safetensors.sig && grep -q '\"signer\": \"c1-c1 SHA256:' fed/agg/round-3/record.json"
check "verify-round.sh: the untouched federation verifies from round 0 to 3" "$ROOT/examples/verify-round.sh" fed/agg
kept=(fed/agg/global-r0.safetensors fed/agg/global-r2.safetensors fed/agg/global-r3.safetensors fed/agg/allowed_signers)
for f in fed/agg/round-2/*; do kept+=("$f"); done
for f in "${kept[@]}"; do
    cp "$f" saved && python3 -c '
import sys
p = sys.argv[1]; raw = bytearray(open(p, "rb").read()); raw[len(raw) // 2] ^= 0x01; open(p, "wb").write(raw)' "$f"
    name=$(basename "$f")
    check "verify-round.sh: one byte changed in $name is found and named" bash -c \
        "! '$ROOT/examples/verify-round.sh' fed/agg 2>err >/dev/null && grep -q -- '$name' err"
    cp saved "$f"
done
check "verify-round.sh: restored, the federation verifies again" "$ROOT/examples/verify-round.sh" fed/agg
mv fed/agg/round-2 fed/round-2-aside
check "verify-round.sh: a missing round breaks the chain (rounds after it are not taken on trust)" expect_exit 1 \
    "the chain is broken: no round-2/" "$ROOT/examples/verify-round.sh" fed/agg
mv fed/round-2-aside fed/agg/round-2
check "photon-train refuses one file named as two of its outputs, and leaves it as it was" bash -c "
    cp fed/agg/global-r3.safetensors same.st && ! '$BIN/photon-train' --model same.st --data data.txt --steps 1 --batch 2 \
        --seq 16 --out same.st --delta-out same.st --client-id a 2>err && grep -q 'named twice as an output' err &&
    cmp -s same.st fed/agg/global-r3.safetensors"
cp key-eve fed/c1/keys/id && cp key-eve.pub fed/c1/keys/id.pub
check "federate.sh: a client signing with the wrong key is refused, and the round stops" expect_exit 1 \
    "refused: signed by a key that allowed_signers does not list" \
    "$ROOT/examples/federate.sh" --agg fed/agg-bad --client fed/c0 --client fed/c1 --sign-key keys/id \
    --allowed-signers fed/allowed "${fedflags[@]}" --rounds 1
LATE=1 check "federate.sh --skip-bad: the round goes on without it" expect_exit 0 "" \
    "$ROOT/examples/federate.sh" --agg fed/agg-skip --client fed/c0 --client fed/c1 --sign-key keys/id \
    --allowed-signers fed/allowed "${fedflags[@]}" --rounds 1 --skip-bad
check "  ... its record lists the refused delta with the reason" bash -c \
    "grep -q '\"refused_by\": \"signature\"' fed/agg-skip/round-1/record.json && '$ROOT/examples/verify-round.sh' fed/agg-skip"
summary
