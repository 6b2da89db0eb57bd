//! The autoscaler against the local plane: what the API server ends up holding when the operator
//! scales `target_utilization` deployments from the routers' load reports. The Deployment's replica
//! count is written through its scale subresource, eagerly up, within minInstances/maxInstances,
//! summed over router replicas; an unreadable router, and an operator restart, never scale down;
//! no HorizontalPodAutoscaler (one an older release left is deleted); scale to zero and back.
//!
//! The load comes from fake routers on 127.0.0.1 (`support::fake_router`): KWOK's Pods are fake,
//! so nothing here sends a request to an instance.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::{apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler};
use kube::{Api, Resource, api::PostParams};
use mlcompute::api::{online_deployment::OnlineDeployment, online_endpoint::OnlineEndpoint};
use serde_json::{Value, json};
use support::{Operator, TestNamespace, eventually, fake_router::FakeRouter};

const T: Duration = Duration::from_secs(60);

async fn create<K>(api: &Api<K>, value: Value) -> K
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(
        &PostParams::default(),
        &serde_json::from_value(value).unwrap(),
    )
    .await
    .unwrap()
}

fn autoscaled(name: &str, endpoint: &str, scale: Value) -> Value {
    json!({
        "apiVersion": "mlcompute.io/v1alpha1", "kind": "OnlineDeployment",
        "metadata": { "name": name },
        "spec": { "endpointName": endpoint, "image": "python:3.12-slim",
                  "scaleSettings": scale }
    })
}

async fn replicas_reach(deploys: &Api<Deployment>, name: &str, n: i32, within: Duration) {
    eventually(
        &format!("Deployment {name} at {n} replicas"),
        within,
        || async {
            let d = deploys.get_opt(name).await.ok()??;
            (d.spec?.replicas == Some(n)).then_some(())
        },
    )
    .await
}

async fn replicas(deploys: &Api<Deployment>, name: &str) -> Option<i32> {
    deploys.get(name).await.unwrap().spec.unwrap().replicas
}

async fn scale_reason(ods: &Api<OnlineDeployment>, name: &str) -> Option<(String, String)> {
    let scale = ods.get(name).await.ok()?.status?.scale?;
    Some((scale.reason, scale.message))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn router_load_scales_the_deployment_within_bounds_and_never_down_on_a_partial_view() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "autoscale").await;
    let (a, b) = (FakeRouter::start("a").await, FakeRouter::start("b").await);
    let urls = format!("{},{}", a.url, b.url);
    let args = ["--autoscaler-router-urls", urls.as_str()];
    create(
        &ns.api::<OnlineEndpoint>(),
        json!({ "apiVersion": "mlcompute.io/v1alpha1", "kind": "OnlineEndpoint",
                "metadata": { "name": "burst" }, "spec": { "traffic": { "dep": 100 } } }),
    )
    .await;
    let ods: Api<OnlineDeployment> = ns.api();
    let od = create(
        &ods,
        autoscaled(
            "dep",
            "burst",
            json!({ "type": "target_utilization", "minInstances": 1, "maxInstances": 4,
                    "targetUtilizationPercentage": 50, "pollingInterval": 1 }),
        ),
    )
    .await;
    // A CPU HPA as an older release made it: the operator deletes it.
    let hpas: Api<HorizontalPodAutoscaler> = ns.api();
    create(
        &hpas,
        json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": { "name": "dep",
                "labels": { "app.kubernetes.io/managed-by": "mlcompute", "mlcompute.io/onlinedeployment": "dep" },
                "ownerReferences": [{ "apiVersion": "mlcompute.io/v1alpha1", "kind": "OnlineDeployment",
                    "name": "dep", "uid": od.meta().uid.clone().unwrap(), "controller": true }] },
            "spec": { "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "dep" },
                      "minReplicas": 1, "maxReplicas": 4 }
        }),
    )
    .await;
    let mut op = Operator::start_with(ns.name(), &args);
    let deploys: Api<Deployment> = ns.api();

    eventually("the leftover HPA deleted", T, || async {
        hpas.get_opt("dep").await.ok()?.is_none().then_some(())
    })
    .await;
    replicas_reach(&deploys, "dep", 1, T).await;

    // One request in flight at router a: demand 1 over a 50 % target → 2 instances.
    a.set("burst", "dep", 1, 0);
    let started = Instant::now();
    replicas_reach(&deploys, "dep", 2, Duration::from_secs(15)).await;
    let up = started.elapsed();
    // One more queued at router b: the routers are summed, 2 / 0.5 → 4.
    b.set("burst", "dep", 0, 1);
    replicas_reach(&deploys, "dep", 4, Duration::from_secs(15)).await;
    let st = ods.get("dep").await.unwrap().status.unwrap().scale.unwrap();
    assert_eq!(
        (st.desired_instances, st.reason.as_str()),
        (4, "ScaledUp"),
        "{st:?}"
    );
    assert!(st.last_scale_time.is_some());
    // Far more load: bounded by maxInstances.
    a.set("burst", "dep", 9, 3);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(replicas(&deploys, "dep").await, Some(4));
    println!(
        "scale-up 1 → 2 took {:.1} s after the load appeared",
        up.as_secs_f64()
    );

    // Router b unreadable and a idle: a partial view is never a reason to scale down.
    a.set("burst", "dep", 0, 0);
    b.fail(true);
    let (reason, message) = eventually("status saying a router is unreadable", T, || async {
        scale_reason(&ods, "dep")
            .await
            .filter(|(r, m)| r == "StabilizingDown" && m.contains(&b.url))
    })
    .await;
    println!("with router b failing: {reason}: {message}");
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(
        replicas(&deploys, "dep").await,
        Some(4),
        "scaled down on a partial view"
    );

    // Both readable and idle for a while; then the operator restarts: the new process has no
    // history, so it must not scale down before it has watched a whole window (20 × 1 s) itself.
    b.fail(false);
    b.set("burst", "dep", 0, 0);
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(replicas(&deploys, "dep").await, Some(4));
    op.kill();
    let mut op = Operator::start_with(ns.name(), &args);
    let restarted = Instant::now();
    op.ready().await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        replicas(&deploys, "dep").await,
        Some(4),
        "scaled down within {:?} of a restart",
        restarted.elapsed()
    );
    replicas_reach(&deploys, "dep", 1, Duration::from_secs(45)).await;
    println!(
        "after the restart, scaled down 4 → 1 after {:.0} s (window 20 s)",
        restarted.elapsed().as_secs_f64()
    );
    let st = ods.get("dep").await.unwrap().status.unwrap().scale.unwrap();
    assert_eq!(
        (st.desired_instances, st.reason.as_str()),
        (1, "ScaledDown"),
        "{st:?}"
    );
    assert!(hpas.get_opt("dep").await.unwrap().is_none());
    assert!(op.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn idle_deployments_scale_to_zero_and_a_queued_request_brings_one_back() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "autoscale-zero").await;
    let router = FakeRouter::start("z").await;
    let _op = Operator::start_with(ns.name(), &["--autoscaler-router-urls", &router.url]);
    let ods: Api<OnlineDeployment> = ns.api();

    // minInstances 0 only with target_utilization: the API server says so at once.
    let refused = ods
        .create(
            &PostParams::default(),
            &serde_json::from_value(autoscaled("manual", "cold", json!({ "minInstances": 0 })))
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("scale to zero"), "{refused}");

    create(
        &ns.api::<OnlineEndpoint>(),
        json!({ "apiVersion": "mlcompute.io/v1alpha1", "kind": "OnlineEndpoint",
                "metadata": { "name": "cold" }, "spec": { "traffic": { "zed": 100 } } }),
    )
    .await;
    create(
        &ods,
        autoscaled(
            "zed",
            "cold",
            json!({ "type": "target_utilization", "minInstances": 0, "maxInstances": 2,
                    "pollingInterval": 1, "scaleToZeroAfterSeconds": 5 }),
        ),
    )
    .await;
    let deploys: Api<Deployment> = ns.api();
    replicas_reach(&deploys, "zed", 0, T).await;
    // At zero the deployment reads Ready (ScaledToZero), not broken.
    let ready = eventually("Ready: ScaledToZero", T, || async {
        let st = ods.get("zed").await.ok()?.status?;
        let ready = st.conditions.iter().find(|c| c.type_ == "Ready")?.clone();
        (ready.reason == "ScaledToZero").then_some(ready)
    })
    .await;
    assert_eq!(ready.status, "True");
    let st = ods.get("zed").await.unwrap().status.unwrap();
    assert_eq!(st.scale.as_ref().unwrap().reason, "ScaledToZero");
    // The endpoint keeps the deployment's traffic at zero instances: the router holds requests.
    let endpoint = ns.api::<OnlineEndpoint>().get("cold").await.unwrap();
    let applied = endpoint.status.unwrap().traffic_applied;
    assert_eq!(applied.get("zed"), Some(&100), "{applied:?}");

    // A request held at the router (queued, no instance): from zero at once.
    router.set("cold", "zed", 0, 1);
    let held = Instant::now();
    replicas_reach(&deploys, "zed", 2, Duration::from_secs(10)).await;
    println!(
        "0 → 2 written {:.1} s after the first request was queued",
        held.elapsed().as_secs_f64()
    );
    let st = ods.get("zed").await.unwrap().status.unwrap().scale.unwrap();
    assert_eq!(st.reason, "ScaledFromZero");
}
