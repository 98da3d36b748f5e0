//! The examples in `examples/`, run as their READMEs say, on the data sets in
//! `data/`: each reaches the figure its README promises (the runs are seeded,
//! so the figures are exact), and bad data gets an error naming the place.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn sim(out: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agent-mesh"))
        .current_dir(repo(""))
        .args(["sim", "--quiet"])
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

fn report(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let output = sim(dir.path(), args);
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap()
}

#[test]
fn breast_cancer_csv_example_reaches_95_percent() {
    let r = report(&[
        "--data",
        "data/breast-cancer",
        "--model",
        "examples/breast-cancer/model.toml",
        "--rounds",
        "10",
    ]);
    let accuracy = r["final_test_accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.95, "accuracy {accuracy}");
    assert!(r["final_test_macro_f1"].as_f64().unwrap() > 0.9);
    assert_eq!(r["task"], "classification");
}

#[test]
fn diabetes_regression_example_beats_the_mean_predictor() {
    let r = report(&[
        "--data",
        "data/diabetes",
        "--label",
        "target",
        "--task",
        "regression",
        "--model",
        "examples/diabetes/model.json",
        "--rounds",
        "10",
    ]);
    let rmse = r["final_test_rmse"].as_f64().unwrap();
    assert!(
        rmse <= 62.0,
        "rmse {rmse} (mean predictor 71.7, ridge 58.6)"
    );
    assert!(r["final_test_accuracy"].is_null());
}

#[test]
fn digits_image_folder_example_reaches_93_percent() {
    let r = report(&["--data", "data/digits-png", "--rounds", "10"]);
    let accuracy = r["final_test_accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.93, "accuracy {accuracy}");
    assert_eq!(r["config"]["model"], "small-cnn");
}

#[test]
fn bad_table_data_is_refused_naming_the_row_and_column() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("train.csv"), "a,b,label\n1,2,0\n3,x,1\n").unwrap();
    std::fs::write(data.path().join("test.csv"), "a,b,label\n1,2,0\n").unwrap();
    let out = tempfile::tempdir().unwrap();
    let output = sim(out.path(), &["--data", data.path().to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("train.csv: row 3, column \"b\": \"x\" is not a number"),
        "{stderr}"
    );
}

#[test]
fn a_model_that_cannot_take_the_data_is_refused_naming_the_layer() {
    let out = tempfile::tempdir().unwrap();
    let output = sim(
        out.path(),
        &["--data", "data/breast-cancer", "--model", "cnn"],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--model") && stderr.contains("needs image input"),
        "{stderr}"
    );
}
