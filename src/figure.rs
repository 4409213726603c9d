//! Figures that library operations describe and their caller draws.
//!
//! The library has no plotting dependency: `analyze --plots`, the mixed-tile artifacts and the
//! evaluation sweep hand each figure's data and destination to a [`Figures`] sink. The `tenpak`
//! binary draws them as PNG files with plotters; [`NoFigures`] (the default of
//! [`crate::Context`]) draws nothing.

use crate::error::Result;
use std::path::Path;

/// A labelled point: (label, bits per weight, y).
pub type SizePoint = (String, f64, f64);

/// One figure's data.
#[derive(Debug, Clone, Copy)]
pub enum Figure<'a> {
    /// One tensor: (original, reconstructed) value pairs per format, over the tensor's range.
    TensorPairs {
        /// The tensor's name.
        tensor: &'a str,
        /// (format, pairs) per format.
        series: &'a [(String, Vec<(f32, f32)>)],
    },
    /// A mixed tensor's tile grid, one cell per 32x32 tile colored by its format.
    AssignmentMap {
        /// The title.
        title: &'a str,
        /// (tiles across, tiles down).
        grid: (usize, usize),
        /// One format code per tile, row-major.
        assignment: &'a [u8],
        /// Format names by code.
        formats: &'a [&'a str],
    },
    /// A metric against bits per weight: labelled points and an optional unlabelled cloud.
    SizeVsAccuracy {
        /// The title.
        title: &'a str,
        /// The metric's name (`pcc`, `mae`, `atol`).
        metric: &'a str,
        /// Labelled points.
        points: &'a [SizePoint],
        /// Unlabelled samples (bits per weight, metric).
        cloud: &'a [(f64, f64)],
    },
    /// The size-quality frontier: tenpak's variants and other tools' points, y on a log axis.
    Frontier {
        /// The title.
        title: &'a str,
        /// The x axis' description (`bits per weight (file size)`).
        x_desc: &'a str,
        /// The y axis' description.
        y_desc: &'a str,
        /// tenpak's points.
        ours: &'a [SizePoint],
        /// Other tools' points.
        others: &'a [SizePoint],
    },
}

/// Draws figures. Implementations write `path` atomically (nothing there unless complete).
pub trait Figures: Sync {
    /// Draw `figure` into `path`.
    fn draw(&self, path: &Path, figure: &Figure<'_>) -> Result<()>;
}

/// Draws nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFigures;

impl Figures for NoFigures {
    fn draw(&self, _: &Path, _: &Figure<'_>) -> Result<()> {
        Ok(())
    }
}
