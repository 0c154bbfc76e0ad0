"""A loss-curve PNG with no plotting dependency: lines rasterised into an RGB buffer and
written with zlib."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import numpy as np

from gpt2_core._io import atomic_write_bytes

COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]


def _line(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, color) -> None:
    n = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
    xs = np.linspace(x0, x1, n).round().astype(int)
    ys = np.linspace(y0, y1, n).round().astype(int)
    for dx in (0, 1):
        for dy in (0, 1):
            ok = (ys + dy < img.shape[0]) & (xs + dx < img.shape[1])
            img[ys[ok] + dy, xs[ok] + dx] = color


def line_chart(series: dict[str, Sequence[tuple[float, float]]], width: int = 640,
               height: int = 400) -> np.ndarray:
    """Draw each series of (x, y) points; returns an (H, W, 3) uint8 image with axes."""
    img = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 50, width - 20, 20, height - 40
    points = [p for s in series.values() for p in s]
    if not points:
        return img
    xs, ys = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    x_lo, x_hi = xs.min(), max(xs.max(), xs.min() + 1e-9)
    y_lo, y_hi = ys.min(), max(ys.max(), ys.min() + 1e-9)
    to_px = lambda x, y: (left + (x - x_lo) / (x_hi - x_lo) * (right - left),  # noqa: E731
                          bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top))
    _line(img, left, bottom, right, bottom, (0, 0, 0))
    _line(img, left, top, left, bottom, (0, 0, 0))
    for i in range(5):  # gridlines
        y = top + i * (bottom - top) / 4
        _line(img, left, y, right, y, (225, 225, 225))
    for color, pts in zip(COLORS * 4, series.values()):
        pix = [to_px(x, y) for x, y in pts]
        for (a, b), (c, d) in zip(pix, pix[1:]):
            _line(img, a, b, c, d, color)
        if len(pix) == 1:
            _line(img, pix[0][0] - 2, pix[0][1], pix[0][0] + 2, pix[0][1], color)
    return img


def write_png(path: str, img: np.ndarray) -> None:
    atomic_write_bytes(path, png_bytes(img))


def png_bytes(img: np.ndarray) -> bytes:
    """An (H, W, 3) uint8 image as PNG file contents."""
    height, width, _ = img.shape
    raw = b"".join(b"\x00" + img[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    return png
