"""The Flax model handed to the libraries JAX users already run, through their own APIs: an
Orbax `CheckpointManager` resuming training (model, optimizer and dropout RNG state) bit-identically
to the uninterrupted run, and `jax.export` with symbolic batch and sequence (plain forward with an
attention mask, prefill plus one decode step with `past_key_values`), serialized and called at
several shapes. `nnx.jit` around `generate` is in test_generate.py."""

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import CONFIGS, random_ids
from flax import nnx
from jax import export

from gpt2_flax import GPT2LMHeadModel
from gpt2_flax.training import make_optimizer, restore_checkpoint, save_checkpoint, train_step

CFG = CONFIGS["base"]  # resid/embd/attn dropout 0.1 (GPT-2's), active after model.train()
# one XLA:CPU float32 program against another (the exported one is compiled for symbolic
# shapes, so its fusions and reduction order may differ): a few ulps of O(1) logits
EXPORT_ATOL = 1e-5


# ---- Orbax: resume training -----------------------------------------------------------------
def batches(n):
    rng = np.random.default_rng(7)
    ids = [rng.integers(0, CFG.vocab_size, (2, 9)) for _ in range(n)]
    return [(x, np.ones_like(x)) for x in ids]


def fresh(dropout_seed):
    """A model and optimizer as a training script builds them; the dropout seed differs between
    runs so that only a restored RNG state can make their dropout masks agree."""
    model = GPT2LMHeadModel(CFG, rngs=nnx.Rngs(params=0, dropout=dropout_seed))
    model.train()
    optimizer = make_optimizer(model, learning_rate=1e-2)
    # placed on the device explicitly, as Orbax places restored arrays: every run then has the
    # same jit signature and shares one compiled train_step
    for obj in (model, optimizer):
        nnx.update(obj, jax.device_put(nnx.state(obj), jax.devices()[0]))
    return model, optimizer


def train(model, optimizer, data):
    for ids, mask in data:
        train_step(model, optimizer, ids, ids, mask)


def leaves(tree):
    """Every leaf as a NumPy array (typed RNG keys as their key data)."""
    def data(x):
        x = x.get_value() if isinstance(x, nnx.Variable) else x
        return np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
                          else x)
    return [data(x) for x in jax.tree.leaves(tree)]


def assert_states_equal(a, b):
    la, lb = leaves(a), leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(x, y)


def test_orbax_resume_equals_the_uninterrupted_run(tmp_path):
    data = batches(5)
    model, optimizer = fresh(dropout_seed=1)
    losses = [float(train_step(model, optimizer, ids, ids, mask)) for ids, mask in data]

    first, first_opt = fresh(dropout_seed=1)
    train(first, first_opt, data[:3])
    options = ocp.CheckpointManagerOptions(max_to_keep=2)
    with ocp.CheckpointManager(tmp_path / "ckpt", options=options) as manager:
        assert save_checkpoint(manager, 3, first, first_opt)
    assert sorted(p.name for p in (tmp_path / "ckpt" / "3").iterdir() if p.is_dir()) == [
        "model", "optimizer"]

    resumed, resumed_opt = fresh(dropout_seed=2)  # fresh objects: other RNG keys, zero moments
    with ocp.CheckpointManager(tmp_path / "ckpt", options=options) as manager:
        assert manager.latest_step() == 3
        assert restore_checkpoint(manager, resumed, resumed_opt) == 3
    assert int(resumed_opt.step.get_value()) == 3
    resumed_losses = [float(train_step(resumed, resumed_opt, ids, ids, mask))
                      for ids, mask in data[3:]]
    assert resumed_losses == losses[3:]
    assert_states_equal(nnx.state(resumed), nnx.state(model))  # params and dropout RNG state
    assert_states_equal(nnx.state(resumed_opt), nnx.state(optimizer))  # step and AdamW moments

    # what this guards against: the model state alone (what save_state keeps) resumed with a
    # fresh optimizer
    weights_only, fresh_opt = fresh(dropout_seed=1)
    nnx.update(weights_only, nnx.state(first))
    train(weights_only, fresh_opt, data[3:])
    got = weights_only.transformer.h[0].attn.c_attn.kernel.get_value()
    assert not np.array_equal(got, model.transformer.h[0].attn.c_attn.kernel.get_value())
    # and dropout is on, so its RNG state matters: another seed, another loss on the same batch
    other, other_opt = fresh(dropout_seed=2)
    (ids, mask), = data[:1]
    assert float(train_step(other, other_opt, ids, ids, mask)) != losses[0]


def test_orbax_restore_picks_a_step_and_refuses_missing_ones(tmp_path, monkeypatch):
    data = batches(2)
    model, optimizer = fresh(dropout_seed=1)
    monkeypatch.chdir(tmp_path)
    with ocp.CheckpointManager("relative") as manager:
        with pytest.raises(ValueError, match="`manager` must be built on an absolute directory"):
            save_checkpoint(manager, 0, model, optimizer)
    assert not (tmp_path / "relative").exists() or not any((tmp_path / "relative").iterdir())
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        with pytest.raises(ValueError, match="`manager` holds no checkpoint to restore"):
            restore_checkpoint(manager, model, optimizer)
        for step, batch in enumerate(data, 1):
            train(model, optimizer, [batch])
            save_checkpoint(manager, step, model, optimizer)
            if step == 1:
                after_one = leaves(nnx.state(model))
        manager.wait_until_finished()
        other, other_opt = fresh(dropout_seed=3)
        assert restore_checkpoint(manager, other, other_opt, step=1) == 1
        for x, y in zip(leaves(nnx.state(other)), after_one):
            np.testing.assert_array_equal(x, y)
        assert int(other_opt.step.get_value()) == 1
        with pytest.raises(ValueError, match=r"`step` must be one of the saved steps \[1, 2\]\. "
                                             r"Received: step=7"):
            restore_checkpoint(manager, other, other_opt, step=7)
        deeper = GPT2LMHeadModel(CFG.replace(n_layer=3))
        with pytest.raises(ValueError, match="The checkpoint at step 2 does not fit `model` and "
                                             "`optimizer`: build them as for the saved run"):
            restore_checkpoint(manager, deeper, make_optimizer(deeper, learning_rate=1e-2))


# ---- jax.export with symbolic batch and sequence ---------------------------------------------
@pytest.fixture(scope="module")
def model():
    return GPT2LMHeadModel(CFG, rngs=nnx.Rngs(params=3, dropout=0))  # eval mode: dropout off


def inputs(B, T, seed):
    ids = random_ids(CFG, (B, T), seed=seed).astype(np.int32)
    mask = np.ones_like(ids)
    mask[0, :2] = 0  # a left-padded row
    return ids, mask


def spec(*shape):
    return jax.ShapeDtypeStruct(shape, jnp.int32)


def test_export_forward_with_symbolic_batch_and_sequence(model):
    b, t = export.symbolic_shape("b, t", constraints=(f"t <= {CFG.n_positions}",))
    exported = export.export(jax.jit(lambda ids, mask: model(ids, mask).logits))(
        spec(b, t), spec(b, t))
    assert str(exported.in_avals[0]) == "int32[b,t]"
    again = export.deserialize(exported.serialize())
    for B, T in [(2, 5), (3, 11)]:
        ids, mask = inputs(B, T, seed=T)
        want = np.asarray(model(ids, mask).logits)
        for fn in (exported, again) if T == 5 else (again,):
            got = np.asarray(fn.call(ids, mask))
            assert got.shape == (B, T, CFG.vocab_size)
            np.testing.assert_allclose(got, want, atol=EXPORT_ATOL, rtol=0)
    # the declared bound travels with the exported function
    with pytest.raises(ValueError, match="symbolic shape constraint t <= 48"):
        exported.call(*inputs(1, CFG.n_positions + 2, seed=0))


def test_export_checks_shapes_symbolically(model):
    forward = jax.jit(lambda ids, mask: model(ids, mask).logits)
    b, t = export.symbolic_shape("b, t")
    with pytest.raises(ValueError, match=r"symbolic \(t\) and cannot be shown to fit the model's "
                                         r"`n_positions`=48.*constraints=\(\"t <= 48\",\)"):
        export.export(forward)(spec(b, t), spec(b, t))
    b, t = export.symbolic_shape("b, t", constraints=("t <= 40",))
    with pytest.raises(ValueError, match=r"`attention_mask` must have shape \(batch, past \+ seq\) "
                                         r"= \(b, t\)\. Received shape \(b, t \+ 1\)"):
        export.export(forward)(spec(b, t), spec(b, t + 1))
    b, p = export.symbolic_shape("b, p", constraints=("p <= 40",))
    kv = jax.ShapeDtypeStruct((b, CFG.n_head, p, CFG.head_dim), jnp.float32)
    short = jax.ShapeDtypeStruct((b, CFG.n_head, p - 1, CFG.head_dim), jnp.float32)
    with pytest.raises(ValueError, match=r"`past_key_values\[1\]` value must have shape \(batch=b, "
                                         r"n_head=4, past=p, head_dim=8\).*Received shape "
                                         r"\(b, 4, p - 1, 8\)"):
        export.export(jax.jit(lambda tok, mask, past: model(tok, mask, past_key_values=past).logits))(
            spec(b, 1), spec(b, p + 1), ((kv, kv), (kv, short)))


def test_export_prefill_and_decode_step_with_past_key_values(model):
    def prefill(ids, mask):
        out = model(ids, mask, use_cache=True)
        return out.logits, out.past_key_values

    def decode(token, mask, past):
        out = model(token, mask, past_key_values=past)
        return out.logits, out.past_key_values

    b, t = export.symbolic_shape("b, t", constraints=(f"t <= {CFG.n_positions}",))
    exported_prefill = export.export(jax.jit(prefill))(spec(b, t), spec(b, t))
    # a separate scope: every symbol must be solvable from each function's own arguments
    b, p = export.symbolic_shape("b, p", constraints=(f"p + 1 <= {CFG.n_positions}",))
    kv = jax.ShapeDtypeStruct((b, CFG.n_head, p, CFG.head_dim), jnp.float32)
    exported_decode = export.export(jax.jit(decode))(spec(b, 1), spec(b, p + 1),
                                                     ((kv, kv),) * CFG.n_layer)
    exported_decode = export.deserialize(exported_decode.serialize())
    assert str(exported_decode.out_avals[1]) == f"float32[b,{CFG.n_head},p + 1,{CFG.head_dim}]"
    for B, T in [(2, 5), (3, 11)]:
        ids, mask = inputs(B, T, seed=T)
        token = random_ids(CFG, (B, 1), seed=T + 1).astype(np.int32)
        mask2 = np.concatenate([mask, np.ones_like(token)], 1)
        logits, past = exported_prefill.call(ids, mask)
        step_logits, past2 = exported_decode.call(token, mask2, past)
        eager = model(ids, mask)
        eager_step = model(token, mask2, past_key_values=eager.past_key_values)
        np.testing.assert_allclose(logits, eager.logits, atol=EXPORT_ATOL, rtol=0)
        np.testing.assert_allclose(step_logits, eager_step.logits, atol=EXPORT_ATOL, rtol=0)
        for (k, v), (wk, wv) in zip(past2, eager_step.past_key_values):
            assert k.shape == (B, CFG.n_head, T + 1, CFG.head_dim)
            np.testing.assert_allclose(k, wk, atol=EXPORT_ATOL, rtol=0)
            np.testing.assert_allclose(v, wv, atol=EXPORT_ATOL, rtol=0)
