"""Peak memory of this process since it started its program.

ru_maxrss is not it: it survives exec, so a child forked from a large parent reports the
parent's size. VmHWM belongs to the address space that exec made.
"""

from pathlib import Path


def peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")
