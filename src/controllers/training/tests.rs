//! Unit tests of the pure stages, from small YAML fixtures.

use k8s_openapi::jiff::Timestamp;

use super::{
    children, data, frameworks,
    lifecycle::{self, Plan},
    observe::{ObservedPod, PodState},
    resolve::{Resolution, Resolved, resolve_from},
    topology::{self, Role},
};
use crate::api::{
    common::{JobPhase, ResourceRequirements},
    instance_type::InstanceTypeSpec,
    training_job::{TrainingJob, TrainingJobStatus},
};

fn fixture(name: &str) -> TrainingJob {
    let text = match name {
        "single" => include_str!("fixtures/single.yaml"),
        "pytorch" => include_str!("fixtures/pytorch.yaml"),
        "tensorflow" => include_str!("fixtures/tensorflow.yaml"),
        "mpi" => include_str!("fixtures/mpi.yaml"),
        other => panic!("no fixture {other}"),
    };
    serde_yaml::from_str(text).unwrap()
}

fn ready(job: &TrainingJob) -> Resolution {
    resolve_from(job, None, None, None)
}

fn resolved(job: &TrainingJob) -> Resolved {
    match ready(job) {
        Resolution::Ready(r) => *r,
        other => panic!("{other:?}"),
    }
}

fn pod(name: &str, attempt: i32, state: PodState) -> ObservedPod {
    ObservedPod {
        name: name.into(),
        attempt: Some(attempt),
        node: Some("cpu-pool-0".into()),
        state,
    }
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn with_status(mut job: TrainingJob, plan: &Plan) -> TrainingJob {
    job.status = Some(plan.status.clone());
    job
}

/// The job after its first reconcile: attempt 1 on record, Pods being created.
fn started(name: &str) -> TrainingJob {
    let job = fixture(name);
    let plan = lifecycle::decide(&job, &ready(&job), &[], at(0));
    with_status(job, &plan)
}

#[test]
fn a_new_job_creates_one_pod_per_instance_in_attempt_one() {
    let job = fixture("pytorch");
    let plan = lifecycle::decide(&job, &ready(&job), &[], at(0));
    let names: Vec<&str> = plan.create.iter().map(|i| i.pod_name.as_str()).collect();
    assert_eq!(
        names,
        [
            "ddp-worker-0",
            "ddp-worker-1",
            "ddp-worker-2",
            "ddp-worker-3"
        ]
    );
    assert_eq!(plan.attempt, 1);
    assert_eq!(plan.status.attempts, Some(1));
    assert_eq!(plan.status.phase, Some(JobPhase::Queued));
    assert_eq!(plan.status.reason.as_deref(), Some("WaitingForPods"));
    assert_eq!(plan.status.image.as_deref(), Some("pytorch/pytorch:2.5.1"));
}

#[test]
fn an_unchanged_job_plans_no_writes() {
    let job = started("single");
    let pods = [pod("iris-worker-0", 1, PodState::Running)];
    let first = lifecycle::decide(&job, &ready(&job), &pods, at(0));
    let job = with_status(job, &first);
    let again = lifecycle::decide(&job, &ready(&job), &pods, at(30));
    assert_eq!(again.status, first.status, "a resync rewrites nothing");
    assert!(again.create.is_empty() && again.delete.is_empty() && again.transition.is_none());
}

#[test]
fn running_then_completed() {
    let job = started("single");
    let run = lifecycle::decide(
        &job,
        &ready(&job),
        &[pod("iris-worker-0", 1, PodState::Running)],
        at(0),
    );
    assert_eq!(run.status.phase, Some(JobPhase::Running));
    assert!(run.status.start_time.is_some());
    let job = with_status(job, &run);
    let done = lifecycle::decide(
        &job,
        &ready(&job),
        &[pod("iris-worker-0", 1, PodState::Succeeded)],
        at(5),
    );
    assert_eq!(done.status.phase, Some(JobPhase::Completed));
    assert!(done.delete.is_empty(), "finished pods stay for their logs");
    assert_eq!(done.transition.as_ref().unwrap().reason, "Succeeded");
    let is = |plan: &Plan, t: &str| {
        plan.status
            .conditions
            .iter()
            .any(|c| c.type_ == t && c.status == "True")
    };
    // Running is still on the way (kstatus InProgress); done is Ready.
    assert!(!is(&run, "Ready") && is(&run, "Reconciling"));
    assert!(is(&done, "Ready") && !is(&done, "Stalled") && !is(&done, "Reconciling"));
    let ready = done
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.reason.as_str(), ready.message.as_str()),
        ("Completed", "all instances completed")
    );
}

#[test]
fn a_retryable_failure_restarts_the_gang_and_a_permanent_one_fails() {
    let job = started("single");
    let run = lifecycle::decide(
        &job,
        &ready(&job),
        &[pod("iris-worker-0", 1, PodState::Running)],
        at(0),
    );
    let job = with_status(job, &run);
    let failed = |code| {
        [pod(
            "iris-worker-0",
            1,
            PodState::Failed {
                exit_code: Some(code),
                reason: None,
            },
        )]
    };

    let retry = lifecycle::decide(&job, &ready(&job), &failed(137), at(1));
    assert_eq!(retry.status.attempts, Some(2));
    assert_eq!(retry.delete, ["iris-worker-0"]);
    assert!(
        retry.create.is_empty(),
        "new pods wait until the old names are free"
    );
    assert_eq!(retry.status.reason.as_deref(), Some("Restarting"));

    let perm = lifecycle::decide(&job, &ready(&job), &failed(2), at(1));
    assert_eq!(perm.status.phase, Some(JobPhase::Failed));
    assert_eq!(perm.status.reason.as_deref(), Some("NonRetryableExitCode"));
    let stalled = perm
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .unwrap();
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "NonRetryableExitCode")
    );
    assert_eq!(
        stalled.message,
        "instance iris-worker-0 exited with code 2, which retryPolicy does not retry",
        "kstatus shows the Stalled message"
    );
    assert!(
        !perm
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == "Reconciling")
    );
}

#[test]
fn retries_run_out_after_max_retries() {
    let mut job = fixture("single");
    job.status = Some(TrainingJobStatus {
        attempts: Some(3),
        phase: Some(JobPhase::Running),
        ..Default::default()
    });
    let pods = [pod(
        "iris-worker-0",
        3,
        PodState::Failed {
            exit_code: Some(1),
            reason: None,
        },
    )];
    let plan = lifecycle::decide(&job, &ready(&job), &pods, at(0));
    assert_eq!(plan.status.phase, Some(JobPhase::Failed));
    assert_eq!(plan.status.reason.as_deref(), Some("RetriesExhausted"));
}

#[test]
fn pods_of_an_old_attempt_are_deleted_and_a_stale_cache_waits() {
    let mut job = fixture("single");
    job.status = Some(TrainingJobStatus {
        attempts: Some(2),
        ..Default::default()
    });
    let plan = lifecycle::decide(
        &job,
        &ready(&job),
        &[pod("iris-worker-0", 1, PodState::Running)],
        at(0),
    );
    assert_eq!(plan.delete, ["iris-worker-0"]);
    assert!(plan.create.is_empty());
    let ahead = lifecycle::decide(
        &job,
        &ready(&job),
        &[pod("iris-worker-0", 3, PodState::Running)],
        at(0),
    );
    assert!(ahead.stale);
}

#[test]
fn timeout_cancel_and_suspend() {
    let job = started("single");
    let run = lifecycle::decide(
        &job,
        &ready(&job),
        &[pod("iris-worker-0", 1, PodState::Running)],
        at(0),
    );
    let job = with_status(job, &run);
    let pods = [pod("iris-worker-0", 1, PodState::Running)];
    let before = lifecycle::decide(&job, &ready(&job), &pods, at(60));
    assert_eq!(
        before.requeue_after,
        Some(std::time::Duration::from_secs(540))
    );
    let late = lifecycle::decide(&job, &ready(&job), &pods, at(601));
    assert_eq!(late.status.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(late.delete, ["iris-worker-0"]);

    let mut canceled = job.clone();
    canceled.spec.cancel = true;
    let plan = lifecycle::decide(&canceled, &ready(&canceled), &pods, at(1));
    assert_eq!(plan.status.phase, Some(JobPhase::Canceled));
    assert_eq!(plan.delete, ["iris-worker-0"]);
    // A canceled job is finished: Ready True (kstatus Current), the message says "Canceled".
    let cond = |plan: &Plan, t: &str| {
        plan.status
            .conditions
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let (status, reason, message) = cond(&plan, "Ready").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Canceled"));
    assert!(message.starts_with("Canceled"), "{message}");
    assert_eq!(cond(&plan, "Reconciling"), None);
    assert_eq!(cond(&plan, "Stalled"), None);

    let mut suspended = job;
    suspended.spec.suspend = true;
    let plan = lifecycle::decide(&suspended, &ready(&suspended), &pods, at(1));
    assert_eq!(plan.status.phase, Some(JobPhase::Queued));
    assert_eq!(plan.status.reason.as_deref(), Some("Suspended"));
    assert_eq!(plan.delete, ["iris-worker-0"]);
    assert!(plan.status.start_time.is_none());
    // Suspended waits for the user: neither working nor stalled, not Ready.
    assert_eq!(cond(&plan, "Reconciling"), None);
    assert_eq!(cond(&plan, "Stalled"), None);
    assert_eq!(cond(&plan, "Ready").unwrap().0, "False");
}

#[test]
fn unschedulable_pods_keep_the_job_queued_with_the_schedulers_message() {
    let job = started("single");
    let msg = "0/5 nodes are available: 5 Insufficient nvidia.com/gpu.".to_string();
    let pods = [pod(
        "iris-worker-0",
        1,
        PodState::Unscheduled {
            message: Some(msg.clone()),
        },
    )];
    let plan = lifecycle::decide(&job, &ready(&job), &pods, at(0));
    assert_eq!(plan.status.phase, Some(JobPhase::Queued));
    assert_eq!(plan.status.reason.as_deref(), Some("Unschedulable"));
    assert!(plan.status.message.unwrap().contains(&msg));
    let image = [pod(
        "iris-worker-0",
        1,
        PodState::Starting {
            reason: Some("ImagePullBackOff".into()),
            message: Some("not found".into()),
        },
    )];
    let plan = lifecycle::decide(&job, &ready(&job), &image, at(0));
    assert_eq!(plan.status.reason.as_deref(), Some("ImagePullError"));
    // Unschedulable waits for capacity (Reconciling); an image that cannot be pulled stalls.
    let stalled = plan
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .unwrap();
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "ImagePullError")
    );
    assert!(stalled.message.contains("not found"), "{}", stalled.message);
}

#[test]
fn missing_references_queue_the_job_with_a_reason() {
    let mut job = fixture("single");
    job.spec.image = None;
    job.spec.environment = Some("torch:2".into());
    let missing = resolve_from(&job, None, None, None);
    let plan = lifecycle::decide(&job, &missing, &[], at(0));
    assert_eq!(plan.status.reason.as_deref(), Some("EnvironmentNotFound"));
    assert!(plan.create.is_empty());
    // Waiting for the Environment (GitOps may apply it later in the same sync), not failed.
    let reconciling = plan
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Reconciling")
        .unwrap();
    assert_eq!(
        (reconciling.status.as_str(), reconciling.reason.as_str()),
        ("True", "EnvironmentNotFound")
    );
    assert!(reconciling.message.contains("torch"));
    assert_eq!(plan.status.observed_generation, job.metadata.generation);
    let it = resolve_from(&fixture("pytorch"), None, Some("gpu-8"), None);
    assert!(matches!(
        it,
        Resolution::Missing {
            reason: "InstanceTypeNotFound",
            ..
        }
    ));
    let spec = InstanceTypeSpec {
        resources: ResourceRequirements {
            limits: [(
                "cpu".into(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("4".into()),
            )]
            .into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let Resolution::Ready(r) = resolve_from(&fixture("pytorch"), None, Some("cpu-4"), Some(&spec))
    else {
        panic!()
    };
    assert_eq!(
        r.resources.requests["cpu"].0, "4",
        "requests default to limits"
    );
}

#[test]
fn tensorflow_and_mpi_topologies() {
    let tf = topology::instances(&fixture("tensorflow"));
    let names: Vec<&str> = tf.iter().map(|i| i.pod_name.as_str()).collect();
    assert_eq!(names, ["tf-worker-0", "tf-worker-1", "tf-ps-0"]);
    assert!(!tf[2].decides_success, "parameter servers never exit");
    let cfg: serde_json::Value =
        serde_json::from_str(&frameworks::tf_config(&fixture("tensorflow"), &tf, &tf[1])).unwrap();
    assert_eq!(
        cfg["task"],
        serde_json::json!({"type": "worker", "index": 1})
    );

    let mpi_job = fixture("mpi");
    let mpi = topology::instances(&mpi_job);
    assert_eq!(mpi.len(), 2);
    assert!(mpi[0].also_launcher && mpi[0].decides_success && !mpi[1].decides_success);
    assert_eq!(
        frameworks::mpi_hostfile(&mpi_job, &mpi),
        "hvd-worker-0.hvd slots=4\nhvd-worker-1.hvd slots=4\n"
    );
    assert_eq!(mpi[0].role, Role::Worker);
}

#[test]
fn data_inputs_outputs_and_code_become_mounts_and_fetch_steps() {
    let job = fixture("single");
    let plan = data::plan(&job);
    let cmd = data::substitute(&job.spec.command, &plan.substitutions);
    assert_eq!(
        cmd,
        "python train.py --data /mnt/azureml/inputs/iris/iris.csv --C 0.8 --out /mnt/azureml/outputs/model"
    );
    assert!(
        plan.fetch_script
            .iter()
            .any(|l| l.contains("fetch 'https://example.com/data/iris.csv'"))
    );
    let shards = plan
        .mounts
        .iter()
        .find(|m| m.mount_path == "/mnt/azureml/inputs/shards")
        .unwrap();
    assert_eq!(
        (shards.read_only, shards.sub_path.as_deref()),
        (Some(true), Some("shards"))
    );
    let model = plan
        .mounts
        .iter()
        .find(|m| m.mount_path == "/mnt/azureml/outputs/model")
        .unwrap();
    assert_eq!(
        (model.read_only, model.sub_path.as_deref()),
        (None, Some("iris"))
    );
    assert_eq!(plan.working_dir.as_deref(), Some("/mnt/azureml/code"));
    assert_eq!(plan.upload_script.len(), 1);

    let pod = children::pod(
        &job,
        &resolved(&job),
        &topology::instances(&job),
        &topology::instances(&job)[0],
        1,
    );
    let spec = pod.spec.unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(spec.init_containers.unwrap()[0].name, "fetch-inputs");
    let script = &spec.containers[0].command.as_ref().unwrap()[2];
    assert!(
        script.ends_with("exit $rc"),
        "uploads run whatever the exit code: {script}"
    );
    let labels = pod.metadata.labels.unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "mlcompute");
    assert_eq!(labels["mlcompute.io/trainingjob"], "iris");
    assert_eq!(labels["mlcompute.io/attempt"], "1");
    assert!(
        spec.subdomain.is_none(),
        "a single instance needs no rendezvous service"
    );
}

#[test]
fn pods_mount_no_token_and_run_non_root_once_the_user_says_so() {
    let job = fixture("single");
    let all = topology::instances(&job);
    let spec = children::pod(&job, &resolved(&job), &all, &all[0], 1)
        .spec
        .unwrap();
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.service_account_name, None);
    let seccomp = spec.security_context.unwrap().seccomp_profile.unwrap();
    assert_eq!(seccomp.type_, "RuntimeDefault");
    let every = spec
        .init_containers
        .unwrap()
        .into_iter()
        .chain(spec.containers);
    for c in every {
        let sc = c.security_context.unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert_eq!(
            sc.capabilities, None,
            "root keeps the runtime's capabilities"
        );
    }

    let mut job = fixture("single");
    job.spec.service_account_name = Some("trainer".into());
    job.spec.pod_security_context = Some(
        serde_json::from_value(serde_json::json!({ "runAsUser": 1000, "fsGroup": 1000 })).unwrap(),
    );
    let spec = children::pod(&job, &resolved(&job), &all, &all[0], 1)
        .spec
        .unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("trainer"));
    assert_eq!(spec.automount_service_account_token, None);
    assert_eq!(spec.security_context.unwrap().run_as_user, Some(1000));
    let init = spec.init_containers.unwrap();
    assert_eq!(init[0].name, "fetch-inputs");
    for c in init.iter().chain(&spec.containers) {
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true), "{}", c.name);
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
    }
}
