"""The model handed to the libraries users already run, through the real clients: transformers'
Trainer, pipeline and DataCollatorForLanguageModeling, and peft's LoRA; plus the helpers those
tools call (resize_token_embeddings, num_parameters, ...), each against transformers' own GPT-2
where it has one. Tiny configs: the whole file runs in well under two minutes on two cores."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file
from torch import nn
from torch_testutils import SMALL, hf_model, random_ids, write_checkpoint

from gpt2_core import GPT2Config
from gpt2_tokenizer import GPT2Tokenizer
from gpt2_torch import GPT2LMHeadModel, GPT2Model
from gpt2_torch.linear import Linear

CFG = GPT2Config(vocab_size=64, n_embd=16, n_layer=2, n_head=2, **SMALL)
# GPT-2's vocabulary, tiny otherwise: for the tokenizer and pipeline tests
CFG_VOCAB = GPT2Config(vocab_size=50257, n_embd=16, n_layer=1, n_head=2, n_positions=64,
                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
PROJECTIONS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def _model(config=CFG, seed=0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config)


def _logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.as_tensor(ids)).logits


def _args(out, **kw) -> transformers.TrainingArguments:
    base = dict(output_dir=str(out), per_device_train_batch_size=4, learning_rate=1e-2,
                report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no", seed=0,
                dataloader_num_workers=0)
    return transformers.TrainingArguments(**{**base, **kw})


def _dataset(config=CFG, n=16, T=8):
    ids = torch.as_tensor(random_ids(config, (n, T), seed=1))
    return [{"input_ids": row, "labels": row} for row in ids]


# ---- the projections: nn.Linear holding [out, in], checkpoint layout in the state dict -------
def test_projections_are_linear_and_state_dict_is_transformers(tmp_path):
    write_checkpoint(tmp_path, CFG)
    ours, hf = GPT2LMHeadModel.from_pretrained(tmp_path), hf_model(tmp_path)
    attn = ours.transformer.h[0].attn
    assert isinstance(attn.c_attn, nn.Linear) and attn.c_attn.weight.shape == (48, 16)
    assert attn.c_attn.weight.is_contiguous()
    state = ours.state_dict()
    for name in PROJECTIONS:  # the checkpoint's [in, out], the transpose of the parameter
        key = f"transformer.h.1.{name}"
        torch.testing.assert_close(state[key], hf.state_dict()[key], atol=0, rtol=0)
    # our state dict loads into transformers' GPT-2 and back into ours unchanged
    ids = random_ids(CFG, (2, 6))
    fresh_hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**CFG.to_dict())).eval()
    fresh_hf.load_state_dict(state, strict=False)
    torch.testing.assert_close(_logits(fresh_hf, ids), _logits(ours, ids), atol=1e-5, rtol=1e-5)
    again = _model(seed=5)
    again.load_state_dict(state)
    torch.testing.assert_close(_logits(again.eval(), ids), _logits(ours, ids), atol=0, rtol=0)


def test_wrong_projection_shape_is_named():
    state = _model().state_dict()
    state["transformer.h.0.attn.c_attn.weight"] = state["transformer.h.0.attn.c_attn.weight"].t()
    with pytest.raises(RuntimeError, match=r"h\.0\.attn\.c_attn\.weight.*\[in, out\] = \[16, 48\]"):
        _model().load_state_dict(state)


def test_autocast_bfloat16_like_transformers(tmp_path):
    write_checkpoint(tmp_path, CFG)
    ours, hf = GPT2LMHeadModel.from_pretrained(tmp_path), hf_model(tmp_path, impl="sdpa")
    seen = []
    ours.transformer.h[0].mlp.c_fc.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    ids = random_ids(CFG, (2, 6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = _logits(ours, ids), _logits(hf, ids)
    assert seen == [torch.bfloat16] and a.dtype == b.dtype == torch.bfloat16
    # both in bfloat16 (8 bits of mantissa), summation order differs
    torch.testing.assert_close(a.float(), b.float(), atol=0.05, rtol=0.05)
    assert _logits(ours, ids).dtype == torch.float32  # outside the context: float32 again


# ---- config runtime keys, honoured by the model ----------------------------------------------
def test_runtime_config_keys_are_forward_defaults():
    model = _model()
    ids = torch.as_tensor(random_ids(CFG, (1, 5)))
    model.config.output_hidden_states = True
    model.config.use_cache = False
    out = model(input_ids=ids)
    assert len(out.hidden_states) == CFG.n_layer + 1 and out.past_key_values is None
    model.config.output_attentions = True
    assert len(model(input_ids=ids).attentions) == CFG.n_layer
    model.config.return_dict = False
    assert isinstance(model(input_ids=ids), tuple)
    assert model(input_ids=ids, return_dict=True, output_hidden_states=False).hidden_states is None
    assert model.transformer.config is model.config  # one config object, assigned once
    assert CFG.return_dict and not CFG.output_hidden_states  # the model's own copy changed


# ---- transformers.Trainer --------------------------------------------------------------------
def test_trainer_trains_saves_reloads_and_resumes(tmp_path):
    data = _dataset()
    model = _model()
    trainer = transformers.Trainer(
        model=model, args=_args(tmp_path / "run", max_steps=4, save_strategy="steps",
                                save_steps=2), train_dataset=data)
    trainer.train()
    eval_data = _dataset(n=8)
    rows = torch.stack([d["input_ids"] for d in eval_data])
    with torch.no_grad():  # one evaluation batch of 8: Trainer's eval_loss is our loss
        loss = model.eval()(input_ids=rows, labels=rows).loss.item()
    assert trainer.evaluate(eval_data)["eval_loss"] == pytest.approx(loss, rel=1e-6)
    assert trainer.predict(eval_data).predictions.shape == (8, 8, CFG.vocab_size)  # logits only
    trainer.save_model(tmp_path / "saved")
    state = load_file(tmp_path / "saved" / "model.safetensors")
    assert "lm_head.weight" not in state  # the tied head is `wte`, stored once
    assert state["transformer.h.0.attn.c_attn.weight"].shape == (16, 48)  # checkpoint layout
    model.config.to_json(tmp_path / "saved")  # (Trainer writes no config for a non-transformers model)
    ids = random_ids(CFG, (2, 6))
    expected = _logits(model.eval(), ids)
    torch.testing.assert_close(_logits(GPT2LMHeadModel.from_pretrained(tmp_path / "saved"), ids),
                               expected, atol=0, rtol=0)
    torch.testing.assert_close(_logits(hf_model(tmp_path / "saved"), ids), expected,
                               atol=1e-5, rtol=1e-5)
    # a fresh model resumed from the step-2 checkpoint (weights, optimizer, scheduler, data
    # order) ends where the uninterrupted run ended
    resumed = _model(seed=3)
    transformers.Trainer(model=resumed, args=_args(tmp_path / "resumed", max_steps=4),
                         train_dataset=data).train(
        resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
    for (k, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=k)


def test_trainer_gradient_checkpointing(tmp_path):
    model = _model()
    transformers.Trainer(model=model, args=_args(tmp_path, max_steps=1, gradient_checkpointing=True),
                         train_dataset=_dataset()).train()
    assert model.is_gradient_checkpointing


@pytest.mark.parametrize("kwargs", [None, {"use_reentrant": True}])
def test_gradient_checkpointing_gives_the_same_gradients(kwargs):
    ids = torch.as_tensor(random_ids(CFG, (2, 8)))
    grads = []
    for checkpointed in (False, True):
        model = _model().train()
        if checkpointed:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        model(input_ids=ids, labels=ids).loss.backward()
        grads.append(model.canonical_grads())
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, atol=0, rtol=0, msg=name)


# ---- peft LoRA -------------------------------------------------------------------------------
def test_peft_lora_train_save_reload_merge(tmp_path):
    import peft

    config = peft.LoraConfig(target_modules=["c_attn", "c_proj", "c_fc"], task_type="CAUSAL_LM",
                             r=4, lora_alpha=8, lora_dropout=0.0)
    model = peft.get_peft_model(_model(), config)
    assert model.get_nb_trainable_parameters()[0] == sum(
        4 * (m.in_features + m.out_features) for m in _model().modules() if isinstance(m, Linear))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.as_tensor(random_ids(CFG, (4, 8)))
    for _ in range(3):
        opt.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
    model.eval()
    test_ids = random_ids(CFG, (2, 7), seed=4)
    tuned = _logits(model, test_ids)
    assert (tuned - _logits(_model().eval(), test_ids)).abs().max() > 1e-3  # LoRA moved them
    model.save_pretrained(tmp_path / "adapter")

    reloaded = peft.PeftModel.from_pretrained(_model().eval(), tmp_path / "adapter")
    torch.testing.assert_close(_logits(reloaded, test_ids), tuned, atol=1e-6, rtol=1e-6)
    merged = reloaded.merge_and_unload()
    assert isinstance(merged, GPT2LMHeadModel)
    assert type(merged.transformer.h[0].attn.c_proj) is Linear  # the LoRA wrappers are gone
    torch.testing.assert_close(_logits(merged, test_ids), tuned, atol=1e-5, rtol=1e-5)
    out = model.generate(input_ids=torch.as_tensor(test_ids), max_new_tokens=3, do_sample=False)
    assert torch.equal(out, merged.generate(torch.as_tensor(test_ids), max_new_tokens=3,
                                            do_sample=False))


def test_peft_model_in_trainer_with_reentrant_checkpointing(tmp_path):
    import peft

    model = peft.get_peft_model(_model(), peft.LoraConfig(
        target_modules=["c_attn", "c_proj", "c_fc"], task_type="CAUSAL_LM", r=4))
    lora = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    trainer = transformers.Trainer(
        model=model, train_dataset=_dataset(),
        args=_args(tmp_path, max_steps=2, gradient_checkpointing=True,
                   gradient_checkpointing_kwargs={"use_reentrant": True}))
    trainer.train()  # frozen embeddings: the inputs are made to require grad, as transformers
    moved = [k for k, v in model.named_parameters() if v.requires_grad and "lora_A" in k
             and not torch.equal(v, lora[k])]
    assert len(moved) == 4 * CFG.n_layer
    trainer.save_model(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()


# ---- pipeline("text-generation") --------------------------------------------------------------
def test_pipeline_with_our_model_and_tokenizer_matches_generate():
    tok = GPT2Tokenizer.from_pretrained()
    model = _model(CFG_VOCAB).eval()
    pipe = transformers.pipeline("text-generation", model=model, tokenizer=tok)
    text = pipe("Hello world", max_new_tokens=6, do_sample=False)[0]["generated_text"]
    ids = torch.tensor([tok.encode("Hello world")])
    ours = model.generate(ids, max_new_tokens=6, do_sample=False)
    assert text == tok.decode(ours[0].tolist())
    assert text != "Hello world"


def test_pipeline_from_a_saved_folder_has_the_gpt2_tokenizer(tmp_path, caplog):
    model = _model(CFG_VOCAB).eval()
    model.save_pretrained(tmp_path / "gpt2")  # GPT-2's vocabulary: its tokenizer files come along
    pipe = transformers.pipeline("text-generation", model=str(tmp_path / "gpt2"))
    assert len(pipe.tokenizer) == 50257
    text = pipe("Hello world", max_new_tokens=6, do_sample=False)[0]["generated_text"]
    tok = GPT2Tokenizer.from_pretrained()
    ours = model.generate(torch.tensor([tok.encode("Hello world")]), max_new_tokens=6,
                          do_sample=False)
    assert text == tok.decode(ours[0].tolist())
    # another vocabulary: no tokenizer guessed, a warning says to pass one
    with caplog.at_level(logging.WARNING, logger="gpt2_torch.loading"):
        _model().save_pretrained(tmp_path / "small")
    assert "Pass `tokenizer=`" in caplog.text
    assert not (tmp_path / "small" / "vocab.json").exists()


def test_save_pretrained_writes_the_tokenizer_given(tmp_path):
    tok = GPT2Tokenizer.from_pretrained()
    model = _model(CFG_VOCAB)
    model.save_pretrained(tmp_path, tokenizer=tok)
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert theirs("Hello world")["input_ids"] == [15496, 995]
    with pytest.raises(TypeError, match="tokenizer.*save_pretrained"):
        model.save_pretrained(tmp_path / "x", tokenizer=object())


# ---- DataCollatorForLanguageModeling with our tokenizer, in Trainer --------------------------
def test_collator_with_our_tokenizer_feeds_trainer(tmp_path):
    tok = GPT2Tokenizer.from_pretrained()
    tok.pad_token = tok.eos_token
    texts = ["Hello world", "A longer sentence, with punctuation!", "short", "GPT-2 in torch"] * 2
    data = [tok(t) for t in texts]
    collator = transformers.DataCollatorForLanguageModeling(tokenizer=tok, mlm=False)
    batch = collator(data[:3])
    lengths = [len(d["input_ids"]) for d in data[:3]]
    assert batch["input_ids"].shape == (3, max(lengths))
    assert (batch["labels"][2, lengths[2]:] == -100).all()
    model = _model(CFG_VOCAB)
    before = model.transformer.h[0].attn.c_attn.weight.detach().clone()
    result = transformers.Trainer(model=model, args=_args(tmp_path, max_steps=2),
                                  train_dataset=data, data_collator=collator).train()
    assert np.isfinite(result.training_loss)
    assert not torch.equal(before, model.transformer.h[0].attn.c_attn.weight)


# ---- model helpers ---------------------------------------------------------------------------
def test_resize_token_embeddings_like_transformers(tmp_path):
    write_checkpoint(tmp_path, CFG)
    ours, hf = GPT2LMHeadModel.from_pretrained(tmp_path), hf_model(tmp_path)
    torch.manual_seed(11)
    ours.resize_token_embeddings(70)
    torch.manual_seed(11)
    hf.resize_token_embeddings(70)
    a, b = ours.get_input_embeddings().weight, hf.get_input_embeddings().weight
    torch.testing.assert_close(a[:64], b[:64], atol=0, rtol=0)
    # New rows: drawn around the old rows' mean with 1e-9 of their covariance, as transformers
    # does (its draws come after other RNG use, so the rows agree to the spread, ~1e-6 * 0.02);
    # an N(0, 0.02) or zero init would be off by ~1e-2.
    torch.testing.assert_close(a[64:], b[64:], atol=1e-4, rtol=0)
    assert not torch.equal(a[64], a[65])
    assert ours.config.vocab_size == 70 and ours.lm_weight is ours.transformer.wte.weight
    assert ours.get_output_embeddings().weight is ours.lm_weight
    assert _logits(ours, [[69, 3]]).shape == (1, 2, 70)
    assert ours.resize_token_embeddings(None, pad_to_multiple_of=32).num_embeddings == 96
    untied = GPT2LMHeadModel(CFG.replace(tie_word_embeddings=False))
    untied.resize_token_embeddings(66, mean_resizing=False)
    assert untied.lm_head.weight.shape == (66, 16) and untied.config.vocab_size == 66


def test_resize_after_adding_tokens():
    tok = GPT2Tokenizer.from_pretrained()
    tok.add_tokens(["<new_1>", "<new_2>"])
    model = _model(CFG_VOCAB)
    model.resize_token_embeddings(len(tok))
    ids = tok.encode("x <new_2>")
    assert ids[-1] == 50258 and _logits(model, [ids]).shape[-1] == 50259


def test_embedding_accessors_and_parameter_counts():
    model = _model()
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**CFG.to_dict()))
    for kw in ({}, {"exclude_embeddings": True}, {"only_trainable": True}):
        assert model.num_parameters(**kw) == hf.num_parameters(**kw), kw
    model.transformer.wpe.weight.requires_grad_(False)
    assert model.num_parameters(only_trainable=True) == model.num_parameters() - 32 * 16
    new = nn.Embedding(64, 16)
    model.set_input_embeddings(new)
    assert model.get_input_embeddings() is new and model.lm_weight is new.weight
    with pytest.raises(ValueError, match="n_embd=16"):
        model.set_input_embeddings(nn.Embedding(64, 8))
    assert GPT2Model(CFG).get_output_embeddings() is None


def test_transformers_config_from_config_and_dtypes(tmp_path):
    hf_config = transformers.GPT2Config(vocab_size=64, n_embd=16, n_layer=2, n_head=2,
                                        n_positions=32)
    model = GPT2LMHeadModel.from_config(hf_config)
    assert isinstance(model.config, GPT2Config) and model.config.n_layer == 2
    assert GPT2Model(hf_config).config.vocab_size == 64
    with pytest.raises(TypeError, match="to_dict"):
        GPT2LMHeadModel(object())
    write_checkpoint(tmp_path, CFG, dtype="bfloat16")
    assert GPT2LMHeadModel.from_pretrained(tmp_path, torch_dtype="auto").dtype == torch.bfloat16
    assert GPT2LMHeadModel.from_pretrained(tmp_path, dtype=torch.float32).dtype == torch.float32
    assert GPT2LMHeadModel.from_pretrained(tmp_path, dtype="auto").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="give one"):
        GPT2LMHeadModel.from_pretrained(tmp_path, dtype="float32", torch_dtype="bfloat16")


def test_import_loads_neither_transformers_nor_peft():
    code = ("import sys, gpt2_torch; bad = [m for m in ('transformers', 'peft') if m in sys.modules];"
            " print(json.dumps(bad))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True,
                         text=True, check=True)
    assert json.loads(out.stdout) == []
