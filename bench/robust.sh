#!/usr/bin/env bash
# robust.sh - how photon-merge's robust rules hold up against bad clients, on
# real text: 8 non-IID clients (results.sh's noniid8 layout), 8 rounds of
# FedAvg, every attack x every rule, one seed. Draft results: docs/robust-draft.md.
#
# Its own round loop (like examples/round.sh), because an attack has to replace
# a delta between training and the merge: each round every client trains from
# the global checkpoint (keeping its own state file) and writes a delta; the
# attack replaces the attacker's delta(s) (bench/attack.py); then
#   photon-merge --base G --out NEXT --skip-bad RULE-FLAGS --json DELTAS...
# Client c0 is the attacker (its twin c1 holds the other half of novels).
#
#   nice -n 5 bench/robust.sh
set -euo pipefail

usage() {
    cat <<'TXT'
usage: bench/robust.sh [options]

  --data-dir DIR    the text corpora (default: ../shared/data from the repo root)
  --out DIR         results (default: out/robust under the repo root): runs/ATTACK-RULE/
                    (merge JSON and log per round, final evaluation), summary.tsv,
                    rounds.tsv (every delta of every round), table.md
  --work DIR        scratch directory (default: a new one under ${TMPDIR:-/tmp}, removed at the end)
  --steps N         local steps per round (default 32)
  --rounds N        rounds (default 8)
  --attacks "A .."  none scale100 signflip noise shuffled collude (default: all)
  --rules "R .."    mean clip median trimmed krum screen (default: all)
  --jobs J          federations run at once, one thread each (default: the number of cores)
  --quick           smoke run: 2 rounds of 4 steps, attacks none and collude
  -h, --help

Attacks: none; scale100 (c0 sends 100 x its honest delta); signflip (-1 x);
noise (Gaussian noise, seed 1, with the honest delta's L2 norm); shuffled (c0
trains on a byte-shuffled copy of its data, seed 1; no file edit); collude (c0
and c2 both send 100 x c0's honest delta). Rules, all with --skip-bad: mean (no
flags), clip (--clip-norm auto), median (--aggregate median), trimmed
(--aggregate trimmed-mean --trim 0.25), krum (--aggregate multi-krum --byzantine 2),
screen (--screen SCREEN: the first half of each domain's held-out 5%).
Final metric: held-out loss (nats/byte) of the last global model on the second
half of each domain's held-out 5%, the mean over all those bytes (as in
docs/RESULTS.md).
TXT
}

here=$(cd "$(dirname "$0")/.." && pwd)
bin="$here/bin"
data_dir="$here/../shared/data" out="$here/out/robust" work="" steps=32 rounds=8 jobs=$(nproc 2>/dev/null || echo 2)
attacks="none scale100 signflip noise shuffled collude" rules="mean clip median trimmed krum screen"
die() { echo "robust.sh: $*" >&2; exit 2; }
args="$*"
while [ $# -gt 0 ]; do
    case "$1" in
    -h | --help) usage; exit 0 ;;
    --data-dir) data_dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --attacks) attacks=$2; shift 2 ;;
    --rules) rules=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --quick) steps=4 rounds=2 attacks="none collude"; shift ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
done
for t in photon-train photon-merge photon-eval; do [ -x "$bin/$t" ] || die "$bin/$t not found: run make first"; done
python3 -c 'import numpy' 2>/dev/null || die "needs python3 with numpy (python3 -m pip install numpy)"

# --- settings (docs/RESULTS.md: the federated runs) ---------------------------------
domains=(en_gutenberg_novels en_wikipedia_wikitext2_valid en_news_leipzig_2016_10K_sentences legal_en_spdx_license_texts)
short=(novels wiki news legal)
take=1000000 chunk=128 B=8 T=64 lr=2e-3 seed=1
model=(--layers 2 --heads 2 --width 64 --ctx 64 --vocab 256)
train_flags=(--batch "$B" --seq "$T" --lr "$lr" --warmup 10 --total-steps $((rounds * steps)) --threads 1)

. "$here/bench/slices.sh" # piece, interleave, bench_dirs, log (shared with the other bench runs)
bench_dirs robust

# --- data: results.sh's slices, noniid8 layout; held-out 5% split into screen | eval ---
dd="$work/data" files=() evalset=() screenparts=()
mkdir -p "$dd"
for i in "${!domains[@]}"; do
    s=${short[i]}
    head -c "$take" "$data_dir/${domains[i]}.txt" >"$dd/all-$s.txt"
    n=$(wc -c <"$dd/all-$s.txt") ntr=$((n * 95 / 100))
    head -c "$ntr" "$dd/all-$s.txt" >"$dd/train-$s.txt"
    tail -c +$((ntr + 1)) "$dd/all-$s.txt" >"$dd/heldout-$s.txt"
    piece "$dd/heldout-$s.txt" 0 2 >"$dd/screen-$s.txt"    # the aggregator's screening sample
    piece "$dd/heldout-$s.txt" 1 2 >"$dd/eval-$s.txt"      # the final evaluation set
    piece "$dd/train-$s.txt" 0 2 >"$dd/$s-a.txt"           # client 2k
    piece "$dd/train-$s.txt" 1 2 >"$dd/$s-b.txt"           # client 2k+1
    files+=("$dd/$s-a.txt" "$dd/$s-b.txt") evalset+=("$dd/eval-$s.txt") screenparts+=("$dd/screen-$s.txt")
    rm "$dd/all-$s.txt" "$dd/train-$s.txt" "$dd/heldout-$s.txt"
done
# photon-merge screens on the first 8192 tokens of its DATA, read in order: the four files
# as they are would screen on novels alone, so they are interleaved in 128-byte turns
interleave "$dd/screen.txt" $chunk "${screenparts[@]}"
# the shuffled attack: c0's data, its bytes permuted (seed 1)
python3 -c 'import numpy as np, sys; b = np.frombuffer(open(sys.argv[1], "rb").read(), np.uint8)
open(sys.argv[2], "wb").write(np.random.default_rng(1).permutation(b).tobytes())' "${files[0]}" "$dd/shuffled-c0.txt"
{
    echo "data: first $take bytes of each domain in $data_dir; last 5% held out: first half screening, second half evaluation"
    for i in "${!short[@]}"; do
        printf '  %-7s clients c%d c%d: %d + %d bytes; screening %d bytes, evaluation %d bytes\n' "${short[i]}" $((2 * i)) \
            $((2 * i + 1)) "$(wc -c <"${files[2 * i]}")" "$(wc -c <"${files[2 * i + 1]}")" \
            "$(wc -c <"${screenparts[i]}")" "$(wc -c <"${evalset[i]}")"
    done
    echo "  screening file (interleaved): $(wc -c <"$dd/screen.txt") bytes, the merge predicts its first 8192"
    echo "settings: $rounds rounds x $steps local steps, batch $B x $T, lr $lr, warmup 10, cosine to 10% at global step $((rounds * steps)), fedavg, seed $seed"
    echo "command: bench/robust.sh $args"
    echo "git HEAD: $(git -C "$here" rev-parse HEAD) $(git -C "$here" status --short -- photon.h tools Makefile | tr '\n' ' ')"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; $jobs federations at once"
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
} | tee "$out/provenance.txt"

rule_flags() {
    case "$1" in
    mean) ;;
    clip) echo --clip-norm auto ;;
    median) echo --aggregate median ;;
    trimmed) echo --aggregate trimmed-mean --trim 0.25 ;;
    krum) echo --aggregate multi-krum --byzantine 2 ;;
    screen) echo --screen "$dd/screen.txt" ;;
    *) die "unknown rule $1" ;;
    esac
}
for a in $attacks; do case $a in none | scale100 | signflip | noise | shuffled | collude) ;; *) die "unknown attack $a" ;; esac; done
for r in $rules; do rule_flags "$r" >/dev/null; done

# --- one federation --------------------------------------------------------------------
# federate ATTACK RULE: writes runs/ATTACK-RULE/{merge-rN.json,merge-rN.log,eval-*.json,result.tsv}
federate() {
    local attack=$1 rule=$2 name="$1-$2" rdir="$out/runs/$1-$2" w="$work/runs/$1-$2" r k g next data status=ok loss=nan
    local -a deltas
    rm -rf "$rdir" "$w" && mkdir -p "$rdir" "$w"
    local t0
    t0=$(date +%s)
    "$bin/photon-train" --init "${model[@]}" --seed $seed --steps 0 --out "$w/global-r0.safetensors" 2>/dev/null
    for ((r = 1; r <= rounds; r++)); do
        g="$w/global-r$((r - 1)).safetensors" next="$w/global-r$r.safetensors"
        mkdir -p "$w/r$r/honest" "$w/r$r/sent"
        for k in 0 1 2 3 4 5 6 7; do
            data=${files[k]}
            [ "$attack" = shuffled ] && [ $k = 0 ] && data="$dd/shuffled-c0.txt"
            "$bin/photon-train" --model "$g" --data "$data" --state "$w/state-c$k.safetensors" --steps "$steps" \
                "${train_flags[@]}" --delta-out "$w/r$r/honest/delta-c$k.safetensors" --client-id "c$k" \
                --log-every "$steps" >/dev/null 2>"$w/train.log" || { status="round $r: c$k's training failed: $(tail -n 1 "$w/train.log")"; break 2; }
            cp "$w/r$r/honest/delta-c$k.safetensors" "$w/r$r/sent/"
        done
        local h="$w/r$r/honest/delta-c0.safetensors" s="$w/r$r/sent"
        case "$attack" in
        scale100) "$here/bench/attack.py" scale 100 "$h" "$s/delta-c0.safetensors" ;;
        signflip) "$here/bench/attack.py" scale -1 "$h" "$s/delta-c0.safetensors" ;;
        noise) "$here/bench/attack.py" noise 1 "$h" "$s/delta-c0.safetensors" ;;
        collude) "$here/bench/attack.py" scale 100 "$h" "$s/delta-c0.safetensors"
                 "$here/bench/attack.py" scale 100 "$h" "$s/delta-c2.safetensors" --client c2 ;;
        esac
        deltas=("$s"/delta-c*.safetensors)
        # shellcheck disable=SC2046
        if ! "$bin/photon-merge" --base "$g" --out "$next" --skip-bad $(rule_flags "$rule") --threads 1 --json \
            "${deltas[@]}" >"$rdir/merge-r$r.json" 2>"$rdir/merge-r$r.log"; then
            status="round $r: photon-merge failed: $(grep -v '^photon-merge: c[0-9]' "$rdir/merge-r$r.log" | tail -n 1)"
            break
        fi
        rm -rf "$w/r$r" "$g"
    done
    if [ "$status" = ok ]; then
        for k in 0 1 2 3; do
            "$bin/photon-eval" --model "$w/global-r$rounds.safetensors" --data "${evalset[k]}" --seq $T --threads 1 --json \
                >"$rdir/eval-${short[k]}.json" 2>"$rdir/eval-${short[k]}.log" || status="evaluation failed: $(tail -n 1 "$rdir/eval-${short[k]}.log")"
        done
        [ "$status" = ok ] && loss=$(python3 -c 'import json, sys
e = [json.load(open(f)) for f in sys.argv[1:]]
print("%.5f" % (sum(x["loss"] * x["tokens"] for x in e) / sum(x["tokens"] for x in e)))' "$rdir"/eval-*.json)
    fi
    printf '%s\t%s\t%s\t%s\t%s\n' "$attack" "$rule" "$loss" "$(($(date +%s) - t0))" "$status" >"$rdir/result.tsv"
    rm -rf "$w"
    log "$name: held-out loss $loss ($status, $(($(date +%s) - t0)) s)"
}

log "$(($(wc -w <<<"$attacks") * $(wc -w <<<"$rules"))) federations, $jobs at once"
n=0
for attack in $attacks; do
    for rule in $rules; do
        federate "$attack" "$rule" &
        n=$((n + 1))
        if [ $n -ge "$jobs" ]; then wait -n; n=$((n - 1)); fi
    done
done
wait

# --- tables ------------------------------------------------------------------------------
wall=$(($(date +%s) - t_start))
python3 - "$out" "$wall" "$attacks" "$rules" "$rounds" <<'PY'
import glob, json, os, sys
out, wall, attacks, rules, rounds = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split(), int(sys.argv[5])
res, rows = {}, []
for a in attacks:
    for r in rules:
        d = f"{out}/runs/{a}-{r}"
        f = open(f"{d}/result.tsv").read().rstrip("\n").split("\t")
        res[a, r] = (float(f[2]), f[4])
        left = {}  # client -> [rounds left out], with the reasons seen
        for m in sorted(glob.glob(f"{d}/merge-r*.json"), key=lambda p: int(p.rsplit("-r", 1)[1][:-5])):
            rd = int(m.rsplit("-r", 1)[1][:-5])
            j = json.load(open(m))
            for e in j["deltas"]:
                rows.append([a, r, rd, e["client"], e["accepted"], e["refused_by"] or "", e["norm"], e["cosine"],
                             e["screen_loss"], e["krum_score"], e["trimmed"], e["clipped"], e["scale"]])
                if not e["accepted"]:
                    left.setdefault(e["client"], [set(), 0])[0].add(e["refused_by"] or e["reason"][:40])
                    left[e["client"]][1] += 1
        res[a, r] += (left,)
with open(f"{out}/rounds.tsv", "w") as f:
    f.write("attack\trule\tround\tclient\taccepted\trefused_by\tnorm\tcosine\tscreen_loss\tkrum_score\ttrimmed\tclipped\tscale\n")
    for x in rows: f.write("\t".join(str(v) for v in x) + "\n")
with open(f"{out}/summary.tsv", "w") as f:
    f.write("attack\trule\theldout_loss\tstatus\n")
    for (a, r), v in res.items(): f.write(f"{a}\t{r}\t{v[0]}\t{v[1]}\n")
ref = res.get(("none", "mean"), (float("nan"),))[0]
def cell(v):
    if v[1] != "ok": return "failed"
    return f"{v[0]:.4f} ({(v[0] / ref - 1) * 100:+.1f}%)" if v[0] < 100 else f"{v[0]:.1f} ({(v[0] / ref - 1) * 100:+.0f}%)"
t = ["Final held-out loss (nats/byte; second half of each domain's held-out 5%, mean over its bytes) and the change against the clean mean run.\n",
     "| attack | " + " | ".join(rules) + " |", "|---|" + "---:|" * len(rules)]
for a in attacks: t.append(f"| {a} | " + " | ".join(cell(res[a, r]) for r in rules) + " |")
t += ["", f"Deltas left out (refused by a check, or not selected by multi-krum), over {rounds} rounds; median, trimmed-mean and clip never leave a delta out.\n",
      "| attack | " + " | ".join(rules) + " |", "|---|" + "---|" * len(rules)]
for a in attacks:
    cells = []
    for r in rules:
        left = res[a, r][2]
        cells.append(", ".join(f"{c} {n}/{rounds}" for c, (_, n) in sorted(left.items())) or "none")
    t.append(f"| {a} | " + " | ".join(cells) + " |")
fails = [f"- {a}-{r}: {v[1]}" for (a, r), v in res.items() if v[1] != "ok"]
if fails: t += ["", "Failed runs:"] + fails
t += ["", f"total wall time: {wall} s"]
open(f"{out}/table.md", "w").write("\n".join(t) + "\n")
print("\n".join(t))
PY
log "done: $out/table.md, $out/summary.tsv, $out/rounds.tsv"
