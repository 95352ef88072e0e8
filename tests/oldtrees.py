"""Greenlight as an earlier commit of this repository had it, run from this environment's
libraries: `old_tree(commit, tmp)` gives the environment whose `python` imports that commit's
`greenlight` (its folders under one import root, ahead of the installed one)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

__all__ = ["REPO_ROOT", "checked_out", "old_tree"]

REPO_ROOT = Path(__file__).resolve().parent.parent


def checked_out(commit: str, tree: Path, *paths: str) -> Path:
    """`commit`'s files (`paths` of them, or all) in `tree`; skipped, or failed in CI, when
    the commit is not in this clone's history."""
    known = subprocess.run(["git", "-C", str(REPO_ROOT), "cat-file", "-e",
                            f"{commit}^{{commit}}"], capture_output=True)
    if known.returncode != 0:
        why = f"commit {commit} is not in this clone's history"
        if os.environ.get("CI"):
            pytest.fail(f"{why}; CI must test what earlier versions left")
        pytest.skip(why)
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", commit, *paths],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def old_tree(commit: str, tmp: Path) -> dict[str, str]:
    """The environment (for `subprocess`) whose interpreter imports `commit`'s Greenlight."""
    tree = checked_out(commit, tmp / f"tree-{commit}", "channels", "release", "updater")
    root = tmp / f"root-{commit}" / "greenlight"
    root.mkdir(parents=True)
    for part in ("channels", "release", "updater"):
        (root / part).symlink_to(tree / part)
    check = subprocess.run([sys.executable, "-c", "import greenlight.release, sys; "
                            "print(greenlight.release.__file__)"],
                           env={**os.environ, "PYTHONPATH": str(root.parent)},
                           capture_output=True, text=True, check=True)
    assert str(root) in check.stdout, f"{commit}'s tree is not the one imported: {check.stdout}"
    return {**os.environ, "PYTHONPATH": str(root.parent)}
