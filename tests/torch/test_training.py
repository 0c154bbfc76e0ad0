"""Training: dropout in train(), gradients equal transformers', gradient checkpointing."""

from __future__ import annotations

import torch
from torch_testutils import CONFIGS, hf_model, random_ids, write_checkpoint

from gpt2_torch import GPT2LMHeadModel
from gpt2_torch.loading import canonical_name


def test_gradients_match_transformers(tmp_path):
    config = CONFIGS["untied_gelu_exact_inner"]
    write_checkpoint(tmp_path, config)
    ours, hf = GPT2LMHeadModel.from_pretrained(tmp_path), hf_model(tmp_path)
    ids = torch.tensor(random_ids(config, (2, 8)))
    ours(ids, labels=ids).loss.backward()
    hf(ids, labels=ids).loss.backward()
    theirs = {canonical_name(n): p.grad for n, p in hf.named_parameters()}
    for name, grad in ours.canonical_grads().items():  # projections transposed to Conv1D's
        # float32 backward through 3 layers; op order differs (SDPA vs eager backward)
        torch.testing.assert_close(grad, theirs[name], atol=1e-4, rtol=1e-3)


def test_left_padded_gradients_are_the_same_on_every_attention_path(tmp_path):
    # Padding queries see no key. The spec *sets* their scores, so no gradient flows through
    # them; SDPA's additive mask must not differ (labels on the pads keep them in the loss).
    config = CONFIGS["scaling_flags_upcast"]
    write_checkpoint(tmp_path, config)
    ids = torch.tensor(random_ids(config, (2, 8)))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    grads = {}
    for impl in ("eager", "sdpa"):
        model = GPT2LMHeadModel.from_pretrained(tmp_path, attn_implementation=impl)
        model(ids, attention_mask=mask, labels=ids).loss.backward()
        grads[impl] = {n: p.grad for n, p in model.named_parameters()}
    for name, g in grads["eager"].items():
        # float32 backward through 3 layers; SDPA and eager differ only in op order
        torch.testing.assert_close(grads["sdpa"][name], g, atol=1e-5, rtol=1e-4, msg=name)


def test_dropout_in_train_and_checkpointing(tmp_path):
    config = CONFIGS["default"].replace(resid_pdrop=0.3, attn_pdrop=0.3, embd_pdrop=0.3)
    write_checkpoint(tmp_path, config)
    model = GPT2LMHeadModel.from_pretrained(tmp_path)
    ids = torch.tensor(random_ids(config, (2, 8)))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, model(ids).logits)  # eval: deterministic
        model.train()
        assert not torch.equal(model(ids).logits, model(ids).logits)  # dropout active
    grads = []
    for ckpt in (False, True):
        model.gradient_checkpointing_enable() if ckpt else model.gradient_checkpointing_disable()
        torch.manual_seed(0)
        model.zero_grad()
        model(ids, labels=ids).loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):  # recomputation replays the same dropout masks
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_finetune_script_reduces_loss():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "bench/finetune_torch.py", "--steps", "25", "--batch", "4",
                          "--block", "32"], capture_output=True, text=True, check=True,
                         cwd=__file__.rsplit("/tests/", 1)[0]).stdout
    assert "(decreased)" in out, out
