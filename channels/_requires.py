"""Which Greenlight a channel entry needs: the oldest version whose reader knows every field
the entry uses.

Greenlight's readers keep what they do not know (as python-tuf keeps `unrecognized_fields`),
so an entry can say more without stranding an updater that was current when it was written,
provided the new field only informs. Most fields change a decision (which archives to take,
how the product runs, whom a rollout holds), and an updater that ignored one would act on
half the entry. So publish works out, from the fields the entry uses, the oldest Greenlight
that knows them all (`channels/schema/channel-fields.json`: each version's fields, kept
current by a test), and signs it into the entry as `requires`. An updater older than that
refuses the entry in one line, names what it needs, and changes nothing.

`requires` is left out when the first version's fields suffice: 0.1.0's reader refuses any
field it does not know, `requires` included, and an entry it can read stays readable by it.
Fields listed as `informational` never raise the requirement past the first tolerant reader
(0.2.0): they are facts an older updater may ignore without deciding otherwise.
"""

import json
from functools import cache
from pathlib import Path
from typing import Any

from greenlight.channels._versions import is_newer, sort_versions

__all__ = ["FIRST_TOLERANT", "fields_of_model", "known_fields", "manifest_required_version",
           "required_version", "unknown_fields", "used_fields"]

FIRST_TOLERANT = "0.2.0"
"""The first version that keeps the fields it does not know instead of refusing the entry."""


@cache
def _table() -> dict[str, Any]:
    path = Path(__file__).parent / "schema" / "channel-fields.json"
    return dict(json.loads(path.read_text()))


def known_fields(table: str = "versions") -> dict[str, frozenset[str]]:
    """Each version's fields of a channel entry (`table` "manifest": of a product manifest),
    oldest first (dotted paths; `*` a map's key, `[]` a list's items)."""
    versions = _table()[table]
    return {v: frozenset(versions[v]) for v in sort_versions(list(versions))}


@cache
def _maps(table: str = "versions") -> frozenset[str]:
    """The fields whose keys are names (a component's), not fields: before each `.*`."""
    return frozenset(path[:at] for fields in known_fields(table).values() for path in fields
                     for at in range(len(path)) if path.startswith(".*", at))


def used_fields(entry: object, prefix: str = "", table: str = "versions") -> set[str]:
    """The fields a channel entry (its JSON, as a dict; or a manifest's TOML, with `table`
    "manifest") uses, as paths of `known_fields`."""
    found: set[str] = set()
    if isinstance(entry, list):
        for item in entry:
            found |= used_fields(item, prefix + "[]", table)
    elif isinstance(entry, dict):
        mapping = prefix in _maps(table)
        for key, value in entry.items():
            path = f"{prefix}.*" if mapping else f"{prefix}.{key}" if prefix else str(key)
            if not mapping or table != "versions":
                found.add(path)
            found |= used_fields(value, path, table)
    return found


def unknown_fields(entry: dict[str, Any]) -> list[str]:
    """The fields of `entry` this version of Greenlight does not know (a newer one wrote it)."""
    from greenlight.channels._version import VERSION

    return sorted(used_fields(entry) - known_fields().get(VERSION, frozenset()))


def required_version(entry: dict[str, Any]) -> str | None:
    """The oldest Greenlight that can act on `entry`, or None when the first one can (see
    the module). A field no version knows names the newest known version plus one field
    too many: the table is behind the model, which its test catches.

    Raises:
        ValueError: the entry uses a field that no version of the table knows.
    """
    used = used_fields({k: v for k, v in entry.items() if k != "requires"})
    informational = frozenset(_table().get("informational", []))
    versions = known_fields()
    for version, fields in versions.items():
        tolerant = not is_newer(FIRST_TOLERANT, version)
        missing = used - fields - (informational if tolerant else frozenset())
        if not missing:
            return None if version == next(iter(versions)) else version
    newest = list(versions)[-1]
    raise ValueError(f"field {sorted(used - versions[newest])[0]} is in no version of "
                     "channels/schema/channel-fields.json")


def manifest_required_version(manifest: dict[str, Any]) -> str:
    """The oldest Greenlight whose reader knows every key a product manifest (its TOML, as a
    dict) uses: a manifest is read strictly, so an entry that carries one is signed with at
    least this `requires`.

    Raises:
        ValueError: the manifest uses a key that no version of the table knows.
    """
    used = used_fields(manifest, table="manifest")
    versions = known_fields("manifest")
    for version, fields in versions.items():
        if not used - fields:
            return version
    newest = list(versions)[-1]
    raise ValueError(f"manifest key {sorted(used - versions[newest])[0]} is in no version of "
                     "channels/schema/channel-fields.json")


def fields_of_model(schema: dict[str, Any], maps: bool = False) -> set[str]:
    """The fields a model's JSON schema declares, as `known_fields` writes them; with `maps`,
    a map of plain values (a manifest's `values`, `env`, `headers`) as its `.*` too."""
    definitions = schema.get("$defs", {})

    def walk(node: dict[str, Any], prefix: str) -> set[str]:
        out: set[str] = set()
        if "$ref" in node:
            return walk(definitions[node["$ref"].split("/")[-1]], prefix)
        for key in ("anyOf", "allOf", "oneOf"):
            for sub in node.get(key, []):
                out |= walk(sub, prefix)
        if node.get("type") == "array" and "items" in node:
            out |= walk(node["items"], prefix + "[]")
        for name, sub in node.get("properties", {}).items():
            path = f"{prefix}.{name}" if prefix else name
            out |= {path} | walk(sub, path)
        if isinstance(node.get("additionalProperties"), dict):
            out |= walk(node["additionalProperties"], prefix + ".*")
            if maps:
                out.add(prefix + ".*")
        return out

    return walk(schema, "")
