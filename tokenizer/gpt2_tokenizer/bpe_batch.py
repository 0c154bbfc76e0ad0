"""Byte-level BPE for many words at once: merge rounds in NumPy, for text that misses the caches.

Text without spaces (base64, minified code, prose with its whitespace removed) is made of words
that each appear once, so the word cache never helps and the per-word merge loop pays Python's
cost for every merge. `BatchMerger.merge_words` merges all the words of a batch together, one
round at a time: in each round every word merges its lowest-rank pair, at every occurrence.

Why a round equals the sequential algorithm (tiktoken's `_byte_pair_merge`: lowest rank first,
leftmost among equal ranks). Let (a, b) be a word's lowest-rank pair, rank r. Merging one
occurrence changes only the two pairs beside it, into pairs holding the new token ab; every
merge that uses ab ranks after the merge that made it (`BatchMerger.applies` checks this of the
vocabulary), so those pairs rank above r and the next step merges (a, b) again, at the leftmost
occurrence left. An occurrence is only ever lost to an overlap ("aaa": the first merge uses the
middle a), so the sequential steps of rank r merge exactly the non-overlapping occurrences taken
from left to right; then no pair of rank r is left and none was created (ab is neither a nor b).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

__all__ = ["NO_MERGE", "BatchMerger"]

NO_MERGE = 1 << 62
"""Pair value of a pair that does not merge (and of a word's last symbol, which has no pair)."""

_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: the top bits of key * 2**64 / phi.
_EMPTY = -1
_TAIL_WORDS = 8  # With this few words left, the per-word merge beats a NumPy round.
_BUCKET_EDGES = np.unique(np.geomspace(1, 1 << 20, 80).astype(np.intp)) - 1  # 0, 1, 2, ... 1.19x apart


class BatchMerger:
    """The pair table of `BytePairEncoding` as NumPy arrays, and the batched merge rounds.

    Args:
        byte_ids: Id of each byte value (256 entries).
        pair_ids: `BytePairEncoding._pair_ids`: left id << `pair_shift` | right id -> pair value,
            whose low 32 bits are the merged id; a lower value ranks first.
        pair_shift: The key shift.
        finish: The per-word merge, to finish the last few long words from their current ids.
    """

    def __init__(
        self,
        byte_ids: Sequence[int],
        pair_ids: Mapping[int, int],
        pair_shift: int,
        finish: Callable[[list[int]], list[int]],
    ) -> None:
        self._shift = pair_shift
        self._finish = finish
        keys = np.fromiter(pair_ids.keys(), np.int64, len(pair_ids))
        values = np.fromiter(pair_ids.values(), np.int64, len(pair_ids))
        self._bits = max(8, (4 * len(keys)).bit_length())  # Load <= 1/4: ~1.1 probes a lookup.
        self._table_keys, self._table_values = self._hash_table(keys, values)
        self._byte_ids = np.asarray(byte_ids, np.int64)
        left, right = np.divmod(np.arange(1 << 16, dtype=np.int64), 256)
        # (B1 << 8 | B2) -> pair value of two bytes: the first round needs no hashing.
        self._byte_pairs = self.lookup(self._byte_ids[left], self._byte_ids[right])

    @staticmethod
    def applies(pair_ids: Mapping[int, int], pair_shift: int) -> bool:
        """True when every merge ranks after the merges that make its two parts (see above)."""
        mask = (1 << pair_shift) - 1
        made_by: dict[int, int] = {}  # token id -> highest pair value that makes it
        for value in pair_ids.values():
            merged = value & 0xFFFFFFFF
            made_by[merged] = max(made_by.get(merged, -1), value)
        return all(
            made_by.get(key >> pair_shift, -1) < value and made_by.get(key & mask, -1) < value
            for key, value in pair_ids.items()
        )

    def _slots(self, keys: np.ndarray) -> np.ndarray:
        return ((keys.view(np.uint64) * _HASH_MUL) >> np.uint64(64 - self._bits)).astype(np.intp)

    def _hash_table(self, keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Open addressing with linear probing, filled a probe distance at a time."""
        size = 1 << self._bits
        table_keys = np.full(size, _EMPTY, np.int64)
        table_values = np.full(size, NO_MERGE, np.int64)  # An empty slot reads as no merge.
        home = self._slots(keys)
        pending = np.arange(len(keys))
        distance = 0
        while len(pending):
            slots = (home[pending] + distance) & (size - 1)
            free = np.flatnonzero(table_keys[slots] == _EMPTY)
            # Of the keys that want one free slot, the first takes it; the rest probe on.
            _, first = np.unique(slots[free], return_index=True)
            placed = free[first]
            table_keys[slots[placed]] = keys[pending[placed]]
            table_values[slots[placed]] = values[pending[placed]]
            taken = np.zeros(len(pending), bool)
            taken[placed] = True
            pending = pending[~taken]
            distance += 1
        return table_keys, table_values

    def lookup(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Pair values of (left, right) id pairs (int64 arrays); `NO_MERGE` where none."""
        keys = left << self._shift | right
        slots = self._slots(keys)
        found = self._table_keys[slots]
        out = self._table_values[slots]
        todo = np.flatnonzero((found != keys) & (found != _EMPTY))  # Another key is there.
        size_mask = (1 << self._bits) - 1
        while len(todo):
            slots[todo] = (slots[todo] + 1) & size_mask
            found = self._table_keys[slots[todo]]
            out[todo] = self._table_values[slots[todo]]
            todo = todo[(found != keys[todo]) & (found != _EMPTY)]
        return out

    def merge_words(self, data: bytes, lengths: Sequence[int]) -> list[tuple[int, ...]]:
        """BPE ids of each word, the words given as their UTF-8 bytes laid end to end.

        Words of similar length are merged together in a padded matrix (`_merge_rows`).

        Shapes: `data` holds sum(lengths) bytes; one tuple of ids per length (all lengths > 0).
        """
        raw = np.frombuffer(data, np.uint8)
        sizes = np.asarray(lengths, np.intp)
        starts = np.cumsum(sizes) - sizes
        order = np.argsort(sizes, kind="stable")
        results: list[tuple[int, ...]] = [()] * len(sizes)
        # Buckets of lengths up to ~1.25x their shortest keep the padding small.
        edges = np.searchsorted(sizes[order], _BUCKET_EDGES, side="right")
        for lo, hi in zip(edges[:-1].tolist(), edges[1:].tolist()):
            if hi > lo:
                self._merge_rows(raw, starts[order[lo:hi]], sizes[order[lo:hi]], order[lo:hi], results)
        return results

    def _merge_rows(self, raw: np.ndarray, starts: np.ndarray, sizes: np.ndarray, words: np.ndarray,
                    results: list) -> None:  # type: ignore[type-arg]
        """Merges words of similar length, one per row of a matrix, round by round.

        Flat cell index = row * width + column. A merge keeps its left cell and kills the right
        one (id -1); `nxt` and `prv` link the live cells of a row. Every row ends in padding
        (id -1), so a word's last live cell links to a cell that pairs with nothing.
        """
        rows, width = len(sizes), int(sizes[-1]) + 1
        column = np.arange(width)
        real = column < sizes[:, None]  # (rows, width)
        ids = np.full((rows, width), -1, np.int64)
        ids[real] = self._byte_ids[raw[(starts[:, None] + column)[real]]]
        ids = ids.reshape(-1)
        values = np.full(rows * width, NO_MERGE, np.int64)
        pairs = np.flatnonzero((column < sizes[:, None] - 1).reshape(-1))  # Cells with a right pair.
        at = starts[pairs // width] + pairs % width
        values[pairs] = self._byte_pairs[raw[at].astype(np.intp) << 8 | raw[at + 1]]
        nxt = np.arange(1, rows * width + 1)
        prv = np.arange(-1, rows * width - 1)
        while rows > _TAIL_WORDS:
            grid = values.reshape(rows, width)
            best = grid.min(axis=1)
            done = best == NO_MERGE
            if done.any():
                self._emit(ids.reshape(rows, width)[done], words[done], results)
                keep = ~done
                shift = (np.cumsum(done) * width)[keep][:, None]
                rows = int(keep.sum())
                if not rows:
                    return
                ids = ids.reshape(-1, width)[keep].reshape(-1)
                values = grid[keep].reshape(-1)
                nxt = (nxt.reshape(-1, width)[keep] - shift).reshape(-1)
                prv = (prv.reshape(-1, width)[keep] - shift).reshape(-1)
                words, best = words[keep], best[keep]
                if rows <= _TAIL_WORDS:
                    break
            at = np.flatnonzero(values.reshape(rows, width) == best[:, None])
            at = self._without_overlaps(at, nxt)
            right = nxt[at]
            ids[at] = values[at] & 0xFFFFFFFF
            ids[right] = -1
            values[right] = NO_MERGE
            after = nxt[right]
            nxt[at] = after
            prv[after] = at
            changed = np.concatenate([prv[at[at % width != 0]], at])
            right_ids = ids[nxt[changed]]
            new = self.lookup(ids[changed], right_ids)
            new[right_ids < 0] = NO_MERGE
            values[changed] = new
        self._finish_tail(ids.reshape(rows, width), words, results)

    @staticmethod
    def _without_overlaps(at: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """Drops every second pair of each run of chained pairs, from the left (pairs (a, a))."""
        if len(at) < 2:
            return at
        chained = nxt[at[:-1]] == at[1:]
        if not chained.any():
            return at
        index = np.arange(len(at))
        run_start = np.concatenate([[True], ~chained])
        start = np.maximum.accumulate(np.where(run_start, index, 0))
        return at[(index - start) % 2 == 0]

    @staticmethod
    def _emit(grid: np.ndarray, words: np.ndarray, results: list) -> None:  # type: ignore[type-arg]
        live = grid >= 0
        flat = grid[live].tolist()
        ends = np.cumsum(live.sum(axis=1)).tolist()
        slices = map(slice, [0, *ends[:-1]], ends)
        for word, ids in zip(words.tolist(), map(tuple, map(flat.__getitem__, slices))):
            results[word] = ids

    def _finish_tail(self, grid: np.ndarray, words: np.ndarray, results: list) -> None:  # type: ignore[type-arg]
        for word, row in zip(words.tolist(), grid.tolist()):
            results[word] = tuple(self._finish([i for i in row if i >= 0]))
