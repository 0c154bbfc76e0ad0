"""`generate(streamer=...)` and the `gpt2 generate --backend keras` runner: the host loop around
the compiled step gives the compiled loop's tokens, handed over one step at a time."""

from __future__ import annotations

import numpy as np
import pytest
from keras_test_helpers import CONFIGS

import gpt2_core
from gpt2_core.cli._backends import GenerateOptions, until_eos
from gpt2_keras import GPT2LMHeadModel, runner

pytestmark = pytest.mark.usefixtures("eager_generation")


@pytest.fixture(scope="module")
def model():
    config = CONFIGS["base"].replace(n_positions=64)
    return GPT2LMHeadModel.from_params(config, gpt2_core.random_params(config, seed=4))


class Recorder:
    """transformers' streamer protocol: `put(value)` per step, `end()` once."""

    def __init__(self):
        self.puts, self.ends = [], 0

    def put(self, value):
        self.puts.append(np.array(value))

    def end(self):
        self.ends += 1


def left_padded(config):
    rng = np.random.default_rng(0)
    ids = rng.integers(1, config.vocab_size - 1, (3, 7)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[0, :3], ids[0, :3] = 0, config.pad_token_id
    return ids, mask


@pytest.mark.parametrize("kw", [dict(), dict(do_sample=True, top_k=20, seed=3),
                                dict(repetition_penalty=1.3, no_repeat_ngram_size=2),
                                dict(do_sample=True, seed=2 ** 40, num_return_sequences=2,
                                     min_p=0.05, typical_p=0.9, bad_words_ids=[[7]])],
                         ids=["greedy", "sampled", "processors", "return_sequences"])
def test_streamed_tokens_equal_the_compiled_loop(model, kw):
    ids, mask = left_padded(model.config)
    compiled = model.generate(ids, attention_mask=mask, max_new_tokens=12, **kw)
    # an EOS the compiled loop produces early in row 1: rows finish at different steps
    eos = [model.config.eos_token_id, int(compiled[1, 9])]
    compiled = model.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=eos, **kw)
    rec = Recorder()
    streamed = model.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=eos,
                              streamer=rec, **kw)
    np.testing.assert_array_equal(streamed, compiled)
    # the (expanded) prompt first, as transformers
    np.testing.assert_array_equal(rec.puts[0], np.repeat(ids, kw.get("num_return_sequences", 1), 0))
    assert len(rec.puts) == 1 + compiled.shape[1] - ids.shape[1]  # then once per step
    np.testing.assert_array_equal(np.stack(rec.puts[1:], axis=1), compiled[:, ids.shape[1]:])
    assert rec.ends == 1


def test_streamer_is_refused_with_beams_and_without_its_methods(model):
    ids = np.ones((1, 4), np.int32)
    with pytest.raises(ValueError, match="`streamer` cannot be used with beam search"):
        model.generate(ids, max_new_tokens=2, num_beams=2, streamer=Recorder())
    with pytest.raises(ValueError, match="`streamer` cannot be used with beam search"):
        next(runner.generation.stream_tokens(model, ids, max_new_tokens=2, num_beams=2))
    with pytest.raises(TypeError, match=r"`put\(value\)` and `end\(\)`"):
        model.generate(ids, max_new_tokens=2, streamer=object())


@pytest.mark.parametrize("do_sample", [False, True])
def test_runner_yields_token_by_token_until_eos(model, do_sample):
    prompt = [5, 9, 14, 2]
    base = GenerateOptions(max_new_tokens=10, do_sample=do_sample, top_k=20, seed=1,
                           eos_token_ids=(model.config.eos_token_id,))
    full = list(runner.generate(model, prompt, base))
    assert len(full) == 10 and all(len(c) == 1 for c in full)  # one chunk per token
    flat = [t for c in full for t in c]
    want = model.generate(np.asarray([prompt], np.int32), max_new_tokens=10, do_sample=do_sample,
                          top_k=20 if do_sample else None, seed=1,
                          eos_token_id=model.config.eos_token_id)[0, len(prompt):].tolist()
    assert flat == want
    # stop at an EOS the model produces mid-way, excluding it
    eos = (flat[4],)
    cut = [t for c in runner.generate(model, prompt, GenerateOptions(
        max_new_tokens=10, do_sample=do_sample, top_k=20, seed=1, eos_token_ids=eos)) for t in c]
    assert cut == until_eos(want, eos) and len(cut) > 1
