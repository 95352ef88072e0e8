"""A stateful stand-in for systemctl: it runs each unit's ExecStart for real, under
Greenlight's launcher, and answers `show` from what really happened.

    systemctl start|stop [--no-block] UNIT
    systemctl is-active --quiet UNIT
    systemctl show -p MainPID --value UNIT
    systemctl show -p ExecMainCode -p ExecMainStatus UNIT

Units are read from `units/` beside this file's copy (rendered by `render_unit`); state goes
to `state/`; every call is appended to `calls.log`. Stopping sends the unit's KillSignal,
waits TimeoutStopSec, then kills the group. ExecMainCode is 1 (exited) with the status, or 2
(killed) with the signal, and Result is success, exit-code, signal or timeout, as systemd
reports them.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

HOME = Path(sys.argv[0]).resolve().parent
UNITS, STATE = HOME / "units", HOME / "state"
LAUNCHER = os.environ["FAKE_SYSTEMCTL_LAUNCHER"]


def unit(name: str) -> dict[str, str]:
    fields = {}
    for line in (UNITS / name).read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key] = value
    return fields


def record(name: str) -> dict:
    try:
        return json.loads((STATE / f"{name}.json").read_text())
    except FileNotFoundError:
        return {}


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def active(name: str) -> bool:
    launcher = record(name).get("launcher")
    return bool(launcher) and alive(launcher)


def start(name: str) -> int:
    if active(name):
        return 0
    fields = unit(name)
    exit_file, ready = STATE / f"{name}.exit", STATE / f"{name}.ready"
    exit_file.unlink(missing_ok=True)
    ready.unlink(missing_ok=True)
    with open(STATE / f"{name}.log", "ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-I", "-S", LAUNCHER, "--exit-file", str(exit_file),
             "--ready-file", str(ready), "--", *shlex.split(fields["ExecStart"])],
            cwd=fields.get("WorkingDirectory") or None, stdin=subprocess.DEVNULL, stdout=log,
            stderr=log, start_new_session=True)
    while not ready.exists() and child.poll() is None:
        time.sleep(0.005)
    main = json.loads(ready.read_text())["child"] if ready.exists() else 0
    (STATE / f"{name}.json").write_text(json.dumps({"launcher": child.pid, "main": main}))
    return 0


def stop(name: str, block: bool) -> int:
    fields, launcher = unit(name), record(name).get("launcher")
    if not launcher or not alive(launcher):
        return 0
    os.kill(launcher, getattr(signal, fields.get("KillSignal", "SIGTERM")))
    if not block:
        return 0
    deadline = time.monotonic() + float(fields.get("TimeoutStopSec", "90"))
    while alive(launcher) and time.monotonic() < deadline:
        time.sleep(0.01)
    if alive(launcher):
        os.killpg(launcher, signal.SIGKILL)
        while alive(launcher):
            time.sleep(0.01)
        (STATE / f"{name}.exit").write_text(json.dumps({"returncode": -9, "timeout": True}))
    return 0


def show(name: str, props: list[str], value_only: bool) -> int:
    exit_record = STATE / f"{name}.exit"
    values = {"MainPID": str(record(name).get("main", 0)) if active(name) else "0"}
    if exit_record.exists():
        ended = json.loads(exit_record.read_text())
        returncode = ended["returncode"]
        values["ExecMainCode"] = "2" if returncode < 0 else "1"
        values["ExecMainStatus"] = str(abs(returncode))
        values["Result"] = ("timeout" if ended.get("timeout") else "success" if returncode == 0
                            else "signal" if returncode < 0 else "exit-code")
    else:
        values["ExecMainCode"], values["ExecMainStatus"], values["Result"] = "0", "0", "success"
    for prop in props:
        print(values[prop] if value_only else f"{prop}={values[prop]}")
    return 0


def main(args: list[str]) -> int:
    STATE.mkdir(exist_ok=True)
    with open(HOME / "calls.log", "a") as f:
        f.write(" ".join(args) + "\n")
    verb, rest = args[0], args[1:]
    name = rest[-1]
    if verb == "start":
        return start(name)
    if verb == "stop":
        return stop(name, "--no-block" not in rest)
    if verb == "is-active":
        return 0 if active(name) else 3
    if verb == "show":
        props = [rest[i + 1] for i, a in enumerate(rest[:-1]) if a == "-p"]
        return show(name, props, "--value" in rest)
    print(f"fake systemctl: {verb} is not supported", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
