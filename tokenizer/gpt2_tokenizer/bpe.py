"""Byte-level BPE as GPT-2 defines it: byte-to-unicode table, rank-ordered merges, word caches.

`BytePairEncoding.encode_ordinary` is the hot path. ASCII text is pre-tokenized in one stdlib
regex pass and each word maps to a tuple of ids through a bounded word cache, so a warm encode
is one C-level `map`; only misses run the merge loop, on token ids. Other text is cut into
chunks at safe points (`split_chunks`): ASCII chunks take the same path, and the rest go by
pieces (`split_pieces`) through a piece cache, because Unicode pre-tokenization is slow.

Text whose words keep missing the cache (no spaces: base64, minified code) switches to flat
mode: ~500,000 characters at a time are merged together in NumPy rounds (`bpe_batch`), without
the cache and without a Python object per word; a short probe of the cache (lookups only) at the
start of each batch notices text whose words the cache holds again.

One regex pass over the words beats caching whole pieces when the cache is cold (a piece cache
pays a regex call and a tuple for each new piece: ~100,000 per 5 MB of code) and costs about
as much when it is warm.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import chain, filterfalse, groupby, repeat
from operator import lshift, or_

import numpy as np

from gpt2_tokenizer.bpe_batch import BatchMerger
from gpt2_tokenizer.pretokenizer import (
    CHUNK_CHARS,
    ascii_words,
    pretokenize,
    split_chunks,
    split_pieces,
    word_end_cut,
)

__all__ = ["CACHE_MAX_ENTRIES", "BytePairEncoding", "bytes_to_unicode"]

CACHE_MAX_ENTRIES = 1 << 18
"""Each cache is cleared when it passes this many entries (262,144; at most ~100 MB of pieces)."""

_RANK_SHIFT = 32  # Pair table values are rank << 32 | merged id: `min` picks the lowest rank.
_ID_MASK = (1 << _RANK_SHIFT) - 1
_PAIR_SHIFT = 20  # Pair table keys are left id << 20 | right id: an int hashes faster than a tuple.

_NO_MERGE = 1 << 62
_CACHE_MAX_KEY_CHARS = 256  # Longer words and pieces rarely repeat: caching them costs memory.
_FINE_CHUNK_CHARS = 256  # Cutting non-ASCII chunks again sends ~3/4 of their text back to ASCII.
_HEAP_MIN_SYMBOLS = 48  # Above this, the O(n log n) heap merge beats the simple O(n^2) loop.
# Flat mode (`_encode_ascii`): entered when over 2/3 of the characters of the last _WINDOW_CHARS
# or more were in words that missed the cache, left when the first _PROBE_CHARS of a batch miss
# under 1/3 (in between, the mode stays). Missed characters, not missed words, measure what the
# cache saves. Windows of 8192 characters from a cold cache measured 0.77-0.83 in random base64
# and 0.63-0.83 in space-free prose at first, and at most 0.47 in the Python stdlib and its
# LICENSE (0.55 in windows of 4096). Batches of _BATCH_CHARS amortise NumPy's per-round cost
# (~60 us a round however small; ~70 rounds a batch of space-free prose).
_ENTER_FLAT = 2 / 3
_LEAVE_FLAT = 1 / 3
_WINDOW_CHARS = 8192
_PROBE_CHARS = 1024
_BATCH_CHARS = 1 << 19


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table.

    Printable Latin-1 bytes map to themselves; the other 68 bytes map to U+0100 onwards, in
    byte order. Vocabulary strings are written in these characters.

    Returns:
        A dict with 256 entries, byte value -> one-character string.

    >>> table = bytes_to_unicode()
    >>> table[ord("A")], table[ord(" ")], table[0]
    ('A', 'Ġ', 'Ā')
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return dict(sorted(table.items()))


def _ascii_and_other_chunks(text: str) -> Iterator[str]:
    """`split_chunks`, with non-ASCII chunks cut again finer to keep the slow path short.

    A fine chunk still long (text without spaces) is cut at ASCII word ends, so that a few
    non-ASCII characters do not send a megabyte down the Unicode path.
    """
    for chunk in split_chunks(text):
        if chunk.isascii():  # Long ones are cut by `_encode_ascii`, as its mode needs.
            yield chunk
            continue
        for fine in split_chunks(chunk, _FINE_CHUNK_CHARS):  # ASCII runs gather again in flat mode.
            if len(fine) > 2 * _FINE_CHUNK_CHARS and not fine.isascii():
                yield from split_chunks(fine, _FINE_CHUNK_CHARS, word_ends=True)
            else:
                yield fine


class _BoundedCache(dict):  # type: ignore[type-arg]
    """A dict that computes missing entries and clears itself when it grows too large."""

    def __init__(self, compute, max_entries: int) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self._compute = compute
        self._max_entries = max_entries
        self.missed_chars = 0  # Total length of the keys that missed, for the flat mode switch.

    def __missing__(self, key: str) -> tuple[int, ...]:
        self.missed_chars += len(key)
        value = self._compute(key)
        if len(key) <= _CACHE_MAX_KEY_CHARS:
            if len(self) >= self._max_entries:
                self.clear()
            self[key] = value
        return value


class BytePairEncoding:
    """Vocabulary, merges and the cached encoder for byte-level text (no special tokens).

    Args:
        encoder: Token string (in `bytes_to_unicode` characters) -> id.
        merges: Merge rules in priority order, each a pair of token strings.
        whole_word_fast_path: Look a whole pre-token up in `encoder` before merging. Exact when
            every vocabulary entry merges back to itself (true for GPT-2; checked in tests).
        max_cache_entries: Bound of each cache.
    """

    def __init__(
        self,
        encoder: Mapping[str, int],
        merges: Sequence[tuple[str, str]],
        *,
        whole_word_fast_path: bool,
        max_cache_entries: int = CACHE_MAX_ENTRIES,
    ) -> None:
        self.encoder: dict[str, int] = dict(encoder)
        self.merges: list[tuple[str, str]] = list(merges)
        self.bpe_ranks: dict[tuple[str, str], int] = {m: i for i, m in enumerate(self.merges)}
        self.whole_word_fast_path = whole_word_fast_path
        byte_decoder = {c: b for b, c in bytes_to_unicode().items()}
        size = max(self.encoder.values(), default=-1) + 1
        self.id_to_bytes: list[bytes | None] = [None] * size
        # The whole-word fast path looks raw UTF-8 up, so a word that is a token skips the
        # byte -> character translation; only tokens made of table characters qualify.
        self._bytes_to_id: dict[bytes, int] = {}
        for token, i in self.encoder.items():
            self.id_to_bytes[i] = bytes(byte_decoder[c] for c in token if c in byte_decoder)
            if all(c in byte_decoder for c in token):
                self._bytes_to_id[self.id_to_bytes[i]] = i  # type: ignore[index]
        # Latin-1 decoding turns each UTF-8 byte into one code point; translate renames them.
        self._byte_table = {b: ord(c) for b, c in bytes_to_unicode().items()}
        self._byte_ids, self._pair_ids = self._id_tables()
        self._word_cache = _BoundedCache(self._encode_word, max_cache_entries)
        self._piece_cache = _BoundedCache(self._encode_piece, max_cache_entries)
        self._merger: BatchMerger | None | bool = False  # Built on first use; None: not exact here.

    def _id_tables(self) -> tuple[list[int] | None, dict[int, int]]:
        """Byte -> id and left id << 20 | right id -> rank << 32 | merged id, for `_merge_ids`.

        When merged ids rise with rank (GPT-2: id = 256 + rank), the merged id alone orders the
        merges and the values are the encoder's own ints (saves ~2 MB). None when a byte or a
        merge result has no id, or ids repeat: such vocabularies use the string merge, which
        fails on a missing token exactly as before, as do ids of 2**20 or more.
        """
        encoder = self.encoder
        byte_ids = [encoder.get(c) for c in bytes_to_unicode().values()]
        if None in byte_ids or len(set(encoder.values())) < len(encoder):
            return None, {}
        rising, last_rank, last_id = True, -1, -1
        for (left, right), rank in self.bpe_ranks.items():
            merged_id = encoder.get(left + right)
            if left not in encoder or right not in encoder or merged_id is None:
                return None, {}
            rising = rising and rank > last_rank and merged_id > last_id
            last_rank, last_id = rank, merged_id
        if max(encoder.values()) >> _PAIR_SHIFT:
            return None, {}
        pairs = {}
        for (left, right), rank in self.bpe_ranks.items():
            merged_id = encoder[left + right]
            value = merged_id if rising else rank << _RANK_SHIFT | merged_id
            pairs[encoder[left] << _PAIR_SHIFT | encoder[right]] = value
        return byte_ids, pairs  # type: ignore[return-value]

    def encode_ordinary(self, text: str) -> list[int]:
        """Encodes text with no special-token handling. `text` must be a `str` (not checked)."""
        word_ids = self._word_cache.__getitem__
        if len(text) <= CHUNK_CHARS and text.isascii():  # The common short call, in one step.
            return list(chain.from_iterable(map(word_ids, ascii_words(text))))
        ids: list[int] = []
        extend = ids.extend
        piece_ids = self._piece_cache.__getitem__
        flat = False  # Flat mode: chunks gather in `pending`, then go to `_encode_pending`.
        pending: list[str] = []
        pending_chars = 0
        window = [0, 0]  # Characters seen and missed in cache mode since the mode was last chosen.
        # Chunk by chunk: the word lists stay small (no 60 MB list for 5 MB of text).
        for chunk in _ascii_and_other_chunks(text):
            if flat:
                pending.append(chunk)
                pending_chars += len(chunk)
                if pending_chars >= _BATCH_CHARS:
                    flat = self._encode_pending(pending, window, extend)
                    pending, pending_chars = [], 0
            elif chunk.isascii():
                switch = self._encode_ascii(chunk, window, extend)
                if switch is not None:
                    flat = True
                    pending.append(chunk[switch:])
                    pending_chars += len(chunk) - switch
            else:  # Unicode pre-tokenization is slow: pieces are cached whole.
                extend(chain.from_iterable(map(piece_ids, split_pieces(chunk))))
        if pending:
            self._encode_pending(pending, window, extend)
        return ids

    def _encode_ascii(self, text: str, window: list[int],
                      extend: Callable[[Iterable[int]], None]) -> int | None:
        """Encodes ASCII text through the word cache until flat mode pays; returns where it would.

        The text goes in pieces of about `CHUNK_CHARS`, cut at `word_end_cut` (each pre-tokenizes
        as in context); `window` holds the characters seen and missed since the mode was last
        chosen. Returns None when all of the text was encoded, else the index where the rest is
        left for flat mode.
        """
        start, size = 0, len(text)
        while start < size:
            end = size if size - start < 2 * CHUNK_CHARS else word_end_cut(text, start + CHUNK_CHARS)
            window[1] += self._encode_cached(text[start:end], extend)
            window[0] += end - start
            start = end
            if window[0] >= _WINDOW_CHARS:
                hostile = window[1] > _ENTER_FLAT * window[0]
                window[:] = [0, 0]
                if hostile and self._batch_merger() is not None:
                    return start
        return None

    def _encode_pending(self, chunks: list[str], window: list[int],
                        extend: Callable[[Iterable[int]], None]) -> bool:
        """Encodes the chunks gathered in flat mode, switching modes as needed; returns the mode.

        Flat mode goes a batch of about `_BATCH_CHARS` at a time, each begun by a probe: when
        the cache holds the words of all but `_LEAVE_FLAT` of the characters of its first
        `_PROBE_CHARS` of ASCII text, cache mode resumes (`_encode_ascii`), which returns to flat
        mode after a window of misses. Flat mode does not fill the cache, so ordinary text after
        hostile text stays in flat mode unless the cache knows its words from before.
        """
        pieces: list[str] = []
        for chunk in chunks:  # Long ASCII chunks are cut, to bound the batches' memory.
            if len(chunk) > 2 * _BATCH_CHARS and chunk.isascii():
                pieces += split_chunks(chunk, _BATCH_CHARS, word_ends=True)
            else:
                pieces.append(chunk)
        piece_ids = self._piece_cache.__getitem__
        flat = True
        k = 0
        while k < len(pieces):
            if flat:
                k, flat = self._encode_flat_batch(pieces, k, extend)
                continue
            piece = pieces[k]
            if piece.isascii():
                switch = self._encode_ascii(piece, window, extend)
                if switch is not None:
                    pieces[k] = piece[switch:]
                    flat = True
                    continue
            else:
                extend(chain.from_iterable(map(piece_ids, split_pieces(piece))))
            k += 1
        return flat

    def _encode_flat_batch(self, pieces: list[str], k: int,
                           extend: Callable[[Iterable[int]], None]) -> tuple[int, bool]:
        """One flat batch from `pieces[k]` on, unless its probe finds words the cache holds.

        The probe only looks words up: encoding them through the cache would cost a Python
        merge a miss (~20 ms of the ~300 ms of 1 MB of space-free prose), and the words it put
        in the cache would make the same text look ordinary when encoded again. Returns the
        next piece and the mode.
        """
        cache = self._word_cache
        probed = missed = 0
        for piece in pieces[k:]:
            if probed >= _PROBE_CHARS:
                break
            if piece.isascii():
                words = ascii_words(piece[:word_end_cut(piece, _PROBE_CHARS - probed)])
                missed += sum(map(len, filterfalse(cache.__contains__, words)))
                probed += sum(map(len, words))
        if probed >= _PROBE_CHARS and missed < _LEAVE_FLAT * probed:
            return k, False
        batch: list[str] = []
        batch_chars = 0
        while k < len(pieces) and batch_chars < _BATCH_CHARS:
            batch.append(pieces[k])
            batch_chars += len(pieces[k])
            k += 1
        self._encode_flat(batch, extend)
        return k, True

    def _encode_cached(self, text: str, extend: Callable[[Iterable[int]], None]) -> int:
        """Encodes ASCII text word by word through the word cache; returns the characters missed."""
        cache = self._word_cache
        missed = cache.missed_chars
        extend(chain.from_iterable(map(cache.__getitem__, ascii_words(text))))
        return cache.missed_chars - missed

    def _encode_flat(self, chunks: list[str], extend: Callable[[Iterable[int]], None]) -> None:
        """Encodes consecutive chunks in NumPy merge rounds (`BatchMerger.encode`), no caches.

        Runs of ASCII chunks are pre-tokenized in one pass each; the few others by
        `pretokenize`, their word lengths counted in UTF-8 bytes.
        """
        texts, lengths = [], []
        for ascii, run in groupby(chunks, str.isascii):
            text = "".join(run)
            if ascii:
                words = ascii_words(text)
                lengths.append(np.fromiter(map(len, words), np.intp, len(words)))
            else:
                words = pretokenize(text)
                lengths.append(np.fromiter((len(w.encode("utf-8")) for w in words), np.intp, len(words)))
            texts.append(text)
        data = "".join(texts).encode("utf-8")
        extend(self._batch_merger().encode(data, np.concatenate(lengths)).tolist())  # type: ignore[union-attr]

    def _batch_merger(self) -> BatchMerger | None:
        """The NumPy merger, built on first use; None where the merge table does not allow it."""
        if self._merger is False:
            exact = self._byte_ids is not None and BatchMerger.applies(self._pair_ids, _PAIR_SHIFT)
            self._merger = None
            if exact:
                self._merger = BatchMerger(self._byte_ids, self._pair_ids, _PAIR_SHIFT,  # type: ignore[arg-type]
                                           self._merge_any)
        return self._merger  # type: ignore[return-value]

    def _merge_any(self, ids: list[int]) -> list[int]:
        return self._merge_ids_heap(ids) if len(ids) > _HEAP_MIN_SYMBOLS else self._merge_ids(ids)

    def clear_cache(self) -> None:
        """Empties the word and piece caches (for cold-cache timings or to free memory)."""
        self._word_cache.clear()
        self._piece_cache.clear()

    def cache_contents(self) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
        """Copies of the word and piece caches, e.g. to start worker processes warm."""
        return dict(self._word_cache), dict(self._piece_cache)

    def fill_caches(
        self, words: Mapping[str, tuple[int, ...]], pieces: Mapping[str, tuple[int, ...]]
    ) -> None:
        """Adds cache entries made by a tokenizer with the same vocabulary and merges.

        Args:
            words: The word cache entries of its `cache_contents()`.
            pieces: The piece cache entries of its `cache_contents()`.
        """
        for cache, entries in ((self._word_cache, words), (self._piece_cache, pieces)):
            if len(cache) + len(entries) > cache._max_entries:
                cache.clear()
            cache.update(entries)

    def _encode_piece(self, piece: str) -> tuple[int, ...]:
        return tuple(chain.from_iterable(map(self._word_cache.__getitem__, pretokenize(piece))))

    def _encode_word(self, word: str) -> tuple[int, ...]:
        raw = word.encode("utf-8")
        if self.whole_word_fast_path:
            token_id = self._bytes_to_id.get(raw)
            if token_id is not None:
                return (token_id,)
        if self._byte_ids is None:
            encoder = self.encoder
            symbols = raw.decode("latin-1").translate(self._byte_table)
            return tuple(encoder[s] for s in self.merge(symbols))
        ids = list(map(self._byte_ids.__getitem__, raw))
        if len(raw) > _HEAP_MIN_SYMBOLS:
            return tuple(self._merge_ids_heap(ids))
        return tuple(self._merge_ids(ids))

    def _merge_ids(self, ids: list[int]) -> list[int]:
        """`merge` on token ids: the same loop with no string building and no final lookup."""
        get = self._pair_ids.get
        # ranks[k] is rank << 32 | merged id for the pair (ids[k], ids[k + 1]); _NO_MERGE if none.
        ranks = list(map(get, map(or_, map(lshift, ids, repeat(_PAIR_SHIFT)), ids[1:]), repeat(_NO_MERGE)))
        while ranks:
            best = min(ranks)
            if best == _NO_MERGE:
                break
            i = ranks.index(best)
            merged = ids[i] = best & _ID_MASK
            del ids[i + 1]
            del ranks[i]
            if i > 0:
                ranks[i - 1] = get(ids[i - 1] << _PAIR_SHIFT | merged, _NO_MERGE)
            if i < len(ranks):
                ranks[i] = get(merged << _PAIR_SHIFT | ids[i + 1], _NO_MERGE)
        return ids

    def _merge_ids_heap(self, ids: list[int]) -> list[int]:
        """`_merge_ids` in O(n log n), for long pre-tokens (a linked list and a heap of pairs).

        A heap entry is (rank << 32 | merged id, position): the lowest rank pops first and the
        leftmost among equal ranks. An entry is stale when the pair now at its position has
        another value (a neighbour was merged since): its value is looked up again on pop.
        """
        get = self._pair_ids.get
        n = len(ids)
        nxt = list(range(1, n + 1))
        prv = list(range(-1, n - 1))
        keys = map(or_, map(lshift, ids, repeat(_PAIR_SHIFT)), ids[1:])
        heap = [(value, i) for i, value in enumerate(map(get, keys)) if value is not None]
        heapq.heapify(heap)
        pop, push = heapq.heappop, heapq.heappush
        while heap:
            value, i = pop(heap)
            j = nxt[i]
            if j >= n or ids[i] < 0 or get(ids[i] << _PAIR_SHIFT | ids[j]) != value:
                continue
            merged = ids[i] = value & _ID_MASK
            ids[j] = -1  # Merged away.
            k = nxt[i] = nxt[j]
            if k < n:
                prv[k] = i
                right = get(merged << _PAIR_SHIFT | ids[k])
                if right is not None:
                    push(heap, (right, i))
            h = prv[i]
            if h >= 0:
                left = get(ids[h] << _PAIR_SHIFT | merged)
                if left is not None:
                    push(heap, (left, h))
        return [i for i in ids if i >= 0]

    def merge(self, symbols: str) -> list[str]:
        """Applies the merges to one pre-token written in `bytes_to_unicode` characters.

        One merge at a time, lowest rank first and leftmost among equal ranks, as tiktoken and
        HF `tokenizers` do. (GPT-2's `encoder.py` merges every occurrence of the best pair in
        one pass; the results agree for GPT-2's merges.)

        >>> from gpt2_tokenizer import GPT2Tokenizer
        >>> GPT2Tokenizer.from_pretrained().bpe.merge("Ġtokenizer")
        ['Ġtoken', 'izer']
        """
        if len(symbols) > _HEAP_MIN_SYMBOLS:
            return self._merge_heap(list(symbols))
        word = list(symbols)
        get = self.bpe_ranks.get
        # ranks[k] is the rank of the pair (word[k], word[k + 1]); _NO_MERGE when none.
        ranks = list(map(get, zip(word, word[1:]), repeat(_NO_MERGE)))
        while ranks:
            best = min(ranks)
            if best == _NO_MERGE:
                break
            i = ranks.index(best)
            word[i] += word.pop(i + 1)
            del ranks[i]
            if i > 0:
                ranks[i - 1] = get((word[i - 1], word[i]), _NO_MERGE)
            if i < len(ranks):
                ranks[i] = get((word[i], word[i + 1]), _NO_MERGE)
        return word

    def _merge_heap(self, word: list[str]) -> list[str]:
        """Same result as the simple loop in O(n log n), for long pre-tokens."""
        ranks = self.bpe_ranks
        n = len(word)
        nxt = list(range(1, n + 1))
        prv = list(range(-1, n - 1))
        alive = [True] * n
        heap = []
        for i in range(n - 1):
            rank = ranks.get((word[i], word[i + 1]))
            if rank is not None:
                heap.append((rank, i, word[i], word[i + 1]))
        heapq.heapify(heap)
        while heap:
            rank, i, left, right = heapq.heappop(heap)
            j = nxt[i] if alive[i] else n
            if j >= n or word[i] != left or word[j] != right:
                continue  # Stale entry: one side was merged away since it was pushed.
            word[i] = left + right
            alive[j] = False
            nxt[i] = nxt[j]
            if nxt[j] < n:
                prv[nxt[j]] = i
            for a, b in ((prv[i], i), (i, nxt[i])):
                if a >= 0 and b < n:
                    new_rank = ranks.get((word[a], word[b]))
                    if new_rank is not None:
                        heapq.heappush(heap, (new_rank, a, word[a], word[b]))
        return [word[i] for i in range(n) if alive[i]]

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Concatenates the bytes of ids that are known to be valid (not checked)."""
        return b"".join(map(self.id_to_bytes.__getitem__, ids))  # type: ignore[arg-type]
