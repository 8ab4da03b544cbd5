//! `scripts/kafka` itself: clusters started at once on a fresh machine (an empty cache, as in a first CI run, when
//! the tests start several clusters in parallel) all come up. Each start makes what the cache lacks (the test CA,
//! the formatted data folders); without a lock they made and removed the same folders at the same time, and some
//! starts failed formatting.

mod common;

use std::path::Path;
use std::process::Command;

use common::kafka::script_path;

#[test]
fn clusters_started_at_once_on_an_empty_cache_all_serve() {
    let fetched = Command::new(script_path())
        .arg("fetch")
        .output()
        .expect("run scripts/kafka fetch");
    assert!(fetched.status.success(), "{}", String::from_utf8_lossy(&fetched.stderr));
    // The jars are reused (fetching them is not what is tested); everything made from them starts empty.
    let libs = String::from_utf8(fetched.stdout).expect("a path");
    let libs = Path::new(libs.trim());
    let version = libs
        .parent()
        .and_then(Path::file_name)
        .expect("the jars sit in <cache>/<version>/libs");
    let root = common::temp_dir();
    let cache = root.join("cache");
    std::fs::create_dir_all(cache.join(version)).expect("a cache folder");
    std::os::unix::fs::symlink(libs, cache.join(version).join("libs")).expect("a link to the jars");

    let dirs: Vec<_> = (1..=3).map(|n| root.join(format!("cluster-{n}"))).collect();
    let starts: Vec<_> = dirs
        .iter()
        .map(|dir| {
            Command::new(script_path())
                .args([
                    "start",
                    dir.to_str().expect("UTF-8"),
                    "--owner",
                    &std::process::id().to_string(),
                ])
                .env("LUKA_KAFKA_CACHE", &cache)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("run scripts/kafka start")
        })
        .collect();
    let outputs: Vec<_> = starts
        .into_iter()
        .map(|start| start.wait_with_output().expect("its output"))
        .collect();
    for dir in &dirs {
        let _ = Command::new(script_path()).arg("stop").arg(dir).status();
    }
    drop(root);
    for (n, out) in outputs.iter().enumerate() {
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "cluster {}: scripts/kafka start failed:\n{said}",
            n + 1
        );
        let env = String::from_utf8_lossy(&out.stdout);
        assert!(env.contains("KAFKA_PLAINTEXT=127.0.0.1:"), "cluster {}: {env}", n + 1);
    }
}
