"""The launcher a service runs under: `python -m updater._launch --exit-file F -- CMD...`.

It starts CMD as its child, forwards stop signals to it, and when the child ends writes the
child's exit status to F. The updater that stops a service is usually not the process that
started it, so this file is how it learns whether the service exited cleanly or crashed. The
launcher leads its own process group: a kill after the stop timeout ends both.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


def main(args: list[str] | None = None) -> int:
    args = sys.argv[1:] if args is None else args
    if len(args) < 4 or args[0] != "--exit-file" or args[2] != "--":
        print("usage: python -m updater._launch --exit-file FILE -- COMMAND...", file=sys.stderr)
        return 2
    exit_file, command = Path(args[1]), args[3:]
    child = subprocess.Popen(command)
    received: list[str] = []

    def forward(signum: int, frame: object) -> None:
        received.append(signal.Signals(signum).name)
        child.send_signal(signum)

    for sig in _FORWARDED:
        signal.signal(sig, forward)
    returncode = child.wait()
    record = {"returncode": returncode, "pid": child.pid, "signals": received}
    tmp = exit_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, exit_file)
    return returncode if returncode >= 0 else 128 - returncode


if __name__ == "__main__":
    sys.exit(main())
