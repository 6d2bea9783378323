//! The `broker-api` binary as a process: tokens from files (one per scope), the broker URL
//! from `AMQP_URL_FILE`, secrets hidden from `--help`, ambiguous settings refused.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::support::{amqp_url, random_hex};

const BIN: &str = env!("CARGO_BIN_EXE_broker-api");

/// A command with none of the variables the tests set on purpose inherited.
fn command() -> Command {
    let mut cmd = Command::new(BIN);
    for var in [
        "AMQP_URL",
        "AMQP_URL_FILE",
        "BROKER_API_TOKEN",
        "BROKER_API_TOKEN_FILE",
        "BROKER_API_READ_TOKEN",
        "BROKER_API_READ_TOKEN_FILE",
        "BROKER_API_ADMIN_TOKEN",
        "BROKER_API_ADMIN_TOKEN_FILE",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn the_binary_reads_its_url_and_tokens_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let (read, user, admin) = (random_hex(16), random_hex(16), random_hex(16));
    let url_file = write("amqp-url", &format!("  {}\n", amqp_url()));
    let port = free_port();
    let child = command()
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("AMQP_URL_FILE", &url_file)
        .env(
            "BROKER_API_READ_TOKEN_FILE",
            write("read", &format!("{read}\n")),
        )
        .env("BROKER_API_TOKEN_FILE", write("user", &format!("{user}\n")))
        .env(
            "BROKER_API_ADMIN_TOKEN_FILE",
            write("admin", &format!(" {admin} \n")),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let start = Instant::now();
    loop {
        let ready = client.get(format!("{base}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status() == StatusCode::OK) {
            break;
        }
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "broker-api exited early"
        );
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "not ready: the URL from AMQP_URL_FILE was not used"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = |token: &str, path: &str| {
        let r = client
            .delete(format!("{base}{path}"))
            .bearer_auth(token)
            .send();
        async move { r.await.unwrap().status() }
    };
    // Each file's token has its own scope (trimmed): the read token may not delete
    // anything, the user token not `todo`; nothing reaches the broker when refused.
    assert_eq!(status(&read, "/api/queues/bapi-test-bin-none").await, 403);
    assert_eq!(status(&user, "/api/queues/todo?force=true").await, 403);
    assert_eq!(status(&user, "/api/queues/bapi-test-bin-none").await, 404);
    assert_eq!(status(&admin, "/api/queues/bapi-test-bin-none").await, 404);
    assert_eq!(status("wrong", "/api/queues/bapi-test-bin-none").await, 401);

    let _ = child.0.kill();
    let _ = child.0.wait();
    let mut output = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut output).unwrap();
    for secret in [&read, &user, &admin] {
        assert!(!output.contains(secret.as_str()), "a token in the logs");
    }
    assert!(!output.contains("guest:guest"), "the password in the logs");
}

#[test]
fn ambiguous_settings_are_refused_and_help_hides_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("amqp-url");
    std::fs::write(&url_file, "amqp://someone:url-file-secret@127.0.0.1:1/%2f").unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "file-token-0123").unwrap();

    let run = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        (out.status.success(), text)
    };
    // Both a URL and a URL file: a usage error naming both, not a silent choice.
    let (ok, text) = run(command()
        .args(["--listen", "127.0.0.1:0"])
        .env("AMQP_URL", "amqp://someone:env-secret@127.0.0.1:1/%2f")
        .env("AMQP_URL_FILE", &url_file)
        .env("BROKER_API_TOKEN", "env-token-0123"));
    assert!(!ok, "{text}");
    assert!(
        text.contains("--amqp-url-file") && text.contains("cannot be used with"),
        "{text}"
    );
    assert!(
        !text.contains("env-secret") && !text.contains("url-file-secret"),
        "{text}"
    );
    // A token both in its variable and in its file.
    let (ok, text) = run(command()
        .args(["--listen", "127.0.0.1:0"])
        .env("BROKER_API_TOKEN", "env-token-0123")
        .env("BROKER_API_TOKEN_FILE", &token_file));
    assert!(!ok, "{text}");
    assert!(text.contains("BROKER_API_TOKEN_FILE"), "{text}");
    assert!(
        !text.contains("env-token-0123") && !text.contains("file-token-0123"),
        "{text}"
    );
    // Two scopes with one token.
    let (ok, text) = run(command()
        .args(["--listen", "127.0.0.1:0"])
        .env("BROKER_API_TOKEN", "env-token-0123")
        .env("BROKER_API_READ_TOKEN", "env-token-0123"));
    assert!(!ok, "{text}");
    assert!(text.contains("same token"), "{text}");
    // --help names the variables, never their values.
    let (ok, text) = run(command()
        .arg("--help")
        .env("AMQP_URL", "amqp://someone:env-secret@127.0.0.1:1/%2f")
        .env("AMQP_URL_FILE", &url_file)
        .env("BROKER_API_TOKEN_FILE", &token_file));
    assert!(ok, "{text}");
    assert!(
        text.contains("AMQP_URL_FILE") && text.contains("BROKER_API_ADMIN_TOKEN"),
        "{text}"
    );
    assert!(!text.contains("env-secret"), "{text}");
    assert!(!text.contains(url_file.to_str().unwrap()), "{text}");
}
