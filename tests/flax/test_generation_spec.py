"""gpt2_flax's generate against the spec: the same tokens as `gpt2_core.generation.generate` (the
NumPy reference, same random checkpoint) for greedy decoding, every processor alone and
combined on left-padded batches, beams, beam sampling, seeded sampling over 70 steps, stop
strings, pad and length rules; scores within the tolerance table; every `resolve` error
unchanged; Threefry bit for bit (against the spec and against JAX's own threefry)."""

import jax
import jax.extend.random as jex_random
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import Recorder, checkpoint

import gpt2_core
from gpt2_conformance.adapters.base import generation_outputs
from gpt2_conformance.compare import assert_close
from gpt2_core import GPT2Config, sampling
from gpt2_core import generation as G
from gpt2_core import threefry as spec_threefry
from gpt2_core.generation_config import GenerationConfig
from gpt2_core.sampling import ProcessorState as SpecState
from gpt2_flax import (
    GenerateBeamDecoderOnlyOutput,
    GenerateDecoderOnlyOutput,
    GPT2LMHeadModel,
    processors,
    threefry,
)
from gpt2_flax.processors import ProcessorState
from gpt2_tokenizer import GPT2Tokenizer

CFG = GPT2Config(vocab_size=96, n_positions=96, n_embd=32, n_layer=2, n_head=4,
                 eos_token_id=[3, 4], bos_token_id=3)
PARAMS = gpt2_core.random_params(CFG, 0, head="lm", scale=0.5)  # peaked, varied logits


@pytest.fixture(scope="module")
def model():
    return GPT2LMHeadModel.from_params(CFG, PARAMS)


def prompts():
    ids = np.random.default_rng(5).integers(5, CFG.vocab_size, (3, 7))
    mask = np.ones_like(ids)
    mask[1, :3] = mask[2, :1] = 0
    ids[mask == 0] = 3  # left padding with the pad (= first eos) id, as transformers does
    return ids, mask


@pytest.fixture(scope="module")
def frequent():
    """Tokens the greedy path picks often: used as eos ids so that rows really stop."""
    ids, mask = prompts()
    new = G.generate(CFG, PARAMS, ids, mask, max_new_tokens=12, eos_token_id=[95])[:, 7:]
    values, counts = np.unique(new, return_counts=True)
    return [int(v) for v in values[np.argsort(-counts, kind="stable")]]


def check(model, case, kw, *, model_params=PARAMS, config=CFG, tokenizer=None, **extra):
    """Same call on the flax model and the reference: ids exact, scores within the table."""
    ids, mask = prompts()
    got = model.generate(ids, mask, tokenizer=tokenizer, **kw, **extra)
    want = G.generate(config, model_params, ids, mask, tokenizer=tokenizer, **kw)
    assert isinstance(got, jax.Array) or hasattr(got, "sequences")
    assert_close(case, "flax-reference", generation_outputs(want, np.asarray),
                 generation_outputs(got, np.asarray))
    return got


def eos_kw(kw, frequent):
    return {**kw, "eos_token_id": frequent[:2]} if kw.pop("eos", False) else kw


PROCESSOR_CASES = {
    "greedy": dict(max_new_tokens=12),
    "repetition_penalty": dict(max_new_tokens=12, repetition_penalty=1.7),
    "no_repeat_ngram": dict(max_new_tokens=12, no_repeat_ngram_size=2),
    "min_new_tokens_eos": dict(max_new_tokens=12, min_new_tokens=6, eos=True),
    "min_length_eos": dict(max_new_tokens=12, min_length=15, eos=True),
    "temperature": dict(max_new_tokens=12, do_sample=True, seed=1, temperature=0.6, top_k=0),
    "top_k": dict(max_new_tokens=12, do_sample=True, seed=2, top_k=4),
    "top_p": dict(max_new_tokens=12, do_sample=True, seed=3, top_k=0, top_p=0.7),
    "min_p": dict(max_new_tokens=12, do_sample=True, seed=4, top_k=0, min_p=0.2),
    "typical_p": dict(max_new_tokens=12, do_sample=True, seed=5, top_k=0, typical_p=0.6),
    "combined": dict(max_new_tokens=12, do_sample=True, seed=6, temperature=0.8, top_k=20, top_p=0.9,
                     min_p=0.05, typical_p=0.95, repetition_penalty=1.3, no_repeat_ngram_size=3,
                     min_new_tokens=3, num_return_sequences=2, eos=True),
}


@pytest.mark.parametrize("name", list(PROCESSOR_CASES))
def test_processors_alone_and_combined_equal_the_reference(model, frequent, name):
    check(model, name, eos_kw(dict(PROCESSOR_CASES[name]), frequent))


def test_bad_words_equal_the_reference(model, frequent):
    # ban the most frequent greedy token, and a two-token word made of the next two
    check(model, "bad_words", dict(max_new_tokens=12, bad_words_ids=[[frequent[0]], frequent[1:3]]))


BEAM_CASES = {
    "beam_early_true": dict(num_beams=3, early_stopping=True, length_penalty=0.5, eos=True),
    "beam_early_false": dict(num_beams=3, early_stopping=False, eos=True),
    "beam_never_lp2": dict(num_beams=2, early_stopping="never", length_penalty=2.0, eos=True),
    "beam_return2_scores": dict(num_beams=4, num_return_sequences=2, eos=True, output_scores=True,
                                output_logits=True, return_dict_in_generate=True),
    "beam_sample": dict(num_beams=3, do_sample=True, seed=7, top_k=10, eos=True, output_scores=True,
                        return_dict_in_generate=True),
}


@pytest.mark.parametrize("name", list(BEAM_CASES))
def test_beams_equal_the_reference(model, frequent, name):
    out = check(model, name, eos_kw(dict(BEAM_CASES[name], max_new_tokens=10), frequent))
    if hasattr(out, "sequences"):
        assert isinstance(out, GenerateBeamDecoderOnlyOutput) and out.beam_indices is not None


def test_seeded_sampling_over_70_steps_equals_the_reference(model):
    kw = dict(max_new_tokens=70, do_sample=True, seed=2 ** 40 + 7, eos_token_id=[95], top_k=0)
    out = check(model, "sample_70", kw)
    assert out.shape == (3, 77)
    assert not np.array_equal(out, model.generate(*prompts(), **{**kw, "seed": 8}))


def test_scores_and_logits_within_tolerance(model):
    out = check(model, "sample_scores", dict(max_new_tokens=6, do_sample=True, seed=9, top_k=5,
                                             output_scores=True, output_logits=True,
                                             return_dict_in_generate=True))
    assert isinstance(out, GenerateDecoderOnlyOutput) and len(out.scores) == len(out.logits) == 6
    assert out.scores[0].shape == (3, CFG.vocab_size)


def test_pad_from_the_argument_and_from_the_config(frequent):
    ids, mask = prompts()
    kw = dict(max_new_tokens=12, eos_token_id=frequent[:2])
    m = GPT2LMHeadModel.from_params(CFG, PARAMS)
    got = check(m, "pad_argument", dict(kw, pad_token_id=9))
    assert (np.asarray(got)[:, 7:] == 9).any(), "no row finished early"
    config = CFG.replace(pad_token_id=11)
    m = GPT2LMHeadModel.from_params(config, PARAMS)
    got = check(m, "pad_config", kw, config=config)
    assert (np.asarray(got)[:, 7:] == 11).any()


def test_max_length_and_max_new_tokens(model):
    ids, mask = prompts()
    assert check(model, "max_length", dict(max_length=15)).shape == (3, 15)
    assert check(model, "both", dict(max_length=30, max_new_tokens=4)).shape == (3, 11)  # max_new wins
    model.generation_config.max_new_tokens = 5  # the model's config is merged under the call's
    try:
        assert model.generate(ids, mask).shape == (3, 12)
        assert model.generate(ids, mask, GenerationConfig(max_new_tokens=3)).shape == (3, 10)
        assert model.generate(ids, mask, {"max_new_tokens": 3}, max_new_tokens=2).shape == (3, 9)
    finally:
        model.generation_config.max_new_tokens = None


def test_stop_strings_equal_the_reference(model):
    tok = GPT2Tokenizer.from_pretrained()
    ids, mask = prompts()
    greedy = np.asarray(model.generate(ids, mask, max_new_tokens=12))
    text = tok.decode(greedy[1, 7:].tolist())
    stop = text[3:5]  # two characters the second row produces after its third new token
    got = check(model, "stop_strings", dict(max_new_tokens=12, stop_strings=[stop, "zzz"]),
                tokenizer=tok)
    assert not np.array_equal(np.asarray(got)[1], greedy[1, :got.shape[1]]), "the stop never fired"
    check(model, "stop_strings_beams", dict(max_new_tokens=12, num_beams=2, stop_strings=stop),
          tokenizer=tok)


def test_streamer_receives_exactly_the_returned_tokens(model, frequent):
    s = Recorder()
    got = check(model, "stream", dict(max_new_tokens=12, do_sample=True, seed=3,
                                      num_return_sequences=2, eos_token_id=frequent[:2]), streamer=s)
    np.testing.assert_array_equal(np.concatenate([s.values[0], np.stack(s.values[1:], 1)], 1), got)
    assert s.ended == 1


def test_input_ids_none_starts_from_bos(model):
    out = model.generate(None, max_new_tokens=3)
    np.testing.assert_array_equal(out, G.generate(CFG, PARAMS, None, max_new_tokens=3))
    assert out.shape == (1, 4) and int(out[0, 0]) == CFG.bos_token_id


def test_seed_none_draws_fresh_entropy(model):
    ids, mask = prompts()
    runs = {np.asarray(model.generate(ids, mask, max_new_tokens=12, do_sample=True, top_k=0)).tobytes()
            for _ in range(3)}
    assert len(runs) > 1


@pytest.mark.parametrize("kw, error, match", [
    (dict(max_new_tokens=0), ValueError, "`max_new_tokens` must be a positive integer"),
    (dict(num_beams=0), ValueError, "`num_beams` must be a positive integer"),
    (dict(num_return_sequences=2), ValueError, "Greedy decoding"),
    (dict(num_beams=2, num_return_sequences=3), ValueError, "must be <= `num_beams`"),
    (dict(eos_token_id=500), ValueError, r"`eos_token_id` must lie in \[0, vocab_size=96\)"),
    (dict(pad_token_id=96), ValueError, "`pad_token_id` must lie in"),
    (dict(max_new_tokens=95), ValueError, "exceeds the model's n_positions=96"),
    (dict(stop_strings=["ab"]), ValueError, "needs `tokenizer=`"),
    (dict(key=1), TypeError, "unexpected keyword argument 'key'"),
    (dict(top_p=1.5, do_sample=True), ValueError, r"`top_p` must be in \(0, 1\]"),
])
def test_resolve_errors_raise_unchanged(model, kw, error, match):
    with pytest.raises(error, match=match):
        model.generate(np.array([[5, 6]]), **kw)


def test_input_errors_raise_unchanged(model):
    with pytest.raises(ValueError, match="`input_ids` must lie in"):
        model.generate(np.array([[1, 500]]))
    with pytest.raises(ValueError, match="at least one token per row"):
        model.generate(np.zeros((1, 0), np.int32))
    with pytest.raises(ValueError, match="`streamer` cannot be used with beam search"):
        model.generate(np.array([[5, 6]]), num_beams=2, streamer=_Quiet())
    with pytest.raises(TypeError, match="`streamer` must have `put"):
        model.generate(np.array([[5, 6]]), streamer=object())


class _Quiet:
    """A streamer that ignores what it gets."""

    def put(self, value) -> None:
        pass

    def end(self) -> None:
        pass


def test_every_model_has_a_generation_config(tmp_path):
    config = CFG.replace(pad_token_id=7)
    path, _ = checkpoint(tmp_path, config)
    for m in (GPT2LMHeadModel(config), GPT2LMHeadModel.from_pretrained(path)):
        assert m.generation_config == GenerationConfig.from_model_config(config)
    a, b = GPT2LMHeadModel(config), GPT2LMHeadModel(config)
    a.generation_config.max_new_tokens = 3
    assert b.generation_config.max_new_tokens is None  # one object per model, never shared


# ---- processors on the same logits -----------------------------------------------------------
def test_processor_table_is_the_spec_table():
    assert list(processors.PROCESSORS) == [p.name for p in sampling.PROCESSORS]


@pytest.mark.parametrize("name", [p.name for p in sampling.PROCESSORS])
@pytest.mark.parametrize("beams", [False, True], ids=["sample", "beam_sample"])
def test_each_processor_equals_the_spec_on_the_same_scores(name, beams):
    rng = np.random.default_rng(0)
    N, S, V, filler = 4, 12, 50, 2
    scores = rng.normal(0, 2, (N, V)).astype(np.float32)
    ids = rng.integers(0, 8, (N, S))  # a small alphabet: repeated n-grams occur
    padding = np.array([0, 3, 1, 0])
    plan = G.resolve(CFG, GenerationConfig(
        do_sample=True, temperature=0.7, top_k=7, top_p=0.8, min_p=0.3, typical_p=0.6,
        repetition_penalty=1.3, no_repeat_ngram_size=2, bad_words_ids=[[5], [1, 2], [3, 4, 6]],
        min_new_tokens=4, eos_token_id=[1, 4], num_beams=3 if beams else 1), N, S - 1)  # step 1
    row = next(p for p in sampling.PROCESSORS if p.name == name)
    want = row.apply(scores.astype(np.float64), SpecState(ids, padding, 1, plan.eos_token_ids), plan)
    # the flax buffer: bucket filler slots before the rows, unused slots after
    buffer = np.concatenate([np.zeros((N, filler), np.int64), ids, np.zeros((N, 5), np.int64)], 1)
    state = ProcessorState(jnp.asarray(buffer, jnp.int32), jnp.int32(filler), jnp.int32(filler + S),
                           jnp.asarray(padding + filler, jnp.int32), jnp.int32(1),
                           jnp.int32(plan.min_length - plan.prompt_length))
    got = processors.PROCESSORS[name](jnp.asarray(scores), state, plan)
    assert_close(name, "flax-reference", {f"scores.{name}": want}, {f"scores.{name}": np.asarray(got)})


# ---- Threefry ---------------------------------------------------------------------------------
@pytest.mark.parametrize("seed, step, rows, V", [
    (0, 0, 2, 7), (1, 5, 3, 96), (2 ** 32 + 5, 77, 4, 50257), (2 ** 64 - 1, 2 ** 31 + 3, 1, 1000),
])
def test_uniforms_equal_the_spec_bit_for_bit(seed, step, rows, V):
    want = spec_threefry.uniform(seed, step, rows, V)
    got = np.asarray(threefry.uniform(threefry.key_words(seed), step, rows, V))
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    # the noise is a float32 log of those bits: XLA's and NumPy's log may differ by one ulp
    np.testing.assert_allclose(np.asarray(threefry.gumbel(threefry.key_words(seed), step, rows, V)),
                               spec_threefry.gumbel(seed, step, rows, V), rtol=2e-7, atol=2e-7)


def test_uniforms_past_row_times_vocab_2_32_wrap_as_the_spec():
    seed, step, V = 2 ** 33 + 1, 9, 50257
    rows = np.array([0, 85_000, 85_461, 200_000])  # row * V passes 2**32 from row 85_461
    assert rows.max() * V > 2 ** 32
    counter = (rows[:, None].astype(object) * V + np.arange(V)[None, :]) & spec_threefry.MASK32
    x0, _ = spec_threefry.threefry2x32(spec_threefry.key_words(seed),
                                       np.full(counter.shape, step, np.uint32), counter.astype(np.uint32))
    want = spec_threefry.bits_to_uniform(x0)
    got = np.asarray(threefry.uniform_rows(threefry.key_words(seed), step, jnp.asarray(rows), V))
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_spec_threefry_equals_jax_threefry_bit_for_bit():
    rng = np.random.default_rng(0)
    for seed in (0, 12345, 2 ** 32 + 7, 2 ** 64 - 1):
        key = spec_threefry.key_words(seed)
        x0 = rng.integers(0, 2 ** 32, 64, dtype=np.uint64).astype(np.uint32)
        x1 = rng.integers(0, 2 ** 32, 64, dtype=np.uint64).astype(np.uint32)
        y0, y1 = spec_threefry.threefry2x32(key, x0, x1)
        # jax's threefry_2x32 splits its count into halves: (x0, x1) -> concatenated (y0, y1)
        out = np.asarray(jex_random.threefry_2x32((jnp.uint32(key[0]), jnp.uint32(key[1])),
                                                  jnp.asarray(np.concatenate([x0, x1]))))
        np.testing.assert_array_equal(out, np.concatenate([y0, y1]))
        f0, f1 = threefry.threefry2x32(jnp.asarray(key, jnp.uint32), x0, x1)
        np.testing.assert_array_equal(np.asarray(f0), y0)
        np.testing.assert_array_equal(np.asarray(f1), y1)
