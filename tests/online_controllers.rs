//! The online control plane against the local plane: OnlineDeployments become Deployments,
//! Services (no HPA: the autoscaler sizes target_utilization ones); OnlineEndpoints get keys, a routing ConfigMap for the built-in router and
//! an HTTPRoute; traffic changes reach both quickly; problems show as conditions; an endpoint
//! name already held in another watched namespace is refused until its holder goes.
//!
//! Pod IPs in the plane are fake: these tests read EndpointSlices and routing tables, and never
//! send a request to an instance.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::{ConfigMap, Event, Secret, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client,
    api::{
        ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
    },
};
use mlcompute::{
    api::{OnlineDeployment, OnlineEndpoint},
    contract::{keys, routing, routing::ClusterRoute, token},
    dataplane::router::{cluster_source, table::Auth},
};
use serde_json::{Value, json};
use support::{Operator, TestNamespace, eventually, wait_for, warning_event};

const T: Duration = Duration::from_secs(60);
const GATEWAY: &str = "infra/public";

async fn create<K>(api: &Api<K>, obj: Value) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    let obj: K = serde_json::from_value(obj).unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap()
}

fn endpoint(name: &str, spec: Value) -> Value {
    json!({ "apiVersion": "mlcompute.io/v1alpha1", "kind": "OnlineEndpoint", "metadata": { "name": name }, "spec": spec })
}

/// A scoring-script deployment with an inline image (no Environment needed).
fn scoring_deployment(name: &str, endpoint: &str) -> Value {
    json!({
        "apiVersion": "mlcompute.io/v1alpha1", "kind": "OnlineDeployment",
        "metadata": { "name": name },
        "spec": {
            "endpointName": endpoint,
            "image": "python:3.12-slim",
            "model": "https://models.example.com/fraud/model.pkl",
            "codeConfiguration": { "code": "configmap://fraud-code", "scoringScript": "score.py" },
            "instanceCount": 1,
        }
    })
}

fn route_of(cm: &ConfigMap) -> Option<ClusterRoute> {
    serde_json::from_str(cm.data.as_ref()?.get("route.json")?).ok()
}

fn split(route: &ClusterRoute) -> Vec<(String, u32, u32)> {
    route
        .deployments
        .iter()
        .map(|d| (d.name.clone(), d.traffic, d.mirror))
        .collect()
}

fn http_routes(client: &Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

/// (weights of the live rule, mirror percent) of an HTTPRoute.
fn http_split(route: &DynamicObject) -> (Vec<(String, u64)>, Option<u64>) {
    let rules = route.data["spec"]["rules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let Some(live) = rules.last() else {
        return (vec![], None);
    };
    let weights = live["backendRefs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            (
                b["name"].as_str().unwrap_or("").to_string(),
                b["weight"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let mirror = live["filters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["type"] == "RequestMirror")
        .and_then(|f| f["requestMirror"]["percent"].as_u64());
    (weights, mirror)
}

fn condition<'a>(ep: &'a OnlineEndpoint, type_: &str) -> Option<&'a mlcompute::api::Condition> {
    ep.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

async fn ready_instances(api: &Api<OnlineDeployment>, name: &str, n: i32) {
    wait_for(api, name, T, move |od: Option<&OnlineDeployment>| {
        od.and_then(|o| o.status.as_ref())
            .and_then(|s| s.ready_instances)
            == Some(n)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn deployments_become_deployments_and_services_without_hpas() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "online-build").await;
    let op = Operator::start(ns.name());
    let envs: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns.name(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "mlcompute.io",
            "v1alpha1",
            "Environment",
        )),
    );
    let env: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "mlcompute.io/v1alpha1", "kind": "Environment",
        "metadata": { "name": "fastapi" },
        "spec": { "image": "ghcr.io/example/fraud-api:2", "version": "2",
                  "environmentVariables": { "FROM_ENV": "1" },
                  "inferenceConfig": {
                      "livenessRoute": { "port": 8000, "path": "/health" },
                      "readinessRoute": { "port": 8000, "path": "/ready" },
                      "scoringRoute": { "port": 8000, "path": "/predict" } } }
    }))
    .unwrap();
    envs.create(&PostParams::default(), &env).await.unwrap();
    create(&ns.api::<OnlineEndpoint>(), endpoint("fraud", json!({}))).await;
    let ods: Api<OnlineDeployment> = ns.api();
    let mut blue = scoring_deployment("blue", "fraud");
    blue["spec"]["instanceCount"] = json!(2);
    blue["spec"]["resources"] = json!({ "limits": { "cpu": "1" } });
    blue["spec"]["livenessProbe"] = json!({ "initialDelay": 30 });
    blue["spec"]["environmentVariables"] = json!({ "THRESHOLD": "0.7" });
    create(&ods, blue).await;
    create(&ods, json!({
        "apiVersion": "mlcompute.io/v1alpha1", "kind": "OnlineDeployment",
        "metadata": { "name": "green" },
        "spec": { "endpointName": "fraud", "environment": "fastapi:2", "model": "pvc://models/fraud/v2",
                  "scaleSettings": { "type": "target_utilization", "minInstances": 2, "maxInstances": 4, "targetUtilizationPercentage": 60 } }
    })).await;

    // Scoring script: the shipped server, Azure ML's probes, port and variables.
    let deploys: Api<Deployment> = ns.api();
    let d = wait_for(&deploys, "blue", T, |d: Option<&Deployment>| d.is_some()).await;
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let ru = spec.strategy.unwrap().rolling_update.unwrap();
    assert_eq!(
        ru.max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(0))
    );
    let pod = spec.template.spec.unwrap();
    let c = &pod.containers[0];
    let env_of = |name: &str| {
        c.env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    // azmlinfsrv when the image has it, else the shipped server (build.rs tests the script).
    let command = c.command.as_ref().unwrap();
    assert_eq!(command[..2], ["/bin/sh", "-c"]);
    assert!(command[2].contains("exec azmlinfsrv --entry_script"));
    assert!(command[2].ends_with("exec python3 /var/mlcompute/server/mlcompute_scoring_server.py"));
    assert_eq!(
        env_of("AZUREML_ENTRY_SCRIPT").as_deref(),
        Some("/var/azureml-app/score.py")
    );
    assert_eq!(
        env_of("AZUREML_MODEL_DIR").as_deref(),
        Some("/var/azureml-app/azureml-models/blue")
    );
    assert_eq!(env_of("THRESHOLD").as_deref(), Some("0.7"));
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 5001);
    let live = c.liveness_probe.as_ref().unwrap();
    assert_eq!(live.http_get.as_ref().unwrap().path.as_deref(), Some("/"));
    assert_eq!(
        (
            live.initial_delay_seconds,
            live.period_seconds,
            live.timeout_seconds,
            live.failure_threshold
        ),
        (Some(30), Some(10), Some(2), Some(30))
    );
    let ready = c.readiness_probe.as_ref().unwrap();
    assert_eq!(
        (
            ready.http_get.as_ref().unwrap().path.as_deref(),
            ready.initial_delay_seconds
        ),
        (Some("/"), Some(10))
    );
    let res = c.resources.as_ref().unwrap();
    assert_eq!(res.limits.as_ref().unwrap()["cpu"].0, "1");
    assert_eq!(res.limits.as_ref().unwrap()["memory"].0, "2Gi");
    let inits: Vec<&str> = pod
        .init_containers
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(inits, ["code-initializer", "storage-initializer"]);
    let server: Api<ConfigMap> = ns.api();
    let cm = server.get("blue-scoring-server").await.unwrap();
    assert!(cm.data.unwrap()["mlcompute_scoring_server.py"].contains("def "));
    let svc = ns.api::<Service>().get("blue").await.unwrap();
    assert_eq!(svc.spec.unwrap().ports.unwrap()[0].port, 5001);

    // Custom container: the Environment's routes and variables, the PVC model read-only.
    let g = wait_for(&deploys, "green", T, |d: Option<&Deployment>| d.is_some()).await;
    let gspec = g.spec.unwrap();
    assert_eq!(gspec.replicas.filter(|_| false), None);
    let gpod = gspec.template.spec.unwrap();
    let gc = &gpod.containers[0];
    assert_eq!(gc.image.as_deref(), Some("ghcr.io/example/fraud-api:2"));
    assert!(gc.command.is_none());
    assert_eq!(gc.ports.as_ref().unwrap()[0].container_port, 8000);
    assert_eq!(
        gc.readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/ready")
    );
    assert!(
        gc.env
            .as_ref()
            .unwrap()
            .iter()
            .any(|e| e.name == "FROM_ENV")
    );
    let model = gc
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name == "model")
        .unwrap();
    assert_eq!(
        (model.sub_path.as_deref(), model.read_only),
        (Some("fraud/v2"), Some(true))
    );
    // target_utilization: no HorizontalPodAutoscaler (Azure ML: never on these deployments); the
    // operator's autoscaler sizes the Deployment. No router is configured in this test, so it
    // only brings the count within minInstances..maxInstances (created at 1, raised to 2).
    wait_for(&deploys, "green", T, |d: Option<&Deployment>| {
        d.and_then(|d| d.spec.as_ref()?.replicas) == Some(2)
    })
    .await;
    for name in ["blue", "green"] {
        assert!(
            ns.api::<HorizontalPodAutoscaler>()
                .get_opt(name)
                .await
                .unwrap()
                .is_none()
        );
    }

    // Status: KWOK makes the pods ready; the selector serves the scale subresource.
    ready_instances(&ods, "blue", 2).await;
    let od = ods.get("blue").await.unwrap();
    let st = od.status.unwrap();
    assert_eq!(
        st.selector.as_deref(),
        Some("app.kubernetes.io/managed-by=mlcompute,mlcompute.io/onlinedeployment=blue")
    );
    assert_eq!(st.image.as_deref(), Some("python:3.12-slim"));
    let green = ods.get("green").await.unwrap().status.unwrap();
    assert_eq!(green.environment_version.as_deref(), Some("2"));

    // A reconcile that changes nothing writes nothing: the Deployment keeps its resourceVersion.
    let before = deploys.get("blue").await.unwrap().metadata.resource_version;
    let done = op.finished("onlinedeployment").await;
    ods.patch(
        "blue",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "labels": { "touched": "yes" } } })),
    )
    .await
    .unwrap();
    // The reconcile the label change brings has run to its end, writes included.
    op.reconciled("onlinedeployment", done + 1).await;
    assert_eq!(
        deploys.get("blue").await.unwrap().metadata.resource_version,
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn traffic_and_mirror_reach_the_routing_table_and_the_httproute() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "online-traffic").await;
    let _op = Operator::start_with(
        ns.name(),
        &[
            "--gateway",
            GATEWAY,
            "--router-url",
            "http://127.0.0.1:8080",
        ],
    );
    let eps: Api<OnlineEndpoint> = ns.api();
    let ods: Api<OnlineDeployment> = ns.api();
    create(&eps, endpoint("fraud", json!({}))).await;
    for d in ["blue", "green", "shadow"] {
        create(&ods, scoring_deployment(d, "fraud")).await;
    }
    for d in ["blue", "green", "shadow"] {
        ready_instances(&ods, d, 1).await;
    }
    eps.patch(
        "fraud",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "traffic": { "blue": 100 } } })),
    )
    .await
    .unwrap();
    let cms: Api<ConfigMap> = ns.api();
    let routes = http_routes(&client, ns.name());
    eventually("blue=100 in the routing ConfigMap", T, || {
        let cms = cms.clone();
        async move {
            let route = route_of(&cms.get_opt("fraud-routing").await.ok()??)?;
            (split(&route)[0] == ("blue".to_string(), 100, 0)).then_some(())
        }
    })
    .await;

    // Flip the split and the mirror a few times (one merge patch each); measure from the patch
    // until both materialisations show it.
    let steps = [
        (
            json!({ "blue": 90, "green": 10 }),
            json!({ "shadow": 20 }),
            [90u32, 10, 0],
            20u32,
        ),
        (
            json!({ "blue": 50, "green": 50 }),
            json!({ "shadow": 50 }),
            [50, 50, 0],
            50,
        ),
        (
            json!({ "blue": 0, "green": 100 }),
            json!({}),
            [0, 100, 0],
            0,
        ),
        (
            json!({ "blue": 100, "green": 0 }),
            json!({ "shadow": 10 }),
            [100, 0, 0],
            10,
        ),
    ];
    let mut latencies = Vec::new();
    for (traffic, mirror, want, want_mirror) in steps {
        // Server-side apply: keys this manager set before and leaves out now are removed.
        eps.patch(
            "fraud",
            &PatchParams::apply("online-test").force(),
            &Patch::Apply(json!({
                "apiVersion": "mlcompute.io/v1alpha1", "kind": "OnlineEndpoint",
                "spec": { "traffic": traffic, "mirrorTraffic": mirror },
            })),
        )
        .await
        .unwrap();
        let patched = Instant::now();
        let (mut cm_at, mut hr_at) = (None, None);
        while cm_at.is_none() || hr_at.is_none() {
            if patched.elapsed() > Duration::from_secs(10) {
                let cm = cms.get_opt("fraud-routing").await.unwrap();
                let hr = routes.get_opt("fraud").await.unwrap();
                let ep = eps.get("fraud").await.unwrap();
                panic!(
                    "traffic change to {want:?} / mirror {want_mirror} not applied within 10 s: route {:?}, HTTPRoute {:?}, endpoint spec {:?}",
                    cm.as_ref().and_then(route_of).map(|r| split(&r)),
                    hr.as_ref().map(http_split),
                    ep.spec
                );
            }
            if cm_at.is_none()
                && let Some(route) = cms
                    .get_opt("fraud-routing")
                    .await
                    .unwrap()
                    .as_ref()
                    .and_then(route_of)
            {
                let got: Vec<u32> = route.deployments.iter().map(|d| d.traffic).collect();
                let m: u32 = route.deployments.iter().map(|d| d.mirror).sum();
                if got == want && m == want_mirror {
                    cm_at = Some(patched.elapsed());
                }
            }
            if hr_at.is_none()
                && let Some(r) = routes.get_opt("fraud").await.unwrap()
            {
                let (weights, m) = http_split(&r);
                let live: Vec<(String, u64)> = ["blue", "green"]
                    .iter()
                    .zip(want)
                    .filter(|(_, w)| *w > 0)
                    .map(|(n, w)| (n.to_string(), u64::from(w)))
                    .collect();
                if weights == live && m.unwrap_or(0) == u64::from(want_mirror) {
                    hr_at = Some(patched.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        latencies.push((cm_at.unwrap(), hr_at.unwrap()));
    }
    eprintln!("traffic change → (routing ConfigMap, HTTPRoute) latency: {latencies:?}");
    for (cm, hr) in &latencies {
        assert!(
            *cm < Duration::from_secs(5) && *hr < Duration::from_secs(5),
            "{latencies:?}"
        );
    }

    // The HTTPRoute: attached to the gateway, a pinning rule per deployment.
    let r = routes.get("fraud").await.unwrap();
    assert_eq!(r.data["spec"]["parentRefs"][0]["name"], "public");
    let rules = r.data["spec"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 4);
    assert_eq!(
        rules[1]["matches"][0]["headers"][0]["name"],
        "azureml-model-deployment"
    );
    assert_eq!(rules[1]["matches"][0]["headers"][0]["value"], "green");

    // A deleted HTTPRoute comes back (the controller caches HTTPRoutes and owns them).
    routes
        .delete("fraud", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    eventually("the HTTPRoute is re-applied", T, || {
        let routes = routes.clone();
        async move {
            let r = routes.get_opt("fraud").await.ok()??;
            (r.metadata.deletion_timestamp.is_none()
                && http_split(&r).0 == vec![("blue".to_string(), 100)])
            .then_some(())
        }
    })
    .await;

    // Status: scoring and swagger URIs, applied split, readiness, conditions.
    let ep = wait_for(&eps, "fraud", T, |e: Option<&OnlineEndpoint>| {
        e.and_then(|e| e.status.as_ref())
            .is_some_and(|s| s.mirror_traffic_applied.get("shadow") == Some(&10))
    })
    .await;
    let st = ep.status.clone().unwrap();
    assert_eq!(
        st.scoring_uri.as_deref(),
        Some("http://127.0.0.1:8080/api/v1/endpoint/fraud/score")
    );
    assert_eq!(
        st.openapi_uri.as_deref(),
        Some("http://127.0.0.1:8080/api/v1/endpoint/fraud/swagger.json")
    );
    assert_eq!(st.traffic_applied.get("blue"), Some(&100));
    assert_eq!(st.deployments.len(), 3);
    assert!(st.deployments.iter().all(|d| d.ready));
    assert_eq!(condition(&ep, "Ready").unwrap().status, "True");
    assert_eq!(
        condition(&ep, "GatewayRouted").unwrap().reason,
        "HTTPRouteApplied"
    );

    // What the router's cluster source builds from the same objects: instances from the
    // EndpointSlices (fake pod IPs, never dialed), keys from the Secret.
    let slices: Vec<EndpointSlice> = eventually("EndpointSlices with ready instances", T, || {
        let api: Api<EndpointSlice> = ns.api();
        async move {
            let list = api
                .list(&ListParams::default().labels(&routing::instance_slice_selector()))
                .await
                .ok()?;
            let ready = list
                .items
                .iter()
                .flat_map(|s| s.endpoints.iter().flatten())
                .count();
            (ready >= 3).then_some(list.items)
        }
    })
    .await;
    let maps: Vec<Arc<ConfigMap>> = cms
        .list(&ListParams::default().labels(&routing::routing_selector()))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(Arc::new)
        .collect();
    let secrets: Vec<Arc<Secret>> = ns
        .api::<Secret>()
        .list(&ListParams::default().labels(&keys::secret_selector()))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(Arc::new)
        .collect();
    let refs: Vec<&EndpointSlice> = slices.iter().collect();
    let table = cluster_source::build(&maps, &refs, &secrets);
    table.validate().unwrap();
    let fraud = &table.endpoints[0];
    assert!(matches!(fraud.auth, Auth::Key { .. }));
    for d in &fraud.deployments {
        assert_eq!(d.backends.len(), 1, "{}: {:?}", d.name, d.backends);
        assert!(d.backends[0].ready && d.backends[0].address.ends_with(":5001"));
    }
    assert_eq!(fraud.deployments.iter().map(|d| d.mirror).sum::<u32>(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn traffic_to_a_missing_deployment_shows_a_condition() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "online-missing").await;
    let _op = Operator::start(ns.name());
    let eps: Api<OnlineEndpoint> = ns.api();
    let ods: Api<OnlineDeployment> = ns.api();
    create(
        &eps,
        endpoint(
            "fraud",
            json!({ "traffic": { "blue": 80, "ghost": 20 }, "mirrorTraffic": { "phantom": 10 } }),
        ),
    )
    .await;
    create(&ods, scoring_deployment("blue", "fraud")).await;
    // A deployment of an endpoint that does not exist waits with a reason.
    create(&ods, scoring_deployment("orphan", "nowhere")).await;

    let ep = wait_for(&eps, "fraud", T, |e: Option<&OnlineEndpoint>| {
        e.and_then(|e| e.status.as_ref())
            .is_some_and(|s| s.traffic_applied.get("blue") == Some(&100))
    })
    .await;
    let ready = condition(&ep, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "TrafficToMissingDeployment")
    );
    assert!(
        ready.message.contains("ghost") && ready.message.contains("phantom"),
        "{}",
        ready.message
    );
    let resolved = condition(&ep, "Resolved").unwrap();
    assert_eq!(
        (resolved.status.as_str(), resolved.reason.as_str()),
        ("False", "TrafficToMissingDeployment")
    );
    assert!(
        ep.status
            .as_ref()
            .unwrap()
            .mirror_traffic_applied
            .is_empty()
    );
    let cm = ns.api::<ConfigMap>().get("fraud-routing").await.unwrap();
    assert_eq!(
        split(&route_of(&cm).unwrap()),
        vec![("blue".to_string(), 100, 0)]
    );

    let orphan = wait_for(&ods, "orphan", T, |o: Option<&OnlineDeployment>| {
        o.and_then(|o| o.status.as_ref())
            .is_some_and(|s| s.conditions.iter().any(|c| c.reason == "EndpointNotFound"))
    })
    .await;
    assert!(
        ns.api::<Deployment>()
            .get_opt("orphan")
            .await
            .unwrap()
            .is_none()
    );
    drop(orphan);

    // Events say it too.
    eventually("a TrafficToMissingDeployment Event", T, || {
        let events: Api<Event> = ns.api();
        async move {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| e.reason.as_deref() == Some("TrafficToMissingDeployment"))
                .then_some(())
        }
    })
    .await;

    // Creating the missing deployment heals the endpoint.
    create(&ods, scoring_deployment("ghost", "fraud")).await;
    create(&ods, scoring_deployment("phantom", "fraud")).await;
    let ep = wait_for(&eps, "fraud", T, |e: Option<&OnlineEndpoint>| {
        e.is_some_and(|e| condition(e, "Ready").is_some_and(|c| c.status == "True"))
    })
    .await;
    let st = ep.status.unwrap();
    assert_eq!(
        (
            st.traffic_applied.get("ghost"),
            st.mirror_traffic_applied.get("phantom")
        ),
        (Some(&20), Some(&10))
    );
}

fn kubectl(args: &[&str]) -> String {
    let out = Command::new(support::kubectl())
        .args(["--kubeconfig", &support::kubeconfig_path()])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn key(secret: &Secret, k: &str) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()[k].0.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn keys_secret_is_created_once_and_regenerate_changes_one_key() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "online-keys").await;
    let op = Operator::start(ns.name());
    create(
        &ns.api::<OnlineEndpoint>(),
        endpoint("fraud", json!({ "authMode": "key" })),
    )
    .await;
    let secrets: Api<Secret> = ns.api();
    let first = wait_for(&secrets, "fraud-keys", T, |s: Option<&Secret>| s.is_some()).await;
    let (p1, s1) = (key(&first, "primaryKey"), key(&first, "secondaryKey"));
    assert_eq!((p1.len(), s1.len()), (64, 64));
    assert_ne!(p1, s1);

    let out = Command::new(env!("CARGO_BIN_EXE_mlcompute"))
        .args([
            "endpoint",
            "regenerate-keys",
            "fraud",
            "--key",
            "secondary",
            "-n",
            ns.name(),
        ])
        .args(["--kubeconfig", &support::kubeconfig_path()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = secrets.get("fraud-keys").await.unwrap();
    assert_eq!(key(&after, "primaryKey"), p1);
    assert_ne!(key(&after, "secondaryKey"), s1);
    // The controller never puts the old key back: the reconciles the rotation brought (the
    // Secret is owned by the endpoint) have all run to their end by the time the endpoint's
    // status names the Secret again; then one more, forced by a label, must not restore it.
    let done = op.finished("onlineendpoint").await;
    ns.api::<OnlineEndpoint>()
        .patch(
            "fraud",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "touched": "yes" } } })),
        )
        .await
        .unwrap();
    op.reconciled("onlineendpoint", done + 1).await;
    assert_eq!(
        key(&secrets.get("fraud-keys").await.unwrap(), "secondaryKey"),
        key(&after, "secondaryKey")
    );
    let ep = ns.api::<OnlineEndpoint>().get("fraud").await.unwrap();
    assert_eq!(
        ep.status.unwrap().keys_secret_name.as_deref(),
        Some("fraud-keys")
    );

    // No keys Secret for auth mode none: the CLI says why.
    create(
        &ns.api::<OnlineEndpoint>(),
        endpoint("open", json!({ "authMode": "none" })),
    )
    .await;
    let out = Command::new(env!("CARGO_BIN_EXE_mlcompute"))
        .args(["endpoint", "regenerate-keys", "open", "-n", ns.name()])
        .args(["--kubeconfig", &support::kubeconfig_path()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth mode is none"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn kubectl_scale_changes_the_deployment_replicas() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "online-scale").await;
    let _op = Operator::start(ns.name());
    create(&ns.api::<OnlineEndpoint>(), endpoint("fraud", json!({}))).await;
    let ods: Api<OnlineDeployment> = ns.api();
    create(&ods, scoring_deployment("blue", "fraud")).await;
    ready_instances(&ods, "blue", 1).await;
    kubectl(&[
        "scale",
        "onlinedeployment",
        "blue",
        "-n",
        ns.name(),
        "--replicas=3",
    ]);
    let deploys: Api<Deployment> = ns.api();
    wait_for(&deploys, "blue", T, |d: Option<&Deployment>| {
        d.and_then(|d| d.spec.as_ref()).and_then(|s| s.replicas) == Some(3)
    })
    .await;
    ready_instances(&ods, "blue", 3).await;
    // The scale subresource reads status.replicas back.
    let scale = kubectl(&[
        "get",
        "--raw",
        &format!(
            "/apis/mlcompute.io/v1alpha1/namespaces/{}/onlinedeployments/blue/scale",
            ns.name()
        ),
    ]);
    let scale: Value = serde_json::from_str(&scale).unwrap();
    assert_eq!(
        (
            scale["spec"]["replicas"].as_i64(),
            scale["status"]["replicas"].as_i64()
        ),
        (Some(3), Some(3))
    );
    assert!(
        scale["status"]["selector"]
            .as_str()
            .unwrap()
            .contains("mlcompute.io/onlinedeployment=blue")
    );
}

/// An `mlcompute router --cluster` process, killed when dropped.
struct RouterProcess(std::process::Child);

impl RouterProcess {
    /// A router for namespace `ns` on a free port of 127.0.0.1 (log in the temp dir); the port.
    fn start(ns: &str) -> (Self, u16) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::env::temp_dir().join(format!("mlcompute-router-{ns}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_mlcompute"))
            .args(["router", "--cluster", "--namespaces", ns, "--threads", "1"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--kubeconfig", &support::kubeconfig_path()])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        (Self(child), port)
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// POSTs to the router on 127.0.0.1 and returns the status code.
async fn post(port: u16, path: &str, headers: &[(&str, &str)]) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 2\r\nconnection: close\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n{}");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    String::from_utf8_lossy(&buf)
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn router_cluster_source_serves_routes_and_follows_key_rotation() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "online-router").await;
    let _op = Operator::start(ns.name());
    create(
        &ns.api::<OnlineEndpoint>(),
        endpoint("fraud", json!({ "traffic": { "blue": 100 } })),
    )
    .await;
    // An instance type that does not exist: the deployment never gets instances, so the router
    // has nothing to dial and answers by itself (pod IPs in this plane are fake).
    let mut blue = scoring_deployment("blue", "fraud");
    blue["spec"]["instanceType"] = json!("no-such-type");
    create(&ns.api::<OnlineDeployment>(), blue).await;
    let secrets: Api<Secret> = ns.api();
    let keys = wait_for(&secrets, "fraud-keys", T, |s: Option<&Secret>| s.is_some()).await;
    let primary = key(&keys, "primaryKey");

    let (_router, port) = RouterProcess::start(ns.name());
    let path = "/api/v1/endpoint/fraud/score";
    let bearer = |k: &str| format!("Bearer {k}");
    // The right key passes auth and finds no instance: 503, never a connection.
    let with = |k: String| async move {
        let auth = bearer(&k);
        post(
            port,
            path,
            &[
                ("authorization", auth.as_str()),
                ("azureml-model-deployment", "blue"),
            ],
        )
        .await
    };
    eventually(
        "the router serves the endpoint from the cluster (503: no instance)",
        T,
        || {
            let k = primary.clone();
            async move { (with(k).await == Some(503)).then_some(()) }
        },
    )
    .await;
    assert_eq!(with("wrong".into()).await, Some(401));
    assert_eq!(
        post(
            port,
            "/api/v1/endpoint/unknown/score",
            &[("authorization", "Bearer x")]
        )
        .await,
        Some(401)
    );

    // Regenerating the primary key reaches the router: the old one stops working.
    let out = Command::new(env!("CARGO_BIN_EXE_mlcompute"))
        .args([
            "endpoint",
            "regenerate-keys",
            "fraud",
            "-n",
            ns.name(),
            "--kubeconfig",
            &support::kubeconfig_path(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated = key(&secrets.get("fraud-keys").await.unwrap(), "primaryKey");
    let started = Instant::now();
    eventually("the new key works in the router", T, || {
        let k = rotated.clone();
        async move { (with(k).await == Some(503)).then_some(()) }
    })
    .await;
    eprintln!("key rotation reached the router in {:?}", started.elapsed());
    assert_eq!(with(primary).await, Some(401));
}

/// Runs `mlcompute endpoint ARGS… -n NS` and returns its stdout; panics with stderr on failure.
fn endpoint_cli(ns: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mlcompute"))
        .arg("endpoint")
        .args(args)
        .args(["-n", ns, "--kubeconfig", &support::kubeconfig_path()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Issue 5, auth mode aml_token: the operator keeps a signing key in the endpoint's Secret,
/// `get-credentials` mints a token with Azure ML's fields, the router accepts it (and not a
/// forged or foreign one), and rotating the signing key revokes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn aml_tokens_are_minted_checked_by_the_router_and_revoked_by_rotation() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "online-token").await;
    let _op = Operator::start(ns.name());
    create(
        &ns.api::<OnlineEndpoint>(),
        endpoint(
            "fraud",
            json!({ "authMode": "aml_token", "traffic": { "blue": 100 } }),
        ),
    )
    .await;
    // No instances (an unknown instance type): the router answers by itself, never dials.
    let mut blue = scoring_deployment("blue", "fraud");
    blue["spec"]["instanceType"] = json!("no-such-type");
    create(&ns.api::<OnlineDeployment>(), blue).await;
    let secrets: Api<Secret> = ns.api();
    let keys = wait_for(&secrets, "fraud-keys", T, |s: Option<&Secret>| s.is_some()).await;
    let signing = key(&keys, "tokenSigningKey");
    assert_eq!(signing.len(), 64);

    let credentials: Value = serde_json::from_str(&endpoint_cli(
        ns.name(),
        &["get-credentials", "fraud", "--ttl", "10m"],
    ))
    .unwrap();
    assert_eq!(credentials["tokenType"], "Bearer");
    let token = credentials["accessToken"].as_str().unwrap().to_owned();
    let expiry = credentials["expiryTimeUtc"].as_str().unwrap();
    let expiry: k8s_openapi::jiff::Timestamp = expiry.parse().unwrap();
    let in_ten = k8s_openapi::jiff::Timestamp::now().as_second() + 600;
    assert!((expiry.as_second() - in_ten).abs() <= 5, "{credentials}");
    assert!(credentials["refreshAfterTimeUtc"].is_string());

    let (_router, port) = RouterProcess::start(ns.name());
    let with = |t: String| async move {
        let auth = format!("Bearer {t}");
        post(
            port,
            "/api/v1/endpoint/fraud/score",
            &[
                ("authorization", auth.as_str()),
                ("azureml-model-deployment", "blue"),
            ],
        )
        .await
    };
    eventually("the router accepts the token (503: no instance)", T, || {
        let t = token.clone();
        async move { (with(t).await == Some(503)).then_some(()) }
    })
    .await;
    // A token for another endpoint, an expired one, a forged one and the signing key itself: 401.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let foreign = token::mint(signing.as_bytes(), "iris", now + 600);
    let expired = token::mint(signing.as_bytes(), "fraud", now - 1);
    let forged = token::mint(b"guess", "fraud", now + 600);
    for (what, t) in [
        ("foreign", foreign),
        ("expired", expired),
        ("forged", forged),
        ("signing key", signing.clone()),
    ] {
        assert_eq!(with(t).await, Some(401), "{what}");
    }

    // Rotating the signing key revokes every token issued so far; new ones work.
    endpoint_cli(
        ns.name(),
        &["regenerate-keys", "fraud", "--key", "token-signing"],
    );
    let started = Instant::now();
    eventually("the old token stops working", T, || {
        let t = token.clone();
        async move { (with(t).await == Some(401)).then_some(()) }
    })
    .await;
    eprintln!(
        "signing key rotation reached the router in {:?}",
        started.elapsed()
    );
    let fresh: Value =
        serde_json::from_str(&endpoint_cli(ns.name(), &["get-credentials", "fraud"])).unwrap();
    assert_eq!(
        with(fresh["accessToken"].as_str().unwrap().to_owned()).await,
        Some(503)
    );

    // A Secret without a signing key (made for key mode by an older operator) gets one when
    // the endpoint switches to aml_token; its keys stay as they were.
    create(&ns.api::<OnlineEndpoint>(), endpoint("legacy", json!({}))).await;
    let old = wait_for(&secrets, "legacy-keys", T, |s: Option<&Secret>| s.is_some()).await;
    secrets
        .patch(
            "legacy-keys",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Json::<()>(
                serde_json::from_value(
                    json!([{ "op": "remove", "path": "/data/tokenSigningKey" }]),
                )
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    ns.api::<OnlineEndpoint>()
        .patch(
            "legacy",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({ "spec": { "authMode": "aml_token" } })),
        )
        .await
        .unwrap();
    let upgraded = wait_for(&secrets, "legacy-keys", T, |s: Option<&Secret>| {
        s.and_then(|s| s.data.as_ref()?.get("tokenSigningKey"))
            .is_some()
    })
    .await;
    assert_ne!(
        key(&upgraded, "tokenSigningKey"),
        key(&old, "tokenSigningKey")
    );
    assert_eq!(key(&upgraded, "primaryKey"), key(&old, "primaryKey"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn a_restarted_operator_writes_nothing() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "online-restart").await;
    let mut op = Operator::start_with(ns.name(), &["--gateway", GATEWAY]);
    let eps: Api<OnlineEndpoint> = ns.api();
    let ods: Api<OnlineDeployment> = ns.api();
    create(&ods, scoring_deployment("blue", "fraud")).await;
    create(
        &eps,
        endpoint("fraud", json!({ "traffic": { "blue": 100 } })),
    )
    .await;
    ready_instances(&ods, "blue", 1).await;
    let ep = wait_for(&eps, "fraud", T, |e: Option<&OnlineEndpoint>| {
        e.is_some_and(|e| condition(e, "Ready").is_some_and(|c| c.status == "True"))
    })
    .await;
    let cms: Api<ConfigMap> = ns.api();
    let version = |o: &kube::api::ObjectMeta| o.resource_version.clone().unwrap();
    let before = (
        version(&cms.get("fraud-routing").await.unwrap().metadata),
        version(
            &http_routes(&client, ns.name())
                .get("fraud")
                .await
                .unwrap()
                .metadata,
        ),
        version(&ns.api::<Deployment>().get("blue").await.unwrap().metadata),
        version(&ns.api::<Service>().get("blue").await.unwrap().metadata),
        version(&ods.get("blue").await.unwrap().metadata),
        version(&ep.metadata),
    );
    // A new process starts with empty caches: it must neither route nothing for a moment nor
    // rewrite anything that is already right.
    op.kill();
    let op = Operator::start_with(ns.name(), &["--gateway", GATEWAY]);
    // Every object has been reconciled once by the new process, writes included.
    op.reconciled("onlineendpoint", 1).await;
    op.reconciled("onlinedeployment", 1).await;
    let after = (
        version(&cms.get("fraud-routing").await.unwrap().metadata),
        version(
            &http_routes(&client, ns.name())
                .get("fraud")
                .await
                .unwrap()
                .metadata,
        ),
        version(&ns.api::<Deployment>().get("blue").await.unwrap().metadata),
        version(&ns.api::<Service>().get("blue").await.unwrap().metadata),
        version(&ods.get("blue").await.unwrap().metadata),
        version(&eps.get("fraud").await.unwrap().metadata),
    );
    assert_eq!(before, after);
}

/// Status, reason and message of an endpoint's condition.
fn reason(ep: &OnlineEndpoint, type_: &str) -> Option<(String, String, String)> {
    condition(ep, type_).map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn taken(ep: Option<&OnlineEndpoint>) -> bool {
    ep.and_then(|e| reason(e, "Ready"))
        .is_some_and(|(_, r, _)| r == "NameTaken")
}

/// Waits for `name`'s routing ConfigMap and scoring URI in `ns`, Ready not `NameTaken`.
async fn routed(client: &Client, ns: &str, name: &str, timeout: Duration) -> OnlineEndpoint {
    let eps: Api<OnlineEndpoint> = Api::namespaced(client.clone(), ns);
    let ep = wait_for(&eps, name, timeout, |e: Option<&OnlineEndpoint>| {
        e.and_then(|e| e.status.as_ref())
            .is_some_and(|s| s.scoring_uri.is_some())
            && !taken(e)
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let cm = format!("{name}-routing");
    eventually(&format!("ConfigMap {ns}/{cm}"), timeout, || {
        let cms = cms.clone();
        let cm = cm.clone();
        async move { cms.get_opt(&cm).await.ok()?.map(|_| ()) }
    })
    .await;
    ep
}

/// Asserts that `name` in `ns` is refused because `holder` holds the name: Ready False
/// NameTaken naming `holder`, no scoring URI, no routing ConfigMap, no HTTPRoute, keys kept.
async fn refused(client: &Client, ns: &str, name: &str, holder: &str) {
    let eps: Api<OnlineEndpoint> = Api::namespaced(client.clone(), ns);
    let ep = wait_for(&eps, name, T, |e: Option<&OnlineEndpoint>| taken(e)).await;
    let (status, _, message) = reason(&ep, "Ready").unwrap();
    assert_eq!(status, "False");
    assert!(
        message.contains(&format!("namespace {holder}")) && message.contains(name),
        "{message}"
    );
    let st = ep.status.as_ref().unwrap();
    assert_eq!(st.scoring_uri, None);
    assert_eq!(
        st.provisioning_state,
        Some(mlcompute::api::online_endpoint::ProvisioningState::Failed)
    );
    // The routing ConfigMap and the HTTPRoute go once the status says so.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let routes = http_routes(client, ns);
    eventually("no routing ConfigMap and no HTTPRoute", T, || {
        let (cms, routes) = (cms.clone(), routes.clone());
        async move {
            let cm = cms.get_opt(&format!("{name}-routing")).await.ok()?;
            let route = routes.get_opt(name).await.ok()?;
            (cm.is_none() && route.is_none()).then_some(())
        }
    })
    .await;
    let keys: Api<Secret> = Api::namespaced(client.clone(), ns);
    assert!(
        keys.get_opt(&format!("{name}-keys"))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn an_endpoint_name_taken_in_another_namespace_is_refused_until_the_holder_is_deleted() {
    let client = support::client().await;
    // The older endpoint lives in the namespace that sorts last: creation time decides, not
    // namespace order.
    let first = TestNamespace::new(&client, "names-b").await;
    let second = TestNamespace::new(&client, "names-a").await;
    let both = format!("{},{}", first.name(), second.name());
    // Two watched namespaces: one OnlineEndpoint controller each, sharing the names.
    let _op = Operator::start_with(&both, &["--gateway", GATEWAY]);
    let name = format!("iris-{:08x}", rand::random::<u32>());
    let (eps1, eps2): (Api<OnlineEndpoint>, Api<OnlineEndpoint>) = (first.api(), second.api());
    create(&eps1, endpoint(&name, json!({}))).await;
    routed(&client, first.name(), &name, T).await;
    // creationTimestamp has whole seconds: make the second endpoint strictly younger.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    create(&eps2, endpoint(&name, json!({}))).await;

    refused(&client, second.name(), &name, first.name()).await;
    // The holder is unaffected.
    let holder = routed(&client, first.name(), &name, T).await;
    assert!(!taken(Some(&holder)));
    assert!(
        http_routes(&client, first.name())
            .get_opt(&name)
            .await
            .unwrap()
            .is_some()
    );
    // Told with a Warning Event too.
    warning_event(&second, "NameTaken", &name, T).await;

    // The holder goes: the second endpoint takes the name over (it looks again every 15 s).
    eps1.delete(&name, &Default::default()).await.unwrap();
    let took = routed(&client, second.name(), &name, T).await;
    let uri = took.status.as_ref().unwrap().scoring_uri.clone().unwrap();
    assert!(
        uri.ends_with(&format!("/api/v1/endpoint/{name}/score")),
        "{uri}"
    );
    eventually("the HTTPRoute of the new holder", T, || {
        let routes = http_routes(&client, second.name());
        let name = name.clone();
        async move { routes.get_opt(&name).await.ok()?.map(|_| ()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn an_endpoint_that_loses_its_name_withdraws_its_routing() {
    let client = support::client().await;
    let first = TestNamespace::new(&client, "names-old").await;
    let second = TestNamespace::new(&client, "names-new").await;
    let name = format!("iris-{:08x}", rand::random::<u32>());
    create(&first.api::<OnlineEndpoint>(), endpoint(&name, json!({}))).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    create(&second.api::<OnlineEndpoint>(), endpoint(&name, json!({}))).await;
    // An operator watching only the second namespace routes it (it sees no other).
    let mut op = Operator::start_with(second.name(), &["--gateway", GATEWAY]);
    routed(&client, second.name(), &name, T).await;
    eventually("the HTTPRoute", T, || {
        let routes = http_routes(&client, second.name());
        let name = name.clone();
        async move { routes.get_opt(&name).await.ok()?.map(|_| ()) }
    })
    .await;
    // Once it watches both, the older endpoint holds the name: the younger one's routing goes.
    op.kill();
    let both = format!("{},{}", first.name(), second.name());
    let _op = Operator::start_with(&both, &["--gateway", GATEWAY]);
    refused(&client, second.name(), &name, first.name()).await;
    routed(&client, first.name(), &name, T).await;
}
