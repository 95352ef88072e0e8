"""One rehearsal path, run as a process of its own (`python -m
greenlight.release.rehearsal._path SPEC`), in a network namespace of its own when it is given
one: it enters it first, brings its loopback up, and says so on stdout.

The path's repository is a copy of the vendor's (metadata copied, archives linked), where the
*from* release and then the candidate are published with the repository's own code and keys
(a role that has no key yet gets one in memory, never on disk); it is served on the path's
127.0.0.1. A throwaway root, configured with the path's machine layer, installs *from* with the
real `updater`, then upgrades to the candidate (or sideloads the bundle), lets its preflight
and checks decide, rolls back by hand when the candidate was taken, and checks *from* again.
The outcome goes to `result.json` beside the spec; the parent stops whatever is left.
"""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["PathWork", "copy_repository", "enter_namespace", "main"]

CLONE_NEWNET = 0x40000000


def copy_repository(source: Path, into: Path) -> None:
    """A repository's served tree: metadata copied (it is rewritten), archives linked."""
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    shutil.copytree(source / "metadata", into / "metadata")
    shutil.copytree(source / "targets", into / "targets", copy_function=link)


def enter_namespace() -> str:
    """Enter a new network namespace with its loopback up; its id (`net:[inode]`).

    Raises:
        OSError: the machine does not allow it (not root, no namespaces).
    """
    import ctypes
    import fcntl
    import struct

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, request)[:18])[1]  # SIOCGIFFLAGS
        fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 0x1))  # SIOCSIFFLAGS: IFF_UP
    return os.readlink("/proc/self/ns/net")


class _Step(Exception):
    def __init__(self, outcome: str, detail: str) -> None:
        super().__init__(detail)
        self.outcome, self.detail = outcome, detail


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _one_line(text: str, limit: int = 300) -> str:
    from greenlight.channels import terminal_lines

    return terminal_lines(" ".join(text.split()), one_line=True)[:limit]


class PathWork:
    """The path's work: its repository copy, its server, its root."""

    def __init__(self, spec: dict[str, Any], folder: Path) -> None:
        self.spec, self.folder = spec, folder
        self.repo_path = folder / "repo"
        self.root = folder / "root"
        self.server: Any = None
        self.result: dict[str, Any] = {"bytes_fetched": 0, "delta": False,
                                       "failed_checks": [], "rollback": "n/a", "steps": {}}
        self.mark = time.monotonic()

    def step(self, name: str) -> None:
        """The time since the last step, as this one's."""
        at = time.monotonic()
        self.result["steps"][name] = round(at - self.mark, 2)
        self.mark = at

    # --- the repository ---------------------------------------------------------------
    def copy_repository(self) -> None:
        copy_repository(Path(self.spec["repo"]), self.repo_path)

    def repository(self) -> Any:
        from greenlight.release.rehearsal._keys import MemoryKeys
        from greenlight.release.repository import FileRepository

        return FileRepository(self.repo_path, MemoryKeys(Path(self.spec["keys"]),
                                                         self.folder / "keys"))

    def publish(self, release: dict[str, Any], deltas: bool) -> None:
        """Publish `release` on the path's copy of the repository, with its keys.

        Raises:
            _Step: "error": the publish was refused, or the keys here cannot sign it.
        """
        from greenlight.release._errors import ReleaseError
        from greenlight.release.repository import publish

        repo = self.repository()
        try:
            publish(repo, self.spec["channel"], release["version"],
                    {n: Path(p) for n, p in release["components"].items()},
                    allow_older=True, deltas=deltas,
                    keep_top_folder=release["keep_top_folder"],
                    manifest=Path(release["manifest"]) if release["manifest"] else None)
        except ReleaseError as e:
            raise _Step("error", f"publishing {release['version']} here: {e}") from None
        if repo.pending():
            raise _Step("error", "the repository's keys here cannot sign a publish "
                                 f"(awaiting signatures: {', '.join(repo.pending())}): "
                                 "rehearse where 'release publish' runs")

    def serve(self) -> str:
        import threading

        from greenlight.release.distribution import RepositoryServer

        self.server = RepositoryServer(self.repo_path)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return str(self.server.url)

    # --- the machine ------------------------------------------------------------------
    def call(self, argv: list[str], timeout: float = 600) -> tuple[int, dict[str, Any], str]:
        """Run a program on the root; its exit code, its JSON report, its last error line."""
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        report: dict[str, Any] = {}
        if "--json" in argv:
            try:
                report = json.loads(done.stdout)
            except ValueError:
                report = {}
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        return done.returncode, report, lines[-1] if lines else ""

    def program(self) -> list[str]:
        """The root's own updater when it has one (an installer leaves itself there), as a
        machine would run it; else this Greenlight's."""
        own = self.root / "bin" / "updater"
        if own.is_file() and os.access(own, os.X_OK):
            return [str(own)]
        return [sys.executable, "-m", "greenlight.updater.cli"]

    def updater(self, *args: str, timeout: float = 600) -> tuple[int, dict[str, Any], str]:
        return self.call([*self.program(), *args, "--root", str(self.root)], timeout)

    def layer_parts(self) -> dict[str, Any]:
        """The layer's part of greenlight.toml, with ports of its own when paths share one
        network."""
        layer = self.spec["layer"]
        parts: dict[str, Any] = {k: v for k, v in {
            "values": dict(layer["values"]), "disabled_checks": layer["disabled_checks"],
            "check": layer["check"]}.items() if v}
        for name in self.spec["ports"]:
            parts.setdefault("values", {})[name] = str(_free_port())
        return parts

    def write_files(self) -> None:
        for name, content in self.spec["layer"]["files"].items():
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)

    def configure(self) -> None:
        from greenlight.channels import with_machine_parts

        parts = self.layer_parts()
        config = self.root / "greenlight.toml"
        if parts:
            config.write_text(with_machine_parts(config.read_text(), parts,
                                                 f"layer {self.spec['layer']['name']}"))
        self.write_files()

    def installer(self, *args: str) -> list[str]:
        """The offline installer's command on this root: onto a root, or a fresh one made
        with the layer (its files provisioned first: a fresh root takes data/ only)."""
        argv = [self.spec["installer"], "--root", str(self.root), *args]
        if (self.root / "greenlight.toml").exists():
            return [*argv, "--switch-channel"]
        import tomli_w

        layer = self.folder / "layer.toml"
        layer.write_text(tomli_w.dumps(self.layer_parts()))
        self.write_files()
        return [*argv, "--offline", "--config", str(layer)]

    def init(self, url: str | None) -> None:
        """`updater init` the root on the path's repository (`url`, or offline), configured
        with the path's layer.

        Raises:
            _Step: "error": `updater init` failed.
            subprocess.TimeoutExpired: it ran past its timeout.
        """
        trust = str(Path(self.spec["repo"]) / "metadata" / "1.root.json")
        where = ["--repo", url] if url else ["--offline"]
        code, _, line = self.updater("init", *where, "--trust", trust,
                                     "--channel", self.spec["channel"])
        if code != 0:
            raise _Step("error", f"updater init exited {code}: {_one_line(line)}")
        self.configure()

    def updater_argv(self, *args: str) -> list[str]:
        return [*self.program(), *args, "--root", str(self.root), "--json"]

    def take(self, argv: list[str]) -> dict[str, Any]:
        """Run an upgrade, a sideload or an installer to the candidate; what it decided.

        Raises:
            _Step: the candidate was not installed: "needs-newer", "preflight" or "failed"
                (its checks, rolled back), or "error" (another release, or another exit).
            subprocess.TimeoutExpired: it ran past its timeout.
        """
        code, report, line = self.call(argv)
        command = argv[3:4] if argv[0] == sys.executable else argv[:2]
        self.result["bytes_fetched"] = int(report.get("bytes_fetched") or 0)
        self.result["delta"] = any(d.get("used") for d in report.get("deltas") or [])
        outcome = report.get("outcome")
        if code == 17:
            raise _Step("needs-newer", _one_line(line))
        if outcome in ("upgraded", "downgraded") and code == 0:
            if report.get("to_version") != self.spec["candidate"]["version"]:
                raise _Step("error", _one_line(
                    f"{' '.join(command)} installed {report.get('to_version')}, not the "
                    f"candidate {self.spec['candidate']['version']}"))
            return report
        incident = report.get("incident") or {}
        failed = incident.get("failed_checks") or []
        self.result["failed_checks"] = [
            {"name": _one_line(c.get("name", "?"), 80),
             "summary": self.rooted(c.get("summary", "") + _evidence(c.get("evidence")))}
            for c in failed]
        if outcome in ("rolled-back", "rollback-failed"):
            why = failed[0] if failed else {}
            detail = (f"{why.get('name', '?')}: {why.get('summary', '')}"
                      f"{_evidence(why.get('evidence'))}" if why
                      else incident.get("summary", ""))
            raise _Step("preflight" if incident.get("preflight") else "failed",
                        self.rooted(detail))
        raise _Step("error", f"{' '.join(command)} exited {code}: "
                             f"{_one_line(line or str(outcome))}")

    def forget_copy_metadata(self) -> None:
        """Before a bundle: the root keeps its trusted root chain, not the copy's timestamp,
        snapshot and targets, which publishing *from* here signed with versions newer than
        the vendor's (the bundle's) and would refuse it as a replay. A machine that took
        *from* from the vendor holds older ones."""
        for path in (self.root / "state" / "metadata").glob("*.json"):
            if not path.name.endswith("root.json"):
                path.unlink()

    def rooted(self, text: str) -> str:
        """`text` on one line, the throwaway root's path said as `{root}`."""
        return _one_line(text.replace(str(self.root.absolute()), "{root}"))

    def healthy(self) -> bool:
        code, report, _ = self.updater("health", "--json")
        return code == 0 and bool(report.get("healthy"))

    # --- the path ---------------------------------------------------------------------
    def run(self) -> None:
        """The whole path: install *from*, take the candidate, roll back by hand, check
        *from* again; what happened goes into `result`.

        Raises:
            _Step: the path's outcome when it is not "upgraded" ("from-failed", "error", or
                what `take` raises).
            OSError: the path's folders or server could not be made.
            subprocess.TimeoutExpired: a program ran past its timeout.
        """
        spec, candidate, start = self.spec, self.spec["candidate"], self.spec["from"]
        self.root.parent.mkdir(parents=True, exist_ok=True)
        self.copy_repository()
        url = self.serve()
        self.step("copy")
        bundle = spec["kind"].startswith(("bundle-", "installer-"))
        if start is not None:
            self.publish(start, deltas=False)
            self.init(url)
            self.step("prepare")
            code, report, line = self.updater("upgrade", "--json")
            self.step("install-from")
            if report.get("outcome") in ("rolled-back", "rollback-failed"):
                checks = ((report.get("incident") or {}).get("failed_checks") or [{}])[0]
                raise _Step("from-failed", self.rooted(
                    f"{start['version']} does not pass its own checks on this layer: "
                    f"{checks.get('name', '')} {checks.get('summary', '')}"))
            if code != 0 or report.get("outcome") != "upgraded":
                raise _Step("error", self.rooted(
                    f"installing {start['version']} exited {code}: {line or 'no report'}"))
        elif not spec["kind"].startswith("installer-"):  # an installer makes its root
            self.init(None if bundle else url)
        if not bundle:
            self.publish(candidate, deltas=spec["delta"])
        elif start is not None:
            self.forget_copy_metadata()
        self.step("publish")
        try:
            if spec["kind"].startswith("installer-"):
                self.take(self.installer("--json"))
            else:
                self.take(self.updater_argv("sideload", spec["bundle"], "--switch-channel")
                          if bundle else self.updater_argv("upgrade"))
        except _Step as step:
            self.step("upgrade")
            if start is not None and step.outcome in ("failed", "preflight"):
                self.result["rollback"] = "ok" if self.healthy() else "failed"
                self.step("check-from")
            raise
        self.step("upgrade")
        if start is not None:
            code, _, line = self.updater("rollback", "--json")
            self.result["rollback"] = "ok" if code == 0 and self.healthy() else "failed"
            self.step("rollback")
            if code != 0:
                self.result["detail"] = f"rollback exited {code}: {_one_line(line)}"

    def stop(self) -> None:
        if (self.root / "greenlight.toml").exists():
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                self.updater("stop", timeout=60)
        if self.server is not None:
            self.server.shutdown()


def _evidence(evidence: object) -> str:
    """What a failed check saw: the product's last log line when it has one, else the
    evidence itself (cut short)."""
    if not evidence:
        return ""
    log = evidence.get("log") if isinstance(evidence, dict) else None
    if isinstance(log, list) and log and isinstance(log[-1], str):
        return f" (its log: {log[-1][-240:]})"
    return f" (evidence: {json.dumps(evidence, sort_keys=True, default=str)[:200]})"


def _die_with_parent() -> None:
    """This path ends when the rehearsal that started it does, however it ends."""
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent was gone before the line above
        os._exit(1)


def main() -> None:
    _die_with_parent()
    spec_path = Path(sys.argv[1])
    spec = json.loads(spec_path.read_text())
    if spec["isolation"] == "netns":
        print(json.dumps({"netns": enter_namespace()}), flush=True)
    else:
        print(json.dumps({"netns": None}), flush=True)
    began = time.monotonic()
    work = PathWork(spec, spec_path.parent)
    outcome, detail = "upgraded", ""
    try:
        work.run()
        if work.result["rollback"] == "failed":
            detail = work.result.pop("detail", "the from release failed its checks after "
                                               "the rollback")
        else:
            detail = "passed its checks" + ("; rolled back by hand, from passes again"
                                            if spec["from"] else "")
    except _Step as step:
        outcome, detail = step.outcome, step.detail
    except OSError as e:
        outcome, detail = "error", _one_line(f"{e.filename or 'rehearsal'}: {e.strerror or e}")
    except subprocess.TimeoutExpired as e:
        outcome, detail = "timed-out", _one_line(f"{' '.join(map(str, e.cmd))[-120:]} took "
                                                 "too long")
    finally:
        work.stop()
    work.result.pop("detail", None)
    result = {**work.result, "outcome": outcome, "detail": detail,
              "seconds": round(time.monotonic() - began, 2)}
    (spec_path.parent / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
