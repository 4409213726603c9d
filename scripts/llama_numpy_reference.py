#!/usr/bin/env python3
"""Independent reference for `tenpak eval ppl`: the evaluation procedure of formats-spec/eval.md
written with numpy (f32 matrix products, f64 log-softmax) and llama.cpp's own tokenizer (through
llama-cpp-python), on the GGUF's weights dequantized by the `gguf` package.

It shares no code with tenpak and takes a different road where it can: the GGUF's q/k rows are
used as stored, with llama.cpp's interleaved rotary embedding, where tenpak undoes the row
permutation and rotates halves.

    python3 scripts/llama_numpy_reference.py MODEL.gguf CORPUS.txt WINDOWS > fixture.json

Needs numpy, gguf and llama-cpp-python. Writes per-window NLL sums of the first WINDOWS windows.
"""
import hashlib
import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def main():
    path, corpus, nwin = sys.argv[1], sys.argv[2], int(sys.argv[3])
    r = GGUFReader(path)

    def field(k):
        f = r.fields[k]
        v = f.parts[f.data[0]]
        return v.tobytes().decode() if f.types[0].name == "STRING" else v[0].item()

    n_layer = field("llama.block_count")
    n_head = field("llama.attention.head_count")
    n_kv = field("llama.attention.head_count_kv")
    eps = field("llama.attention.layer_norm_rms_epsilon")
    theta = field("llama.rope.freq_base")
    bos = field("tokenizer.ggml.bos_token_id")
    W = {t.name: dequantize(t.data, t.tensor_type).astype(np.float32).reshape([int(d) for d in reversed(t.shape)]) for t in r.tensors}
    emb = W["token_embd.weight"]
    head = W.get("output.weight", emb)
    d_model = emb.shape[1]
    hd = d_model // n_head

    from llama_cpp import Llama
    llm = Llama(model_path=path, vocab_only=True, verbose=False)
    text = open(corpus, encoding="utf-8").read()
    ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    ctx = 512
    step = ctx - 1
    sl = np.array(ids[: 64 * step], dtype="<i4")
    out = {
        "generator": "scripts/llama_numpy_reference.py",
        "corpus_tokens": len(ids),
        "slice_sha256": hashlib.sha256(sl.tobytes()).hexdigest(),
        "ctx": ctx,
        "windows": [],
    }

    def rms(x, w):
        return (x / np.sqrt((x.astype(np.float32) ** 2).mean(-1, keepdims=True) + eps)) * w

    # llama.cpp's NORM rope: rotate adjacent pairs (2j, 2j+1) of each head.
    pos = np.arange(ctx, dtype=np.float32)[:, None]
    inv = (1.0 / theta ** (np.arange(0, hd, 2, dtype=np.float32) / hd)).astype(np.float32)
    ang = pos * inv
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rope(x):  # x [T, H, hd]
        t = x.shape[0]
        a, b = x[..., 0::2], x[..., 1::2]
        c, s = cos[:t], sin[:t]
        y = np.empty_like(x)
        y[..., 0::2] = a * c - b * s
        y[..., 1::2] = a * s + b * c
        return y

    for w in range(nwin):
        toks = [bos] + ids[w * step:(w + 1) * step]
        T = len(toks)
        x = emb[toks]
        mask = np.triu(np.full((T, T), -np.inf, dtype=np.float32), 1)
        for i in range(n_layer):
            p = f"blk.{i}."
            a = rms(x, W[p + "attn_norm.weight"])
            q = rope((a @ W[p + "attn_q.weight"].T).reshape(T, n_head, hd))
            k = rope((a @ W[p + "attn_k.weight"].T).reshape(T, n_kv, hd))
            v = (a @ W[p + "attn_v.weight"].T).reshape(T, n_kv, hd)
            o = np.empty((T, n_head, hd), dtype=np.float32)
            g = n_head // n_kv
            for h in range(n_head):
                s = q[:, h, :] @ k[:, h // g, :].T / np.float32(np.sqrt(hd)) + mask
                s = np.exp(s - s.max(-1, keepdims=True))
                s /= s.sum(-1, keepdims=True)
                o[:, h, :] = s @ v[:, h // g, :]
            x = x + o.reshape(T, d_model) @ W[p + "attn_output.weight"].T
            a = rms(x, W[p + "ffn_norm.weight"])
            gt = a @ W[p + "ffn_gate.weight"].T
            x = x + ((gt / (1 + np.exp(-gt))) * (a @ W[p + "ffn_up.weight"].T)) @ W[p + "ffn_down.weight"].T
        x = rms(x, W["output_norm.weight"])
        logits = (x @ head.T).astype(np.float64)
        m = logits.max(-1, keepdims=True)
        lse = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[:, 0]
        nll = lse[:-1] - logits[np.arange(T - 1), toks[1:]]
        out["windows"].append({
            "nll_sum": float(nll.sum()),
            "nll_sum_second_half": float(nll[ctx // 2 - 1:].sum()),
            "tokens": T - 1,
        })
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
