//! The workspace's binaries (`attache-proxy`, `attache`), built once per test run when a test first needs one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Builds `bin` of `package` (once per test process) and returns its path next to the test binary's profile dir.
pub(crate) fn built(package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    static BUILT: Mutex<Option<HashMap<String, Result<PathBuf, String>>>> = Mutex::new(None);
    // Held across the build: a second caller waits for the first build instead of starting its own.
    let mut built = BUILT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let entry = built.get_or_insert_with(HashMap::new).entry(bin.to_owned()).or_insert_with(|| build(package, bin));
    entry.clone().map_err(anyhow::Error::msg)
}

fn build(package: &str, bin: &str) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = std::process::Command::new(cargo)
        .args(["build", "-q", "-p", package, "--bin", bin])
        .status()
        .map_err(|e| format!("running cargo build: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build of {bin} failed: {status}"));
    }
    // target/<profile>/deps/<test> -> target/<profile>/<bin>
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let profile_dir = exe.parent().and_then(Path::parent).ok_or("unexpected test binary location")?;
    Ok(profile_dir.join(bin))
}
