"""Every head against transformers, checkpoint layouts, save/load round trips, bad inputs."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers
from torch_testutils import CONFIGS, hf_model, random_ids, write_checkpoint

import gpt2_torch
from gpt2_core import CheckpointError, random_params, save_pretrained
from gpt2_torch import (
    GPT2DoubleHeadsModel,
    GPT2ForQuestionAnswering,
    GPT2ForSequenceClassification,
    GPT2ForTokenClassification,
    GPT2LMHeadModel,
)

ATOL_HF = 2e-5  # float32 vs float32 transformers: op order differs only
CFG = CONFIGS["untied_gelu_exact_inner"].replace(num_labels=3, pad_token_id=0)


def _both(tmp_path, cls, head, config=CFG):
    write_checkpoint(tmp_path, config, head=head, architectures=(cls.__name__,))
    return cls.from_pretrained(tmp_path), hf_model(tmp_path, cls.__name__)


@pytest.mark.parametrize("problem", [None, "regression", "multi_label_classification"])
def test_sequence_classification(tmp_path, problem):
    config = CFG.replace(problem_type=problem, num_labels=1 if problem == "regression" else 3)
    ours, hf = _both(tmp_path, GPT2ForSequenceClassification, "sequence_classification", config)
    ids = random_ids(config, (3, 6)) + 1
    ids[1, 4:] = 0  # right padding with pad_token_id
    ids[2, :2] = 0  # left padding
    if problem is None:
        labels = torch.tensor([0, 2, 1])
    elif problem == "regression":
        labels = torch.tensor([0.5, -1.0, 2.0])
    else:
        labels = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 0]])
    with torch.no_grad():
        o = ours(ids, labels=labels)
        h = hf(torch.tensor(ids), labels=labels)
    np.testing.assert_allclose(o.logits.numpy(), h.logits.numpy(), atol=ATOL_HF)
    np.testing.assert_allclose(float(o.loss), float(h.loss), rtol=1e-5)


def test_sequence_classification_needs_pad_for_batches(tmp_path):
    model, _ = _both(tmp_path, GPT2ForSequenceClassification, "sequence_classification",
                     CFG.replace(pad_token_id=None))
    with pytest.raises(ValueError, match="pad_token_id"):
        model(random_ids(CFG, (2, 4)))


def test_token_classification_and_qa(tmp_path):
    ours, hf = _both(tmp_path / "tok", GPT2ForTokenClassification, "token_classification")
    ids = random_ids(CFG, (2, 6))
    labels = torch.tensor(np.random.default_rng(1).integers(0, 3, (2, 6)))
    labels[0, 0] = -100
    with torch.no_grad():
        o, h = ours(ids, labels=labels), hf(torch.tensor(ids), labels=labels)
    np.testing.assert_allclose(o.logits.numpy(), h.logits.numpy(), atol=ATOL_HF)
    np.testing.assert_allclose(float(o.loss), float(h.loss), rtol=1e-5)
    ours, hf = _both(tmp_path / "qa", GPT2ForQuestionAnswering, "question_answering")
    s, e = torch.tensor([1, 9]), torch.tensor([3, 4])  # 9 is outside: ignored, as transformers
    with torch.no_grad():
        o = ours(ids, start_positions=s, end_positions=e)
        h = hf(torch.tensor(ids), start_positions=s, end_positions=e)
    np.testing.assert_allclose(o.start_logits.numpy(), h.start_logits.numpy(), atol=ATOL_HF)
    np.testing.assert_allclose(o.end_logits.numpy(), h.end_logits.numpy(), atol=ATOL_HF)
    np.testing.assert_allclose(float(o.loss), float(h.loss), rtol=1e-5)


@pytest.mark.parametrize("summary", [dict(), dict(summary_activation="tanh",
                                                   summary_proj_to_labels=False)])
def test_double_heads(tmp_path, summary):  # the seed's default summary_type, cls_index
    config = CONFIGS["default"].replace(num_labels=1, **summary)
    ours, hf = _both(tmp_path, GPT2DoubleHeadsModel, "double_heads", config)
    ids = random_ids(config, (2, 3, 5))
    mc = torch.tensor([[4, 2, 3], [1, 4, 0]])
    mc_labels = torch.tensor([2, 0])
    with torch.no_grad():
        o = ours(ids, mc_token_ids=mc, labels=ids, mc_labels=mc_labels if not summary else None)
        h = hf(torch.tensor(ids), mc_token_ids=mc, labels=torch.tensor(ids),
               mc_labels=mc_labels if not summary else None)
    np.testing.assert_allclose(o.logits.numpy(), h.logits.numpy(), atol=ATOL_HF)
    np.testing.assert_allclose(o.mc_logits.numpy(), h.mc_logits.numpy(), atol=ATOL_HF)
    np.testing.assert_allclose(float(o.loss), float(h.loss), rtol=1e-5)
    if not summary:
        np.testing.assert_allclose(float(o.mc_loss), float(h.mc_loss), rtol=1e-5)


@pytest.mark.parametrize("kw", [dict(layout_name="hub"), dict(max_shard_size=4000),
                                dict(dtype="bfloat16")])
def test_checkpoint_layouts_load(tmp_path, kw):
    config = CONFIGS["default"]
    params = random_params(config, seed=3)
    save_pretrained(tmp_path, config, params, **kw)
    model = GPT2LMHeadModel.from_pretrained(tmp_path)
    state = model.canonical_state()
    want_dtype = torch.float32  # bf16 is widened exactly by gpt2_core
    for name, value in params.items():
        ref = torch.from_numpy(value)
        if kw.get("dtype") == "bfloat16":
            ref = ref.bfloat16().float()
        assert state[name].dtype == want_dtype
        torch.testing.assert_close(state[name], ref, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", ["float16", torch.bfloat16])
def test_torch_dtype_casts_once(tmp_path, dtype):
    write_checkpoint(tmp_path, CONFIGS["default"])
    model = GPT2LMHeadModel.from_pretrained(tmp_path, torch_dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {getattr(torch, str(dtype).split(".")[-1])}
    ref = GPT2LMHeadModel.from_pretrained(tmp_path)
    ids = random_ids(CONFIGS["default"], (1, 6))
    with torch.no_grad():
        lo, lr = model(ids).logits.float(), ref(ids).logits
    # half precision through 2 layers of random weights: errors ~1e-2 of logits ~O(3)
    torch.testing.assert_close(lo, lr, atol=0.15, rtol=0.05)


def test_save_pretrained_loads_in_transformers(tmp_path, checkpoint):
    path, config, _ = checkpoint
    model = GPT2LMHeadModel.from_pretrained(path)
    model.save_pretrained(tmp_path / "out")
    hf = hf_model(tmp_path / "out")
    ids = random_ids(config, (2, 7))
    with torch.no_grad():
        np.testing.assert_allclose(model(ids).logits.numpy(), hf(torch.tensor(ids)).logits.numpy(),
                                   atol=ATOL_HF)


def test_state_dict_keys_are_transformers_keys(tmp_path):
    config = CONFIGS["untied_gelu_exact_inner"]
    ours = GPT2LMHeadModel(config).state_dict()
    theirs = transformers.GPT2LMHeadModel(transformers.GPT2Config(**config.to_dict())).state_dict()
    assert set(ours) == {k for k in theirs if not k.endswith((".attn.bias", ".attn.masked_bias"))}
    for k, v in ours.items():
        assert v.shape == theirs[k].shape, k


def test_missing_head_is_initialised_with_warning(tmp_path, caplog):
    write_checkpoint(tmp_path, CFG)  # LM checkpoint, classifier head absent
    model = GPT2ForTokenClassification.from_pretrained(tmp_path)
    assert "classifier.weight" in caplog.text
    assert torch.isfinite(model.classifier.weight).all() and model.classifier.bias.abs().sum() == 0


def test_checkpoint_errors(tmp_path):
    config = CONFIGS["default"]
    params = random_params(config)
    params["h.0.attn.c_attn.weight"] = params["h.0.attn.c_attn.weight"][:, :10]
    with pytest.raises(CheckpointError):
        save_pretrained(tmp_path, config, params)
    params = random_params(config)
    params["wte.weight"][0, 0] = np.nan
    save_pretrained(tmp_path, config, params)
    with pytest.raises(CheckpointError, match="wte.weight.*NaN"):
        GPT2LMHeadModel.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="huggingface"):
        GPT2LMHeadModel.from_pretrained("surely-not-a-cached-gpt2-name")
    with pytest.raises(ValueError, match="torch_dtype"):
        GPT2LMHeadModel.from_pretrained(tmp_path, torch_dtype="int8")


@pytest.fixture
def lm(tmp_path):
    write_checkpoint(tmp_path, CONFIGS["default"])
    return GPT2LMHeadModel.from_pretrained(tmp_path)


@pytest.mark.parametrize("call, exc, match", [
    (lambda m: m(np.array([[1, 200]])), ValueError, r"vocab_size=97.*\[200\]"),
    (lambda m: m(np.array([[-1, 2]])), ValueError, "out-of-range ids"),
    (lambda m: m(np.zeros((1, 33), int)), ValueError, "n_positions`=32"),
    (lambda m: m(np.zeros((1, 3), int), attention_mask=np.ones((1, 4))), ValueError,
     r"attention_mask.*\(1, 3\)"),
    (lambda m: m(np.zeros((1, 3), np.float32)), TypeError, "must hold integers"),
    (lambda m: m(np.zeros(3, int)), ValueError, r"shape \(batch, seq\)"),
    (lambda m: m(np.zeros((1, 3), int), position_ids=np.array([[0, 1, 40]])), ValueError,
     "position_ids"),
    (lambda m: m(np.zeros((1, 3), int), labels=np.zeros((1, 4), int)), ValueError, "labels"),
    (lambda m: m(), ValueError, "exactly one of `input_ids` and `inputs_embeds`"),
    (lambda m: m(np.zeros((1, 3), int), head_mask=np.ones(3)), ValueError, "head_mask"),
    (lambda m: m.generate(np.zeros((1, 30), int), max_new_tokens=5), ValueError, "n_positions"),
    (lambda m: m.generate(np.zeros((1, 3), int), stop_strings="x"), ValueError, "tokenizer"),
    (lambda m: m.generate(np.zeros((1, 3), int), num_beams=2, num_return_sequences=3),
     ValueError, "num_return_sequences"),
])
def test_bad_inputs(lm, call, exc, match):
    with pytest.raises(exc, match=match):
        call(lm)


def test_past_sequence_too_long(lm):
    with torch.no_grad():
        past = lm(np.zeros((1, 30), int)).past_key_values
        with pytest.raises(ValueError, match="past length 30 \\+ input length 3"):
            lm(np.zeros((1, 3), int), past_key_values=past)


def test_flash_attention_without_package_or_cuda(lm):
    with pytest.raises((ImportError, ValueError), match="flash_attn|CUDA"):
        lm.set_attn_implementation("flash_attention_2")
    with pytest.raises(ValueError, match="attn_implementation"):
        lm.set_attn_implementation("xformers")


def test_import_loads_no_other_framework():
    code = ("import sys, gpt2_torch; bad = [m for m in ('tensorflow', 'jax', 'flax', 'keras') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})
    assert gpt2_torch.__all__


def test_double_heads_mean_summary_is_over_tokens(tmp_path):
    """transformers' 'mean'/'first'/'last' index dim 1 of (B, nc, T, C), i.e. average/pick
    *choices*; ours summarise each choice over its tokens, as documented for the 3-D case."""
    config = CONFIGS["default"].replace(num_labels=1, summary_type="mean")
    write_checkpoint(tmp_path, config, head="double_heads")
    model = GPT2DoubleHeadsModel.from_pretrained(tmp_path)
    ids = random_ids(config, (2, 3, 5))
    with torch.no_grad():
        o = model(ids)
        h = model.transformer(torch.tensor(ids).view(6, 5)).last_hidden_state.view(2, 3, 5, -1)
        want = model.multiple_choice_head.summary(h.mean(2)).squeeze(-1)
    torch.testing.assert_close(o.mc_logits, want)


def test_finite_check_sees_every_chunk():
    from gpt2_torch.loading import _all_finite

    t = torch.zeros(5, 7)
    assert _all_finite(t, chunk=4)
    t[4, 6] = float("inf")  # in the last, partial chunk
    assert not _all_finite(t, chunk=4)
    t[4, 6], t[2, 1] = 0.0, float("nan")
    assert not _all_finite(t, chunk=4)
    assert _all_finite(torch.tensor([1, 2]))  # integer tensors are always finite
