//! Runs the Python package's own unit tests (`python/tests`, unittest, numpy
//! only) against the working tree's `python/src`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

#[test]
fn python_package_unit_tests_pass() {
    common::require_python();
    let root = common::repo_root().join("python");
    let out = Command::new("python3")
        .args(["-m", "unittest", "discover", "-s", "tests", "-v"])
        .current_dir(&root)
        .env("PYTHONPATH", common::python_path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python unit tests failed:\n{stderr}");
    eprintln!("{stderr}");
}
