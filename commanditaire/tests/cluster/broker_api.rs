//! broker-api on the cluster (issue 13, item 1): given the node URLs with the node leading
//! `todo` first, it is connected to that node; the failover test kills it, and broker-api
//! must answer `GET /api/queues/todo` again within [`MAX_GAP`], from another node.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest broker-api may go without a successful answer after its node is killed.
pub const MAX_GAP: Duration = Duration::from_secs(10);
/// How often the probe asks, and how long one request may take.
const EVERY: Duration = Duration::from_millis(200);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// broker-api in-process on 127.0.0.1:0, asked `GET /api/queues/todo` every 200 ms until
/// stopped; each request's start and whether it answered 200 with the queue.
pub struct Probe {
    samples: Arc<Mutex<Vec<(Instant, bool)>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Probe {
    /// Starts broker-api on `urls` (comma-separated, the node it should use first first)
    /// and the probe, once broker-api has answered once.
    pub fn start(urls: &str) -> Probe {
        let token = format!("probe-{}", std::process::id());
        let tokens = broker_api::Tokens {
            read: Some(broker_api::Token::new(&token).unwrap()),
            user: None,
            admin: None,
        };
        let config = broker_api::Config::new("127.0.0.1:0".parse().unwrap(), urls, tokens);
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let (bound, addr) = std::sync::mpsc::channel();
        let server = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                let server = broker_api::bind(&config).await.expect("bind broker-api");
                bound.send(server.local_addr()).unwrap();
                server
                    .serve(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr: SocketAddr = addr.recv().unwrap();
        let began = Instant::now();
        while !todo_answered(addr, &token) {
            assert!(
                began.elapsed() < Duration::from_secs(30),
                "broker-api did not answer within 30 s"
            );
            std::thread::sleep(EVERY);
        }
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let prober = std::thread::spawn({
            let (samples, stop) = (samples.clone(), stop.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    let ok = todo_answered(addr, &token);
                    samples.lock().unwrap().push((at, ok));
                    std::thread::sleep(EVERY.saturating_sub(at.elapsed()));
                }
            }
        });
        Probe {
            samples,
            stop,
            threads: vec![prober, server],
            shutdown: Some(shutdown),
        }
    }

    /// The longest stretch after `from` without a successful answer (up to the last
    /// success), and whether any request after `from` failed.
    pub fn longest_gap_after(&self, from: Instant) -> (Duration, bool) {
        let samples = self.samples.lock().unwrap();
        let (mut since, mut longest, mut failed) = (from, Duration::ZERO, false);
        for &(at, ok) in samples.iter().filter(|s| s.0 >= from) {
            if ok {
                longest = longest.max(at - since);
                since = at;
            } else {
                failed = true;
            }
        }
        let last = samples.last().map_or(from, |s| s.0);
        (longest.max(last - since), failed)
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.shutdown.take().unwrap().send(());
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Whether `GET /api/queues/todo` answers 200 with the queue within the request timeout.
fn todo_answered(addr: SocketAddr, token: &str) -> bool {
    let answer = || -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT)?;
        stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
        stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
        write!(
            stream,
            "GET /api/queues/todo HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Connection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    };
    answer().is_ok_and(|text| text.starts_with("HTTP/1.1 200") && text.contains("\"todo\""))
}
