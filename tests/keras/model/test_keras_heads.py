"""Every head against transformers' torch model on the same checkpoint, written by
`gpt2_core.save_pretrained` with every tensor random; plus checkpoint round trips."""

from __future__ import annotations

import numpy as np
import pytest
from keras_test_helpers import CONFIGS, assert_close, batch, to_np

import gpt2_core
import gpt2_keras

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# float32 in both frameworks, different kernels: observed ~2e-6 on logits of magnitude ~10.
ATOL = 1e-4


def checkpoint(tmp_path, config, head, arch, seed=5):
    params = gpt2_core.random_params(config, seed=seed, head=head)
    gpt2_core.save_pretrained(tmp_path, config, params, architectures=(arch,))
    ours = getattr(gpt2_keras, arch).from_pretrained(tmp_path)
    theirs = getattr(transformers, arch).from_pretrained(tmp_path, attn_implementation="eager").eval()
    return ours, theirs


def torch_inputs(**arrays):
    return {k: torch.from_numpy(np.asarray(v).astype(np.int64)) for k, v in arrays.items()}


def positions(mask):
    # transformers' forward does not derive positions from the mask (only its generate does)
    return gpt2_core.reference.default_position_ids(mask, 0, *mask.shape)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_lm_head_matches_transformers(tmp_path, name):
    config = CONFIGS[name]
    ours, theirs = checkpoint(tmp_path, config, "lm", "GPT2LMHeadModel")
    ids, mask = batch(config)
    labels = np.where(mask == 1, ids, -100)
    pos = positions(mask)
    out = ours(input_ids=ids, attention_mask=mask, labels=labels, use_cache=True,
               output_hidden_states=True)
    with torch.no_grad():
        ref = theirs(**torch_inputs(input_ids=ids, attention_mask=mask, position_ids=pos,
                                    labels=labels), use_cache=True, output_hidden_states=True)
    keep = mask[:, :, None] == 1  # padded query rows are meaningless in both
    assert_close("logits", to_np(out.logits) * keep, ref.logits.numpy() * keep, ATOL)
    assert_close("loss", out.loss, ref.loss.item(), 1e-5)
    layer = ref.past_key_values.layers[-1]
    assert_close("last key", out.past_key_values[-1][0], layer.keys.numpy(), ATOL)
    assert_close("last value", out.past_key_values[-1][1], layer.values.numpy(), ATOL)


def test_double_heads_match_transformers(tmp_path):
    config = CONFIGS["base"].replace(num_labels=1)
    ours, theirs = checkpoint(tmp_path, config, "double_heads", "GPT2DoubleHeadsModel")
    rng = np.random.default_rng(0)
    ids = rng.integers(1, config.vocab_size, (2, 3, 7)).astype(np.int32)  # (B, nc, T)
    mc_token_ids = rng.integers(0, 7, (2, 3)).astype(np.int32)
    mc_labels = np.array([2, 0], np.int32)
    out = ours(input_ids=ids, mc_token_ids=mc_token_ids, labels=ids, mc_labels=mc_labels)
    with torch.no_grad():
        ref = theirs(**torch_inputs(input_ids=ids, mc_token_ids=mc_token_ids, labels=ids,
                                    mc_labels=mc_labels))
    assert_close("logits", out.logits, ref.logits.numpy(), ATOL)
    assert_close("mc_logits", out.mc_logits, ref.mc_logits.numpy(), ATOL)
    assert_close("lm loss", out.loss, ref.loss.item(), 1e-5)
    assert_close("mc loss", out.mc_loss, ref.mc_loss.item(), 1e-5)


@pytest.mark.parametrize("problem", ["single_label_classification", "regression",
                                     "multi_label_classification"])
def test_sequence_classification_matches_transformers(tmp_path, problem):
    num_labels = 1 if problem == "regression" else 3
    config = CONFIGS["base"].replace(num_labels=num_labels, problem_type=problem)
    ours, theirs = checkpoint(tmp_path, config, "sequence_classification",
                              "GPT2ForSequenceClassification")
    ids, mask = batch(config)
    ids = np.where(mask == 1, ids, config.pad_token_id).astype(np.int32)
    rng = np.random.default_rng(1)
    if problem == "single_label_classification":
        labels = rng.integers(0, 3, (3,)).astype(np.int32)
        t_labels = torch.from_numpy(labels.astype(np.int64))
    else:
        labels = rng.normal(size=(3, num_labels)).astype(np.float32)
        if problem == "multi_label_classification":
            labels = (labels > 0).astype(np.float32)
        t_labels = torch.from_numpy(labels)
    out = ours(input_ids=ids, attention_mask=mask, labels=labels)
    with torch.no_grad():
        ref = theirs(**torch_inputs(input_ids=ids, attention_mask=mask, position_ids=positions(mask)),
                     labels=t_labels)
    assert_close("pooled logits", out.logits, ref.logits.numpy(), ATOL)
    assert_close("loss", out.loss, ref.loss.item(), 1e-5)


def test_sequence_classification_without_pad_id_refuses_batches(tmp_path):
    config = CONFIGS["base"].replace(pad_token_id=None, num_labels=2)
    model = gpt2_keras.GPT2ForSequenceClassification(config)
    with pytest.raises(ValueError, match="pad_token_id"):
        model(input_ids=np.ones((2, 4), np.int32))


def test_token_classification_matches_transformers(tmp_path):
    config = CONFIGS["untied_scaled"].replace(num_labels=4)
    ours, theirs = checkpoint(tmp_path, config, "token_classification", "GPT2ForTokenClassification")
    ids, _ = batch(config)
    labels = np.random.default_rng(2).integers(-1, 4, ids.shape)
    labels = np.where(labels < 0, -100, labels).astype(np.int32)
    out = ours(input_ids=ids, labels=labels)
    with torch.no_grad():
        ref = theirs(**torch_inputs(input_ids=ids, labels=labels))
    assert_close("logits", out.logits, ref.logits.numpy(), ATOL)
    assert_close("loss", out.loss, ref.loss.item(), 1e-5)


def test_question_answering_matches_transformers(tmp_path):
    config = CONFIGS["base"]
    ours, theirs = checkpoint(tmp_path, config, "question_answering", "GPT2ForQuestionAnswering")
    ids, _ = batch(config)
    start = np.array([1, 4, 30], np.int32)  # 30 lies past T=9: clamped and ignored
    end = np.array([3, 8, 2], np.int32)
    out = ours(input_ids=ids, start_positions=start, end_positions=end)
    with torch.no_grad():
        ref = theirs(**torch_inputs(input_ids=ids, start_positions=start, end_positions=end))
    assert_close("start", out.start_logits, ref.start_logits.numpy(), ATOL)
    assert_close("end", out.end_logits, ref.end_logits.numpy(), ATOL)
    assert_close("loss", out.loss, ref.loss.item(), 1e-5)


@pytest.mark.parametrize("name", ["base", "untied_scaled"])
def test_save_pretrained_round_trip_is_exact_and_loads_in_transformers(tmp_path, name):
    config = CONFIGS[name]
    params = gpt2_core.random_params(config, seed=9)
    model = gpt2_keras.GPT2LMHeadModel.from_params(config, params)
    model.save_pretrained(tmp_path / "out")
    cfg2, params2 = gpt2_core.load_pretrained(tmp_path / "out")
    # gpt2_core keeps `architectures`/`model_type`/labels maps of a loaded config in `extra`
    assert cfg2.replace(extra={}) == config
    assert sorted(params2) == sorted(params)
    for k in params:
        np.testing.assert_array_equal(params2[k], params[k], err_msg=k)
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    ids, _ = batch(config)
    with torch.no_grad():
        ref = theirs(torch.from_numpy(ids.astype(np.int64))).logits.numpy()
    assert_close("reloaded logits", model(input_ids=ids).logits, ref, ATOL)


def test_base_checkpoint_into_new_head_keeps_fresh_head(tmp_path, caplog):
    config = CONFIGS["base"]
    gpt2_core.save_pretrained(tmp_path, config, gpt2_core.random_params(config, 0, head="base"),
                              architectures=("GPT2Model",))
    model = gpt2_keras.GPT2ForTokenClassification.from_pretrained(tmp_path)
    assert "classifier.weight" in caplog.text
    assert to_np(model.transformer.wte.weight).std() > 0.1  # the loaded, not the init, values
    # the loader builds without random draws; the missing head still gets GPT-2's N(0, 0.02)
    assert 0.01 < to_np(model.classifier.weight).std() < 0.03


def test_loading_copies_in_slices_exactly_and_reports_non_finite_values(tmp_path, monkeypatch):
    from gpt2_keras import weights

    monkeypatch.setattr(weights, "CHUNK_BYTES", 1000)  # several slices per matrix
    config = CONFIGS["untied_scaled"]  # an untied, transposed lm_head too
    params = gpt2_core.random_params(config, 0)
    gpt2_core.save_pretrained(tmp_path / "ok", config, params)
    model = gpt2_keras.GPT2LMHeadModel.from_pretrained(tmp_path / "ok")
    got = weights.get_params(model)
    for k in params:
        np.testing.assert_array_equal(got[k], params[k], err_msg=k)
    params["h.1.attn.c_attn.weight"][3, 7] = np.nan
    params["lm_head.weight"][-1, 0] = np.inf
    gpt2_core.save_pretrained(tmp_path / "bad", config, params)
    with pytest.raises(gpt2_core.CheckpointError, match="`h.1.attn.c_attn.weight` contains NaN") as e:
        gpt2_keras.GPT2LMHeadModel.from_pretrained(tmp_path / "bad")
    assert "`lm_head.weight` contains NaN or inf" in str(e.value)


def test_missing_and_misshaped_tensors_are_all_reported():
    config = CONFIGS["base"]
    params = gpt2_core.random_params(config, 0)
    params.pop("h.1.mlp.c_fc.bias")
    params["wpe.weight"] = params["wpe.weight"][:5]
    with pytest.raises(gpt2_core.CheckpointError, match=r"missing tensor `h.1.mlp.c_fc.bias`") as e:
        gpt2_keras.GPT2LMHeadModel.from_params(config, params)
    assert "`wpe.weight` has shape [5, 32]; the model expects [32, 32]" in str(e.value)
