//! Outgoing messages with retries: [`QueuedSender`].
//!
//! Messages given to [`QueuedSender::send`] are queued (bounded) and sent by `workers` tasks
//! with the application's send function. A failed send is tried again after the application's
//! back-off function says (`backoff(attempts)`), up to `max_attempts`; then the message goes
//! to the error queue with its last error. The keeper (every [`SenderConfig::keeper`]) sends
//! the error queue back for another round of attempts; an operator can do the same for one
//! message or all, inspect, pop or clear them.
//!
//! The sequenced variant ([`QueuedSender::sequenced`], messages sent with
//! [`QueuedSender::send_in`] a group) keeps each group's messages in order: a group's next
//! message is not sent while one before it is in flight, waiting for a retry or in the error
//! queue; other groups go on meanwhile. A group blocked by an error entry moves again when the
//! entry is retried (it goes first) or removed.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use coring::task::{JoinHandle, panic_message};
use coring::time::{self, Sleep};

/// A message held by a sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing<T> {
    /// Its id (increasing from 1).
    pub id: u64,
    /// Its group, in a sequenced sender.
    pub group: Option<String>,
    /// The message.
    pub message: T,
    /// Attempts made in its current round (the keeper and `retry` start a new round).
    pub attempts: u32,
    /// The last attempt's error.
    pub last_error: Option<String>,
}

/// Why [`QueuedSender::send`] refused a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendRefused {
    /// `capacity` messages are queued.
    #[error("the queue is full")]
    Full,
    /// The sender is shutting down.
    #[error("shutting down")]
    ShuttingDown,
}

/// How a sender runs.
#[derive(Clone, Copy, Debug)]
pub struct SenderConfig {
    /// Messages queued (waiting or between attempts) before [`SendRefused::Full`].
    pub capacity: usize,
    /// Attempts per round before a message goes to the error queue (at least 1).
    pub max_attempts: u32,
    /// Sends at once.
    pub workers: usize,
    /// How often the keeper sends the error queue back (`None`: no keeper).
    pub keeper: Option<Duration>,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            capacity: 4096,
            max_attempts: 5,
            workers: 1,
            keeper: Some(Duration::from_secs(30)),
        }
    }
}

/// A sender's sizes and counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Messages waiting (first attempt or a retry).
    pub queued: usize,
    /// Sends in progress.
    pub in_flight: usize,
    /// Entries in the error queue.
    pub errors: usize,
    /// Messages sent.
    pub sent: u64,
    /// Attempts made.
    pub attempts: u64,
    /// Attempts that failed.
    pub failures: u64,
    /// Messages that ran out of attempts (into the error queue).
    pub exhausted: u64,
    /// Error entries sent back (by the keeper or an operator).
    pub redriven: u64,
}

/// What [`QueuedSender::shutdown`] did with each message it held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SenderReport<T> {
    /// Messages sent during the drain.
    pub drained: u64,
    /// Messages not sent, in queue order (some between attempts).
    pub unsent: Vec<Outgoing<T>>,
    /// The error queue, by id.
    pub errors: Vec<Outgoing<T>>,
    /// Sends still in progress at the deadline (cancelled: the peer may have it).
    pub interrupted: Vec<Outgoing<T>>,
}

type SendFn<T> = Rc<dyn Fn(T) -> Pin<Box<dyn Future<Output = Result<(), String>>>>>;

struct Waiting<T> {
    out: Outgoing<T>,
    not_before: Option<Instant>,
}

struct State<T> {
    queue: VecDeque<Waiting<T>>,
    in_flight: BTreeMap<u64, Outgoing<T>>,
    errors: BTreeMap<u64, Outgoing<T>>,
    closing: bool,
    next_id: u64,
    stats: SenderStats,
}

impl<T> State<T> {
    /// Whether `group` has a message in flight or in the error queue.
    fn busy(&self, group: &str) -> bool {
        let holds = |o: &Outgoing<T>| o.group.as_deref() == Some(group);
        self.in_flight.values().any(holds) || self.errors.values().any(holds)
    }
}

struct Inner<T> {
    state: RefCell<State<T>>,
    config: SenderConfig,
    send: SendFn<T>,
    backoff: Box<dyn Fn(u32) -> Duration>,
    sequenced: bool,
    waiting: RefCell<Vec<Waker>>,
    tasks: RefCell<Vec<JoinHandle<()>>>,
    started: Cell<bool>,
}

impl<T> Inner<T> {
    fn wake_all(&self) {
        for w in self.waiting.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

/// A queued sender on this core (see the module docs). Clones share it.
pub struct QueuedSender<T> {
    inner: Rc<Inner<T>>,
}

impl<T> Clone for QueuedSender<T> {
    fn clone(&self) -> Self {
        QueuedSender {
            inner: Rc::clone(&self.inner),
        }
    }
}

impl<T> std::fmt::Debug for QueuedSender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedSender")
            .field("sequenced", &self.inner.sequenced)
            .field("stats", &self.inner.state.borrow().stats)
            .finish_non_exhaustive()
    }
}

impl<T: Clone + 'static> QueuedSender<T> {
    /// A sender calling `send` with each message (a clone: the original is held until a send
    /// succeeds), waiting `backoff(attempts)` after a failed attempt. Its workers and keeper
    /// start on the current core at the first message.
    pub fn new<F, Fut, E, B>(config: SenderConfig, send: F, backoff: B) -> QueuedSender<T>
    where
        F: Fn(T) -> Fut + 'static,
        Fut: Future<Output = Result<(), E>> + 'static,
        E: std::fmt::Display,
        B: Fn(u32) -> Duration + 'static,
    {
        Self::start(config, send, backoff, false)
    }

    /// The same, keeping each group's messages in order (see [`QueuedSender::send_in`]).
    pub fn sequenced<F, Fut, E, B>(config: SenderConfig, send: F, backoff: B) -> QueuedSender<T>
    where
        F: Fn(T) -> Fut + 'static,
        Fut: Future<Output = Result<(), E>> + 'static,
        E: std::fmt::Display,
        B: Fn(u32) -> Duration + 'static,
    {
        Self::start(config, send, backoff, true)
    }

    fn start<F, Fut, E, B>(config: SenderConfig, send: F, backoff: B, sequenced: bool) -> Self
    where
        F: Fn(T) -> Fut + 'static,
        Fut: Future<Output = Result<(), E>> + 'static,
        E: std::fmt::Display,
        B: Fn(u32) -> Duration + 'static,
    {
        let send: SendFn<T> = Rc::new(move |message| {
            let fut = send(message);
            Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
        });
        QueuedSender {
            inner: Rc::new(Inner {
                state: RefCell::new(State {
                    queue: VecDeque::new(),
                    in_flight: BTreeMap::new(),
                    errors: BTreeMap::new(),
                    closing: false,
                    next_id: 0,
                    stats: SenderStats::default(),
                }),
                config,
                send,
                backoff: Box::new(backoff),
                sequenced,
                waiting: RefCell::new(Vec::new()),
                tasks: RefCell::new(Vec::new()),
                started: Cell::new(false),
            }),
        }
    }

    /// Starts the workers and the keeper on first use (so a sender can be made while a core
    /// is being set up, before its executor runs).
    fn start_tasks(&self) {
        if self.inner.started.replace(true) {
            return;
        }
        for _ in 0..self.inner.config.workers.max(1) {
            let inner = Rc::clone(&self.inner);
            let task = coring::spawn_local(async move { work(inner).await });
            self.inner.tasks.borrow_mut().push(task);
        }
        if let Some(every) = self.inner.config.keeper {
            let keeper = self.clone();
            // The keeper holds a handle of its own; it is stopped with the workers.
            let task = coring::spawn_local(async move {
                let mut ticks = time::interval(every);
                loop {
                    ticks.tick().await;
                    keeper.retry_all();
                }
            });
            self.inner.tasks.borrow_mut().push(task);
        }
    }

    /// Queues `message` (in a sequenced sender: in a group of its own id, so unordered).
    pub fn send(&self, message: T) -> Result<u64, (SendRefused, T)> {
        self.enqueue(None, message)
    }

    /// Queues `message` in `group`: sent after every earlier message of the group.
    pub fn send_in(&self, group: &str, message: T) -> Result<u64, (SendRefused, T)> {
        self.enqueue(Some(group.to_owned()), message)
    }

    fn enqueue(&self, group: Option<String>, message: T) -> Result<u64, (SendRefused, T)> {
        let mut state = self.inner.state.borrow_mut();
        if state.closing {
            return Err((SendRefused::ShuttingDown, message));
        }
        if state.queue.len() >= self.inner.config.capacity {
            return Err((SendRefused::Full, message));
        }
        state.next_id += 1;
        let id = state.next_id;
        state.queue.push_back(Waiting {
            out: Outgoing {
                id,
                group: group.filter(|_| self.inner.sequenced),
                message,
                attempts: 0,
                last_error: None,
            },
            not_before: None,
        });
        drop(state);
        self.start_tasks();
        self.inner.wake_all();
        Ok(id)
    }

    /// Sizes and counts now.
    pub fn stats(&self) -> SenderStats {
        let state = self.inner.state.borrow();
        SenderStats {
            queued: state.queue.len(),
            in_flight: state.in_flight.len(),
            errors: state.errors.len(),
            ..state.stats
        }
    }

    /// The error queue, by id.
    pub fn errors(&self) -> Vec<Outgoing<T>> {
        self.inner.state.borrow().errors.values().cloned().collect()
    }

    /// Takes error entry `id` out (its group, if any, moves on).
    pub fn pop_error(&self, id: u64) -> Option<Outgoing<T>> {
        let popped = self.inner.state.borrow_mut().errors.remove(&id);
        self.inner.wake_all();
        popped
    }

    /// Empties the error queue; how many entries it held.
    pub fn clear_errors(&self) -> usize {
        let n = std::mem::take(&mut self.inner.state.borrow_mut().errors).len();
        self.inner.wake_all();
        n
    }

    /// Sends error entry `id` back for a new round of attempts, ahead of the queue (so it
    /// keeps its place before its group's later messages). False if there is no such entry.
    pub fn retry(&self, id: u64) -> bool {
        let mut state = self.inner.state.borrow_mut();
        let Some(mut out) = state.errors.remove(&id) else {
            return false;
        };
        out.attempts = 0;
        state.queue.push_front(Waiting {
            out,
            not_before: None,
        });
        state.stats.redriven += 1;
        drop(state);
        self.inner.wake_all();
        true
    }

    /// Sends every error entry back (oldest first, ahead of the queue); how many.
    pub fn retry_all(&self) -> usize {
        let ids: Vec<u64> = self
            .inner
            .state
            .borrow()
            .errors
            .keys()
            .rev()
            .copied()
            .collect();
        // Pushed to the front newest first, so the oldest ends up first.
        ids.into_iter().filter(|id| self.retry(*id)).count()
    }

    /// Waits until nothing is queued or in flight (everything sent or in the error queue), at
    /// most `limit`; whether it got there.
    pub async fn flush(&self, limit: Duration) -> bool {
        let inner = Rc::clone(&self.inner);
        let idle = std::future::poll_fn(|cx| {
            let state = inner.state.borrow();
            if state.queue.is_empty() && state.in_flight.is_empty() {
                return Poll::Ready(());
            }
            drop(state);
            inner.waiting.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        });
        time::timeout(limit, idle).await.is_ok()
    }

    /// Refuses new messages, goes on sending for at most `drain`, then stops its tasks and
    /// hands back every message still held.
    pub async fn shutdown(&self, drain: Duration) -> SenderReport<T> {
        self.inner.state.borrow_mut().closing = true;
        let before = self.inner.state.borrow().stats.sent;
        self.flush(drain).await;
        let tasks: Vec<_> = self.inner.tasks.borrow_mut().drain(..).collect();
        for mut task in tasks {
            task.abort();
        }
        let mut state = self.inner.state.borrow_mut();
        SenderReport {
            drained: state.stats.sent - before,
            unsent: state.queue.drain(..).map(|w| w.out).collect(),
            errors: std::mem::take(&mut state.errors).into_values().collect(),
            interrupted: std::mem::take(&mut state.in_flight).into_values().collect(),
        }
    }
}

impl<T> Drop for QueuedSender<T> {
    fn drop(&mut self) {
        // The workers and the keeper hold the sender too: when the last handle the
        // application held goes, they stop. (Collected first: stopping the keeper drops its
        // handle, which comes back here.)
        let held_by_tasks = self.inner.tasks.borrow().len();
        if held_by_tasks > 0 && Rc::strong_count(&self.inner) == held_by_tasks + 1 {
            let tasks: Vec<_> = self.inner.tasks.borrow_mut().drain(..).collect();
            for mut task in tasks {
                task.abort();
            }
        }
    }
}

/// The next message a worker may send now: the first in queue order whose retry time has
/// come and, in a sequenced sender, whose group has nothing before it still pending. `Err`
/// with the earliest retry time when none may go yet.
fn pick<T>(state: &mut State<T>, now: Instant) -> Result<Outgoing<T>, Option<Instant>> {
    // Group names borrowed from the queue: none is copied to scan it.
    let mut passed: HashSet<&str> = HashSet::new();
    let mut earliest: Option<Instant> = None;
    let mut chosen = None;
    for (i, waiting) in state.queue.iter().enumerate() {
        if let Some(group) = &waiting.out.group {
            // Only a group's first queued message may go, and only when no earlier one of
            // the group is in flight or in the error queue.
            if !passed.insert(group) || state.busy(group) {
                continue;
            }
        }
        match waiting.not_before {
            Some(at) if at > now => earliest = Some(earliest.map_or(at, |e: Instant| e.min(at))),
            _ => {
                chosen = Some(i);
                break;
            }
        }
    }
    match chosen.and_then(|i| state.queue.remove(i)) {
        Some(waiting) => Ok(waiting.out),
        None => Err(earliest),
    }
}

async fn work<T: Clone + 'static>(inner: Rc<Inner<T>>) {
    let mut timer: Pin<Box<Sleep>> = Box::pin(time::sleep(Duration::from_secs(3600)));
    loop {
        let out = std::future::poll_fn(|cx| {
            loop {
                let mut state = inner.state.borrow_mut();
                match pick(&mut state, time::now()) {
                    Ok(mut out) => {
                        out.attempts += 1;
                        state.stats.attempts += 1;
                        state.in_flight.insert(out.id, out.clone());
                        return Poll::Ready(out);
                    }
                    Err(earliest) => {
                        drop(state);
                        inner.waiting.borrow_mut().push(cx.waker().clone());
                        let Some(at) = earliest else {
                            return Poll::Pending;
                        };
                        timer.as_mut().reset(at);
                        if timer.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                    }
                }
            }
        })
        .await;
        let outcome = coring::spawn_local((inner.send)(out.message.clone()))
            .cancel_on_drop()
            .await;
        let error = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(coring::task::JoinError::Panicked(p)) => {
                Some(format!("the send panicked: {}", panic_message(&*p)))
            }
            Err(coring::task::JoinError::Cancelled) => Some("the send was cancelled".into()),
        };
        let mut state = inner.state.borrow_mut();
        let Some(mut out) = state.in_flight.remove(&out.id) else {
            continue;
        };
        match error {
            None => state.stats.sent += 1,
            Some(error) => {
                state.stats.failures += 1;
                out.last_error = Some(error);
                if out.attempts >= inner.config.max_attempts.max(1) {
                    state.stats.exhausted += 1;
                    state.errors.insert(out.id, out);
                } else {
                    let wait = (inner.backoff)(out.attempts);
                    // Back at the front: it keeps its place before its group's later messages.
                    state.queue.push_front(Waiting {
                        out,
                        not_before: Some(time::now() + wait),
                    });
                }
            }
        }
        drop(state);
        inner.wake_all();
    }
}
