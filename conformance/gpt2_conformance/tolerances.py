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
    # Reduced precision: the framework holds its weights and computes in float16/bfloat16 (a
    # mixed Keras policy rounds its float32 variables when casting); the oracle is the float64
    # reference on the unrounded checkpoint, so a row covers the rounding of weights and of
    # every activation. Case `tiny.base.<dtype>.forward.left_padded` (|logits| <= 3.8,
    # |hidden| <= 6.5, |cache| <= 5.4), measured on CPU, torch / keras / flax, max |diff|:
    #   float16:  logits 5.7e-3 / 6.4e-3 / 7.1e-3, hidden 7.0e-3 / 7.7e-3 / 8.6e-3,
    #             cache 5.6e-3 / 5.7e-3 / 4.9e-3.
    #   bfloat16: logits 3.8e-2 / 5.3e-2 / 5.8e-2, hidden 5.4e-2 / 6.0e-2 / 7.8e-2,
    #             cache 4.7e-2 / 5.2e-2 / 4.3e-2.
    # The rows give each backend's worst element about 2x headroom (error / allowance <= 0.5)
    # for other CPUs' kernels (accumulation in float32 or not, fused ops). What they still
    # catch is in tests/conformance/test_planted_bugs.py: at float16 the LayerNorm epsilon
    # plant (error 6.5e-2, allowance ratio 2.4-2.9); at bfloat16 only gross bugs (a transposed
    # weight, shifted positions: errors > 1): the epsilon plant's error is as large as
    # bfloat16's own rounding noise, and only the float32 cases see it.
    # float16: 10 mantissa bits (unit roundoff 4.9e-4); errors accumulate over the residual
    # stream and C-length dot products and stay mostly absolute (~1e-3 of |x|max), hence atol.
    ("logits", "float16"): (1.6e-2, 4e-3),
    ("hidden", "float16"): (2e-2, 4e-3),
    ("cache", "float16"): (1.2e-2, 4e-3),
    ("loss", "float16"): (1e-2, 1e-2),  # not measured yet: no reduced-precision loss case
    # bfloat16: 8-bit significand (unit roundoff 3.9e-3 per rounding, 8x float16's); the
    # measured errors are ~8x float16's too.
    ("logits", "bfloat16"): (1e-1, 4e-2),
    ("hidden", "bfloat16"): (1.2e-1, 4e-2),
    ("cache", "bfloat16"): (1e-1, 4e-2),
    ("loss", "bfloat16"): (5e-2, 5e-2),  # not measured yet: no reduced-precision loss case
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
