//! An OnlineDeployment says why its instances do not run, in the kubelet's words, on the local plane.
//!
//! KWOK fakes Pod status and pulls nothing, so the test writes the kubelet's side itself: it
//! patches an instance Pod's status subresource with a waiting `ImagePullBackOff` container, as a
//! kubelet that cannot pull would. Everything after that is real: the ReplicaSet and Deployment
//! controllers count the instance unready, and the operator reads the Pod and reports it. The
//! phase stays `Running` in the patch: KWOK re-readies any Pending Pod that is not Ready. (The
//! real-node tier pulls a missing image for real.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use mlcompute::api::{OnlineDeployment, OnlineEndpoint};
use serde_json::{Value, json};
use support::{Operator, TestNamespace, wait_for, warning_event};

const T: Duration = Duration::from_secs(60);
const IMAGE: &str = "127.0.0.1:5000/nope:1";

fn ready_condition(od: Option<&OnlineDeployment>) -> Option<(String, String, String)> {
    let c = od?
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// The serving container's status as a kubelet reports it: waiting on a pull, or running ready.
fn kubelet_status(pulling: bool) -> Value {
    let now = "2025-01-01T00:00:00Z";
    let (ready, state) = if pulling {
        let message = format!("Back-off pulling image \"{IMAGE}\"");
        (
            "False",
            json!({ "waiting": { "reason": "ImagePullBackOff", "message": message } }),
        )
    } else {
        ("True", json!({ "running": { "startedAt": now } }))
    };
    json!({ "status": {
        "phase": "Running",
        "conditions": [
            { "type": "Ready", "status": ready, "lastTransitionTime": now },
            { "type": "ContainersReady", "status": ready, "lastTransitionTime": now },
        ],
        "containerStatuses": [{
            "name": "inference-server", "image": IMAGE, "imageID": "", "restartCount": 0,
            "ready": ready == "True", "started": ready == "True", "state": state,
        }],
    }})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn an_instance_that_cannot_pull_its_image_is_shown_on_the_deployment() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "pod-problems").await;
    let _op = Operator::start(ns.name());
    let eps: Api<OnlineEndpoint> = ns.api();
    let ods: Api<OnlineDeployment> = ns.api();
    let endpoint = json!({ "apiVersion": "mlcompute.io/v1alpha1", "kind": "OnlineEndpoint",
        "metadata": { "name": "fraud" }, "spec": { "traffic": { "blue": 100 } } });
    eps.create(
        &PostParams::default(),
        &serde_json::from_value(endpoint).unwrap(),
    )
    .await
    .unwrap();
    let od = json!({ "apiVersion": "mlcompute.io/v1alpha1", "kind": "OnlineDeployment",
        "metadata": { "name": "blue" },
        "spec": { "endpointName": "fraud", "image": IMAGE, "instanceCount": 1,
                  "model": "https://models.example.com/fraud/model.pkl",
                  "codeConfiguration": { "code": "configmap://fraud-code", "scoringScript": "score.py" } } });
    ods.create(&PostParams::default(), &serde_json::from_value(od).unwrap())
        .await
        .unwrap();
    // KWOK makes the instance ready first; the kubelet's bad news comes after.
    wait_for(&ods, "blue", T, |o: Option<&OnlineDeployment>| {
        ready_condition(o).is_some_and(|(s, _, _)| s == "True")
    })
    .await;

    let pods: Api<Pod> = ns.api();
    let list = pods
        .list(&ListParams::default().labels("mlcompute.io/onlinedeployment=blue"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1, "one instance");
    let pod = list.items[0].metadata.name.clone().unwrap();
    let patch = |pulling| {
        let pods = pods.clone();
        let pod = pod.clone();
        async move {
            pods.patch_status(
                &pod,
                &PatchParams::default(),
                &Patch::Strategic(kubelet_status(pulling)),
            )
            .await
            .unwrap();
        }
    };
    patch(true).await;

    let od = wait_for(&ods, "blue", T, |o: Option<&OnlineDeployment>| {
        ready_condition(o).is_some_and(|(_, r, _)| r == "ImagePullError")
    })
    .await;
    let (status, _, message) = ready_condition(Some(&od)).unwrap();
    assert_eq!(status, "False");
    assert_eq!(
        message,
        format!(
            "instance {pod}, container inference-server: image {IMAGE} cannot be pulled: \
             Back-off pulling image \"{IMAGE}\""
        )
    );
    let progressing = od
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_str()),
        ("True", "ImagePullError"),
        "the kubelet keeps retrying: {progressing:?}"
    );
    warning_event(&ns, "ImagePullError", "blue", T).await;

    // The registry is fixed and the kubelet pulls: ready again, without a spec change.
    patch(false).await;
    let od = wait_for(&ods, "blue", T, |o: Option<&OnlineDeployment>| {
        ready_condition(o).is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    assert_eq!(ready_condition(Some(&od)).unwrap().1, "InstancesReady");
}
