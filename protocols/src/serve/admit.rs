//! Admission control on a listener: who may connect (allow and deny lists), how fast each
//! source may open connections and send requests (token buckets), and how many connections one
//! source may hold. Checked on the accepted socket before TLS or HTTP spends anything on it
//! (behind a PROXY listener, on the client the header names, before HTTP).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::admission::{AccessList, RateLimit, SourceLimiter};
use crate::cidr::canonical;

/// A listener's admission rules. Limits hold per core: a source whose connections the kernel
/// spreads over N cores may open up to N times `connections` (and hold N times `per_source`)
/// across the process.
#[derive(Clone, Debug, Default)]
pub struct Admission {
    /// Which sources may connect at all.
    pub access: AccessList,
    /// New connections per source: beyond the bucket, a connection is closed at once.
    pub connections: Option<RateLimit>,
    /// Requests per source, across its connections: beyond the bucket, a request is answered
    /// `429 Too Many Requests` without reaching the handler.
    pub requests: Option<RateLimit>,
    /// Connections one source may hold open at once.
    pub per_source: Option<u32>,
}

/// Why a connection was refused before a byte of it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The access list does not admit its source.
    Denied,
    /// Its source's connection bucket is empty.
    RateLimited,
    /// Its source holds `per_source` connections already.
    OverSourceCap,
    /// The core serves `max_connections` already.
    OverCapacity,
}

/// What admission did, across all cores and listeners.
#[derive(Debug)]
pub struct AdmissionCounters {
    /// Connections let through.
    pub admitted: AtomicU64,
    /// Refused by the access list.
    pub denied: AtomicU64,
    /// Refused by the source's connection bucket.
    pub rate_limited: AtomicU64,
    /// Refused because the source held `per_source` connections already.
    pub over_source_cap: AtomicU64,
    /// Refused because the core served `max_connections` already.
    pub over_total: AtomicU64,
    /// Requests answered 429 by the source's request bucket.
    pub requests_limited: AtomicU64,
}

/// The process's admission counters.
pub fn admission_counters() -> &'static AdmissionCounters {
    static COUNTERS: AdmissionCounters = AdmissionCounters {
        admitted: AtomicU64::new(0),
        denied: AtomicU64::new(0),
        rate_limited: AtomicU64::new(0),
        over_source_cap: AtomicU64::new(0),
        over_total: AtomicU64::new(0),
        requests_limited: AtomicU64::new(0),
    };
    &COUNTERS
}

pub(crate) fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One core's state of a listener's admission.
pub(crate) struct Gate {
    access: AccessList,
    connections: Option<RefCell<SourceLimiter>>,
    requests: Option<RefCell<SourceLimiter>>,
    per_source: Option<u32>,
    /// Connections open per source, kept only under a `per_source` cap; an entry goes when
    /// its count reaches zero, so the map holds at most one entry per open connection.
    open: RefCell<HashMap<IpAddr, u32>>,
}

impl Gate {
    pub(crate) fn new(admission: &Admission, now: Instant) -> Gate {
        Gate {
            access: admission.access.clone(),
            connections: admission
                .connections
                .map(|l| RefCell::new(SourceLimiter::new(l, now))),
            requests: admission
                .requests
                .map(|l| RefCell::new(SourceLimiter::new(l, now))),
            per_source: admission.per_source,
            open: RefCell::new(HashMap::new()),
        }
    }

    /// Whether a connection from `ip` may be served; counted either way. The slot it returns
    /// holds the source's place under `per_source` until dropped.
    pub(crate) fn admit(self: &Rc<Self>, ip: IpAddr, now: Instant) -> Result<SourceSlot, Refusal> {
        let counters = admission_counters();
        let refused = |why, counter| {
            count(counter);
            tracing::debug!(%ip, ?why, "connection refused");
            Err(why)
        };
        let ip = canonical(ip);
        if !self.access.admits(ip) {
            return refused(Refusal::Denied, &counters.denied);
        }
        if let Some(cap) = self.per_source
            && self.open.borrow().get(&ip).copied().unwrap_or(0) >= cap
        {
            return refused(Refusal::OverSourceCap, &counters.over_source_cap);
        }
        if let Some(bucket) = &self.connections
            && !bucket.borrow_mut().admit(ip, now)
        {
            return refused(Refusal::RateLimited, &counters.rate_limited);
        }
        count(&counters.admitted);
        let held = self.per_source.is_some();
        if held {
            *self.open.borrow_mut().entry(ip).or_insert(0) += 1;
        }
        Ok(SourceSlot {
            gate: held.then(|| Rc::clone(self)),
            ip,
        })
    }

    /// Whether `ip` may send one more request now (always, without a request bucket).
    pub(crate) fn admit_request(&self, ip: IpAddr, now: Instant) -> bool {
        let Some(bucket) = &self.requests else {
            return true;
        };
        let ok = bucket.borrow_mut().admit(ip, now);
        if !ok {
            count(&admission_counters().requests_limited);
        }
        ok
    }
}

/// A connection's place under its source's cap; given back when dropped.
pub(crate) struct SourceSlot {
    gate: Option<Rc<Gate>>,
    ip: IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let Some(gate) = &self.gate else { return };
        let mut open = gate.open.borrow_mut();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}
