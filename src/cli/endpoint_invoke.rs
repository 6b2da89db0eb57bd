//! `mlcompute endpoint invoke NAME --data FILE [--deployment D] [--router URL] [--key K]`:
//! one scoring request through the router, as `az ml online-endpoint invoke` does.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::{io::AsyncWriteExt, net::TcpStream};

use crate::contract::router_http;

/// Arguments of `mlcompute endpoint invoke`.
#[derive(Debug, clap::Args)]
pub struct InvokeArgs {
    /// The endpoint name.
    pub name: String,
    /// A file with the request body (JSON); `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Send to this deployment whatever the traffic split (the `azureml-model-deployment` header).
    #[arg(long)]
    pub deployment: Option<String>,
    /// The router's base URL.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080",
        env = "MLCOMPUTE_ROUTER_URL"
    )]
    pub router: String,
    /// The endpoint key or token.
    #[arg(long, env = "MLCOMPUTE_ENDPOINT_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 60)]
    pub timeout_seconds: u64,
}

/// Sends the request; prints the answer's body on success, fails with the status and body otherwise.
pub async fn run(args: InvokeArgs) -> anyhow::Result<()> {
    let body = if args.data.as_os_str() == "-" {
        let mut buffer = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut buffer)
            .await
            .context("reading the request body from standard input")?;
        buffer
    } else {
        tokio::fs::read(&args.data)
            .await
            .with_context(|| format!("reading {}", args.data.display()))?
    };
    let base: Uri = args
        .router
        .parse()
        .with_context(|| format!("router URL {:?}", args.router))?;
    if base.scheme_str() != Some("http") {
        bail!("router URL {:?} must start with http://", args.router);
    }
    let authority = base
        .authority()
        .with_context(|| format!("router URL {:?} has no host", args.router))?
        .clone();
    let prefix = base.path().trim_end_matches('/');
    let path = format!("{prefix}{}", router_http::scoring_path(&args.name));
    let mut request = Request::post(path.as_str())
        .header(header::HOST, authority.as_str())
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(key) = &args.key {
        request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    if let Some(deployment) = &args.deployment {
        request = request.header(router_http::PINNING_HEADER, deployment.as_str());
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .context("building the request")?;
    let port = authority.port_u16().unwrap_or(80);
    let exchange = async {
        let stream = TcpStream::connect((authority.host(), port))
            .await
            .with_context(|| format!("connecting to the router at {}", args.router))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("talking to the router")?;
        tokio::spawn(connection);
        let response = sender
            .send_request(request)
            .await
            .context("sending the request")?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .context("reading the answer")?
            .to_bytes();
        anyhow::Ok((parts, body))
    };
    let (parts, body) = tokio::time::timeout(Duration::from_secs(args.timeout_seconds), exchange)
        .await
        .with_context(|| {
            format!(
                "no answer from the router within {} s",
                args.timeout_seconds
            )
        })??;
    if !parts.status.is_success() {
        let text = String::from_utf8_lossy(&body);
        bail!("{} answered {}: {}", path, parts.status, text.trim());
    }
    let mut stdout = tokio::io::stdout();
    stdout.write_all(&body).await?;
    if !body.ends_with(b"\n") {
        stdout.write_all(b"\n").await?;
    }
    stdout.flush().await?;
    Ok(())
}
