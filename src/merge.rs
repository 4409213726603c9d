//! Compressing on many machines: `compress --shard K/N` writes part K of N (a deterministic share
//! of the tensors, balanced by bytes), and [`merge`] joins the parts into the file one process
//! would have written, byte for byte, by copying their chunks (nothing is encoded again).
//!
//! A part file is an ordinary `.tpk` holding its tensors and the whole model's metadata, plus
//! [`PART_KEY`]: which part it is, of how many, and each of its tensors' place in the whole
//! model's order, so the merge can put them back in that order. The merge writes one file, or a
//! multi-file set ([`crate::set`]) with `max_shard_size`; given one whole model (a file or a
//! set) it re-writes it that way.

use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::set::TpkSet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tpk_format::{Limits, TensorEntry, TpkWriter};

/// Metadata key of a part file (removed by the merge).
pub const PART_KEY: &str = "tenpak.part";

/// What a part file says of itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// Its number, 1-based.
    pub part: usize,
    /// How many parts the model was cut into.
    pub parts: usize,
    /// Tensors of the whole model.
    pub tensors: usize,
    /// Each of this part's tensors and its place in the whole model's order.
    pub places: BTreeMap<String, usize>,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&serde_json::to_string(self).expect("plain data"))
    }
}

/// Which part (0-based) each tensor of `bytes` goes to, for `n` parts: largest first, each to
/// the part with the fewest bytes so far (the lowest number among equals), so the split depends
/// on the tensors alone.
pub fn assign(bytes: &[u64], n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..bytes.len()).collect();
    order.sort_by(|&a, &b| bytes[b].cmp(&bytes[a]).then(a.cmp(&b)));
    let mut load = vec![0u64; n.max(1)];
    let mut to = vec![0usize; bytes.len()];
    for i in order {
        let k = (0..load.len())
            .min_by_key(|&k| (load[k], k))
            .expect("at least one part");
        load[k] += bytes[i];
        to[i] = k;
    }
    to
}

/// Keep part `k` of `n` (1-based) of `plan`'s tensors; returns what the part file records.
pub fn take_part(plan: &mut Plan, k: usize, n: usize) -> Result<Part> {
    if n == 0 || k == 0 || k > n {
        return Err(Error::config(format!(
            "--shard {k}/{n}: expected K/N with 1 <= K <= N"
        )));
    }
    if plan.mixed.as_ref().is_some_and(crate::mixed::whole_model) {
        return Err(Error::config(
            "--shard does not combine with a whole-model mixed-tile config (its search needs every tensor at once)",
        ));
    }
    if plan.base.is_some() {
        return Err(Error::config("--shard does not combine with --base"));
    }
    let bytes: Vec<u64> = plan.tensors.iter().map(|t| t.info.source_bytes).collect();
    let to = assign(&bytes, n);
    let total = plan.tensors.len();
    let mut places = BTreeMap::new();
    let mut kept = Vec::new();
    for (place, (t, part)) in std::mem::take(&mut plan.tensors)
        .into_iter()
        .zip(to)
        .enumerate()
    {
        if part == k - 1 {
            places.insert(t.info.name.clone(), place);
            kept.push(t);
        }
    }
    plan.tensors = kept;
    Ok(Part {
        part: k,
        parts: n,
        tensors: total,
        places,
    })
}

/// What [`merge`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct MergeReport {
    /// The merged file, or the set's index.
    pub output: PathBuf,
    /// Every file written: the one `.tpk`, or the set's files then its index.
    pub files: Vec<PathBuf>,
    /// Parts joined (1 for a whole model re-written).
    pub parts: usize,
    /// Tensors written.
    pub tensors: usize,
    /// Bytes of the `.tpk` files written (a set's index not counted).
    pub file_bytes: u64,
}

/// Options of [`merge`].
#[derive(Debug, Clone, Default)]
pub struct MergeOptions {
    /// Overwrite outputs that exist.
    pub force: bool,
    /// Write a multi-file set ([`crate::set`]) whose files hold at most this many payload bytes
    /// each (a larger tensor gets a file of its own); one file if everything fits.
    pub max_shard_size: Option<u64>,
}

/// Join the part files of one `compress --shard K/N` run into `output`, in the whole model's
/// tensor order, copying each chunk (its CRC checked on the way). Every part must be there once,
/// with the same metadata. One whole model (a `.tpk` or a set's index) is taken as it is: merge
/// turns a set into one file, or, with `max_shard_size`, a file into a set.
pub fn merge(inputs: &[PathBuf], output: &Path, opts: &MergeOptions) -> Result<MergeReport> {
    crate::compress::check_output_name(output, "tpk", "a .tpk file")?;
    if inputs.is_empty() {
        return Err(Error::config("no part files to merge"));
    }
    let limits = Limits::default();
    let mut files = Vec::new();
    for p in inputs {
        let f = TpkSet::open_path(p, &limits).map_err(|e| e.with_file(p))?;
        let info: Option<Part> = match f.meta(PART_KEY) {
            None => None,
            Some(t) => Some(serde_json::from_str(t).map_err(|e| {
                Error::input(format!("its {PART_KEY} metadata does not parse: {e}")).with_file(p)
            })?),
        };
        files.push((p, f, info));
    }
    let whole = files.len() == 1 && files[0].2.is_none();
    if !whole {
        if let Some((p, _, _)) = files.iter().find(|f| f.2.is_none()) {
            return Err(Error::input(
                "not a part file (made by compress --shard K/N); a whole model is merged alone",
            )
            .with_file(p));
        }
    }
    let shared = |f: &TpkSet| -> Vec<(String, String)> {
        f.metadata()
            .iter()
            .filter(|(k, _)| k != PART_KEY)
            .cloned()
            .collect()
    };
    let meta = shared(&files[0].1);
    let (n, order) = if whole {
        let t = files[0].1.tensors().len();
        (1, (0..t).map(|ti| (0, ti)).collect())
    } else {
        (
            files[0].2.as_ref().map_or(1, |i| i.parts),
            part_order(&files, &meta, shared)?,
        )
    };
    let tensors = order.len();
    // Files of the output: consecutive runs of the order, by payload bytes.
    let payload = |&(fi, ti): &(usize, usize)| -> u64 {
        files[fi].1.tensors()[ti].chunks.iter().map(|c| c.len).sum()
    };
    let mut groups: Vec<Vec<(usize, usize)>> = vec![Vec::new()];
    let mut size = 0u64;
    for o in order {
        let b = payload(&o);
        if let Some(max) = opts.max_shard_size {
            if size > 0 && size + b > max {
                groups.push(Vec::new());
                size = 0;
            }
        }
        size += b;
        groups.last_mut().expect("one group").push(o);
    }
    let count = groups.len();
    let (names, index) = if count == 1 {
        (vec![output.to_path_buf()], None)
    } else {
        let dir = output.parent().unwrap_or(Path::new(""));
        let stem = output
            .file_name()
            .map(|n| n.to_string_lossy().trim_end_matches(".tpk").to_string())
            .unwrap_or_else(|| "model".into());
        let names = (1..=count)
            .map(|k| dir.join(format!("{stem}-{k:05}-of-{count:05}.tpk")))
            .collect();
        (
            names,
            Some(dir.join(format!("{stem}{}", crate::set::INDEX_SUFFIX))),
        )
    };
    if !opts.force {
        if let Some(p) = names.iter().chain(&index).find(|p| p.exists()) {
            return Err(Error::config(format!(
                "{} already exists (pass --force to overwrite)",
                p.display()
            )));
        }
    }
    crate::decompress::create_parent(output)?;
    // Every file is complete before any is renamed into place.
    let mut pending = Vec::with_capacity(count);
    let mut weight_map = BTreeMap::new();
    let mut file_bytes = 0;
    for (group, name) in groups.iter().zip(&names) {
        let mut w =
            TpkWriter::create(name, opts.force).map_err(|e| Error::from(e).with_file(name))?;
        for (k, v) in &meta {
            w.set_metadata(k, v);
        }
        for &(fi, ti) in group {
            let (p, f, _) = &files[fi];
            let t = &f.tensors()[ti];
            let mut chunks = Vec::with_capacity(t.chunks.len());
            for (ci, c) in t.chunks.iter().enumerate() {
                let payload = f.chunk(ti, ci).map_err(|e| Error::from(e).with_file(p))?;
                chunks.push(
                    w.write_chunk(payload, c.elem_start, c.elem_count)
                        .map_err(|e| Error::from(e).with_file(name))?,
                );
            }
            f.release_chunks(ti, 0..t.chunks.len());
            let file = name.file_name().map(|n| n.to_string_lossy().into_owned());
            weight_map.insert(t.name.clone(), file.unwrap_or_default());
            w.add_tensor(TensorEntry {
                chunks,
                ..t.clone()
            })
            .map_err(|e| Error::from(e).with_file(name))?;
        }
        let done = w
            .finish_pending()
            .map_err(|e| Error::from(e).with_file(name))?;
        file_bytes += done.bytes();
        pending.push((done, name));
    }
    for (done, name) in pending {
        done.persist().map_err(|e| Error::from(e).with_file(name))?;
    }
    let mut written = names.clone();
    if let Some(index) = &index {
        let text = serde_json::to_string_pretty(&serde_json::json!({
            "metadata": {"format": "tpk", "total_size": file_bytes},
            "weight_map": weight_map,
        }))
        .expect("plain data");
        let mut tmp = crate::atomic::create(index)?;
        std::io::Write::write_all(&mut tmp, text.as_bytes())
            .map_err(|e| Error::io("write the set index", e).with_file(index))?;
        crate::atomic::persist(tmp, opts.force)?;
        written.push(index.clone());
    }
    Ok(MergeReport {
        output: index.unwrap_or_else(|| output.to_path_buf()),
        files: written,
        parts: n,
        tensors,
        file_bytes,
    })
}

type Input<'a> = (&'a PathBuf, TpkSet, Option<Part>);

/// The whole model's order of the parts' tensors, as (part, tensor in part); every part there
/// once, of one run.
fn part_order(
    files: &[Input<'_>],
    meta: &[(String, String)],
    shared: impl Fn(&TpkSet) -> Vec<(String, String)>,
) -> Result<Vec<(usize, usize)>> {
    let first = files[0].2.as_ref().expect("parts have their key");
    let (n, total) = (first.parts, first.tensors);
    let mut seen = vec![false; n];
    for (p, f, info) in files {
        let info = info.as_ref().expect("parts have their key");
        if info.parts != n || info.tensors != total {
            return Err(Error::input(format!(
                "part {} of {} with {} tensors, but the first part is of {n} with {total}",
                info.part, info.parts, info.tensors
            ))
            .with_file(p));
        }
        if info.part == 0 || info.part > n || std::mem::replace(&mut seen[info.part - 1], true) {
            return Err(Error::input(format!(
                "part {} of {n} given twice or out of range",
                info.part
            ))
            .with_file(p));
        }
        if shared(f) != meta {
            return Err(Error::input(
                "its metadata differs from the first part's: parts of different runs",
            )
            .with_file(p));
        }
    }
    let missing: Vec<String> = (1..=n)
        .filter(|k| !seen[k - 1])
        .map(|k| k.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(Error::input(format!(
            "part(s) {} of {n} missing",
            missing.join(", ")
        )));
    }
    // Each place once, all of 0..total.
    let mut order: Vec<Option<(usize, usize)>> = vec![None; total];
    for (fi, (p, f, info)) in files.iter().enumerate() {
        let info = info.as_ref().expect("parts have their key");
        for (ti, t) in f.tensors().iter().enumerate() {
            let place = *info.places.get(&t.name).ok_or_else(|| {
                Error::input(format!("tensor '{}' is not in its part's list", t.name)).with_file(p)
            })?;
            match order.get_mut(place) {
                Some(slot @ None) => *slot = Some((fi, ti)),
                _ => {
                    return Err(Error::input(format!(
                        "tensor '{}' has place {place}, taken or past {total}",
                        t.name
                    ))
                    .with_file(p))
                }
            }
        }
    }
    if order.iter().any(Option::is_none) {
        return Err(Error::input(
            "the parts hold fewer tensors than their model has",
        ));
    }
    Ok(order.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_balanced_and_fixed() {
        let bytes = [100, 90, 10, 10, 50, 40, 0];
        let to = assign(&bytes, 3);
        assert_eq!(to, assign(&bytes, 3));
        let mut load = [0u64; 3];
        for (b, k) in bytes.iter().zip(&to) {
            load[*k] += b;
        }
        assert_eq!(load, [100, 100, 100]);
        assert_eq!(assign(&bytes, 1), vec![0; 7]);
    }
}
