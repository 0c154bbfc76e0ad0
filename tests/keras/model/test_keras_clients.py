"""The Keras clients users already run, on any Keras backend: `fit` with `validation_data` and
Keras' other arguments, `ModelCheckpoint` then `keras.models.load_model` then resume, KerasHub's
`generate` on strings, the Hugging Face forward's keywords, `quantize`, and variable paths a
`keras.distribution.LayoutMap` can address."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras_test_helpers import CONFIGS, assert_close, batch, byte_vocabulary, to_np

import gpt2_core
import gpt2_keras
from gpt2_core import GPT2Config, generation
from gpt2_keras import GPT2CausalLM, GPT2CausalLMPreprocessor, GPT2LMHeadModel, GPT2TokenizerLayer
from gpt2_tokenizer import bytes_to_unicode

VOCAB, MERGES = byte_vocabulary()
EOS = VOCAB["<|endoftext|>"]
# dropout on (GPT-2's 0.1 defaults): a resumed run must draw the uninterrupted run's masks
TINY = GPT2Config(vocab_size=len(VOCAB), n_positions=24, n_embd=16, n_layer=2, n_head=2,
                  bos_token_id=EOS, eos_token_id=EOS)
TEXTS = ["the cat sat on the mat.", "the dog sat.", "a cat at the log.", "that hat."]


def causal_lm(seed: int = 0) -> GPT2CausalLM:
    keras.utils.set_random_seed(seed)  # the dropout seeds
    backbone = GPT2LMHeadModel.from_params(TINY, gpt2_core.init_params(TINY, seed=seed))
    pre = GPT2CausalLMPreprocessor(GPT2TokenizerLayer(VOCAB, MERGES), sequence_length=12,
                                   eos_token_id=EOS)
    lm = GPT2CausalLM(backbone, pre)
    lm.compile(optimizer=keras.optimizers.AdamW(learning_rate=3e-3), jit_compile=False)
    return lm


def test_checkpoint_file_resumes_fit_as_the_uninterrupted_run(tmp_path):
    """ModelCheckpoint -> keras.models.load_model -> fit(initial_epoch=2): the same weights
    as the run that never stopped (optimizer state, preprocessor and dropout state are all in
    the file), with validation_data on strings and Keras' own fit arguments passed through."""
    ds = tf.data.Dataset.from_tensor_slices(TEXTS).batch(2)
    lm = causal_lm()
    path = str(tmp_path / "lm.keras")
    history = lm.fit(ds, validation_data=ds, validation_freq=2, epochs=2, shuffle=False,
                     verbose=0, callbacks=[keras.callbacks.ModelCheckpoint(path)])
    # validation on strings, once: validation_freq=2 reached Keras
    assert len(history.history["val_loss"]) == 1 and "val_perplexity" in history.history
    resumed = keras.models.load_model(path)
    assert isinstance(resumed.preprocessor, GPT2CausalLMPreprocessor)
    assert resumed.preprocessor.tokenizer.vocabulary == VOCAB
    assert isinstance(resumed.optimizer, keras.optimizers.AdamW)
    assert int(resumed.optimizer.iterations) == 4  # 2 epochs x 2 batches
    lm.fit(ds, initial_epoch=2, epochs=3, verbose=0)  # the uninterrupted run goes on
    history = resumed.fit(ds, initial_epoch=2, epochs=3, verbose=0)
    assert len(history.history["loss"]) == 1
    for want, got in zip(lm.weights, resumed.weights, strict=True):
        # the same ops on the same values: only reassociation noise is allowed
        assert_close(got.path, got, to_np(want), atol=1e-6)


def reference_continuation(params, prompt: str, **kw) -> str:
    """The NumPy oracle's continuation of one unpadded prompt (after the leading eos), decoded
    up to the first eos."""
    ids = GPT2TokenizerLayer(VOCAB, MERGES).tokenize([prompt]).to_list()[0]
    ids = np.array([[EOS] + ids])
    new = generation.generate(TINY, params, ids, **kw)[0, ids.shape[1]:].tolist()
    new = new[:new.index(EOS)] if EOS in new else new
    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    token = {i: t for t, i in VOCAB.items()}
    return bytes(byte_of[c] for t in new for c in token[t]).decode("utf-8", "replace")


def test_generate_on_strings_matches_the_reference(eager_generation):
    """KerasHub's call: a string in, a string out (prompt included); a list of prompts of
    different lengths (left-padded together) gives each prompt's unpadded continuation."""
    lm = causal_lm(seed=1)
    params = {name: to_np(var) for name, var, _ in lm.backbone.weight_table()}
    params = {k: (v.T if t else v) for (k, v), (_, _, t) in zip(params.items(),
                                                                lm.backbone.weight_table())}
    one = lm.generate("the cat", max_length=10)
    assert isinstance(one, str)  # random weights: any bytes, decoded as KerasHub does
    assert one == "the cat" + reference_continuation(params, "the cat", max_length=10)
    prompts = ["a", "that hat"]
    got = lm.generate(prompts, max_new_tokens=5, strip_prompt=True)
    assert got == [reference_continuation(params, p, max_new_tokens=5) for p in prompts]
    sampled = lm.generate("a", max_new_tokens=5, do_sample=True, top_k=20, seed=3)
    assert sampled == "a" + reference_continuation(params, "a", max_new_tokens=5, do_sample=True,
                                                   top_k=20, seed=3)


def test_generate_needs_a_tokenizer_and_text():
    lm = GPT2CausalLM(GPT2LMHeadModel(TINY))
    with pytest.raises(ValueError, match="needs a preprocessor with a tokenizer"):
        lm.generate("hi")
    lm = causal_lm()
    with pytest.raises(TypeError, match="`inputs` must be a string or a non-empty list"):
        lm.generate([1, 2])


def test_forward_takes_inputs_embeds_return_dict_and_a_list():
    config = CONFIGS["base"]
    model = GPT2LMHeadModel.from_params(config, gpt2_core.random_params(config, seed=2))
    ids, mask = batch(config)
    want = to_np(model(input_ids=ids, attention_mask=mask).logits)
    embeds = to_np(model.transformer.wte.weight)[ids]
    assert_close("inputs_embeds", model(inputs_embeds=embeds, attention_mask=mask).logits, want, 1e-5)
    # a list or tuple of tensors is (input_ids, attention_mask), as TF GPT-2 and Keras take it
    assert_close("[ids, mask]", model([ids, mask]).logits, want, 0.0)
    assert_close("(ids, mask)", model((ids, mask))["logits"], want, 0.0)
    logits, past = model(ids, attention_mask=mask, use_cache=True, return_dict=False)
    assert_close("return_dict=False", logits, want, 0.0)
    assert len(past) == config.n_layer
    with pytest.raises(ValueError, match=r"read as \(input_ids, attention_mask\).*3 tensors"):
        model([ids, mask, mask])
    with pytest.raises(ValueError, match="`input_ids` or `inputs_embeds`, not both"):
        model(input_ids=ids, inputs_embeds=embeds)
    with pytest.raises(ValueError, match=r"`inputs_embeds` must have shape \(batch, seq, n_embd=32"):
        model(inputs_embeds=embeds[..., :5])


@pytest.mark.parametrize("mode", ["int8", "int4", "float8", "gptq", "awq"])
def test_quantize_raises_for_every_mode(mode):
    """Never a silent no-op (Keras' own `quantize` only warns on GPT-2's Conv1D). gptq and awq
    without their config object are refused by Keras first."""
    model = GPT2LMHeadModel(CONFIGS["base"])
    before = [to_np(v) for v in model.weights]
    if mode in ("gptq", "awq"):
        with pytest.raises(ValueError, match="config"):
            model.quantize(mode)
    else:
        with pytest.raises(NotImplementedError, match=f"no mode is.*Received: mode='{mode}'"):
            model.quantize(mode)
        with pytest.raises(NotImplementedError, match="not supported"):
            GPT2CausalLM(model).quantize(mode)
    assert all(np.array_equal(a, to_np(b)) for a, b in zip(before, model.weights))


@pytest.mark.parametrize("cls", ["GPT2LMHeadModel", "GPT2DoubleHeadsModel"])
def test_variable_paths_are_unique_and_name_checkpoint_tensors(cls):
    config = CONFIGS["untied_scaled"]
    model = getattr(gpt2_keras, cls)(config)
    paths = [v.path for v in model.variables]
    assert len(set(paths)) == len(paths), sorted(p for p in paths if paths.count(p) > 1)
    # every checkpoint tensor's path is its name with "/" (after the `transformer/` prefix)
    for name, var, _ in model.weight_table():
        prefix = "" if name.startswith(("lm_head", "multiple_choice_head")) else "transformer/"
        assert var.path == prefix + name.replace(".", "/"), (name, var.path)


def test_layout_map_addresses_one_layer():
    """A `keras.distribution.LayoutMap` regex picks exactly one layer's variable; on JAX the
    model built under `ModelParallel` has that variable laid out as asked."""
    config = CONFIGS["base"]
    # the mesh's devices matter only to a distribution (JAX); the map's lookup is by path
    devices = keras.distribution.list_devices()[:1] if keras.backend.backend() == "jax" else ["cpu:0"]
    mesh = keras.distribution.DeviceMesh((1,), ["model"], devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map[".*h/1/attn/c_attn/weight"] = (None, "model")  # Keras full-matches the regex
    model = GPT2LMHeadModel(config)
    picked = [v.path for v in model.variables if layout_map[v.path] is not None]
    assert picked == ["transformer/h/1/attn/c_attn/weight"]
    if keras.backend.backend() == "jax":  # the backend keras.distribution runs on
        distribution = keras.distribution.ModelParallel(layout_map=layout_map)
        with distribution.scope():
            sharded = GPT2LMHeadModel.from_params(config, gpt2_core.random_params(config, seed=0))
        # the layout each variable was created with (a 1-device mesh places them all alike)
        axes = {v.path: tuple(v._layout.axes) for v in sharded.variables}
        assert axes["transformer/h/1/attn/c_attn/weight"] == (None, "model")
        assert axes["transformer/h/0/attn/c_attn/weight"] == (None, None)
        ids, mask = batch(config)
        plain = GPT2LMHeadModel.from_params(config, gpt2_core.random_params(config, seed=0))
        assert_close("sharded logits", sharded(input_ids=ids, attention_mask=mask).logits,
                     to_np(plain(input_ids=ids, attention_mask=mask).logits), 1e-5)


if keras.backend.backend() != "tensorflow":

    def test_tokenizer_layer_in_a_functional_model_needs_tensorflow():
        with pytest.raises(ValueError, match="needs the TensorFlow Keras backend"):
            GPT2TokenizerLayer(VOCAB, MERGES)(keras.Input(shape=(), dtype="string"))


def test_runner_resumes_optimizer_state_written_before_the_paths_were_unique():
    """`gpt2 train --backend keras` runs saved their optimizer under the old variable names
    (`optimizer.5.c_attn_weight_momentum`): they still resume, by position."""
    from types import SimpleNamespace

    from gpt2_keras import runner

    config = CONFIGS["base"]
    options = SimpleNamespace(betas=(0.9, 0.95), learning_rate=1e-3, weight_decay=0.1, seed=0,
                              dropout=0.1)
    first = runner.trainer(config, gpt2_core.random_params(config, seed=0), options)
    first.train_step(batch(config)[0], 1e-3)
    state = first.optimizer_state()
    # the names Keras gave before `transformer/h/0/attn/c_attn/weight`: `c_attn/weight`
    renames = {v.path.replace("/", "_"): "_".join(v.path.split("/")[-2:])
               for v in first.model.trainable_variables}
    old = {}
    for key, value in state.items():
        prefix, _, name = key.rpartition(".")
        slot = next((n for n in renames if name.startswith(n + "_")), None)
        old[key if slot is None else f"{prefix}.{renames[slot]}{name[len(slot):]}"] = value
    assert "optimizer.5.wpe_weight_velocity" in old and "optimizer.10.c_attn_weight_momentum" in old
    second = runner.trainer(config, gpt2_core.random_params(config, seed=0), options)
    second.load_optimizer_state(old)
    for a, b in zip(first.optimizer.variables, second.optimizer.variables, strict=True):
        np.testing.assert_array_equal(to_np(a), to_np(b))
    del old[next(k for k in old if k.startswith("optimizer.3."))]
    with pytest.raises(ValueError, match="The optimizer checkpoint lacks"):
        second.load_optimizer_state(old)
