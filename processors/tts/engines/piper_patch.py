"""A piper voice with alignments: its ONNX patched once (piper.patch_voice_with_alignment) into a model cache.

Piper reports how long each phoneme lasted only when the voice's graph also outputs its durations tensor
(the ``Ceil`` node); stock voices do not. Patching is a graph edit of ~1 s for a 63 MB voice, so it is done
at start-up into ``cache_dir`` (under ``.data/models/``), never in place: the voice may sit in a read-only
package. The cached file is named after the source's path, size and modification time, so a replaced voice is
patched again; it is written to a temporary name and renamed, so two processes starting together never read
half a model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlignedModel:
    """What to load: a path (patched, cached or already patched upstream) or the patched bytes; and whether
    the graph gives alignments at all."""

    source: Path | bytes
    aligned: bool
    reason: str = ""  # why there are no alignments


def aligned_model(model: Path, cache_dir: Path | None) -> AlignedModel:
    """The voice patched for alignments (cached when `cache_dir` is writable), or the voice as it is."""
    cached = cache_dir / cached_name(model) if cache_dir is not None else None
    if cached is not None and cached.is_file():
        return AlignedModel(cached, True)
    try:
        import onnx
        from piper.patch_voice_with_alignment import add_alignment_output
    except ImportError as error:
        return AlignedModel(model, False, f"cannot patch for alignments: {error}")
    try:
        graph = onnx.load(str(model))
    except Exception as error:  # not an ONNX file: loading it for synthesis reports that, with its own words
        return AlignedModel(model, False, f"cannot read the voice's graph: {type(error).__name__}: {error}")
    try:
        add_alignment_output(graph)
    except ValueError as error:
        if "already marked as output" in str(error):
            return AlignedModel(model, True)  # patched upstream: use it as it is
        return AlignedModel(model, False, f"the voice has no phoneme-duration tensor to expose ({error})")
    if cached is None:
        return AlignedModel(graph.SerializeToString(), True)
    try:
        _write_atomically(graph.SerializeToString(), cached)
    except OSError as error:  # a read-only data dir still gets timings, patched in memory each start
        log.warning("piper voice cache not writable; patching in memory", extra={"path": str(cached),
                                                                               "error": str(error)})
        return AlignedModel(graph.SerializeToString(), True)
    log.info("piper voice patched for alignments", extra={"voice": model.name, "path": str(cached)})
    return AlignedModel(cached, True)


def cached_name(model: Path) -> str:
    """``<voice>.aligned-<key>.onnx``, the key from the source's resolved path, size and mtime."""
    stat = model.stat()
    key = hashlib.sha256(f"{model.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return f"{model.name.removesuffix('.onnx')}.aligned-{key}.onnx"


def _write_atomically(data: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide the cache from a service running as another user
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
