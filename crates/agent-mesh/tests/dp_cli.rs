//! `agent-mesh dp` run as a process: printed epsilon and errors for bad flags.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

fn agent_mesh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agent-mesh"))
        .args(args)
        .output()
        .unwrap()
}

fn epsilon_args<'a>(q: &'a str, z: &'a str, steps: &'a str, delta: &'a str) -> Vec<&'a str> {
    vec![
        "dp",
        "epsilon",
        "--sampling-rate",
        q,
        "--noise-multiplier",
        z,
        "--steps",
        steps,
        "--delta",
        delta,
    ]
}

#[test]
fn dp_epsilon_prints_the_accountant_value() {
    // dp-accounting's RdpAccountant gives 0.9560911044993916 for this point.
    let out = agent_mesh(&epsilon_args("0.01", "1.1", "100", "1e-5"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let eps: f64 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((eps - 0.956_091).abs() < 1e-3, "epsilon {eps}");
}

#[test]
fn dp_epsilon_rejects_out_of_range_flags() {
    for (args, flag) in [
        (epsilon_args("0", "1.1", "100", "1e-5"), "--sampling-rate"),
        (epsilon_args("1.5", "1.1", "100", "1e-5"), "--sampling-rate"),
        (
            epsilon_args("0.1", "0", "100", "1e-5"),
            "--noise-multiplier",
        ),
        (epsilon_args("0.1", "1.1", "100", "1"), "--delta"),
        (epsilon_args("0.1", "1.1", "-3", "1e-5"), "--steps"),
    ] {
        let out = agent_mesh(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}

#[test]
fn dp_noise_meets_its_target() {
    let out = agent_mesh(&[
        "dp",
        "noise",
        "--sampling-rate",
        "0.1",
        "--steps",
        "200",
        "--delta",
        "1e-5",
        "--epsilon",
        "4",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let z = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let out = agent_mesh(&epsilon_args("0.1", &z, "200", "1e-5"));
    let eps: f64 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(eps <= 4.0 && eps > 3.99, "z {z} gives epsilon {eps}");
}
