#!/usr/bin/env bash
# tests/test_data.sh - photon-data, run as a user runs it.
#
#   bash tests/test_data.sh BINDIR        BINDIR: bin, or bin/asan (sanitizers)
#
# Each check prints "ok - ...", "FAIL - ..." (with the tool's stderr) or
# "skip - ..."; the last line is "N passed, N failed, N skipped" (tests/lib.sh)
# and the exit status is 1 if any check failed. Uses ../shared/data (from the
# repository root) when it is there, and transformers (via /usr/bin/python3)
# when it can be imported, to check that GPT2Tokenizer reads photon's files
# and encodes the same ids; each is skipped with a message otherwise.
set -u

if [ $# -ne 1 ]; then
    echo "usage: bash tests/test_data.sh BINDIR" >&2
    exit 2
fi
BIN=$(cd "$1" 2>/dev/null && pwd) || { echo "test_data.sh: no directory $1" >&2; exit 2; }
DATA=$BIN/photon-data
[ -x "$DATA" ] || { echo "test_data.sh: $DATA is missing" >&2; exit 2; }
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=$ROOT/../shared/data
PY=/usr/bin/python3

. "$ROOT/tests/lib.sh"   # check, expect_exit, run, pass/fail/skip, summary
scratch data
cd "$W" || exit 2
# A refusal (check DESC expect_exit STATUS PATTERN CMD...) is one line of
# stderr: runs that would report progress are given --quiet.

# shard_count FILE: the token count in a shard's header
shard_count() { od -An -t u4 -j 8 -N 4 "$1" | tr -d ' '; }

# ------------------------------------------------------------------ inputs
# ascii.txt: 10000 bytes of ASCII text; mixed.txt: UTF-8, invalid bytes, CRLF
awk 'BEGIN { for (i = 0; i < 400; i++) printf "line %d: the quick brown fox jumps over the lazy dog.\n", i }' |
    head -c 10000 >ascii.txt
{
    printf 'caf\xc3\xa9 na\xc3\xafve \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e  tabs\there\r\n'
    printf 'bad bytes: \xff\xfe\xc3 \xed\xa0\x80 and \xf0\x9f\x98\x80 emoji\n'
    for i in $(seq 1 200); do printf "It's %d o'clock; we'll see what they've done.\n" "$i"; done
} >mixed.txt
if [ -d "$SHARED" ]; then
    CORPUS=()
    for f in "$SHARED"/*.txt; do CORPUS+=("$f"); done
    for f in "${CORPUS[@]}"; do head -c 400000 "$f" >"sample-$(basename "$f")"; done
    TRAIN=(sample-*.txt)
else
    echo "# no $SHARED: using generated text (the corpus checks are skipped)"
    CORPUS=()
    for i in 1 2 3; do cat ascii.txt mixed.txt ascii.txt >"sample-$i.txt"; done
    TRAIN=(sample-*.txt)
fi

# ------------------------------------------------------------------ conventions
run "$DATA" --help
if [ $rc -eq 0 ] && grep -q '^usage: photon-data train-tokenizer' "$W/out" && [ ! -s "$W/err" ]; then
    pass "--help: usage on stdout, exit 0"
else
    fail "--help: usage on stdout, exit 0"
fi
run "$DATA" encode --help
if [ $rc -eq 0 ] && grep -q 'usage:' "$W/out"; then pass "encode --help"; else fail "encode --help"; fi
run "$DATA" --version
if [ $rc -eq 0 ] && grep -Eq '^photon-data [0-9.]+ .*Unicode 14.0.0' "$W/out"; then pass "--version"; else fail "--version"; fi
check "no command: usage error" expect_exit 2 "needs a command" "$DATA"
check "unknown command" expect_exit 2 "unknown command 'frobnicate'" "$DATA" frobnicate
check "train-tokenizer without --vocab" expect_exit 2 "needs --vocab" "$DATA" train-tokenizer --out t ascii.txt
check "--vocab 256 is too small" expect_exit 2 "--vocab needs an integer from 257 to 65536" "$DATA" train-tokenizer --vocab 256 --out t ascii.txt
check "train-tokenizer without files" expect_exit 2 "needs text FILEs" "$DATA" train-tokenizer --vocab 300 --out t
check "unknown option" expect_exit 2 "unknown option --frob" "$DATA" encode --frob --tokenizer bytes --out x ascii.txt
check "--val-frac 1.5" expect_exit 2 "--val-frac" "$DATA" encode --tokenizer bytes --out x --val-frac 1.5 --val-out y ascii.txt
check "--val-frac without --val-out" expect_exit 2 "go together" "$DATA" encode --tokenizer bytes --out x --val-frac 0.1 ascii.txt
check "--val-out equal to --out" expect_exit 2 "must differ" "$DATA" encode --tokenizer bytes --out x --val-frac 0.1 --val-out x ascii.txt
check "split --by nonsense" expect_exit 2 "--by iid or --by source" "$DATA" split --clients 2 --by nonsense --out s ascii.txt
check "split --by source with more clients than files" expect_exit 2 "3 clients but only 2 files" "$DATA" split --clients 3 --by source --out s ascii.txt mixed.txt
check "decode needs a shard" expect_exit 2 "needs a SHARD" "$DATA" decode --tokenizer bytes

# ------------------------------------------------------------------ bytes
check "encode --tokenizer bytes" "$DATA" encode --tokenizer bytes --out bytes.bin ascii.txt mixed.txt
if [ $rc -eq 0 ] && [ "$(shard_count bytes.bin)" -eq $(($(wc -c <ascii.txt) + $(wc -c <mixed.txt))) ] &&
    [ "$(od -An -t u4 -N 8 bytes.bin | tr -s ' ')" = " 20240520 1" ] &&
    [ "$(wc -c <bytes.bin)" -eq $((1024 + 2 * $(shard_count bytes.bin))) ]; then
    pass "byte shard: llm.c header, one uint16 token per byte"
else
    fail "byte shard: llm.c header, one uint16 token per byte"
fi
run "$DATA" decode --tokenizer bytes bytes.bin
if [ $rc -eq 0 ] && cat ascii.txt mixed.txt | cmp -s - "$W/out"; then pass "decode bytes: exact bytes back"; else fail "decode bytes: exact bytes back"; fi

# ------------------------------------------------------------------ train-tokenizer
check "train-tokenizer --vocab 2000" "$DATA" train-tokenizer --vocab 2000 --out tok "${TRAIN[@]}"
nmerges=$(($(wc -l <tok/merges.txt) - 1))
[ ${#CORPUS[@]} -gt 0 ] && want=1743 || want=$nmerges   # generated text runs out of pairs sooner
if [ -s tok/vocab.json ] && [ "$(head -n 1 tok/merges.txt)" = "#version: 0.2" ] && [ "$nmerges" -eq "$want" ] &&
    grep -Eq "\"<\\|endoftext\\|>\": $((nmerges + 256)),?\$" tok/vocab.json; then
    pass "tok/: vocab.json and merges.txt ($nmerges merges, <|endoftext|> = $((nmerges + 256)))"
else
    fail "tok/: vocab.json and merges.txt ($nmerges merges, want $want, <|endoftext|> last)"
fi
if grep -q 'merges' "$W/err"; then pass "train-tokenizer reports progress on stderr"; else fail "train-tokenizer reports progress on stderr"; fi
check "train-tokenizer again (same flags)" "$DATA" train-tokenizer --quiet --vocab 2000 --out tok2 "${TRAIN[@]}"
if cmp -s tok/vocab.json tok2/vocab.json && cmp -s tok/merges.txt tok2/merges.txt && [ ! -s "$W/err" ]; then
    pass "same flags, same bytes (and --quiet is quiet)"
else
    fail "same flags, same bytes (and --quiet is quiet)"
fi
check "train-tokenizer: a missing input" expect_exit 1 "missing.txt: cannot open" "$DATA" train-tokenizer --quiet --vocab 300 --out tok3 ascii.txt missing.txt
if [ ! -e tok3/vocab.json ]; then pass "a failed train-tokenizer writes nothing"; else fail "a failed train-tokenizer writes nothing"; fi
check "train-tokenizer on tiny text stops early" "$DATA" train-tokenizer --vocab 5000 --out small ascii.txt
if grep -q 'note: no pair occurs 2 times' "$W/err"; then pass "  ... and says so"; else fail "  ... and says so"; fi

# ------------------------------------------------------------------ encode / decode
check "encode with the trained tokenizer" "$DATA" encode --tokenizer tok --out mixed.bin mixed.txt
run "$DATA" decode --tokenizer tok mixed.bin
if [ $rc -eq 0 ] && cmp -s mixed.txt "$W/out"; then
    pass "decode: invalid UTF-8, CRLF and tabs come back exactly"
else
    fail "decode: invalid UTF-8, CRLF and tabs come back exactly"
fi
if [ "$(shard_count mixed.bin)" -lt "$(wc -c <mixed.txt)" ]; then pass "BPE shard is shorter than one token per byte"; else fail "BPE shard is shorter than one token per byte"; fi
check "encode --val-frac 0.1" "$DATA" encode --tokenizer tok --out tr.bin --val-frac 0.1 --val-out va.bin ascii.txt
"$DATA" decode --tokenizer tok tr.bin >tr.txt 2>"$W/err"
"$DATA" decode --tokenizer tok va.bin >va.txt 2>>"$W/err"
if [ "$(wc -c <va.txt)" -eq 1000 ] && cat tr.txt va.txt | cmp -s - ascii.txt; then
    pass "val split: the last 10% of the file, train + val = the file"
else
    fail "val split: the last 10% of the file, train + val = the file"
fi
check "encode two files with a split" "$DATA" encode --tokenizer tok --out tr2.bin --val-frac 0.25 --val-out va2.bin ascii.txt ascii.txt
"$DATA" decode --tokenizer tok va2.bin >va2.txt 2>"$W/err"
if { tail -c 2500 ascii.txt; tail -c 2500 ascii.txt; } | cmp -s - va2.txt; then
    pass "val split takes the tail of each file"
else
    fail "val split takes the tail of each file"
fi
echo previous >keep.bin
check "encode: a missing input" expect_exit 1 "missing.txt: cannot open" "$DATA" encode --quiet --tokenizer tok --out keep.bin ascii.txt missing.txt
if [ "$(cat keep.bin)" = previous ] && ! ls keep.bin.* >/dev/null 2>&1; then
    pass "a failed encode leaves the output as it was"
else
    fail "a failed encode leaves the output as it was"
fi
: >empty.txt
check "encode: empty input" expect_exit 1 "no text to encode" "$DATA" encode --quiet --tokenizer tok --out e.bin empty.txt
check "decode: a text file is not a shard" expect_exit 1 "ascii.txt: not a token shard" "$DATA" decode --tokenizer tok ascii.txt
check "decode: tokens beyond the vocabulary" expect_exit 1 "mixed.bin: holds token [0-9]+, outside the 256-token vocabulary of bytes" "$DATA" decode --tokenizer bytes mixed.bin
check "encode: a missing tokenizer" expect_exit 1 "nothere/vocab.json: cannot open" "$DATA" encode --tokenizer nothere --out x.bin ascii.txt
mkdir bad
head -c 300 tok/vocab.json >bad/vocab.json
cp tok/merges.txt bad/
check "encode: a truncated vocab.json" expect_exit 1 "bad/vocab.json: invalid JSON at line" "$DATA" encode --tokenizer bad --out x.bin ascii.txt
cp tok/vocab.json bad/
{ cat tok/merges.txt; echo "Ġthe Ġqq"; } >bad/merges.txt
check "encode: a merges.txt line with an unknown token" expect_exit 1 "bad/merges.txt: line $((nmerges + 2)): \"Ġqq\" is not a token of bad/vocab.json" "$DATA" encode --tokenizer bad --out x.bin ascii.txt

# every corpus file through the CLI and back
if [ ${#CORPUS[@]} -gt 0 ]; then
    good=1
    for f in "${CORPUS[@]}"; do
        "$DATA" encode --quiet --tokenizer tok --out c.bin "$f" 2>"$W/err" &&
            "$DATA" decode --tokenizer tok c.bin 2>>"$W/err" | cmp -s - "$f" || { good=0; echo "    $f"; }
    done
    if [ $good = 1 ]; then pass "round trip through the CLI: every file of ../shared/data (${#CORPUS[@]})"; else fail "round trip through the CLI: every file of ../shared/data"; fi
else
    skip "round trip through the CLI on ../shared/data: not there"
fi

# ------------------------------------------------------------------ split
for i in 1 2 3; do cat ascii.txt mixed.txt >"src$i.txt"; done
head -n 50 ascii.txt >src4.txt   # whole lines: every chunk ends at a line end
size4=$(wc -c <src4.txt)
check "split --by iid" "$DATA" split --clients 3 --by iid --chunk 1024 --out iid src1.txt src2.txt src3.txt src4.txt
total=$(cat src1.txt src2.txt src3.txt src4.txt | wc -c)
got=$(cat iid/client-*/data.txt | wc -c)
sum=$(awk -F'\t' 'NR > 1 { s += $4 } END { print s }' iid/manifest.tsv)
if [ "$got" -eq "$total" ] && [ "$sum" -eq "$total" ] && [ "$(head -n 1 iid/manifest.tsv)" = "$(printf 'client\tfile\tsource\tbytes\tchunks')" ] &&
    [ -s iid/client-0/data.txt ] && [ -s iid/client-1/data.txt ] && [ -s iid/client-2/data.txt ]; then
    pass "iid: every byte goes to exactly one client; manifest bytes add up"
else
    fail "iid: every byte goes to exactly one client; manifest bytes add up" "$got / $sum of $total bytes"
fi
if [ "$(awk -F'\t' '$1 == "client-1"' iid/manifest.tsv | wc -l)" -ge 3 ]; then pass "iid: a client gets a mix of sources"; else fail "iid: a client gets a mix of sources"; fi
if [ "$(cat iid/client-*/data.txt | sort | md5sum)" = "$(cat src1.txt src2.txt src3.txt src4.txt | sort | md5sum)" ]; then
    pass "iid: chunks end at line ends (the lines are those of the corpus)"
else
    fail "iid: chunks end at line ends (the lines are those of the corpus)"
fi
check "split --by iid again" "$DATA" split --quiet --clients 3 --by iid --chunk 1024 --out iid2 src1.txt src2.txt src3.txt src4.txt
if diff -r iid iid2 >/dev/null; then pass "split: same flags, same bytes"; else fail "split: same flags, same bytes"; fi
check "split --by source" "$DATA" split --clients 2 --by source --out src src4.txt src1.txt src2.txt src3.txt
# sizes: src1-3 equal and largest, src4 smallest: src1 -> 0, src2 -> 1, src3 -> 0, src4 -> 1
if cmp -s src/client-0/src1.txt src1.txt && cmp -s src/client-1/src2.txt src2.txt && cmp -s src/client-0/src3.txt src3.txt &&
    cmp -s src/client-1/src4.txt src4.txt && [ "$(ls src/client-0 | wc -l)" -eq 2 ] && [ "$(ls src/client-1 | wc -l)" -eq 2 ] &&
    [ "$(wc -l <src/manifest.tsv)" -eq 5 ] && grep -q "$(printf 'client-1\tsrc4.txt\tsrc4.txt\t%d\t1' "$size4")" src/manifest.tsv; then
    pass "source: whole files, largest first to the lightest client; manifest names them"
else
    fail "source: whole files, largest first to the lightest client; manifest names them"
fi
mkdir full && echo x >full/keep
check "split into a non-empty directory" expect_exit 1 "full: exists and is not empty" "$DATA" split --clients 2 --by iid --out full src1.txt
if [ "$(ls full)" = keep ]; then pass "  ... which is left alone"; else fail "  ... which is left alone"; fi
check "split: a missing input" expect_exit 1 "missing.txt: cannot open" "$DATA" split --clients 2 --by iid --out none src1.txt missing.txt
if [ ! -e none ] && ! ls -d none.* >/dev/null 2>&1; then pass "a failed split leaves no directory"; else fail "a failed split leaves no directory"; fi
check "split: too few chunks for the clients" expect_exit 1 "fewer than 5 clients" "$DATA" split --clients 5 --by iid --chunk 100000 --out few src4.txt
mkdir emptydir
check "split into an empty directory" "$DATA" split --quiet --clients 2 --by iid --chunk 1000 --out emptydir src4.txt

# ------------------------------------------------------------------ transformers
if ! "$PY" -c 'import transformers' >/dev/null 2>&1; then
    skip "transformers' GPT2Tokenizer: $PY cannot import transformers"
elif [ ${#CORPUS[@]} -eq 0 ]; then
    skip "transformers' GPT2Tokenizer on the corpora: no ../shared/data"
else
    # the first ~200 KB of each corpus, cut back to whole characters
    args=()
    for f in "${CORPUS[@]}"; do
        b=$(basename "$f" .txt)
        "$PY" -c 'import sys; d = open(sys.argv[1], "rb").read(200000); open(sys.argv[2], "wb").write(d.decode("utf-8", "ignore").encode())' "$f" "hf-$b.txt"
        "$DATA" encode --quiet --tokenizer tok --out "hf-$b.bin" "hf-$b.txt" 2>"$W/err"
        args+=("hf-$b.txt" "hf-$b.bin")
    done
    run "$PY" - tok "${args[@]}" <<'EOF'
import array, os, struct, sys
from transformers import GPT2Tokenizer
tok = GPT2Tokenizer(os.path.join(sys.argv[1], "vocab.json"), os.path.join(sys.argv[1], "merges.txt"))
bad = 0
for text_path, shard in zip(sys.argv[2::2], sys.argv[3::2]):
    ids = tok.encode(open(text_path, "rb").read().decode("utf-8"))
    raw = open(shard, "rb").read()
    mine = array.array("H", raw[1024:1024 + 2 * struct.unpack("<3i", raw[:12])[2]]).tolist()
    if ids != mine:
        i = next((k for k in range(min(len(ids), len(mine))) if ids[k] != mine[k]), min(len(ids), len(mine)))
        print("%s: differ at token %d: transformers %s, photon %s" % (text_path, i, ids[i:i + 4], mine[i:i + 4]))
        bad += 1
    else:
        print("%s: %d tokens" % (text_path, len(ids)))
os.makedirs("hfsave", exist_ok=True)
tok.save_vocabulary("hfsave")
sys.exit(1 if bad else 0)
EOF
    sed 's/^/    /' "$W/out"
    if [ $rc -eq 0 ]; then
        pass "GPT2Tokenizer loads photon's files and encodes ${#CORPUS[@]} corpora (~200 KB each) to the same ids"
    else
        fail "GPT2Tokenizer loads photon's files and encodes the corpora to the same ids"
    fi
    if cmp -s hfsave/vocab.json tok/vocab.json && cmp -s hfsave/merges.txt tok/merges.txt; then
        pass "GPT2Tokenizer.save_vocabulary writes photon's files byte for byte"
    else
        fail "GPT2Tokenizer.save_vocabulary writes photon's files byte for byte"
    fi
fi


# ------------------------------------------------------------------ the tokenizer in photon-train / photon-eval
TRAINER=$BIN/photon-train EVAL=$BIN/photon-eval
if [ -x "$TRAINER" ] && [ -x "$EVAL" ]; then
    model=(--layers 1 --heads 2 --width 16 --ctx 32)
    check "photon-train --init --tokenizer takes the tokenizer's vocabulary" \
        "$TRAINER" --init --tokenizer tok "${model[@]}" --data ascii.txt --steps 2 --batch 2 --seq 16 --out bpe.st
    run "$EVAL" --model bpe.st --tokenizer tok --data ascii.txt --seq 16 --json
    if [ $rc -eq 0 ] && grep -q '"bits_per_byte":[0-9]' "$W/out"; then pass "photon-eval --tokenizer reports bits per byte";
    else fail "photon-eval --tokenizer reports bits per byte"; fi
    # exactness: bits per byte = total nats / ln 2 / the bytes the predicted tokens decode to
    "$DATA" encode --quiet --tokenizer tok --out eval.bin ascii.txt 2>/dev/null
    run "$EVAL" --model bpe.st --tokenizer tok --data eval.bin --seq 16 --json
    if ! command -v python3 >/dev/null; then
        skip "bits per byte against the decoded bytes (no python3)"
    elif [ $rc -eq 0 ] && python3 - "$W/out" eval.bin tok <<'PY'
import json, struct, sys
r = json.load(open(sys.argv[1]))
raw = open(sys.argv[2], 'rb').read()
n = struct.unpack('<i', raw[8:12])[0]
toks = struct.unpack('<%dH' % n, raw[1024:1024 + 2 * n])
vocab = json.load(open(sys.argv[3] + '/vocab.json', encoding='utf-8'))
bs = [b for b in range(33, 127)] + [b for b in range(161, 173)] + [b for b in range(174, 256)]
cs = bs[:] + [256 + k for k in range(256 - len(bs))]
for b in range(256):
    if b not in bs: bs.append(b)
byte_of = {chr(c): b for b, c in zip(bs, cs)}
length = {i: len(s) for s, i in vocab.items()}
T = r['seq']; W = (n - 1) // T
nbytes = sum(length[t] for t in toks[1:W * T + 1])
want = r['loss'] * r['tokens'] / 0.6931471805599453 / nbytes
sys.exit(0 if abs(want - r['bits_per_byte']) < 1e-9 * want else 1)
PY
    then pass "bits per byte count the bytes of the predicted tokens exactly (shard + tokenizer)"
    else fail "bits per byte count the bytes of the predicted tokens exactly (shard + tokenizer)"; fi
    "$TRAINER" --init --layers 1 --heads 2 --width 16 --ctx 32 --steps 0 --out bytes.st 2>/dev/null
    check "a tokenizer of another size than the model is refused" expect_exit 1 "the tokenizer has [0-9]+ tokens, bytes.st has a vocabulary of 256" \
        "$EVAL" --model bytes.st --tokenizer tok --data ascii.txt
    check "--vocab that contradicts --tokenizer is a usage error" expect_exit 2 "differs from the" \
        "$TRAINER" --init --tokenizer tok --vocab 300 "${model[@]}" --data ascii.txt --steps 1 --out x.st
    run "$EVAL" --model bpe.st --tokenizer tok --sample 5 --prompt "The " --seed 1
    if [ $rc -eq 0 ] && head -c 4 "$W/out" | grep -q "The "; then pass "photon-eval --sample decodes with the tokenizer";
    else fail "photon-eval --sample decodes with the tokenizer"; fi
else
    skip "photon-train/photon-eval with --tokenizer (not built in $BIN)"
fi

summary
