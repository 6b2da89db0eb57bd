//! The desired children of a BatchJob (pure): an Indexed batch/v1 Job running `mlcompute
//! batch-driver`, the job's progress ConfigMap, and the ServiceAccount, Role and RoleBinding that
//! let each driver Pod's relay sidecar write its entry there — and nothing else.
//!
//! Credentials: the Pod does not automount its token. The driver container (and the Python scoring
//! script it runs) and the init containers get none; only the relay sidecar
//! (`mlcompute batch-progress-relay`, the mlcompute image, no user code) mounts a projected token at
//! the standard in-cluster path. The driver hands its progress to the relay through a file on a
//! shared emptyDir ([`PROGRESS_FILE`]).
//!
//! The driver Pod runs the deployment's image (the user's Python environment, which the scoring script
//! needs). The `mlcompute` binary gets there through an init container of the mlcompute image
//! (`--driver-image`), which copies itself (`mlcompute copy-binary`) into an emptyDir mounted at
//! [`BIN_DIR`]. Model and code are mounted (`pvc://`, `configmap://`) or downloaded into an emptyDir by
//! a second init container (`https://`), as for online deployments.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        batch::v1::{
            Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
            PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
        },
        core::v1::{
            ConfigMap, ConfigMapProjection, ConfigMapVolumeSource, Container,
            DownwardAPIProjection, DownwardAPIVolumeFile, EnvVar, EnvVarSource, KeyToPath,
            LocalObjectReference, ObjectFieldSelector, PodSpec, PodTemplateSpec,
            ProjectedVolumeSource, ResourceRequirements, ServiceAccount,
            ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
        },
        rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta},
};
use kube::ResourceExt;

use super::resolve::Target;
use crate::{
    api::{
        batch_job::{BatchInputType, BatchJob},
        common::DataUri,
    },
    contract::{
        batch_driver::{
            self as driver_contract, COPY_BINARY_COMMAND, DRIVER_COMMAND, PodPaths, RELAY_COMMAND,
            driver_env,
        },
        exit_codes,
    },
    runtime::{
        children::{child_meta, labels},
        pod_data::{FETCH_FN, claim_volume, empty_dir, mount, sh_quote},
        pod_security::{self, UserSecurity},
    },
};

/// Where the `mlcompute` binary is copied to in the driver Pod.
pub const BIN_DIR: &str = "/opt/mlcompute/bin";
/// The scoring code (as Azure ML's `/var/azureml-app`).
pub const CODE_DIR: &str = "/var/azureml-app";
pub const MODEL_DIR: &str = "/mnt/azureml/model";
pub const INPUT_DIR: &str = "/mnt/azureml/inputs";
pub const OUTPUT_DIR: &str = "/mnt/azureml/outputs/score";
/// Scratch space for `https://` downloads.
pub const DOWNLOADS_DIR: &str = "/mnt/azureml/downloads";
/// Name of the driver container (the Job's pod failure policy refers to it).
pub const DRIVER_CONTAINER: &str = "driver";
/// `app.kubernetes.io/component` of the driver Pods.
pub const COMPONENT: &str = "batch-driver";
/// `app.kubernetes.io/component` of the progress ConfigMap (the controller watches these).
pub const PROGRESS_COMPONENT: &str = "batch-progress";
/// Name of the relay sidecar, the one container holding a token.
pub const RELAY_CONTAINER: &str = "progress-relay";
/// The emptyDir the driver writes its progress snapshot to and the relay reads.
pub const PROGRESS_DIR: &str = "/var/run/mlcompute/progress";
pub const PROGRESS_FILE: &str = "/var/run/mlcompute/progress/progress.json";
/// Where in-cluster clients look for the token, CA and namespace.
pub const TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The relay's projected token volume.
pub const TOKEN_VOLUME: &str = "progress-token";
/// Lifetime asked for the relay's token (the kubelet refreshes it; kube re-reads the file). Not
/// 3607, the kubelet's own value, which the API server may extend to a year.
const TOKEN_SECONDS: i64 = 3600;

/// Name of the ServiceAccount, Role and RoleBinding of a job's driver Pods.
pub fn driver_account_name(job: &BatchJob) -> String {
    format!("{}-driver", job.name_any())
}

/// Name of the job's progress ConfigMap (one key per instance).
pub fn progress_name(job: &BatchJob) -> String {
    format!("{}-progress", job.name_any())
}

/// The instance count of the job: the override, else the deployment's.
pub fn instance_count(job: &BatchJob, target: &Target) -> i32 {
    job.spec
        .overrides
        .as_ref()
        .and_then(|o| o.instance_count)
        .unwrap_or(target.deployment.resources.instance_count)
}

/// Pod-level retries: the mini-batch retry setting (override wins). A retried Pod resumes its shard,
/// skipping mini-batches already done.
pub fn backoff_limit(job: &BatchJob, target: &Target) -> i32 {
    job.spec
        .overrides
        .as_ref()
        .and_then(|o| o.max_retries)
        .unwrap_or(target.deployment.settings.retry_settings.max_retries)
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// Volumes, mounts and download steps for model, code, input and output.
#[derive(Default)]
struct Data {
    volumes: Vec<Volume>,
    mounts: Vec<VolumeMount>,
    fetch: Vec<String>,
}

impl Data {
    fn claim(&mut self, claim: &str) -> String {
        claim_volume(&mut self.volumes, claim)
    }

    fn downloads(&mut self) {
        if !self.volumes.iter().any(|v| v.name == "downloads") {
            self.volumes.push(empty_dir("downloads"));
            self.mounts
                .push(mount("downloads", DOWNLOADS_DIR, "", false));
        }
    }

    /// Makes `uri` readable at a path; returns that path. `file` says whether it names a file.
    fn read_only(&mut self, uri: &str, at: &str, download_as: &str, file: bool) -> Option<String> {
        match uri.parse::<DataUri>().ok()? {
            DataUri::Pvc { claim, path } => {
                let vol = self.claim(&claim);
                let target = if file {
                    let base = path.rsplit('/').next().unwrap_or("input");
                    format!("{at}/{base}")
                } else {
                    at.to_string()
                };
                self.mounts.push(mount(&vol, &target, &path, true));
                Some(target)
            }
            DataUri::Https(url) => {
                self.downloads();
                let name = url
                    .split(['?', '#'])
                    .next()
                    .and_then(|u| u.rsplit('/').next())
                    .filter(|f| !f.is_empty())
                    .unwrap_or("data");
                let dir = format!("{DOWNLOADS_DIR}/{download_as}");
                let target = format!("{dir}/{name}");
                self.fetch
                    .push(format!("fetch {} {}", sh_quote(&url), sh_quote(&target)));
                Some(if file { target } else { dir })
            }
            DataUri::ConfigMap(name) => {
                self.volumes.push(Volume {
                    name: "code".into(),
                    config_map: Some(ConfigMapVolumeSource {
                        name,
                        ..ConfigMapVolumeSource::default()
                    }),
                    ..Volume::default()
                });
                self.mounts.push(mount("code", at, "", true));
                Some(at.to_string())
            }
        }
    }
}

/// The Indexed Job.
pub fn job(bj: &BatchJob, target: &Target, driver_image: &str) -> Job {
    let d = &target.deployment;
    let r = &target.resolved;
    let n = instance_count(bj, target);
    let mut data = Data::default();

    // Code, model, input: read-only; output: the shared writable folder.
    data.read_only(&d.code_configuration.code, CODE_DIR, "code", false);
    let model_dir = data.read_only(&d.model, MODEL_DIR, "model", false);
    let input_is_file = bj.spec.input.type_ == BatchInputType::UriFile;
    let input = data
        .read_only(
            &bj.spec.input.path,
            &format!("{INPUT_DIR}/input"),
            "input",
            input_is_file,
        )
        .unwrap_or_else(|| format!("{INPUT_DIR}/input"));
    if let Ok(DataUri::Pvc { claim, path }) = target.output_location.parse::<DataUri>() {
        let vol = data.claim(&claim);
        data.mounts.push(mount(&vol, OUTPUT_DIR, &path, false));
    }
    data.volumes.push(empty_dir("mlcompute-bin"));
    data.mounts.push(mount("mlcompute-bin", BIN_DIR, "", true));
    data.volumes.push(empty_dir("progress"));
    data.mounts.push(mount("progress", PROGRESS_DIR, "", false));
    data.volumes.push(token_volume());

    let script = format!("{CODE_DIR}/{}", d.code_configuration.scoring_script);
    let paths = PodPaths {
        input: input.as_ref(),
        output: OUTPUT_DIR.as_ref(),
        scoring_script: script.as_ref(),
        model_dir: model_dir.as_deref().map(AsRef::as_ref),
    };
    let driver_vars = driver_env(&d.settings, bj.spec.overrides.as_ref(), n, paths);
    // The Environment's variables first; anything the driver sets replaces them.
    let mut vars: Vec<EnvVar> = r
        .environment_variables
        .iter()
        .filter(|(k, _)| !driver_vars.iter().any(|(dk, _)| dk == *k))
        .map(|(k, v)| env(k, v.clone()))
        .collect();
    vars.extend(driver_vars.into_iter().map(|(k, v)| env(&k, v)));
    vars.push(env(driver_contract::PROGRESS_FILE, PROGRESS_FILE));

    let driver = Container {
        name: DRIVER_CONTAINER.into(),
        image: Some(r.image.clone()),
        command: Some(vec![format!("{BIN_DIR}/mlcompute"), DRIVER_COMMAND.into()]),
        working_dir: Some(CODE_DIR.into()),
        env: Some(vars),
        resources: Some(ResourceRequirements {
            requests: Some(r.resources.requests.clone()).filter(|m| !m.is_empty()),
            limits: Some(r.resources.limits.clone()).filter(|m| !m.is_empty()),
            ..ResourceRequirements::default()
        }),
        volume_mounts: Some(data.mounts.clone()),
        // The driver's last stderr line (its reason) lands in the Pod's terminated state.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };
    let mut init = vec![Container {
        name: "install-mlcompute".into(),
        image: Some(driver_image.into()),
        // The image's entrypoint is the mlcompute binary (`/mlcompute` on an empty base).
        args: Some(vec![
            COPY_BINARY_COMMAND.into(),
            format!("{BIN_DIR}/mlcompute"),
        ]),
        volume_mounts: Some(vec![mount("mlcompute-bin", BIN_DIR, "", false)]),
        ..Container::default()
    }];
    if !data.fetch.is_empty() {
        init.push(Container {
            name: "fetch-data".into(),
            image: Some(r.image.clone()),
            command: Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("set -e\n{FETCH_FN}\n{}", data.fetch.join("\n")),
            ]),
            volume_mounts: Some(vec![mount("downloads", DOWNLOADS_DIR, "", false)]),
            ..Container::default()
        });
    }
    init.push(relay(bj, driver_image));

    let annotations: BTreeMap<String, String> = bj
        .annotations()
        .iter()
        .filter(|(k, _)| {
            !k.starts_with("kubectl.kubernetes.io/") && !k.starts_with("mlcompute.io/")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let fail_on = |codes: Vec<i32>| PodFailurePolicyRule {
        action: "FailJob".into(),
        on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
            container_name: Some(DRIVER_CONTAINER.into()),
            operator: "In".into(),
            values: codes,
        }),
        ..PodFailurePolicyRule::default()
    };
    let mut job = Job {
        metadata: child_meta(bj, bj.name_any(), COMPONENT),
        spec: Some(JobSpec {
            completion_mode: Some("Indexed".into()),
            completions: Some(n),
            parallelism: Some(n),
            backoff_limit: Some(backoff_limit(bj, target)),
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![
                    // Crossing the error threshold, a scoring script that cannot start, or bad
                    // settings: no retry changes the outcome.
                    fail_on(vec![
                        exit_codes::USAGE,
                        exit_codes::THRESHOLD_CROSSED,
                        exit_codes::WORKER_START_FAILED,
                    ]),
                    // Evictions and preemptions are not the job's fault.
                    PodFailurePolicyRule {
                        action: "Ignore".into(),
                        on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                            type_: "DisruptionTarget".into(),
                            status: Some("True".into()),
                        }]),
                        ..PodFailurePolicyRule::default()
                    },
                ],
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(bj, COMPONENT)),
                    annotations: Some(annotations).filter(|a| !a.is_empty()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: Some(driver_account_name(bj)),
                    // Only the relay mounts a token (its own projected volume).
                    automount_service_account_token: Some(false),
                    init_containers: Some(init),
                    containers: vec![driver],
                    volumes: Some(data.volumes),
                    node_selector: Some(r.node_selector.clone()).filter(|m| !m.is_empty()),
                    tolerations: Some(r.tolerations.clone()).filter(|t| !t.is_empty()),
                    image_pull_secrets: Some(
                        r.image_pull_secrets
                            .iter()
                            .map(|s| LocalObjectReference { name: s.clone() })
                            .collect::<Vec<_>>(),
                    )
                    .filter(|s| !s.is_empty()),
                    enable_service_links: Some(false),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    };
    // Last, so that it covers every container the Pod got.
    if let Some(pod) = job.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        let user = UserSecurity {
            pod: d.pod_security_context.as_ref(),
            container: d.security_context.as_ref(),
        };
        pod_security::apply(pod, user);
    }
    job
}

/// The relay sidecar (an init container that keeps running): the mlcompute image, the Pod's only
/// token, the progress folder read-only.
fn relay(bj: &BatchJob, driver_image: &str) -> Container {
    let quantities = |cpu: Option<&str>, memory: &str| {
        let mut m = BTreeMap::from([("memory".to_string(), Quantity(memory.into()))]);
        if let Some(cpu) = cpu {
            m.insert("cpu".into(), Quantity(cpu.into()));
        }
        Some(m)
    };
    Container {
        name: RELAY_CONTAINER.into(),
        image: Some(driver_image.into()),
        args: Some(vec![RELAY_COMMAND.into()]),
        restart_policy: Some("Always".into()),
        env: Some(vec![
            env(driver_contract::PROGRESS_FILE, PROGRESS_FILE),
            env(driver_contract::PROGRESS_CONFIGMAP, progress_name(bj)),
            field_env(driver_contract::POD_NAMESPACE, "metadata.namespace"),
            field_env(
                driver_contract::INSTANCE_INDEX,
                "metadata.annotations['batch.kubernetes.io/job-completion-index']",
            ),
        ]),
        resources: Some(ResourceRequirements {
            requests: quantities(Some("10m"), "16Mi"),
            limits: quantities(None, "64Mi"),
            ..ResourceRequirements::default()
        }),
        volume_mounts: Some(vec![
            mount("progress", PROGRESS_DIR, "", true),
            mount(TOKEN_VOLUME, TOKEN_DIR, "", true),
        ]),
        ..Container::default()
    }
}

/// The relay's credentials, as the kubelet would have mounted them for every container: a bound
/// token of the Pod's ServiceAccount, the cluster CA and the namespace.
fn token_volume() -> Volume {
    Volume {
        name: TOKEN_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".into(),
                        expiration_seconds: Some(TOKEN_SECONDS),
                        audience: None,
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".into(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".into(),
                            path: "ca.crt".into(),
                            mode: None,
                        }]),
                        optional: None,
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".into(),
                            field_ref: Some(ObjectFieldSelector {
                                api_version: Some("v1".into()),
                                field_path: "metadata.namespace".into(),
                            }),
                            ..DownwardAPIVolumeFile::default()
                        }]),
                    }),
                    ..VolumeProjection::default()
                },
            ]),
            default_mode: None,
        }),
        ..Volume::default()
    }
}

/// The job's progress object: the relays write one key each, the controller sums them.
pub fn progress_config_map(bj: &BatchJob) -> ConfigMap {
    ConfigMap {
        metadata: child_meta(bj, progress_name(bj), PROGRESS_COMPONENT),
        ..ConfigMap::default()
    }
}

/// The driver Pods' ServiceAccount.
pub fn service_account(bj: &BatchJob) -> ServiceAccount {
    ServiceAccount {
        metadata: child_meta(bj, driver_account_name(bj), COMPONENT),
        ..ServiceAccount::default()
    }
}

/// May read and patch the job's progress ConfigMap, and nothing else.
pub fn role(bj: &BatchJob) -> Role {
    Role {
        metadata: child_meta(bj, driver_account_name(bj), COMPONENT),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            resource_names: Some(vec![progress_name(bj)]),
            verbs: vec!["get".into(), "patch".into()],
            ..PolicyRule::default()
        }]),
    }
}

/// Binds [`role`] to [`service_account`].
pub fn role_binding(bj: &BatchJob) -> RoleBinding {
    let name = driver_account_name(bj);
    RoleBinding {
        metadata: child_meta(bj, name.clone(), COMPONENT),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name,
            namespace: bj.namespace(),
            ..Subject::default()
        }]),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::controllers::batch::job::resolve::{JobResolution, resolve};

    fn target(job: &BatchJob) -> Target {
        let e = serde_json::from_value(json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "BatchEndpoint",
            "metadata": { "name": "scorer", "namespace": "ns" },
            "spec": { "defaults": { "deploymentName": "blue", "outputPath": "pvc://results/batch" } }
        }))
        .unwrap();
        let d: crate::api::batch_deployment::BatchDeployment = serde_json::from_value(json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "BatchDeployment",
            "metadata": { "name": "blue", "namespace": "ns" },
            "spec": { "endpointName": "scorer", "model": "https://models.example.com/m.onnx?sig=1",
                      "image": "python:3.12", "resources": { "instanceCount": 2 },
                      "settings": { "miniBatchSize": 20, "environmentVariables": { "LABELS": "a,b" } },
                      "codeConfiguration": { "code": "configmap://score", "scoringScript": "score.py" } }
        }))
        .unwrap();
        let found = crate::controllers::batch::deployment::resolve::Found {
            endpoint_exists: true,
            ..Default::default()
        };
        let r = crate::controllers::batch::deployment::resolve::resolve(&d.spec, found);
        match resolve(job, Some(&e), |_| Some((d.clone(), r))) {
            JobResolution::Ready(t) => *t,
            other => panic!("{other:?}"),
        }
    }

    fn bj(overrides: serde_json::Value) -> BatchJob {
        serde_json::from_value(json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "BatchJob",
            "metadata": { "name": "scorer-abc12", "namespace": "ns", "uid": "u1",
                          "annotations": { "sidecar.istio.io/inject": "false",
                                           "kubectl.kubernetes.io/last-applied-configuration": "{}" } },
            "spec": { "endpointName": "scorer", "input": { "path": "pvc://data/images/2026" },
                      "overrides": overrides }
        }))
        .unwrap()
    }

    fn env_of(job: &Job) -> BTreeMap<String, String> {
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        pod.containers[0]
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e.name.clone(),
                    e.value.clone().unwrap_or_else(|| "<ref>".into()),
                )
            })
            .collect()
    }

    #[test]
    fn an_indexed_job_with_one_instance_per_shard() {
        let b = bj(json!(null));
        let j = job(&b, &target(&b), "ghcr.io/mlcompute/mlcompute:0.1.0");
        let spec = j.spec.as_ref().unwrap();
        assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
        assert_eq!((spec.completions, spec.parallelism), (Some(2), Some(2)));
        assert_eq!(spec.backoff_limit, Some(3));
        let rules = &spec.pod_failure_policy.as_ref().unwrap().rules;
        let codes = &rules[0].on_exit_codes.as_ref().unwrap().values;
        assert_eq!(rules[0].action, "FailJob");
        assert!(codes.contains(&3) && codes.contains(&4), "{codes:?}");
        assert_eq!(j.owner_references()[0].uid, "u1");
        let env = env_of(&j);
        assert_eq!(env["MLCOMPUTE_BATCH_INSTANCE_COUNT"], "2");
        assert_eq!(env["MLCOMPUTE_BATCH_MINI_BATCH_SIZE"], "20");
        assert_eq!(env["MLCOMPUTE_BATCH_INPUT"], "/mnt/azureml/inputs/input");
        assert_eq!(env["MLCOMPUTE_BATCH_OUTPUT"], OUTPUT_DIR);
        assert_eq!(
            env["MLCOMPUTE_BATCH_SCORING_SCRIPT"],
            "/var/azureml-app/score.py"
        );
        assert_eq!(env["AZUREML_MODEL_DIR"], "/mnt/azureml/downloads/model");
        assert_eq!(env["MLCOMPUTE_PROGRESS_FILE"], PROGRESS_FILE);
        assert_eq!(env["LABELS"], "a,b");

        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some("scorer-abc12-driver")
        );
        let init = pod.init_containers.as_ref().unwrap();
        assert_eq!(
            init[0].image.as_deref(),
            Some("ghcr.io/mlcompute/mlcompute:0.1.0")
        );
        assert_eq!(init[0].args.as_ref().unwrap()[0], "copy-binary");
        assert!(init[1].command.as_ref().unwrap()[2].contains(
            "fetch 'https://models.example.com/m.onnx?sig=1' '/mnt/azureml/downloads/model/m.onnx'"
        ));
        let main = &pod.containers[0];
        assert_eq!(main.image.as_deref(), Some("python:3.12"));
        assert_eq!(
            main.command.as_ref().unwrap()[0],
            "/opt/mlcompute/bin/mlcompute"
        );
        let mounts = main.volume_mounts.as_ref().unwrap();
        let at = |p: &str| mounts.iter().find(|m| m.mount_path == p).unwrap();
        assert_eq!(
            at("/mnt/azureml/inputs/input").sub_path.as_deref(),
            Some("images/2026")
        );
        assert_eq!(
            at(OUTPUT_DIR).sub_path.as_deref(),
            Some("batch/scorer-abc12")
        );
        assert_eq!(at(OUTPUT_DIR).read_only, None);
        let annotations = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap();
        assert_eq!(annotations.len(), 1, "{annotations:?}");
        assert_eq!(annotations["sidecar.istio.io/inject"], "false");
    }

    #[test]
    fn overrides_win() {
        let b = bj(json!({ "instanceCount": 4, "miniBatchSize": 5, "maxRetries": 0 }));
        let j = job(&b, &target(&b), "img");
        let spec = j.spec.as_ref().unwrap();
        assert_eq!((spec.completions, spec.backoff_limit), (Some(4), Some(0)));
        let env = env_of(&j);
        assert_eq!(env["MLCOMPUTE_BATCH_INSTANCE_COUNT"], "4");
        assert_eq!(env["MLCOMPUTE_BATCH_MINI_BATCH_SIZE"], "5");
    }

    #[test]
    fn the_driver_account_may_patch_its_progress_object_and_nothing_else() {
        let b = bj(json!(null));
        let rules = role(&b).rules.unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["configmaps".to_string()][..])
        );
        assert_eq!(
            rules[0].resource_names.as_deref(),
            Some(&["scorer-abc12-progress".to_string()][..])
        );
        assert_eq!(rules[0].verbs, vec!["get", "patch"]);
        assert_eq!(rules[0].api_groups.as_deref(), Some(&[String::new()][..]));
        let rb = role_binding(&b);
        assert_eq!(rb.subjects.unwrap()[0].namespace.as_deref(), Some("ns"));
        let cm = progress_config_map(&b);
        assert_eq!(cm.name_any(), "scorer-abc12-progress");
        assert_eq!(cm.owner_references()[0].uid, "u1");
        assert_eq!(
            cm.labels()["app.kubernetes.io/component"],
            PROGRESS_COMPONENT
        );
    }

    /// Every volume that carries a token (projected serviceAccountToken, or a Secret).
    fn token_volumes(pod: &PodSpec) -> Vec<String> {
        pod.volumes
            .iter()
            .flatten()
            .filter(|v| {
                v.secret.is_some()
                    || v.projected.as_ref().is_some_and(|p| {
                        p.sources
                            .iter()
                            .flatten()
                            .any(|s| s.service_account_token.is_some())
                    })
            })
            .map(|v| v.name.clone())
            .collect()
    }

    #[test]
    fn only_the_relay_holds_a_token() {
        let b = bj(json!(null));
        let j = job(&b, &target(&b), "img");
        let pod = j.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(token_volumes(&pod), vec![TOKEN_VOLUME.to_string()]);
        let init = pod.init_containers.clone().unwrap();
        assert!(init.len() >= 3, "install, fetch, relay: {init:?}");
        let mut with_token = Vec::new();
        for c in init.iter().chain(&pod.containers) {
            let mounts = c.volume_mounts.iter().flatten();
            let has = mounts.clone().any(|m| {
                token_volumes(&pod).contains(&m.name)
                    || m.mount_path.starts_with("/var/run/secrets")
            });
            if has {
                with_token.push(c.name.clone());
            }
        }
        assert_eq!(with_token, vec![RELAY_CONTAINER]);

        let relay = init.iter().find(|c| c.name == RELAY_CONTAINER).unwrap();
        assert_eq!(relay.restart_policy.as_deref(), Some("Always"), "a sidecar");
        assert_eq!(relay.image.as_deref(), Some("img"), "the mlcompute image");
        assert_eq!(
            relay.args.as_deref(),
            Some(&["batch-progress-relay".to_string()][..])
        );
        assert!(
            relay.command.is_none(),
            "the image's entrypoint is mlcompute"
        );
        let at = |c: &Container, path: &str| {
            c.volume_mounts
                .iter()
                .flatten()
                .find(|m| m.mount_path == path)
                .cloned()
        };
        let token = at(relay, TOKEN_DIR).unwrap();
        assert_eq!(
            (token.name.as_str(), token.read_only),
            (TOKEN_VOLUME, Some(true))
        );
        assert_eq!(at(relay, PROGRESS_DIR).unwrap().read_only, Some(true));
        let driver = &pod.containers[0];
        assert_eq!(at(driver, PROGRESS_DIR).unwrap().read_only, None);
        let projected = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == TOKEN_VOLUME)
            .and_then(|v| v.projected.clone())
            .unwrap();
        let paths: Vec<String> = projected
            .sources
            .unwrap()
            .iter()
            .map(|s| {
                s.service_account_token
                    .as_ref()
                    .map(|t| t.path.clone())
                    .or_else(|| Some(s.config_map.as_ref()?.items.as_ref()?[0].path.clone()))
                    .or_else(|| Some(s.downward_api.as_ref()?.items.as_ref()?[0].path.clone()))
                    .unwrap()
            })
            .collect();
        assert_eq!(
            paths,
            ["token", "ca.crt", "namespace"],
            "what in-cluster config reads"
        );
        let relay_env: BTreeMap<_, _> = relay
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e))
            .collect();
        assert_eq!(
            relay_env["MLCOMPUTE_PROGRESS_CONFIGMAP"].value.as_deref(),
            Some("scorer-abc12-progress")
        );
        assert_eq!(
            relay_env["MLCOMPUTE_PROGRESS_FILE"].value.as_deref(),
            Some(PROGRESS_FILE)
        );
        assert!(relay_env["JOB_COMPLETION_INDEX"].value_from.is_some());
    }

    #[test]
    fn the_deployments_security_context_covers_every_container() {
        let b = bj(json!(null));
        let mut t = target(&b);
        let pod_of = |t: &Target| job(&b, t, "img").spec.unwrap().template.spec.unwrap();
        let pod = pod_of(&t);
        assert_eq!(
            pod.security_context.unwrap().seccomp_profile.unwrap().type_,
            "RuntimeDefault"
        );
        for c in pod.init_containers.iter().flatten().chain(&pod.containers) {
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        }
        t.deployment.pod_security_context =
            Some(serde_json::from_value(json!({ "runAsUser": 1000 })).unwrap());
        let pod = pod_of(&t);
        let every: Vec<_> = pod
            .init_containers
            .iter()
            .flatten()
            .chain(&pod.containers)
            .collect();
        assert_eq!(
            every.len(),
            4,
            "copy-binary, the progress relay, fetch-data and the driver"
        );
        for c in every {
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.run_as_non_root, Some(true), "{}", c.name);
            assert_eq!(
                sc.capabilities.as_ref().unwrap().drop.as_deref(),
                Some(&["ALL".to_string()][..])
            );
        }
    }
}
