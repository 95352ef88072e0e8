"""The README is a front door, the manual in docs/ is whole, and what they tell a new user to
type works as written."""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from greenlight.updater.product import Config

from conftest import free_port

CHECKOUT = Path(__file__).parents[1]
README = CHECKOUT / "README.md"
DOCS = CHECKOUT / "docs"
LINK = re.compile(r"\]\(([^)#\s]+)(?:#([^)\s]+))?\)")


def _block(after: str, language: str, page: str) -> str:
    text = (DOCS / page).read_text()
    start = text.index(after)
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(text, start)
    assert match is not None, f"no {language} block after {after!r}"
    return match.group(1)


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_readme_is_a_front_door():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    # The two Quick start commands, and nothing else in that block.
    quick = re.search(r"## Quick start\n\n```sh\n(.*?)```", text, re.S)
    assert quick is not None
    assert [line.split()[:2] for line in quick.group(1).splitlines()] == [
        ["make", "demo"], ["make", "test"]]


def test_every_page_is_linked_and_every_link_resolves():
    pages = [README, *sorted(DOCS.glob("*.md"))]
    linked = {(README.parent / m.group(1)).resolve() for m in LINK.finditer(README.read_text())}
    assert {p.resolve() for p in DOCS.glob("*.md")} <= linked, "a page the README does not list"
    for page in pages:
        for m in LINK.finditer(page.read_text()):
            target, anchor = m.group(1), m.group(2)
            if "://" in target:
                continue
            path = (page.parent / target).resolve()
            assert path.exists(), f"{page.name}: {target}"
            if anchor and path.suffix == ".md":
                headings = {_anchor(h) for h in re.findall(r"^#+ (.*)$", path.read_text(), re.M)}
                assert anchor in headings, f"{page.name}: {target}#{anchor}"


def test_the_configuration_example_is_complete():
    data = tomllib.loads(_block("A complete file", "toml", "configuration.md"))
    config = Config.model_validate(data)  # `ready` names a defined check, and so on
    assert config.service[0].ready in {c.name for c in config.check}
    assert {c.type for c in config.check} >= {"http", "version"}


@pytest.mark.slow
def test_the_walk_through_works_as_written(tmp_path):
    """The walk-through, run by sh from the checkout, with the ports this test chose."""
    script = _block("<!-- walkthrough -->", "sh", "walkthrough.md")
    env = {**os.environ, "PORT": str(free_port()), "API": str(free_port()),
           "TMPDIR": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("GREENLIGHT_ROOT", None)
    done = subprocess.run(["sh", "-e", "-c", script], cwd=CHECKOUT, env=env,
                          capture_output=True, text=True, timeout=300)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "layout: core: core-1.0/* -> core/ (top folder left out)" in out
    assert "stable: upgraded nothing -> 1.0" in out
    assert "1.0: healthy" in out
    assert (f"stable: ROLLED BACK: service core of 1.1 not ready in 5.0s: GET "
            f"http://127.0.0.1:{env['API']}/healthz answered HTTP 500 (expected 200): "
            "store unreadable") in out
    assert 'evidence: {"status": 500, "body": "store unreadable\\n"}' in out
    assert "quarantined    1.1@" in out
    assert "updater upgrade exited 20" in out
    assert "updater check exited 15" in out and "1.1 is held back here" in out
    assert "Traceback" not in out + done.stderr
    app = next(tmp_path.glob("*/app"))
    assert (app / "current").resolve().name.startswith("1.0@")


@pytest.mark.slow
def test_the_manifest_guide_works_as_written(tmp_path):
    """docs/manifest.md's walk-through, run by sh from the checkout."""
    script = _block("<!-- manifest-walkthrough -->", "sh", "manifest.md")
    env = {**os.environ, "PORT": str(free_port()), "API": str(free_port()),
           "API2": str(free_port()), "TMPDIR": str(tmp_path),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("GREENLIGHT_ROOT", None)
    done = subprocess.run(["sh", "-e", "-c", script], cwd=CHECKOUT, env=env,
                          capture_output=True, text=True, timeout=300)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "{api_prt} is not a placeholder the machine fills" in done.stderr
    assert "release publish exited 2" in out
    assert "1.0: healthy" in out and "core-health [release]" in out
    assert "off  core-version [release]: disabled by this machine" in out
    assert "'core_port', which release 1.0 does not declare" in out
    assert "stable: upgraded 1.0 -> 1.1" in out
    assert "ROLLED BACK: 1.2 did not become healthy: check core-v2" in out
    assert "updater upgrade exited 20" in out
    last = out[out.rindex("updater upgrade exited 20"):]
    assert "1.1: healthy" in last and "core-v2" not in last
    assert "Traceback" not in out + done.stderr
