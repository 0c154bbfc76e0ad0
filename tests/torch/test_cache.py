"""The decoding cache record (`gpt2_torch.cache.KVCache`) and what CUDA graphs need of it: a
frozen record passed in and returned, buffers whose addresses never change during a decode
(steps and beam reorders) or between calls of a compiled step, and the compile options chosen
per device type. CUDA graphs themselves need a GPU (`bench/gpu.sh`); these run on the CPU."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch_testutils import CONFIGS, random_ids, write_checkpoint

from gpt2_torch import GPT2LMHeadModel
from gpt2_torch import generation as gen
from gpt2_torch.cache import KVCache

CFG = CONFIGS["default"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    write_checkpoint(path, CFG, seed=3)
    return GPT2LMHeadModel.from_pretrained(path)


def _ptrs(cache: KVCache) -> list[int]:
    return [b.data_ptr() for b in (*cache.keys, *cache.values)]


def test_compile_options_per_device_type():
    base = {"fullgraph": True, "dynamic": False}
    assert gen._compile_options(torch.device("cpu")) == base
    assert gen._compile_options(torch.device("cuda")) == {**base, "mode": "reduce-overhead"}
    assert gen._compile_options(torch.device("cuda", 1)) == {**base, "mode": "reduce-overhead"}
    assert gen._compile_options(torch.device("meta")) == base


def test_record_is_frozen_and_functions_return_new_records():
    cache = KVCache.allocate(CFG, 2, 8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cache.length = 3
    later = cache.advanced(3)
    assert (cache.length, later.length, later.max_length) == (0, 3, 8)
    assert later.keys is cache.keys and later.values is cache.values
    assert len(later.to_tuple()) == CFG.n_layer
    assert later.to_tuple()[0][0].shape == (2, CFG.n_head, 3, CFG.head_dim)


def test_allocate_rejects_length_beyond_positions():
    with pytest.raises(ValueError, match=r"`max_length` must be <= n_positions=32.*max_length=33"):
        KVCache.allocate(CFG, 1, 33)


def test_static_address_marks_every_buffer():
    plain = KVCache.allocate(CFG, 1, 8)
    marked = KVCache.allocate(CFG, 1, 8, static_address=True)
    assert not any(hasattr(b, "_dynamo_static_input_type") for b in (*plain.keys, *plain.values))
    assert all(b._dynamo_static_input_type == "unguarded" for b in (*marked.keys, *marked.values))


@pytest.mark.parametrize("compile", [False, True])
def test_buffers_keep_addresses_across_steps_and_reorder(model, compile):
    ids = torch.tensor(random_ids(CFG, (2, 5), seed=1))
    mask = torch.ones_like(ids)
    with torch.inference_mode(), gen._Decoder(model, ids, mask, 12, compile) as dec:
        logits, cache = dec.prefill(ids)
        first = cache
        ptrs = _ptrs(cache)
        for _ in range(3):
            logits, cache = dec.step(logits.argmax(-1), cache)
        assert _ptrs(cache) == ptrs and cache.length == 8 and first.length == 5
        before = [t.clone() for kv in cache.to_tuple() for t in kv]
        reordered = cache.reorder(torch.tensor([1, 1]))
        assert _ptrs(reordered) == ptrs and reordered.length == 8
        for b, t in zip(before, (t for kv in reordered.to_tuple() for t in kv)):
            assert torch.equal(t, b[[1, 1]])
        logits, cache = dec.step(logits.argmax(-1), reordered)
        assert _ptrs(cache) == ptrs and cache.length == 9


def test_cache_views_equal_past_key_values(model):
    """The filled part of the record is the HF-shaped `past_key_values` of the same tokens."""
    ids = torch.tensor(random_ids(CFG, (2, 6), seed=2))
    with torch.inference_mode():
        want = model(ids, use_cache=True).past_key_values
        with gen._Decoder(model, ids[:, :4], torch.ones(2, 4, dtype=torch.long), 10) as dec:
            _, cache = dec.prefill(ids[:, :4])
            _, cache = dec.step(ids[:, 4], cache)
            _, cache = dec.step(ids[:, 5], cache)
    for (k, v), (wk, wv) in zip(cache.to_tuple(), want):
        torch.testing.assert_close(k, wk, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(v, wv, atol=1e-6, rtol=1e-6)


def test_cudagraph_step_lends_one_set_of_buffers(tmp_path, monkeypatch):
    """The CUDA-graph bookkeeping, run on the CPU: `reduce-overhead` there compiles as the
    default mode, while `generate` marks the buffers static, begins a cudagraph step before each
    call, copies the logits and lends the same buffers to each call in turn (a call that
    overlaps another gets its own). Tokens equal eager decoding."""
    config = CONFIGS["gelu_fast"]
    write_checkpoint(tmp_path, config, seed=9)
    model = GPT2LMHeadModel.from_pretrained(tmp_path)
    monkeypatch.setattr(gen, "_compile_options",
                        lambda device: {"fullgraph": True, "dynamic": False, "mode": "reduce-overhead"})
    marks = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    ids = np.random.default_rng(4).integers(3, config.vocab_size, (2, 6))
    kw = dict(max_new_tokens=8, min_new_tokens=8, pad_token_id=0)
    want = model.generate(ids, **kw)
    out = model.generate(ids, compile=True, return_dict_in_generate=True, output_logits=True, **kw)
    assert torch.equal(out.sequences, want)
    assert len(marks) == 7  # one per compiled step (the prompt runs eagerly)
    (step,) = gen._COMPILED_STEPS[model].values()
    assert step.cudagraphs and not step.lent
    pooled = _ptrs(step.pooled)
    assert all(b._dynamo_static_input_type == "unguarded" for b in step.pooled.keys)
    # kept logits are copies, never the compiled step's outputs (a graph replay overwrites those)
    compiled, outputs = step.fn, []
    monkeypatch.setattr(step, "fn", lambda *a: outputs.append(compiled(*a)) or outputs[-1])
    again = model.generate(ids, compile=True, return_dict_in_generate=True, output_logits=True, **kw)
    assert torch.equal(again.sequences, want) and len(outputs) == 7
    kept = {t.data_ptr() for t in again.logits}
    assert not kept & {t.data_ptr() for t in outputs}
    assert _ptrs(step.pooled) == pooled and not step.lent
    # two streams at once: the second gets buffers of its own, both decode correctly
    a = model.stream_generate(ids, compile=True, **kw)
    b = model.stream_generate(ids, compile=True, **kw)
    rows_a, rows_b = [next(a).token_ids], [next(b).token_ids]
    assert step.lent
    rows_a += [s.token_ids for s in a]
    rows_b += [s.token_ids for s in b]
    assert torch.equal(torch.stack(rows_a, 1), want[:, 6:])
    assert torch.equal(torch.stack(rows_b, 1), want[:, 6:])
    assert not step.lent and _ptrs(step.pooled) == pooled
    beams = dict(kw, num_beams=2)
    assert torch.equal(model.generate(ids, compile=True, **beams), model.generate(ids, **beams))
