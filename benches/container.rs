//! Container throughput: writing MiniLM's bytes as chunks to a .tpk and reading every chunk back
//! (CRC checked), without any codec work. `cargo bench --bench container`.

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tpk_format::{Limits, Stage, TensorEntry, TpkFile, TpkWriter};

fn bench(c: &mut Criterion) {
    let (data, _) = common::minilm_f32_and_bf16();
    let chunk = 256 << 10;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.tpk");
    let write = |p: &std::path::Path| {
        let mut w = TpkWriter::create(p, true).unwrap();
        let chunks = data
            .chunks(chunk)
            .enumerate()
            .map(|(i, c)| {
                w.write_chunk(c, (i * chunk / 4) as u64, (c.len() / 4) as u64)
                    .unwrap()
            })
            .collect();
        w.add_tensor(TensorEntry {
            layout: Default::default(),
            name: "all".into(),
            dtype: "F32".into(),
            dims: vec![(data.len() / 4) as u64],
            source_bytes: data.len() as u64,
            stages: vec![Stage {
                codec_id: 1,
                codec_name: "raw".into(),
                codec_version: 1,
                params: vec![],
            }],
            metrics: vec![],
            chunks,
        })
        .unwrap();
        w.finish().unwrap()
    };
    let mut g = c.benchmark_group("container");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("write", |b| b.iter(|| write(&path)));
    write(&path);
    g.bench_function("read_all_chunks", |b| {
        b.iter(|| {
            let f = TpkFile::open_path(&path, &Limits::default()).unwrap();
            (0..f.tensors()[0].chunks.len())
                .map(|i| f.chunk(0, i).unwrap().len())
                .sum::<usize>()
        })
    });
    g.finish();
}

// No plots: tenpak's plotters build draws text only with its own embedded font, which criterion's
// report plots do not register.
criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = bench
}
criterion_main!(benches);
