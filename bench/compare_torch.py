"""Times the training steps photon-bench times, in PyTorch on the CPU.

The same models (transformers' GPT2LMHeadModel with photon's configs: tied
head, tanh GELU, no dropout), the same batch, AdamW with the same settings,
the same number of threads; the median of several steps after two warm-up
steps. Run through bench/compare_torch.sh, which installs what it needs."""
import argparse, json, statistics, time

import torch
import transformers

CONFIGS = {
    "small": dict(vocab_size=50257, n_positions=256, n_embd=256, n_layer=4, n_head=4),
    "gpt2": dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12),
}


def blas():
    """The BLAS library torch calls (Debian's torch takes the system's)."""
    import os
    return os.path.realpath("/usr/lib/x86_64-linux-gnu/libblas.so.3")


def bench(name, batch, seq, steps, threads):
    torch.manual_seed(1)
    torch.set_num_threads(threads)
    config = transformers.GPT2Config(**CONFIGS[name], activation_function="gelu_new", resid_pdrop=0.0,
                                     embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True)
    model = transformers.GPT2LMHeadModel(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    tokens = torch.randint(0, 50257, (batch, seq + 1))
    times = []
    for step in range(steps + 2):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(tokens[:, :-1], labels=tokens[:, 1:].contiguous()).loss  # HF shifts labels itself;
        loss.backward()                                                      # the FLOPs are the same
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step >= 2:
            times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    params = sum(p.numel() for p in model.parameters())
    return {"config": name, "framework": f"torch {torch.__version__}", "blas": blas(),
            "threads": threads, "params": params, "batch": batch, "seq": seq, "ms_per_step": round(median * 1e3, 1),
            "tokens_per_s": round(batch * seq / median)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", choices=sorted(CONFIGS), action="append")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    for name in a.config or ["small", "gpt2"]:
        print(json.dumps(bench(name, a.batch, a.seq, a.steps, a.threads)), flush=True)
