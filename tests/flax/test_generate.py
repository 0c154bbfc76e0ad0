"""Compiled generate: token-identical to transformers (greedy, beam), equal to eager step-by-step
decoding, no retrace within a bucket, composable under the caller's `jit` (device arrays and
pytree records out), several sequences per prompt, streaming from inside the compiled loop, and
the command-line runner. The spec-level checks (every processor, beams, seeded sampling, stop
strings against the NumPy reference) are in test_generation_spec.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import Recorder, checkpoint, random_ids
from flax import nnx

from gpt2_core import GPT2Config
from gpt2_core.cli._backends import GenerateOptions, until_eos
from gpt2_flax import GenerateDecoderOnlyOutput, GPT2LMHeadModel, generation, runner

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
    got = model.generate(ids, mask, max_new_tokens=5, min_new_tokens=5)  # eos cannot stop a row
    np.testing.assert_array_equal(got, seq)


def test_no_retrace_for_new_prompt_content_length_budget_or_seed(models):
    model, _ = models
    kw = dict(do_sample=True, top_k=0)
    model.generate(random_ids(CFG, (2, 9), seed=1), max_new_tokens=10, seed=1, **kw)
    model.generate(random_ids(CFG, (2, 9), seed=1), max_new_tokens=10, min_new_tokens=2, seed=1, **kw)
    before = dict(generation.TRACE_COUNT)
    model.generate(random_ids(CFG, (2, 9), seed=2), max_new_tokens=10, seed=5, **kw)
    model.generate(random_ids(CFG, (2, 12), seed=3), max_new_tokens=13, **kw)  # same buckets (16, 16)
    model.generate(random_ids(CFG, (2, 10), seed=4), max_new_tokens=9, min_new_tokens=4, seed=9, **kw)
    assert generation.TRACE_COUNT == before


def test_composable_under_the_callers_jit(models):
    model, _ = models
    ids, mask = prompts()
    out = nnx.jit(lambda m, ids: m.generate(ids, max_new_tokens=8))(model, jnp.asarray(ids))
    assert isinstance(out, jax.Array) and out.shape == (3, 15)  # every position, traced
    np.testing.assert_array_equal(out, _padded(model.generate(ids, max_new_tokens=8), 15, 3))

    @nnx.jit
    def records(m, ids, mask):
        return m.generate(ids, mask, max_new_tokens=4, do_sample=True, seed=3,
                          output_scores=True, return_dict_in_generate=True)
    rec = records(model, jnp.asarray(ids), jnp.asarray(mask))
    want = model.generate(ids, mask, max_new_tokens=4, do_sample=True, seed=3, output_scores=True,
                          return_dict_in_generate=True)
    assert isinstance(rec, GenerateDecoderOnlyOutput) and isinstance(rec.sequences, jax.Array)
    np.testing.assert_array_equal(_padded(want.sequences, 11, 3), rec.sequences)
    for a, b in zip(want.scores, rec.scores):
        np.testing.assert_array_equal(a, b)
    assert len(jax.tree_util.tree_leaves(rec)) == 1 + len(rec.scores)  # a pytree record


def _padded(seq, width, pad):
    seq = np.asarray(seq)
    return np.pad(seq, ((0, 0), (0, width - seq.shape[1])), constant_values=pad)


def test_the_seeds_example_and_the_model_generation_config(models):
    model, _ = models
    ids = random_ids(CFG, (1, 5), seed=3, low=5)
    out = model.generate(ids, do_sample=True, temperature=0.9, max_length=20)
    assert out.shape[0] == 1 and out.shape[1] <= 20 and isinstance(out, jax.Array)
    model.generation_config.max_new_tokens = 6
    try:
        assert model.generate(ids, eos_token_id=[95]).shape == (1, 11)
    finally:
        model.generation_config.max_new_tokens = None


def test_transformers_generation_config_is_accepted(models):
    model, hf = models
    ids, mask = prompts()
    cfg = transformers.GenerationConfig(max_new_tokens=9, num_beams=2, pad_token_id=3)
    got = model.generate(ids, mask, cfg)
    with torch.no_grad():
        want = hf.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), generation_config=cfg)
    np.testing.assert_array_equal(got, want.numpy())


def test_default_gpt2_eos_outside_a_small_vocabulary(tmp_path):
    # GPT-2's eos (50256) lies outside this vocabulary: the spec leaves it out, so rows run to
    # max_new_tokens, as in transformers (which can never produce the id)
    config = GPT2Config(vocab_size=96, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    path, _ = checkpoint(tmp_path, config, scale=0.5)
    hf = transformers.GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager").eval()
    ids = random_ids(config, (1, 5), seed=2)
    with torch.no_grad():
        want = hf.generate(torch.tensor(ids), do_sample=False, max_new_tokens=12,
                           pad_token_id=50256).numpy()
    got = GPT2LMHeadModel.from_pretrained(path).generate(ids, max_new_tokens=12)
    np.testing.assert_array_equal(got, want)


# ---- several sequences per prompt --------------------------------------------------------------
def test_sampling_num_return_sequences_repeats_rows_and_draws_each(models):
    model, _ = models
    ids, mask = prompts()
    got = np.asarray(model.generate(ids, mask, max_new_tokens=8, num_return_sequences=4,
                                    eos_token_id=[95], do_sample=True, temperature=0.9, top_k=40,
                                    seed=3))
    assert got.shape == (12, 15)
    np.testing.assert_array_equal(got[:, :7], np.repeat(ids, 4, axis=0))  # [p0 x4, p1 x4, ...]
    for group in got.reshape(3, 4, 15):
        assert len({tuple(row) for row in group}) > 1, "rows of one prompt drawn alike"


# ---- streaming ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [
    {"eos_token_id": [7, 9, 11], "pad_token_id": 3, "max_new_tokens": 30},  # rows stop early
    {"do_sample": True, "num_return_sequences": 2, "seed": 5, "max_new_tokens": 9},
], ids=["greedy_eos", "sample_return2"])
def test_streamed_tokens_equal_returned_one_put_per_step(models, kw):
    model, _ = models
    ids, mask = prompts()
    streamer = Recorder()
    got = model.generate(ids, mask, streamer=streamer, **kw)
    np.testing.assert_array_equal(got, model.generate(ids, mask, **kw))  # streaming changes nothing
    k = kw.get("num_return_sequences", 1)
    np.testing.assert_array_equal(streamer.values[0], np.repeat(ids, k, 0))  # the prompt rows first
    steps = streamer.values[1:]
    assert len(steps) == got.shape[1] - 7 and streamer.ended == 1  # one put per step, then end
    np.testing.assert_array_equal(np.stack(steps, axis=1), got[:, 7:])


def test_compiled_program_holds_the_callback_only_when_streaming(models):
    model, _ = models
    plan = generation.resolve(CFG, model.generation_config, 3, 7)
    program = {s: generation.Program.of(plan, stream=s) for s in (False, True)}
    bucketed = generation._bucketed(*prompts(), program[False].n_bucket)
    call = generation._call(plan, None, 0)
    text = {s: generation._sample.lower(model, *bucketed, call, program=p).as_text()
            for s, p in program.items()}
    assert "callback" not in text[False] and "callback" in text[True]


def test_streamer_refused_under_the_callers_jit(models):
    model, _ = models
    with pytest.raises(ValueError, match="`streamer` needs concrete `input_ids`"):
        jax.jit(lambda ids: model.generate(ids, max_new_tokens=2, streamer=Recorder()))(
            jnp.ones((1, 3), jnp.int32))


def test_runner_yields_tokens_as_they_come_and_stops_at_eos(models):
    model, _ = models
    prompt = [5, 17, 40, 22]
    for eos in [(95,), (7, 9, 11)]:  # never produced here / hit by the greedy path
        options = GenerateOptions(max_new_tokens=12, do_sample=False, eos_token_ids=eos)
        chunks = list(runner.generate(model, prompt, options))
        full = model.generate(np.array([prompt]), max_new_tokens=12, eos_token_id=list(eos))
        want = until_eos(np.asarray(full)[0, 4:].tolist(), eos)
        assert sum(chunks, []) == want
        assert len(chunks) == len(want)  # one chunk per step: text arrives incrementally
    assert len(want) < 12, "the EOS case should stop early"


def test_runner_samples_with_the_options_seed(models):
    model, _ = models
    options = GenerateOptions(max_new_tokens=6, do_sample=True, eos_token_ids=(95,), seed=4)
    a, b = (sum(runner.generate(model, [5, 17, 40], options), []) for _ in range(2))
    assert a == b and len(a) == 6
