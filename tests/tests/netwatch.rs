//! Network-change events from the kernel, in a network namespace of the test's own: a veth
//! pair is made, brought up, given IPv4 and IPv6 addresses and a default route, then taken
//! apart, each step by iproute2's `ip`, and every change arrives as its `NetEvent`.
#![cfg(target_os = "linux")]

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use coring::driver::probe::DriverChoice;
use coring_protocols::netwatch::{NetEvent, NetworkChanges};

/// Runs `ip args` (in the calling thread's namespace, which the child inherits).
fn ip(args: &str) {
    let status = Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .expect("ip (iproute2; .ci/run installs it)");
    assert!(status.success(), "ip {args}: {status}");
}

/// Reads events until one satisfies `wanted` (within 5 s), returning the ones before it too.
async fn until(
    changes: &mut NetworkChanges,
    what: &str,
    wanted: impl Fn(&NetEvent) -> bool,
) -> NetEvent {
    let mut seen = Vec::new();
    loop {
        match coring::time::timeout(Duration::from_secs(5), changes.next()).await {
            Ok(Ok(event)) if wanted(&event) => return event,
            Ok(Ok(event)) => seen.push(event),
            Ok(Err(e)) => panic!("watching for {what}: {e}"),
            Err(_) => panic!("no {what} within 5 s; saw {seen:#?}"),
        }
    }
}

/// Runs `body` on a one-core runtime of `driver`, on a thread that has left the host's
/// network namespace for a new one: the links it makes and the events it reads are its own.
fn in_new_namespace<F: Future<Output = ()> + 'static>(driver: DriverChoice, body: fn() -> F) {
    std::thread::spawn(move || {
        // SAFETY: unshare(2) with CLONE_NEWNET changes only the calling thread's network
        // namespace; it takes no pointers.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        let rt = coring::Runtime::builder().driver(driver).build().unwrap();
        rt.block_on(body());
    })
    .join()
    .unwrap();
}

#[coring::test]
fn links_addresses_and_default_routes_arrive_as_they_change(driver: DriverChoice) {
    in_new_namespace(driver, || async {
        {
            let mut changes = NetworkChanges::watch().unwrap();
            // The namespace's loopback is reported first, down, as the links are asked for
            // (read here through the Stream interface).
            let lo = std::future::poll_fn(|cx| {
                futures_core::Stream::poll_next(std::pin::Pin::new(&mut changes), cx)
            })
            .await
            .expect("a stream that goes on")
            .unwrap();
            assert_eq!(
                lo,
                NetEvent::Link {
                    index: 1,
                    name: "lo".into(),
                    up: false
                }
            );
            // A wait that gives up loses nothing: the receive stays in flight.
            let nothing = coring::time::timeout(Duration::from_millis(20), changes.next()).await;
            assert!(nothing.is_err(), "{nothing:?}");

            ip("link add cv0 type veth peer name cv1");
            let NetEvent::Link {
                index, up: false, ..
            } = until(
                &mut changes,
                "cv0 added",
                |e| matches!(e, NetEvent::Link { name, .. } if name == "cv0"),
            )
            .await
            else {
                panic!("cv0 came up at once");
            };
            assert_eq!(changes.links().name(index), Some("cv0"));

            // veth has a carrier only when both ends are up.
            ip("link set cv0 up");
            ip("link set cv1 up");
            until(&mut changes, "cv0 up", |e| {
                *e == NetEvent::Link {
                    index,
                    name: "cv0".into(),
                    up: true,
                }
            })
            .await;

            ip("addr add 10.77.0.1/24 dev cv0");
            let v4: IpAddr = "10.77.0.1".parse().unwrap();
            until(&mut changes, "IPv4 address", |e| {
                *e == NetEvent::AddressAdded {
                    index,
                    addr: v4,
                    prefix: 24,
                }
            })
            .await;
            ip("-6 addr add fd77::1/64 dev cv0 nodad");
            let v6: IpAddr = "fd77::1".parse().unwrap();
            until(&mut changes, "IPv6 address", |e| {
                *e == NetEvent::AddressAdded {
                    index,
                    addr: v6,
                    prefix: 64,
                }
            })
            .await;

            ip("route add default via 10.77.0.254 dev cv0");
            let gateway: IpAddr = "10.77.0.254".parse().unwrap();
            until(&mut changes, "default route", |e| {
                *e == NetEvent::DefaultRoute {
                    added: true,
                    gateway: Some(gateway),
                    index: Some(index),
                }
            })
            .await;
            ip("-6 route add default via fd77::fe dev cv0");
            let gateway6: IpAddr = "fd77::fe".parse().unwrap();
            until(&mut changes, "IPv6 default route", |e| {
                *e == NetEvent::DefaultRoute {
                    added: true,
                    gateway: Some(gateway6),
                    index: Some(index),
                }
            })
            .await;
            ip("route del default");
            until(&mut changes, "default route removed", |e| {
                *e == NetEvent::DefaultRoute {
                    added: false,
                    gateway: Some(gateway),
                    index: Some(index),
                }
            })
            .await;

            ip("addr del 10.77.0.1/24 dev cv0");
            until(&mut changes, "address removed", |e| {
                *e == NetEvent::AddressRemoved {
                    index,
                    addr: v4,
                    prefix: 24,
                }
            })
            .await;
            ip("link set cv1 down");
            until(&mut changes, "cv0 down (no carrier)", |e| {
                *e == NetEvent::Link {
                    index,
                    name: "cv0".into(),
                    up: false,
                }
            })
            .await;
            ip("link del cv0");
            until(&mut changes, "cv0 removed", |e| {
                *e == NetEvent::LinkRemoved {
                    index,
                    name: "cv0".into(),
                }
            })
            .await;
        }
    });
}

/// A std echo server on `addr` (raw bytes back), on threads of the calling thread's namespace.
fn echo_server(addr: &str) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind(addr).unwrap();
    let bound = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut reader = stream.try_clone().unwrap();
                let _ = std::io::copy(&mut reader, &mut stream);
            });
        }
    });
    bound
}

/// The client's next event within 5 s.
async fn next(
    client: &mut coring_protocols::reconnect::Reconnecting<
        coring_protocols::framing::LengthPrefixed,
    >,
) -> coring_protocols::reconnect::Event {
    coring::time::timeout(Duration::from_secs(5), client.next())
        .await
        .expect("an event within 5 s")
}

#[coring::test]
fn a_reconnecting_client_reconnects_at_once_when_the_network_changes(driver: DriverChoice) {
    use coring_protocols::framing::{LengthPrefixed, Prefix};
    use coring_protocols::reconnect::{Config, Event, Failure, Reconnecting, Target};

    in_new_namespace(driver, || async {
        ip("link set lo up");
        ip("link add cv0 type veth peer name cv1");
        ip("link set cv0 up");
        ip("link set cv1 up");
        ip("addr add 10.78.0.1/24 dev cv0");
        ip("addr add 10.78.0.9/24 dev cv0");
        let server = echo_server("10.78.0.1:0");
        let mut client = Reconnecting::new(
            Target::Tcp {
                host: server.ip().to_string(),
                port: server.port(),
            },
            LengthPrefixed::new(Prefix::U32, 1024),
            Config::default(),
        );
        client.watch_network(NetworkChanges::watch().unwrap());
        assert!(matches!(next(&mut client).await, Event::Connected { .. }));
        client.send(&b"before"[..]).unwrap();
        assert_eq!(
            next(&mut client).await,
            Event::Message((&b"before"[..]).into())
        );
        // Let the watcher take the links there are, then take an address away: the
        // connection is dropped at once (nothing else would notice: no heartbeat is set).
        coring::time::sleep(Duration::from_millis(400)).await;
        ip("addr del 10.78.0.9/24 dev cv0");
        match next(&mut client).await {
            Event::Disconnected {
                failure: Failure::NetworkChanged,
                retry_in,
            } => assert_eq!(retry_in, Duration::ZERO),
            other => panic!("expected the network change, got {other:?}"),
        }
        assert!(matches!(next(&mut client).await, Event::Connected { .. }));
        client.send(&b"after"[..]).unwrap();
        assert_eq!(
            next(&mut client).await,
            Event::Message((&b"after"[..]).into())
        );
    });
}
