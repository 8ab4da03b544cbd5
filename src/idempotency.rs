//! `Idempotency-Key` on REST produce requests and on Lua routes that opt in: a (function, user, key, request
//! fingerprint) in, whether to run the request, replay the first answer, or refuse.
//!
//! A repeat of a key with the same request (method, path, query, body; for a Lua route also its headers, so a
//! signature or token the handler checks is part of "the same") and user answers the first response again without
//! writing; the same key with a different request is refused (422); a repeat while the first is still running is
//! refused (409). Only successful (2xx) answers are remembered: after a failure the key may be used again. Keys
//! are kept apart per function (REST produce is function "") and per user.
//! Memory is bounded by `window` (entries expire), `capacity` (the oldest entry goes first) and [`MAX_BYTES`] of
//! remembered answers. The memory is this process's: behind a load balancer a repeat that reaches another luka
//! instance is written again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Longest key accepted; a longer one is a client error.
pub const MAX_KEY_LEN: usize = 255;

/// Bytes of remembered answers kept at once; past it the oldest entries go first.
pub const MAX_BYTES: usize = 64 * 1024 * 1024;

/// Request headers left out of a Lua route's fingerprint: they change between a request and its retry without
/// changing what is asked.
const UNFINGERPRINTED: [&str; 10] = [
    "date",
    "x-request-id",
    "traceparent",
    "tracestate",
    "user-agent",
    "connection",
    "keep-alive",
    "accept-encoding",
    "content-length",
    "transfer-encoding",
];

/// (function, user, key).
type Slot = (String, String, String);

/// A response as remembered for replay: status, headers and body (a handler's answer has the same shape).
pub type Answer = crate::lua::HandlerResponse;

/// The remembered keys, their insertion order for expiry and eviction, and the bytes their answers hold.
#[derive(Debug, Default)]
struct Entries {
    map: HashMap<Slot, Entry>,
    order: VecDeque<(Slot, Instant)>,
    bytes: usize,
}

impl Entries {
    fn remove(&mut self, slot: &Slot) {
        if let Some(entry) = self.map.remove(slot) {
            self.bytes -= entry.size;
        }
    }
}

#[derive(Debug, Clone)]
enum State {
    Running,
    Done(Arc<Answer>),
}

#[derive(Debug)]
struct Entry {
    fingerprint: [u8; 32],
    state: State,
    at: Instant,
    /// Bytes of the remembered answer (0 while running).
    size: usize,
}

/// What to do with a request that carries an idempotency key.
#[derive(Debug)]
pub enum Begin {
    /// Run it; finish with [`Idempotency::complete`] (or the claim is dropped with the guard on failure).
    Run(Claim),
    /// Answer this again (the first request's successful answer).
    Replay(Arc<Answer>),
    /// The first request with this key is still running.
    InProgress,
    /// The key was used for a different request.
    Mismatch,
}

#[derive(Debug)]
pub struct Idempotency {
    window: Duration,
    capacity: usize,
    max_bytes: usize,
    entries: Mutex<Entries>,
}

/// A running request's hold on its key; dropping it without [`Claim::complete`] frees the key.
#[derive(Debug)]
pub struct Claim {
    store: Arc<Idempotency>,
    slot: Option<Slot>,
}

impl Idempotency {
    pub fn new(window: Duration, capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            window,
            capacity,
            max_bytes: MAX_BYTES,
            entries: Mutex::default(),
        })
    }

    /// Looks `key` up for `function` (`""` for REST produce), `user` (`""` when none) and a request of this
    /// `fingerprint` (see [`fingerprint`]).
    pub fn begin(self: &Arc<Self>, function: &str, user: &str, key: &str, fingerprint: [u8; 32]) -> Begin {
        let slot = (function.to_owned(), user.to_owned(), key.to_owned());
        let mut entries = self.entries.lock().expect("idempotency lock poisoned");
        let now = Instant::now();
        // The insertion order also holds keys freed since (by failures); dropped when they outnumber the live ones.
        if entries.order.len() > 2 * self.capacity {
            let Entries { map, order, .. } = &mut *entries;
            order.retain(|(slot, at)| map.get(slot).is_some_and(|e| e.at == *at));
        }
        // Expired entries, and the oldest past the capacity or the byte budget, leave from the front.
        while let Some((_, at)) = entries.order.front() {
            let expired = now.duration_since(*at) >= self.window;
            if !expired && entries.map.len() < self.capacity && entries.bytes <= self.max_bytes {
                break;
            }
            let (oldest, at) = entries.order.pop_front().expect("a front was just seen");
            if entries.map.get(&oldest).is_some_and(|e| e.at == at) {
                entries.remove(&oldest);
            }
        }
        match entries.map.get(&slot) {
            Some(entry) if entry.fingerprint != fingerprint => Begin::Mismatch,
            Some(Entry {
                state: State::Running, ..
            }) => Begin::InProgress,
            Some(Entry {
                state: State::Done(body),
                ..
            }) => Begin::Replay(Arc::clone(body)),
            None => {
                entries.map.insert(
                    slot.clone(),
                    Entry {
                        fingerprint,
                        state: State::Running,
                        at: now,
                        size: 0,
                    },
                );
                entries.order.push_back((slot.clone(), now));
                Begin::Run(Claim {
                    store: Arc::clone(self),
                    slot: Some(slot),
                })
            }
        }
    }
}

impl Claim {
    /// Remembers `answer` to replay if it is a success; otherwise frees the key, as a failure does.
    pub fn complete(mut self, answer: &Answer) {
        if !(200..300).contains(&answer.status) {
            return; // Dropping the claim frees the key.
        }
        let Some(slot) = self.slot.take() else { return };
        let size = answer.body.len() + answer.headers.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>();
        let mut entries = self.store.entries.lock().expect("idempotency lock poisoned");
        if let Some(entry) = entries.map.get_mut(&slot) {
            entry.state = State::Done(Arc::new(answer.clone()));
            entry.size = size;
            entries.bytes += size;
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let mut entries = self.store.entries.lock().expect("idempotency lock poisoned");
            entries.remove(&slot);
        }
    }
}

/// What makes two requests "the same" for a key: method, path with query, and body.
/// With `headers` (a Lua route's), also every request header but [`UNFINGERPRINTED`], in name order.
pub fn fingerprint(method: &str, path_and_query: &str, headers: Option<&hyper::HeaderMap>, body: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in [method.as_bytes(), b"\n", path_and_query.as_bytes(), b"\n"] {
        hash.update(part);
    }
    if let Some(headers) = headers {
        let mut named: Vec<(&str, &[u8])> = headers
            .iter()
            .filter(|(name, _)| !UNFINGERPRINTED.contains(&name.as_str()))
            .map(|(name, value)| (name.as_str(), value.as_bytes()))
            .collect();
        named.sort_unstable();
        for (name, value) in named {
            for part in [name.as_bytes(), b": ", value, b"\n"] {
                hash.update(part);
            }
        }
    }
    hash.update(b"\n");
    hash.update(body);
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn ok(body: &'static [u8]) -> Answer {
        Answer {
            status: 200,
            headers: Vec::new(),
            body: Bytes::from_static(body),
        }
    }

    #[test]
    fn replays_refuses_and_forgets() {
        let store = Idempotency::new(Duration::from_secs(60), 2);
        let a = fingerprint("POST", "/produce/t", None, b"a");
        let Begin::Run(claim) = store.begin("", "u", "k", a) else {
            panic!("first use runs")
        };
        assert!(matches!(store.begin("", "u", "k", a), Begin::InProgress));
        assert!(matches!(
            store.begin("", "u", "k", fingerprint("POST", "/produce/t", None, b"b")),
            Begin::Mismatch
        ));
        assert!(
            matches!(store.begin("", "other", "k", a), Begin::Run(_)),
            "keys are per user"
        );
        claim.complete(&ok(b"[1]"));
        assert!(matches!(store.begin("", "u", "k", a), Begin::Replay(answer) if &answer.body[..] == b"[1]"));

        // A failed (dropped) claim frees its key.
        let Begin::Run(claim) = store.begin("", "u", "k2", a) else {
            panic!()
        };
        drop(claim);
        assert!(matches!(store.begin("", "u", "k2", a), Begin::Run(_)));

        // So does an unsuccessful answer; functions keep their keys apart.
        let Begin::Run(claim) = store.begin("f.lua", "u", "k2", a) else {
            panic!()
        };
        claim.complete(&Answer {
            status: 400,
            ..ok(b"no")
        });
        assert!(matches!(store.begin("f.lua", "u", "k2", a), Begin::Run(_)));
    }

    #[test]
    fn a_lua_routes_fingerprint_covers_its_headers_but_not_per_attempt_ones() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = hyper::HeaderMap::new();
            for (name, value) in pairs {
                map.append(*name, hyper::header::HeaderValue::from_static(value));
            }
            map
        };
        let signed = headers(&[("x-signature", "good"), ("x-request-id", "1")]);
        let print = |h: &hyper::HeaderMap| fingerprint("POST", "/hook", Some(h), b"{}");
        assert_eq!(
            print(&signed),
            print(&headers(&[("x-request-id", "2"), ("x-signature", "good")]))
        );
        assert_ne!(
            print(&signed),
            print(&headers(&[("x-signature", "forged"), ("x-request-id", "1")]))
        );
        assert_ne!(print(&signed), fingerprint("POST", "/hook", None, b"{}"));
    }

    #[test]
    fn memory_is_bounded_by_capacity_and_window() {
        let store = Idempotency::new(Duration::from_secs(60), 2);
        let f = fingerprint("POST", "/", None, b"");
        for key in ["1", "2", "3"] {
            let Begin::Run(claim) = store.begin("", "u", key, f) else {
                panic!()
            };
            claim.complete(&ok(b"ok"));
        }
        assert!(store.entries.lock().unwrap().map.len() <= 2);
        assert!(
            matches!(store.begin("", "u", "1", f), Begin::Run(_)),
            "the oldest went first"
        );

        // Keys freed by failures leave the insertion order too: it stays within the capacity.
        for key in 0..10 {
            let Begin::Run(claim) = store.begin("", "u", &format!("failed-{key}"), f) else {
                panic!()
            };
            drop(claim);
        }
        assert!(store.entries.lock().unwrap().order.len() <= 2 * 2 + 1);

        // Remembered answers are bounded in bytes: past the budget the oldest go.
        let small = Arc::new(Idempotency {
            max_bytes: 10,
            ..Arc::into_inner(Idempotency::new(Duration::from_secs(60), 100)).unwrap()
        });
        for key in ["a", "b"] {
            let Begin::Run(claim) = small.begin("", "u", key, f) else {
                panic!()
            };
            claim.complete(&ok(b"eight b."));
        }
        assert!(
            matches!(small.begin("", "u", "a", f), Begin::Run(_)),
            "evicted for bytes"
        );
        assert!(matches!(small.begin("", "u", "b", f), Begin::Replay(_)));

        let short = Idempotency::new(Duration::ZERO, 10);
        let Begin::Run(claim) = short.begin("", "u", "k", f) else {
            panic!()
        };
        claim.complete(&ok(b"ok"));
        assert!(matches!(short.begin("", "u", "k", f), Begin::Run(_)), "expired");
    }
}
