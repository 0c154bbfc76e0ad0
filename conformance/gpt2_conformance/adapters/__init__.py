"""One small adapter per subject. Each framework adapter is imported only inside its own worker
process (`python -m gpt2_conformance.worker --backend NAME`), so frameworks never share one."""

from __future__ import annotations

import importlib

# subject -> (adapter module, the import that proves the backend is installed)
SUBJECTS: dict[str, tuple[str, str]] = {
    "reference": ("gpt2_conformance.adapters.reference", "gpt2_core"),
    "numpy": ("gpt2_conformance.adapters.reference", "gpt2_core"),
    "tiktoken": ("gpt2_conformance.adapters.reference", "tiktoken"),
    "torch": ("gpt2_conformance.adapters.torch_backend", "gpt2_torch"),
    "keras": ("gpt2_conformance.adapters.keras_backend", "gpt2_keras"),
    "flax": ("gpt2_conformance.adapters.flax_backend", "gpt2_flax"),
    # transformers' own generate: an oracle for the generation section (cases naming it)
    "transformers": ("gpt2_conformance.adapters.transformers_backend", "transformers"),
}
FRAMEWORKS = ("torch", "keras", "flax")
_MODEL_KINDS = frozenset({"forward", "incremental", "chunked", "generate", "generation", "processor"})
# What each subject answers (case kinds, see `cases.py`); the parent pairs subjects by this.
SUBJECT_KINDS: dict[str, frozenset[str]] = {
    "reference": _MODEL_KINDS | {"tokenizer"},
    "numpy": _MODEL_KINDS,
    "tiktoken": frozenset({"tokenizer"}),
    "torch": _MODEL_KINDS | {"grads"},
    "keras": _MODEL_KINDS | {"grads", "tokenizer"},
    "flax": _MODEL_KINDS | {"grads"},
    "transformers": frozenset({"generation"}),
}

_ALL_DTYPES = frozenset({"float32", "bfloat16", "float16"})
# The case dtypes each subject runs. The reference answers every case in float64 (the oracle);
# the `numpy` stand-in is float32 only (NumPy has no bfloat16).
SUBJECT_DTYPES: dict[str, frozenset[str]] = {
    "reference": _ALL_DTYPES, "numpy": frozenset({"float32"}),
    "tiktoken": frozenset({"float32"}),
    "torch": _ALL_DTYPES, "keras": _ALL_DTYPES, "flax": _ALL_DTYPES,
    "transformers": frozenset({"float32"}),
}


def load_adapter(name: str):
    """Import the adapter of one subject (in a worker process) and return an instance."""
    if name not in SUBJECTS:
        raise ValueError(f"Unknown backend. Received: {name!r}. Expected one of {sorted(SUBJECTS)}.")
    module = importlib.import_module(SUBJECTS[name][0])
    return module.make_adapter(name)
