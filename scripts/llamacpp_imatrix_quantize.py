#!/usr/bin/env python3
"""llama.cpp's quantizer with an importance matrix taken from a tenpak calibration file.

Usage: llamacpp_imatrix_quantize.py IN_F32.gguf CAL.safetensors OUT.gguf TYPE [NTHREAD]

TYPE is a llama.cpp file type name (Q4_K_M, IQ4_NL, Q3_K_M, ...). The importance of each weight
is the E[x_j^2] that `tenpak calibrate` measured on its input (the corpus tokens after the
evaluation slice), handed to llama_model_quantize through llama-cpp-python, so llama.cpp and
tenpak's calibrated codecs see the same calibration tokens. Prints the seconds the quantizer took.
"""
import ctypes
import json
import struct
import sys
import time

import llama_cpp
import numpy as np


def read_calibration(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        meta = json.loads(header["__metadata__"]["tenpak.calibration"])
        base = 8 + n
        out = {}
        for weight, key in meta["inputs"].items():
            t = header[key]
            assert t["dtype"] == "F32" and len(t["shape"]) == 1, key
            s, e = t["data_offsets"]
            f.seek(base + s)
            out[weight] = np.frombuffer(f.read(e - s), dtype="<f4").copy()
    return meta, out


def quantize(src, cal, dst, ftype, nthread=2):
    """Quantize src to dst as llama.cpp type `ftype`, with the importance matrix of the
    calibration file `cal` (None: without one); returns the quantizer's seconds."""
    p = llama_cpp.llama_model_quantize_default_params()
    p.nthread = nthread
    p.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    keep = []
    if cal is not None:
        _, imat = read_calibration(cal)
        entries = (llama_cpp.llama_model_imatrix_data * (len(imat) + 1))()
        for i, (name, v) in enumerate(sorted(imat.items())):
            arr = np.ascontiguousarray(v, dtype=np.float32)
            keep.append(arr)
            entries[i].name = name.encode()
            entries[i].data = arr.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            entries[i].size = arr.size
        entries[len(imat)].name = None  # the list ends with a null name
        keep.append(entries)
        p.imatrix = ctypes.cast(entries, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    t = time.time()
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p))
    assert rc == 0, f"llama_model_quantize returned {rc}"
    return time.time() - t


def main():
    src, cal, dst, ftype = sys.argv[1:5]
    nthread = int(sys.argv[5]) if len(sys.argv) > 5 else 2
    meta, _ = read_calibration(cal)
    secs = quantize(src, cal, dst, ftype, nthread)
    print(f"{ftype} with imatrix from corpus token {meta['slice']['first_token']} "
          f"({meta['slice']['windows']} windows): {secs:.2f} s")


if __name__ == "__main__":
    main()
