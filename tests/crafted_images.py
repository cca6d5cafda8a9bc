"""Image files made byte by byte for decoder tests: a PNG header claiming any size, any BMP, noise to truncate."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but that carries (almost) no pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def noisy_png() -> bytes:
    """64x64 grey noise: it does not compress, so a prefix of it is a truncated image."""
    out = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("L").save(out, "PNG")
    return out.getvalue()


def bmp(compression: int) -> bytes:
    """A 4x4 24-bit BMP whose header names `compression` (0 is none; 9 is no BMP compression at all)."""
    info = struct.pack("<IiiHHIIiiII", 40, 4, 4, 1, 24, compression, 0, 0, 0, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 48, 0, 0, 54) + info + b"\0" * 48
