"""Load and save Hugging Face GPT-2 model directories.

A directory holds `config.json` and the weights as `model.safetensors`, a sharded
`model.safetensors.index.json` + shards, or (opt-in) `pytorch_model.bin`. Loading checks the
whole checkpoint before returning anything: one `CheckpointError` lists every problem.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Mapping

import numpy as np

from gpt2_core import layout
from gpt2_core._io import atomic_write_text
from gpt2_core.config import GPT2Config
from gpt2_core.safetensors_io import SafetensorsError, load_file, save_file

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
PICKLE_WEIGHTS = "pytorch_model.bin"
FLOAT_DTYPES = ("float32", "float16", "bfloat16")


class CheckpointError(ValueError):
    """A checkpoint that is not a valid GPT-2 checkpoint for its config. Lists every problem."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"Cannot load the GPT-2 checkpoint at {source!r}:\n{lines}")


def resolve_model_path(name_or_path: str | os.PathLike[str]) -> str:
    """A local directory, or a hub name (`gpt2`, `openai-community/gpt2`) found in the local
    Hugging Face cache. Nothing is downloaded."""
    path = os.fspath(name_or_path)
    if os.path.isdir(path):
        return path
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


def read_state(directory: str, allow_pickle: bool = False) -> dict[str, np.ndarray]:
    """The raw tensors of a model directory, by their checkpoint names (memory-mapped)."""
    single = os.path.join(directory, SAFE_WEIGHTS)
    index = os.path.join(directory, SAFE_INDEX)
    pickled = os.path.join(directory, PICKLE_WEIGHTS)
    try:
        if os.path.isfile(single):
            return load_file(single)
        if os.path.isfile(index):
            return _read_sharded(directory, index)
    except SafetensorsError as e:
        raise CheckpointError(directory, [str(e)]) from e
    if os.path.isfile(pickled):
        if not allow_pickle:
            raise ValueError(
                f"{directory!r} holds only `{PICKLE_WEIGHTS}`, a pickle file, which is not "
                "loaded by default. Pass `allow_pickle=True` to load it (plain tensors only, "
                "as `torch.load(weights_only=True)`), or convert it to safetensors."
            )
        from gpt2_core.torch_pickle import load_torch_zip

        return load_torch_zip(pickled)
    raise FileNotFoundError(
        f"No weights in {directory!r}. Expected `{SAFE_WEIGHTS}`, `{SAFE_INDEX}` with its "
        f"shards, or `{PICKLE_WEIGHTS}` (with allow_pickle=True). Found: "
        f"{sorted(os.listdir(directory))}."
    )


def _read_sharded(directory: str, index_path: str) -> dict[str, np.ndarray]:
    with open(index_path, encoding="utf-8") as f:
        weight_map = json.load(f).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(directory, [f"`{SAFE_INDEX}` has no `weight_map`."])
    missing = sorted({s for s in weight_map.values()
                      if not os.path.isfile(os.path.join(directory, s))})
    if missing:
        raise CheckpointError(directory, [f"shard `{s}` named in `{SAFE_INDEX}` is missing"
                                          for s in missing])
    state: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        state.update(load_file(os.path.join(directory, shard)))
    return state


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
    config = GPT2Config.from_json(directory)
    state = read_state(directory, allow_pickle=allow_pickle)
    params, _ = layout.to_canonical(state)
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
                    architectures: tuple[str, ...] = ("GPT2LMHeadModel",)) -> None:
    """Write `config.json` and safetensors weights that `transformers` loads unchanged.

    Args:
        path: the directory (created if needed).
        dtype: float32, float16 or bfloat16; None keeps each array's dtype.
        layout_name: `"save_pretrained"` (`transformer.` prefix, as transformers writes) or
            `"hub"` (no prefix, as the hub's original GPT-2 repos).
        max_shard_size: split into `model-0000i-of-0000n.safetensors` shards of at most this
            many bytes, with `model.safetensors.index.json`.

    Every file is written to a temporary name and renamed, so a reader never sees half a file.
    """
    if dtype is not None and dtype not in FLOAT_DTYPES:
        raise ValueError(f"`dtype` must be one of {FLOAT_DTYPES}. Received: dtype={dtype!r}.")
    problems = validate(config, params, check_finite=False)
    if problems:
        raise CheckpointError(os.fspath(path), problems)
    directory = os.fspath(path)
    os.makedirs(directory, exist_ok=True)
    tensors = layout.to_checkpoint(params, layout_name)
    if max_shard_size is None:
        save_file(tensors, os.path.join(directory, SAFE_WEIGHTS), dtype=dtype)
        _remove_stale(directory, keep={SAFE_WEIGHTS})
    else:
        _save_sharded(directory, tensors, dtype, max_shard_size)
    cfg = config.to_dict()
    cfg["architectures"] = list(architectures)
    if dtype:
        cfg["torch_dtype"] = dtype
    atomic_write_text(os.path.join(directory, "config.json"),
                      json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _save_sharded(directory: str, tensors: dict[str, np.ndarray], dtype: str | None,
                  max_shard_size: int) -> None:
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
    for shard, fname in zip(shards, names):
        save_file(shard, os.path.join(directory, fname), dtype=dtype)
    index = {"metadata": {"total_size": total},
             "weight_map": {n: f for shard, f in zip(shards, names) for n in shard}}
    atomic_write_text(os.path.join(directory, SAFE_INDEX), json.dumps(index, indent=2) + "\n")
    _remove_stale(directory, keep=set(names) | {SAFE_INDEX})


def _remove_stale(directory: str, keep: set[str]) -> None:
    """Old weight files would shadow (or mix with) the ones just written."""
    for fname in os.listdir(directory):
        stale = fname == SAFE_WEIGHTS or fname == SAFE_INDEX or (
            fname.startswith("model-") and fname.endswith(".safetensors"))
        if stale and fname not in keep:
            os.remove(os.path.join(directory, fname))
