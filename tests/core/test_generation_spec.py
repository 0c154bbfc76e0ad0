"""The generation spec: GenerationConfig's fields and resolution rules, the processor table
against transformers' processors, Threefry noise, stop-string automata against the string
definition, and the reference generate against transformers' generate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers
from transformers.generation import logits_process as hf_lp

from gpt2_core import GPT2Config, random_params, save_pretrained, threefry
from gpt2_core import generation as G
from gpt2_core import sampling as S
from gpt2_core.generation_config import (
    DEFAULTS,
    FIELD_NAMES,
    GenerationConfig,
    field_table_markdown,
    merge,
    resolve,
)
from gpt2_tokenizer import GPT2Tokenizer

CFG = GPT2Config(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4, eos_token_id=2,
                 bos_token_id=1)


# ---- GenerationConfig ------------------------------------------------------------------------
def test_fields_cover_the_issue_list():
    wanted = {"max_length", "max_new_tokens", "min_length", "min_new_tokens", "do_sample",
              "temperature", "top_k", "top_p", "min_p", "typical_p", "repetition_penalty",
              "no_repeat_ngram_size", "bad_words_ids", "num_beams", "length_penalty",
              "early_stopping", "num_return_sequences", "eos_token_id", "pad_token_id",
              "bos_token_id", "stop_strings", "output_scores", "output_logits",
              "return_dict_in_generate", "seed"}
    assert wanted <= set(FIELD_NAMES)


def test_defaults_are_transformers_defaults():
    hf = transformers.GenerationConfig._get_default_generation_params()
    for name, value in DEFAULTS.items():
        if name in hf:
            assert hf[name] == value, name


def test_round_trip_keeps_unknown_keys(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps(
        {"max_new_tokens": 7, "do_sample": True, "transformers_version": "5.0", "custom_key": 3}))
    cfg = GenerationConfig.from_pretrained(tmp_path)
    assert cfg.max_new_tokens == 7 and cfg.do_sample is True
    cfg.temperature = 0.5  # fields are assignable, validated when generate runs
    out = tmp_path / "out"
    cfg.save_pretrained(out)
    data = json.loads((out / "generation_config.json").read_text())
    assert data == {"max_new_tokens": 7, "do_sample": True, "temperature": 0.5,
                    "transformers_version": "5.0", "custom_key": 3}
    assert cfg.to_diff_dict() == data
    assert GenerationConfig.from_pretrained(out) == cfg


def test_update_returns_unused_and_transformers_config_is_accepted():
    cfg = GenerationConfig()
    assert cfg.update(max_new_tokens=3, nope=1) == {"nope": 1}
    hf = transformers.GenerationConfig(max_new_tokens=5, num_beams=2, eos_token_id=[2, 3])
    merged = merge(GenerationConfig(), hf, {})
    assert (merged.max_new_tokens, merged.num_beams, merged.eos_token_id) == (5, 2, [2, 3])


def test_unknown_keyword_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="'max_tokens'"):
        merge(GenerationConfig(), None, {"max_tokens": 5})


def test_unsupported_transformers_option_is_refused():
    cfg = GenerationConfig.from_dict({"diversity_penalty": 0.5})
    with pytest.raises(ValueError, match="diversity_penalty"):
        resolve(CFG, cfg, 1, 4)


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(num_beams=0), "num_beams"),
    (dict(num_return_sequences=2), "num_return_sequences"),
    (dict(num_beams=2, num_return_sequences=3), "num_return_sequences"),
    (dict(eos_token_id=999), r"eos_token_id.*vocab_size=97"),
    (dict(eos_token_id=-1), "eos_token_id"),
    (dict(pad_token_id=97), "pad_token_id"),
    (dict(bad_words_ids=[[5, 200]]), "bad_words_ids"),
    (dict(temperature=0.0), "temperature"),
    (dict(top_p=1.5), "top_p"),
    (dict(early_stopping="sometimes"), "early_stopping"),
    (dict(stop_strings=["x"]), "tokenizer"),
    (dict(max_new_tokens=70), "n_positions"),
    (dict(seed=-1), "seed"),
    (dict(top_k=2.5), "top_k"),
])
def test_bad_values_raise_naming_the_argument(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        resolve(CFG, merge(GenerationConfig.from_model_config(CFG), None, kwargs), 1, 4)


def test_empty_prompt_raises():
    with pytest.raises(ValueError, match="input_ids"):
        resolve(CFG, GenerationConfig(), 1, 0)


def test_length_rules():
    gen = GenerationConfig.from_model_config(CFG)
    assert resolve(CFG, gen, 1, 5).max_new_tokens == 20  # the default: 20 new tokens
    assert resolve(CFG, merge(gen, None, {"max_length": 12}), 1, 5).max_new_tokens == 7
    both = merge(gen, None, {"max_length": 12, "max_new_tokens": 3})
    assert resolve(CFG, both, 1, 5).max_new_tokens == 3  # max_new_tokens wins
    assert resolve(CFG, merge(gen, None, {"min_new_tokens": 4}), 1, 5).min_length == 9
    assert resolve(CFG, GenerationConfig(), 1, 60).max_new_tokens == 4  # capped at n_positions


def test_special_ids_follow_the_model_config():
    plan = resolve(CFG, GenerationConfig.from_model_config(CFG), 1, 3)
    assert plan.eos_token_ids == (2,) and plan.pad_token_id == 2  # pad falls back to eos
    cfg = CFG.replace(pad_token_id=7)
    assert resolve(cfg, GenerationConfig.from_model_config(cfg), 1, 3).pad_token_id == 7
    small = CFG.replace(eos_token_id=50256, bos_token_id=50256)  # ids outside the vocabulary
    plan = resolve(small, GenerationConfig.from_model_config(small), 1, 3)
    assert plan.eos_token_ids == () and plan.bos_token_id is None


def test_readme_documents_every_field():
    readme = open("README.md", encoding="utf-8").read()
    assert field_table_markdown() in readme


# ---- processors against transformers ---------------------------------------------------------
def _hf(processor, scores, ids):
    return processor(torch.as_tensor(ids), torch.as_tensor(scores)).numpy()


@pytest.mark.parametrize("name, ours, theirs", [
    ("min_p", lambda s: S.min_p(s, 0.1), hf_lp.MinPLogitsWarper(0.1)),
    ("min_p_keep3", lambda s: S.min_p(s, 0.9, 3), hf_lp.MinPLogitsWarper(0.9, min_tokens_to_keep=3)),
    ("typical_p", lambda s: S.typical_p(s, 0.8), hf_lp.TypicalLogitsWarper(0.8)),
    ("typical_p_keep2", lambda s: S.typical_p(s, 0.2, 2), hf_lp.TypicalLogitsWarper(0.2, min_tokens_to_keep=2)),
    ("top_k_keep", lambda s: S.top_k(s, 1, 3), hf_lp.TopKLogitsWarper(1, min_tokens_to_keep=3)),
    ("top_p_keep", lambda s: S.top_p(s, 0.05, 2), hf_lp.TopPLogitsWarper(0.05, min_tokens_to_keep=2)),
])
def test_warpers_match_transformers(name, ours, theirs):
    scores = np.random.default_rng(1).normal(0, 3, (4, 50)).astype(np.float32)
    ids = np.zeros((4, 3), np.int64)
    np.testing.assert_allclose(ours(scores.astype(np.float64)), _hf(theirs, scores, ids), rtol=1e-6)


def test_bad_words_and_min_length_match_transformers():
    scores = np.random.default_rng(2).normal(0, 3, (3, 20)).astype(np.float32)
    ids = np.array([[1, 4, 5], [5, 4, 1], [4, 5, 5]])
    words = [[3], [4, 5, 7], [5, 9]]
    np.testing.assert_array_equal(S.bad_words(scores, ids, words),
                                  _hf(hf_lp.NoBadWordsLogitsProcessor(words, eos_token_id=19), scores, ids))
    np.testing.assert_array_equal(S.min_length(scores, 3, 5, (2, 6)),
                                  _hf(hf_lp.MinLengthLogitsProcessor(5, [2, 6]), scores, ids))


def test_processor_table_order_is_transformers():
    assert [p.name for p in S.PROCESSORS] == [
        "repetition_penalty", "no_repeat_ngram_size", "bad_words_ids", "min_length",
        "temperature", "top_k", "top_p", "min_p", "typical_p"]


def test_repetition_penalty_skips_left_padding():
    scores = np.ones((2, 6))
    ids = np.array([[3, 3, 1], [3, 3, 1]])
    out = S.repetition_penalty(scores, ids, 2.0, np.array([2, 0]))
    assert out[0, 3] == 1.0 and out[1, 3] == 0.5 and out[0, 1] == out[1, 1] == 0.5


# ---- Threefry ---------------------------------------------------------------------------------
def test_threefry_known_answer():
    # Threefry-2x32-20 known-answer vector of the Random123 suite (key 0, counter 0).
    x0, x1 = threefry.threefry2x32((0, 0), np.zeros(1, np.uint32), np.zeros(1, np.uint32))
    assert (int(x0[0]), int(x1[0])) == (0x6B200159, 0x99BA4EFE)


def test_uniforms_are_in_range_and_depend_on_every_coordinate():
    u = threefry.uniform(2**40 + 7, 3, 4, 50)
    assert u.dtype == np.float32 and u.min() >= threefry.TINY and u.max() < 1.0
    assert not np.array_equal(u, threefry.uniform(2**40 + 7, 4, 4, 50))
    assert not np.array_equal(u, threefry.uniform(7, 3, 4, 50))
    assert len(np.unique(u)) == u.size
    g = threefry.gumbel(0, 0, 64, 1000)  # Gumbel(0, 1): mean 0.5772, variance pi^2 / 6
    assert abs(g.mean() - 0.5772) < 0.02 and abs(g.var() - np.pi ** 2 / 6) < 0.05


# ---- stop strings ------------------------------------------------------------------------------
def _string_rule(pieces: list[bytes], stop: bytes) -> bool:
    """transformers' StopStringCriteria rule: the stop string ends inside the last token."""
    text = b"".join(pieces)
    start = len(text) - len(pieces[-1])
    return any(text.find(stop, i) != -1 and text.find(stop, i) + len(stop) > start
               for i in range(max(0, start - len(stop) + 1), len(text)))


def test_stop_string_automaton_equals_the_string_rule():
    tok = GPT2Tokenizer.from_pretrained()
    V = 300
    stops = ["stop", "ss", "a b"]
    tables = G.StopStringTables.build(stops, tok, V)
    pieces = G.token_bytes(tok, V)
    rng = np.random.default_rng(0)
    alphabet = [i for i in range(V) if set(pieces[i]) <= set(b"stopab ")]  # tokens that can match
    rows = rng.choice(alphabet, (64, 12))
    state = np.zeros((64, len(stops)), np.int32)
    hits_seen = 0
    for j in range(12):
        state, hit = tables.step(state, rows[:, j])
        for r in range(64):
            expected = any(_string_rule([pieces[t] for t in rows[r, :j + 1]], s.encode()) for s in stops)
            assert hit[r] == expected, (r, j)
            hits_seen += expected
    assert hits_seen > 5  # the check saw real matches, across token boundaries too


# ---- the reference generate against transformers ---------------------------------------------
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    params = random_params(CFG, seed=3)
    save_pretrained(path, CFG, params)
    hf = transformers.GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager").eval()
    ids = np.random.default_rng(0).integers(3, 97, (3, 7))
    mask = np.ones_like(ids)
    mask[0, :3] = mask[1, :1] = 0
    ids[mask == 0] = 0
    return params, hf, ids, mask


@pytest.mark.parametrize("kwargs", [
    dict(max_new_tokens=12), dict(max_length=15), dict(max_new_tokens=12, repetition_penalty=1.7),
    dict(max_new_tokens=12, no_repeat_ngram_size=2), dict(max_new_tokens=12, bad_words_ids=[[5], [7, 8]]),
    dict(max_new_tokens=12, min_new_tokens=5, eos_token_id=[2, 3]),
    dict(max_new_tokens=10, num_beams=3),
    dict(max_new_tokens=10, num_beams=4, length_penalty=0.5, early_stopping=True, num_return_sequences=2),
    dict(max_new_tokens=10, num_beams=3, early_stopping="never", eos_token_id=[2, 5, 9]),
], ids=str)
def test_reference_generate_equals_transformers(models, kwargs):
    params, hf, ids, mask = models
    with torch.no_grad():
        expected = hf.generate(torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                               pad_token_id=0, **kwargs).numpy()
    np.testing.assert_array_equal(G.generate(CFG, params, ids, mask, pad_token_id=0, **kwargs), expected)


@pytest.mark.parametrize("kwargs", [dict(), dict(num_beams=2)], ids=["greedy", "beams"])
def test_reference_scores_equal_transformers(models, kwargs):
    params, hf, ids, mask = models
    common = dict(max_new_tokens=6, return_dict_in_generate=True, output_scores=True,
                  output_logits=True, pad_token_id=0, **kwargs)
    with torch.no_grad():
        expected = hf.generate(torch.as_tensor(ids), attention_mask=torch.as_tensor(mask), **common)
    out = G.generate(CFG, params, ids, mask, **common)
    assert type(out).__name__ == type(expected).__name__
    np.testing.assert_array_equal(out.sequences, expected.sequences.numpy())
    for ours, theirs in zip(out.scores, expected.scores, strict=True):
        np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-4, rtol=1e-4)
    if kwargs:
        np.testing.assert_array_equal(out.beam_indices, expected.beam_indices.numpy())
        np.testing.assert_allclose(out.sequences_scores, expected.sequences_scores.numpy(), atol=1e-5)


def test_seeded_sampling_is_a_function_of_the_seed(models):
    params, _, ids, mask = models
    a = G.generate(CFG, params, ids, mask, do_sample=True, seed=5, max_new_tokens=10)
    assert np.array_equal(a, G.generate(CFG, params, ids, mask, do_sample=True, seed=5, max_new_tokens=10))
    assert not np.array_equal(a, G.generate(CFG, params, ids, mask, do_sample=True, seed=6,
                                            max_new_tokens=10))


def test_input_ids_none_starts_from_bos():
    params = random_params(CFG, seed=1)
    out = G.generate(CFG, params, None, max_new_tokens=3)
    assert out.shape == (1, 4) and out[0, 0] == CFG.bos_token_id


def test_streamer_receives_the_returned_tokens(models):
    params, _, ids, mask = models

    class Collect:
        def __init__(self):
            self.values, self.ended = [], 0

        def put(self, v):
            self.values.append(np.asarray(v))

        def end(self):
            self.ended += 1

    s = Collect()
    out = G.generate(CFG, params, ids, mask, max_new_tokens=6, streamer=s)
    np.testing.assert_array_equal(np.concatenate([s.values[0], np.stack(s.values[1:], 1)], 1), out)
    assert s.ended == 1
