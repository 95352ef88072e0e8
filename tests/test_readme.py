"""What the README tells a new user to type works as written."""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from greenlight.updater.product import Config

from conftest import free_port

README = Path(__file__).parents[1] / "README.md"


def _block(after: str, language: str) -> str:
    text = README.read_text()
    start = text.index(after)
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(text, start)
    assert match is not None, f"no {language} block after {after!r}"
    return match.group(1)


def test_the_configuration_example_is_complete():
    data = tomllib.loads(_block("A complete file", "toml"))
    config = Config.model_validate(data)  # `ready` names a defined check, and so on
    assert config.service[0].ready in {c.name for c in config.check}
    assert {c.type for c in config.check} >= {"http", "version"}


@pytest.mark.slow
def test_the_walk_through_works_as_written(tmp_path):
    """The walk-through, run by sh from the checkout, with the ports this test chose."""
    script = _block("<!-- walkthrough -->", "sh")
    env = {**os.environ, "PORT": str(free_port()), "API": str(free_port()),
           "TMPDIR": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("GREENLIGHT_ROOT", None)
    done = subprocess.run(["sh", "-e", "-c", script], cwd=README.parent, env=env,
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
