//! `agent-mesh job submit` checks a job spec's bounds before it sends it.
#![allow(clippy::unwrap_used)]

use std::process::Command;

/// Runs `agent-mesh job submit` against a port nothing listens on, with
/// `extra` flags; returns its error output (it must fail).
fn submit_fails(extra: &[&str]) -> String {
    let base = [
        "job",
        "submit",
        "--api",
        "http://127.0.0.1:9",
        "--token",
        "t",
        "--id",
        "j",
        "--model",
        "mlp",
    ];
    let out = Command::new(env!("CARGO_BIN_EXE_agent-mesh"))
        .args(base.iter().chain(extra))
        .output()
        .unwrap();
    assert!(!out.status.success(), "{extra:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Regression: a deadline that overflows the leader's clock was
/// sent and committed. The CLI now refuses it with the field and its range,
/// before any request (a request would fail to connect instead).
#[test]
fn job_submit_refuses_a_spec_out_of_bounds_before_any_request() {
    let err = submit_fails(&["--deadline-s", "18446744073709551"]);
    assert!(
        err.contains("training.round_deadline_ms must be in 1000..=86400000"),
        "{err}"
    );
    let err = submit_fails(&["--lr", "NaN"]);
    assert!(err.contains("training.learning_rate"), "{err}");
    let err = submit_fails(&["--participants", "1"]);
    assert!(err.contains("participants_per_round"), "{err}");
}
