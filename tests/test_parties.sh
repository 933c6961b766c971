#!/usr/bin/env bash
# test_parties.sh BINDIR - a federation of independent parties: an
# aggregator (examples/aggregator.sh) and three clients (examples/client.sh)
# as separate processes that meet only through a local exchange directory,
# four rounds, with the faults the protocol must survive:
#
#   round 1  only c1 runs at first, and is held after training: the
#            deadline passes below the minimum and the aggregator keeps
#            waiting; it is killed -9 while it waits, its --work is lost, and
#            started again with the same command it takes the federation from
#            the exchange; c2 and c3 start and the round merges with them;
#            c1, let go, finds the federation moved on, drops its delta and
#            trains round 2
#   round 2  c2 is killed -9 while it trains: the round merges at the deadline
#            with c1 and c3
#   round 3  c2, restarted, rejoins; a member's tampered delta and a delta
#            signed by an unknown key are refused; the aggregator is killed
#            -9 after its merge wrote the checkpoint and before the round's
#            record, and restarted: it merges the round again
#   round 4  a member's truncated delivery (signed as it is) is refused; c3
#            is killed -9 after its delta and state are written and before
#            its upload: restarted, it uploads that delta without training
#            again
#
# and at the end a new aggregator, with an empty --work, takes the whole
# finished federation from the exchange and verifies it.
#
# Then: every round passes examples/verify-round.sh, the final checkpoint
# equals the merge chain recomputed from the accepted deltas alone, the
# refused deltas were never merged, the exchange holds no client's data or
# state, and what was published is what the aggregator kept.
set -u
BIN=$(cd "${1:-bin}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/tests/lib.sh"
scratch parties
for tool in rsync ssh-keygen python3 setsid; do
    command -v "$tool" >/dev/null || { skip "test_parties: $tool is not installed"; summary; exit; }
done
cd "$W" || exit 2
pids=()
trap 'for p in "${pids[@]}"; do kill -9 -- "-$p" 2>/dev/null; done; rm -rf "$W"' EXIT

# the members' keys; m4 is a member whose deliveries go wrong; intruder's key is not registered
for id in c1 c2 c3 m4 intruder; do ssh-keygen -q -t ed25519 -N '' -C "$id" -f "key-$id"; done
for id in c1 c2 c3 m4; do echo "$id namespaces=\"photon-delta\" $(cut -d' ' -f1,2 "key-$id.pub")"; done >allowed_signers
for c in 1 2 3; do "$BIN/synthlang" --seed 5 --dialect "$c" --words 48 --bytes 60000 --out "data-c$c.txt" 2>/dev/null; done
"$BIN/synthlang" --seed 5 --dialect 0 --words 48 --bytes 8000 --sample-seed 77 --out val.txt 2>/dev/null
mkdir exchange

# the aggregator's tools: photon-merge holds still after writing its output
# while slow-merge exists (the moment a kill leaves a checkpoint without its record)
mkdir tools
for t in photon-train photon-eval photon-data; do ln -s "$BIN/$t" "tools/$t"; done
cat >tools/photon-merge <<EOF
#!/usr/bin/env bash
"$BIN/photon-merge" "\$@"; rc=\$?
case " \$* " in *" --out "*) if [ -e "$W/slow-merge" ]; then touch "$W/merging"; sleep 60; fi ;; esac
exit \$rc
EOF
chmod +x tools/photon-merge
# the clients' photon-train holds still after writing its outputs in round N while hold-ID holds N
mkdir ctools
cat >ctools/photon-train <<EOF
#!/usr/bin/env bash
"$BIN/photon-train" "\$@"; rc=\$?
id=\$(printf '%s\\n' "\$@" | grep -A1 -x -- --client-id | tail -n 1)
n=\$(cat "$W/hold-\$id" 2>/dev/null)
if [ -n "\$n" ] && [ -e "$W/exchange/round-\$n/round.json" ] && [ ! -e "$W/exchange/round-\$((n + 1))/round.json" ]; then
    touch "$W/\$id-trained"
    while [ -e "$W/hold-\$id" ]; do sleep 0.1; done
fi
exit \$rc
EOF
chmod +x ctools/photon-train

agg_cmd=("$ROOT/examples/aggregator.sh" --exchange exchange --work agg --allowed-signers allowed_signers
    --rounds 4 --min-clients 2 --deadline 8 --poll 0.3 --layers 3 --heads 4 --width 192 --ctx 64
    --local-steps 8 --batch 4 --seq 64 --lr 2e-3 --val val.txt --bin "$W/tools")
start_agg() { setsid "${agg_cmd[@]}" >>agg.out 2>>agg.err & agg=$!; pids+=("$agg"); }
start_client() { # start_client ID: a member, in its own process group
    setsid "$ROOT/examples/client.sh" --exchange exchange --id "$1" --key "key-$1" --data "data-$1.txt" \
        --work "client-$1" --poll 0.3 --threads 1 --bin "$W/ctools" >>"$1.out" 2>>"$1.err" &
    eval "pid_$1=\$!"
    pids+=($!)
}
opened() { [ -f "exchange/round-$1/round.json" ]; }
# deliver R FILE ID: FILE and FILE.sig into round R's inbox as ID's, each complete under its name
deliver() {
    local f
    for f in "$2.sig:$3.safetensors.sig" "$2:$3.safetensors"; do
        cp "${f%%:*}" "exchange/round-$1/inbox/.${f#*:}.part" && mv "exchange/round-$1/inbox/.${f#*:}.part" "exchange/round-$1/inbox/${f#*:}"
    done
}

# --- round 1: below the minimum at the deadline, the aggregator waits ------
for t in photon-eval photon-merge photon-data; do ln -s "$BIN/$t" "ctools/$t"; done
start_agg
echo 1 >hold-c1
start_client c1
need "round 1 is published with its base checkpoint" wait_for 30 opened 1
need "c1 has trained round 1 and is held before its upload" wait_for 30 test -e c1-trained
need "at the deadline with none of the 2 valid deltas needed, the aggregator keeps waiting and says so" \
    wait_for 30 grep -q "round 1: the deadline has passed with 0 valid delta(s); 2 needed, waiting" agg.err
kill_group "$agg"
rm -rf agg # its machine lost its files
start_agg
need "killed -9 while it waits and its --work lost, the aggregator takes the federation from the exchange" \
    wait_for 30 grep -q "took rounds 1 to 0 from exchange" agg.err
start_client c2
start_client c3

# --- round 2: c2 is killed while it trains ---------------------------------
need "round 1 merges once c2 and c3 deliver" wait_for 60 opened 2
rm -f hold-c1
check "c1, let go after round 1 closed, drops its delta and trains round 2" \
    wait_for 30 grep -q "c1: round 1 closed while this member trained; its delta is dropped" c1.err
training_c2() { grep -q "c2: round 2: training" c2.err && pgrep -f -- "--client-id c2" >/dev/null; }
if wait_for 30 training_c2; then
    kill_group "$pid_c2"
    pass "c2 is killed -9 while photon-train runs in round 2"
else
    fail "c2 is killed -9 while photon-train runs in round 2" "c2 never trained round 2"
fi

# --- round 3: c2 rejoins; bad deliveries; the aggregator dies in its merge --
need "round 2 merges at the deadline without c2" wait_for 60 opened 3
touch slow-merge
echo 4 >hold-c3
start_client c2
base3=exchange/$(python3 -c 'import json; print(json.load(open("exchange/round-3/round.json"))["base"])')
# m4 trains honestly (one step: these deliveries must land before the round's
# deadline however loaded the machine), signs, and its delta is changed after the signature
"$BIN/photon-train" --model "$base3" --data data-c1.txt --steps 1 --batch 4 --seq 64 --delta-out m4.st --client-id m4 2>/dev/null
ssh-keygen -Y sign -q -f key-m4 -n photon-delta m4.st
printf '\x55' | dd of=m4.st bs=1 seek=$(($(wc -c <m4.st) - 100)) conv=notrunc 2>/dev/null
deliver 3 m4.st m4
# a delta made by someone whose key the federation does not list
"$BIN/photon-train" --model "$base3" --data data-c1.txt --steps 1 --batch 4 --seq 64 --delta-out in.st --client-id intruder 2>/dev/null
ssh-keygen -Y sign -q -f key-intruder -n photon-delta in.st
deliver 3 in.st intruder
if wait_for 60 test -e merging; then
    kill_group "$agg"
    pass "the aggregator is killed -9 in round 3 between its merge and the round's record"
else
    fail "the aggregator is killed -9 in round 3 between its merge and the round's record" "the merge never ran"
fi
need "the kill left round 3's checkpoint without its record" \
    bash -c "test -f agg/global-r3.safetensors && ! test -f agg/round-3/record.json && ! test -f exchange/round-4/round.json"
rm -f slow-merge
# restarted needing 3 valid deltas (it applies from the next round published):
# round 4 waits for c3, killed and restarted, however loaded the machine
for i in "${!agg_cmd[@]}"; do [ "${agg_cmd[i]}" != --min-clients ] || agg_cmd[i + 1]=3; done
start_agg

# --- round 4: a truncated delivery ------------------------------------------
need "restarted, the aggregator merges round 3 again and opens round 4" wait_for 60 opened 4
base4=exchange/$(python3 -c 'import json; print(json.load(open("exchange/round-4/round.json"))["base"])')
"$BIN/photon-train" --model "$base4" --data data-c1.txt --steps 1 --batch 4 --seq 64 --delta-out m4b.st --client-id m4 2>/dev/null
head -c $(($(wc -c <m4b.st) / 2)) m4b.st >m4t.st
ssh-keygen -Y sign -q -f key-m4 -n photon-delta m4t.st
deliver 4 m4t.st m4
need "c3 trains round 4 and is held before its upload" wait_for 60 test -e c3-trained
kill_group "$pid_c3"
c3_delta=$(sha256sum client-c3/delta.safetensors | cut -c1-64)
check "killed -9 there, c3 has its round-4 delta but did not deliver it" \
    bash -c "test ! -e exchange/round-4/inbox/c3.safetensors && test -s client-c3/delta.safetensors"
rm -f hold-c3
start_client c3
check "restarted, c3 delivers that delta without training again" bash -c "$(declare -f wait_for)
    wait_for 30 test -e exchange/round-4/inbox/c3.safetensors &&
    test \"\$(sha256sum exchange/round-4/inbox/c3.safetensors | cut -c1-64)\" = $c3_delta &&
    grep -q '\"already_done\":true' client-c3/logs/train-r4.json"
need "the federation ends after round 4" wait_for 90 test -f exchange/final.json
# ends NAME PID: the party says it is done, and exits 0
ends() {
    local status
    case $1 in agg) wait_for 30 grep -q 'the federation is complete' agg.err ;; *) wait_for 30 grep -q 'the federation has ended' "$1.err" ;; esac ||
        { kill -9 -- "-$2" 2>/dev/null; echo "$1 did not end" >&2; return 1; }
    wait "$2"
    status=$?
    [ "$status" = 0 ] || { echo "$1 exited $status" >&2; return 1; }
}
for c in c1 c2 c3; do
    eval "p=\$pid_$c"
    check "client $c ends after the last round, exit 0" ends "$c" "$p"
done
check "the aggregator ends with the federation, exit 0" ends agg "$agg"

# --- what the rounds kept ----------------------------------------------------
check "every round passes verify-round.sh (signatures, merges, records, the chain)" \
    env BIN="$BIN" "$ROOT/examples/verify-round.sh" agg
merged() { python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(" ".join(sorted(d["client"] for d in r["deltas"] if d["accepted"])))' "agg/round-$1/record.json"; }
refused() { python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(" ".join(sorted(d["file"] + "=" + d["refused_by"] for d in r["deltas"] if not d["accepted"])))' "agg/round-$1/record.json"; }
m1=$(merged 1) m2=$(merged 2) m3=$(merged 3) m4=$(merged 4)
check "round 1 merged c2 and c3, not the late c1 ($m1)" test "$m1" = "c2 c3"
check "round 2 merged c1 and c3 without the killed c2 ($m2)" test "$m2" = "c1 c3"
check "round 3 merged c2 again, with c1 and c3 ($m3)" test "$m3" = "c1 c2 c3"
check "round 4 merged c1, c2 and c3 ($m4)" test "$m4" = "c1 c2 c3"
check "round 3 refused the tampered delta and the unknown key's, by their signatures ($(refused 3))" \
    test "$(refused 3)" = "delta-intruder.safetensors=signature delta-m4.safetensors=signature"
# signed as it is, it fails when its header is read for the client id the signature must match
check "round 4 refused the truncated delivery ($(refused 4))" test "$(refused 4)" = "delta-m4.safetensors=signature"
check "the reasons name the problems" bash -c "
    grep -q 'its bytes changed after .m4. signed it' agg/round-3/record.json &&
    grep -q 'signed by a key that allowed_signers does not list' agg/round-3/record.json &&
    grep -q 'truncated' agg/round-4/record.json"
check "the round lines report each refusal with its reason" bash -c "
    grep -P '^3\t3\t2\t' agg.out | grep -q 'm4: ' && grep -P '^4\t3\t1\t' agg.out | grep -q 'm4: .*truncated'"
check "log.tsv holds each round once" bash -c "[ \$(cut -f1 agg/log.tsv | sort | uniq -d | wc -l) = 0 ] && [ \$(wc -l <agg/log.tsv) = 5 ]"

# the chain again, from the accepted deltas alone, with photon-merge itself
chain() {
    local r prev=agg/global-r0.safetensors files flags
    for r in 1 2 3 4; do
        mapfile -t flags <"agg/round-$r/merge-flags"
        files=$(python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(" ".join("agg/round-%s/" % sys.argv[2] + d["file"] for d in r["deltas"] if d["accepted"]))' "agg/round-$r/record.json" "$r")
        # shellcheck disable=SC2086
        "$BIN/photon-merge" --base "$prev" --out "chain-r$r.st" "${flags[@]}" $files 2>/dev/null || return 1
        prev=chain-r$r.st
    done
    cmp chain-r4.st agg/global-r4.safetensors && cmp chain-r4.st exchange/global-r4.safetensors
}
check "the final checkpoint is the merge chain recomputed from the accepted deltas" chain
check "what the exchange published is what the aggregator kept" bash -c '
    for f in exchange/global-r*.safetensors; do cmp "$f" "agg/${f#exchange/}" || exit 1; done
    for r in 1 2 3 4; do cmp exchange/round-$r/round.json agg/round-$r/round.json && cmp exchange/round-$r/record.json agg/round-$r/record.json || exit 1; done'
check "no client's data or state reached the exchange" bash -c '
    ! find exchange -type f -exec sha256sum {} + | cut -c1-64 | grep -qxFf <(sha256sum data-c*.txt client-*/state.safetensors | cut -c1-64)
    ! find exchange -name "*state*" | grep -q .'
check "no upload or publication left a temporary behind" bash -c '! find exchange agg -name ".*" -o -name "*.pending" -o -name "*.tmp" | grep -q .'
# state_delta STATE: the SHA-256 of the delta the state was committed with (its photon.commit.delta_sha256)
state_delta() { python3 -c 'import json, struct, sys; f = open(sys.argv[1], "rb"); n = struct.unpack("<Q", f.read(8))[0]; print(json.loads(f.read(n))["__metadata__"]["photon.commit.delta_sha256"])' "$1"; }
for c in c2 c3; do
    check "$c's state belongs to the last delta it delivered" bash -c "
        test \"\$(tail -n 1 client-$c/delivered)\" = 4 &&
        test \"$(state_delta client-$c/state.safetensors)\" = \"\$(sha256sum exchange/round-4/inbox/$c.safetensors | cut -c1-64)\""
done
check "a new aggregator with an empty --work takes the finished federation from the exchange and verifies it" \
    bash -c "$(printf '%q ' "${agg_cmd[@]}" | sed 's/--work agg /--work agg-new /') >agg-new.out 2>agg-new.err &&
        grep -q 'took rounds 1 to 4 from exchange; every one verifies' agg-new.err && cmp agg-new/global-r4.safetensors agg/global-r4.safetensors"
summary
