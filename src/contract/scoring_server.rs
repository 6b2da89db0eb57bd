//! The servers that run a scoring script (Azure ML's `init()`/`run()` contract) and how the
//! serving container starts one: Azure ML's inference server (`azmlinfsrv`, package
//! azureml-inference-server-http) when the image has it, else the shipped server
//! (`python/mlcompute_scoring_server.py`, Python standard library only), as
//! [`ScoringServer`] says.
//!
//! Writer: the OnlineDeployment controller, which puts [`SCORING_SERVER_PY`] into a ConfigMap
//! mounted at [`SERVER_DIR`] in the serving container of a deployment with a scoring script,
//! runs [`launch_command`], sets [`ENTRY_SCRIPT`], [`SERVING_PORT`], [`WORKER_COUNT`],
//! [`APP_ROOT`] and [`super::AZUREML_MODEL_DIR`], and probes [`LIVENESS_PATH`] and
//! [`READINESS_PATH`]; the route sends scoring requests to [`SCORING_PATH`]. Readers: the
//! launcher script, then the server it runs, in the user's image. A test checks the Python
//! source still spells every one of these.

use crate::api::online_deployment::ScoringServer;

/// The shipped server's source.
pub const SCORING_SERVER_PY: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/python/mlcompute_scoring_server.py"
));
/// Its file name in the ConfigMap and the container.
pub const FILE_NAME: &str = "mlcompute_scoring_server.py";
/// Where the ConfigMap holding it is mounted.
pub const SERVER_DIR: &str = "/var/mlcompute/server";

/// Azure ML's inference server: the command the package installs.
pub const AZMLINFSRV: &str = "azmlinfsrv";

/// The scoring script's path.
pub const ENTRY_SCRIPT: &str = "AZUREML_ENTRY_SCRIPT";
/// The port the shipped server listens on (azmlinfsrv is given `--port`).
pub const SERVING_PORT: &str = "AZUREML_SERVING_PORT";
/// Worker processes, each with its own `init()` (Azure ML's `WORKER_COUNT`: gunicorn's sync
/// workers in azmlinfsrv, forked workers in the shipped server).
pub const WORKER_COUNT: &str = "WORKER_COUNT";
/// The app root: where both servers look for `swagger*.json`, and what azmlinfsrv adds to the
/// module path (Azure ML's `AML_APP_ROOT`).
pub const APP_ROOT: &str = "AML_APP_ROOT";
/// `run()`'s time limit in milliseconds; both servers read it (Azure ML's, default one hour).
pub const SCORING_TIMEOUT_MS: &str = "SCORING_TIMEOUT_MS";

/// Azure ML's inference server port: both servers serve on it, and it is the default port of a
/// custom container.
pub const PORT: i32 = 5001;
/// Azure ML's scoring path.
pub const SCORING_PATH: &str = "/score";
/// Azure ML's liveness path: both servers answer 200 "Healthy" once a worker has run `init()`.
pub const LIVENESS_PATH: &str = "/";
/// Azure ML's readiness path, the same: neither server accepts a request before `init()`
/// succeeded.
pub const READINESS_PATH: &str = "/";

/// The serving container's command: a small `/bin/sh -c` that picks the server when the
/// container starts (`auto`: azmlinfsrv if the image has it on its PATH), says which on stderr
/// and `exec`s it with the same entry script, model directory, port and worker count. Both read
/// the environment the controller sets; azmlinfsrv also takes them as flags.
pub fn launch_command(choice: ScoringServer) -> Vec<String> {
    let azmlinfsrv = format!(
        "echo 'mlcompute: serving the scoring script with azmlinfsrv (Azure ML inference server)' >&2\n\
         exec {AZMLINFSRV} --entry_script \"${ENTRY_SCRIPT}\" --port \"${SERVING_PORT}\" \
         --worker_count \"${WORKER_COUNT}\""
    );
    let shipped = format!(
        "exec python3 {SERVER_DIR}/{FILE_NAME}" // it logs its own name and settings
    );
    let script = match choice {
        ScoringServer::Auto => format!(
            "if command -v {AZMLINFSRV} >/dev/null 2>&1; then\n{azmlinfsrv}\nfi\n\
             echo 'mlcompute: no {AZMLINFSRV} in the image; serving the scoring script with the shipped server' >&2\n\
             {shipped}"
        ),
        ScoringServer::Azmlinfsrv => format!(
            "if ! command -v {AZMLINFSRV} >/dev/null 2>&1; then\n\
             echo 'error: scoringServer is azmlinfsrv but the image has no {AZMLINFSRV} on its PATH (pip install azureml-inference-server-http, or use scoringServer auto or shipped)' >&2\n\
             exit 127\nfi\n{azmlinfsrv}"
        ),
        ScoringServer::Shipped => format!(
            "echo 'mlcompute: serving the scoring script with the shipped server (scoringServer: shipped)' >&2\n{shipped}"
        ),
    };
    vec!["/bin/sh".into(), "-c".into(), script]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_python_server_reads_what_the_controller_sets() {
        for spelled in [
            format!("env(\"{ENTRY_SCRIPT}\")"),
            format!("env(\"{SERVING_PORT}\""),
            format!("env(\"{WORKER_COUNT}\""),
            format!("environ.get(\"{APP_ROOT}\")"),
            format!("environ.get(\"{SCORING_TIMEOUT_MS}\""),
            format!("env(\"{}\")", super::super::AZUREML_MODEL_DIR),
            format!("DEFAULT_PORT = {PORT}"),
            format!("\"{SCORING_PATH}\": (\"GET\", \"HEAD\", \"POST\", \"OPTIONS\")"),
            format!("routes = {{\"{LIVENESS_PATH}\": (\"GET\""),
            format!("elif request.path == \"{READINESS_PATH}\":"),
            format!("SERVER_NAME = \"{}\"", FILE_NAME.trim_end_matches(".py")),
        ] {
            assert!(
                SCORING_SERVER_PY.contains(&spelled),
                "the scoring server no longer has {spelled}"
            );
        }
    }

    #[test]
    fn the_launcher_runs_azmlinfsrv_when_the_image_has_it_and_says_which() {
        let auto = launch_command(ScoringServer::Auto);
        assert_eq!(auto[..2], ["/bin/sh", "-c"]);
        let script = &auto[2];
        assert!(script.starts_with("if command -v azmlinfsrv >/dev/null 2>&1; then\n"));
        assert!(script.contains(
            "exec azmlinfsrv --entry_script \"$AZUREML_ENTRY_SCRIPT\" --port \"$AZUREML_SERVING_PORT\" --worker_count \"$WORKER_COUNT\""
        ));
        assert!(script.ends_with("exec python3 /var/mlcompute/server/mlcompute_scoring_server.py"));
        assert!(script.contains("with azmlinfsrv") && script.contains("with the shipped server"));

        let forced = &launch_command(ScoringServer::Azmlinfsrv)[2];
        assert!(forced.contains("exit 127") && forced.contains("exec azmlinfsrv "));
        assert!(!forced.contains("python3"));
        let shipped = &launch_command(ScoringServer::Shipped)[2];
        assert!(!shipped.contains("azmlinfsrv --"));
        assert!(shipped.contains("exec python3 /var/mlcompute/server/mlcompute_scoring_server.py"));
    }

    /// Each launcher is valid `sh` and, run for real, picks the server it says: a stand-in
    /// `azmlinfsrv` on PATH for `auto` and `azmlinfsrv`, none for the fallback.
    #[test]
    fn the_launcher_picks_the_server_at_container_start() {
        let dir = std::env::temp_dir().join(format!("mlc-launch-{}", std::process::id()));
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let fake = bin.join("azmlinfsrv");
        std::fs::write(&fake, "#!/bin/sh\necho \"azmlinfsrv $*\"\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let run = |choice, path: &str| {
            let cmd = launch_command(choice);
            let out = std::process::Command::new(&cmd[0])
                .args(&cmd[1..])
                .env("PATH", path)
                .env(ENTRY_SCRIPT, "/var/azureml-app/score.py")
                .env(SERVING_PORT, "5001")
                .env(WORKER_COUNT, "2")
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let with = format!("{}:/usr/bin:/bin", bin.display());
        let (code, out, err) = run(ScoringServer::Auto, &with);
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(
            out.trim(),
            "azmlinfsrv --entry_script /var/azureml-app/score.py --port 5001 --worker_count 2"
        );
        assert!(err.contains("with azmlinfsrv"), "{err}");
        let (code, _, err) = run(ScoringServer::Azmlinfsrv, "/nonexistent");
        assert_eq!(code, Some(127));
        assert!(err.contains("has no azmlinfsrv"), "{err}");
        // Without azmlinfsrv, auto falls back: python3 is then asked for the shipped server,
        // which is not at /var/mlcompute/server here, so python3 fails (or is absent) after
        // the launcher said which server it chose.
        let (code, _, err) = run(ScoringServer::Auto, "/usr/bin:/bin");
        assert_ne!(code, Some(0));
        assert!(err.contains("no azmlinfsrv in the image"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
