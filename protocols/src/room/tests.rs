use bytes::Bytes;

use super::*;

fn config(policy: Policy, limit: usize) -> RoomConfig {
    RoomConfig {
        policy,
        history: 8,
        member_limit: limit,
    }
}

fn message(h: &mut History, key: Option<u64>, len: usize) -> Delivery {
    h.push(key, Bytes::from(vec![b'x'; len]))
}

fn live(policy: Policy, limit: usize) -> MemberQueue {
    let mut q = MemberQueue::new(config(policy, limit));
    q.start(0, Vec::new());
    q
}

fn taken(q: &mut MemberQueue) -> Vec<u64> {
    let mut batch = Vec::new();
    q.take(&mut batch);
    batch.iter().map(|d| d.seq).collect()
}

#[test]
fn history_numbers_keeps_the_last_and_says_what_is_missed() {
    let mut h = History::new(4);
    for _ in 0..10 {
        message(&mut h, None, 1);
    }
    assert_eq!(h.next_seq(), 10);
    let c = h.since(7);
    assert_eq!(c.missed, 0);
    assert_eq!(
        c.deliveries.iter().map(|d| d.seq).collect::<Vec<_>>(),
        [7, 8, 9]
    );
    let c = h.since(2);
    assert_eq!(c.missed, 4, "2..6 are gone");
    assert_eq!(c.deliveries.first().map(|d| d.seq), Some(6));
    assert_eq!(h.since(10), Catchup::default());
    assert_eq!(h.since(99), Catchup::default());
    let none = History::new(0);
    assert_eq!(none.since(0), Catchup::default());
}

#[test]
fn a_joining_member_takes_nothing_until_it_starts_and_nothing_twice() {
    let mut h = History::new(8);
    let mut q = MemberQueue::new(config(Policy::Ordered, 100));
    let d0 = message(&mut h, None, 1);
    assert_eq!(q.offer(&d0), Offer::Skipped);
    let d1 = message(&mut h, None, 1);
    q.start(1, Vec::new());
    assert_eq!(q.offer(&d0), Offer::Skipped, "before its start");
    assert_eq!(q.offer(&d1), Offer::Queued);
    assert_eq!(q.offer(&d1), Offer::Skipped, "already had it");
    assert_eq!(taken(&mut q), [1]);
    assert_eq!(q.last_taken(), Some(1));
}

#[test]
fn ordered_falls_behind_then_catches_up_from_history() {
    let mut h = History::new(8);
    let mut q = live(Policy::Ordered, 10);
    for _ in 0..2 {
        let d = message(&mut h, None, 5);
        assert_eq!(q.offer(&d), Offer::Queued);
    }
    let d2 = message(&mut h, None, 5);
    assert_eq!(q.offer(&d2), Offer::Behind);
    let d3 = message(&mut h, None, 5);
    assert_eq!(q.offer(&d3), Offer::Skipped);
    assert_eq!(taken(&mut q), [0, 1]);
    let from = q.written().expect("catch up");
    assert_eq!(from, 2);
    assert_eq!(q.standing(), Standing::Joining);
    let c = h.since(from);
    assert_eq!(c.missed, 0);
    q.start(h.next_seq(), c.deliveries);
    assert_eq!(taken(&mut q), [2, 3]);
    assert_eq!(q.counts().caught_up, 1);
    assert_eq!(q.written(), None);
}

#[test]
fn a_large_message_still_reaches_an_empty_queue() {
    let mut h = History::new(8);
    let mut q = live(Policy::Disconnect, 10);
    let big = message(&mut h, None, 100);
    assert_eq!(q.offer(&big), Offer::Queued);
    let small = message(&mut h, None, 1);
    assert_eq!(q.offer(&small), Offer::CutOff(CutOff::SlowConsumer));
    assert!(!q.has_queued());
    assert_eq!(
        q.offer(&message(&mut h, None, 1)),
        Offer::CutOff(CutOff::SlowConsumer)
    );
}

#[test]
fn drop_oldest_keeps_the_newest_within_the_limit() {
    let mut h = History::new(8);
    let mut q = live(Policy::DropOldest, 10);
    for _ in 0..2 {
        assert_eq!(q.offer(&message(&mut h, None, 5)), Offer::Queued);
    }
    assert_eq!(q.offer(&message(&mut h, None, 5)), Offer::DroppedOldest(1));
    assert_eq!(taken(&mut q), [1, 2]);
    assert_eq!(q.counts().dropped, 1);
    // In flight counts against the limit too.
    assert_eq!(q.offer(&message(&mut h, None, 5)), Offer::Queued);
    assert_eq!(q.held(), 15);
    q.written();
    assert_eq!(q.held(), 5);
}

#[test]
fn conflate_replaces_by_key_where_it_stands() {
    let mut h = History::new(8);
    let mut q = live(Policy::Conflate, 1000);
    let a0 = message(&mut h, Some(1), 3);
    let b0 = message(&mut h, Some(2), 3);
    let plain = message(&mut h, None, 3);
    let a1 = message(&mut h, Some(1), 4);
    assert_eq!(q.offer(&a0), Offer::Queued);
    assert_eq!(q.offer(&b0), Offer::Queued);
    assert_eq!(q.offer(&plain), Offer::Queued);
    assert_eq!(q.offer(&a1), Offer::Conflated);
    let mut batch = Vec::new();
    q.take(&mut batch);
    assert_eq!(batch.iter().map(|d| d.seq).collect::<Vec<_>>(), [3, 1, 2]);
    assert_eq!(batch[0].payload.len(), 4);
    assert_eq!(q.held(), 10);
    assert_eq!(q.counts().conflated, 1);
}

#[test]
fn lag_counts_what_the_member_has_not_taken() {
    let mut h = History::new(8);
    let mut q = MemberQueue::new(config(Policy::Ordered, 100));
    for _ in 0..3 {
        message(&mut h, None, 1);
    }
    q.start(3, Vec::new());
    assert_eq!(q.lag(Some(2)), 0, "joined after them");
    let d = message(&mut h, None, 1);
    q.offer(&d);
    assert_eq!(q.lag(Some(3)), 1);
    taken(&mut q);
    assert_eq!(q.lag(Some(3)), 0);
    assert_eq!(q.lag(None), 0);
}
