"""`keras.distribution.DataParallel` over 4 logical CPU devices.

Keras 3's distribution API is implemented for the JAX backend only (its TensorFlow module is a
DTensor prototype marked "DO NOT USE"), so this runs the fit in a JAX-backend subprocess with 4
host devices. It lives with the TensorFlow-session tests because the preprocessing is tf.data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = """
import json
import keras, numpy as np, tensorflow as tf
import gpt2_core
from gpt2_keras import GPT2CausalLM, GPT2CausalLMPreprocessor, GPT2LMHeadModel
devices = keras.distribution.list_devices("cpu")
keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
config = gpt2_core.GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=1, n_head=2)
model = GPT2CausalLM(GPT2LMHeadModel.from_params(config, gpt2_core.init_params(config, 0)),
                     GPT2CausalLMPreprocessor(sequence_length=8, eos_token_id=63, pad_token_id=0))
model.compile(optimizer=keras.optimizers.Adam(1e-2))
rows = np.tile(np.arange(1, 9, dtype=np.int32), (32, 1))  # an easy pattern to learn
ds = tf.data.Dataset.from_tensor_slices(rows).batch(8)
before = model.evaluate(ds, return_dict=True, verbose=0)["loss"]
model.fit(ds, epochs=5, verbose=0)
after = model.evaluate(ds, return_dict=True, verbose=0)["loss"]
w = model.backbone.transformer.wte.weight.value
print(json.dumps({"devices": len(devices), "weight_devices": len(w.sharding.device_set),
                  "before": float(before), "after": float(after)}))
"""


def test_data_parallel_fit_on_four_devices_jax_backend():
    env = dict(os.environ, KERAS_BACKEND="jax",
               XLA_FLAGS="--xla_force_host_platform_device_count=4")
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["devices"] == 4 and got["weight_devices"] == 4  # replicated on every device
    assert got["after"] < got["before"] - 1.0, got
