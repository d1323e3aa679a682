//! Cross-core work: mailboxes and spawn_on reach the right core, in order per sender, with
//! explicit backpressure when full.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use coring::Runtime;
use coring::driver::probe::DriverChoice;
use coring::shard::{Mailbox, SendError, spawn_on};

const MESSAGES: u64 = 20_000;

#[coring::test]
fn messages_reach_the_right_core_in_order_per_sender_with_backpressure(driver: DriverChoice) {
    let rt = Runtime::builder().cores(2).build().unwrap();
    // Small on purpose: senders outrun the receiver and must wait for room.
    let mail: Mailbox<(u8, u64)> = Mailbox::new(&rt, 16);
    let outside = mail.clone();
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    // A plain thread is a sender too (it spins on try_send: no runtime there).
    let external = std::thread::spawn(move || {
        let mut seq = 0;
        let mut full = 0u64;
        while seq < MESSAGES {
            match outside.try_send(1, (2, seq)) {
                Ok(()) => seq += 1,
                Err(SendError::Full((2, s))) if s == seq => {
                    full += 1;
                    std::thread::yield_now();
                }
                Err(e) => panic!("{e}"),
            }
        }
        while !d.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(1));
        }
        full
    });
    let results = Arc::new(std::sync::Mutex::new(Vec::new()));
    rt.run(|core| {
        let mail = mail.clone();
        let results = results.clone();
        let done = done.clone();
        async move {
            match core.index() {
                0 => {
                    for seq in 0..MESSAGES {
                        mail.send(1, (0, seq)).await.unwrap();
                    }
                    // Sending to a core that does not exist is refused, value returned.
                    assert_eq!(mail.try_send(7, (0, 0)), Err(SendError::NoSuchCore((0, 0))));
                }
                _ => {
                    let mut next = [0u64; 3];
                    for _ in 0..2 * MESSAGES {
                        let (sender, seq) = mail.recv().await;
                        assert_eq!(seq, next[sender as usize], "sender {sender} out of order");
                        next[sender as usize] += 1;
                    }
                    results.lock().unwrap().push(next);
                    done.store(true, Ordering::Release);
                }
            }
        }
    })
    .unwrap();
    let full = external.join().unwrap();
    let results = std::mem::take(&mut *results.lock().unwrap());
    assert_eq!(results, vec![[MESSAGES, 0, MESSAGES]]);
    assert!(
        full > 0,
        "the 16-slot mailbox pushed back on the external sender"
    );
    let stats = rt.stats();
    if driver == DriverChoice::Uring && rt.capabilities().msg_ring {
        assert!(
            stats[0].driver.doorbells > 0,
            "core 0 woke core 1 with MSG_RING: {:?}",
            stats[0].driver
        );
    }
}

thread_local! {
    static LOG: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

#[coring::test]
fn spawn_on_runs_on_the_target_core_in_order_and_returns_output() {
    let rt = Runtime::builder().cores(2).build().unwrap();
    let outputs = Arc::new(std::sync::Mutex::new(Vec::new()));
    rt.run(|core| {
        let outputs = outputs.clone();
        let me = core.index();
        async move {
            if me != 0 {
                return;
            }
            let mut handles = Vec::new();
            for i in 0..200u32 {
                // The future is built on core 1 and may hold !Send state there.
                let handle = spawn_on(1, move || async move {
                    let local = std::rc::Rc::new(i);
                    LOG.with(|l| l.borrow_mut().push(*local));
                    coring::runtime::core_index()
                })
                .unwrap();
                handles.push(handle);
            }
            let mut ran_on = Vec::new();
            for h in handles {
                ran_on.push(h.await.unwrap());
            }
            let order = spawn_on(1, || async { LOG.with(|l| l.borrow().clone()) })
                .unwrap()
                .await
                .unwrap();
            outputs.lock().unwrap().push((ran_on, order));
        }
    })
    .unwrap();
    let outputs = std::mem::take(&mut *outputs.lock().unwrap());
    let (ran_on, order) = &outputs[0];
    assert!(ran_on.iter().all(|&c| c == 1), "{ran_on:?}");
    assert_eq!(*order, (0..200).collect::<Vec<u32>>(), "spawned in order");
}

#[coring::test]
fn a_full_spawn_queue_pushes_back() {
    let rt = Runtime::builder().cores(2).spawn_queue(2).build().unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let refused = Arc::new(std::sync::Mutex::new(None));
    rt.run(|core| {
        let barrier = barrier.clone();
        let refused = refused.clone();
        let me = core.index();
        let core = core.clone();
        async move {
            if me == 1 {
                // Block core 1 (on purpose) so its queue cannot drain.
                barrier.wait();
                std::thread::sleep(Duration::from_millis(300));
                return;
            }
            barrier.wait();
            std::thread::sleep(Duration::from_millis(20));
            let mut results = Vec::new();
            for _ in 0..3 {
                results.push(core.spawn_on(1, || async { 1 }).map(drop).is_ok());
            }
            *refused.lock().unwrap() = Some(results);
        }
    })
    .unwrap();
    assert_eq!(
        std::mem::take(&mut *refused.lock().unwrap()),
        Some(vec![true, true, false])
    );
}

#[coring::test]
fn a_sleeping_core_is_woken_promptly_from_another_core() {
    let rt = Runtime::builder().cores(2).build().unwrap();
    let mail: Mailbox<Instant> = Mailbox::new(&rt, 4);
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    rt.run(|core| {
        let mail = mail.clone();
        let latencies = latencies.clone();
        async move {
            if core.index() == 0 {
                for _ in 0..50 {
                    // Let core 1 fall asleep in the kernel before each message.
                    coring::time::sleep(Duration::from_millis(2)).await;
                    mail.send(1, Instant::now()).await.unwrap();
                }
            } else {
                let mut seen = Vec::new();
                for _ in 0..50 {
                    let sent = mail.recv().await;
                    seen.push(sent.elapsed());
                }
                latencies.lock().unwrap().extend(seen);
            }
        }
    })
    .unwrap();
    let mut l = std::mem::take(&mut *latencies.lock().unwrap());
    l.sort();
    // Generous for a shared machine: the median wake-up is far below the 2 ms send interval.
    assert!(l[l.len() / 2] < Duration::from_millis(50), "{l:?}");
}
