//! The webhook job three ways, same broker, same load, same run:
//! - luka Lua: `POST /orders` to a function that parses the ~100-byte JSON body, produces one record keyed by the
//!   order id (acks=all) and answers with the offset;
//! - luka REST: the same record through `POST /produce/bench` (`{"key", "value"}`);
//! - Node.js: a plain `http` server producing each request with kafkajs (`bench/node/server.js`), the usual
//!   do-it-yourself stack for this job.
//!
//! Each round runs the three one after another, 64 keep-alive connections each; medians of the rounds are printed
//! with the ratios to Node.js.
//!
//! Run: `bench/run.sh lua` (or `cargo bench --bench lua_webhook -- [--rounds N] [--seconds S]`); needs Node.js
//! and npm (the script installs kafkajs from bench/node/package-lock.json).

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{Children, LoadResult, free_port, load, median, option, wait_for};

const CONNECTIONS: usize = 64;
const TOPIC: &str = "bench";
const PARTITIONS: usize = 4;

const FUNCTION: &str = r#"
return function(req)
  local order = req:json()
  local r = kafka.produce{ topic = "bench", messages = { { key = tostring(order.id), value = req.body } } }
  return { json = { partition = r.partition, offset = r.offset } }
end
"#;

/// A ~100-byte JSON order, different per request.
fn order(n: u64) -> String {
    format!(
        r#"{{"id":{},"item":"book-{:04}","quantity":{},"price":{}.{:02},"email":"buyer{}@example.com"}}"#,
        n % 100_000,
        n % 10_000,
        n % 9 + 1,
        n % 200,
        n % 100,
        n % 1000
    )
}

fn rest_body(n: u64) -> Vec<u8> {
    let order = order(n);
    let id = n % 100_000;
    serde_json::json!({ "key": id.to_string(), "value": order })
        .to_string()
        .into_bytes()
}

fn start_node(children: &mut Children, broker: &str) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/node");
    let installed = Command::new("npm")
        .args(["ci", "--silent", "--no-audit", "--no-fund", "--prefix", root])
        .status()
        .expect("npm (Node.js) is needed for this benchmark");
    assert!(installed.success(), "npm ci in bench/node failed");
    let port = free_port();
    let mut node = Command::new("node")
        .arg(format!("{root}/server.js"))
        .env("PORT", port.to_string())
        .env("BROKERS", broker)
        .env("TOPIC", TOPIC)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node");
    let mut line = String::new();
    BufReader::new(node.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening"), "node server did not start: {line:?}");
    children.0.push(node);
    format!("http://127.0.0.1:{port}/orders")
}

fn print_row(name: &str, r: &LoadResult) {
    print!(
        " | {name} {:>6.0} req/s (p50 {:.1} ms, p99 {:.1} ms)",
        r.requests_per_s, r.p50_ms, r.p99_ms
    );
}

fn main() {
    let rounds = option("--rounds", 3) as usize;
    let seconds = option("--seconds", 5);
    let luka = env!("CARGO_BIN_EXE_luka");
    let broker = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let dir = std::env::temp_dir().join(format!("luka-bench-lua-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("functions")).unwrap();
    std::fs::write(dir.join("functions/orders.lua"), FUNCTION).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{http}\"\n\n[clusters.bench]\nbootstrap = [\"{broker}\"]\n\n\
             [topics.{TOPIC}]\npartitions = {PARTITIONS}\n\n[lua]\nwatch = false\n\n\
             [[users]]\nname = \"bench\"\npassword = \"bench\"\ntopics = [\"{TOPIC}\"]\n"
        ),
    )
    .unwrap();
    let mut children = Children(Vec::new());
    let spawn = |args: &[&std::ffi::OsStr]| {
        Command::new(luka)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    children
        .0
        .push(spawn(&["broker".as_ref(), "--listen".as_ref(), broker.as_ref()]));
    wait_for(&broker);
    children.0.push(spawn(&["--config".as_ref(), config.as_os_str()]));
    wait_for(&http);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let lua_url = format!("http://{http}/orders");
    let rest_url = format!("http://{http}/produce/{TOPIC}");

    // Warm-up: luka creates the topic (Node's producer does not create topics) and every stack connects.
    runtime.block_on(load(&lua_url, 4, 1, None, |n| order(n).into_bytes()));
    let node_url = start_node(&mut children, &broker);
    runtime.block_on(load(&node_url, 4, 1, None, |n| order(n).into_bytes()));
    runtime.block_on(load(&rest_url, 4, 1, Some(("bench", "bench")), rest_body));

    println!(
        "webhook → Kafka: parse a ~100-byte JSON body, produce 1 keyed record (acks=all), answer the offset; \
         {CONNECTIONS} keep-alive connections, {seconds}s per run, {rounds} rounds, topic with {PARTITIONS} \
         partitions, {} cores",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    let (mut lua, mut rest, mut node) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let l = runtime.block_on(load(&lua_url, CONNECTIONS, seconds, None, |n| order(n).into_bytes()));
        let r = runtime.block_on(load(
            &rest_url,
            CONNECTIONS,
            seconds,
            Some(("bench", "bench")),
            rest_body,
        ));
        let n = runtime.block_on(load(&node_url, CONNECTIONS, seconds, None, |n| order(n).into_bytes()));
        print!("round {round}:");
        print_row("luka Lua", &l);
        print_row("luka REST", &r);
        print_row("Node.js+kafkajs", &n);
        println!();
        lua.push(l);
        rest.push(r);
        node.push(n);
    }
    let med = |rs: &[LoadResult], f: fn(&LoadResult) -> f64| median(rs.iter().map(f).collect());
    let rps = |r: &LoadResult| r.requests_per_s;
    let p99 = |r: &LoadResult| r.p99_ms;
    println!(
        "median req/s: luka Lua {:.0}, luka REST {:.0}, Node.js {:.0}; median p99: {:.1} ms, {:.1} ms, {:.1} ms",
        med(&lua, rps),
        med(&rest, rps),
        med(&node, rps),
        med(&lua, p99),
        med(&rest, p99),
        med(&node, p99)
    );
    println!(
        "luka Lua / Node.js: {:.1}x the req/s (target 5x), p99 {:.2}x of Node's (target below 1)",
        med(&lua, rps) / med(&node, rps),
        med(&lua, p99) / med(&node, p99)
    );
    drop(children);
    let _ = std::fs::remove_dir_all(&dir);
}
