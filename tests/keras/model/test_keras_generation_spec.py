"""`generate` against the NumPy reference `gpt2_core.generation.generate` on the same random
checkpoint, on any Keras backend: tokens identical for greedy, every processor alone and
combined on left-padded batches, beams, beam sampling and seeded sampling; scores within the
conformance tolerance table; the same errors; `generation_config`; the threefry port bit for
bit."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
from keras import ops
from keras_test_helpers import CONFIGS

import gpt2_core
from gpt2_conformance.tolerances import tolerance
from gpt2_core import generation as reference
from gpt2_core import threefry as np_threefry
from gpt2_core.sampling import PROCESSORS
from gpt2_keras import GenerationConfig, GPT2LMHeadModel, processors, threefry
from gpt2_tokenizer import GPT2Tokenizer

pytestmark = pytest.mark.usefixtures("eager_generation")

CONFIG = CONFIGS["base"].replace(n_positions=96)  # room for >= 64 sampled steps
PARAMS = gpt2_core.random_params(CONFIG, seed=4)


@pytest.fixture(scope="module")
def model():
    return GPT2LMHeadModel.from_params(CONFIG, PARAMS)


def left_padded(seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, CONFIG.vocab_size - 1, (3, 7)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[0, :3], ids[0, :3] = 0, CONFIG.pad_token_id
    mask[2, :1], ids[2, :1] = 0, CONFIG.pad_token_id
    return ids, mask


@pytest.fixture(scope="module")
def frequent_eos():
    """Ids the greedy continuation picks early, so eos fires with random weights."""
    ids, mask = left_padded()
    greedy = reference.generate(CONFIG, PARAMS, ids, mask, max_new_tokens=6)
    return sorted({int(t) for t in greedy[:, 8:10].ravel()})[:3]


def sequences(out):
    return out if isinstance(out, np.ndarray) else out.sequences


def assert_same(got, want):
    got, want = sequences(got), sequences(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_array_equal(got, want)


# Each case once: the keyword arguments; "EOS" is replaced by the frequent eos ids.
CASES = {
    "greedy": dict(max_new_tokens=12),
    "repetition_penalty": dict(max_new_tokens=12, repetition_penalty=1.4),
    "no_repeat_ngram": dict(max_new_tokens=12, no_repeat_ngram_size=2),
    "bad_words": dict(max_new_tokens=12, bad_words_ids="BAD"),
    "min_new_tokens_eos": dict(max_new_tokens=12, min_new_tokens=5, eos_token_id="EOS"),
    "min_length_eos": dict(max_new_tokens=12, min_length=11, eos_token_id="EOS"),
    "combined_greedy": dict(max_new_tokens=12, repetition_penalty=0.8, no_repeat_ngram_size=3,
                            bad_words_ids="BAD", min_new_tokens=3, eos_token_id="EOS"),
    "temperature": dict(max_new_tokens=12, do_sample=True, temperature=0.7, top_k=0, seed=1),
    "top_k": dict(max_new_tokens=12, do_sample=True, top_k=5, seed=2),
    "top_p": dict(max_new_tokens=12, do_sample=True, top_p=0.8, top_k=0, seed=3),
    "min_p": dict(max_new_tokens=12, do_sample=True, min_p=0.1, top_k=0, seed=4),
    "typical_p": dict(max_new_tokens=12, do_sample=True, typical_p=0.7, top_k=0, seed=5),
    "combined_sampling": dict(max_new_tokens=12, do_sample=True, temperature=1.3, top_k=20,
                              top_p=0.9, min_p=0.02, typical_p=0.95, repetition_penalty=1.2,
                              no_repeat_ngram_size=2, eos_token_id="EOS", seed=2 ** 40 + 7),
    "sampling_70_steps": dict(max_new_tokens=70, do_sample=True, seed=0, eos_token_id=[]),  # no eos
    "sampling_return_sequences": dict(max_new_tokens=10, do_sample=True, num_return_sequences=3,
                                      seed=11, eos_token_id="EOS"),
    "beams": dict(max_new_tokens=10, num_beams=3, eos_token_id="EOS"),
    "beams_early_true": dict(max_new_tokens=10, num_beams=3, eos_token_id="EOS",
                             early_stopping=True, length_penalty=0.6),
    "beams_never": dict(max_new_tokens=10, num_beams=2, eos_token_id="EOS",
                        early_stopping="never", length_penalty=2.0),
    "beams_return_sequences": dict(max_new_tokens=10, num_beams=4, num_return_sequences=3,
                                   eos_token_id="EOS", length_penalty=1.5),
    "beams_processors": dict(max_new_tokens=10, num_beams=3, repetition_penalty=1.3,
                             no_repeat_ngram_size=2, min_new_tokens=3, eos_token_id="EOS"),
    "beam_sampling": dict(max_new_tokens=10, num_beams=3, do_sample=True, top_k=20,
                          eos_token_id="EOS", seed=6, num_return_sequences=2),
    "pad_from_argument": dict(max_new_tokens=12, eos_token_id="EOS", pad_token_id=7),
    "max_length": dict(max_length=15),
    "max_new_tokens_wins": dict(max_length=9, max_new_tokens=6),
}


def case_kwargs(name, eos):
    kw = dict(CASES[name])
    if kw.get("eos_token_id") == "EOS":
        kw["eos_token_id"] = eos
    if kw.get("bad_words_ids") == "BAD":
        kw["bad_words_ids"] = [[eos[0] + 1], [eos[0], eos[-1]], [3, 4, 5]]
    return kw


@pytest.mark.parametrize("name", sorted(CASES))
def test_tokens_equal_the_reference(model, frequent_eos, name):
    ids, mask = left_padded()
    kw = case_kwargs(name, frequent_eos)
    got = model.generate(ids, attention_mask=mask, **kw)
    assert_same(got, reference.generate(CONFIG, PARAMS, ids, mask, **kw))
    if name == "sampling_70_steps":
        assert got.shape[1] - ids.shape[1] >= 64


def test_eos_fires_in_the_cases(model, frequent_eos):
    """The eos cases do finish rows early (else they would not test the fill)."""
    ids, mask = left_padded()
    out = model.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=frequent_eos)
    assert np.isin(out[:, 7:], frequent_eos).any(axis=1).all()


def test_pad_from_the_model_config(frequent_eos):
    """A checkpoint whose config sets pad_token_id fills finished rows with it, not with eos."""
    config = CONFIG.replace(pad_token_id=9)
    m = GPT2LMHeadModel.from_params(config, PARAMS)
    ids, mask = left_padded()
    got = m.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=frequent_eos)
    assert_same(got, reference.generate(config, PARAMS, ids, mask, max_new_tokens=12,
                                        eos_token_id=frequent_eos))
    new = got[:, 7:]
    finished = np.cumsum(np.isin(new, frequent_eos), 1) > 0
    assert (new[:, 1:][finished[:, :-1]] == 9).all() and finished[:, :-1].any()


def test_stop_strings_equal_the_reference(model):
    tok = GPT2Tokenizer.from_pretrained()
    ids, mask = left_padded()
    full = reference.generate(CONFIG, PARAMS, ids, mask, max_new_tokens=12)
    stop = tok.decode(full[1, 9:11].tolist())
    kw = dict(max_new_tokens=12, stop_strings=[stop, "\x00never"])
    got = model.generate(ids, attention_mask=mask, tokenizer=tok, **kw)
    assert_same(got, reference.generate(CONFIG, PARAMS, ids, mask, tokenizer=tok, **kw))
    assert (got[1, 11:] == CONFIG.pad_token_id).all()
    beams = dict(kw, num_beams=2)
    assert_same(model.generate(ids, attention_mask=mask, tokenizer=tok, **beams),
                reference.generate(CONFIG, PARAMS, ids, mask, tokenizer=tok, **beams))


def assert_records_close(got, want, name):
    assert len(got) == len(want), (name, len(got), len(want))
    atol, rtol = tolerance("logits")  # processed scores carry the logits' float32 error
    for step, (g, w) in enumerate(zip(got, want)):
        g, w = np.asarray(g, np.float64), np.asarray(w)
        np.testing.assert_array_equal(np.isfinite(g), np.isfinite(w), err_msg=f"{name}[{step}]")
        f = np.isfinite(w)
        np.testing.assert_allclose(g[f], w[f], atol=atol, rtol=rtol, err_msg=f"{name}[{step}]")


@pytest.mark.parametrize("kw", [dict(do_sample=True, top_k=10, seed=3, repetition_penalty=1.2),
                                dict(num_beams=3, length_penalty=1.5)], ids=["sampling", "beams"])
def test_scores_and_logits_within_tolerance(model, frequent_eos, kw):
    ids, mask = left_padded()
    kw = dict(kw, max_new_tokens=8, eos_token_id=frequent_eos, return_dict_in_generate=True,
              output_scores=True, output_logits=True)
    got = model.generate(ids, attention_mask=mask, **kw)
    want = reference.generate(CONFIG, PARAMS, ids, mask, **kw)
    assert type(got).__name__ == type(want).__name__
    assert_same(got, want)
    assert_records_close(got.scores, want.scores, "scores")
    assert_records_close(got.logits, want.logits, "logits")
    if "num_beams" in kw:
        np.testing.assert_array_equal(got.beam_indices, want.beam_indices)
        atol, rtol = tolerance("logits")
        np.testing.assert_allclose(got.sequences_scores, want.sequences_scores, atol=atol, rtol=rtol)


def test_default_output_is_the_sequences_and_records_hold_only_what_was_asked(model):
    ids = np.array([[5, 6, 7]], np.int32)
    assert isinstance(model.generate(ids, max_new_tokens=3), np.ndarray)
    out = model.generate(ids, max_new_tokens=3, return_dict_in_generate=True)
    assert out.keys() == ["sequences"] and out.scores is None


def test_seed_example_and_bos_start(model):
    ids = np.array([[5, 6, 7]], np.int32)
    out = model.generate(ids, do_sample=True, temperature=0.9, max_length=60, seed=0)
    assert_same(out, reference.generate(CONFIG, PARAMS, ids, do_sample=True, temperature=0.9,
                                        max_length=60, seed=0))
    assert out.shape == (1, 60)  # no eos fired
    start = model.generate(max_new_tokens=4)
    assert start.shape == (1, 5) and start[0, 0] == CONFIG.bos_token_id
    assert_same(start, reference.generate(CONFIG, PARAMS, max_new_tokens=4))


def test_unseeded_sampling_follows_keras_global_seed(model):
    ids = np.array([[5, 6, 7]], np.int32)
    keras.utils.set_random_seed(123)
    a = model.generate(ids, do_sample=True, max_new_tokens=8)
    keras.utils.set_random_seed(123)
    b = model.generate(ids, do_sample=True, max_new_tokens=8)
    np.testing.assert_array_equal(a, b)


def test_generation_config_attribute_and_argument(model, tmp_path):
    ids = np.array([[5, 6, 7]], np.int32)
    assert model.generation_config.eos_token_id == CONFIG.eos_token_id
    model.generation_config.max_new_tokens = 4
    try:
        assert model.generate(ids).shape == (1, 7)
        assert model.generate(ids, generation_config=GenerationConfig(max_new_tokens=2)).shape == (1, 5)
        assert model.generate(ids, None, {"max_new_tokens": 2}, max_new_tokens=3).shape == (1, 6)
    finally:
        model.generation_config.max_new_tokens = None
    gpt2_core.save_pretrained(tmp_path, CONFIG, PARAMS)
    loaded = GPT2LMHeadModel.from_pretrained(tmp_path)
    assert isinstance(loaded.generation_config, GenerationConfig)


def reference_error(**kw):
    ids = kw.pop("input_ids", np.array([[5, 6, 7]], np.int32))
    try:
        reference.generate(CONFIG, PARAMS, ids, **kw)
    except (ValueError, TypeError) as e:
        return type(e), str(e)
    raise AssertionError(f"the reference accepted {kw}")


@pytest.mark.parametrize("kw", [
    dict(max_new_tokens=0), dict(num_beams=0), dict(max_new_tokens=100),
    dict(input_ids=np.zeros((1, 0), np.int32)), dict(input_ids=np.array([[500]])),
    dict(eos_token_id=1000), dict(pad_token_id=-3), dict(num_return_sequences=2),
    dict(num_beams=2, num_return_sequences=3), dict(top_p=1.5, do_sample=True),
    dict(stop_strings=["x"]), dict(bad_words_ids=[[5000]]), dict(not_a_field=1),
    dict(temperature=0.0, do_sample=True), dict(early_stopping="sometimes"),
], ids=lambda kw: ",".join(kw))
def test_errors_are_the_references(model, kw):
    kind, message = reference_error(**dict(kw))
    ids = kw.pop("input_ids", np.array([[5, 6, 7]], np.int32))
    with pytest.raises(kind, match=re.escape(message)):
        model.generate(ids, **kw)


def test_every_spec_processor_has_a_keras_port():
    assert set(processors.KERAS) == {p.name for p in PROCESSORS}


@pytest.mark.parametrize("seed,step,rows,V", [(0, 0, 3, 17), (2 ** 40 + 12345, 7, 4, 101),
                                              (2 ** 64 - 1, 2 ** 32 + 3, 2, 50257)])
def test_threefry_uniforms_are_the_specs_bit_for_bit(seed, step, rows, V):
    got = np.asarray(ops.convert_to_numpy(threefry.uniform(threefry.key_tensor(seed), step, rows, V)))
    want = np_threefry.uniform(seed, step, rows, V)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_threefry_counter_wraps_past_2_to_the_32():
    V, first = 101, 2 ** 32 // 101 + 5  # row * V + token passes 2**32 inside these rows
    got = np.asarray(ops.convert_to_numpy(threefry.uniform(threefry.key_tensor(5), 3, 2, V, first_row=first)))
    counter = (np.arange(first, first + 2, dtype=np.uint64)[:, None] * np.uint64(V)
               + np.arange(V, dtype=np.uint64)) & np.uint64(np_threefry.MASK32)
    assert first * V > 2 ** 32
    x0, _ = np_threefry.threefry2x32(np_threefry.key_words(5), np.full(counter.shape, 3, np.uint32),
                                     counter.astype(np.uint32))
    np.testing.assert_array_equal(got.view(np.uint32), np_threefry.bits_to_uniform(x0).view(np.uint32))
