"""pyproject's dependency ranges against the set CI installs (constraints.txt, docs/reliability.md).

Why: a lower bound the suite never ran with promises what nobody checked. .ci/run installs exactly
constraints.txt (and fails on drift), so every direct dependency must be pinned there at a version its
range admits, and the lower bound must not be below what was pinned when the bound was last checked.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = Version(version.strip())
    return pins


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return [Requirement(r) for r in reqs]


@pytest.mark.parametrize("req", _requirements(), ids=str)
def test_every_dependency_is_pinned_within_its_range(req):
    pins = _pins()
    name = canonicalize_name(req.name)
    assert name in pins, f"{req.name} is not in constraints.txt: run .ci/freeze"
    assert req.specifier.contains(pins[name], prereleases=True), f"{req.name}=={pins[name]} outside {req.specifier}"


def test_lower_bounds_are_versions_the_suite_ran_with():
    """A lower bound must name a tested release: the pinned one (same release, local tags such as
    torch's +cpu aside) — never an older, untested version."""
    pins = _pins()
    for req in _requirements():
        lows = [Version(s.version) for s in req.specifier if s.operator in (">=", "==")]
        for low in lows:
            pinned = Version(re.sub(r"\+.*", "", str(pins[canonicalize_name(req.name)])))
            assert low.release == pinned.release[:len(low.release)], (
                f"{req.name}: lower bound {low} but the suite ran with {pinned}; raise the bound or test {low}")
