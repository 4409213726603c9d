//! Human-readable tables.

use std::io::Write;
use std::path::Path;
use tenpak::compress::CompressReport;
use tenpak::decompress::DecompressReport;
use tenpak::inspect::InspectReport;
use tenpak::metrics::{fmt_pcc, fmt_sci as sci, Metrics};
use tenpak::verify::VerifyReport;

/// `1234567` -> `1.23 MB` (decimal units, as file managers show).
pub fn human(b: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", units[u])
    }
}

/// Width of the name column: the longest name, between 4 and 60 characters.
fn name_width<'a>(names: impl Iterator<Item = &'a str>) -> usize {
    names.map(str::len).max().unwrap_or(4).clamp(4, 60)
}

fn shape(s: &[u64]) -> String {
    let v: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", v.join(","))
}

fn pcc(m: &Metrics) -> String {
    fmt_pcc(Some(m.pcc))
}

/// The compress report.
pub fn compress(out: &mut Vec<u8>, r: &CompressReport) {
    let w = name_width(r.tensors.iter().map(|t| t.name.as_str()));
    let _ = writeln!(
        out,
        "{:<w$} {:>16} {:>7} {:<18} {:>12} {:>12} {:>7} {:>6} {:>10} {:>10} {:>10}",
        "name",
        "shape",
        "dtype",
        "codec",
        "orig bytes",
        "enc bytes",
        "ratio",
        "bpw",
        "PCC",
        "MAE",
        "atol"
    );
    for t in &r.tensors {
        let _ = writeln!(
            out,
            "{:<w$} {:>16} {:>7} {:<18} {:>12} {:>12} {:>7.3} {:>6.2} {:>10} {:>10} {:>10}",
            t.name,
            shape(&t.shape),
            t.source_dtype,
            t.codec,
            t.source_bytes,
            t.encoded_bytes,
            t.ratio,
            t.bpw,
            pcc(&t.metrics),
            sci(t.metrics.mae),
            sci(t.metrics.max_abs),
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "source:          {}", r.source);
    let _ = writeln!(out, "tensors:         {}", r.tensors.len());
    let file = format!("{} {}", human(r.file_bytes), r.output.display());
    totals(
        out,
        r.source_bytes,
        r.fp32_bytes,
        r.file_bytes,
        &file,
        r.ratio_vs_source,
        r.ratio_vs_fp32,
    );
    let _ = writeln!(
        out,
        "bits per weight: {:.3} (source {:.3}, {} weights)",
        r.bpw, r.source_bpw, r.elements
    );
}

/// `compress --dry-run`: the plan, a line per tensor, and the predicted payload.
pub fn plan(out: &mut Vec<u8>, r: &tenpak::plan::PlanReport) {
    let w = name_width(r.tensors.iter().map(|t| t.name.as_str()));
    let _ = writeln!(
        out,
        "{:<w$} {:>16} {:>7} {:<24} {:<18} {:>6} {:>12} {:>14}",
        "name", "shape", "dtype", "codec", "layout", "chunks", "orig bytes", "payload bytes"
    );
    for t in &r.tensors {
        let bound = if t.exact { "" } else { "<= " };
        let _ = writeln!(
            out,
            "{:<w$} {:>16} {:>7} {:<24} {:<18} {:>6} {:>12} {:>14}",
            t.name,
            shape(&t.shape),
            t.source_dtype,
            t.codec,
            t.layout,
            t.chunks,
            t.source_bytes,
            format!("{bound}{}", t.predicted_bytes),
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "tensors:         {}", r.tensors.len());
    let _ = writeln!(
        out,
        "source bytes:    {} ({})",
        r.source_bytes,
        human(r.source_bytes)
    );
    let _ = writeln!(
        out,
        "payload bytes:   {}{} ({}; {})",
        if r.exact { "" } else { "<= " },
        r.predicted_payload_bytes,
        human(r.predicted_payload_bytes),
        if r.exact {
            "exact: every codec has a fixed size"
        } else {
            "an upper bound: some codecs' sizes depend on the data"
        }
    );
    let _ = writeln!(out, "dry run: nothing was read or written");
}

/// The size lines compress and inspect share.
fn totals(
    out: &mut Vec<u8>,
    source: u64,
    fp32: u64,
    file: u64,
    file_note: &str,
    vs_source: f64,
    vs_fp32: f64,
) {
    let _ = writeln!(out, "source bytes:    {source} ({})", human(source));
    let _ = writeln!(out, "fp32 bytes:      {fp32} ({})", human(fp32));
    let _ = writeln!(out, "file bytes:      {file} ({file_note})");
    let _ = writeln!(out, "ratio vs source: {vs_source:.4}x");
    let _ = writeln!(out, "ratio vs fp32:   {vs_fp32:.4}x");
}

/// The inspect report.
pub fn inspect(out: &mut Vec<u8>, r: &InspectReport, tensors: bool) {
    let _ = writeln!(out, "format:          tpk {}", r.format_version);
    let _ = writeln!(out, "tensors:         {}", r.tensor_count);
    totals(
        out,
        r.source_bytes,
        r.fp32_bytes,
        r.file_bytes,
        &human(r.file_bytes),
        r.ratio_vs_source,
        r.ratio_vs_fp32,
    );
    for (name, bytes, n) in &r.set_files {
        let _ = writeln!(
            out,
            "set file:        {name} ({}, {n} tensors)",
            human(*bytes)
        );
    }
    for (k, v) in &r.metadata {
        // Model metadata (a tokenizer's vocabulary) can run to megabytes: `--json` has it whole.
        if v.chars().count() > 100 {
            let head: String = v.chars().take(72).collect();
            let _ = writeln!(out, "meta {k}: {head}... ({} bytes)", v.len());
        } else {
            let _ = writeln!(out, "meta {k}: {v}");
        }
    }
    let unsupported = r.tensors.iter().filter(|t| !t.supported).count();
    if unsupported > 0 {
        let _ = writeln!(
            out,
            "unsupported:     {unsupported} tensors use codecs this tenpak lacks"
        );
    }
    if !tensors {
        return;
    }
    let w = name_width(r.tensors.iter().map(|t| t.name.as_str()));
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<w$} {:>16} {:>7} {:<16} {:>12} {:>12} {:>7} {:>6} {:>10} {:>10} {:>10} {:>9}",
        "name",
        "shape",
        "dtype",
        "codec",
        "orig bytes",
        "enc bytes",
        "ratio",
        "chunks",
        "PCC",
        "MAE",
        "atol",
        "SQNR dB"
    );
    for t in &r.tensors {
        // Tile layouts show after the codec: `bfp8 (tiles)`, `bfp8 (tiles, T)` when transposed.
        let codec = match t.layout {
            "tiles32" => format!("{} (tiles)", t.codec),
            "tiles32-transposed" => format!("{} (tiles, T)", t.codec),
            _ => t.codec.clone(),
        };
        let codec = if t.supported {
            codec
        } else {
            format!("{codec} (unsupported)")
        };
        let (p, mae, atol, sq) = match &t.metrics {
            Some(m) => (
                pcc(m),
                sci(m.mae),
                sci(m.max_abs),
                if m.sqnr_db.is_finite() {
                    format!("{:.2}", m.sqnr_db)
                } else {
                    "inf".into()
                },
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        let _ = writeln!(
            out,
            "{:<w$} {:>16} {:>7} {:<16} {:>12} {:>12} {:>7.3} {:>6} {:>10} {:>10} {:>10} {:>9}",
            t.name,
            shape(&t.shape),
            t.dtype,
            codec,
            t.source_bytes,
            t.encoded_bytes,
            t.ratio,
            t.chunks,
            p,
            mae,
            atol,
            sq
        );
        if let Some(sp) = &t.sparsity {
            let _ = writeln!(
                out,
                "{:<w$}   sparsity: {:.4} ({} of {} elements are zeros, not stored)",
                "", sp.sparsity, sp.zero_count, sp.total
            );
        }
        if let Some(s) = &t.stages {
            let parts: Vec<String> = s.iter().map(|(k, b)| format!("{k} {b} B")).collect();
            let _ = writeln!(out, "{:<w$}   stages: {}", "", parts.join(", "));
        }
        if let Some(m) = &t.mixed {
            let parts: Vec<String> = m
                .iter()
                .filter(|s| s.tiles > 0)
                .map(|s| format!("{} {} tiles ({} B)", s.format, s.tiles, s.bytes))
                .collect();
            let _ = writeln!(out, "{:<w$}   tiles: {}", "", parts.join(", "));
        }
    }
}

/// The verify report.
pub fn verify(out: &mut Vec<u8>, r: &VerifyReport, file: &Path) {
    for p in r.problems.iter().chain(&r.unsupported) {
        let mut place = String::new();
        if let Some(t) = &p.tensor {
            place.push_str(&format!("tensor '{t}' "));
        }
        if let Some(c) = p.chunk {
            place.push_str(&format!("chunk {c} "));
        }
        let _ = writeln!(out, "{}: {place}: {}", file.display(), p.message);
    }
    if r.ok() {
        let _ = writeln!(
            out,
            "{}: OK ({} tensors, {} chunks)",
            file.display(),
            r.tensors,
            r.chunks
        );
    } else {
        let _ = writeln!(
            out,
            "{}: FAILED ({} problems, {} unsupported tensors, {} tensors, {} chunks)",
            file.display(),
            r.problems.len(),
            r.unsupported.len(),
            r.tensors,
            r.chunks
        );
    }
}

/// The decompress report.
pub fn decompress(out: &mut Vec<u8>, r: &DecompressReport) {
    for f in &r.files {
        let _ = writeln!(out, "wrote {}", f.display());
    }
    let _ = writeln!(
        out,
        "{} tensors, {} ({} data bytes)",
        r.tensors,
        human(r.data_bytes),
        r.data_bytes
    );
    if !r.gguf_types.is_empty() {
        // Types written, most used first: `Q4_1 x 210, F32 x 61, Q8_0 x 1`.
        let mut n: std::collections::BTreeMap<&str, usize> = Default::default();
        for (_, t) in &r.gguf_types {
            *n.entry(t.as_str()).or_default() += 1;
        }
        let mut n: Vec<_> = n.into_iter().collect();
        n.sort_by_key(|(t, k)| (std::cmp::Reverse(*k), *t));
        let list: Vec<String> = n.iter().map(|(t, k)| format!("{t} x {k}")).collect();
        let _ = writeln!(out, "GGUF tensor types: {}", list.join(", "));
    }
}

/// An allocation: one line per tensor, then the totals and the codecs' shares.
pub fn allocation(out: &mut Vec<u8>, a: &tenpak::allocate::Allocation) {
    let w = name_width(a.choices.iter().map(|c| c.tensor.as_str()));
    let _ = writeln!(
        out,
        "{:<w$} {:<24} {:>12} {:>10} {:>10} {:>10}",
        "tensor", "codec", "bytes", "rel err²", "alpha", "pred KLD"
    );
    for c in &a.choices {
        let _ = writeln!(
            out,
            "{:<w$} {:<24} {:>12} {:>10} {:>10} {:>10}",
            c.tensor,
            c.codec,
            c.bytes,
            sci(c.rel_sq),
            sci(c.alpha),
            sci(c.predicted_kld)
        );
    }
    let mut shares: Vec<(&str, usize, u64)> = Vec::new();
    for cand in &a.candidates {
        let (n, b) = a
            .choices
            .iter()
            .filter(|c| &c.codec == cand)
            .fold((0, 0), |(n, b), c| (n + 1, b + c.bytes));
        shares.push((cand, n, b));
    }
    let _ = writeln!(
        out,
        "allocation ({}): {} of {} budget, {:.3} bpw predicted ({} allocated + {} other tensors, index and metadata), predicted KLD {}",
        a.method,
        human(a.allocated_bytes + a.fixed_bytes),
        human(a.target_bytes),
        a.predicted_bpw,
        human(a.allocated_bytes),
        human(a.fixed_bytes),
        sci(a.predicted_kld)
    );
    if let Some(s) = &a.sensitivity_source {
        let _ = writeln!(out, "  sensitivities: {s}");
    }
    for (c, n, b) in shares {
        let _ = writeln!(out, "  {c:<24} {n:>4} tensors {:>12}", human(b));
    }
    if !a.unmeasured.is_empty() {
        let _ = writeln!(
            out,
            "  not in the sensitivity file (median alpha): {}",
            a.unmeasured.join(", ")
        );
    }
    for (t, c, why) in &a.refused {
        let _ = writeln!(out, "  refused: {c} on {t}: {why}");
    }
}
