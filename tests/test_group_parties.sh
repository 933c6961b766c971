#!/usr/bin/env bash
# test_group_parties.sh BINDIR - a federation of federations run by
# independent parties: a root aggregator (examples/aggregator.sh) whose
# members are two groups and one client, each group run by its own
# aggregator (aggregator.sh --parent) with its own exchange and members
# (examples/client.sh), four rounds:
#
#   root   members g1, g2 (groups) and c5 (a client that keeps ln_f.* to itself)
#   g1     members c1, c2; the group keeps h.1.* personal for both (--personal)
#   g2     members c3, c4, c6, two asked each round (--sample 2); c4 keeps
#          ln_f.* to itself, which g2 does not declare: a group delta needs
#          the same tensors from every member, so g2 refuses c4's deltas,
#          saying why; a member not asked sits the round out, and a delta it
#          delivers all the same (round 3) is left out
#
#   round 2  g2's aggregator is stopped while it collects: the root merges at
#            its deadline without g2; let go, g2 drops the round and goes on
#   round 3  g1's aggregator is killed -9 while it collects and restarted
#   round 4  g1's aggregator is killed -9 after its merge and record, while it
#            signs: restarted, it sends that group delta up without merging again
#
# Then: every party ends with exit 0; every level's rounds verify; each root
# round equals the flat merge of the same members' deltas (within rounding);
# the personal tensors stay in the members' states, out of every delta.
set -u
BIN=$(cd "${1:-bin}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/tests/lib.sh"
scratch group-parties
for tool in rsync ssh-keygen python3 setsid; do
    command -v "$tool" >/dev/null || { skip "test_group_parties: $tool is not installed"; summary; exit; }
done
python3 -c 'import numpy' 2>/dev/null || { skip "test_group_parties: numpy is not installed"; summary; exit; }
cd "$W" || exit 2
pids=()
trap 'for p in "${pids[@]}"; do kill -CONT -- "-$p" 2>/dev/null; kill -9 -- "-$p" 2>/dev/null; done; rm -rf "$W"' EXIT

for id in g1 g2 c1 c2 c3 c4 c5 c6; do ssh-keygen -q -t ed25519 -N '' -C "$id" -f "key-$id"; done
signers() { local id; for id in "$@"; do echo "$id namespaces=\"photon-delta\" $(cut -d' ' -f1,2 "key-$id.pub")"; done; }
signers g1 g2 c5 >root_signers
signers c1 c2 >g1_signers
signers c3 c4 c6 >g2_signers
for c in 1 2 3 4 5 6; do "$BIN/synthlang" --seed 7 --dialect "$((c % 4))" --words 48 --bytes 40000 --out "data-c$c.txt" 2>/dev/null; done
mkdir ex ex-g1 ex-g2

# usage errors come first, and write nothing
check "a group's aggregator refuses the settings it takes from its parent (exit 2, one line)" \
    expect_exit 2 "a group takes its rounds, model and training from the parent.*--rounds" \
    "$ROOT/examples/aggregator.sh" --parent ex --id g1 --key key-g1 --exchange ex-g1 --work bad --allowed-signers g1_signers --rounds 3
check "--parent needs --id (exit 2)" expect_exit 2 "--parent needs --id" \
    "$ROOT/examples/aggregator.sh" --parent ex --key key-g1 --exchange ex-g1 --work bad --allowed-signers g1_signers
check "--id without --parent is refused (exit 2)" expect_exit 2 "--id and --key go with --parent" \
    "$ROOT/examples/aggregator.sh" --id g1 --exchange ex-g1 --work bad --allowed-signers g1_signers
check "a client's --personal takes tensor-name globs only (exit 2)" expect_exit 2 "--personal h 1: a tensor-name glob" \
    "$ROOT/examples/client.sh" --exchange ex --id c1 --key key-c1 --data data-c1.txt --personal "h 1" --work bad
check "no usage error left files behind" test ! -e bad

# g1's ssh-keygen holds still while it signs round 4's group delta and hold-sign exists
mkdir gtools
cat >gtools/ssh-keygen <<EOF
#!/usr/bin/env bash
if [ -e "$W/hold-sign" ] && [[ " \$* " == *" $W/g1/round-4/aggregate.safetensors"* ]]; then
    touch "$W/g1-signing"
    while [ -e "$W/hold-sign" ]; do sleep 0.1; done
fi
exec $(command -v ssh-keygen) "\$@"
EOF
chmod +x gtools/ssh-keygen

start_root() {
    setsid "$ROOT/examples/aggregator.sh" --exchange ex --work agg --allowed-signers root_signers --rounds 4 --min-clients 2 \
        --deadline 15 --poll 0.3 --layers 2 --heads 2 --width 64 --ctx 32 --local-steps 6 --batch 2 --seq 32 --lr 3e-3 \
        --bin "$BIN" >>agg.out 2>>agg.err &
    agg=$!
    pids+=("$agg")
}
start_g1() {
    PATH="$W/gtools:$PATH" setsid "$ROOT/examples/aggregator.sh" --parent ex --id g1 --key key-g1 --exchange ex-g1 --work g1 \
        --allowed-signers g1_signers --min-clients 2 --deadline 30 --poll 0.3 --personal 'h.1.*' --bin "$BIN" >>g1.out 2>>g1.err &
    g1=$!
    pids+=("$g1")
}
start_g2() {
    setsid "$ROOT/examples/aggregator.sh" --parent ex --id g2 --key key-g2 --exchange ex-g2 --work g2 \
        --allowed-signers g2_signers --min-clients 1 --sample 2 --deadline 5 --poll 0.3 --bin "$BIN" >>g2.out 2>>g2.err &
    g2=$!
    pids+=("$g2")
}
start_client() { # start_client ID EXCHANGE [client.sh options]
    local id=$1 exchange=$2
    shift 2
    setsid "$ROOT/examples/client.sh" --exchange "$exchange" --id "$id" --key "key-$id" --data "data-$id.txt" \
        --work "client-$id" --poll 0.3 --threads 1 --bin "$BIN" "$@" >>"$id.out" 2>>"$id.err" &
    eval "pid_$id=\$!"
    pids+=($!)
}
opened() { [ -f "$1/round-$2/round.json" ]; }

start_root
start_g1
start_g2
start_client c1 ex-g1
start_client c2 ex-g1
start_client c3 ex-g2
start_client c4 ex-g2 --personal 'ln_f.*'
start_client c5 ex --personal 'ln_f.*'
start_client c6 ex-g2

# --- round 1: every level, in order --------------------------------------------
need "round 1 opens at the root and in both groups, with the root's base" bash -c "$(declare -f wait_for opened)
    wait_for 60 opened ex-g1 1 && wait_for 30 opened ex-g2 1 && cmp ex/global-r0.safetensors ex-g1/global-r0.safetensors &&
    cmp ex/global-r0.safetensors ex-g2/global-r0.safetensors"
check "g1's round.json asks its members to keep h.1.* personal, with the root's training settings" python3 -c '
import json
g, r = json.load(open("ex-g1/round-1/round.json")), json.load(open("ex/round-1/round.json"))
assert g["personal"] == ["h.1.*"] and "personal" not in r, (g.get("personal"), r.get("personal"))
assert g["train_args"] == r["train_args"] and g["base_sha256"] == r["base_sha256"] and g["members"] == ["c1", "c2"]'

# --- round 2: g2 stops while it collects; the root goes on without it -----------
need "round 2 opens in g2" wait_for 90 opened ex-g2 2
kill -STOP -- "-$g2"
need "with g2 stopped, the root merges round 2 at its deadline and opens round 3" wait_for 60 opened ex 3
kill -CONT -- "-$g2"
check "let go, g2 sees that the root closed round 2, and sends nothing up for it" bash -c "$(declare -f wait_for)
    wait_for 30 grep -q 'round 2: the parent closed it before' g2.err && test -e g2/round-2/dropped &&
    ! test -e ex/round-2/inbox/g2.safetensors"

# --- round 3: g1 is killed -9 while it collects, and restarted -----------------
need "round 3 opens in g1" wait_for 60 opened ex-g1 3
kill_group "$g1"
start_g1
touch hold-sign
# c6, not asked in round 3, delivers a delta all the same (signed with its key)
need "round 3 opens in g2" wait_for 60 opened ex-g2 3
"$BIN/photon-train" --model ex-g2/global-r2.safetensors --data data-c6.txt --steps 6 --batch 2 --seq 32 --delta-out c6.st \
    --client-id c6 2>/dev/null && ssh-keygen -Y sign -q -f key-c6 -n photon-delta c6.st
for f in c6.st.sig:c6.safetensors.sig c6.st:c6.safetensors; do
    cp "${f%%:*}" "ex-g2/round-3/inbox/.${f#*:}.part" && mv "ex-g2/round-3/inbox/.${f#*:}.part" "ex-g2/round-3/inbox/${f#*:}"
done

# --- round 4: g1 is killed -9 while it signs its group delta --------------------
need "round 4 opens at the root after g1, restarted, delivered round 3" wait_for 90 opened ex 4
need "g1 merges round 4 and is held while it signs" wait_for 60 test -e g1-signing
kill_group "$g1"
sha_kept=$(sha256sum g1/round-4/aggregate.safetensors | cut -c1-64)
check "killed there, g1 holds round 4's group delta and record, and the root's inbox does not" bash -c "
    test -f g1/round-4/record.json && ! test -e ex/round-4/inbox/g1.safetensors"
rm -f hold-sign
start_g1
check "restarted, g1 sends that group delta up without merging again" bash -c "$(declare -f wait_for)
    wait_for 30 test -e ex/round-4/inbox/g1.safetensors &&
    test \"\$(sha256sum ex/round-4/inbox/g1.safetensors | cut -c1-64)\" = $sha_kept &&
    test \$(grep -c 'round 4 is open' g1.err) = 1"
need "the federation ends after round 4" wait_for 90 test -f ex/final.json

# ends NAME PID PATTERN: the party says it is done (PATTERN in NAME.err) and exits 0
ends() {
    local status
    wait_for 30 grep -q "$3" "$1.err" || { kill -9 -- "-$2" 2>/dev/null; echo "$1 did not end" >&2; return 1; }
    wait "$2"
    status=$?
    [ "$status" = 0 ] || { echo "$1 exited $status" >&2; return 1; }
}
check "the root aggregator ends, exit 0" ends agg "$agg" "the federation is complete"
check "g1's aggregator ends with its parent, exit 0" ends g1 "$g1" "the parent's federation is complete"
check "g2's aggregator ends with its parent, exit 0" ends g2 "$g2" "the parent's federation is complete"
for c in c1 c2 c3 c4 c5 c6; do
    eval "p=\$pid_$c"
    check "client $c ends after the last round, exit 0" ends "$c" "$p" "the federation has ended"
done
check "each group published the root's final checkpoint for its members" \
    bash -c "cmp ex/global-r4.safetensors ex-g1/global-r4.safetensors && cmp ex/global-r4.safetensors ex-g2/global-r4.safetensors"

# --- what every level kept ----------------------------------------------------
for a in agg g1 g2; do
    check "$a: every round it merged passes verify-round.sh" env BIN="$BIN" "$ROOT/examples/verify-round.sh" "$a"
done
merged() { python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(" ".join(sorted(d["client"] for d in r["deltas"] if d["accepted"])))' "$1/round-$2/record.json"; }
m="$(merged agg 1)|$(merged agg 2)|$(merged agg 3)|$(merged agg 4)"
check "the root merged c5 g1 g2, then c5 g1 (g2 stopped), then c5 g1 g2 twice ($m)" \
    test "$m" = "c5 g1 g2|c5 g1|c5 g1 g2|c5 g1 g2"
m="$(merged g1 1)|$(merged g1 2)|$(merged g1 3)|$(merged g1 4)"
check "g1 merged c1 and c2 every round ($m)" test "$m" = "c1 c2|c1 c2|c1 c2|c1 c2"
check "g2 asked 2 of its 3 members each round, the draw anyone can redo from its id and the round" python3 -c '
import json, random
for r in (1, 2, 3, 4):
    asked = json.load(open(f"ex-g2/round-{r}/round.json"))["members"]
    assert asked == sorted(random.Random(f"photon-sample:g2:{r}").sample(["c3", "c4", "c6"], 2)), (r, asked)'
check "c6 sat out the rounds it was not asked, without training" bash -c "
    grep -q 'round 1: not asked to train' c6.err && grep -q 'round 3: not asked to train' c6.err &&
    ! test -e client-c6/logs/train-r1.log && ! test -e client-c6/logs/train-r3.log && test -e client-c6/logs/train-r4.log"
check "g2 merged c3 in rounds 1 and 3 and refused c4, naming the tensor it leaves out and why; c3 and c6 in round 4" python3 -c '
import json
for r, want in ((1, {"c3"}), (3, {"c3"}), (4, {"c3", "c6"})):
    rec = json.load(open(f"g2/round-{r}/record.json"))
    acc = {d["client"] for d in rec["deltas"] if d["accepted"]}
    bad = [d["reason"] for d in rec["deltas"] if not d["accepted"]]
    assert acc == want, (r, acc)
    if r < 4: assert len(bad) == 1 and "leaves out tensor" in bad[0] and "ln_f" in bad[0] and "group delta" in bad[0], (r, bad)'
check "c6's delivery in round 3, not asked, is left out of g2's merge and record, and its round line says why" bash -c "
    ! grep -q delta-c6 g2/round-3/record.json && grep -P '^3\t1\t2\t' g2.out | grep -q 'c6: not asked to train this round'"
check "a group delta names its members, and g1's leaves out h.1.* as its members do" python3 -c '
import json, subprocess
def inspect(path):
    return json.loads(subprocess.run(["'"$BIN"'/photon-merge", "--inspect", path], capture_output=True, check=True).stdout)
for r in (1, 3, 4):
    g1, g2 = inspect(f"agg/round-{r}/delta-g1.safetensors"), inspect(f"agg/round-{r}/delta-g2.safetensors")
    assert g1["client"] == "g1" and g1["members"] == 2 and g1["personal"] == "h.1.*", g1
    assert g2["client"] == "g2" and g2["members"] == (2 if r == 4 else 1) and g2["personal"] == "", g2'

# tree = flat: each root round against the flat merge of the members' deltas
# that its merge took (the direct ones, and each accepted group's accepted members)
flat() {
    python3 - "$BIN" <<'PY'
import json, struct, subprocess, sys
import numpy as np
bin = sys.argv[1]
def tensors(path):
    f = open(path, "rb"); n = struct.unpack("<Q", f.read(8))[0]; head = json.loads(f.read(n)); data = f.read()
    return {k: np.frombuffer(data[v["data_offsets"][0]:v["data_offsets"][1]], dtype=np.float32)
            for k, v in head.items() if k != "__metadata__" and v["dtype"] == "F32"}
worst = 0.0
for r in range(1, 5):
    rec = json.load(open(f"agg/round-{r}/record.json"))
    deltas = []
    for d in rec["deltas"]:
        if not d["accepted"]: continue
        if d["client"] in ("g1", "g2"):
            grec = json.load(open(f"{d['client']}/round-{r}/record.json"))
            deltas += [f"{d['client']}/round-{r}/" + m["file"] for m in grec["deltas"] if m["accepted"]]
        else:
            deltas.append(f"agg/round-{r}/" + d["file"])
    subprocess.run([f"{bin}/photon-merge", "--base", f"agg/global-r{r - 1}.safetensors", "--out", f"flat-r{r}.st", *rec["merge_flags"],
                    *deltas], check=True, capture_output=True)
    tree, flat, base = tensors(f"agg/global-r{r}.safetensors"), tensors(f"flat-r{r}.st"), tensors(f"agg/global-r{r - 1}.safetensors")
    for k in tree:
        t, f, b = tree[k].astype(np.float64), flat[k].astype(np.float64), base[k].astype(np.float64)
        diff, step = np.abs(t - f), np.abs(t - b).max()
        # docs/ALGORITHM.md's bound: a few float32 roundings (u = 2^-24) of the
        # step and of the parameters; a member weighed wrongly moves a
        # coordinate by a sizeable part of its step instead
        bound = 2.0**-22 * (np.abs(b) + np.abs(t) + step)
        if (diff > bound).any():
            i = int(np.argmax(diff - bound))
            sys.exit(f"round {r}, {k}[{i}]: tree and flat differ by {diff[i]:.3g}, more than {bound[i]:.3g} (step {step:.3g})")
        worst = max(worst, diff.max())
    moved = max(np.abs(tree[k].astype(np.float64) - base[k]).max() for k in tree)
    if moved < 1e-4: sys.exit(f"round {r}: the merge did not move the model ({moved})")
print(f"worst |tree - flat| {worst:.3g}")
PY
}
check "each root round is the flat merge of its members' deltas, to float rounding" flat
grep -h "worst" "$W/out" | sed 's/^/    /'

# the personal tensors stay with their members
state_meta() { python3 -c 'import json, struct, sys; f = open(sys.argv[1], "rb"); n = struct.unpack("<Q", f.read(8))[0]; print(json.loads(f.read(n))["__metadata__"].get("photon.personal", "-"))' "$1"; }
check "c1 and c2 keep h.1.* in their states (the group's), c5 and c4 ln_f.* (their own), c3 and c6 none" test \
    "$(for c in 1 2 3 4 5 6; do state_meta client-c$c/state.safetensors; done | tr '\n' ' ')" = "h.1.* h.1.* - ln_f.* ln_f.* - "
check "no delivery at any level carries a personal tensor's values" python3 -c '
import glob, json, struct
for path in glob.glob("ex*/round-*/inbox/*.safetensors"):
    f = open(path, "rb"); n = struct.unpack("<Q", f.read(8))[0]; head = json.loads(f.read(n))
    who = path.split("/")[-1][:-len(".safetensors")]
    personal = {"c1": "h.1.", "c2": "h.1.", "g1": "h.1.", "c4": "ln_f.", "c5": "ln_f."}.get(who)
    if personal: assert not any(k.startswith(personal) for k in head), (path, [k for k in head if k.startswith(personal)][:3])'
check "photon-eval --state evaluates c1's personalised model, which differs from the global one" bash -c "
    \"$BIN/photon-eval\" --model ex/global-r4.safetensors --data data-c1.txt --seq 32 --json >plain.json &&
    \"$BIN/photon-eval\" --model ex/global-r4.safetensors --state client-c1/state.safetensors --data data-c1.txt --seq 32 --json >own.json &&
    python3 -c 'import json; a, b = json.load(open(\"plain.json\"))[\"loss\"], json.load(open(\"own.json\"))[\"loss\"]; assert a != b, (a, b)'"
check "no client's data or state reached an exchange" bash -c '
    ! find ex ex-g1 ex-g2 -type f -exec sha256sum {} + | cut -c1-64 | grep -qxFf <(sha256sum data-c*.txt client-*/state.safetensors | cut -c1-64)'
check "no upload or publication left a temporary behind" bash -c '! find ex ex-g1 ex-g2 agg g1 g2 -name ".*.*" -o -name "*.part" -o -name "*.tmp" | grep -q .'
summary
