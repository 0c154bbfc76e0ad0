"""The one tolerance table: (quantity, dtype) -> (atol, rtol), a why-comment per row.

An element passes when |actual - expected| <= atol + rtol * |expected| (NumPy's `isclose`).
`expected` is the float64 reference for reference pairs, and the first framework of the pair
for framework pairs (gradients). There are no per-test overrides: a case that needs a looser
number is a gap, listed in `exclusions/<backend>.txt` with its reason.

Measured on the tiny random configs (every tensor N(0, 0.2)): float32 NumPy vs float64 logits
differ by ~2.5e-6 (|logits| ~5), hidden states ~3e-6, caches ~2e-6, probabilities ~1e-6, loss
~4e-8. The rows below leave ~20-50x of headroom for frameworks' different summation orders
and fused kernels, while a planted bug (LayerNorm epsilon 1e-3 for 1e-5, erf for tanh GELU, a
missing attention scale) moves these quantities by 1e-3 or more.
"""

from __future__ import annotations

TOLERANCES: dict[tuple[str, str], tuple[float, float]] = {
    # Logits: float32 matmuls over C and V with a different summation order per framework; the
    # error grows with depth and |logits|, hence the relative term.
    ("logits", "float32"): (1e-4, 1e-4),
    # Hidden states: the residual stream grows with depth (|h| up to ~20 on GPT-2-small shapes).
    ("hidden", "float32"): (1e-4, 1e-4),
    # Keys and values: one matmul from a LayerNorm output, the least accumulated error.
    ("cache", "float32"): (5e-5, 1e-4),
    # Attention probabilities in [0, 1]: a softmax of float32 scores.
    ("attn", "float32"): (1e-5, 1e-4),
    # Head outputs (classification scores, QA logits, multiple-choice logits): logits-like.
    ("head", "float32"): (1e-4, 1e-4),
    # Causal-LM loss: a mean of log-softmax terms, the errors average out.
    ("loss", "float32"): (1e-5, 1e-5),
    # Gradients between two float32 frameworks (no float64 oracle: finite differences are too
    # slow): backward passes sum in different orders, and small gradients carry relatively
    # large absolute errors, hence the larger atol.
    ("grad", "float32"): (1e-4, 1e-3),
    # Processed scores: element-wise on identical float32 inputs (the reference casts them to
    # float64 for its arithmetic); kept/removed tokens (-inf) must match exactly.
    ("processor", "float32"): (1e-6, 1e-6),
    # Token ids, tokenizer ids and checkpoint tensors: exact.
    ("tokens", "int64"): (0.0, 0.0),
    ("tensor", "float32"): (0.0, 0.0),
    # float16: 10 mantissa bits (eps 9.8e-4); errors accumulate over C-length dot products.
    ("logits", "float16"): (5e-2, 2e-2),
    ("hidden", "float16"): (5e-2, 2e-2),
    ("cache", "float16"): (2e-2, 2e-2),
    ("loss", "float16"): (1e-2, 1e-2),
    # bfloat16: 7 mantissa bits (eps 7.8e-3), 8x coarser than float16.
    ("logits", "bfloat16"): (2e-1, 5e-2),
    ("hidden", "bfloat16"): (2e-1, 5e-2),
    ("cache", "bfloat16"): (1e-1, 5e-2),
    ("loss", "bfloat16"): (5e-2, 5e-2),
}

EXACT_QUANTITIES = ("tokens", "tensor")


def quantity(path: str) -> str:
    """The quantity a tensor path measures: `cache.3.value` -> `cache`, `grad.wte.weight` -> `grad`."""
    head = path.split(".", 1)[0]
    if head in ("mc_logits", "start_logits", "end_logits", "last_hidden_state", "head_logits"):
        return "head"
    if head in ("ids", "generated"):
        return "tokens"
    if head == "scores":
        return "processor"
    return head


def tolerance(path: str, dtype: str = "float32") -> tuple[float, float]:
    """(atol, rtol) for a tensor path at a dtype. Raises KeyError naming the missing row."""
    q = quantity(path)
    key = (q, "int64") if q == "tokens" else (q, dtype)
    if key not in TOLERANCES:
        raise KeyError(f"No tolerance for quantity {q!r} at dtype {dtype!r} (tensor {path!r}); "
                       "add a row with its reason to gpt2_conformance/tolerances.py.")
    return TOLERANCES[key]
