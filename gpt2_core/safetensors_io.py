"""safetensors files read by memory map (no copy until a tensor is used) and written atomically.

NumPy has no bfloat16: bf16 tensors are widened to float32, which is exact (a bf16 value is a
float32 with the low 16 mantissa bits zero). Writing bf16 rounds float32 to nearest even.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import stat
import struct
from collections.abc import Callable, Mapping
from typing import BinaryIO

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


# Dtypes the format defines that NumPy cannot hold: named in the error, not mistaken for garbage.
_KNOWN_UNSUPPORTED = ("F8_E5M2", "F8_E4M3", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64")
_MAX_RANK = 32  # NumPy's own limit is 64; GPT-2 tensors have rank <= 2


def _open_regular(path: str):
    """Open `path` for reading, refusing devices, fifos and sockets before reading a byte."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SafetensorsError(f"`{path}` is not a regular file (a device, fifo or socket?).")
    return os.fdopen(fd, "rb")


def read_header(path: str) -> tuple[dict, int]:
    """Return `(header, data_start)` of a safetensors file, every entry validated.

    The checks are those of the official `safetensors` parser: the header fits the file and
    starts with `{`; each entry has a known dtype, a shape of non-negative ints and two int
    offsets; the entries, sorted by offset, tile the data section exactly (no gap, no overlap,
    nothing past the end); each entry's byte count equals its shape times its item size.
    """
    with _open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) != 8:
            raise SafetensorsError(f"`{path}` is too short to be a safetensors file.")
        (n,) = struct.unpack("<Q", head)
        if n > _HEADER_LIMIT or 8 + n > size:
            raise SafetensorsError(f"`{path}` declares a {n}-byte header in a {size}-byte file: "
                                   "not a safetensors file (truncated or corrupt download?).")
        raw = f.read(n)
    try:
        if not raw.startswith(b"{"):
            raise ValueError("the header does not start with '{'")
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise SafetensorsError(f"`{path}` has a corrupt safetensors header: {e}.") from e
    if not isinstance(header, dict):
        raise SafetensorsError(f"`{path}` has a corrupt safetensors header.")
    metadata = header.get("__metadata__")
    if metadata is not None and not (isinstance(metadata, dict) and all(
            isinstance(v, str) for v in metadata.values())):
        raise SafetensorsError(f"`{path}`: `__metadata__` must map strings to strings.")
    spans = sorted((_entry(path, name, info) + (name,) for name, info in header.items()
                    if name != "__metadata__"))
    expected = 0
    for begin, end, nbytes, name in spans:
        if begin != expected or end < begin:
            raise SafetensorsError(
                f"`{path}`: tensor {name!r} occupies bytes [{begin}, {end}), but the previous "
                f"tensor ends at {expected}: tensors must tile the data section without gaps or "
                "overlaps (corrupt or crafted file).")
        if end - begin != nbytes:
            raise SafetensorsError(
                f"`{path}`: tensor {name!r} (shape {header[name]['shape']}, "
                f"{header[name]['dtype']}) does not fit the file (truncated or corrupt "
                f"download?): it needs {nbytes} bytes and its offsets give {end - begin}.")
        expected = end
    if 8 + n + expected != size:
        raise SafetensorsError(
            f"`{path}`: the header describes {expected} bytes of data but the file holds "
            f"{size - 8 - n}; the tensor does not fit the file (truncated or corrupt download?).")
    return header, 8 + n


def _entry(path: str, name: str, info: object) -> tuple[int, int, int]:
    """(begin, end, byte count implied by shape and dtype) of one header entry."""
    def is_int(x: object) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    ok = isinstance(info, dict)
    code = info.get("dtype") if ok else None
    shape = info.get("shape") if ok else None
    offsets = info.get("data_offsets") if ok else None
    ok = (ok and isinstance(code, str) and isinstance(shape, list) and isinstance(offsets, list)
          and len(offsets) == 2 and all(is_int(o) and o >= 0 for o in offsets)
          and all(is_int(d) and d >= 0 for d in shape))
    if not ok:
        raise SafetensorsError(
            f"`{path}`: entry {name!r} is malformed: {str(info)[:200]} (expected dtype: str, "
            "shape: non-negative ints, data_offsets: two non-negative ints).")
    if len(shape) > _MAX_RANK:
        raise SafetensorsError(f"`{path}`: tensor {name!r} has rank {len(shape)}; at most "
                               f"{_MAX_RANK} is supported.")
    if code in _KNOWN_UNSUPPORTED or (code != "BF16" and code not in _DTYPES):
        raise SafetensorsError(f"`{path}`: tensor {name!r} has unsupported dtype {code!r}.")
    itemsize = 2 if code == "BF16" else np.dtype(_DTYPES[code]).itemsize
    return offsets[0], offsets[1], itemsize * math.prod(shape)


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
        code, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
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


def encode(tensors: Mapping[str, np.ndarray], dtype: str | None = None,
           metadata: Mapping[str, str] | None = None) -> Callable[[BinaryIO], None]:
    """A function writing `tensors` (optionally cast to `dtype`: float32, float16 or bfloat16)
    as safetensors into a binary file. Casting happens now, so errors surface before writing."""
    header: dict[str, object] = {"__metadata__": dict(metadata or {"format": "pt"})}
    blobs: list[memoryview] = []
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

    def write(f: BinaryIO) -> None:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for blob in blobs:
            f.write(blob)
    return write


def save_file(tensors: Mapping[str, np.ndarray], path: str | os.PathLike[str],
              dtype: str | None = None, metadata: Mapping[str, str] | None = None) -> None:
    """Write tensors (optionally cast to `dtype`: float32, float16 or bfloat16) atomically."""
    write = encode(tensors, dtype, metadata)
    with atomic_open(path, "wb") as f:
        write(f)


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
