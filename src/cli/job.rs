//! `mlcompute job …`: verbs on TrainingJobs.

use anyhow::Context as _;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::json;

use crate::{api::training_job::TrainingJob, runtime::client};

#[derive(Debug, clap::Subcommand)]
pub enum JobCommand {
    /// Cancel a TrainingJob: its Pods are deleted and it ends in phase Canceled (history is kept).
    Cancel {
        /// Name of the TrainingJob.
        name: String,
        #[command(flatten)]
        target: Target,
    },
}

/// Which cluster and namespace a verb acts on.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Namespace; default: the kubeconfig context's.
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Kubeconfig file; default: $KUBECONFIG or ~/.kube/config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<std::path::PathBuf>,
}

impl Target {
    /// A client and the namespace to act in.
    pub async fn client(&self) -> anyhow::Result<(kube::Client, String)> {
        let config = client::config(self.kubeconfig.as_deref()).await?;
        let ns = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        Ok((kube::Client::try_from(config)?, ns))
    }
}

pub async fn run(cmd: JobCommand) -> anyhow::Result<()> {
    match cmd {
        JobCommand::Cancel { name, target } => {
            let (client, ns) = target.client().await?;
            let api: Api<TrainingJob> = Api::namespaced(client, &ns);
            let patch = json!({ "spec": { "cancel": true } });
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .with_context(|| format!("canceling TrainingJob {ns}/{name}"))?;
            println!("trainingjob/{name} canceled");
            Ok(())
        }
    }
}
