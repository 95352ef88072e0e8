"""User feedback end to end, the seed's incident: beta 1.6.11's core refuses the UI's calls
(HTTP 403, "denying api access"). The demo UI, with no shell, writes what it saw into the
root's inbox while its core refuses it; Greenlight rolls 1.6.11 back by itself and files the
UI's words, with the failing check's evidence, under 1.6.11 and the machine's cohort. The
collector is down meanwhile: the machine keeps the feedback and delivers it once the
collector is back. An air-gapped machine exports its feedback to a file that the pipeline
imports. Real `updater` and `release` processes, a real collector, the real demo product."""

import json
import subprocess
import sys
import time
from pathlib import Path

from greenlight.release import init_repository, publish

from conftest import ADMIN, FLEET, Collector, builtin_server, free_port
from examples.demo.config import configure

BIN = Path(sys.executable).parent


def run(*argv: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True,
                          timeout=timeout)


def machine(path: Path, repo_url: str, trust: Path, report: str | None, label: str) -> None:
    done = run("updater", "init", "--root", str(path), "--repo", repo_url, "--trust", str(trust))
    assert done.returncode == 0, done.stderr
    configure(path, free_port(), free_port(), grace=3.0, soak=0.5)
    (path / "data" / "fleet-token").write_text(FLEET + "\n")
    with (path / "greenlight.toml").open("a") as f:
        if report is not None:
            f.write(f'\n[report]\nurl = "{report}"\ncohort_label = "{label}"\n')


def listed(url: str, admin: Path, *filters: str) -> list[dict]:
    done = run("release", "feedback", "list", "--collector", url, "--admin-token-file",
               str(admin), "--json", *filters)
    assert done.returncode == 0, done.stdout + done.stderr
    return list(json.loads(done.stdout)["feedback"])


def test_the_ui_writes_in_while_its_core_refuses_it_and_the_vendor_sees_it_by_release(
        tmp_path, builds):
    repo = init_repository(tmp_path / "repo")
    publish(repo, "stable", "1.6.10", builds("1.6.10"))
    publish(repo, "beta", "1.6.11", builds("1.6.11", "refuse-ui-token"), fallback="stable")
    trust = repo.metadata_dir / "1.root.json"
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    admin = tmp_path / "tokens" / "admin"  # written by the collector's helper
    online, gapped = tmp_path / "online", tmp_path / "gapped"
    collector = None
    with builtin_server(repo.path) as server:
        machine(online, server.url, trust, url, "legacy")
        machine(gapped, server.url, trust, None, "legacy")
        try:
            # The collector is down: the machine upgrades, fails and rolls back all the same.
            assert run("updater", "upgrade", "--root", str(online)).returncode == 0
            assert run("updater", "channel", "beta", "--root", str(online)).returncode == 0
            broken = run("updater", "upgrade", "--root", str(online))
            assert broken.returncode == 20, broken.stdout + broken.stderr
            # The demo UI of 1.6.11 wrote into the inbox when its core said 403; the agent's
            # cycle files it, with the evidence, and keeps it while nothing answers.
            cycle = run("updater", "agent", "--once", "--root", str(online))
            assert cycle.returncode in (0, 10), cycle.stdout + cycle.stderr
            wrote = run("updater", "feedback", "--root", str(online), "--json",
                        "the panel is stuck on 'denying api access'")
            assert wrote.returncode == 0, wrote.stdout + wrote.stderr
            waiting = sorted((online / "state" / "feedback").glob("*.json"))
            assert len(waiting) == 2, waiting
            sources = {json.loads(p.read_text())["source"] for p in waiting}
            assert sources == {"inbox", "cli"}

            # Back online: the next cycles deliver it (after the back-off the failures set).
            collector = Collector(tmp_path, f"sqlite:///{tmp_path}/fleet.sqlite3", port,
                                  "--repo", str(repo.path))
            deadline = time.monotonic() + 120
            while [*(online / "state" / "feedback").glob("*.json"),
                   *(online / "state" / "reports").glob("*.json")]:
                assert time.monotonic() < deadline, "what was queued was never delivered"
                run("updater", "agent", "--once", "--root", str(online))

            # Filed under the release it is about (1.6.11, not the 1.6.10 it went back to),
            # the cohort, and the failing check with its evidence.
            about = listed(url, admin, "--release", "1.6.11")
            assert len(about) == 2, about
            ui = next(f for f in about if f["source"] == "inbox")
            assert "denying api access" in ui["text"] and "403" in ui["text"]
            assert ui["check"] == "ui-session" and ui["cohort"].endswith("/legacy")
            assert ui["about"] == "1.6.11" and ui["release"] == "1.6.10"
            shown = run("release", "feedback", "show", ui["id"], "--collector", url,
                        "--admin-token-file", str(admin), "--json")
            assert shown.returncode == 0, shown.stderr
            document = json.loads(shown.stdout)["document"]
            failing = {c["name"]: c for c in document["checks"] if not c["ok"]}
            assert "403" in failing["ui-session"]["evidence"]
            assert document["incident"]["release"].startswith("1.6.11@")
            assert (online / "data" / "ui-token").read_text().strip() not in shown.stdout
            groups = subprocess.run(
                [sys.executable, "-c", "import httpx, sys; print(httpx.get(sys.argv[1], "
                 "headers={'Authorization': 'Bearer ' + sys.argv[2]}).text)",
                 url + "v1/feedback/groups", ADMIN], capture_output=True, text=True)
            group = next(g for g in json.loads(groups.stdout)["groups"]
                         if g["release"] == "1.6.11")
            assert group["machines"] == 1 and group["feedback"] == 2
            assert group["outcomes"]["failed"] == 1  # its report, beside what the user said

            # The air-gapped machine: its feedback goes out on a file the pipeline imports.
            offline = run("updater", "feedback", "--root", str(gapped), "nothing updates here")
            assert offline.returncode == 0 and "--export FILE" in offline.stdout, offline.stdout
            exported = tmp_path / "gapped-feedback.jsonl"
            out = run("updater", "feedback", "--root", str(gapped), "--export", str(exported))
            assert out.returncode == 0, out.stdout + out.stderr
            assert not list((gapped / "state" / "feedback").glob("*.json"))
            imported = run("release", "feedback", "import", str(exported), "--collector", url,
                           "--admin-token-file", str(admin))
            assert imported.returncode == 0, imported.stdout + imported.stderr
            assert "1 accepted" in imported.stdout
            texts = [f["text"] for f in listed(url, admin)]
            assert "nothing updates here" in texts and len(texts) == 3
            again = run("release", "feedback", "import", str(exported), "--collector", url,
                        "--admin-token-file", str(admin))
            assert again.returncode == 0 and "1 already there" in again.stdout, again.stdout
        finally:
            for path in (online, gapped):
                run("updater", "stop", "--root", str(path))
            if collector is not None:
                collector.stop()
