//! `arlm exposure` end to end: the exact source as the model has no exposure gap, the
//! plot and JSON are written, and a real-text run has only the model's own NLLs.

use crate::common;

use common::{arlm, arlm_ok};

#[test]
fn exact_source_has_no_gap_and_the_plot_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("synth");
    let text = dir.path().join("synth.txt");
    arlm_ok(&[
        "corpus",
        "synth",
        "--bytes",
        "2000",
        "--out",
        text.to_str().unwrap(),
        "--model-out",
        model.to_str().unwrap(),
    ]);
    let m = model.to_str().unwrap();
    let out = arlm_ok(&[
        "exposure",
        "--model",
        m,
        "--prompts",
        "12",
        "--length",
        "20",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    for run in ["teacher_forced", "sampled", "greedy"] {
        let model_nll = r[run]["model_nll"].as_array().unwrap();
        let true_nll = r[run]["true_nll"].as_array().unwrap();
        assert_eq!(model_nll.len(), 20);
        for (a, b) in model_nll.iter().zip(true_nll) {
            assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-5);
        }
        for k in r[run]["kl"].as_array().unwrap() {
            assert!(k.as_f64().unwrap().abs() < 1e-5);
        }
    }
    assert!(model.join("exposure.svg").exists() && model.join("exposure.png").exists());
    // Real text: no truth, so no KL.
    let out = arlm_ok(&[
        "exposure",
        "--model",
        m,
        "--prompts",
        "4",
        "--length",
        "8",
        "--json",
        "--text",
        text.to_str().unwrap(),
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(r["sampled"]["kl"].is_null());
    assert_eq!(r["sampled"]["model_nll"].as_array().unwrap().len(), 8);
    let bad = arlm(&["exposure", "--model", m, "--length", "0"]);
    assert!(!bad.status.success());
}
