//! The `executant` binary's settings, as a process: the broker URL from a file or the
//! environment (not both), secrets hidden from `--help`, allowlist entries checked.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_executant");

/// The binary, without the broker variables the test run itself may have.
fn executant() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("AMQP_URL").env_remove("AMQP_URL_FILE");
    cmd
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success(), text)
}

#[test]
fn settings_are_checked_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("amqp-url");
    std::fs::write(&url_file, "amqp://someone:file-secret@127.0.0.1:1/%2f\n").unwrap();

    let (ok, text) = run(executant()
        .env("AMQP_URL", "amqp://someone:env-secret@127.0.0.1:1/%2f")
        .env("AMQP_URL_FILE", &url_file));
    assert!(!ok, "{text}");
    assert!(text.contains("cannot be used with"), "{text}");
    assert!(!text.contains("secret"), "{text}");

    let (ok, text) = run(executant()
        .env("AMQP_URL_FILE", &url_file)
        .args(["--allow-script-repo", "workspace/tasks"]));
    assert!(!ok, "{text}");
    assert!(
        text.contains("--allow-script-repo \"workspace/tasks\""),
        "{text}"
    );

    // Retry waits: a first wait of zero, or a ceiling below it, is refused at start.
    for args in [
        ["--retry-delay-ms", "0", "--retry-delay-max-ms", "60000"],
        ["--retry-delay-ms", "5000", "--retry-delay-max-ms", "1000"],
    ] {
        let (ok, text) = run(executant().env("AMQP_URL_FILE", &url_file).args(args));
        assert!(!ok, "{args:?}: {text}");
        assert!(
            text.contains("--retry-delay-ms") && text.contains("--retry-delay-max-ms"),
            "{args:?}: {text}"
        );
    }

    let (ok, text) = run(executant()
        .arg("--help")
        .env("AMQP_URL", "amqp://someone:env-secret@127.0.0.1:1/%2f"));
    assert!(ok, "{text}");
    assert!(
        text.contains("AMQP_URL_FILE") && text.contains("ALLOW_SCRIPT_REPO"),
        "{text}"
    );
    assert!(!text.contains("env-secret"), "{text}");
}
