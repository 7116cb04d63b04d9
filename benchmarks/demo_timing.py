"""Measure `seedkl demo` against its budgets: wall time and peak memory, first run and a reusing rerun.

Budgets (issue 5, on the 2-core CPU dev machine): default <= 10 min with >= 3 sizes x >= 4 seeds x
>= 12 checkpoints; --quick <= 2 min; peak RSS <= 4 GiB. Each run is a fresh `seedkl demo` process
(imports, compilation, corpus, training, study and report all counted) in an empty workdir and --out
under a temporary folder, with its own params cache; then the same command again, which must reuse
the trained suite and finish well under the first run's time. Peak RSS is the child's ru_maxrss;
CPU is its user+sys time (on a machine shared with other jobs, wall time inflates, CPU time much less).

    python benchmarks/demo_timing.py                 # quick, then default
    python benchmarks/demo_timing.py --which=quick   # only the CI-sized demo
    python benchmarks/demo_timing.py --keep=/tmp/demo-bench   # keep workdirs and outputs there

Timings depend on what else the machine runs: note `os.getloadavg()` (printed) next to any number.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = {"quick": 120.0, "default": 600.0}
BUDGET_RSS_GIB = 4.0


def run_demo(which: str, base: Path) -> tuple[float, float, float]:
    """One `seedkl demo` process: (wall seconds, CPU seconds (user+sys), peak RSS GiB)."""
    args = ["demo", f"--workdir={base / 'work'}", f"--out={base / 'out'}"]
    args += ["--quick"] if which == "quick" else []
    code = "import sys; from seedkl_jax.cli import main; sys.exit(main(['seedkl', *sys.argv[1:]]))"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SEEDKL_CACHE": str(base / "cache")}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)  # stderr (progress bars) goes to the terminal
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # reaps the child and returns its own rusage
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code:
        sys.exit(f"seedkl {' '.join(args)} failed with exit code {code}")
    rss = usage.ru_maxrss / 2**20  # KiB -> GiB
    print(f"   {stdout.strip().splitlines()[-1]}  ({wall:.0f} s)", flush=True)
    return wall, usage.ru_utime + usage.ru_stime, rss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--which", default="quick,default", help="comma list of quick, default")
    p.add_argument("--keep", default=None, help="folder to keep the runs in (default: a temporary one, removed)")
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="seedkl-demo-bench-") as tmp:
        root = Path(a.keep or tmp)
        for which in a.which.split(","):
            base = root / which
            flag = " --quick" if which == "quick" else ""
            print(f"== seedkl demo{flag}  (load average {os.getloadavg()[0]:.1f})", flush=True)
            first = run_demo(which, base)
            again = run_demo(which, base)
            demo = json.loads((base / "out" / "demo.json").read_text())
            shape = f"{len(demo['sizes'])} sizes x {len(demo['seeds'])} seeds x {len(demo['steps'])} checkpoints"
            rows.append((which, shape, first, again))
            findings = json.loads((base / "out" / "findings.json").read_text())
            for f in findings:
                print(f"   {f['verdict']:<15} {f['finding']}")
    print(f"\n{'demo':<8} {'suite':<38} {'first run':>10} {'(CPU)':>8} {'rerun':>7} {'peak RSS':>9}  budget")
    ok = True
    for which, shape, (t1, c1, r1), (t2, _, r2) in rows:
        rss = max(r1, r2)
        good = t1 <= BUDGET_S[which] and rss <= BUDGET_RSS_GIB and t2 < t1
        ok &= good
        print(f"{which:<8} {shape:<38} {t1:>9.0f}s {c1:>7.0f}s {t2:>6.0f}s {rss:>7.2f}GiB  "
              f"{'OK' if good else 'OVER'} (<= {BUDGET_S[which]:.0f}s, <= {BUDGET_RSS_GIB:.0f} GiB)")
    print(f"machine: {os.cpu_count()} CPUs, load average now {os.getloadavg()[0]:.1f}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
