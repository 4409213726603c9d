#!/usr/bin/env python3
"""Write a synthetic model with one large tensor, streaming (memory stays small whatever the size).

    make_big_model.py safetensors OUT.safetensors GIB    one f32 tensor of GIB GiB, [rows, 8192]
    make_big_model.py gguf OUT.gguf GIB                  one Q8_0 tensor of about GIB GiB

Values: Gaussian, standard deviation 0.02 (a weight matrix's scale), seeded, so runs repeat.
Used by scripts/memory-bench.sh.
"""
import json
import struct
import sys

import numpy as np

COLS = 8192
PIECE_ROWS = 1024


def safetensors(path, gib):
    rows = int(gib * (1 << 30)) // (4 * COLS)
    header = {"weight": {"dtype": "F32", "shape": [rows, COLS], "data_offsets": [0, rows * COLS * 4]}}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    rng = np.random.default_rng(17)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for r in range(0, rows, PIECE_ROWS):
            n = min(PIECE_ROWS, rows - r)
            f.write((rng.standard_normal((n, COLS), dtype=np.float32) * 0.02).tobytes())


def gguf_string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf(path, gib):
    # Q8_0: 34 bytes per 32 elements (an f16 scale, 32 int8 codes).
    rows = int(gib * (1 << 30)) // (COLS // 32 * 34)
    out = bytearray()
    out += b"GGUF" + struct.pack("<IQQ", 3, 1, 1)
    out += gguf_string("general.architecture") + struct.pack("<I", 8) + gguf_string("synthetic")
    out += gguf_string("blk.0.weight") + struct.pack("<I", 2) + struct.pack("<QQ", COLS, rows)
    out += struct.pack("<IQ", 8, 0)
    out += b"\0" * (-len(out) % 32)
    rng = np.random.default_rng(17)
    block = np.dtype([("d", "<f2"), ("q", "i1", 32)])
    with open(path, "wb") as f:
        f.write(out)
        for r in range(0, rows, PIECE_ROWS):
            n = min(PIECE_ROWS, rows - r) * COLS // 32
            b = np.empty(n, dtype=block)
            b["d"] = np.float16(0.02 / 40)
            b["q"] = np.clip(rng.standard_normal((n, 32)) * 40, -127, 127).astype(np.int8)
            f.write(b.tobytes())


if __name__ == "__main__":
    kind, path, gib = sys.argv[1], sys.argv[2], float(sys.argv[3])
    {"safetensors": safetensors, "gguf": gguf}[kind](path, gib)
