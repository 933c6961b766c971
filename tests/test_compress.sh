#!/usr/bin/env bash
# test_compress.sh BINDIR - compressed deltas and the compressed downlink, as
# a user meets them.
#
# photon-train --delta-format f32|bf16|int8|int4 on a model of 1.7M values:
# int8 at most 26% and int4 at most 14% of the f32 delta, bf16 about half;
# any safetensors reader (Python's, when installed) opens them; the client
# state keeps the residual with error feedback, none without it or after an
# f32 round, and a resumed client keeps it. photon-merge merges the formats
# mixed, --verify reproduces it, --threads/--chunk change nothing. The
# downlink: --update-out writes next - base encoded, --apply rebuilds the
# next checkpoint bit for bit, and refuses a stale base, a flipped bit and a
# truncated update, writing nothing. Corrupt deltas (a bad block size, a code
# out of range, a NaN scale, truncated) are refused naming the file, nothing
# written. federate.sh --delta-format int4 --update-format int8: clients get
# updates after round 1, log.tsv counts bytes down and up, every round's
# record verifies. Bad flags are usage errors.
# Prints "ok - ..." / "FAIL - ..." / "skip - ..." and "N passed, N failed".
set -u
BIN=$(cd "${1:-bin}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/tests/lib.sh"
scratch compress
cd "$W" || exit 2
if ! command -v python3 >/dev/null; then
    skip "test_compress: python3 is needed to read the tools' JSON and edit files"
    summary
    exit $?
fi
nothing_written() { for f in "$@"; do [ ! -e "$f" ] || { echo "$f was written" >&2; return 1; }; done; }
size() { wc -c <"$1" | tr -d ' '; }

model=(--layers 2 --heads 4 --width 256 --ctx 32)
"$BIN/photon-train" --init "${model[@]}" --steps 0 --out base.safetensors 2>/dev/null
for c in 0 1 2; do
    "$BIN/synthlang" --seed 1 --dialect $c --bytes 30000 --sample-seed $((c + 3)) --out "train$c.txt" 2>/dev/null
done
"$BIN/synthlang" --seed 1 --dialect 1 --bytes 4000 --sample-seed 98 --out val.txt 2>/dev/null
train() { # train CLIENT FORMAT [flags]: one round from base.safetensors into d-CLIENT-FORMAT.safetensors
    local c=$1 f=$2
    shift 2
    "$BIN/photon-train" --model base.safetensors --data "train${c:1}.txt" --state "state-$c-$f.safetensors" --steps 8 \
        --batch 2 --seq 32 --lr 3e-3 --delta-out "d-$c-$f.safetensors" --client-id "$c" --delta-format "$f" "$@"
}
for f in f32 bf16 int8 int4; do
    check "photon-train --delta-format $f writes a delta" train c0 "$f"
done
f32=$(size d-c0-f32.safetensors)
check "int8 is at most 26% of the f32 delta, int4 at most 14%, bf16 about half" python3 -c 'import sys
f32, bf16, int8, int4 = (int(x) for x in sys.argv[1:])
print("bf16 %.1f%%, int8 %.1f%%, int4 %.1f%%" % (100 * bf16 / f32, 100 * int8 / f32, 100 * int4 / f32))
sys.exit(not (int8 <= 0.26 * f32 and int4 <= 0.14 * f32 and bf16 <= 0.51 * f32))' "$f32" "$(size d-c0-bf16.safetensors)" \
    "$(size d-c0-int8.safetensors)" "$(size d-c0-int4.safetensors)"
echo "# delta sizes: f32 $f32, bf16 $(size d-c0-bf16.safetensors), int8 $(size d-c0-int8.safetensors), int4 $(size d-c0-int4.safetensors) bytes"
if python3 -c 'import safetensors' 2>/dev/null && python3 -c 'import numpy' 2>/dev/null; then
    check "Python's safetensors opens an int4 delta: U8 codes and F32 scales" python3 -c 'import sys
from safetensors.numpy import load_file
t = load_file(sys.argv[1]); c, s = t["h.0.attn.c_attn.weight"], t["h.0.attn.c_attn.weight.scales"]
sys.exit(not (str(c.dtype) == "uint8" and c.size == 256 * 768 // 2 and str(s.dtype) == "float32" and s.size == 256 * 768 // 128))' \
        d-c0-int4.safetensors
else
    skip "test_compress: Python's safetensors or numpy is not installed (pip install safetensors numpy)"
fi
tensors() { python3 -c 'import json, struct, sys
raw = open(sys.argv[1], "rb").read(); n = struct.unpack("<Q", raw[:8])[0]
print(" ".join(k for k in json.loads(raw[8:8 + n]) if k != "__metadata__"))' "$1"; }
check "with error feedback the client state keeps a residual" bash -c "tensors() { $(declare -f tensors | tail -n +2); }
    tensors state-c0-int8.safetensors | grep -qw residual"
check "  ... an f32 round keeps none" bash -c "! python3 -c 'import sys; sys.exit(b\"residual\" not in open(sys.argv[1], \"rb\").read(4096))' state-c0-f32.safetensors"
check "--no-error-feedback keeps none" train c1 int8 --no-error-feedback
check "  ... (its state holds no residual)" bash -c "! python3 -c 'import sys; sys.exit(b\"residual\" not in open(sys.argv[1], \"rb\").read(4096))' state-c1-int8.safetensors"
cp state-c0-int8.safetensors resume.safetensors
check "a client resuming from a state with a residual trains and keeps one" "$BIN/photon-train" --model base.safetensors \
    --data train0.txt --state resume.safetensors --steps 8 --batch 2 --seq 32 --lr 3e-3 --delta-out d-resume.safetensors \
    --client-id c0 --delta-format int8
check "  ... and its state still holds the residual" bash -c "python3 -c 'import sys; sys.exit(b\"residual\" not in open(sys.argv[1], \"rb\").read(4096))' resume.safetensors"

# ---- merging formats mixed ----
train c1 int4 >/dev/null 2>&1
train c2 bf16 >/dev/null 2>&1
mixed=(d-c0-f32.safetensors d-c1-int4.safetensors d-c2-bf16.safetensors)
check "photon-merge merges f32, int4 and bf16 deltas in one round" "$BIN/photon-merge" --base base.safetensors \
    --out mixed.safetensors --json "${mixed[@]}"
cp "$W/out" mixed.json
check "  ... --json names each delta's format" python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))["deltas"]; sys.exit([x["format"] for x in d] != ["f32", "int4", "bf16"])' mixed.json
check "  ... --verify reproduces it; --threads 1 and --chunk 4096 change nothing" "$BIN/photon-merge" --base base.safetensors \
    --verify mixed.safetensors --threads 1 --chunk 4096 "${mixed[@]}"
check "  ... the median of the same mixed deltas merges and verifies" bash -c "'$BIN/photon-merge' --base base.safetensors \
    --out median.safetensors --aggregate median ${mixed[*]} 2>/dev/null && '$BIN/photon-merge' --base base.safetensors \
    --verify median.safetensors --aggregate median --chunk 8192 ${mixed[*]} 2>/dev/null"

# ---- the downlink ----
for f in f32 bf16 int8 int4; do
    check "--update-out --update-format $f writes the next checkpoint and its update" "$BIN/photon-merge" \
        --base base.safetensors --out "next-$f.safetensors" --update-out "update-$f.safetensors" --update-format "$f" "${mixed[@]}"
    check "  ... --apply rebuilds the next checkpoint bit for bit from base + update" bash -c "'$BIN/photon-merge' \
        --base base.safetensors --apply update-$f.safetensors --out applied-$f.safetensors 2>/dev/null &&
        cmp applied-$f.safetensors next-$f.safetensors"
    check "  ... --verify with the same --update-format reproduces the next checkpoint" "$BIN/photon-merge" \
        --base base.safetensors --verify "next-$f.safetensors" --update-format "$f" "${mixed[@]}"
done
check "the int8 update is at most 26% of the checkpoint, int4 at most 14%" python3 -c 'import sys
ck, int8, int4 = (int(x) for x in sys.argv[1:]); sys.exit(not (int8 <= 0.26 * ck and int4 <= 0.14 * ck))' \
    "$(size next-int8.safetensors)" "$(size update-int8.safetensors)" "$(size update-int4.safetensors)"
check "--apply on another base is refused as stale, nothing written" expect_exit 1 "stale: the update is for base" \
    "$BIN/photon-merge" --base mixed.safetensors --apply update-int8.safetensors --out never.safetensors
python3 - update-int8.safetensors flipped.safetensors <<'PY'
import sys
raw = bytearray(open(sys.argv[1], "rb").read()); raw[-100] ^= 0x04; open(sys.argv[2], "wb").write(raw)
PY
check "--apply refuses an update with a flipped bit" expect_exit 1 "flipped.safetensors: its tensor data does not match" \
    "$BIN/photon-merge" --base base.safetensors --apply flipped.safetensors --out never.safetensors
head -c 20000 update-int8.safetensors >cut.safetensors
check "--apply refuses a truncated update" expect_exit 1 "cut.safetensors: truncated" \
    "$BIN/photon-merge" --base base.safetensors --apply cut.safetensors --out never.safetensors
check "  ... nothing written by any of them" nothing_written never.safetensors

# ---- corrupt compressed deltas: refused, naming the file and the problem ----
# edit DELTA OUT WHAT: a copy with one thing wrong, its payload hash recomputed so only that is wrong
edit() {
    python3 - "$@" <<'PY'
import hashlib, json, struct, sys
src, dst, what = sys.argv[1:4]
raw = bytearray(open(src, "rb").read()); n = struct.unpack("<Q", raw[:8])[0]
head = json.loads(raw[8:8 + n]); data = raw[8 + n:]
if what == "block":
    head["__metadata__"]["photon.quant_block"] = "64"
elif what == "code":  # int8: the first code of a tensor to -128
    data[head["h.0.attn.c_attn.weight"]["data_offsets"][0]] = 0x80
elif what == "scale":  # the first scale of a tensor to NaN
    at = head["h.0.attn.c_attn.weight.scales"]["data_offsets"][0]
    data[at:at + 4] = struct.pack("<f", float("nan"))
elif what == "reorder":  # the same tensors, stored last to first
    names = [k for k in head if k != "__metadata__"]
    parts, at = {k: data[head[k]["data_offsets"][0]:head[k]["data_offsets"][1]] for k in names}, 0
    data = bytearray()
    for k in reversed(names):
        head[k]["data_offsets"] = [at, at + len(parts[k])]; at += len(parts[k]); data += parts[k]
head["__metadata__"]["photon.data_sha256"] = hashlib.sha256(data).hexdigest()
text = json.dumps(head, separators=(",", ":")).encode(); text += b" " * (-(8 + len(text)) % 8)
open(dst, "wb").write(struct.pack("<Q", len(text)) + text + bytes(data))
PY
}
edit d-c0-int8.safetensors bad-block.safetensors block
edit d-c0-int8.safetensors bad-code.safetensors code
edit d-c0-int8.safetensors bad-scale.safetensors scale
edit d-c0-int8.safetensors bad-order.safetensors reorder
head -c 30000 d-c0-int8.safetensors >bad-cut.safetensors
check "a delta whose block size is not 128 is refused" expect_exit 1 "bad-block.safetensors: block size 64" \
    "$BIN/photon-merge" --base base.safetensors --out never.safetensors bad-block.safetensors
check "a delta with a code out of range is refused, naming the tensor" expect_exit 1 \
    "bad-code.safetensors: tensor 'h.0.attn.c_attn.weight': element 0 has code -128" \
    "$BIN/photon-merge" --base base.safetensors --out never.safetensors bad-code.safetensors
check "a delta with a NaN scale is refused" expect_exit 1 "bad-scale.safetensors: tensor 'h.0.attn.c_attn.weight.scales' holds NaN" \
    "$BIN/photon-merge" --base base.safetensors --out never.safetensors bad-scale.safetensors
check "a delta whose tensors are stored in another order is refused (the merge streams the model's order)" expect_exit 1 \
    "bad-order.safetensors: tensor '.*' is not where the model's order puts it" \
    "$BIN/photon-merge" --base base.safetensors --out never.safetensors bad-order.safetensors d-c1-int4.safetensors
check "a truncated compressed delta is refused" expect_exit 1 "bad-cut.safetensors: truncated" \
    "$BIN/photon-merge" --base base.safetensors --out never.safetensors bad-cut.safetensors
check "  ... --skip-bad leaves the corrupt ones out and merges the good one" bash -c "'$BIN/photon-merge' --base base.safetensors \
    --out skip.safetensors --skip-bad bad-block.safetensors bad-code.safetensors bad-scale.safetensors bad-cut.safetensors \
    bad-order.safetensors d-c1-int4.safetensors 2>&1 | grep -q 'merged 1 of 6'"
check "  ... nothing written by the others" nothing_written never.safetensors

# ---- federate.sh: compressed both ways ----
mkdir -p fed
for c in 0 1 2; do mkdir -p "fed/client$c/data" && cp "train$c.txt" "fed/client$c/data/train.txt"; done
check "federate.sh --delta-format int4 --update-format int8 runs 3 rounds" "$ROOT/examples/federate.sh" --agg fed/agg \
    --client fed/client0 --client fed/client1 --client fed/client2 --val val.txt --rounds 3 --local-steps 6 --batch 2 \
    --seq 32 --layers 1 --heads 2 --width 32 --ctx 32 --bin "$BIN" --delta-format int4 --update-format int8 --jobs 2
check "  ... from round 2 on every client gets the update, not the checkpoint" bash -c "
    grep -q 'checkpoint' fed/agg/logs/round-1/bytes.tsv && ! grep -q 'down.checkpoint' fed/agg/logs/round-2/bytes.tsv &&
    [ \$(grep -c 'down.update' fed/agg/logs/round-3/bytes.tsv) = 3 ]"
check "  ... log.tsv counts bytes down and up, and the downlink shrank after round 1 (below 35%: headers weigh at this size)" python3 -c 'import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
down = [int(r["bytes_down"]) for r in rows[1:]]; up = [int(r["bytes_up"]) for r in rows[1:]]
print(down, up); sys.exit(not (down[1] < 0.35 * down[0] and all(u > 0 for u in up)))' fed/agg/log.tsv
check "  ... every round's record verifies" "$ROOT/examples/verify-round.sh" fed/agg
check "  ... the clients hold round 2's checkpoint, rebuilt from updates" cmp fed/client0/global.safetensors \
    fed/agg/global-r2.safetensors

# ---- independent parties: aggregator.sh and client.sh, compressed both ways ----
if command -v rsync >/dev/null && command -v ssh-keygen >/dev/null && command -v setsid >/dev/null; then
    for id in c1 c2; do ssh-keygen -q -t ed25519 -N '' -C "$id" -f "key-$id"; done
    for id in c1 c2; do echo "$id namespaces=\"photon-delta\" $(cut -d' ' -f1,2 "key-$id.pub")"; done >allowed_signers
    mkdir -p exchange
    pids=()
    trap 'for p in "${pids[@]}"; do kill -9 -- "-$p" 2>/dev/null; done; rm -rf "$W"' EXIT
    setsid "$ROOT/examples/aggregator.sh" --exchange exchange --work agg --allowed-signers allowed_signers --rounds 3 \
        --min-clients 2 --deadline 30 --poll 0.2 --layers 1 --heads 2 --width 32 --ctx 32 --local-steps 6 --batch 2 \
        --seq 32 --lr 3e-3 --val val.txt --bin "$BIN" --delta-format int4 --update-format int8 >agg.out 2>agg.err &
    pids+=($!)
    for c in 1 2; do
        setsid "$ROOT/examples/client.sh" --exchange exchange --id "c$c" --key "key-c$c" --data "train$c.txt" \
            --work "client-c$c" --poll 0.2 --threads 1 --bin "$BIN" >"c$c.out" 2>"c$c.err" &
        pids+=($!)
    done
    limit=$(($(date +%s) + 120))
    until [ -f exchange/final.json ] || [ "$(date +%s)" -ge "$limit" ]; do sleep 0.2; done
    sleep 1
    check "aggregator.sh --delta-format int4 --update-format int8 with two client.sh: 3 rounds end" test -f exchange/final.json
    check "  ... the members sent int4 deltas" bash -c "grep -q '\"format\":\"int4\"' agg/round-3/merge.json"
    check "  ... from round 2 the members rebuilt the checkpoint from the published update" bash -c "
        test -f exchange/update-r1.safetensors && test -f exchange/update-r2.safetensors &&
        cmp client-c1/global.safetensors agg/global-r2.safetensors && ! grep -q 'did not rebuild' c1.err c2.err"
    check "  ... a client's round lines count bytes up (int4) and down: round 3's update under 35% of round 1's checkpoint" \
        python3 -c 'import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l[:1].isdigit()]
up, down = [int(r[4]) for r in rows], [int(r[5]) for r in rows]
print("up", up, "down", down); sys.exit(not (len(rows) == 3 and down[2] < 0.35 * down[0] and all(u > 0 for u in up)))' c1.out
    check "  ... every round's record verifies" "$ROOT/examples/verify-round.sh" agg
    for p in "${pids[@]}"; do kill -9 -- "-$p" 2>/dev/null; done
    pids=()
else
    skip "test_compress: aggregator.sh and client.sh: rsync, ssh-keygen or setsid is not installed"
fi

# ---- usage errors ----
check "--delta-format unknown: a usage error" expect_exit 2 "--delta-format must be f32, bf16, int8 or int4" \
    "$BIN/photon-train" --model base.safetensors --data train0.txt --steps 1 --delta-out x.safetensors --client-id c \
    --delta-format int2
check "--delta-format without --delta-out: a usage error" expect_exit 2 "go with --delta-out" \
    "$BIN/photon-train" --model base.safetensors --data train0.txt --steps 1 --out x.safetensors --delta-format int8
check "--update-out without --update-format: a usage error" expect_exit 2 "--update-out needs --update-format" \
    "$BIN/photon-merge" --base base.safetensors --out x.safetensors --update-out u.safetensors "${mixed[@]}"
check "--update-out with --verify: a usage error (verify writes nothing)" expect_exit 2 "--update-out goes with --out" \
    "$BIN/photon-merge" --base base.safetensors --verify next-int8.safetensors --update-format int8 \
    --update-out u.safetensors "${mixed[@]}"
check "--apply with deltas: a usage error" expect_exit 2 "--apply UPDATE takes --base and --out only" \
    "$BIN/photon-merge" --base base.safetensors --apply update-int8.safetensors --out x.safetensors "${mixed[@]}"
check "  ... nothing written" nothing_written x.safetensors u.safetensors
summary
