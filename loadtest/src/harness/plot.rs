//! SVG line charts of a run's time series, drawn with `plotters`' SVG backend (no fonts or system
//! libraries needed: text is left to whatever displays the SVG).

use std::path::Path;

use plotters::prelude::*;

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("drawing {path}: {reason}")]
pub struct PlotError {
    pub path: String,
    pub reason: String,
}

/// One named line.
#[derive(Clone, Debug, Default)]
pub struct Line {
    pub name: String,
    /// `(seconds since the run began, value)`; non-finite values are skipped.
    pub points: Vec<(f64, f64)>,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Draws `lines` into an SVG at `path`; returns how many points were drawn. Nothing is written
/// when there is no point at all.
pub fn line_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    lines: &[Line],
    window: Option<(f64, f64)>,
) -> Result<usize, PlotError> {
    let fail = |reason: String| PlotError {
        path: path.display().to_string(),
        reason,
    };
    let finite: Vec<Vec<(f64, f64)>> = lines
        .iter()
        .map(|l| {
            l.points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect()
        })
        .collect();
    let count: usize = finite.iter().map(Vec::len).sum();
    if count == 0 {
        return Ok(0);
    }
    let all = finite.iter().flatten();
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let y1 = if y1 > 0.0 { y1 * 1.1 } else { 1.0 };

    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, 0.0..y1)
        .map_err(|e| fail(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc(y_label)
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    if let Some((from, to)) = window {
        // Shade the measured window so warm-up is visibly excluded.
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(from.max(x0), 0.0), (to.min(x1), y1)],
                RGBColor(235, 235, 235).filled(),
            )))
            .map_err(|e| fail(e.to_string()))?;
    }
    for (i, (line, points)) in lines.iter().zip(finite).enumerate() {
        if points.is_empty() {
            continue;
        }
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| fail(e.to_string()))?
            .label(line.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    root.present().map_err(|e| fail(e.to_string()))?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_with_points_is_an_svg_with_a_polyline() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("cpu.svg");
        let drawn = line_chart(
            &path,
            "CPU",
            "cores",
            &[Line {
                name: "server".into(),
                points: vec![(0.0, 0.1), (1.0, 0.2), (2.0, f64::NAN), (3.0, 0.15)],
            }],
            Some((1.0, 3.0)),
        )
        .expect("draws");
        assert_eq!(drawn, 3);
        let svg = std::fs::read_to_string(&path).expect("written");
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.contains("<polyline"), "a line is drawn");
    }

    #[test]
    fn a_chart_without_points_writes_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("empty.svg");
        let drawn = line_chart(&path, "x", "y", &[Line::default()], None).expect("no error");
        assert_eq!(drawn, 0);
        assert!(!path.exists());
    }
}
