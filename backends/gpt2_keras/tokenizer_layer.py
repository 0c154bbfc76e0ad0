"""`GPT2TokenizerLayer`: GPT-2's exact byte-level BPE tokenizer as TensorFlow graph ops.

Strings in, ids out (ragged, or padded with an attention mask), and ids back to bytes, inside
`tf.function`, `tf.data.Dataset.map` and exported SavedModels. Ids equal `gpt2_tokenizer`'s and
tiktoken's; how the regex's lookahead is done in RE2 is explained in `_bpe_graph`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Literal

import keras
import numpy as np
import tensorflow as tf

from gpt2_keras import _bpe_graph

AllowedSpecial = Literal["all"] | Iterable[str]


def _read_vocabulary(vocabulary: dict[str, int] | str | os.PathLike) -> dict[str, int]:
    if isinstance(vocabulary, dict):
        return dict(vocabulary)
    if isinstance(vocabulary, (str, os.PathLike)):
        with open(vocabulary, encoding="utf-8") as f:
            return json.load(f)
    raise TypeError("`vocabulary` must be a dict token -> id or a path to a vocab.json file. "
                    f"Received: vocabulary of type {type(vocabulary).__name__}.")


def _read_merges(merges: list[str] | str | os.PathLike) -> list[str]:
    if isinstance(merges, (str, os.PathLike)):
        with open(merges, encoding="utf-8") as f:
            return _bpe_graph.read_merges(f)
    if isinstance(merges, (list, tuple)):
        return _bpe_graph.read_merges(" ".join(m) if isinstance(m, tuple) else m for m in merges)
    raise TypeError("`merges` must be a list of \"a b\" rules or a path to a merges.txt file. "
                    f"Received: merges of type {type(merges).__name__}.")


def _merges_of(tokenizer) -> list[str]:
    """Merge rules in priority order: `bpe_ranks` (gpt2_tokenizer, transformers' Python
    tokenizer) or the BPE model of a `tokenizers` backend (transformers 5's GPT2Tokenizer)."""
    ranks = getattr(tokenizer, "bpe_ranks", None)
    if isinstance(ranks, dict):
        return [" ".join(pair) for pair, _ in sorted(ranks.items(), key=lambda kv: kv[1])]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    model = json.loads(backend.to_str())["model"] if hasattr(backend, "to_str") else {}
    if model.get("type") != "BPE":
        raise TypeError("`tokenizer` has no GPT-2 merges (`bpe_ranks`, or a `tokenizers` BPE "
                        f"backend). Received: {type(tokenizer).__name__}.")
    return [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]


def _one_spelling(name: str, value, alias: str, alias_value):
    """One of two spellings of an argument (ours, and `TFGPT2Tokenizer`'s)."""
    if alias_value is None:
        return value
    if value is not None:
        raise ValueError(f"`{alias}` is another name for `{name}`: pass one of them. Received: "
                         f"{name}={value!r:.60} and {alias}={alias_value!r:.60}.")
    return alias_value


def _check_utf8(texts) -> None:
    """Python strings must encode as UTF-8: TensorFlow's own error names neither text nor fix."""
    for index, text in enumerate(texts):
        if isinstance(text, str):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as error:
                where = f"U+{ord(text[error.start]):04X} at index {error.start}"
                raise ValueError(
                    "`inputs` must be valid UTF-8 text (no lone surrogates), but text "
                    f"{index} ({text!r:.60}) holds the lone surrogate {where}. Clean it first, "
                    "e.g. `text.encode('utf-16', 'surrogatepass').decode('utf-16', 'replace')`."
                ) from None


def _as_strings(inputs) -> tf.Tensor:
    """Text as a tf.string tensor of shape (B,) or (); clear errors for anything else."""
    if isinstance(inputs, tf.RaggedTensor):
        raise ValueError("`inputs` must be a dense tf.string tensor of shape (B,) or (). "
                         "Received: a RaggedTensor.")
    if isinstance(inputs, (str, bytes)) or (isinstance(inputs, (list, tuple)) and all(
            isinstance(x, (str, bytes)) for x in inputs)):
        _check_utf8([inputs] if isinstance(inputs, (str, bytes)) else inputs)
        inputs = tf.constant(inputs, tf.string)
    elif isinstance(inputs, np.ndarray) and inputs.dtype.kind in "USO":
        _check_utf8(inputs.ravel().tolist())
        inputs = tf.constant(inputs.astype(object), tf.string)
    else:
        inputs = tf.convert_to_tensor(inputs)
    if inputs.dtype != tf.string:
        raise TypeError("`inputs` must be a tf.string tensor (text), not ids or numbers. "
                        f"Received: inputs with dtype {inputs.dtype.name}.")
    if inputs.shape.rank is None or inputs.shape.rank > 1:
        raise ValueError("`inputs` must have shape (B,) or (). Received: inputs with shape "
                         f"{inputs.shape}.")
    return inputs


@keras.saving.register_keras_serializable(package="gpt2_keras")
class GPT2TokenizerLayer(keras.layers.Layer):
    """GPT-2's tokenizer as a Keras layer of TensorFlow graph ops.

    Args:
        vocabulary: token -> id dict (byte-level strings, as GPT-2's `vocab.json`) or a path to
            one. `None` (default) uses GPT-2's vocabulary bundled with `gpt2_tokenizer`.
        merges: merge rules ("a b", in priority order) or a path to `merges.txt`; `None` with
            `vocabulary=None`.
        sequence_length: if set, `call` returns `{"input_ids", "attention_mask"}` padded and
            truncated to this length (the first `sequence_length` tokens are kept).
        vocab, max_length: `TFGPT2Tokenizer`'s names for `vocabulary` and `sequence_length`
            (pass one spelling of each).
        padding_side: "right" (default) or "left".
        pad_token_id: id written into padded positions. GPT-2 has no pad token; `None` uses the
            `<|endoftext|>` id (50256), the usual GPT-2 choice: `attention_mask` marks the pads.
        allowed_special: special tokens (`<|endoftext|>`) recognised in text. The default `()`
            encodes them as ordinary text, like tiktoken's `encode_ordinary` (an in-graph
            tokenizer cannot raise per string the way tiktoken's `encode` does); `"all"` or a
            set of token strings maps them to their ids, like tiktoken's `allowed_special`.

    Shapes:
        `call`: (B,) or () tf.string -> (B, None) int32 `tf.RaggedTensor` (a dense (None,)
        tensor for a scalar), or with `sequence_length`: dict of (B, sequence_length) int32.

    In a functional model (TensorFlow backend): `keras.Input(shape=(), dtype="string")` ->
    this layer -> the model, for `predict`, `fit` and `export`.

    >>> GPT2TokenizerLayer()(tf.constant(["Hello world"])).to_list()
    [[15496, 995]]
    """

    def __init__(self, vocabulary: dict[str, int] | str | os.PathLike | None = None,
                 merges: list[str] | str | os.PathLike | None = None,
                 sequence_length: int | None = None,
                 padding_side: Literal["right", "left"] = "right",
                 pad_token_id: int | None = None,
                 allowed_special: AllowedSpecial = (),
                 name: str | None = None, trainable: bool = False, dtype=None, *,
                 vocab: dict[str, int] | str | os.PathLike | None = None,
                 max_length: int | None = None):
        super().__init__(name=name, trainable=trainable, dtype=dtype)
        vocabulary = _one_spelling("vocabulary", vocabulary, "vocab", vocab)
        sequence_length = _one_spelling("sequence_length", sequence_length, "max_length", max_length)
        if (vocabulary is None) != (merges is None):
            raise ValueError("Pass both `vocabulary` and `merges`, or neither for GPT-2's bundled "
                             f"files. Received: vocabulary is None={vocabulary is None}, "
                             f"merges is None={merges is None}.")
        if sequence_length is not None and (not isinstance(sequence_length, int)
                                            or sequence_length < 1):
            raise ValueError("`sequence_length` must be a positive int or None. "
                             f"Received: sequence_length={sequence_length!r}.")
        if padding_side not in ("right", "left"):
            raise ValueError("`padding_side` must be 'right' or 'left'. "
                             f"Received: padding_side={padding_side!r}.")
        self._custom = vocabulary is not None
        if self._custom:
            vocab, rules = _read_vocabulary(vocabulary), _read_merges(merges)
        else:
            vocab, rules = _bpe_graph.bundled_vocabulary()
        self.vocabulary, self.merges = vocab, rules
        self.sequence_length = sequence_length
        self.padding_side = padding_side
        tables = _bpe_graph.BPETables(vocab, rules)
        self.special_tokens = dict(sorted(tables.special_tokens.items(), key=lambda kv: kv[1]))
        self.allowed_special = self._check_allowed_special(allowed_special)
        eos = self.special_tokens.get("<|endoftext|>")
        if pad_token_id is None and sequence_length is not None and eos is None:
            raise ValueError("This vocabulary has no `<|endoftext|>` to pad with: pass "
                             "`pad_token_id`. Received: pad_token_id=None.")
        self.pad_token_id = eos if pad_token_id is None else pad_token_id
        self._build_graph_state(tables)

    @classmethod
    def from_tokenizer(cls, tokenizer, **kwargs) -> GPT2TokenizerLayer:
        """The layer of a Python GPT-2 tokenizer's vocabulary and merges (added tokens
        included): `gpt2_tokenizer.GPT2Tokenizer` or a transformers `GPT2Tokenizer`, as
        `TFGPT2Tokenizer.from_tokenizer`. `kwargs` go to the constructor (`max_length`, ...)."""
        if callable(getattr(tokenizer, "get_vocab", None)):
            vocabulary = dict(tokenizer.get_vocab())
        elif isinstance(getattr(tokenizer, "encoder", None), dict):
            vocabulary = dict(tokenizer.encoder)
        else:
            raise TypeError("`tokenizer` must be a GPT-2 byte-level BPE tokenizer with "
                            "`get_vocab()` or `encoder` and `bpe_ranks`. Received: "
                            f"{type(tokenizer).__name__}. Use GPT2TokenizerLayer.from_pretrained"
                            "(path) for a tokenizer folder.")
        vocabulary.update(getattr(tokenizer, "special_tokens", None) or {})
        return cls(vocabulary, _merges_of(tokenizer), **kwargs)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, **kwargs) -> GPT2TokenizerLayer:
        """The layer of a Hugging Face GPT-2 tokenizer folder (`tokenizer.json`, or `vocab.json`
        + `merges.txt`; added tokens read as `gpt2_tokenizer` reads them), or GPT-2's bundled
        files for `path=None`. `kwargs` go to the constructor (`max_length`, ...)."""
        if path is None:
            return cls(**kwargs)
        from gpt2_tokenizer import GPT2Tokenizer

        return cls.from_tokenizer(GPT2Tokenizer.from_pretrained(path), **kwargs)

    def _check_allowed_special(self, allowed_special: AllowedSpecial) -> tuple[str, ...]:
        if allowed_special == "all":
            return tuple(self.special_tokens)
        if isinstance(allowed_special, str):
            raise ValueError("`allowed_special` must be 'all' or a collection of special "
                             f"tokens. Received: allowed_special={allowed_special!r}.")
        unknown = sorted(set(allowed_special) - set(self.special_tokens))
        if unknown:
            raise ValueError(f"`allowed_special` holds tokens that are not special tokens of "
                             f"this vocabulary: {unknown}. Special tokens: "
                             f"{sorted(self.special_tokens)}.")
        return tuple(t for t in self.special_tokens if t in set(allowed_special))

    def _build_graph_state(self, tables: _bpe_graph.BPETables) -> None:
        self._vocab_size = tables.vocab_size
        self._boundary, self._piece = _bpe_graph.patterns()
        self._specials = _bpe_graph.special_regexes(list(self.allowed_special))
        # The i-th special (longest first, as `special_regexes`) is marked with i+1 0xFE bytes.
        ordered = sorted(self.allowed_special, key=len, reverse=True)
        self._special_ids = tf.constant([self.special_tokens[t] for t in ordered] or [-1],
                                        tf.int32)
        self._byte_ids = tf.constant(tables.byte_ids)
        self._merged_ids = tf.constant(tables.merged_ids)
        self._id_bytes = tf.constant(np.array(tables.id_bytes, dtype=object), tf.string)
        self._word_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(np.array(tables.word_keys, dtype=object), tf.string),
                tf.constant(tables.word_ids)), default_value=-1)
        self._pair_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(tables.pair_keys),
                tf.range(len(tables.pair_keys), dtype=tf.int32)),
            default_value=_bpe_graph.NO_MERGE)

    @property
    def vocabulary_size(self) -> int:
        """Number of ids (max id + 1)."""
        return self._vocab_size

    def tokenize(self, inputs) -> tf.RaggedTensor:
        """Strings -> ragged ids (no padding).

        Shapes: (B,) tf.string -> (B, None) int32; () -> (None,).
        """
        texts = _as_strings(inputs)
        scalar = texts.shape.rank == 0
        ids = self._tokenize_function()(texts[None] if scalar else texts)
        return ids[0] if scalar else ids

    def _tokenize_function(self):
        """The BPE graph as one `tf.function`, traced once per layer: each `dataset.map` (every
        `fit` call on strings) then reuses it instead of rebuilding the graph, which takes
        seconds."""
        fn = self.__dict__.get("_tokenize_fn")  # kept out of Keras' attribute tracking
        if fn is None:
            fn = tf.function(self._tokenize_batch,
                             input_signature=[tf.TensorSpec([None], tf.string)])
            self.__dict__["_tokenize_fn"] = fn
        return fn

    def _tokenize_batch(self, texts):
        """Shapes: (B,) tf.string -> (B, None) int32 ragged."""
        words = _bpe_graph.pretokenize(texts, self._boundary, self._piece, self._specials)
        return _bpe_graph.words_to_ids(words, self._word_table, self._byte_ids, self._pair_table,
                                       self._merged_ids, self._special_ids, self._vocab_size)

    def __call__(self, inputs, **kwargs):
        # Keras only takes tensors positionally; plain strings are converted (and checked) here.
        # `kwargs`: what a functional model passes its layers (`training`), unused here.
        if keras.backend.is_keras_tensor(inputs):  # a functional model's `keras.Input`
            return super().__call__(inputs, **kwargs)
        return super().__call__(_as_strings(inputs), **kwargs)

    def call(self, inputs):
        """Tokenizes; pads to `sequence_length` when it is set (see the class docstring)."""
        scalar = inputs.shape.rank == 0
        ids = self.tokenize(inputs[None] if scalar else inputs)
        if self.sequence_length is None:
            return ids[0] if scalar else ids
        out = self._pad(ids)
        return {k: v[0] for k, v in out.items()} if scalar else out

    def _pad(self, ids: tf.RaggedTensor) -> dict[str, tf.Tensor]:
        """(B, None) ragged -> (B, L) ids and mask, truncated to the first L tokens."""
        length = self.sequence_length
        ids = ids[:, :length]
        batch = ids.nrows()
        dense = ids.to_tensor(default_value=self.pad_token_id, shape=[batch, length])  # (B, L)
        mask = tf.ones_like(ids).to_tensor(default_value=0, shape=[batch, length])
        if self.padding_side == "left":
            # Row b moves right by its pad count; the wrapped-around positions hold pads.
            n_pad = length - tf.cast(ids.row_lengths(), tf.int32)  # (B,)
            src = (tf.range(length)[None, :] - n_pad[:, None]) % length  # (B, L)
            dense = tf.gather(dense, src, batch_dims=1)
            mask = tf.gather(mask, src, batch_dims=1)
        return {"input_ids": dense, "attention_mask": mask}

    def detokenize(self, ids, attention_mask=None) -> tf.Tensor:
        """Ids -> the exact UTF-8 bytes they stand for (pads dropped where `attention_mask` is 0).

        Shapes: (B, None) ragged or (B, T) dense int -> (B,) tf.string; (T,) -> ().
        """
        if isinstance(ids, tf.RaggedTensor):
            ragged = ids
        else:
            ids = tf.convert_to_tensor(ids)
            if ids.shape.rank not in (1, 2):
                raise ValueError("`ids` must have rank 1 or 2. "
                                 f"Received: ids with shape {ids.shape}.")
            ragged = tf.RaggedTensor.from_tensor(ids if ids.shape.rank == 2 else ids[None])
            if attention_mask is not None:
                mask = tf.convert_to_tensor(attention_mask)
                mask = mask if mask.shape.rank == 2 else mask[None]
                ragged = tf.ragged.boolean_mask(ragged.to_tensor(), mask != 0)
        if not ragged.dtype.is_integer:
            raise TypeError("`ids` must be an integer tensor. "
                            f"Received: ids with dtype {ragged.dtype.name}.")
        flat = tf.cast(ragged.flat_values, tf.int32)
        check = tf.debugging.assert_less(
            flat, self._vocab_size,
            message=f"`ids` must be in [0, {self._vocab_size}) for detokenize.")
        check2 = tf.debugging.assert_non_negative(flat, message="`ids` must be >= 0.")
        with tf.control_dependencies([check, check2]):
            pieces = ragged.with_flat_values(tf.gather(self._id_bytes, flat))
        text = tf.strings.reduce_join(pieces, axis=-1)
        scalar = not isinstance(ids, tf.RaggedTensor) and ids.shape.rank == 1
        return text[0] if scalar else text

    def compute_output_spec(self, inputs):
        """The symbolic output on a `keras.Input(shape=(), dtype="string")`: ragged ids
        (B, None), or with `sequence_length` the dict of (B, sequence_length) int32."""
        if keras.backend.backend() != "tensorflow":
            raise ValueError("GPT2TokenizerLayer is TensorFlow graph ops: in a functional model "
                             "it needs the TensorFlow Keras backend. Received: KERAS_BACKEND="
                             f"{keras.backend.backend()!r}. Tokenize in `tf.data` instead "
                             "(`dataset.map(tokenizer)`).")
        if inputs.dtype != "string" or len(inputs.shape) > 1:
            raise ValueError("GPT2TokenizerLayer takes text: a keras.Input(shape=(), "
                             "dtype='string'). Received: an input of shape "
                             f"{inputs.shape} and dtype {inputs.dtype}.")
        lead = tuple(inputs.shape)
        if self.sequence_length is None:
            return keras.KerasTensor(lead + (None,), dtype="int32", ragged=True)
        shape = lead + (self.sequence_length,)
        return {"input_ids": keras.KerasTensor(shape, dtype="int32"),
                "attention_mask": keras.KerasTensor(shape, dtype="int32")}

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            # The bundled GPT-2 files ship with the package; custom ones travel in the config.
            "vocabulary": self.vocabulary if self._custom else None,
            "merges": self.merges if self._custom else None,
            "sequence_length": self.sequence_length,
            "padding_side": self.padding_side,
            "pad_token_id": self.pad_token_id,
            "allowed_special": list(self.allowed_special),
        })
        return config


class TextCodec:
    """Python-side `encode`/`decode` over a `GPT2TokenizerLayer`'s own tables, in the shape
    `generate` reads tokenizers (`decode_single_token_bytes` for stop strings, as tiktoken's):
    for `GPT2CausalLM.generate` on strings."""

    def __init__(self, layer: GPT2TokenizerLayer):
        self.layer = layer
        self._bytes = [bytes(b) for b in layer._id_bytes.numpy()]

    def __len__(self) -> int:
        return len(self._bytes)

    def encode_batch(self, texts: list[str | bytes]) -> list[list[int]]:
        return [[int(i) for i in row] for row in self.layer.tokenize(list(texts)).to_list()]

    def encode(self, text: str | bytes) -> list[int]:
        return self.encode_batch([text])[0]

    def decode_single_token_bytes(self, token: int) -> bytes:
        return self._bytes[token]

    def decode_bytes(self, ids) -> bytes:
        return b"".join(self._bytes[int(i)] for i in ids)

    def decode(self, ids) -> str:
        return self.decode_bytes(ids).decode("utf-8", "replace")
