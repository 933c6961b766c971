#!/usr/bin/env bash
# tests/test_tools.sh - photon-train and photon-eval, run as a user runs them.
#
#   bash tests/test_tools.sh BINDIR        BINDIR: bin, or bin/asan (sanitizers)
#   PHOTON_TEST_QUICK=1 bash tests/test_tools.sh bin/asan
#   PHOTON_TEST_VERBOSE=1 also shows the message of every expected failure
#
# Each check prints "ok - ..." or "FAIL - ..." (with the tool's stderr), and the
# last line is "N passed, N failed[, N skipped]" (tests/lib.sh); the exit
# status is 1 if any check failed. Quick mode skips the training-quality check on real text and
# keeps every other check (they all use tiny models).
#
# The checks follow the tools' conventions (tools/cli.h): --help/--version go
# to stdout and exit 0; a usage error is one line on stderr and exit 2; a
# failure is one line on stderr that names the file, and exit 1. On top of
# that, a failed run must leave every file as it was (outputs are written to a
# temporary file and renamed only on success).
set -u

if [ $# -ne 1 ]; then
    echo "usage: bash tests/test_tools.sh BINDIR" >&2
    exit 2
fi
BIN=$(cd "$1" 2>/dev/null && pwd) || { echo "test_tools.sh: no directory $1" >&2; exit 2; }
TRAIN=$BIN/photon-train
EVAL=$BIN/photon-eval
for t in "$TRAIN" "$EVAL"; do
    [ -x "$t" ] || { echo "test_tools.sh: $t is missing (run make)" >&2; exit 2; }
done
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=${PHOTON_TEST_QUICK:-0}
[ "$QUICK" = 0 ] && QUICK=""
VERBOSE=${PHOTON_TEST_VERBOSE:-}   # also show the message of each expected failure
[ "$VERBOSE" = 0 ] && VERBOSE=""

# ------------------------------------------------------------------ helpers

# check, run, pass/fail/skip, one_line, summary; $W/out and $W/err are the
# output of the last run
. "$ROOT/tests/lib.sh"
scratch tools
WORK=$W/work   # every file the tools read or write
mkdir "$WORK"
cd "$WORK" || exit 2

differ() { ! cmp -s "$1" "$2"; }

# run_ok DESC CMD...: a run that must succeed; a failure is reported. Returns
# its status so that a check that needs its output can be skipped.
run_ok() {
    local desc=$1
    shift
    run "$@"
    if [ "$rc" -ne 0 ]; then
        fail "$desc" "exit $rc: $*"
        return 1
    fi
    if [ -n "$(find "$W" -mindepth 1 -name '*.tmp*')" ]; then
        fail "$desc" "left temporary files: $(cd "$W" && find . -mindepth 1 -name '*.tmp*' | tr '\n' ' ')"
        return 1
    fi
    return 0
}

# snap: a listing of every file under $WORK with its checksum.
# (a --state's lock file, STATE.lock, is made by the lock and kept; it holds nothing)
snap() { (cd "$WORK" && find . -type f ! -name '*.lock' -exec cksum {} + | sort); }

# expect_fail CODE DESC NAME CMD...: CMD must exit CODE with exactly one line
# on stderr (naming NAME, unless NAME is empty), nothing on stdout, and leave
# every file as it was. The commands write to out.st (--out) or out.json
# (--hf-config); CMD runs twice: once where these do not exist, once where
# they do (they must stay byte-identical: an old checkpoint survives a failed
# run).
# A failure after training (LATE=1, as for expect_exit) may follow the
# progress lines: there the last line of stderr must be the error.
OLD_CKPT="" LATE=""
expect_fail() {
    local code=$1 desc=$2 name=$3 why="" before after round
    shift 3
    for round in fresh existing; do
        rm -f out.st out.json
        if [ "$round" = existing ]; then
            cp "$OLD_CKPT" out.st
            echo '{"old": true}' >out.json
        fi
        before=$(snap)
        run "$@"
        after=$(snap)
        if [ "$rc" -ne "$code" ]; then
            why="exit $rc, expected $code ($round --out)"
        elif [ -z "$LATE" ] && ! one_line "$W/err" 2>/dev/null; then
            why="stderr has $(wc -l <"$W/err") lines, expected exactly one ($round --out)"
        elif [ -s "$W/out" ]; then
            why="printed on stdout: $(head -c 200 "$W/out")"
        elif [ -n "$name" ] && ! tail -n 1 "$W/err" | grep -qF -- "$name"; then
            why="the message does not name $name"
        elif [ "$before" != "$after" ]; then
            why="files changed ($round --out): $(diff <(echo "$before") <(echo "$after") | grep '^[<>]' | tr '\n' ' ')"
        fi
        [ -n "$why" ] && break
    done
    # stray temporary files are reported above; remove them so that the
    # checks below do not all fail for them again
    find "$WORK" -name '*.tmp*' -delete
    if [ -z "$why" ]; then
        pass "$desc"
        [ -n "$VERBOSE" ] && tail -n 1 "$W/err" | sed 's/^/    | /'
    else
        fail "$desc" "$why"
    fi
}
usage_error() { expect_fail 2 "$1" "" "${@:2}"; }   # usage_error DESC CMD...
bad_input() { expect_fail 1 "$@"; }                 # bad_input DESC NAME CMD...

HAVE_PY=""
python3 -c 'import json' 2>/dev/null && HAVE_PY=1
HAVE_NUMPY=""
[ -n "$HAVE_PY" ] && python3 -c 'import numpy' 2>/dev/null && HAVE_NUMPY=1

# Small python helpers: JSON fields, safetensors patches, token shards.
cat >"$W/util.py" <<'EOF'
import json, math, struct, sys

def st_header(blob):
    (n,) = struct.unpack("<Q", blob[:8])
    return n, json.loads(blob[8:8 + n])

cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "get":            # get FILE KEY: a field of a one-line JSON object
    print(json.load(open(args[0]))[args[1]])
elif cmd == "keys":         # keys FILE KEY...: the object has (at least) these keys
    obj = json.load(open(args[0]))
    missing = [k for k in args[1:] if not isinstance(obj, dict) or k not in obj]
    if missing:
        sys.exit(f"keys {sorted(obj)}, missing {missing}")
elif cmd == "close":        # close A B TOL: |A-B| <= TOL*|B|
    a, b, tol = map(float, args)
    if not abs(a - b) <= tol * abs(b):
        sys.exit(f"{a!r} and {b!r} differ by {abs(a - b) / abs(b):.3g} (relative), more than {tol}")
elif cmd == "nan":          # nan IN OUT: a NaN into the data of one tensor
    blob = bytearray(open(args[0], "rb").read())
    n, hdr = st_header(blob)
    name = "h.0.mlp.c_fc.weight" if "h.0.mlp.c_fc.weight" in hdr else sorted(k for k in hdr if k != "__metadata__")[0]
    begin, end = hdr[name]["data_offsets"]
    at = 8 + n + begin + 4 * ((end - begin) // 8)   # an element in the middle
    blob[at:at + 4] = struct.pack("<I", 0x7fc00000)
    open(args[1], "wb").write(blob)
elif cmd == "flip":         # flip IN OUT: the first ':' of the JSON header becomes ';'
    blob = bytearray(open(args[0], "rb").read())
    at = blob.index(b":", 8)
    blob[at] ^= 0x01
    open(args[1], "wb").write(blob)
elif cmd == "shard":        # shard OUT COUNT TOKENS...: an llm.c shard whose header says COUNT
    toks = [int(t) for t in args[2:]]
    hdr = [20240520, 1, int(args[1])] + [0] * 253
    with open(args[0], "wb") as f:
        f.write(struct.pack("<256i", *hdr))
        f.write(struct.pack(f"<{len(toks)}H", *toks))
elif cmd == "entropy":      # entropy FILE: unigram byte entropy in nats
    data = open(args[0], "rb").read()
    counts = [0] * 256
    for b in data:
        counts[b] += 1
    print(-sum(c / len(data) * math.log(c / len(data)) for c in counts if c))
EOF
py() { python3 "$W/util.py" "$@"; }
jget() { py get "$@"; }

# Tiny models keep every check but the last fast, also under the sanitizers.
TINY=(--init --layers 1 --width 16 --heads 2 --ctx 16)
SMALL=(--init --layers 2 --width 32 --heads 4 --ctx 32)

# Data: a few KB of text that is the same on every machine, and a second file.
for i in $(seq 1 120); do
    echo "$i: the quick brown fox jumps over the lazy dog; $((i * i % 97)) sheep"
done >text.txt
for i in $(seq 1 80); do echo "other data, line $i"; done >text2.txt
: >empty.txt
printf 'short text' >short.txt

# ------------------------------------------------------------------ 1. --help, --version

for tool in "$TRAIN" "$EVAL"; do
    t=$(basename "$tool")
    for flag in --help --version; do
        run "$tool" $flag
        if [ "$rc" -eq 0 ] && [ -s "$W/out" ] && [ ! -s "$W/err" ] && grep -q "${t}\|usage" "$W/out"; then
            pass "$t $flag: exit 0, stdout only"
        else
            fail "$t $flag: exit 0, stdout only" "exit $rc, $(wc -c <"$W/out") bytes on stdout, $(wc -c <"$W/err") on stderr"
        fi
    done
done

# A valid checkpoint, and a copy of it (outside $WORK) as the "older --out"
# of the failure checks below.
run_ok "train a tiny model" "$TRAIN" "${TINY[@]}" --steps 2 --batch 2 --data text.txt --out tiny.st
OLD_CKPT=$W/old.st
cp tiny.st "$OLD_CKPT"

# ------------------------------------------------------------------ 2. usage errors: exit 2, one line

usage_error "train: unknown flag" "$TRAIN" "${TINY[@]}" --data text.txt --out out.st --frobnicate
usage_error "eval: unknown flag" "$EVAL" --model tiny.st --data text.txt --frobnicate
usage_error "train: stray positional argument" "$TRAIN" "${TINY[@]}" --out out.st stray --data text.txt
usage_error "train: missing --data" "$TRAIN" "${TINY[@]}" --out out.st
usage_error "train: missing --out" "$TRAIN" "${TINY[@]}" --data text.txt
usage_error "train: --data without a file" "$TRAIN" "${TINY[@]}" --data --out out.st
usage_error "train: neither --init nor --model" "$TRAIN" --data text.txt --out out.st
usage_error "eval: missing --model" "$EVAL" --data text.txt
usage_error "eval: nothing to do" "$EVAL" --model tiny.st
usage_error "train: both --init and --model" "$TRAIN" --init --model tiny.st --data text.txt --out out.st
usage_error "train: model flags with --model" "$TRAIN" --model tiny.st --layers 2 --data text.txt --out out.st
usage_error "train: --steps -1" "$TRAIN" "${TINY[@]}" --steps -1 --data text.txt --out out.st
usage_error "train: --steps 1.5" "$TRAIN" "${TINY[@]}" --steps 1.5 --data text.txt --out out.st
usage_error "train: --lr abc" "$TRAIN" "${TINY[@]}" --lr abc --data text.txt --out out.st
usage_error "train: --lr nan" "$TRAIN" "${TINY[@]}" --lr nan --data text.txt --out out.st
usage_error "train: --batch without a value" "$TRAIN" "${TINY[@]}" --data text.txt --out out.st --batch
usage_error "train: --json=1 (takes no value)" "$TRAIN" "${TINY[@]}" --data text.txt --out out.st --json=1
usage_error "train: --seq longer than --ctx" "$TRAIN" "${TINY[@]}" --seq 17 --data text.txt --out out.st
usage_error "train: --seq longer than the checkpoint's ctx" "$TRAIN" --model tiny.st --seq 17 --data text.txt --out out.st
usage_error "eval: --seq longer than ctx" "$EVAL" --model tiny.st --seq 17 --data text.txt
usage_error "train: width not a multiple of heads" "$TRAIN" --init --width 30 --heads 4 --data text.txt --out out.st

# ------------------------------------------------------------------ 3. bad input: exit 1, names the file, changes nothing

bad_input "train: missing data file" no-such.txt "$TRAIN" "${TINY[@]}" --data text.txt no-such.txt --out out.st
bad_input "eval: missing data file" no-such.txt "$EVAL" --model tiny.st --data no-such.txt
bad_input "train: missing checkpoint" no-such.st "$TRAIN" --model no-such.st --data text.txt --out out.st
bad_input "train: empty data file" empty.txt "$TRAIN" "${TINY[@]}" --data empty.txt --out out.st

size=$(wc -c <tiny.st)
head -c $((size / 2)) tiny.st >cut-data.st   # the JSON header is the first ~1.5 KB of ~32 KB
bad_input "train: checkpoint cut in its data" cut-data.st "$TRAIN" --model cut-data.st --data text.txt --out out.st
bad_input "eval: checkpoint cut in its data" cut-data.st "$EVAL" --model cut-data.st --data text.txt --hf-config out.json
head -c 100 tiny.st >cut-header.st
bad_input "train: checkpoint cut in its header" cut-header.st "$TRAIN" --model cut-header.st --data text.txt --out out.st
head -c 5 tiny.st >cut-length.st
bad_input "train: checkpoint cut in its length field" cut-length.st "$TRAIN" --model cut-length.st --data text.txt --out out.st
bad_input "train: checkpoint path is a directory" "$W" "$TRAIN" --model "$W" --data text.txt --out out.st
bad_input "train: a directory as --data" "$W" "$TRAIN" "${TINY[@]}" --data "$W" --out out.st
bad_input "train: text file as --model" text.txt "$TRAIN" --model text.txt --data text.txt --out out.st
bad_input "eval: text file as --model" text.txt "$EVAL" --model text.txt --data text.txt

# A state file is not a checkpoint (and the reverse).
run_ok "train with --state" "$TRAIN" "${TINY[@]}" --steps 2 --batch 2 --data text.txt --out tiny2.st --state tiny.state
bad_input "train: client state as --model" tiny.state "$TRAIN" --model tiny.state --data text.txt --out out.st
bad_input "train: checkpoint as --state" tiny.st "$TRAIN" --model tiny2.st --state tiny.st --data text.txt --out out.st

if [ -n "$HAVE_PY" ]; then
    py flip tiny.st flipped.st
    bad_input "train: checkpoint with a flipped byte in its JSON header" flipped.st \
        "$TRAIN" --model flipped.st --data text.txt --out out.st
    py nan tiny.st nan.st
    bad_input "train: checkpoint with a NaN in a tensor" nan.st "$TRAIN" --model nan.st --data text.txt --out out.st
    bad_input "eval: checkpoint with a NaN in a tensor" nan.st "$EVAL" --model nan.st --data text.txt --hf-config out.json

    # llm.c shards: 256 int32 header (magic, version, count), then uint16 tokens.
    py shard count.bin 11 1 2 3 4 5 6 7 8 9 10
    bad_input "train: shard whose header has the wrong token count" count.bin \
        "$TRAIN" "${TINY[@]}" --data count.bin --out out.st
    # shellcheck disable=SC2046  # one argument per token
    py shard vocab.bin 40 $(seq 100 20 880)
    bad_input "train: shard with tokens beyond the model's vocab" vocab.bin \
        "$TRAIN" "${TINY[@]}" --vocab 256 --data vocab.bin --out out.st
    bad_input "eval: shard with tokens beyond the model's vocab" vocab.bin "$EVAL" --model tiny.st --data vocab.bin
else
    skip "corrupt checkpoints and shards: python3 not found"
fi

# A client state belongs to one model config and one dataset.
run_ok "train a width-32 model with --state" "$TRAIN" --init --layers 1 --width 32 --heads 2 --ctx 16 --steps 1 \
    --batch 2 --data text.txt --out w32.st --state w32.state
bad_input "train: --state of a width-32 model with a width-64 model" w32.state \
    "$TRAIN" --init --layers 1 --width 64 --heads 2 --ctx 16 --steps 1 --batch 2 --data text.txt --out out.st --state w32.state
bad_input "train: --state of other data" w32.state \
    "$TRAIN" --model w32.st --steps 1 --batch 2 --data text2.txt --out out.st --state w32.state
bad_input "train: data shorter than one batch" short.txt \
    "$TRAIN" "${TINY[@]}" --batch 4 --data short.txt --out out.st

# Output that cannot be written: exit 1, and nothing else written either.
LATE=1 bad_input "train: --out in a missing directory" no-dir/x.st "$TRAIN" "${TINY[@]}" --steps 1 --batch 2 --data text.txt --out no-dir/x.st
# The checkpoint must not be written either: the pair (checkpoint, state) is
# what a resumed run needs.
LATE=1 bad_input "train: --state in a missing directory" no-dir/x.state \
    "$TRAIN" "${TINY[@]}" --steps 1 --batch 2 --data text.txt --out out.st --state no-dir/x.state

# ------------------------------------------------------------------ 4. determinism

DET=("$TRAIN" "${TINY[@]}" --steps 5 --batch 2 --lr 1e-2 --data text.txt)
run_ok "determinism: run 1" "${DET[@]}" --seed 7 --out det1.st --state det1.state &&
    run_ok "determinism: run 2" "${DET[@]}" --seed 7 --out det2.st --state det2.state &&
    run_ok "determinism: other seed" "${DET[@]}" --seed 8 --out det3.st --state det3.state && {
    check "same seed and data: identical checkpoints" cmp -s det1.st det2.st
    check "same seed and data: identical state files" same_state det1.state det2.state
    check "another seed: another checkpoint" differ det1.st det3.st
}

# ------------------------------------------------------------------ 5. resume

# N steps, then N more from the checkpoint and state, must equal 2N steps in
# one run: same weights, same optimizer moments, same data position. The small
# batch wraps the data (an epoch) inside the second half.
resume_check() {
    local desc=$1 n=$2
    shift 2
    local R=("$TRAIN" --batch 4 --seq 16 --lr 1e-2 --data text.txt --total-steps $((2 * n)) "$@")
    rm -f r1.st r2.st r.state rfull.st rfull.state
    run_ok "$desc: first half" "${R[@]}" "${TINY[@]}" --steps "$n" --out r1.st --state r.state &&
        run_ok "$desc: second half" "${R[@]}" --model r1.st --steps "$n" --out r2.st --state r.state &&
        run_ok "$desc: one run" "${R[@]}" "${TINY[@]}" --steps $((2 * n)) --out rfull.st --state rfull.state && {
        check "$desc: resumed checkpoint = one run's" cmp -s r2.st rfull.st
        check "$desc: resumed state = one run's" same_state r.state rfull.state
    }
}
resume_check "resume" 40
resume_check "resume with warmup across the halves" 40 --warmup 50 --min-lr-frac 0.3
# Without --state, the second half starts with fresh moments: it must differ.
run_ok "resume without state" "$TRAIN" --batch 4 --seq 16 --lr 1e-2 --data text.txt --total-steps 80 \
    --model r1.st --steps 40 --out r3.st &&
    check "resume without --state differs from one run" differ r3.st rfull.st

# ------------------------------------------------------------------ 6. --steps 0

run_ok "--steps 0 from --init" "$TRAIN" "${TINY[@]}" --seed 5 --steps 0 --data text.txt --out z0.st &&
    run_ok "--steps 0 from the checkpoint" "$TRAIN" --model z0.st --steps 0 --data text.txt --out z1.st &&
    check "--steps 0: load and save give identical bytes" cmp -s z0.st z1.st
run_ok "--steps 0 without --data" "$TRAIN" "${TINY[@]}" --seed 5 --steps 0 --out z0nodata.st &&
    check "--steps 0 without --data: the same file" cmp -s z0.st z0nodata.st
# The --steps 0 file is the initial model: training from it = training from --init.
run_ok "3 steps from --init" "$TRAIN" "${TINY[@]}" --seed 5 --steps 3 --batch 2 --data text.txt --out z3a.st &&
    run_ok "3 steps from the --steps 0 file" "$TRAIN" --model z0.st --steps 3 --batch 2 --data text.txt --out z3b.st &&
    check "--steps 0 writes the model as initialised" cmp -s z3a.st z3b.st
# Writing over the checkpoint that was read works.
cp z0.st inplace.st
run_ok "--out = --model" "$TRAIN" --model inplace.st --steps 3 --batch 2 --data text.txt --out inplace.st &&
    check "--out = --model: same result as another --out" cmp -s inplace.st z3b.st

# ------------------------------------------------------------------ other ways to run the tools

# Flags also take their value after '=' (tools/cli.h).
run_ok "flags with =value" "$TRAIN" --init --layers=1 --width=16 --heads=2 --ctx=16 --seed=5 --steps=3 --batch=2 \
    --data=text.txt --out=zeq.st &&
    check "--flag=value is --flag value" cmp -s zeq.st z3a.st
# Several --data files are one stream: the same as their concatenation.
cat text.txt text2.txt >both.txt
run_ok "two data files" "$TRAIN" "${TINY[@]}" --steps 60 --batch 4 --data text.txt text2.txt --out two.st --state two.state &&
    run_ok "their concatenation" "$TRAIN" "${TINY[@]}" --steps 60 --batch 4 --data both.txt --out cat.st --state cat.state && {
    check "two --data files = their concatenation (checkpoint)" cmp -s two.st cat.st
    check "two --data files = their concatenation (state)" same_state two.state cat.state
}
# Sampling: the prompt, then N bytes (the tiny model has vocab 256), the same
# text for the same seed.
if run_ok "eval --sample" "$EVAL" --model z3a.st --sample 40 --prompt "The " --seed 3; then
    cp "$W/out" sample1.txt
    run_ok "eval --sample again" "$EVAL" --model z3a.st --sample 40 --prompt "The " --seed 3 && cp "$W/out" sample2.txt
    check "eval --sample: the same seed gives the same text" cmp -s sample1.txt sample2.txt
    check "eval --sample: prompt + 40 bytes + newline" test "$(head -c 4 sample1.txt)$(wc -c <sample1.txt)" = "The 45"
fi
usage_error "eval --sample with an empty --prompt" "$EVAL" --model z3a.st --sample 5 --prompt ""

# ------------------------------------------------------------------ 9. --json output

TRAIN_KEYS=(out steps global_step tokens_seen tokens final_loss mean_loss seconds tokens_per_second data_epoch data_position)
EVAL_KEYS=(model step loss perplexity bits_per_byte tokens seq)
if [ -n "$HAVE_PY" ]; then
    # an --out name that needs JSON escapes
    weird='we"ird\name.st'
    if run_ok "train --json" "$TRAIN" "${TINY[@]}" --steps 4 --batch 2 --seq 8 --data text.txt --out "$weird" --json; then
        cp "$W/out" train.json
        check "train --json: one JSON object with the documented keys" py keys train.json "${TRAIN_KEYS[@]}"
        check "train --json: out names the file" test "$(jget train.json out)" = "$weird"
        check "train --json: steps, global_step, tokens" \
            test "$(jget train.json steps) $(jget train.json global_step) $(jget train.json tokens)" = "4 4 64"
    fi
    if run_ok "train --steps 0 --json" "$TRAIN" --model z0.st --steps 0 --data text.txt --out z2.st --json; then
        cp "$W/out" train0.json
        check "train --steps 0 --json: valid JSON, no loss" test "$(jget train0.json final_loss)" = None
    fi
    if run_ok "eval --json" "$EVAL" --model "$weird" --data text.txt --json; then
        cp "$W/out" eval.json
        check "eval --json: one JSON object with the documented keys" py keys eval.json "${EVAL_KEYS[@]}"
        check "eval --json: step and seq" test "$(jget eval.json step) $(jget eval.json seq)" = "4 16"
        check "eval --json: bits per byte = loss / ln 2" \
            py close "$(jget eval.json bits_per_byte)" "$(python3 -c "import math; print($(jget eval.json loss) / math.log(2))")" 1e-12
    fi
    # shellcheck disable=SC2046  # one argument per token
    py shard ok.bin 300 $(for i in $(seq 0 299); do echo $((i * 7 % 256)); done)
    if run_ok "eval --json on a shard" "$EVAL" --model tiny.st --data ok.bin --json; then
        cp "$W/out" evalshard.json
        check "eval --json on a shard: bits_per_byte is null" test "$(jget evalshard.json bits_per_byte)" = None
    fi
else
    skip "--json output: python3 not found"
fi

# ------------------------------------------------------------------ 7. agreement with the references

# A model a few steps away from its initialisation, so that every tensor matters.
B=3 T=24 M=500
run_ok "train the reference model" "$TRAIN" "${SMALL[@]}" --steps 6 --batch 4 --lr 1e-2 --data text.txt --out ref.st
run_ok "eval --batch 1" "$EVAL" --model ref.st --data text.txt --seq $T --max-tokens $M --batch 1 --json && cp "$W/out" b1.json
run_ok "eval --batch 7" "$EVAL" --model ref.st --data text.txt --seq $T --max-tokens $M --batch 7 --json && cp "$W/out" b7.json
check "eval: the loss does not depend on --batch" cmp -s b1.json b7.json
run_ok "eval --batch $B --hf-config" "$EVAL" --model ref.st --data text.txt --seq $T --max-tokens $M --batch $B --json \
    --hf-config ref-config.json && cp "$W/out" ref-eval.json

# compare_ref DESC JSON CMD...: CMD prints {"loss", "tokens"} as the reference computes them.
compare_ref() {
    local desc=$1 ours=$2
    shift 2
    run "$@"
    if [ "$rc" -ne 0 ]; then
        fail "$desc" "the reference failed (exit $rc)"
        return
    fi
    tail -n 1 "$W/out" >ref-out.json
    if [ "$(jget ref-out.json tokens)" != "$(jget "$ours" tokens)" ]; then
        fail "$desc" "tokens: reference $(jget ref-out.json tokens), photon-eval $(jget "$ours" tokens)"
    elif ! why=$(py close "$(jget "$ours" loss)" "$(jget ref-out.json loss)" 1e-5 2>&1); then
        fail "$desc" "$why"
    else
        pass "$desc (photon $(jget "$ours" loss), reference $(jget ref-out.json loss))"
    fi
}
if [ -z "$HAVE_NUMPY" ]; then
    skip "numpy reference: numpy is not importable by python3"
elif [ -s ref-eval.json ]; then
    compare_ref "eval loss = numpy reference (ref_gpt2.py)" ref-eval.json \
        python3 "$ROOT/tests/ref_gpt2.py" --model ref.st --data text.txt --batch $B --seq $T --max-tokens $M
    # token shards and a vocabulary beyond bytes
    # shellcheck disable=SC2046  # one argument per token
    py shard big.bin 2000 $(for i in $(seq 0 1999); do echo $(((i * 37 + i / 7) % 300)); done)
    run_ok "train on a shard, vocab 300" "$TRAIN" "${SMALL[@]}" --vocab 300 --steps 4 --batch 4 --lr 1e-2 \
        --data big.bin --out ref300.st &&
        run_ok "eval on a shard" "$EVAL" --model ref300.st --data big.bin --seq 20 --batch 5 --json &&
        cp "$W/out" ref300.json &&
        compare_ref "eval loss on a shard = numpy reference" ref300.json \
            python3 "$ROOT/tests/ref_gpt2.py" --model ref300.st --data big.bin --batch 5 --seq 20
fi
if [ -z "$HAVE_NUMPY" ]; then
    skip "Hugging Face check: numpy is not importable by python3"
elif /usr/bin/python3 -c 'import torch, transformers' 2>/dev/null; then
    if [ -s ref-eval.json ] && [ -s ref-config.json ]; then
        compare_ref "eval loss = Hugging Face transformers (hf_check.py)" ref-eval.json \
            /usr/bin/python3 "$ROOT/tests/hf_check.py" --model ref.st --config ref-config.json --data text.txt \
            --batch $B --seq $T --max-tokens $M
    fi
else
    skip "Hugging Face check: /usr/bin/python3 cannot import torch and transformers"
fi

# ------------------------------------------------------------------ 8. training on real text

SHAKES=$ROOT/../shared/data/tinyshakespeare.txt
if [ -n "$QUICK" ]; then
    skip "training on tinyshakespeare (PHOTON_TEST_QUICK)"
elif [ ! -f "$SHAKES" ]; then
    skip "training on tinyshakespeare: $SHAKES not found"
elif [ -z "$HAVE_PY" ]; then
    skip "training on tinyshakespeare: python3 not found"
else
    # first 90% to train on, the last 10% held out
    n=$(wc -c <"$SHAKES")
    head -c $((n * 9 / 10)) "$SHAKES" >shakes-train.txt
    tail -c $((n - n * 9 / 10)) "$SHAKES" >shakes-val.txt
    H=$(py entropy shakes-train.txt)
    t0=$SECONDS
    if run_ok "train on tinyshakespeare" "$TRAIN" --init --layers 2 --width 64 --heads 4 --ctx 32 --batch 8 \
        --steps 800 --lr 3e-3 --warmup 20 --data shakes-train.txt --out shakes.st --json &&
        run_ok "eval on held-out tinyshakespeare" "$EVAL" --model shakes.st --data shakes-val.txt --max-tokens 32768 --json
    then
        cp "$W/out" shakes.json
        L=$(jget shakes.json loss)
        desc="tinyshakespeare: held-out loss $L < unigram entropy $H - 0.5 nats ($((SECONDS - t0)) s)"
        if python3 -c "import sys; sys.exit(not $L < $H - 0.5)"; then pass "$desc"; else fail "$desc"; fi
    fi
fi

# ------------------------------------------------------------------ 10. atomicity

leftover=$(cd "$W" && find . -mindepth 1 -name '*.tmp*')
if [ -z "$leftover" ]; then
    pass "no temporary files left anywhere"
else
    fail "no temporary files left anywhere" "found: $(echo "$leftover" | tr '\n' ' ')"
fi

summary "with $BIN"
