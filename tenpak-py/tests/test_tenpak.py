"""The Python package against the real test model (MiniLM, fp32): run by scripts/test-python.sh."""

import json
import os
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

import tenpak

REPO = Path(__file__).resolve().parents[2]
MODELS = Path(os.environ.get("TENPAK_MODELS", REPO / "models"))
MINILM = MODELS / "minilm" / "model.safetensors"


def read_safetensors(path):
    """The reference reader: header JSON, then raw little-endian data."""
    data = Path(path).read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        dt = {"F32": np.float32, "I64": np.int64}[t["dtype"]]
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + a : 8 + n + b], dtype=dt).reshape(t["shape"])
    return out


@pytest.fixture(scope="module")
def model():
    assert MINILM.is_file(), f"{MINILM} missing: run scripts/fetch-test-models.sh"
    return read_safetensors(MINILM)


@pytest.fixture(scope="module")
def lossless(tmp_path_factory):
    out = tmp_path_factory.mktemp("tpk") / "minilm.tpk"
    report = tenpak.compress(MINILM, out)
    assert report["file_bytes"] == out.stat().st_size
    return out


def test_load_file_is_bit_exact(model, lossless):
    got = tenpak.load_file(lossless)
    assert sorted(got) == sorted(model)
    for k, v in model.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape
        assert np.array_equal(got[k], v), k


def test_safe_open_reads_one_tensor_and_slices(model, lossless):
    name = "embeddings.word_embeddings.weight"
    with tenpak.safe_open(lossless, framework="np") as f:
        assert name in f.keys()
        assert f.metadata()["tenpak.version"] == tenpak.__version__
        assert np.array_equal(f.get_tensor(name), model[name])
        s = f.get_slice(name)
        assert s.get_shape() == list(model[name].shape)
        full = model[name]
        for index in [slice(0, 16), slice(30000, None), slice(5, 500, 7), slice(-3, None), 17, -1]:
            assert np.array_equal(s[index], full[index]), index
        assert np.array_equal(s[2:9, 3:5], full[2:9, 3:5])
        with pytest.raises(KeyError):
            f.get_tensor("no.such.tensor")
        with pytest.raises(IndexError):
            s[10**9]


def test_lossy_reads_equal_the_decompressed_file(tmp_path):
    tpk = tmp_path / "int4.tpk"
    r = tenpak.compress(MINILM, tpk, codec="int4_g32", threads=1)
    assert r["bpw"] < 6
    out = tmp_path / "back.safetensors"
    d = tenpak.decompress(tpk, out)
    assert d["tensors"] == len(r["tensors"])
    want = read_safetensors(out)
    got = tenpak.load_file(tpk)
    for k in want:
        assert np.array_equal(got[k], want[k]), k


def test_bf16_comes_back_exactly(model, tmp_path):
    tpk = tmp_path / "bf16.tpk"
    tenpak.compress(MINILM, tpk, codec="bf16")
    name = "encoder.layer.0.attention.self.query.weight"
    with tenpak.safe_open(tpk) as f:
        got = f.get_tensor(name)
    # bf16 rounding of the f32 weights, widened back exactly.
    x = model[name].view(np.uint32)
    rounded = ((x + 0x7FFF + ((x >> 16) & 1)) & 0xFFFF0000).view(np.float32)
    assert got.dtype == np.float32 and np.array_equal(got, rounded)


def test_errors_are_the_cli_s(tmp_path):
    with pytest.raises(tenpak.TenpakError, match="did you mean"):
        tenpak.compress(MINILM, tmp_path / "x.tpk", codec="bfp5")
    with pytest.raises(tenpak.TenpakError, match="nearest tenpak codec is int4_g64_asym"):
        tenpak.compress(MINILM, tmp_path / "x.tpk", codec="q4_k")
    with pytest.raises(tenpak.TenpakError):
        tenpak.safe_open(tmp_path / "missing.tpk")
    with pytest.raises(ValueError):
        tenpak.decompress(tmp_path / "x.tpk", tmp_path / "y.safetensors", dtype="f12")
    assert not (tmp_path / "x.tpk").exists()


def test_threads_decode_at_once(model, lossless):
    # The GIL is released while decoding: several threads read the same file.
    name = "encoder.layer.1.intermediate.dense.weight"
    results = []
    with tenpak.safe_open(lossless) as f:
        threads = [threading.Thread(target=lambda: results.append(f.get_tensor(name))) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(results) == 4 and all(np.array_equal(r, model[name]) for r in results)


def test_torch_where_installed(model, lossless, tmp_path):
    torch = pytest.importorskip("torch")
    name = "pooler.dense.weight"
    with tenpak.safe_open(lossless, framework="pt") as f:
        t = f.get_tensor(name)
    assert isinstance(t, torch.Tensor) and torch.equal(t, torch.from_numpy(model[name]))
    tpk = tmp_path / "bf16.tpk"
    tenpak.compress(MINILM, tpk, codec="bf16")
    assert tenpak.load_file(tpk, framework="pt")[name].dtype == torch.bfloat16


def test_multi_file_sets_read_as_one_file(model, lossless, tmp_path):
    """A set written by `tenpak merge --max-shard-size` reads through its index as the file."""
    import subprocess

    tenpak_bin = Path(os.environ.get("TENPAK_BIN", REPO / "target" / "release" / "tenpak"))
    assert tenpak_bin.is_file(), f"{tenpak_bin} missing: run cargo test --release --workspace"
    out = tmp_path / "set" / "minilm.tpk"
    subprocess.run([str(tenpak_bin), "merge", str(lossless), "-o", str(out),
                    "--max-shard-size", "20MB", "-q"], check=True)
    index = tmp_path / "set" / "minilm.tpk.index.json"
    assert len(list((tmp_path / "set").glob("minilm-*-of-*.tpk"))) >= 3
    got = tenpak.load_file(index)
    assert sorted(got) == sorted(model)
    for k, v in model.items():
        assert np.array_equal(got[k], v), k
    with tenpak.safe_open(index, framework="np") as f:
        rows = f.get_slice("embeddings.word_embeddings.weight")[10:12]
        assert np.array_equal(rows, model["embeddings.word_embeddings.weight"][10:12])
