#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Data-plane tests of `mlcompute batch-driver`: the real binary, real Python workers, real files.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mlcompute");

/// A folder removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path =
            std::env::temp_dir().join(format!("mlc-batch-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn join(&self, part: &str) -> PathBuf {
        self.0.join(part)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `count` files `NNNNN.txt` (spread over a few subfolders) holding their number.
fn generate_input(dir: &Path, count: usize) {
    for i in 0..count {
        let sub = dir.join(format!("part{}", i % 4));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("{i:05}.txt")), format!("{i}\n")).unwrap();
    }
}

/// Sorted relative paths of the generated input, as the driver orders them.
fn input_order(count: usize) -> Vec<(String, usize)> {
    let mut names: Vec<(String, usize)> = (0..count)
        .map(|i| (format!("part{}/{i:05}.txt", i % 4), i))
        .collect();
    names.sort();
    names
}

fn write_script(dir: &TempDir, body: &str) -> PathBuf {
    let path = dir.join("score.py");
    std::fs::write(&path, body).unwrap();
    path
}

fn driver(input: &Path, output: &Path, script: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("batch-driver")
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .arg("--scoring-script")
        .arg(script)
        .env("MLCOMPUTE_BATCH_PROGRESS_INTERVAL", "100ms")
        .env_remove("JOB_COMPLETION_INDEX")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    cmd
}

fn run(cmd: &mut Command) -> Output {
    let output = cmd.output().unwrap();
    eprintln!("stderr: {}", String::from_utf8_lossy(&output.stderr));
    output
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn error_items(output: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(output.join("errors.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["item"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Reads each file, returns `relative-name,value*3`; prints to stdout on purpose (must not break
/// the protocol).
const TRIPLE: &str = r#"
import os
ROOT = None
def init():
    global ROOT
    ROOT = os.environ["INPUT_ROOT"]
    print("init: scoring", ROOT)
def run(mini_batch):
    print("run got", len(mini_batch), "files")
    rows = []
    for path in mini_batch:
        with open(path) as f:
            value = int(f.read())
        rows.append([os.path.relpath(path, ROOT), value * 3])
    return rows
"#;

#[test]
fn ten_thousand_files_are_scored_completely_and_in_order() {
    let dir = TempDir::new("10k");
    let input = dir.join("in");
    generate_input(&input, 10_000);
    let script = write_script(&dir, TRIPLE);
    let out = dir.join("out");
    let started = Instant::now();
    // As in a driver Pod: the snapshot for the relay sidecar goes to a file (no credentials).
    let snapshot = dir.join("progress/progress.json");
    let result = run(driver(&input, &out, &script)
        .args(["--max-concurrency", "2"])
        .env("MLCOMPUTE_PROGRESS_FILE", &snapshot)
        .env("INPUT_ROOT", &input));
    assert!(
        result.status.success(),
        "driver failed: {:?}",
        result.status
    );
    eprintln!("10 000 files in {:?}", started.elapsed());

    let expected: String = input_order(10_000)
        .into_iter()
        .map(|(name, i)| format!("{name},{}\n", i * 3))
        .collect();
    let rows = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
    assert_eq!(rows.lines().count(), 10_000);
    assert!(
        rows == expected,
        "rows differ from the expected, ordered output"
    );
    assert!(error_items(&out).is_empty());

    let summary = json(&out.join("summary.json"));
    assert_eq!(summary["status"], "Completed");
    assert_eq!(summary["items"]["total"], 10_000);
    assert_eq!(summary["items"]["succeeded"], 10_000);
    assert_eq!(summary["miniBatches"]["total"], 1_000);
    assert_eq!(summary["miniBatches"]["succeeded"], 1_000);
    assert_eq!(summary["attempts"]["total"], 1_000);
    assert_eq!(summary["rows"], 10_000);

    let progress = json(&out.join("_mlcompute/progress-00000.json"));
    assert_eq!(progress["phase"], "Completed");
    assert_eq!(progress["miniBatches"]["succeeded"], 1_000);
    let stdout = String::from_utf8(result.stdout).unwrap();
    assert!(
        stdout.lines().all(|l| l.starts_with(r#"{"progress":"#)),
        "stdout carries only progress lines"
    );
    // What the relay would write to the job's progress object: the final counts.
    let relayed =
        mlcompute::dataplane::batch_driver::progress_relay::read_snapshot(&snapshot, 0).unwrap();
    let relayed: Value = serde_json::from_str(&relayed).unwrap();
    assert_eq!(relayed["phase"], "Completed");
    assert_eq!(relayed["miniBatches"]["succeeded"], 1_000);
    assert_eq!(relayed["items"]["total"], 10_000);
}

#[test]
fn instances_share_the_work_and_the_last_one_merges_the_same_output() {
    let dir = TempDir::new("shards");
    let input = dir.join("in");
    generate_input(&input, 503);
    let script = write_script(&dir, TRIPLE);
    let single = dir.join("single");
    assert!(
        run(driver(&input, &single, &script).env("INPUT_ROOT", &input))
            .status
            .success()
    );

    let sharded = dir.join("sharded");
    let children: Vec<_> = (0..3)
        .map(|i| {
            driver(&input, &sharded, &script)
                .env("INPUT_ROOT", &input)
                .env("JOB_COMPLETION_INDEX", i.to_string())
                .env("MLCOMPUTE_BATCH_INSTANCE_COUNT", "3")
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    for i in 0..3 {
        let progress = json(&sharded.join(format!("_mlcompute/progress-{i:05}.json")));
        assert_eq!(progress["instance"], i);
        assert_eq!(progress["miniBatches"]["total"], 17);
    }
    assert_eq!(
        std::fs::read(single.join("predictions.csv")).unwrap(),
        std::fs::read(sharded.join("predictions.csv")).unwrap()
    );
}

#[test]
fn files_that_raise_are_exactly_the_items_in_the_error_file() {
    let dir = TempDir::new("raise");
    let input = dir.join("in");
    generate_input(&input, 200);
    let script = write_script(
        &dir,
        r#"
import os
BAD = {7, 42, 43, 199}
def run(mini_batch):
    rows = []
    for path in mini_batch:
        value = int(open(path).read())
        if value in BAD:
            raise ValueError("cannot score %d" % value)
        rows.append("%s %d" % (os.path.basename(path), value))
    return rows
"#,
    );
    let out = dir.join("out");
    let result = run(driver(&input, &out, &script).args(["--max-retries", "1"]));
    assert!(result.status.success());

    let bad: BTreeSet<String> = [7, 42, 43, 199]
        .iter()
        .map(|i| format!("part{}/{i:05}.txt", i % 4))
        .collect();
    assert_eq!(error_items(&out), bad);
    let errors = std::fs::read_to_string(out.join("errors.jsonl")).unwrap();
    assert!(errors.contains("ValueError: cannot score 42"), "{errors}");

    let rows = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
    assert_eq!(rows.lines().count(), 196);
    assert!(!rows.contains("00042.txt"));
    let summary = json(&out.join("summary.json"));
    assert_eq!(summary["items"]["failed"], 4);
    assert_eq!(summary["items"]["succeeded"], 196);
    // 7 and 199 sit in two mini-batches; 42 and 43 share one (sorted order interleaves the parts).
    assert_eq!(
        summary["miniBatches"]["failed"],
        summary["retriedMiniBatches"].as_array().unwrap().len()
    );
}

#[test]
fn a_hanging_mini_batch_times_out_and_is_retried() {
    let dir = TempDir::new("hang");
    let input = dir.join("in");
    generate_input(&input, 30);
    let marker = dir.join("hung-once");
    let script = write_script(
        &dir,
        r#"
import os, time
def run(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    if "00013.txt" in names and not os.path.exists(os.environ["MARKER"]):
        open(os.environ["MARKER"], "w").close()
        time.sleep(120)
    if "00027.txt" in names:
        time.sleep(120)
    return names
"#,
    );
    let out = dir.join("out");
    let started = Instant::now();
    let result = run(driver(&input, &out, &script)
        .args([
            "--timeout",
            "1s",
            "--max-retries",
            "2",
            "--max-concurrency",
            "2",
        ])
        .env("MARKER", &marker));
    assert!(result.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "timeouts were not enforced"
    );

    let summary = json(&out.join("summary.json"));
    let retried = summary["retriedMiniBatches"].as_array().unwrap();
    assert_eq!(retried.len(), 2, "{summary}");
    // The mini-batch with 00013 hung once, then succeeded on its second attempt.
    let once = retried.iter().find(|r| r["failedItems"] == 0).unwrap();
    assert_eq!(once["attempts"], 2);
    assert_eq!(once["timeouts"], 1);
    // The mini-batch with 00027 hung every time: 1 + 2 retries, all its items failed.
    let always = retried.iter().find(|r| r["failedItems"] != 0).unwrap();
    assert_eq!(always["attempts"], 3);
    assert_eq!(always["timeouts"], 3);
    assert_eq!(summary["attempts"]["timeouts"], 4);
    assert_eq!(summary["items"]["failed"], always["failedItems"]);
    let errors = std::fs::read_to_string(out.join("errors.jsonl")).unwrap();
    assert!(
        errors.contains("timed out after 1s (attempt 3 of 3)"),
        "{errors}"
    );
    assert!(error_items(&out).contains("part3/00027.txt"));
}

#[test]
fn a_worker_that_dies_is_a_failed_attempt_not_a_dead_driver() {
    let dir = TempDir::new("crash");
    let input = dir.join("in");
    generate_input(&input, 40);
    let marker = dir.join("crashed-once");
    let script = write_script(
        &dir,
        r#"
import os
def run(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    if "00005.txt" in names and not os.path.exists(os.environ["MARKER"]):
        open(os.environ["MARKER"], "w").close()
        os._exit(9)
    return names
"#,
    );
    let out = dir.join("out");
    let result = run(driver(&input, &out, &script).env("MARKER", &marker));
    assert!(result.status.success());
    let summary = json(&out.join("summary.json"));
    assert_eq!(summary["attempts"]["workerCrashes"], 1);
    assert_eq!(summary["items"]["failed"], 0);
    assert_eq!(summary["rows"], 40);
}

#[test]
fn crossing_the_error_threshold_fails_the_job_with_a_clear_reason() {
    let dir = TempDir::new("threshold");
    let input = dir.join("in");
    generate_input(&input, 300);
    let script = write_script(
        &dir,
        r#"
import os
def run(mini_batch):
    out = []
    for p in mini_batch:
        if int(open(p).read()) % 10 == 0:
            raise RuntimeError("corrupt input")
        out.append(os.path.basename(p))
    return out
"#,
    );
    let out = dir.join("out");
    let result =
        run(driver(&input, &out, &script).args(["--error-threshold", "3", "--max-retries", "0"]));
    assert_eq!(result.status.code(), Some(3), "threshold exit code");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("error threshold crossed"), "{stderr}");
    assert!(stderr.contains("exceeds errorThreshold 3"), "{stderr}");

    let summary = json(&out.join("summary.json"));
    assert_eq!(summary["status"], "Failed");
    assert!(
        summary["reason"]
            .as_str()
            .unwrap()
            .contains("exceeds errorThreshold 3")
    );
    assert!(summary["items"]["failed"].as_u64().unwrap() > 3);
    // One worker: mini-batches 0 and 1 hold two failing files each, so the driver stops right
    // after the second one (4 > 3) instead of scoring the other 28 mini-batches.
    assert_eq!(
        summary["items"]["failed"], 4,
        "the job went on after the threshold"
    );
    assert!(!out.join("predictions.csv").exists());
    let progress = json(&out.join("_mlcompute/progress-00000.json"));
    assert_eq!(progress["phase"], "Failed");

    // Running it again with a threshold that is not crossed resumes and completes.
    let again =
        run(driver(&input, &out, &script).args(["--error-threshold", "100", "--max-retries", "0"]));
    assert!(again.status.success());
    assert_eq!(json(&out.join("summary.json"))["items"]["failed"], 30);
    assert_eq!(error_items(&out).len(), 30);
}

#[test]
fn the_error_threshold_counts_the_failures_of_all_instances() {
    let dir = TempDir::new("threshold-peers");
    let input = dir.join("in");
    generate_input(&input, 200);
    // Mini-batches 0 and 1 (one per instance) each hold two failing files: 2 failures per
    // instance stay under the threshold of 3, the 4 of the whole input do not.
    let script = write_script(
        &dir,
        r#"
import os, time
BAD = {0, 4, 40, 44}
def run(mini_batch):
    time.sleep(0.1)
    out = []
    for p in mini_batch:
        if int(open(p).read()) in BAD:
            raise RuntimeError("bad")
        out.append(p)
    return out
"#,
    );
    let out = dir.join("out");
    let children: Vec<_> = (0..2)
        .map(|i| {
            driver(&input, &out, &script)
                .args(["--error-threshold", "3", "--max-retries", "0"])
                .args(["--instance-index", &i.to_string(), "--instance-count", "2"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let result = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(3), "{stderr}");
        assert!(stderr.contains("on others"), "{stderr}");
    }
    for i in 0..2 {
        let progress = json(&out.join(format!("_mlcompute/progress-{i:05}.json")));
        assert_eq!(progress["phase"], "Failed");
        assert_eq!(progress["items"]["failed"], 2);
        assert!(
            progress["miniBatches"]["succeeded"].as_u64().unwrap() < 9,
            "{progress}"
        );
    }
    let summary = json(&out.join("summary.json"));
    assert_eq!(summary["status"], "Failed");
    assert_eq!(summary["items"]["failed"], 4);
}

#[test]
fn a_script_whose_init_fails_stops_the_driver_with_its_reason() {
    let dir = TempDir::new("init");
    let input = dir.join("in");
    generate_input(&input, 5);
    let script = write_script(
        &dir,
        "def init():\n    raise ImportError('no model here')\ndef run(b):\n    return b\n",
    );
    let out = dir.join("out");
    let result = run(driver(&input, &out, &script).args(["--max-retries", "1"]));
    assert_eq!(result.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("ImportError: no model here"), "{stderr}");
    assert_eq!(json(&out.join("summary.json"))["status"], "Failed");

    let missing =
        run(driver(&input, &dir.join("out2"), &script).args(["--python", "/nonexistent/python3"]));
    assert_eq!(missing.status.code(), Some(4));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cannot start the Python interpreter")
    );
}

#[test]
fn a_killed_driver_resumes_and_its_output_equals_a_clean_run() {
    let dir = TempDir::new("resume");
    let input = dir.join("in");
    generate_input(&input, 3_000);
    let script = write_script(
        &dir,
        &format!(
            "{TRIPLE}\nimport time\n_run = run\ndef run(mini_batch):\n    time.sleep(0.005)\n    return _run(mini_batch)\n"
        ),
    );
    let clean = dir.join("clean");
    assert!(
        run(driver(&input, &clean, &script).env("INPUT_ROOT", &input))
            .status
            .success()
    );

    let out = dir.join("out");
    let mut child = driver(&input, &out, &script)
        .env("INPUT_ROOT", &input)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let journal = out.join("_mlcompute/journal-00000.jsonl");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lines = std::fs::read_to_string(&journal)
            .map(|j| j.lines().count())
            .unwrap_or(0);
        if lines >= 60 {
            break;
        }
        assert!(Instant::now() < deadline, "the driver made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let done_before = std::fs::read_to_string(&journal).unwrap().lines().count();
    assert!(
        done_before < 300,
        "the driver finished before it was killed"
    );
    let early_merge = run(Command::new(BIN)
        .args(["batch-driver", "--merge-only", "--output"])
        .arg(&out));
    assert_eq!(
        early_merge.status.code(),
        Some(5),
        "a merge before the end reports missing mini-batches"
    );
    assert!(!out.join("predictions.csv").exists());

    let result = run(driver(&input, &out, &script).env("INPUT_ROOT", &input));
    assert!(result.status.success());
    let progress = json(&out.join("_mlcompute/progress-00000.json"));
    assert_eq!(progress["resumed"].as_u64().unwrap() as usize, done_before);
    assert_eq!(progress["miniBatches"]["succeeded"], 300);
    // Every mini-batch was journaled exactly once: nothing finished was run again.
    assert_eq!(
        std::fs::read_to_string(&journal).unwrap().lines().count(),
        300
    );
    assert_eq!(
        std::fs::read(out.join("predictions.csv")).unwrap(),
        std::fs::read(clean.join("predictions.csv")).unwrap()
    );
    let (a, b) = (
        json(&out.join("summary.json")),
        json(&clean.join("summary.json")),
    );
    assert_eq!(a["items"], b["items"]);
    assert_eq!(a["miniBatches"], b["miniBatches"]);

    // An explicit merge of a finished output rewrites the same bytes.
    std::fs::remove_file(out.join("predictions.csv")).unwrap();
    let merged = run(Command::new(BIN)
        .args(["batch-driver", "--merge-only", "--output"])
        .arg(&out));
    assert!(merged.status.success());
    assert_eq!(
        std::fs::read(out.join("predictions.csv")).unwrap(),
        std::fs::read(clean.join("predictions.csv")).unwrap()
    );
}
