//! Inputs, outputs and code: which volumes, mounts and fetch steps a job's Pods need, and the
//! local path each `${{inputs.x}}` / `${{outputs.x}}` in the command stands for. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMapVolumeSource, Volume, VolumeMount};

use crate::{
    api::{
        common::{DataUri, InputMode, InputType, JobInput, JobOutput, OutputMode},
        training_job::TrainingJob,
    },
    runtime::pod_data::{claim_volume, empty_dir, mount, sh_quote},
};

pub const INPUTS_DIR: &str = "/mnt/azureml/inputs";
pub const OUTPUTS_DIR: &str = "/mnt/azureml/outputs";
pub const CODE_DIR: &str = "/mnt/azureml/code";
/// Where claims are mounted whole for download and upload copies.
const CLAIMS_DIR: &str = "/mnt/azureml/claims";

/// Volumes and mounts for the main container, plus a shell script for the init container
/// (downloads and copies) and one to run after the command (uploads).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DataPlan {
    pub volumes: Vec<Volume>,
    pub mounts: Vec<VolumeMount>,
    /// Mounts the fetch (init) container needs.
    pub fetch_mounts: Vec<VolumeMount>,
    /// Shell lines that fetch inputs before the command starts; empty: no init container.
    pub fetch_script: Vec<String>,
    /// Shell lines that copy `upload` outputs to their claims after the command exits.
    pub upload_script: Vec<String>,
    /// What each `${{inputs.x}}` / `${{outputs.x}}` is replaced with.
    pub substitutions: BTreeMap<String, String>,
    pub working_dir: Option<String>,
}

impl DataPlan {
    /// The volume for claim `claim`, added once; returns its name.
    fn claim_volume(&mut self, claim: &str) -> String {
        claim_volume(&mut self.volumes, claim)
    }

    fn scratch(&mut self, name: &str, path: &str) {
        if !self.volumes.iter().any(|v| v.name == name) {
            self.volumes.push(empty_dir(name));
            self.mounts.push(mount(name, path, "", false));
            self.fetch_mounts.push(mount(name, path, "", false));
        }
    }

    fn input(&mut self, name: &str, input: &JobInput) {
        let key = format!("inputs.{name}");
        if input.type_ == InputType::Literal {
            self.substitutions
                .insert(key, input.value.clone().unwrap_or_default());
            return;
        }
        let Some(path) = input.path.as_deref() else {
            return;
        };
        let local = format!("{INPUTS_DIR}/{name}");
        match (path.parse::<DataUri>(), input.mode) {
            (_, Some(InputMode::Direct)) | (Err(_), _) => {
                self.substitutions.insert(key, path.to_string());
            }
            (Ok(DataUri::Pvc { claim, path: sub }), None | Some(InputMode::RoMount)) => {
                let vol = self.claim_volume(&claim);
                self.mounts.push(mount(&vol, &local, &sub, true));
                self.substitutions.insert(key, local);
            }
            (Ok(DataUri::Pvc { claim, path: sub }), Some(InputMode::Download)) => {
                let vol = self.claim_volume(&claim);
                let src = format!("{CLAIMS_DIR}/{vol}");
                if !self.fetch_mounts.iter().any(|m| m.mount_path == src) {
                    self.fetch_mounts.push(mount(&vol, &src, "", true));
                }
                self.scratch("inputs", INPUTS_DIR);
                self.fetch_script.push(format!(
                    "cp -R {} {}",
                    sh_quote(&format!("{src}/{sub}")),
                    sh_quote(&local)
                ));
                self.substitutions.insert(key, local);
            }
            (Ok(DataUri::Https(url)), _) => {
                self.scratch("inputs", INPUTS_DIR);
                let file = url
                    .rsplit('/')
                    .next()
                    .filter(|f| !f.is_empty())
                    .unwrap_or("data");
                let file = file.split(['?', '#']).next().unwrap_or("data");
                let target = format!("{local}/{file}");
                self.fetch_script
                    .push(format!("fetch {} {}", sh_quote(&url), sh_quote(&target)));
                self.substitutions.insert(key, target);
            }
            (Ok(DataUri::ConfigMap(_)), _) => {
                self.substitutions.insert(key, path.to_string());
            }
        }
    }

    fn output(&mut self, name: &str, output: &JobOutput) {
        let key = format!("outputs.{name}");
        let local = format!("{OUTPUTS_DIR}/{name}");
        let Ok(DataUri::Pvc { claim, path: sub }) = output.path.parse::<DataUri>() else {
            return;
        };
        let vol = self.claim_volume(&claim);
        match output.mode {
            OutputMode::RwMount => self.mounts.push(mount(&vol, &local, &sub, false)),
            OutputMode::Upload => {
                self.scratch("outputs", OUTPUTS_DIR);
                let dst = format!("{CLAIMS_DIR}/{vol}");
                if !self.mounts.iter().any(|m| m.mount_path == dst) {
                    self.mounts.push(mount(&vol, &dst, "", false));
                }
                self.upload_script.push(format!(
                    "mkdir -p {d} && cp -R {s}/. {d}/",
                    d = sh_quote(&format!("{dst}/{sub}")),
                    s = sh_quote(&local)
                ));
                self.fetch_script
                    .push(format!("mkdir -p {}", sh_quote(&local)));
            }
        }
        self.substitutions.insert(key, local);
    }

    fn code(&mut self, code: &str) {
        match code.parse::<DataUri>() {
            Ok(DataUri::ConfigMap(name)) => {
                self.volumes.push(Volume {
                    name: "code".into(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: name.clone(),
                        ..ConfigMapVolumeSource::default()
                    }),
                    ..Volume::default()
                });
                self.mounts.push(mount("code", CODE_DIR, "", true));
                self.working_dir = Some(CODE_DIR.into());
            }
            Ok(DataUri::Pvc { claim, path }) => {
                let vol = self.claim_volume(&claim);
                self.mounts.push(mount(&vol, CODE_DIR, &path, true));
                self.working_dir = Some(CODE_DIR.into());
            }
            _ => {}
        }
    }
}

/// The data plan of `job`.
pub fn plan(job: &TrainingJob) -> DataPlan {
    let mut plan = DataPlan::default();
    if let Some(code) = job.spec.code.as_deref() {
        plan.code(code);
    }
    for (name, input) in &job.spec.inputs {
        plan.input(name, input);
    }
    for (name, output) in &job.spec.outputs {
        plan.output(name, output);
    }
    plan
}

/// `command` with every `${{inputs.x}}` / `${{outputs.x}}` replaced.
pub fn substitute(command: &str, subs: &BTreeMap<String, String>) -> String {
    let mut out = command.to_string();
    for (key, value) in subs {
        out = out.replace(&format!("${{{{{key}}}}}"), value);
    }
    out
}
