//! Rooms on the engine: members on any core, one message per core per publish.
//!
//! A [`Hub`] is made before the runtime runs and cloned into every core, where
//! [`Hub::start`] gives that core's [`Rooms`]. Each room has a home core (its name's hash):
//! the home numbers the room's messages, keeps its [`History`], and knows how many members each
//! core has. [`Rooms::publish`] on any core reaches the home (through the cross-core mailbox
//! unless it is the home), which sends each message once to every core with members, never
//! once per member; what one core sends another in a turn travels as one mail. Each core then
//! hands the message to its members' [`MemberQueue`]s and writes to every member with something
//! queued, one send per member per turn with all it has, the payload's bytes shared.
//!
//! Every member sees one order, the home's (each message carries its `seq`). A member that
//! joins with the last `seq` it saw gets what the history still holds after it before anything
//! new. What a member that falls behind costs is its room's [`Policy`]: it never holds up the
//! other members.
//!
//! ```no_run
//! use coring_protocols::rooms::{Delivery, Gone, Hub, Member};
//!
//! struct Printer;
//! impl Member for Printer {
//!     async fn send(&self, batch: &[Delivery]) -> Result<(), Gone> {
//!         for d in batch {
//!             println!("{}: {:?}", d.seq, d.payload);
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let rt = coring::Runtime::builder().cores(2).build()?;
//! let hub: Hub<Printer> = Hub::new(&rt);
//! rt.run(|_core| {
//!     let hub = hub.clone();
//!     async move {
//!         let rooms = hub.start();
//!         let _me = rooms.join("lobby", Printer, None);
//!         rooms.publish("lobby", "hello".into());
//!     }
//! })?;
//! # Ok::<(), coring::Error>(())
//! ```

mod bridge;
mod netcode;
mod ws;

pub use bridge::{Bridge, BridgeConfig, BridgeCounters};
pub use netcode::{NetcodeMember, NetcodeOutbox};
pub use ws::WsMember;

pub use crate::room::{
    CutOff, Delivery, History, MemberQueue, Offer, Policy, RoomConfig, Standing,
};

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::marker::PhantomData;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::task::{Poll, Waker};

use bytes::Bytes;
use coring::shard::{Mailbox, SendError};

/// A member of a room, on the core where it joined: whatever its messages are written to (a
/// WebSocket session, a netcode session, a stream).
pub trait Member: 'static {
    /// Writes `batch`, messages in the room's order (one turn's worth), and resolves once the
    /// member's transport has taken them. An error means the member is gone: it leaves the
    /// room.
    fn send(&self, batch: &[Delivery]) -> impl Future<Output = Result<(), Gone>>;

    /// The room stopped delivering to this member ([`Policy::Disconnect`], or
    /// [`Policy::Ordered`] past what the history holds). The member should close.
    fn cut_off(&self, why: CutOff) {
        let _ = why;
    }

    /// The member joined saying the last `seq` it saw, and `count` messages after that are no
    /// longer in the room's history: it gets what is there, and should start over from a full
    /// state.
    fn missed(&self, count: u64) {
        let _ = count;
    }
}

/// The member is gone: a write to it failed, or it closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the member is gone")]
pub struct Gone;

/// How each room is configured: the same answer on every core.
type Configure = dyn Fn(&str) -> RoomConfig + Send + Sync;

/// The rooms of one runtime. Make it before the runtime runs, clone it into every core and
/// call [`Hub::start`] once on each.
pub struct Hub<M> {
    shared: Arc<Shared>,
    _member: PhantomData<fn() -> M>,
}

impl<M> Clone for Hub<M> {
    fn clone(&self) -> Self {
        Hub {
            shared: Arc::clone(&self.shared),
            _member: PhantomData,
        }
    }
}

impl<M> std::fmt::Debug for Hub<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("cores", &self.shared.cores)
            .finish_non_exhaustive()
    }
}

struct Shared {
    mail: Mailbox<Vec<Note>>,
    cores: usize,
    configure: Box<Configure>,
    counters: Box<[CoreCounters]>,
    started: Box<[AtomicBool]>,
    /// Cores with a `Rooms` handle or a member alive; the cores' tasks end when none is left.
    active: AtomicUsize,
}

/// What crossed between cores and what members were handed, on one core (read from anywhere
/// with [`Hub::counters`]).
#[derive(Debug, Default)]
pub struct CoreCounters {
    /// Members on the core now.
    pub members: AtomicU64,
    /// Messages numbered by rooms whose home is this core.
    pub published: AtomicU64,
    /// Messages handed to members' queues.
    pub queued: AtomicU64,
    /// Writes to members (each with one turn's messages).
    pub sends: AtomicU64,
    /// Bytes handed to members' writes.
    pub bytes: AtomicU64,
    /// Messages replaced by newer ones with the same key.
    pub conflated: AtomicU64,
    /// Messages dropped for slow members.
    pub dropped: AtomicU64,
    /// Members cut off by their room's policy.
    pub cut_off: AtomicU64,
    /// Times a member fell behind and caught up from its room's history.
    pub caught_up: AtomicU64,
    /// Mails sent to other cores (each one turn's notes for that core).
    pub mails: AtomicU64,
    /// Times another core's mailbox was full and a mail waited for room.
    pub mail_waits: AtomicU64,
}

/// One core's figures for one room, from [`Rooms::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoomStats {
    /// Members on this core.
    pub members: usize,
    /// Messages that reached this core.
    pub messages: u64,
    /// Messages handed to members' writes.
    pub taken: u64,
    /// Bytes handed to members' writes.
    pub bytes: u64,
    /// Messages replaced by newer ones with the same key.
    pub conflated: u64,
    /// Messages dropped for slow members.
    pub dropped: u64,
    /// Members cut off.
    pub cut_off: u64,
    /// How many messages the slowest member here is behind.
    pub slowest_lag: u64,
}

/// What one core tells another.
#[derive(Debug)]
enum Note {
    /// To the home: number this and send it to the members.
    Publish {
        room: Arc<str>,
        key: Option<u64>,
        payload: Bytes,
    },
    /// To the home: `member` on `core` joins (or, `rejoin`, catches up) and saw everything
    /// before `since`.
    Join {
        room: Arc<str>,
        core: usize,
        member: u64,
        since: Option<u64>,
        rejoin: bool,
    },
    /// To the home: a member on `core` left.
    Leave { room: Arc<str>, core: usize },
    /// From the home: a message for the members here.
    Deliver { room: Arc<str>, delivery: Delivery },
    /// From the home: where `member` starts.
    Start {
        room: Arc<str>,
        member: u64,
        next: u64,
        backlog: Vec<Delivery>,
        missed: u64,
    },
    /// The last handle went: the core's task ends.
    Quit,
}

/// Mail a core's mailbox holds (each one turn's notes from one core).
const MAILBOX: usize = 1024;
/// Mails a core takes before it writes to its members and sends its own mail.
const MAILS_PER_TURN: usize = 64;

impl<M: Member> Hub<M> {
    /// Rooms for every core of `runtime`, each configured by [`RoomConfig::default`].
    pub fn new(runtime: &coring::Runtime) -> Hub<M> {
        Hub::with_config(runtime, |_| RoomConfig::default())
    }

    /// Rooms for every core of `runtime`, room `name` configured by `configure(name)` (called
    /// on each core where the room is used, so it must give the same answer everywhere).
    pub fn with_config(
        runtime: &coring::Runtime,
        configure: impl Fn(&str) -> RoomConfig + Send + Sync + 'static,
    ) -> Hub<M> {
        let cores = runtime.cores();
        Hub {
            shared: Arc::new(Shared {
                mail: Mailbox::new(runtime, MAILBOX),
                cores,
                configure: Box::new(configure),
                counters: (0..cores).map(|_| CoreCounters::default()).collect(),
                started: (0..cores).map(|_| AtomicBool::new(false)).collect(),
                active: AtomicUsize::new(0),
            }),
            _member: PhantomData,
        }
    }

    /// This core's rooms, and the task that carries its mail and writes to its members (it
    /// runs until no core holds a [`Rooms`] or a [`Membership`] any more).
    ///
    /// Call it in the core's root future (or a task on the core).
    ///
    /// # Panics
    ///
    /// Panics off a core of the hub's runtime, or on a second call on one core.
    pub fn start(&self) -> Rooms<M> {
        let core = coring::runtime::core_index();
        let first = !self.shared.started[core].swap(true, Relaxed);
        assert!(first, "Hub::start called twice on core {core}");
        self.shared.active.fetch_add(1, Relaxed);
        let local = Rc::new(Local {
            shared: Arc::clone(&self.shared),
            core,
            homes: RefCell::default(),
            rooms: RefCell::default(),
            outbox: RefCell::new((0..self.shared.cores).map(|_| Vec::new()).collect()),
            waiting: RefCell::new(vec![false; self.shared.cores]),
            ready: RefCell::default(),
            later: RefCell::default(),
            wake: Cell::new(None),
            dirty: Cell::new(false),
            next_member: Cell::new(0),
        });
        coring::spawn_local(pump(Rc::clone(&local)));
        Rooms {
            anchor: Rc::new(Anchor(local)),
        }
    }

    /// What core `core` has counted (for any core, from anywhere).
    ///
    /// # Panics
    ///
    /// Panics if `core` is out of range.
    pub fn counters(&self, core: usize) -> &CoreCounters {
        &self.shared.counters[core]
    }
}

/// This core's rooms: join, leave, publish. Clone it into the core's tasks.
pub struct Rooms<M: Member> {
    anchor: Rc<Anchor<M>>,
}

impl<M: Member> Clone for Rooms<M> {
    fn clone(&self) -> Self {
        Rooms {
            anchor: Rc::clone(&self.anchor),
        }
    }
}

impl<M: Member> std::fmt::Debug for Rooms<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rooms")
            .field("core", &self.anchor.0.core)
            .field("rooms", &self.anchor.0.rooms.borrow().len())
            .finish_non_exhaustive()
    }
}

/// Held by every handle of a core; when the last one goes the core is no longer active.
struct Anchor<M: Member>(Rc<Local<M>>);

impl<M: Member> Drop for Anchor<M> {
    fn drop(&mut self) {
        let shared = &self.0.shared;
        if shared.active.fetch_sub(1, Relaxed) == 1 {
            for core in 0..shared.cores {
                if core == self.0.core {
                    self.0.outbox.borrow_mut()[core].push(Note::Quit);
                    self.0.poke();
                } else {
                    // A full mailbox has mail the core is about to take: it checks `active`
                    // after each turn as well.
                    let _ = shared.mail.try_send(core, vec![Note::Quit]);
                }
            }
        }
    }
}

impl<M: Member> Rooms<M> {
    /// `member` joins `room` (on this core). With `since`, the `seq` after the last message it
    /// saw, it first gets what the room's history holds from there on; without, it gets the
    /// messages published after its join reaches the room's home. It leaves when the
    /// [`Membership`] is dropped, when a write to it fails, or when its room's policy cuts it
    /// off.
    pub fn join(&self, room: &str, member: M, since: Option<u64>) -> Membership<M> {
        let local = &self.anchor.0;
        let room: Arc<str> = Arc::from(room);
        let id = local.next_member.get();
        local.next_member.set(id + 1);
        let config = {
            let mut rooms = local.rooms.borrow_mut();
            let entry = rooms
                .entry(Arc::clone(&room))
                .or_insert_with(|| LocalRoom::new((local.shared.configure)(&room)));
            let slot = Rc::new(Slot {
                id,
                room: Arc::clone(&room),
                member,
                queue: RefCell::new(MemberQueue::new(entry.config)),
                writing: Cell::new(false),
                left: Cell::new(false),
            });
            entry.members.push(Rc::clone(&slot));
            drop(rooms);
            local.counters().members.fetch_add(1, Relaxed);
            local.note_home(
                &room,
                Note::Join {
                    room: Arc::clone(&room),
                    core: local.core,
                    member: id,
                    since,
                    rejoin: false,
                },
            );
            slot
        };
        Membership {
            slot: config,
            room,
            rooms: self.clone(),
        }
    }

    /// Publishes `payload` to `room`'s members on every core, in the room's order.
    pub fn publish(&self, room: &str, payload: Bytes) {
        self.publish_keyed(room, None, payload);
    }

    /// Publishes `payload` as the latest state of entity `key` (see [`Policy::Conflate`]).
    pub fn publish_keyed(&self, room: &str, key: Option<u64>, payload: Bytes) {
        let local = &self.anchor.0;
        let room: Arc<str> = Arc::from(room);
        let note = Note::Publish {
            room: Arc::clone(&room),
            key,
            payload,
        };
        local.note_home(&room, note);
    }

    /// This core's figures for `room` (`None` when it has no members here).
    pub fn stats(&self, room: &str) -> Option<RoomStats> {
        let rooms = self.anchor.0.rooms.borrow();
        let r = rooms.get(room)?;
        let mut s = r.stats;
        s.members = r.members.len();
        s.slowest_lag = r
            .members
            .iter()
            .map(|m| m.queue.borrow().lag(r.newest))
            .max()
            .unwrap_or(0);
        Some(s)
    }

    /// The core these rooms are on.
    pub fn core(&self) -> usize {
        self.anchor.0.core
    }

    /// The core that is `room`'s home.
    pub fn home_of(&self, room: &str) -> usize {
        home(room, self.anchor.0.shared.cores)
    }
}

/// A member's place in a room; dropping it leaves.
pub struct Membership<M: Member> {
    slot: Rc<Slot<M>>,
    room: Arc<str>,
    rooms: Rooms<M>,
}

impl<M: Member> std::fmt::Debug for Membership<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("room", &self.room)
            .field("standing", &self.standing())
            .finish_non_exhaustive()
    }
}

impl<M: Member> Membership<M> {
    /// The member.
    pub fn member(&self) -> &M {
        &self.slot.member
    }

    /// The room's name.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// Where the member stands: joining (the home has not answered yet), live, catching up, or
    /// cut off.
    pub fn standing(&self) -> Standing {
        self.slot.queue.borrow().standing()
    }

    /// The `seq` of the last message handed to the member's writes: what it says it saw when
    /// it comes back.
    pub fn last_seq(&self) -> Option<u64> {
        self.slot.queue.borrow().last_taken()
    }

    /// Whether the member is still in the room.
    pub fn is_member(&self) -> bool {
        !self.slot.left.get()
    }
}

impl<M: Member> Drop for Membership<M> {
    fn drop(&mut self) {
        self.rooms.anchor.0.leave(&self.room, &self.slot);
    }
}

/// A member and what it is owed, on its core.
struct Slot<M> {
    id: u64,
    room: Arc<str>,
    member: M,
    queue: RefCell<MemberQueue>,
    /// A write task has it.
    writing: Cell<bool>,
    left: Cell<bool>,
}

/// A room as one core with members in it sees it.
struct LocalRoom<M> {
    config: RoomConfig,
    members: Vec<Rc<Slot<M>>>,
    newest: Option<u64>,
    stats: RoomStats,
}

impl<M> LocalRoom<M> {
    fn new(config: RoomConfig) -> LocalRoom<M> {
        LocalRoom {
            config,
            members: Vec::new(),
            newest: None,
            stats: RoomStats::default(),
        }
    }
}

/// A room as its home sees it.
struct HomeRoom {
    history: History,
    /// Members per core.
    members: Vec<u32>,
}

/// A core's side of the hub.
struct Local<M> {
    shared: Arc<Shared>,
    core: usize,
    homes: RefCell<HashMap<Arc<str>, HomeRoom>>,
    rooms: RefCell<HashMap<Arc<str>, LocalRoom<M>>>,
    /// Notes for each core, sent at the end of the turn (this core's own are handled there).
    outbox: RefCell<Vec<Vec<Note>>>,
    /// Cores whose mailbox was full: a task waits to send them what they are owed, and later
    /// notes wait behind it.
    waiting: RefCell<Vec<bool>>,
    /// Members with messages queued and no write task.
    ready: RefCell<Vec<Rc<Slot<M>>>>,
    /// Members' callbacks, made once no state is borrowed.
    later: RefCell<Vec<(Rc<Slot<M>>, Callback)>>,
    wake: Cell<Option<Waker>>,
    /// The task has work besides its mail.
    dirty: Cell<bool>,
    next_member: Cell<u64>,
}

#[derive(Clone, Copy)]
enum Callback {
    CutOff(CutOff),
    Missed(u64),
}

/// The core that is `room`'s home.
fn home(room: &str, cores: usize) -> usize {
    // FNV-1a: cheap, and the same on every core and every run.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    (h % cores.max(1) as u64) as usize
}

impl<M: Member> Local<M> {
    fn counters(&self) -> &CoreCounters {
        &self.shared.counters[self.core]
    }

    /// Wakes this core's task.
    fn poke(&self) {
        self.dirty.set(true);
        if let Some(w) = self.wake.take() {
            w.wake();
        }
    }

    /// Sends a note to `room`'s home (kept for the end of the turn, even when that is here, so
    /// that a turn's publishes go out together).
    fn note_home(&self, room: &str, note: Note) {
        let home = home(room, self.shared.cores);
        self.outbox.borrow_mut()[home].push(note);
        self.poke();
    }

    fn leave(&self, room: &Arc<str>, slot: &Rc<Slot<M>>) {
        if slot.left.replace(true) {
            return;
        }
        self.counters().members.fetch_sub(1, Relaxed);
        let mut rooms = self.rooms.borrow_mut();
        if let Some(r) = rooms.get_mut(room) {
            r.members.retain(|m| !Rc::ptr_eq(m, slot));
            if r.members.is_empty() {
                rooms.remove(room);
            }
        }
        drop(rooms);
        self.note_home(
            room,
            Note::Leave {
                room: Arc::clone(room),
                core: self.core,
            },
        );
    }

    /// Handles one note addressed to this core.
    fn handle(&self, note: Note) {
        match note {
            Note::Publish { room, key, payload } => {
                let mut homes = self.homes.borrow_mut();
                let Some(home) = homes.get_mut(&room) else {
                    // No member anywhere: nobody to number it for.
                    return;
                };
                let delivery = home.history.push(key, payload);
                self.counters().published.fetch_add(1, Relaxed);
                let mut outbox = self.outbox.borrow_mut();
                let mut here = false;
                for (core, &n) in home.members.iter().enumerate() {
                    if n == 0 {
                        continue;
                    }
                    if core == self.core {
                        here = true;
                    } else {
                        outbox[core].push(Note::Deliver {
                            room: Arc::clone(&room),
                            delivery: delivery.clone(),
                        });
                    }
                }
                drop((outbox, homes));
                if here {
                    self.deliver(&room, &delivery);
                }
            }
            Note::Join {
                room,
                core,
                member,
                since,
                rejoin,
            } => {
                let mut homes = self.homes.borrow_mut();
                let home = homes.entry(Arc::clone(&room)).or_insert_with(|| HomeRoom {
                    history: History::new((self.shared.configure)(&room).history),
                    members: vec![0; self.shared.cores],
                });
                if !rejoin {
                    home.members[core] += 1;
                }
                let catchup = since.map(|s| home.history.since(s)).unwrap_or_default();
                let start = Note::Start {
                    room,
                    member,
                    next: home.history.next_seq(),
                    backlog: catchup.deliveries,
                    missed: catchup.missed,
                };
                drop(homes);
                if core == self.core {
                    self.handle(start);
                } else {
                    self.outbox.borrow_mut()[core].push(start);
                }
            }
            Note::Leave { room, core } => {
                let mut homes = self.homes.borrow_mut();
                if let Some(home) = homes.get_mut(&room) {
                    home.members[core] = home.members[core].saturating_sub(1);
                    if home.members.iter().all(|&n| n == 0) {
                        // The history goes with the last member: a room nobody is in is gone.
                        homes.remove(&room);
                    }
                }
            }
            Note::Deliver { room, delivery } => self.deliver(&room, &delivery),
            Note::Start {
                room,
                member,
                next,
                backlog,
                missed,
            } => {
                let rooms = self.rooms.borrow();
                let Some(slot) = rooms
                    .get(&room)
                    .and_then(|r| r.members.iter().find(|m| m.id == member))
                else {
                    // It left before the home answered.
                    return;
                };
                let slot = Rc::clone(slot);
                drop(rooms);
                let catching_up = slot.queue.borrow().is_catching_up();
                if missed > 0 {
                    if catching_up {
                        let why = CutOff::Lagged { missed };
                        slot.queue.borrow_mut().cut_off(why);
                        self.cut_off(&room, &slot, why);
                        return;
                    }
                    self.later
                        .borrow_mut()
                        .push((Rc::clone(&slot), Callback::Missed(missed)));
                }
                if catching_up {
                    self.counters().caught_up.fetch_add(1, Relaxed);
                }
                slot.queue.borrow_mut().start(next, backlog);
                self.make_ready(&slot);
            }
            Note::Quit => {}
        }
    }

    /// A message reached this core: every member's queue is offered it.
    fn deliver(&self, room: &Arc<str>, d: &Delivery) {
        let mut rooms = self.rooms.borrow_mut();
        let Some(r) = rooms.get_mut(room) else {
            return;
        };
        r.newest = Some(d.seq);
        r.stats.messages += 1;
        let mut cut = Vec::new();
        let mut ready = self.ready.borrow_mut();
        let (mut queued, mut conflated, mut dropped) = (0, 0, 0);
        for slot in &r.members {
            match slot.queue.borrow_mut().offer(d) {
                Offer::Queued => queued += 1,
                Offer::Conflated => conflated += 1,
                Offer::DroppedOldest(n) => {
                    queued += 1;
                    dropped += n as u64;
                }
                Offer::Skipped | Offer::Behind => continue,
                Offer::CutOff(why) => {
                    cut.push((Rc::clone(slot), why));
                    continue;
                }
            }
            if !slot.writing.get() {
                slot.writing.set(true);
                ready.push(Rc::clone(slot));
            }
        }
        r.stats.conflated += conflated;
        r.stats.dropped += dropped;
        drop((ready, rooms));
        let c = self.counters();
        c.queued.fetch_add(queued, Relaxed);
        c.conflated.fetch_add(conflated, Relaxed);
        c.dropped.fetch_add(dropped, Relaxed);
        for (slot, why) in cut {
            self.cut_off(room, &slot, why);
        }
    }

    /// The policy cut a member off: it leaves, and is told once nothing is borrowed.
    fn cut_off(&self, room: &Arc<str>, slot: &Rc<Slot<M>>, why: CutOff) {
        self.counters().cut_off.fetch_add(1, Relaxed);
        if let Some(r) = self.rooms.borrow_mut().get_mut(room) {
            r.stats.cut_off += 1;
        }
        self.leave(room, slot);
        self.later
            .borrow_mut()
            .push((Rc::clone(slot), Callback::CutOff(why)));
    }

    /// Puts a member with something queued and no write task on the list for one.
    fn make_ready(&self, slot: &Rc<Slot<M>>) {
        if !slot.writing.get() && slot.queue.borrow().has_queued() {
            slot.writing.set(true);
            self.ready.borrow_mut().push(Rc::clone(slot));
        }
    }

    /// Sends each core what it is owed; this core's own notes are handled here.
    fn send_mail(self: &Rc<Self>) {
        loop {
            let own = std::mem::take(&mut self.outbox.borrow_mut()[self.core]);
            if own.is_empty() {
                break;
            }
            for note in own {
                self.handle(note);
            }
        }
        for core in 0..self.shared.cores {
            if core == self.core || self.waiting.borrow()[core] {
                continue;
            }
            let notes = std::mem::take(&mut self.outbox.borrow_mut()[core]);
            if notes.is_empty() {
                continue;
            }
            self.counters().mails.fetch_add(1, Relaxed);
            match self.shared.mail.try_send(core, notes) {
                Ok(()) => {}
                Err(SendError::Full(notes)) => {
                    self.counters().mail_waits.fetch_add(1, Relaxed);
                    self.waiting.borrow_mut()[core] = true;
                    let local = Rc::clone(self);
                    coring::spawn_local(async move {
                        // The other core never waits on this one, so room comes.
                        let _ = local.shared.mail.send(core, notes).await;
                        local.waiting.borrow_mut()[core] = false;
                        local.poke();
                    });
                }
                // A core that stopped has no members to write to.
                Err(SendError::NoSuchCore(_)) => {}
            }
        }
    }

    /// Starts one task that writes to every member on the ready list.
    fn start_writers(self: &Rc<Self>) {
        let ready = std::mem::take(&mut *self.ready.borrow_mut());
        if ready.is_empty() {
            return;
        }
        let local = Rc::clone(self);
        coring::spawn_local(async move {
            coring::task::join_all(ready.into_iter().map(|slot| write(&local, slot))).await;
        });
    }

    /// Members' callbacks, now that nothing is borrowed.
    fn run_callbacks(&self) {
        loop {
            let later = std::mem::take(&mut *self.later.borrow_mut());
            if later.is_empty() {
                return;
            }
            for (slot, callback) in later {
                match callback {
                    Callback::CutOff(why) => slot.member.cut_off(why),
                    Callback::Missed(n) => slot.member.missed(n),
                }
            }
        }
    }
}

/// Writes a member's messages until it has none queued, one send with all it holds at a time.
async fn write<M: Member>(local: &Rc<Local<M>>, slot: Rc<Slot<M>>) {
    let mut batch = Vec::new();
    loop {
        batch.clear();
        slot.queue.borrow_mut().take(&mut batch);
        if batch.is_empty() || slot.left.get() {
            slot.writing.set(false);
            return;
        }
        let bytes: usize = batch.iter().map(|d| d.payload.len()).sum();
        let counters = local.counters();
        counters.sends.fetch_add(1, Relaxed);
        counters.bytes.fetch_add(bytes as u64, Relaxed);
        let result = slot.member.send(&batch).await;
        if let Some(r) = local.rooms.borrow_mut().get_mut(&slot.room) {
            r.stats.taken += batch.len() as u64;
            r.stats.bytes += bytes as u64;
        }
        if result.is_err() {
            slot.writing.set(false);
            local.leave(&slot.room, &slot);
            return;
        }
        let catch_up = slot.queue.borrow_mut().written();
        if let Some(from) = catch_up
            && !slot.left.get()
        {
            local.note_home(
                &slot.room,
                Note::Join {
                    room: Arc::clone(&slot.room),
                    core: local.core,
                    member: slot.id,
                    since: Some(from),
                    rejoin: true,
                },
            );
        }
    }
}

/// A core's task: takes mail, writes to members, sends mail, until no handle is left anywhere.
async fn pump<M: Member>(local: Rc<Local<M>>) {
    let mail = local.shared.mail.clone();
    loop {
        let first = {
            let mut recv = pin!(mail.recv());
            poll_fn(|cx| {
                if local.dirty.replace(false) {
                    return Poll::Ready(None);
                }
                match recv.as_mut().poll(cx) {
                    Poll::Ready(notes) => Poll::Ready(Some(notes)),
                    Poll::Pending => {
                        local.wake.set(Some(cx.waker().clone()));
                        Poll::Pending
                    }
                }
            })
            .await
        };
        let mut next = first;
        let mut taken = 0;
        while let Some(notes) = next {
            for note in notes {
                local.handle(note);
            }
            taken += 1;
            next = if taken < MAILS_PER_TURN {
                mail.try_recv()
            } else {
                None
            };
        }
        if taken == MAILS_PER_TURN {
            // More may wait: the next turn takes it.
            local.dirty.set(true);
        }
        local.send_mail();
        local.start_writers();
        local.run_callbacks();
        // Callbacks may have queued notes or writes.
        if !local.ready.borrow().is_empty() || local.outbox.borrow().iter().any(|o| !o.is_empty()) {
            local.dirty.set(true);
        }
        if local.shared.active.load(Relaxed) == 0 {
            return;
        }
    }
}
