#!/usr/bin/env python3
"""Independent numpy-only GPT-2 reference: evaluation loss of a photon checkpoint.

Usage:
  python3 tests/ref_gpt2.py --model CKPT.safetensors --data FILE [FILE...] \
      --batch B --seq T [--max-tokens N]

Prints one JSON line: {"loss": <mean cross-entropy, nats>, "tokens": <count>}.

Everything is computed in float64.  The model is GPT-2 exactly as Hugging Face
transformers computes it (pre-LN blocks, gelu tanh approximation, LayerNorm
eps 1e-5, output head tied to wte).  Weights use the HF GPT-2 names and the
Conv1D layout y = x @ W + b with W stored [in, out].
"""
import argparse
import json
import struct
import sys

import numpy as np

SHARD_MAGIC = 20240520
SHARD_VERSION = 1

# --------------------------------------------------------------------------
# safetensors: our own minimal parser
# --------------------------------------------------------------------------

_DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "I32": "<i4", "I64": "<i8",
           "U8": "u1", "I8": "i1", "U16": "<u2", "I16": "<i2"}


def read_safetensors(path):
    """Return (tensors: dict name -> np.ndarray, metadata: dict str -> str)."""
    with open(path, "rb") as f:
        blob = f.read()
    assert len(blob) >= 8, "file too short for a safetensors header"
    (hlen,) = struct.unpack("<Q", blob[:8])
    assert 8 + hlen <= len(blob), "header length runs past end of file"
    header = json.loads(blob[8:8 + hlen].decode("utf-8"))
    data = memoryview(blob)[8 + hlen:]          # offsets are relative to here
    meta = header.pop("__metadata__", None) or {}
    tensors, spans = {}, []
    for name, info in header.items():
        dt = info["dtype"]
        assert dt in _DTYPES, f"{name}: unsupported dtype {dt}"
        shape = [int(s) for s in info["shape"]]
        begin, end = (int(o) for o in info["data_offsets"])
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(_DTYPES[dt]).itemsize
        assert 0 <= begin <= end <= len(data), f"{name}: offsets out of range"
        assert end - begin == nbytes, f"{name}: {end - begin} bytes, expected {nbytes}"
        tensors[name] = np.frombuffer(data[begin:end], dtype=_DTYPES[dt]).reshape(shape)
        spans.append((begin, end))
    # the safetensors spec requires the byte ranges to tile the data section
    spans.sort()
    pos = 0
    for begin, end in spans:
        assert begin == pos, "tensor byte ranges overlap or leave holes"
        pos = end
    assert pos == len(data), "trailing bytes after the last tensor"
    return tensors, meta


def load_checkpoint(path):
    tensors, meta = read_safetensors(path)
    # Cross-check with the official reader when it is installed.
    try:
        from safetensors.numpy import load_file
    except ImportError:
        load_file = None
    if load_file is not None:
        other = load_file(path)
        assert set(other) == set(tensors), "safetensors package sees other tensor names"
        for k, v in other.items():
            assert v.dtype == tensors[k].dtype and v.shape == tensors[k].shape, k
            assert np.array_equal(v, tensors[k]), f"{k}: safetensors package disagrees"
    return tensors, meta


# --------------------------------------------------------------------------
# data: llm.c uint16 token shards or raw bytes
# --------------------------------------------------------------------------

def read_tokens(path):
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) >= 4 and struct.unpack("<i", blob[:4])[0] == SHARD_MAGIC:
        assert len(blob) >= 1024, f"{path}: truncated shard header"
        hdr = np.frombuffer(blob[:1024], dtype="<i4")
        assert hdr[1] == SHARD_VERSION, f"{path}: shard version {hdr[1]}"
        n = int(hdr[2])
        assert len(blob) == 1024 + 2 * n, f"{path}: size {len(blob)} != 1024 + 2*{n}"
        return np.frombuffer(blob[1024:], dtype="<u2").astype(np.int64)
    return np.frombuffer(blob, dtype=np.uint8).astype(np.int64)  # byte-level text


def load_tokens(paths):
    return np.concatenate([read_tokens(p) for p in paths])


def eval_windows(n_tokens, T, max_tokens):
    """Number of evaluation windows W (each predicts T targets)."""
    W = (n_tokens - 1) // T
    if max_tokens and max_tokens > 0:
        W = min(W, max(1, max_tokens // T))
    return W


# --------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------

def layernorm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)     # biased variance
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def attention(x, p, i, n_head):
    B, T, C = x.shape
    hs = C // n_head
    qkv = x @ p[f"h.{i}.attn.c_attn.weight"] + p[f"h.{i}.attn.c_attn.bias"]
    q, k, v = np.split(qkv, 3, axis=-1)                # each [B,T,C]
    # heads are contiguous slices of width hs: [B,T,C] -> [B,H,T,hs]
    q, k, v = (a.reshape(B, T, n_head, hs).transpose(0, 2, 1, 3) for a in (q, k, v))
    att = (q @ k.transpose(0, 1, 3, 2)) / np.sqrt(hs)  # [B,H,T,T]
    causal = np.tril(np.ones((T, T), dtype=bool))
    att = np.where(causal, att, -np.inf)
    att = np.exp(att - att.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    y = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
    return y @ p[f"h.{i}.attn.c_proj.weight"] + p[f"h.{i}.attn.c_proj.bias"]


def mlp(x, p, i):
    h = gelu_tanh(x @ p[f"h.{i}.mlp.c_fc.weight"] + p[f"h.{i}.mlp.c_fc.bias"])
    return h @ p[f"h.{i}.mlp.c_proj.weight"] + p[f"h.{i}.mlp.c_proj.bias"]


def forward(p, cfg, idx):
    """idx [B,T] int -> logits [B,T,V] (float64)."""
    B, T = idx.shape
    x = p["wte.weight"][idx] + p["wpe.weight"][np.arange(T)]
    for i in range(cfg["n_layer"]):
        x = x + attention(layernorm(x, p[f"h.{i}.ln_1.weight"], p[f"h.{i}.ln_1.bias"]),
                          p, i, cfg["n_head"])
        x = x + mlp(layernorm(x, p[f"h.{i}.ln_2.weight"], p[f"h.{i}.ln_2.bias"]), p, i)
    x = layernorm(x, p["ln_f.weight"], p["ln_f.bias"])
    return x @ p["wte.weight"].T                      # tied output head


def expected_shapes(cfg):
    V, T, L, C = cfg["vocab_size"], cfg["n_ctx"], cfg["n_layer"], cfg["n_embd"]
    s = {"wte.weight": [V, C], "wpe.weight": [T, C],
         "ln_f.weight": [C], "ln_f.bias": [C]}
    for i in range(L):
        s.update({f"h.{i}.ln_1.weight": [C], f"h.{i}.ln_1.bias": [C],
                  f"h.{i}.attn.c_attn.weight": [C, 3 * C], f"h.{i}.attn.c_attn.bias": [3 * C],
                  f"h.{i}.attn.c_proj.weight": [C, C], f"h.{i}.attn.c_proj.bias": [C],
                  f"h.{i}.ln_2.weight": [C], f"h.{i}.ln_2.bias": [C],
                  f"h.{i}.mlp.c_fc.weight": [C, 4 * C], f"h.{i}.mlp.c_fc.bias": [4 * C],
                  f"h.{i}.mlp.c_proj.weight": [4 * C, C], f"h.{i}.mlp.c_proj.bias": [C]})
    return s


def load_model(path):
    tensors, meta = load_checkpoint(path)
    cfg = {k: int(meta[f"photon.{k}"])
           for k in ("vocab_size", "n_ctx", "n_layer", "n_head", "n_embd")}
    assert cfg["n_embd"] % cfg["n_head"] == 0, "n_embd not divisible by n_head"
    want = expected_shapes(cfg)
    assert set(tensors) == set(want), \
        f"tensor names differ: missing {sorted(set(want) - set(tensors))}, " \
        f"extra {sorted(set(tensors) - set(want))}"
    for k, shape in want.items():
        assert list(tensors[k].shape) == shape, f"{k}: shape {tensors[k].shape} != {shape}"
        assert tensors[k].dtype == np.float32, f"{k}: dtype {tensors[k].dtype}, want F32"
    params = {k: v.astype(np.float64) for k, v in tensors.items()}
    return params, cfg


def mean_loss(params, cfg, toks, B, T, max_tokens):
    assert T <= cfg["n_ctx"], f"--seq {T} exceeds n_ctx {cfg['n_ctx']}"
    assert toks.size == 0 or toks.max() < cfg["vocab_size"], "token id >= vocab_size"
    W = eval_windows(len(toks), T, max_tokens)
    assert W >= 1, "not enough tokens for one evaluation window"
    total = 0.0
    for w0 in range(0, W, B):
        ws = np.arange(w0, min(W, w0 + B))
        pos = ws[:, None] * T + np.arange(T)[None, :]   # [b,T] token positions
        x, y = toks[pos], toks[pos + 1]
        logits = forward(params, cfg, x)
        m = logits.max(-1, keepdims=True)
        lse = m[..., 0] + np.log(np.exp(logits - m).sum(-1))
        nll = lse - np.take_along_axis(logits, y[..., None], -1)[..., 0]
        total += nll.sum()
    return total / (W * T), W * T


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, nargs="+")
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--seq", type=int, required=True)
    ap.add_argument("--max-tokens", type=int, default=0)
    a = ap.parse_args()
    assert a.batch >= 1 and a.seq >= 1
    params, cfg = load_model(a.model)
    toks = load_tokens(a.data)
    loss, n = mean_loss(params, cfg, toks, a.batch, a.seq, a.max_tokens)
    print(json.dumps({"loss": float(loss), "tokens": int(n)}))


if __name__ == "__main__":
    sys.exit(main())
