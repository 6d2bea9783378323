//! The repository's scripts that the suite drives (`scripts/*.sh`): run to the end, their
//! standard output, or why they failed.

use std::path::PathBuf;
use std::process::Command;

/// Runs `scripts/NAME` with `args` and the variables `envs` (with `bash`: a script checked
/// out without its execute bit still runs): its standard output, or its standard error as
/// the error.
pub(crate) fn script(name: &str, args: &[&str], envs: &[(&str, String)]) -> Result<String, String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(name);
    let out = Command::new("bash")
        .arg(&path)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .output()
        .map_err(|e| format!("running {}: {e}", path.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{name} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
