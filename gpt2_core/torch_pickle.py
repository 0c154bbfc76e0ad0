"""Read PyTorch's zip checkpoints (`pytorch_model.bin`) without importing torch.

Only plain tensors are accepted: the unpickler resolves an allow-list of globals (the same idea
as `torch.load(weights_only=True)`), so a malicious pickle cannot run code. Callers must still
opt in (`allow_pickle=True`) because pickle is the format's only safety risk.
"""

from __future__ import annotations

import collections
import pickle
import zipfile

import numpy as np

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    if not size:
        return storage[storage_offset:storage_offset + 1].reshape(()).copy()
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[storage_offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
    )
    return np.array(view)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix

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
        kind, storage_type, key, _location, _numel = pid
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"Unsupported storage record {pid!r}.")
        raw = self._archive.read(f"{self._prefix}/data/{key}")
        if storage_type.dtype == "bfloat16":
            bits = np.frombuffer(raw, dtype=np.uint16)
            return (bits.astype(np.uint32) << 16).view(np.float32)
        return np.frombuffer(raw, dtype=storage_type.dtype)


def load_torch_zip(path: str) -> dict[str, np.ndarray]:
    """Tensors of a `torch.save` zip file as NumPy arrays (bf16 widened to float32)."""
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"`{path}` is not a zip-format PyTorch checkpoint (the legacy pre-1.6 tar format is "
            "not supported). Re-save it with a current torch or convert it to safetensors."
        )
    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(pkl) != 1:
            raise ValueError(f"`{path}` holds no single `data.pkl`: not a torch checkpoint.")
        prefix = pkl[0][: -len("/data.pkl")]
        with archive.open(pkl[0]) as f:
            state = _Unpickler(f, archive, prefix).load()
    if not isinstance(state, dict):
        raise ValueError(f"`{path}` does not hold a state dict (found {type(state).__name__}).")
    return {str(k): v for k, v in state.items()}
