//! lb-agent: the feedback agent on a backend. It tells the balancer how
//! much more the server can take, as a weight in percent of the
//! configured one, over two protocols:
//! - HAProxy agent-check text over TCP: on each connection it writes one
//!   line (`ready 75%\n`) and closes; what the peer sends is ignored;
//! - HTTP: `GET /load` answers `{"weight_percent": 75, "state": "ready"}`.
//!
//! The answer comes from one [`Source`]: a fixed percentage, a file read
//! on each request, or the load measured on this machine ([`load`]).

pub mod answer;
pub mod load;

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub use answer::{Admin, Answer, Oper};
pub use load::Measured;

/// Where the answer comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// `ready N%`, always.
    Fixed(u8),
    /// The first line of the file, read on each request. Missing, empty
    /// or with nothing the agent understands: `ready` without a weight
    /// (the balancer keeps the configured weight), so removing the file
    /// undoes a `drain` or `maint` written into it.
    File(PathBuf, Arc<Mutex<Option<String>>>),
    /// The last window the sampler measured: `ready N%`, or `ready` while
    /// nothing is measured yet (the first window) or a source failed.
    Measured(Arc<Mutex<Measured>>),
}

impl Source {
    pub fn file(path: PathBuf) -> Source {
        Source::File(path, Arc::new(Mutex::new(None)))
    }

    /// The answer now, and the measured figures when there are some.
    pub fn answer(&self) -> (Answer, Option<Measured>) {
        match self {
            Source::Fixed(p) => (Answer::ready(Some(*p)), None),
            Source::File(path, warned) => (read_answer_file(path, warned), None),
            Source::Measured(m) => {
                let m = *m.lock().unwrap_or_else(|e| e.into_inner());
                (Answer::ready(m.weight_percent), Some(m))
            }
        }
    }

    /// The JSON document of `GET /load`.
    pub fn json(&self) -> serde_json::Value {
        let (a, m) = self.answer();
        let mut doc = a.json();
        if let (serde_json::Value::Object(doc), Some(m)) = (&mut doc, m) {
            doc.extend(m.json_fields());
        }
        doc
    }
}

/// The answer in `path` (see [`Source::File`]). A problem with the file is
/// logged once per distinct problem, not on every request.
fn read_answer_file(path: &std::path::Path, warned: &Mutex<Option<String>>) -> Answer {
    let (answer, problem) = match std::fs::read_to_string(path) {
        Ok(text) => {
            let (a, ignored) = Answer::parse(&text);
            let problem = (!ignored.is_empty()).then(|| {
                format!(
                    "{}: ignored {ignored:?} (known: N%, ready, drain, maint, up, down, fail, stopped)",
                    path.display()
                )
            });
            (a, problem)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Answer::default(), None),
        Err(e) => (
            Answer::default(),
            Some(format!("{}: {e}; answering ready", path.display())),
        ),
    };
    let mut last = warned.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = &problem {
        if last.as_ref() != Some(p) {
            tracing::warn!("{p}");
        }
    }
    *last = problem;
    if answer.is_empty() {
        Answer::ready(None)
    } else {
        answer
    }
}

/// The next connection. An error (out of file descriptors, a connection
/// reset before it was accepted) is logged and waited out a little, not
/// fatal: the agent keeps serving.
async fn accept(listener: &TcpListener) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match listener.accept().await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "accepting a connection");
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

/// Serve the text protocol: each connection gets the answer's line, then
/// the agent closes its side. Whatever the peer sent is read and dropped
/// (for up to a second) so that closing does not reset the connection
/// before the peer has read the line.
pub async fn serve_text(listener: TcpListener, source: Source) {
    loop {
        let Some((mut stream, peer)) = accept(&listener).await else {
            continue;
        };
        let line = source.answer().0.text();
        tracing::debug!(%peer, line = line.trim_end(), "agent-check");
        tokio::spawn(async move {
            let write = async {
                stream.write_all(line.as_bytes()).await?;
                stream.shutdown().await
            };
            match tokio::time::timeout(Duration::from_secs(2), write).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "agent-check write");
                    return;
                }
                Err(_) => return,
            }
            let mut sink = [0u8; 512];
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Ok(n) = stream.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
        });
    }
}

/// Serve the HTTP protocol: `GET path` (and HEAD) answers the JSON
/// document; other paths 404, other methods 405.
pub async fn serve_http(listener: TcpListener, source: Source, path: String) {
    let path = Arc::new(path);
    loop {
        let Some((stream, peer)) = accept(&listener).await else {
            continue;
        };
        let (source, path) = (source.clone(), path.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (status, content_type, body) =
                    respond(req.method(), req.uri().path(), &path, &source);
                let response = Response::builder()
                    .status(status)
                    .header("Content-Type", content_type)
                    .header("Cache-Control", "no-store")
                    .body(Full::new(Bytes::from(body)));
                async move { Ok::<_, Infallible>(response.unwrap_or_default()) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "HTTP connection");
            }
        });
    }
}

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// Status, content type and body for `method path`.
pub fn respond(
    method: &hyper::Method,
    path: &str,
    load_path: &str,
    source: &Source,
) -> (StatusCode, &'static str, String) {
    if path != load_path {
        return (
            StatusCode::NOT_FOUND,
            TEXT,
            format!("not found: the answer is at {load_path}\n"),
        );
    }
    if method != hyper::Method::GET && method != hyper::Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, TEXT, "GET only\n".into());
    }
    (StatusCode::OK, JSON, format!("{}\n", source.json()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        assert_eq!(Source::Fixed(40).answer().0.text(), "ready 40%\n");
        let m = Arc::new(Mutex::new(Measured::default()));
        let s = Source::Measured(m.clone());
        assert_eq!(s.answer().0.text(), "ready\n");
        assert_eq!(s.json(), serde_json::json!({"state": "ready"}));
        *m.lock().unwrap() = Measured {
            cpu_percent: Some(12.34),
            nic_percent: None,
            load_percent: Some(12.34),
            weight_percent: Some(86),
        };
        assert_eq!(s.answer().0.text(), "ready 86%\n");
        assert_eq!(
            s.json(),
            serde_json::json!({"weight_percent": 86, "state": "ready",
                "load_percent": 12.3, "cpu_percent": 12.3})
        );
    }

    #[test]
    fn the_file_source() {
        let dir = std::env::temp_dir().join(format!("lb-agent-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("answer");
        let s = Source::file(path.clone());
        let text = |s: &Source| s.answer().0.text();
        assert_eq!(text(&s), "ready\n", "missing");
        std::fs::write(&path, "").unwrap();
        assert_eq!(text(&s), "ready\n", "empty");
        std::fs::write(&path, "50%\n").unwrap();
        assert_eq!(text(&s), "50%\n");
        std::fs::write(&path, "drain\n").unwrap();
        assert_eq!(text(&s), "drain\n");
        assert_eq!(s.json(), serde_json::json!({"state": "drain"}));
        std::fs::write(&path, "maint 0%").unwrap();
        assert_eq!(text(&s), "maint 0%\n");
        std::fs::write(&path, "nonsense").unwrap();
        assert_eq!(text(&s), "ready\n", "nothing understood");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn http_responses() {
        let s = Source::Fixed(75);
        let (status, ct, body) = respond(&hyper::Method::GET, "/load", "/load", &s);
        assert_eq!((status, ct), (StatusCode::OK, "application/json"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"weight_percent": 75, "state": "ready"})
        );
        assert_eq!(
            respond(&hyper::Method::GET, "/", "/load", &s).0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            respond(&hyper::Method::POST, "/load", "/load", &s).0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            respond(&hyper::Method::GET, "/w", "/w", &s).0,
            StatusCode::OK
        );
    }
}
