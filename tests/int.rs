//! Integer quantization end to end on MiniLM: every codec of formats-spec/int.md writes a file
//! whose decoded tensors give the metrics compress reported, at exactly the bits per weight
//! the format defines.

use crate::common::*;

#[test]
fn int_codecs_on_minilm() {
    let dir = tempfile::tempdir().unwrap();
    let m = minilm();
    let src = read_safetensors(&m);
    // (codec, bits per weight on a [384, 384] matrix)
    for (codec, bpw) in [
        ("int8", 8.5),
        ("int4_g32", 4.5),
        ("int4_g32_asym", 5.0),
        ("int3_g16_asym_f32", 3.0 + 64.0 / 16.0),
        ("int2_g64", 2.25),
        ("int4_row", 4.0 + 16.0 / 384.0),
        ("int4_axis1", 4.0 + 16.0 / 384.0),
        ("int4_opt", 8.0),
        ("int4_residual", 10.0),
    ] {
        let tpk = dir.path().join("t.tpk");
        let j = tenpak_json(&[
            "compress",
            s(&m),
            "-o",
            s(&tpk),
            "--codec",
            codec,
            "--filter",
            "encoder.layer.4.attention",
            "--force",
        ]);
        tenpak_ok(&["verify", s(&tpk)]);
        let back = dir.path().join("t.safetensors");
        tenpak_ok(&["decompress", s(&tpk), "-o", s(&back), "--force", "-q"]);
        let got = read_safetensors(&back);
        for t in j["tensors"].as_array().unwrap() {
            let name = t["name"].as_str().unwrap();
            let x = f32s(&src[name].2);
            let y = f32s(&got[name].2);
            let (pcc, mae) = pcc_mae(&x, &y);
            let rep = &t["metrics"];
            let (rp, rm) = (rep["pcc"].as_f64().unwrap(), rep["mae"].as_f64().unwrap());
            assert!((pcc - rp).abs() <= 1e-9, "{codec} {name}: {pcc} vs {rp}");
            assert!((mae - rm).abs() <= 1e-9 * mae.max(1e-12), "{codec} {name}");
            if name.ends_with("weight") && x.len() == 384 * 384 {
                let got_bpw = 8.0 * t["encoded_bytes"].as_f64().unwrap() / x.len() as f64;
                assert!(
                    (got_bpw - bpw).abs() < 1e-9,
                    "{codec} {name}: {got_bpw} bpw"
                );
                let floor = match codec {
                    "int2_g64" => 0.7,
                    c if c.starts_with("int3") => 0.95,
                    _ => 0.98,
                };
                assert!(pcc > floor, "{codec} {name}: pcc {pcc}");
            }
        }
    }
    // The ALS fit beats plain min/max at the same size, the residual beats both.
    let pcc_of = |codec: &str| {
        let j = tenpak_json(&[
            "analyze",
            s(&m),
            "encoder.layer.4.attention.self.query.weight",
            "-c",
            codec,
            "--no-files",
        ]);
        j["rows"][0]["pcc"].as_f64().unwrap()
    };
    let (g8, opt, res) = (
        pcc_of("int4_g8_asym"),
        pcc_of("int4_opt"),
        pcc_of("int4_residual"),
    );
    assert!(opt > g8 && res > opt, "{g8} {opt} {res}");
}
