"""The paper-style pipeline that seedkl replaces, written fresh as the benchmark's baseline.

What the paper's public code does, step for step (this is our own re-implementation of the method,
not its code):
  1. for every (size, step, seed): load the HF checkpoint in transformers/torch (float32, eval),
     score the text in sliding windows (window 2048, overlap 1024: the first window predicts all
     of its positions, each later one only the positions past the previous window's), take
     `log_softmax` over the FULL padded vocab (50,304), and save the [P, V] matrix as fp16 `.npy`
     (P = N-1 predictions; 4,662 x 50,304 x 2 B = 469 MB per checkpoint for the paper's sample);
  2. for every ordered seed pair (i, j), i != j, of a (size, step): reload both matrices, slice to
     the real vocab (`real_vocab`: 50,277 for Pythia's tokenizer; the benchmark passes the count
     seedkl normalises over) and renormalise, and compute per-token KL(p_i || p_j) in torch.
Step 2 upcasts to float32 before the arithmetic, so the difference to seedkl measures the fp16
*storage* only (doing the arithmetic in fp16 too, as the paper's pipeline is described, costs more).

    run_reference(template, sizes, steps, seeds, ids, workdir, ...) -> dict with
        kl_files {(size, step): path of kl [P,S,S] float32 .npy}, bytes_written, matrices_written
"""
from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import numpy as np


def window_plan(n: int, window: int, overlap: int) -> list[tuple[int, int, int]]:
    """[(start, first, last)]: the model reads ids[start:last]; its slot t predicts position
    start+t+1, and positions first..last are kept from this window.

    Positions are 1..n-1 (position p predicts ids[p] from ids[:p]). Windows of T = min(window, n-1)
    ids start every window-overlap ids; each position is kept from the first window that predicts
    it (the most left context) — the rule seedkl_jax/kernels/windows.py documents, so that (a) and
    (b) differ only by the fp16 storage, not by context.
    """
    T, stride = min(window, n - 1), window - overlap
    plan, done, start = [], 0, 0  # positions <= done are predicted already
    while done < n - 1:
        last = min(start + T, n - 1)
        plan.append((start, done + 1, last))
        done, start = last, start + stride
    return plan


def forward_logprobs(model, ids: np.ndarray, window: int, overlap: int, device: str = "cpu") -> np.ndarray:
    """[P, V] fp16 log_softmax over the full vocab for positions 1..N-1 (the matrix the paper saves)."""
    import torch

    n = len(ids)
    out = None
    for start, first, last in window_plan(n, window, overlap):
        x = torch.from_numpy(ids[start:last].astype(np.int64))[None].to(device)
        with torch.no_grad():
            logits = model(input_ids=x).logits[0].float()  # [last-start, V]
            lp = torch.log_softmax(logits[first - 1 - start:], dim=-1)
        if out is None:
            out = np.empty((n - 1, lp.shape[-1]), np.float16)
        out[first - 1: last] = lp.to(torch.float16).cpu().numpy()
        del logits, lp
    return out


def pair_kl(path_i: Path, path_j: Path, real_vocab: int, device: str = "cpu"):
    """Per-token KL(p_i || p_j) [P] float32 from two saved fp16 matrices, renormalised on the real vocab."""
    import torch

    a = torch.from_numpy(np.load(path_i)[:, :real_vocab]).to(device).float()
    b = torch.from_numpy(np.load(path_j)[:, :real_vocab]).to(device).float()
    a = a - torch.logsumexp(a, -1, keepdim=True)
    b = b - torch.logsumexp(b, -1, keepdim=True)
    return (a.exp() * (a - b)).sum(-1).cpu().numpy()


def run_reference(template: str, sizes: list[str], steps: list[int], seeds: list[int], ids: np.ndarray,
                  workdir: Path, *, real_vocab: int, window: int = 2048, overlap: int = 1024,
                  keep_matrices: bool = False, progress: bool = True, device: str | None = None) -> dict:
    """Run both stages for every (size, step); returns kl file paths and the bytes written.

    device: torch device for the forward and the KL ("cuda" when available, else "cpu", by default).

    A group's matrices are deleted once its pairs are done (unless keep_matrices), so the disk
    holds S matrices at a time; `bytes_written` still counts every byte that went to disk.
    """
    import torch
    from tqdm import tqdm
    from transformers import GPTNeoXForCausalLM

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    workdir = Path(workdir)
    (workdir / "logprobs").mkdir(parents=True, exist_ok=True)
    (workdir / "kl").mkdir(parents=True, exist_ok=True)
    torch.set_grad_enabled(False)
    groups = list(itertools.product(sizes, steps))
    written, n_matrices, kl_files, t_fwd, t_kl = 0, 0, {}, 0.0, 0.0
    bar = tqdm(total=len(groups) * (len(seeds) + len(seeds) * (len(seeds) - 1)), disable=not progress,
               desc="reference", unit="job")
    for size, step in groups:
        paths = []
        t0 = time.perf_counter()
        for seed in seeds:
            ckpt = template.format(size=size, step=step, seed=seed)
            model = GPTNeoXForCausalLM.from_pretrained(ckpt, dtype=torch.float32).to(device).eval()
            lp = forward_logprobs(model, ids, window, overlap, device)
            path = workdir / "logprobs" / f"{size}_step{step}_seed{seed}.npy"
            np.save(path, lp)
            written += path.stat().st_size
            n_matrices += 1
            paths.append(path)
            del model, lp
            bar.update()
        t1 = time.perf_counter()
        S = len(seeds)
        kl = np.zeros((len(ids) - 1, S, S), np.float32)
        for i, j in itertools.permutations(range(S), 2):
            kl[:, i, j] = pair_kl(paths[i], paths[j], real_vocab, device)
            bar.update()
        t_fwd, t_kl = t_fwd + t1 - t0, t_kl + time.perf_counter() - t1
        kl_path = workdir / "kl" / f"{size}_step{step}.npy"
        np.save(kl_path, kl)
        written += kl_path.stat().st_size
        kl_files[(size, step)] = kl_path
        if not keep_matrices:
            for p in paths:
                os.remove(p)
    bar.close()
    return {"kl_files": kl_files, "bytes_written": written, "matrices_written": n_matrices,
            "forward_s": t_fwd, "pairs_s": t_kl, "device": device,
            "device_peak_bytes": torch.cuda.max_memory_allocated() if device.startswith("cuda") else None}
