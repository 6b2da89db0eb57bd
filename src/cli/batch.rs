//! `mlcompute batch invoke|show`: submit a BatchJob to a batch endpoint and read its progress, as
//! `az ml batch-endpoint invoke` and `az ml job show` do. Also the hidden `copy-binary` used by the
//! driver Pods' init container.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use kube::{Api, ResourceExt};

use super::job::Target;
use crate::{
    api::{
        batch_job::{BatchInput, BatchInputType, BatchJob, BatchJobStatus, BatchOverrides},
        common::{MAX_RUN_TIMEOUT, parse_duration_at_most},
    },
    contract::batch_invoke::{self as submit, InvokeRequest},
};

#[derive(Debug, clap::Subcommand)]
pub enum BatchCommand {
    /// Submit a BatchJob to a batch endpoint; prints the job's name.
    Invoke(InvokeArgs),
    /// Show a BatchJob's phase, progress and output location.
    Show {
        /// Name of the BatchJob.
        name: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, clap::Args)]
pub struct InvokeArgs {
    /// Name of the BatchEndpoint.
    pub endpoint: String,
    /// The files to score: `pvc://<claim>/<folder>` (or a single file with --input-type uri_file).
    #[arg(long)]
    pub input: String,
    /// `uri_folder` (default) or `uri_file`.
    #[arg(long, default_value = "uri_folder", value_parser = ["uri_folder", "uri_file"])]
    pub input_type: String,
    /// BatchDeployment to run on; default: the endpoint's default deployment.
    #[arg(long)]
    pub deployment: Option<String>,
    /// Output folder `pvc://<claim>/<path>`; default: the endpoint's defaults.outputPath/<job>.
    #[arg(long)]
    pub output: Option<String>,
    /// Override a setting for this job: miniBatchSize, instanceCount, maxRetries, timeout,
    /// errorThreshold, outputFileName (Azure ML's snake_case names work too). Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    #[command(flatten)]
    pub target: Target,
}

pub async fn run(cmd: BatchCommand) -> anyhow::Result<()> {
    match cmd {
        BatchCommand::Invoke(args) => invoke(args).await,
        BatchCommand::Show { name, target } => show(&name, &target).await,
    }
}

async fn invoke(args: InvokeArgs) -> anyhow::Result<()> {
    // Refuse bad input before touching the cluster.
    let overrides = overrides_from_sets(&args.sets)?;
    let (client, ns) = args.target.client().await?;
    let request = InvokeRequest {
        input: input(&args.input, args.input_type == "uri_file"),
        deployment_name: args.deployment.clone(),
        output_path: args.output.clone(),
        overrides,
    };
    let created = submit::submit(&client, &ns, &args.endpoint, request, None)
        .await
        .map_err(|e| match e {
            // The reason alone: the CLI prints one line, not kube's Status dump.
            e if e.is_caller_error() => anyhow::anyhow!("{e}"),
            e => anyhow::Error::new(e),
        })?;
    println!("{}", created.name_any());
    Ok(())
}

/// Why a `--set` is refused (before anything is created).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SetError {
    #[error(
        "unknown --set key {0:?} (known: miniBatchSize, instanceCount, maxRetries, timeout, errorThreshold, outputFileName)"
    )]
    UnknownKey(String),
    #[error("--set {0:?} is not KEY=VALUE")]
    NotKeyValue(String),
    #[error("--set {key}={value:?}: {why}")]
    BadValue {
        key: String,
        value: String,
        why: &'static str,
    },
}

/// Applies one `KEY=VALUE` override (Azure ML's snake_case or the CRD's camelCase keys).
pub fn apply_set(overrides: &mut BatchOverrides, kv: &str) -> Result<(), SetError> {
    let (key, value) = kv
        .split_once('=')
        .ok_or_else(|| SetError::NotKeyValue(kv.into()))?;
    let bad = |why| SetError::BadValue {
        key: key.into(),
        value: value.into(),
        why,
    };
    let int = |min: i32, max: i32, why| {
        value
            .parse::<i32>()
            .ok()
            .filter(|v| (min..=max).contains(v))
            .ok_or_else(|| bad(why))
    };
    match key.replace('_', "").to_ascii_lowercase().as_str() {
        "minibatchsize" => {
            overrides.mini_batch_size = Some(int(1, 100_000, "expected 1 to 100000 files")?)
        }
        "instancecount" => overrides.instance_count = Some(int(1, 1000, "expected 1 to 1000")?),
        "maxretries" => overrides.max_retries = Some(int(0, 100, "expected 0 to 100")?),
        "errorthreshold" => {
            overrides.error_threshold = Some(int(-1, i32::MAX, "expected -1 or more")?)
        }
        "timeout" => {
            // Azure ML gives seconds; the CRD takes durations.
            let t = if value.chars().all(|c| c.is_ascii_digit()) && !value.is_empty() {
                format!("{value}s")
            } else {
                value.to_string()
            };
            parse_duration_at_most(&t, MAX_RUN_TIMEOUT)
                .map_err(|_| bad("expected a duration such as 30s or 2m, at most 24h"))?;
            overrides.timeout = Some(t);
        }
        "outputfilename" => {
            let ok = !value.is_empty()
                && value != "."
                && value != ".."
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !ok {
                return Err(bad("expected a plain file name"));
            }
            overrides.output_file_name = Some(value.into());
        }
        _ => return Err(SetError::UnknownKey(key.into())),
    }
    Ok(())
}

/// Overrides from a list of `KEY=VALUE`; `None` when the list is empty.
pub fn overrides_from_sets(sets: &[String]) -> Result<Option<BatchOverrides>, SetError> {
    if sets.is_empty() {
        return Ok(None);
    }
    let mut o = BatchOverrides::default();
    for kv in sets {
        apply_set(&mut o, kv)?;
    }
    Ok(Some(o))
}

/// An input of the given path; `uri_file` when `file`.
pub fn input(path: &str, file: bool) -> BatchInput {
    BatchInput {
        type_: if file {
            BatchInputType::UriFile
        } else {
            BatchInputType::UriFolder
        },
        path: path.into(),
    }
}

/// The lines `batch show` prints (pure).
pub fn describe(job: &BatchJob) -> Vec<String> {
    let s: BatchJobStatus = job.status.clone().unwrap_or_default();
    let phase = s
        .phase
        .map(|p| format!("{p:?}"))
        .unwrap_or_else(|| "Pending".into());
    let mut lines = vec![format!(
        "batchjob/{}  {phase}{}",
        job.name_any(),
        s.reason
            .as_ref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    )];
    lines.push(format!(
        "endpoint:     {}  deployment: {}",
        job.spec.endpoint_name,
        s.deployment_name
            .as_deref()
            .or(job.spec.deployment_name.as_deref())
            .unwrap_or("(endpoint default)")
    ));
    lines.push(format!("input:        {}", job.spec.input.path));
    let n = |v: Option<i32>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    lines.push(format!(
        "mini-batches: {} succeeded, {} failed, {} total",
        n(s.mini_batches_succeeded),
        n(s.mini_batches_failed),
        n(s.mini_batches_total)
    ));
    lines.push(format!("items failed: {}", n(s.items_failed)));
    lines.push(format!(
        "output:       {}",
        s.output_location.as_deref().unwrap_or("-")
    ));
    if let Some(m) = s.message.filter(|m| !m.is_empty()) {
        lines.push(format!("message:      {m}"));
    }
    lines
}

async fn show(name: &str, target: &Target) -> anyhow::Result<()> {
    let (client, ns) = target.client().await?;
    let jobs: Api<BatchJob> = Api::namespaced(client, &ns);
    let Some(job) = jobs
        .get_opt(name)
        .await
        .with_context(|| format!("getting BatchJob {ns}/{name}"))?
    else {
        bail!("BatchJob {ns}/{name} does not exist");
    };
    for line in describe(&job) {
        println!("{line}");
    }
    Ok(())
}

/// `mlcompute copy-binary DEST`: copies this executable to DEST (mode 0755). The init container of a
/// batch driver Pod runs it, so the mlcompute image needs no shell or `cp`.
#[derive(Debug, clap::Args)]
pub struct CopyBinaryArgs {
    /// Where to write the binary.
    pub dest: PathBuf,
}

pub fn copy_binary(args: &CopyBinaryArgs) -> anyhow::Result<()> {
    let me = std::env::current_exe().context("cannot find the running executable")?;
    if let Some(dir) = args.dest.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::copy(&me, &args.dest)
        .with_context(|| format!("cannot copy {} to {}", me.display(), args.dest.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&args.dest, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot make {} executable", args.dest.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sets_accept_azure_and_crd_keys() {
        let o = overrides_from_sets(&[
            "mini_batch_size=5".into(),
            "instanceCount=3".into(),
            "timeout=90".into(),
            "error_threshold=-1".into(),
            "output_file_name=out.csv".into(),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(o.mini_batch_size, Some(5));
        assert_eq!(o.instance_count, Some(3));
        assert_eq!(o.timeout.as_deref(), Some("90s"));
        assert_eq!(o.error_threshold, Some(-1));
        assert_eq!(o.output_file_name.as_deref(), Some("out.csv"));
        assert_eq!(overrides_from_sets(&[]).unwrap(), None);
    }

    #[test]
    fn bad_sets_say_why() {
        let err = |s: &str| overrides_from_sets(&[s.to_string()]).unwrap_err();
        assert!(matches!(err("colour=blue"), SetError::UnknownKey(k) if k == "colour"));
        assert!(matches!(err("miniBatchSize"), SetError::NotKeyValue(_)));
        assert!(matches!(err("miniBatchSize=0"), SetError::BadValue { .. }));
        assert!(matches!(err("timeout=soon"), SetError::BadValue { .. }));
        assert!(matches!(
            err("outputFileName=a/b"),
            SetError::BadValue { .. }
        ));
        assert!(
            err("colour=blue")
                .to_string()
                .contains("known: miniBatchSize")
        );
    }

    #[test]
    fn show_prints_progress_and_output() {
        let job: BatchJob = serde_json::from_value(json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "BatchJob",
            "metadata": { "name": "scorer-x7k2p" },
            "spec": { "endpointName": "scorer", "input": { "path": "pvc://data/images" } },
            "status": { "phase": "Running", "reason": "Running", "deploymentName": "blue",
                        "miniBatchesTotal": 40, "miniBatchesSucceeded": 12, "miniBatchesFailed": 1,
                        "itemsFailed": 3, "outputLocation": "pvc://results/scorer-x7k2p" }
        }))
        .unwrap();
        let text = describe(&job).join("\n");
        assert!(
            text.contains("batchjob/scorer-x7k2p  Running (Running)"),
            "{text}"
        );
        assert!(text.contains("12 succeeded, 1 failed, 40 total"), "{text}");
        assert!(text.contains("items failed: 3"), "{text}");
        assert!(text.contains("deployment: blue"), "{text}");
        assert!(
            text.contains("output:       pvc://results/scorer-x7k2p"),
            "{text}"
        );
    }

    #[test]
    fn copy_binary_writes_an_executable() {
        let dest =
            std::env::temp_dir().join(format!("mlc-copy-{}/bin/mlcompute", std::process::id()));
        copy_binary(&CopyBinaryArgs { dest: dest.clone() }).unwrap();
        assert!(dest.metadata().unwrap().len() > 0);
        std::fs::remove_dir_all(dest.parent().unwrap().parent().unwrap()).unwrap();
    }
}
