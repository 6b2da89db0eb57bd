//! One shared cache per kind (and namespace) per process: with `--namespaces a,b,c` the operator
//! opens one watch per kind and namespace (and one per cluster-scoped kind), not one per
//! controller, measured from the API server's own `apiserver_longrunning_requests` gauge.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{collections::BTreeMap, time::Duration};

use support::{Operator, TestNamespace, eventually};

/// Open WATCH requests on the API server, by resource (every client's).
async fn open_watches(client: &kube::Client) -> BTreeMap<String, i64> {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(req).await.unwrap();
    let mut by_resource = BTreeMap::new();
    for line in text.lines() {
        if !line.starts_with("apiserver_longrunning_requests{") || !line.contains("verb=\"WATCH\"")
        {
            continue;
        }
        let resource = line
            .split("resource=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_default()
            .to_string();
        let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        *by_resource.entry(resource).or_insert(0) += n as i64;
    }
    by_resource
}

/// The watches open now, read until two reads a second apart agree (another client's watch
/// restarting for a moment would otherwise count as a change).
async fn settled_watches(client: &kube::Client) -> BTreeMap<String, i64> {
    eventually(
        "a stable count of open watches",
        Duration::from_secs(30),
        || async {
            let a = open_watches(client).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let b = open_watches(client).await;
            (a == b).then_some(a)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn three_namespaces_open_one_watch_per_kind_and_namespace() {
    let client = support::client().await;
    let namespaces = [
        TestNamespace::new(&client, "watch-a").await,
        TestNamespace::new(&client, "watch-b").await,
        TestNamespace::new(&client, "watch-c").await,
    ];
    let list = namespaces
        .iter()
        .map(|n| n.name().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let before = settled_watches(&client).await;
    let op = Operator::start(&list);
    op.ready().await;
    let after = settled_watches(&client).await;
    let opened: BTreeMap<&str, i64> = after
        .iter()
        .map(|(r, n)| (r.as_str(), n - before.get(r).copied().unwrap_or(0)))
        .filter(|(_, n)| *n != 0)
        .collect();
    let total: i64 = opened.values().sum();
    println!("watches the operator opened, by resource: {opened:?} (total {total})");
    for (resource, n) in &opened {
        let most = match *resource {
            "instancetypes" | "nodes" => 1,
            _ => 3,
        };
        assert!(
            *n <= most,
            "{n} watches of {resource} for 3 namespaces (at most {most}): {opened:?}"
        );
    }
    for kind in [
        "pods",
        "trainingjobs",
        "onlinedeployments",
        "batchjobs",
        "configmaps",
    ] {
        assert_eq!(opened.get(kind), Some(&3), "{kind}: {opened:?}");
    }
    assert_eq!(opened.get("instancetypes"), Some(&1), "{opened:?}");
}
