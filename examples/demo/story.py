"""`make demo`: the whole story on 127.0.0.1, with the real `release` and `updater` commands.

A fresh repository is created and served; every release carries its signed product manifest
(its services and checks), and the machine's greenlight.toml names only its ports. The demo
product's stable 1.6.10 is installed and its core and UI run as real processes. The machine
joins beta and takes its good 1.6.11. Then beta 1.6.12 is published with the incident's fault
baked in (the core refuses the UI's token while its ping still answers): the agent, with nobody
watching, installs it, the post-check catches it, and Greenlight rolls back to 1.6.11 by itself
and falls back to stable, printing the evidence. Stable only carries the older 1.6.10, so the
machine stays on its last good release: no automatic downgrade, cycle after cycle. When the
fixed beta 1.6.13 is published, the agent returns to beta, the channel the person chose, and
installs it. Then the vendor rehearses beta 1.6.14 before any machine sees it, from every
release still in the field, under the release's defaults and a layer that moves a port: two
faults a fresh machine would not show are caught, and the gate refuses its rollout. Last, a
fleet chapter: three machines, each with a key of its own, report to a
collector that guards beta's planned rollout of a 1.7.0 that fails only on one kind of machine
(the vendor's "legacy" hardware); the two legacy machines roll back, the collector holds their
cohort only, and the third machine, a "modern" one, takes 1.7.0. A legacy machine's panel,
refused by its core, writes in through the root's inbox; the vendor sees the user's words
filed under 1.7.0 and the legacy cohort, with the failing check's evidence. Then Greenlight
itself: the vendor publishes Greenlight 0.4.0 on greenlight-beta and a 1.7.1 that needs it;
the modern machine's agent moves its own Greenlight first, then the release, in one cycle,
and the collector's census shows which Greenlight each machine runs. Every command is
printed before it runs. Work happens in ./demo-work (replaced on each run).
"""

import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from examples.demo.build import build
from examples.demo.config import configure_machine, manifest_toml
from examples.demo.hammer import Hammer

BIN = Path(sys.executable).parent
WORK = Path("demo-work")


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def run(*args: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    shown = " ".join(shlex.quote(a) for a in args)
    print(f"$ {shown}", flush=True)
    tool = str(BIN / args[0]) if (BIN / args[0]).exists() else args[0]
    done = subprocess.run([tool, *args[1:]], text=True, capture_output=True)
    for line in (done.stdout + done.stderr).rstrip().splitlines():
        print(f"  {line}")
    if done.returncode not in ok:
        raise SystemExit(f"demo: '{shown}' exited {done.returncode}")
    return done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"demo: nothing listens on 127.0.0.1:{port}")


def calling(root: Path, *args: str) -> None:
    """Run a command while a client calls the core's UI endpoint as the UI does, and say
    what the client saw; a refused or failed call ends the demo."""
    token = (root / "data" / "ui-token").read_text().strip()
    with Hammer(core_port(root), token, seconds=300) as ui:
        run(*args)
    t = ui.tally
    print(f"  [UI] {t.requests} calls to the core meanwhile: {t.count('ok')} answered, "
          f"{t.count('refused')} refused, {t.count('failed')} failed; slowest "
          f"{t.percentile(100) * 1000:.0f} ms")
    if t.errors:
        raise SystemExit(f"demo: the UI's calls failed: {t.errors[:3]}")


def core_port(root: Path) -> int:
    """The port this machine gave the core (its greenlight.toml's [values])."""
    import tomllib

    return int(tomllib.loads((root / "greenlight.toml").read_text())["values"]["core_port"])


def ui_view(root: Path) -> None:
    """A UI's few lines from status.json: what it tells its user instead of "not running"."""
    import json

    status = json.loads((root / "state" / "status.json").read_text())
    incident = status.get("last_incident")
    print(f"  [UI] running {status['installed']} on {status['channel']}")
    if status["update"] == "available":
        print(f"  [UI] update available: {status['available']}")
    if incident and status["installed"] == incident["now_on"]:
        checks = incident["failed_checks"]
        why = checks[0]["summary"] if checks else incident["summary"]
        how = ("set aside in preflight, never installed" if incident.get("preflight")
               else "rolled back")
        print(f"  [UI] {incident['failed_release']} was {how}, because: {why}")
    if status["hold"]:
        print(f"  [UI] updates held until {status['hold']['until'] or 'released'}")


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    repo, root, builds = WORK / "repo", WORK / "root", WORK / "builds"
    say("The release team builds the demo product and creates a signed repository")
    manifest = WORK / "product.toml"  # how each release runs and is checked, signed with it
    manifest.parent.mkdir(parents=True, exist_ok=True)
    # Its sockets held by Greenlight, each release proven in preflight, then handed over.
    manifest.write_text(manifest_toml(held=True, handover=True))

    def components(version, *faults):
        return [*(f"--component={c}={p}"
                  for c, p in build(version, builds / version, faults).items()),
                f"--manifest={manifest}"]
    run("release", "init", str(repo))
    run("release", "publish", str(repo), "--channel", "stable", "--version", "1.6.10",
        *components("1.6.10"))

    port = free_port()
    say(f"The repository is served as static files on 127.0.0.1:{port}")
    server = subprocess.Popen([str(BIN / "release"), "serve", str(repo), "--port", str(port)],
                              stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        url = f"http://127.0.0.1:{port}"
        say("A machine installs stable, trusting the repository's first root")
        run("updater", "init", "--root", str(root), "--repo", url,
            "--trust", str(repo / "metadata" / "1.root.json"), "--channel", "stable")
        configure_machine(root, free_port(), free_port())
        print(f"  (this machine's two ports set in {root}/greenlight.toml; each release brings "
              "its services and checks in its signed manifest)")
        run("updater", "check", "--root", str(root), ok=(10,))
        run("updater", "upgrade", "--root", str(root))
        run("updater", "health", "--root", str(root))

        say("The machine joins beta and takes its 1.6.11")
        run("release", "publish", str(repo), "--channel", "beta", "--version", "1.6.11",
            "--fallback", "stable", *components("1.6.11"))
        run("updater", "channel", "--root", str(root), "beta")
        run("updater", "upgrade", "--root", str(root))

        say("Beta 1.6.12 ships with a core that refuses the UI's token (ping still answers); "
            "the agent takes it with nobody watching, while the UI keeps calling the core")
        run("release", "publish", str(repo), "--channel", "beta", "--version", "1.6.12",
            *components("1.6.12", "refuse-ui-token"))
        calling(root, "updater", "agent", "--once", "--root", str(root))
        run("updater", "status", "--root", str(root))
        run("updater", "history", "--root", str(root))
        say("What the product's UI reads from state/status.json, running nothing")
        ui_view(root)

        say("Stable carries only the older 1.6.10: the machine stays on 1.6.11, cycle after "
            "cycle, and says why")
        run("updater", "agent", "--once", "--root", str(root))
        run("updater", "check", "--root", str(root), ok=(15,))

        say("The fixed beta 1.6.13 is published; the agent returns to beta, the channel the "
            "person chose, and takes it")
        run("release", "publish", str(repo), "--channel", "beta", "--version", "1.6.13",
            *components("1.6.13", "state-v2"))
        print("  (1.6.13 hands over: its core takes the held sockets beside 1.6.11's and says "
              "READY=1, then 1.6.11's drains)")
        calling(root, "updater", "agent", "--once", "--root", str(root))
        run("updater", "health", "--root", str(root))
        ui_view(root)
        run("updater", "stop", "--root", str(root))
        rehearsal(repo, components)
        fleet(repo, url, components)
    finally:
        server.terminate()
        server.wait(timeout=10)
    say(f"Done. Everything is under {WORK}/")


def rehearsal(repo: Path, components) -> None:  # type: ignore[no-untyped-def]
    """Beta 1.6.14 is rehearsed before any machine sees it, and stopped there."""
    say("The vendor yanks 1.6.12 (no machine stays on it), then rehearses beta 1.6.14 before "
        "any machine can see it: from every release still in the field and from an empty "
        "root, under the release's defaults and a machine layer that moves the core's port")
    run("release", "yank", str(repo), "--channel", "beta", "--version", "1.6.12",
        "--reason", "refuses the UI's token")
    (repo / "rehearsal.toml").write_text(  # REPO/rehearsal.toml: the layers rehearsed
        '[[scenario]]\nname = "alt-port"\nvalues = { core_port = "18080" }\n')
    print(f"  ({repo}/rehearsal.toml: the machine layers; 1.6.14's core migrates its state "
          "assuming 1.6.13's format, and its UI calls the core on the default port)")
    candidate = components("1.6.14", "migration-assumes-state-v2", "ui-default-core-port")
    run("release", "rehearse", str(repo), "--channel", "beta", "--version", "1.6.14",
        *candidate, "--jobs", "4", ok=(10,))
    say("The gate: 1.6.14's rollout is refused until its rehearsal passes")
    run("release", "publish", str(repo), "--channel", "beta", "--version", "1.6.14",
        *candidate, "--rollout-plan", "10,100", ok=(1,))


def fleet(repo: Path, url: str, components) -> None:  # type: ignore[no-untyped-def]
    """Three machines report to a collector that guards beta's planned rollout."""
    import secrets

    from greenlight.channels import rollout_bucket

    say("Fleet: three machines report to a collector that guards beta's planned rollout")
    tokens = WORK / "tokens"
    tokens.mkdir()
    for name in ("fleet", "admin"):
        (tokens / name).write_text(secrets.token_hex(16) + "\n")
        (tokens / name).chmod(0o600)
    port = free_port()
    collector_url = f"http://127.0.0.1:{port}/"
    print(f"$ release collector --db sqlite:///{WORK}/fleet.sqlite3 --port {port} "
          f"--fleet-token-file {tokens}/fleet --admin-token-file {tokens}/admin "
          f"--repo {repo} --tick 1 &", flush=True)
    collector = subprocess.Popen(
        [str(BIN / "release"), "collector", "--db", f"sqlite:///{WORK}/fleet.sqlite3",
         "--port", str(port), "--fleet-token-file", str(tokens / "fleet"),
         "--admin-token-file", str(tokens / "admin"), "--repo", str(repo), "--tick", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    machines = [WORK / f"machine-{n}" for n in (1, 2, 3)]
    try:
        wait_for_port(port)
        # Installation ids are random; these are picked to sit inside the first step, so
        # that the story shows every machine meeting the bad release.
        ids = (f"{i:032x}" for i in range(10_000))
        chosen = [i for i in ids if rollout_bucket(i, "beta", "1.7.0") < 50][:3]
        labels = ("legacy", "legacy", "modern")
        for machine, ident, label in zip(machines, chosen, labels, strict=True):
            run("updater", "init", "--root", str(machine), "--repo", url, "--trust",
                str(repo / "metadata" / "1.root.json"), "--channel", "beta")
            configure_machine(machine, free_port(), free_port())
            (machine / "state" / "installation-id").write_text(ident + "\n")
            (machine / "data" / "fleet-token").write_bytes((tokens / "fleet").read_bytes())
            if label == "legacy":  # what the fault of 1.7.0 trips on
                (machine / "data" / "legacy-hardware").write_text("")
            with (machine / "greenlight.toml").open("a") as f:
                f.write(f'\n[report]\nurl = "{collector_url}"\ncohort_label = "{label}"\n')
            run("updater", "upgrade", "--root", str(machine))
        print(f"  (each machine's greenlight.toml now has [report] url = \"{collector_url}\" "
              "and its vendor's cohort_label: legacy, legacy, modern)")
        say("Each machine signs its reports with a key of its own, made at init; the collector "
            "enrolled each with its first report")
        run("updater", "identity", "--root", str(machines[0]))
        run("release", "machines", "list", "--collector", collector_url,
            "--admin-token-file", str(tokens / "admin"))

        say("Beta 1.7.0 rolls out by a signed plan: 50% then 100%, halting at 2 rollbacks; it "
            "refuses the UI's token on legacy hardware only")
        run("release", "publish", str(repo), "--channel", "beta", "--version", "1.7.0",
            "--rollout-plan", "50,100", "--soak", "1h", "--halt-rollbacks", "2",
            "--without-rehearsal", "legacy hardware cannot be rehearsed here; the collector "
            "guards the rollout", *components("1.7.0", "refuse-ui-token-on-legacy"))
        run("updater", "upgrade", "--root", str(machines[0]), ok=(20,))
        run("updater", "upgrade", "--root", str(machines[1]), ok=(20,))
        deadline = time.monotonic() + 10
        while b'"held_cohorts"' not in _newest_state(repo):
            if time.monotonic() > deadline:
                raise SystemExit("demo: the collector did not hold the legacy cohort")
            time.sleep(0.05)
        say("The collector held the legacy machines' cohort by itself, signed; the rest of the "
            "fleet goes on: the modern machine takes 1.7.0")
        say("On a legacy machine the panel saw its core refuse it (HTTP 403) and wrote that "
            "into the root's inbox, no shell needed; Greenlight files it with the incident's "
            "evidence and the vendor sees it beside the failed release and its cohort")
        run("updater", "feedback", "--collect", "--root", str(machines[0]))
        run("release", "feedback", "list", "--collector", collector_url,
            "--admin-token-file", str(tokens / "admin"), "--release", "1.7.0")
        run("updater", "upgrade", "--root", str(machines[2]))
        run("release", "rollout", "status", "--collector", collector_url,
            "--admin-token-file", str(tokens / "admin"))
        greenlight(repo, machines, collector_url, tokens / "admin", components)
    finally:
        for machine in machines:
            if (machine / "greenlight.toml").exists():
                subprocess.run([str(BIN / "updater"), "stop", "--root", str(machine)],
                               capture_output=True)
        collector.terminate()
        collector.wait(timeout=10)


def greenlight(repo: Path, machines: list[Path], collector_url: str, admin: Path,
               components) -> None:  # type: ignore[no-untyped-def]
    """Greenlight moves itself before a release that needs it."""
    from greenlight.channels import this_platform
    from greenlight.updater.store import InstallRoot

    from examples.demo.greenlights import greenlight_build, make_managed

    say("Greenlight itself: the machines run Greenlight 0.3.0; the vendor ships 0.4.0, then a "
        "beta 1.7.1 that needs it")
    old, new = (greenlight_build(WORK / "greenlight", v) for v in ("0.3.0", "0.4.0"))
    for machine in machines:
        make_managed(InstallRoot(machine), old, "0.3.0")
    print("  (each machine's bin/updater enters updater/0.3.0/, as the offline installer "
          "leaves it; the builds here are this tree set to a version and entered by a script, "
          "where `release publish-updater` without --exe builds the one-file executable)")
    run("release", "publish-updater", str(repo), "--channel", "beta", "--exe",
        f"{this_platform()}={new}")
    run("release", "publish", str(repo), "--channel", "beta", "--version", "1.7.1",
        "--requires", "0.4.0", "--collector", collector_url, "--admin-token-file", str(admin),
        *components("1.7.1"))
    say("The modern machine's agent, with nobody watching: Greenlight first (fetched, "
        "qualified against the root, activated), then the release, in one cycle")
    agent = machines[2] / "bin" / "updater"
    run(str(agent), "agent", "--once", "--root", str(machines[2]))
    run(str(agent), "status", "--root", str(machines[2]))
    run("release", "status", str(repo), "--collector", collector_url,
        "--admin-token-file", str(admin))


def _newest_state(repo: Path) -> bytes:
    """The newest published rollouts/beta.json, as the collector signed it."""
    found = sorted((repo / "targets" / "rollouts").glob("*.beta.json"),
                   key=lambda p: p.stat().st_mtime_ns)
    return found[-1].read_bytes() if found else b""


if __name__ == "__main__":
    main()
