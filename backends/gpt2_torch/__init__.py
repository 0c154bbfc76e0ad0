"""gpt2_torch: GPT-2 in PyTorch, exactly as `gpt2_core` specifies it, with transformers' class
names, arguments and outputs (`GPT2LMHeadModel`, `past_key_values`, `generate`, ...)."""

from gpt2_core.generation_config import GenerationConfig
from gpt2_torch.cache import KVCache
from gpt2_torch.generation import (
    GenerateBeamDecoderOnlyOutput,
    GenerateDecoderOnlyOutput,
    GenerationMixin,
    StreamStep,
)
from gpt2_torch.heads import (
    GPT2DoubleHeadsModel,
    GPT2ForQuestionAnswering,
    GPT2ForSequenceClassification,
    GPT2ForTokenClassification,
    GPT2LMHeadModel,
)
from gpt2_torch.loading import GPT2PreTrainedModel
from gpt2_torch.modeling import MLP, Attention, Block, GPT2Model

__all__ = [
    "MLP", "Attention", "Block", "GPT2DoubleHeadsModel", "GPT2ForQuestionAnswering",
    "GPT2ForSequenceClassification", "GPT2ForTokenClassification", "GPT2LMHeadModel",
    "GPT2Model", "GPT2PreTrainedModel", "GenerateBeamDecoderOnlyOutput", "GenerateDecoderOnlyOutput",
    "GenerationConfig", "GenerationMixin", "KVCache", "StreamStep",
]
