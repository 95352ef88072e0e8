"""Delta updates: a patch from a release the machine already has to the new one.

A delta file is one JSON header line, then the patch. Patches work on the *uncompressed*
content of the archives (a tar), where a few changed files are a few changed byte ranges;
a gzip or zstd stream hides that. The header says how to compress the rebuilt content back
into the exact bytes of the full artifact (the "recipe": found by the pipeline when it builds
the delta, by trying the compressor settings until they reproduce the original). The client
then checks the rebuilt artifact against the full artifact's sha256 and length from the signed
channel file before anything uses it, so a bad patch can never install anything; on any
failure it downloads the full artifact instead.

Methods, chosen per artifact by measurement (bench/deltas.py):
  zstd-prefix  zstd with the old content as a raw prefix (`--patch-from`): very fast, strong
               on data that moved or barely changed, weaker on rebuilt native code;
  hdiffpatch   HDiffPatch through detools: the smallest on rebuilt native code, slower.
The pipeline builds zstd first and tries HDiffPatch only when the zstd patch is large for the
content (more than 5%) and the content fits the time budget.
"""

import gzip
import hashlib
import io
import json
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from greenlight.channels._records import Record

__all__ = ["DeltaError", "BuiltDelta", "apply_delta", "build_delta"]

FORMAT = "greenlight.delta/1"
_GZIP_LEVELS = (6, 9, 1, 2, 3, 4, 5, 7, 8)
_ZSTD_LEVELS = (3, 19, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
WEAK_RATIO = 0.05  # a zstd patch above this share of the content is worth a stronger method
HDIFF_BYTES_PER_SECOND = 12_000_000  # measured build speed, for the time budget


class DeltaError(Exception):
    """A delta that cannot be built or applied; the caller falls back to the full artifact."""


class Recipe(Record):
    format: str  # "tar" (no compression), "gzip" or "zstd"
    level: int | None = None
    gzip_header: str | None = None  # hex of the original gzip header, kept verbatim


class DeltaHeader(Record):
    format: str = FORMAT
    method: str
    base_sha256: str
    content_length: int
    content_sha256: str
    recipe: Recipe


# --- compression -------------------------------------------------------------------------
def _gzip_header_length(data: bytes) -> int:
    if data[:2] != b"\x1f\x8b" or data[2] != 8:
        raise DeltaError("not a deflate gzip stream")
    flags, pos = data[3], 10
    if flags & 4:
        pos += 2 + int.from_bytes(data[pos:pos + 2], "little")
    for bit in (8, 16):
        if flags & bit:
            pos = data.index(b"\0", pos) + 1
    if flags & 2:
        pos += 2
    return pos


def _gzip(content: bytes, level: int, header: bytes) -> bytes:
    deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, zlib.DEF_MEM_LEVEL, 0)
    body = deflate.compress(content) + deflate.flush()
    trailer = (zlib.crc32(content) & 0xFFFFFFFF).to_bytes(4, "little") + \
        (len(content) & 0xFFFFFFFF).to_bytes(4, "little")
    return header + body + trailer


def decompress(data: bytes) -> tuple[bytes, str]:
    import pyzstd

    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data), "gzip"
    if data[:4] == b"\x28\xb5\x2f\xfd":
        return pyzstd.decompress(data), "zstd"
    return data, "tar"


def recompress(content: bytes, recipe: Recipe) -> bytes:
    import pyzstd

    if recipe.format == "gzip":
        assert recipe.level is not None and recipe.gzip_header is not None
        return _gzip(content, recipe.level, bytes.fromhex(recipe.gzip_header))
    if recipe.format == "zstd":
        return pyzstd.compress(content, recipe.level or 3)
    return content


def find_recipe(artifact: bytes, content: bytes, kind: str) -> Recipe | None:
    """The compressor settings that reproduce `artifact` from `content`, if any do."""
    import pyzstd

    if kind == "tar":
        return Recipe(format="tar")
    if kind == "gzip":
        header = artifact[:_gzip_header_length(artifact)]
        for level in _GZIP_LEVELS:
            if _gzip(content, level, header) == artifact:
                return Recipe(format="gzip", level=level, gzip_header=header.hex())
        return None
    for level in _ZSTD_LEVELS:
        if pyzstd.compress(content, level) == artifact:
            return Recipe(format="zstd", level=level)
    return None


# --- methods -----------------------------------------------------------------------------
def _zstd_options(size: int, level: int) -> dict[int, int]:
    import pyzstd

    window = min(max(20, size.bit_length() + 1), 31)
    return {pyzstd.CParameter.compressionLevel: level, pyzstd.CParameter.windowLog: window,
            pyzstd.CParameter.enableLongDistanceMatching: 1}


def _zstd_diff(old: bytes, new: bytes) -> bytes:
    import pyzstd

    prefix = pyzstd.ZstdDict(old, is_raw=True)
    return pyzstd.compress(new, _zstd_options(len(old) + len(new), 9), prefix.as_prefix)


def _zstd_patch(old: bytes, patch: bytes) -> bytes:
    import pyzstd

    prefix = pyzstd.ZstdDict(old, is_raw=True)
    return pyzstd.decompress(patch, prefix.as_prefix, {pyzstd.DParameter.windowLogMax: 31})


def _hdiff_diff(old: bytes, new: bytes) -> bytes:
    import detools

    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp) / "a", Path(tmp) / "b"
        a.write_bytes(old)
        b.write_bytes(new)
        out = io.BytesIO()
        with a.open("rb") as fa, b.open("rb") as fb:
            detools.create_patch(fa, fb, out, compression="lzma", patch_type="hdiffpatch",
                                 algorithm="hdiffpatch")
        return out.getvalue()


def _hdiff_patch(old: bytes, patch: bytes) -> bytes:
    import detools

    out = io.BytesIO()
    detools.apply_patch(io.BytesIO(old), io.BytesIO(patch), out)
    return out.getvalue()


_APPLY = {"zstd-prefix": _zstd_patch, "hdiffpatch": _hdiff_patch}


@dataclass
class BuiltDelta:
    data: bytes
    method: str
    seconds: float
    tried: dict[str, int]


def build_delta(base: bytes, new: bytes, budget_seconds: float = 30.0) -> BuiltDelta | None:
    """A delta from the artifact `base` to the artifact `new` (both as published), or None
    when the new artifact's compression cannot be reproduced."""
    started = time.perf_counter()
    old_content, _ = decompress(base)
    new_content, kind = decompress(new)
    recipe = find_recipe(new, new_content, kind)
    if recipe is None:
        return None
    tried = {"zstd-prefix": len(patch := _zstd_diff(old_content, new_content))}
    method = "zstd-prefix"
    weak = len(patch) > WEAK_RATIO * len(new_content)
    affordable = len(new_content) / HDIFF_BYTES_PER_SECOND < budget_seconds
    if weak and affordable:
        stronger = _hdiff_diff(old_content, new_content)
        tried["hdiffpatch"] = len(stronger)
        if len(stronger) < len(patch):
            patch, method = stronger, "hdiffpatch"
    header = DeltaHeader(method=method, base_sha256=hashlib.sha256(base).hexdigest(),
                         content_length=len(new_content),
                         content_sha256=hashlib.sha256(new_content).hexdigest(), recipe=recipe)
    data = header.model_dump_json().encode() + b"\n" + patch
    return BuiltDelta(data, method, time.perf_counter() - started, tried)


def apply_delta(base: bytes, delta: bytes) -> bytes:
    """Rebuild the full artifact from `base` and `delta`; the caller verifies the result."""
    line, sep, patch = delta.partition(b"\n")
    try:
        header = DeltaHeader.model_validate(json.loads(line))
    except ValueError:
        raise DeltaError("not a Greenlight delta (bad header)") from None
    if not sep or header.format != FORMAT or header.method not in _APPLY:
        raise DeltaError(f"unsupported delta {header.format}/{header.method}")
    if hashlib.sha256(base).hexdigest() != header.base_sha256:
        raise DeltaError("the base artifact is not the one this delta was made from")
    old_content, _ = decompress(base)
    try:
        content = _APPLY[header.method](old_content, patch)
    except Exception as e:
        raise DeltaError(f"{header.method} patch failed: {type(e).__name__}: {e}") from None
    if len(content) != header.content_length or \
            hashlib.sha256(content).hexdigest() != header.content_sha256:
        raise DeltaError("the patched content does not match the delta's content hash")
    return recompress(content, header.recipe)
