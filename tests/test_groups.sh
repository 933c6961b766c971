#!/usr/bin/env bash
# test_groups.sh BINDIR - federations of federations with the tools.
#
# Five clients train one round on synthlang dialects, for different step
# counts (so different tokens). Two sub-federations of 2 and 3 members each
# write a group delta (photon-merge --delta-out); the root merges the two
# like clients' deltas. Then: each level's --verify reproduces it byte for
# byte, and not from other members; --inspect shows the members; the tree's
# counts are the flat merge's and its held-out loss matches the flat merge's
# to float rounding; a group delta whose token count was edited is refused;
# the refusals of outer optimizers below the root are usage errors.
# Personal tensors: two clients keep 'h.*.ln_*' (photon-train --personal),
# a third does not; their deltas leave those tensors out and merge tensor by
# tensor; a federation-wide declaration (photon-merge --personal) refuses
# the third and leaves the tensors as the base has them; the state keeps
# them, photon-eval --state evaluates the personalised model, round 2
# resumes from them; other patterns, none, or no --state are refused.
# federate.sh --group: two groups of two, one keeping its layer norms, two
# rounds; per-group logs; verify-round.sh reproduces every level and fails
# once a member's delta is changed; --group-sample; bad groupings refused.
# Prints "ok - ..." / "FAIL - ..." / "skip - ..." and "N passed, N failed".
set -u
BIN=$(cd "${1:-bin}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/tests/lib.sh"
scratch groups
cd "$W" || exit 2
if ! command -v python3 >/dev/null; then
    skip "test_groups: python3 is needed to read the tools' JSON"
    summary
    exit $?
fi
json() { python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2], {"d": d}))' "$@"; }

model=(--layers 1 --heads 2 --width 32 --ctx 32)
"$BIN/photon-train" --init "${model[@]}" --steps 0 --out base.safetensors 2>/dev/null
steps=(6 10 4 12 8)
for c in 0 1 2 3 4; do
    "$BIN/synthlang" --seed 1 --dialect $((c % 3)) --bytes 30000 --sample-seed $((c + 3)) --out "train$c.txt" 2>/dev/null
    "$BIN/photon-train" --model base.safetensors --data "train$c.txt" --steps "${steps[$c]}" --batch 4 --seq 32 \
        --lr 5e-3 --delta-out "d$c.safetensors" --client-id "c$c" 2>/dev/null
done
"$BIN/synthlang" --seed 1 --dialect 1 --bytes 6000 --sample-seed 98 --out val.txt 2>/dev/null
A=(d0.safetensors d1.safetensors)
B=(d2.safetensors d3.safetensors d4.safetensors)

check "flat: the five deltas merge" "$BIN/photon-merge" --base base.safetensors --out flat.safetensors "${A[@]}" "${B[@]}"
check "group a: two members make a group delta" "$BIN/photon-merge" --base base.safetensors --delta-out ga.safetensors \
    --group-id ga "${A[@]}"
check "group b: three members make a group delta" "$BIN/photon-merge" --base base.safetensors --delta-out gb.safetensors \
    --group-id gb --json "${B[@]}"
cp "$W/out" gb.json
check "group b: --json names the group" test "$(json gb.json 'd["group_id"], d["merged"]')" = "('gb', 3)"
check "root: merges the two group deltas" "$BIN/photon-merge" --base base.safetensors --out tree.safetensors --json \
    ga.safetensors gb.safetensors
cp "$W/out" tree.json
check "root: the tree's step and token counts are the flat ones" test \
    "$(json tree.json 'd["step"], d["tokens_seen"]')" = "(12, $(((6 + 10 + 4 + 12 + 8) * 4 * 32)))"
check "group b: --verify reproduces its group delta byte for byte" "$BIN/photon-merge" --base base.safetensors \
    --verify gb.safetensors --group-id gb "${B[@]}"
LATE=1 check "group b: --verify with a member missing does not match" expect_exit 1 "DOES NOT match" \
    "$BIN/photon-merge" --base base.safetensors --verify gb.safetensors --group-id gb d2.safetensors d3.safetensors
check "root: --verify reproduces the tree's root byte for byte" "$BIN/photon-merge" --base base.safetensors \
    --verify tree.safetensors ga.safetensors gb.safetensors
run "$BIN/photon-merge" --inspect gb.safetensors
check "--inspect shows a group delta's members and tokens" test \
    "$(python3 -c 'import json,sys; d=json.loads(open(sys.argv[1]).read()); print(d["members"], d["tokens"], d["batch"])' "$W/out")" \
    = "3 $(((4 + 12 + 8) * 4 * 32)) 0"
for m in flat tree; do
    "$BIN/photon-eval" --model $m.safetensors --data val.txt --json >"$m.eval" 2>/dev/null
done
check "the tree's held-out loss is the flat merge's to float rounding" python3 -c '
import json, sys
a, b = (json.load(open(f))["loss"] for f in sys.argv[1:])
sys.exit(0 if abs(a - b) <= 1e-5 * abs(a) else 1)' flat.eval tree.eval

# a group delta is checked like a client's: its counts follow from its members
tokens=$(((4 + 12 + 8) * 4 * 32))
sed "s/\"photon.tokens\":\"$tokens\"/\"photon.tokens\":\"$((tokens + 1000))\"/" gb.safetensors >gb-edited.safetensors
check "a group delta claiming more tokens than its members is refused, naming it" expect_exit 1 \
    "gb-edited.safetensors: a group delta claims $((tokens + 1000)) tokens" \
    "$BIN/photon-merge" --base base.safetensors --out bad.safetensors ga.safetensors gb-edited.safetensors
check "... and nothing is written" test ! -e bad.safetensors

# ---- personal tensors: photon-train --personal, photon-eval --state, photon-merge --personal ----
# tensor NAME FILE: the bytes of one tensor, as hex (compared between files)
tensor() { python3 -c '
import json, struct, sys
f = open(sys.argv[2], "rb"); n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n))
if sys.argv[1] not in h: print("absent"); sys.exit(0)
a, b = h[sys.argv[1]]["data_offsets"]; f.seek(8 + n + a); print(f.read(b - a).hex())' "$@"; }
P='h.*.ln_*'
for c in 0 1; do
    check "personal: client p$c trains round 1 keeping $P" "$BIN/photon-train" --model base.safetensors \
        --data "train$c.txt" --state "ps$c.safetensors" --steps 6 --batch 4 --seq 32 --lr 5e-3 --personal "$P" \
        --delta-out "pd$c.safetensors" --client-id "p$c" --out "plocal$c.safetensors"
done
check "personal: a client without --personal trains in the same round" "$BIN/photon-train" --model base.safetensors \
    --data train2.txt --state ps2.safetensors --steps 6 --batch 4 --seq 32 --lr 5e-3 --delta-out pd2.safetensors \
    --client-id p2
check "personal: the personal tensors are absent from the delta, the others there" test \
    "$(tensor h.0.attn.c_attn.weight pd0.safetensors)" != absent -a "$(tensor h.0.ln_1.weight pd0.safetensors)" = absent -a \
    "$(tensor h.0.ln_2.bias pd1.safetensors)" = absent -a "$(tensor h.0.ln_2.bias pd2.safetensors)" != absent
"$BIN/photon-merge" --inspect pd0.safetensors >inspect.json 2>/dev/null
check "personal: --inspect shows the declaration" grep -q '"personal":"h.\*.ln_\*"' inspect.json
check "personal: the three deltas merge (each tensor over the deltas that carry it)" "$BIN/photon-merge" \
    --base base.safetensors --out pnext.safetensors pd0.safetensors pd1.safetensors pd2.safetensors
check "personal: --verify reproduces it" "$BIN/photon-merge" --base base.safetensors --verify pnext.safetensors \
    pd0.safetensors pd1.safetensors pd2.safetensors
check "personal: declared federation-wide (--personal), the client that carries them is refused, naming it" \
    expect_exit 1 "pd2.safetensors: carries tensor 'h.0.ln_1.weight', which this federation declares personal" \
    "$BIN/photon-merge" --base base.safetensors --out pdecl.safetensors --personal "$P" pd0.safetensors \
    pd1.safetensors pd2.safetensors
check "personal: ... and nothing is written" test ! -e pdecl.safetensors
check "personal: the two declaring clients merge under the declaration" "$BIN/photon-merge" --base base.safetensors \
    --out pdecl.safetensors --personal "$P" pd0.safetensors pd1.safetensors
check "personal: the merge leaves the declared tensors as the base has them" test \
    "$(tensor h.0.ln_1.weight pdecl.safetensors)" = "$(tensor h.0.ln_1.weight base.safetensors)"
check "personal: the state keeps the trained personal tensors" python3 -c '
import json, struct, sys
def load(p):
    f = open(p, "rb"); n = struct.unpack("<Q", f.read(8))[0]; return json.loads(f.read(n)), f, n
h, f, n = load(sys.argv[1])
sys.exit(0 if "personal" in h and h["__metadata__"]["photon.personal"] == "h.*.ln_*" else 1)' ps0.safetensors
"$BIN/photon-eval" --model pdecl.safetensors --state ps0.safetensors --data train0.txt --max-tokens 2048 --json \
    >pe-state.json 2>/dev/null
"$BIN/photon-eval" --model pdecl.safetensors --data train0.txt --max-tokens 2048 --json >pe-global.json 2>/dev/null
check "personal: photon-eval --state evaluates another model than the global one" python3 -c '
import json, sys
a, b = (json.load(open(f))["loss"] for f in sys.argv[1:]); sys.exit(0 if a != b else 1)' pe-state.json pe-global.json
cp ps0.safetensors ps0-round1.safetensors
check "personal: round 2 resumes with the personal tensors laid over the new global" "$BIN/photon-train" \
    --model pdecl.safetensors --data train0.txt --state ps0.safetensors --steps 4 --batch 4 --seq 32 --lr 5e-3 \
    --personal "$P" --delta-out pd0-r2.safetensors --client-id p0 --out plocal0-r2.safetensors
check "personal: round 2's delta leaves them out too, against the new global" test \
    "$(tensor h.1.ln_2.weight pd0-r2.safetensors)" = absent
check "personal: training went on from the state's values, not the global's" test \
    "$(tensor h.0.ln_1.weight plocal0-r2.safetensors)" != "$(tensor h.0.ln_1.weight plocal0.safetensors)" -a \
    "$(tensor h.0.ln_1.weight plocal0.safetensors)" != "$(tensor h.0.ln_1.weight base.safetensors)"
cp ps0-round1.safetensors ps0.safetensors
check "personal: resuming with other patterns is refused" expect_exit 1 "keeps personal tensors 'h.\*.ln_\*'" \
    "$BIN/photon-train" --model pdecl.safetensors --data train0.txt --state ps0.safetensors --steps 4 --batch 4 \
    --seq 32 --personal 'h.0.mlp.*' --delta-out x.safetensors --client-id p0
check "personal: resuming without --personal is refused" expect_exit 1 "give --personal" \
    "$BIN/photon-train" --model pdecl.safetensors --data train0.txt --state ps0.safetensors --steps 4 --batch 4 \
    --seq 32 --delta-out x.safetensors --client-id p0
check "personal: --personal without --state is a usage error" expect_exit 2 "needs --state" \
    "$BIN/photon-train" --model base.safetensors --data train0.txt --steps 1 --personal "$P" --out x.safetensors
check "personal: a pattern that names no tensor is a usage error" expect_exit 2 "matches no tensor" \
    "$BIN/photon-train" --model base.safetensors --data train0.txt --state x.st --steps 1 --personal 'h.9.*' \
    --out x.safetensors
check "personal: photon-eval --state with a state that keeps none fails clearly" expect_exit 1 "keeps no personal" \
    "$BIN/photon-eval" --model pdecl.safetensors --state ps2.safetensors --data train0.txt
check "personal: no output of the refused runs was written" test ! -e x.safetensors -a ! -e x.st

# ---- federate.sh with groups: two sub-federations, one keeping its layer norms ----
for c in 0 1 2 3; do
    mkdir -p "fed/c$c/data"
    cp "train$c.txt" "fed/c$c/data/t.txt"
done
fed=(--client fed/c0 --client fed/c1 --client fed/c2 --client fed/c3 --val val.txt --local-steps 4 "${model[@]}"
    --batch 4 --seq 32 --jobs 2 --group en=0,1 --group fr=2,3)
check "federate.sh --group: two groups, one keeping 'h.*.ln_*', run 2 rounds" bash "$ROOT/examples/federate.sh" \
    --bin "$BIN" --agg fed/agg --rounds 2 "${fed[@]}" --group-personal "fr=$P"
check "federate.sh --group: each round merges the group deltas, and logs each group" test \
    -f fed/agg/round-2/group-en.safetensors -a -f fed/agg/round-2/group-fr.safetensors -a \
    "$(cut -f1,3 fed/agg/logs/round-2/groups.tsv | tr '\t\n' ':,')" = "group:merged,en:2,fr:2,"
check "federate.sh --group: the fr members' deltas leave out their personal tensors, the en members' do not" test \
    "$(tensor h.0.ln_1.weight fed/agg/round-2/group-fr/delta-c2-c2.safetensors)" = absent -a \
    "$(tensor h.0.ln_1.weight fed/agg/round-2/group-en/delta-c0-c0.safetensors)" != absent
check "federate.sh --group: verify-round.sh reproduces every level of every round" bash "$ROOT/examples/verify-round.sh" \
    fed/agg
printf '\x01' | dd of=fed/agg/round-2/group-en/delta-c1-c1.safetensors bs=1 seek=2000 conv=notrunc 2>/dev/null
LATE=1 check "federate.sh --group: a member's delta changed afterwards fails verify-round.sh" expect_exit 1 "round 2" \
    bash "$ROOT/examples/verify-round.sh" fed/agg
check "federate.sh --group-sample 1: one member of each group per round" bash "$ROOT/examples/federate.sh" --bin "$BIN" \
    --agg fed/agg1 --rounds 1 "${fed[@]}" --group-sample 1
check "federate.sh --group-sample 1: two clients in the round" test "$(awk -F'\t' '$1 == 1 { print $2 }' fed/agg1/log.tsv)" = 2
check "federate.sh: a client in no group is a usage error" expect_exit 2 "client 3 .* is in no --group" \
    bash "$ROOT/examples/federate.sh" --bin "$BIN" --agg fed/bad "${fed[@]/fr=2,3/fr=2}"
check "federate.sh: a client in two groups is a usage error" expect_exit 2 "client 1 is in two groups" \
    bash "$ROOT/examples/federate.sh" --bin "$BIN" --agg fed/bad "${fed[@]}" --group de=1
check "federate.sh: --sample with groups is a usage error" expect_exit 2 "group-sample" \
    bash "$ROOT/examples/federate.sh" --bin "$BIN" --agg fed/bad "${fed[@]}" --sample 2
check "federate.sh: the refused starts left nothing" test ! -e fed/bad

check "--delta-out without --group-id is a usage error" expect_exit 2 "needs --group-id" \
    "$BIN/photon-merge" --base base.safetensors --delta-out g.safetensors "${A[@]}"
check "--outer nesterov below the root is a usage error" expect_exit 2 "belong to the root merge" \
    "$BIN/photon-merge" --base base.safetensors --delta-out g.safetensors --group-id g --outer nesterov \
    --server-state s.safetensors "${A[@]}"
check "--outer-lr 0.5 below the root is a usage error" expect_exit 2 "belong to the root merge" \
    "$BIN/photon-merge" --base base.safetensors --delta-out g.safetensors --group-id g --outer-lr 0.5 "${A[@]}"
check "--group-id alone is a usage error" expect_exit 2 "goes with --delta-out" \
    "$BIN/photon-merge" --base base.safetensors --out g.safetensors --group-id g "${A[@]}"
check "no group delta was written by the refused runs" test ! -e g.safetensors
summary
