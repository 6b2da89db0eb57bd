//! The `mlcompute` command line: one binary, one subcommand per part of the system.

use clap::{Parser, Subcommand};

pub mod batch;
pub mod batch_driver;
pub mod batch_logs;
pub mod batch_progress_relay;
pub mod crd;
pub mod endpoint;
pub mod endpoint_credentials;
pub mod endpoint_invoke;
pub mod endpoint_keys;
pub mod job;
pub mod logs;
pub mod operator;
pub mod pod_logs;
pub mod router;

use crate::telemetry::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(name = "mlcompute", version = crate::VERSION, about = "Azure-ML-style compute on any Kubernetes cluster", long_about = None)]
pub struct Cli {
    /// Log level (trace, debug, info, warn, error); RUST_LOG overrides it.
    #[arg(
        long,
        global = true,
        default_value = "info",
        env = crate::contract::batch_driver::LOG_LEVEL
    )]
    pub log_level: String,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "MLCOMPUTE_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the version of this binary.
    Version,
    /// Print the CustomResourceDefinitions (or write them, one file each, with --out-dir).
    Crd(crd::CrdArgs),
    /// Run the data-plane router in front of online deployments.
    Router(router::RouterArgs),
    /// Run one instance of a batch job: score a folder of files with a scoring script.
    #[command(name = crate::contract::batch_driver::DRIVER_COMMAND)]
    BatchDriver(Box<batch_driver::BatchDriverArgs>),
    /// Copy a batch driver's progress into its job's progress ConfigMap (the driver Pods' sidecar).
    #[command(hide = true, name = crate::contract::batch_driver::RELAY_COMMAND)]
    BatchProgressRelay(batch_progress_relay::RelayArgs),
    /// Run the operator: the controllers for every mlcompute resource.
    Operator(crate::operator::settings::Settings),
    /// Verbs on TrainingJobs (cancel).
    Job {
        #[command(subcommand)]
        command: job::JobCommand,
    },
    /// Stream the logs of every instance of a job.
    Logs(logs::LogsArgs),
    /// Verbs on batch endpoints: invoke (submit a BatchJob), show (its progress).
    Batch {
        #[command(subcommand)]
        command: batch::BatchCommand,
    },
    /// Copy this binary to a path (the batch driver Pods' init container uses it).
    #[command(hide = true, name = crate::contract::batch_driver::COPY_BINARY_COMMAND)]
    CopyBinary(batch::CopyBinaryArgs),
    /// Verbs on online endpoints (invoke).
    Endpoint {
        #[command(subcommand)]
        command: endpoint::EndpointCommand,
    },
}

/// Runs the parsed command line and returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    telemetry::init(&cli.log_level, cli.log_format);
    match cli.command {
        Command::Version => {
            println!("mlcompute {}", crate::VERSION);
            Ok(())
        }
        Command::Crd(args) => crd::run(&args),
        Command::Router(args) => router::run(args).await,
        Command::BatchDriver(args) => batch_driver::run(*args).await,
        Command::BatchProgressRelay(args) => batch_progress_relay::run(args).await,
        Command::Endpoint { command } => endpoint::run(command).await,
        Command::Operator(settings) => operator::run(settings).await,
        Command::Job { command } => job::run(command).await,
        Command::Logs(args) => logs::run(args).await,
        Command::Batch { command } => batch::run(command).await,
        Command::CopyBinary(args) => batch::copy_binary(&args),
    }
}
