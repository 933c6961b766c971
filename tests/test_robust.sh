#!/usr/bin/env bash
# test_robust.sh BINDIR - photon-merge's robust rules as a user meets them.
#
# Five clients train one round on synthlang dialects; a sixth, diverged run
# (learning rate 2.0: finite, well formed, ruinous) joins them. Then: each
# rule (mean, median, trimmed mean, Multi-Krum, clipping, screening) merges
# and --verify reproduces it byte for byte with the same options, and not
# with other ones; --threads and --chunk change no byte; --max-norm-ratio and
# --screen refuse the diverged delta with its figures (the merge fails
# without --skip-bad, writing nothing), the plain mean takes it and is
# worse; the per-delta report is on stderr and in --json; federate.sh
# passes a rule to every round and verify-round.sh reproduces the records;
# merging 16 deltas holds about 16 chunks, not 16 models (the peak is
# printed); bad settings are usage errors with one line each.
# Prints "ok - ..." / "FAIL - ..." / "skip - ..." and "N passed, N failed".
set -u
BIN=$(cd "${1:-bin}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/tests/lib.sh"
scratch robust
cd "$W" || exit 2
if ! command -v python3 >/dev/null; then
    skip "test_robust: python3 is needed to read the tools' JSON"
    summary
    exit $?
fi
json() { python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2], {"d": d}))' "$@"; }
nothing_written() { for f in "$@"; do [ ! -e "$f" ] || { echo "$f was written" >&2; return 1; }; done; }

model=(--layers 1 --heads 2 --width 32 --ctx 32)
"$BIN/photon-train" --init "${model[@]}" --steps 0 --out base.safetensors 2>/dev/null
for c in 0 1 2 3 4 5; do
    "$BIN/synthlang" --seed 1 --dialect $((c % 3)) --bytes 40000 --sample-seed $((c + 3)) --out "train$c.txt" 2>/dev/null
done
"$BIN/synthlang" --seed 1 --dialect 0 --bytes 6000 --sample-seed 99 --out screen.txt 2>/dev/null
"$BIN/synthlang" --seed 1 --dialect 1 --bytes 6000 --sample-seed 98 --out val.txt 2>/dev/null
for c in 0 1 2 3 4 5; do
    lr=5e-3
    [ $c = 5 ] && lr=2.0 # the diverged run
    "$BIN/photon-train" --model base.safetensors --data "train$c.txt" --state "state$c.safetensors" --steps 20 \
        --batch 4 --seq 32 --lr $lr --delta-out "d$c.safetensors" --client-id "c$c" 2>/dev/null
done
honest=(d0.safetensors d1.safetensors d2.safetensors d3.safetensors d4.safetensors)
all=("${honest[@]}" d5.safetensors)
check "six deltas, one of them from a diverged run, are all well formed" "$BIN/photon-merge" --base base.safetensors \
    --check "${all[@]}"

# ---- every rule: --verify reproduces it with its options, not with others ----
rules=("mean:" "median:--aggregate median" "trimmed:--aggregate trimmed-mean --trim 0.2"
    "krum:--aggregate multi-krum --byzantine 1" "clip:--clip-norm auto" "clipfixed:--clip-norm 0.5"
    "screen:--screen screen.txt --screen-tokens 2048 --skip-bad")
for entry in "${rules[@]}"; do
    name=${entry%%:*}
    read -r -a flags <<<"${entry#*:}"
    check "$name: merges the five honest deltas" "$BIN/photon-merge" --base base.safetensors --out "$name.safetensors" \
        "${flags[@]}" "${honest[@]}"
    check "$name: --verify reproduces it byte for byte" "$BIN/photon-merge" --base base.safetensors \
        --verify "$name.safetensors" "${flags[@]}" "${honest[@]}"
done
check "nesterov steps on the median like on the mean" "$BIN/photon-merge" --base base.safetensors \
    --out nesterov-median.safetensors --outer nesterov --server-state none.safetensors \
    --server-state-out server-median.safetensors --aggregate median "${honest[@]}"
check "  ... its first step is (1 + momentum) x outer lr x the median (0.7 x 1.9)" python3 - base.safetensors \
    median.safetensors nesterov-median.safetensors <<'PY'
import array, json, struct, sys
def values(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    v = array.array("f"); v.frombytes(raw[8 + n:8 + n + 4 * (len(raw) - 8 - n) // 4])
    return v
base, med, nest = (values(p) for p in sys.argv[1:])
worst = max(abs((b - n) - 0.7 * 1.9 * (b - m)) for b, m, n in zip(base, med, nest))
print("largest difference", worst); sys.exit(not worst < 1e-5)
PY
check "  ... and --verify reproduces it from the same (absent) starting state" "$BIN/photon-merge" --base base.safetensors \
    --verify nesterov-median.safetensors --outer nesterov --server-state none.safetensors --aggregate median "${honest[@]}"
LATE=1 check "median: --verify as a mean does not match (the rule is in the audit trail)" expect_exit 1 "DOES NOT match" \
    "$BIN/photon-merge" --base base.safetensors --verify median.safetensors "${honest[@]}"
LATE=1 check "trimmed mean: --verify with another --trim does not match" expect_exit 1 "DOES NOT match" \
    "$BIN/photon-merge" --base base.safetensors --verify trimmed.safetensors --aggregate trimmed-mean --trim 0.4 "${honest[@]}"
"$BIN/synthlang" --seed 1 --dialect 2 --bytes 6000 --sample-seed 97 --out screen2.txt 2>/dev/null
LATE=1 check "screening: --verify with other screening data does not match" expect_exit 1 "DOES NOT match" \
    "$BIN/photon-merge" --base base.safetensors --verify screen.safetensors --screen screen2.txt --screen-tokens 2048 \
    --skip-bad "${honest[@]}"
check "the plain mean's audit trail has no rule keys (older records still verify)" \
    bash -c "! head -c 20000 mean.safetensors | grep -aq photon.aggregate"
check "median's audit trail records the rule and each delta's norm" \
    bash -c "head -c 20000 median.safetensors | grep -aq '\"photon.aggregate\":\"median\"' &&
             head -c 20000 median.safetensors | grep -aq photon.delta.0.norm"

# ---- threads and chunks ----
check "median: 1 thread and chunks of 4096 give the same bytes" "$BIN/photon-merge" --base base.safetensors \
    --verify median.safetensors --aggregate median --threads 1 --chunk 4096 "${honest[@]}"
check "multi-krum: 2 threads and chunks of 8192 give the same bytes" "$BIN/photon-merge" --base base.safetensors \
    --verify krum.safetensors --aggregate multi-krum --byzantine 1 --threads 2 --chunk 8192 "${honest[@]}"

# ---- the diverged delta ----
"$BIN/photon-eval" --model mean.safetensors --data val.txt --json >eval-clean.json 2>/dev/null
"$BIN/photon-merge" --base base.safetensors --out mean-bad.safetensors "${all[@]}" 2>/dev/null
"$BIN/photon-eval" --model mean-bad.safetensors --data val.txt --json >eval-bad.json 2>/dev/null
check "the plain mean takes the diverged delta, and the model is worse for it" \
    python3 -c 'import json, sys; a, b = (json.load(open(f))["loss"] for f in sys.argv[1:]); print(a, b); sys.exit(not b > a + 0.05)' \
    eval-clean.json eval-bad.json
check "--max-norm-ratio without --skip-bad: the merge fails naming the delta and its norm, nothing written" \
    expect_exit 1 "d5.safetensors: norm .* times the median norm" "$BIN/photon-merge" --base base.safetensors \
    --out ratio.safetensors --max-norm-ratio 3 "${all[@]}"
check "  ... and nothing is written" nothing_written ratio.safetensors
check "--max-norm-ratio --skip-bad leaves the diverged delta out and merges the five" "$BIN/photon-merge" \
    --base base.safetensors --out ratio.safetensors --max-norm-ratio 3 --skip-bad --json "${all[@]}"
cp "$W/out" ratio.json
check "  ... d5 is refused by the norm bound, the five honest deltas are merged" \
    python3 -c 'import json, sys; d = json.load(open(sys.argv[1]))["deltas"]; sys.exit(not (d[5]["refused_by"] == "norm" and all(x["accepted"] for x in d[:5])))' ratio.json
check "--screen without --skip-bad: the merge fails with the delta's screening loss" expect_exit 1 \
    "d5.safetensors: screening: applied alone to the base it gives a held-out loss of [0-9.]+" "$BIN/photon-merge" \
    --base base.safetensors --out screened.safetensors --screen screen.txt --screen-tokens 2048 "${all[@]}"
check "  ... and nothing is written" nothing_written screened.safetensors
check "--screen --skip-bad refuses only the diverged delta" "$BIN/photon-merge" --base base.safetensors \
    --out screened.safetensors --screen screen.txt --screen-tokens 2048 --skip-bad --json "${all[@]}"
cp "$W/out" screened.json
cp "$W/err" screened.err
check "  ... --json gives each delta's norm, cosine and screening loss, and why d5 was refused" \
    python3 -c 'import json, sys, math
j = json.load(open(sys.argv[1])); d = j["deltas"]
ok = all(x["accepted"] and x["norm"] > 0 and -1 <= x["cosine"] <= 1 and x["screen_loss"] > 0 for x in d[:5])
ok &= d[5]["refused_by"] == "screening" and d[5]["screen_loss"] > max(x["screen_loss"] for x in d[:5])
ok &= math.isfinite(j["screen_base_loss"]) and j["merged"] == 5
sys.exit(not ok)' screened.json
check "  ... stderr reports each delta: norm, cosine, screening loss, and the refusal" \
    bash -c "grep -q '^photon-merge: c0 merged: norm [0-9.e+-]*, cosine [0-9.-]*, screening loss' screened.err &&
             grep -q '^photon-merge: c5 refused: norm .* - screening' screened.err"
check "clipping to the median norm takes the diverged delta at the median's size" "$BIN/photon-merge" \
    --base base.safetensors --out clipped.safetensors --clip-norm auto --json "${all[@]}"
cp "$W/out" clipped.json
check "  ... it says the delta was clipped, and by how much" \
    python3 -c 'import json, sys; d = json.load(open(sys.argv[1]))["deltas"][5]; sys.exit(not (d["clipped"] and 0 < d["scale"] < 0.5))' clipped.json
check "multi-krum leaves the diverged delta out (not an error: the merge goes on)" "$BIN/photon-merge" \
    --base base.safetensors --out krum-bad.safetensors --aggregate multi-krum --byzantine 1 --json "${all[@]}"
cp "$W/out" krum.json
check "  ... it is left out by the rule with its score, the others are merged" \
    python3 -c 'import json, sys; d = json.load(open(sys.argv[1]))["deltas"]
sys.exit(not (d[5]["refused_by"] == "multi-krum" and d[5]["krum_score"] > max(x["krum_score"] for x in d[:5]) and sum(x["accepted"] for x in d) == 5))' krum.json
check "median merges all six; the diverged delta's values are cut more often" "$BIN/photon-merge" \
    --base base.safetensors --out median-bad.safetensors --aggregate median --json "${all[@]}"
cp "$W/out" median.json
check "  ... each delta's cut fraction is reported" \
    python3 -c 'import json, sys; d = json.load(open(sys.argv[1]))["deltas"]
sys.exit(not (all(0 < x["trimmed"] < 1 for x in d) and d[5]["trimmed"] > max(x["trimmed"] for x in d[:5])))' median.json
for f in median-bad krum-bad screened ratio; do
    "$BIN/photon-eval" --model $f.safetensors --data val.txt --json >"eval-$f.json" 2>/dev/null
done
check "median, multi-krum, screening and the norm bound each keep the model within 5% of the clean merge" \
    python3 -c 'import json, sys
clean = json.load(open("eval-clean.json"))["loss"]
worst = {f: json.load(open("eval-" + f + ".json"))["loss"] / clean - 1 for f in sys.argv[1:]}
print(worst); sys.exit(not all(v < 0.05 for v in worst.values()))' median-bad krum-bad screened ratio

# ---- one element of an honest delta set to 3e38: finite, well formed ----
python3 - d0.safetensors spike.safetensors <<'PY'
import hashlib, json, struct, sys
raw = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
raw[8 + n + 400:8 + n + 404] = struct.pack("<f", 3e38)
header["__metadata__"]["photon.data_sha256"] = hashlib.sha256(raw[8 + n:]).hexdigest()
header["__metadata__"]["photon.client"] = "spike"
text = json.dumps(header, separators=(",", ":")).encode()
text += b" " * (-(8 + len(text)) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(text)) + text + raw[8 + n:])
PY
spiked=(spike.safetensors d1.safetensors d2.safetensors d3.safetensors d4.safetensors)
check "a delta with one value of 3e38 passes every format check" "$BIN/photon-merge" --base base.safetensors --check \
    "${spiked[@]}"
check "  ... screening refuses it: alone it gives a non-finite loss" "$BIN/photon-merge" --base base.safetensors \
    --out spike-screen.safetensors --skip-bad --json "${spiked[@]}" --screen screen.txt --screen-tokens 2048
cp "$W/err" spike.err
check "  ... it is named on stderr with the reason" grep -q "spike.safetensors: screening: applied alone to the base it gives a non-finite loss" spike.err
"$BIN/photon-merge" --base base.safetensors --out spike-median.safetensors --aggregate median "${spiked[@]}" 2>/dev/null
"$BIN/photon-eval" --model spike-median.safetensors --data val.txt --json >eval-spike-median.json 2>/dev/null
check "  ... the median takes it, and the model stays within 5% of the clean merge" \
    python3 -c 'import json, sys; a, b = (json.load(open(f))["loss"] for f in sys.argv[1:]); sys.exit(not b < 1.05 * a)' \
    eval-clean.json eval-spike-median.json

# ---- bad settings: usage errors, one line each ----
m=("$BIN/photon-merge" --base base.safetensors --out never.safetensors)
check "--aggregate unknown: a usage error" expect_exit 2 "--aggregate must be mean, median, trimmed-mean or multi-krum" \
    "${m[@]}" --aggregate mode "${honest[@]}"
check "--trim 0.5: a usage error" expect_exit 2 "must be below 0.5" "${m[@]}" --aggregate trimmed-mean --trim 0.5 "${honest[@]}"
check "--trim without trimmed-mean: a usage error" expect_exit 2 "--trim goes with --aggregate trimmed-mean" \
    "${m[@]}" --trim 0.2 "${honest[@]}"
check "--byzantine 2 with 5 deltas: a usage error (n > 2f + 2)" expect_exit 2 "needs more than 6 deltas" \
    "${m[@]}" --aggregate multi-krum --byzantine 2 "${honest[@]}"
check "--krum-select above n - f: a usage error" expect_exit 2 "--krum-select 5 is more than n - f = 4" \
    "${m[@]}" --aggregate multi-krum --krum-select 5 "${honest[@]}"
check "--clip-norm -1: a usage error" expect_exit 2 "--clip-norm needs a norm above 0" "${m[@]}" --clip-norm -1 "${honest[@]}"
check "--clip-norm auto:x: a usage error" expect_exit 2 "auto:F needs a factor" "${m[@]}" --clip-norm auto:x "${honest[@]}"
check "--chunk 5000: a usage error" expect_exit 2 "multiple of 4096" "${m[@]}" --chunk 5000 "${honest[@]}"
check "--screen-max-rise without --screen: a usage error" expect_exit 2 "go with --screen" "${m[@]}" \
    --screen-max-rise 0.1 "${honest[@]}"
check "--check with a robust rule: a usage error" expect_exit 2 "--check judges each delta alone" \
    "$BIN/photon-merge" --base base.safetensors --check --aggregate median "${honest[@]}"
check "screening data that cannot be read: one line naming it" expect_exit 1 "missing.txt" "${m[@]}" \
    "${honest[@]}" --screen missing.txt
check "  ... nothing written by any of them" nothing_written never.safetensors
check "--help documents the rules and the cost of screening" \
    bash -c "'$BIN/photon-merge' --help | grep -q 'multi-krum' && '$BIN/photon-merge' --help | grep -q 'one evaluation per delta'"

if [ -n "${PHOTON_TEST_QUICK:-}" ]; then # under ASan: the library's paths above; the scripts and the peak below are not
    summary "(quick: federate.sh and the memory peak skipped)"
    exit $?
fi
# ---- federate.sh: a rule for every round, recorded and reproduced ----
mkdir -p fed
for c in 0 1 2 3 4; do mkdir -p "fed/client$c/data" && cp "train$c.txt" "fed/client$c/data/train.txt"; done
check "federate.sh --aggregate median --screen FILE --skip-bad runs 2 rounds" "$ROOT/examples/federate.sh" \
    --agg fed/agg --client fed/client0 --client fed/client1 --client fed/client2 --client fed/client3 \
    --client fed/client4 --val val.txt --rounds 2 --local-steps 10 --batch 4 --seq 32 "${model[@]}" --bin "$BIN" \
    --aggregate median --screen screen.txt --screen-tokens 1024 --skip-bad --jobs 2
check "  ... the round records keep the rule, and verify-round.sh reproduces them" \
    bash -c "grep -q '\"median\"' fed/agg/round-2/record.json && '$ROOT/examples/verify-round.sh' fed/agg"

# ---- memory: 16 deltas stream through in chunks ----
peak() { # peak resident KiB of a command
    python3 -c 'import resource, subprocess, sys
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)' "$@"
}
big=(--layers 2 --heads 4 --width 256 --ctx 32)
"$BIN/photon-train" --init "${big[@]}" --steps 0 --out big.safetensors 2>/dev/null
for c in $(seq 0 15); do
    "$BIN/photon-train" --model big.safetensors --data "train$((c % 6)).txt" --state "bigstate$c.safetensors" --steps 1 \
        --batch 1 --seq 8 --lr 1e-3 --delta-out "big$c.safetensors" --client-id "b$c" 2>/dev/null
done
model_kib=$(($(stat -c %s big.safetensors) / 1024))
if two=$(peak "$BIN/photon-merge" --base big.safetensors --out merged2.safetensors --aggregate median big0.safetensors \
    big1.safetensors) && sixteen=$(peak "$BIN/photon-merge" --base big.safetensors --out merged16.safetensors \
    --aggregate median big{0..15}.safetensors); then
    echo "# peak memory of a median merge: $two KiB with 2 deltas, $sixteen KiB with 16 (a model is $model_kib KiB)"
    check "a median merge of 16 deltas needs less than 2 more models of memory than one of 2" \
        test $((sixteen - two)) -lt $((2 * model_kib))
else
    fail "median merges of 2 and 16 deltas of a larger model run"
fi

summary
