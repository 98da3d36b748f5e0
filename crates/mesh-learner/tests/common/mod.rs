//! Shared helpers of the learner tests: the repository's paths and learner
//! configs that run Python with the working tree's `agent_mesh_learner`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use mesh_learner::LearnerConfig;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `python/src`, so the tests run the package of this working tree.
pub fn python_path() -> String {
    repo_root().join("python/src").to_str().unwrap().to_owned()
}

/// Panics with the fix when python3 or numpy is missing.
pub fn require_python() {
    let ok = Command::new("python3")
        .args(["-c", "import numpy"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the learner tests need python3 with numpy: python3 -m pip install ./python"
    );
}

/// Whether `import module` works, with the reason when it does not.
pub fn python_imports(module: &str) -> Result<(), String> {
    let out = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(stderr.lines().last().unwrap_or("import failed").to_owned())
}

/// A config running `python3 SCRIPT ARGS...` with fast restarts.
pub fn python_config(script: PathBuf, args: &[&str]) -> LearnerConfig {
    require_python();
    let mut command = vec!["python3".to_owned(), script.to_str().unwrap().to_owned()];
    command.extend(args.iter().map(|a| (*a).to_owned()));
    let mut config = LearnerConfig::for_command(command);
    config.env.insert("PYTHONPATH".into(), python_path());
    config.start_timeout_ms = 60_000;
    config.backoff_initial_ms = 1;
    config.backoff_max_ms = 10;
    config
}

/// A config running the scripted test learner in `mode`.
pub fn scripted(mode: &str) -> LearnerConfig {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/learners/scripted.py");
    python_config(script, &[mode])
}
