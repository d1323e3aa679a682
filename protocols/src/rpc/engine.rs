//! The RPC wire driven on engine streams: a [`Client`] with many calls in flight, and
//! [`serve`], which runs a handler per call as a task of its own.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::marker::PhantomData;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use coring::task::JoinHandle;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Fault, Header, Kind, RpcFormat, WriteError, write_frame};
use crate::framed::{FrameIo, Framed, FramedError};
use crate::framing::{LengthPrefixed, Prefix};
use crate::serialize::FormatError;

/// Limits for either end of a connection.
#[derive(Debug, Clone)]
pub struct Config {
    /// The largest message sent or accepted, in bytes (1 MiB by default). A peer that
    /// announces a larger one is disconnected before its bytes are buffered.
    pub max_frame: usize,
    /// Server: the calls a connection may have in flight; one more is answered
    /// [`Fault::Overloaded`] without running (256 by default).
    pub max_in_flight: usize,
    /// Client: the deadline of a call made without one. Server: the longest a handler runs,
    /// whatever the call asked for (`None` by default: as long as the call asks).
    pub call_timeout: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame: 1 << 20,
            max_in_flight: 256,
            call_timeout: None,
        }
    }
}

/// Frames waiting for a connection's writer task, which writes them in batches.
#[derive(Default)]
struct Outbox {
    frames: RefCell<Vec<u8>>,
    writer: RefCell<Option<Waker>>,
    closed: Cell<bool>,
}

impl Outbox {
    /// Appends a message and wakes the writer.
    fn push<B: Serialize + ?Sized, F: RpcFormat>(
        &self,
        header: &Header,
        body: Option<&B>,
        max: usize,
    ) -> Result<(), WriteError> {
        if self.closed.get() {
            return Ok(());
        }
        write_frame::<F, B>(header, body, max, &mut self.frames.borrow_mut())?;
        if let Some(w) = self.writer.borrow_mut().take() {
            w.wake();
        }
        Ok(())
    }

    /// The writer stops once what is queued has gone out.
    fn close(&self) {
        self.closed.set(true);
        if let Some(w) = self.writer.borrow_mut().take() {
            w.wake();
        }
    }
}

/// Writes what `outbox` collects, each batch in one write, until it is closed and empty; then
/// shuts the writing side.
async fn write_loop<S: FrameIo>(io: Rc<S>, outbox: Rc<Outbox>) -> Result<(), FramedError> {
    let mut spare = Vec::new();
    loop {
        let batch = poll_fn(|cx| {
            let mut frames = outbox.frames.borrow_mut();
            if !frames.is_empty() {
                return Poll::Ready(Some(std::mem::replace(
                    &mut *frames,
                    std::mem::take(&mut spare),
                )));
            }
            if outbox.closed.get() {
                return Poll::Ready(None);
            }
            *outbox.writer.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let Some(batch) = batch else {
            // Closed and all written: the peer reads the end after the last answer.
            return io.shutdown_write().await;
        };
        let (r, mut back) = io.write_all(batch).await;
        r?;
        back.clear();
        spare = back;
    }
}

/// Why a call has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError<E> {
    /// The server answered with a fault: its handler's error, or why it did not run it.
    #[error("{0:?}")]
    Fault(Fault<E>),
    /// No answer came before the call's deadline; the server was told to cancel it.
    #[error("no answer before the call's deadline")]
    TimedOut,
    /// The answer's body is not the expected type.
    #[error("unreadable answer: {0}")]
    BadResponse(FormatError),
    /// The request could not be written (over the frame limit, or the format refused it).
    #[error("the request could not be written: {0}")]
    Request(WriteError),
    /// The connection closed or failed before the answer came; every call on it ends so.
    #[error("the connection ended: {0}")]
    Closed(Rc<str>),
}

/// What came for a call.
enum Answer {
    Reply(Bytes, Option<std::ops::Range<usize>>),
    Fail(Bytes, Option<std::ops::Range<usize>>),
    Closed(Rc<str>),
}

#[derive(Default)]
struct Slot {
    answer: Option<Answer>,
    waker: Option<Waker>,
}

struct ClientShared {
    outbox: Rc<Outbox>,
    calls: RefCell<HashMap<u64, Slot>>,
    next_id: Cell<u64>,
    closed: RefCell<Option<Rc<str>>>,
    max_frame: usize,
    call_timeout: Option<Duration>,
}

impl ClientShared {
    /// Ends the connection for every call, now and later.
    fn close(&self, why: Rc<str>) {
        if self.closed.borrow().is_some() {
            return;
        }
        *self.closed.borrow_mut() = Some(why.clone());
        let wakers: Vec<Waker> = self
            .calls
            .borrow_mut()
            .values_mut()
            .filter_map(|slot| {
                slot.answer.get_or_insert(Answer::Closed(why.clone()));
                slot.waker.take()
            })
            .collect();
        wakers.into_iter().for_each(Waker::wake);
        self.outbox.close();
    }
}

/// An RPC client on one connection: requests `Q`, answers `R`, handler errors `E`, in format
/// `F`. Calls may be made from many tasks at once (`call` takes `&self`; clone the `Rc` it is
/// in); their answers may come in any order. The connection's reader and writer are tasks on
/// this core, stopped when the client is dropped.
pub struct Client<Q, R, E, F> {
    shared: Rc<ClientShared>,
    reader: JoinHandle<()>,
    writer: Option<JoinHandle<()>>,
    _types: PhantomData<Signature<Q, R, E, F>>,
}

/// What a client sends and gets, for its `PhantomData` (no value of them is held).
type Signature<Q, R, E, F> = fn(&Q, F) -> Result<R, E>;

impl<Q, R, E, F> std::fmt::Debug for Client<Q, R, E, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("in_flight", &self.shared.calls.borrow().len())
            .field("closed", &self.shared.closed.borrow())
            .finish()
    }
}

impl<Q, R, E, F> Drop for Client<Q, R, E, F> {
    fn drop(&mut self) {
        self.reader.abort();
        if let Some(writer) = &mut self.writer {
            writer.abort();
        }
    }
}

impl<Q, R, E, F> Client<Q, R, E, F>
where
    Q: Serialize,
    R: DeserializeOwned,
    E: DeserializeOwned,
    F: RpcFormat + 'static,
{
    /// A client on `io`, speaking format `F`.
    ///
    /// # Panics
    ///
    /// Panics when called outside a coring core (its reader and writer are tasks there).
    pub fn new<S: FrameIo + 'static>(io: S, _format: F, config: Config) -> Self {
        let io = Rc::new(io);
        let shared = Rc::new(ClientShared {
            outbox: Rc::default(),
            calls: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
            closed: RefCell::new(None),
            max_frame: config.max_frame,
            call_timeout: config.call_timeout,
        });
        let reader = coring::spawn_local(read_answers::<S, F>(io.clone(), shared.clone()));
        let writer = coring::spawn_local({
            let shared = shared.clone();
            async move {
                if let Err(e) = write_loop(io, shared.outbox.clone()).await {
                    shared.close(e.to_string().into());
                }
            }
        });
        Client {
            shared,
            reader,
            writer: Some(writer),
            _types: PhantomData,
        }
    }

    /// Calls with `request` and waits for the answer, at most `timeout` (or the config's
    /// `call_timeout`; with neither, as long as the connection lives). Dropping the returned
    /// future cancels the call: the server is told, and its answer, if it comes, is let go.
    pub async fn call(&self, request: &Q, timeout: Option<Duration>) -> Result<R, RpcError<E>> {
        let shared = &self.shared;
        if let Some(why) = shared.closed.borrow().clone() {
            return Err(RpcError::Closed(why));
        }
        let timeout = timeout.or(shared.call_timeout);
        let id = shared.next_id.get();
        shared.next_id.set(id.wrapping_add(1));
        let header = Header {
            id,
            kind: Kind::Call,
            timeout_ms: timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        };
        shared
            .outbox
            .push::<Q, F>(&header, Some(request), shared.max_frame)
            .map_err(RpcError::Request)?;
        shared.calls.borrow_mut().insert(id, Slot::default());
        let mut pending = Pending {
            shared,
            id,
            answered: false,
            cancel: cancel_frame::<F>,
        };
        let answer = poll_fn(|cx| {
            let mut calls = pending.shared.calls.borrow_mut();
            let Some(slot) = calls.get_mut(&id) else {
                return Poll::Ready(Answer::Closed("the call was lost".into()));
            };
            match slot.answer.take() {
                Some(answer) => Poll::Ready(answer),
                None => {
                    slot.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        });
        let answer = match timeout {
            Some(t) => match coring::time::timeout(t, answer).await {
                Ok(answer) => answer,
                Err(_) => return Err(RpcError::TimedOut),
            },
            None => answer.await,
        };
        pending.answered = true;
        drop(pending);
        match answer {
            Answer::Reply(message, body) => {
                F::read_body::<R>(&message, body).map_err(RpcError::BadResponse)
            }
            Answer::Fail(message, body) => match F::read_body::<Fault<E>>(&message, body) {
                Ok(fault) => Err(RpcError::Fault(fault)),
                Err(e) => Err(RpcError::BadResponse(e)),
            },
            Answer::Closed(why) => Err(RpcError::Closed(why)),
        }
    }

    /// Closes the connection cleanly: calls still waiting end with [`RpcError::Closed`], what
    /// was queued is written, then the writing side is shut (TLS: `close_notify`), so the
    /// server sees the end of the stream rather than a reset. Dropping the client instead
    /// stops its tasks where they are.
    pub async fn close(mut self) {
        self.shared.close("the client closed the connection".into());
        if let Some(writer) = self.writer.take() {
            let _ = writer.await;
        }
    }

    /// Calls waiting for their answers.
    pub fn in_flight(&self) -> usize {
        self.shared.calls.borrow().len()
    }

    /// Why the connection ended, once it has.
    pub fn closed(&self) -> Option<Rc<str>> {
        self.shared.closed.borrow().clone()
    }
}

fn cancel_frame<F: RpcFormat>(shared: &ClientShared, id: u64) {
    let header = Header {
        id,
        kind: Kind::Cancel,
        timeout_ms: None,
    };
    // A header alone always fits the frame limit.
    let _ = shared.outbox.push::<(), F>(&header, None, shared.max_frame);
}

/// A call in flight: dropped before its answer came (timed out, or its future dropped), it
/// tells the server to cancel.
struct Pending<'a> {
    shared: &'a ClientShared,
    id: u64,
    answered: bool,
    cancel: fn(&ClientShared, u64),
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let slot = self.shared.calls.borrow_mut().remove(&self.id);
        let open = self.shared.closed.borrow().is_none();
        if !self.answered && open && slot.is_some_and(|s| s.answer.is_none()) {
            (self.cancel)(self.shared, self.id);
        }
    }
}

/// The client's reader: hands each answer to its call.
async fn read_answers<S: FrameIo, F: RpcFormat>(io: Rc<S>, shared: Rc<ClientShared>) {
    let mut frames = Framed::new(io, LengthPrefixed::new(Prefix::U32, shared.max_frame));
    let why: Rc<str> = loop {
        let message = match frames.next().await {
            Ok(Some(message)) => message,
            Ok(None) => break "the server closed the connection".into(),
            Err(e) => break e.to_string().into(),
        };
        let (header, body) = match F::read_header(&message) {
            Ok(read) => read,
            Err(e) => break format!("an unreadable message from the server: {e}").into(),
        };
        let answer = match header.kind {
            Kind::Reply => Answer::Reply(message, body),
            Kind::Fail => Answer::Fail(message, body),
            Kind::Call | Kind::Cancel => {
                break format!("the server sent a {:?} message", header.kind).into();
            }
        };
        // An answer to a call that timed out or was dropped is let go.
        let waker = match shared.calls.borrow_mut().get_mut(&header.id) {
            Some(slot) if slot.answer.is_none() => {
                slot.answer = Some(answer);
                slot.waker.take()
            }
            _ => None,
        };
        if let Some(w) = waker {
            w.wake();
        }
    };
    shared.close(why);
}

/// How a connection's calls went, returned by [`serve`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeStats {
    /// Calls received.
    pub calls: u64,
    /// Calls answered with a reply.
    pub replies: u64,
    /// Calls whose handler returned an error.
    pub handler_errors: u64,
    /// Calls refused: over `max_in_flight`, a duplicate id, or an unreadable request.
    pub refused: u64,
    /// Calls stopped at their deadline.
    pub deadlines: u64,
    /// Calls the client cancelled while they ran.
    pub cancelled: u64,
    /// Handlers that panicked.
    pub panicked: u64,
    /// Answers that could not be sent (over the frame limit, or not writable in the
    /// format): a [`Fault::BadAnswer`] went instead.
    pub unsendable: u64,
}

/// Why [`serve`] stopped early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The stream failed or broke the framing.
    #[error("{0}")]
    Framed(#[from] FramedError),
    /// A message whose header is unreadable, or one only a server sends.
    #[error("a malformed message: {0}")]
    Malformed(String),
}

/// The calls a connection's server has running, by id.
#[derive(Default)]
struct Running {
    tasks: RefCell<HashMap<u64, JoinHandle<()>>>,
    /// `serve` waiting for the last one to end.
    drained: RefCell<Option<Waker>>,
    stats: RefCell<ServeStats>,
}

impl Running {
    fn remove(&self, id: u64) -> Option<JoinHandle<()>> {
        let task = self.tasks.borrow_mut().remove(&id);
        if self.tasks.borrow().is_empty()
            && let Some(w) = self.drained.borrow_mut().take()
        {
            w.wake();
        }
        task
    }
}

/// Serves calls on `io` until the client closes its side, then lets the calls in flight finish
/// and their answers go out. Each call runs `handler` in a task of its own, so a slow one holds
/// up none of the others; its answer is written when it is ready, in whatever order that is. A
/// call is stopped at its deadline (the client's `timeout_ms`, capped by
/// `config.call_timeout`) and answered [`Fault::DeadlineExceeded`]; one the client cancels is
/// stopped and not answered. A request that is not a `Q` is answered [`Fault::BadRequest`] and
/// the connection goes on; a message without a readable header ends it.
///
/// # Panics
///
/// Panics when called outside a coring core.
pub async fn serve<S, F, Q, R, E, H, Fut>(
    io: S,
    _format: F,
    config: Config,
    handler: H,
) -> Result<ServeStats, ServeError>
where
    S: FrameIo + 'static,
    F: RpcFormat + 'static,
    Q: DeserializeOwned + 'static,
    R: Serialize + 'static,
    E: Serialize + 'static,
    H: Fn(Q) -> Fut + 'static,
    Fut: Future<Output = Result<R, E>> + 'static,
{
    let io = Rc::new(io);
    let outbox = Rc::new(Outbox::default());
    let writer = coring::spawn_local(write_loop(io.clone(), outbox.clone())).cancel_on_drop();
    let running = Rc::new(Running::default());
    // However `serve` ends (returned, or its future dropped), no call's task outlives it.
    let _stop = StopCalls(running.clone());
    let handler = Rc::new(handler);
    let max = config.max_frame;
    let mut frames = Framed::new(io, LengthPrefixed::new(Prefix::U32, max));

    let ended: Result<(), ServeError> = loop {
        let message = match frames.next().await {
            Ok(Some(message)) => message,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e.into()),
        };
        let (header, body) = match F::read_header(&message) {
            Ok(read) => read,
            Err(e) => break Err(ServeError::Malformed(e)),
        };
        let id = header.id;
        match header.kind {
            Kind::Call => {}
            Kind::Cancel => {
                // Removed first: the task, dropped, then finds it gone and sends nothing.
                if let Some(mut task) = running.remove(id) {
                    task.abort();
                    running.stats.borrow_mut().cancelled += 1;
                }
                continue;
            }
            Kind::Reply | Kind::Fail => {
                break Err(ServeError::Malformed(format!(
                    "a {:?} message from the client",
                    header.kind
                )));
            }
        }
        running.stats.borrow_mut().calls += 1;
        let refusal = if running.tasks.borrow().contains_key(&id) {
            Some(Fault::DuplicateId)
        } else if running.tasks.borrow().len() >= config.max_in_flight {
            Some(Fault::Overloaded)
        } else {
            None
        };
        let request = match refusal {
            Some(fault) => Err(fault),
            None => F::read_body::<Q>(&message, body).map_err(|e| Fault::BadRequest(e.reason)),
        };
        let request = match request {
            Ok(request) => request,
            Err(fault) => {
                running.stats.borrow_mut().refused += 1;
                answer::<F, R, E>(&outbox, id, &Err(fault), max);
                continue;
            }
        };
        let limit = header
            .timeout_ms
            .map(Duration::from_millis)
            .into_iter()
            .chain(config.call_timeout)
            .min();
        let deadline = limit.map(|l| Instant::now() + l);
        // Most handlers answer at their first poll: those are answered here, without a task
        // (a panic is caught and answered as one). The others go on in a task of their own.
        let mut work = Box::pin(handler(request));
        let first = poll_fn(|cx| {
            Poll::Ready(std::panic::catch_unwind(std::panic::AssertUnwindSafe(
                || work.as_mut().poll(cx),
            )))
        })
        .await;
        match first {
            Ok(Poll::Ready(result)) => {
                let outcome = result.map_err(Fault::Handler);
                let sent = answer::<F, R, E>(&outbox, id, &outcome, max);
                let mut stats = running.stats.borrow_mut();
                match &outcome {
                    _ if !sent => stats.unsendable += 1,
                    Ok(_) => stats.replies += 1,
                    Err(_) => stats.handler_errors += 1,
                }
                continue;
            }
            Err(_) => {
                running.stats.borrow_mut().panicked += 1;
                answer_panicked::<F, R, E>(&outbox, id, max);
                continue;
            }
            Ok(Poll::Pending) => {}
        }
        let call = Call {
            id,
            running: running.clone(),
            outbox: outbox.clone(),
            max,
            answered: false,
            panicked: answer_panicked::<F, R, E>,
        };
        let task = coring::spawn_local(async move {
            let mut call = call;
            let outcome = match deadline {
                Some(d) => match coring::time::timeout_at(d, work).await {
                    Ok(r) => r.map_err(Fault::Handler),
                    Err(_) => Err(Fault::DeadlineExceeded),
                },
                None => work.await.map_err(Fault::Handler),
            };
            call.answered = true;
            let sent = answer::<F, R, E>(&call.outbox, id, &outcome, max);
            {
                let mut stats = call.running.stats.borrow_mut();
                match &outcome {
                    _ if !sent => stats.unsendable += 1,
                    Ok(_) => stats.replies += 1,
                    Err(Fault::DeadlineExceeded) => stats.deadlines += 1,
                    Err(_) => stats.handler_errors += 1,
                }
            }
            call.running.remove(id);
        });
        running.tasks.borrow_mut().insert(id, task);
    };

    // The calls in flight finish and answer (unless the stream failed: then they stop).
    if ended.is_ok() {
        poll_fn(|cx| {
            if running.tasks.borrow().is_empty() {
                Poll::Ready(())
            } else {
                *running.drained.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        outbox.close();
        let _ = writer.await;
    }
    ended?;
    let stats = running.stats.borrow().clone();
    Ok(stats)
}

/// Stops the calls still running when dropped.
struct StopCalls(Rc<Running>);

impl Drop for StopCalls {
    fn drop(&mut self) {
        // Taken out first: each task, dropped, finds its place gone and says nothing.
        let tasks: Vec<_> = self.0.tasks.borrow_mut().drain().collect();
        for (_, mut task) in tasks {
            task.abort();
        }
    }
}

/// Writes the answer to call `id`; false if it could not be written, and a
/// [`Fault::BadAnswer`] saying why went instead.
fn answer<F: RpcFormat, R: Serialize, E: Serialize>(
    outbox: &Outbox,
    id: u64,
    outcome: &Result<R, Fault<E>>,
    max: usize,
) -> bool {
    let written = match outcome {
        Ok(reply) => outbox.push::<R, F>(&header(id, Kind::Reply), Some(reply), max),
        Err(fault) => outbox.push::<Fault<E>, F>(&header(id, Kind::Fail), Some(fault), max),
    };
    match written {
        Ok(()) => true,
        Err(e) => {
            // Too large for a frame, or not writable in the format: the client gets a fault
            // saying so instead of waiting for ever.
            let fault: Fault<E> = Fault::BadAnswer(e.to_string());
            let _ = outbox.push::<Fault<E>, F>(&header(id, Kind::Fail), Some(&fault), max);
            false
        }
    }
}

fn answer_panicked<F: RpcFormat, R: Serialize, E: Serialize>(outbox: &Outbox, id: u64, max: usize) {
    answer::<F, R, E>(outbox, id, &Err(Fault::Panicked), max);
}

fn header(id: u64, kind: Kind) -> Header {
    Header {
        id,
        kind,
        timeout_ms: None,
    }
}

/// A call's task's hold on its place: dropped without answering (its handler panicked), it
/// answers [`Fault::Panicked`]; dropped after a cancel took its place, it says nothing.
struct Call {
    id: u64,
    running: Rc<Running>,
    outbox: Rc<Outbox>,
    max: usize,
    answered: bool,
    panicked: fn(&Outbox, u64, usize),
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.answered && self.running.remove(self.id).is_some() {
            self.running.stats.borrow_mut().panicked += 1;
            (self.panicked)(&self.outbox, self.id, self.max);
        }
    }
}
