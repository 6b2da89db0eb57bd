//! `mlcompute endpoint …`: verbs on online endpoints.

use super::{
    endpoint_invoke::{self, InvokeArgs},
    endpoint_keys::{self, RegenerateKeysArgs},
};

/// Verbs on online endpoints.
#[derive(Debug, clap::Subcommand)]
pub enum EndpointCommand {
    /// Send one scoring request through the router and print the answer.
    Invoke(InvokeArgs),
    /// Replace the endpoint's primary or secondary key (the other keeps working).
    RegenerateKeys(RegenerateKeysArgs),
}

/// Runs an endpoint verb.
pub async fn run(command: EndpointCommand) -> anyhow::Result<()> {
    match command {
        EndpointCommand::Invoke(args) => endpoint_invoke::run(args).await,
        EndpointCommand::RegenerateKeys(args) => endpoint_keys::run(args).await,
    }
}
