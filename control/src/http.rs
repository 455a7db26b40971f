//! The metrics listener's HTTP endpoints (hyper, HTTP/1.1):
//! - `/metrics`: the Prometheus exposition ([`crate::metrics::render`]);
//! - `/healthz`: 200 while the process and every worker are alive (a
//!   worker whose heartbeat stopped for a second fails it), else 503;
//! - `/readyz`: 200 once lbd serves: the port up (this listener answers
//!   only once it is), the configuration loaded, at least one VIP
//!   servable (a backend up, resolved and passing its checks), not
//!   stopping; else 503. The body says why.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::hub::Control;
use crate::metrics::{render, Source};

/// Serve the endpoints until `stop` is set.
pub async fn serve(listener: TcpListener, source: Source, stop: &AtomicBool) -> Result<()> {
    let stopped = async {
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::pin!(stopped);
    loop {
        let conn = tokio::select! {
            () = &mut stopped => return Ok(()),
            conn = listener.accept() => conn,
        };
        let (stream, _) = conn.context("accepting a metrics connection")?;
        let source = source.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (status, content_type, body) = respond(req.method(), req.uri().path(), &source);
                let response = Response::builder()
                    .status(status)
                    .header("Content-Type", content_type)
                    .body(Full::new(Bytes::from(body)));
                async move { Ok::<_, Infallible>(response.unwrap_or_default()) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics connection");
            }
        });
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

/// The response to `method path`: status, content type, body.
pub fn respond(
    method: &hyper::Method,
    path: &str,
    source: &Source,
) -> (StatusCode, &'static str, String) {
    if method != hyper::Method::GET && method != hyper::Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, TEXT, "GET only\n".into());
    }
    let verdict = |r: Result<String, String>| match r {
        Ok(body) => (StatusCode::OK, TEXT, body),
        Err(body) => (StatusCode::SERVICE_UNAVAILABLE, TEXT, body),
    };
    match path {
        "/metrics" => (StatusCode::OK, crate::metrics::CONTENT_TYPE, render(source)),
        "/healthz" => verdict(source.control.lock().map_or_else(
            |_| Err("unhealthy: the control state is poisoned\n".into()),
            |c| healthz(&c),
        )),
        "/readyz" => verdict(source.control.lock().map_or_else(
            |_| Err("not ready: the control state is poisoned\n".into()),
            |c| readyz(&c),
        )),
        _ => (
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: /metrics, /healthz, /readyz\n".into(),
        ),
    }
}

/// Alive: every worker polls (as the monitor last saw).
pub fn healthz(c: &Control) -> Result<String, String> {
    match c.stalled_workers() {
        0 => Ok("ok\n".into()),
        n => Err(format!(
            "unhealthy: {n} worker(s) stalled (heartbeat still for over a second)\n"
        )),
    }
}

/// Ready: serving, with at least one VIP servable.
pub fn readyz(c: &Control) -> Result<String, String> {
    if c.shutting_down() {
        return Err("not ready: stopping (routes withdrawn)\n".into());
    }
    if c.stalled_workers() > 0 {
        return Err("not ready: a worker is stalled\n".into());
    }
    let vips = c.state().vips().len();
    if vips == 0 {
        return Err("not ready: no VIP is configured\n".into());
    }
    let servable = c.servable();
    if servable.is_empty() {
        return Err(format!(
            "not ready: none of the {vips} VIP(s) is servable (no backend up, resolved and passing its checks)\n"
        ));
    }
    let shown: Vec<String> = servable.iter().map(ToString::to_string).collect();
    Ok(format!("ready: serving {}\n", shown.join(" ")))
}
