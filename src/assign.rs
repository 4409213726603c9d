//! Mixed-tile format assignment: per-tile error tables and the searches that pick a format per
//! 32x32 tile (formats-spec/mixed.md §3).
//!
//! A [`Table`] holds, for every tile of a tensor's tile view and every candidate format, the
//! statistics of that tile's error ([`PairStats`]) and the format's bytes. It is built by
//! encoding each tile once per format (each band of tile rows is gathered once and stays in
//! cache while every format encodes it). From it, a tensor's PCC, MAE and atol under any
//! assignment follow from sums, and change in O(1) when one tile changes format ([`State`]),
//! so a greedy pass costs O(tiles x formats), not O(tiles x elements).
//!
//! Algorithms: `threshold` (per-tile score), `greedy` (seeded random order, global metric),
//! `random` (seeded random assignments), `optimal` (moves in order of least added error per
//! byte saved, under a threshold or a byte budget, per tensor or over the whole model).

use crate::codec::mixed::{codes_len, TileFormat};
use crate::codec::tile::TILE_ELEMS;
use crate::error::{Error, Result};
use crate::metrics::PairStats;
use crate::tiles::{TileGeom, T};
use rayon::prelude::*;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};

/// The metric a threshold applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Pearson correlation, at least the threshold.
    Pcc,
    /// Mean absolute error, at most the threshold.
    Mae,
    /// Largest absolute error, at most the threshold.
    Atol,
}

impl Metric {
    /// Parse `pcc`, `mae`, `atol`.
    pub fn parse(s: &str) -> Option<Metric> {
        Some(match s {
            "pcc" => Metric::Pcc,
            "mae" => Metric::Mae,
            "atol" => Metric::Atol,
            _ => return None,
        })
    }

    /// Name.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Pcc => "pcc",
            Metric::Mae => "mae",
            Metric::Atol => "atol",
        }
    }

    /// Whether `v` meets threshold `t`.
    pub fn passes(self, v: f64, t: f64) -> bool {
        match self {
            Metric::Pcc => v >= t,
            _ => v <= t,
        }
    }

    /// Whether `a` is better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Metric::Pcc => a > b,
            _ => a < b,
        }
    }
}

/// Metrics of a tensor (or one tile) under an assignment.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Score {
    /// Pearson correlation (0 where undefined, as in formats-spec/metrics.md).
    pub pcc: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// Largest absolute error.
    pub atol: f64,
}

impl Score {
    /// The value of `m`.
    pub fn get(&self, m: Metric) -> f64 {
        match m {
            Metric::Pcc => self.pcc,
            Metric::Mae => self.mae,
            Metric::Atol => self.atol,
        }
    }
}

/// PCC from centred sums, with formats-spec/metrics.md's edge cases.
fn pcc_of(cxx: f64, cxd: f64, cdd: f64, exact: bool) -> f64 {
    let vy = cxx + 2.0 * cxd + cdd;
    if exact {
        1.0
    } else if cxx > 0.0 && vy > 0.0 {
        ((cxx + cxd) / (cxx.sqrt() * vy.sqrt())).clamp(-1.0, 1.0)
    } else {
        0.0
    }
}

/// Score of one tile alone.
pub fn tile_score(s: &PairStats) -> Score {
    let exact = s.sum_sq_err() == 0.0;
    Score {
        pcc: pcc_of(s.m2x, s.cxd, s.m2d, exact),
        mae: if s.n > 0.0 { s.sum_abs / s.n } else { 0.0 },
        atol: s.max_abs,
    }
}

/// The error for non-finite values in a tensor given mixed tiles.
pub fn nonfinite(k: u64) -> Error {
    Error::input(format!(
        "{k} non-finite values (NaN or infinity); mixed tiles take finite weights only"
    ))
}

/// Error sums of one (tile, format), in the form that adds up over tiles.
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    /// Sum of d.
    sd: f64,
    /// Sum of x d (from the centred parts).
    sxd: f64,
    /// Sum of d^2.
    sdd: f64,
    /// Sum of |d|.
    sabs: f64,
}

impl Sums {
    fn of(s: &PairStats) -> Sums {
        Sums {
            sd: s.n * s.mean_d,
            sxd: s.cxd + s.n * s.mean_x * s.mean_d,
            sdd: s.sum_sq_err(),
            sabs: s.sum_abs,
        }
    }
}

/// Reads tile rows (a range) as tile-ordered values into a buffer.
pub type TileReader<'a> = dyn FnMut(std::ops::Range<usize>, &mut Vec<f32>) -> Result<()> + 'a;

/// Per-tile, per-format error statistics of one tensor.
///
/// Held for a whole tensor while its search runs, so it is kept compact: what depends only on
/// the source (a tile's element count, mean and spread) is stored once per tile, not once per
/// format, and the count comes from the tile grid (a tile and format then cost 40 bytes).
/// [`Table::at`] puts a tile's [`PairStats`] back together with the same values as measured.
#[derive(Debug, Clone)]
pub struct Table {
    /// Candidate formats, per-tensor parameters set (nvfp4's scale).
    pub formats: Vec<TileFormat>,
    /// Tiles across and down the tile grid.
    pub grid: (usize, usize),
    /// Elements that are not padding.
    pub n: u64,
    /// Rows and columns of the tile view (what is not padding).
    shape: (usize, usize),
    /// Per tile: the source's mean and centred sum of squares.
    source: Vec<[f64; 2]>,
    /// `cells[t * formats.len() + f]`: tile `t`'s error in format `f`.
    cells: Vec<Cell>,
    /// Tiles per chunk, as `compress` cuts the tensor (code bytes are per chunk).
    chunk_tiles: Vec<usize>,
    mean_x: f64,
    cxx: f64,
}

/// The format-dependent part of a tile's [`PairStats`].
#[derive(Debug, Clone, Copy)]
struct Cell {
    mean_d: f64,
    m2d: f64,
    cxd: f64,
    sum_abs: f64,
    max_abs: f64,
}

impl Table {
    /// Encode every tile of `vals` (the tensor's values, row-major) in every format of
    /// `formats` and measure it. `tiles_per_chunk` tiles rows per chunk fix the code bytes.
    pub fn build(
        vals: &[f32],
        geom: &TileGeom,
        formats: &[TileFormat],
        rows_per_chunk: usize,
    ) -> Result<Table> {
        if vals.iter().any(|v| !v.is_finite()) {
            let k = vals.iter().filter(|v| !v.is_finite()).count();
            return Err(nonfinite(k as u64));
        }
        let amax = vals.iter().fold(0f32, |m, v| m.max(v.abs()));
        Table::build_with(geom, formats, rows_per_chunk, amax, &mut |trs, out| {
            geom.gather_into(vals, trs, out);
            Ok(())
        })
    }

    /// [`Table::build`] from tile rows read a batch at a time by `read` (tile-ordered values,
    /// as [`crate::values::Values::tiles`] gives them), the tensor's largest magnitude known:
    /// memory for one batch and the table, not the tensor. The values must be finite.
    pub fn build_with(
        geom: &TileGeom,
        formats: &[TileFormat],
        rows_per_chunk: usize,
        amax: f32,
        read: &mut TileReader<'_>,
    ) -> Result<Table> {
        if formats.is_empty() {
            return Err(Error::config("no candidate tile formats"));
        }
        let formats: Vec<TileFormat> = formats.iter().map(|f| f.for_tensor(amax)).collect();
        let wide = geom.pcols / T;
        let high = geom.tile_rows();
        let nf = formats.len();
        let widest = formats.iter().map(|f| f.tile_bytes()).max().unwrap_or(0);
        // Half the encoder's batch: the table grows while the band is held twice (read in
        // tensor order, then gathered into tiles). Not less: glibc keeps freed buffers under
        // 32 MiB in its heap, where the encoding that follows cannot use them.
        let per_batch = (crate::encode::BATCH_BYTES / 2 / (4 * geom.tile_row_elems()).max(1))
            .max(rayon::current_num_threads())
            .max(1);
        // Filled batch by batch: the table is the one thing held for the whole tensor.
        let mut source: Vec<[f64; 2]> = Vec::with_capacity(high * wide);
        let mut cells: Vec<Cell> = Vec::with_capacity(high * wide * nf);
        // The source's moments, merged over tiles in order (Chan et al.).
        let (mut n, mut mean_x, mut cxx) = (0f64, 0f64, 0f64);
        let mut batch = Vec::new();
        for start in (0..high).step_by(per_batch) {
            let end = (start + per_batch).min(high);
            read(start..end, &mut batch)?;
            let tre = geom.tile_row_elems();
            let done: Vec<Vec<PairStats>> = (start..end)
                .into_par_iter()
                .map(|tr| {
                    let tiles = &batch[(tr - start) * tre..(tr - start + 1) * tre];
                    let mut out = vec![0u8; widest];
                    let mut recon = vec![0f32; TILE_ELEMS];
                    let (mut xs, mut ys) = (Vec::new(), Vec::new());
                    let mut row = Vec::with_capacity(wide * nf);
                    for tc in 0..wide {
                        let x = &tiles[tc * TILE_ELEMS..(tc + 1) * TILE_ELEMS];
                        let (vr, vc) = valid(geom.rows, geom.cols, tr, tc);
                        for f in &formats {
                            f.pack_recon(x, &mut out[..f.tile_bytes()], &mut recon);
                            let s = if vr == T && vc == T {
                                PairStats::of_block(x, &recon)
                            } else {
                                xs.clear();
                                ys.clear();
                                for r in 0..vr {
                                    xs.extend_from_slice(&x[r * T..r * T + vc]);
                                    ys.extend_from_slice(&recon[r * T..r * T + vc]);
                                }
                                PairStats::of(&crate::metrics::Accumulator::from_f32_pairs(
                                    &xs, &ys,
                                ))
                            };
                            row.push(s);
                        }
                    }
                    row
                })
                .collect();
            for row in done {
                for tile in row.chunks_exact(nf) {
                    // The source's part is the same in every format; the first format's is kept.
                    let s = &tile[0];
                    source.push([s.mean_x, s.m2x]);
                    if s.n > 0.0 {
                        let tot = n + s.n;
                        let dx = s.mean_x - mean_x;
                        cxx += s.m2x + dx * dx * n * s.n / tot;
                        mean_x += dx * s.n / tot;
                        n = tot;
                    }
                    cells.extend(tile.iter().map(|p| Cell {
                        mean_d: p.mean_d,
                        m2d: p.m2d,
                        cxd: p.cxd,
                        sum_abs: p.sum_abs,
                        max_abs: p.max_abs,
                    }));
                }
            }
        }
        let per_chunk = rows_per_chunk.max(1);
        let chunk_tiles = (0..high)
            .step_by(per_chunk)
            .map(|s| per_chunk.min(high - s) * wide)
            .collect();
        Ok(Table {
            formats,
            grid: (wide, high),
            n: n as u64,
            shape: (geom.rows, geom.cols),
            source,
            cells,
            chunk_tiles,
            mean_x,
            cxx,
        })
    }

    /// Tiles.
    pub fn tiles(&self) -> usize {
        self.grid.0 * self.grid.1
    }

    /// Statistics of tile `t` in format `f`.
    pub fn at(&self, t: usize, f: usize) -> PairStats {
        let c = &self.cells[t * self.formats.len() + f];
        let [mean_x, m2x] = self.source[t];
        let (vr, vc) = valid(self.shape.0, self.shape.1, t / self.grid.0, t % self.grid.0);
        PairStats {
            n: (vr * vc) as f64,
            mean_x,
            m2x,
            mean_d: c.mean_d,
            m2d: c.m2d,
            cxd: c.cxd,
            sum_abs: c.sum_abs,
            max_abs: c.max_abs,
        }
    }

    /// The score of tile `t` alone in format `f`.
    pub fn tile_score(&self, t: usize, f: usize) -> Score {
        tile_score(&self.at(t, f))
    }

    /// Bytes this table holds (its share of a search's memory).
    pub fn heap_bytes(&self) -> usize {
        self.cells.capacity() * std::mem::size_of::<Cell>()
            + self.source.capacity() * std::mem::size_of::<[f64; 2]>()
            + self.chunk_tiles.capacity() * std::mem::size_of::<usize>()
    }

    /// Bytes of the tile codes when `k` formats are in use (the written table holds only the
    /// formats an assignment uses; one format needs no codes).
    pub fn code_bytes(&self, k: usize) -> u64 {
        self.chunk_tiles
            .iter()
            .map(|&t| codes_len(k, t) as u64)
            .sum()
    }

    /// Payload bytes of an assignment (codes included).
    pub fn bytes(&self, a: &[u8]) -> u64 {
        let mut used = vec![false; self.formats.len()];
        let mut b = 0u64;
        for &f in a {
            used[f as usize] = true;
            b += self.formats[f as usize].tile_bytes() as u64;
        }
        b + self.code_bytes(used.iter().filter(|&&u| u).count())
    }

    /// Payload bytes with every tile in format `f` (no codes: a one-format table).
    pub fn uniform_bytes(&self, f: usize) -> u64 {
        (self.tiles() * self.formats[f].tile_bytes()) as u64
    }

    /// Index of the most precise candidate (most bytes, then rank).
    pub fn most_precise(&self) -> usize {
        (0..self.formats.len())
            .max_by_key(|&f| (self.formats[f].tile_bytes(), self.formats[f].rank()))
            .expect("a format")
    }

    /// Metrics of an assignment, summed from scratch.
    pub fn score(&self, a: &[u8]) -> Score {
        let mut s = State::lean(self, a).score();
        s.atol = a
            .iter()
            .enumerate()
            .filter(|&(t, _)| self.tile_n(t) > 0)
            .map(|(t, &f)| self.cells[t * self.formats.len() + f as usize].max_abs)
            .fold(0.0, f64::max);
        s
    }

    fn tile_n(&self, t: usize) -> usize {
        let (vr, vc) = valid(self.shape.0, self.shape.1, t / self.grid.0, t % self.grid.0);
        vr * vc
    }
}

/// Rows and columns of tile `(tr, tc)` that are not padding, in a `rows x cols` view.
fn valid(rows: usize, cols: usize, tr: usize, tc: usize) -> (usize, usize) {
    (
        rows.saturating_sub(tr * T).min(T),
        cols.saturating_sub(tc * T).min(T),
    )
}

/// Running sums of one tensor under an assignment, updated tile by tile.
#[derive(Debug, Clone)]
pub struct State<'a> {
    table: &'a Table,
    /// The assignment.
    pub a: Vec<u8>,
    sum: Sums,
    /// Count of tiles per largest-error value (an ordered multiset; f64 bits of non-negative
    /// values order as the values); `None` where atol is not followed (it would cost a map
    /// entry per tile).
    maxes: Option<BTreeMap<u64, u32>>,
    /// Tiles per format.
    counts: Vec<u64>,
    /// Payload bytes of the tiles (codes not included).
    tile_bytes: u64,
}

impl<'a> State<'a> {
    /// Sums of assignment `a`.
    pub fn new(table: &'a Table, a: &[u8]) -> State<'a> {
        State::with(table, a, true)
    }

    /// [`State::new`] for a search that never reads atol ([`State::score`]'s `atol` is NaN).
    pub fn lean(table: &'a Table, a: &[u8]) -> State<'a> {
        State::with(table, a, false)
    }

    /// The state a search on `m` needs: atol followed only for atol.
    pub fn for_metric(table: &'a Table, a: &[u8], m: Metric) -> State<'a> {
        State::with(table, a, m == Metric::Atol)
    }

    fn with(table: &'a Table, a: &[u8], track_atol: bool) -> State<'a> {
        let mut s = State {
            table,
            a: a.to_vec(),
            sum: Sums::default(),
            maxes: track_atol.then(BTreeMap::new),
            counts: vec![0; table.formats.len()],
            tile_bytes: 0,
        };
        for (t, &f) in a.iter().enumerate() {
            s.add(&table.at(t, f as usize), 1.0);
            s.counts[f as usize] += 1;
            s.tile_bytes += table.formats[f as usize].tile_bytes() as u64;
        }
        s
    }

    /// Payload bytes (codes included).
    pub fn bytes(&self) -> u64 {
        self.tile_bytes
            + self
                .table
                .code_bytes(self.counts.iter().filter(|&&c| c > 0).count())
    }

    fn add(&mut self, p: &PairStats, sign: f64) {
        let u = Sums::of(p);
        self.sum.sd += sign * u.sd;
        self.sum.sxd += sign * u.sxd;
        self.sum.sdd += sign * u.sdd;
        self.sum.sabs += sign * u.sabs;
        if let Some(maxes) = self.maxes.as_mut().filter(|_| p.n > 0.0) {
            let k = p.max_abs.to_bits();
            if sign > 0.0 {
                *maxes.entry(k).or_insert(0) += 1;
            } else if let Some(c) = maxes.get_mut(&k) {
                *c -= 1;
                if *c == 0 {
                    maxes.remove(&k);
                }
            }
        }
    }

    /// Move tile `t` to format `f`.
    pub fn set(&mut self, t: usize, f: u8) {
        let old = self.a[t];
        if old == f {
            return;
        }
        let table = self.table;
        self.add(&table.at(t, old as usize), -1.0);
        self.add(&table.at(t, f as usize), 1.0);
        self.tile_bytes = self.tile_bytes + table.formats[f as usize].tile_bytes() as u64
            - table.formats[old as usize].tile_bytes() as u64;
        self.counts[old as usize] -= 1;
        self.counts[f as usize] += 1;
        self.a[t] = f;
    }

    /// Metrics now.
    pub fn score(&self) -> Score {
        let t = self.table;
        let n = t.n as f64;
        if n == 0.0 {
            return Score {
                pcc: 1.0,
                mae: 0.0,
                atol: 0.0,
            };
        }
        // Running sums can drift a hair below zero after many updates of an exact tensor.
        let sdd = self.sum.sdd.max(0.0);
        let cxd = self.sum.sxd - t.mean_x * self.sum.sd;
        let cdd = (sdd - self.sum.sd * self.sum.sd / n).max(0.0);
        Score {
            pcc: pcc_of(t.cxx, cxd, cdd, sdd == 0.0),
            mae: self.sum.sabs.max(0.0) / n,
            atol: self.maxes.as_ref().map_or(f64::NAN, |m| {
                m.keys().next_back().map_or(0.0, |&k| f64::from_bits(k))
            }),
        }
    }

    /// `Cxd / Cxx`: how much of the error runs along the source (0 for an empty tensor).
    pub fn beta(&self) -> f64 {
        let t = self.table;
        if t.cxx > 0.0 {
            (self.sum.sxd - t.mean_x * self.sum.sd) / t.cxx
        } else {
            0.0
        }
    }

    /// Metrics if tile `t` were in format `f` (the state is left as it was).
    pub fn try_set(&mut self, t: usize, f: u8) -> Score {
        let old = self.a[t];
        self.set(t, f);
        let s = self.score();
        self.set(t, old);
        s
    }
}

/// SplitMix64: a small, fixed random generator, so a seed gives the same search everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by rejection so it is exactly uniform.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }

    /// A uniformly random permutation of `0..n` (Fisher-Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.below(i as u64 + 1) as usize;
            p.swap(i, j);
        }
        p
    }
}

/// `mixed-tile-threshold`: per tile, the lowest-byte format (the more precise of equal sizes)
/// whose own tile score passes; the most precise candidate where none does.
pub fn threshold(table: &Table, metric: Metric, t: f64) -> Vec<u8> {
    let mut order: Vec<usize> = (0..table.formats.len()).collect();
    order.sort_by_key(|&f| {
        (
            table.formats[f].tile_bytes(),
            std::cmp::Reverse(table.formats[f].rank()),
        )
    });
    let best = table.most_precise() as u8;
    (0..table.tiles())
        .map(|tile| {
            order
                .iter()
                .find(|&&f| metric.passes(table.tile_score(tile, f).get(metric), t))
                .map_or(best, |&f| f as u8)
        })
        .collect()
}

/// `mixed-tile-greedy`: every tile starts in the first format; then, for each format in order,
/// every tile (in a seeded random order) moves to it if the tensor's metric still passes.
pub fn greedy(table: &Table, metric: Metric, t: f64, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut s = State::for_metric(table, &vec![0u8; table.tiles()], metric);
    for f in 1..table.formats.len() as u8 {
        for tile in rng.permutation(table.tiles()) {
            if s.a[tile] == f {
                continue;
            }
            if metric.passes(s.try_set(tile, f).get(metric), t) {
                s.set(tile, f);
            }
        }
    }
    s.a
}

/// One sample of `mixed-tile-random`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    /// Sample number (0-based).
    pub iter: usize,
    /// Payload bytes.
    pub bytes: u64,
    /// Its metrics.
    pub score: Score,
    /// Whether it meets the threshold.
    pub passes: bool,
}

/// `mixed-tile-random`: `iters` seeded uniformly random assignments; the smallest that passes
/// (the better metric among equal sizes), else the one with the best metric. Returns it and
/// every sample.
pub fn random(
    table: &Table,
    metric: Metric,
    t: f64,
    iters: usize,
    seed: u64,
) -> (Vec<u8>, Vec<Sample>) {
    let mut rng = Rng::new(seed);
    let k = table.formats.len() as u64;
    let mut samples = Vec::with_capacity(iters);
    let mut best: Option<(Vec<u8>, Sample)> = None;
    for iter in 0..iters.max(1) {
        let a: Vec<u8> = (0..table.tiles()).map(|_| rng.below(k) as u8).collect();
        let score = table.score(&a);
        let v = score.get(metric);
        let smp = Sample {
            iter,
            bytes: table.bytes(&a),
            score,
            passes: metric.passes(v, t),
        };
        let take = match &best {
            None => true,
            Some((_, b)) => match (smp.passes, b.passes) {
                (true, false) => true,
                (false, true) => false,
                (true, true) => {
                    smp.bytes < b.bytes
                        || (smp.bytes == b.bytes && metric.better(v, b.score.get(metric)))
                }
                (false, false) => metric.better(v, b.score.get(metric)),
            },
        };
        if take {
            best = Some((a, smp.clone()));
        }
        samples.push(smp);
    }
    (best.expect("at least one sample").0, samples)
}

/// What `optimal` stops at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// The metric must pass this threshold; as few bytes as that allows.
    Threshold(Metric, f64),
    /// At most this many payload bytes; as good a metric as that allows.
    Bytes(u64),
}

/// One step of a tile down its ladder: to format `to`, saving `saved` bytes for `cost` added
/// error (the proxy of formats-spec/mixed.md: squared error for PCC, absolute error for MAE).
/// 16 bytes, one per tile in the heap: the target format is the tile's next rung.
#[derive(Debug, Clone, Copy)]
struct Move {
    slope: f64,
    tensor: u32,
    tile: u32,
}

impl PartialEq for Move {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Move {}
impl PartialOrd for Move {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Move {
    /// Smallest slope first out of a max-heap; ties by tensor, tile (deterministic).
    fn cmp(&self, o: &Self) -> Ordering {
        o.slope
            .total_cmp(&self.slope)
            .then(o.tensor.cmp(&self.tensor))
            .then(o.tile.cmp(&self.tile))
    }
}

/// Tile `tile`'s cost in format `f` under `proxy` (see [`ladder`]).
fn tile_cost(table: &Table, tile: usize, f: usize, proxy: Metric, beta: f64, weight: f64) -> f64 {
    let s = table.at(tile, f);
    match proxy {
        Metric::Mae => s.sum_abs,
        Metric::Atol => s.max_abs,
        Metric::Pcc => {
            let u = Sums::of(&s);
            weight * (u.sdd - 2.0 * beta * (u.sxd - table.mean_x * u.sd))
        }
    }
}

/// A tile's formats from most to fewest bytes along the lower convex hull of (bytes, cost):
/// each step saves bytes at a rising cost per byte; dominated formats are skipped. The cost is
/// the tile's part of the tensor's error under `proxy`: for PCC, `1 - pcc` grows (to first
/// order) by `(dCdd - 2 beta dCxd) / (2 Cxx)` with `beta = Cxd / Cxx`, so a tile costs
/// `weight * (sum d^2 - 2 beta (sum x d - mean_x sum d))`, `weight = n / Cxx` making tensors
/// comparable in whole-model mode; for MAE `sum |d|`; for atol `max |d|`.
fn ladder(table: &Table, tile: usize, proxy: Metric, beta: f64, weight: f64) -> Vec<(u8, f64)> {
    let cost = |f: usize| tile_cost(table, tile, f, proxy, beta, weight);
    let mut pts: Vec<(usize, f64, f64)> = (0..table.formats.len())
        .map(|f| (f, table.formats[f].tile_bytes() as f64, cost(f)))
        .collect();
    // Most bytes first; among equal sizes the least error.
    pts.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.total_cmp(&b.2)));
    pts.dedup_by(|b, a| a.1 == b.1);
    let mut hull: Vec<(usize, f64, f64)> = Vec::new();
    for p in pts {
        // Lower convex hull: drop the last point while the step to `p` costs no more per byte
        // saved than the step into it (that point, and any dominated one, is never worth
        // stopping at).
        while hull.len() >= 2 {
            let (a, b) = (hull[hull.len() - 2], hull[hull.len() - 1]);
            // Slopes in error per byte saved; the hull needs them rising.
            let s1 = (b.2 - a.2) / (a.1 - b.1);
            let s2 = (p.2 - b.2) / (b.1 - p.1);
            if s2 <= s1 {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(p);
    }
    hull.iter().map(|&(f, _, c)| (f as u8, c)).collect()
}

/// `mixed-tile-optimal` over one or more tensors (whole-model mode shares one goal): every tile
/// starts in its most precise format and moves down its ladder, cheapest added error per byte
/// saved first. Under a threshold a move that would break it is refused (and that tile stops);
/// under a budget moves go on until the bytes fit. With several tensors the threshold applies to
/// the element-weighted mean of their metrics (atol: the largest). Returns each tensor's
/// assignment.
pub fn optimal(tables: &[&Table], goal: Goal) -> Result<Vec<Vec<u8>>> {
    optimal_weighted(tables, goal, None)
}

/// The predicted output divergence of an assignment: `sum_t alpha_t * SSE_t / Cxx_t` (the
/// sensitivity model of [`crate::allocate`], each tensor's squared error relative to its
/// centered sum of squares).
pub fn predicted_kld(tables: &[&Table], a: &[Vec<u8>], alpha: &[f64]) -> f64 {
    tables
        .iter()
        .zip(a)
        .zip(alpha)
        .map(|((t, a), &al)| {
            let sse: f64 = a
                .iter()
                .enumerate()
                .map(|(tile, &f)| Sums::of(&t.at(tile, f as usize)).sdd)
                .sum();
            if t.cxx > 0.0 {
                al * sse / t.cxx
            } else {
                0.0
            }
        })
        .sum()
}

/// [`optimal`] with output-aware weights: with `alpha` (one sensitivity per table, as
/// `tenpak sensitivity` measures them), a tile's squared error costs `alpha_t / Cxx_t` per unit
/// instead of `n_t / Cxx_t`, so the search spends bytes where the model's output feels them;
/// under a budget the candidates are then compared by [`predicted_kld`].
pub fn optimal_weighted(
    tables: &[&Table],
    goal: Goal,
    alpha: Option<&[f64]>,
) -> Result<Vec<Vec<u8>>> {
    let proxy = match goal {
        Goal::Threshold(m, _) => m,
        Goal::Bytes(_) => Metric::Pcc,
    };
    let weights: Vec<f64> = tables
        .iter()
        .enumerate()
        .map(|(k, t)| {
            let num = alpha.map_or(t.n as f64, |a| a[k]);
            if t.cxx > 0.0 {
                num / t.cxx
            } else {
                1.0
            }
        })
        .collect();
    let cap = alpha.map(|_| LINEAR_RANGE);
    let first = optimal_pass(tables, goal, proxy, &vec![0.0; tables.len()], &weights, cap)?;
    if let (Some(al), Goal::Bytes(_)) = (alpha, goal) {
        // The predicted divergence prices every error (scale included): one pass.
        return Ok(best_of(tables, goal, vec![first], Some(al)));
    }
    if proxy != Metric::Pcc {
        return Ok(best_of(tables, goal, vec![first], None));
    }
    // PCC forgives error along x (a scale): a second pass prices it with each tensor's
    // `beta = Cxd / Cxx` from the first, and the better of the two is kept.
    let betas: Vec<f64> = tables
        .iter()
        .zip(&first)
        .map(|(t, a)| State::new(t, a).beta())
        .collect();
    let second = optimal_pass(tables, goal, proxy, &betas, &weights, cap)?;
    Ok(best_of(tables, goal, vec![first, second], None))
}

/// The best of several candidate results, and of every single format used everywhere (a
/// mixed search should never lose to a plain format): under a threshold the fewest bytes among
/// those that pass, under a budget the best metric among those that fit (with `alpha`, the
/// least predicted divergence).
fn best_of(
    tables: &[&Table],
    goal: Goal,
    mut candidates: Vec<Vec<Vec<u8>>>,
    alpha: Option<&[f64]>,
) -> Vec<Vec<u8>> {
    let nf = tables[0].formats.len();
    let own = candidates.len();
    for f in 0..nf as u8 {
        candidates.push(tables.iter().map(|t| vec![f; t.tiles()]).collect());
    }
    let value = |a: &[Vec<u8>], m: Metric| model_score(tables, a, m);
    let mut best: Option<(Vec<Vec<u8>>, u64, f64)> = None;
    for (i, c) in candidates.into_iter().enumerate() {
        let bytes = total_bytes(tables, &c);
        let (ok, v) = match goal {
            Goal::Threshold(m, t) => {
                // The searches' own results pass by construction (checked as they were built).
                let v = value(&c, m);
                (i < own || m.passes(v, t), v)
            }
            Goal::Bytes(b) => (
                bytes <= b && alpha.is_none_or(|_| within_range(tables, &c)),
                match alpha {
                    // Higher is better below: the negated divergence.
                    Some(al) => -predicted_kld(tables, &c, al),
                    None => value(&c, Metric::Pcc),
                },
            ),
        };
        if !ok {
            continue;
        }
        let take = match &best {
            None => true,
            Some((_, bb, bv)) => match goal {
                Goal::Threshold(m, _) => bytes < *bb || (bytes == *bb && m.better(v, *bv)),
                Goal::Bytes(_) => v > *bv,
            },
        };
        if take {
            best = Some((c, bytes, v));
        }
    }
    best.expect("the searches' own results qualify").0
}

/// Whether every tensor's relative squared error is within [`LINEAR_RANGE`].
fn within_range(tables: &[&Table], a: &[Vec<u8>]) -> bool {
    tables.iter().zip(a).all(|(t, a)| {
        let sse: f64 = a
            .iter()
            .enumerate()
            .map(|(tile, &f)| Sums::of(&t.at(tile, f as usize)).sdd)
            .sum();
        t.cxx <= 0.0 || sse / t.cxx <= LINEAR_RANGE
    })
}

fn total_bytes(tables: &[&Table], a: &[Vec<u8>]) -> u64 {
    tables.iter().zip(a).map(|(t, a)| t.bytes(a)).sum()
}

/// The largest relative squared error (`SSE / Cxx`) the output-aware search lets a tensor reach:
/// the sensitivity model is linear in the error only for small errors (it was measured at
/// 2e-3 and checks out to ~3e-2), while a tensor pushed to `fp0` tiles (error 1) would be
/// priced at a fraction of what it does to the output.
pub const LINEAR_RANGE: f64 = 0.05;

/// Each tile's ladder of one tensor, flat: `formats.len()` rungs per tile, unused ones
/// `u8::MAX` (a byte per tile and format instead of a vector per tile).
struct Ladders {
    stride: usize,
    rungs: Vec<u8>,
}

impl Ladders {
    fn of(t: &Table, proxy: Metric, beta: f64, weight: f64) -> Ladders {
        let stride = t.formats.len();
        let mut rungs = vec![u8::MAX; t.tiles() * stride];
        for (tile, r) in rungs.chunks_exact_mut(stride).enumerate() {
            for (slot, (f, _)) in r.iter_mut().zip(ladder(t, tile, proxy, beta, weight)) {
                *slot = f;
            }
        }
        Ladders { stride, rungs }
    }

    /// Format of rung `p` of `tile`, if it has one.
    fn rung(&self, tile: usize, p: usize) -> Option<u8> {
        (p < self.stride)
            .then(|| self.rungs[tile * self.stride + p])
            .filter(|&f| f != u8::MAX)
    }
}

fn optimal_pass(
    tables: &[&Table],
    goal: Goal,
    proxy: Metric,
    betas: &[f64],
    weights: &[f64],
    cap: Option<f64>,
) -> Result<Vec<Vec<u8>>> {
    if tables.len() > u32::MAX as usize || tables.iter().any(|t| t.tiles() > u32::MAX as usize) {
        return Err(Error::config("too many tiles for one mixed-tile search"));
    }
    let ladders: Vec<Ladders> = tables
        .iter()
        .enumerate()
        .map(|(k, t)| Ladders::of(t, proxy, betas[k], weights[k]))
        .collect();
    let track_atol = matches!(goal, Goal::Threshold(Metric::Atol, _));
    let mut states: Vec<State> = tables
        .iter()
        .zip(&ladders)
        .map(|(t, l)| {
            let a: Vec<u8> = (0..t.tiles()).map(|i| l.rung(i, 0).unwrap_or(0)).collect();
            State::with(t, &a, track_atol)
        })
        .collect();
    // Position of each tile on its ladder.
    let mut pos: Vec<Vec<u8>> = tables.iter().map(|t| vec![0; t.tiles()]).collect();
    let cost = |ti: usize, tile: usize, f: u8| {
        tile_cost(tables[ti], tile, f as usize, proxy, betas[ti], weights[ti])
    };
    let next = |ti: usize, tile: usize, p: usize| -> Option<Move> {
        let l = &ladders[ti];
        let (from, to) = (l.rung(tile, p)?, l.rung(tile, p + 1)?);
        let saved = tables[ti].formats[from as usize].tile_bytes() as f64
            - tables[ti].formats[to as usize].tile_bytes() as f64;
        Some(Move {
            tensor: ti as u32,
            tile: tile as u32,
            slope: (cost(ti, tile, to) - cost(ti, tile, from)).max(0.0) / saved,
        })
    };
    let first: Vec<Move> = tables
        .iter()
        .enumerate()
        .flat_map(|(ti, t)| (0..t.tiles()).filter_map(move |tile| next(ti, tile, 0)))
        .collect();
    let mut heap = BinaryHeap::from(first);
    let total_n: f64 = tables.iter().map(|t| t.n as f64).sum();
    let mut bytes: u64 = states.iter().map(|s| s.bytes()).sum();
    let sdd = |ti: usize, tile: usize, f: u8| Sums::of(&tables[ti].at(tile, f as usize)).sdd;
    // Each tensor's squared error, for the cap.
    let mut sse: Vec<f64> = states
        .iter()
        .enumerate()
        .map(|(ti, st)| {
            st.a.iter()
                .enumerate()
                .map(|(tile, &f)| sdd(ti, tile, f))
                .sum()
        })
        .collect();
    // Per-tensor scores kept current so a trial move only recomputes its own tensor.
    let mut scores: Vec<Score> = states.iter().map(|s| s.score()).collect();
    while let Some(mv) = heap.pop() {
        match goal {
            Goal::Bytes(b) if bytes <= b => break,
            _ => {}
        }
        let (ti, tile) = (mv.tensor as usize, mv.tile as usize);
        let p = pos[ti][tile] as usize;
        let to = ladders[ti]
            .rung(tile, p + 1)
            .expect("a move has a next rung");
        if let Goal::Threshold(m, t) = goal {
            let trial = states[ti].try_set(tile, to);
            let v = if tables.len() == 1 {
                trial.get(m)
            } else if m == Metric::Atol {
                scores
                    .iter()
                    .enumerate()
                    .map(|(i, s)| if i == ti { trial.atol } else { s.atol })
                    .fold(0.0, f64::max)
            } else {
                let others: f64 = scores
                    .iter()
                    .zip(tables)
                    .enumerate()
                    .filter(|(i, _)| *i != ti)
                    .map(|(_, (s, tb))| s.get(m) * tb.n as f64)
                    .sum();
                (others + trial.get(m) * tables[ti].n as f64) / total_n.max(1.0)
            };
            if !m.passes(v, t) {
                continue;
            }
        }
        if let Some(c) = cap {
            let d = sdd(ti, tile, to) - sdd(ti, tile, states[ti].a[tile]);
            if tables[ti].cxx > 0.0 && (sse[ti] + d) / tables[ti].cxx > c {
                // The tile stops here: further down its ladder the error only grows.
                continue;
            }
            sse[ti] += d;
        }
        let before = states[ti].bytes();
        states[ti].set(tile, to);
        scores[ti] = states[ti].score();
        bytes = bytes + states[ti].bytes() - before;
        pos[ti][tile] += 1;
        if let Some(m) = next(ti, tile, p + 1) {
            heap.push(m);
        }
    }
    if let Goal::Bytes(b) = goal {
        if bytes > b {
            return Err(Error::config(match cap {
                None => format!(
                    "the byte budget {b} is below the smallest mixed encoding ({bytes} bytes)"
                ),
                Some(c) => format!(
                    "the byte budget {b} is below the smallest mixed encoding that keeps every tensor's relative squared error within {c}, where the sensitivities hold ({bytes} bytes)"
                ),
            }));
        }
    }
    Ok(states.into_iter().map(|s| s.a).collect())
}

/// The element-weighted mean of metric `m` over tensors (atol: the largest).
pub fn model_score(tables: &[&Table], assignments: &[Vec<u8>], m: Metric) -> f64 {
    let scores: Vec<Score> = tables
        .iter()
        .zip(assignments)
        .map(|(t, a)| t.score(a))
        .collect();
    if m == Metric::Atol {
        return scores.iter().map(|s| s.atol).fold(0.0, f64::max);
    }
    let n: f64 = tables.iter().map(|t| t.n as f64).sum();
    scores
        .iter()
        .zip(tables)
        .map(|(s, t)| s.get(m) * t.n as f64)
        .sum::<f64>()
        / n.max(1.0)
}

/// A lower bound on the payload bytes of any assignment of one tensor with PCC >= `t`, for
/// judging how close a search comes (formats-spec/mixed.md §3). To first order in the error,
/// `PCC >= t` needs `min over beta of (Cdd - 2 beta Cxd + beta^2 Cxx) <= 2 (1 - t) Cxx`; for
/// each `beta` of a grid this is a multiple-choice knapsack over tiles, whose LP relaxation (each
/// tile along its convex hull, cheapest cost per byte first, the last step fractional) bounds
/// its bytes from below; the bound is the least over the grid. Approximate where the first-order
/// expansion is (it ignores the error's mean, `SD^2 / N`).
pub fn lp_bound_bytes(table: &Table, t: f64) -> f64 {
    let budget = 2.0 * (1.0 - t) * table.cxx;
    let mut best = f64::INFINITY;
    for k in -80..=80 {
        let beta = k as f64 * 5e-4;
        let room = budget - beta * beta * table.cxx;
        if room < 0.0 {
            continue;
        }
        // Every tile at its least-cost hull point, then steps by cost per byte saved.
        let mut cost = 0.0;
        let mut bytes = 0.0;
        let mut steps = Vec::new();
        for tile in 0..table.tiles() {
            let l = ladder(table, tile, Metric::Pcc, beta, 1.0);
            let fb = |f: u8| table.formats[f as usize].tile_bytes() as f64;
            cost += l[0].1;
            bytes += fb(l[0].0);
            for w in l.windows(2) {
                let saved = fb(w[0].0) - fb(w[1].0);
                steps.push(((w[1].1 - w[0].1).max(0.0) / saved, saved));
            }
        }
        if cost > room {
            continue;
        }
        steps.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (slope, saved) in steps {
            let add = slope * saved;
            if cost + add <= room {
                cost += add;
                bytes -= saved;
            } else {
                bytes -= (room - cost) / slope;
                break;
            }
        }
        best = best.min(bytes);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::bfp::Bfp;
    use tpk_format::Layout;

    fn tensor(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        let mut r = Rng::new(seed);
        (0..rows * cols)
            .map(|i| {
                let u = (r.next_u64() >> 11) as f32 / (1u64 << 53) as f32 - 0.5;
                // Some rows with outliers, so tiles differ.
                if (i / cols).is_multiple_of(7) && i.is_multiple_of(13) {
                    u * 40.0
                } else {
                    u * 0.1
                }
            })
            .collect()
    }

    fn table(rows: usize, cols: usize) -> (Vec<f32>, Table) {
        let vals = tensor(rows, cols, 3);
        let geom = TileGeom::new(Layout::Tiles32, &[rows as u64, cols as u64], u64::MAX)
            .unwrap()
            .unwrap();
        let formats: Vec<TileFormat> = ["bf16", "bfp8", "bfp4", "bfp2", "fp0"]
            .iter()
            .map(|n| TileFormat::parse(n).unwrap())
            .collect();
        let t = Table::build(&vals, &geom, &formats, 4).unwrap();
        (vals, t)
    }

    /// Output-aware weights: the sensitive tensor keeps more bytes, the whole fits the budget,
    /// and the predicted divergence is no worse than the element-weighted search's.
    #[test]
    fn output_aware_weights_move_bytes_to_the_sensitive_tensor() {
        let (_, a) = table(96, 128);
        let (_, b) = table(96, 128);
        let budget = a.uniform_bytes(2) + b.uniform_bytes(2);
        let plain = optimal(&[&a, &b], Goal::Bytes(budget)).unwrap();
        let alpha = [100.0, 1.0];
        let w = optimal_weighted(&[&a, &b], Goal::Bytes(budget), Some(&alpha)).unwrap();
        assert!(a.bytes(&w[0]) + b.bytes(&w[1]) <= budget);
        assert!(
            a.bytes(&w[0]) > b.bytes(&w[1]),
            "the sensitive tensor keeps more"
        );
        let (pw, pp) = (
            predicted_kld(&[&a, &b], &w, &alpha),
            predicted_kld(&[&a, &b], &plain, &alpha),
        );
        assert!(pw <= pp, "{pw} > {pp}");
        // A tensor the output barely feels still stays where the linear model holds.
        let tiny = [1e-6, 1.0];
        let budget = (a.uniform_bytes(1) + b.uniform_bytes(3)) / 2 * 2;
        let w = optimal_weighted(&[&a, &b], Goal::Bytes(budget), Some(&tiny)).unwrap();
        assert!(within_range(&[&a, &b], &w));
    }

    /// The compact table gives back each tile's statistics as measured (partial edge tiles
    /// included), and holds 40 bytes per tile and format plus 16 per tile.
    #[test]
    fn compact_table_gives_back_the_measured_statistics() {
        let (rows, cols) = (70, 100);
        let (vals, t) = table(rows, cols);
        assert_eq!(t.grid, (4, 3));
        let mut recon = vec![0f32; TILE_ELEMS];
        let mut out = vec![0u8; 4096];
        for tile in 0..t.tiles() {
            let (tr, tc) = (tile / t.grid.0, tile % t.grid.0);
            let (vr, vc) = valid(rows, cols, tr, tc);
            let mut x = vec![0f32; TILE_ELEMS];
            for r in 0..vr {
                for c in 0..vc {
                    x[r * T + c] = vals[(tr * T + r) * cols + tc * T + c];
                }
            }
            for (f, fmt) in t.formats.iter().enumerate() {
                fmt.pack_recon(&x, &mut out[..fmt.tile_bytes()], &mut recon);
                let want = if vr == T && vc == T {
                    PairStats::of_block(&x, &recon)
                } else {
                    let (mut xs, mut ys) = (Vec::new(), Vec::new());
                    for r in 0..vr {
                        xs.extend_from_slice(&x[r * T..r * T + vc]);
                        ys.extend_from_slice(&recon[r * T..r * T + vc]);
                    }
                    PairStats::of(&crate::metrics::Accumulator::from_f32_pairs(&xs, &ys))
                };
                let got = t.at(tile, f);
                assert_eq!(
                    (got.n, got.mean_d, got.m2d, got.cxd),
                    (want.n, want.mean_d, want.m2d, want.cxd)
                );
                assert_eq!((got.sum_abs, got.max_abs), (want.sum_abs, want.max_abs));
                if f == 0 {
                    assert_eq!((got.mean_x, got.m2x), (want.mean_x, want.m2x));
                }
            }
        }
        let nf = t.formats.len();
        assert!(t.heap_bytes() <= t.tiles() * (40 * nf + 16) + 8 * t.chunk_tiles.len());
    }

    #[test]
    fn incremental_score_matches_a_fresh_sum() {
        let (_, t) = table(100, 130);
        let mut rng = Rng::new(9);
        let mut a: Vec<u8> = (0..t.tiles()).map(|_| rng.below(5) as u8).collect();
        let mut s = State::new(&t, &a);
        for _ in 0..500 {
            let (tile, f) = (rng.below(t.tiles() as u64) as usize, rng.below(5) as u8);
            s.set(tile, f);
            a[tile] = f;
        }
        let (x, y) = (s.score(), t.score(&a));
        assert!((x.pcc - y.pcc).abs() < 1e-12, "{x:?} {y:?}");
        assert!((x.mae - y.mae).abs() < 1e-12 * y.mae.max(1e-30));
        assert_eq!(x.atol, y.atol);
        assert_eq!(s.bytes(), t.bytes(&a));
    }

    #[test]
    fn searches_meet_their_threshold() {
        let (_, t) = table(96, 160);
        for m in [Metric::Pcc, Metric::Mae, Metric::Atol] {
            let th = match m {
                Metric::Pcc => 0.999,
                Metric::Mae => 2e-3,
                Metric::Atol => 0.2,
            };
            let g = greedy(&t, m, th, 42);
            assert!(m.passes(t.score(&g).get(m), th), "greedy {m:?}");
            let o = optimal(&[&t], Goal::Threshold(m, th)).unwrap().remove(0);
            assert!(m.passes(t.score(&o).get(m), th), "optimal {m:?}");
            // Per-tile scores pass, so the tensor's do for MAE and atol.
            let th_a = threshold(&t, m, th);
            if m != Metric::Pcc {
                assert!(m.passes(t.score(&th_a).get(m), th), "threshold {m:?}");
            }
            let (r, samples) = random(&t, m, th, 20, 5);
            assert_eq!(samples.len(), 20);
            if samples.iter().any(|s| s.passes) {
                assert!(m.passes(t.score(&r).get(m), th));
            }
        }
        // The optimal search uses no more bytes than greedy at the same PCC.
        let g = greedy(&t, Metric::Pcc, 0.999, 1);
        let o = optimal(&[&t], Goal::Threshold(Metric::Pcc, 0.999))
            .unwrap()
            .remove(0);
        assert!(
            t.bytes(&o) <= t.bytes(&g),
            "{} > {}",
            t.bytes(&o),
            t.bytes(&g)
        );
        // Same seed, same answer.
        assert_eq!(
            greedy(&t, Metric::Pcc, 0.999, 7),
            greedy(&t, Metric::Pcc, 0.999, 7)
        );
    }

    #[test]
    fn budget_fits_and_beats_the_uniform_format_of_that_size() {
        let (_, t) = table(128, 128);
        let bfp4 = t
            .formats
            .iter()
            .position(|f| *f == TileFormat::Bfp(Bfp::B4))
            .unwrap();
        let budget = t.uniform_bytes(bfp4);
        let a = optimal(&[&t], Goal::Bytes(budget)).unwrap().remove(0);
        assert!(t.bytes(&a) <= budget);
        let uniform = vec![bfp4 as u8; t.tiles()];
        assert!(t.score(&a).pcc >= t.score(&uniform).pcc);
        // Zero bytes: every tile dropped (fp0 alone needs no codes); less is impossible without it.
        let fp0 = t
            .formats
            .iter()
            .position(|f| *f == TileFormat::Fp0)
            .unwrap() as u8;
        let z = optimal(&[&t], Goal::Bytes(0)).unwrap().remove(0);
        assert!(z.iter().all(|&f| f == fp0));
        let no_fp0 = Table {
            formats: t.formats[..4].to_vec(),
            cells: (0..t.tiles())
                .flat_map(|i| (0..4).map(move |f| (i, f)))
                .map(|(i, f)| t.cells[i * t.formats.len() + f])
                .collect(),
            ..t.clone()
        };
        assert!(optimal(&[&no_fp0], Goal::Bytes(0)).is_err());
    }

    #[test]
    fn rng_is_fixed_and_uniform_enough() {
        let mut r = Rng::new(1);
        let v: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        let mut r2 = Rng::new(1);
        assert_eq!(v, (0..3).map(|_| r2.next_u64()).collect::<Vec<_>>());
        let mut counts = [0u32; 5];
        for _ in 0..5000 {
            counts[r.below(5) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (850..1150).contains(&c)),
            "{counts:?}"
        );
        let mut p = r.permutation(100);
        p.sort();
        assert_eq!(p, (0..100).collect::<Vec<_>>());
    }
}
