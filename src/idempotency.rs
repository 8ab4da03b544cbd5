//! `Idempotency-Key` on REST produce requests and on Lua routes that opt in: a (function, user, key, request
//! fingerprint) in, whether to run the request, replay the first answer, or refuse.
//!
//! A repeat of a key with the same request (method, path, query, body) and user answers the first response again
//! without writing; the same key with a different request is refused (422); a repeat while the first is still
//! running is refused (409). Only successful (2xx) answers are remembered: after a failure the key may be used
//! again. Keys are kept apart per function (REST produce is function "") and per user.
//! Memory is bounded by `window` (entries expire) and `capacity` (the oldest entry goes first). The memory is this
//! process's: behind a load balancer a repeat that reaches another luka instance is written again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Longest key accepted; a longer one is a client error.
pub const MAX_KEY_LEN: usize = 255;

/// (function, user, key).
type Slot = (String, String, String);

/// A response as remembered for replay: status, headers and body (a handler's answer has the same shape).
pub type Answer = crate::lua::HandlerResponse;

/// The remembered keys, and their insertion order for expiry and eviction.
type Entries = (HashMap<Slot, Entry>, VecDeque<(Slot, Instant)>);

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
            entries: Mutex::default(),
        })
    }

    /// Looks `key` up for `function` (`""` for REST produce), `user` (`""` when none) and a request of this
    /// `fingerprint` (see [`fingerprint`]).
    pub fn begin(self: &Arc<Self>, function: &str, user: &str, key: &str, fingerprint: [u8; 32]) -> Begin {
        let slot = (function.to_owned(), user.to_owned(), key.to_owned());
        let mut guard = self.entries.lock().expect("idempotency lock poisoned");
        let (entries, order) = &mut *guard;
        let now = Instant::now();
        // Expired entries leave from the front of the insertion order.
        while let Some((oldest, at)) = order.front() {
            if now.duration_since(*at) < self.window && entries.len() < self.capacity {
                break;
            }
            if entries.get(oldest).is_some_and(|e| e.at == *at) {
                entries.remove(oldest);
            }
            order.pop_front();
        }
        match entries.get(&slot) {
            Some(entry) if entry.fingerprint != fingerprint => Begin::Mismatch,
            Some(Entry {
                state: State::Running, ..
            }) => Begin::InProgress,
            Some(Entry {
                state: State::Done(body),
                ..
            }) => Begin::Replay(Arc::clone(body)),
            None => {
                entries.insert(
                    slot.clone(),
                    Entry {
                        fingerprint,
                        state: State::Running,
                        at: now,
                    },
                );
                order.push_back((slot.clone(), now));
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
        let mut guard = self.store.entries.lock().expect("idempotency lock poisoned");
        if let Some(entry) = guard.0.get_mut(&slot) {
            entry.state = State::Done(Arc::new(answer.clone()));
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let mut guard = self.store.entries.lock().expect("idempotency lock poisoned");
            guard.0.remove(&slot);
        }
    }
}

/// What makes two requests "the same" for a key: method, path with query, and body.
pub fn fingerprint(method: &str, path_and_query: &str, body: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in [method.as_bytes(), b"\n", path_and_query.as_bytes(), b"\n", body] {
        hash.update(part);
    }
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
        let a = fingerprint("POST", "/produce/t", b"a");
        let Begin::Run(claim) = store.begin("", "u", "k", a) else {
            panic!("first use runs")
        };
        assert!(matches!(store.begin("", "u", "k", a), Begin::InProgress));
        assert!(matches!(
            store.begin("", "u", "k", fingerprint("POST", "/produce/t", b"b")),
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
    fn memory_is_bounded_by_capacity_and_window() {
        let store = Idempotency::new(Duration::from_secs(60), 2);
        let f = fingerprint("POST", "/", b"");
        for key in ["1", "2", "3"] {
            let Begin::Run(claim) = store.begin("", "u", key, f) else {
                panic!()
            };
            claim.complete(&ok(b"ok"));
        }
        assert!(store.entries.lock().unwrap().0.len() <= 2);
        assert!(
            matches!(store.begin("", "u", "1", f), Begin::Run(_)),
            "the oldest went first"
        );

        let short = Idempotency::new(Duration::ZERO, 10);
        let Begin::Run(claim) = short.begin("", "u", "k", f) else {
            panic!()
        };
        claim.complete(&ok(b"ok"));
        assert!(matches!(short.begin("", "u", "k", f), Begin::Run(_)), "expired");
    }
}
