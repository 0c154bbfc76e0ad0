"""gpt2_flax: GPT-2 in Flax NNX, exact against `gpt2_core`, with a fully compiled `generate`.

    >>> from gpt2_flax import GPT2LMHeadModel
    >>> model = GPT2LMHeadModel.from_pretrained(path)          # doctest: +SKIP
    >>> out = model(input_ids=ids, attention_mask=mask, labels=ids)  # doctest: +SKIP
    >>> model.generate(ids, do_sample=True, temperature=0.9, max_length=100)  # doctest: +SKIP

Imports JAX/Flax only (no torch, no TensorFlow).
"""

from gpt2_core.generation_config import GenerationConfig
from gpt2_flax.modeling import KVCache
from gpt2_flax.models import (
    GPT2DoubleHeadsModel,
    GPT2ForQuestionAnswering,
    GPT2ForSequenceClassification,
    GPT2ForTokenClassification,
    GPT2LMHeadModel,
    GPT2Model,
)
from gpt2_flax.outputs import (
    BaseModelOutput,
    CausalLMOutput,
    DoubleHeadsModelOutput,
    GenerateBeamDecoderOnlyOutput,
    GenerateDecoderOnlyOutput,
    QuestionAnsweringOutput,
    SequenceClassifierOutput,
)

__all__ = [
    "BaseModelOutput", "CausalLMOutput", "DoubleHeadsModelOutput", "GPT2DoubleHeadsModel",
    "GPT2ForQuestionAnswering", "GPT2ForSequenceClassification", "GPT2ForTokenClassification",
    "GPT2LMHeadModel", "GPT2Model", "GenerateBeamDecoderOnlyOutput", "GenerateDecoderOnlyOutput",
    "GenerationConfig", "KVCache", "QuestionAnsweringOutput",
    "SequenceClassifierOutput",
]
