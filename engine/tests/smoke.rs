use coring::net::{TcpListener, TcpStream};

#[coring::test]
fn echo_roundtrip() {
    coring::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr();
        let server = coring::spawn_local(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (n, buf) = s.read(Vec::with_capacity(64)).await;
            n.unwrap();
            let (r, _) = s.write_all(buf).await;
            r.unwrap();
        });
        let c = TcpStream::connect(addr).await.unwrap();
        let (r, _) = c.write_all(b"hello".to_vec()).await;
        r.unwrap();
        let (r, buf) = c.read_exact(Vec::with_capacity(5)).await;
        r.unwrap();
        assert_eq!(buf, b"hello");
        server.await.unwrap();
    });
}
