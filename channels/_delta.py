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
  zstd-prefix        zstd with the old content as a raw prefix (`--patch-from`): very fast,
                     strong on data that moved or barely changed, weak on rebuilt native code,
                     where every shifted address breaks a match;
  hdiffpatch-chunks  HDiffPatch's difference encoding (approximate matches stored as bytewise
                     differences, which turns shifted addresses into runs of small numbers),
                     on chunks of the new content, each against the old content around the same
                     relative place, built in parallel (the library releases the GIL), each
                     chunk's patch compressed with zstd.
The pipeline probes with zstd at level 1; content it already covers well (a patch under 5%
of it) gets zstd at level 9, and only weak content pays for HDiffPatch, whose result is kept
when it is smaller than the probe's. Content that moved further than a chunk's margin is what
zstd's long-distance window still finds, which is why the smaller of the two is kept.
"""

import gzip
import hashlib
import itertools
import json
import os
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from greenlight.channels._records import Record

__all__ = ["DeltaError", "BuiltDelta", "apply_delta", "build_delta"]

FORMAT = "greenlight.delta/1"
_GZIP_LEVELS = (6, 9, 1, 2, 3, 4, 5, 7, 8)
_ZSTD_LEVELS = (3, 19, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
MIN_BASE = 64  # bytes of base content below which a delta cannot pay
WEAK_RATIO = 0.05  # a zstd patch above this share of the content is worth a stronger method
HDIFF_BYTES_PER_SECOND = 10_000_000  # measured build speed on one core, for the time budget
# HDiffPatch chunks: 2 MiB of new content each, against the old content at the same relative
# place +-128 KiB (bench/README.md: 0.6-0.9 s and 1.11 MB on the compiled pair, against
# 1.5-2 s whole; wider margins find more matches, narrower ones are faster)
CHUNK = 2 << 20
MARGIN = 128 << 10
_TABLE = struct.Struct("<QQQQ")  # one chunk: old window start, end; new length; patch length


class DeltaError(Exception):
    """A delta that cannot be built or applied; the caller falls back to the full artifact."""


class _Recipe(Record):
    format: str  # "tar" (no compression), "gzip" or "zstd"
    level: int | None = None
    gzip_header: str | None = None  # hex of the original gzip header, kept verbatim


class _DeltaHeader(Record):
    format: str = FORMAT
    method: str
    base_sha256: str
    content_length: int
    content_sha256: str
    recipe: _Recipe


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


def _decompress(data: bytes) -> tuple[bytes, str]:
    import pyzstd

    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data), "gzip"
    if data[:4] == b"\x28\xb5\x2f\xfd":
        return pyzstd.decompress(data), "zstd"
    return data, "tar"


def _recompress(content: bytes, recipe: _Recipe) -> bytes:
    import pyzstd

    if recipe.format == "gzip":
        assert recipe.level is not None and recipe.gzip_header is not None
        return _gzip(content, recipe.level, bytes.fromhex(recipe.gzip_header))
    if recipe.format == "zstd":
        return pyzstd.compress(content, recipe.level or 3)
    return content


def _find_recipe(artifact: bytes, content: bytes, kind: str) -> _Recipe | None:
    """The compressor settings that reproduce `artifact` from `content`, if any do."""
    import pyzstd

    if kind == "tar":
        return _Recipe(format="tar")
    if kind == "gzip":
        header = artifact[:_gzip_header_length(artifact)]
        for level in _GZIP_LEVELS:
            if _gzip(content, level, header) == artifact:
                return _Recipe(format="gzip", level=level, gzip_header=header.hex())
        return None
    for level in _ZSTD_LEVELS:
        if pyzstd.compress(content, level) == artifact:
            return _Recipe(format="zstd", level=level)
    return None


# --- methods -----------------------------------------------------------------------------
def _zstd_options(size: int, level: int) -> dict[int, int]:
    import pyzstd

    window = min(max(20, size.bit_length() + 1), 31)
    return {pyzstd.CParameter.compressionLevel: level, pyzstd.CParameter.windowLog: window,
            pyzstd.CParameter.enableLongDistanceMatching: 1}


def _zstd_diff(old: bytes, new: bytes, level: int) -> bytes:
    import pyzstd

    prefix = pyzstd.ZstdDict(old, is_raw=True)
    return pyzstd.compress(new, _zstd_options(len(old) + len(new), level), prefix.as_prefix)


def _zstd_patch(old: bytes, patch: bytes) -> bytes:
    import pyzstd

    prefix = pyzstd.ZstdDict(old, is_raw=True)
    return pyzstd.decompress(patch, prefix.as_prefix, {pyzstd.DParameter.windowLogMax: 31})


def _chunks(old_size: int, new_size: int) -> list[tuple[int, int, int, int]]:
    """(new start, new end, old start, old end) of each chunk: the new content in equal
    pieces, each with the old content around the same relative place, plus a margin."""
    count = max(1, -(-new_size // CHUNK))
    if count == 1:
        return [(0, new_size, 0, old_size)]
    scale = old_size / new_size
    bounds = [new_size * i // count for i in range(count + 1)]
    return [(start, end, max(0, int(start * scale) - MARGIN),
             min(old_size, int(end * scale) + MARGIN))
            for start, end in itertools.pairwise(bounds)]


MAX_WORKERS = 8  # each HDiffPatch chunk in flight holds ~32 MB (suffix array, match cache)


def _workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(MAX_WORKERS, cores or 1))


def _hdiff_diff(old: bytes, new: bytes) -> bytes:
    import hdiffpatch

    compression = hdiffpatch.ZStdConfig(level=9)
    chunks = _chunks(len(old), len(new))

    def one(chunk: tuple[int, int, int, int]) -> bytes:
        start, end, old_start, old_end = chunk
        return hdiffpatch.diff(old[old_start:old_end], new[start:end], compression,
                               validate=False, big_cache_match=True)

    with ThreadPoolExecutor(min(_workers(), len(chunks))) as pool:
        patches = list(pool.map(one, chunks))
    table = b"".join(_TABLE.pack(old_start, old_end, end - start, len(patch))
                     for (start, end, old_start, old_end), patch
                     in zip(chunks, patches, strict=True))
    return struct.pack("<I", len(chunks)) + table + b"".join(patches)


def _hdiff_patch(old: bytes, patch: bytes) -> bytes:
    import hdiffpatch

    body = patch
    count = int.from_bytes(body[:4], "little")
    offset = 4 + count * _TABLE.size
    if count < 1 or offset > len(body):
        raise DeltaError("bad chunk table")
    out = []
    for i in range(count):
        old_start, old_end, new_length, length = _TABLE.unpack_from(body, 4 + i * _TABLE.size)
        if not old_start <= old_end <= len(old) or offset + length > len(body):
            raise DeltaError(f"chunk {i} lies outside the base or the patch")
        part = hdiffpatch.apply(old[old_start:old_end], body[offset:offset + length])
        if len(part) != new_length:
            raise DeltaError(f"chunk {i} rebuilt {len(part)} bytes, not {new_length}")
        out.append(part)
        offset += length
    if offset != len(body):
        raise DeltaError("bytes after the last chunk")
    return b"".join(out)


_APPLY = {"zstd-prefix": _zstd_patch, "hdiffpatch-chunks": _hdiff_patch}


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
    old_content, _ = _decompress(base)
    new_content, kind = _decompress(new)
    if len(old_content) < MIN_BASE:
        return None  # nothing to reuse (and zstd takes no prefix this short)
    recipe = _find_recipe(new, new_content, kind)
    if recipe is None:
        return None
    patch, method = _zstd_diff(old_content, new_content, 1), "zstd-prefix"
    tried = {"zstd-prefix/1": len(patch)}
    if len(patch) <= WEAK_RATIO * len(new_content):
        stronger, label = _zstd_diff(old_content, new_content, 9), "zstd-prefix/9"
    elif len(new_content) / (HDIFF_BYTES_PER_SECOND * _workers()) < budget_seconds:
        stronger, label = _hdiff_diff(old_content, new_content), "hdiffpatch-chunks"
    else:
        stronger, label = None, ""
    if stronger is not None:
        tried[label] = len(stronger)
        if len(stronger) < len(patch):
            patch, method = stronger, label.partition("/")[0]
    header = _DeltaHeader(method=method, base_sha256=hashlib.sha256(base).hexdigest(),
                         content_length=len(new_content),
                         content_sha256=hashlib.sha256(new_content).hexdigest(), recipe=recipe)
    data = header.model_dump_json().encode() + b"\n" + patch
    return BuiltDelta(data, method, time.perf_counter() - started, tried)


def apply_delta(base: bytes, delta: bytes) -> bytes:
    """Rebuild the full artifact from `base` and `delta`; the caller verifies the result.

    Raises:
        DeltaError: not a delta this version applies, made from another base, or a patch
            that fails or does not give the content the delta names.
    """
    line, sep, patch = delta.partition(b"\n")
    try:
        header = _DeltaHeader.model_validate(json.loads(line))
    except ValueError:
        raise DeltaError("not a Greenlight delta (bad header)") from None
    if not sep or header.format != FORMAT or header.method not in _APPLY:
        raise DeltaError(f"unsupported delta {header.format}/{header.method}")
    if hashlib.sha256(base).hexdigest() != header.base_sha256:
        raise DeltaError("the base artifact is not the one this delta was made from")
    old_content, _ = _decompress(base)
    try:
        content = _APPLY[header.method](old_content, patch)
    except Exception as e:
        raise DeltaError(f"{header.method} patch failed: {type(e).__name__}: {e}") from None
    if len(content) != header.content_length or \
            hashlib.sha256(content).hexdigest() != header.content_sha256:
        raise DeltaError("the patched content does not match the delta's content hash")
    return _recompress(content, header.recipe)
