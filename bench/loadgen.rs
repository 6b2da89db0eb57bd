//! `mlc-loadgen`: the router benchmark's load generator and backend, in one small binary.
//!
//! - `mlc-loadgen backend --listen 127.0.0.1:PORT [--delay-ms N]`: a minimal keep-alive
//!   HTTP/1.1 server answering every request with a small JSON body.
//! - `mlc-loadgen closed --target 127.0.0.1:PORT --connections N --seconds S`: closed loop,
//!   for maximum throughput.
//! - `mlc-loadgen open --target 127.0.0.1:PORT --rate R --connections N --seconds S`: open
//!   loop at a fixed rate, paced by a thread of its own; a request still waiting behind an
//!   earlier answer at its due time counts from that due time, so queueing is not hidden (no
//!   coordinated omission).
//!
//! Both load modes print one JSON line: requests, errors, rps, p50/p90/p99/max in µs.
//! HTTP is written and parsed by hand (fixed request bytes, Content-Length bodies) so the
//! generator costs far less CPU than the systems it measures. A `Connection: close` answer
//! counts, and the next request on that connection opens a new one (its latency includes the
//! connect), as against azmlinfsrv's gunicorn sync workers. Loopback only.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Notify,
};

fn usage() -> ! {
    eprintln!(
        "usage: mlc-loadgen backend --listen ADDR [--delay-ms N]\n       mlc-loadgen closed|open --target ADDR [--path P] [--header 'K: V']... [--connections N] [--seconds S] [--rate R] [--body TEXT]"
    );
    std::process::exit(2)
}

struct Args {
    mode: String,
    listen: Option<SocketAddr>,
    target: Option<SocketAddr>,
    path: String,
    headers: Vec<String>,
    connections: usize,
    seconds: f64,
    rate: f64,
    body: String,
    delay_ms: u64,
}

fn parse_args() -> Args {
    let mut raw = std::env::args().skip(1);
    let mode = raw.next().unwrap_or_else(|| usage());
    let mut args = Args {
        mode,
        listen: None,
        target: None,
        path: "/api/v1/endpoint/bench/score".into(),
        headers: Vec::new(),
        connections: 64,
        seconds: 3.0,
        rate: 1000.0,
        body: r#"{"data":[[1,2,3,4]]}"#.into(),
        delay_ms: 0,
    };
    while let Some(flag) = raw.next() {
        let value = raw.next().unwrap_or_else(|| usage());
        let parsed = match flag.as_str() {
            "--listen" => value.parse().map(|v| args.listen = Some(v)).is_ok(),
            "--target" => value.parse().map(|v| args.target = Some(v)).is_ok(),
            "--path" => {
                args.path = value;
                true
            }
            "--header" => {
                args.headers.push(value);
                true
            }
            "--body" => {
                args.body = value;
                true
            }
            "--connections" => value.parse().map(|v| args.connections = v).is_ok(),
            "--seconds" => value.parse().map(|v| args.seconds = v).is_ok(),
            "--rate" => value.parse().map(|v| args.rate = v).is_ok(),
            "--delay-ms" => value.parse().map(|v| args.delay_ms = v).is_ok(),
            _ => false,
        };
        if !parsed {
            usage();
        }
    }
    for addr in [args.listen, args.target].into_iter().flatten() {
        if !addr.ip().is_loopback() {
            eprintln!("mlc-loadgen talks to loopback addresses only, not {addr}");
            std::process::exit(2);
        }
    }
    args
}

fn main() {
    let args = parse_args();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mlc-loadgen: {error}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async {
        match args.mode.as_str() {
            "backend" => backend(args.listen.unwrap_or_else(|| usage()), args.delay_ms).await,
            "closed" | "open" => generate(&args).await,
            _ => usage(),
        }
    });
    if let Err(error) = result {
        eprintln!("mlc-loadgen: {error}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 framing, just enough for fixed-size messages

/// Reads one message head plus its Content-Length body from `buf`/`stream`. Returns the status
/// code (responses) or 0 (requests) and whether the peer closes the connection after it
/// (`Connection: close`, as gunicorn's sync workers answer), and leaves any following bytes in
/// `buf`.
async fn read_message(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<(u16, bool)>> {
    loop {
        if let Some(end) = find_head_end(buf) {
            let head = &buf[..end];
            let status = if head.starts_with(b"HTTP/") {
                std::str::from_utf8(&head[9..12.min(head.len())])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0)
            } else {
                0
            };
            let length = content_length(head).unwrap_or(0);
            let close = header_is(head, "connection", "close");
            let total = end + length;
            while buf.len() < total {
                if read_more(stream, buf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
            buf.drain(..total);
            return Ok(Some((status, close)));
        }
        if read_more(stream, buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn header_is(head: &[u8], header: &str, value: &str) -> bool {
    let Ok(text) = std::str::from_utf8(head) else {
        return false;
    };
    text.split("\r\n").any(|line| {
        line.split_once(':').is_some_and(|(name, v)| {
            name.trim().eq_ignore_ascii_case(header) && v.trim().eq_ignore_ascii_case(value)
        })
    })
}

fn content_length(head: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(head).ok()?;
    text.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

// ---------------------------------------------------------------------------------------------
// Backend

async fn backend(listen: SocketAddr, delay_ms: u64) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let body = br#"{"prediction":[0.25,0.75],"model":"bench"}"#;
    let response: &'static [u8] = Box::leak(
        [
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
            body,
        ]
        .concat()
        .into_boxed_slice(),
    );
    loop {
        let (mut stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(16 * 1024);
            while let Ok(Some(_)) = read_message(&mut stream, &mut buf).await {
                if delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                }
                if stream.write_all(response).await.is_err() {
                    break;
                }
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Load

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    latencies_us: Vec<u32>,
}

async fn generate(args: &Args) -> std::io::Result<()> {
    let target = args.target.unwrap_or_else(|| usage());
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {target}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        args.path,
        args.body.len()
    );
    for header in &args.headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.push_str(&args.body);
    let request: &'static [u8] = Box::leak(request.into_bytes().into_boxed_slice());
    let duration = Duration::from_secs_f64(args.seconds);
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + duration;
    let schedule = (args.mode == "open").then(|| {
        Arc::new(Schedule {
            start,
            interval: Duration::from_secs_f64(1.0 / args.rate),
            connections: args.connections,
            released: (0..args.connections).map(|_| Gate::default()).collect(),
        })
    });
    if let Some(schedule) = &schedule {
        let schedule = schedule.clone();
        std::thread::Builder::new()
            .name("pacer".into())
            .spawn(move || schedule.pace(end))?;
    }
    let mut tasks = Vec::new();
    for index in 0..args.connections {
        let schedule = schedule.clone();
        tasks.push(tokio::spawn(async move {
            match schedule {
                Some(schedule) => open_connection(target, request, end, &schedule, index).await,
                None => closed_connection(target, request, start, end).await,
            }
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await.map_err(std::io::Error::other)?;
        total.ok += tally.ok;
        total.errors += tally.errors;
        total.latencies_us.extend(tally.latencies_us);
    }
    let mut latencies = total.latencies_us;
    latencies.sort_unstable();
    let pick = |q: f64| -> u32 {
        if latencies.is_empty() {
            0
        } else {
            latencies[((latencies.len() - 1) as f64 * q).round() as usize]
        }
    };
    println!(
        "{{\"mode\":\"{}\",\"requests\":{},\"errors\":{},\"rps\":{:.1},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"max_us\":{}}}",
        args.mode,
        total.ok,
        total.errors,
        total.ok as f64 / args.seconds,
        pick(0.5),
        pick(0.9),
        pick(0.99),
        latencies.last().copied().unwrap_or(0),
    );
    Ok(())
}

/// The open loop's send schedule: request `k` (over all connections) is due at
/// `start + k × interval` and goes to connection `k mod connections`.
struct Schedule {
    start: Instant,
    interval: Duration,
    connections: usize,
    released: Vec<Gate>,
}

/// How many requests a connection has been told to send so far.
#[derive(Default)]
struct Gate {
    count: AtomicU64,
    notify: Notify,
}

impl Schedule {
    /// When the `nth` request of connection `index` is due.
    fn due(&self, index: usize, nth: u64) -> Instant {
        let k = nth * self.connections as u64 + index as u64;
        self.start + self.interval.mul_f64(k as f64)
    }

    /// Releases each request at its due time, from a thread of its own: a thread sleep is
    /// precise to tens of microseconds, Tokio's timer only to a millisecond, and a millisecond of
    /// the generator's own lateness would swamp the latencies being measured.
    fn pace(&self, end: Instant) {
        for k in 0u64.. {
            let due = self.start + self.interval.mul_f64(k as f64);
            if due >= end {
                break;
            }
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let gate = &self.released[(k % self.connections as u64) as usize];
            gate.count.fetch_add(1, Ordering::Release);
            gate.notify.notify_one();
        }
    }
}

async fn connect(target: SocketAddr) -> Option<TcpStream> {
    let stream = TcpStream::connect(target).await.ok()?;
    let _ = stream.set_nodelay(true);
    Some(stream)
}

/// How one exchange went.
enum Exchange {
    /// A 2xx answer; the connection stays usable.
    Ok,
    /// A 2xx answer after which the server closes the connection: the next request opens another.
    OkClosed,
    Failed,
}

/// One exchange.
async fn exchange(stream: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) -> Exchange {
    if stream.write_all(request).await.is_err() {
        return Exchange::Failed;
    }
    match read_message(stream, buf).await {
        Ok(Some((status, close))) if (200..300).contains(&status) => {
            if close {
                Exchange::OkClosed
            } else {
                Exchange::Ok
            }
        }
        _ => Exchange::Failed,
    }
}

/// Closed loop: the next request goes out as soon as the answer to the last one is in.
async fn closed_connection(
    target: SocketAddr,
    request: &'static [u8],
    start: Instant,
    end: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut stream = None;
    let mut buf = Vec::with_capacity(16 * 1024);
    tokio::time::sleep_until(start.into()).await;
    while Instant::now() < end {
        // A request's latency includes opening its connection when it needs one (a server that
        // closes after each answer makes every request pay for it).
        let sent = Instant::now();
        if stream.is_none() {
            buf.clear();
            stream = connect(target).await;
            if stream.is_none() {
                tally.errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        }
        let Some(s) = stream.as_mut() else { continue };
        match exchange(s, request, &mut buf).await {
            Exchange::Ok => {
                tally.ok += 1;
                tally.record(sent);
            }
            Exchange::OkClosed => {
                tally.ok += 1;
                tally.record(sent);
                stream = None;
            }
            Exchange::Failed => {
                tally.errors += 1;
                stream = None;
            }
        }
    }
    tally
}

/// Open loop: each request goes out when the pacer releases it. Its latency runs from the
/// moment it was sent when the connection was free at its due time (any lateness then is the
/// generator's own wake-up), and from its due time when the connection was still waiting for an
/// earlier answer (that backlog is the system's doing and stays in the figure: no coordinated
/// omission).
async fn open_connection(
    target: SocketAddr,
    request: &'static [u8],
    end: Instant,
    schedule: &Schedule,
    index: usize,
) -> Tally {
    let mut tally = Tally::default();
    let gate = &schedule.released[index];
    let mut stream = None;
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut nth = 0u64;
    loop {
        let due = schedule.due(index, nth);
        if due >= end {
            break;
        }
        let backlog = Instant::now() >= due;
        while gate.count.load(Ordering::Acquire) <= nth {
            gate.notify.notified().await;
        }
        nth += 1;
        if stream.is_none() {
            buf.clear();
            stream = connect(target).await;
        }
        let Some(s) = stream.as_mut() else {
            tally.errors += 1;
            continue;
        };
        let sent = Instant::now();
        match exchange(s, request, &mut buf).await {
            Exchange::Ok => {
                tally.ok += 1;
                tally.record(if backlog { due } else { sent });
            }
            Exchange::OkClosed => {
                tally.ok += 1;
                tally.record(if backlog { due } else { sent });
                stream = None;
            }
            Exchange::Failed => {
                tally.errors += 1;
                stream = None;
            }
        }
    }
    tally
}

impl Tally {
    fn record(&mut self, from: Instant) {
        let micros = from.elapsed().as_micros().min(u32::MAX as u128) as u32;
        self.latencies_us.push(micros);
    }
}
