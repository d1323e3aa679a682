//! The HTTP/1.1 server connection (tokenising + framing + keep-alive + response
//! serialisation, `ServerConn` as the server drives it) beside bare httparse on the same bytes:
//! the TechEmpower request, a browser-like request with 15 headers, and a pipelined batch of 16.
//!
//! `cargo bench -p coring-benches --bench http1_codec`

use std::rc::Rc;
use std::time::Instant;

use bytes::BytesMut;
use coring_protocols::http1::{EncodeContext, Response, ServerConfig, ServerConn, encode_response};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const TFB: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: server\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20130501 Firefox/30.0 AppleWebKit/600.00 Chrome/30.0.0000.0 Trident/10.0 Safari/600.00\r\nCookie: uid=12345678901234567890; __utma=1.1234567890.1234567890.1234567890.1234567890.12; wd=2560x1600\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\nConnection: keep-alive\r\n\r\n";

const BROWSER: &[u8] = b"GET /wp-content/uploads/2010/03/hello-kitty-darth-vader-pink.jpg HTTP/1.1\r\nHost: www.kittyhell.com\r\nUser-Agent: Mozilla/5.0 (Macintosh; U; Intel Mac OS X 10_6_3; ja-JP-mac; rv:1.9.2.3) Gecko/20100401 Firefox/3.6.3 Pathtraq/0.9\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Language: ja,en-us;q=0.7,en;q=0.3\r\nAccept-Encoding: gzip,deflate\r\nAccept-Charset: Shift_JIS,utf-8;q=0.7,*;q=0.7\r\nKeep-Alive: 115\r\nConnection: keep-alive\r\nCookie: wp_ozh_wsa_visits=2; wp_ozh_wsa_visit_lasttime=xxxxxxxxxx; __utma=xxxxxxxxx.xxxxxxxxxx.xxxxxxxxxx.xxxxxxxxxx.xxxxxxxxxx.x; __utmz=xxxxxxxxx.xxxxxxxxxx.x.x.utmccn=(referral)|utmcsr=reader.livedoor.com|utmcct=/reader/|utmcmd=referral\r\nDNT: 1\r\nReferer: http://www.kittyhell.com/\r\nCache-Control: max-age=0\r\nPragma: no-cache\r\nX-Forwarded-For: 10.0.0.1\r\nX-Request-Id: 4f3c2b1a\r\n\r\n";

const DATE: &[u8] = b"Sun, 22 Nov 2026 00:00:00 GMT";

/// Every request in `input` through `conn` and answered with `resp` into `out`; `shared`:
/// handed over as the receive buffer it arrived in (the server's in-place path), else copied.
fn codec_round(
    conn: &mut ServerConn,
    input: &Rc<dyn AsRef<[u8]>>,
    shared: bool,
    now: Instant,
    resp: &Response,
    out: &mut Vec<u8>,
) -> usize {
    if shared {
        conn.handle_shared(Rc::clone(input), now);
    } else {
        conn.handle_input((**input).as_ref(), now);
    }
    let mut n = 0;
    while let Some(Ok(_req)) = conn.poll_request() {
        conn.respond(resp, now, DATE, out);
        n += 1;
    }
    n
}

/// Bare httparse over the same bytes, read into the same kind of buffer first (a server
/// reads before it parses, whichever parser it uses).
fn httparse_round(input: &[u8], buf: &mut BytesMut) -> usize {
    buf.clear();
    buf.extend_from_slice(input);
    let input = &buf[..];
    let mut offset = 0;
    let mut n = 0;
    while offset < input.len() {
        let mut headers = [httparse::EMPTY_HEADER; 100];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&input[offset..]) {
            Ok(httparse::Status::Complete(len)) => {
                offset += len;
                n += 1;
            }
            _ => break,
        }
    }
    n
}

fn bench(c: &mut Criterion) {
    let mut pipelined = Vec::new();
    for _ in 0..16 {
        pipelined.extend_from_slice(TFB);
    }
    for (name, input, per) in [
        ("techempower", TFB, 1u64),
        ("browser-15-headers", BROWSER, 1),
        ("pipelined-16", &pipelined[..], 16),
    ] {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(per));
        let mut raw = BytesMut::with_capacity(64 * 1024);
        group.bench_function("httparse", |b| {
            b.iter(|| httparse_round(std::hint::black_box(input), &mut raw))
        });
        let now = Instant::now();
        let mut conn = ServerConn::new(Rc::new(ServerConfig::default()), now);
        let mut out = Vec::with_capacity(4096);
        // The handler's part (building the response) is not the codec's: built once.
        let resp = Response::new(200)
            .header("Content-Type", "text/plain")
            .body(&b"Hello, World!"[..]);
        let input_rc: Rc<dyn AsRef<[u8]>> = Rc::new(input.to_vec());
        // Through the copy buffer (heads that arrived in pieces take this path).
        group.bench_function("coring-codec", |b| {
            b.iter(|| {
                out.clear();
                codec_round(
                    &mut conn,
                    std::hint::black_box(&input_rc),
                    false,
                    now,
                    &resp,
                    &mut out,
                )
            })
        });
        // The server's path: heads parsed in place from the receive buffer they arrived in.
        group.bench_function("coring-codec-in-place", |b| {
            b.iter(|| {
                out.clear();
                codec_round(
                    &mut conn,
                    std::hint::black_box(&input_rc),
                    true,
                    now,
                    &resp,
                    &mut out,
                )
            })
        });
        if per == 1 {
            // Encoding alone (the rest of the in-place figure is decoding).
            group.bench_function("coring-encode-only", |b| {
                b.iter(|| {
                    out.clear();
                    let cx = EncodeContext {
                        date: DATE,
                        server: Some(b"coring"),
                        head_request: false,
                        keep_alive: true,
                        http10: false,
                    };
                    encode_response(std::hint::black_box(&resp), &cx, &mut out);
                    out.len()
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
