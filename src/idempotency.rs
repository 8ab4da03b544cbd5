//! `Idempotency-Key` on REST produce requests and on Lua routes that opt in: a (function, user, key, request
//! fingerprint) in, whether to run the request, replay the first answer, or refuse.
//!
//! A repeat of a key with the same request (method, path, query, body; for a Lua route also its headers, so a
//! signature or token the handler checks is part of "the same") and user answers the first response again without
//! writing; the same key with a different request is refused (422); a repeat while the first is still running is
//! refused (409). Successful (2xx) answers are remembered, and so are failures after which records of the request may
//! be in Kafka (some written, or in doubt: running it again would write them again); after a failure that wrote
//! nothing the key may be used again. Keys are kept apart per function (REST produce is function "") and per user.
//! Memory is bounded per user (one user's many keys never push out another's): by `window` (entries expire),
//! `capacity` keys per user (the oldest finished entry goes first; a running one is never evicted), and
//! [`MAX_BYTES`] of remembered answers in all, past which the user whose answers take the most loses its oldest (a
//! user within its fair share never does). A key's answer is never pushed out by its own repeat. A claim only ever
//! touches the entry it made.
//! The memory is this process's: behind a load balancer a repeat that reaches another luka instance is written again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Longest key accepted; a longer one is a client error.
pub const MAX_KEY_LEN: usize = 255;

/// Bytes of remembered answers kept at once, shared out between the users; past a user's share its oldest entries
/// go first.
pub const MAX_BYTES: usize = 64 * 1024 * 1024;

/// Request headers left out of a Lua route's fingerprint: they change between a request and its retry without
/// changing what is asked (the connection's own, tracing, and what proxies and load balancers add on the way; a
/// retry through one would otherwise be refused as a different request, 422, and never learn its outcome).
const UNFINGERPRINTED: [&str; 26] = [
    "date",
    "x-request-id",
    "traceparent",
    "tracestate",
    "baggage",
    "user-agent",
    "connection",
    "keep-alive",
    "accept-encoding",
    "content-length",
    "transfer-encoding",
    "via",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "x-amzn-trace-id",
    "x-cloud-trace-context",
    "cf-ray",
    "sentry-trace",
    "b3",
    "uber-trace-id",
    "x-amz-cf-id",
    "x-azure-ref",
    "x-request-start",
];

/// Prefixes of more such headers (Envoy's per-attempt headers, Zipkin's B3 headers, Datadog's trace and span ids).
const UNFINGERPRINTED_PREFIXES: [&str; 3] = ["x-envoy-", "x-b3-", "x-datadog-"];

/// Whether a request header is part of a Lua route's fingerprint.
fn fingerprinted(name: &str) -> bool {
    !UNFINGERPRINTED.contains(&name) && !UNFINGERPRINTED_PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

/// (function, key), within a user's share.
type Slot = (String, String);

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
    /// Forgets finished entries from the oldest on while `go_on(when it was made, bytes held now, entries kept but
    /// for the running ones passed over)` says so, in one pass: running ones are passed over and kept (they go back
    /// to the front), records of keys freed since are dropped. Gives the bytes freed.
    fn forget_oldest(&mut self, mut go_on: impl FnMut(Instant, usize, usize) -> bool) -> usize {
        let Entries { map, order, bytes } = self;
        let mut running = Vec::new();
        let mut freed = 0;
        while let Some((_, at)) = order.front() {
            if !go_on(*at, *bytes, map.len() - running.len()) {
                break;
            }
            let (slot, at) = order.pop_front().expect("a front was just seen");
            match map.get(&slot) {
                Some(entry) if entry.at == at && matches!(entry.state, State::Running) => running.push((slot, at)),
                Some(entry) if entry.at == at => {
                    freed += entry.size;
                    *bytes -= entry.size;
                    map.remove(&slot);
                }
                _ => {}
            }
        }
        for held in running.into_iter().rev() {
            order.push_front(held);
        }
        freed
    }

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
    /// Keys per user.
    capacity: usize,
    /// Bytes of remembered answers, all users together ([`MAX_BYTES`]).
    max_bytes: usize,
    /// Each user's keys (`""`: requests without a user).
    users: Mutex<HashMap<String, Entries>>,
}

/// A running request's hold on its key; dropping it without [`Claim::complete`] frees the key.
#[derive(Debug)]
pub struct Claim {
    store: Arc<Idempotency>,
    user: String,
    slot: Option<Slot>,
    /// When its entry was made: an entry of the same slot made later (after this one expired) is not its own.
    at: Instant,
}

impl Idempotency {
    /// A store keeping `capacity` keys per user for `window`, and [`MAX_BYTES`] of answers in all.
    pub fn new(window: Duration, capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            window,
            capacity,
            max_bytes: MAX_BYTES,
            users: Mutex::default(),
        })
    }

    /// Looks `key` up for `function` (`""` for REST produce), `user` (`""` when none) and a request of this
    /// `fingerprint` (see [`fingerprint`]).
    pub fn begin(self: &Arc<Self>, function: &str, user: &str, key: &str, fingerprint: [u8; 32]) -> Begin {
        let slot = (function.to_owned(), key.to_owned());
        let mut users = self.users.lock().expect("idempotency lock poisoned");
        let now = Instant::now();
        // A key still in its window is answered before anything is pushed out: a remembered answer is never pushed
        // out by its own repeat.
        if let Some(entry) = users.get(user).and_then(|entries| entries.map.get(&slot))
            && now.duration_since(entry.at) < self.window
        {
            return match &entry.state {
                _ if entry.fingerprint != fingerprint => Begin::Mismatch,
                State::Running => Begin::InProgress,
                State::Done(answer) => Begin::Replay(Arc::clone(answer)),
            };
        }
        shed(&mut users, self.max_bytes, now, self.window);
        let entries = users.entry(user.to_owned()).or_default();
        // The insertion order also holds keys freed since (by failures); dropped when they outnumber the live ones.
        if entries.order.len() > 2 * self.capacity {
            let Entries { map, order, .. } = &mut *entries;
            order.retain(|(slot, at)| map.get(slot).is_some_and(|e| e.at == *at));
        }
        // Expired entries, and the oldest past the capacity, leave from the front; running ones stay (their requests
        // still hold them).
        let (window, capacity) = (self.window, self.capacity);
        entries.forget_oldest(|at, _, kept| now.duration_since(at) >= window || kept >= capacity);
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
                    user: user.to_owned(),
                    slot: Some(slot),
                    at: now,
                })
            }
        }
    }
}

/// While the answers of all users together take more than `max_bytes`: first every answer past its `window` goes
/// (a user gone quiet keeps its old ones until its next key otherwise), then the oldest finished entries of the
/// user whose answers take the most, down to the next largest, and so on. A user within its fair share
/// (`max_bytes` over the number of users) is never the one to lose an answer, whatever another sends.
fn shed(users: &mut HashMap<String, Entries>, max_bytes: usize, now: Instant, window: Duration) {
    let mut total: usize = users.values().map(|entries| entries.bytes).sum();
    if total <= max_bytes {
        return;
    }
    for entries in users.values_mut() {
        total -= entries.forget_oldest(|at, _, _| now.duration_since(at) >= window);
    }
    while total > max_bytes {
        let mut sizes: Vec<usize> = users.values().map(|entries| entries.bytes).collect();
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        let next_largest = sizes.get(1).copied().unwrap_or(0);
        let Some(entries) = users.values_mut().max_by_key(|entries| entries.bytes) else {
            return;
        };
        let (over, start) = (total - max_bytes, entries.bytes);
        let freed = entries.forget_oldest(|_, bytes, _| start - bytes < over && bytes >= next_largest);
        if freed == 0 {
            return;
        }
        total -= freed;
    }
}

impl Claim {
    /// Remembers `answer` to replay if it is a success or the request `wrote` (records of it may be in Kafka);
    /// otherwise frees the key, as a failure does.
    pub fn complete(mut self, answer: &Answer, wrote: bool) {
        if !wrote && !(200..300).contains(&answer.status) {
            return; // Dropping the claim frees the key.
        }
        let Some(slot) = self.slot.take() else { return };
        let size = answer.body.len()
            + answer
                .headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len())
                .sum::<usize>();
        let mut users = self.store.users.lock().expect("idempotency lock poisoned");
        let Some(entries) = users.get_mut(&self.user) else {
            return;
        };
        if let Some(entry) = entries.map.get_mut(&slot).filter(|e| e.at == self.at) {
            // The window counts from the answer: counted from the request's start, a request that ran longer than
            // the window (a produce sent again until its delivery timeout) left its answer expired at once, and a
            // retry ran it again. The record of its start in `order` is now stale and is passed over.
            let now = Instant::now();
            entry.state = State::Done(Arc::new(answer.clone()));
            entry.size = size;
            entry.at = now;
            entries.bytes += size;
            entries.order.push_back((slot, now));
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else { return };
        let mut users = self.store.users.lock().expect("idempotency lock poisoned");
        let Some(entries) = users.get_mut(&self.user) else {
            return;
        };
        // Only its own entry: one made for the same key after this one expired belongs to another request.
        if entries.map.get(&slot).is_some_and(|e| e.at == self.at) {
            entries.remove(&slot);
        }
        if entries.map.is_empty() {
            users.remove(&self.user);
        }
    }
}

/// What makes two requests "the same" for a key: method, path with query, and body.
/// With `headers` (a Lua route's), also every request header but [`UNFINGERPRINTED`] and those with an
/// [`UNFINGERPRINTED_PREFIXES`] prefix, in name order.
pub fn fingerprint(method: &str, path_and_query: &str, headers: Option<&hyper::HeaderMap>, body: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in [method.as_bytes(), b"\n", path_and_query.as_bytes(), b"\n"] {
        hash.update(part);
    }
    if let Some(headers) = headers {
        let mut named: Vec<(&str, &[u8])> = headers
            .iter()
            .filter(|(name, _)| fingerprinted(name.as_str()))
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
            headers: Default::default(),
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
        claim.complete(&ok(b"[1]"), false);
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
        claim.complete(
            &Answer {
                status: 400,
                ..ok(b"no")
            },
            false,
        );
        assert!(matches!(store.begin("f.lua", "u", "k2", a), Begin::Run(_)));

        // A failure after which records may be in Kafka keeps its key, and is its repeats' answer.
        let Begin::Run(claim) = store.begin("", "u", "k3", a) else {
            panic!()
        };
        claim.complete(
            &Answer {
                status: 504,
                ..ok(b"in doubt")
            },
            true,
        );
        assert!(matches!(store.begin("", "u", "k3", a), Begin::Replay(answer) if answer.status == 504));
    }

    /// An answer is kept for the window from when it was made, not from when its request began: a request that ran
    /// longer than the window is replayed to a retry that follows its answer, not run again.
    #[test]
    fn the_window_counts_from_the_answer() {
        let store = Idempotency::new(Duration::from_millis(200), 10);
        let f = fingerprint("POST", "/produce/t", None, b"a");
        let Begin::Run(claim) = store.begin("", "u", "k", f) else {
            panic!("first use runs")
        };
        std::thread::sleep(Duration::from_millis(300));
        claim.complete(&ok(b"[1]"), true);
        assert!(
            matches!(store.begin("", "u", "k", f), Begin::Replay(_)),
            "replayed, not run again"
        );
        // And it expires a window after the answer.
        std::thread::sleep(Duration::from_millis(300));
        assert!(matches!(store.begin("", "u", "k", f), Begin::Run(_)));
    }

    /// Past the byte budget, the user whose answers take the most loses its oldest: another user's answers, within
    /// their share, stay.
    #[test]
    fn past_the_byte_budget_the_largest_user_loses_its_oldest() {
        let store = Arc::new(Idempotency {
            max_bytes: 40,
            ..Arc::into_inner(Idempotency::new(Duration::from_secs(60), 100)).unwrap()
        });
        let f = fingerprint("POST", "/", None, b"");
        let remember = |user: &str, key: &str, body: &'static [u8]| {
            let Begin::Run(claim) = store.begin("", user, key, f) else {
                panic!("{user} {key} runs")
            };
            claim.complete(&ok(body), false);
        };
        remember("small", "s", b"five.");
        for key in 0..10 {
            remember("large", &key.to_string(), b"ten bytes.");
        }
        assert!(
            matches!(store.begin("", "small", "s", f), Begin::Replay(_)),
            "the small user's answer stays"
        );
        assert!(
            matches!(store.begin("", "large", "9", f), Begin::Replay(_)),
            "the newest stays"
        );
        assert!(
            matches!(store.begin("", "large", "0", f), Begin::Run(_)),
            "the oldest went"
        );
        let users = store.users.lock().unwrap();
        assert!(users.values().map(|e| e.bytes).sum::<usize>() <= 40 + 10);
    }

    /// Past the byte budget, answers past their window go first, whoever they are of.
    #[test]
    fn past_the_byte_budget_expired_answers_go_first() {
        let store = Arc::new(Idempotency {
            max_bytes: 25,
            ..Arc::into_inner(Idempotency::new(Duration::from_millis(200), 100)).unwrap()
        });
        let f = fingerprint("POST", "/", None, b"");
        let remember = |user: &str, key: &str| {
            let Begin::Run(claim) = store.begin("", user, key, f) else {
                panic!("{user} {key} runs")
            };
            claim.complete(&ok(b"ten bytes."), false);
        };
        remember("quiet", "q");
        std::thread::sleep(Duration::from_millis(250));
        remember("busy", "1");
        remember("busy", "2");
        remember("busy", "3");
        assert!(
            matches!(store.begin("", "busy", "1", f), Begin::Replay(_)),
            "the expired answer went instead"
        );
        assert!(store.users.lock().unwrap()["quiet"].map.is_empty());
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
        // What a load balancer or proxy adds anew on each attempt is no part of it.
        let through_a_proxy = headers(&[
            ("x-signature", "good"),
            ("x-forwarded-for", "10.0.0.7"),
            ("x-amzn-trace-id", "Root=1-67891233-abcdef012345678912345678"),
            ("x-envoy-attempt-count", "2"),
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            (
                "x-amz-cf-id",
                "Hi8XVJgNwCvGNvrJdYfVRnRqw6ugBTbw1aZmVm4qj5_2NlDCQQeLCg==",
            ),
            (
                "x-azure-ref",
                "0zxV+XAAAAABKMMOjBv2NT4TY6SQVjC0zV1NURURHRTA2MTkANjVlMjY1",
            ),
            ("x-request-start", "t=1733500000123"),
            ("x-datadog-parent-id", "5678"),
            ("uber-trace-id", "5af7183fb1d4cf5f:6fb5b0c7c55c17a4:0:1"),
        ]);
        assert_eq!(print(&signed), print(&through_a_proxy));
    }

    #[test]
    fn memory_is_bounded_by_capacity_and_window() {
        let store = Idempotency::new(Duration::from_secs(60), 2);
        let f = fingerprint("POST", "/", None, b"");
        for key in ["1", "2", "3"] {
            let Begin::Run(claim) = store.begin("", "u", key, f) else {
                panic!()
            };
            claim.complete(&ok(b"ok"), false);
        }
        assert!(store.users.lock().unwrap()["u"].map.len() <= 2);
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
        assert!(store.users.lock().unwrap()["u"].order.len() <= 2 * 2 + 1);

        // Remembered answers are bounded in bytes: past the budget the oldest go.
        let small = Arc::new(Idempotency {
            max_bytes: 10,
            ..Arc::into_inner(Idempotency::new(Duration::from_secs(60), 100)).unwrap()
        });
        for key in ["a", "b", "c"] {
            let Begin::Run(claim) = small.begin("", "u", key, f) else {
                panic!()
            };
            claim.complete(&ok(b"eight b."), false);
        }
        // "c" pushed out "a" when it came: 16 bytes were remembered.
        assert!(matches!(small.begin("", "u", "b", f), Begin::Replay(_)));
        assert!(
            matches!(small.begin("", "u", "a", f), Begin::Run(_)),
            "evicted for bytes"
        );
        // An answer over the whole budget is still replayed to its repeats (until a new key pushes it out).
        let Begin::Run(claim) = small.begin("", "u", "big", f) else {
            panic!()
        };
        claim.complete(&ok(b"twenty bytes of data"), false);
        assert!(matches!(small.begin("", "u", "big", f), Begin::Replay(_)));
        assert!(matches!(small.begin("", "u", "big", f), Begin::Replay(_)));

        let short = Idempotency::new(Duration::ZERO, 10);
        let Begin::Run(claim) = short.begin("", "u", "k", f) else {
            panic!()
        };
        claim.complete(&ok(b"ok"), false);
        assert!(matches!(short.begin("", "u", "k", f), Begin::Run(_)), "expired");
    }

    #[test]
    fn users_have_their_own_share_and_running_keys_are_never_evicted() {
        let store = Idempotency::new(Duration::from_secs(60), 3);
        let f = fingerprint("POST", "/", None, b"");
        let Begin::Run(victim) = store.begin("", "victim", "mine", f) else {
            panic!()
        };
        let Begin::Run(running) = store.begin("", "flooder", "running", f) else {
            panic!()
        };
        for key in 0..1000 {
            let Begin::Run(claim) = store.begin("", "flooder", &key.to_string(), f) else {
                panic!()
            };
            claim.complete(&ok(b"ok"), false);
        }
        assert!(
            matches!(store.begin("", "victim", "mine", f), Begin::InProgress),
            "another user's key stays"
        );
        assert!(
            matches!(store.begin("", "flooder", "running", f), Begin::InProgress),
            "a running key stays"
        );
        victim.complete(&ok(b"first"), false);
        assert!(matches!(store.begin("", "victim", "mine", f), Begin::Replay(a) if &a.body[..] == b"first"));
        drop(running);
        assert!(store.users.lock().unwrap()["flooder"].map.len() <= 3);
    }

    #[test]
    fn a_claim_touches_only_its_own_entry() {
        let store = Idempotency::new(Duration::from_secs(60), 10);
        let f = fingerprint("POST", "/", None, b"");
        let Begin::Run(old) = store.begin("", "u", "k", f) else {
            panic!()
        };
        // Its entry goes (as if the store had been cleared), and a second request takes the key.
        store
            .users
            .lock()
            .unwrap()
            .get_mut("u")
            .unwrap()
            .remove(&(String::new(), "k".to_owned()));
        std::thread::sleep(Duration::from_millis(2));
        let Begin::Run(new) = store.begin("", "u", "k", f) else {
            panic!("a free key runs")
        };
        drop(old); // does not free the second request's entry
        let store_view = |s: &Arc<Idempotency>| s.users.lock().unwrap().get("u").map_or(0, |e| e.map.len());
        assert_eq!(store_view(&store), 1);
        new.complete(&ok(b"second"), false);
    }
}
