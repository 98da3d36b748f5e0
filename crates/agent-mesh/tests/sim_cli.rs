//! `agent-mesh sim` as a user runs it: outputs on disk, determinism, clear errors.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist-10k")
}

fn sim(out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agent-mesh"))
        .args([
            "sim", "--quiet", "--model", "logistic", "--nodes", "4", "--rounds", "2",
        ])
        .args(["--local-epochs", "1", "--batch-size", "64", "--lr", "0.1"])
        .arg("--data")
        .arg(data_dir())
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn report(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap()
}

#[test]
fn sim_writes_report_chart_and_model_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let output = sim(&a, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("test acc") && stdout.contains("final test accuracy"),
        "{stdout}"
    );
    let r = report(&a);
    let rounds = r["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2);
    for key in [
        "round",
        "test_accuracy",
        "test_loss",
        "epsilon",
        "duration_ms",
    ] {
        assert!(rounds[0].get(key).is_some(), "missing {key}");
    }
    let accuracy = r["final_test_accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.8, "accuracy {accuracy}");
    assert_eq!(r["config"]["model"], "logistic");
    let png = std::fs::read(a.join("accuracy.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    assert!(
        std::fs::metadata(a.join("model.safetensors"))
            .unwrap()
            .len()
            > 7840 * 4
    );

    assert!(sim(&b, &[]).status.success());
    assert_eq!(report(&b)["final_test_accuracy"], r["final_test_accuracy"]);
}

#[test]
fn bad_flags_get_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["--rule", "bogus"], "bogus"),
        (&["--partition", "dirichlet:-2"], "alpha"),
        (&["--byzantine", "2", "--rule", "krum"], "krum"),
        (&["--dp-clip", "1.0"], "--dp-noise-multiplier"),
        (&["--attack", "nonsense"], "nonsense"),
    ];
    for (flags, expected) in cases {
        let output = sim(dir.path(), flags);
        assert!(!output.status.success(), "{flags:?} succeeded");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
    }
    let missing = Command::new(env!("CARGO_BIN_EXE_agent-mesh"))
        .args(["sim", "--data", "/nonexistent/mnist"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--data"));
}
