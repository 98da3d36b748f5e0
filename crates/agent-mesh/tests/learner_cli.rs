//! `agent-mesh learner layout` and `learner check` against the numpy example
//! learner, and what they say about a learner that cannot start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn learner(args: &[&str], command: &[&str]) -> Output {
    let numpy = Command::new("python3")
        .args(["-c", "import numpy"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        numpy,
        "this test needs python3 with numpy: python3 -m pip install ./python"
    );
    Command::new(env!("CARGO_BIN_EXE_agent-mesh"))
        .arg("learner")
        .args(args)
        .arg("--env")
        .arg(format!(
            "PYTHONPATH={}",
            repo().join("python/src").display()
        ))
        .arg("--")
        .args(command)
        .output()
        .unwrap()
}

fn example() -> String {
    let path = repo().join("examples/python-learner-numpy/mnist_softmax.py");
    path.to_str().unwrap().to_owned()
}

#[test]
fn layout_prints_the_model_json_of_a_job() {
    let out = learner(&["layout"], &["python3", &example()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let model: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        model,
        serde_json::json!({"learner": {"parameters": [
            {"name": "fc.weight", "shape": [784, 10]},
            {"name": "fc.bias", "shape": [10]}
        ]}})
    );
}

#[test]
fn check_runs_one_fit_and_evaluate_and_reports_them() {
    let out = learner(
        &["check", "--epochs", "1", "--learning-rate", "0.1"],
        &["python3", &example()],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("layout    2 tensors, 7850 parameters"),
        "{stdout}"
    );
    assert!(stdout.contains("fit       8000 examples"), "{stdout}");
    let accuracy: f64 = stdout
        .split("\"accuracy\":")
        .nth(1)
        .and_then(|rest| rest.split(['}', ',']).next()?.parse().ok())
        .expect("an accuracy");
    assert!(accuracy > 0.8, "one epoch of softmax regression: {stdout}");
}

#[test]
fn a_learner_that_exits_at_once_is_reported_with_its_last_words() {
    let out = learner(
        &["layout"],
        &[
            "python3",
            "-c",
            "import sys; sys.exit('no data folder here')",
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ended (exit status: 1) during start")
            && stderr.contains("its last output: no data folder here"),
        "{stderr}"
    );
}
