//! The compiled form of a routing table: what a request reads, built once per table load.
//!
//! Instances (their connection pools and concurrency slots) outlive table loads: compiling a new
//! table reuses the instance of every `ip:port` that is still listed with the same concurrency
//! limit, so a weight flip keeps warm connections and never resets in-flight accounting.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, Weak, atomic::AtomicUsize},
    time::Duration,
};

use http::{HeaderValue, Uri};

use super::{
    auth::Authenticator,
    limit::InstanceLimit,
    load::{Demand, LoadBook},
    metrics::{Metrics, NONE, RouteMetrics},
    pick::{Load, Split},
    proxy::Pool,
    table::{DeploymentRoute, EndpointRoute, RoutingTable},
};

/// Every endpoint of one table load.
#[derive(Debug, Default)]
pub struct Routes {
    endpoints: HashMap<String, Arc<Endpoint>>,
}

impl Routes {
    /// The endpoint with this name.
    pub fn endpoint(&self, name: &str) -> Option<&Arc<Endpoint>> {
        self.endpoints.get(name)
    }

    /// How many endpoints there are.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }
}

/// One endpoint, ready to route.
#[derive(Debug)]
pub struct Endpoint {
    /// The endpoint name.
    pub name: String,
    /// Who may call it.
    pub auth: Authenticator,
    /// All deployments, in table order.
    pub deployments: Vec<Arc<Deployment>>,
    /// The live traffic split over `deployments`.
    pub split: Split,
    /// The deployment with the largest traffic share (the first of equals, in table order), if
    /// any takes traffic: the one whose swagger the endpoint serves when none is pinned.
    pub primary: Option<usize>,
    /// The mirror deployment and its percent, if any.
    pub mirror: Option<(Arc<Deployment>, u32)>,
    /// Metrics for requests that never reached a deployment.
    pub metrics: RouteMetrics,
}

impl Endpoint {
    /// The deployment with this name (the pinning header's value).
    pub fn deployment(&self, name: &[u8]) -> Option<&Arc<Deployment>> {
        self.deployments.iter().find(|d| d.name.as_bytes() == name)
    }
}

/// One deployment, ready to route.
#[derive(Debug)]
pub struct Deployment {
    /// The endpoint's name.
    pub endpoint: String,
    /// The deployment's name.
    pub name: String,
    /// The name as a response header value (`azureml-model-deployment`).
    pub name_header: HeaderValue,
    /// Where requests go on an instance.
    pub scoring_path: Uri,
    /// The request timeout.
    pub timeout: Duration,
    /// The queue wait for a free instance.
    pub queue_wait: Duration,
    /// Ready instances only.
    pub instances: Vec<Arc<Instance>>,
    /// Round-robin cursor for instances with equal load.
    pub cursor: AtomicUsize,
    /// Pre-resolved metrics.
    pub metrics: RouteMetrics,
    /// Its demand, for the autoscaler (kept across table loads).
    pub load: Arc<Demand>,
}

/// One backend instance: address, concurrency slots and idle connections.
#[derive(Debug)]
pub struct Instance {
    /// `ip:port`.
    pub addr: SocketAddr,
    /// The `Host` header sent to it.
    pub host: HeaderValue,
    /// Its concurrency limit.
    pub limit: InstanceLimit,
    /// Its idle keep-alive connections.
    pub pool: Pool,
}

impl Load for Arc<Instance> {
    fn in_flight(&self) -> usize {
        self.limit.in_flight()
    }
}

/// Builds [`Routes`] from tables, keeping instances alive across loads.
#[derive(Debug)]
pub struct Compiler {
    metrics: Metrics,
    loads: LoadBook,
    instances: Mutex<HashMap<(SocketAddr, u32), Weak<Instance>>>,
}

impl Compiler {
    /// A compiler that resolves metric handles in `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            loads: LoadBook::new(),
            instances: Mutex::new(HashMap::new()),
        }
    }

    /// The demand of every deployment compiled (for `GET /load`).
    pub fn loads(&self) -> &LoadBook {
        &self.loads
    }

    /// Compiles a validated table.
    pub fn compile(&self, table: &RoutingTable) -> Routes {
        let mut instances = self
            .instances
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        instances.retain(|_, weak| weak.strong_count() > 0);
        let endpoints = table
            .endpoints
            .iter()
            .map(|route| {
                (
                    route.name.clone(),
                    Arc::new(self.endpoint(route, &mut instances)),
                )
            })
            .collect();
        Routes { endpoints }
    }

    fn endpoint(
        &self,
        route: &EndpointRoute,
        instances: &mut HashMap<(SocketAddr, u32), Weak<Instance>>,
    ) -> Endpoint {
        let deployments: Vec<Arc<Deployment>> = route
            .deployments
            .iter()
            .map(|d| Arc::new(self.deployment(&route.name, d, instances)))
            .collect();
        let split = Split::new(route.deployments.iter().map(|d| d.traffic));
        let primary = route
            .deployments
            .iter()
            .enumerate()
            .filter(|(_, d)| d.traffic > 0)
            // max_by_key keeps the last of equals: compare on reversed index to keep the first.
            .max_by_key(|(index, d)| (d.traffic, std::cmp::Reverse(*index)))
            .map(|(index, _)| index);
        let mirror = route
            .deployments
            .iter()
            .zip(&deployments)
            .find(|(d, _)| d.mirror > 0)
            .map(|(d, compiled)| (compiled.clone(), d.mirror));
        Endpoint {
            name: route.name.clone(),
            auth: Authenticator::new(&route.name, &route.auth),
            deployments,
            split,
            primary,
            mirror,
            metrics: self.metrics.route(&route.name, NONE),
        }
    }

    fn deployment(
        &self,
        endpoint: &str,
        route: &DeploymentRoute,
        instances: &mut HashMap<(SocketAddr, u32), Weak<Instance>>,
    ) -> Deployment {
        let settings = route.request_settings;
        let max = settings.max_concurrent_requests_per_instance;
        let ready = route
            .backends
            .iter()
            .filter(|b| b.ready)
            .filter_map(|b| b.address.parse::<SocketAddr>().ok())
            .map(|addr| {
                let existing = instances.get(&(addr, max)).and_then(Weak::upgrade);
                existing.unwrap_or_else(|| {
                    let instance = Arc::new(Instance::new(addr, max));
                    instances.insert((addr, max), Arc::downgrade(&instance));
                    instance
                })
            })
            .collect();
        Deployment {
            endpoint: endpoint.to_owned(),
            name: route.name.clone(),
            name_header: HeaderValue::from_str(&route.name)
                .unwrap_or(HeaderValue::from_static("-")),
            scoring_path: route
                .scoring_path
                .parse()
                .unwrap_or(Uri::from_static("/score")),
            timeout: Duration::from_millis(settings.request_timeout_ms),
            queue_wait: Duration::from_millis(settings.max_queue_wait_ms),
            instances: ready,
            cursor: AtomicUsize::new(0),
            metrics: self.metrics.route(endpoint, &route.name),
            load: self.loads.load(endpoint, &route.name),
        }
    }
}

impl Instance {
    fn new(addr: SocketAddr, max_concurrent: u32) -> Self {
        Self {
            addr,
            host: HeaderValue::from_str(&addr.to_string())
                .unwrap_or(HeaderValue::from_static("backend")),
            limit: InstanceLimit::new(max_concurrent),
            pool: Pool::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "
endpoints:
  - name: e
    deployments:
      - { name: blue, traffic: 100, backends: [{address: '127.0.0.1:1'}, {address: '127.0.0.1:2', ready: false}] }
      - { name: green, backends: [{address: '127.0.0.1:3'}] }
      - { name: shadow, mirror: 20, backends: [] }
";

    #[test]
    fn compiles_ready_instances_split_and_mirror() {
        let compiler = Compiler::new(Metrics::new().unwrap());
        let routes = compiler.compile(&RoutingTable::parse(TABLE).unwrap());
        let e = routes.endpoint("e").unwrap();
        assert_eq!(e.deployment(b"blue").unwrap().instances.len(), 1);
        assert_eq!(e.split.choose(50), Some(0));
        assert_eq!(e.primary, Some(0));
        let (mirror, percent) = e.mirror.as_ref().unwrap();
        assert_eq!((mirror.name.as_str(), *percent), ("shadow", 20));
        assert!(routes.endpoint("nope").is_none());
    }

    #[test]
    fn instances_survive_reloads() {
        let compiler = Compiler::new(Metrics::new().unwrap());
        let first = compiler.compile(&RoutingTable::parse(TABLE).unwrap());
        let flipped = TABLE
            .replace("traffic: 100", "traffic: 0")
            .replace("{ name: green,", "{ name: green, traffic: 100,");
        let second = compiler.compile(&RoutingTable::parse(&flipped).unwrap());
        let a = &first
            .endpoint("e")
            .unwrap()
            .deployment(b"blue")
            .unwrap()
            .instances[0];
        let b = &second
            .endpoint("e")
            .unwrap()
            .deployment(b"blue")
            .unwrap()
            .instances[0];
        assert!(Arc::ptr_eq(a, b));
        assert_eq!(second.endpoint("e").unwrap().split.choose(0), Some(1));
    }

    #[test]
    fn the_primary_deployment_has_the_largest_share_first_of_equals() {
        let compiler = Compiler::new(Metrics::new().unwrap());
        let of = |traffic: [u32; 3]| {
            let text = format!(
                "endpoints:\n  - name: e\n    deployments:\n{}",
                ["a", "b", "c"]
                    .iter()
                    .zip(traffic)
                    .map(|(n, t)| format!("      - {{ name: {n}, traffic: {t}, backends: [] }}\n"))
                    .collect::<String>()
            );
            let routes = compiler.compile(&RoutingTable::parse(&text).unwrap());
            routes.endpoint("e").unwrap().primary
        };
        assert_eq!(of([10, 90, 0]), Some(1));
        assert_eq!(of([50, 0, 50]), Some(0));
        assert_eq!(of([0, 0, 0]), None);
    }
}
