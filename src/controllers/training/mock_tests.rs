//! The reconcile on a mocked API server (kube-rs's `tower-test` pattern): which writes it sends
//! and in which order, and that a reconcile with nothing to change sends none.

use std::{sync::Arc, time::Duration};

use http::{Method, Request, Response};
use k8s_openapi::{api::core::v1::Pod, jiff::Timestamp};
use kube::{
    client::Body,
    runtime::{reflector, watcher},
};

use super::{Ctx, lifecycle, reconcile, resolve::resolve_from};
use crate::{
    api::training_job::TrainingJob,
    runtime::{backoff::Backoffs, events::Events, metrics::Metrics, synced::Synced},
};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn job() -> TrainingJob {
    serde_yaml::from_str(include_str!("fixtures/single.yaml")).unwrap()
}

/// `job` after its first reconcile: attempt 1 on record.
fn started(mut job: TrainingJob) -> TrainingJob {
    let plan = lifecycle::decide(
        &job,
        &resolve_from(&job, None, None, None),
        &[],
        Timestamp::now(),
    );
    job.status = Some(plan.status);
    job
}

/// Instance 0 of attempt 1, in `phase` (exiting `exit_code` when it ended).
fn pod(job: &TrainingJob, phase: &str, exit_code: Option<i32>) -> Pod {
    let terminated = exit_code.map(|c| serde_json::json!({ "terminated": { "exitCode": c } }));
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": "iris-worker-0", "namespace": "ml",
            "labels": { "mlcompute.io/attempt": "1" },
            "ownerReferences": [{ "apiVersion": "mlcompute.io/v1alpha1", "kind": "TrainingJob",
                "name": "iris", "uid": job.metadata.uid, "controller": true }]
        },
        "spec": { "nodeName": "cpu-pool-0", "containers": [{ "name": "main", "image": "python:3.12" }] },
        "status": { "phase": phase, "containerStatuses": [{ "name": "main", "image": "python:3.12",
            "imageID": "", "ready": false, "restartCount": 0, "state": terminated }] }
    }))
    .unwrap()
}

/// A context on a mocked API server, with `pods` in the Pod cache.
fn ctx(pods: Vec<Pod>) -> (Arc<Ctx>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "ml");
    let (store, mut writer) = reflector::store();
    for p in pods {
        writer.apply_watcher_event(&watcher::Event::Apply(p));
    }
    let (envs, _) = reflector::store();
    let (its, _) = reflector::store();
    let ctx = Ctx {
        client,
        pods: store,
        environments: envs,
        instance_types: its,
        metrics: Metrics::new().unwrap(),
        events: Events::discard(),
        synced: Synced::ready(),
        backoffs: Backoffs::default(),
    };
    (Arc::new(ctx), handle)
}

/// Answers every request (200, with `job` or, for a Pod path, `pod`) and returns what was
/// asked, in order, once the reconcile ends.
async fn serve(
    mut handle: Handle,
    job: serde_json::Value,
    pod: serde_json::Value,
) -> Vec<(Method, String)> {
    let mut seen = Vec::new();
    while let Some((req, send)) = handle.next_request().await {
        let path = req.uri().path().to_string();
        let body = if path.contains("/pods/") { &pod } else { &job };
        seen.push((req.method().clone(), path));
        let bytes = serde_json::to_vec(body).unwrap();
        send.send_response(
            Response::builder()
                .status(200)
                .body(Body::from(bytes))
                .unwrap(),
        );
    }
    seen
}

#[tokio::test]
async fn a_retry_is_on_record_before_its_pods_change() {
    let job = started(job());
    let failed = pod(&job, "Failed", Some(137));
    let answers = (
        serde_json::to_value(&job).unwrap(),
        serde_json::to_value(&failed).unwrap(),
    );
    let (ctx, handle) = ctx(vec![failed]);
    let server = tokio::spawn(serve(handle, answers.0, answers.1));
    let action = tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(job), ctx))
        .await
        .expect("the reconcile ends");
    assert!(action.is_ok(), "{action:?}");
    let seen = server.await.unwrap();
    assert_eq!(
        seen,
        [
            (
                Method::PATCH,
                "/apis/mlcompute.io/v1alpha1/namespaces/ml/trainingjobs/iris/status".to_string()
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/ml/pods/iris-worker-0".to_string()
            ),
        ],
        "attempt 2 is written before attempt 1's Pod goes: a restart in between counts it once"
    );
}

#[tokio::test]
async fn a_running_job_with_nothing_new_writes_nothing() {
    let job = job();
    let running = pod(&job, "Running", None);
    // The status a reconcile of this job with its Pod running computes, already on record.
    let observed = [super::observe::observe(&running)];
    let mut job = started(job);
    let plan = lifecycle::decide(
        &job,
        &resolve_from(&job, None, None, None),
        &observed,
        Timestamp::now(),
    );
    job.status = Some(plan.status);
    let (ctx, handle) = ctx(vec![running]);
    let server = tokio::spawn(serve(
        handle,
        serde_json::Value::Null,
        serde_json::Value::Null,
    ));
    let action = tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(job), ctx))
        .await
        .expect("the reconcile ends");
    assert!(action.is_ok(), "{action:?}");
    assert_eq!(
        server.await.unwrap(),
        [],
        "an unchanged job sends no request"
    );
}
