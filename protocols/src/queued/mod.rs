//! Queued endpoints and queued senders: work taken now and done by workers on the core, with
//! the failures kept where an operator can see, retry or clear them.
//!
//! A [`QueuedEndpoint`] takes requests into a bounded incoming queue ([`QueuedEndpoint::submit`]
//! answers at once with the request's id, or a [`Refusal`] the client is told); `workers`
//! tasks hand each to the handler, and a request whose handler fails (or panics) goes to the
//! error queue with the reason. An operator can pause accepting (new requests are refused
//! with [`Refusal::Paused`]), pause processing (requests still queue up), or both; inspect,
//! pop or clear error entries by id; send one or all of them back through the handler. Sizes
//! and counts are in [`QueuedEndpoint::stats`]. [`http`] puts an endpoint and its operations
//! behind HTTP routes.
//!
//! At [`QueuedEndpoint::shutdown`] nothing is dropped unsaid: new requests are refused, what
//! is queued is processed until the drain deadline (if processing is not paused), then every
//! request still held is handed back in the [`ShutdownReport`]: unprocessed ones, the error
//! queue, and those whose handler was interrupted by the deadline. Persisting them is the
//! application's choice; the report names each by id.
//!
//! [`sender::QueuedSender`] is the outgoing side: messages sent with retries on a back-off
//! function of the application's, an error queue for those that ran out of retries, a keeper
//! that drives them again, and a sequenced variant that keeps each group's messages in order.

pub mod http;
pub mod sender;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use coring::task::{JoinHandle, panic_message};
use coring::time;

/// A request held by an endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job<T> {
    /// Its id, given at submission (increasing from 1).
    pub id: u64,
    /// What was submitted.
    pub item: T,
    /// Times the handler has run it.
    pub attempts: u32,
    /// When it was submitted.
    pub submitted: Instant,
}

/// A request whose handler failed, in the error queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failed<T> {
    /// The request.
    pub job: Job<T>,
    /// Why it failed (the handler's error, or its panic's message).
    pub error: String,
    /// When it failed last.
    pub failed_at: Instant,
}

/// Why a request was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Accepting is paused.
    #[error("accepting is paused")]
    Paused,
    /// The incoming queue is full.
    #[error("the queue is full")]
    Full,
    /// The endpoint is shutting down.
    #[error("shutting down")]
    ShuttingDown,
}

/// Why [`QueuedEndpoint::retry`] could not send an entry back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RetryError {
    /// No error entry has that id.
    #[error("no error entry with that id")]
    NoSuchEntry,
    /// The incoming queue is full (the entry stays in the error queue).
    #[error("the queue is full")]
    Full,
}

/// An endpoint's sizes and counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Requests waiting for a worker.
    pub queued: usize,
    /// Requests a handler is running.
    pub in_flight: usize,
    /// Entries in the error queue.
    pub errors: usize,
    /// Whether new requests are accepted.
    pub accepting: bool,
    /// Whether workers take requests.
    pub processing: bool,
    /// Requests accepted since the start.
    pub accepted: u64,
    /// Refused because accepting was paused.
    pub refused_paused: u64,
    /// Refused because the queue was full.
    pub refused_full: u64,
    /// Handled without error.
    pub processed: u64,
    /// Handler failures (each attempt counts).
    pub failed: u64,
    /// Error entries sent back through the handler.
    pub retried: u64,
}

/// How an endpoint runs.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Requests the incoming queue holds before [`Refusal::Full`].
    pub capacity: usize,
    /// Handlers run at once.
    pub workers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            capacity: 1024,
            workers: 1,
        }
    }
}

/// What [`QueuedEndpoint::shutdown`] did with each request it held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShutdownReport<T> {
    /// Requests handled during the drain.
    pub drained: u64,
    /// Requests never handled, in queue order.
    pub unprocessed: Vec<Job<T>>,
    /// The error queue, by id.
    pub errors: Vec<Failed<T>>,
    /// Requests whose handler was still running at the deadline (cancelled, so it may have
    /// done part of its work).
    pub interrupted: Vec<Job<T>>,
}

type Handler<T> = Rc<dyn Fn(T) -> Pin<Box<dyn Future<Output = Result<(), String>>>>>;

struct State<T> {
    incoming: VecDeque<Job<T>>,
    running: BTreeMap<u64, Job<T>>,
    errors: BTreeMap<u64, Failed<T>>,
    accepting: bool,
    processing: bool,
    closing: bool,
    next_id: u64,
    stats: QueueStats,
}

struct Inner<T> {
    state: RefCell<State<T>>,
    config: Config,
    handler: Handler<T>,
    /// Workers waiting for a request, and shutdown waiting for the queue to empty.
    waiting: RefCell<Vec<Waker>>,
    workers: RefCell<Vec<JoinHandle<()>>>,
    started: Cell<bool>,
}

impl<T> Inner<T> {
    fn wake_all(&self) {
        for w in self.waiting.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

/// A queued endpoint on this core (see the module docs). Clones share it.
pub struct QueuedEndpoint<T> {
    inner: Rc<Inner<T>>,
}

impl<T> Clone for QueuedEndpoint<T> {
    fn clone(&self) -> Self {
        QueuedEndpoint {
            inner: Rc::clone(&self.inner),
        }
    }
}

impl<T> std::fmt::Debug for QueuedEndpoint<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedEndpoint")
            .field("stats", &self.inner.state.borrow().stats)
            .finish_non_exhaustive()
    }
}

impl<T: Clone + 'static> QueuedEndpoint<T> {
    /// An endpoint whose workers run `handler` on each request (a clone of it: the original
    /// stays held until the handler succeeds). An `Err` puts the request in the error queue
    /// with the error's text. Its workers start on the current core at the first submission.
    pub fn new<F, Fut, E>(config: Config, handler: F) -> QueuedEndpoint<T>
    where
        F: Fn(T) -> Fut + 'static,
        Fut: Future<Output = Result<(), E>> + 'static,
        E: std::fmt::Display,
    {
        let handler: Handler<T> = Rc::new(move |item| {
            let fut = handler(item);
            Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
        });
        QueuedEndpoint {
            inner: Rc::new(Inner {
                state: RefCell::new(State {
                    incoming: VecDeque::new(),
                    running: BTreeMap::new(),
                    errors: BTreeMap::new(),
                    accepting: true,
                    processing: true,
                    closing: false,
                    next_id: 0,
                    stats: QueueStats::default(),
                }),
                config,
                handler,
                waiting: RefCell::new(Vec::new()),
                workers: RefCell::new(Vec::new()),
                started: Cell::new(false),
            }),
        }
    }

    /// Starts the workers on first use (so an endpoint can be made while a core is being set
    /// up, before its executor runs).
    fn start_workers(&self) {
        if self.inner.started.replace(true) {
            return;
        }
        for _ in 0..self.inner.config.workers.max(1) {
            let inner = Rc::clone(&self.inner);
            let task = coring::spawn_local(async move { work(inner).await });
            self.inner.workers.borrow_mut().push(task);
        }
    }

    /// Queues `item`; its id, or why it was refused (with the item back).
    pub fn submit(&self, item: T) -> Result<u64, (Refusal, T)> {
        let mut state = self.inner.state.borrow_mut();
        if state.closing {
            return Err((Refusal::ShuttingDown, item));
        }
        if !state.accepting {
            state.stats.refused_paused += 1;
            return Err((Refusal::Paused, item));
        }
        if state.incoming.len() >= self.inner.config.capacity {
            state.stats.refused_full += 1;
            return Err((Refusal::Full, item));
        }
        state.next_id += 1;
        let id = state.next_id;
        state.incoming.push_back(Job {
            id,
            item,
            attempts: 0,
            submitted: time::now(),
        });
        state.stats.accepted += 1;
        drop(state);
        self.start_workers();
        self.inner.wake_all();
        Ok(id)
    }

    /// Stops or resumes accepting new requests.
    pub fn set_accepting(&self, on: bool) {
        self.inner.state.borrow_mut().accepting = on;
    }

    /// Stops or resumes processing (a handler already running finishes).
    pub fn set_processing(&self, on: bool) {
        self.inner.state.borrow_mut().processing = on;
        self.inner.wake_all();
    }

    /// Pauses accepting and processing together.
    pub fn pause(&self) {
        self.set_accepting(false);
        self.set_processing(false);
    }

    /// Resumes both.
    pub fn resume(&self) {
        self.set_accepting(true);
        self.set_processing(true);
    }

    /// Sizes and counts now.
    pub fn stats(&self) -> QueueStats {
        let state = self.inner.state.borrow();
        QueueStats {
            queued: state.incoming.len(),
            in_flight: state.running.len(),
            errors: state.errors.len(),
            accepting: state.accepting && !state.closing,
            processing: state.processing,
            ..state.stats
        }
    }

    /// The error queue, by id.
    pub fn errors(&self) -> Vec<Failed<T>> {
        self.inner.state.borrow().errors.values().cloned().collect()
    }

    /// Error entry `id`, left in place.
    pub fn error(&self, id: u64) -> Option<Failed<T>> {
        self.inner.state.borrow().errors.get(&id).cloned()
    }

    /// Takes error entry `id` out of the queue.
    pub fn pop_error(&self, id: u64) -> Option<Failed<T>> {
        self.inner.state.borrow_mut().errors.remove(&id)
    }

    /// Empties the error queue; how many entries it held.
    pub fn clear_errors(&self) -> usize {
        let mut state = self.inner.state.borrow_mut();
        let n = state.errors.len();
        state.errors.clear();
        n
    }

    /// Sends error entry `id` back through the handler (at the back of the queue).
    pub fn retry(&self, id: u64) -> Result<(), RetryError> {
        let mut state = self.inner.state.borrow_mut();
        if !state.errors.contains_key(&id) {
            return Err(RetryError::NoSuchEntry);
        }
        if state.incoming.len() >= self.inner.config.capacity {
            return Err(RetryError::Full);
        }
        if let Some(failed) = state.errors.remove(&id) {
            state.incoming.push_back(failed.job);
            state.stats.retried += 1;
        }
        drop(state);
        self.start_workers();
        self.inner.wake_all();
        Ok(())
    }

    /// Sends every error entry back, oldest id first, as far as the queue has room; how many
    /// went.
    pub fn retry_all(&self) -> usize {
        let ids: Vec<u64> = self.inner.state.borrow().errors.keys().copied().collect();
        ids.into_iter()
            .take_while(|id| self.retry(*id).is_ok())
            .count()
    }

    /// Refuses new requests, processes what is queued for at most `drain` (none if
    /// processing is paused), then stops the workers and hands back every request still held.
    pub async fn shutdown(&self, drain: Duration) -> ShutdownReport<T> {
        self.inner.state.borrow_mut().closing = true;
        let done_before = self.inner.state.borrow().stats.processed;
        let inner = Rc::clone(&self.inner);
        let emptied = std::future::poll_fn(|cx| {
            let state = inner.state.borrow();
            if !state.processing || (state.incoming.is_empty() && state.running.is_empty()) {
                return Poll::Ready(());
            }
            drop(state);
            inner.waiting.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        });
        let _ = time::timeout(drain, emptied).await;
        let workers: Vec<_> = self.inner.workers.borrow_mut().drain(..).collect();
        for mut worker in workers {
            worker.abort();
        }
        let mut state = self.inner.state.borrow_mut();
        ShutdownReport {
            drained: state.stats.processed - done_before,
            unprocessed: state.incoming.drain(..).collect(),
            errors: std::mem::take(&mut state.errors).into_values().collect(),
            interrupted: std::mem::take(&mut state.running).into_values().collect(),
        }
    }
}

impl<T> Drop for QueuedEndpoint<T> {
    fn drop(&mut self) {
        // The workers hold the endpoint too: the last handle the application held stops them.
        let held_by_workers = self.inner.workers.borrow().len();
        if held_by_workers > 0 && Rc::strong_count(&self.inner) == held_by_workers + 1 {
            let workers: Vec<_> = self.inner.workers.borrow_mut().drain(..).collect();
            for mut worker in workers {
                worker.abort();
            }
        }
    }
}

/// A worker: takes the next request whenever processing is on, runs its handler in a task of
/// its own (so a panic is caught as the request's failure), records the outcome.
async fn work<T: Clone + 'static>(inner: Rc<Inner<T>>) {
    loop {
        let job = std::future::poll_fn(|cx| {
            let mut state = inner.state.borrow_mut();
            if state.processing
                && let Some(mut job) = state.incoming.pop_front()
            {
                job.attempts += 1;
                state.running.insert(job.id, job.clone());
                return Poll::Ready(job);
            }
            drop(state);
            inner.waiting.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let run = (inner.handler)(job.item.clone());
        let outcome = coring::spawn_local(run).cancel_on_drop().await;
        let mut state = inner.state.borrow_mut();
        let Some(job) = state.running.remove(&job.id) else {
            continue;
        };
        let error = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error),
            Err(coring::task::JoinError::Panicked(payload)) => Some(format!(
                "the handler panicked: {}",
                panic_message(&*payload)
            )),
            Err(coring::task::JoinError::Cancelled) => Some("the handler was cancelled".into()),
        };
        match error {
            None => state.stats.processed += 1,
            Some(error) => {
                state.stats.failed += 1;
                state.errors.insert(
                    job.id,
                    Failed {
                        job,
                        error,
                        failed_at: time::now(),
                    },
                );
            }
        }
        drop(state);
        // Shutdown may be waiting for the queue to empty.
        inner.wake_all();
    }
}
