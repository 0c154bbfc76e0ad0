"""Untrusted files: malformed safetensors (against our loader and the official `safetensors`),
hostile shard indexes, non-regular files, crafted pickles, configs that disagree with tensors."""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import struct
import time
import zipfile

import numpy as np
import pytest
from conftest import CONFIGS

from gpt2_core import CheckpointError, load_pretrained, random_params, save_pretrained
from gpt2_core.folder_writer import MANIFEST
from gpt2_core.safetensors_io import SafetensorsError, load_file

CONFIG = CONFIGS["default"]


def _st(header: dict | bytes, data: bytes = b"", n: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if n is None else n) + raw + data


def _t(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


# Each file is rejected by the official parser; ours must reject it too.
MALFORMED = {
    "overlapping_ranges": _st({"a": _t(offsets=(0, 8)), "b": _t(offsets=(4, 12))}, b"\0" * 12),
    "gap_between_ranges": _st({"a": _t(offsets=(0, 8)), "b": _t(offsets=(12, 20))}, b"\0" * 20),
    "reversed_offsets": _st({"a": _t(shape=(0,), offsets=(8, 0))}, b"\0" * 8),
    "negative_shape": _st({"a": _t(shape=(-2,))}, b"\0" * 8),
    "string_offsets": _st({"a": _t(offsets=("0", "8"))}, b"\0" * 8),
    "float_offsets": _st({"a": _t(offsets=(0.0, 8.0))}, b"\0" * 8),
    "string_shape": _st({"a": _t(shape=("2",))}, b"\0" * 8),
    "data_past_the_end": _st({"a": _t(shape=(4,), offsets=(0, 16))}, b"\0" * 8),
    "trailing_bytes": _st({"a": _t()}, b"\0" * 12),
    "size_disagrees_with_shape": _st({"a": _t(shape=(3,))}, b"\0" * 8),
    "unknown_dtype": _st({"a": _t(dtype="F31")}, b"\0" * 8),
    "missing_dtype": _st({"a": {"shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8),
    "header_past_the_end": _st({"a": _t()}, b"\0" * 8, n=10_000),
    "huge_header_length": _st(b"{}", n=2**63),
    "not_json": _st(b"{garbage}", b""),
    "not_an_object": _st(b"[1, 2]", b""),
    "metadata_not_strings": _st({"__metadata__": {"x": 1}, "a": _t()}, b"\0" * 8),
    "entry_not_an_object": _st({"a": [1, 2]}, b""),
    "too_short": b"\x01\x00",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_safetensors_are_refused_by_us_and_by_safetensors(tmp_path, case):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "x.safetensors"
    path.write_bytes(MALFORMED[case])
    with pytest.raises(Exception):  # noqa: B017 - the official parser's error types vary
        safetensors_numpy.load_file(str(path))
    with pytest.raises(SafetensorsError, match=r"x\.safetensors"):
        load_file(path)


def test_huge_rank_is_refused(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(_st({"a": _t(shape=(1,) * 1000 + (2,))}, b"\0" * 8))
    with pytest.raises(SafetensorsError, match=r"tensor 'a' has rank 1001"):
        load_file(path)


def test_valid_safetensors_load_alike_here_and_in_safetensors(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "x.safetensors"
    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros((0, 4), np.float16),
               "c": np.array(3, np.int64)}
    safetensors_numpy.save_file(tensors, str(path))
    ours, theirs = load_file(path), safetensors_numpy.load_file(str(path))
    for name in tensors:
        np.testing.assert_array_equal(ours[name], theirs[name])


def _checkpoint(tmp_path, sharded=True):
    save_pretrained(tmp_path, CONFIG, random_params(CONFIG), max_shard_size=4000 if sharded else None)
    os.remove(tmp_path / MANIFEST)  # as a download: the index is what names the files
    return tmp_path


def _rewrite_index(directory, fn):
    path = directory / "model.safetensors.index.json"
    index = json.loads(path.read_text())
    fn(index["weight_map"])
    path.write_text(json.dumps(index))


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.safetensors", "sub/x.safetensors", ""])
def test_shard_names_outside_the_folder_are_refused(tmp_path, name):
    d = _checkpoint(tmp_path / "m")
    _rewrite_index(d, lambda m: m.update({"wte.weight": name}))
    with pytest.raises(CheckpointError, match=rf"names shard {name!r}, which is not a file name inside"):
        load_pretrained(d)


def test_shard_symlink_escaping_the_folder_is_refused(tmp_path):
    d = _checkpoint(tmp_path / "m")
    shard = sorted(d.glob("model-*.safetensors"))[0]
    os.replace(shard, tmp_path / "elsewhere.safetensors")
    os.symlink(tmp_path / "elsewhere.safetensors", shard)
    with pytest.raises(CheckpointError, match=rf"shard `{shard.name}` .* is a link to .*outside the model folder"):
        load_pretrained(d)


@pytest.mark.parametrize("text", ["{not json", "[1]", '{"weight_map": {"wte.weight": 3}}'])
def test_malformed_index_names_the_file(tmp_path, text):
    d = _checkpoint(tmp_path / "m")
    (d / "model.safetensors.index.json").write_text(text)
    with pytest.raises(CheckpointError, match=r"`model.safetensors.index.json`"):
        load_pretrained(d)


def test_model_safetensors_that_is_not_a_regular_file(tmp_path):
    d = _checkpoint(tmp_path / "m", sharded=False)
    os.remove(d / "model.safetensors")
    os.mkfifo(d / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"`model.safetensors` is not a regular file"):
        load_pretrained(d)
    os.remove(d / "model.safetensors")
    os.symlink("/dev/zero", d / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"`model.safetensors` is not a regular file"):
        load_pretrained(d)


def test_config_disagreeing_with_the_tensors_fails_at_once(tmp_path):
    d = _checkpoint(tmp_path / "m", sharded=False)
    cfg = json.loads((d / "config.json").read_text())
    cfg["n_layer"] = 100_000_000
    (d / "config.json").write_text(json.dumps(cfg))
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"`config.json` says n_layer=100000000, but the weights hold "
                       r"2 layers \(`h.0` to `h.1`\)"):
        load_pretrained(d)
    assert time.perf_counter() - start < 5


# ---- crafted pickles -------------------------------------------------------------------------

@pytest.fixture(autouse=False)
def torch():
    return pytest.importorskip("torch")


class _Storage:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel


class _FakeTensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        import torch._utils

        return (torch._utils._rebuild_tensor_v2, self.args)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            import torch

            return ("storage", torch.FloatStorage, obj.key, "cpu", obj.numel)
        return None


def _write_pickle(directory, state, storages, compress=False):
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(state)
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(directory / "pytorch_model.bin", "w", method) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        for key, data in storages.items():
            z.writestr(f"archive/data/{key}", data)
    CONFIG.to_json(directory / "config.json")


def _pickle_case(tmp_path, size, stride, offset=0, numel=4):
    s = _Storage("0", numel)
    _write_pickle(tmp_path, {"wte.weight": _FakeTensor(s, offset, size, stride)},
                  {"0": np.zeros(numel, np.float32).tobytes()})


@pytest.mark.parametrize("size,stride,offset", [((100, 100), (100, 1), 0), ((2, 2), (1000, 1), 0),
                                                ((2,), (1,), 3), ((2,), (1,), 99)])
def test_pickle_tensor_past_its_storage_is_refused(torch, tmp_path, size, stride, offset):
    _pickle_case(tmp_path, size, stride, offset)
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin.*\n.*tensor `wte.weight`: .*past its storage"):
        load_pretrained(tmp_path, allow_pickle=True)


def test_pickle_with_negative_stride_is_refused(torch, tmp_path):
    _pickle_case(tmp_path, (2,), (-1,), 1)
    with pytest.raises(CheckpointError, match=r"tensor `wte.weight`: malformed size"):
        load_pretrained(tmp_path, allow_pickle=True)


def test_pickle_zip_bomb_is_refused(torch, tmp_path):
    s = _Storage("0", 1 << 26)
    _write_pickle(tmp_path, {"wte.weight": _FakeTensor(s, 0, (1 << 26,), (1,))},
                  {"0": bytes(1 << 28)}, compress=True)
    assert (tmp_path / "pytorch_model.bin").stat().st_size < 2 << 20
    with pytest.raises(CheckpointError, match=r"member `archive/data/0` inflates past .* zip bomb"):
        load_pretrained(tmp_path, allow_pickle=True)


def test_pickle_non_tensor_value_and_missing_storage(torch, tmp_path):
    _write_pickle(tmp_path, {"wte.weight": 3, "wpe.weight": "x"}, {})
    with pytest.raises(CheckpointError, match=r"`wte.weight` is a int, not a tensor"):
        load_pretrained(tmp_path, allow_pickle=True)
    _write_pickle(tmp_path, {"wte.weight": _FakeTensor(_Storage("7", 4), 0, (4,), (1,))}, {})
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin.*\n.*storage `archive/data/7` is missing"):
        load_pretrained(tmp_path, allow_pickle=True)
    _write_pickle(tmp_path, [1, 2], {})
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin.*\n.*holds a list, not a state dict"):
        load_pretrained(tmp_path, allow_pickle=True)


def test_pickle_only_error_points_to_accepted_options(torch, tmp_path):
    _pickle_case(tmp_path, (2,), (1,))
    with pytest.raises(ValueError, match=r"`allow_pickle=True` to `from_pretrained` \(or `--allow-pickle`"):
        load_pretrained(tmp_path)
