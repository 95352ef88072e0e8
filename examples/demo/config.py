"""The demo product's services and health checks: as a release's product manifest
(`manifest_toml()`, its ports left to the machine as `{core_port}` and `{dns_port}`), or as
part of greenlight.toml (`product_toml(port, dns_port)`, for roots configured by hand).

`configure(root, port, dns_port)` appends them to an installation root's greenlight.toml, and
`configure_machine(root, port, dns_port)` only the machine's ports (its layer over releases
that carry their manifest); both write the UI's credentials to `<root>/data/ui-token`
(product data, outside any release).
The UI is told Greenlight's feedback inbox (`{root}/feedback/inbox`), where it leaves the
user's feedback when the core refuses it.
The checks talk to the core as the UI does: with the UI's token, over HTTP and WebSocket, and
through the product's DNS responder; and they run the new UI's own `--probe`.
"""

import secrets
from pathlib import Path


def product_toml(port: int | str, dns_port: int | str, grace: float = 10.0, soak: float = 2.0,
                 drain: bool = True, stats: str = "{root}/data") -> str:
    core = f"http://127.0.0.1:{port}"
    token = "{root}/data/ui-token"
    return f'''
[health]
grace = {grace}
soak = {soak}
interval = 0.25

[stop]
drain = {str(drain).lower()}
timeout = 10.0

[[service]]
name = "core"
command = ["{{python}}", "{{release_dir}}/core/core.py", "--port", "{port}",
           "--token-file", "{token}", "--dns-port", "{dns_port}"]
ready = "core-ping"
drain_url = "{core}/api/drain"

[[service]]
name = "ui"
command = ["{{python}}", "{{release_dir}}/ui/ui.py", "--core", "{core}",
           "--token-file", "{token}", "--stats", "{stats}/ui-stats-{{version}}.json",
           "--feedback-inbox", "{{root}}/feedback/inbox"]

[[check]]
name = "core-ping"
type = "http"
url = "{core}/api/ping"
timeout = 2.0

[[check]]
name = "ui-session"
type = "http"
url = "{core}/api/v1/session"
bearer_token_file = "data/ui-token"

[[check]]
name = "ui-websocket"
type = "websocket"
url = "ws://127.0.0.1:{port}/ws"
bearer_token_file = "data/ui-token"
send = ['{{"auth": "{{token}}"}}', "ping"]
expect = ['"ok": true', "ping"]

[[check]]
name = "core-dns"
type = "dns"
resolver = "127.0.0.1:{dns_port}"
query = "core.greenlight.test"
expect = "127.0.0.1"

[[check]]
name = "core-version"
type = "version"
url = "{core}/api/version"

[[check]]
name = "ui-probe"
type = "command"
command = ["{{python}}", "{{release_dir}}/ui/ui.py", "--core", "{core}",
           "--token-file", "{token}", "--probe"]
timeout = 10.0
'''


HELD_SOCKETS = '''
[[socket]]
name = "api"
service = "core"
listen = "127.0.0.1:{core_port}"

[[socket]]
name = "dns"
service = "core"
listen = "127.0.0.1:{dns_port}"
kind = "datagram"
'''


def manifest_toml(soak: float = 1.0, core_port: int = 8080, dns_port: int = 5353,
                  held: bool = False, grace: float = 10.0, handover: bool = False) -> str:
    """The demo product as a release's manifest: the machine names its two ports (these are
    the defaults). `held`: Greenlight holds the core's two sockets, and the release is
    proven beside the running one before it is switched in (preflight); the UI's counts are
    its per-instance state. `handover`: a new core takes over the sockets while the old one
    still serves them (it says READY=1, and drains by no longer accepting)."""
    if not held:
        return (f'[values]\ncore_port = "{core_port}"\ndns_port = "{dns_port}"\n'
                + product_toml("{core_port}", "{dns_port}", soak=soak, grace=grace))
    return ('per_instance = ["ui_state"]\n' + ("handover = true\n" if handover else "") + "\n"
            f'[values]\ncore_port = "{core_port}"\ndns_port = "{dns_port}"\n'
            'ui_state = "data/ui-state"\n'
            + product_toml("{core_port}", "{dns_port}", soak=soak, grace=grace,
                           stats="{ui_state}") + HELD_SOCKETS)


def _token(root: Path) -> None:
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    token = data / "ui-token"
    if not token.exists():
        token.write_text(secrets.token_hex(16) + "\n")
        token.chmod(0o600)


def configure(root: Path, port: int, dns_port: int, **options: object) -> None:
    _token(root)
    with (root / "greenlight.toml").open("a") as f:
        f.write(product_toml(port, dns_port, **options))  # type: ignore[arg-type]


def configure_machine(root: Path, port: int, dns_port: int) -> None:
    _token(root)
    with (root / "greenlight.toml").open("a") as f:
        f.write(f'\n[values]\ncore_port = "{port}"\ndns_port = "{dns_port}"\n')
