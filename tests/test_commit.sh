#!/usr/bin/env bash
# test_commit.sh BINDIR - photon-train's outputs commit as one group.
#
# A fault injected before each rename of the commit (PHOTON_TRAIN_FAULT,
# docs/TESTING.md) leaves files that load, and the same command run again
# finishes the commit: the same bytes as a run that was not interrupted;
# a group that cannot be finished is trained again. 20 kill -9 at random
# moments of a run that writes some 50 MB: every file under a final name
# loads, the next run leaves no leftover and a state that names its delta.
# A second process on a locked --state is refused. The same round run
# twice trains once. Leftovers of running processes are not touched.
# Prints "ok - ..." / "FAIL - ..." and a last line "N passed, N failed"
# (tests/lib.sh).
set -u
BIN=$(cd "${1:-bin}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/tests/lib.sh"
scratch commit
cd "$W" || exit 2

tiny=(--layers 1 --heads 2 --width 16 --ctx 16)
"$BIN/synthlang" --seed 3 --words 24 --bytes 20000 --out data.txt 2>/dev/null
"$BIN/photon-train" --init "${tiny[@]}" --steps 0 --out g0.st 2>/dev/null

# round ARGS...: one client round in the current directory
round() { "$BIN/photon-train" --data "$W/data.txt" --batch 2 --seq 8 --steps 3 --client-id c0 "$@"; }
# commit_key STATE KEY: the value of photon.commit.KEY in the state's header
commit_key() { head -c 8192 "$1" | grep -ao "\"photon.commit.$2\":\"[^\"]*\"" | sed 's/.*:"\(.*\)"$/\1/'; }
sha() { sha256sum "$1" | cut -c1-64; }
# leftovers: what a run leaves beside its outputs (the lock file stays)
leftovers() { ls | grep -E '\.(pending|tmp|probe)$'; }
no_leftovers() { local l; l=$(leftovers); [ -z "$l" ] || { echo "left behind: $l" >&2; return 1; }; }
# consistent STATE DELTA OUT: the state's record names the delta and checkpoint there, by hash
consistent() {
    [ "$(commit_key "$1" delta_sha256)" = "$(sha "$2")" ] || { echo "$1 does not record $2" >&2; return 1; }
    [ "$(commit_key "$1" out_sha256)" = "$(sha "$3")" ] || { echo "$1 does not record $3" >&2; return 1; }
}
# loads MODEL [STATE DELTA CKPT]: each file that exists loads with its reader
loads() {
    local model=$1 state=$2 delta=$3 out=$4
    if [ -e "$delta" ]; then "$BIN/photon-merge" --inspect "$delta" >/dev/null || return 1; fi
    if [ -e "$out" ]; then "$BIN/photon-eval" --model "$out" --data "$W/data.txt" --max-tokens 16 >/dev/null || return 1; fi
    if [ -e "$state" ]; then
        mkdir -p load && cp "$state" load/s.st &&
            "$BIN/photon-train" --model "$model" --data "$W/data.txt" --steps 0 --state load/s.st --out load/x.st \
                2>/dev/null || return 1
        rm -rf load
    fi
}

# --- a fault before each rename: out (1), delta (2), state (3) ---
two_rounds() { # DIR [FAULT]: round 1, then round 2 with PHOTON_TRAIN_FAULT=FAULT
    mkdir -p "$1" && cd "$1" && cp ../g0.st . &&
        round --model g0.st --state s.st --delta-out d1.st --out o1.st 2>/dev/null &&
        PHOTON_TRAIN_FAULT=${2:-} round --model o1.st --state s.st --delta-out d.st --out o.st
}
two_rounds ref >/dev/null 2>&1
round2() { round --model o1.st --state s.st --delta-out d.st --out o.st; }
for k in 1 2 3 4; do
    cd "$W" || exit 2
    run two_rounds "f$k" "rename:$((k < 4 ? k : 1))" # f4: a fault before rename 1, then the pending delta lost
    status=$rc && cp "$W/err" fault.err
    what="fault before rename $k:"
    [ "$k" = 4 ] && what="fault before rename 1, the pending delta lost:" && rm -f d.st.*.pending
    check "$what exit 1 saying so" grep -q 'a fault was injected' fault.err
    [ "$status" = 1 ] || fail "$what exit 1" "exit $status"
    check "$what the files under final names load" loads o1.st s.st d.st o.st
    run round2
    cp "$W/err" again.err
    if [ "$k" -lt 4 ]; then
        check "$what the same command finishes the commit" grep -q 'finished the commit that a killed run' again.err
    else
        check "$what the same command trains again" bash -c "! grep -q 'finished the commit' again.err && grep -q 'removed 2 files' again.err"
    fi
    check "$what then no leftover, and the state names its delta" bash -c "$(declare -f leftovers no_leftovers consistent commit_key sha); no_leftovers && consistent s.st d.st o.st"
    check "$what delta, checkpoint and state equal an uninterrupted run's" \
        bash -c "cmp d.st ../ref/d.st && cmp o.st ../ref/o.st && cmp s.st ../ref/s.st"
done
cd "$W" || exit 2

# --- the same round twice: the second run trains nothing ---
mkdir -p same && cd same && cp ../g0.st .
round --model g0.st --state s.st --delta-out d.st --out o.st 2>/dev/null
cp d.st d.before && cp s.st s.before && cp o.st o.before
check "the same round again exits 0 with a note" expect_exit 0 "d.st already holds this state's delta against g0.st" \
    round --model g0.st --state s.st --delta-out d.st --out o.st --json
check "the same round again says so in --json" grep -q '"already_done":true,"steps":3,"tokens":48' "$W/cmd.out"
check "the same round again leaves delta, state and checkpoint byte for byte" \
    bash -c "cmp d.st d.before && cmp s.st s.before && cmp o.st o.before"
rm d.st # uploaded: the next run trains the next round
check "with its delta gone, the next run trains" bash -c "'$BIN/photon-train' --data '$W/data.txt' --batch 2 --seq 8 --steps 3 \
    --client-id c0 --model g0.st --state s.st --delta-out d.st --out o.st --json 2>/dev/null | grep -q '\"already_done\":false'"

# --- leftovers: a dead process's are removed, a running one's kept ---
sleep 30 & live=$!
echo x >o.st.$live.pending && echo x >d.st.4999999.pending && echo x >d.st.4999999.pending.4999999.tmp &&
    echo x >s.st.4999999.tmp && echo x >s.st.4999999.probe && echo x >s.st.4999999.pending
rm d.st
round --model g0.st --state s.st --delta-out d.st --out o.st 2>cleanup.err
check "leftovers of a process that is gone are removed, with a note" grep -q 'removed 5 files' cleanup.err
check "a running process's pending file is kept" test -e o.st.$live.pending
kill "$live" && wait "$live" 2>/dev/null
rm -f o.st.$live.pending
cd "$W" || exit 2

# --- a second process on a locked state ---
mkdir -p lock && cd lock && cp ../g0.st .
"$BIN/photon-train" --model g0.st --data "$W/data.txt" --batch 2 --seq 8 --steps 4000 --state s.st --out first.st \
    2>first.err & first=$!
for _ in $(seq 100); do grep -q parameters first.err 2>/dev/null && break; sleep 0.1; done
check "a second process on the same --state is refused, naming the holder" \
    expect_exit 1 "s.st: in use by another process \(pid $first holds s.st.lock\)" \
    "$BIN/photon-train" --model g0.st --data "$W/data.txt" --steps 1 --state s.st --out second.st
check "the refused process wrote nothing" bash -c "[ ! -e second.st ] && ! ls second.st.* 2>/dev/null"
wait "$first"
check "the first process finishes fine" test $? = 0 -a -e first.st -a -e s.st
check "a device as --state is refused before a lock file is made beside it" \
    expect_exit 1 "/dev/null: exists and is not a regular file" \
    "$BIN/photon-train" --model g0.st --data "$W/data.txt" --steps 1 --state /dev/null --out x.st
check "no /dev/null.lock was made" test ! -e /dev/null.lock
check "after it, the state is free again" "$BIN/photon-train" --model g0.st --data "$W/data.txt" --steps 1 --state s.st --out second.st
cd "$W" || exit 2

# --- kill -9 at random moments of a run that writes some 50 MB ---
mkdir -p kill && cd kill
big=(--layers 4 --heads 4 --width 256 --ctx 16)
"$BIN/photon-train" --init "${big[@]}" --steps 0 --out g.st 2>/dev/null
cmd=("$BIN/photon-train" --model g.st --data "$W/data.txt" --batch 2 --seq 8 --steps 2 --threads 2 --client-id c0
     --state s.st --delta-out d.st --out o.st)
start=$(date +%s%N); "${cmd[@]}" 2>/dev/null; span=$((($(date +%s%N) - start) / 1000000 + 50)) # ms
RANDOM=${PHOTON_TEST_SEED:-12}
bad_loads=0 bad_after=0 kills="" finished=0 cleaned=0
for i in $(seq 20); do
    rm -f d.st # uploaded: each run trains and writes
    delay=$((RANDOM % span))
    "${cmd[@]}" 2>/dev/null & victim=$!
    sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
    kill -9 "$victim" 2>/dev/null
    wait "$victim" 2>/dev/null
    kills="$kills $delay"
    loads g.st s.st d.st o.st 2>/dev/null || { bad_loads=$((bad_loads + 1)); echo "# kill $i at $delay ms: a final file does not load"; }
    "${cmd[@]}" 2>next.err && no_leftovers && consistent s.st d.st o.st ||
        { bad_after=$((bad_after + 1)); echo "# kill $i at $delay ms: the next run left an inconsistent set"; }
    grep -q 'finished the commit' next.err && finished=$((finished + 1))
    grep -q 'removed .* killed runs left' next.err && cleaned=$((cleaned + 1))
done
echo "# killed at (ms of $span):$kills; the next run finished $finished commits, removed leftovers $cleaned times"
check "20 kill -9: every file under a final name loads" test "$bad_loads" = 0
check "20 kill -9: each next run leaves no leftover and a state that names its delta" test "$bad_after" = 0
cd "$W" || exit 2
summary
