"""gpt2_core: GPT-2 specified once, in NumPy.

The config (Hugging Face `config.json` keys), the weight layout and the checkpoint layouts it
maps, checkpoint IO, a float64 reference forward pass and the sampling rules. Imports no
deep-learning framework; every backend is checked against this package.
"""

from gpt2_core import activations, constants, layout, reference, sampling
from gpt2_core.checkpoint import (
    CheckpointError,
    load_pretrained,
    resolve_model_path,
    save_pretrained,
)
from gpt2_core.config import PRESETS, GPT2Config
from gpt2_core.init import init_params, random_params
from gpt2_core.layout import num_parameters, weight_layout

__all__ = [
    "PRESETS", "CheckpointError", "GPT2Config", "activations", "constants", "init_params",
    "layout", "load_pretrained", "num_parameters", "random_params", "reference",
    "resolve_model_path", "sampling", "save_pretrained", "weight_layout",
]
__version__ = "0.1.0"
