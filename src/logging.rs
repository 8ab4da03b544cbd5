//! Log output off the request path: formatted lines (the access log among them) in, batched writes to stdout out.
//!
//! A request appends its line to a shared buffer (a short lock and a copy) and goes on; it never waits for a pipe or
//! a disk, and never wakes a thread per line. A writer thread of its own sleeps until the buffer has something, lets
//! [`GATHER`] pass so lines pile up, or less once [`WRITE_AT`] bytes are waiting, then writes them all at once: an
//! idle server's line appears within that time, and a busy server writes in steps of about [`WRITE_AT`] bytes.
//! Past [`MAX_BUFFERED`] bytes waiting (stdout stalled), new lines are dropped and counted, and the count is written
//! in their place when output moves again.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub mod access;

/// Text from outside (a handler's, a request's, an error's) as one log line: control characters (newlines, carriage
/// returns, terminal escapes) are written as escapes, so the text cannot forge log lines or drive a terminal; cut to
/// `max` bytes (and a `…`).
pub fn one_line(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max && !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut line = String::with_capacity(text.len().min(max) + 16);
    for c in text.chars() {
        if line.len() >= max {
            line.push('…');
            break;
        }
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    std::borrow::Cow::Owned(line)
}

/// How long the writer lets lines gather after the first one arrives.
const GATHER: Duration = Duration::from_millis(20);

/// Bytes waiting that have the writer write before [`GATHER`] is over. The writer shares the server's cores: one
/// write of everything a busy server logs in [`GATHER`] (about half a megabyte at 180k requests a second) held up
/// the requests on its core for its whole length, which showed in their 99th percentile (`bench/README.md` point
/// 17); a write of this size takes tens of microseconds, and the two buffers swapped stay in the cache.
const WRITE_AT: usize = 64 * 1024;

/// Bytes that may wait for the writer; beyond, lines are dropped (and counted) rather than holding requests.
const MAX_BUFFERED: usize = 16 * 1024 * 1024;

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    dropped: AtomicU64,
    /// [`GATHER`], but for tests.
    gather: Duration,
    /// The log is JSON, one object per line: so is the notice of lines dropped.
    json: bool,
}

impl Shared {
    fn new(gather: Duration, json: bool) -> Self {
        Self {
            state: Mutex::default(),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
            gather,
            json,
        }
    }
}

#[derive(Default)]
struct State {
    lines: Vec<u8>,
    closed: bool,
}

/// Where `tracing`'s formatter writes: each formatted event is one `write` of a whole line.
#[derive(Clone)]
pub struct Lines {
    shared: Arc<Shared>,
}

/// Keeps the writer thread; dropping it writes what is left and stops the thread.
pub struct Guard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A writer of lines to `out` on a thread of its own, and the guard that ends it; `json`: the lines are JSON objects.
pub fn batched(out: impl Write + Send + 'static, json: bool) -> (Lines, Guard) {
    batched_every(GATHER, out, json)
}

fn batched_every(gather: Duration, out: impl Write + Send + 'static, json: bool) -> (Lines, Guard) {
    let shared = Arc::new(Shared::new(gather, json));
    let thread = {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("luka-log-writer".into())
            .spawn(move || write_batches(&shared, out))
            .expect("cannot start the log writer thread")
    };
    (
        Lines {
            shared: Arc::clone(&shared),
        },
        Guard {
            shared,
            thread: Some(thread),
        },
    )
}

fn write_batches(shared: &Shared, mut out: impl Write) {
    let mut batch = Vec::new();
    loop {
        let closed = {
            let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
            while state.lines.is_empty() && !state.closed {
                state = shared.wake.wait(state).unwrap_or_else(PoisonError::into_inner);
            }
            let deadline = Instant::now() + shared.gather;
            while !state.closed && state.lines.len() < WRITE_AT {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                state = shared
                    .wake
                    .wait_timeout(state, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut batch, &mut state.lines);
            state.closed
        };
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let _ = out.write_all(dropped_notice(dropped, shared.json).as_bytes());
        }
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if closed {
            return;
        }
    }
}

/// The line that says `dropped` lines were lost, in the log's own format (a JSON log's reader could not parse
/// another).
fn dropped_notice(dropped: u64, json: bool) -> String {
    const WHY: &str = "log lines dropped: stdout did not keep up";
    if !json {
        return format!("luka: {dropped} {WHY}\n");
    }
    let mut line = String::from(r#"{"timestamp":""#);
    access::timestamp(&mut line);
    line.push_str(&format!(
        r#"","level":"WARN","fields":{{"message":"{WHY}","dropped":{dropped}}},"target":"luka::logging"}}"#
    ));
    line.push('\n');
    line
}

impl Lines {
    /// Appends a whole line (or several) for the writer; dropped and counted when too much is waiting.
    pub fn push(&self, line: &[u8]) {
        let mut state = self.shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.lines.len() + line.len() > MAX_BUFFERED {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let before = state.lines.len();
        state.lines.extend_from_slice(line);
        let wake = before == 0 || (before < WRITE_AT && state.lines.len() >= WRITE_AT);
        drop(state);
        if wake {
            self.shared.wake.notify_one();
        }
    }
}

impl Write for Lines {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.push(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = Lines;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outside text is cut to `max` bytes (and a `…`); its control characters are escaped (more in
    /// `lua::modules::misc`'s tests, whose `log` uses it).
    #[test]
    fn outside_text_is_cut_at_its_bound() {
        assert_eq!(one_line("plain", 10), "plain");
        assert_eq!(one_line(&"a".repeat(50), 10), format!("{}…", "a".repeat(10)));
    }

    /// A `Write` the test can read back.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_appear_soon_and_all_are_written_at_the_end() {
        let sink = Sink::default();
        let (mut lines, guard) = batched(sink.clone(), false);
        lines.write_all(b"first\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while sink.0.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "an idle server's line was not written");
            std::thread::sleep(Duration::from_millis(5));
        }
        for n in 0..10_000 {
            lines.write_all(format!("line {n}\n").as_bytes()).unwrap();
        }
        drop(guard);
        let written = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(written.lines().count(), 10_001);
        assert!(written.ends_with("line 9999\n"));
    }

    #[test]
    fn a_busy_server_s_lines_are_written_in_steps_without_waiting_out_the_gathering() {
        let sink = Sink::default();
        let (mut lines, guard) = batched_every(Duration::from_secs(60), sink.clone(), false);
        let line = [b'x'; 99].iter().chain(b"\n").copied().collect::<Vec<u8>>();
        let started = Instant::now();
        for _ in 0..WRITE_AT / line.len() + 1 {
            lines.write_all(&line).unwrap();
        }
        while sink.0.lock().unwrap().len() < WRITE_AT {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "waited for the gathering time"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(guard);
    }

    #[test]
    fn a_stalled_output_drops_lines_and_says_how_many() {
        let shared = Arc::new(Shared::new(GATHER, false));
        let mut lines = Lines {
            shared: Arc::clone(&shared),
        };
        let line = vec![b'x'; 1024 * 1024];
        for _ in 0..20 {
            lines.write_all(&line).unwrap();
        }
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 4);
        shared.state.lock().unwrap().closed = true;
        let sink = Sink::default();
        write_batches(&shared, sink.clone());
        let written = sink.0.lock().unwrap();
        assert!(written.starts_with(b"luka: 4 log lines dropped"));
        assert_eq!(
            written.len() - written.iter().position(|b| *b == b'x').unwrap(),
            16 * 1024 * 1024
        );
    }

    /// In a JSON log the notice is a JSON object too, as `tracing`'s JSON lines are.
    #[test]
    fn the_notice_of_lines_dropped_is_in_the_logs_format() {
        let notice = dropped_notice(4, true);
        assert!(notice.ends_with("}\n") && notice.lines().count() == 1, "{notice}");
        let object: serde_json::Value = serde_json::from_str(&notice).expect("a JSON object");
        assert_eq!(object["fields"]["dropped"], 4, "{notice}");
        assert_eq!(object["level"], "WARN", "{notice}");
        assert!(
            object["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{notice}"
        );
        assert_eq!(
            dropped_notice(4, false),
            "luka: 4 log lines dropped: stdout did not keep up\n"
        );
    }
}
