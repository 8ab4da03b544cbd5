//! What one HTTP request carries down the path without every layer passing it on: its id (the `request_id` field of
//! every log line luka writes for the request), the W3C trace context to
//! copy into the records it writes, and what it did (the function that ran, records written) for its access log
//! line. Set by the router around the request's future; read and updated by the produce core. Everything runs on
//! the connection's own task (Lua handlers included), so a task-local is in scope wherever the request is served.
//! `luka test` also asks where each record went ([`Capture`]), to read them back.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::task::futures::TaskLocalFuture;

use crate::metrics::FunctionRequests;

/// Where one record of the request was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordAt {
    pub cluster: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// A request extension asking the router to note where each record of the request is written.
#[derive(Debug, Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<RecordAt>>>);

/// One request's context.
#[derive(Debug, Default)]
pub struct RequestContext {
    pub id: String,
    /// `traceparent` / `tracestate` as received, copied into the headers of every record the request writes.
    pub trace: Vec<(String, Vec<u8>)>,
    records: AtomicUsize,
    function: OnceLock<Arc<FunctionRequests>>,
    /// The `[[routes]]` entry that chose the function, plus one; 0 if none did ([`crate::lua::Target::route`]). Four
    /// bytes, beside the flags' padding: a wider field made the context's allocation a size larger, and every
    /// request's allocation took mimalloc's slower path (about 100 instructions of `/healthz`'s 10k).
    route: AtomicU32,
    capture: Option<Capture>,
    /// The request waits for its records' real outcome instead of answering "in doubt" (it has an
    /// `Idempotency-Key`, whose entry must hold the true answer).
    awaits_outcome: std::sync::atomic::AtomicBool,
    /// A produce of the request ended in doubt: its records may or may not have been written.
    in_doubt: std::sync::atomic::AtomicBool,
}

tokio::task_local! {
    static CURRENT: Arc<RequestContext>;
}

impl RequestContext {
    pub fn new(id: String, trace: Vec<(String, Vec<u8>)>, capture: Option<Capture>) -> Arc<Self> {
        Arc::new(Self {
            id,
            trace,
            capture,
            ..Self::default()
        })
    }

    /// `future` with `context` as the current request's.
    pub fn scope<F: std::future::Future>(context: Arc<Self>, future: F) -> TaskLocalFuture<Arc<Self>, F> {
        CURRENT.scope(context, future)
    }

    /// The current request's context, if the caller runs inside one.
    pub fn current() -> Option<Arc<Self>> {
        CURRENT.try_with(Arc::clone).ok()
    }

    pub fn add_records(&self, count: usize) {
        self.records.fetch_add(count, Ordering::Relaxed);
    }

    /// Notes where records went, if the request asked ([`Capture`]); `written` is only walked then.
    pub fn note_written(&self, written: impl IntoIterator<Item = RecordAt>) {
        if let Some(Capture(list)) = &self.capture {
            list.lock().expect("capture lock poisoned").extend(written);
        }
    }

    pub fn records(&self) -> usize {
        self.records.load(Ordering::Relaxed)
    }

    /// A produce of the request ended with records that may or may not have been written.
    pub fn note_in_doubt(&self) {
        self.in_doubt.store(true, Ordering::Relaxed);
    }

    pub fn in_doubt(&self) -> bool {
        self.in_doubt.load(Ordering::Relaxed)
    }

    /// From now on the request waits for its records' real outcome (see [`RequestContext::awaits_outcome`]).
    pub fn await_outcome(&self) {
        self.awaits_outcome.store(true, Ordering::Relaxed);
    }

    /// Whether a produce of this request that runs past its time waits for the records' real outcome rather than
    /// answer that they may or may not have been written.
    pub fn awaits_outcome(&self) -> bool {
        self.awaits_outcome.load(Ordering::Relaxed)
    }

    /// The function that answers the request (its name and its request series), and the `[[routes]]` entry that
    /// chose it, if one did.
    pub fn set_function(&self, function: Arc<FunctionRequests>, route: Option<usize>) {
        let _ = self.function.set(function);
        // A config has far fewer than 2^32 routes.
        if let Some(route) = route.and_then(|r| u32::try_from(r + 1).ok()) {
            self.route.store(route, Ordering::Relaxed);
        }
    }

    pub fn function(&self) -> Option<&Arc<FunctionRequests>> {
        self.function.get()
    }

    /// The `[[routes]]` entry that chose the request's function, if one did.
    pub fn route(&self) -> Option<usize> {
        (self.route.load(Ordering::Relaxed) as usize).checked_sub(1)
    }
}
