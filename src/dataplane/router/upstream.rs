//! The router's HTTP/1.1 client towards instances, written for one job: send a buffered request
//! on a pooled keep-alive connection and read back a buffered response, inside the calling
//! task. No connection task, no channels: a request costs one write and (usually) one read.
//!
//! Framing follows RFC 9112: a response to HEAD, a 1xx/204/304 has no body; otherwise
//! `Transfer-Encoding: chunked`, else `Content-Length`, else the body runs until the instance
//! closes the connection (which then is not reused).

use std::{io, net::SocketAddr, time::Duration};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

/// The most header lines accepted in a response.
pub(crate) const MAX_HEADERS: usize = 100;
/// The largest response head accepted.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The largest response body accepted.
pub const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;
/// The most hex digits of a chunk size: 8 already exceed [`MAX_BODY_BYTES`], so more are refused
/// (leading zeros included) before any arithmetic on them.
const MAX_CHUNK_SIZE_DIGITS: usize = 8;
/// The most trailer lines accepted after the last chunk.
const MAX_TRAILERS: usize = MAX_HEADERS;
/// How long connecting to an instance may take before another one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Nothing came back before the connection failed or closed: the request may be sent again.
    #[error("the connection closed before any answer")]
    NothingReceived(#[source] io::Error),
    /// The connection failed or closed in the middle of the answer.
    #[error("the connection failed during the answer")]
    Io(#[source] io::Error),
    /// The answer is not HTTP/1.1 as we understand it.
    #[error("malformed answer: {0}")]
    Malformed(&'static str),
}

impl ExchangeError {
    /// A bounded name for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::NothingReceived(_) => "closed",
            Self::Io(_) => "io",
            Self::Malformed(_) => "malformed",
        }
    }
}

/// One keep-alive connection to an instance (a TCP stream; any byte stream in tests).
#[derive(Debug)]
pub struct Connection<S = TcpStream> {
    stream: S,
    buf: BytesMut,
}

impl Connection {
    /// Connects, with a short timeout so a black-holed instance is skipped quickly.
    pub async fn open(addr: SocketAddr) -> io::Result<Self> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        Ok(Self::over(stream))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// A connection over an open byte stream.
    pub fn over(stream: S) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
        }
    }

    /// Sends `head` (a complete request head) and `body`, then reads the answer. Returns the
    /// answer and whether the connection may be reused.
    pub async fn exchange(
        &mut self,
        head: &[u8],
        body: &[u8],
        head_request: bool,
    ) -> Result<(Response<Bytes>, bool), ExchangeError> {
        self.buf.clear();
        let write = if body.len() <= 16 * 1024 {
            let mut message = Vec::with_capacity(head.len() + body.len());
            message.extend_from_slice(head);
            message.extend_from_slice(body);
            self.stream.write_all(&message).await
        } else {
            match self.stream.write_all(head).await {
                Ok(()) => self.stream.write_all(body).await,
                Err(error) => Err(error),
            }
        };
        write.map_err(ExchangeError::NothingReceived)?;
        let (response, reusable) = self.read_response(head_request).await?;
        Ok((response, reusable && self.buf.is_empty()))
    }

    /// Whether no unread answer bytes are buffered (the connection is between exchanges).
    pub fn is_drained(&self) -> bool {
        self.buf.is_empty()
    }

    /// Sends several complete requests back to back in one write (HTTP/1.1 pipelining); their
    /// answers follow in order, read with [`Self::read_response`].
    pub async fn send_pipelined(&mut self, message: &[u8]) -> io::Result<()> {
        self.buf.clear();
        self.stream.write_all(message).await
    }

    /// Reads the next answer. Returns it and whether it left the connection usable (delimited,
    /// no `Connection: close`); bytes of a following pipelined answer stay buffered.
    pub async fn read_response(
        &mut self,
        head_request: bool,
    ) -> Result<(Response<Bytes>, bool), ExchangeError> {
        loop {
            let (status, headers, consumed) = self.read_head().await?;
            self.buf.advance(consumed);
            if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
                continue; // 100 Continue and friends: the real answer follows
            }
            let close = wants_close(&headers);
            let no_body = head_request
                || status == StatusCode::NO_CONTENT
                || status == StatusCode::NOT_MODIFIED;
            let (body, delimited) = if no_body {
                (Bytes::new(), true)
            } else if is_chunked(&headers) {
                (self.read_chunked().await?, true)
            } else if let Some(length) = content_length(&headers)? {
                (self.read_exact_body(length).await?, true)
            } else {
                (self.read_to_close().await?, false)
            };
            let mut response = Response::new(body);
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            return Ok((response, delimited && !close));
        }
    }

    async fn fill(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(8 * 1024);
        }
        self.stream.read_buf(&mut self.buf).await
    }

    async fn read_head(&mut self) -> Result<(StatusCode, HeaderMap, usize), ExchangeError> {
        let mut received_any = !self.buf.is_empty();
        loop {
            if !self.buf.is_empty() {
                let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut parsed = httparse::Response::new(&mut slots);
                match parsed.parse(&self.buf) {
                    Ok(httparse::Status::Complete(consumed)) => {
                        let status = parsed
                            .code
                            .and_then(|code| StatusCode::from_u16(code).ok())
                            .ok_or(ExchangeError::Malformed("bad status code"))?;
                        let mut headers = HeaderMap::with_capacity(parsed.headers.len());
                        for header in parsed.headers.iter() {
                            let name = HeaderName::from_bytes(header.name.as_bytes())
                                .map_err(|_| ExchangeError::Malformed("bad header name"))?;
                            let value = HeaderValue::from_bytes(header.value)
                                .map_err(|_| ExchangeError::Malformed("bad header value"))?;
                            headers.append(name, value);
                        }
                        return Ok((status, headers, consumed));
                    }
                    Ok(httparse::Status::Partial) if self.buf.len() < MAX_HEAD_BYTES => {}
                    Ok(httparse::Status::Partial) => {
                        return Err(ExchangeError::Malformed("answer head too large"));
                    }
                    Err(httparse::Error::TooManyHeaders) => {
                        return Err(ExchangeError::Malformed("too many header lines"));
                    }
                    Err(_) => return Err(ExchangeError::Malformed("not an HTTP/1.1 answer")),
                }
            }
            match self.fill().await {
                Ok(0) if received_any => {
                    return Err(ExchangeError::Io(io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(0) => {
                    return Err(ExchangeError::NothingReceived(
                        io::ErrorKind::UnexpectedEof.into(),
                    ));
                }
                Ok(_) => received_any = true,
                Err(error) if received_any => return Err(ExchangeError::Io(error)),
                Err(error) => return Err(ExchangeError::NothingReceived(error)),
            }
        }
    }

    async fn read_exact_body(&mut self, length: usize) -> Result<Bytes, ExchangeError> {
        if length > MAX_BODY_BYTES {
            return Err(ExchangeError::Malformed("answer body too large"));
        }
        if self.buf.capacity() < length {
            self.buf.reserve(length - self.buf.len());
        }
        while self.buf.len() < length {
            if self.fill().await.map_err(ExchangeError::Io)? == 0 {
                return Err(ExchangeError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
        }
        Ok(self.buf.split_to(length).freeze())
    }

    async fn read_to_close(&mut self) -> Result<Bytes, ExchangeError> {
        while self.fill().await.map_err(ExchangeError::Io)? > 0 {
            if self.buf.len() > MAX_BODY_BYTES {
                return Err(ExchangeError::Malformed("answer body too large"));
            }
        }
        Ok(self.buf.split().freeze())
    }

    async fn read_chunked(&mut self) -> Result<Bytes, ExchangeError> {
        let mut body = BytesMut::new();
        loop {
            let line = self.read_line().await?;
            let size = chunk_size(&line)?;
            if size == 0 {
                // Trailers, if any, end with an empty line; they are dropped.
                let mut trailers = 0;
                while !self.read_line().await?.is_empty() {
                    trailers += 1;
                    if trailers > MAX_TRAILERS {
                        return Err(ExchangeError::Malformed("too many trailers"));
                    }
                }
                return Ok(body.freeze());
            }
            // `size` is below 2^32 (see `chunk_size`) and body.len() at most MAX_BODY_BYTES: no overflow.
            if size > MAX_BODY_BYTES - body.len() {
                return Err(ExchangeError::Malformed("answer body too large"));
            }
            while self.buf.len() < size + 2 {
                if self.fill().await.map_err(ExchangeError::Io)? == 0 {
                    return Err(ExchangeError::Io(io::ErrorKind::UnexpectedEof.into()));
                }
            }
            body.extend_from_slice(&self.buf[..size]);
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(ExchangeError::Malformed("chunk not followed by CRLF"));
            }
            self.buf.advance(size + 2);
        }
    }

    /// One CRLF-terminated line, without the CRLF.
    async fn read_line(&mut self) -> Result<Bytes, ExchangeError> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf.split_to(end).freeze();
                self.buf.advance(2);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD_BYTES {
                return Err(ExchangeError::Malformed("chunk line too long"));
            }
            if self.fill().await.map_err(ExchangeError::Io)? == 0 {
                return Err(ExchangeError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }
}

/// The size of a chunk-size line (`1*HEXDIG [ BWS ; chunk-ext ]`), refusing what is not one: signs,
/// empty sizes, and more digits than any accepted body needs.
fn chunk_size(line: &[u8]) -> Result<usize, ExchangeError> {
    let size_text = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if size_text.is_empty()
        || size_text.len() > MAX_CHUNK_SIZE_DIGITS
        || !size_text.iter().all(u8::is_ascii_hexdigit)
    {
        return Err(ExchangeError::Malformed("bad chunk size"));
    }
    size_text.iter().try_fold(0usize, |size, &digit| {
        let value = char::from(digit)
            .to_digit(16)
            .ok_or(ExchangeError::Malformed("bad chunk size"))?;
        Ok(size * 16 + value as usize)
    })
}

fn wants_close(headers: &HeaderMap) -> bool {
    headers.get_all(http::header::CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

fn is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .next_back()
                .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        })
}

fn content_length(headers: &HeaderMap) -> Result<Option<usize>, ExchangeError> {
    let mut values = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    // `1*DIGIT` (RFC 9110): no sign, which `usize::from_str` would accept.
    let parse = |v: &HeaderValue| {
        let digits = v.as_bytes().trim_ascii();
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(ExchangeError::Malformed("bad content-length"));
        }
        std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or(ExchangeError::Malformed("content-length too large"))
    };
    let length = parse(first)?;
    for other in values {
        if parse(other)? != length {
            return Err(ExchangeError::Malformed("conflicting content-length"));
        }
    }
    Ok(Some(length))
}

/// Writes a request head: request line, `Host`, the given headers, and `Content-Length`.
pub fn request_head(
    method: &http::Method,
    path: &str,
    host: &HeaderValue,
    headers: &HeaderMap,
    extra: Option<(&str, &str)>,
    body_len: usize,
) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(path.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    head.extend_from_slice(host.as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if let Some((name, value)) = extra {
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"content-length: ");
    head.extend_from_slice(body_len.to_string().as_bytes());
    head.extend_from_slice(b"\r\n\r\n");
    head
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Serves canned bytes on 127.0.0.1 to each connection, then keeps it open.
    async fn canned(answers: Vec<&'static [u8]>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut scratch = [0u8; 4096];
            for answer in answers {
                let _ = stream.read(&mut scratch).await.unwrap();
                stream.write_all(answer).await.unwrap();
            }
            let _ = stream.read(&mut scratch).await;
        });
        addr
    }

    /// The head of `POST /score` with a 2-byte body.
    fn score_head() -> Vec<u8> {
        request_head(
            &http::Method::POST,
            "/score",
            &HeaderValue::from_static("x"),
            &HeaderMap::new(),
            None,
            2,
        )
    }

    async fn exchange(conn: &mut Connection) -> Result<(Response<Bytes>, bool), ExchangeError> {
        conn.exchange(&score_head(), b"{}", false).await
    }

    #[tokio::test]
    async fn content_length_chunked_and_continue_answers() {
        let addr = canned(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n2\r\nde\r\n0\r\nt: 1\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 500 Oops\r\nconnection: close\r\ncontent-length: 2\r\n\r\nno",
        ])
        .await;
        let mut conn = Connection::open(addr).await.unwrap();
        let (first, reuse) = exchange(&mut conn).await.unwrap();
        assert_eq!(
            (first.status(), first.body().as_ref(), reuse),
            (StatusCode::OK, &b"hello"[..], true)
        );
        let (second, reuse) = exchange(&mut conn).await.unwrap();
        assert_eq!(
            (second.status(), second.body().as_ref(), reuse),
            (StatusCode::CREATED, &b"abcde"[..], true)
        );
        let (third, _) = exchange(&mut conn).await.unwrap();
        assert_eq!(
            (third.status(), third.body().len()),
            (StatusCode::NO_CONTENT, 0)
        );
        let (fourth, reuse) = exchange(&mut conn).await.unwrap();
        assert_eq!(
            (fourth.status(), reuse),
            (StatusCode::INTERNAL_SERVER_ERROR, false)
        );
    }

    #[tokio::test]
    async fn pipelined_answers_are_read_in_order_and_a_close_ends_the_run() {
        // Three requests in one write; the instance answers the first two in one write (the
        // second with `connection: close`), so the third goes unanswered.
        let addr = canned(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\naHTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\nb",
        ])
        .await;
        let head = score_head();
        let mut message = Vec::new();
        for _ in 0..3 {
            message.extend_from_slice(&head);
            message.extend_from_slice(b"{}");
        }
        let mut conn = Connection::open(addr).await.unwrap();
        conn.send_pipelined(&message).await.unwrap();
        let (first, keep) = conn.read_response(false).await.unwrap();
        assert_eq!((first.body().as_ref(), keep), (&b"a"[..], true));
        assert!(!conn.is_drained(), "the second answer is already buffered");
        let (second, keep) = conn.read_response(false).await.unwrap();
        assert_eq!((second.body().as_ref(), keep), (&b"b"[..], false));
        assert!(conn.is_drained());
    }

    #[tokio::test]
    async fn a_closed_connection_counts_as_nothing_received() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            drop(stream);
        });
        let mut conn = Connection::open(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let error = exchange(&mut conn).await.unwrap_err();
        assert_eq!(error.category(), "closed");
    }

    #[test]
    fn request_heads_carry_host_headers_and_length() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let head = request_head(
            &http::Method::POST,
            "/score",
            &HeaderValue::from_static("127.0.0.1:5001"),
            &headers,
            Some(("x-mlcompute-mirror", "1")),
            7,
        );
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "POST /score HTTP/1.1\r\nhost: 127.0.0.1:5001\r\ncontent-type: application/json\r\nx-mlcompute-mirror: 1\r\ncontent-length: 7\r\n\r\n"
        );
    }
}
