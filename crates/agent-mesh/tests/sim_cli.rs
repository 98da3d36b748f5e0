//! `agent-mesh sim` as a user runs it: outputs on disk, determinism, clear errors.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `cat` of the four files in `data/mnist-10k` piped to `sha256sum`.
const MNIST_10K_SHA256: &str = "f041027efc5af71e58b66d0dfc399b8e2fd7a43ffe01d5f55cc9569d1ce5b95a";

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
    for key in ["round", "test_accuracy", "test_loss", "epsilon", "wall_ms"] {
        assert!(rounds[0].get(key).is_some(), "missing {key}");
    }
    let accuracy = r["final_test_accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.8, "accuracy {accuracy}");
    assert_eq!(r["config"]["model"], "logistic");
    assert_eq!(r["config"]["data_sha256"], MNIST_10K_SHA256);
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

/// Without a terminal the progress bar is hidden; every round's row must
/// still reach standard output (logs and CI read it).
#[test]
fn sim_prints_every_round_row_when_stdout_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_agent-mesh"))
        .args([
            "sim", "--model", "logistic", "--nodes", "4", "--rounds", "2",
        ])
        .args(["--local-epochs", "1", "--batch-size", "64", "--lr", "0.1"])
        .arg("--data")
        .arg(data_dir())
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()) && l.contains('%'))
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
}

#[test]
fn pre_aggregation_and_server_optimizers_run_in_the_round_engine() {
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--byzantine",
        "1",
        "--rule",
        "trimmed-mean",
        "--pre",
        "nnm",
        "--server-opt",
        "fedadam:lr=0.05",
        "--prox-mu",
        "0.01",
    ];
    let output = sim(dir.path(), &flags);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let r = report(dir.path());
    assert_eq!(r["config"]["engine"], "protocol");
    assert_eq!(r["config"]["pre_aggregation"], "nnm");
    assert_eq!(r["rounds"].as_array().unwrap().len(), 2);
}

#[test]
fn bad_flags_get_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["--rule", "bogus"], "bogus"),
        (
            &["--secagg", "--byzantine", "1", "--rule", "median"],
            "--secagg off",
        ),
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

/// Started from a folder with no data files (as after `cargo install`, or in
/// a container), the default run trains on the set built into the binary.
#[test]
fn sim_runs_on_the_built_in_data_from_any_directory() {
    let dir = tempfile::tempdir().unwrap();
    let help = Command::new(env!("CARGO_BIN_EXE_agent-mesh"))
        .args(["sim", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("[default: builtin:mnist-10k]"));
    let output = Command::new(env!("CARGO_BIN_EXE_agent-mesh"))
        .current_dir(dir.path())
        .args(["sim", "--quiet", "--rounds", "1", "--nodes", "2"])
        .args([
            "--model",
            "logistic",
            "--local-epochs",
            "1",
            "--batch-size",
            "64",
        ])
        .args(["--lr", "0.1"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let r = report(&dir.path().join("sim-out"));
    assert_eq!(r["config"]["data"], "builtin:mnist-10k");
    assert_eq!(r["config"]["data_sha256"], MNIST_10K_SHA256);
    let accuracy = r["final_test_accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.7, "accuracy {accuracy}");
}

/// A missing data folder printed its cause twice: "cannot read X: No such
/// file or directory (os error 2): No such file or directory (os error 2)".
#[test]
fn regression_missing_data_error_repeats_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_agent-mesh"))
        .args(["sim", "--data"])
        .arg(dir.path().join("absent"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let cause = stderr.trim_end().rsplit(": ").next().unwrap();
    assert!(cause.contains("os error"), "{stderr}");
    assert_eq!(stderr.matches(cause).count(), 1, "{stderr}");
    assert!(stderr.contains("train-images-idx3-ubyte"), "{stderr}");
}
