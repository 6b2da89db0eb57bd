//! `mlcompute endpoint …`: verbs on online endpoints.

use super::{
    endpoint_credentials::{self, GetCredentialsArgs},
    endpoint_invoke::{self, InvokeArgs},
    endpoint_keys::{self, RegenerateKeysArgs},
};

/// Verbs on online endpoints.
#[derive(Debug, clap::Subcommand)]
pub enum EndpointCommand {
    /// Send one scoring request through the router and print the answer.
    Invoke(InvokeArgs),
    /// Replace the endpoint's primary or secondary key (the other keeps working), or the token
    /// signing key (revokes every token).
    RegenerateKeys(RegenerateKeysArgs),
    /// Print what callers send as `Authorization: Bearer`: the keys (auth mode key) or a new
    /// signed token with its expiry (aml_token).
    GetCredentials(GetCredentialsArgs),
}

/// Runs an endpoint verb.
pub async fn run(command: EndpointCommand) -> anyhow::Result<()> {
    match command {
        EndpointCommand::Invoke(args) => endpoint_invoke::run(args).await,
        EndpointCommand::RegenerateKeys(args) => endpoint_keys::run(args).await,
        EndpointCommand::GetCredentials(args) => endpoint_credentials::run(args).await,
    }
}
