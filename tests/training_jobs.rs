//! The TrainingJob controller on the local plane. KWOK runs the Pods; a test ends an instance the
//! way a process would, by annotating its Pod with the exit code KWOK should report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use mlcompute::api::{common::JobPhase, environment::Environment, training_job::TrainingJob};
use serde_json::{Value, json};
use support::{Operator, TestNamespace, eventually, wait_for};

const T: Duration = Duration::from_secs(60);

fn job(name: &str, spec: Value) -> TrainingJob {
    serde_json::from_value(json!({
        "apiVersion": "mlcompute.io/v1alpha1", "kind": "TrainingJob",
        "metadata": { "name": name }, "spec": spec
    }))
    .unwrap()
}

fn phase_is(p: JobPhase) -> impl Fn(Option<&TrainingJob>) -> bool {
    move |j| j.and_then(|j| j.status.as_ref()?.phase) == Some(p)
}

/// Makes KWOK end the Pod with `code`, as if its process exited.
async fn exit(pods: &Api<Pod>, name: &str, code: i32) {
    let patch = json!({ "metadata": { "annotations": { "kwok.mlcompute.io/exit-code": code.to_string() } } });
    pods.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

async fn running_pods(pods: &Api<Pod>, job: &str, n: usize) -> Vec<Pod> {
    eventually(&format!("{n} running pods of {job}"), T, || async {
        let list = pods
            .list(&ListParams::default().labels(&format!("mlcompute.io/trainingjob={job}")))
            .await
            .ok()?;
        let running: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .collect();
        (running.len() == n).then_some(running)
    })
    .await
}

fn env_of(pod: &Pod) -> BTreeMap<String, String> {
    pod.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn single_instance_job_completes_with_its_environment_image_recorded() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "tj-single").await;
    let _op = Operator::start(ns.name());
    let envs: Api<Environment> = ns.api();
    envs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "Environment",
            "metadata": { "name": "torch" }, "spec": { "image": "pytorch/pytorch:2.5.1", "version": "3" }
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let jobs: Api<TrainingJob> = ns.api();
    jobs.create(
        &PostParams::default(),
        &job(
            "hello",
            json!({ "command": "python train.py", "environment": "torch:3" }),
        ),
    )
    .await
    .unwrap();
    let pods: Api<Pod> = ns.api();
    let pod = running_pods(&pods, "hello", 1).await.remove(0);
    assert_eq!(pod.name_any(), "hello-worker-0");
    let main = &pod.spec.as_ref().unwrap().containers[0];
    assert_eq!(main.image.as_deref(), Some("pytorch/pytorch:2.5.1"));
    assert_eq!(main.command.as_ref().unwrap()[2], "python train.py");
    // Built-in default instance type, and Azure ML's 2g shared memory.
    let volumes = pod.spec.as_ref().unwrap().volumes.clone().unwrap();
    let shm = volumes
        .iter()
        .find(|v| v.name == "dshm")
        .unwrap()
        .empty_dir
        .clone()
        .unwrap();
    assert_eq!(shm.medium.as_deref(), Some("Memory"));
    assert_eq!(shm.size_limit.unwrap().0, (2u64 << 30).to_string());
    assert_eq!(pod.owner_references()[0].kind, "TrainingJob");

    wait_for(&jobs, "hello", T, phase_is(JobPhase::Running)).await;
    exit(&pods, "hello-worker-0", 0).await;
    let done = wait_for(&jobs, "hello", T, phase_is(JobPhase::Completed)).await;
    let st = done.status.unwrap();
    assert_eq!(st.image.as_deref(), Some("pytorch/pytorch:2.5.1"));
    assert_eq!(st.environment_version.as_deref(), Some("3"));
    assert_eq!(st.instance_type.as_deref(), Some("defaultinstancetype"));
    assert_eq!(st.attempts, Some(1));
    assert!(st.start_time.is_some() && st.completion_time.is_some());
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Succeeded" && c.status == "True")
    );
    // Each transition is an Event on the job (written off the reconcile path, so eventually).
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    eventually("Events for Running and Succeeded", T, || async {
        let reasons: Vec<String> = events
            .list(&Default::default())
            .await
            .ok()?
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("hello"))
            .filter_map(|e| e.reason)
            .collect();
        (reasons.iter().any(|r| r == "Running") && reasons.iter().any(|r| r == "Succeeded"))
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn pytorch_job_gives_each_instance_its_rank() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "tj-torch").await;
    let _op = Operator::start(ns.name());
    let jobs: Api<TrainingJob> = ns.api();
    let spec = json!({
        "command": "torchrun train.py", "image": "pytorch/pytorch:2.5.1",
        "resources": { "instanceCount": 4 },
        "distribution": { "type": "pytorch", "processCountPerInstance": 2 }
    });
    jobs.create(&PostParams::default(), &job("ddp", spec))
        .await
        .unwrap();
    let pods: Api<Pod> = ns.api();
    let mut list = running_pods(&pods, "ddp", 4).await;
    list.sort_by_key(|p| p.name_any());
    for (i, pod) in list.iter().enumerate() {
        let i = i as i32;
        assert_eq!(pod.name_any(), format!("ddp-worker-{i}"));
        let env = env_of(pod);
        assert_eq!(env["MASTER_ADDR"], "ddp-worker-0.ddp");
        assert_eq!(env["MASTER_PORT"], "29500");
        assert_eq!(env["WORLD_SIZE"], "8", "4 instances x 2 processes");
        assert_eq!(env["NODE_RANK"], i.to_string());
        assert_eq!(env["RANK"], (i * 2).to_string());
        assert_eq!(env["LOCAL_RANK"], "0");
        assert_eq!(env["PET_NNODES"], "4");
        assert_eq!(env["PET_NPROC_PER_NODE"], "2");
        assert_eq!(env["PET_NODE_RANK"], i.to_string());
        assert_eq!(env["PET_MASTER_ADDR"], "ddp-worker-0.ddp");
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(
            spec.hostname.as_deref(),
            Some(format!("ddp-worker-{i}").as_str())
        );
        assert_eq!(spec.subdomain.as_deref(), Some("ddp"));
    }
    let svc: Service = ns.api::<Service>().get("ddp").await.unwrap();
    assert_eq!(svc.spec.unwrap().cluster_ip.as_deref(), Some("None"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn tensorflow_job_gets_a_valid_tf_config_per_task() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "tj-tf").await;
    let _op = Operator::start(ns.name());
    let jobs: Api<TrainingJob> = ns.api();
    let spec = json!({
        "command": "python train.py", "image": "tensorflow/tensorflow:2.17.0",
        "resources": { "instanceCount": 3 },
        "distribution": { "type": "tensorflow", "workerCount": 2, "parameterServerCount": 1 }
    });
    jobs.create(&PostParams::default(), &job("tf", spec))
        .await
        .unwrap();
    let pods: Api<Pod> = ns.api();
    let list = running_pods(&pods, "tf", 3).await;
    let mut seen = Vec::new();
    for pod in &list {
        let cfg: Value =
            serde_json::from_str(&env_of(pod)["TF_CONFIG"]).expect("TF_CONFIG is JSON");
        assert_eq!(
            cfg["cluster"]["worker"],
            json!(["tf-worker-0.tf:2222", "tf-worker-1.tf:2222"])
        );
        assert_eq!(cfg["cluster"]["ps"], json!(["tf-ps-0.tf:2222"]));
        let task = (
            cfg["task"]["type"].as_str().unwrap().to_string(),
            cfg["task"]["index"].as_i64().unwrap(),
        );
        let expected_name = format!("tf-{}-{}", task.0, task.1);
        assert_eq!(pod.name_any(), expected_name);
        seen.push(task);
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![("ps".into(), 0), ("worker".into(), 0), ("worker".into(), 1)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn mpi_job_gets_launcher_workers_hostfile_and_keys() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "tj-mpi").await;
    let _op = Operator::start(ns.name());
    let jobs: Api<TrainingJob> = ns.api();
    let spec = json!({
        "command": "python allreduce.py", "image": "horovod/horovod:0.28.1",
        "resources": { "instanceCount": 2 },
        "distribution": { "type": "mpi", "processCountPerInstance": 4, "launcher": "separate" }
    });
    jobs.create(&PostParams::default(), &job("hvd", spec))
        .await
        .unwrap();
    let pods: Api<Pod> = ns.api();
    let list = running_pods(&pods, "hvd", 3).await;
    let mut names: Vec<String> = list.iter().map(|p| p.name_any()).collect();
    names.sort();
    assert_eq!(names, ["hvd-launcher-0", "hvd-worker-0", "hvd-worker-1"]);
    let launcher = list
        .iter()
        .find(|p| p.name_any() == "hvd-launcher-0")
        .unwrap();
    let script = &launcher.spec.as_ref().unwrap().containers[0]
        .command
        .as_ref()
        .unwrap()[2];
    assert!(
        script.contains("mpirun") && script.contains("/etc/mpi/hostfile"),
        "{script}"
    );
    assert_eq!(env_of(launcher)["MLCOMPUTE_MPI_NP"], "8");
    let worker = list
        .iter()
        .find(|p| p.name_any() == "hvd-worker-1")
        .unwrap();
    assert!(
        worker.spec.as_ref().unwrap().containers[0]
            .command
            .as_ref()
            .unwrap()[2]
            .contains("sshd")
    );

    let hostfile: ConfigMap = ns.api::<ConfigMap>().get("hvd-mpi-hostfile").await.unwrap();
    assert_eq!(
        hostfile.data.unwrap()["hostfile"],
        "hvd-worker-0.hvd slots=4\nhvd-worker-1.hvd slots=4\n"
    );
    let secret: k8s_openapi::api::core::v1::Secret = ns.api().get("hvd-mpi-ssh").await.unwrap();
    let data = secret.data.unwrap();
    assert!(
        String::from_utf8(data["ssh-privatekey"].0.clone())
            .unwrap()
            .contains("OPENSSH PRIVATE KEY")
    );
    assert!(
        String::from_utf8(data["ssh-publickey"].0.clone())
            .unwrap()
            .starts_with("ssh-ed25519 ")
    );

    // The launcher decides the outcome; the workers are stopped afterwards.
    exit(&pods, "hvd-launcher-0", 0).await;
    wait_for(&jobs, "hvd", T, phase_is(JobPhase::Completed)).await;
    support::wait_gone(&pods, "hvd-worker-0", T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn a_failed_worker_restarts_the_gang_until_retries_run_out() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "tj-retry").await;
    let _op = Operator::start(ns.name());
    let jobs: Api<TrainingJob> = ns.api();
    let spec = json!({
        "command": "python train.py", "image": "busybox",
        "resources": { "instanceCount": 2 },
        "retryPolicy": { "maxRetries": 2 }
    });
    jobs.create(&PostParams::default(), &job("flaky", spec))
        .await
        .unwrap();
    let pods: Api<Pod> = ns.api();
    for attempt in 1..=3 {
        let list = running_pods(&pods, "flaky", 2).await;
        for p in &list {
            assert_eq!(
                p.labels()["mlcompute.io/attempt"],
                attempt.to_string(),
                "every pod belongs to the current attempt"
            );
        }
        exit(&pods, "flaky-worker-1", 3).await;
        if attempt < 3 {
            wait_for(&jobs, "flaky", T, move |j: Option<&TrainingJob>| {
                j.and_then(|j| j.status.as_ref()?.attempts) == Some(attempt + 1)
            })
            .await;
        }
    }
    let failed = wait_for(&jobs, "flaky", T, phase_is(JobPhase::Failed)).await;
    let st = failed.status.unwrap();
    assert_eq!(st.attempts, Some(3));
    assert_eq!(st.reason.as_deref(), Some("RetriesExhausted"));
    assert!(st.message.unwrap().contains("exited with code 3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn a_permanent_exit_code_fails_at_once() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "tj-perm").await;
    let _op = Operator::start(ns.name());
    let jobs: Api<TrainingJob> = ns.api();
    let spec = json!({
        "command": "python train.py --bad-flag", "image": "busybox",
        "retryPolicy": { "maxRetries": 5, "failOnExitCodes": [2] }
    });
    jobs.create(&PostParams::default(), &job("badarg", spec))
        .await
        .unwrap();
    let pods: Api<Pod> = ns.api();
    running_pods(&pods, "badarg", 1).await;
    exit(&pods, "badarg-worker-0", 2).await;
    let failed = wait_for(&jobs, "badarg", T, phase_is(JobPhase::Failed)).await;
    let st = failed.status.unwrap();
    assert_eq!(st.attempts, Some(1));
    assert_eq!(st.reason.as_deref(), Some("NonRetryableExitCode"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn a_job_past_its_timeout_fails_with_deadline_exceeded() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "tj-timeout").await;
    let _op = Operator::start(ns.name());
    let jobs: Api<TrainingJob> = ns.api();
    jobs.create(
        &PostParams::default(),
        &job(
            "slow",
            json!({ "command": "sleep 1d", "image": "busybox", "timeout": "2s" }),
        ),
    )
    .await
    .unwrap();
    let failed = wait_for(&jobs, "slow", T, phase_is(JobPhase::Failed)).await;
    assert_eq!(
        failed.status.unwrap().reason.as_deref(),
        Some("DeadlineExceeded")
    );
    let pods: Api<Pod> = ns.api();
    support::wait_gone(&pods, "slow-worker-0", T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn cancel_from_the_cli_deletes_pods_and_keeps_the_job() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "tj-cancel").await;
    let _op = Operator::start(ns.name());
    let jobs: Api<TrainingJob> = ns.api();
    jobs.create(&PostParams::default(), &job("long", json!({ "command": "sleep 1d", "image": "busybox", "resources": { "instanceCount": 2 } })))
        .await
        .unwrap();
    let pods: Api<Pod> = ns.api();
    running_pods(&pods, "long", 2).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mlcompute"))
        .args([
            "job",
            "cancel",
            "long",
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
    let canceled = wait_for(&jobs, "long", T, phase_is(JobPhase::Canceled)).await;
    assert!(canceled.status.unwrap().completion_time.is_some());
    support::wait_gone(&pods, "long-worker-0", T).await;
    support::wait_gone(&pods, "long-worker-1", T).await;
    // Cancel cannot be undone: the API server refuses it.
    let err = jobs
        .patch(
            "long",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "cancel": false } })),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cancel cannot be undone"), "{err}");
    // A missing job is a one-line error and a non-zero exit.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mlcompute"))
        .args([
            "job",
            "cancel",
            "nope",
            "-n",
            ns.name(),
            "--kubeconfig",
            &support::kubeconfig_path(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}

/// Azure ML keeps every version of an environment: after `torch` moves from version 1 to 2, a job
/// pinned to `torch:1` still runs version 1's image, `torch` runs version 2's, and a version it
/// never held waits with a reason that lists the ones it did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn a_pinned_environment_version_keeps_resolving_after_the_environment_moves_on() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "tj-envver").await;
    let _op = Operator::start(ns.name());
    let envs: Api<Environment> = ns.api();
    envs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "Environment",
            "metadata": { "name": "torch" },
            "spec": { "image": "pytorch/pytorch:2.4", "version": "1", "environmentVariables": { "ERA": "one" } }
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let recorded = |n: usize| {
        move |e: Option<&Environment>| {
            e.and_then(|e| e.status.as_ref()).is_some_and(|s| {
                s.versions.len() == n
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        }
    };
    wait_for(&envs, "torch", T, recorded(1)).await;
    envs.patch(
        "torch",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({ "spec": { "image": "pytorch/pytorch:2.5", "version": "2", "environmentVariables": { "ERA": "two" } } })),
    )
    .await
    .unwrap();
    let env = wait_for(&envs, "torch", T, recorded(2)).await;
    let versions: Vec<&str> = env
        .status
        .as_ref()
        .unwrap()
        .versions
        .iter()
        .map(|v| v.version.as_str())
        .collect();
    assert_eq!(versions, ["1", "2"]);

    let jobs: Api<TrainingJob> = ns.api();
    for (name, reference) in [
        ("pinned", "torch:1"),
        ("current", "torch"),
        ("never", "torch:7"),
    ] {
        jobs.create(
            &PostParams::default(),
            &job(
                name,
                json!({ "command": "python t.py", "environment": reference }),
            ),
        )
        .await
        .unwrap();
    }
    let pods: Api<Pod> = ns.api();
    for (name, image, era) in [
        ("pinned", "pytorch/pytorch:2.4", "one"),
        ("current", "pytorch/pytorch:2.5", "two"),
    ] {
        let pod = running_pods(&pods, name, 1).await.remove(0);
        let main = &pod.spec.as_ref().unwrap().containers[0];
        assert_eq!(main.image.as_deref(), Some(image), "{name}");
        let vars = main.env.as_ref().unwrap();
        assert!(
            vars.iter()
                .any(|v| v.name == "ERA" && v.value.as_deref() == Some(era)),
            "{name}: {vars:?}"
        );
    }
    let pinned = wait_for(&jobs, "pinned", T, |j: Option<&TrainingJob>| {
        j.and_then(|j| j.status.as_ref()?.environment_version.clone())
            .is_some()
    })
    .await;
    assert_eq!(
        pinned.status.unwrap().environment_version.as_deref(),
        Some("1")
    );
    let never = wait_for(&jobs, "never", T, |j: Option<&TrainingJob>| {
        j.and_then(|j| j.status.as_ref()?.reason.clone()).as_deref()
            == Some("EnvironmentVersionNotFound")
    })
    .await;
    let message = never.status.unwrap().message.unwrap_or_default();
    assert!(message.contains("versions it has held: 1, 2"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn a_missing_environment_holds_the_job_until_it_is_created() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "tj-env").await;
    let _op = Operator::start(ns.name());
    let jobs: Api<TrainingJob> = ns.api();
    jobs.create(
        &PostParams::default(),
        &job(
            "waits",
            json!({ "command": "python t.py", "environment": "later@latest" }),
        ),
    )
    .await
    .unwrap();
    let queued = wait_for(&jobs, "waits", T, |j: Option<&TrainingJob>| {
        j.and_then(|j| j.status.as_ref()?.reason.clone()).as_deref() == Some("EnvironmentNotFound")
    })
    .await;
    let st = queued.status.unwrap();
    assert_eq!(st.phase, Some(JobPhase::Queued));
    assert!(st.conditions.iter().any(|c| c.type_ == "Resolved"
        && c.status == "False"
        && c.reason == "EnvironmentNotFound"));
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    eventually("an Event naming the missing environment", T, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("EnvironmentNotFound"))
    })
    .await;

    let envs: Api<Environment> = ns.api();
    envs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "Environment",
            "metadata": { "name": "later" }, "spec": { "image": "python:3.12" }
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let running = wait_for(&jobs, "waits", T, phase_is(JobPhase::Running)).await;
    assert_eq!(
        running.status.unwrap().image.as_deref(),
        Some("python:3.12")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn a_gpu_job_without_capacity_stays_queued_with_the_schedulers_reason() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "tj-gpu").await;
    let _op = Operator::start(ns.name());
    let its: Api<mlcompute::api::instance_type::InstanceType> = Api::all(client.clone());
    let it_name = format!("{}-gpu-64", ns.name());
    its.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "InstanceType",
            "metadata": { "name": it_name },
            "spec": {
                "nodeSelector": { "mlcompute.io/pool": "gpu" },
                "tolerations": [{ "key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule" }],
                "resources": { "limits": { "cpu": "8", "memory": "32Gi", "nvidia.com/gpu": 64 } }
            }
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let jobs: Api<TrainingJob> = ns.api();
    jobs.create(&PostParams::default(), &job("big", json!({ "command": "python t.py", "image": "cuda", "resources": { "instanceType": it_name } })))
        .await
        .unwrap();
    let queued = wait_for(&jobs, "big", T, |j: Option<&TrainingJob>| {
        j.and_then(|j| j.status.as_ref()?.reason.clone()).as_deref() == Some("Unschedulable")
    })
    .await;
    let st = queued.status.unwrap();
    assert_eq!(st.phase, Some(JobPhase::Queued));
    assert!(st.message.unwrap().contains("nvidia.com/gpu"));
    // The Pod stays Pending (for cluster autoscalers); the job is not failed.
    let pod: Pod = ns.api::<Pod>().get("big-worker-0").await.unwrap();
    assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Pending"));
    let _ = its.delete(&it_name, &Default::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn ttl_removes_pods_and_service_after_the_job_finishes() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "tj-ttl").await;
    let _op = Operator::start(ns.name());
    let jobs: Api<TrainingJob> = ns.api();
    let spec = json!({ "command": "true", "image": "busybox", "resources": { "instanceCount": 2 }, "ttlSecondsAfterFinished": 2 });
    jobs.create(&PostParams::default(), &job("brief", spec))
        .await
        .unwrap();
    let pods: Api<Pod> = ns.api();
    running_pods(&pods, "brief", 2).await;
    exit(&pods, "brief-worker-0", 0).await;
    exit(&pods, "brief-worker-1", 0).await;
    wait_for(&jobs, "brief", T, phase_is(JobPhase::Completed)).await;
    // Finished Pods stay for their logs until the TTL runs out.
    assert!(pods.get_opt("brief-worker-0").await.unwrap().is_some());
    support::wait_gone(&pods, "brief-worker-0", T).await;
    support::wait_gone(&pods, "brief-worker-1", T).await;
    let services: Api<Service> = ns.api();
    support::wait_gone(&services, "brief", T).await;
    assert!(
        jobs.get_opt("brief").await.unwrap().is_some(),
        "the TrainingJob itself stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn an_operator_restart_mid_run_leaves_exactly_one_pod_per_instance() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "tj-restart").await;
    let mut op = Operator::start(ns.name());
    let jobs: Api<TrainingJob> = ns.api();
    let spec = json!({ "command": "python t.py", "image": "busybox", "resources": { "instanceCount": 3 }, "retryPolicy": { "maxRetries": 3 } });
    jobs.create(&PostParams::default(), &job("steady", spec))
        .await
        .unwrap();
    let pods: Api<Pod> = ns.api();
    running_pods(&pods, "steady", 3).await;
    wait_for(&jobs, "steady", T, phase_is(JobPhase::Running)).await;
    // Crash in the middle of a gang restart: the attempt is recorded before its Pods change.
    exit(&pods, "steady-worker-2", 137).await;
    wait_for(&jobs, "steady", T, |j: Option<&TrainingJob>| {
        j.and_then(|j| j.status.as_ref()?.attempts) == Some(2)
    })
    .await;
    op.kill();
    let _op2 = Operator::start(ns.name());
    let list = running_pods(&pods, "steady", 3).await;
    for p in &list {
        assert_eq!(p.labels()["mlcompute.io/attempt"], "2");
    }
    // Settled: still exactly three Pods, no leftovers of attempt 1, attempts not double-counted.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = pods.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(
        all.len(),
        3,
        "{:?}",
        all.iter().map(|p| p.name_any()).collect::<Vec<_>>()
    );
    let job = jobs.get("steady").await.unwrap();
    assert_eq!(job.status.unwrap().attempts, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn logs_follow_prints_every_instance_and_exits_with_the_outcome() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "tj-logs").await;
    let _op = Operator::start(ns.name());
    let jobs: Api<TrainingJob> = ns.api();
    jobs.create(&PostParams::default(), &job("chatty", json!({ "command": "python t.py", "image": "busybox", "resources": { "instanceCount": 2 } })))
        .await
        .unwrap();
    let pods: Api<Pod> = ns.api();
    running_pods(&pods, "chatty", 2).await;
    // KWOK serves each Pod's log from a file named by a Logs object.
    let dir = std::env::temp_dir().join(format!("mlc-{}", ns.name()));
    std::fs::create_dir_all(&dir).unwrap();
    let logs_api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns.name(),
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("kwok.x-k8s.io", "v1alpha1", "Logs"),
            "logs",
        ),
    );
    for i in 0..2 {
        let file = dir.join(format!("w{i}.log"));
        std::fs::write(
            &file,
            format!("2026-01-01T00:00:00Z stdout F hello from rank {i}\n"),
        )
        .unwrap();
        let obj: kube::api::DynamicObject = serde_json::from_value(json!({
            "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Logs",
            "metadata": { "name": format!("chatty-worker-{i}") },
            "spec": { "logs": [{ "containers": ["main"], "logsFile": file.to_str().unwrap(), "follow": true }] }
        }))
        .unwrap();
        logs_api.create(&PostParams::default(), &obj).await.unwrap();
    }
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mlcompute"))
        .args([
            "logs",
            "trainingjob/chatty",
            "-f",
            "-n",
            ns.name(),
            "--kubeconfig",
            &support::kubeconfig_path(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    exit(&pods, "chatty-worker-0", 0).await;
    exit(&pods, "chatty-worker-1", 0).await;
    let out = tokio::time::timeout(T, child.wait_with_output())
        .await
        .expect("logs -f ends with the job")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("[worker-0] hello from rank 0"), "{stdout}");
    assert!(stdout.contains("[worker-1] hello from rank 1"), "{stdout}");
    let _ = std::fs::remove_dir_all(dir);
}
