//! What one HTTP request carries down the path without every layer passing it on: its id (the `request_id` field of
//! every log line luka writes for the request), the W3C trace context to
//! copy into the records it writes, and what it did (the function that ran, records written) for its access log
//! line. Set by the router around the request's future; read and updated by the produce core. Everything runs on
//! the connection's own task (Lua handlers included), so a task-local is in scope wherever the request is served.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One request's context.
#[derive(Debug, Default)]
pub struct RequestContext {
    pub id: String,
    /// `traceparent` / `tracestate` as received, copied into the headers of every record the request writes.
    pub trace: Vec<(String, Vec<u8>)>,
    records: AtomicUsize,
    function: OnceLock<Arc<str>>,
}

tokio::task_local! {
    static CURRENT: Arc<RequestContext>;
}

impl RequestContext {
    pub fn new(id: String, trace: Vec<(String, Vec<u8>)>) -> Arc<Self> {
        Arc::new(Self {
            id,
            trace,
            ..Self::default()
        })
    }

    /// `future` with `context` as the current request's.
    pub fn scope<F: std::future::Future>(
        context: Arc<Self>,
        future: F,
    ) -> impl std::future::Future<Output = F::Output> {
        CURRENT.scope(context, future)
    }

    /// The current request's context, if the caller runs inside one.
    pub fn current() -> Option<Arc<Self>> {
        CURRENT.try_with(Arc::clone).ok()
    }

    pub fn add_records(&self, count: usize) {
        self.records.fetch_add(count, Ordering::Relaxed);
    }

    pub fn records(&self) -> usize {
        self.records.load(Ordering::Relaxed)
    }

    pub fn set_function(&self, name: Arc<str>) {
        let _ = self.function.set(name);
    }

    pub fn function(&self) -> Option<Arc<str>> {
        self.function.get().cloned()
    }
}
