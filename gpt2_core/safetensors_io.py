"""safetensors files read by memory map (no copy until a tensor is used) and written atomically.

NumPy has no bfloat16: bf16 tensors are widened to float32, which is exact (a bf16 value is a
float32 with the low 16 mantissa bits zero). Writing bf16 rounds float32 to nearest even.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Mapping

import numpy as np

from gpt2_core._io import atomic_open

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U64": np.uint64, "U32": np.uint32, "U16": np.uint16,
    "U8": np.uint8, "BOOL": np.bool_,
}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}
_HEADER_LIMIT = 100_000_000


class SafetensorsError(ValueError):
    """A file that is not valid safetensors."""


def read_header(path: str) -> tuple[dict, int]:
    """Return `(header, data_start)` of a safetensors file."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise SafetensorsError(f"`{path}` is too short to be a safetensors file.")
        (n,) = struct.unpack("<Q", head)
        if n > _HEADER_LIMIT:
            raise SafetensorsError(f"`{path}` has a {n}-byte header: not a safetensors file.")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"`{path}` has a corrupt safetensors header: {e}.") from e
    if not isinstance(header, dict):
        raise SafetensorsError(f"`{path}` has a corrupt safetensors header.")
    return header, 8 + n


def load_file(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Map every tensor of a safetensors file. float32/float16 tensors are read-only views of
    the file mapping; bf16 is widened to float32."""
    path = os.fspath(path)
    header, start = read_header(path)
    header.pop("__metadata__", None)
    size = os.path.getsize(path)
    buf = np.memmap(path, dtype=np.uint8, mode="r") if size > start else np.zeros(0, np.uint8)
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        try:
            code, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError) as e:
            raise SafetensorsError(f"`{path}`: entry {name!r} is malformed: {info!r}.") from e
        itemsize = 2 if code == "BF16" else np.dtype(_DTYPES.get(code, np.uint8)).itemsize
        if code != "BF16" and code not in _DTYPES:
            raise SafetensorsError(f"`{path}`: tensor {name!r} has unsupported dtype {code!r}.")
        if not 0 <= begin <= end <= size - start or end - begin != itemsize * int(np.prod(shape)):
            raise SafetensorsError(
                f"`{path}`: tensor {name!r} (shape {list(shape)}, {code}) does not fit the file "
                "(truncated or corrupt download?)."
            )
        raw = buf[start + begin:start + end]
        if code == "BF16":
            out[name] = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(shape)
        else:
            out[name] = raw.view(_DTYPES[code]).reshape(shape)
    return out


def to_bfloat16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bit patterns (uint16), rounding to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = u + (((u >> 16) & 1) + 0x7FFF)
    return (rounded >> 16).astype(np.uint16)


def save_file(tensors: Mapping[str, np.ndarray], path: str | os.PathLike[str],
              dtype: str | None = None, metadata: Mapping[str, str] | None = None) -> None:
    """Write tensors (optionally cast to `dtype`: float32, float16 or bfloat16) atomically."""
    header: dict[str, object] = {"__metadata__": dict(metadata or {"format": "pt"})}
    blobs: list[bytes | memoryview] = []
    offset = 0
    for name, value in tensors.items():
        value = np.asarray(value)
        if dtype == "bfloat16":
            data, code = to_bfloat16_bits(value), "BF16"
        else:
            data = np.ascontiguousarray(value, dtype=np.dtype(dtype) if dtype else value.dtype)
            if data.dtype not in _CODES:
                raise ValueError(f"Tensor {name!r} has dtype {data.dtype}, which safetensors "
                                 "cannot store.")
            code = _CODES[data.dtype]
        nbytes = data.nbytes
        header[name] = {"dtype": code, "shape": list(value.shape),
                        "data_offsets": [offset, offset + nbytes]}
        blobs.append(memoryview(np.ascontiguousarray(data)).cast("B"))
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned
    with atomic_open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for blob in blobs:
            f.write(blob)


def release_pages(arr: np.ndarray) -> None:
    """Tell the kernel this process no longer needs the file pages behind `arr`.

    For a view of a read-only file mapping (what `load_file` returns): once a loader has copied
    a tensor into its framework, the pages it read would otherwise stay resident and count as a
    second copy of the weights. Reading `arr` afterwards still works (the pages come back from
    the file). A no-op for arrays that are not file mappings.
    """
    node, root = arr, None
    while isinstance(node, np.ndarray):
        root, node = node, node.base
    if not isinstance(node, mmap.mmap) or root is None or not hasattr(node, "madvise"):
        return
    page = mmap.PAGESIZE
    start = arr.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    begin = start - start % page
    end = min(len(node), start + arr.nbytes)
    try:
        node.madvise(mmap.MADV_DONTNEED, begin, end - begin)
    except (OSError, ValueError):
        pass  # only a memory optimisation
