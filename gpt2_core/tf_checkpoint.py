"""Read OpenAI's original GPT-2 release (TensorFlow `model.ckpt.*` + `hparams.json`) without
TensorFlow.

A TensorFlow checkpoint is a "tensor bundle": `PREFIX.index` is a LevelDB table mapping each
tensor name to a `BundleEntryProto` (dtype, shape, shard, offset, size), and
`PREFIX.data-0000i-of-0000n` hold the raw little-endian bytes. The table and the two protos
are small enough to parse here: this reads what TensorFlow's `BundleWriter` writes
(uncompressed blocks, unsliced tensors).
"""

from __future__ import annotations

import json
import math
import os
import struct

import numpy as np

from gpt2_core.config import GPT2Config

_MAGIC = 0xDB4775248B80FB57
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64, 19: np.float16, 14: "bfloat16"}


class TFCheckpointError(ValueError):
    """Not a TensorFlow tensor bundle this reader understands."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _proto_fields(buf: bytes):
    """Yield (field number, wire type, value) of a protobuf message (varint/fixed/bytes)."""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise TFCheckpointError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def _block_entries(data: bytes, offset: int, size: int):
    block = data[offset:offset + size]
    if data[offset + size] != 0:
        raise TFCheckpointError("compressed index blocks are not supported")
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * num_restarts
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        yield key, block[pos:pos + value_len]
        pos += value_len


def _table(data: bytes) -> dict[bytes, bytes]:
    if len(data) < 48 or struct.unpack_from("<Q", data, len(data) - 8)[0] != _MAGIC:
        raise TFCheckpointError("not a TensorFlow checkpoint index (bad table magic)")
    footer = data[-48:]
    _, pos = _varint(footer, 0)
    _, pos = _varint(footer, pos)  # metaindex handle: unused
    index_offset, pos = _varint(footer, pos)
    index_size, _ = _varint(footer, pos)
    table: dict[bytes, bytes] = {}
    for _, handle in _block_entries(data, index_offset, index_size):
        offset, p = _varint(handle, 0)
        size, _ = _varint(handle, p)
        table.update(_block_entries(data, offset, size))
    return table


def _entry(raw: bytes) -> dict:
    entry = {"dtype": 0, "shape": [], "shard_id": 0, "offset": 0, "size": 0, "sliced": False}
    for field, _, value in _proto_fields(raw):
        if field == 1:
            entry["dtype"] = value
        elif field == 2:
            for f, _, dim in _proto_fields(value):
                if f == 2:
                    entry["shape"].append(next((v for ff, _, v in _proto_fields(dim) if ff == 1), 0))
        elif field in (3, 4, 5):
            entry[{3: "shard_id", 4: "offset", 5: "size"}[field]] = value
        elif field == 7:
            entry["sliced"] = True
    return entry


def read_checkpoint(prefix: str) -> dict[str, np.ndarray]:
    """All tensors of the bundle at `prefix` (e.g. `.../model.ckpt`), bf16 widened to float32."""
    index_path = prefix + ".index"
    if not os.path.isfile(index_path):
        raise FileNotFoundError(f"No TensorFlow checkpoint index at {index_path!r}.")
    with open(index_path, "rb") as f:
        data = f.read()
    try:
        table = _table(data)
    except (IndexError, struct.error, UnicodeDecodeError) as e:
        raise TFCheckpointError(f"{index_path!r} is a corrupt TensorFlow checkpoint index "
                                f"({e}).") from e
    num_shards = 1
    for field, _, value in _proto_fields(table.pop(b"", b"")):
        if field == 1:
            num_shards = value
    shards: dict[int, np.memmap] = {}
    out: dict[str, np.ndarray] = {}
    for key, raw in table.items():
        name, entry = key.decode(), _entry(raw)
        dtype = _DTYPES.get(entry["dtype"])
        if dtype is None or entry["sliced"]:
            raise TFCheckpointError(f"tensor {name!r}: unsupported dtype code {entry['dtype']} or slicing")
        sid = entry["shard_id"]
        if sid not in shards:
            path = f"{prefix}.data-{sid:05d}-of-{num_shards:05d}"
            if not os.path.isfile(path):
                raise FileNotFoundError(f"Checkpoint shard {path!r} is missing.")
            shards[sid] = np.memmap(path, dtype=np.uint8, mode="r")
        begin, nbytes = entry["offset"], entry["size"]
        itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
        shape = entry["shape"]
        if (begin + nbytes > len(shards[sid]) or nbytes != itemsize * math.prod(shape)
                or any(d < 0 for d in shape)):
            raise TFCheckpointError(
                f"tensor {name!r} (shape {shape}) needs bytes [{begin}, {begin + nbytes}) of "
                f"{prefix}.data-{sid:05d}-of-{num_shards:05d}, which holds {len(shards[sid])} "
                "(truncated or corrupt download?)")
        raw_bytes = shards[sid][begin:begin + nbytes]
        if dtype == "bfloat16":
            value = (raw_bytes.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            value = raw_bytes.view(dtype)
        out[name] = np.array(value.reshape(entry["shape"]))
    return out


def read_openai_release(directory: str) -> tuple[GPT2Config, dict[str, np.ndarray]]:
    """`hparams.json` + `model.ckpt.*` -> (config, tensors by their OpenAI names)."""
    hparams_path = os.path.join(directory, "hparams.json")
    try:
        with open(hparams_path, encoding="utf-8") as f:
            h = json.load(f)
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{hparams_path!r} is not valid JSON ({e}). OpenAI's release holds "
                         '{"n_vocab": ..., "n_ctx": ..., "n_embd": ..., "n_head": ..., '
                         '"n_layer": ...}.') from e
    try:
        if not isinstance(h, dict):
            raise KeyError("n_vocab")
        config = GPT2Config(vocab_size=h["n_vocab"], n_positions=h["n_ctx"], n_embd=h["n_embd"],
                            n_head=h["n_head"], n_layer=h["n_layer"], extra={"n_ctx": h["n_ctx"]})
    except KeyError as e:
        raise ValueError(f"{hparams_path!r} lacks {e}; expected n_vocab, n_ctx, n_embd, n_head, "
                         "n_layer.") from e
    prefix = os.path.join(directory, "model.ckpt")
    ckpt_file = os.path.join(directory, "checkpoint")
    if os.path.isfile(ckpt_file):  # TensorFlow's pointer to the latest checkpoint
        with open(ckpt_file, encoding="utf-8") as f:
            for line in f:
                if line.startswith("model_checkpoint_path:"):
                    prefix = os.path.join(directory, line.split(":", 1)[1].strip().strip('"'))
    return config, read_checkpoint(prefix)
