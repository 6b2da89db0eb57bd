//! A reconcile that panics is reported on its object, and the other objects keep reconciling
//! (issue 12). The operator's own reconcile wrapper and error policy (`operator::reconcile`) run a
//! kube Controller against the real API server, with a reconcile that panics for one object.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api,
    api::PostParams,
    runtime::{Controller, controller::Action, events::Reporter, watcher},
};
use mlcompute::runtime::{
    backoff::{self, Backoffs},
    events::Events,
    metrics::Metrics,
    reconcile::{PANIC, Panicked, Policy, ReconcileError, guarded},
};
use support::{TestNamespace, eventually, warning_event};

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Panicked(#[from] Panicked),
}

impl ReconcileError for Error {
    fn category(&self) -> &'static str {
        PANIC
    }
}

struct Ctx {
    metrics: Metrics,
    events: Events,
    backoffs: Backoffs,
    seen: Mutex<BTreeSet<String>>,
}

async fn reconcile(cm: Arc<ConfigMap>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = cm.metadata.name.clone().unwrap_or_default();
    // The kind of bug a hostile object could hit: arithmetic on a number it chose.
    let size: u32 = cm
        .data
        .as_ref()
        .and_then(|d| d.get("size"))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let padded = size
        .checked_add(1)
        .unwrap_or_else(|| panic!("size {size} overflows"));
    ctx.seen.lock().unwrap().insert(format!("{name}:{padded}"));
    Ok(Action::await_change())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn a_panicking_reconcile_is_reported_on_its_object_and_the_others_go_on() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "panics").await;
    let cms: Api<ConfigMap> = ns.api();
    let metrics = Metrics::new().unwrap();
    let reporter = Reporter {
        controller: "mlcompute-test".into(),
        instance: None,
    };
    let events = Events::start(client.clone(), reporter, &metrics.registry).unwrap();
    let ctx = Arc::new(Ctx {
        metrics: metrics.clone(),
        events,
        backoffs: Backoffs::default(),
        seen: Mutex::new(BTreeSet::new()),
    });
    let controller = Controller::new(cms.clone(), watcher::Config::default())
        .run(
            |cm, ctx: Arc<Ctx>| async move {
                let key = backoff::key(&*cm);
                guarded(&ctx.backoffs.clone(), key, reconcile(cm, ctx)).await
            },
            |cm, err: &Error, ctx: Arc<Ctx>| {
                let policy = Policy {
                    controller: "test",
                    metrics: &ctx.metrics,
                    backoffs: &ctx.backoffs,
                    events: &ctx.events,
                };
                mlcompute::runtime::reconcile::failed(policy, &*cm, err)
            },
            ctx.clone(),
        )
        .for_each(|_| async {});
    let task = tokio::spawn(controller);

    let cm = |name: &str, size: &str| -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name }, "data": { "size": size }
        }))
        .unwrap()
    };
    let pp = PostParams::default();
    cms.create(&pp, &cm("boom", &u32::MAX.to_string()))
        .await
        .unwrap();
    cms.create(&pp, &cm("before", "1")).await.unwrap();
    // The panic is told on its object, counted, and the controller task is still running.
    warning_event(&ns, "ReconcilePanicked", "boom", Duration::from_secs(30)).await;
    assert!(!task.is_finished(), "the controller task ended");
    // Objects created after the panic are still reconciled.
    cms.create(&pp, &cm("after", "41")).await.unwrap();
    eventually(
        "the objects around the panic to be reconciled",
        Duration::from_secs(30),
        || {
            let seen = ctx.seen.lock().unwrap().clone();
            async move { (seen.contains("before:2") && seen.contains("after:42")).then_some(()) }
        },
    )
    .await;
    let errors = metrics
        .reconcile_errors
        .with_label_values(&["test", PANIC])
        .get();
    assert!(errors >= 1, "panics counted: {errors}");
    assert!(
        !ctx.seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.starts_with("boom"))
    );
    task.abort();
}
