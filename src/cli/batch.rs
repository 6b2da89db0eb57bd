//! `mlcompute batch invoke|show`: submit a BatchJob to a batch endpoint and read its progress, as
//! `az ml batch-endpoint invoke` and `az ml job show` do. Also the hidden `copy-binary` used by the
//! driver Pods' init container.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use kube::{Api, ResourceExt};

use super::job::Target;
use crate::{
    api::batch_job::{BatchJob, BatchJobStatus},
    controllers::batch::job::{
        invoke::{self, InvokeRequest},
        submit,
    },
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
    let overrides = invoke::overrides_from_sets(&args.sets)?;
    let (client, ns) = args.target.client().await?;
    let request = InvokeRequest {
        input: invoke::input(&args.input, args.input_type == "uri_file"),
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
