"""Read PyTorch's zip checkpoints (`pytorch_model.bin`) without importing torch.

Only plain tensors are accepted: the unpickler resolves an allow-list of globals (the same idea
as `torch.load(weights_only=True)`), so a malicious pickle cannot run code. Callers must still
opt in (`allow_pickle=True`) because pickle is the format's only safety risk.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

PICKLE_NAME = "pytorch_model.bin"
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


# torch.save writes members uncompressed; a compressed member may inflate at most this much.
MAX_INFLATION = 16
MAX_PICKLE_BYTES = 256 << 20  # a state dict's pickle holds names and shapes, not data


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _Tensor:
    """A tensor record from the pickle, materialised once its key is known (for errors)."""

    def __init__(self, storage, storage_offset, size, stride, *_):
        self.storage, self.offset, self.size, self.stride = storage, storage_offset, size, stride

    def materialise(self, where: str) -> np.ndarray:
        storage, offset, size, stride = self.storage, self.offset, self.size, self.stride
        if not isinstance(storage, np.ndarray):
            raise ValueError(f"{where}: its storage is {type(storage).__name__}, not a storage record")
        ints = (isinstance(offset, int) and isinstance(size, (tuple, list))
                and isinstance(stride, (tuple, list)) and len(size) == len(stride)
                and all(isinstance(d, int) and d >= 0 for d in size)
                and all(isinstance(d, int) and d >= 0 for d in stride) and len(size) <= 32)
        if not ints or offset < 0:
            raise ValueError(f"{where}: malformed size {size!r}, stride {stride!r} or offset "
                             f"{offset!r}")
        if any(d == 0 for d in size):
            return np.zeros(tuple(size), storage.dtype)
        last = offset + sum((d - 1) * st for d, st in zip(size, stride))
        if last >= len(storage):
            raise ValueError(f"{where}: size {list(size)}, stride {list(stride)} and offset "
                             f"{offset} reach element {last}, past its storage of {len(storage)} "
                             "elements (truncated or crafted file)")
        view = np.lib.stride_tricks.as_strided(
            storage[offset:], shape=tuple(size),
            strides=tuple(st * storage.dtype.itemsize for st in stride))
        return np.array(view)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *rest):
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(
            f"Refusing to load `{module}.{name}` from a PyTorch checkpoint: only plain tensors "
            "are allowed. Convert the checkpoint to safetensors."
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)):
            raise pickle.UnpicklingError(f"Unsupported storage record {pid!r}.")
        storage_type, key = pid[1], pid[2]
        if key not in self._storages:
            raw = _read_member(self._archive, f"{self._prefix}/data/{key}")
            itemsize = 2 if storage_type.dtype == "bfloat16" else np.dtype(storage_type.dtype).itemsize
            raw = raw[:len(raw) - len(raw) % itemsize]
            if storage_type.dtype == "bfloat16":
                bits = np.frombuffer(raw, dtype=np.uint16)
                self._storages[key] = (bits.astype(np.uint32) << 16).view(np.float32)
            else:
                self._storages[key] = np.frombuffer(raw, dtype=storage_type.dtype)
        return self._storages[key]


def _read_member(archive: zipfile.ZipFile, name: str, limit: int | None = None) -> bytes:
    """A member's bytes, refusing one that inflates past its bound (a zip bomb)."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise pickle.UnpicklingError(f"storage `{name}` is missing from the archive") from None
    if limit is None:
        limit = info.file_size
        if info.compress_type != zipfile.ZIP_STORED:
            limit = min(limit, MAX_INFLATION * max(info.compress_size, 1 << 16))
    with archive.open(info) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise pickle.UnpicklingError(
            f"member `{name}` inflates past {limit} bytes ({info.compress_size} compressed): "
            "refused as a zip bomb (torch.save writes members uncompressed)")
    return data


def load_torch_zip(path: str) -> dict[str, np.ndarray]:
    """Tensors of a `torch.save` zip file as NumPy arrays (bf16 widened to float32).

    Raises:
        CheckpointError: naming the file (and the key) for anything but a dict of plain tensors.
    """
    from gpt2_core.checkpoint import CheckpointError

    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"`{path}` is not a zip-format PyTorch checkpoint (the legacy pre-1.6 tar format is "
            "not supported). Re-save it with a current torch or convert it to safetensors."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            pkl = [n for n in archive.namelist() if n.endswith("data.pkl")]
            if len(pkl) != 1:
                raise ValueError(f"`{path}` holds no single `data.pkl`: not a torch checkpoint.")
            prefix = pkl[0][: -len("/data.pkl")]
            raw = _read_member(archive, pkl[0], limit=MAX_PICKLE_BYTES)
            state = _Unpickler(io.BytesIO(raw), archive, prefix).load()
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, TypeError,
            KeyError, AttributeError, IndexError, struct.error, RecursionError, OSError) as e:
        if isinstance(e, ValueError) and str(e).startswith(f"`{path}`"):
            raise
        raise CheckpointError(path, [f"`{PICKLE_NAME}` is not a plain state dict: {e}"]) from e
    if not isinstance(state, dict):
        raise CheckpointError(path, [f"it holds a {type(state).__name__}, not a state dict"])
    out, problems = {}, []
    for key, value in state.items():
        if not isinstance(key, str):
            problems.append(f"key {key!r} is not a string")
        elif not isinstance(value, _Tensor):
            problems.append(f"`{key}` is a {type(value).__name__}, not a tensor")
        else:
            try:
                out[key] = value.materialise(f"tensor `{key}`")
            except ValueError as e:
                problems.append(str(e))
    if problems:
        raise CheckpointError(path, problems)
    return out
