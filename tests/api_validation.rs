//! The API against a real API server: the examples apply, invalid objects are rejected with the
//! message a user needs, omitted fields come back with Azure ML's defaults, and kubectl shows the
//! printer columns, the category and the field descriptions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{path::Path, process::Command};

use kube::{
    Api, Client, Resource,
    api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams},
};
use mlcompute::api::{
    BatchDeployment, BatchEndpoint, BatchJob, Environment, InstanceType, OnlineDeployment,
    OnlineEndpoint, TrainingJob,
};
use serde_json::{Value, json};
use support::TestNamespace;

const MANAGER: &str = "mlcompute-api-test";

fn api_resource(kind: &str) -> ApiResource {
    match kind {
        "Environment" => ApiResource::erase::<Environment>(&()),
        "InstanceType" => ApiResource::erase::<InstanceType>(&()),
        "TrainingJob" => ApiResource::erase::<TrainingJob>(&()),
        "OnlineEndpoint" => ApiResource::erase::<OnlineEndpoint>(&()),
        "OnlineDeployment" => ApiResource::erase::<OnlineDeployment>(&()),
        "BatchEndpoint" => ApiResource::erase::<BatchEndpoint>(&()),
        "BatchDeployment" => ApiResource::erase::<BatchDeployment>(&()),
        "BatchJob" => ApiResource::erase::<BatchJob>(&()),
        other => panic!("not an mlcompute kind: {other}"),
    }
}

/// The API for an object's kind: cluster-wide for InstanceType, else the test namespace.
fn api_for(client: &Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    let ar = api_resource(kind);
    if kind == "InstanceType" {
        Api::all_with(client.clone(), &ar)
    } else {
        Api::namespaced_with(client.clone(), ns, &ar)
    }
}

fn kind_of(obj: &Value) -> &str {
    obj["kind"].as_str().unwrap()
}

fn name_of(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap()
}

async fn create(client: &Client, ns: &str, obj: &Value) -> Result<DynamicObject, kube::Error> {
    let dynamic: DynamicObject = serde_json::from_value(obj.clone()).unwrap();
    api_for(client, ns, kind_of(obj))
        .create(&PostParams::default(), &dynamic)
        .await
}

async fn apply(client: &Client, ns: &str, obj: &Value) -> Result<DynamicObject, kube::Error> {
    api_for(client, ns, kind_of(obj))
        .patch(
            name_of(obj),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await
}

/// Sets the value at a JSON pointer, creating objects along the way; `Value::Null` removes the key.
fn with(mut obj: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let mut cur = &mut obj;
    for part in parent.split('/').skip(1) {
        cur = cur
            .as_object_mut()
            .unwrap()
            .entry(part)
            .or_insert_with(|| json!({}));
    }
    let map = cur.as_object_mut().unwrap();
    if value.is_null() {
        map.remove(key);
    } else {
        map.insert(key.to_string(), value);
    }
    obj
}

fn obj(kind: &str, name: &str, spec: Value) -> Value {
    json!({ "apiVersion": "mlcompute.io/v1alpha1", "kind": kind, "metadata": { "name": name }, "spec": spec })
}

fn endpoint() -> Value {
    obj(
        "OnlineEndpoint",
        "fraud",
        json!({ "traffic": { "blue": 100, "green": 0 } }),
    )
}

fn deployment() -> Value {
    obj(
        "OnlineDeployment",
        "blue",
        json!({ "endpointName": "fraud", "model": "pvc://models/fraud/7", "environment": "sklearn:1" }),
    )
}

fn job() -> Value {
    obj(
        "TrainingJob",
        "train",
        json!({ "command": "python train.py", "environment": "pytorch@latest" }),
    )
}

fn instance_type(name: &str) -> Value {
    obj(
        "InstanceType",
        name,
        json!({ "resources": { "limits": { "cpu": "2", "memory": "4Gi" } } }),
    )
}

fn environment() -> Value {
    obj(
        "Environment",
        "torch",
        json!({ "image": "pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime" }),
    )
}

fn batch_endpoint() -> Value {
    obj(
        "BatchEndpoint",
        "mnist",
        json!({ "defaults": { "deploymentName": "mnist-torch" } }),
    )
}

fn batch_deployment() -> Value {
    obj(
        "BatchDeployment",
        "mnist-torch",
        json!({
            "endpointName": "mnist",
            "model": "pvc://models/mnist",
            "codeConfiguration": { "code": "configmap://mnist-code", "scoringScript": "score.py" },
            "environment": "torch"
        }),
    )
}

fn batch_job() -> Value {
    obj(
        "BatchJob",
        "mnist-run",
        json!({ "endpointName": "mnist", "input": { "path": "pvc://datasets/mnist" } }),
    )
}

/// Objects the API server must refuse on create, with a substring of the message it must give.
fn invalid_on_create() -> Vec<(&'static str, Value, &'static str)> {
    vec![
        // OnlineEndpoint: traffic and mirroring.
        (
            "traffic above 100",
            with(endpoint(), "/spec/traffic", json!({ "blue": 101 })),
            "less than or equal to 100",
        ),
        (
            "negative traffic",
            with(
                endpoint(),
                "/spec/traffic",
                json!({ "blue": -10, "green": 110 }),
            ),
            "greater than or equal to 0",
        ),
        (
            "traffic summing to 90",
            with(
                endpoint(),
                "/spec/traffic",
                json!({ "blue": 60, "green": 30 }),
            ),
            "traffic percentages must add up to 0 or 100",
        ),
        (
            "traffic to an invalid deployment name",
            with(endpoint(), "/spec/traffic", json!({ "Blue_1": 100 })),
            "deployment names must be 3-32",
        ),
        (
            "mirror to two deployments",
            with(
                endpoint(),
                "/spec/mirrorTraffic",
                json!({ "green": 10, "red": 10 }),
            ),
            "at most 1",
        ),
        (
            "mirror above 50 %",
            with(endpoint(), "/spec/mirrorTraffic", json!({ "green": 60 })),
            "less than or equal to 50",
        ),
        (
            "mirror to a live deployment",
            with(endpoint(), "/spec/mirrorTraffic", json!({ "blue": 10 })),
            "cannot receive both live traffic and mirrored traffic",
        ),
        (
            "endpoint name too short",
            with(endpoint(), "/metadata/name", json!("ab")),
            "OnlineEndpoint names must be 3-32",
        ),
        (
            "unsupported auth mode",
            with(endpoint(), "/spec/authMode", json!("aad_token")),
            "Unsupported value",
        ),
        // OnlineDeployment.
        (
            "zero instances",
            with(deployment(), "/spec/instanceCount", json!(0)),
            "greater than or equal to 1",
        ),
        (
            "min above max instances",
            with(
                deployment(),
                "/spec/scaleSettings",
                json!({ "type": "target_utilization", "minInstances": 3, "maxInstances": 2 }),
            ),
            "minInstances must be less than or equal to maxInstances",
        ),
        (
            "model with an unsupported scheme",
            with(
                deployment(),
                "/spec/model",
                json!("azureml://models/fraud/7"),
            ),
            "model must be a pvc://<claim>/<path> or https:// URI",
        ),
        (
            "model over plain http",
            with(
                deployment(),
                "/spec/model",
                json!("http://models.example.com/fraud.onnx"),
            ),
            "model must be a pvc://<claim>/<path> or https:// URI",
        ),
        (
            "endpointName not a DNS label",
            with(deployment(), "/spec/endpointName", json!("Fraud_EP")),
            "endpointName must be 3-32",
        ),
        (
            "both environment and image",
            with(deployment(), "/spec/image", json!("nginx")),
            "set exactly one of environment",
        ),
        (
            "request timeout above 300 s",
            with(
                deployment(),
                "/spec/requestSettings",
                json!({ "requestTimeoutMs": 400000 }),
            ),
            "less than or equal to 300000",
        ),
        (
            "probe period 0",
            with(deployment(), "/spec/livenessProbe", json!({ "period": 0 })),
            "greater than or equal to 1",
        ),
        (
            "malformed environment reference",
            with(deployment(), "/spec/environment", json!("sklearn:")),
            "environment must be <name>, <name>:<version> or <name>@latest",
        ),
        (
            "code from an unsupported scheme",
            with(
                deployment(),
                "/spec/codeConfiguration",
                json!({ "code": "s3://bucket/code", "scoringScript": "score.py" }),
            ),
            "codeConfiguration.code must be a configmap://<name> or pvc://<claim>/<path> URI",
        ),
        (
            "scoring script outside the code folder",
            with(
                deployment(),
                "/spec/codeConfiguration",
                json!({ "code": "configmap://c", "scoringScript": "../score.py" }),
            ),
            "scoringScript must be a relative path",
        ),
        (
            "instance type not a DNS label",
            with(deployment(), "/spec/instanceType", json!("GPU_1")),
            "instanceType must be a DNS label",
        ),
        // TrainingJob: distribution.
        (
            "parameter servers with pytorch",
            with(
                job(),
                "/spec/distribution",
                json!({ "type": "pytorch", "parameterServerCount": 1 }),
            ),
            "workerCount and parameterServerCount apply only to distribution type tensorflow",
        ),
        (
            "processes per instance with tensorflow",
            with(
                job(),
                "/spec/distribution",
                json!({ "type": "tensorflow", "processCountPerInstance": 2 }),
            ),
            "processCountPerInstance applies only to distribution types pytorch and mpi",
        ),
        (
            "mpi without processes per instance",
            with(job(), "/spec/distribution", json!({ "type": "mpi" })),
            "distribution type mpi requires processCountPerInstance",
        ),
        (
            "launcher with pytorch",
            with(
                job(),
                "/spec/distribution",
                json!({ "type": "pytorch", "launcher": "separate" }),
            ),
            "launcher applies only to distribution type mpi",
        ),
        (
            "tensorflow pods not matching instances",
            with(
                with(
                    job(),
                    "/spec/distribution",
                    json!({ "type": "tensorflow", "workerCount": 2, "parameterServerCount": 1 }),
                ),
                "/spec/resources",
                json!({ "instanceCount": 2 }),
            ),
            "workerCount + parameterServerCount must equal resources.instanceCount",
        ),
        (
            "unknown distribution type",
            with(job(), "/spec/distribution", json!({ "type": "ray" })),
            "Unsupported value",
        ),
        // TrainingJob: the rest.
        (
            "timeout not a duration",
            with(job(), "/spec/timeout", json!("2 hours")),
            "timeout must be a duration",
        ),
        (
            "shm size in the wrong unit",
            with(job(), "/spec/resources", json!({ "shmSize": "2gb" })),
            "shmSize must be a size such as 2g",
        ),
        (
            "zero job instances",
            with(job(), "/spec/resources", json!({ "instanceCount": 0 })),
            "greater than or equal to 1",
        ),
        (
            "input with an unsupported scheme",
            with(
                job(),
                "/spec/inputs",
                json!({ "data": { "path": "s3://bucket/data" } }),
            ),
            "path must be a pvc://<claim>/<path> or https:// URI",
        ),
        (
            "output over https",
            with(
                job(),
                "/spec/outputs",
                json!({ "model": { "path": "https://example.com/upload" } }),
            ),
            "outputs are written to a PersistentVolumeClaim",
        ),
        (
            "https input mounted",
            with(
                job(),
                "/spec/inputs",
                json!({ "data": { "path": "https://example.com/d.csv", "mode": "ro_mount" } }),
            ),
            "only pvc:// inputs can be mounted",
        ),
        (
            "literal input without a value",
            with(
                job(),
                "/spec/inputs",
                json!({ "lr": { "type": "literal" } }),
            ),
            "a literal input needs value",
        ),
        (
            "queue name not a DNS label",
            with(job(), "/spec/queueName", json!("GPU queue")),
            "queueName must be a DNS label",
        ),
        (
            "neither environment nor image",
            with(job(), "/spec/environment", Value::Null),
            "set exactly one of environment",
        ),
        (
            "exit code both retried and permanent",
            with(
                job(),
                "/spec/retryPolicy",
                json!({ "retryOnExitCodes": [137], "failOnExitCodes": [137] }),
            ),
            "cannot be both in retryOnExitCodes and failOnExitCodes",
        ),
        (
            "exit code out of range",
            with(
                job(),
                "/spec/retryPolicy",
                json!({ "failOnExitCodes": [300] }),
            ),
            "less than or equal to 255",
        ),
        (
            "code from an unsupported scheme (job)",
            with(job(), "/spec/code", json!("git://github.com/x/y")),
            "code must be a configmap://<name> or pvc://<claim>/<path> URI",
        ),
        // InstanceType.
        (
            "limits without memory",
            with(
                instance_type("it-no-mem"),
                "/spec/resources",
                json!({ "limits": { "cpu": "2" } }),
            ),
            "resources.limits must set cpu and memory",
        ),
        (
            "GPU in requests",
            with(
                instance_type("it-gpu-req"),
                "/spec/resources/requests",
                json!({ "nvidia.com/gpu": 1 }),
            ),
            "nvidia.com/gpu goes in resources.limits only",
        ),
        (
            "half a GPU",
            with(
                instance_type("it-half-gpu"),
                "/spec/resources/limits",
                json!({ "cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "0.5" }),
            ),
            "whole number of GPUs",
        ),
        (
            "request above limit",
            with(
                instance_type("it-req-gt-lim"),
                "/spec/resources/requests",
                json!({ "cpu": "4" }),
            ),
            "each request must be at most the matching limit",
        ),
        (
            "malformed quantity",
            with(
                instance_type("it-bad-qty"),
                "/spec/resources/limits/memory",
                json!("four gigs"),
            ),
            "Kubernetes quantities",
        ),
        // Environment.
        (
            "route path without a slash",
            with(
                environment(),
                "/spec/inferenceConfig",
                json!({ "livenessRoute": { "port": 8501, "path": "v1" }, "readinessRoute": { "port": 8501, "path": "/" }, "scoringRoute": { "port": 8501, "path": "/score" } }),
            ),
            "route path must start with '/'",
        ),
        (
            "route port 0",
            with(
                environment(),
                "/spec/inferenceConfig",
                json!({ "livenessRoute": { "port": 0, "path": "/" }, "readinessRoute": { "port": 8501, "path": "/" }, "scoringRoute": { "port": 8501, "path": "/score" } }),
            ),
            "greater than or equal to 1",
        ),
        (
            "malformed version",
            with(environment(), "/spec/version", json!("v 1")),
            "version must be letters, digits",
        ),
        // Batch.
        (
            "mini-batch of 0 files",
            with(
                batch_deployment(),
                "/spec/settings",
                json!({ "miniBatchSize": 0 }),
            ),
            "greater than or equal to 1",
        ),
        (
            "unknown output action",
            with(
                batch_deployment(),
                "/spec/settings",
                json!({ "outputAction": "append" }),
            ),
            "Unsupported value",
        ),
        (
            "output file in a subfolder",
            with(
                batch_deployment(),
                "/spec/settings",
                json!({ "outputFileName": "out/p.csv" }),
            ),
            "outputFileName must be a plain file name",
        ),
        (
            "retry timeout without unit",
            with(
                batch_deployment(),
                "/spec/settings",
                json!({ "retrySettings": { "timeout": "30" } }),
            ),
            "retrySettings.timeout must be a duration",
        ),
        (
            "error threshold below -1",
            with(
                batch_deployment(),
                "/spec/settings",
                json!({ "errorThreshold": -2 }),
            ),
            "greater than or equal to -1",
        ),
        (
            "unknown logging level",
            with(
                batch_deployment(),
                "/spec/settings",
                json!({ "loggingLevel": "verbose" }),
            ),
            "Unsupported value",
        ),
        (
            "batch endpoint default deployment not a name",
            with(
                batch_endpoint(),
                "/spec/defaults/deploymentName",
                json!("MNIST"),
            ),
            "defaults.deploymentName must be 3-32",
        ),
        (
            "batch endpoint default output over https",
            with(
                batch_endpoint(),
                "/spec/defaults/outputPath",
                json!("https://example.com/out"),
            ),
            "outputs are written to a PersistentVolumeClaim",
        ),
        (
            "batch input from a local file",
            with(batch_job(), "/spec/input/path", json!("file:///data")),
            "input.path must be a pvc://<claim>/<path> or https:// URI",
        ),
        (
            "batch output over https",
            with(
                batch_job(),
                "/spec/outputPath",
                json!("https://example.com/out"),
            ),
            "outputs are written to a PersistentVolumeClaim",
        ),
        (
            "environment variable starting with a digit",
            with(
                job(),
                "/spec/environmentVariables",
                json!({ "1_THREADS": "4" }),
            ),
            "environment variable names must be letters",
        ),
        (
            "https folder input",
            with(
                job(),
                "/spec/inputs",
                json!({ "data": { "path": "https://example.com/data/" } }),
            ),
            "an https:// input must be a single file",
        ),
        (
            "batch over an https folder",
            with(
                batch_job(),
                "/spec/input/path",
                json!("https://example.com/images/"),
            ),
            "an https:// input must be a single file",
        ),
        (
            "inline image with a space",
            with(
                with(job(), "/spec/environment", Value::Null),
                "/spec/image",
                json!("python 3.12"),
            ),
            "image must be a container image reference without spaces",
        ),
        (
            "pull secret that is not a Secret name",
            with(
                environment(),
                "/spec/imagePullSecrets",
                json!(["ACR Creds"]),
            ),
            "imagePullSecrets entries must be Secret names",
        ),
        (
            "batch job override of 0 instances",
            with(
                batch_job(),
                "/spec/overrides",
                json!({ "instanceCount": 0 }),
            ),
            "greater than or equal to 1",
        ),
    ]
}

/// Changes the API server must refuse on update: (what, valid original, invalid change, message).
fn invalid_on_update() -> Vec<(&'static str, Value, Value, &'static str)> {
    let tj = || with(job(), "/spec/resources", json!({ "instanceCount": 2 }));
    vec![
        (
            "changing a job's command",
            tj(),
            with(tj(), "/spec/command", json!("python other.py")),
            "command is immutable",
        ),
        (
            "changing a job's environment",
            tj(),
            with(tj(), "/spec/environment", json!("pytorch:2")),
            "environment is immutable",
        ),
        (
            "changing a job's instance count",
            tj(),
            with(tj(), "/spec/resources/instanceCount", json!(4)),
            "resources.instanceCount is immutable",
        ),
        (
            "setting a job's instance type",
            tj(),
            with(tj(), "/spec/resources/instanceType", json!("gpu-1")),
            "resources.instanceType is immutable",
        ),
        (
            "adding a distribution to a job",
            tj(),
            with(tj(), "/spec/distribution", json!({ "type": "pytorch" })),
            "distribution is immutable",
        ),
        (
            "undoing cancel",
            with(tj(), "/spec/cancel", json!(true)),
            with(tj(), "/spec/cancel", json!(false)),
            "cancel cannot be undone",
        ),
        (
            "moving a deployment to another endpoint",
            deployment(),
            with(deployment(), "/spec/endpointName", json!("other")),
            "endpointName is immutable",
        ),
        (
            "changing an environment's image without its version",
            environment(),
            with(environment(), "/spec/image", json!("pytorch/pytorch:2.5.0")),
            "image can only change together with version",
        ),
        (
            "changing a batch job's input",
            batch_job(),
            with(
                batch_job(),
                "/spec/input/path",
                json!("pvc://datasets/other"),
            ),
            "input is immutable",
        ),
        (
            "adding overrides to a batch job",
            batch_job(),
            with(
                batch_job(),
                "/spec/overrides",
                json!({ "miniBatchSize": 5 }),
            ),
            "overrides is immutable",
        ),
    ]
}

fn rejection(result: Result<DynamicObject, kube::Error>) -> Result<String, String> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 422 => Ok(status.message),
        Err(e) => Err(format!(
            "failed with something other than a validation error: {e}"
        )),
        Ok(_) => Err("was accepted".into()),
    }
}

// Multi-threaded: TestNamespace's Drop blocks one thread while the client's worker task must still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn invalid_objects_are_rejected_with_a_clear_message() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "api-invalid").await;
    let cases = invalid_on_create();
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for (what, obj, expected) in &cases {
        match rejection(create(&client, ns.name(), obj).await) {
            Ok(msg) if msg.contains(expected) => {}
            Ok(msg) => failures.push(format!("{what}: message {msg:?} lacks {expected:?}")),
            Err(e) => failures.push(format!("{what}: {e}")),
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
async fn immutable_fields_cannot_change() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "api-immutable").await;
    let mut failures = Vec::new();
    for (i, (what, original, change, expected)) in invalid_on_update().into_iter().enumerate() {
        // A fresh name per case, so cases do not see each other's objects.
        let name = format!("{}-{i}", name_of(&original));
        let original = with(original, "/metadata/name", json!(name));
        let change = with(change, "/metadata/name", json!(name));
        create(&client, ns.name(), &original)
            .await
            .unwrap_or_else(|e| panic!("{what}: original rejected: {e}"));
        match rejection(apply(&client, ns.name(), &change).await) {
            Ok(msg) if msg.contains(expected) => {}
            Ok(msg) => failures.push(format!("{what}: message {msg:?} lacks {expected:?}")),
            Err(e) => failures.push(format!("{what}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Fields outside the immutable set still change: a job can be canceled, suspended and resumed.
    let tj = with(job(), "/metadata/name", json!("mutable"));
    create(&client, ns.name(), &tj).await.unwrap();
    apply(
        &client,
        ns.name(),
        &with(tj.clone(), "/spec/suspend", json!(true)),
    )
    .await
    .unwrap();
    apply(&client, ns.name(), &with(tj, "/spec/cancel", json!(true)))
        .await
        .unwrap();
}

// Multi-threaded: TestNamespace's Drop blocks one thread while the client's worker task must still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn omitted_fields_read_back_with_azure_ml_defaults() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "api-defaults").await;

    create(&client, ns.name(), &deployment()).await.unwrap();
    let od = ns.api::<OnlineDeployment>().get("blue").await.unwrap().spec;
    assert_eq!(od.instance_count, 1);
    assert_eq!(
        (
            od.request_settings.request_timeout_ms,
            od.request_settings.max_concurrent_requests_per_instance,
            od.request_settings.max_queue_wait_ms
        ),
        (5000, 1, 500)
    );
    for probe in [&od.liveness_probe, &od.readiness_probe] {
        assert_eq!(
            (
                probe.initial_delay,
                probe.period,
                probe.timeout,
                probe.success_threshold,
                probe.failure_threshold
            ),
            (10, 10, 2, 1, 30)
        );
    }
    assert_eq!(
        (
            od.scale_settings.min_instances,
            od.scale_settings.max_instances,
            od.scale_settings.target_utilization_percentage
        ),
        (1, 1, 70)
    );

    create(&client, ns.name(), &batch_deployment())
        .await
        .unwrap();
    let s = ns
        .api::<BatchDeployment>()
        .get("mnist-torch")
        .await
        .unwrap()
        .spec
        .settings;
    assert_eq!(
        (
            s.mini_batch_size,
            s.max_concurrency_per_instance,
            s.error_threshold
        ),
        (10, 1, -1)
    );
    assert_eq!(
        s.output_action,
        mlcompute::api::batch_deployment::OutputAction::AppendRow
    );
    assert_eq!(s.output_file_name, "predictions.csv");
    assert_eq!(
        (
            s.retry_settings.max_retries,
            s.retry_settings.timeout.as_str()
        ),
        (3, "30s")
    );
    assert_eq!(
        s.logging_level,
        mlcompute::api::batch_deployment::LoggingLevel::Info
    );

    create(&client, ns.name(), &job()).await.unwrap();
    let tj = ns.api::<TrainingJob>().get("train").await.unwrap().spec;
    assert_eq!(
        (tj.resources.instance_count, tj.resources.shm_size.as_str()),
        (1, "2g")
    );
    assert_eq!(tj.retry_policy.max_retries, 0);
    assert!(!tj.suspend && !tj.cancel);

    create(
        &client,
        ns.name(),
        &obj("OnlineEndpoint", "bare", json!({})),
    )
    .await
    .unwrap();
    let oe = ns.api::<OnlineEndpoint>().get("bare").await.unwrap().spec;
    assert_eq!(oe.auth_mode, mlcompute::api::online_endpoint::AuthMode::Key);
    assert!(oe.traffic.is_empty() && oe.mirror_traffic.is_empty());

    create(&client, ns.name(), &environment()).await.unwrap();
    assert_eq!(
        ns.api::<Environment>()
            .get("torch")
            .await
            .unwrap()
            .spec
            .version,
        "1"
    );
}

fn kubectl() -> String {
    std::env::var("MLC_KUBECTL").unwrap_or_else(|_| {
        format!(
            "{}/.cache/mlcompute/k8s-v1.36.3/kubectl",
            std::env::var("HOME").unwrap()
        )
    })
}

fn run_kubectl(args: &[&str]) -> String {
    let out = Command::new(kubectl())
        .arg("--kubeconfig")
        .arg(support::kubeconfig_path())
        .args(args)
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every mlcompute document of every file in `examples/`.
fn example_objects() -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut objects = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    for path in paths
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
    {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc).unwrap();
            if value["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("mlcompute.io/"))
            {
                assert!(
                    value["metadata"].get("namespace").is_none(),
                    "{} hardcodes a namespace",
                    path.display()
                );
                objects.push((
                    path.file_name().unwrap().to_string_lossy().into_owned(),
                    value,
                ));
            }
        }
    }
    objects
}

// Multi-threaded: TestNamespace's Drop blocks one thread while the client's worker task must still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn every_example_applies_and_kubectl_shows_it() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "api-examples").await;
    let objects = example_objects();
    let kinds: std::collections::BTreeSet<_> = objects
        .iter()
        .map(|(_, o)| kind_of(o).to_string())
        .collect();
    assert_eq!(
        kinds.len(),
        mlcompute::api::all_crds().len(),
        "an example per kind: {kinds:?}"
    );
    // InstanceTypes are cluster-scoped: give them names of this test's own, so that concurrent
    // tests using `gpu-1` are not disturbed, and delete them at the end.
    let objects: Vec<_> = objects
        .into_iter()
        .map(|(file, o)| match kind_of(&o) {
            "InstanceType" => {
                let name = format!("{}-{}", name_of(&o), ns.name());
                (file, with(o, "/metadata/name", json!(name)))
            }
            _ => (file, o),
        })
        .collect();
    for (file, o) in &objects {
        apply(&client, ns.name(), o)
            .await
            .unwrap_or_else(|e| panic!("{file}: {} {} rejected: {e}", kind_of(o), name_of(o)));
    }

    // The category lists every namespaced kind, with each kind's printer columns.
    let listed = run_kubectl(&["get", "mlcompute", "-n", ns.name()]);
    for (_, o) in objects.iter().filter(|(_, o)| kind_of(o) != "InstanceType") {
        assert!(
            listed.contains(&format!("/{}", name_of(o))),
            "{} missing from:\n{listed}",
            name_of(o)
        );
    }
    for column in [
        "PHASE",
        "DISTRIBUTION",
        "ATTEMPTS",
        "TRAFFIC",
        "MIRROR",
        "ENDPOINT",
        "READY",
        "MINI-BATCH",
        "SUCCEEDED",
        "DEFAULT DEPLOYMENT",
        "VERSION",
    ] {
        assert!(
            listed.contains(column),
            "column {column} missing from:\n{listed}"
        );
    }
    let tj = run_kubectl(&["get", "tj", "cifar-ddp", "-n", ns.name()]);
    assert!(tj.contains("pytorch") && tj.contains(" 2 "), "{tj}");
    let oe = run_kubectl(&["get", "oe", "fraud", "-n", ns.name()]);
    assert!(
        oe.contains(r#"{"blue":100,"green":0}"#) && oe.contains(r#"{"green":20}"#),
        "{oe}"
    );
    let gpu = format!("gpu-1-{}", ns.name());
    let it = run_kubectl(&["get", "it", &gpu]);
    assert!(
        it.lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().collect::<Vec<_>>()[..4]
                == [gpu.as_str(), "8", "32Gi", "1"]),
        "{it}"
    );

    // `kubectl scale` drives instanceCount through the scale subresource.
    run_kubectl(&["scale", "od", "blue", "-n", ns.name(), "--replicas=5"]);
    assert_eq!(
        ns.api::<OnlineDeployment>()
            .get("blue")
            .await
            .unwrap()
            .spec
            .instance_count,
        5
    );

    for (_, o) in objects.iter().filter(|(_, o)| kind_of(o) == "InstanceType") {
        api_for(&client, ns.name(), "InstanceType")
            .delete(name_of(o), &Default::default())
            .await
            .unwrap();
    }
}

// Multi-threaded: TestNamespace's Drop blocks one thread while the client's worker task must still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn kubectl_explain_shows_field_descriptions() {
    let spec = run_kubectl(&["explain", "trainingjob.spec"]);
    for needle in [
        "command",
        "distribution",
        "Shell command run in every instance",
        "queueName",
        "kueue.x-k8s.io/queue-name",
    ] {
        assert!(
            spec.contains(needle),
            "{needle:?} missing from kubectl explain trainingjob.spec:\n{spec}"
        );
    }
    let dist = run_kubectl(&[
        "explain",
        "trainingjob.spec.distribution.parameterServerCount",
    ]);
    assert!(
        dist.contains("tensorflow: number of parameter servers"),
        "{dist}"
    );
    let scale = run_kubectl(&[
        "explain",
        "onlinedeployment.spec.requestSettings.requestTimeoutMs",
    ]);
    assert!(scale.contains("504"), "{scale}");
}

#[test]
fn the_invalid_table_covers_every_kind() {
    let kinds: std::collections::BTreeSet<_> = invalid_on_create()
        .iter()
        .map(|(_, o, _)| kind_of(o).to_string())
        .collect();
    let all: std::collections::BTreeSet<_> = mlcompute::api::all_crds()
        .iter()
        .map(|c| c.spec.names.kind.clone())
        .collect();
    assert_eq!(kinds, all);
    assert!(invalid_on_create().len() + invalid_on_update().len() >= 30);
    // The resource used for each kind matches the CRD the API server knows.
    assert_eq!(api_resource("TrainingJob").plural, TrainingJob::plural(&()));
}
