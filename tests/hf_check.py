#!/usr/bin/env python3
"""Evaluation loss of a photon checkpoint computed by Hugging Face transformers.

Usage:
  python3 tests/hf_check.py --model CKPT.safetensors --config CONFIG.json \
      --data FILE [FILE...] --batch B --seq T [--max-tokens N]

Prints the same JSON line as tests/ref_gpt2.py ({"loss": ..., "tokens": ...}),
computed with GPT2LMHeadModel.from_pretrained() in float64.  If torch or
transformers is not importable it prints "SKIP: ..." and exits 0.

Data loading and window selection are shared with ref_gpt2.py (they are plain
file reading); the model itself is entirely transformers'.
"""
import argparse
import json
import os
import re
import sys
import tempfile

try:
    import numpy as np
    import torch
    from transformers import GPT2LMHeadModel
except ImportError as e:  # optional check: never fail because deps are absent
    print(f"SKIP: {e}")
    sys.exit(0)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref_gpt2 import eval_windows, load_tokens  # noqa: E402

# buffers that HF GPT-2 creates itself and never stores in a checkpoint
ALLOWED_MISSING = re.compile(r"(^|\.)attn\.(bias|masked_bias)$")


def load_hf(ckpt, config):
    # transformers refuses a safetensors file whose metadata lacks "format": "pt"
    from safetensors import safe_open
    with safe_open(ckpt, framework="pt") as f:
        fmt = (f.metadata() or {}).get("format")
    assert fmt == "pt", f'__metadata__ must contain "format": "pt" (got {fmt!r})'
    with tempfile.TemporaryDirectory() as d:
        os.symlink(os.path.abspath(ckpt), os.path.join(d, "model.safetensors"))
        os.symlink(os.path.abspath(config), os.path.join(d, "config.json"))
        model, info = GPT2LMHeadModel.from_pretrained(
            d, output_loading_info=True, torch_dtype=torch.float32)
    bad = [k for k in info["missing_keys"] if not ALLOWED_MISSING.search(k)]
    assert not bad, f"weights missing from checkpoint: {bad}"
    assert not info["unexpected_keys"], f"unexpected weights: {info['unexpected_keys']}"
    assert not info["mismatched_keys"], f"shape mismatches: {info['mismatched_keys']}"
    assert not info.get("error_msgs"), f"load errors: {info['error_msgs']}"
    # the output head must be the very same tensor as the token embedding
    assert model.lm_head.weight is model.transformer.wte.weight, "lm_head not tied to wte"
    assert model.lm_head.bias is None
    return model.double().eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--data", required=True, nargs="+")
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--seq", type=int, required=True)
    ap.add_argument("--max-tokens", type=int, default=0)
    a = ap.parse_args()
    B, T = a.batch, a.seq
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))

    model = load_hf(a.model, a.config)
    assert T <= model.config.n_positions, "--seq exceeds n_positions"
    toks = torch.from_numpy(load_tokens(a.data))
    assert int(toks.max()) < model.config.vocab_size, "token id >= vocab_size"
    W = eval_windows(len(toks), T, a.max_tokens)
    assert W >= 1, "not enough tokens for one evaluation window"

    total = torch.zeros((), dtype=torch.float64)
    with torch.no_grad():
        for w0 in range(0, W, B):
            ws = torch.arange(w0, min(W, w0 + B))
            pos = ws[:, None] * T + torch.arange(T)[None, :]
            logits = model(input_ids=toks[pos]).logits          # [b,T,V] float64
            logp = torch.log_softmax(logits, dim=-1)
            total -= logp.gather(-1, toks[pos + 1][..., None]).sum()
    print(json.dumps({"loss": float(total) / (W * T), "tokens": W * T}))


if __name__ == "__main__":
    sys.exit(main())
