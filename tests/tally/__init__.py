"""tally: a second test product, not written for Greenlight (see core.py).

`build(version, out, faults)` makes its release archives as people make them: the core as
`core-<version>.tar.gz` with every member under `core-<version>/`, the UI probe as `ui.tar.gz`
under `ui/`. `product_toml(...)` is its part of greenlight.toml, written from
docs/configuration.md: the core started through `sh -c 'exec ...'`, plain-text checks.
`manifest(...)` is the same as a release's own product manifest (docs/manifest.md), the ports
left to the machine as values.
"""

import io
import json
import secrets
import tarfile
from pathlib import Path

HERE = Path(__file__).parent

__all__ = ["build", "configure", "manifest", "product_toml"]


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def build(version: str, out: Path, faults: dict[str, object] | None = None) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    top = f"core-{version}"
    core = out / f"core-{version}.tar.gz"
    with tarfile.open(core, "w:gz") as tar:
        tar.addfile(_dir(top))
        _add(tar, f"{top}/core.py", (HERE / "core.py").read_bytes(), 0o755)
        _add(tar, f"{top}/VERSION", f"{version}\n".encode())
        _add(tar, f"{top}/faults.json", json.dumps(faults or {}).encode())
    ui = out / "ui.tar.gz"
    with tarfile.open(ui, "w:gz") as tar:
        tar.addfile(_dir("ui"))
        _add(tar, "ui/probe.py", (HERE / "probe.py").read_bytes(), 0o755)
        _add(tar, "ui/relay.py", RELAY.encode(), 0o755)
    return {"core": core, "ui": ui}


RELAY = """\
# tally's relay: answers every request 200 "relay ok". Standard library only (asyncio), so a
# frozen updater's {python} runs it as well.
import asyncio
import sys


async def answer(reader, writer):
    await reader.readuntil(b"\\r\\n\\r\\n")
    writer.write(b"HTTP/1.0 200 OK\\r\\nContent-Length: 8\\r\\n\\r\\nrelay ok")
    await writer.drain()
    writer.close()


async def main():
    server = await asyncio.start_server(answer, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()


asyncio.run(main())
"""


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info


def product_toml(port: int | str, dns_port: int | str, grace: float = 10.0, soak: float = 4.0,
                 key_file: str = "{root}/data/api-key", probation: float = 600.0) -> str:
    core = f"http://127.0.0.1:{port}"
    start = (f"exec '{{python}}' '{{release_dir}}/core/core.py' --port {port} "
             f"--dns-port {dns_port} --key-file '{key_file}'")
    return f'''
[health]
grace = {grace}
soak = {soak}
probation = {probation}
interval = 0.25

[[service]]
name = "core"
command = ["sh", "-c", {json.dumps(start)}]
ready = "core-up"

[[check]]
name = "core-up"
type = "http"
url = "{core}/healthz"
body_contains = "ok"

[[check]]
name = "core-version"
type = "version"
format = "text"
url = "{core}/version"

[[check]]
name = "ui-items"
type = "command"
command = ["{{python}}", "{{release_dir}}/ui/probe.py", "--core", "{core}",
           "--key-file", "{key_file}"]
timeout = 10.0

[[check]]
name = "tally-dns"
type = "dns"
resolver = "127.0.0.1:{dns_port}"
query = "tally.test"
'''


def configure(root: Path, port: int, dns_port: int, services: bool = True,
              **options: float) -> None:
    """The machine's data and greenlight.toml: tally's services and checks, or (without
    `services`) only the values a release's `manifest()` leaves to the machine."""
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    key = data / "api-key"
    if not key.exists():
        key.write_text(secrets.token_hex(16) + "\n")
        key.chmod(0o600)
    with (root / "greenlight.toml").open("a") as f:
        f.write(product_toml(port, dns_port, **options) if services else
                f'\n[values]\ncore_port = "{port}"\ndns_port = "{dns_port}"\n')


def manifest(port_value: str = "core_port", relay: bool = False, extra_check: str = "",
             values: dict[str, str] | None = None) -> str:
    """tally's product manifest: the core on the port the machine names `{port_value}`; with
    `relay`, a second service (a static HTTP server) and its check; `extra_check` appended."""
    declared = {port_value: "8000", "dns_port": "5353", **(values or {})}
    text = "[values]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in declared.items())
    text += product_toml(f"{{{port_value}}}", "{dns_port}", soak=1.0,
                         key_file="{data_dir}/api-key")
    if relay:
        text += '''
[[service]]
name = "relay"
command = ["{python}", "{release_dir}/ui/relay.py", "{relay_port}"]
ready = "relay-up"

[[check]]
name = "relay-up"
type = "http"
url = "http://127.0.0.1:{relay_port}/"
body_contains = "relay ok"
'''
    return text + extra_check
