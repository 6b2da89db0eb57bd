//! Input a careless or hostile tenant would send, against a real API server: huge numbers, negative
//! values, control characters, path escapes, names that would make invalid children, placeholders
//! for undeclared inputs, oversized maps. Each must be refused at admission with the message the
//! schema gives (a substring), on create and on update; the largest valid values must still pass;
//! and a pinned Environment version can never be given another image.
//!
//! Written independently of tests/api_validation.rs: its own fixtures and cases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use kube::{
    Api, Client,
    api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams},
};
use mlcompute::api::{
    BatchDeployment, BatchEndpoint, BatchJob, Environment, InstanceType, OnlineDeployment,
    OnlineEndpoint, TrainingJob,
};
use serde_json::{Value, json};
use support::{Operator, TestNamespace};

const KINDS: [&str; 8] = [
    "TrainingJob",
    "OnlineEndpoint",
    "OnlineDeployment",
    "BatchEndpoint",
    "BatchDeployment",
    "BatchJob",
    "Environment",
    "InstanceType",
];

fn resource(kind: &str) -> ApiResource {
    match kind {
        "TrainingJob" => ApiResource::erase::<TrainingJob>(&()),
        "OnlineEndpoint" => ApiResource::erase::<OnlineEndpoint>(&()),
        "OnlineDeployment" => ApiResource::erase::<OnlineDeployment>(&()),
        "BatchEndpoint" => ApiResource::erase::<BatchEndpoint>(&()),
        "BatchDeployment" => ApiResource::erase::<BatchDeployment>(&()),
        "BatchJob" => ApiResource::erase::<BatchJob>(&()),
        "Environment" => ApiResource::erase::<Environment>(&()),
        "InstanceType" => ApiResource::erase::<InstanceType>(&()),
        other => panic!("unknown kind {other}"),
    }
}

fn api(client: &Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    if kind == "InstanceType" {
        Api::all_with(client.clone(), &resource(kind))
    } else {
        Api::namespaced_with(client.clone(), ns, &resource(kind))
    }
}

/// A valid object of `kind` named `name`.
fn valid(kind: &str, name: &str) -> Value {
    let spec = match kind {
        "TrainingJob" => json!({
            "command": "python train.py --data ${{inputs.data}} --out ${{outputs.model}}",
            "image": "python:3.12",
            "inputs": { "data": { "path": "pvc://datasets/iris" } },
            "outputs": { "model": { "path": "pvc://models/iris" } },
            "timeout": "1h"
        }),
        "OnlineEndpoint" => json!({ "traffic": { "blue": 100 } }),
        "OnlineDeployment" => json!({ "endpointName": "scoring", "image": "nginx:1.27" }),
        "BatchEndpoint" => json!({ "defaults": { "deploymentName": "scorer" } }),
        "BatchDeployment" => json!({
            "endpointName": "batches",
            "model": "pvc://models/m",
            "codeConfiguration": { "code": "configmap://code", "scoringScript": "score.py" },
            "image": "python:3.12"
        }),
        "BatchJob" => json!({ "endpointName": "batches", "input": { "path": "pvc://in/files" } }),
        "Environment" => json!({ "image": "python:3.12", "version": "1" }),
        "InstanceType" => json!({ "resources": { "limits": { "cpu": "1", "memory": "1Gi" } } }),
        other => panic!("unknown kind {other}"),
    };
    json!({
        "apiVersion": "mlcompute.io/v1alpha1",
        "kind": kind,
        "metadata": { "name": name },
        "spec": spec
    })
}

/// `obj` with the value at the JSON pointer `at` set (objects created on the way).
fn set(mut obj: Value, at: &str, value: Value) -> Value {
    let mut parts: Vec<&str> = at.split('/').skip(1).collect();
    let last = parts.pop().unwrap();
    let mut cur = &mut obj;
    for p in parts {
        cur = cur
            .as_object_mut()
            .unwrap()
            .entry(p)
            .or_insert_with(|| json!({}));
    }
    cur.as_object_mut().unwrap().insert(last.into(), value);
    obj
}

/// `obj` without the key at the JSON pointer `at`.
fn without(mut obj: Value, at: &str) -> Value {
    let (parent, key) = at.rsplit_once('/').unwrap();
    if let Some(map) = obj.pointer_mut(parent).and_then(Value::as_object_mut) {
        map.remove(key);
    }
    obj
}

fn spec(kind: &str, at: &str, value: Value) -> Value {
    set(
        valid(kind, &default_name(kind)),
        &format!("/spec{at}"),
        value,
    )
}

fn default_name(kind: &str) -> String {
    format!("h-{}", kind.to_ascii_lowercase())
}

fn many(n: usize, value: Value) -> Value {
    Value::Object((0..n).map(|i| (format!("K{i}"), value.clone())).collect())
}

fn toleration(t: Value) -> Value {
    spec("InstanceType", "/tolerations", json!([t]))
}

/// (what, object, message substring): refused on create.
fn refused_on_create() -> Vec<(&'static str, Value, &'static str)> {
    let tj = "TrainingJob";
    vec![
        // TrainingJob: durations, counts, sizes, names, inputs, placeholders.
        (
            "the panic repro: a timeout of 99999999999999h",
            spec(tj, "/timeout", json!("99999999999999h")),
            "timeout must be a duration such as",
        ),
        (
            "a timeout above 30 days",
            spec(tj, "/timeout", json!("720h1s")),
            "timeout must be more than 0s and at most 720h (30 days)",
        ),
        (
            "a zero timeout",
            spec(tj, "/timeout", json!("0s")),
            "timeout must be more than 0s",
        ),
        (
            "a timeout of five terms",
            spec(tj, "/timeout", json!("1h1m1s1ms1h")),
            "at most 4 terms",
        ),
        (
            "a timeout with a control character",
            spec(tj, "/timeout", json!("1h\u{7}")),
            "timeout must be a duration",
        ),
        (
            "a TTL above 30 days",
            spec(tj, "/ttlSecondsAfterFinished", json!(2_592_001)),
            "less than or equal to 2592000",
        ),
        (
            "a negative TTL",
            spec(tj, "/ttlSecondsAfterFinished", json!(-5)),
            "greater than or equal to 0",
        ),
        (
            "a shm size above 1Ti",
            spec(tj, "/resources/shmSize", json!("2048g")),
            "shmSize must be more than 0 and at most 1Ti",
        ),
        (
            "a zero shm size",
            spec(tj, "/resources/shmSize", json!("0Gi")),
            "shmSize must be more than 0",
        ),
        (
            "a shm size of 14 digits",
            spec(tj, "/resources/shmSize", json!("99999999999999g")),
            "shmSize must be a size such as",
        ),
        (
            "1001 instances",
            spec(tj, "/resources/instanceCount", json!(1001)),
            "less than or equal to 1000",
        ),
        (
            "a negative instance count",
            spec(tj, "/resources/instanceCount", json!(-1)),
            "greater than or equal to 1",
        ),
        (
            "101 retries",
            spec(tj, "/retryPolicy/maxRetries", json!(101)),
            "less than or equal to 100",
        ),
        (
            "129 processes per instance",
            spec(
                tj,
                "/distribution",
                json!({ "type": "pytorch", "processCountPerInstance": 129 }),
            ),
            "less than or equal to 128",
        ),
        (
            "129 environment variables",
            spec(tj, "/environmentVariables", many(129, json!("v"))),
            "at most 128",
        ),
        (
            "a job name with a dot (its Service and Pod hostnames cannot have one)",
            valid(tj, "train.v1"),
            "because its instance Pods",
        ),
        (
            "a job name starting with a digit (its Service must start with a letter)",
            valid(tj, "1train"),
            "headless Service (<name>, a DNS-1035 label)",
        ),
        (
            "a job name of 53 characters",
            valid(tj, &format!("t{}", "a".repeat(52))),
            "TrainingJob names must be at most 52",
        ),
        (
            "an input name that escapes its folder",
            spec(
                tj,
                "/inputs",
                json!({ "../../etc": { "path": "pvc://data/x" } }),
            ),
            "inputs names must be identifiers",
        ),
        (
            "an output name with a space",
            spec(
                tj,
                "/outputs",
                json!({ "my model": { "path": "pvc://models/x" } }),
            ),
            "outputs names must be identifiers",
        ),
        (
            "a placeholder for an undeclared input",
            spec(
                tj,
                "/command",
                json!("python t.py ${{inputs.missing}} ${{outputs.model}}"),
            ),
            "command may only use ${{inputs.<name>}}",
        ),
        (
            "a placeholder for an output of a job without outputs",
            set(
                without(valid(tj, "h-trainingjob"), "/spec/outputs"),
                "/spec/command",
                json!("echo ${{inputs.data}} ${{outputs.model}}"),
            ),
            "command may only use",
        ),
        (
            "a placeholder with spaces inside the braces",
            spec(tj, "/command", json!("python t.py ${{ inputs.data }}")),
            "no spaces inside the braces",
        ),
        (
            "an input path with a '..' segment",
            spec(tj, "/inputs/data/path", json!("pvc://datasets/../secrets")),
            "'..' segments",
        ),
        (
            "an input path with a control character",
            spec(tj, "/inputs/data/path", json!("pvc://datasets/a\u{1}b")),
            "control characters",
        ),
        (
            "an output claim that is not a DNS name",
            spec(tj, "/outputs/model/path", json!("pvc://Models..x/out")),
            "outputs are written to a PersistentVolumeClaim",
        ),
        (
            "a priority class name with spaces",
            spec(tj, "/priorityClassName", json!("very high")),
            "priorityClassName must be the name of a PriorityClass",
        ),
        // InstanceType: label keys, tolerations, quantities, names.
        (
            "a node selector key with '!'",
            spec("InstanceType", "/nodeSelector", json!({ "pool!": "gpu" })),
            "nodeSelector keys must be label keys",
        ),
        (
            "a node selector value of 64 characters",
            spec(
                "InstanceType",
                "/nodeSelector",
                json!({ "pool": "a".repeat(64) }),
            ),
            "may not be more than 63",
        ),
        (
            "a toleration operator that does not exist",
            toleration(json!({ "key": "gpu", "operator": "Exist" })),
            "toleration operator must be Exists or Equal",
        ),
        (
            "a toleration effect that does not exist",
            toleration(json!({ "key": "gpu", "operator": "Exists", "effect": "NoScheduling" })),
            "toleration effect must be NoSchedule",
        ),
        (
            "a toleration key with spaces",
            toleration(json!({ "key": "gpu pool", "operator": "Exists" })),
            "toleration key must be a label key",
        ),
        (
            "a toleration without a key, operator Equal",
            toleration(json!({ "operator": "Equal", "value": "x" })),
            "a toleration without a key must have operator Exists",
        ),
        (
            "a toleration with Exists and a value",
            toleration(json!({ "key": "gpu", "operator": "Exists", "value": "yes" })),
            "a toleration with operator Exists must not set a value",
        ),
        (
            "tolerationSeconds with NoSchedule",
            toleration(
                json!({ "key": "gpu", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 60 }),
            ),
            "tolerationSeconds applies only to effect NoExecute",
        ),
        (
            "a negative cpu limit",
            spec("InstanceType", "/resources/limits/cpu", json!("-1")),
            "resource values must not be negative",
        ),
        (
            "a memory limit of 2Ei",
            spec("InstanceType", "/resources/limits/memory", json!("2Ei")),
            "at most 1Pi",
        ),
        (
            "a resource name with a space",
            spec("InstanceType", "/resources/limits/my gpu", json!("1")),
            "resource names must be names such as",
        ),
        (
            "an instance type name with a dot (not referable by instanceType)",
            valid("InstanceType", "gpu.large"),
            "because jobs and deployments refer to it by instanceType",
        ),
        // OnlineDeployment and OnlineEndpoint.
        (
            "a negative cpu request on a deployment",
            spec(
                "OnlineDeployment",
                "/resources",
                json!({ "requests": { "cpu": "-500m" } }),
            ),
            "resource values must not be negative",
        ),
        (
            "a model mount path that climbs out",
            spec(
                "OnlineDeployment",
                "/modelMountPath",
                json!("/models/../etc"),
            ),
            "modelMountPath must be an absolute path without '..' segments",
        ),
        (
            "a request timeout above 300 s",
            spec(
                "OnlineDeployment",
                "/requestSettings/requestTimeoutMs",
                json!(300_001),
            ),
            "less than or equal to 300000",
        ),
        (
            "a zero probe period",
            spec("OnlineDeployment", "/livenessProbe/period", json!(0)),
            "greater than or equal to 1",
        ),
        (
            "a target utilisation of 101%",
            spec(
                "OnlineDeployment",
                "/scaleSettings/targetUtilizationPercentage",
                json!(101),
            ),
            "less than or equal to 100",
        ),
        (
            "a deployment name with a dot",
            valid("OnlineDeployment", "blue.v2"),
            "OnlineDeployment names must be 3-32",
        ),
        (
            "a traffic share of 101%",
            spec("OnlineEndpoint", "/traffic", json!({ "blue": 101 })),
            "less than or equal to 100",
        ),
        (
            "a negative traffic share",
            spec(
                "OnlineEndpoint",
                "/traffic",
                json!({ "blue": -100, "green": 200 }),
            ),
            "greater than or equal to 0",
        ),
        (
            "traffic to 21 deployments",
            spec(
                "OnlineEndpoint",
                "/traffic",
                Value::Object((0..21).map(|i| (format!("dep{i:02}"), json!(0))).collect()),
            ),
            "at most 20",
        ),
        // Batch.
        (
            "a run() timeout above a day",
            spec(
                "BatchDeployment",
                "/settings/retrySettings/timeout",
                json!("24h1s"),
            ),
            "retrySettings.timeout must be more than 0s and at most 24h (1 day)",
        ),
        (
            "an error threshold above 100 million",
            spec(
                "BatchDeployment",
                "/settings/errorThreshold",
                json!(100_000_001),
            ),
            "less than or equal to 100000000",
        ),
        (
            "a zero mini-batch size",
            spec("BatchDeployment", "/settings/miniBatchSize", json!(0)),
            "greater than or equal to 1",
        ),
        (
            "scoring code path that climbs out",
            spec(
                "BatchDeployment",
                "/codeConfiguration/code",
                json!("pvc://code/a/../../b"),
            ),
            "'..' segments",
        ),
        (
            "a batch job name with a dot",
            valid("BatchJob", "run.1"),
            "BatchJob names must be at most 52 lowercase letters, digits or '-'",
        ),
        (
            "a batch job override timeout of 99999999999999h",
            spec(
                "BatchJob",
                "/overrides",
                json!({ "timeout": "99999999999999h" }),
            ),
            "overrides.timeout must be a duration",
        ),
        (
            "a batch job override timeout above a day",
            spec("BatchJob", "/overrides", json!({ "timeout": "86401s" })),
            "overrides.timeout must be more than 0s and at most 24h",
        ),
        (
            "a batch input URL with a space",
            spec(
                "BatchJob",
                "/input",
                json!({ "type": "uri_file", "path": "https://example.com/a b.csv" }),
            ),
            "input.path must be a pvc://<claim>/<path> or https:// URI",
        ),
        (
            "an endpoint default output path that climbs out",
            spec(
                "BatchEndpoint",
                "/defaults/outputPath",
                json!("pvc://out/a/../../b"),
            ),
            "'..' segments",
        ),
        // Environment.
        (
            "a pull secret name with an empty label",
            spec("Environment", "/imagePullSecrets", json!(["regcred..x"])),
            "imagePullSecrets entries must be Secret names",
        ),
        (
            "129 environment variables on an environment",
            spec(
                "Environment",
                "/environmentVariables",
                many(129, json!("v")),
            ),
            "at most 128",
        ),
    ]
}

/// (what, original, change, message substring): the original is accepted, the change refused.
fn refused_on_update() -> Vec<(&'static str, Value, Value, &'static str)> {
    let tj = valid("TrainingJob", "u-train");
    let it = valid("InstanceType", "u-it");
    let od = valid("OnlineDeployment", "u-dep");
    let oe = valid("OnlineEndpoint", "u-endpoint");
    let bd = valid("BatchDeployment", "u-bdep");
    let be = valid("BatchEndpoint", "u-bendpoint");
    let bj = valid("BatchJob", "u-bjob");
    let env = valid("Environment", "u-env");
    vec![
        (
            "a running job's timeout raised past 30 days",
            tj.clone(),
            set(tj.clone(), "/spec/timeout", json!("99999h")),
            "at most 720h",
        ),
        (
            "a job's timeout set to the panic repro",
            tj.clone(),
            set(tj.clone(), "/spec/timeout", json!("99999999999999h")),
            "timeout must be a duration",
        ),
        (
            "a job's TTL raised past 30 days",
            tj.clone(),
            set(tj.clone(), "/spec/ttlSecondsAfterFinished", json!(i32::MAX)),
            "less than or equal to 2592000",
        ),
        (
            "a deployment scaled to 5000",
            od.clone(),
            set(od.clone(), "/spec/instanceCount", json!(5000)),
            "less than or equal to 1000",
        ),
        (
            "a toleration operator broken later",
            it.clone(),
            set(
                it.clone(),
                "/spec/tolerations",
                json!([{ "key": "a", "operator": "In" }]),
            ),
            "toleration operator must be Exists or Equal",
        ),
        (
            "a node selector key broken later",
            it.clone(),
            set(it.clone(), "/spec/nodeSelector", json!({ "-bad": "x" })),
            "nodeSelector keys must be label keys",
        ),
        (
            "an endpoint's traffic raised to 150",
            oe.clone(),
            set(oe.clone(), "/spec/traffic", json!({ "blue": 150 })),
            "less than or equal to 100",
        ),
        (
            "a batch deployment's run() timeout set to zero",
            bd.clone(),
            set(
                bd.clone(),
                "/spec/settings/retrySettings/timeout",
                json!("0ms"),
            ),
            "retrySettings.timeout must be more than 0s",
        ),
        (
            "a batch endpoint's default output path with a control character",
            be.clone(),
            set(
                be.clone(),
                "/spec/defaults/outputPath",
                json!("pvc://out/\u{1b}[31m"),
            ),
            "control characters",
        ),
        (
            "a batch job un-canceled",
            set(bj.clone(), "/spec/cancel", json!(true)),
            set(bj.clone(), "/spec/cancel", json!(false)),
            "cancel cannot be undone",
        ),
        (
            "an environment's image changed without a new version",
            env.clone(),
            set(env.clone(), "/spec/image", json!("python:3.13")),
            "image can only change together with version",
        ),
    ]
}

/// Objects at the exact bounds, which must be accepted.
fn accepted_at_the_bounds() -> Vec<(&'static str, Value)> {
    let tj = |name: &str| valid("TrainingJob", name);
    vec![
        (
            "a 720h timeout",
            set(tj("b-timeout"), "/spec/timeout", json!("720h")),
        ),
        (
            "a 4-term timeout",
            set(tj("b-terms"), "/spec/timeout", json!("1h1m1s1ms")),
        ),
        (
            "a 30-day TTL",
            set(
                tj("b-ttl"),
                "/spec/ttlSecondsAfterFinished",
                json!(2_592_000),
            ),
        ),
        (
            "a 1Ti shm size",
            set(tj("b-shm"), "/spec/resources/shmSize", json!("1Ti")),
        ),
        (
            "a 1024g shm size",
            set(tj("b-shm-g"), "/spec/resources/shmSize", json!("1024g")),
        ),
        (
            "1000 instances",
            set(tj("b-count"), "/spec/resources/instanceCount", json!(1000)),
        ),
        (
            "a 52-character job name",
            tj(&format!("b{}", "a".repeat(51))),
        ),
        (
            "identifier input names",
            set(
                set(
                    tj("b-io"),
                    "/spec/inputs",
                    json!({ "_data_2": { "path": "pvc://d/x" }, "data": { "path": "pvc://d/y" } }),
                ),
                "/spec/command",
                json!("cat ${{inputs._data_2}} ${{inputs.data}} > ${{outputs.model}}"),
            ),
        ),
        (
            "a 24h run() timeout and the largest error threshold",
            set(
                set(
                    valid("BatchDeployment", "b-bdep"),
                    "/spec/settings/retrySettings/timeout",
                    json!("24h"),
                ),
                "/spec/settings/errorThreshold",
                json!(100_000_000),
            ),
        ),
        (
            "a 52-character batch job name and an 86400s override",
            set(
                valid("BatchJob", &format!("b{}", "j".repeat(51))),
                "/spec/overrides",
                json!({ "timeout": "86400s" }),
            ),
        ),
        (
            "tolerations and a node selector at their limits",
            set(
                set(
                    set(
                        valid("InstanceType", "b-gpu"),
                        "/spec/tolerations",
                        json!([
                            { "key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule" },
                            { "operator": "Exists" },
                            { "key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 31_536_000 },
                            { "key": "pool", "value": "a".repeat(63), "effect": "PreferNoSchedule" }
                        ]),
                    ),
                    "/spec/nodeSelector",
                    json!({ "kubernetes.io/arch": "amd64", "pool": "a".repeat(63) }),
                ),
                "/spec/resources/limits",
                json!({ "cpu": "1Pi", "memory": "0", "nvidia.com/gpu": "8" }),
            ),
        ),
        (
            "a zero cpu request",
            set(
                valid("OnlineDeployment", "b-dep"),
                "/spec/resources",
                json!({ "requests": { "cpu": "0" } }),
            ),
        ),
    ]
}

fn refusal(result: Result<DynamicObject, kube::Error>) -> Result<String, String> {
    match result {
        Err(kube::Error::Api(s)) if s.code == 422 || s.code == 400 => Ok(s.message),
        Err(e) => Err(format!("failed otherwise: {e}")),
        Ok(_) => Err("was accepted".into()),
    }
}

async fn create(client: &Client, ns: &str, obj: &Value) -> Result<DynamicObject, kube::Error> {
    let kind = obj["kind"].as_str().unwrap();
    let o: DynamicObject = serde_json::from_value(obj.clone()).unwrap();
    api(client, ns, kind)
        .create(&PostParams::default(), &o)
        .await
}

async fn apply(client: &Client, ns: &str, obj: &Value) -> Result<DynamicObject, kube::Error> {
    let kind = obj["kind"].as_str().unwrap();
    let name = obj["metadata"]["name"].as_str().unwrap();
    api(client, ns, kind)
        .patch(
            name,
            &PatchParams::apply("mlcompute-hostile-test").force(),
            &Patch::Apply(obj),
        )
        .await
}

/// Cluster-scoped test objects get the namespace's name as a suffix, so parallel runs do not meet.
fn scoped(obj: &Value, ns: &str) -> Value {
    if obj["kind"] == "InstanceType" {
        let name = obj["metadata"]["name"].as_str().unwrap();
        set(
            obj.clone(),
            "/metadata/name",
            json!(format!("{name}-{}", &ns[ns.len() - 8..])),
        )
    } else {
        obj.clone()
    }
}

async fn delete_cluster_scoped(client: &Client, obj: &Value) {
    if obj["kind"] == "InstanceType" {
        let name = obj["metadata"]["name"].as_str().unwrap();
        let _ = api(client, "", "InstanceType")
            .delete(name, &DeleteParams::default())
            .await;
    }
}

#[test]
fn the_hostile_table_is_large_and_covers_every_kind_on_create_and_update() {
    let create = refused_on_create();
    let update = refused_on_update();
    assert!(
        create.len() + update.len() >= 40,
        "{}",
        create.len() + update.len()
    );
    for kind in KINDS {
        assert!(
            create.iter().any(|(_, o, _)| o["kind"] == kind),
            "no create case for {kind}"
        );
        assert!(
            update.iter().any(|(_, o, _, _)| o["kind"] == kind) || kind == "Environment",
            "no update case for {kind}"
        );
    }
    assert!(update.iter().any(|(_, o, _, _)| o["kind"] == "Environment"));
}

// Multi-threaded: TestNamespace's Drop blocks one thread while the client's worker task must still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn hostile_objects_are_refused_with_a_human_message() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "hostile-create").await;
    let mut failures = Vec::new();
    let cases = refused_on_create();
    for (what, obj, expected) in &cases {
        let obj = scoped(obj, ns.name());
        match refusal(create(&client, ns.name(), &obj).await) {
            Ok(msg) if msg.contains(expected) => {}
            Ok(msg) => failures.push(format!("{what}: {msg:?} lacks {expected:?}")),
            Err(e) => {
                delete_cluster_scoped(&client, &obj).await;
                failures.push(format!("{what}: {e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

// Multi-threaded: TestNamespace's Drop blocks one thread while the client's worker task must still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn hostile_updates_are_refused_with_a_human_message() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "hostile-update").await;
    let mut failures = Vec::new();
    for (i, (what, original, change, expected)) in refused_on_update().into_iter().enumerate() {
        let name = format!("{}-{i}", original["metadata"]["name"].as_str().unwrap());
        let original = scoped(&set(original, "/metadata/name", json!(name)), ns.name());
        let change = set(
            change,
            "/metadata/name",
            original["metadata"]["name"].clone(),
        );
        if let Err(e) = create(&client, ns.name(), &original).await {
            failures.push(format!("{what}: original refused: {e}"));
            continue;
        }
        match refusal(apply(&client, ns.name(), &change).await) {
            Ok(msg) if msg.contains(expected) => {}
            Ok(msg) => failures.push(format!("{what}: {msg:?} lacks {expected:?}")),
            Err(e) => failures.push(format!("{what}: {e}")),
        }
        delete_cluster_scoped(&client, &original).await;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// Multi-threaded: TestNamespace's Drop blocks one thread while the client's worker task must still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn the_largest_valid_values_are_accepted() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "hostile-bounds").await;
    let mut failures = Vec::new();
    for (what, obj) in accepted_at_the_bounds() {
        let obj = scoped(&obj, ns.name());
        match create(&client, ns.name(), &obj).await {
            Ok(_) => delete_cluster_scoped(&client, &obj).await,
            Err(e) => failures.push(format!("{what}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// 2.4 → 3 → 2.4 with a new image is refused once the operator recorded 2.4; back to 2.4 with the
/// recorded image is fine, and the operator's own status writes keep passing the root rule.
// Multi-threaded: TestNamespace's Drop blocks one thread while the client's worker task must still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn a_pinned_environment_version_never_gets_another_image() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "hostile-env").await;
    let _operator = Operator::start(ns.name());
    let envs: Api<Environment> = ns.api();
    let env = |version: &str, image: &str| {
        set(
            set(
                valid("Environment", "torch"),
                "/spec/version",
                json!(version),
            ),
            "/spec/image",
            json!(image),
        )
    };
    let recorded = |want: &'static str| {
        move |e: Option<&Environment>| {
            e.and_then(|e| e.status.as_ref())
                .is_some_and(|s| s.versions.iter().any(|v| v.version == want))
        }
    };
    create(&client, ns.name(), &env("2.4", "pytorch:2.4"))
        .await
        .unwrap();
    support::wait_for(&envs, "torch", Duration::from_secs(20), recorded("2.4")).await;
    apply(&client, ns.name(), &env("3", "pytorch:3.0"))
        .await
        .expect("a new version with a new image is accepted");
    support::wait_for(&envs, "torch", Duration::from_secs(20), recorded("3")).await;

    let msg = refusal(apply(&client, ns.name(), &env("2.4", "pytorch:2.4-patched")).await)
        .expect("re-using 2.4 with another image must be refused");
    assert!(
        msg.contains("spec.version is already recorded in status.versions with another image"),
        "{msg}"
    );
    // Going back to 2.4 with its recorded image is allowed, and the operator still writes status.
    apply(&client, ns.name(), &env("2.4", "pytorch:2.4"))
        .await
        .expect("2.4 with its own image is accepted");
    let back = support::wait_for(
        &envs,
        "torch",
        Duration::from_secs(20),
        |e: Option<&Environment>| {
            e.and_then(|e| e.status.as_ref()).is_some_and(|s| {
                s.observed_generation.is_some()
                    && s.conditions.iter().any(|c| {
                        c.type_ == "Ready" && c.status == "True" && c.message.contains("2.4")
                    })
            })
        },
    )
    .await;
    let held = back.held("2.4").unwrap();
    assert_eq!(held.image, "pytorch:2.4");
}
