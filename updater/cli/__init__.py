"""`updater`: the command line of the client. Parses, calls `operations`, prints.

Human output is short and goes to stdout; errors are one line on stderr; `--json` prints the
report's stable JSON shape instead (errors too, as greenlight.error/1). Exit codes are listed
by `updater exit-codes` and in docs/updater.md.

Only click is imported up front: every command imports what it uses when it runs, so
`updater --help` costs an interpreter and click, and `updater check` what a check needs
(typer was measured at 60 ms a process more than click, most of it its pydantic adapters).
"""

import sys

from greenlight.channels import terminal_lines
from greenlight.updater._errors import Interrupted, handle_interrupts
from greenlight.updater.cli import _feedback, _machine, _moves, _self
from greenlight.updater.cli._common import app

__all__ = ["app", "main"]

_COMMANDS = (_feedback, _machine, _moves, _self)  # each registers its commands on app


def main() -> None:
    """The `updater` console script: no traceback ever reaches the user."""
    try:
        handle_interrupts()  # a stop that waited, blocked, for it is raised here
        app(prog_name="updater")
    except Interrupted as stop:  # outside a command's work (its funnel says more)
        if "agent" in sys.argv[1:] and "--once" not in sys.argv:
            sys.exit(0)  # the resident agent stopped before its loop began: a clean stop
        print(f"updater: {stop}", file=sys.stderr)
        sys.exit(stop.exit_code)
    except KeyboardInterrupt:
        print("updater: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # a bug: say so in one line, with the documented exit code 1
        said = terminal_lines(" ".join(str(e).split()), one_line=True)[:300]
        print(f"updater: internal error: {type(e).__name__}: {said} (please report it)",
              file=sys.stderr)
        sys.exit(1)
