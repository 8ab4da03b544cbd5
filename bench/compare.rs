//! Every stack, one run, measured from outside on two cores: `wrk` on CPU 0, the stack under test and its broker on
//! CPU 1, so the generator never competes with what it measures.
//!
//! Rows (each measured `--rounds` times, the stacks interleaved round by round, a fresh `luka broker` for every
//! measurement of luka or Node, 2 s of warm-up load before each measured window of `--seconds`):
//! - ceilings: `GET /healthz`; a Lua function that only returns `{json = {ok = true}}`; one that calls `req:json()`
//!   and answers one field; and the same three on the peer, nginx with lua-nginx-module and LuaJIT (the engine of
//!   OpenResty, Kong and APISIX; `bench/nginx/nginx.conf`: `return 200`, `content_by_lua` answering constant JSON,
//!   `cjson.decode` of the body answering one field);
//! - the webhook job: the Lua function of `bench/README.md` (parse a ~100-byte JSON order, produce one keyed record,
//!   acks=all, answer the offset); the same record through REST `POST /produce/bench`; Node.js `http` + kafkajs
//!   (`bench/node`) doing the same job;
//! - throughput: REST with 100 records per request against librdkafka producing the same values (`--seconds`, at
//!   least 5 s, `linger.ms` equal to luka's `linger_ms`). The native producer is its own load generator, so like
//!   every stack under test it shares CPU 1 with its broker (CPU 0 stays idle for that row).
//!
//! luka runs with `TOKIO_WORKER_THREADS=1` and one Lua VM for the per-core figures, everything else at its defaults:
//! access log on (written to a file), request ids, metrics, limits and Lua isolation; nginx with one worker and its
//! access log on too, in the `combined` format to a file, buffered (`buffer=64k`) as luka's is. The webhook rows are
//! measured again with nothing pinned and luka's defaults for a two-core figure. Beside req/s and wrk's p50/p99 each row
//! prints the CPU seconds the process under test (luka, node or the native producer) used per 1,000 requests (or
//! records), read from /proc. Then the targets of issue 8, met or missed by how much.
//!
//! Run: `bench/run.sh compare [--rounds N] [--seconds S]` (needs `wrk`, `taskset`, Node.js and npm; the script
//! installs what is missing).

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{CONSTANT, Children, JSON_ONLY, free_port, median, option, wait_for};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

const CONNECTIONS: usize = 64;
const TOPIC: &str = "bench";
const PARTITIONS: i32 = 4;
/// luka's `linger_ms`, given to the native producer too.
const LINGER_MS: u64 = 0;
const WARM_UP_SECONDS: u64 = 2;
/// Distinct request bodies each wrk connection cycles through.
const BODIES: u64 = 1000;
const GENERATOR_CPU: &str = "0";
const STACK_CPU: &str = "1";

const WEBHOOK: &str = r#"
return function(req)
  local order = req:json()
  local r = kafka.produce{ topic = "bench", messages = { { key = tostring(order.id), value = req.body } } }
  return { json = { partition = r.partition, offset = r.offset } }
end
"#;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Row {
    Healthz,
    Constant,
    JsonOnly,
    NginxStatic,
    NginxConstant,
    NginxJson,
    Webhook,
    RestOne,
    Node,
    RestHundred,
    Native,
    WebhookTwoCores,
    RestOneTwoCores,
    NodeTwoCores,
}

impl Row {
    const ALL: [Row; 14] = [
        Row::Healthz,
        Row::NginxStatic,
        Row::Constant,
        Row::NginxConstant,
        Row::JsonOnly,
        Row::NginxJson,
        Row::Webhook,
        Row::RestOne,
        Row::Node,
        Row::RestHundred,
        Row::Native,
        Row::WebhookTwoCores,
        Row::RestOneTwoCores,
        Row::NodeTwoCores,
    ];

    fn label(self) -> &'static str {
        match self {
            Row::Healthz => "luka GET /healthz (HTTP ceiling)",
            Row::Constant => "luka Lua constant handler",
            Row::JsonOnly => "luka Lua req:json(), one field",
            Row::NginxStatic => "nginx return 200 (HTTP ceiling)",
            Row::NginxConstant => "nginx content_by_lua constant",
            Row::NginxJson => "nginx lua cjson.decode, one field",
            Row::Webhook => "luka Lua webhook",
            Row::RestOne => "luka REST x1",
            Row::Node => "Node.js http + kafkajs webhook",
            Row::RestHundred => "luka REST x100 (records/s)",
            Row::Native => "librdkafka producer (records/s)",
            Row::WebhookTwoCores => "luka Lua webhook, 2 cores",
            Row::RestOneTwoCores => "luka REST x1, 2 cores",
            Row::NodeTwoCores => "Node.js webhook, 2 cores",
        }
    }

    fn is_ceiling(self) -> bool {
        matches!(
            self,
            Row::Healthz | Row::Constant | Row::JsonOnly | Row::NginxStatic | Row::NginxConstant | Row::NginxJson
        )
    }

    fn pinned(self) -> bool {
        !matches!(self, Row::WebhookTwoCores | Row::RestOneTwoCores | Row::NodeTwoCores)
    }

    /// Records per request: figures of this row are per record.
    fn records_per_request(self) -> u64 {
        if self == Row::RestHundred { 100 } else { 1 }
    }
}

/// One measured window.
#[derive(Debug, Clone, Copy)]
struct Sample {
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_s_per_1000: f64,
}

struct Bench {
    /// The luka measured: cargo's release build, or `LUKA_BINARY` (`bench/run.sh compare --pgo` gives
    /// `scripts/build-pgo`'s build).
    luka: String,
    /// The `luka broker` of every row: always cargo's release build, so that a luka built otherwise changes only
    /// the stack under test, not the broker the other stacks share the core with.
    broker: &'static str,
    dir: PathBuf,
    seconds: u64,
}

fn main() {
    let rounds = option("--rounds", 3) as usize;
    let seconds = option("--seconds", 5).max(5);
    if std::env::args().any(|a| a == "--native-producer") {
        return native_producer_process();
    }
    let dir = std::env::temp_dir().join(format!("luka-bench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("functions")).unwrap();
    for (name, source) in [
        ("orders.lua", WEBHOOK),
        ("constant.lua", CONSTANT),
        ("json.lua", JSON_ONLY),
    ] {
        std::fs::write(dir.join("functions").join(name), source).unwrap();
    }
    let built = env!("CARGO_BIN_EXE_luka");
    let luka = std::env::var("LUKA_BINARY").unwrap_or_else(|_| built.to_owned());
    let bench = Bench {
        luka,
        broker: built,
        dir,
        seconds,
    };
    bench.write_wrk_scripts();
    install_node_stack();

    println!(
        "luka benchmark: wrk -t1 -c{CONNECTIONS} on CPU {GENERATOR_CPU}, stack + fresh `luka broker` on CPU \
         {STACK_CPU} (2-core rows: nothing pinned); {seconds}s windows after {WARM_UP_SECONDS}s warm-up, {rounds} \
         rounds interleaved, medians shown; ~100-byte JSON bodies ({BODIES} distinct), acks=all, topic with \
         {PARTITIONS} partitions, linger {LINGER_MS} ms; {} cores visible",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if bench.luka == bench.broker {
        println!("luka measured: cargo's release build (also every row's broker)");
    } else {
        println!(
            "luka measured: {} (LUKA_BINARY); every row's broker: cargo's release build",
            bench.luka
        );
    }
    // `--http`: only the HTTP and Lua ceilings beside nginx's, for quick rounds while working on the HTTP path.
    let http_only = std::env::args().any(|a| a == "--http");
    let rows: Vec<Row> = Row::ALL
        .into_iter()
        .filter(|row| !http_only || row.is_ceiling())
        .collect();
    let mut samples: BTreeMap<Row, Vec<Sample>> = BTreeMap::new();
    for round in 1..=rounds {
        for &row in &rows {
            let sample = bench.measure(row);
            eprintln!(
                "round {round} {:<34} {:>9.0}/s p50 {:>6.2} ms p99 {:>6.2} ms cpu {:.3} s/1000",
                row.label(),
                sample.per_s,
                sample.p50_ms,
                sample.p99_ms,
                sample.cpu_s_per_1000
            );
            samples.entry(row).or_default().push(sample);
        }
    }
    let medians: BTreeMap<Row, Sample> = samples.into_iter().map(|(row, s)| (row, median_sample(&s))).collect();
    print!("{}", report(&medians));
    let _ = std::fs::remove_dir_all(&bench.dir);
}

impl Bench {
    /// Starts a fresh broker and the row's stack, warms up, measures one window, stops both.
    fn measure(&self, row: Row) -> Sample {
        let mut children = Children(Vec::new());
        let nginx_path = match row {
            Row::NginxStatic => Some("/static"),
            Row::NginxConstant => Some("/lua/constant"),
            Row::NginxJson => Some("/lua/json"),
            _ => None,
        };
        if let Some(path) = nginx_path {
            let (master, port) = self.start_nginx(&mut children);
            let script = if row == Row::NginxStatic {
                "get.lua"
            } else {
                "order.lua"
            };
            return self.window(&format!("http://127.0.0.1:{port}{path}"), script, row, || {
                nginx_cpu_seconds(master)
            });
        }
        let broker_addr = format!("127.0.0.1:{}", free_port());
        children.0.push(
            self.command(row.pinned(), self.broker)
                .args(["broker", "--listen", &broker_addr])
                .spawn()
                .expect("luka broker"),
        );
        wait_for(&broker_addr);
        create_topic(&broker_addr);
        if row == Row::Native {
            return self.native(&broker_addr);
        }
        let (url_path, script) = match row {
            Row::Healthz => ("/healthz", "get.lua"),
            Row::Constant => ("/constant", "order.lua"),
            Row::JsonOnly => ("/json", "order.lua"),
            Row::Webhook | Row::WebhookTwoCores | Row::Node | Row::NodeTwoCores => ("/orders", "order.lua"),
            Row::RestOne | Row::RestOneTwoCores => ("/produce/bench", "rest1.lua"),
            Row::RestHundred => ("/produce/bench", "rest100.lua"),
            Row::Native | Row::NginxStatic | Row::NginxConstant | Row::NginxJson => unreachable!("measured above"),
        };
        let (pid, port) = if matches!(row, Row::Node | Row::NodeTwoCores) {
            self.start_node(&mut children, row.pinned(), &broker_addr)
        } else {
            self.start_luka(&mut children, row.pinned(), &broker_addr)
        };
        self.window(&format!("http://127.0.0.1:{port}{url_path}"), script, row, || {
            cpu_seconds(pid)
        })
    }

    /// Warm-up, then one measured window of `url` with the wrk `script`; `cpu` reads the stack's CPU seconds so far.
    fn window(&self, url: &str, script: &str, row: Row, cpu: impl Fn() -> f64) -> Sample {
        let script = self.dir.join(script);
        wrk(url, &script, WARM_UP_SECONDS, row.pinned());
        let cpu_before = cpu();
        let result = wrk(url, &script, self.seconds, row.pinned());
        let cpu = cpu() - cpu_before;
        let records = result.requests * row.records_per_request();
        Sample {
            per_s: records as f64 / result.seconds,
            p50_ms: result.p50_ms,
            p99_ms: result.p99_ms,
            cpu_s_per_1000: cpu / (records as f64 / 1000.0),
        }
    }

    /// `program`, pinned to the stack's CPU for per-core rows, quiet.
    fn command(&self, pinned: bool, program: &str) -> Command {
        let mut command = if pinned {
            let mut c = Command::new("taskset");
            c.args(["-c", STACK_CPU, program]);
            c
        } else {
            Command::new(program)
        };
        command.stdout(Stdio::null()).stderr(Stdio::null());
        command
    }

    fn start_luka(&self, children: &mut Children, pinned: bool, broker: &str) -> (u32, u16) {
        let port = free_port();
        let vms = if pinned { 1 } else { 0 };
        let config = self.dir.join(format!("config-{port}.toml"));
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\naccess_log = true\n\n[clusters.bench]\nbootstrap = [\"{broker}\"]\n\
                 linger_ms = {LINGER_MS}\n\n[topics.{TOPIC}]\npartitions = {PARTITIONS}\n\n\
                 [lua]\nwatch = false\nvms = {vms}\n\n\
                 [[users]]\nname = \"bench\"\npassword = \"bench\"\ntopics = [\"{TOPIC}\"]\n\n\
                 [[routes]]\npath = \"/orders\"\nfunction = \"orders.lua\"\n\n\
                 [[routes]]\npath = \"/constant\"\nfunction = \"constant.lua\"\n\n\
                 [[routes]]\npath = \"/json\"\nfunction = \"json.lua\"\n"
            ),
        )
        .unwrap();
        let mut command = self.command(pinned, &self.luka);
        let log = std::fs::File::create(self.dir.join(format!("access-{port}.log"))).unwrap();
        command.arg("--config").arg(&config).current_dir(&self.dir).stdout(log);
        if pinned {
            command.env("TOKIO_WORKER_THREADS", "1");
        }
        let child = command.spawn().expect("luka");
        let pid = child.id();
        children.0.push(child);
        wait_for(&format!("127.0.0.1:{port}"));
        (pid, port)
    }

    /// nginx + lua-nginx-module from `bench/nginx/nginx.conf`, one worker, in a prefix of its own; its master's pid.
    fn start_nginx(&self, children: &mut Children) -> (u32, u16) {
        let port = free_port();
        let prefix = self.dir.join(format!("nginx-{port}"));
        std::fs::create_dir_all(&prefix).unwrap();
        let template = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/nginx/nginx.conf"))
            .expect("bench/nginx/nginx.conf");
        let config = template
            .replace("@PREFIX@", &prefix.display().to_string())
            .replace("@PORT@", &port.to_string());
        std::fs::write(prefix.join("nginx.conf"), config).unwrap();
        let mut command = self.command(true, "nginx");
        command
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .arg("-e")
            .arg(prefix.join("error.log"))
            .stderr(Stdio::inherit());
        let child = command
            .spawn()
            .expect("nginx (apt-get install nginx-light libnginx-mod-http-lua lua-cjson)");
        let pid = child.id();
        children.0.push(child);
        wait_for(&format!("127.0.0.1:{port}"));
        (pid, port)
    }

    fn start_node(&self, children: &mut Children, pinned: bool, broker: &str) -> (u32, u16) {
        let port = free_port();
        let mut command = self.command(pinned, "node");
        command
            .arg(node_root().join("server.js"))
            .env("PORT", port.to_string())
            .env("BROKERS", broker)
            .env("TOPIC", TOPIC)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().expect("node");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("listening"), "node server did not start: {line:?}");
        let pid = child.id();
        children.0.push(child);
        (pid, port)
    }

    /// The native producer in a child process beside its broker on the stack's CPU.
    fn native(&self, broker: &str) -> Sample {
        let exe = std::env::current_exe().unwrap();
        let output = Command::new("taskset")
            .args(["-c", STACK_CPU])
            .arg(exe)
            .args([
                "--native-producer",
                "--seconds",
                &self.seconds.to_string(),
                "--broker",
                broker,
            ])
            .stderr(Stdio::inherit())
            .output()
            .expect("native producer");
        assert!(output.status.success(), "native producer failed");
        let line = String::from_utf8(output.stdout).unwrap();
        let fields: Vec<f64> = line.split_whitespace().map(|f| f.parse().unwrap()).collect();
        Sample {
            per_s: fields[0],
            p50_ms: f64::NAN,
            p99_ms: f64::NAN,
            cpu_s_per_1000: fields[1],
        }
    }

    /// wrk scripts that cycle through pre-built requests, so the generator does no formatting per request.
    fn write_wrk_scripts(&self) {
        let order_bodies: Vec<String> = (0..BODIES).map(order).collect();
        let rest_one: Vec<String> = (0..BODIES)
            .map(|n| serde_json::json!({ "key": (n % 100_000).to_string(), "value": order(n) }).to_string())
            .collect();
        let rest_hundred: Vec<String> = (0..BODIES / 10)
            .map(|n| {
                let messages: Vec<_> = (0..100)
                    .map(|i| serde_json::json!({ "value": order(n * 100 + i) }))
                    .collect();
                serde_json::Value::Array(messages).to_string()
            })
            .collect();
        let auth = format!("Basic {}", base64_encode(b"bench:bench"));
        write_script(&self.dir.join("get.lua"), "GET", &[], &[String::new()]);
        write_script(&self.dir.join("order.lua"), "POST", &[], &order_bodies);
        write_script(
            &self.dir.join("rest1.lua"),
            "POST",
            &[("Authorization", &auth)],
            &rest_one,
        );
        write_script(
            &self.dir.join("rest100.lua"),
            "POST",
            &[("Authorization", &auth)],
            &rest_hundred,
        );
    }
}

fn write_script(path: &Path, method: &str, headers: &[(&str, &str)], bodies: &[String]) {
    let mut lua = String::from("local bodies = {\n");
    for body in bodies {
        writeln!(lua, "  [==[{body}]==],").unwrap();
    }
    lua.push_str("}\nlocal requests, n = {}, 0\nfunction init(args)\n  local headers = {[\"Content-Type\"] = \"application/json\"");
    for (name, value) in headers {
        write!(lua, ", [\"{name}\"] = \"{value}\"").unwrap();
    }
    writeln!(
        lua,
        "}}\n  for i, body in ipairs(bodies) do\n    requests[i] = wrk.format(\"{method}\", nil, headers, \
         {})\n  end\nend\nfunction request()\n  n = n % #requests + 1\n  return requests[n]\nend",
        if method == "GET" { "nil" } else { "body" }
    )
    .unwrap();
    std::fs::write(path, lua).unwrap();
}

struct WrkResult {
    requests: u64,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// One wrk run; every answer must be a 2xx.
fn wrk(url: &str, script: &Path, seconds: u64, pinned: bool) -> WrkResult {
    let mut command = if pinned {
        let mut c = Command::new("taskset");
        c.args(["-c", GENERATOR_CPU, "wrk"]);
        c
    } else {
        Command::new("wrk")
    };
    let output = command
        .args([
            "-t1",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .expect("wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "wrk failed: {text}");
    assert!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "{url}: not every answer was a 2xx:\n{text}"
    );
    let (requests, seconds) = text
        .lines()
        .find_map(|l| {
            let (count, rest) = l.trim().split_once(" requests in ")?;
            let duration = rest.split(',').next()?;
            Some((count.parse().ok()?, parse_duration_ms(duration)? / 1000.0))
        })
        .unwrap_or_else(|| panic!("no request count in wrk output:\n{text}"));
    let percentile = |p: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(p).and_then(|v| parse_duration_ms(v.trim())))
            .unwrap_or_else(|| panic!("no {p} in wrk output:\n{text}"))
    };
    WrkResult {
        requests,
        seconds,
        p50_ms: percentile("50%"),
        p99_ms: percentile("99%"),
    }
}

/// wrk's durations: `812.00us`, `1.23ms`, `5.00s`, `2.01m`.
fn parse_duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        "m" => number * 60_000.0,
        _ => return None,
    })
}

/// CPU seconds of an nginx master and its workers (which serve the requests) so far.
fn nginx_cpu_seconds(master: u32) -> f64 {
    let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children")).unwrap_or_default();
    cpu_seconds(master)
        + children
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .map(cpu_seconds)
            .sum::<f64>()
}

/// User + system CPU seconds of `pid` so far (fields 14 and 15 of /proc/PID/stat, in clock ticks of 1/100 s).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("process under test is running");
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

fn create_topic(broker: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .expect("librdkafka admin client");
    let topic = NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(1));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = runtime
        .block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .expect("create topic");
    for result in results {
        result.expect("topic created");
    }
}

fn node_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/node")
}

fn install_node_stack() {
    let root = node_root();
    let installed = Command::new("npm")
        .args(["ci", "--silent", "--no-audit", "--no-fund", "--prefix"])
        .arg(&root)
        .status()
        .expect("npm (Node.js) is needed for this benchmark");
    assert!(installed.success(), "npm ci in bench/node failed");
}

/// A ~100-byte JSON order, different per `n`.
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

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[derive(Default)]
struct Counting {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl rdkafka::ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// `--native-producer`: librdkafka (acks=all, luka's linger) producing the REST x100 values for `--seconds` after a
/// warm-up; prints records/s and its own CPU seconds per 1,000 records.
fn native_producer_process() {
    let args: Vec<String> = std::env::args().collect();
    let broker = args
        .windows(2)
        .find(|p| p[0] == "--broker")
        .map(|p| p[1].clone())
        .expect("--broker");
    let seconds = option("--seconds", 5);
    let producer: ThreadedProducer<Counting> = ClientConfig::new()
        .set("bootstrap.servers", &broker)
        .set("acks", "all")
        .set("linger.ms", LINGER_MS.to_string())
        .create_with_context(Counting::default())
        .expect("librdkafka producer");
    let values: Vec<String> = (0..BODIES * 10).map(order).collect();
    let send_for = |duration: Duration| -> (u64, f64) {
        let context = producer.context();
        let start_count = context.ok.load(Ordering::Relaxed);
        let started = Instant::now();
        let mut sent = 0u64;
        while started.elapsed() < duration {
            let value = &values[(sent % values.len() as u64) as usize];
            let mut record = BaseRecord::<(), String>::to(TOPIC).payload(value);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        record = back;
                        std::thread::sleep(Duration::from_micros(100));
                    }
                }
            }
            sent += 1;
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
        let elapsed = started.elapsed().as_secs_f64();
        assert_eq!(context.failed.load(Ordering::Relaxed), 0, "native deliveries failed");
        (context.ok.load(Ordering::Relaxed) - start_count, elapsed)
    };
    send_for(Duration::from_secs(WARM_UP_SECONDS));
    let cpu_before = cpu_seconds(std::process::id());
    let (records, elapsed) = send_for(Duration::from_secs(seconds));
    let cpu = cpu_seconds(std::process::id()) - cpu_before;
    println!("{} {}", records as f64 / elapsed, cpu / (records as f64 / 1000.0));
}

fn median_sample(samples: &[Sample]) -> Sample {
    let pick = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
    Sample {
        per_s: pick(|s| s.per_s),
        p50_ms: pick(|s| s.p50_ms),
        p99_ms: pick(|s| s.p99_ms),
        cpu_s_per_1000: pick(|s| s.cpu_s_per_1000),
    }
}

fn report(m: &BTreeMap<Row, Sample>) -> String {
    let mut out = String::new();
    writeln!(out, "\n| stack | req/s (records/s) | p50 ms | p99 ms | CPU s / 1000 |").unwrap();
    writeln!(out, "|---|---|---|---|---|").unwrap();
    for (row, s) in m {
        let ms = |v: f64| if v.is_nan() { "-".to_owned() } else { format!("{v:.2}") };
        writeln!(
            out,
            "| {} | {:.0} | {} | {} | {:.3} |",
            row.label(),
            s.per_s,
            ms(s.p50_ms),
            ms(s.p99_ms),
            s.cpu_s_per_1000
        )
        .unwrap();
    }
    let rate = |row: Row| m.get(&row).map_or(f64::NAN, |s| s.per_s);
    let p99 = |row: Row| m.get(&row).map_or(f64::NAN, |s| s.p99_ms);
    let targets = [
        (
            "healthz / nginx return 200 req/s",
            rate(Row::Healthz) / rate(Row::NginxStatic),
            0.90,
        ),
        (
            "Lua constant / nginx content_by_lua req/s",
            rate(Row::Constant) / rate(Row::NginxConstant),
            0.90,
        ),
        (
            "Lua req:json() / nginx cjson req/s",
            rate(Row::JsonOnly) / rate(Row::NginxJson),
            0.90,
        ),
        // p99 no worse than nginx's by more than 2x: nginx's p99 at least half of luka's.
        (
            "nginx p99 / healthz p99",
            p99(Row::NginxStatic) / p99(Row::Healthz),
            0.5,
        ),
        (
            "nginx p99 / Lua constant p99",
            p99(Row::NginxConstant) / p99(Row::Constant),
            0.5,
        ),
        (
            "nginx p99 / Lua req:json() p99",
            p99(Row::NginxJson) / p99(Row::JsonOnly),
            0.5,
        ),
        ("Lua webhook / Node req/s", rate(Row::Webhook) / rate(Row::Node), 5.0),
        ("Node p99 / Lua webhook p99", p99(Row::Node) / p99(Row::Webhook), 5.0),
        (
            "Lua webhook / REST x1 req/s",
            rate(Row::Webhook) / rate(Row::RestOne),
            0.90,
        ),
        (
            "REST x100 / native records/s",
            rate(Row::RestHundred) / rate(Row::Native),
            0.70,
        ),
        (
            "2 cores: Lua webhook / Node req/s",
            rate(Row::WebhookTwoCores) / rate(Row::NodeTwoCores),
            5.0,
        ),
    ];
    writeln!(out, "\ntargets (one pinned core each unless said):").unwrap();
    for (name, ratio, target) in targets.into_iter().filter(|(_, ratio, _)| !ratio.is_nan()) {
        let short = (1.0 - ratio / target) * 100.0;
        let verdict = if ratio >= target {
            "met".to_owned()
        } else if short < 0.1 {
            "MISSED by less than 0.1%".to_owned()
        } else if short < 1.0 {
            // A shortfall that rounds to 0% still says how much, not "by 0%".
            format!("MISSED by {short:.1}%")
        } else {
            format!("MISSED by {short:.0}%")
        };
        writeln!(out, "  {name:<42} {ratio:>6.2} (target {target:.2}): {verdict}").unwrap();
    }
    out
}
