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
            if h.ready.load(Ordering::Acquire) {
                reply(StatusCode::OK, text, "ready\n")
            } else {
                reply(StatusCode::SERVICE_UNAVAILABLE, text, "not ready\n")
            }
        }
        "/healthz" | "/livez" => reply(StatusCode::OK, text, "ok\n"),
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
