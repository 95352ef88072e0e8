"""The shape of the house: one import root, layers whose imports point down, a launcher of the
standard library only, typed results, and help text that reads right."""

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from greenlight.updater.operations import open_repository
from greenlight.updater.store import InstallRoot

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PACKAGES = {"channels": "greenlight.channels", "updater": "greenlight.updater",
            "release": "greenlight.release"}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in (REPO / folder).rglob("*.py"):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            found[name] = path
    return found


def _runtime_imports(path: Path, module: str) -> set[str]:
    """Modules imported when `path` runs (imports under `if TYPE_CHECKING:` excluded)."""
    tree = ast.parse(path.read_text())
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(n) for n in ast.walk(node))
    names = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


LAYERS = ["greenlight.updater.cli", "greenlight.updater.installer",
          "greenlight.updater.conformance", "greenlight.updater.agent_loop",
          "greenlight.updater.agent", "greenlight.updater.operations",
          "greenlight.updater.ui_status", "greenlight.updater.reporting",
          "greenlight.updater.plan", "greenlight.updater.transaction",
          "greenlight.updater.reports", "greenlight.updater.trust",
          "greenlight.updater.store", "greenlight.updater.product"]
# Who may import whom, top down; trust, store and product sit side by side, store reading the
# product's configuration module.
ALLOWED_DOWN = {
    "greenlight.updater.agent_loop": set(),  # the standard library only
    "greenlight.updater.agent": {"greenlight.updater.operations", "greenlight.updater.ui_status",
                                 "greenlight.updater.reports", "greenlight.updater.store",
                                 "greenlight.updater.product", "greenlight.updater.reporting"},
    "greenlight.updater.reporting": {"greenlight.updater.store"},
    "greenlight.updater.operations": {"greenlight.updater.plan", "greenlight.updater.transaction",
                                      "greenlight.updater.reports", "greenlight.updater.trust",
                                      "greenlight.updater.store", "greenlight.updater.product",
                                      "greenlight.updater.ui_status"},
    "greenlight.updater.ui_status": {"greenlight.updater.reports", "greenlight.updater.store"},
    "greenlight.updater.plan": set(),
    "greenlight.updater.transaction": {"greenlight.updater.reports", "greenlight.updater.trust",
                                       "greenlight.updater.store", "greenlight.updater.product"},
    "greenlight.updater.reports": {"greenlight.updater.store", "greenlight.updater.product"},
    "greenlight.updater.trust": set(),
    "greenlight.updater.store": {"greenlight.updater.product._config"},
    "greenlight.updater.product": set(),
}


def _layer(name: str) -> str | None:
    return next((layer for layer in LAYERS if name == layer or name.startswith(layer + ".")),
                None)


def test_imports_point_down():
    wrong = []
    for module, path in _modules().items():
        imported = _runtime_imports(path, module)
        if module.startswith("greenlight.channels"):
            wrong += [f"{module} -> {i}" for i in imported
                      if i.startswith(("greenlight.updater", "greenlight.release"))]
        if module.startswith("greenlight.release"):
            wrong += [f"{module} -> {i} (private module of the client)" for i in imported
                      if i.startswith("greenlight.updater")
                      and any(part.startswith("_") for part in i.split("."))]
        if module.startswith("greenlight.updater"):
            wrong += [f"{module} -> {i}" for i in imported if i.startswith("greenlight.release")]
        own = _layer(module)
        if own not in ALLOWED_DOWN:
            continue
        for i in imported:
            target = _layer(i)
            if target is None or target == own:
                continue
            allowed = ALLOWED_DOWN[own]
            if target not in allowed and not any(i.startswith(a) for a in allowed):
                wrong.append(f"{module} -> {i}")
    assert not wrong, "imports that do not point down:\n" + "\n".join(sorted(wrong))


def test_every_module_declares_all():
    missing = [name for name, path in _modules().items()
               if path.name not in ("cli.py", "launcher.py")
               and "__all__" not in path.read_text()]
    assert not missing


@pytest.mark.parametrize("script", ["product/launcher.py", "agent_loop.py"])
def test_the_launcher_imports_the_standard_library_only(script):
    """The service launcher and the agent's idle loop stay resident: a bare interpreter."""
    launcher = REPO / "updater" / script
    code = ("import runpy, sys; runpy.run_path(sys.argv[1]); "
            "print('\\n'.join(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(launcher)],
                          capture_output=True, text=True, check=True)
    loaded = {m.split(".")[0] for m in done.stdout.split()}
    foreign = {m for m in loaded if m not in sys.stdlib_module_names and m not in
               sys.builtin_module_names and not m.startswith("_")}
    assert not foreign, f"{script} loaded {sorted(foreign)}"


def test_services_run_under_the_bare_launcher(tmp_path):
    from greenlight.updater.product import ProcessBackend, ServiceConfig

    backend = ProcessBackend(InstallRoot(tmp_path))
    service = ServiceConfig(name="sleeper", command=[sys.executable, "-c",
                                                     "import time; time.sleep(60)"])
    backend.start(service, {"root": str(tmp_path)})
    try:
        pid = backend.pid("sleeper")
        assert pid is not None
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert argv[1:3] == [b"-I", b"-S"] and argv[3].endswith(b"launcher.py")
        modules = Path(f"/proc/{pid}/maps").read_text()
        assert "site-packages" not in modules
    finally:
        outcome = backend.stop(service, timeout=5)
    # Killed by the SIGTERM it was sent: the launcher forwarded it and recorded the status.
    assert outcome.returncode == -15 and not outcome.killed


def test_repository_timeout_reaches_the_fetcher(tmp_path, repo):
    root = InstallRoot.create(tmp_path / "root", "http://127.0.0.1:9/",
                              (repo.metadata_dir / "1.root.json").read_bytes(), "stable")
    config = root.config_path.read_text()
    assert "# timeout = 30.0" in config  # the default, shown commented in the template
    url = 'url = "http://127.0.0.1:9/"\n'
    root.config_path.write_text(config.replace(url, url + "timeout = 3\n"))
    fetcher = open_repository(InstallRoot(root.path)).fetcher
    assert fetcher.timeout == 3.0  # type: ignore[attr-defined]


@pytest.mark.parametrize(("argv", "expected"), [
    (["updater", "check", "--help"], ["--json Print the stable JSON report.", "--root PATH",
                                      "GREENLIGHT_ROOT"]),
    (["release", "installer", "--help"], ["[[service]] and [[check]]",
                                          "Private keys folder (default: the one the",
                                          "repository remembers)."]),
    (["release", "publish", "--help"], ["--component NAME=PATH", "--no-deltas"]),
])
def test_help_reads_right(argv, expected):
    done = subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    for piece in expected:
        assert piece in text
    assert "<bool>" not in text and "[]" not in text


def test_a_wheel_installs_one_import_root(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                           "--wheel-dir", str(tmp_path), str(REPO)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("greenlight_updater-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        tops = {name.split("/")[0] for name in zf.namelist()}
        names = zf.namelist()
    assert {t for t in tops if not t.endswith(".dist-info")} == {"greenlight"}
    assert "greenlight/updater/product/launcher.py" in names
    assert "greenlight/channels/schema/channel-file.v1.schema.json" in names
    assert not any(n.startswith(("greenlight/examples", "examples/")) for n in names)
