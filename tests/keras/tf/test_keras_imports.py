"""`import gpt2_keras` adds no other framework to what Keras itself loads (Keras 3.15 imports
jax on every backend, so the check is relative to `import keras`)."""

import json
import os
import subprocess
import sys

CODE = """
import sys, json
FRAMEWORKS = ('torch', 'jax', 'flax', 'transformers')
import keras
before = {m for m in FRAMEWORKS if m in sys.modules}
import gpt2_keras
print(json.dumps(sorted({m for m in FRAMEWORKS if m in sys.modules} - before)))
"""


def test_import_adds_no_other_framework():
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    res = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []
