//! Proves the local control plane is a real one: the API server validates and garbage-collects,
//! the controller manager and scheduler act, and KWOK simulates pod exits and container logs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{io::Write, time::Duration};

use futures::{AsyncBufReadExt, TryStreamExt};
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, ReplicaSet},
        batch::v1::Job,
        core::v1::{ConfigMap, Pod},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, ResourceExt,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, LogParams, Patch,
        PatchParams, PostParams,
    },
    runtime::wait::conditions,
};
use serde_json::json;
use support::{TestNamespace, eventually, wait_for};

const T: Duration = Duration::from_secs(60);

fn pod(name: &str, annotations: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "name": name, "annotations": annotations },
        "spec": { "containers": [{ "name": "main", "image": "busybox" }] }
    }))
    .unwrap()
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref()?.phase.as_deref()
}

fn exit_code(p: &Pod) -> Option<i32> {
    let cs = p.status.as_ref()?.container_statuses.as_ref()?.first()?;
    Some(cs.state.as_ref()?.terminated.as_ref()?.exit_code)
}

#[tokio::test]
#[ignore = "needs the local control plane"]
async fn deployment_gets_replicaset_and_running_pods() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "plane-deploy").await;
    let deploys: Api<Deployment> = ns.api();
    let d: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 3,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "nginx" }] }
            }
        }
    }))
    .unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();

    let rs: Api<ReplicaSet> = ns.api();
    eventually("a ReplicaSet owned by the Deployment", T, || async {
        let list = rs.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|r| {
            r.owner_references()
                .iter()
                .any(|o| o.kind == "Deployment" && o.name == "web")
        })
    })
    .await;
    let pods: Api<Pod> = ns.api();
    let running = eventually("3 Running pods scheduled on nodes", T, || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?;
        let running: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| phase(p) == Some("Running"))
            .collect();
        (running.len() == 3).then_some(running)
    })
    .await;
    for p in running {
        let spec = p.spec.unwrap();
        assert!(
            spec.node_name.unwrap().starts_with("cpu-pool-"),
            "untolerated pods land in the CPU pool"
        );
        let ip = p.status.unwrap().pod_ip.unwrap();
        assert!(
            ip.starts_with("10.244."),
            "pod IPs come from the fake pod range, got {ip}"
        );
    }
    let d = wait_for(&deploys, "web", T, |d: Option<&Deployment>| {
        d.and_then(|d| d.status.as_ref()?.available_replicas) == Some(3)
    })
    .await;
    assert_eq!(d.status.unwrap().ready_replicas, Some(3));
}

#[tokio::test]
#[ignore = "needs the local control plane"]
async fn annotated_bare_pod_fails_with_chosen_exit_code() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "plane-exit").await;
    let pods: Api<Pod> = ns.api();
    let annotations =
        json!({ "kwok.mlcompute.io/exit-code": "3", "kwok.mlcompute.io/exit-after": "1s" });
    pods.create(&PostParams::default(), &pod("fails", annotations))
        .await
        .unwrap();
    pods.create(
        &PostParams::default(),
        &pod("succeeds", json!({ "kwok.mlcompute.io/exit-code": "0" })),
    )
    .await
    .unwrap();
    pods.create(&PostParams::default(), &pod("keeps-running", json!({})))
        .await
        .unwrap();

    let failed = wait_for(&pods, "fails", T, |p: Option<&Pod>| {
        p.and_then(phase) == Some("Failed")
    })
    .await;
    assert_eq!(exit_code(&failed), Some(3));
    let ok = wait_for(&pods, "succeeds", T, |p: Option<&Pod>| {
        p.and_then(phase) == Some("Succeeded")
    })
    .await;
    assert_eq!(exit_code(&ok), Some(0));
    // A pod without the annotation is not ended by the stage.
    let running = pods.get("keeps-running").await.unwrap();
    assert_eq!(phase(&running), Some("Running"));
}

#[tokio::test]
#[ignore = "needs the local control plane"]
async fn job_pod_exit_code_reaches_the_job() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "plane-job").await;
    let jobs: Api<Job> = ns.api();
    let job: Job = serde_json::from_value(json!({
        "metadata": { "name": "exit3" },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": { "annotations": { "kwok.mlcompute.io/exit-code": "3", "kwok.mlcompute.io/exit-after": "500ms" } },
                "spec": { "restartPolicy": "Never", "containers": [{ "name": "main", "image": "busybox" }] }
            }
        }
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let job = wait_for(&jobs, "exit3", T, |j: Option<&Job>| {
        j.and_then(|j| j.status.as_ref()?.failed) == Some(1)
    })
    .await;
    assert_eq!(job.status.unwrap().succeeded.unwrap_or(0), 0);
    let pods: Api<Pod> = ns.api();
    let list = pods
        .list(&ListParams::default().labels("job-name=exit3"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(exit_code(&list.items[0]), Some(3));
}

#[tokio::test]
#[ignore = "needs the local control plane"]
async fn simulated_logs_come_back_through_the_log_api_with_follow() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "plane-logs").await;
    let pods: Api<Pod> = ns.api();
    pods.create(&PostParams::default(), &pod("talker", json!({})))
        .await
        .unwrap();
    wait_for(&pods, "talker", T, conditions::is_pod_running()).await;

    let dir = std::env::temp_dir().join(format!("mlc-logs-{}", ns.name()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("talker.log");
    std::fs::write(&file, "2026-01-01T00:00:00Z stdout F epoch 1 loss 0.93\n").unwrap();
    // KWOK serves a pod's logs from the file named by a `Logs` object of the same name.
    let gvk = GroupVersionKind::gvk("kwok.x-k8s.io", "v1alpha1", "Logs");
    let logs_api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns.name(),
        &ApiResource::from_gvk_with_plural(&gvk, "logs"),
    );
    let logs: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Logs",
        "metadata": { "name": "talker" },
        "spec": { "logs": [{ "containers": ["main"], "logsFile": file.to_str().unwrap(), "follow": true }] }
    }))
    .unwrap();
    logs_api
        .create(&PostParams::default(), &logs)
        .await
        .unwrap();

    let text = eventually("the first log line", T, || async {
        pods.logs("talker", &LogParams::default())
            .await
            .ok()
            .filter(|t| !t.is_empty())
    })
    .await;
    assert_eq!(text, "epoch 1 loss 0.93\n");

    let params = LogParams {
        follow: true,
        ..LogParams::default()
    };
    let mut lines = pods.log_stream("talker", &params).await.unwrap().lines();
    assert_eq!(
        lines.try_next().await.unwrap().unwrap(),
        "epoch 1 loss 0.93"
    );
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    writeln!(f, "2026-01-01T00:00:01Z stdout F epoch 2 loss 0.71").unwrap();
    let next = tokio::time::timeout(T, lines.try_next())
        .await
        .expect("followed line arrives");
    assert_eq!(next.unwrap().unwrap(), "epoch 2 loss 0.71");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
#[ignore = "needs the local control plane"]
async fn crd_cel_rule_rejects_a_bad_object_with_its_message() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "plane-cel").await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": { "name": "widgets.planetest.mlcompute.io" },
        "spec": {
            "group": "planetest.mlcompute.io",
            "names": { "kind": "Widget", "plural": "widgets", "singular": "widget" },
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": { "spec": {
                        "type": "object",
                        "properties": { "min": { "type": "integer" }, "max": { "type": "integer" } },
                        "x-kubernetes-validations": [{ "rule": "self.min <= self.max", "message": "min must not exceed max" }]
                    }}
                }}
            }]
        }
    }))
    .unwrap();
    crds.patch(
        "widgets.planetest.mlcompute.io",
        &PatchParams::apply("mlcompute-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    wait_for(
        &crds,
        "widgets.planetest.mlcompute.io",
        T,
        conditions::is_crd_established(),
    )
    .await;

    let gvk = GroupVersionKind::gvk("planetest.mlcompute.io", "v1", "Widget");
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns.name(),
        &ApiResource::from_gvk_with_plural(&gvk, "widgets"),
    );
    let widget = |name: &str, min: i64, max: i64| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "planetest.mlcompute.io/v1", "kind": "Widget",
            "metadata": { "name": name }, "spec": { "min": min, "max": max }
        }))
        .unwrap()
    };
    // The CRD may be Established a moment before its validator is loaded: retry the good object.
    eventually("the good widget is accepted", T, || async {
        api.create(&PostParams::default(), &widget("good", 1, 2))
            .await
            .ok()
    })
    .await;
    let err = api
        .create(&PostParams::default(), &widget("bad", 3, 2))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422);
            assert!(
                status.message.contains("min must not exceed max"),
                "{}",
                status.message
            );
        }
        other => panic!("expected a 422 from the API server, got {other}"),
    }
    crds.delete("widgets.planetest.mlcompute.io", &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs the local control plane"]
async fn deleting_an_owner_garbage_collects_its_dependents() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "plane-gc").await;
    let cms: Api<ConfigMap> = ns.api();
    let owner = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": "owner" } })).unwrap(),
        )
        .await
        .unwrap();
    let dependent: ConfigMap = serde_json::from_value(json!({
        "metadata": {
            "name": "dependent",
            "ownerReferences": [{ "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.uid().unwrap() }]
        }
    }))
    .unwrap();
    cms.create(&PostParams::default(), &dependent)
        .await
        .unwrap();
    cms.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    support::wait_gone(&cms, "dependent", T).await;
}

#[tokio::test]
#[ignore = "needs the local control plane"]
async fn gpu_pool_schedules_gpu_pods_and_reports_short_capacity() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "plane-gpu").await;
    let pods: Api<Pod> = ns.api();
    let gpu_pod = |name: &str, gpus: u32| -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": name },
            "spec": {
                "nodeSelector": { "mlcompute.io/pool": "gpu" },
                "tolerations": [{ "key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule" }],
                "containers": [{ "name": "main", "image": "cuda",
                    "resources": { "limits": { "nvidia.com/gpu": gpus.to_string() } } }]
            }
        }))
        .unwrap()
    };
    pods.create(&PostParams::default(), &gpu_pod("fits", 2))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &gpu_pod("too-big", 64))
        .await
        .unwrap();
    let fits = wait_for(&pods, "fits", T, conditions::is_pod_running()).await;
    assert!(
        fits.spec
            .unwrap()
            .node_name
            .unwrap()
            .starts_with("gpu-pool-")
    );
    let pending = wait_for(&pods, "too-big", T, |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref()?.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.type_ == "PodScheduled" && c.reason.as_deref() == Some("Unschedulable")
                })
            })
    })
    .await;
    let status = pending.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    let msg = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .unwrap()
        .message
        .unwrap();
    assert!(
        msg.contains("nvidia.com/gpu"),
        "scheduler names the short resource: {msg}"
    );
}

#[test]
#[ignore = "needs the local control plane"]
fn every_listener_of_the_plane_is_on_loopback() {
    let run = std::env::var("MLC_RUN").expect("MLC_RUN names the plane's run directory");
    let pids: Vec<String> = std::fs::read_dir(format!("{run}/pids"))
        .unwrap()
        .map(|e| {
            std::fs::read_to_string(e.unwrap().path())
                .unwrap()
                .trim()
                .to_string()
        })
        .collect();
    assert_eq!(pids.len(), 5, "five components recorded: {pids:?}");
    let out = std::process::Command::new("ss")
        .args(["-ltnpH"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut seen = 0;
    for line in text.lines() {
        if pids.iter().any(|p| line.contains(&format!("pid={p},"))) {
            seen += 1;
            let local = line.split_whitespace().nth(3).unwrap();
            assert!(
                local.starts_with("127.0.0.1:"),
                "listener beyond loopback: {line}"
            );
        }
    }
    assert!(
        seen >= 5,
        "expected listeners of every component, saw {seen}:\n{text}"
    );
}
