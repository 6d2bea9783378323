//! The workspace disk filled up during the tracking commits.

use std::path::Path;
use std::time::Duration;

use super::Run;
use crate::harness::Env;
use crate::{Row, Size};

/// The workspace disk (a small tmpfs) filled up during the tracking commits,
/// again and again, then freed.
pub fn disk_full(env: &Env, size: Size) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("ws");
    std::fs::create_dir_all(&mount).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=48m", "tmpfs"])
        .arg(&mount)
        .status()
        .is_ok_and(|s| s.success());
    assert!(mounted, "mounting a tmpfs workspace needs root");
    let unmount = Unmount(mount.clone());
    let mut run = Run::start(env, size, "faults-disk", &[], Some(mount.clone()));
    run.wait_published();
    let faults = run.inject(size.faults, Duration::from_millis(800), |run| {
        let filler = run.ws.join("filler");
        fill(&filler);
        std::thread::sleep(Duration::from_millis(2500));
        let _ = std::fs::remove_file(&filler);
        true
    });
    let row = run.finish("disk-full", faults, vec![], |_, stderr| {
        let warned = stderr.contains("cannot record results yet");
        let note = format!(
            "{faults} disk-full episodes ({})",
            if warned {
                "the client said so and kept the results"
            } else {
                "no commit hit them"
            }
        );
        (note, vec![])
    });
    drop(unmount);
    row
}

/// Writes zeros to `path` until the disk is full.
fn fill(path: &Path) {
    use std::io::Write;
    let Ok(mut f) = std::fs::File::create(path) else {
        return;
    };
    let block = vec![0u8; 1 << 20];
    while f.write_all(&block).is_ok() {}
    let mut small = [0u8; 4096];
    small.fill(0);
    while f.write_all(&small).is_ok() {}
    let _ = f.flush();
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}
