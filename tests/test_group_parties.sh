#!/usr/bin/env bash
# test_group_parties.sh BINDIR - a federation of federations run by
# independent parties: a root aggregator (examples/aggregator.sh) whose
# members are two groups and one client, each group run by its own
# aggregator (aggregator.sh --parent) with its own exchange and members
# (examples/client.sh), four rounds:
#
#   root   members en, fr (groups) and c5 (a client that keeps ln_f.* to itself)
#   en     members c1, c2; the group keeps h.1.* personal for both (--personal)
#   fr     members c3, c4, c6, two asked each round (--sample 2: c4 and c6,
#          then c3 and c4 twice, then c4 and c6); c4 keeps ln_f.* to itself,
#          which fr does not declare: a group delta needs the same tensors
#          from every member, so fr refuses c4's deltas, saying why; a member
#          not asked sits the round out, and a delta it delivers all the same
#          (c6, round 3) is left out
#
#   round 2  en's aggregator is killed -9 while it collects and restarted
#   round 3  en's aggregator is killed -9 after its merge and record, while it
#            signs: restarted, it sends that group delta up without merging again
#   round 4  fr's aggregator is stopped while it collects: the root merges at
#            its deadline without fr; let go, fr drops the round and ends with
#            the root
#
# The root's deadline is long (a group needs its own deadline and a merge
# before it delivers, on a loaded machine too); only round 4 waits for it.
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

for id in en fr c1 c2 c3 c4 c5 c6; do ssh-keygen -q -t ed25519 -N '' -C "$id" -f "key-$id"; done
signers() { local id; for id in "$@"; do echo "$id namespaces=\"photon-delta\" $(cut -d' ' -f1,2 "key-$id.pub")"; done; }
signers en fr c5 >root_signers
signers c1 c2 >en_signers
signers c3 c4 c6 >fr_signers
for c in 1 2 3 4 5 6; do "$BIN/synthlang" --seed 7 --dialect "$((c % 4))" --words 48 --bytes 40000 --out "data-c$c.txt" 2>/dev/null; done
mkdir ex ex-en ex-fr

# usage errors come first, and write nothing
check "a group's aggregator refuses the settings it takes from its parent (exit 2, one line)" \
    expect_exit 2 "a group takes its rounds, model and training from the parent.*--rounds" \
    "$ROOT/examples/aggregator.sh" --parent ex --id en --key key-en --exchange ex-en --work bad --allowed-signers en_signers --rounds 3
check "--parent needs --id (exit 2)" expect_exit 2 "--parent needs --id" \
    "$ROOT/examples/aggregator.sh" --parent ex --key key-en --exchange ex-en --work bad --allowed-signers en_signers
check "--id without --parent is refused (exit 2)" expect_exit 2 "--id and --key go with --parent" \
    "$ROOT/examples/aggregator.sh" --id en --exchange ex-en --work bad --allowed-signers en_signers
check "--sample more than the members is refused (exit 2)" expect_exit 2 "--sample expects 1 to 2" \
    "$ROOT/examples/aggregator.sh" --exchange ex --work bad --allowed-signers en_signers --sample 3
check "--sample below --min-clients is refused (exit 2)" expect_exit 2 "--min-clients 2 is more than the 1 members --sample asks" \
    "$ROOT/examples/aggregator.sh" --exchange ex --work bad --allowed-signers en_signers --sample 1 --min-clients 2
check "a client's --personal takes tensor-name globs only (exit 2)" expect_exit 2 "--personal h 1: a tensor-name glob" \
    "$ROOT/examples/client.sh" --exchange ex --id c1 --key key-c1 --data data-c1.txt --personal "h 1" --work bad
check "no usage error left files behind" test ! -e bad

# en's ssh-keygen holds still while it signs round 3's group delta and hold-sign exists
mkdir gtools
cat >gtools/ssh-keygen <<EOF
#!/usr/bin/env bash
if [ -e "$W/hold-sign" ] && [[ " \$* " == *" $W/en/round-3/aggregate.safetensors"* ]]; then
    touch "$W/en-signing"
    while [ -e "$W/hold-sign" ]; do sleep 0.1; done
fi
exec $(command -v ssh-keygen) "\$@"
EOF
chmod +x gtools/ssh-keygen

start_root() {
    setsid "$ROOT/examples/aggregator.sh" --exchange ex --work agg --allowed-signers root_signers --rounds 4 --min-clients 2 \
        --deadline 20 --poll 0.3 --layers 2 --heads 2 --width 64 --ctx 32 --local-steps 6 --batch 2 --seq 32 --lr 3e-3 \
        --bin "$BIN" >>agg.out 2>>agg.err &
    agg=$!
    pids+=("$agg")
}
start_en() {
    PATH="$W/gtools:$PATH" setsid "$ROOT/examples/aggregator.sh" --parent ex --id en --key key-en --exchange ex-en --work en \
        --allowed-signers en_signers --min-clients 2 --deadline 30 --poll 0.3 --personal 'h.1.*' --bin "$BIN" >>en.out 2>>en.err &
    en=$!
    pids+=("$en")
}
start_fr() {
    setsid "$ROOT/examples/aggregator.sh" --parent ex --id fr --key key-fr --exchange ex-fr --work fr \
        --allowed-signers fr_signers --min-clients 1 --sample 2 --deadline 4 --poll 0.3 --bin "$BIN" >>fr.out 2>>fr.err &
    fr=$!
    pids+=("$fr")
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
start_en
start_fr
start_client c1 ex-en
start_client c2 ex-en
start_client c3 ex-fr
start_client c4 ex-fr --personal 'ln_f.*'
start_client c5 ex --personal 'ln_f.*'
start_client c6 ex-fr

# --- round 1: every level, in order --------------------------------------------
need "round 1 opens at the root and in both groups, with the root's base" bash -c "$(declare -f wait_for opened)
    wait_for 60 opened ex-en 1 && wait_for 30 opened ex-fr 1 && cmp ex/global-r0.safetensors ex-en/global-r0.safetensors &&
    cmp ex/global-r0.safetensors ex-fr/global-r0.safetensors"
check "en's round.json asks its members to keep h.1.* personal, with the root's training settings" python3 -c '
import json
g, r = json.load(open("ex-en/round-1/round.json")), json.load(open("ex/round-1/round.json"))
assert g["personal"] == ["h.1.*"] and "personal" not in r, (g.get("personal"), r.get("personal"))
assert g["train_args"] == r["train_args"] and g["base_sha256"] == r["base_sha256"] and g["members"] == ["c1", "c2"]'

# --- round 2: en is killed -9 while it collects, and restarted -----------------
need "round 2 opens in en" wait_for 90 opened ex-en 2
kill_group "$en"
start_en
touch hold-sign

# --- round 3: en is killed -9 while it signs; c6 delivers though not asked ------
need "round 3 opens in fr" wait_for 90 opened ex-fr 3
"$BIN/photon-train" --model ex-fr/global-r2.safetensors --data data-c6.txt --steps 1 --batch 2 --seq 32 --delta-out c6.st \
    --client-id c6 2>/dev/null && ssh-keygen -Y sign -q -f key-c6 -n photon-delta c6.st
for f in c6.st.sig:c6.safetensors.sig c6.st:c6.safetensors; do
    cp "${f%%:*}" "ex-fr/round-3/inbox/.${f#*:}.part" && mv "ex-fr/round-3/inbox/.${f#*:}.part" "ex-fr/round-3/inbox/${f#*:}"
done
need "en, restarted in round 2, merges round 3 and is held while it signs" wait_for 90 test -e en-signing
kill_group "$en"
sha_kept=$(sha256sum en/round-3/aggregate.safetensors | cut -c1-64)
check "killed there, en holds round 3's group delta and record, and the root's inbox does not" bash -c "
    test -f en/round-3/record.json && ! test -e ex/round-3/inbox/en.safetensors"
rm -f hold-sign
start_en
check "restarted, en sends that group delta up without merging again" bash -c "$(declare -f wait_for)
    wait_for 30 test -e ex/round-3/inbox/en.safetensors &&
    test \"\$(sha256sum ex/round-3/inbox/en.safetensors | cut -c1-64)\" = $sha_kept &&
    test \$(grep -c 'round 3 is open' en.err) = 1"

# --- round 4: fr stops while it collects; the root goes on without it -----------
need "round 4 opens in fr" wait_for 90 opened ex-fr 4
kill -STOP -- "-$fr"
need "with fr stopped, the root merges round 4 at its deadline and ends" wait_for 90 test -f ex/final.json
kill -CONT -- "-$fr"
check "let go, fr sees that the root closed round 4, and sends nothing up for it" bash -c "$(declare -f wait_for)
    wait_for 30 grep -q 'round 4: the parent closed it before' fr.err && test -e fr/round-4/dropped &&
    ! test -e ex/round-4/inbox/fr.safetensors"

# ends NAME PID PATTERN: the party says it is done (PATTERN in NAME.err) and exits 0
ends() {
    local status
    wait_for 30 grep -q "$3" "$1.err" || { kill -9 -- "-$2" 2>/dev/null; echo "$1 did not end" >&2; return 1; }
    wait "$2"
    status=$?
    [ "$status" = 0 ] || { echo "$1 exited $status" >&2; return 1; }
}
check "the root aggregator ends, exit 0" ends agg "$agg" "the federation is complete"
check "en's aggregator ends with its parent, exit 0" ends en "$en" "the parent's federation is complete"
check "fr's aggregator ends with its parent, exit 0" ends fr "$fr" "the parent's federation is complete"
for c in c1 c2 c3 c4 c5 c6; do
    eval "p=\$pid_$c"
    check "client $c ends after the last round, exit 0" ends "$c" "$p" "the federation has ended"
done
check "each group published the root's final checkpoint for its members" \
    bash -c "cmp ex/global-r4.safetensors ex-en/global-r4.safetensors && cmp ex/global-r4.safetensors ex-fr/global-r4.safetensors"

# --- what every level kept ----------------------------------------------------
for a in agg en fr; do
    check "$a: every round it merged passes verify-round.sh" env BIN="$BIN" "$ROOT/examples/verify-round.sh" "$a"
done
merged() { python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(" ".join(sorted(d["client"] for d in r["deltas"] if d["accepted"])))' "$1/round-$2/record.json"; }
m="$(merged agg 1)|$(merged agg 2)|$(merged agg 3)|$(merged agg 4)"
check "the root merged c5 en fr three rounds, then c5 en (fr stopped) ($m)" \
    test "$m" = "c5 en fr|c5 en fr|c5 en fr|c5 en"
m="$(merged en 1)|$(merged en 2)|$(merged en 3)|$(merged en 4)"
check "en merged c1 and c2 every round ($m)" test "$m" = "c1 c2|c1 c2|c1 c2|c1 c2"
check "fr asked 2 of its 3 members each round, the draw anyone can redo from its id and the round" python3 -c '
import json, random
for r in (1, 2, 3, 4):
    asked = json.load(open(f"ex-fr/round-{r}/round.json"))["members"]
    assert asked == sorted(random.Random(f"photon-sample:fr:{r}").sample(["c3", "c4", "c6"], 2)), (r, asked)'
check "c6 sat out the rounds it was not asked, without training" bash -c "
    grep -q 'round 2: not asked to train' c6.err && grep -q 'round 3: not asked to train' c6.err &&
    ! test -e client-c6/logs/train-r2.log && ! test -e client-c6/logs/train-r3.log && test -e client-c6/logs/train-r1.log"
check "fr merged c6 in round 1 and c3 in rounds 2 and 3, and refused c4 each time, naming the tensor it leaves out and why" python3 -c '
import json, os
for r, want in ((1, {"c6"}), (2, {"c3"}), (3, {"c3"})):
    rec = json.load(open(f"fr/round-{r}/record.json"))
    acc = {d["client"] for d in rec["deltas"] if d["accepted"]}
    bad = [d["reason"] for d in rec["deltas"] if not d["accepted"]]
    assert acc == want and len(bad) == 1, (r, acc, bad)
    assert "leaves out tensor" in bad[0] and "ln_f" in bad[0] and "group delta" in bad[0], (r, bad)
assert os.path.exists("fr/round-4/dropped") and not os.path.exists("fr/round-4/record.json")'
check "c6's delivery in round 3, not asked, is left out of fr's merge and record, and its round line says why" bash -c "
    ! grep -q delta-c6 fr/round-3/record.json && grep -P '^3\t1\t2\t' fr.out | grep -q 'c6: not asked to train this round'"
check "a group delta names its members, and en's leaves out h.1.* as its members do" python3 -c '
import json, subprocess
def inspect(path):
    return json.loads(subprocess.run(["'"$BIN"'/photon-merge", "--inspect", path], capture_output=True, check=True).stdout)
for r in (1, 2, 3):
    en, fr = inspect(f"agg/round-{r}/delta-en.safetensors"), inspect(f"agg/round-{r}/delta-fr.safetensors")
    assert en["client"] == "en" and en["members"] == 2 and en["personal"] == "h.1.*", en
    assert fr["client"] == "fr" and fr["members"] == 1 and fr["personal"] == "", fr'

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
        if d["client"] in ("en", "fr"):
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
    personal = {"c1": "h.1.", "c2": "h.1.", "en": "h.1.", "c4": "ln_f.", "c5": "ln_f."}.get(who)
    if personal: assert not any(k.startswith(personal) for k in head), (path, [k for k in head if k.startswith(personal)][:3])'
check "photon-eval --state evaluates c1's personalised model, which differs from the global one" bash -c "
    \"$BIN/photon-eval\" --model ex/global-r4.safetensors --data data-c1.txt --seq 32 --json >plain.json &&
    \"$BIN/photon-eval\" --model ex/global-r4.safetensors --state client-c1/state.safetensors --data data-c1.txt --seq 32 --json >own.json &&
    python3 -c 'import json; a, b = json.load(open(\"plain.json\"))[\"loss\"], json.load(open(\"own.json\"))[\"loss\"]; assert a != b, (a, b)'"
check "no client's data or state reached an exchange" bash -c '
    ! find ex ex-en ex-fr -type f -exec sha256sum {} + | cut -c1-64 | grep -qxFf <(sha256sum data-c*.txt client-*/state.safetensors | cut -c1-64)'
check "no upload, fetch or publication left a temporary behind" bash -c '
    left=$(find ex ex-en ex-fr agg en fr -name ".*.*" -o -name "*.part" -o -name "*.tmp"); [ -z "$left" ] || { echo "$left" >&2; exit 1; }'
summary
