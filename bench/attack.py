#!/usr/bin/env python3
"""attack.py - turn an honest photon delta into a malicious one (bench/robust.sh).

    bench/attack.py scale FACTOR IN OUT [--client ID]   every F32 tensor x FACTOR
    bench/attack.py noise SEED IN OUT [--client ID]     Gaussian noise with IN's L2 norm

(signflip is "scale -1".) The output keeps the input's header as it is -- tensor
order, shapes, offsets and every __metadata__ key in its place -- except that
photon.data_sha256 is recomputed over the new data section and, with --client,
photon.client is set (a colluder's copy). The file is written by hand (8-byte
little-endian header length, JSON header, raw bytes) because photon-merge streams
deltas in the model's tensor order and refuses others; the safetensors writer may
sort tensors by name. Needs numpy only.
"""
import argparse
import hashlib
import json
import os
import struct

import numpy as np


def read(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])  # dicts keep the file's key order
    return header, bytearray(blob[8 + n:])


def write(path, header, data):
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % 8)  # pad like photon does: data starts 8-aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + bytes(data))
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["scale", "noise"])
    ap.add_argument("param", type=float, help="scale: the factor; noise: the seed")
    ap.add_argument("inp")
    ap.add_argument("out")
    ap.add_argument("--client", help="set photon.client to this id")
    a = ap.parse_args()

    header, data = read(a.inp)
    meta = header["__metadata__"]
    tensors = [(k, v) for k, v in header.items() if k != "__metadata__"]
    for _, v in tensors:
        if v["dtype"] != "F32":
            raise SystemExit(f"attack.py: {a.inp}: dtype {v['dtype']} (F32 only)")
    flat = np.frombuffer(bytes(data), dtype="<f4").astype(np.float64)
    if a.kind == "scale":
        new = flat * a.param
    else:  # noise of the same L2 norm, one fixed seed
        z = np.random.default_rng(int(a.param)).standard_normal(flat.size)
        new = z * (np.linalg.norm(flat) / np.linalg.norm(z))
    data = new.astype("<f4").tobytes()
    meta["photon.data_sha256"] = hashlib.sha256(data).hexdigest()
    if a.client:
        meta["photon.client"] = a.client
    write(a.out, header, data)


if __name__ == "__main__":
    main()
