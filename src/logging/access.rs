//! The access log line: one request's facts in, one line in the batched log out, in the format the rest of the log
//! has (`tracing`'s human or JSON layout, target `luka::access`).
//!
//! The line is formatted here rather than by `tracing`'s formatter: going field by field through its visitor and
//! formatter took a tenth of the server's CPU per request at full load (profiled beside nginx, `bench/README.md`),
//! about as much as answering the request. Whether the line is wanted is still `tracing`'s to say
//! (`RUST_LOG=luka::access=off`): the binary installs the writer only when its filter lets the line through, and
//! where no writer is installed (silenced, or luka used as a library) the router falls back to a plain `tracing`
//! event.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Lines;

/// What one served request's line says.
#[derive(Debug, Clone, Copy)]
pub struct AccessLine<'a> {
    pub request_id: &'a str,
    pub remote: SocketAddr,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub duration: Duration,
    /// The function that ran, or "".
    pub function: &'a str,
    pub records: usize,
}

/// The writer access lines go to, and whether as JSON; set once, by the binary's log setup.
static WRITER: OnceLock<(Lines, bool)> = OnceLock::new();

/// A line's text is built in this thread's buffer, then copied into the shared one.
const LINE_CAPACITY: usize = 512;

/// Sends access lines to `lines` (as JSON objects when `json`) from now on.
pub fn install(lines: Lines, json: bool) {
    let _ = WRITER.set((lines, json));
}

/// Writes `line` to the installed writer; false when none is installed.
pub fn write(line: &AccessLine<'_>) -> bool {
    let Some((lines, json)) = WRITER.get() else {
        return false;
    };
    thread_local! {
        static TEXT: RefCell<String> = RefCell::new(String::with_capacity(LINE_CAPACITY));
    }
    TEXT.with_borrow_mut(|text| {
        text.clear();
        if *json {
            format_json(text, line);
        } else {
            format_human(text, line);
        }
        lines.push(text.as_bytes());
    });
    true
}

/// Longest request path written: a path is the client's (hyper takes heads of hundreds of kilobytes), as are its
/// characters, which are written as escapes where they are control characters (see [`super::one_line`]).
const MAX_PATH: usize = 2 * 1024;

/// Longest request method written: any token is a method to hyper, however long.
const MAX_METHOD: usize = 32;

/// `2026-12-02T08:28:12.520804Z  INFO luka::access: request request_id=… remote=… …`, as `tracing`'s default
/// formatter lays out an event without colours.
fn format_human(text: &mut String, line: &AccessLine<'_>) {
    timestamp(text);
    text.push_str("  INFO luka::access: request request_id=");
    text.push_str(line.request_id);
    text.push_str(" remote=");
    push_address(text, line.remote);
    text.push_str(" method=");
    text.push_str(&super::one_line(line.method, MAX_METHOD));
    text.push_str(" path=");
    text.push_str(&super::one_line(line.path, MAX_PATH));
    text.push_str(" status=");
    push_int(text, line.status);
    text.push_str(" duration_ms=");
    push_millis(text, line.duration);
    text.push_str(" function=");
    text.push_str(line.function);
    text.push_str(" records=");
    push_int(text, line.records);
    text.push('\n');
}

/// One JSON object, as `tracing`'s JSON formatter writes an event: `timestamp`, `level`, `fields`, `target`.
fn format_json(text: &mut String, line: &AccessLine<'_>) {
    text.push_str(r#"{"timestamp":""#);
    timestamp(text);
    text.push_str(r#"","level":"INFO","fields":{"message":"request","request_id":"#);
    json_string(text, line.request_id);
    text.push_str(r#","remote":""#);
    push_address(text, line.remote);
    text.push_str(r#"","method":"#);
    json_string(text, &super::one_line(line.method, MAX_METHOD));
    text.push_str(r#","path":"#);
    json_string(text, &super::one_line(line.path, MAX_PATH));
    text.push_str(r#","status":"#);
    push_int(text, line.status);
    text.push_str(r#","duration_ms":"#);
    push_millis(text, line.duration);
    text.push_str(r#","function":"#);
    json_string(text, line.function);
    text.push_str(r#","records":"#);
    push_int(text, line.records);
    text.push_str("},\"target\":\"luka::access\"}\n");
}

// The line is put together piece by piece: `core::fmt` (padding, float formatting, a call per argument) was most of
// the cost of formatting it.

fn push_int(text: &mut String, n: impl itoa::Integer) {
    text.push_str(itoa::Buffer::new().format(n));
}

/// `n` as exactly `width` digits, zero-padded (`n` has no more than `width` digits).
fn push_padded(text: &mut String, n: u32, width: usize) {
    let mut buffer = itoa::Buffer::new();
    let digits = buffer.format(n);
    for _ in digits.len()..width {
        text.push('0');
    }
    text.push_str(digits);
}

/// Milliseconds with three decimals (to the microsecond, truncated), e.g. `1.500`.
fn push_millis(text: &mut String, duration: Duration) {
    let micros = duration.as_micros();
    push_int(text, micros / 1000);
    text.push('.');
    push_padded(text, (micros % 1000) as u32, 3);
}

/// `127.0.0.1:5000`, `[::1]:5000`: as `SocketAddr` displays itself. The host part is formatted once per thread for
/// as long as requests come from the same host (a proxy or load balancer in front, or a few clients): formatting it
/// was a quarter of the access line's cost (`bench/README.md` point 17).
fn push_address(text: &mut String, address: SocketAddr) {
    thread_local! {
        static HOST: RefCell<(Option<(IpAddr, u32)>, String)> = const { RefCell::new((None, String::new())) };
    }
    let key = match address {
        SocketAddr::V4(v4) => (IpAddr::V4(*v4.ip()), 0),
        SocketAddr::V6(v6) => (IpAddr::V6(*v6.ip()), v6.scope_id()),
    };
    HOST.with_borrow_mut(|(cached, host)| {
        if *cached != Some(key) {
            host.clear();
            push_host(host, address);
            *cached = Some(key);
        }
        text.push_str(host);
    });
    text.push(':');
    push_int(text, address.port());
}

fn push_host(text: &mut String, address: SocketAddr) {
    match address {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    text.push('.');
                }
                push_int(text, octet);
            }
        }
        SocketAddr::V6(v6) if v6.scope_id() == 0 => {
            let _ = write!(text, "[{}]", v6.ip());
        }
        SocketAddr::V6(v6) => {
            let _ = write!(text, "[{}%{}]", v6.ip(), v6.scope_id());
        }
    }
}

/// `value` as a JSON string, quotes and escapes included.
fn json_string(text: &mut String, value: &str) {
    if value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f) {
        text.push('"');
        text.push_str(value);
        text.push('"');
    } else {
        text.push_str(&serde_json::to_string(value).expect("a str always serialises"));
    }
}

/// The current UTC time as RFC 3339 with microseconds, e.g. `2026-12-02T08:28:12.520804Z`. The part up to the second
/// is formatted once per second per thread.
pub(super) fn timestamp(text: &mut String) {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    SECOND.with_borrow_mut(|(second, prefix)| {
        if *second != now.as_secs() {
            *second = now.as_secs();
            prefix.clear();
            let at = i64::try_from(now.as_secs())
                .ok()
                .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            let _ = write!(
                prefix,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.",
                at.year(),
                u8::from(at.month()),
                at.day(),
                at.hour(),
                at.minute(),
                at.second()
            );
        }
        text.push_str(prefix);
    });
    push_padded(text, now.subsec_micros(), 6);
    text.push('Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> AccessLine<'static> {
        AccessLine {
            request_id: "abc",
            remote: SocketAddr::from(([127, 0, 0, 1], 5000)),
            method: "POST",
            path: "/orders/\"x\"",
            status: 201,
            duration: Duration::from_micros(1500),
            function: "orders.lua",
            records: 2,
        }
    }

    /// `2026-12-02T08:28:12.520804Z`, today.
    fn assert_rfc3339_micros(stamp: &str) {
        let shape: String = stamp
            .chars()
            .map(|c| if c.is_ascii_digit() { 'd' } else { c })
            .collect();
        assert_eq!(shape, "dddd-dd-ddTdd:dd:dd.ddddddZ", "{stamp}");
        let year = time::OffsetDateTime::now_utc().year().to_string();
        assert!(stamp.starts_with(&year), "{stamp}");
    }

    #[test]
    fn the_json_line_is_what_tracing_would_write() {
        let mut text = String::new();
        format_json(&mut text, &line());
        assert!(text.ends_with('\n'));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["target"], "luka::access");
        assert_eq!(value["level"], "INFO");
        let fields = &value["fields"];
        assert_eq!(fields["message"], "request");
        assert_eq!(fields["request_id"], "abc");
        assert_eq!(fields["remote"], "127.0.0.1:5000");
        assert_eq!(fields["path"], "/orders/\"x\"");
        assert_eq!(fields["status"], 201);
        assert_eq!(fields["duration_ms"], 1.5);
        assert_eq!(fields["function"], "orders.lua");
        assert_eq!(fields["records"], 2);
        assert_rfc3339_micros(value["timestamp"].as_str().unwrap());
    }

    #[test]
    fn numbers_and_addresses_read_as_core_fmt_writes_them() {
        for (micros, text) in [(0, "0.000"), (7, "0.007"), (1500, "1.500"), (123_456_789, "123456.789")] {
            let mut out = String::new();
            push_millis(&mut out, Duration::from_micros(micros));
            assert_eq!(out, text);
        }
        let scoped = SocketAddr::V6(std::net::SocketAddrV6::new("fe80::1".parse().unwrap(), 80, 0, 2));
        // Twice each, in turns: the host formatted for the one before is never taken for another.
        let addresses = [
            "10.0.255.1:80",
            "10.0.255.1:81",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "192.168.1.20:10000",
            "[::1]:5000",
            "[2001:db8::7]:65535",
            "[fe80::1]:80",
        ]
        .map(|a| a.parse::<SocketAddr>().unwrap());
        for address in addresses.iter().chain(&[scoped]).chain(&addresses).chain(&[scoped]) {
            let mut out = String::new();
            push_address(&mut out, *address);
            assert_eq!(out, address.to_string());
        }
        let (mut first, mut second) = (String::new(), String::new());
        timestamp(&mut first);
        timestamp(&mut second);
        assert_rfc3339_micros(&first);
        assert!(first <= second, "{first} then {second}");
    }

    /// A path's control characters (C1 ones too, which httparse lets through as UTF-8) are written as escapes, and a
    /// long path and a long method are cut, in both formats.
    #[test]
    fn a_path_cannot_drive_the_terminal_or_fill_the_log() {
        let long = format!("/{}", "a".repeat(10_000));
        let method = "A".repeat(100_000);
        for path in ["/a\u{9b}31m\u{1b}[2J", long.as_str()] {
            let line = AccessLine {
                path,
                method: &method,
                ..line()
            };
            let (mut human, mut json) = (String::new(), String::new());
            format_human(&mut human, &line);
            format_json(&mut json, &line);
            for text in [&human, &json] {
                assert!(!text.trim_end().chars().any(char::is_control), "{text}");
                assert!(text.len() < MAX_PATH + 512, "{}", text.len());
            }
        }
    }

    #[test]
    fn the_human_line_has_every_field() {
        let mut text = String::new();
        format_human(&mut text, &line());
        let (stamp, rest) = text.split_once(' ').unwrap();
        assert_rfc3339_micros(stamp);
        assert_eq!(
            rest,
            " INFO luka::access: request request_id=abc remote=127.0.0.1:5000 method=POST path=/orders/\"x\" \
             status=201 duration_ms=1.500 function=orders.lua records=2\n"
        );
    }
}
