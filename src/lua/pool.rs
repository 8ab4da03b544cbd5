//! The VMs requests are spread over: a job in, sent to the least busy VM; a retiring VM replaced in its slot.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::{mpsc, oneshot};

use super::LuaError;
use super::modules::KafkaContext;
use super::request::HttpRequest;
use super::response::HandlerResponse;
use super::routes::Target;
use super::vm::{Job, Limits, Vm};

/// Jobs queued per VM before senders wait; the connection limit bounds the total anyway.
const QUEUE: usize = 256;

/// Tries to reach a VM; one failure is a VM that retired between choosing and sending.
const SEND_ATTEMPTS: usize = 3;

#[derive(Debug)]
pub struct Pool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    slots: Vec<Mutex<Slot>>,
    context: Arc<KafkaContext>,
    limits: Limits,
}

#[derive(Debug, Clone)]
struct Slot {
    jobs: mpsc::Sender<Job>,
    /// Jobs sent and not yet answered.
    busy: Arc<AtomicUsize>,
}

impl Pool {
    /// Starts `size` VMs as tasks on the current tokio runtime.
    pub fn start(size: usize, context: Arc<KafkaContext>, limits: Limits) -> mlua::Result<Self> {
        let vms = (0..size.max(1))
            .map(|_| Vm::new(&context, limits))
            .collect::<mlua::Result<Vec<_>>>()?;
        let inner = Arc::new_cyclic(|weak| Inner {
            slots: vms
                .into_iter()
                .enumerate()
                .map(|(index, vm)| Mutex::new(launch(vm, weak.clone(), index)))
                .collect(),
            context,
            limits,
        });
        Ok(Self { inner })
    }

    pub async fn call(&self, target: Target, request: HttpRequest) -> Result<HandlerResponse, LuaError> {
        let (reply, answer) = oneshot::channel();
        let mut job = Job { target, request, reply };
        for _ in 0..SEND_ATTEMPTS {
            let slot = self.least_busy();
            // Counted until this future ends, however it ends (the client may go away while it waits).
            let _busy = Busy::enter(&slot.busy);
            match slot.jobs.send(job).await {
                Ok(()) => return answer.await.unwrap_or(Err(LuaError::ShuttingDown)),
                Err(mpsc::error::SendError(returned)) => job = returned,
            }
        }
        Err(LuaError::ShuttingDown)
    }

    /// The open slot with the fewest requests (a slot whose VM could not be replaced stays closed).
    fn least_busy(&self) -> Slot {
        let slots: Vec<Slot> = self
            .inner
            .slots
            .iter()
            .map(|slot| slot.lock().unwrap_or_else(PoisonError::into_inner).clone())
            .collect();
        let open = slots.iter().filter(|slot| !slot.jobs.is_closed());
        open.min_by_key(|slot| slot.busy.load(Ordering::Relaxed))
            .or_else(|| slots.first())
            .cloned()
            .unwrap_or_else(|| unreachable!("a pool has at least one VM"))
    }
}

struct Busy<'a>(&'a AtomicUsize);

impl<'a> Busy<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs `vm` as a task for slot `index`; when it retires it puts a fresh VM in its own slot.
fn launch(vm: Vm, pool: Weak<Inner>, index: usize) -> Slot {
    let (jobs, receiver) = mpsc::channel(QUEUE);
    tokio::spawn(vm.run(receiver, move || {
        if let Some(inner) = pool.upgrade() {
            replace(&inner, index);
        }
    }));
    Slot {
        jobs,
        busy: Arc::new(AtomicUsize::new(0)),
    }
}

fn replace(inner: &Arc<Inner>, index: usize) {
    match Vm::new(&inner.context, inner.limits) {
        Ok(vm) => {
            let fresh = launch(vm, Arc::downgrade(inner), index);
            if let Some(slot) = inner.slots.get(index) {
                *slot.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
            }
            tracing::warn!(vm = index, "a request hit a Lua limit; its VM was replaced");
        }
        Err(e) => tracing::error!(vm = index, error = %e, "cannot create a Lua VM; this slot stays out of service"),
    }
}
