"""gpt2_keras: GPT-2 in Keras 3 (TensorFlow, JAX or PyTorch backend), exact to `gpt2_core`.

`from gpt2_keras import GPT2LMHeadModel`; `GPT2LMHeadModel.from_pretrained(path)`;
`model(input_ids=ids, attention_mask=mask, labels=labels)`; `model.generate(ids, max_new_tokens=n)`.
"""

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

__all__ = [
    "BaseModelOutput", "CausalLMOutput", "DoubleHeadsOutput", "GPT2DoubleHeadsModel",
    "GPT2ForQuestionAnswering", "GPT2ForSequenceClassification", "GPT2ForTokenClassification",
    "GPT2LMHeadModel", "GPT2Model", "GPT2PreTrainedModel", "ModelOutput",
    "QuestionAnsweringOutput", "SequenceClassifierOutput",
]
