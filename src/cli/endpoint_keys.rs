//! `mlcompute endpoint regenerate-keys NAME [--key primary|secondary]`: replaces one key of an
//! OnlineEndpoint, as `az ml online-endpoint regenerate-keys` does. The other key keeps
//! working, so callers rotate without downtime; the router picks the change up from the
//! Secret within a second.

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::job::Target;
use crate::contract::keys::{
    PRIMARY_KEY, SECONDARY_KEY, TOKEN_SIGNING_KEY, new_key, secret_name as keys_secret_name,
};

/// Which key to replace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyType {
    Primary,
    Secondary,
    /// The key `aml_token` tokens are signed with: every token issued so far stops working.
    TokenSigning,
}

/// Arguments of `mlcompute endpoint regenerate-keys`.
#[derive(Debug, clap::Args)]
pub struct RegenerateKeysArgs {
    /// The OnlineEndpoint name.
    pub name: String,
    /// The key to replace.
    #[arg(long, value_enum, default_value_t = KeyType::Primary)]
    pub key: KeyType,
    #[command(flatten)]
    pub target: Target,
}

/// Replaces the chosen key in the endpoint's keys Secret.
pub async fn run(args: RegenerateKeysArgs) -> anyhow::Result<()> {
    let (client, ns) = args.target.client().await?;
    let secrets: Api<Secret> = Api::namespaced(client, &ns);
    let secret_name = keys_secret_name(&args.name);
    if secrets
        .get_opt(&secret_name)
        .await
        .with_context(|| format!("reading Secret {ns}/{secret_name}"))?
        .is_none()
    {
        bail!(
            "OnlineEndpoint {ns}/{} has no keys Secret {secret_name:?}: its auth mode is none, or the operator has not created it yet",
            args.name
        );
    }
    let field = match args.key {
        KeyType::Primary => PRIMARY_KEY,
        KeyType::Secondary => SECONDARY_KEY,
        KeyType::TokenSigning => TOKEN_SIGNING_KEY,
    };
    let patch = json!({ "stringData": { field: new_key() } });
    secrets
        .patch(&secret_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("updating Secret {ns}/{secret_name}"))?;
    println!(
        "onlineendpoint/{}: {field} regenerated (Secret {secret_name})",
        args.name
    );
    Ok(())
}
