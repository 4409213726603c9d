//! KV-cache dumps: the reader (`tenpak::kv::dump`) on real dumps written by `tenpak kv capture`
//! from SmolLM2, and on damaged copies of them.

use crate::common::*;
use tenpak::kv::dump::{scan, DumpFilter, KvDType, Stage};
use tenpak::{Defect, ErrorKind};

fn capture(root: &std::path::Path) {
    tenpak_ok(&[
        "kv",
        "capture",
        s(&smollm2()),
        "--corpus",
        s(&corpus()),
        "-o",
        s(root),
        "--windows",
        "1",
        "--ctx",
        "16",
        "--decode-steps",
        "2",
        "--dtype",
        "fp16",
        "-q",
    ]);
}

#[test]
fn reads_captured_dumps_and_refuses_damaged_ones() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("dumps");
    capture(&root);
    let all = scan(&root, &DumpFilter::default()).unwrap();
    // 30 layers x (one prefill of 16 tokens + two one-token decode steps).
    assert_eq!(all.len(), 30 * 3);
    let first = &all[0];
    assert_eq!((first.meta.layer_id, first.meta.seq_len), (0, 16));
    assert_eq!((first.meta.kv_heads, first.meta.head_dim), (3, 64));
    assert_eq!(first.meta.dtype, KvDType::Fp16);
    let k = first.read_k().unwrap();
    assert_eq!(
        k,
        std::fs::read(first.dir.join(&first.meta.k_file)).unwrap()
    );
    assert_eq!(k.len() as u64, first.meta.bin_bytes().unwrap());
    // Sorted by run, layer, then position.
    assert!(all
        .windows(2)
        .all(|w| (w[0].meta.layer_id, w[0].meta.seq_start)
            <= (w[1].meta.layer_id, w[1].meta.seq_start)));
    let decode = DumpFilter {
        stage: Some(Stage::Decode),
        ..DumpFilter::default()
    };
    let d = scan(&root, &decode).unwrap();
    assert_eq!(d.len(), 60);
    assert!(d
        .iter()
        .all(|x| x.meta.seq_len == 1 && x.meta.stage == Stage::Decode));
    let long = DumpFilter {
        min_seq_len: 2,
        max_seq_len: 16,
        ..DumpFilter::default()
    };
    assert_eq!(scan(&root, &long).unwrap().len(), 30);
    let none = DumpFilter {
        min_seq_len: 17,
        ..DumpFilter::default()
    };
    assert_eq!(scan(&root, &none).unwrap_err().kind, ErrorKind::Input);

    // A truncated .bin is a length defect naming the file.
    let bin = first.dir.join(&first.meta.v_file);
    let v = std::fs::read(&bin).unwrap();
    std::fs::write(&bin, &v[..v.len() - 2]).unwrap();
    let e = first.read_v().unwrap_err();
    assert_eq!(e.defect, Some(Defect::Length));
    assert!(e.to_string().contains(&first.meta.v_file), "{e}");
    // A meta file pointing outside its folder is refused at scan time, naming the meta file.
    let text = std::fs::read_to_string(&first.meta_path).unwrap();
    let hostile = text.replace(&first.meta.k_file, "../../secret.bin");
    std::fs::write(&first.meta_path, hostile).unwrap();
    let e = scan(&root, &DumpFilter::default()).unwrap_err();
    assert!(e.message.contains("not a file name"), "{e}");
    assert!(e.to_string().contains("meta_t0_16.json"), "{e}");
}
