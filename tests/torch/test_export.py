"""`torch.export`, ONNX (through onnxruntime) and `torch.compile(fullgraph=True)` of
`GPT2LMHeadModel`: dynamic batch and sequence axes, left-padded attention masks, and a prefill
followed by one decode step with `past_key_values` in and out. Eager torch is the oracle (it is
checked against the spec in test_parity.py); every program runs at shapes other than the ones it
was traced with, so a shape fixed during tracing fails here."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch.export import Dim
from torch_testutils import CONFIGS, random_ids, write_checkpoint

from gpt2_torch import GPT2LMHeadModel
from gpt2_torch.modeling import build_mask

CFG = CONFIGS["default"]  # 2 layers, n_positions=32
ATOL = 1e-5       # exported program vs eager: the same float32 kernels, reordered at most
ONNX_ATOL = 1e-4  # onnxruntime's own float32 kernels (MatMul, Softmax, LayerNorm)
# the exported programs serve any batch up to 8 and past + seq up to n_positions
BATCH = Dim("batch", min=1, max=8)
SEQ = Dim("seq", min=1, max=CFG.n_positions - 8)
PAST = Dim("past", min=1, max=CFG.n_positions - 1)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    write_checkpoint(path, CFG, seed=5)
    return GPT2LMHeadModel.from_pretrained(path).eval()


def _batch(B: int, T: int, pads: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and a mask whose row i starts with pads[i] zeros (left padding)."""
    ids = torch.from_numpy(random_ids(CFG, (B, T), seed=seed))
    mask = torch.ones(B, T, dtype=torch.long)
    for i, p in enumerate(pads):
        mask[i, :p] = 0
    return ids, mask


def _step(mask: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The next token (B, 1) and the mask grown by one attended slot (B, S + 1)."""
    ids = torch.from_numpy(random_ids(CFG, (mask.shape[0], 1), seed=seed))
    return ids, torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)


def _close(got, want, atol: float, what: str) -> None:
    got = got.detach().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    want = want.detach().numpy()
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    err = np.abs(got - want)
    assert err.max() <= atol, f"{what}: max |diff| {err.max():.3g} at {np.unravel_index(err.argmax(), err.shape)}"


def _flat(past) -> list[torch.Tensor]:
    return [t for kv in past for t in kv]


def _past_dims() -> tuple:
    return tuple(({0: BATCH, 2: PAST}, {0: BATCH, 2: PAST}) for _ in range(CFG.n_layer))


# (B, T, left pads per row) of the runs; neither equals the trace's (2, 6)
SHAPES = [(3, 5, [2, 0, 4]), (1, 11, [0])]


@pytest.fixture(scope="module")
def programs(model):
    """torch.export programs: the prefill (ids + mask -> logits, presents) and one decode step
    (next id + grown mask + past -> logits, presents), dynamic batch, sequence and past axes."""
    ids, mask = _batch(2, 6, [3, 0], seed=1)
    prefill = torch.export.export(
        model, (), dict(input_ids=ids, attention_mask=mask, use_cache=True, return_dict=False),
        dynamic_shapes=dict(input_ids={0: BATCH, 1: SEQ}, attention_mask={0: BATCH, 1: SEQ},
                            use_cache=None, return_dict=None))
    past = model(input_ids=ids, attention_mask=mask).past_key_values
    nxt, grown = _step(mask, seed=2)
    decode = torch.export.export(
        model, (), dict(input_ids=nxt, attention_mask=grown, past_key_values=past, use_cache=True,
                        return_dict=False),
        dynamic_shapes=dict(input_ids={0: BATCH}, attention_mask={0: BATCH, 1: PAST + 1},
                            past_key_values=_past_dims(), use_cache=None, return_dict=None))
    return prefill, decode


def test_export_forward_dynamic_batch_and_seq(model):
    ids, mask = _batch(2, 6, [3, 0], seed=1)
    program = torch.export.export(
        model, (), dict(input_ids=ids, attention_mask=mask, use_cache=False, return_dict=False),
        dynamic_shapes=dict(input_ids={0: BATCH, 1: SEQ}, attention_mask={0: BATCH, 1: SEQ},
                            use_cache=None, return_dict=None)).module()
    for B, T, pads in SHAPES:
        ids, mask = _batch(B, T, pads, seed=B)
        (logits,) = program(input_ids=ids, attention_mask=mask, use_cache=False, return_dict=False)
        _close(logits, model(input_ids=ids, attention_mask=mask).logits, ATOL, f"logits {B}x{T}")


def test_export_prefill_then_decode_step(model, programs):
    prefill, decode = (p.module() for p in programs)
    for B, T, pads in SHAPES:
        ids, mask = _batch(B, T, pads, seed=B)
        want = model(input_ids=ids, attention_mask=mask)
        logits, past = prefill(input_ids=ids, attention_mask=mask, use_cache=True, return_dict=False)
        _close(logits, want.logits, ATOL, f"prefill logits {B}x{T}")
        for g, w in zip(_flat(past), _flat(want.past_key_values)):
            _close(g, w, ATOL, f"prefill presents {B}x{T}")
        nxt, grown = _step(mask, seed=B + 10)
        want = model(input_ids=nxt, attention_mask=grown, past_key_values=want.past_key_values)
        logits, presents = decode(input_ids=nxt, attention_mask=grown, past_key_values=past,
                                  use_cache=True, return_dict=False)
        _close(logits, want.logits, ATOL, f"decode logits {B}x{T}")
        for g, w in zip(_flat(presents), _flat(want.past_key_values)):
            assert g.shape[2] == T + 1
            _close(g, w, ATOL, f"decode presents {B}x{T}")


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, *feeds: torch.Tensor) -> list[np.ndarray]:
    names = [i.name for i in session.get_inputs()]
    assert len(names) == len(feeds), names
    return session.run(None, {n: f.detach().numpy() for n, f in zip(names, feeds)})


def test_onnx_forward_in_onnxruntime(model, tmp_path):
    ids, mask = _batch(2, 6, [3, 0], seed=1)
    torch.onnx.export(
        model, (), tmp_path / "gpt2.onnx", dynamo=True,
        kwargs=dict(input_ids=ids, attention_mask=mask, use_cache=False, return_dict=False),
        dynamic_shapes=dict(input_ids={0: BATCH, 1: SEQ}, attention_mask={0: BATCH, 1: SEQ},
                            use_cache=None, return_dict=None),
        input_names=["input_ids", "attention_mask"], output_names=["logits"])
    session = _session(tmp_path / "gpt2.onnx")
    for B, T, pads in SHAPES:
        ids, mask = _batch(B, T, pads, seed=B)
        (logits,) = _run(session, ids, mask)
        _close(logits, model(input_ids=ids, attention_mask=mask).logits, ONNX_ATOL,
               f"onnx logits {B}x{T}")


def test_onnx_prefill_then_decode_step_in_onnxruntime(model, programs, tmp_path):
    sessions = []
    for name, program in zip(("prefill", "decode"), programs):
        torch.onnx.export(program, f=tmp_path / f"{name}.onnx", dynamo=True)
        sessions.append(_session(tmp_path / f"{name}.onnx"))
    prefill, decode = sessions
    for B, T, pads in SHAPES:
        ids, mask = _batch(B, T, pads, seed=B)
        want = model(input_ids=ids, attention_mask=mask)
        logits, *past = _run(prefill, ids, mask)
        _close(logits, want.logits, ONNX_ATOL, f"onnx prefill logits {B}x{T}")
        for g, w in zip(past, _flat(want.past_key_values)):
            _close(g, w, ONNX_ATOL, f"onnx prefill presents {B}x{T}")
        nxt, grown = _step(mask, seed=B + 10)
        want = model(input_ids=nxt, attention_mask=grown, past_key_values=want.past_key_values)
        logits, *presents = _run(decode, nxt, grown, *map(torch.from_numpy, past))
        _close(logits, want.logits, ONNX_ATOL, f"onnx decode logits {B}x{T}")
        for g, w in zip(presents, _flat(want.past_key_values)):
            _close(g, w, ONNX_ATOL, f"onnx decode presents {B}x{T}")


def test_compile_fullgraph_one_graph_for_padded_and_unpadded_batches(model):
    # fullgraph=True raises on any graph break; after the first call, "fail_on_recompile" makes
    # a guard on mask values (padded or not) or on the shapes fail. The eager backend keeps the
    # test fast: graph breaks are found by dynamo's tracing, whatever backend compiles the graph.
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="eager")
    ids, mask = _batch(2, 6, [3, 0], seed=1)
    _close(compiled(input_ids=ids, attention_mask=mask).logits,
           model(input_ids=ids, attention_mask=mask).logits, ATOL, "compiled logits 2x6")
    with torch.compiler.set_stance("fail_on_recompile"):
        for B, T, pads in [(3, 5, [2, 0, 4]), (4, 9, [0, 0, 0, 0])]:
            ids, mask = _batch(B, T, pads, seed=B)
            got = compiled(input_ids=ids, attention_mask=mask)
            want = model(input_ids=ids, attention_mask=mask)
            _close(got.logits, want.logits, ATOL, f"compiled logits {B}x{T}")
    nxt, grown = _step(mask, seed=3)  # a decode step with past: a second graph, no break
    got = compiled(input_ids=nxt, attention_mask=grown, past_key_values=want.past_key_values)
    want = model(input_ids=nxt, attention_mask=grown, past_key_values=want.past_key_values)
    _close(got.logits, want.logits, ATOL, "compiled decode logits")


def test_eager_keeps_the_value_checks_and_the_causal_fast_path(model):
    # the checks skipped while tracing still guard eager calls
    ids, mask = _batch(2, 4, [0, 0], seed=1)
    with pytest.raises(ValueError, match=r"`input_ids` must lie in \[0, vocab_size=97\)"):
        model(input_ids=ids + CFG.vocab_size, attention_mask=mask)
    with pytest.raises(ValueError, match=r"`position_ids` must lie in \[0, n_positions=32\)"):
        model(input_ids=ids, position_ids=torch.full_like(ids, CFG.n_positions))
    # an unpadded eager batch needs no additive mask (SDPA's is_causal); a padded one does
    fast = build_mask(mask, 0, 4, 2, torch.float32, torch.device("cpu"))
    assert fast.bias is None and fast.causal is True
    padded = build_mask(_batch(2, 4, [1, 0], 1)[1], 0, 4, 2, torch.float32, torch.device("cpu"))
    assert padded.bias is not None and padded.causal is False


def test_export_default_call_returns_the_output_record(model, tmp_path):
    ids, mask = _batch(2, 6, [3, 0], seed=1)
    program = torch.export.export(model, (), dict(input_ids=ids, attention_mask=mask),
                                  dynamic_shapes=dict(input_ids={0: BATCH, 1: SEQ},
                                                      attention_mask={0: BATCH, 1: SEQ}))
    path = tmp_path / "program.pt2"
    torch.export.save(program, path)  # the record's serialized name makes save/load round-trip
    ids, mask = _batch(3, 5, [2, 0, 4], seed=3)
    got = torch.export.load(path).module()(input_ids=ids, attention_mask=mask)
    assert type(got).__name__ == "CausalLMOutputWithPast"
    _close(got.logits, model(input_ids=ids, attention_mask=mask).logits, ATOL, "logits")
