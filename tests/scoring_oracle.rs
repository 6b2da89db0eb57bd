#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The oracle test of the shipped scoring server: Azure ML's own inference server (azmlinfsrv
//! 1.5.1, from the host venv of `e2e/python/requirements.txt`) is the reference. For each style
//! of scoring script in `examples/scoring/` (plain, inference-schema, `@rawhttp`), the same
//! requests go to azmlinfsrv directly, to the shipped server (`python/mlcompute_scoring_server.py`
//! on the venv's Python), and to each of them through the router (`mlcompute router
//! --static-table`), all on 127.0.0.1; every answer must have azmlinfsrv's status, content type
//! and body, and no error body may carry the exception's text.
//!
//! Cases marked `router_branch` need the router to pass methods other than POST, query strings,
//! the swagger URI and request-id headers through; they are checked through the router in
//! [`methods_queries_swagger_and_request_ids_pass_through_the_router_as_direct`], and directly
//! (no router) in every other test.

mod support;

use support::local::{TempDir, free_port};

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_mlcompute");
const KEY: &str = "oracle-key";
/// What the plain script's run() puts in its exception: no answer may show it.
const SECRET: &str = "fs-key-7f3a9c1e";
const STYLES: [&str; 3] = ["plain", "schema", "rawhttp"];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------------
// A minimal blocking HTTP/1.1 client: one request per connection (`Connection: close`).

#[derive(Clone, Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no response head from {addr}: {:?}",
                String::from_utf8_lossy(&raw)
            )
        });
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    if method == "HEAD" {
        body.clear();
    }
    Answer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..line_end])
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[line_end + 4 + size..];
    }
}

// ---------------------------------------------------------------------------------------------
// Servers

struct Server {
    child: Child,
    addr: SocketAddr,
    name: String,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Azmlinfsrv,
    /// The shipped server on the venv's Python.
    Shipped,
    /// The shipped server on Debian's /usr/bin/python3 (no azureml package, no inference_schema).
    ShippedSystemPython,
}

/// Starts `kind` on `script` with `env` and the examples' model; waits for `GET /` to answer 200.
fn start(kind: Kind, script: &Path, workers: u32, env: &[(&str, &str)], dir: &Path) -> Server {
    let venv = support::python_venv();
    let port = free_port();
    let name = format!(
        "{kind:?}-{}",
        script
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
    );
    let mut command = match kind {
        Kind::Azmlinfsrv => {
            // azmlinfsrv itself binds 0.0.0.0; this runs it on 127.0.0.1 only.
            let mut c = Command::new(venv.join("bin/python"));
            c.arg(repo().join("e2e/python/azmlinfsrv_loopback.py"));
            c.arg("--entry_script").arg(script);
            c.args([
                "--port",
                &port.to_string(),
                "--worker_count",
                &workers.to_string(),
            ]);
            c
        }
        Kind::Shipped | Kind::ShippedSystemPython => {
            let mut c = Command::new(if kind == Kind::Shipped {
                venv.join("bin/python")
            } else {
                PathBuf::from("/usr/bin/python3")
            });
            c.arg(repo().join("python/mlcompute_scoring_server.py"));
            c.arg("--entry-script").arg(script);
            c.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
            c.env("WORKER_COUNT", workers.to_string());
            c
        }
    };
    let log = dir.join(format!("{name}-{port}.log"));
    let file = std::fs::File::create(&log).unwrap();
    command
        .current_dir(dir)
        .env("AML_APP_ROOT", dir)
        .env("AZUREML_MODEL_DIR", repo().join("examples/scoring/model"))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    let child = command.spawn().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut server = Server {
        child,
        addr,
        name,
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!(
                "{} exited with {status}: {}",
                server.name,
                std::fs::read_to_string(&server.log).unwrap_or_default()
            );
        }
        if let Ok(mut s) = TcpStream::connect(addr) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut buf = Vec::new();
            if s.read_to_end(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.1 200") {
                return server;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} did not start: {}",
            server.name,
            std::fs::read_to_string(&server.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn example(style: &str) -> PathBuf {
    repo().join(format!("examples/scoring/{style}/score.py"))
}

struct Router {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A router with one endpoint per server (named as the server), key auth.
fn router(servers: &[&Server]) -> Router {
    let dir = TempDir::new("table");
    let mut table = String::from("endpoints:\n");
    for s in servers {
        table.push_str(&format!(
            "  - name: {}\n    auth: {{ mode: key, primaryKey: {KEY}, secondaryKey: second }}\n    deployments:\n      - {{ name: blue, traffic: 100, requestSettings: {{ maxConcurrentRequestsPerInstance: 100, maxQueueWaitMs: 5000, requestTimeoutMs: 30000 }}, backends: [{{address: \"{}\"}}] }}\n",
            endpoint_name(&s.name),
            s.addr
        ));
    }
    let path = dir.0.join("table.yaml");
    std::fs::write(&path, table).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new(BIN)
        .args(["router", "--listen", &addr.to_string(), "--static-table"])
        .arg(&path)
        .args(["--poll-ms", "50", "--drain-seconds", "1"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let router = Router {
        child,
        addr,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if TcpStream::connect(addr).is_ok() && send(addr, "GET", "/readyz", &[], b"").status == 200
        {
            return router;
        }
        assert!(Instant::now() < deadline, "router did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn endpoint_name(server: &str) -> String {
    server.to_lowercase()
}

/// The router's URI for a server-relative target: `/score…` and `/swagger.json…` under the
/// endpoint's path.
fn through_router(server: &Server, target: &str) -> String {
    format!("/api/v1/endpoint/{}{target}", endpoint_name(&server.name))
}

// ---------------------------------------------------------------------------------------------
// Cases

struct Case {
    name: &'static str,
    method: &'static str,
    target: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
    /// Needs the router to pass this through (methods, query strings, swagger, request ids).
    router_branch: bool,
    /// Also through the router (health and unknown paths are the server's own).
    via_router: bool,
}

fn case(name: &'static str, method: &'static str, target: &'static str) -> Case {
    Case {
        name,
        method,
        target,
        headers: vec![],
        body: vec![],
        router_branch: method != "POST" || target.contains('?') || !target.starts_with("/score"),
        via_router: target.starts_with("/score") || target.starts_with("/swagger.json"),
    }
}

impl Case {
    fn json(mut self, body: &str) -> Self {
        self.headers.push(("Content-Type", "application/json"));
        self.body = body.as_bytes().to_vec();
        self
    }

    fn typed(mut self, content_type: &'static str, body: &[u8]) -> Self {
        self.headers.push(("Content-Type", content_type));
        self.body = body.to_vec();
        self
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        if name.to_ascii_lowercase().contains("request-id") || name == "TraceId" {
            self.router_branch = true;
        }
        self
    }
}

fn long_id() -> &'static str {
    Box::leak("r".repeat(101).into_boxed_str())
}

/// The same requests for every style: each style answers them its own way.
fn cases() -> Vec<Case> {
    vec![
        case("health", "GET", "/"),
        case("head health", "HEAD", "/"),
        case("unknown path", "GET", "/nope"),
        case("readyz is not a route", "GET", "/readyz"),
        case("POST to health", "POST", "/").json("{}"),
        case("good", "POST", "/score").json(r#"{"data": [[1, 2, 3], [0, 0, 0]]}"#),
        case("schema good", "POST", "/score").json(r#"{"Inputs": {"data": [[1, 2, 3]]}}"#),
        case("schema good with parameters", "POST", "/score").json(
            r#"{"Inputs": {"data": [[1, 2, 3]]}, "GlobalParameters": {"method": "predict_proba"}}"#,
        ),
        case("run raises with a secret", "POST", "/score").json(r#"{"data": "boom"}"#),
        case("schema run raises", "POST", "/score").json(r#"{"Inputs": {"data": "boom"}}"#),
        case("bad json", "POST", "/score").json("not json"),
        case("empty body", "POST", "/score").json(""),
        case("json list", "POST", "/score").json("[1]"),
        case("text body", "POST", "/score").typed("text/plain", br#"{"data": [[1, 2, 3]]}"#),
        case("form body", "POST", "/score").typed(
            "application/x-www-form-urlencoded",
            br#"{"data": [[1, 2, 3]]}"#,
        ),
        case("binary body", "POST", "/score")
            .typed("application/octet-stream", &[0xff, 0xfe, 0, 1, 7]),
        case("query string on POST", "POST", "/score?verbose=1").json(r#"{"data": [[1, 2, 3]]}"#),
        case("GET score", "GET", "/score"),
        case(
            "GET score with a query",
            "GET",
            "/score?a=1&b=[1,2]&c=x&a=2&d=",
        ),
        case(
            "GET score with schema inputs",
            "GET",
            "/score?Inputs=%7B%22data%22%3A%5B%5B1%2C2%2C3%5D%5D%7D",
        ),
        case("OPTIONS score", "OPTIONS", "/score"),
        case("HEAD score", "HEAD", "/score"),
        case("PUT score", "PUT", "/score").json("{}"),
        case("DELETE score", "DELETE", "/score"),
        case("swagger", "GET", "/swagger.json"),
        case("swagger 3", "GET", "/swagger.json?version=3"),
        case("swagger 3.1", "GET", "/swagger.json?version=3.1"),
        case("swagger 2.0", "GET", "/swagger.json?version=2.0"),
        case("swagger invalid version", "GET", "/swagger.json?version=7"),
        case("x-request-id echoed", "POST", "/score")
            .json("{}")
            .header("x-request-id", "req-abc"),
        case("x-request-id over 100", "POST", "/score")
            .json("{}")
            .header("x-request-id", long_id()),
        case("legacy x-ms-request-id", "POST", "/score")
            .json("{}")
            .header("x-request-id", "req-abc")
            .header("x-ms-request-id", "legacy-1"),
        case("client request id", "POST", "/score")
            .json("{}")
            .header("x-ms-client-request-id", "client-1"),
        case("client request id over 100", "POST", "/score")
            .json("{}")
            .header("x-ms-client-request-id", long_id()),
        case("TraceId", "POST", "/score")
            .json("{}")
            .header("TraceId", "trace-1"),
    ]
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

/// Compares `got` with azmlinfsrv's `want` for one case; returns what differs.
fn differences(case: &Case, want: &Answer, got: &Answer) -> Vec<String> {
    let mut diffs = Vec::new();
    if want.status != got.status {
        diffs.push(format!(
            "status {} (azmlinfsrv {})",
            got.status, want.status
        ));
    }
    if want.header("content-type") != got.header("content-type") {
        diffs.push(format!(
            "content type {:?} (azmlinfsrv {:?})",
            got.header("content-type"),
            want.header("content-type")
        ));
    }
    if want.body != got.body {
        diffs.push(format!(
            "body {:?} (azmlinfsrv {:?})",
            got.text(),
            want.text()
        ));
    }
    // The request ids: the caller's values as azmlinfsrv echoes them, generated ones as UUIDs.
    for name in [
        "x-request-id",
        "x-ms-request-id",
        "x-ms-client-request-id",
        "TraceId",
    ] {
        let (w, g) = (want.header(name), got.header(name));
        let same = match (w, g) {
            (Some(w), Some(g)) if is_uuid(w) => is_uuid(g),
            // The router gives every answer an id, also where azmlinfsrv's Flask refuses a method
            // (405) before azmlinfsrv's own hooks run and so sends none.
            (None, Some(g)) if name != "x-ms-client-request-id" => is_uuid(g),
            (w, g) => w == g,
        };
        if !same {
            diffs.push(format!("{name} {g:?} (azmlinfsrv {w:?})"));
        }
    }
    if want.header("x-ms-run-fn-exec-ms").is_some() != got.header("x-ms-run-fn-exec-ms").is_some() {
        diffs.push("x-ms-run-fn-exec-ms present in one answer only".into());
    }
    if want.header("x-ms-run-function-failed") != got.header("x-ms-run-function-failed") {
        diffs.push(format!(
            "x-ms-run-function-failed {:?} (azmlinfsrv {:?})",
            got.header("x-ms-run-function-failed"),
            want.header("x-ms-run-function-failed")
        ));
    }
    let _ = case;
    diffs
}

fn assert_no_exception_text(who: &str, case: &Case, answer: &Answer) {
    if answer.status >= 400 {
        let text = answer.text();
        for leak in [
            SECRET,
            "Traceback",
            "RuntimeError",
            "ValueError",
            "JSONDecodeError",
            "File \"",
        ] {
            assert!(
                !text.contains(leak),
                "{who}: {}: the error body shows {leak:?}: {text}",
                case.name
            );
        }
    }
}

struct Fleet {
    _dir: TempDir,
    servers: BTreeMap<&'static str, (Server, Server)>,
}

/// azmlinfsrv and the shipped server (venv Python) for every style, started side by side.
fn fleet() -> Fleet {
    let dir = TempDir::new("app");
    let mut servers = BTreeMap::new();
    for style in STYLES {
        let az = start(Kind::Azmlinfsrv, &example(style), 1, &[], &dir.0);
        let shipped = start(Kind::Shipped, &example(style), 1, &[], &dir.0);
        servers.insert(style, (az, shipped));
    }
    Fleet { _dir: dir, servers }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn each_style_answers_as_azmlinfsrv_directly_and_through_the_router() {
    let fleet = fleet();
    let all: Vec<&Server> = fleet.servers.values().flat_map(|(a, s)| [a, s]).collect();
    let router = router(&all);
    let auth = format!("Bearer {KEY}");
    let mut failures = Vec::new();
    for (style, (az, shipped)) in &fleet.servers {
        for case in cases() {
            let want = send(az.addr, case.method, case.target, &case.headers, &case.body);
            assert_no_exception_text("azmlinfsrv", &case, &want);
            let got = send(
                shipped.addr,
                case.method,
                case.target,
                &case.headers,
                &case.body,
            );
            assert_no_exception_text("shipped", &case, &got);
            for d in differences(&case, &want, &got) {
                failures.push(format!("{style}: {}: shipped direct: {d}", case.name));
            }
            if !case.via_router || case.router_branch {
                continue;
            }
            for server in [az, shipped] {
                let mut headers = case.headers.clone();
                headers.push(("Authorization", auth.as_str()));
                let target = through_router(server, case.target);
                let got = send(router.addr, case.method, &target, &headers, &case.body);
                assert_no_exception_text("router", &case, &got);
                for d in differences(&case, &want, &got) {
                    if d.starts_with("x-request-id")
                        || d.starts_with("x-ms-")
                        || d.starts_with("TraceId")
                    {
                        continue; // request ids at the router: the router branch's part
                    }
                    failures.push(format!(
                        "{style}: {}: router to {}: {d}",
                        case.name, server.name
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The shipped server logged the exception (with its secret) that the caller did not see.
    let (_, shipped) = &fleet.servers["plain"];
    let log = std::fs::read_to_string(&shipped.log).unwrap();
    assert!(log.contains(SECRET) && log.contains("Traceback"), "{log}");
    assert!(log.contains("the shipped scoring server"), "{log}");
}

/// Through the router, what needs the router branch: GET/OPTIONS/HEAD/PUT on the scoring URI,
/// query strings, the swagger URI, request-id headers. Same answers as azmlinfsrv directly.
#[test]
fn methods_queries_swagger_and_request_ids_pass_through_the_router_as_direct() {
    let fleet = fleet();
    let all: Vec<&Server> = fleet.servers.values().flat_map(|(a, s)| [a, s]).collect();
    let router = router(&all);
    let auth = format!("Bearer {KEY}");
    let mut failures = Vec::new();
    for (style, (az, shipped)) in &fleet.servers {
        for case in cases()
            .into_iter()
            .filter(|c| c.via_router && c.router_branch)
        {
            let want = send(az.addr, case.method, case.target, &case.headers, &case.body);
            for server in [az, shipped] {
                let mut headers = case.headers.clone();
                headers.push(("Authorization", auth.as_str()));
                let target = through_router(server, case.target);
                let got = send(router.addr, case.method, &target, &headers, &case.body);
                assert_no_exception_text("router", &case, &got);
                for d in differences(&case, &want, &got) {
                    failures.push(format!(
                        "{style}: {}: router to {}: {d}",
                        case.name, server.name
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A `@rawhttp` script on a Python without azureml-inference-server-http: the shipped server
/// stops at start with one line naming the package.
#[test]
fn a_rawhttp_script_without_the_package_stops_the_shipped_server_with_one_clear_line() {
    let python = "/usr/bin/python3";
    let probe = Command::new(python)
        .args(["-c", "import azureml_inference_server_http"])
        .output()
        .unwrap();
    assert!(
        !probe.status.success(),
        "{python} has azureml-inference-server-http: this test needs a Python without it"
    );
    let out = Command::new(python)
        .arg(repo().join("python/mlcompute_scoring_server.py"))
        .arg(example("rawhttp"))
        .args(["--host", "127.0.0.1", "--port", &free_port().to_string()])
        .env("AZUREML_MODEL_DIR", repo().join("examples/scoring/model"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("azureml-inference-server-http") && errors[0].contains("@rawhttp"),
        "{stderr}"
    );
    assert!(!stderr.contains("Traceback"), "{stderr}");
}

const WORKERS_PY: &str = r#"
import json, os, time
inits = 0
def init():
    global inits
    inits += 1
def run(raw_data):
    time.sleep(float(json.loads(raw_data).get("sleep", 0)))
    return {"pid": os.getpid(), "inits": inits}
"#;

/// WORKER_COUNT as in Azure ML: that many processes, each with its own init(), each serving one
/// request at a time (three slow requests at once land on three workers); SCORING_TIMEOUT_MS
/// cuts a long run() with azmlinfsrv's answer.
#[test]
fn worker_count_and_scoring_timeout_mean_what_they_mean_in_azure_ml() {
    let dir = TempDir::new("workers");
    let script = dir.0.join("score.py");
    std::fs::write(&script, WORKERS_PY).unwrap();
    let env = [("SCORING_TIMEOUT_MS", "1500")];
    let servers = [
        start(Kind::Azmlinfsrv, &script, 3, &env, &dir.0),
        start(Kind::Shipped, &script, 3, &env, &dir.0),
    ];
    let json = [("Content-Type", "application/json")];
    let mut timeouts = Vec::new();
    for server in &servers {
        let addr = server.addr;
        let answers: Vec<Answer> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..3)
                .map(|_| s.spawn(move || send(addr, "POST", "/score", &json, br#"{"sleep": 0.8}"#)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut pids = std::collections::BTreeSet::new();
        for a in &answers {
            assert_eq!(a.status, 200, "{}: {}", server.name, a.text());
            let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
            assert_eq!(
                v["inits"], 1,
                "{}: every worker ran its own init() once",
                server.name
            );
            pids.insert(v["pid"].as_u64().unwrap());
        }
        assert_eq!(
            pids.len(),
            3,
            "{}: three requests at once on three workers",
            server.name
        );
        let slow = send(addr, "POST", "/score", &json, br#"{"sleep": 4}"#);
        timeouts.push(slow);
    }
    assert_eq!(timeouts[0].status, 500);
    assert_eq!(
        timeouts[0].text(),
        r#"{"message": "Scoring timeout after 1500 ms"}"#
    );
    assert_eq!(
        (timeouts[1].status, timeouts[1].text()),
        (timeouts[0].status, timeouts[0].text())
    );
}

/// Without the inference_schema package (a plain image's Python), `GET /swagger.json` is a 404
/// with azmlinfsrv's message, and scoring works as ever.
#[test]
fn without_inference_schema_swagger_is_a_404_with_azmlinfsrvs_message() {
    let probe = Command::new("/usr/bin/python3")
        .args(["-c", "import inference_schema"])
        .output()
        .unwrap();
    assert!(
        !probe.status.success(),
        "/usr/bin/python3 has inference_schema"
    );
    let dir = TempDir::new("no-schema");
    let script = dir.0.join("score.py");
    std::fs::write(&script, WORKERS_PY).unwrap();
    let server = start(Kind::ShippedSystemPython, &script, 1, &[], &dir.0);
    for (target, version) in [("/swagger.json", "2"), ("/swagger.json?version=3", "3")] {
        let answer = send(server.addr, "GET", target, &[], b"");
        assert_eq!(answer.status, 404);
        assert_eq!(
            answer.text(),
            format!(
                r#"{{"message": "Swagger version [{version}] is not supported for the scoring script. Supported swagger versions: []."}}"#
            )
        );
    }
    let answer = send(
        server.addr,
        "POST",
        "/score",
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(answer.text().contains("\"inits\": 1"), "{}", answer.text());
}
