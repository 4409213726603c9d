#!/usr/bin/env python3
"""Write an F32 GGUF of SmolLM2: every tensor of the Q4_1 GGUF dequantized (by gguf-py, the same
arithmetic as llama.cpp and tenpak), with the original metadata (architecture, tokenizer), so
llama.cpp's quantizer can load it. Usage: smollm2_f32_gguf.py IN.gguf OUT.gguf
Needs the PyPI packages gguf and numpy."""
import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter
from gguf.quants import dequantize

src, dst = sys.argv[1], sys.argv[2]
r = GGUFReader(src)
arch = r.fields["general.architecture"].contents()
w = GGUFWriter(dst, arch)
for name, f in r.fields.items():
    if name.startswith("GGUF.") or name == "general.architecture":
        continue
    if name == "general.file_type":
        w.add_key_value(name, 0, GGUFValueType.UINT32)  # ALL_F32
        continue
    t = f.types[0]
    sub = f.types[-1] if t == GGUFValueType.ARRAY else None
    w.add_key_value(name, f.contents(), t, sub_type=sub)
for t in r.tensors:
    a = dequantize(t.data, t.tensor_type).astype(np.float32)
    w.add_tensor(t.name, a.reshape([int(d) for d in reversed(t.shape)]))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
