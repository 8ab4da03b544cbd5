//! The VMs requests run on: the VM a request starts on (its thread's home VM) out, and a VM that hit its memory
//! limit replaced in its slot. `call::Call` is the future that runs a request on them.
//!
//! Each worker thread has a home VM (threads are numbered as they first call), so with one VM per worker thread,
//! as by default, a request almost always finds its VM free and runs on its own connection's task without any
//! hand-off. A VM is held through an async lock for one poll at a time: a request whose VM is busy on another
//! thread waits without blocking its thread, and a request not yet started takes any free VM instead.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tokio::sync::OwnedMutexGuard;

use super::modules::KafkaContext;
use super::vm::{Limits, Running, Vm};

#[derive(Debug)]
pub struct Pool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    slots: Vec<RwLock<Arc<VmCell>>>,
    context: Arc<KafkaContext>,
    limits: Limits,
}

/// One VM behind its lock.
pub(super) struct VmCell {
    index: usize,
    vm: Arc<tokio::sync::Mutex<Vm>>,
    /// Coroutines of requests that ended (client gone, timeout) while another thread held the VM: Lua values must
    /// be released under the lock, so the next holder drops them.
    graveyard: Mutex<Vec<Running>>,
    has_dead: AtomicBool,
    /// `luka_lua_vm_memory_bytes` for this slot.
    memory: prometheus_client::metrics::gauge::Gauge,
}

impl std::fmt::Debug for VmCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmCell")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

pub(super) type VmGuard = OwnedMutexGuard<Vm>;

impl VmCell {
    /// Reports the VM's memory in use on its gauge.
    pub(super) fn report_memory(&self, bytes: usize) {
        self.memory.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    fn new(index: usize, vm: Vm) -> Arc<Self> {
        Arc::new(Self {
            index,
            vm: Arc::new(tokio::sync::Mutex::new(vm)),
            graveyard: Mutex::new(Vec::new()),
            has_dead: AtomicBool::new(false),
            memory: crate::metrics::metrics().vm_memory(index),
        })
    }

    pub(super) fn try_lock(&self) -> Option<VmGuard> {
        Arc::clone(&self.vm).try_lock_owned().ok()
    }

    pub(super) fn lock(&self) -> impl Future<Output = VmGuard> + Send + 'static {
        Arc::clone(&self.vm).lock_owned()
    }

    /// Drops a request's coroutine now if the VM is free, else leaves it to the next holder.
    pub(super) fn release(&self, running: Running) {
        match self.try_lock() {
            Some(guard) => {
                drop(running);
                drop(guard);
            }
            None => {
                self.graveyard
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(running);
                self.has_dead.store(true, Ordering::Release);
            }
        }
    }

    /// Called by each holder of the lock: drops what [`VmCell::release`] left behind.
    pub(super) fn bury(&self, _holding: &VmGuard) {
        if self.has_dead.swap(false, Ordering::Acquire) {
            let dead = std::mem::take(&mut *self.graveyard.lock().unwrap_or_else(PoisonError::into_inner));
            drop(dead);
        }
    }
}

static NEXT_HOME: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's number, for choosing its home VM.
    static HOME: Cell<Option<usize>> = const { Cell::new(None) };
}

fn thread_number() -> usize {
    HOME.with(|home| match home.get() {
        Some(n) => n,
        None => {
            let n = NEXT_HOME.fetch_add(1, Ordering::Relaxed);
            home.set(Some(n));
            n
        }
    })
}

impl Pool {
    /// Starts `size` VMs (0: one per worker thread of the current tokio runtime).
    pub fn start(size: usize, context: Arc<KafkaContext>, limits: Limits) -> mlua::Result<Self> {
        let size = match size {
            0 => tokio::runtime::Handle::try_current().map_or(1, |h| h.metrics().num_workers()),
            n => n,
        };
        let slots = (0..size.max(1))
            .map(|index| Vm::new(&context, limits).map(|vm| RwLock::new(VmCell::new(index, vm))))
            .collect::<mlua::Result<Vec<_>>>()?;
        Ok(Self {
            inner: Arc::new(Inner { slots, context, limits }),
        })
    }

    /// The VMs, and the calling thread's home VM, where a request starts (or on another free one).
    pub(super) fn home(&self) -> (Arc<Inner>, Arc<VmCell>) {
        let home = self.inner.cell(thread_number() % self.inner.slots.len());
        (Arc::clone(&self.inner), home)
    }
}

impl Inner {
    pub(super) fn limits(&self) -> Limits {
        self.limits
    }

    fn cell(&self, index: usize) -> Arc<VmCell> {
        Arc::clone(&self.slots[index].read().unwrap_or_else(PoisonError::into_inner))
    }

    /// A VM other than `busy` that is free right now, locked.
    pub(super) fn any_free(&self, busy: &VmCell) -> Option<(Arc<VmCell>, VmGuard)> {
        (0..self.slots.len())
            .filter(|index| *index != busy.index)
            .map(|index| self.cell(index))
            .find_map(|cell| cell.try_lock().map(|guard| (cell, guard)))
    }

    /// Puts a fresh VM in `cell`'s slot (if another has not already): after a memory limit hit, the old VM may
    /// have failed an allocation anywhere. Requests still running on it finish there.
    pub(super) fn retire(&self, cell: &Arc<VmCell>) {
        let index = cell.index;
        match Vm::new(&self.context, self.limits) {
            Ok(vm) => {
                let mut slot = self.slots[index].write().unwrap_or_else(PoisonError::into_inner);
                if Arc::ptr_eq(&slot, cell) {
                    *slot = VmCell::new(index, vm);
                    tracing::warn!(vm = index, "a request hit a Lua limit; its VM was replaced");
                }
            }
            Err(e) => tracing::error!(vm = index, error = %e, "cannot create a Lua VM; the old one keeps serving"),
        }
    }
}
