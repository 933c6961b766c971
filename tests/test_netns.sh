#!/usr/bin/env bash
# tests/test_netns.sh BINDIR - the federation across machines: hosts in
# network namespaces (tests/netns.sh), each with its own sshd, keys and
# directory. An exchange host ex and clients c1 c2 c3, each linked only to ex,
# which forwards nothing.
#
# Checks: each client logs into ex with its own key, ex's host key checked
# strictly; an unknown host key and an unauthorized key are refused; a client
# cannot reach another client, even routed through ex (and can once ex
# forwards: the check can fail); ex cannot log into a client; rsync to ex
# over ssh, and upload-then-rename; with tc netem, a slow link (50 ms, 10
# mbit) still carries a transfer. Then, once examples/aggregator.sh and
# examples/client.sh exist: the aggregator on ex, three clients reaching it
# over ssh, two rounds of a tiny model: every round merges all three, the
# last checkpoint is there, and no client's data or state reaches the
# exchange directory or another host.
# Where namespaces cannot be made (not root, no iproute2, no sshd) it prints
# "skip - test_netns: WHY" and exits 0. The whole run is bounded by
# NETNS_TIMEOUT seconds (default 240), after which its namespaces go too.
# Prints "ok - ..." / "FAIL - ..." / "skip - ..." and "N passed, N failed".
# shellcheck disable=SC2016,SC2119  # bash -c scripts take their arguments as $1..; summary takes none
set -u
BIN=$(cd "${1:-bin}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/tests/lib.sh"
. "$ROOT/tests/netns.sh"
scratch netns
if ! why=$(netns_can_run); then
    skip "test_netns: $why"
    summary
    exit
fi
netns_init
# the bound: a watchdog sends TERM after NETNS_TIMEOUT seconds; the trap reports it (on fd 3, the
# suite's stdout: a check's output is redirected while it runs), and the exit trap cleans up
exec 3>&1
trap '{ fail "test_netns: stopped: it ran past ${NETNS_TIMEOUT:-240} s"; summary; } >&3 2>&1; exit 124' TERM
(
    sleep "${NETNS_TIMEOUT:-240}" &
    trap 'kill $!; exit 0' TERM
    wait $! && kill -TERM $$
) </dev/null >/dev/null 2>&1 3>&- &
NETNS_WATCHDOG=$!

# ---- the hosts: ex, and c1 c2 c3 each linked to ex alone ----
clients=(c1 c2 c3)
setup() {
    local c
    netns_host_add ex || return 1
    for c in "${clients[@]}"; do
        netns_host_add "$c" && netns_link ex "$c" || return 1
        # a route to everything through ex: only ex's refusal to forward keeps the clients apart
        netns_exec "$c" ip route add default via "$(netns_addr ex "$c")" || return 1
    done
    netns_sshd ex || return 1
    for c in "${clients[@]}"; do netns_client_key "$c" ex && netns_authorize ex "$c" || return 1; done
    # c1 runs an sshd that authorizes no one; ex has a key and knows c1's host key, to show it is refused
    netns_sshd c1 && netns_client_key ex c1
}
check "4 hosts in namespaces: ex, and c1 c2 c3 each linked only to ex; an sshd on ex and on c1" setup
if [ "$failed" -gt 0 ]; then
    summary
    exit
fi
EX=$W/hosts/ex
mkdir -p "$EX/exchange/inbox"

# sshc HOST TO CMD...: ssh from HOST, with its own identity, to root on TO's address on their link
sshc() {
    local h=$1 to=$2
    shift 2
    # shellcheck disable=SC2046
    netns_exec "$h" ssh $(netns_ssh_opts "$h") "root@$(netns_addr "$to" "$h")" "$@" </dev/null
}
refused() { # refused PATTERN CMD...: CMD fails and its stderr matches PATTERN
    local p=$1
    shift
    if "$@" 2>"$W/refused.err"; then
        echo "it succeeded" >&2
        return 1
    fi
    grep -Eq -- "$p" "$W/refused.err" && return 0
    cat "$W/refused.err" >&2
    return 1
}
unreachable() { # unreachable FROM TO: FROM cannot ping TO's address (on TO's link to ex)
    ! netns_exec "$1" ping -c 1 -W 1 "$(netns_addr "$2" ex)" >/dev/null 2>&1
}

# ---- ssh: each client, with its own key, ex's host key checked ----
logs_in() { [ "$(sshc "$1" ex "echo ex-here")" = ex-here ]; }
for c in "${clients[@]}"; do
    check "$c logs into ex with its own key (StrictHostKeyChecking=yes, its known_hosts)" logs_in "$c"
done
runs_on_ex() { sshc c1 ex "ip -o -4 addr show" | grep -qF " $(netns_addr ex c2)/30"; }
check "the remote commands run on ex: its network, not the client's" runs_on_ex
mv "$W/hosts/c2/ssh/known_hosts" "$W/hosts/c2/ssh/known_hosts.kept"
touch "$W/hosts/c2/ssh/known_hosts"
check "a client that does not know ex's host key is refused (no prompt, no trust on first use)" \
    refused "Host key verification failed" sshc c2 ex true
mv "$W/hosts/c2/ssh/known_hosts.kept" "$W/hosts/c2/ssh/known_hosts"
mkdir -p "$W/hosts/stranger/ssh"
ssh-keygen -q -t ed25519 -N '' -f "$W/hosts/stranger/ssh/id_ed25519" </dev/null
cp "$W/hosts/c3/ssh/known_hosts" "$W/hosts/stranger/ssh/"
# shellcheck disable=SC2046
check "a key ex does not authorize is refused" refused "Permission denied" \
    netns_exec c3 ssh $(netns_ssh_opts stranger) "root@$(netns_addr ex c3)" true

# ---- the clients are apart ----
check "c1 pings ex" netns_exec c1 ping -c 1 -W 2 "$(netns_addr ex c1)"
check "c1 cannot reach c2 (ping), though its route to c2 goes through ex" unreachable c1 c2
check "c3 cannot reach c1 (ping)" unreachable c3 c1
check "c2 cannot reach c1's sshd (ssh)" refused "timed out|unreachable|No route" \
    netns_exec c2 ssh -F /dev/null -o BatchMode=yes -o ConnectTimeout=2 "root@$(netns_addr c1 ex)" true
forwards() { [ "$(netns_exec "$1" sysctl -n net.ipv4.ip_forward)" = "$2" ]; }
check "ex forwards nothing (net.ipv4.ip_forward = 0)" forwards ex 0
# the check can fail: with forwarding on in ex, c1 reaches c2
netns_exec ex sysctl -qw net.ipv4.ip_forward=1
check "the check can fail: once ex forwards, c1 reaches c2" netns_exec c1 ping -c 1 -W 2 "$(netns_addr c2 ex)"
netns_exec ex sysctl -qw net.ipv4.ip_forward=0
check "and after ex stops forwarding, c1 cannot reach c2 again" unreachable c1 c2

# ---- ex has no way into a client ----
check "c1's sshd authorizes no key" test ! -s "$W/hosts/c1/sshd/authorized_keys"
check "ex, with a key of its own and c1's host key known, is refused by c1's sshd" \
    refused "Permission denied" sshc ex c1 true
check "no client's sshd lists ex's key" bash -c \
    '! grep -qF "$(cut -d" " -f2 "$1")" "$2"/hosts/c*/sshd/authorized_keys' _ "$W/hosts/ex/ssh/id_ed25519.pub" "$W"

# ---- rsync over ssh ----
head -c 200000 /dev/urandom >"$W/hosts/c1/blob"
check "rsync from c1 to ex:exchange/inbox over ssh" netns_exec c1 rsync -a -e "$(netns_ssh_cmd c1)" \
    "$W/hosts/c1/blob" "root@$(netns_addr ex c1):$EX/exchange/inbox/"
check "the file arrived unchanged" cmp "$W/hosts/c1/blob" "$EX/exchange/inbox/blob"
upload() { # upload HOST FILE NAME: rsync FILE to ex as a dot-file, then mv it to NAME
    local h=$1 f=$2 n=$3 to
    to=root@$(netns_addr ex "$h")
    netns_exec "$h" rsync -a -e "$(netns_ssh_cmd "$h")" "$f" "$to:$EX/exchange/inbox/.$n.tmp" &&
        sshc "$h" ex mv "$EX/exchange/inbox/.$n.tmp" "$EX/exchange/inbox/$n"
}
check "upload then rename: rsync to .NAME.tmp, then ssh ex mv to NAME" upload c2 "$W/hosts/c1/blob" from-c2
check "after the rename only NAME is there, unchanged" bash -c \
    'cmp "$1/blob" "$2/from-c2" && [ ! -e "$2/.from-c2.tmp" ]' _ "$W/hosts/c1" "$EX/exchange/inbox"
rm -f "$EX"/exchange/inbox/*

# ---- a slow link: 50 ms and 10 mbit on c3's link, both ways ----
if netns_exec c3 tc qdisc add dev "$(netns_dev c3 ex)" root netem delay 50ms rate 10mbit 2>"$W/tc.err" &&
    netns_exec ex tc qdisc add dev "$(netns_dev ex c3)" root netem delay 50ms rate 10mbit 2>>"$W/tc.err"; then
    rtt() { netns_exec c3 ping -c 1 -W 3 "$(netns_addr ex c3)" | sed -n 's/.*time=\([0-9.]*\) ms.*/\1/p'; }
    check "c3's link is slow: a ping takes 100 ms or more" bash -c '[ "$(awk -v t="$1" "BEGIN { print (t >= 100) }")" = 1 ]' _ "$(rtt)"
    head -c 500000 /dev/urandom >"$W/hosts/c3/blob"
    t0=$(date +%s.%N)
    check "a 500 kB upload-then-rename from c3 over the slow link" upload c3 "$W/hosts/c3/blob" from-c3
    t1=$(date +%s.%N)
    check "it arrived unchanged, after 0.4 s or more (10 mbit)" bash -c \
        'cmp "$1" "$2" && [ "$(awk -v a="$3" -v b="$4" "BEGIN { print (b - a >= 0.4) }")" = 1 ]' _ \
        "$W/hosts/c3/blob" "$EX/exchange/inbox/from-c3" "$t0" "$t1"
    rm -f "$EX"/exchange/inbox/*
    netns_exec c3 tc qdisc del dev "$(netns_dev c3 ex)" root
    netns_exec ex tc qdisc del dev "$(netns_dev ex c3)" root
else
    skip "test_netns: a slow link: tc netem is not available here ($(head -n 1 "$W/tc.err"))"
fi

# ---- the federation across the hosts ----
# round_merged R N FILE: FILE (the aggregator's stdout, tab-separated) has one line for round R, with N merged
round_merged() {
    local lines
    lines=$(awk -F'\t' -v r="$1" '$1 == r' "$3")
    [ "$(printf '%s' "$lines" | grep -c .)" -eq 1 ] || { echo "not one line for round $1 in $(basename "$3")" >&2; cat "$3" >&2; return 1; }
    [ "$(printf '%s' "$lines" | cut -f2)" = "$2" ] && return 0
    echo "round $1 does not say $2 merged: $lines" >&2
    return 1
}
# private CLIENT FILE: no copy of FILE (same bytes) is under any other host's directory, no file
# named as it is in the exchange directory, and no 64 bytes of its start, middle or end are in
# any file there.
private() {
    local c=$1 f=$2 h sum
    [ -s "$f" ] || { echo "$f is not there" >&2; return 1; }
    sum=$(sha256sum <"$f" | cut -d' ' -f1)
    for h in "$W"/hosts/*; do
        [ "$h" = "$W/hosts/$c" ] && continue
        if find "$h" -type f -size "$(stat -c %s "$f")c" -exec sha256sum {} + | grep -q "^$sum "; then
            echo "a copy of $f is under $h" >&2
            return 1
        fi
    done
    if [ -n "$(find "$EX/exchange" -name "$(basename "$f")")" ]; then
        echo "a file named $(basename "$f") is in the exchange directory" >&2
        return 1
    fi
    python3 - "$f" "$EX/exchange" <<'PY'
import os, sys
raw = open(sys.argv[1], "rb").read()
pieces = {raw[:64], raw[len(raw) // 2:len(raw) // 2 + 64], raw[-64:]}
for top, _, names in os.walk(sys.argv[2]):
    for n in names:
        path = os.path.join(top, n)
        if os.path.isfile(path):
            held = open(path, "rb").read()
            if any(p in held for p in pieces):
                sys.exit("64 bytes of %s are in %s" % (sys.argv[1], path))
PY
}
if [ ! -x "$ROOT/examples/aggregator.sh" ] || [ ! -x "$ROOT/examples/client.sh" ]; then
    skip "test_netns: the federation across hosts: examples/aggregator.sh and examples/client.sh are not there yet"
else
    fed() {
        local c i=0 pids=() status=0
        : >"$EX/allowed_signers"
        for c in "${clients[@]}"; do
            i=$((i + 1))
            "$BIN/synthlang" --seed 1 --dialect "$i" --words 48 --successors 4 --bytes 60000 \
                --out "$W/hosts/$c/$c-private-corpus.txt" 2>/dev/null || return 1
            echo "$c namespaces=\"photon-delta\" $(cat "$W/hosts/$c/ssh/id_ed25519.pub")" >>"$EX/allowed_signers"
        done
        "$BIN/synthlang" --seed 1 --dialect 0 --words 48 --successors 4 --bytes 8000 --sample-seed 4242 \
            --out "$EX/val.txt" 2>/dev/null || return 1
        netns_exec ex timeout 150 "$ROOT/examples/aggregator.sh" --exchange "$EX/exchange" --rounds 2 \
            --min-clients 2 --deadline 60 --allowed-signers "$EX/allowed_signers" \
            --layers 1 --heads 2 --width 16 --ctx 32 --vocab 256 --seed 1 \
            --local-steps 4 --batch 2 --seq 16 --val "$EX/val.txt" --bin "$BIN" --work "$EX/aggregator" --poll 0.3 \
            >"$EX/aggregator.out" 2>"$EX/aggregator.err" &
        local agg=$!
        for c in "${clients[@]}"; do
            netns_exec "$c" timeout 150 "$ROOT/examples/client.sh" --exchange "root@$(netns_addr ex "$c"):$EX/exchange" \
                --id "$c" --key "$W/hosts/$c/ssh/id_ed25519" --data "$W/hosts/$c/$c-private-corpus.txt" \
                --time-budget 30 --bin "$BIN" --ssh "$(netns_ssh_cmd "$c")" --poll 0.3 --work "$W/hosts/$c/work" \
                >"$W/hosts/$c/client.out" 2>"$W/hosts/$c/client.err" &
            pids+=($!)
        done
        wait "$agg" || { echo "the aggregator exited $?" >&2; cat "$EX/aggregator.err" >&2; status=1; }
        for i in "${!pids[@]}"; do
            wait "${pids[$i]}" || { echo "client ${clients[$i]} exited $?" >&2; tail -n 5 "$W/hosts/${clients[$i]}/client.err" >&2; status=1; }
        done
        return $status
    }
    check "the aggregator on ex and 3 clients over ssh: 2 rounds, then all exit 0" fed
    cp "$EX/aggregator.out" "$W/aggregator.out" 2>/dev/null
    for r in 1 2; do check "the aggregator's line for round $r: 3 merged" round_merged $r 3 "$W/aggregator.out"; done
    check "the last round's checkpoint is published on the exchange, and evaluates" \
        "$BIN/photon-eval" --model "$EX/exchange/global-r2.safetensors" --data "$EX/val.txt"
    check "verify-round.sh re-checks every round from the aggregator's files on ex" \
        env BIN="$BIN" "$ROOT/examples/verify-round.sh" "$EX/aggregator"
    for c in "${clients[@]}"; do
        check "$c's data stays on $c: not in the exchange directory nor on any other host" \
            private "$c" "$W/hosts/$c/$c-private-corpus.txt"
        check "$c's state file is on $c alone" private "$c" "$W/hosts/$c/work/state.safetensors"
    done
fi

summary
