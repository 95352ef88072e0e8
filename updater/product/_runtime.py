"""How to run Python and the service launcher, from a venv or from a frozen installer exe.

Inside a PyInstaller one-file executable `sys.executable` is the executable itself, so it
answers private first arguments: `--greenlight-launch` (the service launcher),
`--greenlight-hold` (the socket holder) and
`--greenlight-python SCRIPT ARGS` (run a Python script with the bundled libraries). The
`{python}` placeholder in a command stands for `python_argv()`.

Commands that outlive this process (a service's command, its launcher, a unit file) name
`program()`: the root's entry point `<root>/bin/updater` when this executable was entered by
it, which follows Greenlight's own moves, so that a version removed after an update is never
named; else the executable itself.
"""

import sys
from pathlib import Path

__all__ = ["HOLDER", "LAUNCHER", "frozen", "holder_argv", "launcher_argv", "program",
           "python_argv"]

LAUNCHER = Path(__file__).with_name("launcher.py")
HOLDER = Path(__file__).with_name("holder.py")


def frozen() -> bool:
    return bool(getattr(sys, "frozen", False))


def program() -> str:
    """The executable to name in a command that outlives this process (see the module)."""
    if frozen() and sys.argv and sys.argv[0]:
        entry = Path(sys.argv[0]).absolute()
        if entry.name == "updater" and entry.parent.name == "bin" and entry.is_symlink():
            return str(entry)
    return sys.executable


def python_argv() -> list[str]:
    return [program(), "--greenlight-python"] if frozen() else [sys.executable]


def launcher_argv() -> list[str]:
    # By path, isolated (-I) and without site (-S): a bare interpreter that imports nothing
    # of Greenlight or of site-packages (bench/overhead.py measures it).
    return [program(), "--greenlight-launch"] if frozen() else [
        sys.executable, "-I", "-S", str(LAUNCHER)]


def holder_argv() -> list[str]:
    """The socket holder (holder.py), run as the launcher is."""
    return [program(), "--greenlight-hold"] if frozen() else [
        sys.executable, "-I", "-S", str(HOLDER)]
