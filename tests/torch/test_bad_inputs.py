"""Bad arguments at gpt2_torch's public boundary: each error names the argument."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gpt2_core import GPT2Config, random_params, reference, save_pretrained  # noqa: E402
from gpt2_torch import (  # noqa: E402
    GPT2DoubleHeadsModel,
    GPT2ForQuestionAnswering,
    GPT2ForSequenceClassification,
    GPT2ForTokenClassification,
    GPT2LMHeadModel,
)

CONFIG = GPT2Config(vocab_size=97, n_positions=24, n_embd=32, n_layer=2, n_head=4)


@pytest.fixture(scope="module")
def model_and_past(tmp_path_factory):
    path = tmp_path_factory.mktemp("m")
    save_pretrained(path, CONFIG, random_params(CONFIG, seed=1))
    model = GPT2LMHeadModel.from_pretrained(path)
    ids = torch.tensor(np.random.default_rng(0).integers(0, 97, (2, 5)))
    with torch.no_grad():
        past = model(ids, use_cache=True).past_key_values
    return model, [(k, v) for k, v in past]


def _call(model, past, T=1):
    with torch.no_grad():
        return model(torch.zeros((2, T), dtype=torch.long), past_key_values=past)


def test_past_key_values_value_length_must_equal_key_length(model_and_past):
    model, past = model_and_past
    bad = list(past)
    bad[1] = (past[1][0], past[1][1][:, :, :3])
    with pytest.raises(ValueError, match=r"`past_key_values\[1\]` value must have shape .*past=5.*"
                       r"Received shape \(2, 4, 3, 8\)"):
        _call(model, bad)


@pytest.mark.parametrize("index,shape", [(0, (1, 4, 5, 8)), (1, (2, 2, 5, 8)), (0, (2, 4, 5, 4))])
def test_past_key_values_batch_heads_head_dim(model_and_past, index, shape):
    model, past = model_and_past
    bad = list(past)
    bad[index] = (torch.zeros(shape), torch.zeros(shape))
    with pytest.raises(ValueError, match=rf"`past_key_values\[{index}\]` key must have shape"):
        _call(model, bad)


def test_past_key_values_layers_and_length(model_and_past):
    model, past = model_and_past
    with pytest.raises(ValueError, match=r"`past_key_values` must hold one \(key, value\) pair per layer"):
        _call(model, past[:1])
    with pytest.raises(ValueError, match=r"longer than the model's `n_positions`=24: past length 5"):
        _call(model, past, T=20)


def test_allow_pickle_is_accepted(tmp_path):
    params = random_params(CONFIG, seed=2)
    torch.save({k: torch.tensor(np.array(v)) for k, v in params.items()}, tmp_path / "pytorch_model.bin")
    CONFIG.to_json(tmp_path / "config.json")
    with pytest.raises(ValueError, match=r"`allow_pickle=True` to `from_pretrained`"):
        GPT2LMHeadModel.from_pretrained(tmp_path)
    model = GPT2LMHeadModel.from_pretrained(tmp_path, allow_pickle=True)
    np.testing.assert_array_equal(model.transformer.wte.weight.detach().numpy(), params["wte.weight"])


def _head(cls):
    torch.manual_seed(0)
    return cls(dataclasses.replace(CONFIG, num_labels=3, pad_token_id=0)).eval()


IDS = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])


@pytest.mark.parametrize("bad", [97, -1, 1000])
def test_labels_outside_vocab_are_refused(model_and_past, bad):
    model, _ = model_and_past
    labels = IDS.clone()
    labels[1, 2] = bad
    with pytest.raises(ValueError, match=rf"`labels` must lie in \[0, vocab_size=97\) or be -100.*"
                       rf"Received out-of-range values \[{bad}\]"):
        model(IDS, labels=labels)


def test_labels_minus_100_and_in_range_keep_their_loss(model_and_past):
    model, _ = model_and_past
    labels = np.array([[5, -100, 96, 0], [-100, 10, 11, -100]])
    with torch.no_grad():
        loss = model(IDS, labels=torch.tensor(labels)).loss
    ref = reference.forward(CONFIG, random_params(CONFIG, seed=1), IDS.numpy(), labels=labels).loss
    np.testing.assert_allclose(float(loss), ref, rtol=1e-5)


def test_labels_check_keeps_torch_compile_working(model_and_past):
    model, _ = model_and_past
    labels = IDS.clone()
    with torch.no_grad():
        eager = model(IDS, labels=labels).loss
        torch._dynamo.reset()
        compiled = torch.compile(model, backend="eager")(IDS, labels=labels).loss
    torch.testing.assert_close(compiled, eager)


def test_double_heads_labels_and_mc_labels_out_of_range():
    model = _head(GPT2DoubleHeadsModel)
    ids = IDS[None].expand(2, 2, 4)  # (B, nc, T)
    with pytest.raises(ValueError, match=r"`labels` must lie in \[0, vocab_size=97\).*\[97\]"):
        model(ids, labels=torch.full((2, 2, 4), 97))
    with pytest.raises(ValueError, match=r"`mc_labels` must lie in \[0, num_choices=2\).*\[2\]"):
        model(ids, mc_labels=torch.tensor([0, 2]))
    with torch.no_grad():  # -100 is skipped, as transformers' CrossEntropyLoss()
        out = model(ids, mc_labels=torch.tensor([1, -100]))
    expected = torch.nn.functional.cross_entropy(out.mc_logits[:1], torch.tensor([1]))
    torch.testing.assert_close(out.mc_loss, expected)


def test_sequence_classification_labels_out_of_range():
    model = _head(GPT2ForSequenceClassification)
    with pytest.raises(ValueError, match=r"`labels` must lie in \[0, num_labels=3\).*\[3\].*num_labels"):
        model(IDS, labels=torch.tensor([0, 3]))
    with torch.no_grad():  # float targets (multi-label) have no range to check
        assert torch.isfinite(model(IDS, labels=torch.tensor([[0.0, 5.0, 1.0]] * 2)).loss)


def test_token_classification_labels_out_of_range():
    model = _head(GPT2ForTokenClassification)
    with pytest.raises(ValueError, match=r"`labels` must lie in \[0, num_labels=3\).*\[-7, 3\]"):
        model(IDS, labels=torch.tensor([[0, 1, 2, 3], [-100, -7, 0, 0]]))
    labels = torch.tensor([[0, 1, 2, -100], [-100, 2, 0, 0]])
    with torch.no_grad():
        out = model(IDS, labels=labels)
    keep = labels != -100
    expected = torch.nn.functional.cross_entropy(out.logits[keep], labels[keep])
    torch.testing.assert_close(out.loss, expected)


def test_question_answering_positions_outside_input_are_ignored_as_transformers():
    model = _head(GPT2ForQuestionAnswering)
    with torch.no_grad():
        out = model(IDS, start_positions=torch.tensor([1, 50]), end_positions=torch.tensor([2, 50]))
    ce = torch.nn.functional.cross_entropy
    expected = (ce(out.start_logits[:1], torch.tensor([1])) + ce(out.end_logits[:1], torch.tensor([2]))) / 2
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize("bad,match", [
    (lambda past: 5, r"`past_key_values` must be a sequence of per-layer \(key, value\) pairs"),
    (lambda past: [past[0], (past[1][0],)], r"`past_key_values\[1\]` must be a \(key, value\) pair"),
])
def test_past_key_values_structure(model_and_past, bad, match):
    model, past = model_and_past
    with pytest.raises(ValueError, match=match):
        _call(model, bad(past))
