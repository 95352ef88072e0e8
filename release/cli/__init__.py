"""`release`: the pipeline's command line, one module per group of commands. Parses, calls
the pipeline's functions, prints. Every command's work runs through one error funnel
(`_common._run`); exit codes are listed by `release exit-codes`. Heavy modules are imported
by the commands that use them.
"""

import sys

from greenlight.channels import terminal_lines
from greenlight.release.cli import (
    _distribution,
    _feedback,
    _fleet,
    _keys,
    _rehearse,
    _repository,
    _updater,
)
from greenlight.release.cli._common import app, say

__all__ = ["app", "main"]

# each registers commands
_COMMANDS = (_distribution, _feedback, _fleet, _keys, _rehearse, _repository, _updater)


@app.command("exit-codes")
def exit_codes() -> None:
    """List the exit codes of `release`."""
    from greenlight.release._errors import EXIT_CODES

    for code, meaning in sorted(EXIT_CODES.items()):
        say(f"{code:>3}  {meaning}")


def main() -> None:
    """The `release` console script: warnings and errors as one line each, never a traceback."""
    import warnings

    from greenlight.release._errors import LooseKeyPermissions

    def one_line(message: Warning | str, *args: object, **kwargs: object) -> None:
        print(f"release: warning: {message}", file=sys.stderr)

    warnings.simplefilter("always", LooseKeyPermissions)
    warnings.showwarning = one_line
    try:
        app(prog_name="release")
    except KeyboardInterrupt:
        print("release: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # a bug: one line, its own exit code
        from greenlight.release._errors import EXIT_BUG

        said = terminal_lines(" ".join(str(e).split()), one_line=True)[:300]
        print(f"release: internal error: {type(e).__name__}: {said} (a bug; please report it)",
              file=sys.stderr)
        sys.exit(EXIT_BUG)


if __name__ == "__main__":
    main()
