"""gpt2_keras: GPT-2 in Keras 3 (TensorFlow, JAX or PyTorch backend), exact to `gpt2_core`.

`from gpt2_keras import GPT2LMHeadModel`; `GPT2LMHeadModel.from_pretrained(path)`;
`model(input_ids=ids, attention_mask=mask, labels=labels)`; `model.generate(ids, max_new_tokens=n)`
(`GenerationConfig` fields as keywords, or `model.generation_config`).
"""

from gpt2_core.generation_config import GenerationConfig
from gpt2_core.outputs import GenerateBeamDecoderOnlyOutput, GenerateDecoderOnlyOutput
from gpt2_keras.causal_lm import GPT2CausalLM, GPT2CausalLMPreprocessor, Perplexity
from gpt2_keras.modeling import (
    GPT2DoubleHeadsModel,
    GPT2ForQuestionAnswering,
    GPT2ForSequenceClassification,
    GPT2ForTokenClassification,
    GPT2LMHeadModel,
    GPT2Model,
    GPT2PreTrainedModel,
)
from gpt2_keras.outputs import (
    BaseModelOutput,
    CausalLMOutput,
    DoubleHeadsOutput,
    ModelOutput,
    QuestionAnsweringOutput,
    SequenceClassifierOutput,
)
from gpt2_keras.tokenizer_layer import GPT2TokenizerLayer

__all__ = [
    "BaseModelOutput", "CausalLMOutput", "GenerateBeamDecoderOnlyOutput",
    "GenerateDecoderOnlyOutput", "GenerationConfig", "GPT2CausalLM", "GPT2CausalLMPreprocessor",
    "GPT2TokenizerLayer", "Perplexity", "DoubleHeadsOutput", "GPT2DoubleHeadsModel",
    "GPT2ForQuestionAnswering", "GPT2ForSequenceClassification", "GPT2ForTokenClassification",
    "GPT2LMHeadModel", "GPT2Model", "GPT2PreTrainedModel", "ModelOutput",
    "QuestionAnsweringOutput", "SequenceClassifierOutput",
]
