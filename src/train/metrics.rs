//! The run's metrics: one JSON object per line in `metrics.jsonl`, and the loss curve
//! (train and validation loss against step) as `loss.svg` and `loss.png`.
//!
//! Plots use `plotters`; text needs a TrueType font, which is looked up among the usual
//! system font paths at run time (nothing is embedded). Without one, the curves are
//! drawn without labels rather than failing the run.

use super::TrainError;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// One line of `metrics.jsonl`: a training step or an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// An optimizer step: `step` is the number of updates done after it.
    Train {
        step: u64,
        loss: f32,
        lr: f32,
        grad_norm: f32,
        tokens: u64,
        elapsed_s: f64,
    },
    /// An evaluation on validation data after `step` updates.
    Eval {
        step: u64,
        val_loss: f32,
        /// Mean training loss since the previous evaluation.
        train_loss: f32,
        elapsed_s: f64,
    },
}

impl Record {
    /// The step the record belongs to.
    pub fn step(&self) -> u64 {
        match self {
            Record::Train { step, .. } | Record::Eval { step, .. } => *step,
        }
    }
}

/// Reads `metrics.jsonl` (missing file = no records).
pub fn read_jsonl(path: &Path) -> Result<Vec<Record>, TrainError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(TrainError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                TrainError::Checkpoint(format!("{} line {}: {e}", path.display(), i + 1))
            })
        })
        .collect()
}

/// Rewrites `metrics.jsonl` with `records` (atomically).
pub fn write_jsonl(path: &Path, records: &[Record]) -> Result<(), TrainError> {
    let mut text = String::new();
    for r in records {
        text.push_str(&serde_json::to_string(r).unwrap_or_default());
        text.push('\n');
    }
    crate::atomic::write_atomic(path, text.as_bytes()).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Appends one record to `metrics.jsonl`.
pub fn append_jsonl(path: &Path, record: &Record) -> Result<(), TrainError> {
    let io = |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    let line = serde_json::to_string(record).unwrap_or_default();
    writeln!(f, "{line}").map_err(io)
}

/// Registers a system sans-serif font with plotters once; false when none is found.
pub(crate) fn font_available() -> bool {
    use std::sync::OnceLock;
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        const CANDIDATES: &[&str] = &[
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
            "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
            "/Library/Fonts/Arial.ttf",
            "/System/Library/Fonts/Supplemental/Arial.ttf",
            "C:\\Windows\\Fonts\\arial.ttf",
        ];
        for p in CANDIDATES {
            if let Ok(bytes) = std::fs::read(p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font(
                    "sans-serif",
                    plotters::style::FontStyle::Normal,
                    bytes,
                )
                .is_ok()
                {
                    return true;
                }
            }
        }
        false
    })
}

/// Draws train (per step) and validation (per evaluation) loss against step into
/// `dir/loss.svg` and `dir/loss.png`.
pub fn plot_losses(dir: &Path, records: &[Record], title: &str) -> Result<(), TrainError> {
    let train: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Train { step, loss, .. } if loss.is_finite() => {
                Some((*step as f64, *loss as f64))
            }
            _ => None,
        })
        .collect();
    let val: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Eval { step, val_loss, .. } if val_loss.is_finite() => {
                Some((*step as f64, *val_loss as f64))
            }
            _ => None,
        })
        .collect();
    if train.is_empty() {
        return Ok(());
    }
    let svg = dir.join("loss.svg");
    let png = dir.join("loss.png");
    let err = |e: String| TrainError::Plot(e);
    {
        let tmp = dir.join(".loss.svg.tmp");
        let backend = plotters::prelude::SVGBackend::new(&tmp, (900, 560));
        draw(backend, &train, &val, title).map_err(err)?;
        std::fs::rename(&tmp, &svg).map_err(|source| TrainError::Io { path: svg, source })?;
    }
    {
        let tmp = dir.join(".loss.tmp.png");
        let backend = plotters::prelude::BitMapBackend::new(&tmp, (900, 560));
        draw(backend, &train, &val, title).map_err(err)?;
        std::fs::rename(&tmp, &png).map_err(|source| TrainError::Io { path: png, source })?;
    }
    Ok(())
}

fn draw<DB: plotters::prelude::DrawingBackend>(
    backend: DB,
    train: &[(f64, f64)],
    val: &[(f64, f64)],
    title: &str,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    use plotters::prelude::*;
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let root = backend.into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let x_max = train.iter().chain(val).map(|p| p.0).fold(1.0f64, f64::max);
    let ys = || train.iter().chain(val).map(|p| p.1);
    let y_min = ys().fold(f64::INFINITY, f64::min);
    let y_max = ys().fold(f64::NEG_INFINITY, f64::max);
    let pad = ((y_max - y_min) * 0.05).max(1e-3);
    let (y_lo, y_hi) = ((y_min - pad).max(0.0), y_max + pad);
    let fonts = font_available();
    let mut builder = ChartBuilder::on(&root);
    builder.margin(15);
    if fonts {
        builder
            .caption(title, ("sans-serif", 20))
            .x_label_area_size(40)
            .y_label_area_size(55);
    }
    let mut chart = builder
        .build_cartesian_2d(0f64..x_max, y_lo..y_hi)
        .map_err(|x| e(&x))?;
    let mut mesh = chart.configure_mesh();
    if fonts {
        mesh.x_desc("step").y_desc("loss (nats/token)");
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|x| e(&x))?;
    let blue = RGBColor(70, 110, 200);
    let s = chart
        .draw_series(LineSeries::new(train.iter().copied(), blue.stroke_width(1)))
        .map_err(|x| e(&x))?;
    if fonts {
        s.label("train")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue));
    }
    if !val.is_empty() {
        let s = chart
            .draw_series(LineSeries::new(val.iter().copied(), RED.stroke_width(2)))
            .map_err(|x| e(&x))?;
        if fonts {
            s.label("val")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        }
        chart
            .draw_series(val.iter().map(|&p| Circle::new(p, 3, RED.filled())))
            .map_err(|x| e(&x))?;
    }
    if fonts {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_round_trip_and_plot() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let mut recs = Vec::new();
        for s in 1..=30u64 {
            recs.push(Record::Train {
                step: s,
                loss: 3.0 / s as f32,
                lr: 1e-3,
                grad_norm: 1.0,
                tokens: s * 100,
                elapsed_s: s as f64,
            });
            if s % 10 == 0 {
                recs.push(Record::Eval {
                    step: s,
                    val_loss: 3.5 / s as f32,
                    train_loss: 3.0 / s as f32,
                    elapsed_s: s as f64,
                });
            }
        }
        for r in &recs {
            append_jsonl(&p, r).unwrap();
        }
        assert_eq!(read_jsonl(&p).unwrap(), recs);
        write_jsonl(&p, &recs[..5]).unwrap();
        assert_eq!(read_jsonl(&p).unwrap(), recs[..5]);
        plot_losses(dir.path(), &recs, "test").unwrap();
        let svg = std::fs::read_to_string(dir.path().join("loss.svg")).unwrap();
        assert!(
            svg.contains("<svg") && svg.contains("polyline"),
            "{svg:.200}"
        );
        let png = std::fs::read(dir.path().join("loss.png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
}
