//! luka's own binary, started by a test on free ports and stopped (by its process) when the test ends, also when it
//! fails.
//!
//! A port free when picked can be taken before the binary binds it (by another test's server or broker, or by a
//! connection's ephemeral port, all drawn from the same range). The binary then exits saying it cannot listen, and
//! is started again on new ports, as [`super::embedded_broker`] does for the in-process broker.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LUKA: &str = env!("CARGO_BIN_EXE_luka");

/// What the binary logs once its HTTP listener is bound (both log formats carry the text).
const LISTENING: &str = "luka listening on";

/// What `luka broker` prints once it accepts connections.
const BROKER_LISTENING: &str = "kafka broker listening on";

/// What it says when the HTTP port or the embedded broker's port is taken.
const CANNOT_LISTEN: &str = "cannot listen on";

/// Attempts before a test gives up on finding free ports.
const ATTEMPTS: usize = 3;

/// A running `luka --config <dir>/config.toml`, its standard output and error in `<dir>/luka.log`.
pub struct Binary {
    child: std::process::Child,
    log: PathBuf,
    /// The HTTP address it serves.
    pub http: SocketAddr,
    /// The address its config gives the (embedded) broker.
    pub broker: SocketAddr,
}

impl Binary {
    /// Writes `config(http, broker)` for two free addresses to `dir/config.toml` and starts the binary on it;
    /// ready once it has logged that it listens on `http` (so it is this process that answers there). Panics with
    /// the binary's log when it exits for another reason than a taken port, or does not start within 30 s.
    pub async fn serve(dir: &Path, config: impl Fn(SocketAddr, SocketAddr) -> String) -> Self {
        Self::serve_with_env(dir, &[], config).await
    }

    /// [`Binary::serve`] with `env` added to the binary's environment (`RUST_LOG`, say).
    pub async fn serve_with_env(
        dir: &Path,
        env: &[(&str, &str)],
        config: impl Fn(SocketAddr, SocketAddr) -> String,
    ) -> Self {
        let path = dir.join("config.toml");
        Self::start(dir, LISTENING, |http, broker| {
            std::fs::write(&path, config(http, broker)).expect("write config.toml");
            let mut command = Command::new(LUKA);
            command.arg("--config").arg(&path).envs(env.iter().copied());
            command
        })
        .await
    }

    /// [`Binary::serve`] started with a soft open-file limit of `soft` (as a shell or a service manager may give it).
    pub async fn serve_with_open_files(
        dir: &Path,
        soft: u64,
        config: impl Fn(SocketAddr, SocketAddr) -> String,
    ) -> Self {
        let path = dir.join("config.toml");
        Self::start(dir, LISTENING, |http, broker| {
            std::fs::write(&path, config(http, broker)).expect("write config.toml");
            // The shell lowers its soft limit and becomes luka (same process id).
            let mut command = Command::new("sh");
            command
                .arg("-c")
                .arg(format!("ulimit -Sn {soft} && exec \"$0\" --config \"$1\""))
                .arg(LUKA)
                .arg(&path);
            command
        })
        .await
    }

    /// `luka broker` (the standalone development broker) on a free address, `broker`; ready once it says it
    /// listens. It serves no HTTP: `http` is a free address nothing listens on.
    pub async fn broker(dir: &Path) -> Self {
        Self::start(dir, BROKER_LISTENING, |_, broker| {
            let mut command = Command::new(LUKA);
            command.args(["broker", "--listen", &broker.to_string()]);
            command
        })
        .await
    }

    /// Runs `command(http, broker)` for two free addresses, its output in `dir/luka.log`, until it says `ready`;
    /// again on new addresses when it exits because one was taken.
    async fn start(dir: &Path, ready: &str, command: impl Fn(SocketAddr, SocketAddr) -> Command) -> Self {
        let log = dir.join("luka.log");
        for _ in 0..ATTEMPTS {
            let (http, broker) = (super::free_addr(), super::free_addr());
            let file = std::fs::File::create(&log).expect("create luka.log");
            let child = command(http, broker)
                .stdout(Stdio::from(file.try_clone().expect("clone the log file")))
                .stderr(Stdio::from(file))
                .spawn()
                .expect("start luka");
            let mut binary = Self {
                child,
                log: log.clone(),
                http,
                broker,
            };
            if binary.started(ready).await {
                return binary;
            }
        }
        panic!("luka found no free ports in {ATTEMPTS} attempts");
    }

    /// Whether the binary came up (said `ready`); false when it exited because a port was taken.
    async fn started(&mut self, ready: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let said = std::fs::read_to_string(&self.log).unwrap_or_default();
            if said.contains(ready) {
                return true;
            }
            if self.child.try_wait().expect("look at luka's process").is_some() {
                assert!(said.contains(CANNOT_LISTEN), "luka exited:\n{said}");
                return false;
            }
            assert!(Instant::now() < deadline, "luka did not start within 30 s:\n{said}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the binary once its last lines are out, and gives its log.
    pub async fn stop_and_read_log(mut self) -> String {
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.stop();
        self.log()
    }

    /// Sends SIGTERM, as a service manager does to stop it.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Holds the whole process back (SIGSTOP), as the kernel does a container that used up its CPU quota, until
    /// [`Binary::resume`].
    pub fn pause(&self) {
        self.signal("STOP");
    }

    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed: {status}");
    }

    /// How it exited, once it has, within `within`; `None` if it is still running then.
    pub async fn exited_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("look at luka's process") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the kernel may back its memory with transparent huge pages (`THP_enabled` in its
    /// `/proc/PID/status`, Linux 5.0 and later).
    pub fn huge_pages_enabled(&self) -> bool {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
        let line = status
            .lines()
            .find_map(|line| line.strip_prefix("THP_enabled:"))
            .unwrap_or_else(|| panic!("no THP_enabled line in /proc/{pid}/status:\n{status}"));
        line.trim() == "1"
    }

    /// Its soft and hard open-file limits (`Max open files` in `/proc/PID/limits`; `None`: unlimited).
    pub fn open_file_limits(&self) -> (Option<u64>, Option<u64>) {
        let pid = self.child.id();
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read /proc/PID/limits");
        let line = limits
            .lines()
            .find_map(|line| line.strip_prefix("Max open files"))
            .unwrap_or_else(|| panic!("no open-file limit in /proc/{pid}/limits:\n{limits}"));
        let mut values = line.split_whitespace().map(|value| value.parse().ok());
        (values.next().flatten(), values.next().flatten())
    }

    /// How often its threads have gone to sleep so far, all together (voluntary context switches in
    /// `/proc/PID/task/TID/status`; being preempted is not counted): each one sleeps until something wakes it.
    pub fn sleeps(&self) -> u64 {
        let tasks = format!("/proc/{}/task", self.child.id());
        std::fs::read_dir(&tasks)
            .expect("read /proc/PID/task")
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("status")).ok())
            .filter_map(|status| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).expect("read luka.log")
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        self.stop();
    }
}
