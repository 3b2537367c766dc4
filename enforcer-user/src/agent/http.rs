//! Health and metrics endpoint: `GET /readyz`, `GET /healthz`, `GET /metrics`.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::metrics::Metrics;

/// What the endpoint reports.
pub struct Health {
    /// Set once the manifests (or the API server's initial lists) are enforced in the kernel.
    pub ready: AtomicBool,
    pub metrics: Arc<Metrics>,
    /// Called before rendering /metrics, to refresh values read from the kernel.
    pub refresh: Box<dyn Fn() + Send + Sync>,
    /// Milliseconds since `started` at the main loop's last turn (0: not in the loop yet).
    /// /healthz fails when the loop has not turned for [`STALL_AFTER`].
    pub last_turn_ms: std::sync::atomic::AtomicU64,
    pub started: std::time::Instant,
}

/// How long the main loop may go without a turn before /healthz fails (it turns every
/// second).
pub const STALL_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

impl Health {
    /// The main loop turned.
    pub fn turned(&self) {
        let ms = self.started.elapsed().as_millis().max(1) as u64;
        self.last_turn_ms.store(ms, Ordering::Release);
    }

    /// Why the agent is not live (the main loop stalled), if it is not.
    pub fn stalled(&self) -> Option<String> {
        let last = self.last_turn_ms.load(Ordering::Acquire);
        if last == 0 {
            return None;
        }
        let idle = (self.started.elapsed().as_millis() as u64).saturating_sub(last);
        (idle > STALL_AFTER.as_millis() as u64)
            .then(|| format!("the main loop has not turned for {} s", idle / 1000))
    }

    /// Why the agent is degraded (the API server does not answer), if it is.
    pub fn degraded(&self) -> Option<String> {
        if self.metrics.get("enforcer_kube_degraded", &[]) != Some(1.0) {
            return None;
        }
        let since = self
            .metrics
            .get("enforcer_kube_degraded_since_timestamp_seconds", &[])
            .unwrap_or(0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        Some(format!(
            "the API server has not answered for {:.0} s; enforcing the last state received",
            (now - since).max(0.0)
        ))
    }
}

fn reply(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Full::new(body.into()))
        .expect("static response parts")
}

async fn handle(
    req: Request<Incoming>,
    h: Arc<Health>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            text,
            "method not allowed\n",
        ));
    }
    Ok(match req.uri().path() {
        "/readyz" => {
            if !h.ready.load(Ordering::Acquire) {
                reply(StatusCode::SERVICE_UNAVAILABLE, text, "not ready\n")
            } else if let Some(why) = h.degraded() {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    text,
                    format!("degraded: {why}\n"),
                )
            } else {
                reply(StatusCode::OK, text, "ready\n")
            }
        }
        "/healthz" | "/livez" => match h.stalled() {
            Some(why) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                text,
                format!("stalled: {why}\n"),
            ),
            None => reply(StatusCode::OK, text, "ok\n"),
        },
        "/metrics" => {
            (h.refresh)();
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                h.metrics.render(),
            )
        }
        _ => reply(StatusCode::NOT_FOUND, text, "not found\n"),
    })
}

/// Bind now (so a bad address fails start-up), serve in the background.
pub async fn spawn(addr: SocketAddr, health: Arc<Health>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let h = health.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(req, h.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(local)
}

#[cfg(test)]
mod health_tests {
    use super::*;

    fn health() -> Health {
        Health {
            ready: AtomicBool::new(true),
            metrics: Arc::new(Metrics::new()),
            refresh: Box::new(|| {}),
            last_turn_ms: Default::default(),
            started: std::time::Instant::now(),
        }
    }

    #[test]
    fn degraded_follows_the_api_source() {
        let h = health();
        assert_eq!(h.degraded(), None, "standalone mode: never degraded");
        h.metrics.set("enforcer_kube_degraded", "", &[], 0.0);
        assert_eq!(h.degraded(), None);
        h.metrics.set("enforcer_kube_degraded", "", &[], 1.0);
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
            - 42.0;
        h.metrics.set(
            "enforcer_kube_degraded_since_timestamp_seconds",
            "",
            &[],
            since,
        );
        let why = h.degraded().expect("degraded");
        assert!(why.contains("42 s"), "{why}");
    }

    #[test]
    fn liveness_fails_only_when_the_loop_stalls() {
        let h = health();
        assert_eq!(h.stalled(), None, "not in the loop yet (start-up)");
        h.turned();
        assert_eq!(h.stalled(), None, "just turned");
        // A turn long ago.
        let h = Health {
            started: std::time::Instant::now() - STALL_AFTER * 2,
            ..health()
        };
        h.last_turn_ms.store(1, Ordering::Release);
        assert!(h.stalled().is_some());
    }
}
