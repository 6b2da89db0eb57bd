//! What one process writes and another reads, each spelled once. Depends on `api` only; the
//! controllers, the runtime and the data plane all import it from here (the import-rule test in
//! `architecture_tests.rs` keeps it so).
//!
//! | contract | written by | read by |
//! |---|---|---|
//! | [`routing`]: the routing table (`ClusterRoute` in the `<endpoint>-routing` ConfigMap), the labels the router selects on | OnlineEndpoint controller | router (cluster source) |
//! | [`keys`]: the keys Secret layout (`primaryKey`, `secondaryKey`, `tokenSigningKey`), its name and labels, the key format | OnlineEndpoint controller, `mlcompute endpoint regenerate-keys` | router (key and token auth), `mlcompute endpoint get-credentials` |
//! | [`token`]: endpoint tokens (`aml_token` mode) | `mlcompute endpoint get-credentials` | router |
//! | [`router_http`]: the scoring, swagger and invoke paths, the pinning header | OnlineEndpoint controller (`scoringUri`, `openapiUri`, HTTPRoute), BatchEndpoint controller (`invokeUri`), `mlcompute endpoint invoke` | router |
//! | [`scoring_server`]: the shipped scoring server, its environment, port and paths | OnlineDeployment controller | the server, in the deployment's Pods |
//! | [`batch_driver`]: the batch driver's subcommands and environment | BatchJob controller (and Kubernetes: `JOB_COMPLETION_INDEX`) | `mlcompute batch-driver`, `mlcompute batch-progress-relay` |
//! | [`progress`]: the progress records (`PodProgress` per instance in `<job>-progress`) | batch driver and its relay sidecar | BatchJob controller |
//! | [`exit_codes`]: the batch driver's exit codes and reason line | `mlcompute batch-driver` | BatchJob controller (pod failure policy, status) |
//! | [`batch_invoke`]: the invoke body, the BatchJob an invocation creates, the checks before | a user (body); `mlcompute batch invoke`, router (job) | router (body); BatchJob controller (job) |
//! | [`load`]: the router's load report (`GET /load`: requests in flight and queued per deployment, and their time integrals) | router | operator (autoscaler) |
//! | [`labels`]: the labels on every child | every controller (through `runtime::children`) | router, CLI, the operator's watches |
//!
//! Formats machines write accept unknown fields, and an enum a newer writer could extend reads an
//! unknown value as `Unknown` (the routing table's auth mode fails closed, a progress phase still
//! counts): the operator, the router and the batch Pods run different releases during an upgrade
//! (`tests/version_skew.rs`). What users write stays strict: the invoke body here, and the router's
//! static table (`dataplane::router::table`).

pub mod batch_driver;
pub mod batch_invoke;
pub mod exit_codes;
pub mod keys;
pub mod labels;
pub mod load;
pub mod progress;
pub mod router_http;
pub mod routing;
pub mod scoring_server;
pub mod token;

/// Azure ML's variable naming the model folder, which user scoring scripts read: set in online
/// serving containers ([`scoring_server`]) and batch driver Pods ([`batch_driver`]).
pub const AZUREML_MODEL_DIR: &str = "AZUREML_MODEL_DIR";
