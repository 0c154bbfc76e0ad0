"""Load and save Hugging Face GPT-2 model directories.

A directory holds `config.json` and the weights as `model.safetensors`, a sharded
`model.safetensors.index.json` + shards, or (opt-in) `pytorch_model.bin`. Loading checks the
whole checkpoint before returning anything: one `CheckpointError` lists every problem.
"""

from __future__ import annotations

import glob
import json
import os
import stat
from collections.abc import Mapping

import numpy as np

from gpt2_core import folder_writer, layout
from gpt2_core.config import GPT2Config
from gpt2_core.safetensors_io import SafetensorsError, encode, load_file

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
PICKLE_WEIGHTS = "pytorch_model.bin"
FLOAT_DTYPES = ("float32", "float16", "bfloat16")


class CheckpointError(ValueError):
    """A checkpoint that is not a valid GPT-2 checkpoint for its config. Lists every problem.

    `action="save"` words it for tensors refused by `save_pretrained`."""

    def __init__(self, source: str, problems: list[str], action: str = "load"):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        what = ("Cannot save these tensors as a GPT-2 checkpoint to" if action == "save"
                else "Cannot load the GPT-2 checkpoint at")
        super().__init__(f"{what} {source!r}:\n{lines}")


class PickleNotAllowedError(ValueError):
    """A folder whose only weights are a pickle, read only on request."""


def resolve_model_path(name_or_path: str | os.PathLike[str]) -> str:
    """A local directory, or a hub name (`gpt2`, `openai-community/gpt2`) found in the local
    Hugging Face cache. Nothing is downloaded."""
    path = os.fspath(name_or_path)
    if os.path.isdir(path):
        return path
    recovered = folder_writer.recover(path)  # a save interrupted between its two renames
    if recovered is not None:
        return recovered
    repo_ids = [path] if "/" in path else [path, f"openai-community/{path}"]
    roots = [os.environ.get("HF_HUB_CACHE"),
             os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else None,
             os.path.join(os.path.expanduser("~"), ".cache", "huggingface", "hub")]
    for root in filter(None, roots):
        for repo_id in repo_ids:
            repo = os.path.join(root, "models--" + repo_id.replace("/", "--"))
            ref = os.path.join(repo, "refs", "main")
            snapshots = []
            if os.path.isfile(ref):
                with open(ref, encoding="utf-8") as f:
                    snapshots.append(os.path.join(repo, "snapshots", f.read().strip()))
            snapshots += sorted(glob.glob(os.path.join(repo, "snapshots", "*")))
            for snap in snapshots:
                if os.path.isfile(os.path.join(snap, "config.json")):
                    return snap
    looks_like_hub_id = not path.startswith((".", "/", "~")) and path.count("/") <= 1
    fetch = (f", or download it where a network is available with `huggingface-cli download "
             f"{repo_ids[-1]}`") if looks_like_hub_id else ""
    raise FileNotFoundError(
        f"No GPT-2 model at {path!r}: it is not a directory, and no snapshot of it is in the "
        "local Hugging Face cache (~/.cache/huggingface/hub, or $HF_HUB_CACHE). Pass a "
        "directory holding `config.json` and `model.safetensors` (plus `vocab.json` and "
        f"`merges.txt` for the tokenizer){fetch}."
    )


def _is_regular(path: str) -> bool:
    """A regular file (or a link to one); raises for a device, fifo or socket of that name."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(mode):
        raise CheckpointError(os.path.dirname(path), [
            f"`{os.path.basename(path)}` is not a regular file (a folder, device, fifo or "
            "socket); a checkpoint's weights are ordinary files"])
    return True


def read_state(directory: str, allow_pickle: bool = False) -> dict[str, np.ndarray]:
    """The raw tensors of a model directory, by their checkpoint names (memory-mapped)."""
    single = os.path.join(directory, SAFE_WEIGHTS)
    index = os.path.join(directory, SAFE_INDEX)
    pickled = os.path.join(directory, PICKLE_WEIGHTS)
    try:
        if _is_regular(single):
            return load_file(single)
        if _is_regular(index):
            return _read_sharded(directory, index)
    except SafetensorsError as e:
        raise CheckpointError(directory, [str(e)]) from e
    if _is_regular(pickled):
        if not allow_pickle:
            raise PickleNotAllowedError(
                f"{directory!r} holds only `{PICKLE_WEIGHTS}`, a pickle file, which is not "
                "loaded by default. Pass `allow_pickle=True` to `from_pretrained` (or "
                "`--allow-pickle` to the `gpt2` command) to load it (plain tensors only, as "
                "`torch.load(weights_only=True)`), or convert it once with "
                "`gpt2 convert SRC DST --allow-pickle`."
            )
        from gpt2_core.torch_pickle import load_torch_zip

        return load_torch_zip(pickled)
    raise FileNotFoundError(
        f"No weights in {directory!r}. Expected `{SAFE_WEIGHTS}`, `{SAFE_INDEX}` with its "
        f"shards, or `{PICKLE_WEIGHTS}` (with allow_pickle=True). Found: "
        f"{sorted(os.listdir(directory))}."
    )


def _read_index(directory: str, index_path: str) -> dict[str, str]:
    """The index's `weight_map` (tensor name -> shard file name), checked."""
    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(directory, [f"`{SAFE_INDEX}` is not valid JSON ({e})"]) from e
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(directory, [f"`{SAFE_INDEX}` has no `weight_map` (an object "
                                          "mapping tensor names to shard files)"])
    bad = {k: v for k, v in weight_map.items() if not isinstance(v, str)}
    if bad:
        raise CheckpointError(directory, [f"`{SAFE_INDEX}` maps {k!r} to {v!r}; shard names "
                                          "are strings" for k, v in list(bad.items())[:5]])
    return weight_map


def _shard_path(directory: str, shard: str) -> str:
    """`shard` inside `directory`: a plain file name whose target (links followed) stays in the
    folder, or in its repository's blob store for a Hugging Face cache snapshot."""
    try:
        folder_writer.check_file_name(shard)
    except ValueError:
        raise CheckpointError(directory, [
            f"`{SAFE_INDEX}` names shard {shard!r}, which is not a file name inside the model "
            "folder (absolute paths, folders and `..` are refused)"]) from None
    path = os.path.join(directory, shard)
    real, root = os.path.realpath(path), os.path.realpath(directory)
    roots = [root]
    if os.path.basename(os.path.dirname(root)) == "snapshots":
        roots.append(os.path.dirname(os.path.dirname(root)))  # models--org--name/blobs/...
    if not any(real.startswith(r + os.sep) for r in roots):
        raise CheckpointError(directory, [
            f"shard `{shard}` named in `{SAFE_INDEX}` is a link to {real!r}, outside the model "
            "folder"])
    return path


def _read_sharded(directory: str, index_path: str) -> dict[str, np.ndarray]:
    weight_map = _read_index(directory, index_path)
    paths = {s: _shard_path(directory, s) for s in sorted(set(weight_map.values()))}
    missing = sorted(s for s, p in paths.items() if not _is_regular(p))
    if missing:
        raise CheckpointError(directory, [f"shard `{s}` named in `{SAFE_INDEX}` is missing"
                                          for s in missing])
    state: dict[str, np.ndarray] = {}
    for shard, path in paths.items():
        tensors = load_file(path)
        twice = sorted(set(tensors) & set(state))
        if twice:
            raise CheckpointError(directory, [f"tensor `{n}` is stored in more than one shard "
                                              f"(again in `{shard}`)" for n in twice[:5]])
        state.update(tensors)
    return state


def check_sizes(config: GPT2Config, params: Mapping[str, np.ndarray], source: str) -> None:
    """Compare the config's sizes with the tensors' before anything is built from the config,
    so a config that disagrees fails at once instead of allocating for it."""
    layers = {int(n.split(".")[1]) for n in params if n.startswith("h.") and n.split(".")[1].isdigit()}
    stored = max(layers) + 1 if layers else 0
    problems = []
    if layers and stored != config.n_layer:
        problems.append(f"`config.json` says n_layer={config.n_layer}, but the weights hold "
                        f"{stored} layers (`h.0` to `h.{stored - 1}`)")
    wte, wpe = params.get("wte.weight"), params.get("wpe.weight")
    for name, value, want in (("wte.weight", wte, (config.vocab_size, config.n_embd)),
                              ("wpe.weight", wpe, (config.n_positions, config.n_embd))):
        if value is not None and tuple(value.shape) != want:
            problems.append(f"`config.json` implies `{name}` of shape {list(want)} "
                            f"(vocab_size/n_positions, n_embd), but the weights hold "
                            f"{list(value.shape)}")
    if problems:
        raise CheckpointError(source, problems)


def validate(config: GPT2Config, params: Mapping[str, np.ndarray], head: str | None = None,
             check_finite: bool = True) -> list[str]:
    """Every problem with `params` as weights of `config`; empty when they are valid.

    `head=None` accepts the base model plus any complete head found in `params`.
    """
    problems: list[str] = []
    for name in params:
        # Dict order matters: `self_attn.q_proj` (Llama) must win over `attn.q_proj` (GPT-J).
        desc = next((d for marker, d in layout.FOREIGN_MARKERS.items() if marker in name), None)
        if desc:
            return [f"this looks like {desc}, not GPT-2 (found `{name}`; expected GPT-2 "
                    "names like `h.0.attn.c_attn.weight`)"]
    heads = [head] if head else [h for h in layout.HEADS if h != "base"]
    expected = {s.name: s for s in layout.weight_layout(config, "base")}
    for h in heads:
        for s in layout.head_specs(config, h):
            if head or s.name in params:
                expected[s.name] = s
    for name in sorted(set(expected) - set(params), key=_natural):
        problems.append(f"missing tensor `{name}` (shape {list(expected[name].shape)})")
    for name in sorted(set(params) - set(expected), key=_natural):
        hint = ""
        if name == "lm_head.weight":
            hint = " (the config ties it to `wte.weight`; set tie_word_embeddings=false)"
        problems.append(f"unexpected tensor `{name}`{hint}")
    for name, spec in expected.items():
        value = params.get(name)
        if value is None:
            continue
        if tuple(value.shape) != spec.shape:
            problems.append(f"`{name}` has shape {list(value.shape)}; the config implies "
                            f"{list(spec.shape)}")
        elif not np.issubdtype(value.dtype, np.floating):
            problems.append(f"`{name}` has dtype {value.dtype}; expected a float dtype")
        elif check_finite and not np.isfinite(value).all():
            problems.append(f"`{name}` contains NaN or inf values")
    return problems


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in name.replace(".", " . ").split()]


def load_pretrained(path: str | os.PathLike[str], *, dtype: str | None = None,
                    head: str | None = None, allow_pickle: bool = False,
                    check_finite: bool = True) -> tuple[GPT2Config, dict[str, np.ndarray]]:
    """Read a GPT-2 model directory into `(config, params)`.

    Args:
        path: a directory (hub, `save_pretrained` or sharded layout), or a hub name present
            in the local Hugging Face cache.
        dtype: cast every tensor to float32, float16 or float64; None keeps the stored dtype
            (bf16 is widened to float32, exactly).
        head: require the tensors of one head (`"lm"`, `"sequence_classification"`, ...); None
            accepts the base model plus any complete head present.
        allow_pickle: also read `pytorch_model.bin` (plain tensors only).
        check_finite: reject tensors holding NaN or inf (reads every value once).

    Returns:
        The config, and canonical name -> array. Without `dtype`, float tensors are read-only
        memory-mapped views of the file.

    Raises:
        CheckpointError: listing every missing, unexpected, misshaped or non-finite tensor.
    """
    directory = resolve_model_path(path)
    problems = folder_writer.manifest_problems(directory)
    if problems:
        raise CheckpointError(directory, problems + [
            f"the files changed after `{folder_writer.MANIFEST}` was written with them; save the "
            "checkpoint again, or delete the manifest if they were changed on purpose"])
    config = GPT2Config.from_json(directory)
    state = read_state(directory, allow_pickle=allow_pickle)
    params, _ = layout.to_canonical(state)
    check_sizes(config, params, directory)
    params = _untie(config, params)
    problems = validate(config, params, head=head, check_finite=check_finite)
    if problems:
        raise CheckpointError(directory, problems)
    if dtype is not None:
        if dtype not in ("float32", "float16", "float64"):
            raise ValueError(f"`dtype` must be float32, float16 or float64 (NumPy has no "
                             f"bfloat16). Received: dtype={dtype!r}.")
        params = {k: v.astype(dtype) for k, v in params.items()}
    return config, params


def _untie(config: GPT2Config, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A tied config ignores a stored `lm_head.weight` that equals `wte.weight` (some exporters
    write both); one that differs stays, for the validator to report."""
    head, wte = params.get("lm_head.weight"), params.get("wte.weight")
    if (config.tie_word_embeddings and head is not None and wte is not None
            and head.shape == wte.shape and np.array_equal(head, wte)):
        params = {k: v for k, v in params.items() if k != "lm_head.weight"}
    return params


def save_pretrained(path: str | os.PathLike[str], config: GPT2Config,
                    params: Mapping[str, np.ndarray], *, dtype: str | None = None,
                    layout_name: str = "save_pretrained",
                    max_shard_size: int | None = None,
                    architectures: tuple[str, ...] = ("GPT2LMHeadModel",),
                    extra_files: Mapping[str, folder_writer.Content] | None = None,
                    sha256: bool = False) -> dict[str, dict]:
    """Write `config.json` and safetensors weights that `transformers` loads unchanged.

    Args:
        path: the directory (created if needed).
        dtype: float32, float16 or bfloat16; None keeps each array's dtype.
        layout_name: `"save_pretrained"` (`transformer.` prefix, as transformers writes) or
            `"hub"` (no prefix, as the hub's original GPT-2 repos).
        max_shard_size: split into `model-0000i-of-0000n.safetensors` shards of at most this
            many bytes, with `model.safetensors.index.json`.
        extra_files: more files (name -> text or bytes) written in the same transaction, e.g.
            `generation_config.json` or tokenizer files.
        sha256: also record each file's sha256 in the manifest.

    Returns:
        The manifest records: file name -> {"size": bytes, "sha256": hex (with `sha256`)}.

    All or nothing (`gpt2_core.folder_writer`): after a crash at any moment the folder holds the
    old checkpoint or the new one, never a mix. Other files already in the folder stay.
    """
    files = checkpoint_files(os.fspath(path), config, params, dtype=dtype, layout_name=layout_name,
                             max_shard_size=max_shard_size, architectures=architectures)
    for name in extra_files or {}:
        if name in files or is_weight_file(name):
            raise ValueError(f"`extra_files` may not replace the checkpoint's own {name!r}. "
                             f"Received: extra_files keys {sorted(extra_files or {})}.")
    return folder_writer.write_folder(path, {**files, **(extra_files or {})}, sha256=sha256,
                                      supersedes=is_weight_file)


def is_weight_file(name: str) -> bool:
    """Weight files a new save supersedes (old ones would shadow or mix with the new)."""
    return name in (SAFE_WEIGHTS, SAFE_INDEX) or (
        name.startswith("model-") and name.endswith(".safetensors"))


def checkpoint_files(path: str, config: GPT2Config, params: Mapping[str, np.ndarray], *,
                     dtype: str | None = None, layout_name: str = "save_pretrained",
                     max_shard_size: int | None = None,
                     architectures: tuple[str, ...] = ("GPT2LMHeadModel",)
                     ) -> dict[str, folder_writer.Content]:
    """The files of a checkpoint (name -> content), for `folder_writer`; arguments as
    `save_pretrained`'s. Everything is checked here, before a byte is written."""
    if dtype is not None and dtype not in FLOAT_DTYPES:
        raise ValueError(f"`dtype` must be one of {FLOAT_DTYPES}. Received: dtype={dtype!r}.")
    if max_shard_size is not None and (isinstance(max_shard_size, bool)
                                       or not isinstance(max_shard_size, int) or max_shard_size <= 0):
        raise ValueError(f"`max_shard_size` must be a positive number of bytes, or None for one "
                         f"file. Received: max_shard_size={max_shard_size!r}.")
    problems = validate(config, params, check_finite=False)
    if problems:
        raise CheckpointError(path, problems, action="save")
    tensors = layout.to_checkpoint(params, layout_name)
    if max_shard_size is None:
        files: dict[str, folder_writer.Content] = {SAFE_WEIGHTS: encode(tensors, dtype)}
    else:
        files = _sharded_files(tensors, dtype, max_shard_size)
    cfg = config.to_dict()
    cfg["architectures"] = list(architectures)
    if dtype:
        cfg["torch_dtype"] = dtype
    files["config.json"] = json.dumps(cfg, indent=2, sort_keys=True) + "\n"
    return files


def _sharded_files(tensors: dict[str, np.ndarray], dtype: str | None, max_shard_size: int
                   ) -> dict[str, folder_writer.Content]:
    itemsize = {"float16": 2, "bfloat16": 2, "float32": 4}
    shards: list[dict[str, np.ndarray]] = [{}]
    size = total = 0
    for name, value in tensors.items():
        nbytes = value.size * itemsize.get(dtype or "", value.dtype.itemsize)
        if shards[-1] and size + nbytes > max_shard_size:
            shards.append({})
            size = 0
        shards[-1][name] = value
        size += nbytes
        total += nbytes
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    files: dict[str, folder_writer.Content] = {
        fname: encode(shard, dtype) for shard, fname in zip(shards, names)}
    index = {"metadata": {"total_size": total},
             "weight_map": {n: f for shard, f in zip(shards, names) for n in shard}}
    files[SAFE_INDEX] = json.dumps(index, indent=2) + "\n"
    return files
