"""Redaction: the secrets the product's checks use never appear in a result, a report, a log
line or a feedback document.

The secrets are what the configuration points at, never guessed: each check's
`bearer_token_file` contents, the values of headers and service environment variables whose
names say they are secret (`auth`, `token`, `secret`, `key`, `cookie`, `pass`), and the fleet
token (`[report] token_file`). `redact` replaces each of them, however deep in a value; for
free text a product wrote itself (a log tail, where a secret other than the configured ones
may sit), `scrub` also replaces what follows an authorization scheme (`Bearer`, `Basic`,
...), the value of a sensitive `name=value`, `name: value` or `"name": "value"` (names with
`auth`, `token`, `secret`, `password`, `pwd`, `key`, `credential`, `cookie`, `session`), and
the password of a URL's `user:password@`. It may hide a little harmless text (`monkey: x`).
"""

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from greenlight.channels import Config

__all__ = ["REDACTED", "SENSITIVE", "redact", "scrub", "secrets_of"]

REDACTED = "[redacted]"
SENSITIVE = re.compile(r"auth|token|secret|key|cookie|pass", re.IGNORECASE)
_SHORTEST = 4  # a shorter "secret" would redact ordinary words
_SCHEMES = r"(?:bearer|basic|digest|token|negotiate)\s+"
_IN_TEXT = re.compile(
    rf"(?P<name>{_SCHEMES}|(?:[\w-]*(?:auth|token|secret|passw(?:or)?d|pwd|key|credential|"
    rf"cookie|session)[\w-]*)[\"']?\s*[:=]\s*[\"']?(?:{_SCHEMES})?)(?P<value>[^\s\"',;]+)",
    re.IGNORECASE)
_USERINFO = re.compile(r"(?P<name>\b[a-z][a-z0-9+.-]*://[^\s/:@]*:)(?P<value>[^\s/@]+)(?=@)",
                       re.IGNORECASE)


def redact(value: Any, secrets: list[str]) -> Any:
    """`value` with every secret replaced, in strings, lists and dicts, however deep."""
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, list):
        return [redact(v, secrets) for v in value]
    if isinstance(value, dict):
        return {k: redact(v, secrets) for k, v in value.items()}
    return value


def scrub(text: str, secrets: list[str]) -> str:
    """Free text (a log tail) with the known secrets replaced, and what looks like one too
    (see the module: after a scheme or a sensitive name, a URL's password)."""
    text = redact(text, secrets)
    for pattern in (_USERINFO, _IN_TEXT):
        text = pattern.sub(lambda m: m.group("name") + (
            m.group("value") if m.group("value") == REDACTED else REDACTED), text)
    return text


def _file_secret(path: Path) -> str | None:
    try:
        raw = path.read_bytes()[:4096].strip()
    except OSError:
        return None
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return None
    return text if len(text) >= _SHORTEST else None


def secrets_of(root: Path, config: "Config", values: dict[str, str]) -> list[str]:
    """The secrets `config` (with its placeholder `values`) names on this root, longest first:
    what `redact` replaces in anything shown or sent."""
    from greenlight.channels import expand

    found: set[str] = set()
    for c in config.check:
        token_file = getattr(c, "bearer_token_file", None)
        if token_file:
            secret = _file_secret(root / expand(token_file, values))
            if secret is not None:
                found.add(secret)
        for name, value in getattr(c, "headers", {}).items():
            if SENSITIVE.search(name) and len(expand(value, values)) >= _SHORTEST:
                found.add(expand(value, values))
    for service in config.service:
        found.update(expand(v, values) for k, v in service.env.items()
                     if SENSITIVE.search(k) and len(expand(v, values)) >= _SHORTEST)
    if config.report is not None:
        secret = _file_secret(root / config.report.token_file)
        if secret is not None:
            found.add(secret)
    return sorted(found, key=len, reverse=True)
