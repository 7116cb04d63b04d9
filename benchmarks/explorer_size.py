"""explorer.html at the paper's configuration: its size, write time and load time in headless Chromium.

    python benchmarks/explorer_size.py                  # 4,662 tokens x 5 sizes x 20 steps x 5 seeds, top-5
    python benchmarks/explorer_size.py --tokens 500 --steps 5   # a smoke run

Synthetic groups of the paper's shape (report/explorer.py's inputs): per token a difficulty fixed over
steps and sizes, a mean KL that falls then rises over the steps, per-pair log-normal noise, seed means of
surprisal / entropy / KL to uniform and unigram, top-1 agreement, and top-5 lists whose ids follow a
Zipf law over a 50k vocabulary (the real lists are more repetitive, so a real file compresses better).
Load time: from page.goto to the page's ready mark (every step's token values inflated, the text
painted) in /usr/bin/chromium, then one hover until the token panel (KL grid, top-k) is drawn. Needs
playwright (the `test` extra). Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from seedkl_jax.analysis.aggregate import GroupResult
from seedkl_jax.report.explorer import BUDGET_MB, write_explorer


def synthetic(P: int, sizes: list[str], steps: list[int], S: int, K: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(3000)]
    ids = np.minimum(rng.zipf(1.3, P), len(words)) - 1
    difficulty = rng.normal(0, 1.2, P)
    meta = pl.concat([pl.DataFrame({
        "size": [z] * P, "position": np.arange(1, P + 1), "token_id": ids.astype(np.int64),
        "token_str": [" " + words[i] for i in ids], "doc_id": np.arange(P) // 500,
        "freq_bin": [["<10", "[10,100)", "[100,1e3)", "1e3+"][min(int(np.log10(i + 1)), 3)] for i in ids],
        "upos": [["NOUN", "VERB", "DET", "ADP", "PUNCT"][i % 5] for i in ids],
        "final_surprisal_bin": [["[0,1)", "[1,2)", "[2,4)", "8+"][(i + zi) % 4] for i in ids]})
        for zi, z in enumerate(sizes)])
    groups = []
    for zi, z in enumerate(sizes):
        for ti, t in enumerate(steps):
            level = 0.05 * np.exp(-0.5 * zi) * (1 + 3 * np.sin(np.pi * ti / max(len(steps) - 1, 1)) ** 2)
            kl = (level * np.exp(difficulty)[:, None, None] * rng.lognormal(0, 0.5, (P, S, S))).astype(np.float32)
            kl[:, np.arange(S), np.arange(S)] = 0
            agree = (rng.random((P, S, S)) < 0.7).astype(np.float32)
            agree = np.maximum(agree, agree.transpose(0, 2, 1))
            agree[:, np.arange(S), np.arange(S)] = 1
            prob = -np.sort(-rng.dirichlet(np.full(20, 0.3), (P, S))[..., :K], -1)
            groups.append(GroupResult(z, t, list(range(1, S + 1)), {
                "kl": kl, "top1_agree": agree,
                **{k: (rng.random((P, S)) * 5).astype(np.float32)
                   for k in ("surprisal", "entropy", "kl_uniform", "kl_unigram")},
                "topk_ids": (np.minimum(rng.zipf(1.2, (P, S, K)), 50_000) - 1).astype(np.int32),
                "topk_prob": prob.astype(np.float32)}))
    return groups, meta


def load_time(path: Path) -> tuple[float, float]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = b.new_page(viewport={"width": 1400, "height": 900})
        t0 = time.perf_counter()
        page.goto(path.as_uri())
        page.wait_for_selector("body[data-ready='1']", timeout=120_000)
        ready = time.perf_counter() - t0
        t1 = time.perf_counter()
        page.hover(".t[data-i='100']")
        page.wait_for_selector("#panel[data-i='100'] #v-kl", timeout=60_000)
        hover = time.perf_counter() - t1
        b.close()
    return ready, hover


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=4662)
    ap.add_argument("--sizes", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--topk", type=int, default=5)
    ap.add_argument("--budget_mb", type=float, default=BUDGET_MB)
    a = ap.parse_args()
    sizes = ["14m", "70m", "160m", "410m", "1b"][:a.sizes] + [f"x{i}" for i in range(a.sizes - 5)]
    steps = [0] + [int(round(2 ** (i * 17 / max(a.steps - 2, 1)))) for i in range(a.steps - 1)]
    steps = sorted(set(steps))
    groups, meta = synthetic(a.tokens, sizes, steps, a.seeds, a.topk)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "explorer.html"
        t0 = time.perf_counter()
        notes = write_explorer(path, groups, meta, sizes=sizes, phase_steps=(16, 256, 2000), budget_mb=a.budget_mb)
        write_s = time.perf_counter() - t0
        ready, hover = load_time(path)
        print(json.dumps({"tokens": a.tokens, "sizes": len(sizes), "steps": len(steps), "seeds": a.seeds,
                          "topk": a.topk, "budget_mb": a.budget_mb, "file_mb": round(path.stat().st_size / 1e6, 2),
                          "write_s": round(write_s, 2), "ready_s": round(ready, 2), "hover_s": round(hover, 2),
                          "left_out": notes}))


if __name__ == "__main__":
    main()
