//! PNG plots with plotters: the format staircase (`tenpak plot staircase`), and the figures the
//! library describes ([`tenpak::figure::Figure`]: `analyze --plots`, mixed-tile artifacts, the
//! sweep's frontier), drawn by [`Png`].
//!
//! Text is drawn with DejaVu Sans Mono, embedded (assets/fonts, Bitstream Vera license), so plots
//! look the same on machines without system fonts.

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::path::Path;
use std::sync::Once;
use tenpak::codec::Pipeline;
use tenpak::dtype::DType;
use tenpak::error::{Error, Result};
use tenpak::figure::SizePoint;

const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSansMono.ttf");

fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded font parses; a failure here would be a build defect, so it is ignored
        // rather than turned into a user-facing error (plots would then lack text).
        let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Draw into a temporary PNG beside `path`, then rename it into place, so an interrupted or
/// failed drawing leaves nothing at `path`.
fn atomic_png(path: &Path, draw: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = tenpak::atomic::create(path)?;
    draw(tmp.path())?;
    tenpak::atomic::persist(tmp, true).map(|_| ())
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::new(
        tenpak::error::ErrorKind::Io,
        format!("drawing the plot: {e}"),
    )
    .with_file(path)
}

/// A color per series, distinguishable and stable.
fn color(i: usize) -> RGBColor {
    const C: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    C[i % C.len()]
}

/// Decode `vals` placed in one 32x32 tile (row 0, from column 0; the rest zeros) with `format`:
/// the reconstruction of each value when it shares its block with `vals`' other entries.
fn through_tile(p: &Pipeline, vals: &[f32]) -> Result<Vec<f32>> {
    let mut tile = vec![0f32; 1024];
    tile[..vals.len()].copy_from_slice(vals);
    let amax = tile.iter().fold(0f32, |m, v| m.max(v.abs()));
    let p = p.bind(&tenpak::codec::TensorFacts {
        dims: &[],
        amax: Some(amax),
        values: None,
    });
    let bytes: Vec<u8> = tile.iter().flat_map(|v| v.to_le_bytes()).collect();
    let dec = p.decode(&p.encode(DType::F32, &bytes)?, DType::F32, 1024, u64::MAX)?;
    let out = tenpak::dtype::to_f64(p.tensor_codec().decoded_dtype(DType::F32), &dec);
    Ok(out[..vals.len()].iter().map(|&v| v as f32).collect())
}

/// Options of [`staircase`].
#[derive(Debug, Clone)]
pub struct StaircaseOptions {
    /// Formats (pipeline specs).
    pub formats: Vec<String>,
    /// Random companion sets per x value for the "rand" points.
    pub rand_samples: usize,
    /// Largest input value plotted.
    pub max: f32,
    /// Seed of the companions.
    pub seed: u64,
}

/// amax -> reconstructed value, per format: the "ideal" curve (the value alone sets its block
/// scale) and "rand" points (the value shares its 16/32-element block with uniform random
/// companions in [-max, max], so a larger neighbour can set the scale).
pub fn staircase(path: &Path, o: &StaircaseOptions) -> Result<()> {
    atomic_png(path, |tmp| staircase_to(tmp, o))
}

fn staircase_to(path: &Path, o: &StaircaseOptions) -> Result<()> {
    fonts();
    let pipelines: Vec<Pipeline> = o
        .formats
        .iter()
        .map(|f| Pipeline::parse(f))
        .collect::<Result<_>>()?;
    let n = 600;
    let xs: Vec<f32> = (0..=n).map(|i| o.max * i as f32 / n as f32).collect();
    let mut ideal = Vec::new();
    let mut rand = Vec::new();
    let mut state = o.seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f32 / (1u64 << 53) as f32
    };
    for p in &pipelines {
        let mut curve = Vec::with_capacity(xs.len());
        for &x in &xs {
            curve.push((x, through_tile(p, &[x])?[0]));
        }
        ideal.push(curve);
        let mut pts = Vec::new();
        for &x in xs.iter().step_by(4) {
            for _ in 0..o.rand_samples {
                let mut row = [0f32; 32];
                row[0] = x;
                for v in row.iter_mut().skip(1) {
                    *v = (2.0 * next() - 1.0) * o.max;
                }
                pts.push((x, through_tile(p, &row)?[0]));
            }
        }
        rand.push(pts);
    }
    let root = BitMapBackend::new(path, (1200, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "reconstructed value vs input (ideal: alone in its block; rand: with random neighbours)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0f32..o.max, 0f32..o.max * 1.05)
        .map_err(|e| plot_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc("input value (= block amax for the ideal curve)")
        .y_desc("reconstructed value")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| plot_err(path, e))?;
    chart
        .draw_series(LineSeries::new(
            [(0.0, 0.0), (o.max, o.max)],
            BLACK.mix(0.4).stroke_width(1),
        ))
        .map_err(|e| plot_err(path, e))?
        .label("exact")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.4)));
    for (i, f) in o.formats.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(
                rand[i]
                    .iter()
                    .map(|&(x, y)| Circle::new((x, y), 2, c.mix(0.3).filled())),
            )
            .map_err(|e| plot_err(path, e))?;
        chart
            .draw_series(LineSeries::new(ideal[i].iter().copied(), c.stroke_width(2)))
            .map_err(|e| plot_err(path, e))?
            .label(f.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()
        .map_err(|e| plot_err(path, e))?;
    root.present().map_err(|e| plot_err(path, e))?;
    Ok(())
}

/// One tensor: (original, reconstructed) pairs of each format over the tensor's [min, max], with
/// the identity line ("ideal").
pub fn tensor_pairs(path: &Path, tensor: &str, series: &[(String, Vec<(f32, f32)>)]) -> Result<()> {
    atomic_png(path, |tmp| tensor_pairs_to(tmp, tensor, series))
}

fn tensor_pairs_to(path: &Path, tensor: &str, series: &[(String, Vec<(f32, f32)>)]) -> Result<()> {
    fonts();
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for (_, pts) in series {
        for &(x, y) in pts {
            lo = lo.min(x).min(y);
            hi = hi.max(x).max(y);
        }
    }
    if !(lo.is_finite() && hi.is_finite()) || lo == hi {
        lo -= 1.0;
        hi += 1.0;
    }
    let pad = (hi - lo) * 0.03;
    let root = BitMapBackend::new(path, (1000, 1000)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{tensor}: reconstructed vs original"),
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(lo - pad..hi + pad, lo - pad..hi + pad)
        .map_err(|e| plot_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc("original value")
        .y_desc("reconstructed value")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| plot_err(path, e))?;
    chart
        .draw_series(LineSeries::new(
            [(lo, lo), (hi, hi)],
            BLACK.mix(0.5).stroke_width(1),
        ))
        .map_err(|e| plot_err(path, e))?
        .label("ideal")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.5)));
    for (i, (name, pts)) in series.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(
                pts.iter()
                    .map(|&(x, y)| Circle::new((x, y), 2, c.mix(0.5).filled())),
            )
            .map_err(|e| plot_err(path, e))?
            .label(name.as_str())
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, c.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(|e| plot_err(path, e))?;
    root.present().map_err(|e| plot_err(path, e))?;
    Ok(())
}

/// A mixed tensor's tile grid: one cell per 32x32 tile, colored by its format, with a legend
/// (format and tile count).
pub fn assignment_map(
    path: &Path,
    title: &str,
    grid: (usize, usize),
    assignment: &[u8],
    formats: &[&str],
) -> Result<()> {
    atomic_png(path, |tmp| {
        assignment_map_to(tmp, title, grid, assignment, formats)
    })
}

fn assignment_map_to(
    path: &Path,
    title: &str,
    (wide, high): (usize, usize),
    assignment: &[u8],
    formats: &[&str],
) -> Result<()> {
    fonts();
    // Cells of at least one pixel, the picture at most about 1200 pixels on its long side.
    let cell = (1000 / wide.max(high).max(1)).clamp(1, 40) as u32;
    let (w, h) = (wide as u32 * cell, high as u32 * cell);
    let legend_w = 220u32;
    // Wide enough for the title (about 9 pixels a character), tall enough for the legend.
    let width = (w + legend_w + 40).max(9 * (title.len() as u32 + 45));
    let height = (h + 70).max(90 + 24 * formats.len() as u32);
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    root.draw(&Text::new(
        format!("{title}: format per 32x32 tile ({wide} x {high} tiles)"),
        (10, 10),
        ("sans-serif", 16),
    ))
    .map_err(|e| plot_err(path, e))?;
    // One color per format name, the same in every tensor's map.
    let tint = |i: usize| {
        let k = tenpak::codec::mixed::TILE_FORMAT_NAMES
            .iter()
            .position(|n| Some(n) == formats.get(i))
            .unwrap_or(i);
        color(k)
    };
    let (x0, y0) = (20i32, 50i32);
    for (t, &f) in assignment.iter().enumerate() {
        let (r, c) = ((t / wide) as i32, (t % wide) as i32);
        let (x, y) = (x0 + c * cell as i32, y0 + r * cell as i32);
        root.draw(&Rectangle::new(
            [(x, y), (x + cell as i32, y + cell as i32)],
            tint(f as usize).filled(),
        ))
        .map_err(|e| plot_err(path, e))?;
    }
    let lx = x0 + w as i32 + 20;
    for (i, name) in formats.iter().enumerate() {
        let n = assignment.iter().filter(|&&f| f as usize == i).count();
        let y = y0 + 24 * i as i32;
        root.draw(&Rectangle::new(
            [(lx, y), (lx + 16, y + 16)],
            color(i).filled(),
        ))
        .map_err(|e| plot_err(path, e))?;
        root.draw(&Text::new(
            format!("{name}: {n} tiles"),
            (lx + 24, y),
            ("sans-serif", 14),
        ))
        .map_err(|e| plot_err(path, e))?;
    }
    root.present().map_err(|e| plot_err(path, e))?;
    Ok(())
}

/// (min x, max x, min y, max y) of the points; a unit box with a log-friendly y when empty.
fn bounds(points: impl Iterator<Item = (f64, f64)>) -> (f64, f64, f64, f64) {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return (0.0, 1.0, 1e-6, 1.0);
    }
    (x0, x1, y0, y1)
}

/// Metric against bits per weight: labelled points (each single format, the mixed result)
/// and, optionally, a cloud of unlabelled samples (`mixed-tile-random`'s). The y axis is
/// logarithmic: `1 - pcc` for PCC (so 0.99, 0.999, 0.9999 are evenly spaced and a dropped
/// tile's PCC of 0 still fits), the error itself for MAE and atol.
pub fn size_vs_accuracy(
    path: &Path,
    title: &str,
    metric: &str,
    points: &[SizePoint],
    cloud: &[(f64, f64)],
) -> Result<()> {
    atomic_png(path, |tmp| {
        size_vs_accuracy_to(tmp, title, metric, points, cloud)
    })
}

fn size_vs_accuracy_to(
    path: &Path,
    title: &str,
    metric: &str,
    points: &[SizePoint],
    cloud: &[(f64, f64)],
) -> Result<()> {
    fonts();
    let pcc = metric == "pcc";
    // Exact results (no error) sit at the floor of the axis.
    let y_of = |v: f64| (if pcc { 1.0 - v } else { v }).max(1e-12);
    let all = points
        .iter()
        .map(|p| (p.1, y_of(p.2)))
        .chain(cloud.iter().map(|&(x, v)| (x, y_of(v))))
        .filter(|p| p.0.is_finite() && p.1.is_finite());
    let (x0, x1, y0, y1) = bounds(all);
    let px = ((x1 - x0) * 0.08).max(0.1);
    let root = BitMapBackend::new(path, (1000, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(90)
        .build_cartesian_2d(x0 - px..x1 + px, (y0 / 2.0..y1 * 2.0).log_scale())
        .map_err(|e| plot_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc("bits per weight (payload bytes)")
        .y_desc(if pcc {
            "1 - pcc (log scale)".to_string()
        } else {
            format!("{metric} (log scale)")
        })
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| plot_err(path, e))?;
    if !cloud.is_empty() {
        chart
            .draw_series(
                cloud
                    .iter()
                    .map(|&(x, v)| Circle::new((x, y_of(v)), 2, color(7).mix(0.5).filled())),
            )
            .map_err(|e| plot_err(path, e))?
            .label("samples")
            .legend(|(x, y)| Circle::new((x + 10, y), 3, color(7).filled()));
    }
    for (i, (name, x, v)) in points.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series([Circle::new((*x, y_of(*v)), 6, c.filled())])
            .map_err(|e| plot_err(path, e))?
            .label(format!("{name} ({x:.2} bpw, {metric} {v:.6})"))
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, c.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| plot_err(path, e))?;
    root.present().map_err(|e| plot_err(path, e))?;
    Ok(())
}

/// The size–quality frontier: each variant as a labelled point (bits per weight, y on a log
/// axis), tenpak's in one color and other tools' (`others`) in another.
pub fn frontier(
    path: &Path,
    title: &str,
    y_desc: &str,
    ours: &[(String, f64, f64)],
    others: &[(String, f64, f64)],
    x_desc: &str,
) -> Result<()> {
    atomic_png(path, |tmp| {
        frontier_to(tmp, title, y_desc, ours, others, x_desc)
    })
}

fn frontier_to(
    path: &Path,
    title: &str,
    y_desc: &str,
    ours: &[(String, f64, f64)],
    others: &[(String, f64, f64)],
    x_desc: &str,
) -> Result<()> {
    fonts();
    // Exact points (KLD 0) sit on the floor of the axis.
    let floor = 1e-7;
    let pts = || {
        ours.iter()
            .chain(others)
            .map(|(_, x, y)| (*x, y.max(floor)))
            .filter(|p| p.0.is_finite() && p.1.is_finite())
    };
    let (x0, x1, y0, y1) = bounds(pts());
    let px = ((x1 - x0) * 0.08).max(0.25);
    let root = BitMapBackend::new(path, (1200, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(90)
        .build_cartesian_2d(x0 - px..x1 + px * 2.5, (y0 / 3.0..y1 * 3.0).log_scale())
        .map_err(|e| plot_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| plot_err(path, e))?;
    for (set, c, name) in [
        (ours, color(0), "tenpak"),
        (others, color(3), "other tools"),
    ] {
        if set.is_empty() {
            continue;
        }
        chart
            .draw_series(set.iter().map(|(label, x, y)| {
                EmptyElement::at((*x, y.max(floor)))
                    + Circle::new((0, 0), 5, c.filled())
                    + Text::new(label.clone(), (7, -6), ("sans-serif", 12).into_font())
            }))
            .map_err(|e| plot_err(path, e))?
            .label(name)
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, c.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| plot_err(path, e))?;
    root.present().map_err(|e| plot_err(path, e))?;
    Ok(())
}

/// Draws the library's figures as PNG files.
pub struct Png;

impl tenpak::figure::Figures for Png {
    fn draw(&self, path: &Path, figure: &tenpak::figure::Figure<'_>) -> Result<()> {
        use tenpak::figure::Figure;
        match *figure {
            Figure::TensorPairs { tensor, series } => tensor_pairs(path, tensor, series),
            Figure::AssignmentMap {
                title,
                grid,
                assignment,
                formats,
            } => assignment_map(path, title, grid, assignment, formats),
            Figure::SizeVsAccuracy {
                title,
                metric,
                points,
                cloud,
            } => size_vs_accuracy(path, title, metric, points, cloud),
            Figure::Frontier {
                title,
                x_desc,
                y_desc,
                ours,
                others,
            } => frontier(path, title, y_desc, ours, others, x_desc),
        }
    }
}
