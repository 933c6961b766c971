#!/usr/bin/env python3
"""Hugging Face GPT-2 models for tests/test_hf.sh, made and checked by transformers.

  hf_models.py make DIR      random GPT2LMHeadModels saved as transformers saves
                             them: DIR/f32 (names with "transformer."), DIR/noprefix
                             (GPT2Model: no prefix), DIR/f16, DIR/bf16, DIR/sharded
                             (at least two files and an index), DIR/untied (a
                             separate lm_head that differs from wte), DIR/untied-same
                             (a separate lm_head equal to wte); DIR/batch.bin, a
                             token shard; DIR/ref.json, transformers' loss of each
                             on the shard's windows of --seq tokens.
  hf_models.py loss MODEL_DIR SHARD T
                             transformers' mean loss on SHARD's windows, as JSON.
  hf_models.py tokenize DIR TEXT
                             AutoTokenizer.from_pretrained(DIR).encode(TEXT) as JSON.

If torch or transformers is missing it prints "SKIP: ..." and exits 0.
"""
import copy
import json
import os
import sys

try:
    import numpy as np
    import torch
    import transformers
    from safetensors.torch import load_file, save_file
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(0)

T = 32
CONFIG = dict(vocab_size=300, n_positions=64, n_embd=64, n_layer=2, n_head=4)


def windows(shard, t):
    raw = open(shard, "rb").read()
    toks = np.frombuffer(raw[1024:], dtype=np.uint16).astype(np.int64)
    return [toks[w * t : w * t + t + 1] for w in range((len(toks) - 1) // t)]


def loss(model_dir, shard, t):
    """Mean next-token cross-entropy over consecutive windows, as photon-eval counts it."""
    m = transformers.GPT2LMHeadModel.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for w in windows(shard, t):
            ids = torch.tensor(w)[None]
            logp = torch.log_softmax(m(ids[:, :-1]).logits.double(), -1)[0]
            total += -logp[torch.arange(t), ids[0, 1:]].sum().item()
            count += t
    return total / count


def make(root):
    torch.manual_seed(0)
    m = transformers.GPT2LMHeadModel(transformers.GPT2Config(**CONFIG)).eval()
    m.save_pretrained(f"{root}/f32", safe_serialization=True)
    m.transformer.save_pretrained(f"{root}/noprefix", safe_serialization=True)
    m.save_pretrained(f"{root}/sharded", safe_serialization=True, max_shard_size="100KB")
    for name, dtype in (("untied", None), ("untied-same", None)):
        d = f"{root}/{name}"
        m.save_pretrained(d, safe_serialization=True)
        tensors = load_file(f"{d}/model.safetensors")
        wte = tensors["transformer.wte.weight"]
        tensors["lm_head.weight"] = wte.clone() if name == "untied-same" else wte + 0.01
        save_file(tensors, f"{d}/model.safetensors", metadata={"format": "pt"})
        cfg = json.load(open(f"{d}/config.json"))
        cfg["tie_word_embeddings"] = False
        json.dump(cfg, open(f"{d}/config.json", "w"), indent=2)
    copy.deepcopy(m).to(torch.bfloat16).save_pretrained(f"{root}/bf16", safe_serialization=True)
    copy.deepcopy(m).to(torch.float16).save_pretrained(f"{root}/f16", safe_serialization=True)
    rng = np.random.default_rng(1)
    toks = rng.integers(0, CONFIG["vocab_size"], size=4 * T + 1).astype(np.uint16)
    header = np.zeros(256, dtype=np.int32)
    header[:3] = (20240520, 1, len(toks))
    open(f"{root}/batch.bin", "wb").write(header.tobytes() + toks.tobytes())
    ref = {name: loss(f"{root}/{name}", f"{root}/batch.bin", T)
           for name in ("f32", "noprefix", "f16", "bf16", "sharded", "untied-same")}
    ref["shards"] = len([f for f in os.listdir(f"{root}/sharded") if f.endswith(".safetensors")])
    json.dump(ref, open(f"{root}/ref.json", "w"))
    print(json.dumps(ref))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "make":
        make(sys.argv[2])
    elif cmd == "loss":
        print(json.dumps({"loss": loss(sys.argv[2], sys.argv[3], int(sys.argv[4]))}))
    elif cmd == "tokenize":
        tok = transformers.AutoTokenizer.from_pretrained(sys.argv[2])
        print(json.dumps({"class": type(tok).__name__, "ids": tok.encode(open(sys.argv[3]).read())}))
