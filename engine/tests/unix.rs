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
