//! `mlcompute router`: the data-plane router.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;

use crate::dataplane::router::{
    self, RouterOptions, ServerOptions, StaticFile, address::HostDomains,
};

/// Arguments of `mlcompute router`.
#[derive(Debug, clap::Args)]
pub struct RouterArgs {
    /// Address to listen on.
    #[arg(
        long,
        default_value = "127.0.0.1:8080",
        env = "MLCOMPUTE_ROUTER_LISTEN"
    )]
    pub listen: SocketAddr,
    /// A routing table in YAML or JSON (see examples/router-static.yaml); re-read when it
    /// changes and on SIGHUP.
    #[arg(long, value_name = "FILE", required_unless_present = "cluster")]
    pub static_table: Option<PathBuf>,
    /// Take routes from the cluster instead: the OnlineEndpoint controller's routing
    /// ConfigMaps, the deployments' EndpointSlices and the keys Secrets.
    #[arg(long, conflicts_with = "static_table")]
    pub cluster: bool,
    /// With --cluster: namespaces to watch, comma-separated; empty watches all namespaces.
    #[arg(long, value_delimiter = ',', requires = "cluster")]
    pub namespaces: Vec<String>,
    /// With --cluster: kubeconfig to use; default: in-cluster config or $KUBECONFIG.
    #[arg(long, env = "MLCOMPUTE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// How often the static table is checked for changes, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub poll_ms: u64,
    /// Seconds open requests may take to finish after SIGTERM.
    #[arg(long, default_value_t = 30)]
    pub drain_seconds: u64,
    /// Serving threads, each with its own runtime and listener (default: one per usable CPU).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Mirror copies that may wait (per serving thread) before new ones are dropped.
    #[arg(long, default_value_t = 1024)]
    pub mirror_queue: usize,
    /// Mirror copies delivered at once (per serving thread).
    #[arg(long, default_value_t = 64)]
    pub mirror_workers: usize,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Keep polling for I/O instead of sleeping until this many microseconds after the last
    /// scoring request (0: off). Cuts the latency a router adds on virtual machines, where waking
    /// an idle CPU is slow, for CPU time spent polling while traffic flows.
    #[arg(long, default_value_t = 0, env = "MLCOMPUTE_ROUTER_BUSY_POLL_US")]
    pub busy_poll_us: u64,
    /// Domains under which `<endpoint>.<domain>` serves `POST /score` and `GET /swagger.json`
    /// (a managed-style scoring URI), comma-separated; the path form is always served. Point a
    /// wildcard DNS record (`*.<domain>`) at the router.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "DOMAIN",
        env = "MLCOMPUTE_ROUTER_HOST_DOMAINS"
    )]
    pub host_domains: Vec<String>,
}

/// Runs the router from the command line.
pub async fn run(args: RouterArgs) -> anyhow::Result<()> {
    // An empty value (`--host-domains=`, or the variable set empty) means none.
    let domains: Vec<&String> = args
        .host_domains
        .iter()
        .filter(|d| !d.trim().is_empty())
        .collect();
    let host_domains = HostDomains::new(&domains).context("--host-domains")?;
    let options = RouterOptions {
        listen: args.listen,
        drain: Duration::from_secs(args.drain_seconds),
        threads: args.threads.unwrap_or_else(router::default_threads),
        server: ServerOptions {
            mirror_queue: args.mirror_queue,
            mirror_workers: args.mirror_workers,
            max_body_bytes: args.max_body_bytes,
            busy_poll: Duration::from_micros(args.busy_poll_us),
            host_domains,
        },
        batch_invoke: None,
    };
    match (&args.static_table, args.cluster) {
        (Some(path), false) => {
            let source = StaticFile::open(path, Duration::from_millis(args.poll_ms.max(10)))?;
            router::run(options, source).await.context("router")
        }
        _ => {
            let config = crate::runtime::client::config(args.kubeconfig.as_deref()).await?;
            let client =
                kube::Client::try_from(config).context("building the Kubernetes client")?;
            let source =
                router::cluster_source::ClusterSource::new(client.clone(), &args.namespaces);
            let options = RouterOptions {
                batch_invoke: Some(router::batch_invoke::ClusterAccess {
                    client,
                    namespaces: args.namespaces.clone(),
                }),
                ..options
            };
            router::run(options, source).await.context("router")
        }
    }
}
