"""The launcher a service runs under; the standard library only, imports nothing of Greenlight.

    python -I -S launcher.py --exit-file FILE --ready-file FILE -- COMMAND...

It starts COMMAND as its child, forwards stop signals to it, and when the child ends writes
the child's exit status (and the signals it forwarded) to the exit file. The updater that
stops a service is usually not the process that started it, so this file is how it learns
whether the service exited cleanly or crashed. The launcher leads its own process group: a
kill after the stop timeout ends both. The ready file is written once the handlers are
installed and the child is started, so nobody signals it before it can forward.

The updater runs this file by path with `-I -S` (no site-packages, no package import), so the
process it adds per service is a bare interpreter: see bench/overhead.py.
"""

import json
import os
import signal
import subprocess
import sys

_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
USAGE = "usage: launcher.py --exit-file FILE [--ready-file FILE] -- COMMAND..."


def _write(path: str, record: dict[str, object]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, path)


def main(args: list[str] | None = None) -> int:
    args = sys.argv[1:] if args is None else args
    options: dict[str, str] = {}
    while args and args[0] in ("--exit-file", "--ready-file") and len(args) > 1:
        options[args[0]] = args[1]
        args = args[2:]
    if "--exit-file" not in options or not args or args[0] != "--" or len(args) < 2:
        print(USAGE, file=sys.stderr)
        return 2
    command = args[1:]
    received: list[str] = []
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, frame: object) -> None:
        received.append(signal.Signals(signum).name)
        if child is not None:
            child.send_signal(signum)

    # Handlers first: a stop signal that arrives while the child starts is still forwarded.
    for sig in _FORWARDED:
        signal.signal(sig, forward)
    try:
        child = subprocess.Popen(command)
    except OSError as e:
        print(f"launcher: cannot start {command[0]}: {e.strerror}", file=sys.stderr)
        _write(options["--exit-file"], {"returncode": 127, "pid": None, "signals": received,
                                        "error": f"{e.strerror}: {command[0]}"})
        return 127
    if received:  # a signal came before the child existed: pass it on now
        child.send_signal(getattr(signal, received[-1]))
    if "--ready-file" in options:
        _write(options["--ready-file"], {"pid": os.getpid(), "child": child.pid})
    returncode = child.wait()
    _write(options["--exit-file"], {"returncode": returncode, "pid": child.pid,
                                    "signals": received})
    return returncode if returncode >= 0 else 128 - returncode


if __name__ == "__main__":
    sys.exit(main())
