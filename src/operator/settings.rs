//! Operator settings: flags and their environment variables.

use std::net::SocketAddr;

/// `mlcompute operator` flags.
#[derive(Clone, Debug, clap::Args)]
pub struct Settings {
    /// Namespaces to watch, comma-separated; empty watches all namespaces.
    #[arg(
        long,
        env = "MLCOMPUTE_WATCH_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub namespaces: Vec<String>,
    /// Sustained API requests per second (client-side token bucket).
    #[arg(long, env = "MLCOMPUTE_KUBE_QPS", default_value_t = 50.0)]
    pub kube_qps: f64,
    /// API requests allowed at once above the sustained rate.
    #[arg(long, env = "MLCOMPUTE_KUBE_BURST", default_value_t = 100)]
    pub kube_burst: u32,
    /// Address of the metrics and health endpoint (/metrics, /healthz, /readyz).
    #[arg(long, env = "MLCOMPUTE_METRICS_ADDR", default_value = "127.0.0.1:8081")]
    pub metrics_addr: SocketAddr,
    /// Reconciles run at once per controller.
    #[arg(long, env = "MLCOMPUTE_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
    /// How long a controller waits for more changes to an object before reconciling it (e.g. 250ms).
    #[arg(long, env = "MLCOMPUTE_DEBOUNCE", default_value = "250ms", value_parser = parse_debounce)]
    pub debounce: std::time::Duration,
    /// Kubeconfig to use; default: in-cluster config or $KUBECONFIG.
    #[arg(long, env = "MLCOMPUTE_KUBECONFIG")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Gateway API Gateway (`namespace/name`) that OnlineEndpoints' HTTPRoutes attach to;
    /// HTTPRoutes are written only when this is set and the HTTPRoute CRD is installed.
    #[arg(long, env = "MLCOMPUTE_GATEWAY")]
    pub gateway: Option<crate::controllers::online::endpoint::httproute::GatewayRef>,
    /// Batch controllers: the driver image and the router URL.
    #[command(flatten)]
    pub batch: crate::controllers::batch::job::BatchControllerSettings,
    /// Autoscaler: where the routers' load reports are read.
    #[command(flatten)]
    pub autoscaler: crate::controllers::autoscaler::routers::AutoscalerSettings,
    /// Leader election (for more than one replica).
    #[command(flatten)]
    pub leader: super::leader::LeaderSettings,
}

impl Settings {
    /// The namespaces to watch, or `None` for all.
    pub fn watched_namespaces(&self) -> Option<Vec<String>> {
        let ns: Vec<String> = self
            .namespaces
            .iter()
            .filter(|n| !n.is_empty())
            .cloned()
            .collect();
        (!ns.is_empty()).then_some(ns)
    }
}

fn parse_debounce(s: &str) -> Result<std::time::Duration, String> {
    crate::api::common::parse_duration(s).map_err(|e| e.to_string())
}
