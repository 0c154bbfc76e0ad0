"""The oracle: `gpt2_core.reference` in float64 (subject `reference`), and the same code in
float32 (subject `numpy`, a framework-free stand-in that planted-bug tests can break).

The heads and greedy decoding are written here from Hugging Face's definitions, on top of the
reference forward pass (which has the LM head only).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from gpt2_conformance.adapters.base import Arrays, generation_outputs
from gpt2_core import GPT2Config, generation, load_pretrained, reference, sampling, save_pretrained


@dataclasses.dataclass
class Model:
    config: GPT2Config
    params: dict[str, np.ndarray]
    head: str


class ReferenceAdapter:
    """Subject `reference` (float64) or `numpy` (float32)."""

    kinds = frozenset({"forward", "incremental", "chunked", "generate", "generation", "processor",
                       "tokenizer"})

    def __init__(self, name: str, dtype: type):
        self.name = name
        self.dtype = dtype

    def load(self, path: str, head: str, dtype: str = "float32") -> Model:
        # The oracle is the checkpoint itself in `self.dtype` whatever the case's dtype: a
        # reduced-precision case measures the framework's rounding of weights and activations.
        del dtype
        config, params = load_pretrained(path, head=head)
        return Model(config, dict(params), head)

    def _lm(self, model: Model, inputs: Arrays, past: Any) -> reference.ForwardOutput:
        kw = {k: inputs.get(k) for k in ("attention_mask", "position_ids", "token_type_ids",
                                         "labels")}
        config = model.config
        if model.head != "lm" and model.head != "double_heads":
            config = dataclasses.replace(config, tie_word_embeddings=True)  # logits unused
        return reference.forward(config, model.params, inputs["input_ids"], past_key_values=past,
                                 dtype=self.dtype, **kw)

    def forward(self, model: Model, inputs: Arrays, outputs: tuple[str, ...],
                past: Any = None) -> tuple[Arrays, Any]:
        if model.head == "double_heads":
            return self._double_heads(model, inputs, outputs), None
        out = self._lm(model, inputs, past)
        arrays: Arrays = {}
        if model.head == "lm":
            if "logits" in outputs:
                arrays["logits"] = out.logits
            if "loss" in outputs and out.loss is not None:
                arrays["loss"] = np.asarray(out.loss)
        else:
            arrays.update(self._head(model, inputs, out.hidden_states[-1]))
        arrays.update(_common(out, outputs))
        return arrays, out.past_key_values

    def _head(self, model: Model, inputs: Arrays, h: np.ndarray) -> Arrays:
        p = {k: np.asarray(v, self.dtype) for k, v in model.params.items()}
        if model.head == "base":
            return {"last_hidden_state": h}
        if model.head == "token_classification":
            return {"logits": h @ p["classifier.weight"].T + p["classifier.bias"]}
        if model.head == "question_answering":
            both = h @ p["qa_outputs.weight"].T + p["qa_outputs.bias"]  # (B, T, 2)
            return {"start_logits": both[..., 0], "end_logits": both[..., 1]}
        if model.head == "sequence_classification":
            logits = h @ p["score.weight"].T  # (B, T, N)
            ids = inputs["input_ids"]
            # Hugging Face pools the rightmost token that is not `pad_token_id`.
            last = (np.arange(ids.shape[1]) * (ids != model.config.pad_token_id)).argmax(-1)
            return {"logits": logits[np.arange(ids.shape[0]), last]}
        raise ValueError(f"Unsupported head {model.head!r}.")

    def _double_heads(self, model: Model, inputs: Arrays, outputs: tuple[str, ...]) -> Arrays:
        ids = inputs["input_ids"]  # (B, NC, T)
        B, NC, T = ids.shape
        flat = {"input_ids": ids.reshape(B * NC, T)}
        out = self._lm(model, flat, None)
        C = model.config.n_embd
        h = out.hidden_states[-1].reshape(B, NC, T, C)
        picked = np.take_along_axis(h, inputs["mc_token_ids"][:, :, None, None], axis=2)[:, :, 0]
        p = {k: np.asarray(v, self.dtype) for k, v in model.params.items()}
        mc = picked @ p["multiple_choice_head.summary.weight"].T + p["multiple_choice_head.summary.bias"]
        arrays = {"logits": out.logits.reshape(B, NC, T, -1), "mc_logits": mc[..., 0]}
        # Hidden states keep the choices axis, (B, NC, T, C), as the last hidden state does.
        arrays.update({k: v.reshape(B, NC, *v.shape[1:]) for k, v in _common(out, outputs).items()})
        return arrays

    def grads(self, model: Model, inputs: Arrays) -> Arrays:
        raise NotImplementedError("the reference has no gradients; frameworks are compared pairwise")

    def generate(self, model: Model, inputs: Arrays, max_new_tokens: int) -> np.ndarray:
        """Greedy decoding: `gpt2_core.generation.generate`."""
        return generation.generate(model.config, model.params, inputs["input_ids"],
                                   inputs["attention_mask"], max_new_tokens=max_new_tokens)

    def generation(self, model: Model, inputs: Arrays, kwargs: dict[str, Any], *, tokenizer: Any,
                   streamer: Any, compiled: bool = False) -> Arrays:
        out = generation.generate(model.config, model.params, inputs["input_ids"],
                                  inputs["attention_mask"], tokenizer=tokenizer, streamer=streamer,
                                  **kwargs)
        return generation_outputs(out, np.asarray)

    def save(self, model: Model, path: str) -> None:
        save_pretrained(path, model.config, model.params)

    def process(self, name: str, scores: np.ndarray, input_ids: np.ndarray, arg) -> np.ndarray:
        s = scores.astype(np.float64)
        fn = {
            "temperature": lambda: sampling.temperature(s, arg),
            "top_k": lambda: sampling.top_k(s, arg),
            "top_p": lambda: sampling.top_p(s, arg),
            "repetition_penalty": lambda: sampling.repetition_penalty(s, input_ids, arg),
            "no_repeat_ngram": lambda: sampling.no_repeat_ngram(s, input_ids, arg),
        }[name]
        return fn()

    def tokenize(self, texts: tuple[str, ...]) -> list[list[int]]:
        from gpt2_tokenizer import GPT2Tokenizer  # pure Python; imports no framework

        tok = GPT2Tokenizer.from_pretrained()
        return [list(tok.encode(t)) for t in texts]


def _common(out: reference.ForwardOutput, outputs: tuple[str, ...]) -> Arrays:
    arrays: Arrays = {}
    if "hidden" in outputs:
        arrays.update({f"hidden.{i}": h for i, h in enumerate(out.hidden_states)})
    if "attn" in outputs:
        arrays.update({f"attn.{i}": a for i, a in enumerate(out.attentions)})
    if "cache" in outputs:
        for i, (k, v) in enumerate(out.past_key_values):
            arrays[f"cache.{i}.key"] = k
            arrays[f"cache.{i}.value"] = v
    return arrays




class TiktokenAdapter:
    """Subject `tiktoken`: the GPT-2 encoding built offline from the tokenizer's own
    `vocab.json` ranks and GPT-2's split pattern (tokenizer cases only)."""

    kinds = frozenset({"tokenizer"})
    # GPT-2's pre-tokenisation pattern (openai/gpt-2 encoder.py), as tiktoken's `gpt2` encoding.
    PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

    def __init__(self, name: str):
        self.name = name

    def tokenize(self, texts: tuple[str, ...]) -> list[list[int]]:
        import json
        import os

        import tiktoken

        import gpt2_tokenizer

        assets = os.path.join(os.path.dirname(gpt2_tokenizer.__file__), "assets")
        with open(os.path.join(assets, "vocab.json"), encoding="utf-8") as f:
            vocab = json.load(f)
        byte_of = _unicode_to_byte()
        ranks = {bytes(byte_of[ch] for ch in token): rank for token, rank in vocab.items()
                 if token != "<|endoftext|>"}
        enc = tiktoken.Encoding("gpt2_offline", pat_str=self.PATTERN, mergeable_ranks=ranks,
                                special_tokens={"<|endoftext|>": vocab["<|endoftext|>"]})
        return [enc.encode_ordinary(t) for t in texts]


def _unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's `bytes_to_unicode` (openai/gpt-2 encoder.py)."""
    from gpt2_tokenizer import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}


def make_adapter(name: str) -> ReferenceAdapter | TiktokenAdapter:
    if name == "tiktoken":
        return TiktokenAdapter(name)
    if name == "reference":
        return ReferenceAdapter(name, np.float64)
    adapter = ReferenceAdapter(name, np.float32)
    adapter.kinds = ReferenceAdapter.kinds - {"tokenizer"}  # the reference's tokenizer already
    return adapter
