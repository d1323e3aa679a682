//! Cross-core work: run a task on another core, or send it messages.
//!
//! Cores share nothing on the hot path; what crosses between them goes through bounded
//! lock-free queues, and the target core is woken only if it sleeps (a MSG_RING completion
//! posted into its ring when the sender is an io_uring core, its eventfd otherwise). A full
//! queue is backpressure: `try_*` calls give the value back, async sends wait for room. Messages
//! from one sender to one core arrive in the order they were sent.
//!
//! ```no_run
//! use coring::shard::Mailbox;
//!
//! let rt = coring::Runtime::builder().cores(2).build()?;
//! let mail: Mailbox<String> = Mailbox::new(&rt, 256);
//! rt.run(|core| {
//!     let mail = mail.clone();
//!     async move {
//!         if core.index() == 0 {
//!             mail.send(1, "hello from core 0".to_string()).await.unwrap();
//!         } else {
//!             let msg = mail.recv().await;
//!             assert_eq!(msg, "hello from core 0");
//!         }
//!     }
//! })?;
//! # Ok::<(), coring::Error>(())
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crossbeam_queue::ArrayQueue;

use crate::runtime::context;
use crate::runtime::{Runtime, RuntimeShared};

/// Why a cross-core send did not happen.
#[derive(PartialEq, Eq)]
pub enum SendError<T> {
    /// The target's queue is full; the value is given back.
    Full(T),
    /// No core with that index is running (out of range, not started, or stopped).
    NoSuchCore(T),
}

impl<T> SendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendError::Full(v) | SendError::NoSuchCore(v) => v,
        }
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("Full(..)"),
            SendError::NoSuchCore(_) => f.write_str("NoSuchCore(..)"),
        }
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("the target core's queue is full"),
            SendError::NoSuchCore(_) => f.write_str("no such core is running"),
        }
    }
}

impl<T> std::error::Error for SendError<T> {}

/// Runs `make()` on core `core` and spawns the future it returns there (so the future need not
/// be `Send`; only the closure crosses). Returns a handle to await its output from anywhere.
///
/// Fails with [`SendError::Full`] when the core's spawn queue is full (see
/// `Builder::spawn_queue`).
///
/// # Panics
///
/// Panics off a coring core.
pub fn spawn_on<F, Fut>(core: usize, make: F) -> Result<RemoteHandle<Fut::Output>, SendError<F>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    let runtime = context::with_current(|ctx| Arc::clone(&ctx.runtime));
    spawn_on_runtime(&runtime, core, make)
}

fn spawn_on_runtime<F, Fut>(
    runtime: &RuntimeShared,
    core: usize,
    make: F,
) -> Result<RemoteHandle<Fut::Output>, SendError<F>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    let Some(target) = runtime.core(core) else {
        return Err(SendError::NoSuchCore(make));
    };
    let slot = Arc::new(Oneshot::default());
    let tx = Arc::clone(&slot);
    // The closure travels in a shared cell so that a refused push can give it back.
    let cell = Arc::new(Mutex::new(Some(make)));
    let job_cell = Arc::clone(&cell);
    let job: Box<dyn FnOnce() + Send> = Box::new(move || {
        let Some(make) = job_cell.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let fut = make();
        crate::spawn_local(async move {
            // Cancelled before finishing (its core shut down): the handle still resolves.
            let _closer = Closer(Arc::clone(&tx));
            tx.complete(fut.await);
        });
    });
    if target.inject(job).is_err() {
        let make = cell
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .expect("refused job still holds its closure");
        return Err(SendError::Full(make));
    }
    Ok(RemoteHandle { slot })
}

/// The output of a task started with [`spawn_on`]; await it from any core or thread. `None`
/// if the task was cancelled (its core shut down) or panicked.
pub struct RemoteHandle<T> {
    slot: Arc<Oneshot<T>>,
}

impl<T> Future for RemoteHandle<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.slot.poll(cx)
    }
}

impl<T> fmt::Debug for RemoteHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteHandle").finish_non_exhaustive()
    }
}

/// A value handed from one thread to another, once.
struct Oneshot<T> {
    state: Mutex<OneshotState<T>>,
}

struct OneshotState<T> {
    value: Option<T>,
    /// The producer is gone (completed or dropped).
    closed: bool,
    waker: Option<Waker>,
}

impl<T> Default for Oneshot<T> {
    fn default() -> Self {
        Oneshot {
            state: Mutex::new(OneshotState {
                value: None,
                closed: false,
                waker: None,
            }),
        }
    }
}

impl<T> Oneshot<T> {
    fn complete(&self, value: T) {
        let waker = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.value = Some(value);
            st.closed = true;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = st.value.take() {
            return Poll::Ready(Some(v));
        }
        if st.closed {
            return Poll::Ready(None);
        }
        match &mut st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            w => *w = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// Guard that closes the oneshot when a remote task is dropped without finishing.
struct Closer<T>(Arc<Oneshot<T>>);

impl<T> Drop for Closer<T> {
    fn drop(&mut self) {
        let waker = {
            let mut st = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
            st.closed = true;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Typed, bounded mailboxes, one per core of a runtime. Clone it into every core; `send` to a
/// core by index, `recv` on a core takes what was sent to that core.
pub struct Mailbox<T> {
    inner: Arc<MailboxInner<T>>,
    runtime: Arc<RuntimeShared>,
}

struct MailboxInner<T> {
    slots: Vec<Slot<T>>,
}

struct Slot<T> {
    queue: ArrayQueue<T>,
    /// The receiving task on the slot's core.
    receiver: Mutex<Option<Waker>>,
    /// Senders waiting for room.
    senders: Mutex<Vec<Waker>>,
}

impl<T> Clone for Mailbox<T> {
    fn clone(&self) -> Self {
        Mailbox {
            inner: Arc::clone(&self.inner),
            runtime: Arc::clone(&self.runtime),
        }
    }
}

impl<T> fmt::Debug for Mailbox<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailbox")
            .field("cores", &self.inner.slots.len())
            .finish()
    }
}

impl<T: Send> Mailbox<T> {
    /// Mailboxes for every core of `runtime`, each holding up to `capacity` messages.
    pub fn new(runtime: &Runtime, capacity: usize) -> Mailbox<T> {
        let shared = runtime.shared();
        let slots = (0..shared.core_count())
            .map(|_| Slot {
                queue: ArrayQueue::new(capacity.max(1)),
                receiver: Mutex::new(None),
                senders: Mutex::new(Vec::new()),
            })
            .collect();
        Mailbox {
            inner: Arc::new(MailboxInner { slots }),
            runtime: shared,
        }
    }

    /// Sends `msg` to core `core` if its mailbox has room; gives it back otherwise.
    pub fn try_send(&self, core: usize, msg: T) -> Result<(), SendError<T>> {
        let Some(slot) = self.inner.slots.get(core) else {
            return Err(SendError::NoSuchCore(msg));
        };
        slot.queue.push(msg).map_err(SendError::Full)?;
        let waker = slot
            .receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Sends `msg` to core `core`, waiting while its mailbox is full.
    pub async fn send(&self, core: usize, msg: T) -> Result<(), SendError<T>> {
        let mut msg = Some(msg);
        std::future::poll_fn(|cx| {
            let m = msg.take().expect("polled after completion");
            match self.try_send(core, m) {
                Ok(()) => Poll::Ready(Ok(())),
                Err(SendError::Full(m)) => {
                    let slot = &self.inner.slots[core];
                    slot.senders
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(cx.waker().clone());
                    // Room may have appeared between the push attempt and the registration.
                    if !slot.queue.is_full() {
                        cx.waker().wake_by_ref();
                    }
                    msg = Some(m);
                    Poll::Pending
                }
                Err(e) => Poll::Ready(Err(e)),
            }
        })
        .await
    }

    /// The next message sent to the current core.
    ///
    /// # Panics
    ///
    /// Panics off a coring core of this mailbox's runtime.
    pub async fn recv(&self) -> T {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// A message sent to the current core, if one is waiting.
    pub fn try_recv(&self) -> Option<T> {
        let slot = self.my_slot();
        let msg = slot.queue.pop();
        if msg.is_some() {
            self.wake_a_sender(slot);
        }
        msg
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<T> {
        if crate::task::coop::poll_proceed(cx).is_pending() {
            return Poll::Pending;
        }
        let slot = self.my_slot();
        if let Some(msg) = slot.queue.pop() {
            self.wake_a_sender(slot);
            return Poll::Ready(msg);
        }
        *slot.receiver.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
        // A message may have landed before the waker was in place.
        if let Some(msg) = slot.queue.pop() {
            self.wake_a_sender(slot);
            return Poll::Ready(msg);
        }
        Poll::Pending
    }

    fn my_slot(&self) -> &Slot<T> {
        let index = context::with_current(|ctx| {
            assert!(
                Arc::ptr_eq(&ctx.runtime, &self.runtime),
                "mailbox used on a core of another runtime"
            );
            ctx.index
        });
        &self.inner.slots[index]
    }

    fn wake_a_sender(&self, slot: &Slot<T>) {
        let waker = slot.senders.lock().unwrap_or_else(|e| e.into_inner()).pop();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl crate::runtime::Core {
    /// Runs `make()` on core `core` (see [`spawn_on`]); usable from the root closure too.
    pub fn spawn_on<F, Fut>(
        &self,
        core: usize,
        make: F,
    ) -> Result<RemoteHandle<Fut::Output>, SendError<F>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        spawn_on_runtime(self.runtime_shared(), core, make)
    }
}
