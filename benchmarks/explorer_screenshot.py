"""README's screenshot of explorer.html: a finished `seedkl demo` / `seedkl run` --out, opened in headless
Chromium with one token pinned.

    python benchmarks/explorer_screenshot.py --out ./seedkl-demo --png docs/img/explorer.png

An --out written before explorer.html existed gets one built from its groups/, token_meta.parquet and
study.json (into a temporary folder; --out is only read). Needs playwright (the `test` extra).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import polars as pl


def build(out: Path, dest: Path) -> Path:
    from seedkl_jax.analysis.aggregate import GroupResult
    from seedkl_jax.report.explorer import write_explorer

    suite = json.loads((out / "study.json").read_text())["results"]["suite"]
    groups = []
    for size in suite["sizes"]:
        for step in suite["steps"]:
            arrays = dict(np.load(out / "groups" / size / f"step{step}.npz"))
            seeds = arrays.pop("seeds").tolist()
            groups.append(GroupResult(size, step, seeds, {k: v for k, v in arrays.items() if not k.endswith("_other")}))
    write_explorer(dest, groups, pl.read_parquet(out / "token_meta.parquet"), sizes=suite["sizes"],
                   phase_steps=suite.get("phase_steps"))
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--png", type=Path, required=True)
    ap.add_argument("--token", type=int, default=60, help="index of the token to pin")
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as d:
        page_file = a.out / "explorer.html"
        if not page_file.is_file():
            page_file = build(a.out, Path(d) / "explorer.html")
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = b.new_page(viewport={"width": 1400, "height": 1120})
            page.goto(page_file.resolve().as_uri())
            page.wait_for_selector("body[data-ready='1']")
            page.click(f".t[data-i='{a.token}']")
            page.wait_for_selector(f"#panel[data-i='{a.token}'] #v-kl")
            a.png.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(a.png))
            b.close()
    print(a.png)


if __name__ == "__main__":
    main()
