"""report/explorer.py: explorer.html written by write_outputs, checked as data and in headless Chromium
(opened from disk with the network blocked; its panel's numbers against tokens.parquet,
pair_positions.parquet and the groups' top-k arrays)."""
import base64
import json
import os
import re
import shutil
import zlib

import numpy as np
import polars as pl
import pytest

from seedkl_jax.analysis.aggregate import GroupResult
from seedkl_jax.report.explorer import TOPK_HINT, spread_order, write_explorer
from seedkl_jax.report.outputs import write_outputs

SIZES, STEPS, S, P, K = ("14m", "70m"), (0, 16, 256, 1024), 3, 90, 4
WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "."]
UPOS = {"the": "DET", "a": "DET", "cat": "NOUN", "mat": "NOUN", "dog": "NOUN", "sat": "VERB", "ran": "VERB",
        "on": "ADP", "and": "CCONJ", ".": "PUNCT"}


def _meta(rng) -> pl.DataFrame:
    ids = rng.integers(0, len(WORDS), P)
    frames = []
    for z in SIZES:
        frames.append(pl.DataFrame({
            "size": [z] * P, "position": np.arange(1, P + 1), "token_id": ids.astype(np.int64),
            "token_str": [WORDS[i] for i in ids], "doc_id": np.repeat(np.arange(3), P // 3),
            "freq_bin": [["<10", "[10,100)", "100+"][i % 3] for i in ids],
            "upos": [UPOS[WORDS[i]] for i in ids], "word_position": ["begin"] * P,
            "final_surprisal_bin": [["[0,1)", "8+"][(i + len(z)) % 2] for i in ids]}))
    return pl.concat(frames)


def _groups(rng, topk=True) -> list[GroupResult]:
    out = []
    for zi, z in enumerate(SIZES):
        for t in STEPS:
            kl = rng.lognormal(-3 - zi, 1.0, (P, S, S)).astype(np.float32)
            kl[:, np.arange(S), np.arange(S)] = 0
            agree = (rng.random((P, S, S)) < 0.6).astype(np.float32)
            agree = np.maximum(agree, agree.transpose(0, 2, 1))
            agree[:, np.arange(S), np.arange(S)] = 1
            a = {"kl": kl, "surprisal": (rng.random((P, S)) * 5).astype(np.float32),
                 "entropy": (rng.random((P, S)) * 4).astype(np.float32),
                 "kl_uniform": rng.random((P, S)).astype(np.float32), "top1_agree": agree,
                 "js": ((kl + kl.transpose(0, 2, 1)) / 4).astype(np.float32)}
            if topk:
                prob = np.sort(rng.dirichlet(np.ones(12), (P, S))[..., :K], -1)[..., ::-1]
                a["topk_ids"] = np.stack([[rng.permutation(40)[:K] for _ in range(S)] for _ in range(P)]).astype(np.int32)
                a["topk_prob"] = np.ascontiguousarray(prob, dtype=np.float32)
            out.append(GroupResult(z, t, [11, 22, 33], a))
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    rng = np.random.default_rng(0)
    out = tmp_path_factory.mktemp("explorer")
    groups, meta = _groups(rng), _meta(rng)
    vocab = {i: f"w{i}" for i in range(40)}
    write_outputs(out, groups, meta, n_boot=20, phase_steps=(16, 256, 1000), pair_positions=True, vocab=vocab)
    return out, groups, meta


def _head(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="head">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


def _chunk(html: str, key: str, dtype: str) -> np.ndarray:
    m = re.search(rf'<script type="application/octet-stream" id="{key}">(.*?)</script>', html, re.S)
    return np.frombuffer(zlib.decompress(base64.b64decode(m.group(1).split(".")[0])), dtype)


def test_file_is_self_contained_deterministic_and_linked(study, tmp_path):
    out, groups, meta = study
    html = (out / "explorer.html").read_text(encoding="utf-8")
    assert not re.search(r"https?://|\bsrc=|<(link|img|iframe)\b", html), "the page must load nothing"
    assert "[explorer.html](explorer.html)" in (out / "report.md").read_text()
    write_explorer(tmp_path / "again.html", list(reversed(groups)), meta.sample(fraction=1.0, seed=1, shuffle=True),
                   sizes=SIZES, phase_steps=(16, 256, 1000), vocab={i: f"w{i}" for i in range(40)})
    assert (tmp_path / "again.html").read_bytes() == (out / "explorer.html").read_bytes()
    h = _head(html)
    assert h["sizes"] == list(SIZES) and h["steps"] == list(STEPS) and h["notes"] == []
    assert [q["key"] for q in h["quantities"]] == ["kl", "top1_agree", "js", "surprisal", "entropy", "kl_uniform"]
    core = _chunk(html, "c2", "<f2").reshape(len(h["quantities"]), len(SIZES), P)   # step 256
    g = next(g for g in groups if g.size == "70m" and g.step == 256)
    off = ~np.eye(S, dtype=bool)
    np.testing.assert_allclose(core[0, 1], g.arrays["kl"][:, off].mean(1), rtol=1e-3)
    np.testing.assert_allclose(core[1, 1], g.arrays["top1_agree"][:, off].mean(1), rtol=1e-3)
    short = write_explorer(tmp_path / "other.html", groups + [GroupResult("1b", 0, [1, 2, 3], {"kl": np.zeros((5, S, S))})],
                           meta, sizes=SIZES + ("1b",))
    assert short == ["explorer.html: sizes 1b were scored on other positions than 14m and are not shown"]
    assert h["topk"]["strings"][:3] == ["w0", "w1", "w2"]


def test_budget_leaves_out_named_steps(study, tmp_path):
    _, groups, meta = study
    full = write_explorer(tmp_path / "full.html", groups, meta, sizes=SIZES)
    assert full == []
    budget = ((tmp_path / "full.html").stat().st_size - 1000) / 1e6     # a little less than all of it
    notes = write_explorer(tmp_path / "small.html", groups, meta, sizes=SIZES, budget_mb=budget)
    h = _head((tmp_path / "small.html").read_text(encoding="utf-8"))
    assert notes == h["notes"] and notes, "a reduction must be stated"
    assert any("top-k" in n for n in notes)
    kept_k = {int(k.split("_")[1]) for k in h["chunks"] if k.startswith("k")}
    for n in notes:
        if "top-k" in n:
            named = {int(s) for s in re.search(r"steps ([\d, ]+)", n).group(1).split(", ")}
            assert named == {STEPS[i] for i in range(len(STEPS))} - {STEPS[i] for i in kept_k}
    assert (tmp_path / "small.html").stat().st_size <= budget * 1e6
    assert spread_order(5) == [0, 4, 2, 1, 3] and sorted(spread_order(20)) == list(range(20))


# ---------------------------------------------------------------- in the browser
@pytest.fixture(scope="module")
def browser():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if exe is None or sync_playwright is None:
        why = "no chromium on PATH" if exe is None else "playwright is not installed (pip install -e '.[test]')"
        if os.environ.get("SEEDKL_REQUIRE_BROWSER") or os.environ.get("CI"):
            pytest.fail(f"browser test required here: {why}")
        pytest.skip(why)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        yield b
        b.close()


def _open(browser, path):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    problems, requests = [], []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    def route(r):
        requests.append(r.request.url)
        r.continue_() if r.request.url == path.as_uri() else r.abort()
    page.route("**/*", route)
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    return page, problems, requests


def _num(page, sel) -> float:
    return float(page.text_content(sel).replace("\u2212", "-"))


def test_page_panel_matches_tables(study, browser):
    out, groups, meta = study
    page, problems, requests = _open(browser, out / "explorer.html")
    tokens = pl.read_parquet(out / "tokens.parquet")
    pairs = pl.read_parquet(out / "pair_positions.parquet")
    assert page.text_content("#stepv") == str(STEPS[-1])           # opens at the last step, largest size
    page.focus("#step")
    page.keyboard.press("ArrowLeft")
    assert page.text_content("#stepv") == str(STEPS[-2])
    page.locator("body").click(position={"x": 5, "y": 300})      # arrows work off the slider too
    page.keyboard.press("ArrowLeft")
    assert page.text_content("#stepv") == str(STEPS[-3])
    page.select_option("#size", label="14m")
    i = 37
    page.hover(f".t[data-i='{i}']")
    page.wait_for_selector(f"#panel[data-i='{i}'] #v-kl")
    pos = int(meta.filter(pl.col("size") == "14m").sort("position")["position"][i])
    step = STEPS[-3]
    row = tokens.filter((pl.col("size") == "14m") & (pl.col("step") == step) & (pl.col("position") == pos)).row(0, named=True)
    for key, col in (("kl", "kl_mean"), ("surprisal", "surprisal_mean"), ("entropy", "entropy_mean"),
                     ("kl_uniform", "kl_uniform_mean")):
        assert _num(page, f"#v-{key}") == pytest.approx(row[col], rel=2e-3, abs=1e-6), key
    g = next(g for g in groups if g.size == "14m" and g.step == step)
    off = ~np.eye(S, dtype=bool)
    assert _num(page, "#v-top1_agree") == pytest.approx(g.arrays["top1_agree"][i][off].mean(), rel=2e-3)
    assert _num(page, "#v-js") == pytest.approx(g.arrays["js"][i][off].mean(), rel=2e-3)
    want = pairs.filter((pl.col("size") == "14m") & (pl.col("step") == step) & (pl.col("position") == pos))
    cells = page.eval_on_selector_all("#panel table.grid td[data-v]", "els => els.map(e => +e.dataset.v)")
    # the grid keeps two digits: a code step is 4.7% of the value (explorer.pair_range), float16 mean on top
    np.testing.assert_allclose(cells, want.sort("seed_a", "seed_b")["kl"].to_numpy(), rtol=0.025)
    seeds = page.eval_on_selector_all(".topk .seed", "els => els.map(e => [...e.querySelectorAll('.row')]"
                                      ".map(r => [r.querySelector('.w').textContent, +r.querySelector('.p').textContent]))")
    assert len(seeds) == S and all(len(s) == K for s in seeds)
    for s in range(S):
        assert [w for w, _ in seeds[s]] == [f"w{j}" for j in g.arrays["topk_ids"][i, s]]
        np.testing.assert_allclose([p for _, p in seeds[s]], g.arrays["topk_prob"][i, s], atol=0.0051)
    # filter: only nouns stay bright
    page.select_option("#fkind", label="PoS (UPOS)")
    page.select_option("#flabel", label="NOUN")
    bright = page.eval_on_selector_all(".t:not(.dim)", "els => els.map(e => +e.dataset.i)")
    upos = meta.filter(pl.col("size") == "14m").sort("position")["upos"].to_list()
    assert bright == [j for j, u in enumerate(upos) if u == "NOUN"]
    most = page.eval_on_selector_all("#most li", "els => els.map(e => +e.dataset.i)")
    assert most and all(upos[j] == "NOUN" for j in most)
    assert problems == [] and requests == [(out / "explorer.html").as_uri()]


def test_page_without_topk_says_how_to_get_it(browser, tmp_path):
    rng = np.random.default_rng(3)
    write_explorer(tmp_path / "e.html", _groups(rng, topk=False), _meta(rng), sizes=SIZES)
    page, problems, _ = _open(browser, tmp_path / "e.html")
    page.click(".t[data-i='5']")
    page.wait_for_selector("#panel[data-i='5'] #v-kl")
    assert TOPK_HINT in page.text_content("#panel") and "--save_topk=5" in TOPK_HINT
    assert problems == []


def test_study_names_topk_ids_with_its_tokenizer():
    from seedkl_jax.study.outputs import _topk_vocab

    class Tok:
        def decode_tokens(self, ids):
            return [f" t{i}" for i in ids]
    groups = [GroupResult("s", 0, [1, 2], {"kl": np.zeros((2, 2, 2)), "topk_ids": np.array([[[7, 3]], [[3, 9]]])})]
    assert _topk_vocab(groups, Tok()) == {3: " t3", 7: " t7", 9: " t9"}
    assert _topk_vocab(groups, None) is None and _topk_vocab([], Tok()) is None
