//! The exposure-bias picture: per-position curves of [`super::exposure::ExposureReport`]
//! as `exposure.svg` and `exposure.png` (plotters, the loss curve's conventions).

use super::exposure::ExposureReport;
use std::path::Path;

/// One named curve.
type Curve = (&'static str, plotters::style::RGBColor, Vec<(f64, f64)>);

fn curves(r: &ExposureReport) -> Vec<Curve> {
    use plotters::style::RGBColor;
    let pts = |v: &[f64]| -> Vec<(f64, f64)> {
        v.iter()
            .enumerate()
            .filter(|(_, y)| y.is_finite())
            .map(|(t, &y)| ((t + 1) as f64, y))
            .collect()
    };
    let mut out: Vec<Curve> = vec![
        (
            "model NLL, true text (teacher forced)",
            RGBColor(70, 110, 200),
            pts(&r.teacher_forced.model_nll),
        ),
        (
            "model NLL, its own sampled text",
            RGBColor(240, 150, 40),
            pts(&r.sampled.model_nll),
        ),
    ];
    if let (Some(a), Some(b)) = (&r.teacher_forced.true_nll, &r.sampled.true_nll) {
        out.push((
            "true NLL, true text (floor)",
            RGBColor(120, 120, 120),
            pts(a),
        ));
        out.push((
            "true NLL, model's sampled text",
            RGBColor(200, 40, 40),
            pts(b),
        ));
    }
    if let (Some(a), Some(b)) = (&r.teacher_forced.kl, &r.sampled.kl) {
        out.push((
            "KL(true||model), true prefixes",
            RGBColor(40, 160, 80),
            pts(a),
        ));
        out.push((
            "KL(true||model), model's prefixes",
            RGBColor(150, 60, 170),
            pts(b),
        ));
    }
    out
}

/// Writes `dir/exposure.svg` and `dir/exposure.png` (each via a temporary file and rename).
pub fn plot(dir: &Path, r: &ExposureReport, title: &str) -> Result<(), String> {
    let cs = curves(r);
    let svg_tmp = dir.join(".exposure.svg.tmp");
    draw(
        plotters::prelude::SVGBackend::new(&svg_tmp, (900, 560)),
        &cs,
        title,
    )?;
    std::fs::rename(&svg_tmp, dir.join("exposure.svg")).map_err(|e| e.to_string())?;
    let png_tmp = dir.join(".exposure.tmp.png");
    draw(
        plotters::prelude::BitMapBackend::new(&png_tmp, (900, 560)),
        &cs,
        title,
    )?;
    std::fs::rename(&png_tmp, dir.join("exposure.png")).map_err(|e| e.to_string())?;
    Ok(())
}

fn draw<DB: plotters::prelude::DrawingBackend>(
    backend: DB,
    cs: &[Curve],
    title: &str,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    use plotters::prelude::*;
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let root = backend.into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let all = || cs.iter().flat_map(|c| c.2.iter());
    let x_max = all().map(|p| p.0).fold(1.0f64, f64::max);
    let y_max = all().map(|p| p.1).fold(0.1f64, f64::max) * 1.05;
    let fonts = crate::train::metrics::font_available();
    let mut builder = ChartBuilder::on(&root);
    builder.margin(15);
    if fonts {
        builder
            .caption(title, ("sans-serif", 20))
            .x_label_area_size(40)
            .y_label_area_size(55);
    }
    let mut chart = builder
        .build_cartesian_2d(1f64..x_max, 0f64..y_max)
        .map_err(|x| e(&x))?;
    let mut mesh = chart.configure_mesh();
    if fonts {
        mesh.x_desc("continuation position")
            .y_desc("nats per token");
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|x| e(&x))?;
    for (name, color, pts) in cs {
        let c = *color;
        let s = chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
            .map_err(|x| e(&x))?;
        if fonts {
            s.label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
        }
    }
    if fonts {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
