//! What the benchmarks share: child processes that die with the bench, free ports, and an HTTP load generator
//! (keep-alive connections, each sending one request after another for a fixed time).

#![allow(dead_code)] // each bench uses a different part

use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Processes started by a bench, killed (by their own handles) when it ends, also on panic.
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Requests per second and latency percentiles of one load run.
pub struct LoadResult {
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// `connections` keep-alive connections POST `body(n)` to `url` one request after another for `seconds`; every
/// answer must be 200.
pub async fn load(
    url: &str,
    connections: usize,
    seconds: u64,
    auth: Option<(&str, &str)>,
    body: impl Fn(u64) -> Vec<u8> + Send + Sync + 'static,
) -> LoadResult {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .unwrap();
    let body = Arc::new(body);
    let auth = auth.map(|(u, p)| (u.to_owned(), p.to_owned()));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let (client, url, counter, body, auth) = (
                client.clone(),
                url.to_owned(),
                Arc::clone(&counter),
                Arc::clone(&body),
                auth.clone(),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = (c as u64) << 40;
                while Instant::now() < deadline {
                    n += 1;
                    let mut request = client.post(&url).body(body(n));
                    if let Some((user, password)) = &auth {
                        request = request.basic_auth(user, Some(password));
                    }
                    let sent = Instant::now();
                    let response = request.send().await.expect("request");
                    let status = response.status();
                    let answer = response.bytes().await;
                    assert_eq!(status, 200, "{url}: {answer:?}");
                    latencies.push(sent.elapsed());
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)].as_secs_f64() * 1e3;
    LoadResult {
        requests_per_s: counter.load(Ordering::Relaxed) as f64 / elapsed,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    }
}

pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Value of `--name N` on the command line, or `default`.
pub fn option(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|pair| pair[0] == name)
        .map_or(default, |pair| pair[1].parse().unwrap_or_else(|_| panic!("{name} N")))
}
