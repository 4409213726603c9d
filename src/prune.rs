//! Pruning (`compress --prune`, formats-spec/sparse.md §3): zero the least important weights
//! of each float tensor of two or more dimensions before it is stored with sparse storage.
//!
//! - `magnitude:S`: the fraction `S` of elements with the smallest magnitudes (ties by index);
//! - `magnitude:threshold=T`: every element with `|x| < T`;
//! - `rows:S` / `cols:S`: the fraction `S` of rows / columns of the `[prod(leading), last]` view
//!   with the smallest L2 norms (ties by index), whole.
//!
//! Pruned elements become all-zero bytes (+0) in the tensor's own dtype, so nothing else about
//! the tensor changes.

use crate::dtype::{self, DType};
use crate::error::{Error, Result};

/// A pruning rule.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Prune {
    /// This fraction of the elements, smallest magnitudes first.
    Magnitude {
        /// Fraction pruned, in [0, 1].
        sparsity: f64,
    },
    /// Every element below this magnitude.
    Threshold {
        /// The magnitude.
        threshold: f64,
    },
    /// This fraction of the rows, smallest L2 norms first.
    Rows {
        /// Fraction pruned.
        sparsity: f64,
    },
    /// This fraction of the columns, smallest L2 norms first.
    Cols {
        /// Fraction pruned.
        sparsity: f64,
    },
}

impl Prune {
    /// Parse `magnitude:0.5`, `magnitude:threshold=0.01`, `rows:0.3`, `cols:0.3`.
    pub fn parse(s: &str) -> Result<Prune> {
        let err = || {
            Error::config(format!(
                "--prune '{s}': expected magnitude:S, magnitude:threshold=T, rows:S or cols:S (S a fraction in [0, 1])"
            ))
        };
        let (kind, arg) = s.split_once(':').ok_or_else(err)?;
        let frac = |v: &str| -> Result<f64> {
            v.parse::<f64>()
                .ok()
                .filter(|x| (0.0..=1.0).contains(x))
                .ok_or_else(err)
        };
        Ok(match kind {
            "magnitude" => match arg.strip_prefix("threshold=") {
                Some(t) => Prune::Threshold {
                    threshold: t
                        .parse::<f64>()
                        .ok()
                        .filter(|x| x.is_finite() && *x >= 0.0)
                        .ok_or_else(err)?,
                },
                None => Prune::Magnitude {
                    sparsity: frac(arg)?,
                },
            },
            "rows" => Prune::Rows {
                sparsity: frac(arg)?,
            },
            "cols" => Prune::Cols {
                sparsity: frac(arg)?,
            },
            _ => return Err(err()),
        })
    }

    /// Whether a tensor is pruned: floats of two or more dimensions.
    pub fn applies(dtype: DType, dims: &[u64]) -> bool {
        dtype.is_float() && dims.len() >= 2
    }

    /// The tensor with its pruned elements zeroed, and how many were pruned.
    pub fn apply(&self, d: DType, dims: &[u64], data: &[u8]) -> (Vec<u8>, u64) {
        let mut x = Vec::new();
        dtype::to_f32(d, data, &mut x);
        let n = x.len();
        let mut drop = vec![false; n];
        match *self {
            Prune::Threshold { threshold } => {
                for (p, v) in drop.iter_mut().zip(&x) {
                    *p = (v.abs() as f64) < threshold;
                }
            }
            Prune::Magnitude { sparsity } => {
                let k = (sparsity * n as f64).floor() as usize;
                mark_smallest(&x, k, &mut drop);
            }
            Prune::Rows { sparsity } | Prune::Cols { sparsity } => {
                let cols = dims.last().copied().unwrap_or(1).max(1) as usize;
                let rows = n / cols;
                let by_rows = matches!(self, Prune::Rows { .. });
                let lines = if by_rows { rows } else { cols };
                let mut norms = vec![0f64; lines];
                for (i, v) in x.iter().enumerate() {
                    let l = if by_rows { i / cols } else { i % cols };
                    norms[l] += (*v as f64) * (*v as f64);
                }
                let k = (sparsity * lines as f64).floor() as usize;
                let mut order: Vec<usize> = (0..lines).collect();
                order.sort_by(|&a, &b| norms[a].total_cmp(&norms[b]).then(a.cmp(&b)));
                let mut gone = vec![false; lines];
                for &l in &order[..k] {
                    gone[l] = true;
                }
                for (i, p) in drop.iter_mut().enumerate() {
                    *p = gone[if by_rows { i / cols } else { i % cols }];
                }
            }
        }
        let es = d.size();
        let mut out = data.to_vec();
        let mut count = 0;
        for (i, &p) in drop.iter().enumerate() {
            if p {
                out[i * es..(i + 1) * es].fill(0);
                count += 1;
            }
        }
        (out, count)
    }
}

/// Mark the `k` elements of smallest magnitude (ties by index) without sorting: a two-level
/// radix select on the magnitude's bits (which order as the magnitudes do).
fn mark_smallest(x: &[f32], k: usize, drop: &mut [bool]) {
    if k == 0 {
        return;
    }
    let key = |v: f32| v.to_bits() & 0x7FFF_FFFF;
    let mut hist = vec![0usize; 1 << 16];
    for &v in x {
        hist[(key(v) >> 16) as usize] += 1;
    }
    let (mut hi, mut below) = (0usize, 0usize);
    while below + hist[hi] < k {
        below += hist[hi];
        hi += 1;
    }
    let mut lo_hist = vec![0usize; 1 << 16];
    for &v in x {
        if (key(v) >> 16) as usize == hi {
            lo_hist[(key(v) & 0xFFFF) as usize] += 1;
        }
    }
    let mut lo = 0usize;
    while below + lo_hist[lo] < k {
        below += lo_hist[lo];
        lo += 1;
    }
    let t = (hi as u32) << 16 | lo as u32;
    // Everything below the k-th key, then ties at it in index order.
    let mut ties = k - below;
    for (p, &v) in drop.iter_mut().zip(x) {
        let kv = key(v);
        if kv < t {
            *p = true;
        } else if kv == t && ties > 0 {
            *p = true;
            ties -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn magnitude_prunes_exactly_the_smallest() {
        let v: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 1000) as f32 * if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let (out, k) = Prune::Magnitude { sparsity: 0.3 }.apply(DType::F32, &[10, 100], &bytes(&v));
        assert_eq!(k, 300);
        for (i, c) in out.chunks_exact(4).enumerate() {
            let y = f32::from_le_bytes(c.try_into().unwrap());
            assert_eq!(y == 0.0, v[i].abs() < 300.0, "{i}");
        }
        // Ties: all equal, the first k by index go.
        let (out, k) =
            Prune::Magnitude { sparsity: 0.5 }.apply(DType::F32, &[2, 4], &bytes(&[1.0; 8]));
        assert_eq!(k, 4);
        assert_eq!(&out[..16], &[0u8; 16]);
        assert_eq!(&out[16..], &bytes(&[1.0; 4])[..]);
    }

    #[test]
    fn structured_prunes_whole_lines() {
        // Rows 0 and 2 are the small ones.
        let v = [0.1f32, 0.1, 5.0, 5.0, 0.2, 0.2, 3.0, 3.0];
        let (out, k) = Prune::Rows { sparsity: 0.5 }.apply(DType::F32, &[4, 2], &bytes(&v));
        assert_eq!(k, 4);
        assert_eq!(out, bytes(&[0.0, 0.0, 5.0, 5.0, 0.0, 0.0, 3.0, 3.0]));
        let (out, _) =
            Prune::Cols { sparsity: 0.5 }.apply(DType::F32, &[2, 2], &bytes(&[1.0, 9.0, 1.0, 9.0]));
        assert_eq!(out, bytes(&[0.0, 9.0, 0.0, 9.0]));
        let (_, k) = Prune::Threshold { threshold: 0.15 }.apply(DType::F32, &[4, 2], &bytes(&v));
        assert_eq!(k, 2);
    }

    #[test]
    fn parse_names_what_is_wrong() {
        assert_eq!(
            Prune::parse("magnitude:0.5").unwrap(),
            Prune::Magnitude { sparsity: 0.5 }
        );
        assert_eq!(
            Prune::parse("magnitude:threshold=0.01").unwrap(),
            Prune::Threshold { threshold: 0.01 }
        );
        assert_eq!(
            Prune::parse("cols:0.25").unwrap(),
            Prune::Cols { sparsity: 0.25 }
        );
        for bad in [
            "magnitude",
            "magnitude:1.5",
            "rows:x",
            "random:0.5",
            "magnitude:threshold=-1",
        ] {
            assert!(Prune::parse(bad).is_err(), "{bad}");
        }
    }
}
