"""`gpt2 convert`: any checkpoint layout the spec maps -> a Hugging Face safetensors directory
with a sha256 manifest."""

from __future__ import annotations

import hashlib
import os

from gpt2_core import layout
from gpt2_core.checkpoint import (
    CheckpointError,
    checkpoint_files,
    is_weight_file,
    load_pretrained,
    resolve_model_path,
    validate,
)
from gpt2_core.cli._progress import Progress
from gpt2_core.folder_writer import FolderWriter

TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "added_tokens.json")
MANIFEST = "SHA256SUMS"


def _read_source(src: str, allow_pickle: bool):
    if os.path.isfile(os.path.join(src, "hparams.json")):
        from gpt2_core.tf_checkpoint import read_openai_release

        config, state = read_openai_release(src)
        params, _ = layout.to_canonical(state, "openai_tf")
        problems = validate(config, params, head="lm")
        if problems:
            raise CheckpointError(src, problems)
        return config, params
    return load_pretrained(src, allow_pickle=allow_pickle)


def _tokenizer_files(src: str) -> dict[str, bytes]:
    files = {}
    for name in TOKENIZER_FILES:
        if os.path.isfile(os.path.join(src, name)):
            files[name] = _read(os.path.join(src, name))
    # OpenAI's release names its vocabulary encoder.json / vocab.bpe: the same files as
    # Hugging Face's vocab.json / merges.txt.
    for theirs, ours in (("encoder.json", "vocab.json"), ("vocab.bpe", "merges.txt")):
        if os.path.isfile(os.path.join(src, theirs)) and ours not in files:
            files[ours] = _read(os.path.join(src, theirs))
    return files


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert(src: str, dst: str, dtype: str | None = None, max_shard_size: int | None = None,
            allow_pickle: bool = False) -> list[tuple[str, str]]:
    """Convert and return the manifest rows (file name, sha256). The destination is written
    all or nothing (weights, config, tokenizer files and `SHA256SUMS` in one transaction)."""
    src = resolve_model_path(src)
    if os.path.abspath(src) == os.path.abspath(dst):
        raise ValueError("`DST` must differ from `SRC`: converting in place could lose the source.")
    if os.path.lexists(dst) and not os.path.isdir(dst):
        raise FileExistsError(f"`DST` {dst!r} exists and is not a folder. Pass a new folder name "
                              "(it is created), or an existing folder to replace.")
    config, params = _read_source(src, allow_pickle)
    progress = Progress(len(params), "reading", "tensors")
    materialised = {}
    for name, value in params.items():  # the disk reads happen here, from the memory maps
        materialised[name] = value.copy()
        progress.update()
    progress.close()
    files = {**checkpoint_files(dst, config, materialised, dtype=dtype,
                                max_shard_size=max_shard_size), **_tokenizer_files(src)}
    with FolderWriter(dst, sha256=True, supersedes=is_weight_file) as w:
        for name, content in files.items():
            w.write(name, content)
        rows = sorted((name, record["sha256"]) for name, record in w.records.items())
        w.write(MANIFEST, "".join(f"{d}  {n}\n" for n, d in rows))
    return rows
