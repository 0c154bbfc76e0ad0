import subprocess
import sys

import pytest

FRAMEWORKS = ("torch", "tensorflow", "jax", "keras", "flax")


@pytest.mark.parametrize("package", ["gpt2_core", "gpt2_tokenizer"])
def test_spec_packages_import_no_framework(package):
    code = (f"import sys, {package}; "
            f"print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
