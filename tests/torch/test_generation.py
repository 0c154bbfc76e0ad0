"""generate against transformers (token-identical greedy and beam), the call surface (kwargs,
generation_config, errors), sampling reproducibility, streaming, and the compiled decode step.
The comparisons with the NumPy reference are in test_generation_spec.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_testutils import CONFIGS, hf_model, random_ids, write_checkpoint

from gpt2_core.generation_config import GenerationConfig
from gpt2_torch import GenerateDecoderOnlyOutput, GPT2LMHeadModel
from gpt2_torch.cache import KVCache

CFG = CONFIGS["default"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    write_checkpoint(path, CFG, seed=11)
    return GPT2LMHeadModel.from_pretrained(path), hf_model(path, impl="sdpa")


def _hf_generate(hf, ids, mask=None, **kw):
    with torch.no_grad():
        return hf.generate(torch.as_tensor(ids), attention_mask=None if mask is None else torch.as_tensor(mask),
                           pad_token_id=kw.pop("pad_token_id", 0), eos_token_id=kw.pop("eos_token_id", 2),
                           do_sample=False, **kw)


def test_greedy_identical_to_transformers(models):
    ours, hf = models
    ids = random_ids(CFG, (1, 5), seed=4)
    want = _hf_generate(hf, ids, max_new_tokens=20)
    got = ours.generate(ids, max_new_tokens=20, pad_token_id=0)
    assert torch.equal(got, want)


def test_greedy_left_padded_batch_identical(models):
    ours, hf = models
    rng = np.random.default_rng(5)
    ids = rng.integers(3, CFG.vocab_size, (3, 7))
    mask = np.ones_like(ids)
    mask[1, :3] = 0
    mask[2, :5] = 0
    ids[mask == 0] = 0
    want = _hf_generate(hf, ids, mask, max_new_tokens=15, eos_token_id=[2, 5])
    got = ours.generate(ids, attention_mask=mask, max_new_tokens=15, eos_token_id=[2, 5],
                        pad_token_id=0)
    assert torch.equal(got, want)
    # each padded row equals its unpadded generation (up to finished-row padding)
    alone = ours.generate(ids[2:, 5:], max_new_tokens=15, eos_token_id=[2, 5], pad_token_id=0)
    assert torch.equal(got[2, 5:5 + alone.shape[1]], alone[0])


def test_eos_list_and_pad_filling(models):
    ours, hf = models
    ids = random_ids(CFG, (4, 3), seed=9)
    # pick eos ids the model actually emits so rows finish at different steps
    free = ours.generate(ids, max_new_tokens=6, min_new_tokens=6, pad_token_id=0)
    eos = sorted({int(free[0, 4]), int(free[1, 5])})
    got = ours.generate(ids, max_new_tokens=6, eos_token_id=eos, pad_token_id=7)
    want = _hf_generate(hf, ids, max_new_tokens=6, eos_token_id=eos, pad_token_id=7)
    assert torch.equal(got, want)
    assert (got == 7).any()


@pytest.mark.parametrize("kw", [
    dict(num_beams=3),
    dict(num_beams=4, num_return_sequences=2, length_penalty=0.5),
    dict(num_beams=3, early_stopping=True, length_penalty=2.0),
    dict(num_beams=2, early_stopping="never", length_penalty=-1.0),
    dict(num_beams=3, no_repeat_ngram_size=2, repetition_penalty=1.3),
])
def test_beam_search_identical_to_transformers(models, kw):
    ours, hf = models
    rng = np.random.default_rng(3)
    ids = rng.integers(3, CFG.vocab_size, (2, 6))
    mask = np.ones_like(ids)
    mask[1, :2] = 0
    ids[1, :2] = 0
    # eos ids the greedy path emits early, so beams finish and early stopping matters
    eos = [int(t) for t in ours.generate(ids, attention_mask=mask, max_new_tokens=3,
                                         min_new_tokens=3)[:, -2:].flatten()[:2]]
    want = _hf_generate(hf, ids, mask, max_new_tokens=12, eos_token_id=eos, **kw)
    got = ours.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=eos,
                        pad_token_id=0, **kw)
    assert torch.equal(got, want)


def test_greedy_processors_identical_to_transformers(models):
    ours, hf = models
    ids = random_ids(CFG, (2, 4), seed=2)
    kw = dict(repetition_penalty=1.5, no_repeat_ngram_size=2, min_new_tokens=5)
    want = _hf_generate(hf, ids, max_new_tokens=12, **kw)
    got = ours.generate(ids, max_new_tokens=12, pad_token_id=0, **kw)
    assert torch.equal(got, want)


def test_sampling_is_reproducible_with_seed(models):
    ours, _ = models
    ids = random_ids(CFG, (2, 4))
    a = ours.generate(ids, do_sample=True, top_k=10, max_new_tokens=10, seed=123, min_new_tokens=10)
    b = ours.generate(ids, do_sample=True, top_k=10, max_new_tokens=10, seed=123, min_new_tokens=10)
    c = ours.generate(ids, do_sample=True, top_k=10, max_new_tokens=10, seed=124, min_new_tokens=10)
    assert torch.equal(a, b) and not torch.equal(a, c)
    r = ours.generate(ids, do_sample=True, max_new_tokens=4, seed=1, num_return_sequences=3)
    assert r.shape[0] == 6


def test_seed_example_and_generation_config(models, tmp_path):
    ours, hf = models
    ids = random_ids(CFG, (1, 5), seed=4)
    # the seed's example (max_length counts the prompt; CFG has n_positions=32)
    out = ours.generate(ids, do_sample=True, temperature=0.9, max_length=20)
    assert out.shape[0] == 1 and 5 < out.shape[1] <= 20
    assert ours.generation_config.eos_token_id == CFG.eos_token_id
    assert GPT2LMHeadModel(CFG).generation_config == GenerationConfig.from_model_config(CFG)
    ours.generation_config.max_new_tokens = 3
    try:
        assert ours.generate(ids, min_new_tokens=3).shape == (1, 8)
        # a transformers GenerationConfig is accepted (any object with to_dict())
        import transformers

        given = transformers.GenerationConfig(max_new_tokens=4, min_new_tokens=4)
        assert ours.generate(ids, generation_config=given).shape == (1, 9)
    finally:
        ours.generation_config.max_new_tokens = None
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_tokens'"):
        ours.generate(ids, max_tokens=3)
    with pytest.raises(ValueError, match="`max_new_tokens` must be a positive integer"):
        ours.generate(ids, max_new_tokens=0)


def test_return_dict_in_generate(models):
    ours, _ = models
    ids = random_ids(CFG, (2, 4), seed=3)
    out = ours.generate(ids, max_new_tokens=5, min_new_tokens=5, return_dict_in_generate=True,
                        output_scores=True)
    assert isinstance(out, GenerateDecoderOnlyOutput)
    assert out.logits is None and len(out.scores) == 5 and out.scores[0].shape == (2, CFG.vocab_size)
    assert torch.equal(out.sequences, ours.generate(ids, max_new_tokens=5, min_new_tokens=5))
    assert torch.equal(out[0], out.sequences) and out.keys() == ["sequences", "scores"]
    beams = ours.generate(ids, max_new_tokens=5, num_beams=2, return_dict_in_generate=True,
                          output_scores=True)
    assert type(beams).__name__ == "GenerateBeamDecoderOnlyOutput"
    assert beams.sequences_scores.shape == (2,) and beams.beam_indices.shape[0] == 2


class CharTokenizer:
    def decode(self, ids):
        return "".join(chr(97 + i % 26) for i in ids)


def test_stop_strings_and_streaming(models):
    ours, _ = models
    ids = random_ids(CFG, (1, 4), seed=8)
    full = ours.generate(ids, max_new_tokens=10, min_new_tokens=10)
    text = CharTokenizer().decode(full[0, 4:].tolist())
    stop = text[3:5]
    got = ours.generate(ids, max_new_tokens=10, min_new_tokens=10, stop_strings=stop,
                        tokenizer=CharTokenizer())
    first = text.index(stop) + len(stop)
    assert torch.equal(got, full[:, :4 + first])
    steps = list(ours.stream_generate(ids, max_new_tokens=10, min_new_tokens=10,
                                      tokenizer=CharTokenizer()))
    assert torch.equal(torch.stack([s.token_ids for s in steps], 1), full[:, 4:])
    assert "".join(s.text[0] for s in steps) == text

    class Collect:
        def __init__(self):
            self.chunks, self.ended = [], False

        def put(self, value):
            self.chunks.append(value)

        def end(self):
            self.ended = True

    s = Collect()
    ours.generate(ids, max_new_tokens=10, min_new_tokens=10, streamer=s)
    assert s.ended and torch.equal(torch.cat([s.chunks[0][0]] + s.chunks[1:]), full[0])


def test_compiled_decode_step_fullgraph_matches_eager(tmp_path):
    """One compile of a 1-layer model: `fullgraph=True` fails on any graph break."""
    config = CONFIGS["gelu_fast"]
    write_checkpoint(tmp_path, config)
    model = GPT2LMHeadModel.from_pretrained(tmp_path)
    ids = torch.tensor(random_ids(config, (2, 6)))
    with torch.no_grad():
        want = model(ids).logits[:, 1:]
    cache = KVCache.allocate(config, 2, 8)
    step = torch.compile(model.decode_step, fullgraph=True, dynamic=False)
    key_mask = torch.zeros(2, 8, dtype=torch.bool)
    got = []
    with torch.inference_mode():
        for t in range(6):
            key_mask[:, t] = True
            pos = torch.full((2, 1), t)
            got.append(step(ids[:, t:t + 1], pos, torch.tensor([t]), key_mask, *cache.buffers))
    # compiled kernels fuse differently from eager: float32 rounding only
    torch.testing.assert_close(torch.stack(got[1:], 1), want[:, :5], atol=2e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One 1-layer model shared by the `compile=True` tests: each new (batch, bucket) key costs
    a compilation of several seconds."""
    path = tmp_path_factory.mktemp("tiny")
    config = CONFIGS["gelu_fast"]
    write_checkpoint(path, config, seed=5)
    model = GPT2LMHeadModel.from_pretrained(path)
    rng = np.random.default_rng(12)
    ids = rng.integers(3, config.vocab_size, (2, 8))
    mask = np.ones_like(ids)
    mask[1, :3] = 0
    ids[1, :3] = 0
    return model, ids, mask


def _unique_graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def test_compiled_generate_identical_to_eager_and_reused(tiny):
    model, ids, mask = tiny
    kw = dict(max_new_tokens=12, min_new_tokens=12, pad_token_id=0)
    want = model.generate(ids, attention_mask=mask, **kw)
    got = model.generate(ids, attention_mask=mask, compile=True, **kw)
    assert torch.equal(got, want)
    compiled = _unique_graphs()
    # a shorter prompt, unpadded, lands in the same cache-length bucket: no new compilation
    short = ids[:, 3:]
    eager = model.generate(short, **kw)
    assert torch.equal(model.generate(short, compile=True, **kw), eager)
    steps = [s.token_ids for s in model.stream_generate(short, compile=True, **kw)]
    assert torch.equal(torch.stack(steps, 1), eager[:, 5:])
    sampled = dict(do_sample=True, top_k=5, temperature=0.8, seed=4, **kw)
    assert torch.equal(model.generate(short, compile=True, **sampled),
                       model.generate(short, **sampled))
    assert _unique_graphs() == compiled


def test_compiled_beam_search_identical_to_eager(tiny):
    model, ids, mask = tiny
    # eos ids the greedy path emits early, so beams finish and the finished pool matters
    eos = [int(t) for t in model.generate(ids, attention_mask=mask, max_new_tokens=3,
                                          min_new_tokens=3)[:, -2:].flatten()[:2]]
    kw = dict(max_new_tokens=10, eos_token_id=eos, pad_token_id=0, num_beams=3,
              num_return_sequences=2, length_penalty=0.7)
    want = model.generate(ids, attention_mask=mask, **kw)
    got = model.generate(ids, attention_mask=mask, compile=True, **kw)
    assert torch.equal(got, want)
    # beam sampling and stop strings under compile: the same tokens
    sampled = dict(kw, do_sample=True, seed=3, top_k=8, num_return_sequences=1, stop_strings="ab",
                   tokenizer=CharTokenizer())
    assert torch.equal(model.generate(ids, attention_mask=mask, compile=True, **sampled),
                       model.generate(ids, attention_mask=mask, **sampled))


def test_cache_bucket_rounds_up_and_caps():
    from gpt2_torch.generation import cache_bucket

    assert [cache_bucket(n, 1024) for n in (1, 37, 64, 65, 1000)] == [64, 64, 64, 128, 1024]
    assert cache_bucket(20, 32) == 32


@pytest.mark.parametrize("bad", [1, "yes", None])
def test_compile_must_be_bool(models, bad):
    ours, _ = models
    ids = random_ids(CFG, (1, 3))
    with pytest.raises(TypeError, match=r"`compile` must be True or False\. Received: compile="):
        ours.generate(ids, max_new_tokens=2, compile=bad)
    with pytest.raises(TypeError, match="`compile` must be True or False"):
        next(ours.stream_generate(ids, max_new_tokens=2, compile=bad))
