//! The progress relay: a sidecar of each batch driver Pod, and the only container of that Pod with
//! a Kubernetes token. It copies the snapshot the driver writes to a shared file into its instance's
//! key of the job's progress ConfigMap, at most once per interval, and once more when told to stop
//! (after the driver exited), so the final counts land.
//!
//! The file is written by the container that runs the user's code, so it is read as untrusted
//! input: no symlinks followed, regular files only, at most [`MAX_VALUE`] bytes, and only a valid
//! [`PodProgress`] of this instance is sent — re-encoded, never the raw bytes.

use std::{
    io::Read,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use tracing::{info, warn};

use crate::contract::progress::{MAX_VALUE, PodProgress, entry_key};

/// Where and what the relay copies.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// The driver's snapshot file.
    pub file: PathBuf,
    /// The job's progress ConfigMap.
    pub config_map: String,
    /// This Pod's instance index (the ConfigMap key).
    pub instance: u32,
    /// Fewest time between two writes.
    pub interval: Duration,
    /// How long the final write may take once stopping.
    pub final_timeout: Duration,
}

/// The snapshot in `file`, checked and re-encoded; `None` when absent or not a valid report of
/// `instance`.
pub fn read_snapshot(file: &Path, instance: u32) -> Option<String> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        // A FIFO must not block the relay, and a symlink must not point it at its own token.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(file)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    f.take(MAX_VALUE as u64 + 1)
        .read_to_string(&mut text)
        .ok()?;
    let p = PodProgress::parse(&text)?;
    if p.instance != instance || p.instance >= p.instance_count {
        return None;
    }
    p.to_json().ok()
}

/// The merge patch that sets `key` of the ConfigMap.
pub fn entry_patch(key: &str, value: &str) -> serde_json::Value {
    serde_json::json!({ "data": { key: value } })
}

struct Relay {
    api: Api<ConfigMap>,
    cfg: RelayConfig,
    key: String,
    sent: Option<String>,
}

impl Relay {
    /// Writes the current snapshot when it differs from the last one written.
    async fn push(&mut self) -> bool {
        let Some(value) = read_snapshot(&self.cfg.file, self.cfg.instance) else {
            return true;
        };
        if self.sent.as_ref() == Some(&value) {
            return true;
        }
        let patch = Patch::Merge(entry_patch(&self.key, &value));
        match self
            .api
            .patch(&self.cfg.config_map, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => {
                self.sent = Some(value);
                true
            }
            Err(err) => {
                warn!(%err, config_map = %self.cfg.config_map, "progress not written");
                false
            }
        }
    }
}

/// Relays until `stop` resolves, then writes the last snapshot (retrying for at most
/// `final_timeout`).
pub async fn run(
    api: Api<ConfigMap>,
    cfg: RelayConfig,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut relay = Relay {
        key: entry_key(cfg.instance),
        api,
        cfg,
        sent: None,
    };
    let mut ticker = tokio::time::interval(relay.cfg.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = ticker.tick() => {
                relay.push().await;
            }
        }
    }
    let deadline = tokio::time::Instant::now() + relay.cfg.final_timeout;
    while !relay.push().await && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    info!(written = relay.sent.is_some(), "progress relay stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::progress::{Counts, Phase};

    fn report(instance: u32) -> PodProgress {
        PodProgress {
            instance,
            instance_count: 2,
            phase: Phase::Running,
            reason: None,
            mini_batches: Counts {
                total: 3,
                succeeded: 1,
                failed: 0,
            },
            items: Counts::default(),
            updated_unix_ms: 7,
        }
    }

    #[test]
    fn only_a_valid_report_of_this_instance_in_a_regular_file_is_relayed() {
        let dir = std::env::temp_dir().join(format!("mlc-relay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("progress.json");
        assert_eq!(read_snapshot(&file, 1), None, "no file yet");

        let mut with_extra = serde_json::to_value(report(1)).unwrap();
        with_extra["unknown"] = serde_json::json!(true);
        std::fs::write(&file, with_extra.to_string()).unwrap();
        let sent = read_snapshot(&file, 1).unwrap();
        assert_eq!(PodProgress::parse(&sent).unwrap(), report(1));
        assert!(!sent.contains("unknown"), "re-encoded, not copied: {sent}");
        assert_eq!(read_snapshot(&file, 0), None, "another instance's report");

        std::fs::write(&file, "{ garbage").unwrap();
        assert_eq!(read_snapshot(&file, 1), None);
        std::fs::write(&file, " ".repeat(MAX_VALUE + 1)).unwrap();
        assert_eq!(read_snapshot(&file, 1), None);

        // A symlink to a valid report elsewhere is not followed.
        let real = dir.join("real.json");
        std::fs::write(&real, serde_json::to_string(&report(1)).unwrap()).unwrap();
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink(&real, &file).unwrap();
        assert_eq!(read_snapshot(&file, 1), None);
        // Nor is a folder read.
        std::fs::remove_file(&file).unwrap();
        std::fs::create_dir(&file).unwrap();
        assert_eq!(read_snapshot(&file, 1), None);
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(entry_patch("1", "{}")["data"]["1"], "{}");
    }
}
