"""The shape of the house: one import root, layers whose imports point down, a launcher of the
standard library only, typed results, and help text that reads right."""

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from greenlight.updater.operations import open_repository
from greenlight.updater.product import init_root
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


def _imports(path: Path) -> set[str]:
    """Every module `path` imports: at the top, inside functions and under TYPE_CHECKING."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports (a name imported from a package counts as
    the package, or as its submodule when it is one)."""
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    return {m: {r for r in map(resolve, _imports(path)) if r is not None and r != m}
            for m, path in modules.items()}


# The client's layers, top down. A module may import its own layer's modules and the layers
# listed for it; nothing else of the client. No whitelist of single modules.
LAYERS: dict[str, set[str]] = {
    "greenlight.updater.cli": {"agent", "selfupdate", "operations", "policy", "transaction",
                               "output", "trust", "store", "product"},
    "greenlight.updater.installer": {"cli", "agent", "selfupdate", "operations", "output",
                                     "trust", "store", "product"},
    "greenlight.updater.conformance": {"trust"},
    "greenlight.updater.agent": {"selfupdate", "operations", "policy", "output", "store",
                                 "product"},
    "greenlight.updater.selfupdate": {"output", "trust", "store", "product"},
    "greenlight.updater.operations": {"policy", "transaction", "output", "trust", "store",
                                      "product"},
    "greenlight.updater.transaction": {"policy", "output", "trust", "store", "product"},
    "greenlight.updater.output": {"store", "product"},
    "greenlight.updater.policy": set(),
    "greenlight.updater.trust": {"store"},
    "greenlight.updater.product": {"store"},
    "greenlight.updater.store": set(),
}
BOTTOM = {"greenlight.updater", "greenlight.updater._errors",  # the error tree
          "greenlight.updater._lean"}  # the cloud SDKs kept out, on the package's import


def _layer(name: str) -> str | None:
    return next((layer for layer in LAYERS if name == layer or name.startswith(layer + ".")),
                None)


def test_every_client_module_has_a_layer():
    loose = [m for m in _modules() if m.startswith("greenlight.updater")
             and m not in BOTTOM and _layer(m) is None]
    assert not loose, f"modules of the client in no layer: {loose}"


def test_imports_point_down():
    wrong = []
    for module, imported in _graph().items():
        for i in imported:
            if module.startswith("greenlight.channels") and not i.startswith(
                    "greenlight.channels"):
                wrong.append(f"{module} -> {i} (the shared layer imports nothing above it)")
            if module.startswith("greenlight.updater") and i.startswith("greenlight.release"):
                wrong.append(f"{module} -> {i}")
        own = _layer(module)
        if own is None:
            continue
        allowed = {f"greenlight.updater.{name}" for name in LAYERS[own]} | {own}
        for i in imported:
            if not i.startswith("greenlight.updater") or i in BOTTOM:
                continue
            if _layer(i) not in allowed:
                wrong.append(f"{module} -> {i}")
    assert not wrong, "imports that do not point down:\n" + "\n".join(sorted(wrong))


def test_the_pipeline_imports_of_the_client_only_the_public_api_of_trust():
    """What both sides must agree on (how an archive is unpacked and listed, what a manifest
    and a product's configuration may hold, their errors) is the shared layer's: `release`
    imports of the client only the public names of `greenlight.updater.trust` (to verify a
    repository as a client would), never another module of it, trust's private ones
    included. Running the client as a program (`python -m greenlight.updater.cli`) is no
    import."""
    trust = "greenlight.updater.trust"
    public = set(_declared_all(ast.parse(_modules()[trust].read_text())) or [])
    wrong = []
    for module, imported in _graph().items():
        if not module.startswith("greenlight.release"):
            continue
        wrong += [f"{module} -> {i}" for i in sorted(imported)
                  if (i == "greenlight.updater" or i.startswith("greenlight.updater."))
                  and i != trust]
    for module, path in _modules().items():
        if not module.startswith("greenlight.release"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == trust:
                wrong += [f"{module} -> {trust}.{a.name} (not in its __all__)"
                          for a in node.names if a.name not in public]
            elif isinstance(node, ast.Import):
                wrong += [f"{module} -> import {a.name} (import names from it)"
                          for a in node.names if a.name == trust]
    assert not wrong, "the pipeline reaches into the client:\n" + "\n".join(wrong)


# The pipeline's parts: the CLI over three jobs; distribution and the fleet use the signed
# repository, never each other, and the repository uses neither.
RELEASE_PARTS: dict[str, set[str]] = {
    "greenlight.release.cli": {"repository", "distribution", "fleet"},
    "greenlight.release.distribution": {"repository"},
    "greenlight.release.fleet": {"repository"},
    "greenlight.release.repository": set(),
}


def test_the_pipeline_parts_point_down():
    wrong = []
    for module, imported in _graph().items():
        own = next((p for p in RELEASE_PARTS if module == p or module.startswith(p + ".")),
                   None)
        if own is None:
            continue
        allowed = {f"greenlight.release.{name}" for name in RELEASE_PARTS[own]} | {own}
        for i in imported:
            part = next((p for p in RELEASE_PARTS if i == p or i.startswith(p + ".")), None)
            if part is not None and part not in allowed:
                wrong.append(f"{module} -> {i}")
    assert not wrong, "\n".join(sorted(wrong))


def test_importing_the_pipeline_loads_only_what_it_uses():
    code = "import sys, greenlight.release; print(len(sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert int(done.stdout) <= 250


HELP_MODULES = 300
"""modules a CLI's help may load, for the program and for each of its commands: click, the
shared layer's models, the command definitions; never a command's own work (a signer and
the cloud SDKs it reaches for, an HTTP client, a TUF client, a web framework)"""

_HELP = """
import sys
from greenlight.{cli}.cli import main
sys.argv = ["{cli}", *sys.argv[1:], "--help"]
try:
    main()
except SystemExit:
    pass
print(len(sys.modules), file=sys.stderr)
"""


def _help_paths() -> list[tuple[str, tuple[str, ...]]]:
    from greenlight.release.cli._common import app as release_app
    from greenlight.updater.cli._common import app as updater_app

    return [(cli, path) for cli, app in (("release", release_app), ("updater", updater_app))
            for path in [(), *((name,) for name in sorted(app.commands))]]


def test_every_clis_help_loads_only_what_it_shows():
    """`release --help`, `updater --help` and each of their commands' `--help`, each in a
    process of its own: at most `HELP_MODULES` modules (`release --help` loaded 720 when
    the warning class of a loose key file pulled in the signer and the cloud SDKs)."""
    import concurrent.futures

    def count(cli: str, path: tuple[str, ...]) -> tuple[str, int]:
        done = subprocess.run([sys.executable, "-c", _HELP.format(cli=cli), *path],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return " ".join((cli, *path, "--help")), int(done.stderr.split()[-1])

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        counted = list(pool.map(lambda p: count(*p), _help_paths()))
    assert len(counted) > 30
    over = [f"{what}: {n} modules" for what, n in counted if n > HELP_MODULES]
    assert not over, over


def test_no_import_cycles():
    """No cycle among the project's modules, counting imports inside functions and under
    TYPE_CHECKING (Tarjan's strongly connected components)."""
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_no_module_of_product_code_over_500_lines():
    long = {name: n for name, path in _modules().items()
            if (n := len(path.read_text().splitlines())) > 500}
    assert not long, f"split these by job: {long}"


def _declared_all(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        target = (node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1
                  else node.target if isinstance(node, ast.AnnAssign) else None)
        if isinstance(target, ast.Name) and target.id == "__all__" and node.value is not None:
            value = ast.literal_eval(node.value)
            assert isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
            return list(value)
    return None


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Try | ast.If):
            names.update(_top_level_names(ast.Module(body=node.body, type_ignores=[])))
    return names


def test_no_module_imports_what_another_keeps_private():
    """A name with a leading underscore stays in its module: what others use is exported."""
    modules = _modules()
    found = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("greenlight"):
                found += [f"{name}: {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")
                          and f"{node.module}.{a.name}" not in modules]  # a submodule is fine
    assert not found, found


def _raises(fn: ast.FunctionDef) -> bool:
    """Whether `fn` holds a `raise X` (a bare re-raise does not count). A stub meant to be
    overridden, whose whole body (its docstring aside) is `raise NotImplementedError`, does
    not: a caller meets what the real method raises, which says so itself."""
    body = fn.body[1:] if ast.get_docstring(fn) is not None else fn.body
    if len(body) == 1 and isinstance(body[0], ast.Raise) and body[0].exc is not None:
        exc = body[0].exc
        called = exc.func if isinstance(exc, ast.Call) else exc
        if isinstance(called, ast.Name) and called.id == "NotImplementedError":
            return False
    return any(isinstance(r, ast.Raise) and r.exc is not None for r in ast.walk(fn))


def test_what_a_public_function_raises_is_documented():
    """As python-tuf's ngclient does: a public function that raises says what, in a
    "Raises:" section. Public: exported (`__all__`) by a private module (`_name.py`) of any
    package (channels, updater, release), or a public method (not a property) of a class so
    exported. Raises: it holds a `raise X`, other than a stub's `raise NotImplementedError`.
    Every exported operation (updater.operations) says it, raise or not, since they all can."""
    missing = []
    for name, path in _modules().items():
        if not path.name.startswith("_"):
            continue
        every = _layer(name) == "greenlight.updater.operations"
        tree = ast.parse(path.read_text())
        exported = set(_declared_all(tree) or [])
        functions = [(n.name, n) for n in tree.body
                     if isinstance(n, ast.FunctionDef) and n.name in exported]
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in exported):
            functions += [(f"{cls.name}.{m.name}", m) for m in cls.body
                          if isinstance(m, ast.FunctionDef) and not m.name.startswith("_")
                          and not any(isinstance(d, ast.Name) and d.id == "property"
                                      for d in m.decorator_list)]
        for qualified, fn in functions:
            if (_raises(fn) or every) and \
                    "Raises:" not in (ast.get_docstring(fn) or ""):
                missing.append(f"{name}.{qualified}")
    assert not missing, missing


def _registered(node: ast.FunctionDef | ast.ClassDef) -> bool:
    """A CLI command: registered on its group by a decorator, not imported by name."""
    return any(isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute)
               and d.func.attr in ("command", "group") for d in node.decorator_list)


def test_every_module_declares_all():
    """Every module says what it exports, as a literal `__all__` whose every name exists;
    every public function and class of a private module is in it (what is not exported is
    named with an underscore). A package's lazy names come from its `_HOME` table."""
    problems = []
    for name, path in _modules().items():
        if path.name in ("__main__.py", "launcher.py", "holder.py", "loop.py"):
            continue  # scripts run by path, not imported for their names
        tree = ast.parse(path.read_text())
        declared = _declared_all(tree)
        if declared is None:
            problems.append(f"{name}: no __all__")
            continue
        defined = _top_level_names(tree)
        lazy = "_HOME" in defined  # a package whose names are imported on first use
        unknown = [n for n in declared if n not in defined and not lazy]
        if unknown:
            problems.append(f"{name}: __all__ names what it does not define: {unknown}")
        if path.name.startswith("_") and path.name != "__init__.py":
            public = {node.name for node in tree.body
                      if isinstance(node, ast.FunctionDef | ast.ClassDef)
                      and not node.name.startswith("_") and not _registered(node)}
            if hidden := sorted(public - set(declared)):
                problems.append(f"{name}: public but not in __all__: {hidden}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("script", ["product/launcher.py", "product/holder.py",
                                    "agent/loop.py"])
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
    root = init_root(tmp_path / "root", "http://127.0.0.1:9/",
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
    (["release", "installer", "--help"], ["its manifest ([[service]], [[check]], ...; signed now",
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


def test_every_package_is_in_the_distribution():
    """pyproject.toml lists the packages one by one: a package missing there is missing from
    every pip-installed Greenlight (and from no editable one), which only an installed tree
    shows."""
    import tomllib

    root = Path(__file__).parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for name, folder in config["package-dir"].items():
        for init in (root / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(root / folder).parts
            found.add(".".join((name, *parts)))
    assert found - listed == set(), f"packages not in pyproject.toml: {sorted(found - listed)}"
