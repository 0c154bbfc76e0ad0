"""gpt2_torch `generate` against the NumPy reference `gpt2_core.generation.generate` on the same
random checkpoint: tokens identical (greedy, every processor, beams, beam sampling, seeded
sampling), scores within the conformance tolerance table, the same errors, and the Threefry port
bit for bit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch_testutils import write_checkpoint

from gpt2_conformance.tolerances import tolerance
from gpt2_core import GPT2Config, generation, sampling
from gpt2_core import threefry as np_threefry
from gpt2_core.generation_config import GenerationConfig, resolve
from gpt2_torch import GPT2LMHeadModel, processors, threefry

# n_positions >= 80: the seeded-sampling case takes 64 steps after a 10-token prompt.
CFG = GPT2Config(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=96, bos_token_id=1,
                 eos_token_id=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec")
    params = write_checkpoint(path, CFG, seed=21)
    return GPT2LMHeadModel.from_pretrained(path), params


@pytest.fixture(scope="module")
def batch():
    """A left-padded batch: row 1 has 3 pads, row 2 has 5 (pad id 0, which is also a token the
    penalty would otherwise see)."""
    rng = np.random.default_rng(5)
    ids = rng.integers(3, CFG.vocab_size, (3, 8))
    mask = np.ones_like(ids)
    mask[1, :3] = 0
    mask[2, :5] = 0
    ids[mask == 0] = 0
    return ids, mask


@pytest.fixture(scope="module")
def eos(ckpt, batch):
    """Two ids greedy decoding emits early, so rows finish at different steps."""
    model, _ = ckpt
    ids, mask = batch
    out = model.generate(ids, attention_mask=mask, max_new_tokens=4, min_new_tokens=4)[:, 8:]
    return sorted({int(out[0, 1]), int(out[1, 2])})


def both(ckpt, ids, mask=None, **kw):
    model, params = ckpt
    ours = model.generate(ids, attention_mask=mask, **kw)
    want = generation.generate(model.config, params, ids, mask,
                               model_generation_config=model.generation_config, **kw)
    return ours, want


def assert_tokens(ours, want):
    got = (ours if isinstance(ours, torch.Tensor) else ours.sequences).numpy()
    want = want if isinstance(want, np.ndarray) else want.sequences
    assert got.shape == want.shape and (got == want).all(), (got, want)


def test_greedy_and_seed_example(ckpt, batch):
    ids, mask = batch
    assert_tokens(*both(ckpt, ids, mask, max_new_tokens=12))
    # the seed's example: `max_length` counts the prompt
    ours, want = both(ckpt, ids[:1], do_sample=True, temperature=0.9, max_length=60, seed=3)
    assert_tokens(ours, want)
    assert ours.shape[1] <= 60


PROCESSOR_CASES = {
    "repetition_penalty": dict(repetition_penalty=1.8),
    "repetition_penalty_below_1": dict(repetition_penalty=0.6),
    "no_repeat_ngram": dict(no_repeat_ngram_size=2),
    "no_repeat_unigram": dict(no_repeat_ngram_size=1),
    "bad_words": dict(bad_words_ids=[[5], [40, 41], [17]]),
    "min_length": dict(min_length=14),
    "min_new_tokens": dict(min_new_tokens=5),
    "temperature": dict(do_sample=True, temperature=0.7),
    "top_k": dict(do_sample=True, top_k=5),
    "top_p": dict(do_sample=True, top_k=0, top_p=0.7),
    "min_p": dict(do_sample=True, top_k=0, min_p=0.2),
    "typical_p": dict(do_sample=True, top_k=0, typical_p=0.6),
    "combined_greedy": dict(repetition_penalty=1.3, no_repeat_ngram_size=3, bad_words_ids=[[9]],
                            min_new_tokens=3),
    "combined_sampling": dict(do_sample=True, repetition_penalty=1.2, temperature=1.3, top_k=20,
                              top_p=0.9, min_p=0.05, typical_p=0.95, no_repeat_ngram_size=2),
}


@pytest.mark.parametrize("name", sorted(PROCESSOR_CASES))
def test_processors_on_left_padded_batch(ckpt, batch, eos, name):
    ids, mask = batch
    kw = dict(PROCESSOR_CASES[name], max_new_tokens=12, eos_token_id=eos, seed=7)
    assert_tokens(*both(ckpt, ids, mask, **kw))


@pytest.mark.parametrize("kw", [
    dict(num_beams=3),
    dict(num_beams=3, early_stopping=True, length_penalty=2.0),
    dict(num_beams=2, early_stopping="never", length_penalty=-1.0),
    dict(num_beams=4, early_stopping="never", length_penalty=0.5, num_return_sequences=3),
    dict(num_beams=3, repetition_penalty=1.3, no_repeat_ngram_size=2),
    dict(num_beams=3, do_sample=True, seed=11),
    dict(num_beams=4, do_sample=True, seed=2, temperature=0.8, top_k=10, num_return_sequences=2),
], ids=str)
def test_beams(ckpt, batch, eos, kw):
    ids, mask = batch
    ours, want = both(ckpt, ids, mask, max_new_tokens=10, eos_token_id=eos, **kw)
    assert_tokens(ours, want)


def test_seeded_sampling_64_steps(ckpt):
    ids = np.random.default_rng(1).integers(3, CFG.vocab_size, (2, 10))
    for kw in (dict(), dict(top_k=0), dict(num_return_sequences=3, temperature=0.8)):
        ours, want = both(ckpt, ids, do_sample=True, seed=2 ** 40 + 9, max_new_tokens=64,
                          min_new_tokens=64, **kw)
        assert ours.shape[1] == 74
        assert_tokens(ours, want)


def test_unseeded_sampling_follows_torch_manual_seed(ckpt):
    model, _ = ckpt
    ids = np.random.default_rng(2).integers(3, CFG.vocab_size, (1, 4))
    kw = dict(do_sample=True, max_new_tokens=20, min_new_tokens=20, top_k=0)
    torch.manual_seed(0)
    a = model.generate(ids, **kw)
    torch.manual_seed(0)
    assert torch.equal(model.generate(ids, **kw), a)
    assert not torch.equal(model.generate(ids, **kw), a)


def test_pad_from_argument_and_from_config(ckpt, batch, eos):
    model, params = ckpt
    ids, mask = batch
    ours, want = both(ckpt, ids, mask, max_new_tokens=10, eos_token_id=eos, pad_token_id=7)
    assert_tokens(ours, want)
    assert (ours[:, 8:] == 7).any()
    # a checkpoint whose config sets pad_token_id: finished rows get it, not the eos id
    config = dataclasses.replace(CFG, pad_token_id=11)
    padded = GPT2LMHeadModel(config)
    padded.load_state_dict(model.state_dict())
    padded.eval()
    got = padded.generate(ids, attention_mask=mask, max_new_tokens=10, eos_token_id=eos)
    want = generation.generate(config, params, ids, mask, max_new_tokens=10, eos_token_id=eos)
    assert_tokens(got, want)
    assert (got[:, 8:] == 11).any()


def test_min_new_tokens_with_eos_and_lengths(ckpt, batch, eos):
    ids, mask = batch
    ours, want = both(ckpt, ids, mask, max_new_tokens=10, min_new_tokens=6, eos_token_id=eos)
    assert_tokens(ours, want)
    assert not torch.isin(ours[:, 8:14], torch.tensor(eos)).any()
    # max_new_tokens wins over max_length; max_length counts the prompt
    ours, want = both(ckpt, ids, mask, max_new_tokens=5, max_length=30, min_new_tokens=5)
    assert_tokens(ours, want)
    assert ours.shape[1] == 13
    ours, want = both(ckpt, ids, mask, max_length=15, min_length=15)
    assert_tokens(ours, want)
    assert ours.shape[1] == 15


def test_model_generation_config_and_call_config(ckpt, batch):
    model, _ = ckpt
    ids, mask = batch
    model.generation_config.max_new_tokens = 4
    try:
        ours, want = both(ckpt, ids, mask, min_new_tokens=4)
        assert_tokens(ours, want)
        assert ours.shape[1] == 12
        # a call's generation_config (any object with to_dict) overrides the model's
        ours = model.generate(ids, attention_mask=mask, generation_config=GenerationConfig(
            max_new_tokens=6, min_new_tokens=6))
        assert ours.shape[1] == 14
    finally:
        model.generation_config.max_new_tokens = None
    # input_ids=None starts from bos
    ours, want = both(ckpt, None, max_new_tokens=5, min_new_tokens=5)
    assert_tokens(ours, want)
    assert ours[0, 0] == CFG.bos_token_id


@pytest.mark.parametrize("kw", [
    dict(max_new_tokens=12, output_scores=True, output_logits=True),
    dict(max_new_tokens=6, do_sample=True, top_k=8, seed=3, num_return_sequences=2,
         output_scores=True, output_logits=True),
    dict(max_new_tokens=8, num_beams=3, output_scores=True, output_logits=True),
], ids=["greedy", "sample", "beams"])
def test_scores_and_logits_within_tolerance(ckpt, batch, eos, kw):
    ids, mask = batch
    ours, want = both(ckpt, ids, mask, eos_token_id=eos, return_dict_in_generate=True, **kw)
    assert type(ours).__name__ == type(want).__name__
    assert_tokens(ours, want)
    assert ours.keys() == want.keys()
    atol, rtol = tolerance("logits")  # processed scores are logits-like (log-softmax under beams)
    for field in ("scores", "logits"):
        assert len(getattr(ours, field)) == len(getattr(want, field))
        for a, b in zip(getattr(ours, field), getattr(want, field)):
            np.testing.assert_allclose(a.numpy(), b, atol=atol, rtol=rtol)
    if kw.get("num_beams", 1) > 1:
        np.testing.assert_allclose(ours.sequences_scores.numpy(), want.sequences_scores, atol=atol, rtol=rtol)
        np.testing.assert_array_equal(ours.beam_indices.numpy(), want.beam_indices)


def test_stop_strings_with_gpt2_tokenizer(ckpt, batch):
    from gpt2_tokenizer import GPT2Tokenizer

    model, _ = ckpt
    tok = GPT2Tokenizer.from_pretrained()
    ids, mask = batch
    free = model.generate(ids, attention_mask=mask, max_new_tokens=12, min_new_tokens=12)
    # a stop string that starts in one new token and ends in the next (ids < 97 are one byte)
    text = tok.decode_bytes(free[0, 8:].tolist()).decode("latin-1")
    stops = [text[4:6], "\x00never"]
    ours, want = both(ckpt, ids, mask, max_new_tokens=12, min_new_tokens=12, stop_strings=stops,
                      tokenizer=tok)
    assert_tokens(ours, want)
    first = text.index(stops[0]) + len(stops[0])  # row 0 stops there; the others run on
    assert (ours[0, 8 + first:] == CFG.eos_token_id).all() and first < 12
    ours, want = both(ckpt, ids, mask, max_new_tokens=8, num_beams=2, stop_strings=text[2:4],
                      tokenizer=tok)
    assert_tokens(ours, want)


def test_streamer_receives_the_returned_tokens(ckpt, batch, eos):
    model, _ = ckpt
    ids, mask = batch

    class Collect:
        def __init__(self):
            self.chunks, self.ended = [], 0

        def put(self, value):
            self.chunks.append(value.clone())

        def end(self):
            self.ended += 1

    s = Collect()
    out = model.generate(ids, attention_mask=mask, max_new_tokens=10, eos_token_id=eos, do_sample=True,
                         seed=4, num_return_sequences=2, streamer=s)
    assert s.ended == 1
    assert torch.equal(torch.cat([s.chunks[0]] + [c[:, None] for c in s.chunks[1:]], 1), out)
    steps = [st.token_ids for st in model.stream_generate(ids, attention_mask=mask, max_new_tokens=10,
                                                          eos_token_id=eos, do_sample=True, seed=4,
                                                          num_return_sequences=2)]
    assert torch.equal(torch.stack(steps, 1), out[:, 8:])


@pytest.mark.parametrize("kw", [
    dict(max_new_tokens=0),
    dict(num_beams=0),
    dict(num_return_sequences=2),
    dict(num_beams=2, num_return_sequences=3),
    dict(eos_token_id=97),
    dict(pad_token_id=-1),
    dict(pad_token_id=200),
    dict(bad_words_ids=[[100]]),
    dict(temperature=0.0, do_sample=True),
    dict(top_p=1.5),
    dict(early_stopping="sometimes"),
    dict(max_new_tokens=95),
    dict(stop_strings="x"),
    dict(seed=-1),
    dict(no_such_option=1),
    dict(input_ids=np.zeros((1, 0), np.int64)),
    dict(input_ids=np.array([[5, 97]])),
], ids=str)
def test_errors_are_the_spec_errors(ckpt, kw):
    model, params = ckpt
    kw = dict(kw)
    ids = kw.pop("input_ids", np.array([[5, 6, 7]]))
    with pytest.raises((ValueError, TypeError)) as want:
        generation.generate(CFG, params, ids, **kw)
    with pytest.raises(type(want.value)) as got:
        model.generate(ids, **kw)
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize("name", [p.name for p in sampling.PROCESSORS])
def test_each_processor_matches_the_spec(name):
    """Each torch row of the table against the NumPy row on the same float32 scores."""
    rng = np.random.default_rng(0)
    scores = rng.normal(0, 3, (3, 40)).astype(np.float32)
    ids = rng.integers(0, 40, (3, 9))
    ids[:, -2:] = ids[:, 2:4]  # a repeated bigram for no_repeat_ngram
    padding = np.array([0, 2, 4])
    kw = dict(repetition_penalty=1.7, no_repeat_ngram_size=2, bad_words_ids=[[3], [int(ids[0, -1]), 8]],
              min_length=20, temperature=0.7, top_k=5, top_p=0.6, min_p=0.1, typical_p=0.5,
              do_sample=True, eos_token_id=[2, 5])
    plan = resolve(GPT2Config(vocab_size=40, n_positions=64), GenerationConfig(**kw), 3, 9)
    row = next(p for p in sampling.PROCESSORS if p.name == name)
    want = row.apply(scores, sampling.ProcessorState(ids, padding, 1, plan.eos_token_ids), plan)
    state = processors.ProcessorState(torch.from_numpy(ids), torch.from_numpy(padding), 1, plan.eos_token_ids)
    got = processors.PROCESSORS[name](torch.from_numpy(scores), state, plan).numpy()
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    atol, rtol = tolerance("scores.processed")
    np.testing.assert_allclose(got, want, atol=atol, rtol=rtol)


@pytest.mark.parametrize("seed, step, rows, V", [
    (0, 0, 2, 7), (123, 5, 3, 97), (2 ** 32 + 17, 63, 4, 50257), (2 ** 64 - 1, 2 ** 32 - 1, 1, 1000),
])
def test_threefry_uniform_bit_for_bit(seed, step, rows, V):
    want = np_threefry.uniform(seed, step, rows, V)
    got = threefry.uniform(seed, step, rows, V).numpy()
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    # Gumbel noise: the same bits through float32 logs (libm may differ by an ulp)
    np.testing.assert_allclose(threefry.gumbel(seed, step, rows, V).numpy(),
                               np_threefry.gumbel(seed, step, rows, V), rtol=1e-6, atol=1e-6)


def test_threefry_counter_wraps_past_2_32():
    """row * V past 2**32 (a batch of 90,000 rows of GPT-2's vocabulary) wraps mod 2**32."""
    rows = np.arange(90_000, 90_003, dtype=np.uint64)[:, None]
    counter = (rows * np.uint64(50257) + np.arange(50257, dtype=np.uint64)) & np.uint64(2 ** 32 - 1)
    assert (rows * 50257).max() > 2 ** 32
    key = np_threefry.key_words(2 ** 33 + 5)
    x0, _ = np_threefry.threefry2x32(key, np.full(counter.shape, 9, np.uint32), counter.astype(np.uint32))
    want = np_threefry.bits_to_uniform(x0)
    t_counter = (torch.arange(90_000, 90_003)[:, None] * 50257 + torch.arange(50257)) & 0xFFFFFFFF
    got = threefry.uniform_at(key, 9, t_counter).numpy()
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_repetition_penalty_skips_left_padding(ckpt, batch):
    """The padding holds the very token the row would pick: penalised, it would not be picked."""
    model, _ = ckpt
    ids, mask = batch
    ids = ids.copy()
    first = model.generate(ids, attention_mask=mask, max_new_tokens=1)[:, -1]
    ids[mask == 0] = int(first[2])
    ours, want = both(ckpt, ids, mask, max_new_tokens=6, repetition_penalty=5.0)
    assert_tokens(ours, want)
    assert ours[2, 8] == first[2]
