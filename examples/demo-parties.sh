#!/usr/bin/env bash
# demo-parties.sh - `make demo-parties`: a federation of independent parties
# on one machine. The aggregator (examples/aggregator.sh) and four clients
# (examples/client.sh) run as separate processes that meet only through a
# local exchange directory, as they would across organisations with
# HOST:PATH (docs/FEDERATE.md). Each client has its own SSH key, its own
# dialect of a synthetic language (bin/synthlang) and its own state.
#
# To show what the protocol survives, client c3 is a slow silo
# (--time-budget: it does what fits of each round's local steps), and
# client c4 is killed -9 in round 2 and started again with the same command
# two rounds later: the rounds it misses merge at their deadline without
# it, and it rejoins from its own state. The aggregator's round table, then
# each client's, go to stdout; everything lands in out/demo-parties/.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin="$here/bin"
out="${OUT:-$here/out/demo-parties}"
rounds="${ROUNDS:-6}" steps="${STEPS:-30}" deadline="${DEADLINE:-20}"
for t in python3 rsync ssh-keygen setsid; do
    command -v "$t" >/dev/null || { echo "demo-parties: $t is needed (apt-get install -y python3 rsync openssh-client)" >&2; exit 1; }
done
rm -rf "$out"
mkdir -p "$out/exchange"
cd "$out"
pids=()
trap 'for p in "${pids[@]}"; do kill -9 -- "-$p" 2>/dev/null || true; done' EXIT

# each member: a key, registered under its id; a dialect of its own
for c in 1 2 3 4; do
    ssh-keygen -q -t ed25519 -N '' -C "c$c" -f "key-c$c"
    echo "c$c namespaces=\"photon-delta\" $(cut -d' ' -f1,2 "key-c$c.pub")" >>allowed_signers
    "$bin/synthlang" --seed 1 --dialect "$c" --words 48 --successors 4 --bytes 300000 --out "data-c$c.txt" 2>/dev/null
done
"$bin/synthlang" --seed 1 --dialect 0 --words 48 --successors 4 --bytes 16000 --sample-seed 4242 --out val.txt 2>/dev/null
echo "demo-parties: an aggregator and 4 clients, separate processes, one exchange directory ($out/exchange)"
echo "demo-parties: c3 is a slow silo (--time-budget 0.5 s a round); c4 is killed -9 in round 2 and comes back in round 4"

setsid "$here/examples/aggregator.sh" --exchange exchange --work aggregator --allowed-signers allowed_signers \
    --rounds "$rounds" --min-clients 3 --deadline "$deadline" --poll 0.5 \
    --layers 2 --heads 2 --width 64 --ctx 64 --local-steps "$steps" --batch 8 --seq 64 --lr 4e-3 --warmup 10 \
    --val val.txt --bin "$bin" >aggregator.out 2>aggregator.log &
agg=$!
pids+=("$agg")
client() { # client ID [flags]: one member, in its own process group
    local id=$1
    shift
    setsid "$here/examples/client.sh" --exchange exchange --id "$id" --key "key-$id" --data "data-$id.txt" \
        --work "client-$id" --poll 0.5 --threads 1 --bin "$bin" "$@" >>"$id.out" 2>>"$id.log" &
    pids+=($!)
    last_client=$!
}
client c1
client c2
client c3 --time-budget 0.5
client c4
c4=$last_client
until grep -q "c4: round 2: training" c4.log 2>/dev/null; do sleep 0.1; done
kill -9 -- "-$c4"
{ wait "$c4"; } 2>/dev/null || true
echo "demo-parties: killed c4 while it trained round 2"
until [ -f exchange/round-4/round.json ]; do sleep 0.5; done
client c4
echo "demo-parties: started c4 again, with the same command, in round 4"
wait "$agg"
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
echo
echo "the aggregator (aggregator.out; reasons of refusals in the last column):"
column -t -s $'\t' aggregator.out 2>/dev/null || cat aggregator.out
for c in c1 c2 c3 c4; do
    echo
    echo "client $c (round, steps, tokens, final training loss, bytes up, bytes down, seconds):"
    cat "$c.out"
done
echo
BIN=$bin "$here/examples/verify-round.sh" aggregator
