"""`generate` against transformers' torch `generate` (token-identical), and the in-graph logits
processors against `gpt2_core.sampling`'s table on the same logits, on any Keras backend (the
NumPy reference `generate` is compared in test_keras_generation_spec)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from keras import ops
from keras_test_helpers import CONFIGS, to_np

import gpt2_core
from gpt2_conformance.tolerances import tolerance
from gpt2_core import generation_config, sampling
from gpt2_keras import GPT2LMHeadModel, generation, processors

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


pytestmark = pytest.mark.usefixtures("eager_generation")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    config = CONFIGS["base"].replace(n_positions=64)
    path = tmp_path_factory.mktemp("gen")
    gpt2_core.save_pretrained(path, config, gpt2_core.random_params(config, seed=4))
    ours = GPT2LMHeadModel.from_pretrained(path)
    theirs = transformers.GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager").eval()
    return config, ours, theirs


def left_padded(config, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, config.vocab_size - 1, (3, 7)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[0, :3], ids[0, :3] = 0, config.pad_token_id
    mask[2, :1], ids[2, :1] = 0, config.pad_token_id
    return ids, mask


CASES = {
    "greedy": {},
    "greedy_processors": dict(repetition_penalty=1.3, no_repeat_ngram_size=2, min_new_tokens=6),
    "beams": dict(num_beams=3),
    "beams_lp_early": dict(num_beams=4, length_penalty=0.6, early_stopping=True),
    "beams_never": dict(num_beams=2, length_penalty=1.5, early_stopping="never",
                        no_repeat_ngram_size=3),
    "beams_lp2": dict(num_beams=3, length_penalty=2.0),
    "beams_never_negative_lp": dict(num_beams=3, length_penalty=-0.5, early_stopping="never"),
    "beams_repetition_min_new": dict(num_beams=3, repetition_penalty=1.3, min_new_tokens=3),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_generate_is_token_identical_to_transformers(pair, case):
    config, ours, theirs = pair
    ids, mask = left_padded(config)
    kw = CASES[case]
    # several EOS ids, one of them a frequent token of this random model, so rows finish early
    eos = [config.eos_token_id, 17]
    got = ours.generate(ids, attention_mask=mask, max_new_tokens=14, eos_token_id=eos, **kw)
    with torch.no_grad():
        want = theirs.generate(torch.from_numpy(ids.astype(np.int64)),
                               attention_mask=torch.from_numpy(mask.astype(np.int64)),
                               max_new_tokens=14, do_sample=False, eos_token_id=eos,
                               pad_token_id=config.pad_token_id, **kw).numpy()
    np.testing.assert_array_equal(got, want)


def transformers_generate(theirs, config, ids, mask, **kw):
    with torch.no_grad():
        return theirs.generate(torch.from_numpy(ids.astype(np.int64)),
                               attention_mask=torch.from_numpy(mask.astype(np.int64)),
                               do_sample=False, pad_token_id=config.pad_token_id, **kw).numpy()


@pytest.mark.parametrize("early_stopping", [False, True, "never"])
def test_beam_search_with_frequent_eos_ids_matches_transformers(pair, early_stopping):
    """Several EOS ids taken from the greedy continuation, so hypotheses finish at different
    steps and the finished buffer, the early-stop heuristic and the final crop all matter."""
    config, ours, theirs = pair
    ids, mask = left_padded(config, seed=1)
    greedy = ours.generate(ids, attention_mask=mask, max_new_tokens=6)
    eos = sorted({int(t) for t in greedy[:, 9:11].ravel()})[:3]
    # with these weights the three early_stopping modes return 6, 3 and 12 new tokens
    kw = dict(max_new_tokens=12, num_beams=3, eos_token_id=eos, early_stopping=early_stopping,
              length_penalty=2.0)
    got = ours.generate(ids, attention_mask=mask, **kw)
    np.testing.assert_array_equal(got, transformers_generate(theirs, config, ids, mask, **kw))


def test_segment_ends_double_from_the_prompt_up_to_the_buffer():
    assert generation.segment_ends(32, 64) == [64]
    assert generation.segment_ends(32, 192) == [64, 128, 192]
    assert generation.segment_ends(64, 1024) == [128, 256, 512, 1024]
    assert generation.segment_ends(512, 576) == [576]


@pytest.mark.parametrize("kw", [dict(), dict(repetition_penalty=1.3, no_repeat_ngram_size=2)],
                         ids=["greedy", "processors"])
def test_generate_across_cache_segments_matches_transformers(pair, kw):
    """50 new tokens after a 7-token prompt (bucketed to 32) run past the first segment's cache
    of 64 positions: the grown cache must keep every earlier key and value."""
    config, ours, theirs = pair
    ids, mask = left_padded(config, seed=2)
    P_b = generation.PROMPT_BUCKET
    assert generation.segment_ends(P_b, generation._round_up(P_b + 50, generation.LENGTH_BUCKET)) == [64, 128]
    got = ours.generate(ids, attention_mask=mask, max_new_tokens=50, **kw)
    np.testing.assert_array_equal(got, transformers_generate(theirs, config, ids, mask,
                                                             max_new_tokens=50, **kw))
    assert got.shape[1] - ids.shape[1] > 64 - P_b  # decoding did reach the second segment


def test_generate_stops_when_every_row_hit_eos(pair):
    config, ours, _ = pair
    ids, mask = left_padded(config)
    full = ours.generate(ids, attention_mask=mask, max_new_tokens=14)
    first_tokens = full[:, 7]
    short = ours.generate(ids, attention_mask=mask, max_new_tokens=14,
                          eos_token_id=[int(t) for t in first_tokens])
    assert short.shape == (3, 8)
    np.testing.assert_array_equal(short, full[:, :8])


def test_sampling_is_seeded_and_respects_top_k(pair):
    config, ours, _ = pair
    ids, mask = left_padded(config)
    a = ours.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=True, top_k=1, seed=3)
    greedy = ours.generate(ids, attention_mask=mask, max_new_tokens=10)
    np.testing.assert_array_equal(a, greedy)  # top_k=1 leaves only the argmax
    b = ours.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=True, seed=5)
    c = ours.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=True, seed=5)
    d = ours.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=True, seed=6)
    np.testing.assert_array_equal(b, c)
    assert not np.array_equal(b, d)


def test_stop_strings_cut_rows_like_transformers_criteria(pair):
    config, ours, _ = pair

    class CharTokenizer:  # token i <-> one character, so a stop string is a token pattern
        def decode(self, ids):
            return "".join(chr(0x100 + i) for i in ids)

    ids, mask = left_padded(config)
    full = ours.generate(ids, attention_mask=mask, max_new_tokens=12)
    stop = chr(0x100 + int(full[1, 9])) + chr(0x100 + int(full[1, 10]))
    got = ours.generate(ids, attention_mask=mask, max_new_tokens=12, stop_strings=[stop],
                        tokenizer=CharTokenizer())
    np.testing.assert_array_equal(got[1, :11], full[1, :11])
    assert (got[1, 11:] == config.pad_token_id).all()
    with pytest.raises(ValueError, match="`stop_strings` needs `tokenizer=`"):
        ours.generate(ids, attention_mask=mask, max_new_tokens=3, stop_strings=["x"])


def test_generate_rejects_bad_arguments(pair):
    config, ours, _ = pair
    ids = np.ones((1, 4), np.int32)
    with pytest.raises(ValueError, match="max_new_tokens` must be a positive integer"):
        ours.generate(ids, max_new_tokens=0)
    with pytest.raises(ValueError, match="exceeds the model's n_positions=64"):
        ours.generate(ids, max_new_tokens=61)
    with pytest.raises(ValueError, match=r"\[0, vocab_size=101\)"):
        ours.generate(ids * 500, max_new_tokens=2)
    with pytest.raises(ValueError, match="top_p"):
        ours.generate(ids, max_new_tokens=2, do_sample=True, top_p=1.5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'prompts'"):
        ours.generate(ids, prompts=["hello"])
    with pytest.raises(ValueError, match="String prompts need a tokenizer"):
        ours.generate("hello", max_new_tokens=2)


def test_seed_example_and_num_return_sequences(pair):
    config, ours, _ = pair
    ids, mask = left_padded(config)
    out = ours.generate(ids[1:2], do_sample=True, temperature=0.9, max_length=40, seed=0)
    assert out.shape[0] == 1 and out.shape[1] <= 40
    many = ours.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=True, seed=1,
                         num_return_sequences=2)
    assert many.shape[0] == 6 and not np.array_equal(many[0], many[1])
    np.testing.assert_array_equal(many[::2, :7], ids)


# Every processor alone, then several together; `sampling` turns the warpers on.
PROCESSOR_CASES = {
    "repetition_penalty": dict(repetition_penalty=1.7),
    "no_repeat_ngram": dict(no_repeat_ngram_size=2),
    "no_repeat_ngram_3": dict(no_repeat_ngram_size=3),
    "bad_words": dict(bad_words_ids=[[4], [2, 3], [1, 2, 5]]),
    "min_length": dict(min_length=40, eos_token_id=[3, 5]),
    "temperature": dict(do_sample=True, temperature=0.7, top_k=0),
    "top_k": dict(do_sample=True, top_k=5),
    "top_p": dict(do_sample=True, top_p=0.8, top_k=0),
    "min_p": dict(do_sample=True, min_p=0.2, top_k=0),
    "typical_p": dict(do_sample=True, typical_p=0.6, top_k=0),
    "combined": dict(do_sample=True, temperature=1.3, top_k=20, top_p=0.5, min_p=0.05,
                     typical_p=0.9, repetition_penalty=0.8, no_repeat_ngram_size=2,
                     bad_words_ids=[[1, 2]], min_length=40, eos_token_id=[3]),
    "beam_sampling_keeps_more": dict(do_sample=True, num_beams=2, top_k=1, top_p=0.3,
                                     typical_p=0.2, min_p=0.9, eos_token_id=[3, 5]),
}


@pytest.mark.parametrize("name", sorted(PROCESSOR_CASES))
def test_processors_match_gpt2_core_sampling(name):
    rng = np.random.default_rng(len(name))
    N, P_b, T, V = 4, 16, 12, 40
    config = CONFIGS["base"].replace(vocab_size=V, eos_token_id=3)
    plan = generation_config.resolve(config, generation_config.GenerationConfig(
        **PROCESSOR_CASES[name]), N, T)
    scores = rng.normal(0, 3, (N, V)).astype(np.float32)
    row = rng.integers(0, 6, (N, T)).astype(np.int32)  # few distinct ids: repeated n-grams
    padding = np.array([0, 3, 0, 1])  # left padding the repetition penalty skips
    row[1, :3] = 0
    state = sampling.ProcessorState(row, padding, step=2, eos_token_ids=plan.eos_token_ids)
    want = sampling.apply_processors(scores, state, plan)
    tokens = np.zeros((N, P_b + 4), np.int32)  # bucket padding, the row, room after it
    start = P_b - T
    tokens[:, start:P_b] = row
    mask = (np.arange(T)[None, :] >= padding[:, None]).astype(np.int32)
    seen = processors.prompt_seen(V, ops.convert_to_tensor(tokens[:, :P_b]),
                                  np.pad(mask, ((0, 0), (start, 0))), start)
    inputs = processors.ProcessorInputs(ops.convert_to_tensor(tokens), start, P_b, 2, seen)
    tp = generation.trace_plan(dataclasses.replace(plan, prompt_length=T - 2))  # step 2 = column T
    got = to_np(processors.process(ops.convert_to_tensor(scores), tp, inputs))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    atol, rtol = tolerance("scores")
    np.testing.assert_allclose(got[finite], want[finite], atol=atol, rtol=rtol)
