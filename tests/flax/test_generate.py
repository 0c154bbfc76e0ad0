"""Compiled generate: token-identical to transformers (greedy, beam), equal to eager step-by-step
decoding, processors equal to gpt2_core.sampling on the same logits, no retrace; several
sequences per prompt; streaming from inside the compiled loop, and the command-line runner."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import checkpoint, random_ids
from flax import nnx

from gpt2_core import GPT2Config, sampling
from gpt2_core.cli._backends import GenerateOptions, until_eos
from gpt2_flax import GPT2LMHeadModel, generation, processors, runner

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CFG = GPT2Config(vocab_size=96, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                 eos_token_id=[3, 4], bos_token_id=3)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    # weights of std 0.5 (not 0.2) give peaked, varied logits, so greedy paths do not collapse onto one token
    path, _ = checkpoint(tmp_path_factory.mktemp("ckpt"), CFG, scale=0.5)
    hf = transformers.GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager").eval()
    return GPT2LMHeadModel.from_pretrained(path), hf


def prompts():
    ids = random_ids(CFG, (3, 7), seed=5, low=5)
    mask = np.ones_like(ids)
    mask[1, :3] = 0
    ids[1, :3] = 3  # left padding with the pad (= first EOS) id, as HF does
    mask[2, :1] = 0
    ids[2, :1] = 3
    return ids, mask


def hf_generate(hf, ids, mask, **kw):
    with torch.no_grad():
        return hf.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), pad_token_id=3,
                           do_sample=False, **kw).numpy()


@pytest.mark.parametrize("kw", [
    {},
    {"repetition_penalty": 1.7, "no_repeat_ngram_size": 2},
    {"min_new_tokens": 6},
    {"num_beams": 3},
    {"num_beams": 4, "length_penalty": 0.5, "early_stopping": True},
    {"num_beams": 2, "length_penalty": 2.0, "early_stopping": "never", "no_repeat_ngram_size": 3},
    {"num_beams": 3, "num_return_sequences": 3},
    {"num_beams": 4, "num_return_sequences": 2, "length_penalty": 0.5, "early_stopping": True},
], ids=["greedy", "penalties", "min_new", "beam3", "beam4_early", "beam2_never", "beam3_return3",
        "beam4_return2"])
def test_token_identical_to_transformers(models, kw):
    model, hf = models
    ids, mask = prompts()
    want = hf_generate(hf, ids, mask, max_new_tokens=14, **kw)
    got = model.generate(ids, mask, max_new_tokens=14, **kw)
    np.testing.assert_array_equal(got, want)


def test_several_eos_ids_stop_and_pad(models):
    model, hf = models
    ids, mask = prompts()
    got = model.generate(ids, mask, max_new_tokens=30, eos_token_id=[7, 9, 11], pad_token_id=3)
    want = hf_generate(hf, ids, mask, max_new_tokens=30, eos_token_id=[7, 9, 11])
    np.testing.assert_array_equal(got, want)


def test_compiled_equals_eager_step_by_step(models):
    model, _ = models
    ids, mask = prompts()
    # a preallocated cache keeps every step's shapes static: one compile for all five steps
    # (the growing tuple cache is covered by test_model's incremental-decoding test)
    out = model(ids, mask, past_key_values=model.init_cache(3, 12))
    seq, m = ids, mask
    for _ in range(5):
        token = np.asarray(out.logits[:, -1]).argmax(-1)[:, None]
        seq, m = np.concatenate([seq, token], 1), np.concatenate([m, np.ones_like(token)], 1)
        out = model(token, m, past_key_values=out.past_key_values)
    got = model.generate(ids, mask, max_new_tokens=5, eos_token_id=[])
    np.testing.assert_array_equal(got, seq)


def test_no_retrace_for_new_prompt_content_or_nearby_length(models):
    model, _ = models
    model.generate(random_ids(CFG, (2, 9), seed=1), max_new_tokens=10)
    before = dict(generation.TRACE_COUNT)
    model.generate(random_ids(CFG, (2, 9), seed=2), max_new_tokens=10)
    model.generate(random_ids(CFG, (2, 12), seed=3), max_new_tokens=13)  # same buckets (16, 16)
    model.generate(random_ids(CFG, (2, 10), seed=4), max_new_tokens=9, do_sample=False)
    assert generation.TRACE_COUNT == before


def test_sampling_same_key_same_tokens(models):
    model, _ = models
    ids, mask = prompts()
    kw = dict(max_new_tokens=12, do_sample=True, temperature=0.8, top_k=20, top_p=0.9)
    a = model.generate(ids, mask, key=jax.random.key(1), **kw)
    b = model.generate(ids, mask, key=jax.random.key(1), **kw)
    c = model.generate(ids, mask, key=jax.random.key(2), **kw)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert (a[:, :7] == ids).all() and (a >= 0).all() and (a < CFG.vocab_size).all()


def test_processors_equal_gpt2_core_on_same_logits():
    rng = np.random.default_rng(0)
    scores = rng.normal(0, 2, (4, 50)).astype(np.float32)
    ids = rng.integers(0, 8, (4, 12))  # small alphabet: repeated n-grams occur
    S = ids.shape[1]
    cases = [
        (sampling.repetition_penalty(scores, ids, 1.3),
         processors.repetition_penalty(scores, ids, 0, S, 1.3)),
        (sampling.no_repeat_ngram(scores, ids, 2), processors.no_repeat_ngram(scores, ids, 0, S, 2)),
        (sampling.no_repeat_ngram(scores, ids, 3), processors.no_repeat_ngram(scores, ids, 0, S, 3)),
        (sampling.min_new_tokens(scores, 2, 5, (1, 4)),
         processors.min_new_tokens(scores, 2, 5, (1, 4))),
        (sampling.top_k(scores, 7), processors.top_k(scores, 7)),
        (sampling.top_p(scores, 0.8), processors.top_p(scores, 0.8)),
    ]
    for want, got in cases:
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)  # same float32 ops
    cfg = sampling.SamplingConfig(do_sample=True, temperature=0.7, top_k=10, top_p=0.9,
                                  repetition_penalty=1.2, no_repeat_ngram_size=2, min_new_tokens=3)
    np.testing.assert_allclose(np.asarray(processors.process(scores, ids, 0, S, cfg, 1, (2,))),
                               sampling.process(scores, ids, cfg, 1, (2,)), rtol=1e-6)


def test_bad_generate_arguments(models):
    model, _ = models
    with pytest.raises(ValueError, match="exceeds the model's `n_positions`=64"):
        model.generate(np.zeros((1, 10), np.int32), max_new_tokens=60)
    with pytest.raises(ValueError, match="`input_ids` must lie in"):
        model.generate(np.array([[1, 500]]))
    with pytest.raises(ValueError, match="`top_p` must be in"):
        model.generate(np.array([[1, 2]]), do_sample=True, top_p=1.5)
    with pytest.raises(ValueError, match="`max_new_tokens` must be a positive integer"):
        model.generate(np.array([[1, 2]]), max_new_tokens=0)


def test_default_gpt2_eos_outside_a_small_vocabulary(tmp_path):
    # GPT-2's eos (50256) lies outside this vocabulary; it is still the pad id of finished rows,
    # and no out-of-range id may reach the embedding (JAX would not raise).
    config = GPT2Config(vocab_size=96, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    path, _ = checkpoint(tmp_path, config, scale=0.5)
    hf = transformers.GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager").eval()
    ids = random_ids(config, (1, 5), seed=2)
    with torch.no_grad():
        want = hf.generate(torch.tensor(ids), do_sample=False, max_new_tokens=12,
                           pad_token_id=50256).numpy()
    got = GPT2LMHeadModel.from_pretrained(path).generate(ids, max_new_tokens=12)
    np.testing.assert_array_equal(got, want)
    assert (got[:, 5:] != 0).any()


# ---- several sequences per prompt --------------------------------------------------------------
def eager_sample(model, ids, mask, n, key, cfg):
    """Step-by-step sampling outside the compiled loop, with the compiled loop's key schedule
    (one split per step, one categorical draw over the whole (B, V) batch)."""
    out = model(ids, mask, past_key_values=model.init_cache(ids.shape[0], ids.shape[1] + n))
    seq, m = ids, mask
    for step in range(n):
        key, sub = jax.random.split(key)
        scores = processors.process(out.logits[:, -1].astype(jnp.float32), seq, 0, seq.shape[1],
                                    cfg, step, ())
        token = np.asarray(jax.random.categorical(sub, scores, axis=-1))[:, None]
        seq, m = np.concatenate([seq, token], 1), np.concatenate([m, np.ones_like(token)], 1)
        out = model(token, m, past_key_values=out.past_key_values)
    return seq


def test_sampling_num_return_sequences_repeats_rows_and_draws_each(models):
    model, _ = models
    ids, mask = prompts()
    kw = dict(do_sample=True, temperature=0.9, top_k=40)
    got = model.generate(ids, mask, max_new_tokens=8, num_return_sequences=4, eos_token_id=[],
                         key=jax.random.key(3), **kw)
    assert got.shape == (12, 15)
    np.testing.assert_array_equal(got[:, :7], np.repeat(ids, 4, axis=0))  # [p0 x4, p1 x4, ...]
    for group in got.reshape(3, 4, 15):
        assert len({tuple(row) for row in group}) > 1, "rows of one prompt drawn alike"
    cfg = sampling.SamplingConfig(**kw)
    want = eager_sample(model, np.repeat(ids, 4, 0), np.repeat(mask, 4, 0), 8,
                        jax.random.key(3), cfg)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kw, match", [
    ({"num_return_sequences": 0, "do_sample": True}, "`num_return_sequences` must be a positive"),
    ({"num_return_sequences": -2, "num_beams": 3}, "`num_return_sequences` must be a positive"),
    ({"num_return_sequences": 4, "num_beams": 3}, "must be at most `num_beams`.*=4, num_beams=3"),
    ({"num_return_sequences": 2}, "Greedy decoding gives one sequence per prompt"),
    ({"num_beams": 0}, "`num_beams` must be a positive integer"),
    ({"num_beams": 2, "streamer": object()}, "`streamer` cannot be used with beam search"),
])
def test_bad_counts_rejected(models, kw, match):
    model, _ = models
    with pytest.raises(ValueError, match=match):
        model.generate(np.array([[5, 6]]), max_new_tokens=3, **kw)


# ---- streaming ---------------------------------------------------------------------------------
class Recorder:
    def __init__(self):
        self.values, self.ended = [], 0

    def put(self, value):
        assert not self.ended
        self.values.append(np.asarray(value))

    def end(self):
        self.ended += 1


@pytest.mark.parametrize("kw", [
    {"eos_token_id": [7, 9, 11], "pad_token_id": 3, "max_new_tokens": 30},  # rows stop early
    {"do_sample": True, "num_return_sequences": 2, "key": jax.random.key(5), "max_new_tokens": 9},
], ids=["greedy_eos", "sample_return2"])
def test_streamed_tokens_equal_returned_one_put_per_step(models, kw):
    model, _ = models
    ids, mask = prompts()
    streamer = Recorder()
    got = model.generate(ids, mask, streamer=streamer, **kw)
    np.testing.assert_array_equal(got, model.generate(ids, mask, **kw))  # streaming changes nothing
    np.testing.assert_array_equal(streamer.values[0], ids)  # the prompt first, as HF
    steps = streamer.values[1:]
    assert len(steps) == got.shape[1] - 7 and streamer.ended == 1  # one put per step, then end
    np.testing.assert_array_equal(np.stack(steps, axis=1), got[:, 7:])


def test_compiled_program_holds_the_callback_only_when_streaming(models):
    model, _ = models
    graphdef, state = nnx.split(model)
    ids, mask = generation._to_bucket(*prompts())
    args = (graphdef, state, ids, mask, 7, 5, jax.random.key(0), 0)
    static = dict(cfg=sampling.SamplingConfig(), eos=(3,), pad=3, n_bucket=16)
    plain = generation._generate.lower(*args, stream=False, **static).as_text()
    streaming = generation._generate.lower(*args, stream=True, **static).as_text()
    assert "callback" not in plain and "callback" in streaming


def test_runner_yields_tokens_as_they_come_and_stops_at_eos(models):
    model, _ = models
    prompt = [5, 17, 40, 22]
    for eos in [(50256,), (7, 9, 11)]:  # never produced here / hit by the greedy path
        options = GenerateOptions(max_new_tokens=12, do_sample=False, eos_token_ids=eos)
        chunks = list(runner.generate(model, prompt, options))
        full = model.generate(np.array([prompt]), max_new_tokens=12, eos_token_id=list(eos))
        want = until_eos(full[0, 4:].tolist(), eos)
        assert sum(chunks, []) == want
        assert len(chunks) == len(want)  # one chunk per step: text arrives incrementally
    assert len(want) < 12, "the EOS case should stop early"
