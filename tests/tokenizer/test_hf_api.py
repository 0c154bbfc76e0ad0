"""transformers' tokenizer API on `GPT2Tokenizer`, checked against `GPT2TokenizerFast` (the
oracle, built offline from the same bundled files) and through transformers' own collators."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers
from conftest import adversarial_strings

from gpt2_tokenizer import GPT2Tokenizer
from gpt2_tokenizer.files import ASSETS_DIR

EOT = "<|endoftext|>"
# Mixed texts: unicode, specials, runs of spaces, punctuation after spaces (what the clean-up of
# `clean_up_tokenization_spaces` would change), the shared hard cases.
TEXTS = [t for t in adversarial_strings() if len(t) < 120] + [
    "Hello , world . It 's done ! Is n't it ?", f"a {EOT} b{EOT}", f"{EOT}x", "  lead and trail  ",
    "naïve café — ½ 😀 中文", "tab\tnew\nline\r\n",
]


def fresh() -> tuple[GPT2Tokenizer, transformers.PreTrainedTokenizerBase]:
    """A new pair (ours, transformers'), so state added by one test stays in that test."""
    return GPT2Tokenizer.from_pretrained(), transformers.GPT2TokenizerFast.from_pretrained(
        str(ASSETS_DIR))


@pytest.fixture(scope="module")
def pair():
    return fresh()


@pytest.fixture(scope="module")
def padded():
    """A pair with `pad_token = eos_token`, for tests that only pad (no state changes)."""
    ours, hf = fresh()
    for tok in (ours, hf):
        tok.pad_token = tok.eos_token
    return ours, hf


def assert_same(ours, theirs) -> None:
    """Same keys, and per key the same values of the same kind (list, numpy, torch + dtype)."""
    assert sorted(ours) == sorted(theirs.keys())
    for key in theirs.keys():
        a, b = ours[key], theirs[key]
        assert type(a) is type(b), (key, type(a), type(b))
        if hasattr(b, "dtype"):
            assert (a.dtype, tuple(a.shape)) == (b.dtype, tuple(b.shape)), key
            assert np.array_equal(np.asarray(a), np.asarray(b)), key
        else:
            assert a == b, key


# ------------------------------------------------------------------ vocabulary and tokens
def test_tokenize_matches_hf(pair):
    ours, hf = pair
    for text in TEXTS:
        assert ours.tokenize(text) == hf.tokenize(text), text[:40]
    assert ours.tokenize("Hello", "world") == hf.tokenize("Hello", "world")
    assert ours.tokenize("x" * 5000) == hf.tokenize("x" * 5000)  # no model_max_length limit


def test_token_id_conversions_match_hf(pair):
    ours, hf = pair
    for text in TEXTS:
        ids = hf(text)["input_ids"]
        tokens = hf.convert_ids_to_tokens(ids)
        assert ours.convert_ids_to_tokens(ids) == tokens
        assert ours.convert_tokens_to_ids(tokens) == hf.convert_tokens_to_ids(tokens) == ids
        assert ours.convert_ids_to_tokens(ids, skip_special_tokens=True) == \
            hf.convert_ids_to_tokens(ids, skip_special_tokens=True)
    assert ours.convert_ids_to_tokens(15496) == hf.convert_ids_to_tokens(15496) == "Hello"
    assert ours.convert_ids_to_tokens(np.int64(995)) == "Ġworld"
    assert ours.convert_ids_to_tokens(torch.tensor([15496, 995])) == ["Hello", "Ġworld"]
    for unknown in ("not-a-token", "Hello world", ""):  # unknown strings give unk_token_id
        assert ours.convert_tokens_to_ids(unknown) == hf.convert_tokens_to_ids(unknown) == 50256
    assert ours.convert_tokens_to_ids([]) == hf.convert_tokens_to_ids([]) == []
    assert ours.convert_ids_to_tokens(99999) is hf.convert_ids_to_tokens(99999) is None
    assert ours.convert_ids_to_tokens([99999]) == hf.convert_ids_to_tokens([99999]) == [None]


def test_convert_tokens_to_string_matches_hf(pair):
    ours, hf = pair
    for text in TEXTS:
        tokens = hf.tokenize(text)
        assert ours.convert_tokens_to_string(tokens) == hf.convert_tokens_to_string(tokens)
        # Every slice, including ones cut inside a multi-byte character (U+FFFD).
        for start in range(0, len(tokens), 3):
            part = tokens[start:start + 2]
            assert ours.convert_tokens_to_string(part) == hf.convert_tokens_to_string(part)
    odd = ["Ġâ", "中文", "Ā", "ĠðŁĺ", "Ģ", EOT]  # partial bytes, chars outside the byte alphabet
    assert ours.convert_tokens_to_string(odd) == hf.convert_tokens_to_string(odd)
    with pytest.raises(TypeError, match=r"list of token strings.*Wrap it in a list"):
        ours.convert_tokens_to_string("ĠHello")


def test_get_vocab_and_special_token_properties_match_hf(pair):
    ours, hf = pair
    assert ours.get_vocab() == hf.get_vocab()
    names = ["bos", "eos", "unk", "pad", "sep", "cls", "mask"]
    for name in names:
        assert getattr(ours, f"{name}_token") == getattr(hf, f"{name}_token"), name
        assert getattr(ours, f"{name}_token_id") == getattr(hf, f"{name}_token_id"), name
    assert ours.all_special_tokens == hf.all_special_tokens == [EOT]
    assert ours.all_special_ids == hf.all_special_ids == [50256]
    assert ours.added_tokens_encoder == hf.added_tokens_encoder
    assert ours.model_input_names == hf.model_input_names
    assert (ours.pad_token_type_id, ours.padding_side) == (hf.pad_token_type_id, hf.padding_side)
    ids = hf("a b" + EOT)["input_ids"]
    assert ours.get_special_tokens_mask(ids, already_has_special_tokens=True) == \
        hf.get_special_tokens_mask(ids, already_has_special_tokens=True)


def test_add_tokens_matches_hf():
    ours, hf = fresh()
    steps = [
        lambda t: t.add_tokens(["<think>", "hello", "<think>", "newword"]),
        lambda t: t.add_tokens("<sp>", special_tokens=True),
        lambda t: t.add_tokens([]),
        lambda t: t.add_tokens(""),
        lambda t: t.add_tokens(transformers.AddedToken("<tool>", special=False)),
        lambda t: t.add_special_tokens({"pad_token": "[PAD]", "mask_token": "<mask>"}),
    ]
    for step in steps:
        assert step(ours) == step(hf)
        assert len(ours) == len(hf)
        assert ours.get_vocab() == hf.get_vocab()
    texts = ["a<think>b hello newword <sp>x", "<tool><think>[PAD] <mask>", "say hello", *TEXTS[:50]]
    for text in texts:
        ids = hf(text)["input_ids"]
        assert ours(text).input_ids == ids, text
        assert ours.tokenize(text) == hf.tokenize(text), text
        assert ours(text, split_special_tokens=True).input_ids == \
            hf(text, split_special_tokens=True)["input_ids"], text
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == \
                hf.decode(ids, skip_special_tokens=skip), text
    assert ours.convert_ids_to_tokens([50257, 50259]) == hf.convert_ids_to_tokens([50257, 50259])
    assert ours.all_special_ids == hf.all_special_ids
    assert ours.pad_token_id == hf.pad_token_id and ours.mask_token_id == hf.mask_token_id
    # tiktoken's side: tokens from `add_tokens` are no special tokens, so `encode` takes them.
    assert ours.encode("a<think>b") == [64, 50257, 65]
    assert ours.encode_ordinary("a<think>b") == ours.encode_ordinary("a") + \
        ours.encode_ordinary("<think>b")
    assert ours.encode_ordinary_batch(["a<think>b"]) == [ours.encode_ordinary("a<think>b")]
    assert ours.encode_batch(["a<think>b"]) == [[64, 50257, 65]]
    with pytest.raises(ValueError, match="disallowed special token '<sp>'"):
        ours.encode("<sp>")


def test_added_tokens_survive_save_pretrained(tmp_path):
    ours, _ = fresh()
    ours.add_tokens(["<think>"])
    ours.add_tokens(["<sp>"], special_tokens=True)
    ours.save_pretrained(tmp_path)
    hf = transformers.GPT2TokenizerFast.from_pretrained(str(tmp_path))
    back = GPT2Tokenizer.from_pretrained(tmp_path)
    text = "a<think>b<sp>c"
    for tok in (ours, back):
        assert tok(text).input_ids == hf(text)["input_ids"]
        assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == \
            hf.decode(hf(text)["input_ids"], skip_special_tokens=True) == "a<think>bc"
    assert back.get_vocab() == hf.get_vocab()


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda t: t.add_tokens(3), TypeError, r"`new_tokens` must be a str.*int"),
        (lambda t: t.add_tokens([3]), TypeError, r"`new_tokens\[0\]` must be a str"),
        (lambda t: t.add_tokens(transformers.AddedToken("x", lstrip=True)), ValueError,
         r"asks for \['lstrip'\].*exact text"),
        (lambda t: t.convert_tokens_to_ids(5), TypeError, r"`tokens` must be a token string"),
        (lambda t: t.convert_ids_to_tokens("5"), TypeError, r"`ids` must be an int"),
        (lambda t: t.tokenize(["a", "b"]), TypeError, r"`text` must be one text.*2 texts"),
    ],
)
def test_bad_arguments_are_refused(call, error, match):
    with pytest.raises(error, match=match):
        call(fresh()[0])


# ------------------------------------------------------------------ __call__: pairs, words
def test_text_pairs_match_hf(pair):
    ours, hf = pair
    firsts = ["Hello", "one two three four five six seven", "naïve 😀", "a" + EOT]
    seconds = [" world", "alpha beta gamma delta", "中文 x", "  b"]
    options = {"return_token_type_ids": True, "return_offsets_mapping": True}
    for a, b in zip(firsts, seconds):
        assert ours(a, b, **options) == dict(hf(a, b, **options))
        assert ours(a, text_pair=b).input_ids == hf(a, text_pair=b)["input_ids"]
    assert ours(firsts, seconds, **options) == dict(hf(firsts, seconds, **options))
    for max_length in range(2, 13):
        for truncation in (True, "longest_first", "only_first"):
            kwargs = {"truncation": truncation, "max_length": max_length, **options}
            for a, b in [(firsts[1], seconds[1]), (seconds[1], firsts[1]), (seconds[1], "w x y z")]:
                if truncation == "only_first" and len(hf(b)["input_ids"]) >= max_length:
                    with pytest.raises(ValueError, match=r"only_first.*cannot fit"):
                        ours(a, b, **kwargs)
                    continue
                assert ours(a, b, **kwargs) == dict(hf(a, b, **kwargs)), (a, b, kwargs)


def test_text_pairs_pad_and_convert_like_hf(padded):
    ours, hf = padded
    firsts, seconds = ["Hello", "one two three"], [" world", "x"]
    for side in ("right", "left"):
        for kwargs in ({"padding": True}, {"padding": "max_length", "max_length": 9},
                       {"padding": True, "pad_to_multiple_of": 4},
                       {"padding": "max_length", "max_length": 6, "pad_to_multiple_of": 4},
                       {"pad_to_multiple_of": 4}):
            kwargs = {"return_token_type_ids": True, "padding_side": side, **kwargs}
            assert ours(firsts, seconds, **kwargs) == dict(hf(firsts, seconds, **kwargs))
            for kind in ("np", "pt"):
                if kwargs.get("padding"):
                    assert_same(ours(firsts, seconds, return_tensors=kind, **kwargs),
                                hf(firsts, seconds, return_tensors=kind, **kwargs))


@pytest.mark.parametrize(
    ("text", "text_pair", "error", "match"),
    [
        (["a", "b"], "c", TypeError, r"`text` is a batch, `text_pair` must be a list"),
        (["a", "b"], ["c"], ValueError, r"same batch length.*2 texts and 1 pairs"),
        ("a", ["c", "d"], TypeError, r"`text_pair` must be one text too"),
    ],
)
def test_bad_text_pairs_are_refused(pair, text, text_pair, error, match):
    with pytest.raises(error, match=match):
        pair[0](text, text_pair)


def test_split_into_words_adds_a_space_before_each_word_as_hf():
    ours = GPT2Tokenizer.from_pretrained(add_prefix_space=True)
    hf = transformers.GPT2TokenizerFast.from_pretrained(str(ASSETS_DIR), add_prefix_space=True)
    words = ["Hello", "world", "!"]
    assert ours(words, is_split_into_words=True).input_ids == [18435, 995, 5145]
    assert hf(words, is_split_into_words=True)["input_ids"] == [18435, 995, 5145]
    batch = [words, ["naïve", "😀", EOT, " spaced"]]
    assert ours(batch, is_split_into_words=True, return_offsets_mapping=True) == \
        dict(hf(batch, is_split_into_words=True, return_offsets_mapping=True))
    assert ours.tokenize(words, is_split_into_words=True) == \
        hf.tokenize(words, is_split_into_words=True)
    # Without a prefix space the words would be glued ('Helloworld!'): refused, as
    # transformers' GPT2TokenizerFast refuses pretokenized input without add_prefix_space.
    with pytest.raises(ValueError, match=r"is_split_into_words=True needs add_prefix_space=True"
                                         r".*Received: add_prefix_space=False"):
        GPT2Tokenizer.from_pretrained()(words, is_split_into_words=True)
    assert GPT2Tokenizer.from_pretrained()(words, is_split_into_words=True,
                                           add_prefix_space=True).input_ids == [18435, 995, 5145]


def test_decode_takes_the_options_pipelines_pass(pair):
    ours, hf = pair
    for text in TEXTS:
        ids = hf(text)["input_ids"]
        for clean in (None, False, True):
            kwargs = {"skip_special_tokens": True, "clean_up_tokenization_spaces": clean}
            assert ours.decode(ids, **kwargs) == hf.decode(ids, **kwargs), text[:40]


# ------------------------------------------------------------------ pad and the collators
def _pad_inputs() -> dict[str, object]:
    rows = [[15496, 995, 11], [31373], [1, 2, 3, 4, 5]]
    return {
        "list_of_dicts": [{"input_ids": r} for r in rows],
        "list_of_dicts_with_extras": [
            {"input_ids": r, "attention_mask": [1] * len(r), "labels": r,
             "token_type_ids": [0] * len(r), "special_tokens_mask": [0] * len(r)} for r in rows],
        "dict_of_lists": {"input_ids": rows, "x": [0.5, 1.5, 2.5]},
        "one_row": {"input_ids": rows[0]},
        "numpy_rows": [{"input_ids": np.asarray(r)} for r in rows],
        "torch_rows": [{"input_ids": torch.tensor(r)} for r in rows],
        "torch_batch": {"input_ids": torch.tensor([[1, 2, 3], [4, 5, 6]])},
    }


PAD_OPTIONS = [
    {}, {"padding": "longest"}, {"padding": "max_length", "max_length": 7},
    {"padding": "max_length", "max_length": 2}, {"padding": False}, {"pad_to_multiple_of": 4},
    {"padding": "max_length", "max_length": 5, "pad_to_multiple_of": 4},
    {"padding_side": "left"}, {"return_attention_mask": False}, {"return_attention_mask": True},
]


@pytest.mark.parametrize("form", list(_pad_inputs()))
@pytest.mark.parametrize("options", PAD_OPTIONS, ids=str)
@pytest.mark.parametrize("return_tensors", [None, "pt", "np"])
def test_pad_matches_hf(padded, form, options, return_tensors):
    ours, hf = padded
    inputs = _pad_inputs()[form]
    kwargs = {**options, "return_tensors": return_tensors}
    try:
        expected = hf.pad(copy.deepcopy(inputs), **kwargs)
        # Ragged rows as numpy: transformers builds an array of arrays (dtype object), which no
        # model takes; we refuse them as it refuses them for torch.
        ragged = any(getattr(v, "dtype", None) == np.dtype(object) for v in expected.values())
    except ValueError as e:  # ragged rows for torch
        assert "padding=True" in str(e)
        ragged = True
    if ragged:
        with pytest.raises(ValueError, match=r"needs rows of one length.*padding=True"):
            ours.pad(copy.deepcopy(inputs), **kwargs)
        return
    assert_same(ours.pad(copy.deepcopy(inputs), **kwargs), expected)


def test_pad_follows_the_tokenizer_padding_side():
    ours, hf = fresh()
    for tok in (ours, hf):
        tok.pad_token = tok.eos_token
        tok.padding_side = "left"
    rows = [{"input_ids": [1, 2, 3]}, {"input_ids": [4]}]
    assert_same(ours.pad(copy.deepcopy(rows)), hf.pad(copy.deepcopy(rows)))
    assert ours.pad(rows).input_ids[1] == [50256, 50256, 4]


def test_pad_refuses_what_hf_refuses():
    ours, hf = fresh()
    rows = [{"input_ids": [1, 2, 3]}, {"input_ids": [4]}]
    with pytest.raises(ValueError, match="padding token"):
        hf.pad(copy.deepcopy(rows))
    with pytest.raises(ValueError, match=r"no `pad_token`.*tok.pad_token = tok.eos_token"):
        ours.pad(copy.deepcopy(rows))
    ours.pad_token = ours.eos_token
    with pytest.raises(ValueError, match=r"must hold `input_ids`.*\['ids'\]"):
        ours.pad({"ids": [1]})
    with pytest.raises(ValueError, match=r"`padding` must be True, False"):
        ours.pad(rows, padding="most")
    with pytest.raises(ValueError, match=r"`return_tensors` must be None.*'mx'"):
        ours.pad(rows, return_tensors="mx")
    with pytest.raises(ValueError, match=r"`pad_to_multiple_of` must be a positive int.*0"):
        ours.pad(rows, pad_to_multiple_of=0)
    assert ours.pad({"input_ids": []}, return_attention_mask=True) == \
        hf.pad({"input_ids": []}, return_attention_mask=True)


def _lm_examples(tok) -> list:
    texts = ["Hello world", "A longer line of text, with punctuation!", "😀 中文", EOT + " x"]
    return [tok(t) for t in texts]


@pytest.mark.parametrize("pad_to_multiple_of", [None, 8])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_data_collator_for_language_modeling_matches_hf(pad_to_multiple_of, padding_side):
    ours, hf = fresh()
    for tok in (ours, hf):
        tok.pad_token = tok.eos_token
        tok.padding_side = padding_side
    collate = {id(t): transformers.DataCollatorForLanguageModeling(
        tokenizer=t, mlm=False, pad_to_multiple_of=pad_to_multiple_of) for t in (ours, hf)}
    ours_examples, hf_examples = _lm_examples(ours), _lm_examples(hf)
    assert [dict(e) for e in ours_examples] == [dict(e) for e in hf_examples]
    assert_same(collate[id(ours)](ours_examples), collate[id(hf)](hf_examples))
    # Bare id lists take the collator's other path (it reads pad_token_id and padding_side).
    ids = [e["input_ids"] for e in hf_examples]
    assert_same(collate[id(ours)](ids), collate[id(hf)](ids))
    np_collate = [transformers.DataCollatorForLanguageModeling(
        tokenizer=t, mlm=False, return_tensors="np") for t in (ours, hf)]
    assert_same(np_collate[0](ours_examples), np_collate[1](hf_examples))


def test_data_collator_with_padding_matches_hf(padded):
    ours, hf = padded
    features = [{**dict(ours(t)), "label": i} for i, t in enumerate(["a b c", "d", "e f"])]
    for kwargs in ({}, {"padding": "max_length", "max_length": 6}, {"pad_to_multiple_of": 4}):
        ours_batch = transformers.DataCollatorWithPadding(ours, **kwargs)(copy.deepcopy(features))
        hf_batch = transformers.DataCollatorWithPadding(hf, **kwargs)(copy.deepcopy(features))
        assert_same(ours_batch, hf_batch)


def test_pad_imports_torch_only_for_torch_tensors():
    script = (
        "import sys\nfrom gpt2_tokenizer import GPT2Tokenizer\n"
        "tok = GPT2Tokenizer.from_pretrained(); tok.pad_token = tok.eos_token\n"
        "out = tok.pad([{'input_ids': [1, 2]}, {'input_ids': [3]}], return_tensors='np')\n"
        "assert out['input_ids'].tolist() == [[1, 2], [3, 50256]]\n"
        "assert not {'torch', 'tensorflow', 'jax', 'transformers'} & set(sys.modules)\n"
        "tok.pad([{'input_ids': [1, 2]}], return_tensors='pt')\n"
        "assert 'torch' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_text_generation_pipeline_with_our_tokenizer_matches_hf_tokenizer():
    """The pipeline tokenizes, pads to the left and decodes with our tokenizer (a tiny random
    transformers model stands for the model: only the tokenizer differs between the runs)."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=64)
    model = transformers.GPT2LMHeadModel(config).eval()
    prompts = ["Hello world", "naïve 😀 <|endoftext|> x"]
    outputs = []
    for tok in fresh():
        generate = transformers.pipeline("text-generation", model=model, tokenizer=tok)
        outputs.append([generate(prompts, max_new_tokens=5, do_sample=False),
                        generate(prompts[0], max_new_tokens=3, do_sample=False,
                                 return_full_text=False, clean_up_tokenization_spaces=True)])
    assert outputs[0] == outputs[1]
    assert outputs[0][0][0][0]["generated_text"].startswith("Hello world")


def test_add_special_tokens_matches_hf():
    ours, hf = fresh()
    steps = [
        lambda t: t.add_special_tokens({"pad_token": "hello", "eos_token": EOT}),
        lambda t: t.add_special_tokens({"additional_special_tokens": ["<a>", "<b>"]}),
        lambda t: t.add_special_tokens({"additional_special_tokens": ["<c>", "<a>"]}),  # replaces
        lambda t: t.add_special_tokens({"additional_special_tokens": ["<d>"]},
                                       replace_extra_special_tokens=False),
        lambda t: t.add_special_tokens({"mask_token": transformers.AddedToken("<m>")}),
    ]
    for step in steps:
        assert step(ours) == step(hf)
        assert (ours.all_special_tokens, ours.all_special_ids, len(ours)) == \
            (hf.all_special_tokens, hf.all_special_ids, len(hf))
        assert ours.get_vocab() == hf.get_vocab()
    for text in ["hello <a><b>x<m>", "<c> <d>" + EOT]:
        ids = hf(text)["input_ids"]
        assert ours(text).input_ids == ids
        assert ours.decode(ids, skip_special_tokens=True) == hf.decode(ids, skip_special_tokens=True)
        assert ours.get_special_tokens_mask(ids, already_has_special_tokens=True) == \
            hf.get_special_tokens_mask(ids, already_has_special_tokens=True)
    ours.add_special_tokens({"additional_special_tokens": ["<e>"]},
                            replace_additional_special_tokens=False)  # transformers 4's name
    assert ours.additional_special_tokens == ["<c>", "<a>", "<d>", "<e>"]


@pytest.mark.parametrize("add_bos_token", [False, True])
def test_special_tokens_mask_length_and_bos_match_hf(add_bos_token):
    ours = GPT2Tokenizer.from_pretrained(add_bos_token=add_bos_token)
    hf = transformers.GPT2TokenizerFast.from_pretrained(str(ASSETS_DIR), add_bos_token=add_bos_token)
    for tok in (ours, hf):
        tok.pad_token = tok.eos_token
    kwargs = {"return_special_tokens_mask": True, "return_length": True,
              "return_token_type_ids": True}
    assert ours("a" + EOT, **kwargs) == dict(hf("a" + EOT, **kwargs))
    for side in ("left", "right"):
        args = (["a b c", "a"], ["x", "y z"])
        assert ours(*args, padding=True, padding_side=side, **kwargs) == \
            dict(hf(*args, padding=True, padding_side=side, **kwargs))
        assert_same(ours(*args, padding=True, return_tensors="pt", **kwargs),
                    hf(*args, padding=True, return_tensors="pt", **kwargs))
    assert ours.tokenize("a", add_special_tokens=True) == hf.tokenize("a", add_special_tokens=True)
    # The collator drops `special_tokens_mask` (it is for masked LM) and pads the rest.
    rows = [ours("a b c", return_special_tokens_mask=True), ours("a", return_special_tokens_mask=True)]
    hf_rows = [hf("a b c", return_special_tokens_mask=True), hf("a", return_special_tokens_mask=True)]
    assert_same(transformers.DataCollatorForLanguageModeling(tokenizer=ours, mlm=False)(rows),
                transformers.DataCollatorForLanguageModeling(tokenizer=hf, mlm=False)(hf_rows))
