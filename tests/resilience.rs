//! The operator rides out an unavailable API server: etcd is frozen for a few seconds while jobs
//! run, and afterwards the same operator process converges (no restart, no duplicate Pods).
//! A test binary of its own, because freezing etcd would stall tests running beside it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use mlcompute::api::{common::JobPhase, training_job::TrainingJob};
use serde_json::json;
use support::{Operator, TestNamespace, wait_for};

const T: Duration = Duration::from_secs(90);

fn etcd_pid() -> i32 {
    let run = std::env::var("MLC_RUN").expect("MLC_RUN names the plane's run directory");
    std::fs::read_to_string(format!("{run}/pids/etcd.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn signal(pid: i32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

fn job(name: &str) -> TrainingJob {
    serde_json::from_value(json!({
        "apiVersion": "mlcompute.io/v1alpha1", "kind": "TrainingJob",
        "metadata": { "name": name },
        "spec": { "command": "python t.py", "image": "busybox", "resources": { "instanceCount": 2 } }
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn the_operator_converges_after_etcd_was_frozen() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "resilience").await;
    let mut op = Operator::start(ns.name());
    let jobs: Api<TrainingJob> = ns.api();
    jobs.create(&PostParams::default(), &job("before"))
        .await
        .unwrap();
    wait_for(&jobs, "before", T, |j: Option<&TrainingJob>| {
        j.and_then(|j| j.status.as_ref()?.phase) == Some(JobPhase::Running)
    })
    .await;

    // Freeze etcd: every API request hangs or fails until it thaws.
    let pid = etcd_pid();
    signal(pid, "-STOP");
    tokio::time::sleep(Duration::from_secs(8)).await;
    signal(pid, "-CONT");

    assert!(
        op.is_running(),
        "the operator kept running through the outage"
    );
    jobs.create(&PostParams::default(), &job("after"))
        .await
        .unwrap();
    let pods: Api<Pod> = ns.api();
    for name in ["before-worker-0", "before-worker-1"] {
        let patch =
            json!({ "metadata": { "annotations": { "kwok.mlcompute.io/exit-code": "0" } } });
        pods.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
    wait_for(&jobs, "before", T, |j: Option<&TrainingJob>| {
        j.and_then(|j| j.status.as_ref()?.phase) == Some(JobPhase::Completed)
    })
    .await;
    wait_for(&jobs, "after", T, |j: Option<&TrainingJob>| {
        j.and_then(|j| j.status.as_ref()?.phase) == Some(JobPhase::Running)
    })
    .await;
    let all = pods.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(all.len(), 4, "two Pods per job, none duplicated");
    assert!(op.is_running(), "converged without a restart");
    op.kill();
}
