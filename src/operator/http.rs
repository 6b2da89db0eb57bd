//! The operator's small HTTP endpoint: `/metrics`, `/healthz`, `/readyz`. Prometheus scrapes and
//! kubelet probes are simple GETs, so a minimal HTTP/1.1 responder suffices and keeps the
//! operator free of a web framework.

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::runtime::{health::Health, metrics::Metrics};

/// Serves on `listener` until the task is dropped.
pub async fn serve_on(listener: TcpListener, metrics: Metrics, health: Health) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    }
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let health = health.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let Ok(n) = stream.read(&mut buf).await else {
                return;
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = answer(path, &metrics, &health);
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}

/// The status line and body for `path`.
fn answer(path: &str, metrics: &Metrics, health: &Health) -> (&'static str, String) {
    let probe = |r: Result<(), String>, ok: &str| match r {
        Ok(()) => ("200 OK", format!("{ok}\n")),
        Err(why) => ("503 Service Unavailable", format!("{why}\n")),
    };
    match path {
        "/metrics" => ("200 OK", metrics.render()),
        "/healthz" => probe(health.live(), "ok"),
        "/readyz" => probe(health.ready(), "ready"),
        _ => ("404 Not Found", "not found\n".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_controller_fails_healthz_and_unsynced_caches_fail_readyz() {
        let (metrics, health) = (Metrics::new().unwrap(), Health::default());
        health.set_serving(true);
        let c = health.register("trainingjob/team-a");
        assert_eq!(answer("/healthz", &metrics, &health).0, "200 OK");
        let (status, body) = answer("/readyz", &metrics, &health);
        assert_eq!(
            (status, body.as_str()),
            (
                "503 Service Unavailable",
                "caches not synced: trainingjob/team-a\n"
            )
        );
        c.set_synced();
        assert_eq!(answer("/readyz", &metrics, &health).0, "200 OK");
        c.set_ended();
        let (status, body) = answer("/healthz", &metrics, &health);
        assert_eq!(
            (status, body.as_str()),
            (
                "503 Service Unavailable",
                "controller ended: trainingjob/team-a\n"
            )
        );
        assert_eq!(
            answer("/readyz", &metrics, &health).0,
            "503 Service Unavailable"
        );
    }
}
