#!/usr/bin/env bash
# Whole-model quantization speed on SmolLM2-135M, one thread, in one run: tenpak compress with
# bfp8 and bfp4 against llama.cpp's quantizer (llama_model_quantize) making Q8_0 and Q4_0, both
# from the same F32 GGUF (SmolLM2's Q4_1 weights dequantized; scripts/smollm2_f32_gguf.py).
# MB/s are f32 input megabytes (10^6 bytes) per second of wall time, best of three runs.
# tenpak's time includes what `compress` always does: decoding every chunk again to measure the
# error, and writing the file.
#
# Needs: python3 with numpy, gguf and llama-cpp-python
# (pip install gguf; CMAKE_ARGS="-DGGML_NATIVE=ON" pip install llama-cpp-python, which builds llama.cpp).
source "$(dirname "$0")/figures-setup.sh"
python3 - "$T" "$work" <<'PY'
import ctypes, os, subprocess, sys, time
import llama_cpp
T, work = sys.argv[1], sys.argv[2]
src = os.path.join(work, "smollm2-f32.gguf")
# f32 bytes of the tensors (the file minus its metadata is within 0.5% of this).
from gguf import GGUFReader
n = sum(int(t.n_elements) for t in GGUFReader(src).tensors) * 4

def best(f):
    ts = []
    for _ in range(3):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return min(ts)

def tenpak(codec):
    out = os.path.join(work, codec + ".tpk")
    subprocess.run([T, "--threads", "1", "compress", src, "-o", out, "--codec", codec,
                    "--force", "-q"], check=True, stdout=subprocess.DEVNULL)
    return out

def llama(ftype, name):
    out = os.path.join(work, name + ".gguf")
    p = llama_cpp.llama_model_quantize_default_params()
    p.nthread = 1
    p.ftype = ftype
    rc = llama_cpp.llama_model_quantize(src.encode(), out.encode(), ctypes.byref(p))
    assert rc == 0, rc
    return out

rows = []
for codec in ["bfp8", "bfp4"]:
    t = best(lambda: tenpak(codec))
    rows.append((f"tenpak {codec}", t, os.path.getsize(os.path.join(work, codec + ".tpk"))))
llama_cpp.llama_backend_init()
for ftype, name in [(llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "Q8_0"), (llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0, "Q4_0")]:
    t = best(lambda: llama(ftype, name))
    rows.append((f"llama.cpp {name}", t, os.path.getsize(os.path.join(work, name + ".gguf"))))
print(f"input: {n/1e6:.1f} MB of f32 weights ({n//4} parameters), one thread, best of 3")
print(f"{'quantizer':<18} {'seconds':>8} {'MB/s':>8} {'output bytes':>14} {'bits/weight':>12}")
for name, t, size in rows:
    print(f"{name:<18} {t:8.3f} {n/1e6/t:8.1f} {size:14d} {8*size/(n/4):12.3f}")
PY
