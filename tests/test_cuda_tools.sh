#!/usr/bin/env bash
# test_cuda_tools.sh BINDIR - the tools' --device cuda, as users run them.
#
# BINDIR holds tools built with the CUDA backend: bin/cuda (a real GPU) or
# bin/emu (the kernels on the CPU through tests/cuda_emu.h). Without a GPU
# the bin/cuda run says it was skipped.
#
# A federation with one CPU client and one GPU client: their deltas merge,
# and in the next round each resumes on the other device the client state
# the other wrote. The same training on both devices gives losses within 1%,
# evaluation agrees, and the device flags fail with clear errors.
# Prints "ok - ..." / "FAIL - ..." / "skip - ..." and a last line
# "N passed, N failed" (tests/lib.sh).
set -u
BIN=$(cd "${1:-bin/emu}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/tests/lib.sh"
scratch cuda-tools
json_field() { sed -n "s/.*\"$1\":\\([^,}]*\\).*/\\1/p" "$2"; }
# within FILE_A FILE_B FIELD LIMIT: the field differs by at most LIMIT (relative)
within() {
    awk -v a="$(json_field "$3" "$1")" -v b="$(json_field "$3" "$2")" -v lim="$4" \
        'BEGIN { d = (a - b) / b; if (d < 0) d = -d; printf "%s: %s vs %s (%.3g%%)\n", "'"$3"'", a, b, 100 * d;
                 exit !(a != "" && d <= lim) }' >&2
}

cd "$W" || exit 2
if ! run "$BIN/photon-train" --device cuda --init --steps 0 --out probe.st; then
    if grep -q "no CUDA device" "$W/err"; then
        skip "test_cuda_tools: no CUDA device present ($BIN)"
    else
        fail "photon-train --device cuda starts" "exit $rc"
    fi
    summary
    exit
fi

# two clients' text: a real corpus when ../shared/data has one
corpus="$ROOT/../shared/data/tinyshakespeare.txt"
if [ -f "$corpus" ]; then
    head -c 60000 "$corpus" >a.txt
    tail -c 60000 "$corpus" >b.txt
    echo "# text: $corpus"
else
    for c in 0 1; do "$ROOT/bin/synthlang" --seed 5 --dialect $c --words 24 --bytes 60000 --out t$c.txt 2>/dev/null; done
    mv t0.txt a.txt && mv t1.txt b.txt
    echo "# text: synthlang (no corpus under ../shared/data)"
fi

model=(--layers 2 --heads 2 --width 64 --ctx 32)
train_flags=(--steps 12 --batch 4 --seq 32 --lr 3e-3 --warmup 2)
"$BIN/photon-train" --init "${model[@]}" --steps 0 --out g0.st 2>/dev/null

# --- round 1: client a on the CPU, client b on the GPU ---
check "round 1: a CPU client trains" "$BIN/photon-train" --model g0.st --data a.txt "${train_flags[@]}" --state a.state \
    --delta-out a1.delta --client-id a --device cpu --json
check "round 1: a GPU client trains" bash -c "'$BIN/photon-train' --model g0.st --data b.txt ${train_flags[*]} --state b.state \
    --delta-out b1.delta --client-id b --device cuda --json >b1.json && grep -q '\"device\":\"cuda\"' b1.json"
check "round 1: their deltas merge" "$BIN/photon-merge" --base g0.st --out g1.st a1.delta b1.delta
# --- round 2: each resumes the other device's client state ---
check "round 2: the CPU state resumes on the GPU" "$BIN/photon-train" --model g1.st --data a.txt "${train_flags[@]}" \
    --state a.state --delta-out a2.delta --client-id a --device cuda
check "round 2: the GPU state resumes on the CPU" "$BIN/photon-train" --model g1.st --data b.txt "${train_flags[@]}" \
    --state b.state --delta-out b2.delta --client-id b --device cpu
check "round 2: their deltas merge" "$BIN/photon-merge" --base g1.st --out g2.st a2.delta b2.delta
check "the merged model evaluates below the first" bash -c "
    l0=\$('$BIN/photon-eval' --model g0.st --data b.txt --max-tokens 4096 --json --device cpu | sed 's/.*\"loss\":\\([^,]*\\).*/\\1/')
    l2=\$('$BIN/photon-eval' --model g2.st --data b.txt --max-tokens 4096 --json --device cpu | sed 's/.*\"loss\":\\([^,]*\\).*/\\1/')
    echo \"loss \$l0 -> \$l2\" >&2; awk -v a=\$l0 -v b=\$l2 'BEGIN { exit !(b < a - 0.3) }'"

# --- the same run on both devices ---
"$BIN/photon-train" --model g0.st --data a.txt "${train_flags[@]}" --out cpu.st --device cpu --json >cpu.json 2>/dev/null
"$BIN/photon-train" --model g0.st --data a.txt "${train_flags[@]}" --out gpu.st --device cuda --json >gpu.json 2>/dev/null
check "the same 12 steps: final loss within 1% on CPU and GPU" within gpu.json cpu.json final_loss 0.01
check "the same 12 steps: mean loss within 1% on CPU and GPU" within gpu.json cpu.json mean_loss 0.01
"$BIN/photon-eval" --model gpu.st --data b.txt --max-tokens 4096 --json --device cpu >eval_cpu.json 2>/dev/null
"$BIN/photon-eval" --model gpu.st --data b.txt --max-tokens 4096 --json --device cuda --precision fp32 >eval_gpu.json 2>/dev/null
check "evaluation: GPU (fp32) and CPU agree within 1e-5" within eval_gpu.json eval_cpu.json loss 0.00001
check "a GPU-trained checkpoint is a checkpoint like any other" "$BIN/photon-merge" --base g0.st --out g1b.st a1.delta b1.delta

# --- errors ---
check "--device gpu is a usage error" expect_exit 2 "--device is cpu or cuda" \
    "$BIN/photon-train" --model g0.st --data a.txt --steps 1 --out x.st --device gpu
check "--precision fp16 is a usage error" expect_exit 2 "--precision is tf32, fp32 or bf16" \
    "$BIN/photon-train" --model g0.st --data a.txt --steps 1 --out x.st --precision fp16
check "--precision with --device cpu is a usage error" expect_exit 2 "applies to --device cuda only" \
    "$BIN/photon-train" --model g0.st --data a.txt --steps 1 --out x.st --device cpu --precision bf16
"$BIN/photon-train" --init --layers 1 --heads 1 --width 256 --ctx 16 --steps 0 --out wide.st 2>/dev/null
check "a head size the GPU kernels do not take fails clearly, writing nothing" bash -c "
    ! '$BIN/photon-train' --model wide.st --data a.txt --steps 1 --batch 1 --seq 8 --out w2.st --device cuda 2>w.err &&
    grep -q 'head size 256' w.err && [ ! -e w2.st ]"
check "--help documents --device and --precision" bash -c "
    '$BIN/photon-train' --help | grep -q -- '--device cpu|cuda' && '$BIN/photon-eval' --help | grep -q -- '--precision'"

summary
