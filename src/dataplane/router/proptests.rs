//! Property tests of the router's parsers of untrusted bytes: instances' answers (heads, chunked
//! and sized bodies), the request heads built from clients' headers, endpoint tokens and invoke
//! paths. A bounded number of cases each, in the normal suite.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response};
use proptest::prelude::*;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{
    proxy::Outgoing,
    upstream::{
        Connection, ExchangeError, MAX_BODY_BYTES, MAX_HEAD_BYTES, MAX_HEADERS, request_head,
    },
};
use crate::contract::{router_http::invoke_endpoint, token};

/// An instance that answers with fixed bytes, handed out `step` bytes per read (so that every
/// split of a message across reads is exercised), then end of stream. Writes are swallowed.
struct Canned {
    data: Vec<u8>,
    at: usize,
    step: usize,
}

impl AsyncRead for Canned {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self
            .step
            .min(self.data.len() - self.at)
            .min(buf.remaining());
        let at = self.at;
        buf.put_slice(&self.data[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Canned {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

type Answer = Result<(Response<Bytes>, bool), ExchangeError>;

/// Reads answers to `count` requests from `data`; stops at the first error.
fn read_answers(data: Vec<u8>, step: usize, count: usize) -> Vec<Answer> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut conn = Connection::over(Canned { data, at: 0, step });
        let mut out = Vec::new();
        for _ in 0..count {
            let answer = conn.read_response(false).await;
            let stop = answer.is_err();
            out.push(answer);
            if stop {
                break;
            }
        }
        out
    })
}

fn read_one(data: Vec<u8>, step: usize) -> Answer {
    read_answers(data, step, 1).pop().unwrap()
}

fn malformed(answer: &Answer) -> Option<&'static str> {
    match answer {
        Err(ExchangeError::Malformed(why)) => Some(why),
        _ => None,
    }
}

/// A chunked message of `body` cut at `cuts`, with chunk sizes spelled as `spelling` says.
fn chunked(body: &[u8], cuts: &[usize], spelling: &[(bool, usize, bool)]) -> Vec<u8> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    points.push(0);
    points.push(body.len());
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    for (i, w) in points.windows(2).enumerate() {
        let (upper, zeros, ext) = spelling[i % spelling.len()];
        let size = w[1] - w[0];
        let hex = if upper {
            format!("{size:X}")
        } else {
            format!("{size:x}")
        };
        let zeros = zeros.min(8usize.saturating_sub(hex.len()));
        out.extend_from_slice("0".repeat(zeros).as_bytes());
        out.extend_from_slice(hex.as_bytes());
        if ext {
            out.extend_from_slice(b" ;name=\"v\"");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body[w[0]..w[1]]);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    out
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_answers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048), step in 1usize..64) {
        let _ = read_answers(data, step, 3);
    }

    #[test]
    fn mangled_http_answers_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..256),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        step in 1usize..32,
    ) {
        // Mostly well-formed answers with a few bytes changed reach deeper than random bytes.
        let mut data = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        data.extend_from_slice(&chunked(&body, &[body.len() / 2], &[(false, 0, false)]));
        data.extend_from_slice(b"\r\nHTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc");
        for (at, byte) in flips {
            let at = at % data.len();
            data[at] = byte;
        }
        let _ = read_answers(data, step, 2);
    }

    #[test]
    fn chunked_bodies_round_trip(
        body in proptest::collection::vec(any::<u8>(), 0..4096),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
        spelling in proptest::collection::vec((any::<bool>(), 0usize..4, any::<bool>()), 1..4),
        trailers in proptest::collection::vec("[a-z]{1,8}: [ -~]{0,16}", 0..4),
        step in 1usize..512,
    ) {
        let mut data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        data.extend_from_slice(&chunked(&body, &cuts, &spelling));
        for t in &trailers {
            data.extend_from_slice(t.as_bytes());
            data.extend_from_slice(b"\r\n");
        }
        data.extend_from_slice(b"\r\n");
        // A pipelined second answer after it is read intact.
        data.extend_from_slice(b"HTTP/1.1 204 No Content\r\n\r\n");
        let answers = read_answers(data, step, 2);
        let (first, reusable) = answers[0].as_ref().unwrap();
        prop_assert_eq!(first.body().as_ref(), &body[..]);
        prop_assert!(*reusable);
        prop_assert_eq!(answers[1].as_ref().unwrap().0.status().as_u16(), 204);
    }

    #[test]
    fn sized_bodies_round_trip(body in proptest::collection::vec(any::<u8>(), 0..4096), step in 1usize..512, repeat in any::<bool>()) {
        let mut data = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n", body.len()).into_bytes();
        if repeat {
            // The same length twice is allowed (RFC 9110 §8.6).
            data.extend_from_slice(format!("Content-Length:  {} \r\n", body.len()).as_bytes());
        }
        data.extend_from_slice(b"\r\n");
        data.extend_from_slice(&body);
        let (answer, reusable) = read_one(data, step).unwrap();
        prop_assert_eq!(answer.body().as_ref(), &body[..]);
        prop_assert!(reusable);
    }

    #[test]
    fn huge_chunk_sizes_are_refused_before_reading(
        size in (MAX_BODY_BYTES as u64 + 1)..=u64::MAX,
        leading in proptest::collection::vec(1usize..64, 0..3),
        zeros in 0usize..40,
    ) {
        // Refused from the size line alone: the data promised never comes, so waiting for it
        // would end in an I/O error instead.
        let mut data = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for n in &leading {
            data.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            data.extend_from_slice(&vec![b'x'; *n]);
            data.extend_from_slice(b"\r\n");
        }
        data.extend_from_slice(format!("{}{size:x}\r\n", "0".repeat(zeros)).as_bytes());
        let answer = read_one(data, 4096);
        let why = malformed(&answer);
        prop_assert!(
            matches!(why, Some("bad chunk size" | "answer body too large")),
            "{:?}", answer.err()
        );
    }

    #[test]
    fn malformed_chunk_sizes_are_refused(size in "[+-]?[0-9a-fA-F]{0,3}[^0-9a-fA-F;\r\n \t]+[0-9a-f]{0,3}|[+-][0-9a-f]{1,4}|") {
        let mut data = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        data.extend_from_slice(size.as_bytes());
        data.extend_from_slice(b"\r\nabc\r\n0\r\n\r\n");
        let answer = read_one(data, 4096);
        prop_assert_eq!(malformed(&answer), Some("bad chunk size"), "{:?}", size);
    }

    // Over 20 digits with a non-zero lead is past usize::MAX; leading zeros are valid (1*DIGIT).
    #[test]
    fn bad_content_lengths_are_refused(value in "[+-][0-9]{1,5}|[0-9]{0,3}[!-/:-~][ -~]{0,4}|[1-9][0-9]{20,29}") {
        let data = format!("HTTP/1.1 200 OK\r\ncontent-length: {value}\r\n\r\nabc").into_bytes();
        let answer = read_one(data, 4096);
        let why = malformed(&answer);
        prop_assert!(
            matches!(why, Some("bad content-length" | "content-length too large")),
            "{:?} -> {:?}", value, answer.err()
        );
    }

    #[test]
    fn conflicting_or_huge_content_lengths_are_refused(a in 0usize..1000, b in 0usize..1000, huge in (MAX_BODY_BYTES + 1)..usize::MAX) {
        prop_assume!(a != b);
        let conflicting = format!("HTTP/1.1 200 OK\r\ncontent-length: {a}\r\ncontent-length: {b}\r\n\r\n").into_bytes();
        prop_assert_eq!(malformed(&read_one(conflicting, 4096)), Some("conflicting content-length"));
        let too_big = format!("HTTP/1.1 200 OK\r\ncontent-length: {huge}\r\n\r\n").into_bytes();
        prop_assert_eq!(malformed(&read_one(too_big, 4096)), Some("answer body too large"));
    }

    #[test]
    fn oversized_heads_are_refused(line in 1024usize..8192, step in 512usize..8192) {
        // Header lines of `line` bytes until the head passes the limit, never ending.
        let mut data = b"HTTP/1.1 200 OK\r\n".to_vec();
        let mut i = 0;
        while data.len() <= MAX_HEAD_BYTES + line {
            data.extend_from_slice(format!("x-{i}: {}\r\n", "v".repeat(line)).as_bytes());
            i += 1;
        }
        let answer = read_one(data, step);
        let why = malformed(&answer);
        // Past MAX_HEADERS short lines, the count is what trips first.
        prop_assert!(
            matches!(why, Some("answer head too large" | "too many header lines")),
            "{:?}", answer.err()
        );
    }

    #[test]
    fn too_many_header_lines_are_refused(extra in 1usize..50) {
        let mut data = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..MAX_HEADERS + extra {
            data.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
        }
        data.extend_from_slice(b"content-length: 0\r\n\r\n");
        prop_assert_eq!(malformed(&read_one(data, 4096)), Some("too many header lines"));
    }

    #[test]
    fn endless_trailers_are_refused(n in (MAX_HEADERS + 1)..(MAX_HEADERS + 50)) {
        let mut data = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n0\r\n".to_vec();
        for i in 0..n {
            data.extend_from_slice(format!("t-{i}: 1\r\n").as_bytes());
        }
        prop_assert_eq!(malformed(&read_one(data, 4096)), Some("too many trailers"));
    }

    #[test]
    fn request_heads_carry_one_length_no_hop_by_hop_and_the_end_to_end_headers(
        method in "[A-Z]{1,10}",
        path in "/[A-Za-z0-9._~!$&'()*+,;=:@/%-]{0,64}(\\?[A-Za-z0-9=&%-]{0,32})?",
        headers in proptest::collection::vec(
            (prop_oneof![
                Just("content-length".to_string()),
                Just("transfer-encoding".to_string()),
                Just("connection".to_string()),
                Just("host".to_string()),
                Just("authorization".to_string()),
                Just("keep-alive".to_string()),
                Just("upgrade".to_string()),
                Just("expect".to_string()),
                "x-[a-z0-9-]{1,12}",
            ], "[!-~]([ -~]{0,30}[!-~])?"),
            0..12),
        body_len in 0usize..100_000,
    ) {
        let mut map = HeaderMap::new();
        for (name, value) in &headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let outgoing = Outgoing::new(method.clone(), map, Bytes::new());
        let head = request_head(
            &outgoing.method,
            &path,
            &HeaderValue::from_static("127.0.0.1:5001"),
            &outgoing.headers,
            Some(("x-mlcompute-mirror", "1")),
            body_len,
        );
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut slots);
        let status = parsed.parse(&head).unwrap();
        prop_assert_eq!(status, httparse::Status::Complete(head.len()));
        prop_assert_eq!(parsed.method, Some(method.as_str()));
        prop_assert_eq!(parsed.path, Some(path.as_str()));
        let named = |n: &str| parsed.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(n)).map(|h| h.value.to_vec()).collect::<Vec<_>>();
        prop_assert_eq!(named("content-length"), vec![body_len.to_string().into_bytes()]);
        prop_assert_eq!(named("host"), vec![b"127.0.0.1:5001".to_vec()]);
        for gone in ["transfer-encoding", "connection", "authorization", "keep-alive", "upgrade", "expect"] {
            prop_assert!(named(gone).is_empty(), "{} forwarded", gone);
        }
        // End-to-end headers arrive in order, unless `Connection` named them as hop-by-hop.
        let listed: Vec<String> = headers
            .iter()
            .filter(|(n, _)| n == "connection")
            .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_ascii_lowercase()).collect::<Vec<_>>())
            .collect();
        let expected: Vec<(String, Vec<u8>)> = headers
            .iter()
            .filter(|(n, _)| n.starts_with("x-") && !listed.contains(n))
            .map(|(n, v)| (n.clone(), v.clone().into_bytes()))
            .collect();
        let mut sent: Vec<(String, Vec<u8>)> = parsed
            .headers
            .iter()
            .filter(|h| h.name.starts_with("x-") && h.name != "x-mlcompute-mirror")
            .map(|h| (h.name.to_string(), h.value.to_vec()))
            .collect();
        // HeaderMap groups repeated names together; compare per name, in order.
        let mut expected_sorted = expected.clone();
        expected_sorted.sort_by(|a, b| a.0.cmp(&b.0));
        sent.sort_by(|a, b| a.0.cmp(&b.0));
        prop_assert_eq!(sent, expected_sorted);
    }

    #[test]
    fn tokens_verify_only_as_minted(
        key in proptest::collection::vec(any::<u8>(), 1..64),
        endpoint in "[a-z][a-z0-9-]{1,30}[a-z0-9]",
        expires in 1u64..u64::MAX,
        at in any::<usize>(),
        byte in any::<u8>(),
    ) {
        let minted = token::mint(&key, &endpoint, expires);
        prop_assert!(token::verify(&key, &endpoint, minted.as_bytes(), expires - 1));
        prop_assert!(!token::verify(&key, &endpoint, minted.as_bytes(), expires));
        let mut changed = minted.clone().into_bytes();
        let at = at % changed.len();
        prop_assume!(changed[at] != byte);
        changed[at] = byte;
        prop_assert!(!token::verify(&key, &endpoint, &changed, 0), "{:?}", String::from_utf8_lossy(&changed));
    }

    #[test]
    fn arbitrary_tokens_and_invoke_paths_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        path in "\\PC{0,80}",
        name in "[a-z][a-z0-9-]{1,30}[a-z0-9]",
    ) {
        prop_assert!(!token::verify(b"key", "e", &bytes, 0) || bytes.starts_with(b"mlc1."));
        if let Some(found) = invoke_endpoint(&path) {
            prop_assert!(!found.is_empty() && !found.contains('/'));
        }
        let built = format!("/api/v1/batch/{name}/invoke");
        prop_assert_eq!(invoke_endpoint(&built), Some(name.as_str()));
    }
}
