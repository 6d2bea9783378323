//! The broker URL from a file (`AMQP_URL_FILE`), so a password is not in `ps`: the client
//! runs a project through the platform with it, and refuses it together with `AMQP_URL`.

use crate::support::*;

#[test]
fn the_broker_url_comes_from_a_file() {
    let _executant = Executant::start(1);
    let ws = tempfile::tempdir().unwrap();
    let url_file = ws.path().join("amqp-url");
    std::fs::write(&url_file, format!("{}\n", amqp_url())).unwrap();

    let out = client(ws.path())
        .env_remove("AMQP_URL")
        .env("AMQP_URL_FILE", &url_file)
        .args(["--json", "exec", "--count", "2", "--", "echo", "{index}"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(json["outputs"], serde_json::json!(["0\n", "1\n"]));

    // Both: a usage error naming the two, not a silent choice (and no password shown).
    let out = client(ws.path())
        .env("AMQP_URL", "amqp://someone:env-secret@127.0.0.1:1/%2f")
        .env("AMQP_URL_FILE", &url_file)
        .args(["exec", "--", "true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--amqp-url-file") && stderr.contains("cannot be used with"),
        "{stderr}"
    );
    assert!(!stderr.contains("env-secret"), "{stderr}");
}
