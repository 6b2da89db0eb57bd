//! Never take over what is not ours (issue 12): a user's Service, ConfigMap or Secret named like a
//! child, or another parent's child of the same name, is left byte-for-byte alone, the parent says
//! `NameConflict` (Ready False, Stalled True, a Warning Event), and deleting the parent leaves the
//! object in place.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use mlcompute::api::{
    online_deployment::OnlineDeployment, online_endpoint::OnlineEndpoint, training_job::TrainingJob,
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use support::{Operator, TestNamespace, eventually, wait_for, warning_event};

const T: Duration = Duration::from_secs(30);

async fn create<K>(api: &Api<K>, v: Value) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + DeserializeOwned + Serialize,
{
    let obj: K = serde_json::from_value(v).unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap()
}

/// The object as the API server holds it, as JSON (for byte-for-byte comparisons).
async fn snapshot<K>(api: &Api<K>, name: &str) -> Value
where
    K: kube::Resource + Clone + std::fmt::Debug + DeserializeOwned + Serialize,
{
    serde_json::to_value(api.get(name).await.unwrap()).unwrap()
}

/// The condition `type_` of a status's conditions, as (status, reason, message).
fn condition(status: Option<Value>, type_: &str) -> Option<(String, String, String)> {
    let conds = status?.get("conditions")?.as_array()?.clone();
    let c = conds.iter().find(|c| c["type"] == type_)?;
    Some((
        c["status"].as_str()?.into(),
        c["reason"].as_str()?.into(),
        c["message"].as_str()?.into(),
    ))
}

fn stalled_by_conflict<K: Serialize>(obj: Option<&K>) -> bool {
    let Some(obj) = obj else { return false };
    let v = serde_json::to_value(obj).unwrap();
    let stalled = condition(v.get("status").cloned(), "Stalled");
    let ready = condition(v.get("status").cloned(), "Ready");
    matches!(&stalled, Some((s, r, _)) if s == "True" && r == "NameConflict")
        && matches!(&ready, Some((s, r, _)) if s == "False" && r == "NameConflict")
}

fn message<K: Serialize>(obj: &K) -> String {
    let v = serde_json::to_value(obj).unwrap();
    condition(v.get("status").cloned(), "Stalled").unwrap().2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn users_objects_named_like_children_are_never_touched() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "takeover").await;
    let (services, cms, secrets): (Api<Service>, Api<ConfigMap>, Api<Secret>) =
        (ns.api(), ns.api(), ns.api());
    // The user's own objects, named as the children of `web` and `shop` would be.
    create(
        &services,
        json!({ "metadata": { "name": "web", "labels": { "team": "frontend" } },
                "spec": { "selector": { "app": "frontend" }, "ports": [{ "port": 80 }] } }),
    )
    .await;
    create(
        &cms,
        json!({ "metadata": { "name": "web-scoring-server" }, "data": { "nginx.conf": "user data" } }),
    )
    .await;
    create(
        &secrets,
        json!({ "metadata": { "name": "shop-keys" }, "stringData": { "password": "hunter2" } }),
    )
    .await;
    let before = (
        snapshot(&services, "web").await,
        snapshot(&cms, "web-scoring-server").await,
        snapshot(&secrets, "shop-keys").await,
    );

    let _op = Operator::start(ns.name());
    let (eps, ods): (Api<OnlineEndpoint>, Api<OnlineDeployment>) = (ns.api(), ns.api());
    create(
        &eps,
        json!({ "apiVersion": "mlcompute.io/v1alpha1", "kind": "OnlineEndpoint",
                "metadata": { "name": "shop" }, "spec": { "authMode": "key" } }),
    )
    .await;
    create(
        &ods,
        json!({ "apiVersion": "mlcompute.io/v1alpha1", "kind": "OnlineDeployment",
                "metadata": { "name": "web" },
                "spec": { "endpointName": "shop", "image": "python:3.12-slim",
                          "model": "https://models.example.com/m.pkl",
                          "codeConfiguration": { "code": "configmap://code", "scoringScript": "score.py" },
                          "instanceCount": 1 } }),
    )
    .await;

    // Each parent says what holds the name, and a Warning Event tells the user.
    let ep = wait_for(&eps, "shop", T, stalled_by_conflict::<OnlineEndpoint>).await;
    assert_eq!(
        message(&ep),
        "Secret shop-keys already exists and is not controlled by this OnlineEndpoint (it was not created by mlcompute); it was left untouched: rename this OnlineEndpoint or remove that Secret"
    );
    let od = wait_for(&ods, "web", T, stalled_by_conflict::<OnlineDeployment>).await;
    assert!(
        message(&od).starts_with("ConfigMap web-scoring-server already exists and is not controlled by this OnlineDeployment"),
        "{}",
        message(&od)
    );
    warning_event(&ns, "NameConflict", "shop", T).await;
    warning_event(&ns, "NameConflict", "web", T).await;

    // Removing the user's ConfigMap lets the deployment go on, to the next conflict: the Service.
    cms.delete("web-scoring-server", &DeleteParams::default())
        .await
        .unwrap();
    let od = wait_for(
        &ods,
        "web",
        Duration::from_secs(60),
        |o: Option<&OnlineDeployment>| {
            stalled_by_conflict(o) && message(o.unwrap()).starts_with("Service web already exists")
        },
    )
    .await;
    assert!(message(&od).contains("it was not created by mlcompute"));
    // No Deployment was made while a child was refused.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = ns.api();
    assert!(deployments.get_opt("web").await.unwrap().is_none());

    // The user's Service and Secret are byte-identical, also after the parents are deleted.
    assert_eq!(snapshot(&services, "web").await, before.0);
    assert_eq!(snapshot(&secrets, "shop-keys").await, before.2);
    ods.delete("web", &DeleteParams::default()).await.unwrap();
    eps.delete("shop", &DeleteParams::default()).await.unwrap();
    support::wait_gone(&ods, "web", T).await;
    support::wait_gone(&eps, "shop", T).await;
    // Garbage collection would have removed them by now, had they carried an owner reference.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(snapshot(&services, "web").await, before.0);
    assert_eq!(snapshot(&secrets, "shop-keys").await, before.2);
    // The ConfigMap the deployment made once the name was free was its own: collected with it.
    eventually("the deployment's own ConfigMap to be collected", T, || {
        let cms = cms.clone();
        async move {
            cms.get_opt("web-scoring-server")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn two_parents_wanting_one_name_the_second_is_told() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "takeover-parents").await;
    let _op = Operator::start(ns.name());
    let (jobs, ods, eps, services): (
        Api<TrainingJob>,
        Api<OnlineDeployment>,
        Api<OnlineEndpoint>,
        Api<Service>,
    ) = (ns.api(), ns.api(), ns.api(), ns.api());
    // A distributed TrainingJob `web` gets the rendezvous Service `web`.
    create(
        &jobs,
        json!({ "apiVersion": "mlcompute.io/v1alpha1", "kind": "TrainingJob",
                "metadata": { "name": "web" },
                "spec": { "command": "python train.py", "image": "busybox",
                          "resources": { "instanceCount": 2 }, "distribution": { "type": "pytorch" } } }),
    )
    .await;
    let svc = eventually("the job's Service", T, || {
        let services = services.clone();
        async move { services.get_opt("web").await.unwrap() }
    })
    .await;
    let before = serde_json::to_value(&svc).unwrap();

    // An OnlineDeployment `web` would want a Service `web` too: it is told, the job keeps its own.
    create(
        &eps,
        json!({ "apiVersion": "mlcompute.io/v1alpha1", "kind": "OnlineEndpoint",
                "metadata": { "name": "api" }, "spec": { "authMode": "none" } }),
    )
    .await;
    create(
        &ods,
        json!({ "apiVersion": "mlcompute.io/v1alpha1", "kind": "OnlineDeployment",
                "metadata": { "name": "web" },
                "spec": { "endpointName": "api", "image": "ghcr.io/example/api:1",
                          "model": "https://models.example.com/m.pkl", "instanceCount": 1 } }),
    )
    .await;
    let od = wait_for(&ods, "web", T, stalled_by_conflict::<OnlineDeployment>).await;
    assert!(
        message(&od).contains("Service web already exists and is not controlled by this OnlineDeployment (it is controlled by TrainingJob web)"),
        "{}",
        message(&od)
    );
    warning_event(&ns, "NameConflict", "web", T).await;
    let now = serde_json::to_value(services.get("web").await.unwrap()).unwrap();
    assert_eq!(now, before, "the job's Service was rewritten");
    // The job still has its Pods and Service; deleting the deployment does not take them.
    ods.delete("web", &DeleteParams::default()).await.unwrap();
    support::wait_gone(&ods, "web", T).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        serde_json::to_value(services.get("web").await.unwrap()).unwrap(),
        before
    );
    let job = jobs.get("web").await.unwrap();
    assert!(
        job.status
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Stalled").cloned())
            .is_none_or(|c| c.status == "False"),
        "the first parent is not affected"
    );
}
