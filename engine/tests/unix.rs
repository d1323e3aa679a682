//! Unix sockets: stream and datagram echo over filesystem paths and abstract names (Unix only).

#![cfg(unix)]

use std::path::PathBuf;

use coring::net::{UnixAddr, UnixDatagram, UnixListener, UnixStream};

fn temp_path(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(coring::__test::unique(tag));
    let _ = std::fs::remove_file(&dir);
    dir
}

async fn echo_once(listener: UnixListener) {
    let (s, _) = listener.accept().await.unwrap();
    let mut rx = s.pooled();
    while let Some(buf) = rx.next().await.unwrap() {
        s.write_all(buf).await.0.unwrap();
    }
}

#[coring::test]
fn stream_echo_over_a_path_and_an_abstract_name() {
    coring::block_on(async {
        let path = temp_path("stream.sock");
        let listener = UnixListener::bind(&path).unwrap();
        assert_eq!(
            listener.local_addr().unwrap(),
            UnixAddr::Pathname(path.clone())
        );
        coring::spawn_local(echo_once(listener));
        let c = UnixStream::connect(&path).await.unwrap();
        assert_eq!(c.peer_addr().unwrap(), UnixAddr::Pathname(path.clone()));
        let msg: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let (r, _) = c.write_all(msg.clone()).await;
        r.unwrap();
        let (r, back) = c.read_exact(Vec::with_capacity(msg.len())).await;
        r.unwrap();
        assert!(back == msg);
        std::fs::remove_file(&path).unwrap();

        let name = coring::__test::unique("test").into_bytes();
        let listener = UnixListener::bind_abstract(&name).unwrap();
        assert_eq!(
            listener.local_addr().unwrap(),
            UnixAddr::Abstract(name.clone())
        );
        coring::spawn_local(echo_once(listener));
        let c = UnixStream::connect_abstract(&name).await.unwrap();
        c.write_all(b"abstract".to_vec()).await.0.unwrap();
        let (r, back) = c.read_exact(Vec::with_capacity(8)).await;
        r.unwrap();
        assert_eq!(back, b"abstract");
    });
}

#[coring::test]
fn multishot_incoming_and_pairs() {
    coring::block_on(async {
        let name = coring::__test::unique("incoming").into_bytes();
        let listener = UnixListener::bind_abstract(&name).unwrap();
        let mut incoming = listener.incoming();
        let mut clients = Vec::new();
        for _ in 0..20 {
            clients.push(UnixStream::connect_abstract(&name).await.unwrap());
        }
        for (i, c) in clients.iter().enumerate() {
            c.write_all(vec![i as u8]).await.0.unwrap();
        }
        let mut seen = Vec::new();
        for _ in 0..20 {
            let s = incoming.next().await.unwrap();
            let (r, b) = s.read_exact(Vec::with_capacity(1)).await;
            r.unwrap();
            seen.push(b[0]);
        }
        seen.sort();
        assert_eq!(seen, (0..20).collect::<Vec<u8>>());

        let (a, b) = UnixStream::pair().unwrap();
        a.write_all(b"pair".to_vec()).await.0.unwrap();
        let (r, got) = b.read_exact(Vec::with_capacity(4)).await;
        r.unwrap();
        assert_eq!(got, b"pair");
    });
}

#[coring::test]
fn datagram_echo_with_sources_paths_and_abstract_names() {
    coring::block_on(async {
        let server_path = temp_path("dgram-server.sock");
        let client_name = coring::__test::unique("dgram-client").into_bytes();
        let server = UnixDatagram::bind(&server_path).unwrap();
        let client = UnixDatagram::bind_abstract(&client_name).unwrap();
        let server_addr = UnixAddr::Pathname(server_path.clone());
        let echo = coring::spawn_local(async move {
            let mut rx = server.pooled();
            for _ in 0..100 {
                let d = rx.next().await.unwrap();
                assert_eq!(d.source, UnixAddr::Abstract(client_name.clone()));
                server.send_to(d.data, &d.source).await.0.unwrap();
            }
        });
        for i in 0..100u32 {
            client
                .send_to(i.to_le_bytes().to_vec(), &server_addr)
                .await
                .0
                .unwrap();
            let (meta, buf) = client.recv_from(Vec::with_capacity(16)).await;
            let meta = meta.unwrap();
            assert_eq!(meta.source, server_addr);
            assert_eq!(buf, i.to_le_bytes());
        }
        echo.await.unwrap();
        std::fs::remove_file(&server_path).unwrap();

        let (a, b) = UnixDatagram::pair().unwrap();
        a.send(b"one".to_vec()).await.0.unwrap();
        let mut rx = b.pooled();
        let d = rx.next().await.unwrap();
        assert_eq!(&*d.data, b"one");
        assert!(!d.truncated);
    });
}

/// A listener and an accepted connection sent over a Unix stream (`SCM_RIGHTS`) keep working
/// on the receiving side after the sender has closed its own descriptors.
#[coring::test]
fn listeners_and_connections_travel_over_a_unix_stream() {
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    use coring::net::{TcpListener, TcpStream};

    coring::block_on(async {
        let (tx, rx) = UnixStream::pair().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr();
        let mut first = std::net::TcpStream::connect(addr).unwrap();
        let (accepted, _) = listener.accept().await.unwrap();

        let (sent, _) = tx
            .send_fds(&b"L+S"[..], &[listener.as_fd(), accepted.as_fd()])
            .await;
        assert_eq!(sent.unwrap(), 3);
        drop(listener);
        drop(accepted);

        let (got, buf) = rx.recv_fds(Vec::with_capacity(16), 4).await;
        let (n, fds) = got.unwrap();
        assert_eq!((n, &buf[..]), (3, &b"L+S"[..]));
        assert_eq!(fds.len(), 2);
        let mut fds = fds.into_iter();
        let listener = TcpListener::from_fd(fds.next().unwrap()).unwrap();
        assert_eq!(listener.local_addr(), addr);
        let stream = TcpStream::from_std(std::net::TcpStream::from(fds.next().unwrap())).unwrap();

        // The connection accepted before the hand-over carries on.
        first.write_all(b"ping").unwrap();
        let (r, buf) = stream.read_exact(Vec::with_capacity(4)).await;
        r.unwrap();
        assert_eq!(&buf[..], b"ping");
        stream.write_all(&b"pong"[..]).await.0.unwrap();
        let mut back = [0u8; 4];
        first.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"pong");

        // And the listener accepts new ones.
        let second = std::net::TcpStream::connect(addr).unwrap();
        let (_, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, second.local_addr().unwrap());
    });
}

/// Descriptors without a byte to carry them, or more than the receiver has room for, are
/// refused with a typed error; the stream goes on working.
#[coring::test]
fn descriptor_passing_refuses_what_it_cannot_carry() {
    use std::os::fd::AsFd;

    coring::block_on(async {
        let (tx, rx) = UnixStream::pair().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        let (r, _) = tx.send_fds(Vec::<u8>::new(), &[file.as_fd()]).await;
        assert_eq!(r.unwrap_err().kind(), coring::ErrorKind::InvalidInput);

        let fds = [file.as_fd(), file.as_fd(), file.as_fd()];
        tx.send_fds(&b"3"[..], &fds).await.0.unwrap();
        let (r, _) = rx.recv_fds(Vec::with_capacity(8), 1).await;
        assert_eq!(r.unwrap_err().kind(), coring::ErrorKind::InvalidData);

        tx.send_fds(&b"1"[..], &[file.as_fd()]).await.0.unwrap();
        let (r, buf) = rx.recv_fds(Vec::with_capacity(8), 1).await;
        let (n, got) = r.unwrap();
        assert_eq!((n, &buf[..], got.len()), (1, &b"1"[..], 1));

        // Plain bytes come with no descriptors.
        tx.write_all(&b"plain"[..]).await.0.unwrap();
        let (r, buf) = rx.recv_fds(Vec::with_capacity(8), 4).await;
        let (n, got) = r.unwrap();
        assert_eq!((n, &buf[..], got.len()), (5, &b"plain"[..], 0));
    });
}
