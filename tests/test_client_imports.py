"""The client imports no cloud SDK it never uses, whatever else the host has installed (boto3
is installed here, through moto)."""

import subprocess
import sys

from greenlight.updater._lean import CLOUD_SDKS

LOADED = """
import sys
import greenlight.updater.cli, greenlight.updater.trust, greenlight.updater.operations
import greenlight.updater.agent
print(" ".join(sorted({name.split(".")[0] for name in sys.modules})))
"""


def test_an_updater_process_loads_no_cloud_sdk() -> None:
    import boto3  # noqa: F401  (the premise: the SDK is there to be imported)

    done = subprocess.run([sys.executable, "-c", LOADED], capture_output=True, text=True,
                          check=True)
    assert set(done.stdout.split()) & CLOUD_SDKS == set()
    assert "tuf" in done.stdout.split()


def test_the_rest_of_the_process_still_imports_them() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LOADED.strip() + "\nimport boto3\nprint('boto3', boto3.__name__)"],
        capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "boto3 boto3"
