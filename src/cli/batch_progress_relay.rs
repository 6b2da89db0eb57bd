//! `mlcompute batch-progress-relay`: the sidecar of a batch driver Pod that holds the Pod's token and
//! copies the driver's progress into the job's progress ConfigMap (see
//! [`crate::dataplane::batch_driver::progress_relay`]). Configured by the BatchJob controller through the environment.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::Args;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

use crate::{
    contract::batch_driver as env,
    dataplane::batch_driver::progress_relay::{self, RelayConfig},
};

/// Flags of `mlcompute batch-progress-relay`.
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// The snapshot file the driver rewrites.
    #[arg(long, env = env::PROGRESS_FILE)]
    pub file: PathBuf,
    /// The job's progress ConfigMap.
    #[arg(long, env = env::PROGRESS_CONFIGMAP)]
    pub config_map: String,
    /// Its namespace (downward API).
    #[arg(long, env = env::POD_NAMESPACE)]
    pub namespace: String,
    /// This Pod's instance index.
    #[arg(long, env = env::INSTANCE_INDEX)]
    pub instance: u32,
    /// Fewest time between two writes.
    #[arg(long, default_value = "1s", value_parser = super::batch_driver::parse_duration)]
    pub interval: Duration,
}

/// Relays until SIGTERM or SIGINT, then writes the last snapshot.
pub async fn run(args: RelayArgs) -> anyhow::Result<()> {
    // In a Pod: the projected token at the standard path (in-cluster config); a kubeconfig wins
    // when there is one (tests run the relay as a process).
    let client = kube::Client::try_default()
        .await
        .context("cannot build a Kubernetes client to relay progress")?;
    let api: Api<ConfigMap> = Api::namespaced(client, &args.namespace);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let cfg = RelayConfig {
        file: args.file,
        config_map: args.config_map,
        instance: args.instance,
        interval: args.interval,
        final_timeout: Duration::from_secs(10),
    };
    progress_relay::run(api, cfg, stop).await;
    Ok(())
}
