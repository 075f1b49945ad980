use std::time::Duration;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

const LIMIT: usize = 1 << 20;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn request() -> RequestBlock {
    RequestBlock::new("10.0.0.1:10250", "/metrics/resource", Some(b"Bearer t"))
}

/// Sends one request and reads its whole answer.
async fn get(
    connection: &mut Http2Connection<DuplexStream>,
    limit: usize,
) -> Result<(u16, Bytes), Http2Error> {
    let head = connection.send(&request()).await?;
    let mut body = BytesMut::new();
    connection.read_body(&head, &mut body, limit).await?;
    Ok((head.status, body.freeze()))
}

/// A kubelet stand-in served by the `h2` crate: answers each request with `body_for(n)`, the
/// n-th request's body, with a content-length.
fn h2_server(io: DuplexStream, body_for: impl Fn(usize) -> Bytes + Send + 'static) {
    tokio::spawn(async move {
        let mut connection = h2::server::handshake(io).await.expect("server handshake");
        let mut n = 0;
        while let Some(Ok((request, mut respond))) = connection.accept().await {
            assert_eq!(request.uri().path(), "/metrics/resource");
            let body = body_for(n);
            n += 1;
            let response = http::Response::builder()
                .status(200)
                .header("content-type", "text/plain; version=0.0.4")
                .header("content-length", body.len())
                .body(())
                .expect("response");
            let mut send = respond.send_response(response, false).expect("send head");
            send.send_data(body, true).expect("send body");
        }
    });
}

fn numbered_body(n: usize, len: usize) -> Bytes {
    let line = format!("sample{{n=\"{n}\"}} 1\n");
    line.as_bytes().iter().copied().cycle().take(len).collect()
}

#[test]
fn one_connection_serves_many_requests_with_bodies_of_many_frames() {
    runtime().block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        h2_server(server, |n| numbered_body(n, 10_000 + n * 37_000));
        let mut connection = Http2Connection::handshake(client).await.expect("handshake");
        for n in 0..6 {
            let (status, body) = get(&mut connection, LIMIT).await.expect("answer");
            assert_eq!(status, 200);
            assert_eq!(body, numbered_body(n, 10_000 + n * 37_000));
            assert!(connection.is_reusable());
        }
    });
}

#[test]
fn request_block_decodes_to_the_scrape_request() {
    let mut decoder = loona_hpack::Decoder::new();
    let long_token = "x".repeat(300);
    let block = RequestBlock::new(
        "[fd00::1]:10250",
        "/metrics/resource",
        Some(long_token.as_bytes()),
    );
    let headers = decoder.decode(block.as_bytes()).expect("decodes");
    let text: Vec<(String, String)> = headers
        .into_iter()
        .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
        .collect();
    let expected = [
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/metrics/resource"),
        (":authority", "[fd00::1]:10250"),
        ("accept", "text/plain"),
        ("authorization", long_token.as_str()),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    assert_eq!(text, expected);
    // Without a credential there is no authorization field.
    let plain = RequestBlock::new("a:1", "/", None);
    let headers = loona_hpack::Decoder::new()
        .decode(plain.as_bytes())
        .expect("decodes");
    assert!(headers.iter().all(|(n, _)| n != b"authorization"));
}

/// The raw side of a connection, for answers the `h2` crate would never send.
struct Scripted {
    io: DuplexStream,
    encoder: loona_hpack::Encoder<'static>,
}

impl Scripted {
    /// Reads the client's preface, settings and window update; returns the settings.
    async fn accept(io: DuplexStream) -> (Scripted, Vec<(u16, u32)>) {
        let mut scripted = Scripted {
            io,
            encoder: loona_hpack::Encoder::new(),
        };
        let mut preface = [0u8; 24];
        scripted.io.read_exact(&mut preface).await.expect("preface");
        assert_eq!(&preface[..], PREFACE);
        let (header, payload) = scripted.read_frame().await;
        assert_eq!((header.kind, header.stream), (frame::SETTINGS, 0));
        let settings = payload
            .chunks_exact(6)
            .map(|e| {
                (
                    u16::from_be_bytes([e[0], e[1]]),
                    u32::from_be_bytes([e[2], e[3], e[4], e[5]]),
                )
            })
            .collect();
        let (header, payload) = scripted.read_frame().await;
        assert_eq!((header.kind, header.stream), (frame::WINDOW_UPDATE, 0));
        assert_eq!(
            u32::from_be_bytes(payload[..4].try_into().unwrap()),
            MAX_WINDOW - DEFAULT_WINDOW
        );
        (scripted, settings)
    }

    async fn read_frame(&mut self) -> (FrameHeader, Vec<u8>) {
        let mut bytes = [0u8; FRAME_HEADER_LEN];
        self.io.read_exact(&mut bytes).await.expect("frame header");
        let header = FrameHeader::parse(&bytes);
        let mut payload = vec![0u8; header.len];
        self.io
            .read_exact(&mut payload)
            .await
            .expect("frame payload");
        (header, payload)
    }

    /// Reads frames until a request's HEADERS; returns its stream.
    async fn read_request(&mut self) -> u32 {
        loop {
            let (header, _) = self.read_frame().await;
            if header.kind == frame::HEADERS {
                assert!(header.has(frame::END_STREAM) && header.has(frame::END_HEADERS));
                return header.stream;
            }
        }
    }

    async fn write_frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let mut out = Vec::new();
        frame_header(&mut out, payload.len(), kind, flags, stream);
        out.extend_from_slice(payload);
        self.io.write_all(&out).await.expect("write frame");
    }

    fn head_block(&mut self, status: &str, extra: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut fields: Vec<(&[u8], &[u8])> = vec![(b":status", status.as_bytes())];
        fields.extend_from_slice(extra);
        self.encoder.encode(fields)
    }
}

#[test]
fn padded_frames_continuations_pings_and_settings_are_handled() {
    runtime().block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let script = tokio::spawn(async move {
            let (mut s, settings) = Scripted::accept(server).await;
            assert!(settings.contains(&(setting::HEADER_TABLE_SIZE, 0)));
            assert!(settings.contains(&(setting::ENABLE_PUSH, 0)));
            s.write_frame(frame::SETTINGS, 0, 0, &[0, 5, 0, 0, 0x80, 0])
                .await;
            s.write_frame(frame::PING, 0, 0, b"12345678").await;
            let stream = s.read_request().await;
            // An informational answer first, then the head split over HEADERS (padded, with a
            // priority) and a CONTINUATION.
            let informational = s.head_block("103", &[]);
            s.write_frame(frame::HEADERS, frame::END_HEADERS, stream, &informational)
                .await;
            let head = s.head_block(
                "200",
                &[(b"content-type", b"text/plain"), (b"x-pad", &[b'p'; 40])],
            );
            let (first, second) = head.split_at(head.len() / 2);
            let mut payload = vec![3u8]; // pad length
            payload.extend_from_slice(&[0, 0, 0, 0, 16]); // priority
            payload.extend_from_slice(first);
            payload.extend_from_slice(&[0, 0, 0]);
            s.write_frame(
                frame::HEADERS,
                frame::PADDED | frame::PRIORITY,
                stream,
                &payload,
            )
            .await;
            s.write_frame(frame::CONTINUATION, frame::END_HEADERS, stream, second)
                .await;
            // A frame of an unknown type and a frame on another stream are ignored.
            s.write_frame(0xfa, 0, stream, b"ignored").await;
            s.write_frame(frame::DATA, 0, stream + 2, b"not ours").await;
            let mut padded = vec![5u8];
            padded.extend_from_slice(b"hello ");
            padded.extend_from_slice(&[0; 5]);
            s.write_frame(frame::DATA, frame::PADDED, stream, &padded)
                .await;
            s.write_frame(frame::DATA, frame::END_STREAM, stream, b"world")
                .await;
            // The client acknowledged the settings and answered the ping.
            let mut acked = false;
            let mut ponged = false;
            while !(acked && ponged) {
                let (header, payload) = s.read_frame().await;
                match header.kind {
                    frame::SETTINGS => acked |= header.has(frame::ACK),
                    frame::PING => {
                        assert!(header.has(frame::ACK));
                        assert_eq!(payload, b"12345678");
                        ponged = true;
                    }
                    other => panic!("unexpected frame type {other}"),
                }
            }
            s
        });
        let mut connection = Http2Connection::handshake(client).await.expect("handshake");
        let (status, body) = get(&mut connection, LIMIT).await.expect("answer");
        assert_eq!(status, 200);
        assert_eq!(&body[..], b"hello world");
        assert_eq!(connection.max_send_frame, 0x8000);
        tokio::time::timeout(Duration::from_secs(10), script)
            .await
            .expect("script ends")
            .expect("script passes");
    });
}

#[test]
fn header_table_state_carries_from_one_answer_to_the_next() {
    runtime().block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let (mut s, _) = Scripted::accept(server).await;
            for n in 0..3u8 {
                let stream = s.read_request().await;
                // The encoder indexes these, so later answers refer to the table.
                let head = s.head_block(
                    "200",
                    &[
                        (b"content-type", b"text/plain; version=0.0.4"),
                        (b"content-length", b"1"),
                    ],
                );
                s.write_frame(frame::HEADERS, frame::END_HEADERS, stream, &head)
                    .await;
                s.write_frame(frame::DATA, frame::END_STREAM, stream, &[b'a' + n])
                    .await;
            }
        });
        let mut connection = Http2Connection::handshake(client).await.expect("handshake");
        for n in 0..3u8 {
            let head = connection.send(&request()).await.expect("head");
            assert_eq!((head.status, head.content_length), (200, Some(1)));
            let mut body = BytesMut::new();
            connection
                .read_body(&head, &mut body, LIMIT)
                .await
                .expect("body");
            assert_eq!(&body[..], &[b'a' + n]);
        }
    });
}

type Script = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Runs a script that answers the first request, and returns what the client's exchange gave.
fn exchange_with(
    limit: usize,
    script: impl FnOnce(Scripted, u32) -> Script + Send + 'static,
) -> Result<(u16, Bytes), Http2Error> {
    runtime().block_on(async move {
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let (mut s, _) = Scripted::accept(server).await;
            let stream = s.read_request().await;
            script(s, stream).await;
        });
        let mut connection = Http2Connection::handshake(client).await?;
        tokio::time::timeout(Duration::from_secs(10), get(&mut connection, limit))
            .await
            .expect("the exchange ends by itself")
    })
}

#[test]
fn goaway_that_did_not_take_the_request_is_safe_to_retry() {
    let result = exchange_with(LIMIT, |mut s, _| {
        Box::pin(async move {
            s.write_frame(frame::GOAWAY, 0, 0, &[0, 0, 0, 0, 0, 0, 0, 0])
                .await;
        })
    });
    assert!(
        matches!(result, Err(Http2Error::GoingAway(0))),
        "{result:?}"
    );
}

#[test]
fn goaway_that_took_the_request_lets_it_finish_and_retires_the_connection() {
    runtime().block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let (mut s, _) = Scripted::accept(server).await;
            let stream = s.read_request().await;
            s.write_frame(frame::GOAWAY, 0, 0, &[0, 0, 0, stream as u8, 0, 0, 0, 0])
                .await;
            let head = s.head_block("200", &[]);
            s.write_frame(frame::HEADERS, frame::END_HEADERS, stream, &head)
                .await;
            s.write_frame(frame::DATA, frame::END_STREAM, stream, b"done")
                .await;
        });
        let mut connection = Http2Connection::handshake(client).await.expect("handshake");
        let (status, body) = get(&mut connection, LIMIT).await.expect("answer");
        assert_eq!((status, &body[..]), (200, &b"done"[..]));
        assert!(!connection.is_reusable());
        assert!(matches!(
            connection.send(&request()).await,
            Err(Http2Error::GoingAway(_))
        ));
    });
}

#[test]
fn reset_stream_fails_the_exchange() {
    let result = exchange_with(LIMIT, |mut s, stream| {
        Box::pin(async move {
            s.write_frame(frame::RST_STREAM, 0, stream, &[0, 0, 0, 7])
                .await;
        })
    });
    assert!(matches!(result, Err(Http2Error::Reset(7))), "{result:?}");
}

#[test]
fn body_over_the_limit_fails_before_it_is_read() {
    let result = exchange_with(10, |mut s, stream| {
        Box::pin(async move {
            let head = s.head_block("200", &[]);
            s.write_frame(frame::HEADERS, frame::END_HEADERS, stream, &head)
                .await;
            s.write_frame(frame::DATA, 0, stream, b"0123456").await;
            s.write_frame(frame::DATA, frame::END_STREAM, stream, b"789ab")
                .await;
        })
    });
    assert!(
        matches!(result, Err(Http2Error::BodyTooLarge { limit: 10 })),
        "{result:?}"
    );
}

#[test]
fn connection_closed_mid_body_is_an_error() {
    let result = exchange_with(LIMIT, |mut s, stream| {
        Box::pin(async move {
            let head = s.head_block("200", &[]);
            s.write_frame(frame::HEADERS, frame::END_HEADERS, stream, &head)
                .await;
            // Announces 100 bytes, sends 3, then hangs up.
            let mut out = Vec::new();
            frame_header(&mut out, 100, frame::DATA, frame::END_STREAM, stream);
            out.extend_from_slice(b"abc");
            s.io.write_all(&out).await.expect("write");
        })
    });
    assert!(matches!(result, Err(Http2Error::Closed)), "{result:?}");
}

#[test]
fn oversized_frame_and_bad_status_are_protocol_errors() {
    let result = exchange_with(LIMIT, |mut s, stream| {
        Box::pin(async move {
            let mut out = Vec::new();
            frame_header(&mut out, MAX_RECV_FRAME + 1, frame::DATA, 0, stream);
            s.io.write_all(&out).await.expect("write");
        })
    });
    assert!(matches!(result, Err(Http2Error::Protocol(_))), "{result:?}");
    let result = exchange_with(LIMIT, |mut s, stream| {
        Box::pin(async move {
            let head = s.head_block("2x0", &[]);
            s.write_frame(
                frame::HEADERS,
                frame::END_HEADERS | frame::END_STREAM,
                stream,
                &head,
            )
            .await;
        })
    });
    assert!(matches!(result, Err(Http2Error::Protocol(_))), "{result:?}");
}

#[test]
fn data_before_the_head_is_a_protocol_error() {
    let result = exchange_with(LIMIT, |mut s, stream| {
        Box::pin(async move {
            s.write_frame(frame::DATA, 0, stream, b"early").await;
        })
    });
    assert!(
        matches!(
            result,
            Err(Http2Error::Protocol("response data before its headers"))
        ),
        "{result:?}"
    );
}

#[test]
fn connection_window_is_topped_up_as_bodies_arrive() {
    runtime().block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let script = tokio::spawn(async move {
            let (mut s, _) = Scripted::accept(server).await;
            let stream = s.read_request().await;
            let head = s.head_block("200", &[]);
            s.write_frame(frame::HEADERS, frame::END_HEADERS, stream, &head)
                .await;
            for _ in 0..4 {
                s.write_frame(frame::DATA, 0, stream, &[b'x'; 1000]).await;
            }
            s.write_frame(frame::DATA, frame::END_STREAM, stream, &[])
                .await;
            // Two top-ups of 2,000 bytes each (the refill threshold set below).
            let mut topped_up = 0;
            while topped_up < 4000 {
                let (header, payload) = s.read_frame().await;
                assert_eq!((header.kind, header.stream), (frame::WINDOW_UPDATE, 0));
                topped_up += u32::from_be_bytes(payload[..4].try_into().unwrap());
            }
            topped_up
        });
        let mut connection = Http2Connection::handshake(client).await.expect("handshake");
        connection.window_refill = 2000;
        let (_, body) = get(&mut connection, LIMIT).await.expect("answer");
        assert_eq!(body.len(), 4000);
        let topped_up = tokio::time::timeout(Duration::from_secs(10), script)
            .await
            .expect("script ends")
            .expect("script passes");
        assert_eq!(topped_up, 4000);
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever a kubelet sends after the request, the client returns an answer or an error;
    /// it never panics and never appends more than the limit.
    #[test]
    fn arbitrary_answers_never_panic(frames in proptest::collection::vec(
        (0u8..12, any::<u8>(), 0u32..4, proptest::collection::vec(any::<u8>(), 0..64)), 0..8),
        tail in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        let result = exchange_with(40, move |mut s, stream| {
            Box::pin(async move {
                for (kind, flags, stream_offset, payload) in frames {
                    let target = if stream_offset == 3 { 0 } else { stream + 2 * stream_offset };
                    let mut out = Vec::new();
                    frame_header(&mut out, payload.len(), kind, flags, target);
                    out.extend_from_slice(&payload);
                    if s.io.write_all(&out).await.is_err() {
                        return;
                    }
                }
                let _ = s.io.write_all(&tail).await;
            })
        });
        if let Ok((_, body)) = result {
            prop_assert!(body.len() <= 40);
        }
    }
}
