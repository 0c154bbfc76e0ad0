"""Each logits processor against its transformers twin, on the same random scores."""

from __future__ import annotations

import numpy as np
import pytest

from gpt2_core import sampling

torch = pytest.importorskip("torch")
gen = pytest.importorskip("transformers.generation.logits_process")

V = 50


def scores_and_ids(seed=0, B=3, S=9):
    rng = np.random.default_rng(seed)
    scores = rng.normal(0, 3, (B, V)).astype(np.float32)
    scores[0, :5] = scores[0, 5]  # ties at the top-k / top-p boundary
    ids = rng.integers(0, V, (B, S))
    ids[1, -4:] = ids[1, :4]  # a repeated n-gram
    return scores, ids


def hf(processor, scores, ids):
    return processor(torch.tensor(ids), torch.tensor(scores)).numpy()


def same(ours, theirs):
    np.testing.assert_array_equal(np.isinf(ours), np.isinf(theirs))
    np.testing.assert_allclose(ours[~np.isinf(ours)], theirs[~np.isinf(theirs)], rtol=1e-6)


@pytest.mark.parametrize("penalty", [0.7, 1.3, 2.0])
def test_repetition_penalty(penalty):
    s, ids = scores_and_ids()
    same(sampling.repetition_penalty(s, ids, penalty),
         hf(gen.RepetitionPenaltyLogitsProcessor(penalty), s, ids))


def test_repetition_penalty_skips_left_padding_like_transformers():
    s, ids = scores_and_ids(7)
    mask = np.ones_like(ids)
    mask[0, :3] = 0
    mask[2, :5] = 0
    skip = sampling.left_padding_lengths(mask)
    twin = gen.RepetitionPenaltyLogitsProcessor(1.5, prompt_ignore_length=torch.tensor(skip))
    ours = sampling.repetition_penalty(s, ids, 1.5, skip)
    same(ours, hf(twin, s, ids))
    assert not np.allclose(ours, sampling.repetition_penalty(s, ids, 1.5))
    plan = _plan(repetition_penalty=1.5)
    state = sampling.ProcessorState(ids, skip, 0, (0,))
    same(sampling.apply_processors(s, state, plan), ours)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 12])
def test_no_repeat_ngram(n):
    s, ids = scores_and_ids(1)
    ours = sampling.no_repeat_ngram(s, ids, n)
    same(ours, hf(gen.NoRepeatNGramLogitsProcessor(n), s, ids))
    if n in (1, 4):
        assert np.isinf(ours).any()


@pytest.mark.parametrize("t", [0.3, 1.0, 1.7])
def test_temperature(t):
    s, ids = scores_and_ids(2)
    same(sampling.temperature(s, t), hf(gen.TemperatureLogitsWarper(t), s, ids))


@pytest.mark.parametrize("k", [1, 3, 6, 49, 80])
def test_top_k(k):
    s, ids = scores_and_ids(3)
    same(sampling.top_k(s, k), hf(gen.TopKLogitsWarper(k), s, ids))


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9, 0.999, 1.0])
def test_top_p(p):
    s, ids = scores_and_ids(4)
    same(sampling.top_p(s, p), hf(gen.TopPLogitsWarper(p), s, ids))


@pytest.mark.parametrize("new_tokens", [0, 2, 5])
def test_min_length_counts_the_prompt(new_tokens):
    s, ids = scores_and_ids(5)
    prompt_len = ids.shape[1] - new_tokens
    twin = gen.MinNewTokensLengthLogitsProcessor(prompt_len, 3, [7, 11])
    # min_new_tokens resolves to a min_length of prompt + min_new_tokens
    same(sampling.min_length(s, ids.shape[1], prompt_len + 3, [7, 11]), hf(twin, s, ids))


def _plan(**kwargs):
    from gpt2_core import GPT2Config
    from gpt2_core.generation_config import GenerationConfig, resolve

    config = GPT2Config(vocab_size=50, n_positions=64, n_embd=8, n_layer=1, n_head=2)
    return resolve(config, GenerationConfig(**kwargs), 3, 16)


def test_warpers_apply_only_when_sampling():
    s, ids = scores_and_ids(6)
    state = sampling.ProcessorState(ids, np.zeros(len(ids), np.int64), 0, (0,))
    greedy = _plan(top_k=2, temperature=0.5, repetition_penalty=1.2)
    np.testing.assert_array_equal(sampling.apply_processors(s, state, greedy),
                                  sampling.repetition_penalty(s, ids, 1.2))
    sampled = _plan(do_sample=True, top_k=2, temperature=0.5)
    assert (~np.isinf(sampling.apply_processors(s, state, sampled))).sum(-1).max() <= 6
