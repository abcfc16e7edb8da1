//! SVG line charts (plotters, SVG backend only): one line per implementation, the median at
//! each x with a p10–p90 bar.

use crate::report::Chart;
use plotters::prelude::*;
use std::path::Path;

const COLOURS: [RGBColor; 5] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
];

/// Draw one chart into `path`.
pub fn draw(path: &Path, chart: &Chart) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", path.display());
    let points = chart.series.iter().flat_map(|(_, p)| p.iter());
    let x_max = points.clone().map(|(x, _)| *x).fold(1.0f64, f64::max);
    let y_max = points
        .map(|(_, s)| if s.p90.is_finite() { s.p90 } else { 0.0 })
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.1;
    let root = SVGBackend::new(path, (760, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut ctx = ChartBuilder::on(&root)
        .caption(&chart.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..x_max * 1.02, 0f64..y_max)
        .map_err(|e| err(&e))?;
    ctx.configure_mesh()
        .x_desc(chart.x_label.as_str())
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(format!("{} — median, bars p10–p90", chart.y_label))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, pts)) in chart.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let line: Vec<(f64, f64)> = pts
            .iter()
            .filter(|(_, s)| s.median.is_finite())
            .map(|(x, s)| (*x, s.median))
            .collect();
        ctx.draw_series(LineSeries::new(line.clone(), colour.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        ctx.draw_series(
            line.iter()
                .map(|&(x, y)| Circle::new((x, y), 3, colour.filled())),
        )
        .map_err(|e| err(&e))?;
        ctx.draw_series(
            pts.iter()
                .filter(|(_, s)| s.p10.is_finite() && s.p90.is_finite())
                .map(|(x, s)| {
                    ErrorBar::new_vertical(*x, s.p10, s.median, s.p90, colour.stroke_width(1), 8)
                }),
        )
        .map_err(|e| err(&e))?;
    }
    ctx.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
