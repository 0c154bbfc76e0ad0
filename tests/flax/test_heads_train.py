"""Every head against transformers, and a training step whose loss and gradients equal torch
autograd's on the same batch."""

import numpy as np
import pytest
from conftest import CONFIGS, checkpoint, random_ids

import gpt2_flax
from gpt2_flax.training import loss_and_grads, make_optimizer, train_step

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ATOL = 1e-4  # two float32 implementations, each ~1e-6 from the float64 reference

CFG = CONFIGS["flags"].replace(num_labels=3, pad_token_id=0, summary_activation="tanh")


def load_both(tmp_path, name, head, config=CFG):
    path, _ = checkpoint(tmp_path, config, head=head)
    hf = getattr(transformers, name).from_pretrained(path, attn_implementation="eager").eval()
    return getattr(gpt2_flax, name).from_pretrained(path), hf


def t(x):
    return torch.tensor(np.asarray(x))


def test_sequence_classification(tmp_path):
    model, hf = load_both(tmp_path, "GPT2ForSequenceClassification", "sequence_classification")
    ids = random_ids(CFG, (3, 6), low=1)
    ids[1, -2:] = 0  # right padding: pooled at the last non-pad token
    labels = np.array([0, 2, 1])
    with torch.no_grad():
        want = hf(t(ids), labels=t(labels))
    got = model(ids, labels=labels)
    np.testing.assert_allclose(got.logits, want.logits.numpy(), atol=ATOL, rtol=0)
    assert float(got.loss) == pytest.approx(float(want.loss), abs=1e-5)


def test_token_classification_and_qa(tmp_path):
    model, hf = load_both(tmp_path / "tok", "GPT2ForTokenClassification", "token_classification")
    ids = random_ids(CFG, (2, 6))
    labels = np.array([[0, 1, 2, -100, 1, 0], [2, 2, 1, 0, -100, 1]])
    with torch.no_grad():
        want = hf(t(ids), labels=t(labels))
    got = model(ids, labels=labels)
    np.testing.assert_allclose(got.logits, want.logits.numpy(), atol=ATOL, rtol=0)
    assert float(got.loss) == pytest.approx(float(want.loss), abs=1e-5)
    model, hf = load_both(tmp_path / "qa", "GPT2ForQuestionAnswering", "question_answering")
    start, end = np.array([1, 9]), np.array([3, 4])  # 9 is outside the input: ignored
    with torch.no_grad():
        want = hf(t(ids), start_positions=t(start), end_positions=t(end))
    got = model(ids, start_positions=start, end_positions=end)
    np.testing.assert_allclose(got.start_logits, want.start_logits.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(got.end_logits, want.end_logits.numpy(), atol=ATOL, rtol=0)
    assert float(got.loss) == pytest.approx(float(want.loss), abs=1e-5)


def test_double_heads(tmp_path):
    # transformers' double-heads model forces num_labels=1 (one score per choice)
    model, hf = load_both(tmp_path, "GPT2DoubleHeadsModel", "double_heads",
                          CFG.replace(num_labels=1))
    ids = random_ids(CFG, (2, 3, 5))
    mc_ids = np.array([[4, 2, 3], [1, 4, 0]])
    mc_labels = np.array([2, 0])
    with torch.no_grad():
        want = hf(t(ids), mc_token_ids=t(mc_ids), labels=t(ids), mc_labels=t(mc_labels))
    got = model(ids, mc_token_ids=mc_ids, labels=ids, mc_labels=mc_labels)
    np.testing.assert_allclose(got.logits, want.logits.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(got.mc_logits, want.mc_logits.numpy(), atol=ATOL, rtol=0)
    assert float(got.loss) == pytest.approx(float(want.loss), abs=1e-5)
    assert float(got.mc_loss) == pytest.approx(float(want.mc_loss), abs=1e-5)
    # hidden states keep the choices axis, like the logits (and the torch and Keras backends)
    hidden = model(ids, mc_token_ids=mc_ids, output_hidden_states=True).hidden_states
    with torch.no_grad():
        want_last = hf(t(ids), mc_token_ids=t(mc_ids), output_hidden_states=True).hidden_states[-1]
    assert len(hidden) == CFG.n_layer + 1 and hidden[-1].shape == (2, 3, 5, CFG.n_embd)
    np.testing.assert_allclose(hidden[-1], want_last.numpy().reshape(2, 3, 5, -1), atol=ATOL, rtol=0)


def test_sequence_classification_without_pad_id_rejects_batches():
    model = gpt2_flax.GPT2ForSequenceClassification(CFG.replace(pad_token_id=None))
    with pytest.raises(ValueError, match="needs `config.pad_token_id`"):
        model(np.zeros((2, 3), np.int32))


def test_loss_and_gradients_match_torch_autograd(tmp_path):
    config = CONFIGS["untied_upcast"]
    path, _ = checkpoint(tmp_path, config)
    model = gpt2_flax.GPT2LMHeadModel.from_pretrained(path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager").eval()
    ids = random_ids(config, (2, 7), seed=9)
    labels = ids.copy()
    labels[1, :2] = -100
    loss, grads = loss_and_grads(model, ids, labels)
    want = hf(t(ids), labels=t(labels))
    want.loss.backward()
    assert float(loss) == pytest.approx(float(want.loss), abs=1e-5)
    # map NNX gradients to canonical names with the same table as the weights
    grad_model = gpt2_flax.GPT2LMHeadModel(config)
    from flax import nnx
    nnx.update(grad_model, grads)
    got = grad_model.to_params()
    torch_grads = {n.removeprefix("transformer."): p.grad.numpy() for n, p in hf.named_parameters()}
    assert set(got) == set(torch_grads)
    for name, g in got.items():
        # gradients of a float32 loss: relative to each tensor's scale
        np.testing.assert_allclose(g, torch_grads[name], atol=1e-4 * max(1, np.abs(g).max()),
                                   rtol=0, err_msg=name)


def test_train_step_lowers_loss_and_updates_params(tmp_path):
    config = CONFIGS["base"]
    model = gpt2_flax.GPT2LMHeadModel(config)
    optimizer = make_optimizer(model, learning_rate=1e-2, weight_decay=0.0)
    ids = random_ids(config, (2, 8))
    before = model.transformer.h[0].mlp.c_fc.kernel.get_value().copy()
    losses = [float(train_step(model, optimizer, ids, ids)) for _ in range(3)]
    assert losses[-1] < losses[0]
    assert not np.array_equal(before, model.transformer.h[0].mlp.c_fc.kernel.get_value())
