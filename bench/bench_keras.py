"""gpt2_keras vs KerasHub's GPT-2, side by side in one process, TensorFlow Keras backend.

GPT-2 small (124M) with the same random weights (`gpt2_core.random_params`) copied into both;
one forward pass's logits are compared first, then greedy tokens. Measures greedy decode
(32-token prompt) at batch 1 and 8, XLA prefill and forward (1 x 128) and `fit` tokens/s (batch
4 x 256, AdamW), timing the two libraries in turn (best of N) and printing ratios. Then the
peak memory of loading GPT-2 small from disk (`from_pretrained` of a Hugging Face checkpoint;
KerasHub's `from_preset` of its own preset), each in a fresh process, as a multiple of the
weight bytes.

    KERAS_BACKEND=tensorflow python bench/bench_keras.py [--quick] [--load-only]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import gpt2_core  # noqa: E402
from gpt2_core import GPT2Config  # noqa: E402
from gpt2_keras import GPT2CausalLM, GPT2LMHeadModel  # noqa: E402
from gpt2_keras.transformer import empty_cache  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _results import emit, load_rss  # noqa: E402


def hub_model(config: GPT2Config, params) -> keras_hub.models.GPT2CausalLM:
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=config.vocab_size, num_layers=config.n_layer, num_heads=config.n_head,
        hidden_dim=config.n_embd, intermediate_dim=config.inner_dim,
        max_sequence_length=config.n_positions, dropout=0.0)
    C = config.n_embd
    backbone.token_embedding.embeddings.assign(params["wte.weight"])
    backbone.position_embedding.position_embeddings.assign(params["wpe.weight"])
    for i, layer in enumerate(backbone.transformer_layers):
        p = f"h.{i}."
        attn = layer._self_attention_layer
        w, b = params[p + "attn.c_attn.weight"], params[p + "attn.c_attn.bias"]
        for j, dense in enumerate((attn.query_dense, attn.key_dense, attn.value_dense)):
            dense.kernel.assign(w[:, j * C:(j + 1) * C].reshape(dense.kernel.shape))
            dense.bias.assign(b[j * C:(j + 1) * C].reshape(dense.bias.shape))
        out = attn.output_dense
        out.kernel.assign(params[p + "attn.c_proj.weight"].reshape(out.kernel.shape))
        attn.output_dense.bias.assign(params[p + "attn.c_proj.bias"])
        for norm, name in ((layer._self_attention_layer_norm, "ln_1"),
                           (layer._feedforward_layer_norm, "ln_2")):
            norm.gamma.assign(params[p + name + ".weight"])
            norm.beta.assign(params[p + name + ".bias"])
        layer._feedforward_intermediate_dense.kernel.assign(params[p + "mlp.c_fc.weight"])
        layer._feedforward_intermediate_dense.bias.assign(params[p + "mlp.c_fc.bias"])
        layer._feedforward_output_dense.kernel.assign(params[p + "mlp.c_proj.weight"])
        layer._feedforward_output_dense.bias.assign(params[p + "mlp.c_proj.bias"])
    backbone.layer_norm.gamma.assign(params["ln_f.weight"])
    backbone.layer_norm.beta.assign(params["ln_f.bias"])
    model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    model.compile(sampler="greedy")  # KerasHub's default sampler is top-k sampling
    return model


def best_of(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Interleaved timing (ours, theirs, ours, ...) after one warm-up call each, so load on a
    shared machine hits both alike; returns the best time and the last output per name."""
    outs = {name: fn() for name, fn in fns.items()}  # compile / warm up
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            outs[name] = fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best, outs


def check_logits(ours, hub, config: GPT2Config) -> float:
    """Max |diff| of one forward pass's logits: proves the weight copy before any timing."""
    ids = np.random.default_rng(1).integers(0, config.vocab_size, (2, 16)).astype(np.int32)
    a = ours(input_ids=ids).logits.numpy()
    b = hub({"token_ids": ids, "padding_mask": np.ones_like(ids, bool)}).numpy()
    return float(np.abs(a - b).max() / np.abs(b).max())


def bench_decode(ours, hub, B: int, P: int, N: int, repeats: int):
    ids = np.random.default_rng(B).integers(0, 50000, (B, P)).astype(np.int32)

    def run_ours():
        return ours.generate(ids, max_new_tokens=N, eos_token_id=[])

    def run_hub():
        token_ids = np.zeros((B, P + N), np.int32)
        token_ids[:, :P] = ids
        mask = np.zeros((B, P + N), bool)
        mask[:, :P] = True
        return hub.generate({"token_ids": token_ids, "padding_mask": mask}, stop_token_ids=None)

    t, out = best_of({"ours": run_ours, "hub": run_hub}, repeats)
    same = float(np.mean(np.asarray(out["ours"])[:, P:] == np.asarray(out["hub"]["token_ids"])[:, P:]))
    return B * N / t["ours"], B * N / t["hub"], same


def bench_forward(ours, hub, T: int, repeats: int):
    """One XLA forward pass with logits at every position (what `predict` does)."""
    ids = np.random.default_rng(0).integers(0, 50000, (1, T)).astype(np.int32)
    ours_fn = tf.function(lambda x: ours({"input_ids": x}, use_cache=False)["logits"], jit_compile=True)
    hub_fn = tf.function(lambda x: hub({"token_ids": x, "padding_mask": tf.ones_like(x, tf.bool)}),
                         jit_compile=True)
    t, _ = best_of({"ours": lambda: ours_fn(ids).numpy(), "hub": lambda: hub_fn(ids).numpy()},
                   repeats)
    return T / t["ours"], T / t["hub"]


def bench_prefill(ours, hub, T: int, repeats: int):
    """Generation's prefill as each library's generate does it, XLA-compiled: the prompt fills
    the KV cache and only the last position's logits are computed."""
    ids = np.random.default_rng(0).integers(0, 50000, (1, T)).astype(np.int32)
    c = ours.config

    @tf.function(jit_compile=True)
    def ours_fn(x):
        cache = empty_cache(c, 1, T, "float32")
        out = ours.transformer(x, attention_mask=tf.ones_like(x), cache=cache, cache_index=0)
        return ours.lm_logits(out["last_hidden_state"][:, -1]), out["past_key_values"]

    @tf.function(jit_compile=True)
    def hub_fn(x):
        hidden, cache = hub._build_cache(x)  # KerasHub's generate prefill
        return hub.backbone.token_embedding(hidden[:, -1], reverse=True), cache

    t, _ = best_of({"ours": lambda: ours_fn(ids)[0].numpy(), "hub": lambda: hub_fn(ids)[0].numpy()},
                   repeats)
    return T / t["ours"], T / t["hub"]


def bench_fit(config, params, steps: int, B: int = 4, T: int = 256):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50000, (B * (steps + 1), T + 1)).astype(np.int32)
    x, y, w = ids[:, :-1], ids[:, 1:], np.ones((len(ids), T), np.float32)
    ours = GPT2CausalLM(GPT2LMHeadModel.from_params(config.replace(resid_pdrop=0.0, embd_pdrop=0.0,
                                                                   attn_pdrop=0.0), params))
    ours.compile(optimizer=keras.optimizers.AdamW(1e-5))
    hub = hub_model(config, params)
    hub.compile(optimizer=keras.optimizers.AdamW(1e-5),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    runs = []
    for model, xs in ((ours, {"input_ids": x, "attention_mask": np.ones_like(x)}),
                      (hub, {"token_ids": x, "padding_mask": np.ones_like(x, bool)})):
        first = {k: v[:B] for k, v in xs.items()}
        model.fit(first, y[:B], sample_weight=w[:B], batch_size=B, verbose=0)  # compile
        runs.append((model, xs))
    best = [float("inf")] * 2
    for step in range(1, steps + 1):  # one step each in turn, best step time
        sl = slice(step * B, (step + 1) * B)
        for i, (model, xs) in enumerate(runs):
            start = time.perf_counter()
            model.fit({k: v[sl] for k, v in xs.items()}, y[sl], sample_weight=w[sl],
                      batch_size=B, verbose=0)
            best[i] = min(best[i], time.perf_counter() - start)
    return [B * T / t for t in best]


LOAD_SNIPPET = """
import json, math, os, sys
import numpy as np
os.environ["KERAS_BACKEND"] = "tensorflow"
import keras, tensorflow as tf
which, path = sys.argv[1], sys.argv[2]
if which == 'ours':
    from gpt2_keras import GPT2LMHeadModel
    load = GPT2LMHeadModel.from_pretrained
else:
    import keras_hub
    load = keras_hub.models.GPT2Backbone.from_preset
base = peak_kb()  # after imports: measure loading only
m = load(path)
nbytes = sum(math.prod(w.shape) * np.dtype(w.dtype).itemsize for w in m.weights)  # no copies
print(json.dumps({'peak_kb': peak_kb() - base, 'weights': nbytes}))
"""



def load_rows(config: GPT2Config, params, hub) -> list[tuple[str, float, float, float]]:
    with tempfile.TemporaryDirectory() as ckpt, tempfile.TemporaryDirectory() as preset:
        gpt2_core.save_pretrained(ckpt, config, params)
        hub.backbone.save_to_preset(preset)
        ours, weights = load_rss(LOAD_SNIPPET, ckpt, "ours")
        theirs, _ = load_rss(LOAD_SNIPPET, preset, "hub")
    print(f"load peak RSS / weight bytes ({weights / 2**20:.0f} MiB): gpt2_keras {ours:.2f}, "
          f"keras_hub {theirs:.2f} (target < 1.3)")
    return [("load peak RSS / weight bytes", ours, theirs, 1.0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer tokens and steps")
    parser.add_argument("--skip-fit", action="store_true", help="generation and prefill only")
    parser.add_argument("--load-only", action="store_true", help="only the load-memory row")
    args = parser.parse_args()
    N = 32 if args.quick else 128
    repeats = 2 if args.quick else 3
    config = GPT2Config.from_preset("gpt2")
    # Weights of scale 0.1 in every tensor: far from GPT-2's 0.02 init, whose nearly flat
    # logits make float32 rounding flip greedy argmaxes between two correct implementations.
    params = gpt2_core.random_params(config, seed=0, scale=0.1)
    ours = GPT2LMHeadModel.from_params(config, params)
    hub = hub_model(config, params)
    emit("keras: loading GPT-2 small, TensorFlow backend", "gpt2_keras", "keras_hub",
         load_rows(config, params, hub), higher_is_better=False,
         notes="peak RSS increase of from_pretrained (ours) / from_preset (KerasHub's backbone) in "
               "a fresh process, as a multiple of the weight bytes; target: gpt2_keras < 1.3")
    if args.load_only:
        return
    print(f"one forward pass, max |logits diff| / max |logits|: {check_logits(ours, hub, config):.2e}")
    rows = []
    for B in (1, 8):
        o, h, same = bench_decode(ours, hub, B, 32, N, repeats)
        rows.append((f"greedy decode B={B} (new tok/s)", o, h, 3.0 if B == 8 else 2.0,
                     f"same tokens {same:.0%}"))
    o, h = bench_prefill(ours, hub, 128, 3 if args.quick else 5)
    rows.append(("prefill 1x128 XLA (tok/s)", o, h, 1.2, "cache + next-token logits"))
    o, h = bench_forward(ours, hub, 128, 3 if args.quick else 5)
    rows.append(("forward 1x128 XLA (tok/s)", o, h, 1.0, "logits at every position"))
    if not args.skip_fit:
        o, h = bench_fit(config, params, steps=2 if args.quick else 4)
        rows.append(("fit 4x256 AdamW (tok/s)", o, h, 1.3, "best step"))
    print(f"\n{'measure':34s} {'gpt2_keras':>11s} {'keras_hub':>10s} {'ratio':>7s} {'target':>7s}")
    for name, o, h, target, note in rows:
        print(f"{name:34s} {o:11.1f} {h:10.1f} {o / h:7.2f} {target:6.1f}x  {note}")

    emit("keras: GPT-2 small, TensorFlow backend, XLA, CPU float32", "gpt2_keras", "keras_hub",
         [(name, o, h, target) for name, o, h, target, _ in rows])


if __name__ == "__main__":
    main()
