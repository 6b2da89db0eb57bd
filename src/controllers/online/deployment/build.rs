//! Pure builders: the Deployment, Service and scoring-server ConfigMap of one OnlineDeployment,
//! from the deployment and what it resolved to. No HorizontalPodAutoscaler: Azure ML says never to
//! put one on these deployments; `target_utilization` is the operator's autoscaler
//! (`controllers::autoscaler`), which sizes the Deployment through its scale subresource.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment},
        core::v1::{
            ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
            EnvVar, HTTPGetAction, LocalObjectReference, PodSpec, PodTemplateSpec, Probe,
            ResourceRequirements, Service, ServicePort, ServiceSpec, Volume,
        },
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use kube::ResourceExt;

use crate::{
    api::{
        common::DataUri,
        online_deployment::{OnlineDeployment, ProbeSettings, ScaleType},
    },
    contract::{
        AZUREML_MODEL_DIR,
        scoring_server::{
            APP_ROOT, ENTRY_SCRIPT, FILE_NAME as SERVER_FILE, SCORING_SERVER_PY, SERVER_DIR,
            SERVING_PORT, WORKER_COUNT, launch_command,
        },
    },
    controllers::online::resolve::{Resolved, Routes},
    runtime::{
        children::{LABEL_MANAGED_BY, MANAGER, child_meta, owner_label_key},
        pod_data::{self, FETCH_FN, mount, sh_quote},
        pod_security::{self, UserSecurity},
    },
};

/// Where the scoring code is mounted (Azure ML's app root).
pub const CODE_DIR: &str = "/var/azureml-app";
/// Where the code's ConfigMap or claim is mounted for the copy into [`CODE_DIR`].
pub const CODE_SOURCE_DIR: &str = "/var/mlcompute/code";
/// Copies the code (following the ConfigMap's symlinks, skipping its `..data` bookkeeping).
const COPY_CODE: &str = "import shutil; shutil.copytree('/var/mlcompute/code', '/var/azureml-app', dirs_exist_ok=True, ignore=shutil.ignore_patterns('..*'))";
/// Label naming the endpoint on every child and pod.
pub const ENDPOINT_LABEL: &str = "mlcompute.io/onlineendpoint";
/// The serving container's name (as in Azure ML).
pub const CONTAINER: &str = "inference-server";
/// The Service port name the router looks up in EndpointSlices.
pub const PORT_NAME: &str = "http";

/// Name of the Deployment, Service and HPA: the OnlineDeployment's own.
pub fn name(od: &OnlineDeployment) -> String {
    od.name_any()
}

/// Name of the ConfigMap holding the shipped scoring server.
pub fn server_config_map_name(od: &OnlineDeployment) -> String {
    format!("{}-scoring-server", od.name_any())
}

/// The labels that select this deployment's pods (stable: a Deployment selector is immutable).
pub fn selector_labels(od: &OnlineDeployment) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGER.to_string()),
        (owner_label_key::<OnlineDeployment>(), od.name_any()),
    ])
}

/// The selector as `key=value,…`, for status (scale subresource).
pub fn selector_string(od: &OnlineDeployment) -> String {
    selector_labels(od)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn meta(
    od: &OnlineDeployment,
    name: String,
    component: &str,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    let mut m = child_meta(od, name, component);
    m.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(ENDPOINT_LABEL.into(), od.spec.endpoint_name.clone());
    m
}

/// The model's path in the container.
pub fn model_dir(od: &OnlineDeployment) -> String {
    od.spec
        .model_mount_path
        .clone()
        .unwrap_or_else(|| format!("{CODE_DIR}/azureml-models/{}", od.name_any()))
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn probe(path: &str, port: i32, s: &ProbeSettings) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(s.initial_delay),
        period_seconds: Some(s.period),
        timeout_seconds: Some(s.timeout),
        success_threshold: Some(s.success_threshold),
        failure_threshold: Some(s.failure_threshold),
        ..Probe::default()
    }
}

fn config_map_volume(name: &str, config_map: &str) -> Volume {
    Volume {
        name: name.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map.into(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// The pod template: serving container, model and code volumes, probes and placement.
pub fn pod_template(
    od: &OnlineDeployment,
    resolved: &Resolved,
    routes: &Routes,
) -> PodTemplateSpec {
    let spec = &od.spec;
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let mut init_containers = Vec::new();
    let mut env_map: BTreeMap<String, String> = resolved.environment_variables.clone();
    env_map.extend(spec.environment_variables.clone());
    let mut fixed = Vec::new();

    if let Some(model) = spec
        .model
        .as_deref()
        .and_then(|m| m.parse::<DataUri>().ok())
    {
        let dir = model_dir(od);
        match model {
            DataUri::Pvc { claim, path } => {
                volumes.push(pod_data::claim("model", &claim, true));
                mounts.push(mount("model", &dir, &path, true));
            }
            DataUri::Https(url) => {
                volumes.push(Volume {
                    name: "model".into(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                });
                mounts.push(mount("model", &dir, "", true));
                let file = url
                    .split(['?', '#'])
                    .next()
                    .and_then(|u| u.rsplit('/').next())
                    .filter(|f| !f.is_empty())
                    .unwrap_or("model");
                let script = format!(
                    "set -e\n{FETCH_FN}\nfetch {} {}",
                    sh_quote(&url),
                    sh_quote(&format!("{dir}/{file}"))
                );
                init_containers.push(Container {
                    name: "storage-initializer".into(),
                    image: Some(resolved.image.clone()),
                    command: Some(vec!["/bin/sh".into(), "-c".into(), script]),
                    volume_mounts: Some(vec![mount("model", &dir, "", false)]),
                    ..Container::default()
                });
            }
            DataUri::ConfigMap(_) => {}
        }
        fixed.push(env(AZUREML_MODEL_DIR, dir));
    }

    let command = spec.code_configuration.as_ref().map(|code| {
        // The code is copied into a writable emptyDir at the app root: ConfigMap and claim
        // mounts are read-only, and the model's default mount point lies inside the app root
        // (a mount point cannot be created inside a read-only mount).
        let source = match code.code.parse::<DataUri>() {
            Ok(DataUri::ConfigMap(name)) => {
                volumes.push(config_map_volume("code", &name));
                Some(mount("code", CODE_SOURCE_DIR, "", true))
            }
            Ok(DataUri::Pvc { claim, path }) => {
                volumes.push(pod_data::claim("code", &claim, true));
                Some(mount("code", CODE_SOURCE_DIR, &path, true))
            }
            _ => None,
        };
        volumes.push(Volume {
            name: "app".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
        mounts.push(mount("app", CODE_DIR, "", false));
        if let Some(source) = source {
            init_containers.insert(
                0,
                Container {
                    name: "code-initializer".into(),
                    image: Some(resolved.image.clone()),
                    command: Some(vec!["python3".into(), "-c".into(), COPY_CODE.into()]),
                    volume_mounts: Some(vec![source, mount("app", CODE_DIR, "", false)]),
                    ..Container::default()
                },
            );
        }
        volumes.push(config_map_volume(
            "scoring-server",
            &server_config_map_name(od),
        ));
        mounts.push(mount("scoring-server", SERVER_DIR, "", true));
        fixed.push(env(
            ENTRY_SCRIPT,
            format!("{CODE_DIR}/{}", code.scoring_script),
        ));
        fixed.push(env(SERVING_PORT, routes.port.to_string()));
        fixed.push(env(APP_ROOT, CODE_DIR));
        // Worker processes: the user's WORKER_COUNT (as in Azure ML), else one per request the
        // router lets through at once.
        if !env_map.contains_key(WORKER_COUNT) {
            fixed.push(env(
                WORKER_COUNT,
                spec.request_settings
                    .max_concurrent_requests_per_instance
                    .to_string(),
            ));
        }
        launch_command(spec.scoring_server)
    });

    let mut env_vars: Vec<EnvVar> = env_map
        .into_iter()
        .filter(|(k, _)| !fixed.iter().any(|f| &f.name == k))
        .map(|(k, v)| env(&k, v))
        .collect();
    env_vars.extend(fixed);

    let r = &resolved.resources;
    let container = Container {
        name: CONTAINER.into(),
        image: Some(resolved.image.clone()),
        command,
        env: Some(env_vars),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.into()),
            container_port: routes.port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        liveness_probe: Some(probe(
            &routes.liveness_path,
            routes.liveness_port,
            &spec.liveness_probe,
        )),
        readiness_probe: Some(probe(
            &routes.readiness_path,
            routes.readiness_port,
            &spec.readiness_probe,
        )),
        resources: Some(ResourceRequirements {
            requests: (!r.requests.is_empty()).then(|| r.requests.clone()),
            limits: (!r.limits.is_empty()).then(|| r.limits.clone()),
            ..ResourceRequirements::default()
        }),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        ..Container::default()
    };
    let mut labels = meta(od, String::new(), "instance")
        .labels
        .unwrap_or_default();
    labels.extend(selector_labels(od));
    let mut pod_spec = PodSpec {
        containers: vec![container],
        init_containers: (!init_containers.is_empty()).then_some(init_containers),
        volumes: (!volumes.is_empty()).then_some(volumes),
        node_selector: (!resolved.node_selector.is_empty()).then(|| resolved.node_selector.clone()),
        tolerations: (!resolved.tolerations.is_empty()).then(|| resolved.tolerations.clone()),
        image_pull_secrets: (!resolved.image_pull_secrets.is_empty()).then(|| {
            resolved
                .image_pull_secrets
                .iter()
                .map(|s| LocalObjectReference { name: s.clone() })
                .collect()
        }),
        ..PodSpec::default()
    };
    pod_security::service_account(&mut pod_spec, spec.service_account_name.as_deref());
    pod_security::apply(
        &mut pod_spec,
        UserSecurity {
            pod: spec.pod_security_context.as_ref(),
            container: spec.security_context.as_ref(),
        },
    );
    PodTemplateSpec {
        metadata: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            labels: Some(labels),
            ..Default::default()
        }),
        spec: Some(pod_spec),
    }
}

/// Whether the operator's autoscaler drives the replica count.
pub fn autoscaled(od: &OnlineDeployment) -> bool {
    od.spec.scale_settings.type_ == ScaleType::TargetUtilization
}

/// The Deployment: `instanceCount` replicas (left to the autoscaler when autoscaled), a rolling update
/// that never takes a serving instance away before its replacement is ready.
pub fn deployment(od: &OnlineDeployment, resolved: &Resolved, routes: &Routes) -> Deployment {
    Deployment {
        metadata: meta(od, name(od), "serving"),
        spec: Some(DeploymentSpec {
            replicas: (!autoscaled(od)).then_some(od.spec.instance_count),
            selector: LabelSelector {
                match_labels: Some(selector_labels(od)),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: pod_template(od, resolved, routes),
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// The Service the router (through its EndpointSlices) and an HTTPRoute send traffic to.
pub fn service(od: &OnlineDeployment, routes: &Routes) -> Service {
    Service {
        metadata: meta(od, name(od), "serving"),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(od)),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.into()),
                port: routes.port,
                target_port: Some(IntOrString::String(PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The shipped scoring server, for deployments with a scoring script.
pub fn server_config_map(od: &OnlineDeployment) -> ConfigMap {
    ConfigMap {
        metadata: meta(od, server_config_map_name(od), "scoring-server"),
        data: Some(BTreeMap::from([(
            SERVER_FILE.to_string(),
            SCORING_SERVER_PY.to_string(),
        )])),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::controllers::online::resolve::{resolve_from, routes};

    fn od(spec: serde_json::Value) -> OnlineDeployment {
        serde_json::from_value(json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "OnlineDeployment",
            "metadata": { "name": "blue", "namespace": "ns", "uid": "u1" },
            "spec": spec,
        }))
        .unwrap()
    }

    fn container(d: &Deployment) -> Container {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .clone()
    }

    fn env_of(c: &Container, name: &str) -> Option<String> {
        c.env
            .as_ref()?
            .iter()
            .find(|e| e.name == name)?
            .value
            .clone()
    }

    fn scoring_od(extra: serde_json::Value) -> OnlineDeployment {
        let mut spec = json!({ "endpointName": "fraud", "image": "python:3.12",
            "model": "pvc://models/fraud/v3",
            "codeConfiguration": { "code": "configmap://fraud-code", "scoringScript": "score.py" } });
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        od(spec)
    }

    fn built(d: &OnlineDeployment) -> Container {
        let r = resolve_from(d, None, None).unwrap();
        container(&deployment(d, &r, &routes(d, None)))
    }

    #[test]
    fn scoring_script_runs_azmlinfsrv_if_the_image_has_it_else_the_shipped_server() {
        let c = built(&scoring_od(json!({})));
        let command = c.command.as_ref().unwrap();
        assert_eq!(command[..2], ["/bin/sh", "-c"]);
        assert_eq!(
            command[2],
            "if command -v azmlinfsrv >/dev/null 2>&1; then\n\
             echo 'mlcompute: serving the scoring script with azmlinfsrv (Azure ML inference server)' >&2\n\
             exec azmlinfsrv --entry_script \"$AZUREML_ENTRY_SCRIPT\" --port \"$AZUREML_SERVING_PORT\" --worker_count \"$WORKER_COUNT\"\n\
             fi\n\
             echo 'mlcompute: no azmlinfsrv in the image; serving the scoring script with the shipped server' >&2\n\
             exec python3 /var/mlcompute/server/mlcompute_scoring_server.py"
        );
        assert_eq!(c.args, None);
        // The shipped server is mounted either way (the fallback needs it).
        assert!(
            c.volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .any(|m| m.name == "scoring-server" && m.mount_path == "/var/mlcompute/server")
        );
        // What both servers read.
        assert_eq!(
            [
                "AZUREML_ENTRY_SCRIPT",
                "AZUREML_SERVING_PORT",
                "WORKER_COUNT",
                "AML_APP_ROOT",
                "AZUREML_MODEL_DIR"
            ]
            .map(|n| env_of(&c, n).unwrap_or_default()),
            [
                "/var/azureml-app/score.py",
                "5001",
                "1",
                "/var/azureml-app",
                "/var/azureml-app/azureml-models/blue"
            ]
        );
        // Probes on Azure ML's path, for either server.
        for p in [&c.liveness_probe, &c.readiness_probe] {
            let get = p.as_ref().unwrap().http_get.as_ref().unwrap();
            assert_eq!(
                (get.path.as_deref(), &get.port),
                (Some("/"), &IntOrString::Int(5001))
            );
        }
    }

    #[test]
    fn scoring_server_forces_either_server() {
        let c = built(&scoring_od(json!({ "scoringServer": "shipped" })));
        let script = &c.command.as_ref().unwrap()[2];
        assert!(!script.contains("exec azmlinfsrv"), "{script}");
        assert!(
            script.ends_with("exec python3 /var/mlcompute/server/mlcompute_scoring_server.py"),
            "{script}"
        );

        let c = built(&scoring_od(json!({ "scoringServer": "azmlinfsrv" })));
        let script = &c.command.as_ref().unwrap()[2];
        assert!(
            script.starts_with("if ! command -v azmlinfsrv >/dev/null 2>&1; then\n"),
            "{script}"
        );
        assert!(
            script.contains("exit 127") && !script.contains("python3 "),
            "{script}"
        );
        assert!(
            script.ends_with("--worker_count \"$WORKER_COUNT\""),
            "{script}"
        );

        // Without a scoring script the image's own command runs, whatever the field says.
        let d = od(
            json!({ "endpointName": "fraud", "image": "my/server", "scoringServer": "shipped" }),
        );
        assert_eq!(built(&d).command, None);
    }

    #[test]
    fn worker_count_is_the_users_else_the_concurrency_the_router_allows() {
        let c = built(&scoring_od(
            json!({ "requestSettings": { "maxConcurrentRequestsPerInstance": 4 } }),
        ));
        assert_eq!(env_of(&c, "WORKER_COUNT").as_deref(), Some("4"));
        let c = built(&scoring_od(json!({
            "requestSettings": { "maxConcurrentRequestsPerInstance": 4 },
            "environmentVariables": { "WORKER_COUNT": "2" } })));
        let counts: Vec<_> = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .filter(|e| e.name == "WORKER_COUNT")
            .collect();
        assert_eq!(counts.len(), 1);
        assert_eq!(counts[0].value.as_deref(), Some("2"));
    }

    #[test]
    fn scoring_script_runs_with_azure_ml_defaults() {
        let d = od(json!({ "endpointName": "fraud", "image": "python:3.12",
            "model": "pvc://models/fraud/v3", "instanceCount": 3,
            "codeConfiguration": { "code": "configmap://fraud-code", "scoringScript": "score.py" } }));
        let r = resolve_from(&d, None, None).unwrap();
        let dep = deployment(&d, &r, &routes(&d, None));
        let spec = dep.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(3));
        let ru = spec
            .strategy
            .as_ref()
            .unwrap()
            .rolling_update
            .as_ref()
            .unwrap();
        assert_eq!(ru.max_unavailable, Some(IntOrString::Int(0)));
        let c = container(&dep);
        assert_eq!(
            env_of(&c, "AZUREML_ENTRY_SCRIPT").unwrap(),
            "/var/azureml-app/score.py"
        );
        assert_eq!(
            env_of(&c, "AZUREML_MODEL_DIR").unwrap(),
            "/var/azureml-app/azureml-models/blue"
        );
        let live = c.liveness_probe.as_ref().unwrap();
        assert_eq!(live.http_get.as_ref().unwrap().path.as_deref(), Some("/"));
        assert_eq!(
            (
                live.initial_delay_seconds,
                live.period_seconds,
                live.timeout_seconds,
                live.failure_threshold
            ),
            (Some(10), Some(10), Some(2), Some(30))
        );
        let model = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "model")
            .unwrap();
        assert_eq!(
            (model.sub_path.as_deref(), model.read_only),
            (Some("fraud/v3"), Some(true))
        );
        let pod = dep.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let init = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(init.name, "code-initializer");
        assert_eq!(
            init.volume_mounts.as_ref().unwrap()[0].mount_path,
            CODE_SOURCE_DIR
        );
        let app = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "app")
            .unwrap();
        assert_eq!((app.mount_path.as_str(), app.read_only), (CODE_DIR, None));
        assert_eq!(
            c.resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"].0,
            "2Gi"
        );
    }

    #[test]
    fn https_model_is_downloaded_by_an_init_container() {
        let d = od(json!({ "endpointName": "fraud", "image": "python:3.12",
            "model": "https://example.com/m/model.pkl?sig=1" }));
        let r = resolve_from(&d, None, None).unwrap();
        let dep = deployment(&d, &r, &routes(&d, None));
        let pod = dep.spec.unwrap().template.spec.unwrap();
        let init = &pod.init_containers.unwrap()[0];
        assert!(
            init.command.as_ref().unwrap()[2]
                .contains("'/var/azureml-app/azureml-models/blue/model.pkl'")
        );
        assert!(
            pod.volumes
                .unwrap()
                .iter()
                .any(|v| v.name == "model" && v.empty_dir.is_some())
        );
    }

    #[test]
    fn autoscaled_deployments_leave_replicas_to_the_autoscaler() {
        let d = od(json!({ "endpointName": "fraud", "image": "x",
            "scaleSettings": { "type": "target_utilization", "minInstances": 2, "maxInstances": 5 } }));
        let r = resolve_from(&d, None, None).unwrap();
        assert_eq!(
            deployment(&d, &r, &routes(&d, None)).spec.unwrap().replicas,
            None
        );
    }

    #[test]
    fn instances_mount_no_token_unless_an_account_is_named_and_harden_every_container() {
        let d = od(json!({ "endpointName": "fraud", "image": "python:3.12",
            "model": "https://example.com/m/model.pkl",
            "codeConfiguration": { "code": "configmap://fraud-code", "scoringScript": "score.py" } }));
        let r = resolve_from(&d, None, None).unwrap();
        let pod = deployment(&d, &r, &routes(&d, None))
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        let init = pod.init_containers.clone().unwrap();
        assert_eq!(init.len(), 2, "code and model initializers");
        for c in init.iter().chain(&pod.containers) {
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
            assert_eq!(sc.run_as_non_root, None);
        }

        let d = od(json!({ "endpointName": "fraud", "image": "python:3.12",
            "model": "https://example.com/m/model.pkl",
            "serviceAccountName": "scorer",
            "podSecurityContext": { "runAsUser": 1000 },
            "securityContext": { "readOnlyRootFilesystem": true } }));
        let r = resolve_from(&d, None, None).unwrap();
        let pod = deployment(&d, &r, &routes(&d, None))
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        assert_eq!(
            (
                pod.service_account_name.as_deref(),
                pod.automount_service_account_token
            ),
            (Some("scorer"), None)
        );
        for c in pod.init_containers.iter().flatten().chain(&pod.containers) {
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(
                (sc.run_as_non_root, sc.read_only_root_filesystem),
                (Some(true), Some(true)),
                "{}",
                c.name
            );
            assert_eq!(
                sc.capabilities.as_ref().unwrap().drop.as_deref(),
                Some(&["ALL".to_string()][..])
            );
        }
    }
}
