"""GPT-2's pre-tokenizer and byte-level BPE as TensorFlow graph ops (no Python at run time).

Everything here is plain TensorFlow (RE2 through `tf.strings.regex_replace`, `tf.lookup` hash
tables, one `tf.while_loop`), so it runs inside `tf.function`, `tf.data` and SavedModels.

Pre-tokenization without a lookahead
------------------------------------
GPT-2 splits text with::

    's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+

RE2 has no `(?!\\S)`. Its only effect: a whitespace run of length n >= 2 that is followed by a
non-space character is split as (first n-1 chars)(last char), and the last char starts the next
pre-token (where ` ?\\p{L}+` and friends may take it if it is a space). Every other whitespace run
(at the end of the text, or of length 1) is taken whole by `\\s+` or by a ` ?...` alternative,
exactly as without the lookahead. So we run two RE2 passes:

1. `BOUNDARY`: insert a cut between the last two characters of every such run, matching
   `([ws])([ws][^ws])`. The match consumes the following non-space character, which never holds
   the start of another run, so a global replace finds every run.
2. `PIECE`: the regex with `\\s+(?!\\S)|\\s+` replaced by `\\s+`, matched independently on the
   segments between cuts (cuts are bytes no alternative can match, so no match spans one). On
   each segment it gives GPT-2's splits: a segment now ends in the n-1 whitespace chars the
   lookahead would have taken, and the next one starts at the char the lookahead left over.

Cut marks: the byte 0xFF (`SEP`) never occurs in UTF-8, and RE2 character classes, negated
ones included, never match an invalid byte, so no pre-token can swallow a mark. Inputs are first
transcoded UTF-8 -> UTF-8 with U+FFFD replacement, so user bytes can never fake a mark. Allowed
special tokens become `SEP 0xFE... SEP` (0xFE repeated i+1 times for the i-th special) before
pass 1, which makes them hard boundaries, as tiktoken's split at specials does.
(KerasHub's version of this trick inserts the character "६" (DEVANAGARI DIGIT SIX) as its
marker and later deletes every "६" token, so real text containing it changes, and it hardcodes a
few extra spaces instead of the full whitespace class.)

Character classes: RE2's `\\s` is ASCII-only (no U+00A0, U+2000-U+200A, U+3000, U+0085,
U+2028, not even \\v) and its `\\p{L}`/`\\p{N}` tables are an older Unicode version than the
oracles' (TensorFlow 2.21's RE2 vs `regex` 2026.11, over all code points but surrogates: `\\s` 5
vs 25 code points, `\\p{L}` 136,104 vs 158,172, `\\p{N}` 1,831 vs 2,247). We never use them:
the classes are spelled out as code point ranges from `gpt2_tokenizer` (Unicode 16.0, like
tiktoken and Hugging Face `tokenizers`; whitespace is Unicode White_Space, which is `\\s` in
`regex`, Rust `regex` and tiktoken - not `str.isspace`, which adds U+001C-U+001F).

BPE
---
Whole pre-tokens are first looked up in the vocabulary (nearly all are single tokens; like
tiktoken; for GPT-2 every token is its own BPE result, checked in the tests). The rest, deduped,
run the merge loop on int32 ids in flat tensors: each step merges, in every word, all
non-overlapping occurrences (left to right) of its lowest-ranked pair, as OpenAI's `encoder.py`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import tensorflow as tf

from gpt2_tokenizer import bytes_to_unicode

SEP = b"\xff"
SPECIAL_MARK = b"\xfe"
NO_MERGE = np.iinfo(np.int32).max

# Unicode White_Space (`\s` of `regex`, Rust `regex`, tiktoken), as hex code point ranges.
WHITESPACE_RANGES = "9-d 20 85 a0 1680 2000-200a 2028-2029 202f 205f 3000"


def re2_class(ranges: str) -> str:
    """Hex ranges "41-5a 61" -> RE2 class body `\\x{41}-\\x{5a}\\x{61}`."""
    parts = []
    for item in ranges.split():
        lo, _, hi = item.partition("-")
        parts.append(f"\\x{{{lo}}}" + (f"-\\x{{{hi}}}" if hi else ""))
    return "".join(parts)


def patterns() -> tuple[str, str]:
    """The two RE2 patterns (`BOUNDARY`, `PIECE`) described in the module docstring."""
    from gpt2_tokenizer import _unicode16  # the oracle's pinned Unicode 16.0 classes

    ws = re2_class(WHITESPACE_RANGES)
    letters = re2_class(_unicode16.LETTER_RANGES)
    numbers = re2_class(_unicode16.NUMBER_RANGES)
    boundary = f"([{ws}])([{ws}][^{ws}])"
    piece = (f"'s|'t|'re|'ve|'m|'ll|'d| ?[{letters}]+| ?[{numbers}]+"
             f"| ?[^{ws}{letters}{numbers}]+|[{ws}]+")
    return boundary, piece


def bundled_vocabulary() -> tuple[dict[str, int], list[str]]:
    """GPT-2's vocabulary and merges as bundled (and sha256-checked) by `gpt2_tokenizer`."""
    from gpt2_tokenizer import load_bundled_vocab

    encoder, merges = load_bundled_vocab()
    return dict(encoder), [f"{a} {b}" for a, b in merges]


def read_merges(lines: Iterable[str]) -> list[str]:
    """Merge rules "a b" without the `#version` header and blank lines."""
    return [line for line in (raw.rstrip("\r\n") for raw in lines)
            if line and not line.startswith("#version")]


class BPETables:
    """Numpy tables derived from a byte-level BPE vocabulary (validated)."""

    def __init__(self, vocabulary: dict[str, int], merges: list[str]):
        u2b = {c: b for b, c in bytes_to_unicode().items()}
        self.vocab_size = max(vocabulary.values()) + 1
        id_bytes = [b""] * self.vocab_size
        for token, i in vocabulary.items():
            # Byte-level tokens map back through GPT-2's table; anything else is taken as UTF-8.
            id_bytes[i] = (bytes(u2b[c] for c in token) if all(c in u2b for c in token)
                           else token.encode("utf-8"))
        self.id_bytes = id_bytes
        missing = [c for c in bytes_to_unicode().values() if c not in vocabulary]
        if missing:
            raise ValueError("`vocabulary` must hold all 256 byte-level symbols of GPT-2's "
                             f"byte-to-unicode map. Missing: {missing[:5]!r}.")
        self.byte_ids = np.array([vocabulary[c] for _, c in sorted(bytes_to_unicode().items())],
                                 np.int32)
        pair_keys, merged = [], []
        for rank, rule in enumerate(merges):
            parts = rule.split(" ")
            if len(parts) != 2 or any(p not in vocabulary for p in parts) \
                    or parts[0] + parts[1] not in vocabulary:
                raise ValueError("Each merge rule must be two vocabulary tokens separated by one "
                                 "space whose concatenation is in the vocabulary. Received: "
                                 f"merges[{rank}]={rule!r}.")
            a, b = vocabulary[parts[0]], vocabulary[parts[1]]
            pair_keys.append(a * self.vocab_size + b)
            merged.append(vocabulary[parts[0] + parts[1]])
        self.pair_keys = np.array(pair_keys, np.int64)
        self.merged_ids = np.array(merged or [0], np.int32)
        produced = {m.replace(" ", "") for m in merges}
        symbols = set(bytes_to_unicode().values())
        # Tokens no merge produces (GPT-2: only `<|endoftext|>`) are the special tokens.
        self.special_tokens = {t: i for t, i in vocabulary.items()
                               if t not in produced and t not in symbols}
        self.word_keys = [id_bytes[i] for t, i in vocabulary.items()
                          if t not in self.special_tokens]
        self.word_ids = np.array([i for t, i in vocabulary.items()
                                  if t not in self.special_tokens], np.int32)


def special_regexes(specials: list[str]) -> list[tuple[str, bytes]]:
    """(RE2 pattern, replacement) per allowed special token, longest first."""
    out = []
    for i, token in enumerate(sorted(specials, key=len, reverse=True)):
        out.append((re.escape(token), SEP + SPECIAL_MARK * (i + 1) + SEP))
    return out


def pretokenize(texts: tf.Tensor, boundary: str, piece: str,
                specials: list[tuple[str, bytes]]) -> tf.RaggedTensor:
    """(B,) tf.string -> (B, None) pre-tokens (special tokens as 0xFE marks).

    Shapes: (B,) -> (B, None).
    """
    texts = tf.strings.unicode_transcode(texts, "UTF-8", "UTF-8", errors="replace",
                                         replacement_char=0xFFFD,
                                         replace_control_characters=False)
    for pattern, mark in specials:
        texts = tf.strings.regex_replace(texts, pattern, mark)
    texts = tf.strings.regex_replace(texts, boundary, b"\\1" + SEP + b"\\2")
    texts = tf.strings.regex_replace(texts, piece, b"\\0" + SEP)
    words = tf.strings.split(texts, sep=SEP)  # (B, None), with empty strings between marks
    flat = words.flat_values
    keep = tf.strings.length(flat) > 0
    return tf.RaggedTensor.from_value_rowids(
        tf.boolean_mask(flat, keep), tf.boolean_mask(words.value_rowids(), keep),
        nrows=tf.shape(texts, out_type=tf.int64)[0])


def _merge_step(ids, seg, pair_rank, merged_ids, vocab_size):
    """One BPE step on flat word pieces: ids (M,), seg (M,) word index, sorted."""
    left, right = ids[:-1], ids[1:]
    key = tf.cast(left, tf.int64) * vocab_size + tf.cast(right, tf.int64)
    rank = tf.where(seg[:-1] == seg[1:], pair_rank.lookup(key), NO_MERGE)  # (M-1,)
    best = tf.math.unsorted_segment_min(rank, seg[:-1], tf.reduce_max(seg) + 1)
    hit = (rank == tf.gather(best, seg[:-1])) & (rank < NO_MERGE)
    # Occurrences of the best pair overlap only in runs like "a a a" (pair (a, a)): take every
    # other one from the start of each run, as encoder.py's left-to-right scan does.
    pos = tf.range(tf.size(hit))
    start = hit & ~tf.concat([[False], hit[:-1]], 0)
    run_start = tf.gather(tf.concat([[0], tf.boolean_mask(pos, start)], 0),
                          tf.cumsum(tf.cast(start, tf.int32)))
    take = hit & ((pos - run_start) % 2 == 0)
    new_left = tf.where(take, tf.gather(merged_ids, tf.where(take, rank, 0)), left)
    keep = tf.concat([[True], ~take], 0)
    ids = tf.boolean_mask(tf.concat([new_left, ids[-1:]], 0), keep)
    return ids, tf.boolean_mask(seg, keep), tf.reduce_any(take)


def bpe(words: tf.Tensor, byte_ids: tf.Tensor, pair_rank, merged_ids: tf.Tensor,
        vocab_size: int) -> tf.RaggedTensor:
    """Byte-level BPE of each word.

    Shapes: (K,) tf.string -> (K, None) int32.
    """
    lengths = tf.strings.length(words)  # bytes
    raw = tf.io.decode_raw(tf.strings.reduce_join(words), tf.uint8)
    ids = tf.gather(byte_ids, tf.cast(raw, tf.int32))  # (M,)
    seg = tf.repeat(tf.range(tf.size(words)), lengths)  # (M,)

    def body(ids, seg, _):
        return _merge_step(ids, seg, pair_rank, merged_ids, vocab_size)

    ids, seg, _ = tf.while_loop(
        lambda ids, seg, more: more, body, (ids, seg, tf.size(ids) > 1),
        shape_invariants=(tf.TensorShape([None]), tf.TensorShape([None]), tf.TensorShape([])))
    return tf.RaggedTensor.from_value_rowids(ids, seg, nrows=tf.size(words))


def words_to_ids(words: tf.RaggedTensor, word_table, byte_ids, pair_rank, merged_ids,
                 special_ids: tf.Tensor, vocab_size: int) -> tf.RaggedTensor:
    """Pre-tokens -> token ids: whole-word lookup, BPE for the rest (deduped).

    Shapes: (B, None) tf.string -> (B, None) int32.
    """
    uniq, inverse = tf.unique(words.flat_values)  # (U,)
    is_special = tf.strings.substr(uniq, 0, 1) == SPECIAL_MARK
    whole = tf.where(is_special,
                     tf.gather(special_ids, tf.clip_by_value(tf.strings.length(uniq) - 1, 0,
                                                             tf.size(special_ids) - 1)),
                     word_table.lookup(uniq))
    unknown = whole < 0
    known_at = tf.where(~unknown)[:, 0]
    unknown_at = tf.where(unknown)[:, 0]
    known = tf.RaggedTensor.from_row_lengths(tf.gather(whole, known_at),
                                             tf.ones_like(known_at))
    merged = bpe(tf.gather(uniq, unknown_at), byte_ids, pair_rank, merged_ids, vocab_size)
    per_unique = tf.gather(tf.concat([known, merged.with_row_splits_dtype(tf.int64)], axis=0),
                           tf.math.invert_permutation(tf.concat([known_at, unknown_at], 0)))
    per_word = tf.gather(per_unique, inverse)  # (W, None)
    return tf.RaggedTensor.from_row_splits(per_word, words.row_splits).merge_dims(1, 2)
