//! A short `agent-mesh bench chaos` run, as CI runs it: five real node
//! processes under seeded faults (in network namespaces where the machine
//! allows them, else on loopback) while clients write and read keys and a
//! job trains. The run must end with a linearizable key-value history, no
//! lost or changed committed round, and every node holding the same state.
//! The long run is the same command with a longer `--duration-s`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::process::Command;

#[test]
fn a_short_chaos_run_finds_no_anomaly() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/breast-cancer");
    let out = Command::new(env!("CARGO_BIN_EXE_agent-mesh"))
        .args([
            "bench",
            "chaos",
            "--nodes",
            "5",
            "--duration-s",
            "60",
            "--seed",
            "3",
            "--json",
        ])
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "chaos run failed:\n{stdout}\n{stderr}"
    );
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    eprintln!("{summary:#}");
    assert_eq!(summary["linearizability_anomalies"], 0, "{summary:#}");
    assert_eq!(summary["inconclusive"], 0, "{summary:#}");
    assert_eq!(summary["round_anomalies"].as_array().unwrap().len(), 0);
    assert_eq!(summary["converged"], true);
    assert!(summary["writes_ok"].as_u64().unwrap() > 0, "{summary:#}");
    assert!(summary["reads_ok"].as_u64().unwrap() > 0, "{summary:#}");
    assert!(
        summary["rounds_committed"].as_u64().unwrap() > 0,
        "{summary:#}"
    );
    let faults: u64 = summary["faults"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(faults > 0, "{summary:#}");
}
