"""One subject's run, in its own process: `python -m gpt2_conformance.worker --backend torch ...`.

Runs every selected case the subject supports and writes `<out>/<case>.npz` (tensor path ->
array) plus `<out>/status.json` (case -> "ok" or the error). The parent compares; this process
imports exactly one framework.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

import numpy as np

from gpt2_conformance import cases as C
from gpt2_conformance.adapters import SUBJECT_DTYPES, load_adapter
from gpt2_core import GPT2Config

STATUS = "status.json"


def model_dir(workdir: str, model: str, user_model: str | None) -> str:
    return user_model if model == C.USER_MODEL else os.path.join(workdir, "models", model)


def _head(model: str, path: str) -> str:
    specs = C.model_specs()
    return specs[model].head if model in specs else "lm"


def split_inputs(inputs: dict[str, np.ndarray], start: int, end: int) -> dict[str, np.ndarray]:
    """The inputs of tokens [start, end): the mask covers the past too."""
    step = {k: v[:, start:end] for k, v in inputs.items() if k != "attention_mask"}
    if "attention_mask" in inputs:
        step["attention_mask"] = inputs["attention_mask"][:, :end]
    return step


def run_case(adapter, case: C.Case, model, config: GPT2Config | None) -> dict[str, np.ndarray]:
    """The tensors one case asks of one subject."""
    if case.kind == "processor":
        scores, ids = C.processor_inputs()
        return {"scores": np.asarray(adapter.process(case.recipe, scores, ids, case.arg[0]))}
    if case.kind == "tokenizer":
        ids = adapter.tokenize(C.TEXTS[case.recipe])
        return {f"ids.{i}": np.asarray(row, np.int64) for i, row in enumerate(ids)}
    if case.kind == "generation":
        return generation_arrays(adapter, case, model, config)
    if case.kind == "generate":
        prompt = C.make_prompt(config)
        return {"generated": np.asarray(adapter.generate(model, prompt, case.arg[0]), np.int64)}
    inputs = C.make_inputs(config, case.recipe, C.seq_len(case))
    if case.kind == "grads":
        return adapter.grads(model, inputs)
    if case.kind == "forward":
        return adapter.forward(model, inputs, case.outputs)[0]
    if adapter.name == "reference":  # the oracle of incremental decoding: one full forward
        return valid_positions(adapter.forward(model, inputs, case.outputs)[0], inputs)
    return valid_positions(decode_in_steps(adapter, case, model, inputs), inputs)


ERRORS = (ValueError, TypeError)
"""Argument errors every subject must raise alike; `generated.raised` holds which (1-based)."""


class _Collect:
    """A streamer (transformers' protocol) that keeps what it is given."""

    def __init__(self) -> None:
        self.prompt, self.steps, self.ended = None, [], 0

    def put(self, value) -> None:
        value = np.asarray(value)
        if self.prompt is None:
            self.prompt = value
        else:
            self.steps.append(value.reshape(-1))

    def end(self) -> None:
        self.ended += 1


def generation_arrays(adapter, case: C.Case, model, config: GPT2Config) -> dict[str, np.ndarray]:
    """A `generation` case: the subject's `generate(**kwargs)` as tensor paths, or which argument
    error it raised. A streamed case also returns what the streamer received."""
    kwargs = dict(case.arg)
    stream = _Collect() if kwargs.pop("stream", False) else None
    tokenizer = None
    if "stop_strings" in kwargs:
        from gpt2_tokenizer import GPT2Tokenizer

        tokenizer = GPT2Tokenizer.from_pretrained()  # the bundled GPT-2 vocabulary
    prompt = C.make_generation_prompt(config, case.recipe)
    try:
        arrays = adapter.generation(model, prompt, kwargs, tokenizer=tokenizer, streamer=stream,
                                    compiled=case.compiled)
    except ERRORS as e:
        code = next(i for i, cls in enumerate(ERRORS, 1) if isinstance(e, cls))
        return {"generated.raised": np.array([code])}
    if stream is not None:
        arrays["generated.streamed"] = np.concatenate(
            [stream.prompt, np.stack(stream.steps, 1)], 1).astype(np.int64)
        arrays["generated.stream_ended"] = np.array([stream.ended])
    return arrays


def valid_positions(arrays: dict[str, np.ndarray], inputs: dict[str, np.ndarray]
                    ) -> dict[str, np.ndarray]:
    """Keep the non-padding positions only: a padding query sees no key, so its (uniform,
    meaningless) attention spans however many keys the call had, which differs between one
    full call and a prefill plus steps. Logits (B, T, V) -> (N, V); caches (B, nh, S, hs) ->
    (N, nh, hs), N the number of real tokens."""
    if "attention_mask" not in inputs:
        return arrays
    keep = inputs["attention_mask"].astype(bool)
    out = {}
    for path, a in arrays.items():
        out[path] = a[keep] if path == "logits" else a.transpose(0, 2, 1, 3)[keep]
    return out


def decode_in_steps(adapter, case: C.Case, model, inputs: dict[str, np.ndarray]
                    ) -> dict[str, np.ndarray]:
    """Prefill then one token per call (`incremental`), or chunk by chunk (`chunked`), feeding
    back the returned cache. Returns all logits and the final cache."""
    T = inputs["input_ids"].shape[1]
    if case.kind == "incremental":
        bounds = [case.arg[1]] + list(range(case.arg[1] + 1, T + 1))
    else:  # chunked
        bounds = list(np.cumsum(case.arg[1:]))
    start, past, logits, arrays = 0, None, [], {}
    for end in bounds:
        arrays, past = adapter.forward(model, split_inputs(inputs, start, int(end)),
                                       ("logits", "cache"), past)
        logits.append(arrays["logits"])
        start = int(end)
    arrays["logits"] = np.concatenate(logits, axis=1)
    return arrays


def run(backend: str, selected: list[C.Case], workdir: str, out: str, user_model: str | None,
        plant: str | None) -> dict[str, str]:
    adapter = load_adapter(backend)
    if plant:
        from gpt2_conformance.plants import apply

        adapter = apply(adapter, plant)
    os.makedirs(out, exist_ok=True)
    status: dict[str, str] = {}
    models: dict[str, tuple] = {}
    for case in selected:
        if case.kind not in adapter.kinds or case.dtype not in SUBJECT_DTYPES[backend]:
            continue
        try:
            model = config = None
            if case.model:
                key = (case.model, case.dtype)
                if key not in models:
                    path = model_dir(workdir, case.model, user_model)
                    models[key] = (adapter.load(path, _head(case.model, path), case.dtype),
                                   GPT2Config.from_json(path))
                model, config = models[key]
            arrays = run_case(adapter, case, model, config)
            np.savez(os.path.join(out, case.name + ".npz"), **arrays)
            status[case.name] = "ok"
        except Exception as e:  # one broken case must not hide the others
            tb = traceback.format_exc().strip().splitlines()
            status[case.name] = f"error: {type(e).__name__}: {e}".strip()[:2000] + "\n" + "\n".join(tb[-6:])
    with open(os.path.join(out, STATUS), "w", encoding="utf-8") as f:
        json.dump(status, f, indent=1)
    return status


def resave(backend: str, src: str, dst: str, head: str) -> None:
    """Round-trip step: load `src` with the backend and `save_pretrained(dst)`."""
    adapter = load_adapter(backend)
    adapter.save(adapter.load(src, head), dst)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gpt2_conformance.worker")
    ap.add_argument("--backend", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out")
    ap.add_argument("--suites", default="tiny")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only")
    ap.add_argument("--model")
    ap.add_argument("--plant")
    ap.add_argument("--resave", nargs=2, metavar=("SRC", "DST"))
    ap.add_argument("--head", default="lm")
    args = ap.parse_args(argv)
    if args.resave:
        resave(args.backend, args.resave[0], args.resave[1], args.head)
        return 0
    n_pos = GPT2Config.from_json(args.model).n_positions if args.model else None
    selected = C.select(args.suites.split(","), args.quick, n_pos, args.only)
    run(args.backend, selected, args.workdir, args.out, args.model, args.plant)
    return 0


if __name__ == "__main__":
    sys.exit(main())
