"""TensorFlow-only: `fit` on raw strings through tf.data, and the XLA-compiled generate."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from keras_test_helpers import CONFIGS

import gpt2_core
from gpt2_core import GPT2Config
from gpt2_keras import GPT2CausalLM, GPT2CausalLMPreprocessor, GPT2LMHeadModel, GPT2TokenizerLayer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TEXTS = ["the cat sat on the mat.", "the dog sat on the log.", "a cat and a dog.",
         "the mat and the log.", "the cat sat.", "the dog sat."] * 4


def test_fit_on_raw_strings_lowers_loss_and_reports_perplexity(tmp_path):
    config = GPT2Config(vocab_size=50257, n_positions=32, n_embd=32, n_layer=1, n_head=2)
    backbone = GPT2LMHeadModel.from_params(config, gpt2_core.init_params(config, seed=0))
    pre = GPT2CausalLMPreprocessor(GPT2TokenizerLayer(), sequence_length=16)
    model = GPT2CausalLM(backbone, pre)
    model.compile(optimizer="adam")
    ds = tf.data.Dataset.from_tensor_slices(TEXTS).batch(8)
    before = model.evaluate(ds, return_dict=True, verbose=0)
    assert np.isclose(before["perplexity"], np.exp(before["loss"]), rtol=1e-3)
    ckpt = str(tmp_path / "best.weights.h5")
    import keras

    history = model.fit(ds, epochs=4, verbose=0, callbacks=[
        keras.callbacks.ModelCheckpoint(ckpt, monitor="loss", save_weights_only=True),
        keras.callbacks.EarlyStopping(monitor="loss", patience=2)])
    after = model.evaluate(ds, return_dict=True, verbose=0)
    assert after["loss"] < before["loss"] - 0.5, (before, after, history.history)
    assert (tmp_path / "best.weights.h5").exists()


def test_preprocessor_packs_windows_with_weights():
    pre = GPT2CausalLMPreprocessor(sequence_length=5, eos_token_id=9, pad_token_id=0)
    x, y, w = pre(tf.ragged.constant([[1, 2], [1, 2, 3, 4, 5, 6]]))
    np.testing.assert_array_equal(x["input_ids"], [[9, 1, 2, 9, 0], [9, 1, 2, 3, 4]])
    np.testing.assert_array_equal(y, [[1, 2, 9, 0, 0], [1, 2, 3, 4, 5]])
    np.testing.assert_array_equal(w, [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])


def numpy_packing(texts, L, eos=50256):
    """The reference: gpt2_tokenizer ids, each document followed by EOS, cut into L + 1 windows."""
    from gpt2_tokenizer import GPT2Tokenizer

    tok = GPT2Tokenizer.from_pretrained()
    stream = np.concatenate([tok.encode(t) + [eos] for t in texts])
    n = len(stream) // (L + 1)
    return stream[:n * (L + 1)].reshape(n, L + 1)


PACK_TEXTS = ["the cat sat on the mat.", "", "Hello world\n\n  twice!", "a dog.",
              "Ünïcödé and 🙂 emoji", "the mat and the log."] * 3


@pytest.mark.parametrize("batched", [False, True])
def test_packed_dataset_equals_a_numpy_packing_of_gpt2_tokenizer_ids(batched):
    L = 7
    pre = GPT2CausalLMPreprocessor(GPT2TokenizerLayer(), sequence_length=L)
    ds = tf.data.Dataset.from_tensor_slices(PACK_TEXTS)
    packed = pre.packed_dataset(ds.batch(4) if batched else ds, batch_size=3)
    xs, ys, ws, masks = [], [], [], []
    for x, y, w in packed:
        xs.append(x["input_ids"].numpy())
        masks.append(x["attention_mask"].numpy())
        ys.append(y.numpy())
        ws.append(w.numpy())
    want = numpy_packing(PACK_TEXTS, L)
    assert len(want) > 6  # several windows, the last batch partial
    np.testing.assert_array_equal(np.concatenate(xs), want[:, :-1])
    np.testing.assert_array_equal(np.concatenate(ys), want[:, 1:])
    assert (np.concatenate(ws) == 1).all() and (np.concatenate(masks) == 1).all()


def test_packed_dataset_rejects_non_strings():
    pre = GPT2CausalLMPreprocessor(GPT2TokenizerLayer(), sequence_length=4)
    with pytest.raises(TypeError, match="`ds` must yield strings"):
        pre.packed_dataset(tf.data.Dataset.from_tensor_slices([[1, 2]]))
    with pytest.raises(ValueError, match="needs a tokenizer"):
        GPT2CausalLMPreprocessor().packed_dataset(tf.data.Dataset.from_tensor_slices(["a"]))


def test_fit_on_a_packed_dataset_lowers_loss():
    config = GPT2Config(vocab_size=50257, n_positions=32, n_embd=32, n_layer=1, n_head=2)
    backbone = GPT2LMHeadModel.from_params(config, gpt2_core.init_params(config, seed=0))
    pre = GPT2CausalLMPreprocessor(GPT2TokenizerLayer(), sequence_length=16)
    model = GPT2CausalLM(backbone, pre)
    model.compile(optimizer="adam")
    packed = pre.packed_dataset(tf.data.Dataset.from_tensor_slices(TEXTS), batch_size=4).cache()
    before = model.evaluate(packed, return_dict=True, verbose=0)
    model.fit(packed, epochs=4, verbose=0)
    after = model.evaluate(packed, return_dict=True, verbose=0)
    assert after["loss"] < before["loss"] - 0.5, (before, after)


def test_xla_generate_matches_transformers_and_does_not_retrace(tmp_path):
    config = CONFIGS["base"].replace(n_positions=64)
    gpt2_core.save_pretrained(tmp_path, config, gpt2_core.random_params(config, seed=4))
    ours = GPT2LMHeadModel.from_pretrained(tmp_path)
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    rng = np.random.default_rng(0)
    for P in (5, 9, 17):  # all in the first prompt bucket: one compiled function
        ids = rng.integers(1, 100, (2, P)).astype(np.int32)
        got = ours.generate(ids, max_new_tokens=10)
        with torch.no_grad():
            want = theirs.generate(torch.from_numpy(ids.astype(np.int64)), max_new_tokens=10,
                                   do_sample=False, pad_token_id=0).numpy()
        np.testing.assert_array_equal(got, want)
    assert ours._generate_traces == 1
    ours.generate(rng.integers(1, 100, (2, 40)).astype(np.int32), max_new_tokens=10)
    assert ours._generate_traces == 2  # a new prompt bucket compiles once more


def test_tied_head_gradient_builds_no_vocab_by_embedding_product():
    """TensorFlow differentiates an ellipsis einsum through a (..., V, C) product: for GPT-2
    small at 4 x 256 tokens that is a 50 GB tensor and `fit` runs out of memory."""
    config = CONFIGS["base"]  # vocab 101, n_embd 32: sizes no other tensor has
    model = GPT2LMHeadModel.from_params(config, gpt2_core.random_params(config, seed=0))
    ids = tf.constant(np.random.default_rng(0).integers(0, 100, (2, 7)), tf.int32)

    @tf.function
    def grads(ids):
        with tf.GradientTape() as tape:
            loss = model({"input_ids": ids, "labels": ids})["loss"]
        return tape.gradient(loss, model.trainable_variables)

    graph = grads.get_concrete_function(ids).graph
    big = [(op.name, out.shape) for op in graph.get_operations() for out in op.outputs
           if out.shape.rank is not None and out.shape.rank >= 3
           and {config.vocab_size, config.n_embd} <= set(out.shape.as_list())]
    assert not big, big


def test_xla_beam_search_matches_transformers_and_does_not_retrace(tmp_path):
    config = CONFIGS["base"].replace(n_positions=64)
    gpt2_core.save_pretrained(tmp_path, config, gpt2_core.random_params(config, seed=4))
    ours = GPT2LMHeadModel.from_pretrained(tmp_path)
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    rng = np.random.default_rng(1)
    kw = dict(num_beams=3, length_penalty=1.3, eos_token_id=[config.eos_token_id, 17, 40])
    for P, max_new in ((6, 10), (13, 7)):  # one prompt bucket and one length bucket
        ids = rng.integers(1, 100, (2, P)).astype(np.int32)
        mask = np.ones_like(ids)
        mask[0, :2], ids[0, :2] = 0, config.pad_token_id  # a left-padded row
        got = ours.generate(ids, attention_mask=mask, max_new_tokens=max_new, **kw)
        with torch.no_grad():
            want = theirs.generate(torch.from_numpy(ids.astype(np.int64)),
                                   attention_mask=torch.from_numpy(mask.astype(np.int64)),
                                   max_new_tokens=max_new, do_sample=False,
                                   pad_token_id=config.pad_token_id, **kw).numpy()
        np.testing.assert_array_equal(got, want)
    assert ours._generate_traces == 1  # the second prompt length reused the compiled search


@pytest.mark.parametrize("kw", [dict(), dict(top_k=0, temperature=0.8), dict(num_beams=2)],
                         ids=["default_top_k", "no_top_k", "beam_sampling"])
def test_xla_sampling_compiles_and_matches_the_reference(kw):
    """Sampling under XLA (the default on TensorFlow): the Threefry noise feeding the token pick
    compiles in seconds, and the tokens are the reference's for the same seed."""
    from gpt2_core import generation, random_params

    config = GPT2Config(vocab_size=96, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    params = random_params(config, seed=3, scale=0.2)
    model = GPT2LMHeadModel.from_params(config, params)
    ids = np.random.default_rng(1).integers(0, 96, (2, 6))
    got = model.generate(ids, do_sample=True, seed=11, max_new_tokens=12, **kw)
    want = generation.generate(config, params, ids, do_sample=True, seed=11, max_new_tokens=12, **kw)
    np.testing.assert_array_equal(np.asarray(got), want)
