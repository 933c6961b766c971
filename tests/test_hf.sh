#!/usr/bin/env bash
# test_hf.sh BINDIR - a federation that starts from a Hugging Face GPT-2 model
# and hands the result back as one: photon-data import and photon-eval
# --hf-export, against transformers itself where it is installed.
#
# Without transformers: a photon checkpoint is a GPT-2 safetensors file, so
# it imports back to the same model; the refusals of what photon's GPT-2
# cannot represent, each naming its key; bad sources. With transformers
# (tests/hf_models.py): models saved in F32 with and without the
# "transformer." prefix, F16, BF16 and sharded import with photon-eval's loss
# equal to transformers' (1e-5 relative; F16/BF16 against the F32 original
# 1e-3); a separate lm_head equal to wte imports, one that differs is
# refused; import, one federated round, export, and from_pretrained gives the
# loss photon-eval gives, and AutoTokenizer encodes as photon does.
# Prints "ok - ..." / "FAIL - ..." / "skip - ..." and "N passed, N failed".
set -u
BIN=$(cd "${1:-bin}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/tests/lib.sh"
scratch hf
cd "$W" || exit 2
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3 || echo python3)
json_get() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }
same_loss() { # A B TOL: |a - b| <= TOL |b|
    awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; if (d <= t * (b < 0 ? -b : b)) exit 0;
        printf "%s and %s differ by %g relative (allowed %g)\n", a, b, d / (b < 0 ? -b : b), t > "/dev/stderr"; exit 1 }'
}
eval_loss() { # CKPT DATA -> the loss photon-eval prints
    "$BIN/photon-eval" --model "$1" --data "$2" --seq 32 --json 2>/dev/null |
        "$PY" -c 'import json,sys; print(repr(json.load(sys.stdin)["loss"]))'
}
export BIN PY
export -f json_get same_loss eval_loss

# --- without transformers: photon's own checkpoint is a GPT-2 safetensors file ---
"$BIN/synthlang" --seed 2 --words 40 --bytes 40000 --out text.txt 2>/dev/null
"$BIN/photon-train" --init --layers 2 --heads 2 --width 32 --ctx 64 --steps 0 --out p.st 2>/dev/null
mkdir -p own && cp p.st own/model.safetensors && "$BIN/photon-eval" --model p.st --hf-config own/config.json 2>/dev/null
check "import: a photon checkpoint with its config.json (GPT-2 names, no prefix)" \
    "$BIN/photon-data" import own --out own.st --quiet
check "import: the same weights come back" bash -c "[ \"\$(eval_loss p.st text.txt)\" = \"\$(eval_loss own.st text.txt)\" ]"
check "import: the checkpoint records its source and its hashes" bash -c \
    "grep -aq 'photon.source.0.sha256' own.st && grep -aq \"\$(sha256sum own/model.safetensors | cut -c1-64)\" own.st"
check "import: the result is an ordinary checkpoint that trains" \
    "$BIN/photon-train" --model own.st --data text.txt --steps 2 --batch 2 --seq 32 --out own2.st
refuse_config() { # DESC KEY VALUE PATTERN: config.json with KEY = VALUE is refused, naming it; nothing written
    local dir=bad-$2
    rm -rf "$dir" && mkdir "$dir" && cp own/model.safetensors "$dir/" &&
        "$PY" -c 'import json,sys; c=json.load(open(sys.argv[1])); c[sys.argv[2]]=json.loads(sys.argv[3]); json.dump(c, open(sys.argv[4],"w"))' \
            own/config.json "$2" "$3" "$dir/config.json"
    check "import refuses $1" expect_exit 1 "$dir/config.json: $4" "$BIN/photon-data" import "$dir" --out "$dir.st"
    [ ! -e "$dir.st" ] || fail "import of $dir left $dir.st"
}
if "$PY" -c 'import json' 2>/dev/null; then
    refuse_config "another activation" activation_function '"relu"' "activation_function 'relu'"
    refuse_config "another LayerNorm epsilon" layer_norm_epsilon 1e-6 "layer_norm_epsilon 1e-06"
    refuse_config "attention scaled by the layer index" scale_attn_by_inverse_layer_idx true "scale_attn_by_inverse_layer_idx is true"
    refuse_config "unscaled attention" scale_attn_weights false "scale_attn_weights is false"
    refuse_config "an MLP of another width" n_inner 64 "n_inner 64"
    refuse_config "cross-attention" add_cross_attention true "add_cross_attention is true"
    refuse_config "another architecture" model_type '"llama"' "model_type 'llama'"
    refuse_config "a separate lm_head that is not there" tie_word_embeddings false "tie_word_embeddings is false but there is no lm_head"
    refuse_config "a width the heads do not divide" n_embd 51 "width 51 is not a multiple of the head count 2"
    rm -rf bad-shape && cp -r bad-n_embd bad-shape && sed -i 's/"n_embd": 51/"n_embd": 48/' bad-shape/config.json
    check "import refuses weights of another shape than config.json's" expect_exit 1 \
        "bad-shape/model.safetensors: tensor 'wte.weight' has a shape other than config.json's \\[256,48\\]" \
        "$BIN/photon-data" import bad-shape --out bad-shape.st
else
    skip "import's config refusals: no python3 to edit config.json"
fi
mkdir -p nothing && cp own/config.json nothing/ && touch nothing/pytorch_model.bin
check "import refuses a folder without safetensors" expect_exit 1 "holds neither model.safetensors" \
    "$BIN/photon-data" import nothing --out nothing.st
mkdir -p cut && cp own/config.json cut/ && head -c 5000 own/model.safetensors >cut/model.safetensors
check "import refuses a truncated file" expect_exit 1 "cut/model.safetensors: truncated" \
    "$BIN/photon-data" import cut --out cut.st
check "import: usage errors" expect_exit 2 "import needs --out" "$BIN/photon-data" import own
check "import: a missing source" expect_exit 1 "no-such: cannot open" "$BIN/photon-data" import no-such --out x.st

# --- with transformers ---
if ! out=$("$PY" "$ROOT/tests/hf_models.py" make hf 2>/dev/null) || [ "${out#SKIP}" != "$out" ]; then
    skip "transformers' models: ${out:-tests/hf_models.py failed}"
    summary
    exit $?
fi
for m in f32 noprefix f16 bf16 sharded untied-same; do
    check "import: $m imports" "$BIN/photon-data" import hf/$m --out $m.st --quiet
done
for m in f32 noprefix f16 bf16 sharded untied-same; do
    check "import: $m: photon-eval's loss equals transformers' (1e-5 relative)" \
        same_loss "$(eval_loss $m.st hf/batch.bin)" "$(json_get hf/ref.json $m)" 1e-5
done
for m in f16 bf16; do
    check "import: $m widened: within 1e-3 of the F32 original" \
        same_loss "$(eval_loss $m.st hf/batch.bin)" "$(json_get hf/ref.json f32)" 1e-3
done
check "import: the sharded model was at least two files" bash -c "[ \"\$(json_get hf/ref.json shards)\" -ge 2 ] &&
    \"$BIN/photon-data\" import hf/sharded --out s2.st --json --quiet | grep -q '\"files\":[2-9]'"
check "import: an index file names the shards" "$BIN/photon-data" import hf/sharded/model.safetensors.index.json --out s3.st --quiet
check "import refuses a separate lm_head that differs from wte" expect_exit 1 \
    "tie_word_embeddings is false and lm_head.weight differs from wte" "$BIN/photon-data" import hf/untied --out untied.st

# import, one federated round (two clients), export, and transformers again
"$BIN/photon-data" train-tokenizer --vocab 300 --out tok text.txt --quiet
head -c 20000 text.txt >a.txt && tail -c 20000 text.txt >b.txt
for c in a b; do
    "$BIN/photon-train" --model f32.st --tokenizer tok --data $c.txt --state s$c.st --steps 3 --batch 2 --seq 32 \
        --delta-out d$c.st --client-id $c 2>/dev/null
done
check "a round from the imported model merges" "$BIN/photon-merge" --base f32.st --out g1.st da.st db.st
cp -r hf/f32 hf/with-tok && cp tok/vocab.json tok/merges.txt hf/with-tok/
check "import: a folder's vocab.json and merges.txt are checked and named as the tokenizer" bash -c \
    "'$BIN/photon-data' import hf/with-tok --out wt.st --json 2>err | grep -q '\"tokenizer\":\"hf/with-tok\"' &&
     grep -q 'give it as --tokenizer hf/with-tok' err"
"$BIN/photon-data" train-tokenizer --vocab 280 --out tok280 text.txt --quiet
cp -r hf/f32 hf/bad-tok && cp tok280/vocab.json tok280/merges.txt hf/bad-tok/
check "import: a tokenizer of another vocabulary size is refused, and nothing written" bash -c \
    "! '$BIN/photon-data' import hf/bad-tok --out bt.st 2>err && grep -q 'the tokenizer has 280 tokens, config.json a vocabulary of 300' err &&
     [ ! -e bt.st ]"
check "export: a folder with the tokenizer" "$BIN/photon-eval" --model g1.st --tokenizer tok --hf-export exported
check "export: config, weights, card and tokenizer files" bash -c \
    "cd exported && ls config.json model.safetensors README.md vocab.json merges.txt tokenizer_config.json >/dev/null &&
     grep -q 'client a' README.md && grep -q 'huggingface' README.md && cmp -s model.safetensors ../g1.st"
check "export: from_pretrained's loss equals photon-eval's (1e-5 relative)" bash -c \
    "same_loss \"\$(eval_loss g1.st hf/batch.bin)\" \"\$('$PY' '$ROOT/tests/hf_models.py' loss exported hf/batch.bin 32 2>/dev/null |
      '$PY' -c 'import json,sys; print(json.load(sys.stdin)[\"loss\"])')\" 1e-5"
head -c 300 b.txt >sample.txt
"$BIN/photon-data" encode --tokenizer tok --out sample.bin sample.txt --quiet
check "export: AutoTokenizer loads the folder and encodes as photon does" bash -c \
    "'$PY' '$ROOT/tests/hf_models.py' tokenize exported sample.txt 2>/dev/null >tok.json &&
     '$PY' -c 'import json,sys,struct; ids=json.load(open(\"tok.json\"))[\"ids\"]; raw=open(\"sample.bin\",\"rb\").read()[1024:];
photon=list(struct.unpack(\"<%dH\" % (len(raw)//2), raw)); assert ids==photon, (ids[:10], photon[:10])'"
check "export refuses a folder that is not empty" expect_exit 1 "exported: exists and is not empty" \
    "$BIN/photon-eval" --model g1.st --hf-export exported
summary
