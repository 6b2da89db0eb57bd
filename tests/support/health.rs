//! Health as GitOps tools compute it, from the real implementations: kstatus (`sigs.k8s.io/cli-utils`,
//! what Flux and kpt use) and the chart's Argo CD health Lua run in gopher-lua as Argo CD runs it.
//! Both are small Go programs that `e2e/health/build` builds into `$MLC_CACHE/health-<key>`.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// A tool's verdict: `status` and `message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub status: String,
    pub message: String,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} \"{}\"", self.status, self.message)
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The Argo CD health script the chart and `deploy/argocd` ship.
pub fn argo_script() -> PathBuf {
    repo().join("deploy/argocd/health.lua")
}

/// The cache key `e2e/health/build` uses: the first 12 hex digits of the SHA-256 over the module's
/// sources (go.mod, go.sum, every .go file under cmd/), each as path, NUL, content, NUL, in byte
/// order of path. Keep the two in step.
pub fn build_key() -> String {
    let dir = repo().join("e2e/health");
    let mut files = vec!["go.mod".to_string(), "go.sum".to_string()];
    let mut stack = vec![dir.join("cmd")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "go") {
                files.push(
                    path.strip_prefix(&dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    files.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut h = Sha256::new();
    for f in &files {
        h.update(f.as_bytes());
        h.update([0]);
        h.update(std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("e2e/health/{f}: {e}")));
        h.update([0]);
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    hex[..12].to_string()
}

/// Where the helpers are: `MLC_HEALTH_BIN_DIR`, else the cache directory `e2e/health/build` fills.
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("MLC_HEALTH_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var("MLC_CACHE").unwrap_or_else(|_| {
        format!(
            "{}/.cache/mlcompute",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    PathBuf::from(cache).join(format!("health-{}", build_key()))
}

fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run e2e/health/build (it builds the kstatus and Argo CD Lua helpers from \
         e2e/health/go.mod into that directory), or point MLC_HEALTH_BIN_DIR at a directory holding \
         mlc-kstatus and mlc-argo-health",
        path.display()
    );
    path
}

fn run(program: &Path, args: &[&Path], obj: &Value) -> Result<Verdict, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(obj.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{} printed no JSON ({e}): {}",
            program.display(),
            String::from_utf8_lossy(&out.stdout)
        )
    });
    Ok(Verdict {
        status: v["status"].as_str().unwrap_or_default().to_string(),
        message: v["message"].as_str().unwrap_or_default().to_string(),
    })
}

/// kstatus' verdict on `obj` (as the API server returned it): `InProgress`, `Current`, `Failed`,
/// `Terminating`, `NotFound` or `Unknown`, with its message.
pub fn kstatus(obj: &Value) -> Verdict {
    let program = bin("mlc-kstatus");
    run(&program, &[], obj).unwrap_or_else(|e| panic!("mlc-kstatus failed: {e}"))
}

/// Argo CD's verdict on `obj` from the shipped health script: `Healthy`, `Progressing`, `Degraded`,
/// `Suspended`, `Missing` or `Unknown`, with its message. A Lua error is `Err` with its message
/// (Argo CD then shows `Unknown` with that message).
pub fn argo(obj: &Value) -> Result<Verdict, String> {
    argo_with(&argo_script(), obj)
}

/// As [`argo`], with another script.
pub fn argo_with(script: &Path, obj: &Value) -> Result<Verdict, String> {
    let program = bin("mlc-argo-health");
    run(&program, &[script], obj)
}
