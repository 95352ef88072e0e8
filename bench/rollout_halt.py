"""How soon a halt is signed and published once a rollout's halt rule is crossed.

    python -m bench.rollout_halt [--rounds 5]

A real repository with a planned rollout (halt at 3 rollbacks) and a real collector process
(`release collector --repo`) on 127.0.0.1. Each round publishes a release, sends two rollback
reports, then the third, and times from sending the third until `rollouts/<channel>.json`
in the repository says halted (signed by `rollout-<channel>`, with a new snapshot and
timestamp). The anchor, measured in the same run: a person's `release rollout --halt`, a
whole CLI process that signs and publishes a halt. Target: the halt within 1 s.
"""

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.collector_load import ADMIN, BIN, FLEET, _port, _wait


def _halted(repo: Path, channel: str, key: str) -> bool:
    from greenlight.release.repository._repository import FileRepository
    from greenlight.release.repository._rollouts import current_state

    state = current_state(FileRepository(repo), channel)
    return state is not None and state.release == key and state.halted


def measure(rounds: int = 5) -> dict[str, float]:
    """Seconds from the crossing report to the published halt, and a person's halt by hand
    (medians and the worst), over `rounds` releases."""
    import httpx

    from greenlight.channels import (
        HaltRule,
        RolloutPlan,
        key_id,
        new_private_key,
        now,
        public_key_text,
        sign_body,
    )
    from greenlight.release import init_repository, publish

    from examples.demo.build import build

    work = Path(tempfile.mkdtemp(prefix="greenlight-bench-halt-"))
    repo = init_repository(work / "repo")
    publish(repo, "stable", "1.0", build("1.0", work / "builds" / "1.0", ()))  # the fallback
    plan = RolloutPlan(steps=[10, 50, 100], soak=3600, started_at=now(),
                       halt=HaltRule(rollbacks=3))
    (work / "fleet").write_text(FLEET + "\n")
    (work / "admin").write_text(ADMIN + "\n")
    port = _port()
    url = f"http://127.0.0.1:{port}/"
    collector = subprocess.Popen(
        [str(BIN / "release"), "collector", "--db", f"sqlite:///{work / 'c.sqlite3'}",
         "--port", str(port), "--fleet-token-file", str(work / "fleet"),
         "--admin-token-file", str(work / "admin"), "--repo", str(repo.path),
         "--enrolment", "preauthorized"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    halts, anchors = [], []
    try:
        _wait(url + "v1/rollouts")
        client = httpx.Client(headers={"Authorization": f"Bearer {FLEET}"})
        # The fleet's machines, their keys loaded as provisioning would: they count at once.
        keys = [new_private_key() for _ in range(3 * rounds)]
        assert client.post(url + "v1/machines/load", headers={
            "Authorization": f"Bearer {ADMIN}"}, json={"keys": [
                public_key_text(k) for k in keys]}).status_code == 200
        for n in range(rounds):
            version = f"2.{n}"
            cf = publish(repo, "beta", version, build(version, work / "builds" / version, ()),
                         fallback="stable", rollout_plan=plan)
            key = cf.identity.key
            for i in range(3):
                machine = keys[3 * n + i]
                body = json.dumps({
                    "schema": "greenlight.report/1",
                    "installation": key_id(machine),
                    "at": datetime.now(UTC).isoformat(), "channel": "beta",
                    "outcome": "rolled-back", "release": version, "release_key": key,
                    "failed_checks": [{"name": "ui-session", "summary": "HTTP 403"}]}).encode()
                signed = sign_body(machine, body)
                started = time.perf_counter()
                assert client.post(url + "v1/reports", content=body,
                                   headers=signed).status_code == 202
            while not _halted(repo.path, "beta", key):
                if time.perf_counter() - started > 30:
                    raise SystemExit("the collector did not halt the rollout within 30 s")
                time.sleep(0.002)
            halts.append(time.perf_counter() - started)

            # The anchor: a person halts the same kind of rollout by hand.
            publish(repo, "beta", f"{version}.1", build(f"{version}.1",
                    work / "builds" / f"{version}.1", ()), fallback="stable", rollout_plan=plan)
            started = time.perf_counter()
            subprocess.run([str(BIN / "release"), "rollout", str(repo.path), "--channel", "beta",
                            "--halt"], check=True, capture_output=True)
            anchors.append(time.perf_counter() - started)
    finally:
        collector.terminate()
        collector.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    return {"median": statistics.median(halts), "max": max(halts),
            "by_hand": statistics.median(anchors), "rounds": len(halts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    m = measure(parser.parse_args().rounds)
    halts = [m["median"], m["max"]]
    print(f"halt published after the rule is crossed: median {m['median']:.3f} s, "
          f"max {m['max']:.3f} s over {m['rounds']:.0f} rounds (target <= 1 s: "
          f"{'met' if max(halts) <= 1 else 'MISSED'})")
    print(f"anchor, `release rollout --halt` by hand: median {m['by_hand']:.3f} s")
    print(f"collector / by hand: {m['median'] / m['by_hand']:.2f}x")


if __name__ == "__main__":
    main()
