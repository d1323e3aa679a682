//! The per-core executor: local tasks, join handles, panics, cooperative budget.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use coring::net::{TcpListener, TcpStream};
use coring::task::{JoinError, consume_budget, yield_now};
use coring::time::sleep;

#[coring::test]
fn spawn_local_runs_non_send_futures() {
    coring::block_on(async {
        let shared = Rc::new(RefCell::new(Vec::new()));
        let mut handles = Vec::new();
        for i in 0..100 {
            let shared = shared.clone();
            handles.push(coring::spawn_local(async move {
                yield_now().await;
                shared.borrow_mut().push(i);
                i * 2
            }));
        }
        let mut sum = 0;
        for h in handles {
            sum += h.await.unwrap();
        }
        assert_eq!(sum, (0..100).map(|i| i * 2).sum::<i32>());
        assert_eq!(shared.borrow().len(), 100);
    });
}

#[coring::test]
fn dropped_handle_detaches_by_default() {
    coring::block_on(async {
        let done = Rc::new(Cell::new(false));
        let d = done.clone();
        drop(coring::spawn_local(async move {
            sleep(Duration::from_millis(5)).await;
            d.set(true);
        }));
        sleep(Duration::from_millis(50)).await;
        assert!(done.get(), "detached task ran to completion");
    });
}

#[coring::test]
fn cancel_on_drop_and_abort_stop_the_task() {
    coring::block_on(async {
        let reached = Rc::new(Cell::new(0));
        let r = reached.clone();
        let h = coring::spawn_local(async move {
            sleep(Duration::from_millis(20)).await;
            r.set(r.get() + 1);
        })
        .cancel_on_drop();
        yield_now().await;
        drop(h);

        let r = reached.clone();
        let mut h = coring::spawn_local(async move {
            sleep(Duration::from_millis(20)).await;
            r.set(r.get() + 1);
        });
        yield_now().await;
        h.abort();
        assert!(matches!(h.await, Err(JoinError::Cancelled)));

        sleep(Duration::from_millis(60)).await;
        assert_eq!(reached.get(), 0, "cancelled tasks never resumed");
    });
}

#[coring::test]
fn a_panicking_task_fails_its_handle_not_the_core() {
    coring::block_on(async {
        let h = coring::spawn_local(async {
            yield_now().await;
            panic!("boom");
        });
        let err = h.await.unwrap_err();
        assert!(err.is_panic());
        assert!(err.to_string().contains("boom"), "{err}");
        // The core keeps serving.
        let ok = coring::spawn_local(async { 5 }).await.unwrap();
        assert_eq!(ok, 5);
    });
}

#[coring::test]
fn a_task_that_never_waits_cannot_starve_io() {
    coring::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr();
        let stop = Rc::new(Cell::new(false));
        let spins = Rc::new(Cell::new(0u64));
        // A hot loop that only ever spends budget: without the budget it would never yield.
        let (s, n) = (stop.clone(), spins.clone());
        let hog = coring::spawn_local(async move {
            while !s.get() {
                consume_budget().await;
                n.set(n.get() + 1);
            }
        });
        let start = Instant::now();
        // I/O and timers still make progress next to it.
        let server = coring::spawn_local(async move {
            let (c, _) = listener.accept().await.unwrap();
            let (r, buf) = c.read_exact(Vec::with_capacity(4)).await;
            r.unwrap();
            c.write_all(buf).await.0.unwrap();
        });
        let c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"ping".to_vec()).await.0.unwrap();
        let (r, buf) = c.read_exact(Vec::with_capacity(4)).await;
        r.unwrap();
        assert_eq!(buf, b"ping");
        // And the hog itself runs whenever nothing else is ready (a count, not a rate: how
        // many turns fit in 10 ms depends on the machine; under Wine a few hundred).
        let before = spins.get();
        sleep(Duration::from_millis(10)).await;
        assert!(spins.get() > before, "the hog ran while we slept");
        server.await.unwrap();
        stop.set(true);
        hog.await.unwrap();
        assert!(spins.get() > 0, "the hog ran too: {}", spins.get());
        assert!(start.elapsed() < Duration::from_secs(10));
    });
}

#[coring::test]
fn block_on_cancels_leftover_tasks_on_this_thread() {
    struct Flag(Rc<Cell<bool>>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    let dropped = Rc::new(Cell::new(false));
    let d = dropped.clone();
    coring::block_on(async move {
        coring::spawn_local(async move {
            let _flag = Flag(d);
            sleep(Duration::from_secs(3600)).await;
        });
        yield_now().await;
    });
    assert!(
        dropped.get(),
        "the leftover task's future was dropped, not leaked"
    );
}

#[coring::test]
fn wakers_from_other_threads_reach_the_core() {
    coring::block_on(async {
        let (tx, rx) = std::sync::mpsc::channel::<std::task::Waker>();
        let woke = Rc::new(Cell::new(false));
        let w = woke.clone();
        std::thread::spawn(move || {
            let waker = rx.recv().unwrap();
            std::thread::sleep(Duration::from_millis(20));
            waker.wake();
        });
        let mut sent = Some(tx);
        std::future::poll_fn(|cx| {
            if let Some(tx) = sent.take() {
                tx.send(cx.waker().clone()).unwrap();
                return std::task::Poll::Pending;
            }
            w.set(true);
            std::task::Poll::Ready(())
        })
        .await;
        assert!(woke.get());
    });
}

#[coring::test]
async fn join_all_finishes_every_future_and_lets_other_tasks_run() {
    // More futures than one poll's budget: ops that are ready at once (timers of 0), ops that
    // wait, and futures that finish without waiting at all.
    let done = Rc::new(Cell::new(0usize));
    let other_ran = Rc::new(Cell::new(false));
    let other = {
        let other_ran = other_ran.clone();
        coring::spawn_local(async move {
            yield_now().await;
            other_ran.set(true);
        })
    };
    let futures = (0..1000u64).map(|i| {
        let done = done.clone();
        async move {
            match i % 3 {
                0 => {}
                1 => sleep(Duration::ZERO).await,
                _ => sleep(Duration::from_millis(i % 20)).await,
            }
            done.set(done.get() + 1);
        }
    });
    let started = Instant::now();
    coring::task::join_all(futures).await;
    assert_eq!(done.get(), 1000);
    assert!(started.elapsed() >= Duration::from_millis(19));
    // Other tasks ran meanwhile.
    assert!(other_ran.get());
    other.await.unwrap();
    // Nothing to do is done at once.
    coring::task::join_all(Vec::<std::future::Ready<()>>::new()).await;
}
