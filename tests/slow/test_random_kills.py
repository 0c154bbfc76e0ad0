"""The random-kill loop: a child saves checkpoints over and over and is SIGKILLed at a random
moment; after each kill the folder must load as exactly one complete version. Runs in
`nox -s slow`, outside the default sessions (this folder is in no default session)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from gpt2_core import GPT2Config, load_pretrained, random_params, resolve_model_path

pytestmark = pytest.mark.slow

CONFIG = GPT2Config(vocab_size=97, n_positions=24, n_embd=32, n_layer=2, n_head=4)
KILLS_PER_KIND = int(os.environ.get("GPT2_KILLS", "20"))
VERSIONS = 4

# Saves versions 1, 2, 3, ... of one kind of checkpoint forever, printing each one's number.
CHILD = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    from gpt2_core import GPT2Config, random_params, save_pretrained
    from gpt2_core.cli._train import _Checkpoint
    target, kind = sys.argv[1], sys.argv[2]
    config = GPT2Config(vocab_size=97, n_positions=24, n_embd=32, n_layer=2, n_head=4)
    params = [random_params(config, seed=v) for v in range({versions})]

    class Trainer:
        def __init__(self, v):
            self.v = v
        def params(self):
            return params[self.v]
        def optimizer_state(self):
            return {{"trainer.step": np.asarray(self.v, np.int64),
                     "m": np.full(5000, self.v, np.float32)}}

    v = 1
    while True:
        if kind == "training":
            _Checkpoint(os.path.dirname(target)).save(config, Trainer(v), {{"step": v, "train_loss": [], "val_loss": []}})
        else:
            save_pretrained(target, config, params[v], max_shard_size=3000 if kind == "sharded" else None,
                            extra_files={{"generation_config.json": json.dumps({{"version": v}})}})
        print(v, flush=True)
        v = v % ({versions} - 1) + 1
""").format(versions=VERSIONS)


def _version(params, versions) -> int | None:
    for v, ref in enumerate(versions):
        if set(ref) == set(params) and all(np.array_equal(params[k], ref[k]) for k in ref):
            return v
    return None


def _check(kind: str, target: str, versions) -> str:
    if kind == "training":
        from gpt2_core.cli._train import _Checkpoint

        ckpt = _Checkpoint(os.path.dirname(target))  # OUT/checkpoint
        if not ckpt.exists():
            return "none"
        _, params, optimizer, state = ckpt.load()
        v = _version(params, versions)
        if v != state["step"] or not np.all(optimizer["m"] == v) or int(optimizer["trainer.step"]) != v:
            return "mix"
        return "complete"
    if not os.path.isdir(target) and not any(n.startswith(f".{os.path.basename(target)}.new-")
                                             for n in os.listdir(os.path.dirname(target))):
        return "none"
    _, params = load_pretrained(target)
    v = _version(params, versions)
    with open(os.path.join(resolve_model_path(target), "generation_config.json")) as f:
        gen = json.load(f)
    return "complete" if v is not None and gen["version"] == v else "mix"


@pytest.mark.parametrize("kind", ["single", "sharded", "training"])
def test_random_kills_leave_old_or_new(tmp_path, kind):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    versions = [random_params(CONFIG, seed=v) for v in range(VERSIONS)]
    target = str(tmp_path / "run" / "checkpoint") if kind == "training" else str(tmp_path / "out")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    rng = random.Random(13)
    outcomes: dict[str, int] = {}
    for _ in range(KILLS_PER_KIND):
        child = subprocess.Popen([sys.executable, "-c", CHILD, target, kind], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if rng.random() < 0.8:
            child.stdout.readline()  # most kills land after a first complete save
        time.sleep(rng.uniform(0, 0.05))
        child.send_signal(signal.SIGKILL)
        child.wait()
        parent, name = os.path.split(target)
        if any(n.startswith(f".{name}.") for n in os.listdir(parent)):
            outcomes["killed mid-save"] = outcomes.get("killed mid-save", 0) + 1
        outcome = _check(kind, target, versions)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        assert outcome != "mix", f"{kind}: a kill left a mixed checkpoint ({outcomes})"
    print(f"\n{kind}: {KILLS_PER_KIND} kills -> {outcomes}")
    assert outcomes.get("complete", 0) > 0
