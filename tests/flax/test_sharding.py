"""Sharded equals unsharded, on 8 CPU devices in a subprocess (XLA_FLAGS must be set before JAX
is imported; the rest of the suite keeps one device)."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import os, sys, tempfile
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax
    jax.config.update("jax_default_matmul_precision", "highest")
    import numpy as np
    import gpt2_core
    from gpt2_flax import GPT2LMHeadModel
    from gpt2_flax.sharding import make_mesh, shard_batch
    assert len(jax.devices()) == 8
    cfg = gpt2_core.GPT2Config(vocab_size=96, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    path = tempfile.mkdtemp()
    gpt2_core.save_pretrained(path, cfg, gpt2_core.random_params(cfg, 0))
    mesh = make_mesh(data=2, model=4)
    sharded = GPT2LMHeadModel.from_pretrained(path, mesh=mesh)
    plain = GPT2LMHeadModel.from_pretrained(path)
    attn = sharded.transformer.h[0].attn
    specs = {"c_attn": attn.c_attn.kernel.get_value().sharding.spec,
             "c_proj": attn.c_proj.kernel.get_value().sharding.spec,
             "wte": sharded.transformer.wte.embedding.get_value().sharding.spec}
    print(specs)
    assert specs["c_attn"] == jax.sharding.PartitionSpec(None, "model")
    assert specs["c_proj"] == jax.sharding.PartitionSpec("model", None)
    assert specs["wte"] == jax.sharding.PartitionSpec("model", None)
    assert len(attn.c_attn.kernel.get_value().addressable_shards) == 8
    ids = np.random.default_rng(0).integers(0, 96, (4, 9))
    got = sharded(shard_batch(ids, mesh)).logits
    want = plain(ids).logits
    # the all-reduces of row-sharded c_proj sum partial products in another order: ~1e-6
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(sharded.generate(ids, max_new_tokens=6),
                                  plain.generate(ids, max_new_tokens=6))
    print("SHARDED_OK")
""")


def test_sharded_logits_equal_unsharded():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                            env=env, timeout=300)
    assert "SHARDED_OK" in result.stdout, result.stdout + result.stderr[-3000:]
