"""`inputs_embeds` in every head: embeddings in place of `wte(input_ids)`, as Hugging Face. The
`wte` rows of the ids give the ids' outputs; random embeddings match transformers."""

import jax
import numpy as np
import pytest
from conftest import CONFIGS, checkpoint, random_ids

import gpt2_flax
from gpt2_core import reference

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
# two float32 implementations, each ~1e-6 from the float64 reference (see test_model)
ATOL = 1e-4
CFG = CONFIGS["flags"].replace(num_labels=3, pad_token_id=0)
HEADS = {
    "GPT2Model": "base", "GPT2LMHeadModel": "lm", "GPT2DoubleHeadsModel": "double_heads",
    "GPT2ForSequenceClassification": "sequence_classification",
    "GPT2ForTokenClassification": "token_classification",
    "GPT2ForQuestionAnswering": "question_answering",
}


def arrays(out):
    """The output's array fields by name (cache pairs flattened)."""
    leaves = jax.tree_util.tree_flatten_with_path(out)[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


@pytest.mark.parametrize("name", sorted(HEADS))
def test_wte_rows_as_embeds_give_the_ids_outputs(tmp_path, name):
    path, params = checkpoint(tmp_path, CFG, head=HEADS[name])
    model = getattr(gpt2_flax, name).from_pretrained(path)
    shape = (2, 3, 6) if name == "GPT2DoubleHeadsModel" else (3, 6)
    ids = random_ids(CFG, shape, seed=2, low=1)  # no pad id: every head pools the same token
    mask = np.ones(shape, np.int32)
    mask[0, ..., :2] = 0  # left padding: positions come from the mask on both paths
    embeds = params["wte.weight"][ids]  # (..., T, C)
    want = arrays(model(ids, mask, output_hidden_states=True))
    got = arrays(model(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True))
    assert set(got) == set(want) and len(want) > 2
    for key in want:  # the same gathered rows, then the same compiled ops: equal bits
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_random_embeds_match_transformers(tmp_path):
    path, _ = checkpoint(tmp_path, CFG)
    model = gpt2_flax.GPT2LMHeadModel.from_pretrained(path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager").eval()
    embeds = np.random.default_rng(0).normal(0, 0.5, (3, 7, CFG.n_embd)).astype(np.float32)
    mask = np.ones((3, 7), np.int32)
    mask[1, :3] = 0
    labels = random_ids(CFG, (3, 7), seed=4)
    # transformers uses arange positions; ours derives them from the mask (the spec): pass the
    # spec's to transformers only, so the derivation is checked too
    pos = reference.default_position_ids(mask, 0, 3, 7)
    with torch.no_grad():
        want = hf(inputs_embeds=torch.tensor(embeds), attention_mask=torch.tensor(mask),
                  position_ids=torch.tensor(pos), labels=torch.tensor(labels))
    got = model(inputs_embeds=embeds, attention_mask=mask, labels=labels)
    np.testing.assert_allclose(got.logits, want.logits.numpy(), atol=ATOL, rtol=0)
    assert float(got.loss) == pytest.approx(float(want.loss), abs=1e-5)  # float32 logsumexps
    # traced embeddings (the caller's own jit, e.g. for gradients) take the same path
    traced = jax.jit(lambda e: model(inputs_embeds=e, attention_mask=mask).logits)(embeds)
    np.testing.assert_allclose(traced, got.logits, atol=1e-6, rtol=0)  # same ops, other fusion


def test_embeds_continue_a_cache(tmp_path):
    path, params = checkpoint(tmp_path, CFG)
    model = gpt2_flax.GPT2LMHeadModel.from_pretrained(path)
    ids = random_ids(CFG, (2, 8), seed=6)
    first = model(ids[:, :5])
    second = model(inputs_embeds=params["wte.weight"][ids[:, 5:]],
                   past_key_values=first.past_key_values)
    np.testing.assert_allclose(second.logits, model(ids).logits[:, 5:], atol=ATOL, rtol=0)


@pytest.fixture(scope="module")
def small():
    return gpt2_flax.GPT2LMHeadModel(CONFIGS["base"])


def test_bad_inputs_embeds_rejected(small):
    C = small.config.n_embd
    ids = np.ones((1, 4), np.int32)
    with pytest.raises(ValueError, match="not both"):
        small(ids, inputs_embeds=np.zeros((1, 4, C), np.float32))
    with pytest.raises(ValueError, match="Received neither"):
        small()
    with pytest.raises(ValueError, match=r"shape \(batch, seq, n_embd=32\)\. Received shape \(1, 4, 31\)"):
        small(inputs_embeds=np.zeros((1, 4, C - 1), np.float32))
    with pytest.raises(ValueError, match=r"Received shape \(4, 32\)"):
        small(inputs_embeds=np.zeros((4, C), np.float32))
    with pytest.raises(TypeError, match="`inputs_embeds` must hold floats"):
        small(inputs_embeds=np.zeros((1, 4, C), np.int32))
    with pytest.raises(ValueError, match=r"`attention_mask` must have shape \(batch, past \+ seq\)"):
        small(inputs_embeds=np.zeros((1, 4, C), np.float32), attention_mask=np.ones((1, 5)))
    double = gpt2_flax.GPT2DoubleHeadsModel(CONFIGS["base"])
    with pytest.raises(ValueError, match=r"\(batch, num_choices, seq, n_embd\)"):
        double(inputs_embeds=np.zeros((1, 4, C), np.float32))
