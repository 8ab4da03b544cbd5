//! One Lua handler call without HTTP: `Functions::call` in a hot loop on a current-thread runtime, for the
//! constant handler and the `req:json()` one (the handlers `compare` serves), in microseconds per call. What a
//! call costs when the VM's memory is warm; beside `compare`'s in-server numbers it shows how much of the Lua rows'
//! cost is the call itself (bench/README.md, point 9). No broker is reached: neither handler produces.
//!
//! Run: `bench/run.sh lua` (or `cargo bench --bench lua_call -- [--rounds N] [--calls N]`).

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use common::{CONSTANT, JSON_ONLY, median, option};
use luka::lua::{Found, HttpRequest};

const HANDLERS: [(&str, &str); 2] = [("constant", CONSTANT), ("json", JSON_ONLY)];

const BODY: &[u8] =
    br#"{"id":12345,"customer":"c-42","items":[{"sku":"A1","qty":2},{"sku":"B7","qty":1}],"total":49.95}"#;

fn main() {
    let rounds = option("--rounds", 5) as usize;
    let calls = option("--calls", 200_000) as usize;
    let dir = std::env::temp_dir().join(format!("luka-lua-call-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("functions")).expect("a temporary directory");
    for (name, source) in HANDLERS {
        std::fs::write(dir.join("functions").join(format!("{name}.lua")), source).expect("a handler file");
    }
    // A cluster nothing connects to: the producer connects on first use, and neither handler produces.
    let config = "[lua]\nwatch = false\nvms = 1\n[clusters.local]\nbootstrap = [\"127.0.0.1:9\"]\n[topics.orders]\n";
    let config = luka::config::Config::from_toml(config, &dir, |_| None).expect("the bench config");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    println!("Functions::call in a loop, one thread; {rounds} rounds of {calls} calls; medians");
    runtime.block_on(async {
        let app = luka::App::new(config).expect("the handlers load");
        for (name, _) in HANDLERS {
            let path = format!("/{name}");
            let request = HttpRequest {
                method: hyper::Method::POST,
                uri: path.parse().expect("a path"),
                headers: hyper::HeaderMap::new(),
                body: bytes::Bytes::from_static(BODY),
                remote_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
                user: None,
            };
            let mut per_call = Vec::new();
            for _ in 0..rounds {
                let started = Instant::now();
                for _ in 0..calls {
                    let Found::Target(target) = app.functions.find("POST", &path) else {
                        panic!("{path} is served");
                    };
                    let response = app
                        .functions
                        .call(target, Box::new(request.clone()))
                        .await
                        .expect("a 200");
                    std::hint::black_box(response);
                }
                per_call.push(started.elapsed().as_secs_f64() * 1e6 / calls as f64);
            }
            println!("{name:>9}: {:.2} us per call", median(per_call));
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}
