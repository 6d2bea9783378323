//! An error and its causes on one line, each cause said once.
//!
//! Libraries often put their source's text in their own message *and* return it as
//! `source()` (lapin's "IO error: Connection refused" over the `io::Error` itself), so that
//! printing the whole chain repeats the cause. [`one_line`] is what the binaries print.

/// `error` and its chain of sources joined by `: `, leaving out a source whose text the line
/// already holds (said by the error above it).
pub fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = e.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot connect to the broker at amqp://x: {source} (is RabbitMQ running there?)")]
    struct Connect {
        source: Io,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("IO error: {0}")]
    struct Io(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("publishing project p")]
    struct Publish(#[source] Connect);

    #[test]
    fn each_cause_is_said_once() {
        let refused =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let e = Publish(Connect {
            source: Io(refused),
        });
        let line = one_line(&e);
        assert_eq!(
            line,
            "publishing project p: cannot connect to the broker at amqp://x: IO error: Connection refused (is RabbitMQ running there?)"
        );
        assert_eq!(line.matches("Connection refused").count(), 1);
    }
}
