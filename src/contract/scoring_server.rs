//! The shipped scoring server (`python/mlcompute_scoring_server.py`: Azure ML's `init()`/`run()`
//! contract, Python standard library only) and how it is started.
//!
//! Writer: the OnlineDeployment controller, which puts [`SCORING_SERVER_PY`] into a ConfigMap
//! mounted into the serving container of a deployment with a scoring script, runs it with
//! `python3`, sets [`ENTRY_SCRIPT`], [`SERVING_PORT`], [`WORKER_COUNT`] and
//! [`super::AZUREML_MODEL_DIR`], and probes [`LIVENESS_PATH`] and [`READINESS_PATH`]; the route
//! sends scoring requests to [`SCORING_PATH`]. Reader: the server, in the user's image. A test
//! checks the Python source still spells every one of these.

/// The server's source.
pub const SCORING_SERVER_PY: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/python/mlcompute_scoring_server.py"
));
/// Its file name in the ConfigMap and the container.
pub const FILE_NAME: &str = "mlcompute_scoring_server.py";

/// The scoring script's path.
pub const ENTRY_SCRIPT: &str = "AZUREML_ENTRY_SCRIPT";
/// The port to listen on.
pub const SERVING_PORT: &str = "AZUREML_SERVING_PORT";
/// `run()` calls at once.
pub const WORKER_COUNT: &str = "WORKER_COUNT";

/// Azure ML's inference server port: the shipped server's default, and the default port of a
/// custom container.
pub const PORT: i32 = 5001;
/// Azure ML's scoring path.
pub const SCORING_PATH: &str = "/score";
/// Answers 200 once the server runs.
pub const LIVENESS_PATH: &str = "/";
/// Azure ML's readiness path: the server accepts no request before `init()` succeeded.
pub const READINESS_PATH: &str = "/";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_python_server_reads_what_the_controller_sets() {
        for spelled in [
            format!("env(\"{ENTRY_SCRIPT}\")"),
            format!("env(\"{SERVING_PORT}\""),
            format!("env(\"{WORKER_COUNT}\""),
            format!("env(\"{}\")", super::super::AZUREML_MODEL_DIR),
            format!("DEFAULT_PORT = {PORT}"),
            format!("\"{SCORING_PATH}\": (\"GET\", \"HEAD\", \"POST\", \"OPTIONS\")"),
            format!("routes = {{\"{LIVENESS_PATH}\": (\"GET\""),
            format!("elif request.path == \"{READINESS_PATH}\":"),
        ] {
            assert!(
                SCORING_SERVER_PY.contains(&spelled),
                "the scoring server no longer has {spelled}"
            );
        }
    }
}
