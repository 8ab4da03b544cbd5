//! What the benchmarks share: child processes that die with the bench, free ports, medians, options, and the Lua
//! ceilings' handlers.

#![allow(dead_code)] // each bench uses a different part

use std::process::Child;
use std::time::{Duration, Instant};

/// The Lua ceilings' handlers, served by `compare` and called directly by `lua_call`.
pub const CONSTANT: &str = "return function(req) return { json = { ok = true } } end\n";
pub const JSON_ONLY: &str = "return function(req) local order = req:json() return { json = { id = order.id } } end\n";

/// Processes started by a bench, stopped (by their own ids) when it ends, also on panic: asked with SIGTERM, so an
/// nginx master takes its workers down with it, then killed if still there after 5 s. The last started is stopped
/// first, and each is gone before the next is asked: a stack stops before the broker it writes to, so its client
/// never sees that broker vanish (kafkajs logs each lost connection and failed reconnection as an error).
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in self.0.iter_mut().rev() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
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
