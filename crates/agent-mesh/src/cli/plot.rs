//! Charts written by the commands: test accuracy and loss per round, as PNG.

use anyhow::Context;
use mesh_round::sim::MeshRoundReport as RoundReport;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

/// The font bundled with the binary (DejaVu Sans, free licence), so charts have
/// text on machines without system fonts.
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
static REGISTER_FONT: Once = Once::new();

fn register_font() {
    REGISTER_FONT.call_once(|| {
        // A font that fails to parse only costs the chart its text.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Draws accuracy (top) and loss (bottom) per round into a PNG at `path`.
pub fn accuracy_and_loss(path: &Path, reports: &[RoundReport]) -> anyhow::Result<()> {
    register_font();
    let root = BitMapBackend::new(path, (900, 700)).into_drawing_area();
    root.fill(&WHITE).context("drawing chart")?;
    let (top, bottom) = root.split_vertically(350);
    let rounds = reports.last().map_or(1, |r| u64::from(r.round)).max(1);
    let accuracy: Vec<(u64, f64)> = reports
        .iter()
        .map(|r| (u64::from(r.round), 100.0 * f64::from(r.test_accuracy)))
        .collect();
    let loss: Vec<(u64, f64)> = reports
        .iter()
        .map(|r| (u64::from(r.round), f64::from(r.test_loss)))
        .collect();
    let acc_min = accuracy
        .iter()
        .map(|p| p.1)
        .fold(100.0, f64::min)
        .min(90.0)
        .floor();
    series_chart(
        &top,
        "Test accuracy per round",
        "accuracy (%)",
        rounds,
        (acc_min, 100.0),
        &accuracy,
        &BLUE,
    )?;
    let loss_max = loss.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-3) * 1.1;
    series_chart(
        &bottom,
        "Test loss per round",
        "loss",
        rounds,
        (0.0, loss_max),
        &loss,
        &RED,
    )?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))
}

fn series_chart(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    y_label: &str,
    rounds: u64,
    y_range: (f64, f64),
    points: &[(u64, f64)],
    color: &RGBColor,
) -> anyhow::Result<()> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0..rounds, y_range.0..y_range.1)
        .context("drawing chart")?;
    chart
        .configure_mesh()
        .x_desc("round")
        .y_desc(y_label)
        .draw()
        .context("drawing chart")?;
    chart
        .draw_series(LineSeries::new(
            points.iter().copied(),
            color.stroke_width(2),
        ))
        .context("drawing chart")?;
    chart
        .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
        .context("drawing chart")?;
    Ok(())
}
