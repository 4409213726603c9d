"""tenpak: read ``.tpk`` files the way the ``safetensors`` package reads its files, and compress
or decompress models through the tenpak library.

>>> import tenpak
>>> tensors = tenpak.load_file("model.tpk")               # dict of numpy arrays
>>> with tenpak.safe_open("model.tpk", framework="pt") as f:
...     w = f.get_tensor("model.embed_tokens.weight")       # decodes only this tensor
...     rows = f.get_slice("model.embed_tokens.weight")[:16]  # only the chunks it needs
>>> tenpak.compress("model.safetensors", "model.tpk", codec="int4_g32")

Tensors come back in the dtype the file decodes to (the source's for lossless codecs, f32 for
most lossy ones). numpy has no bfloat16: with ``framework="np"`` bf16 tensors come back as
float32 (exactly), with ``framework="pt"`` as ``torch.bfloat16``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from ._tenpak import Reader, TenpakError, __version__
from ._tenpak import compress as _compress
from ._tenpak import decompress as _decompress

__all__ = ["load_file", "safe_open", "compress", "decompress", "TenpakError", "__version__"]

PathLike = Union[str, "os.PathLike[str]"]

# tenpak dtype names -> numpy dtypes (bf16 and FP8 have no numpy type: see _to_numpy).
_NP = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}


def _to_numpy(raw: bytes, dtype: str, shape: List[int]) -> np.ndarray:
    if dtype == "BF16":
        # bf16 is the top half of an f32: widening is exact.
        u = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
        return u.view(np.float32).reshape(shape)
    if dtype not in _NP:
        raise TenpakError(f"dtype {dtype} has no numpy type; use framework='pt'")
    return np.frombuffer(raw, dtype=_NP[dtype]).reshape(shape).copy()


def _to_torch(raw: bytes, dtype: str, shape: List[int]):
    import torch

    names = {"BF16": torch.bfloat16, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
    tdt = names.get(dtype)
    if tdt is None:
        return torch.from_numpy(_to_numpy(raw, dtype, shape))
    buf = bytearray(raw)  # torch.frombuffer wants a writable buffer
    if not buf:
        return torch.empty(shape, dtype=tdt)
    return torch.frombuffer(buf, dtype=tdt).reshape(shape)


def _convert(framework: str):
    if framework in ("np", "numpy"):
        return _to_numpy
    if framework in ("pt", "torch"):
        return _to_torch
    raise ValueError(f"framework {framework!r}: expected 'np' or 'pt'")


class _Slice:
    """``f.get_slice(name)[a:b]``: rows a..b of the first dimension."""

    def __init__(self, f: "safe_open", name: str):
        self._f, self._name = f, name
        self._dtype, self._shape = f._reader.info(name)

    def get_shape(self) -> List[int]:
        return list(self._shape)

    def get_dtype(self) -> str:
        return self._dtype

    def __getitem__(self, index: Any):
        rest: Tuple = ()
        if isinstance(index, tuple):
            index, rest = index[0], index[1:]
        if not self._shape:
            raise IndexError("a scalar tensor has no rows to slice")
        n = self._shape[0]
        if isinstance(index, int):
            i = index + n if index < 0 else index
            if not 0 <= i < n:
                raise IndexError(f"row {index} of {n}")
            t = self._rows(i, i + 1)[0]
            return t[rest] if rest else t
        if not isinstance(index, slice):
            raise TypeError("index the first dimension with an int or a slice")
        start, stop, step = index.indices(n)
        t = self._rows(start, max(start, stop))[::step] if step > 0 else self._rows(0, n)[index]
        return t[(slice(None),) + rest] if rest else t

    def _rows(self, start: int, stop: int):
        raw = self._f._reader.read_rows(self._name, start, stop)
        return self._f._conv(raw, self._dtype, [stop - start] + list(self._shape[1:]))


class safe_open:
    """Open a ``.tpk`` (or a multi-file set's ``.tpk.index.json``) for reading, like
    ``safetensors.safe_open``; usable as a context manager."""

    def __init__(self, filename: PathLike, framework: str = "np", device: str = "cpu"):
        if device != "cpu":
            raise ValueError("tenpak decodes on the CPU: device must be 'cpu'")
        self._conv = _convert(framework)
        self._reader = Reader(os.fspath(filename))

    def __enter__(self) -> "safe_open":
        return self

    def __exit__(self, *exc) -> None:
        self._reader = None

    def keys(self) -> List[str]:
        return self._reader.keys()

    def metadata(self) -> Dict[str, str]:
        return self._reader.metadata()

    def get_tensor(self, name: str):
        """Decode one tensor (only its chunks are read)."""
        dtype, shape = self._reader.info(name)
        return self._conv(self._reader.read(name), dtype, list(shape))

    def get_slice(self, name: str) -> _Slice:
        return _Slice(self, name)


def load_file(filename: PathLike, framework: str = "np") -> Dict[str, Any]:
    """Every tensor of a ``.tpk``, decoded, as ``{name: array}``."""
    with safe_open(filename, framework=framework) as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def compress(src: PathLike, dst: PathLike, codec: str = "byteplane", config: Optional[PathLike] = None,
             force: bool = False, threads: Optional[int] = None) -> Dict[str, Any]:
    """Compress a model file or folder into ``dst`` (.tpk); returns the report (as ``--json``)."""
    cfg = os.fspath(config) if config is not None else None
    return json.loads(_compress(os.fspath(src), os.fspath(dst), codec, cfg, force, threads))


def decompress(src: PathLike, dst: PathLike, dtype: str = "source", force: bool = False,
               threads: Optional[int] = None, format: Optional[str] = None) -> Dict[str, Any]:
    """Decode a ``.tpk`` into ``dst``: .safetensors, a folder ending in ``/``, or .gguf
    (``format`` = "safetensors" or "gguf" overrides the name)."""
    return json.loads(_decompress(os.fspath(src), os.fspath(dst), dtype, force, threads, format))
