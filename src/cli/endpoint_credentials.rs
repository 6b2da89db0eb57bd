//! `mlcompute endpoint get-credentials NAME [--ttl 1h]`: what a caller sends as
//! `Authorization: Bearer …`, as `az ml online-endpoint get-credentials` prints it: the two keys
//! (auth mode `key`), or a fresh signed token with its expiry (`aml_token`). Reading the keys
//! Secret is the permission, as listing keys is in Azure ML.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::Api;
use serde_json::json;

use super::job::Target;
use crate::{
    api::{
        common::parse_duration,
        online_endpoint::{AuthMode, OnlineEndpoint},
    },
    contract::{
        keys::{PRIMARY_KEY, SECONDARY_KEY, TOKEN_SIGNING_KEY, secret_name as keys_secret_name},
        token,
    },
};

/// The longest token lifetime handed out.
const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Arguments of `mlcompute endpoint get-credentials`.
#[derive(Debug, clap::Args)]
pub struct GetCredentialsArgs {
    /// The OnlineEndpoint name.
    pub name: String,
    /// How long a token (auth mode aml_token) stays valid, e.g. 1h or 30m; at most 30 days.
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    #[command(flatten)]
    pub target: Target,
}

/// Prints the endpoint's credentials as JSON.
pub async fn run(args: GetCredentialsArgs) -> anyhow::Result<()> {
    let ttl = parse_duration(&args.ttl)
        .ok()
        .filter(|t| !t.is_zero() && *t <= MAX_TTL)
        .with_context(|| {
            format!(
                "--ttl {:?}: expected a duration up to 30 days, such as 1h",
                args.ttl
            )
        })?;
    let (client, ns) = args.target.client().await?;
    let endpoints: Api<OnlineEndpoint> = Api::namespaced(client.clone(), &ns);
    let Some(endpoint) = endpoints
        .get_opt(&args.name)
        .await
        .with_context(|| format!("reading OnlineEndpoint {ns}/{}", args.name))?
    else {
        bail!("OnlineEndpoint {ns}/{} does not exist", args.name);
    };
    if endpoint.spec.auth_mode == AuthMode::None {
        bail!(
            "OnlineEndpoint {ns}/{} has auth mode none: callers need no credentials",
            args.name
        );
    }
    let secret_name = keys_secret_name(&args.name);
    let secrets: Api<Secret> = Api::namespaced(client, &ns);
    let secret = secrets
        .get_opt(&secret_name)
        .await
        .with_context(|| format!("reading Secret {ns}/{secret_name}"))?
        .with_context(|| {
            format!(
                "OnlineEndpoint {ns}/{} has no keys Secret yet: the operator creates it",
                args.name
            )
        })?;
    let field = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .filter(|v| !v.is_empty())
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let out = match endpoint.spec.auth_mode {
        AuthMode::Key => json!({
            "primaryKey": field(PRIMARY_KEY).context("the keys Secret has no primaryKey")?,
            "secondaryKey": field(SECONDARY_KEY).context("the keys Secret has no secondaryKey")?,
        }),
        AuthMode::AmlToken => {
            let signing = field(TOKEN_SIGNING_KEY).with_context(|| {
                format!(
                    "Secret {ns}/{secret_name} has no {TOKEN_SIGNING_KEY} yet: the operator adds it"
                )
            })?;
            credentials(signing.as_bytes(), &args.name, now, ttl)?
        }
        AuthMode::None => bail!("auth mode none: no credentials"),
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Azure ML's token answer for a token minted at `now` (Unix seconds) lasting `ttl` (pure).
pub fn credentials(
    signing_key: &[u8],
    endpoint: &str,
    now: u64,
    ttl: Duration,
) -> anyhow::Result<serde_json::Value> {
    let expires = now + ttl.as_secs();
    let time = |secs: u64| -> anyhow::Result<String> {
        Ok(Timestamp::from_second(i64::try_from(secs)?)?.to_string())
    };
    Ok(json!({
        "accessToken": token::mint(signing_key, endpoint, expires),
        "tokenType": "Bearer",
        "expiryTimeUtc": time(expires)?,
        // Half-way, as Azure ML suggests refreshing before expiry.
        "refreshAfterTimeUtc": time(now + ttl.as_secs() / 2)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_credentials_carry_a_valid_token_and_its_times() {
        let c = credentials(b"key", "fraud", 1_800_000_000, Duration::from_secs(3600)).unwrap();
        assert_eq!(c["tokenType"], "Bearer");
        assert_eq!(c["expiryTimeUtc"], "2027-01-15T09:00:00Z");
        assert_eq!(c["refreshAfterTimeUtc"], "2027-01-15T08:30:00Z");
        let t = c["accessToken"].as_str().unwrap();
        assert!(token::verify(b"key", "fraud", t.as_bytes(), 1_800_000_001));
        assert!(!token::verify(b"key", "fraud", t.as_bytes(), 1_800_003_600));
    }
}
