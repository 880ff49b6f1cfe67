"""Reads PyTorch checkpoints (``torch.save`` files) into numpy arrays without torch, and without running code.

Two on-disk formats exist. Since torch 1.6 a checkpoint is a zip: ``<name>/data.pkl`` holds the pickled
object, ``<name>/data/<key>`` the raw bytes of each storage. Older torch (Wav2Lip's published checkpoints
were written by torch 1.1) wrote one stream: pickles of a magic number, a protocol version and system info,
the object's pickle, a pickle of the storage keys, then per storage an int64 element count and its bytes.
In both, a tensor is pickled as a call of ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
...)`` whose storage is a persistent id ``('storage', torch.FloatStorage, key, location, numel, ...)``.

The unpickler here imports nothing: a whitelisted handful of globals map to local stand-ins (tensors become
lazy ``TensorRef``s that read their bytes only when asked), and any other global becomes an inert
``OpaqueObject``. So a hostile file cannot execute code, and an optimiser state full of other objects
costs nothing unless read.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# Storage class name → element dtype; bfloat16 is read as its raw 16 bits and widened on load.
STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}

ProgressCallback = Callable[[int, int, str], None]  # (done, total, tensor name)


class CheckpointError(ValueError):
    """The file is not a readable PyTorch checkpoint, or does not hold what was asked for."""


@dataclass(frozen=True)
class StorageType:
    """Stand-in for ``torch.FloatStorage`` and its siblings: only the element type matters here."""

    name: str
    dtype: np.dtype[Any]


@dataclass(frozen=True)
class StorageRef:
    """A storage of the checkpoint: where its bytes are, read on demand."""

    key: str
    storage_type: StorageType
    numel: int
    source: _StorageSource


@dataclass(frozen=True)
class TensorRef:
    """A tensor of the checkpoint, not yet read: a strided view into a storage."""

    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def load(self) -> npt.NDArray[Any]:
        """The tensor's values as a new contiguous numpy array."""
        flat = self.storage.source.read(self.storage)
        if self.storage.storage_type.name == "BFloat16Storage":
            flat = (flat.astype(np.uint32) << 16).view(np.float32)
        if not self.shape:
            return flat[self.offset : self.offset + 1].reshape(()).copy()
        last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride, strict=True))
        if min(self.shape) > 0 and last >= flat.shape[0]:
            raise CheckpointError(f"tensor of shape {self.shape} runs past its storage {self.storage.key!r}")
        strides = tuple(s * flat.itemsize for s in self.stride)
        view = np.lib.stride_tricks.as_strided(flat[self.offset :], self.shape, strides, writeable=False)
        return np.array(view, order="C")


class OpaqueObject:
    """Whatever a non-whitelisted global would have built; keeps its name for error messages."""

    qualified_name = "?"

    def __init__(self, *_args: object, **_kwargs: object) -> None:
        pass

    def __setstate__(self, _state: object) -> None:
        pass

    def __repr__(self) -> str:
        return f"<{self.qualified_name} (not loaded)>"


class _StorageSource:
    """Reads storages' bytes from the checkpoint file, by key."""

    def read(self, storage: StorageRef) -> npt.NDArray[Any]:
        raise NotImplementedError


class _ZipStorageSource(_StorageSource):
    def __init__(self, path: Path, prefix: str, big_endian: bool) -> None:
        self.path = path
        self.prefix = prefix
        self.big_endian = big_endian

    def read(self, storage: StorageRef) -> npt.NDArray[Any]:
        with zipfile.ZipFile(self.path) as archive:
            try:
                data = archive.read(f"{self.prefix}/data/{storage.key}")
            except KeyError:
                raise CheckpointError(f"storage {storage.key!r} is missing from {self.path.name}") from None
        dtype = storage.storage_type.dtype
        if self.big_endian:
            dtype = dtype.newbyteorder(">")
        return _frombuffer(data, dtype, storage)


class _LegacyStorageSource(_StorageSource):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.offsets: dict[str, int] = {}

    def read(self, storage: StorageRef) -> npt.NDArray[Any]:
        if storage.key not in self.offsets:
            raise CheckpointError(f"storage {storage.key!r} is missing from {self.path.name}")
        dtype = storage.storage_type.dtype
        with self.path.open("rb") as handle:
            handle.seek(self.offsets[storage.key])
            data = handle.read(storage.numel * dtype.itemsize)
        return _frombuffer(data, dtype, storage)


def _frombuffer(data: bytes, dtype: np.dtype[Any], storage: StorageRef) -> npt.NDArray[Any]:
    if len(data) < storage.numel * dtype.itemsize:
        raise CheckpointError(f"storage {storage.key!r} is truncated: {len(data)} bytes for {storage.numel} elements")
    return np.frombuffer(data, dtype=dtype, count=storage.numel).astype(dtype.newbyteorder("="), copy=False)


def _rebuild_tensor(storage: StorageRef, offset: int, size: Iterable[int], stride: Iterable[int],
                    *_rest: object) -> TensorRef:
    if not isinstance(storage, StorageRef):
        raise CheckpointError("a tensor's storage is not a persistent storage reference")
    return TensorRef(storage, int(offset), tuple(int(n) for n in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data: TensorRef, *_rest: object) -> TensorRef:
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch", "Size"): tuple,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Maps torch's globals to stand-ins, storages to StorageRefs; imports nothing."""

    def __init__(self, file: BinaryIO, source: _StorageSource, storages: dict[str, StorageRef]) -> None:
        super().__init__(file)
        self.source = source
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return StorageType(name, STORAGE_DTYPES[name])
        return type(name, (OpaqueObject,), {"qualified_name": f"{module}.{name}"})

    def persistent_load(self, pid: Any) -> StorageRef:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointError(f"unsupported persistent id in the pickle: {pid!r:.80}")
        storage_type, key, _location, numel = pid[1], str(pid[2]), pid[3], int(pid[4])
        if not isinstance(storage_type, StorageType):
            raise CheckpointError(f"unsupported storage type {storage_type!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise CheckpointError("storage views (torch < 1.0 checkpoints) are not supported")
        ref = self.storages.get(key)
        if ref is None:
            ref = StorageRef(key, storage_type, numel, self.source)
            self.storages[key] = ref
        return ref


def read_checkpoint(path: Path | str) -> Any:
    """The checkpoint's pickled object, with every tensor a lazy TensorRef."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        return _read_legacy(path)
    except (pickle.UnpicklingError, EOFError, struct.error, zipfile.BadZipFile, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path.name} is not a readable PyTorch checkpoint ({error})") from None


def _read_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.count("/") == 1 and name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(f"{path.name} is a zip but not a PyTorch checkpoint (no single */data.pkl)")
        prefix = pickles[0].rsplit("/", 1)[0]
        names = set(archive.namelist())
        big_endian = f"{prefix}/byteorder" in names and archive.read(f"{prefix}/byteorder").strip() == b"big"
        payload = archive.read(pickles[0])
    source = _ZipStorageSource(path, prefix, big_endian)
    return _RestrictedUnpickler(io.BytesIO(payload), source, {}).load()


def _read_legacy(path: Path) -> Any:
    source = _LegacyStorageSource(path)
    storages: dict[str, StorageRef] = {}
    with path.open("rb") as handle:
        header = _RestrictedUnpickler(handle, source, storages)
        if header.load() != LEGACY_MAGIC_NUMBER:
            raise CheckpointError(f"{path.name} is neither a zip nor a legacy PyTorch checkpoint (bad magic number)")
        if header.load() != LEGACY_PROTOCOL_VERSION:
            raise CheckpointError(f"{path.name}: unsupported legacy checkpoint protocol version")
        header.load()  # system info: endianness and C type sizes, which little-endian x86 writers all share
        result = _RestrictedUnpickler(handle, source, storages).load()
        keys = _RestrictedUnpickler(handle, source, storages).load()
        for key in keys:
            (numel,) = struct.unpack("<q", handle.read(8))
            storage = storages.get(str(key))
            if storage is None:
                raise CheckpointError(f"{path.name}: storage {key!r} is written but never used")
            source.offsets[storage.key] = handle.tell()
            handle.seek(numel * storage.storage_type.dtype.itemsize, io.SEEK_CUR)
    return result


def find_state_dict(checkpoint: Any) -> dict[str, TensorRef]:
    """The model weights of a checkpoint: its ``state_dict`` entry (or the object itself), with the
    ``module.`` prefix of DataParallel-trained models removed; non-tensor entries are an error."""
    candidate = checkpoint
    if isinstance(checkpoint, Mapping):
        for key in ("state_dict", "model_state_dict", "model_state", "model"):
            if isinstance(checkpoint.get(key), Mapping):
                candidate = checkpoint[key]
                break
    if not isinstance(candidate, Mapping) or not candidate:
        raise CheckpointError("the checkpoint holds no state dict (a mapping of tensor names to tensors)")
    state: dict[str, TensorRef] = {}
    for name, value in candidate.items():
        if not isinstance(value, TensorRef):
            raise CheckpointError(f"state dict entry {name!r} is not a tensor but {value!r:.60}")
        state[str(name).removeprefix("module.")] = value
    return state


def load_tensors(refs: Mapping[str, TensorRef], progress: ProgressCallback | None = None) -> dict[str, np.ndarray]:
    """Read every tensor of ``refs`` into memory, reporting progress per tensor."""
    arrays: dict[str, np.ndarray] = {}
    for done, (name, ref) in enumerate(refs.items(), start=1):
        arrays[name] = ref.load()
        if progress is not None:
            progress(done, len(refs), name)
    return arrays
