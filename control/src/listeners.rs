//! The API and metrics listeners: bound before EAL starts, so that a
//! second lbd fails at once and cleanly, then served while workers run.

use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};

use crate::args::Options;
use crate::{grpc, http, metrics};

/// What lbd listens on, per its options.
pub struct Listeners {
    unix: Option<tokio::net::UnixListener>,
    tcp: Option<grpc::TcpApi>,
    metrics: Option<tokio::net::TcpListener>,
}

impl Listeners {
    /// Bind the gRPC socket (--grpc-socket), the TLS API (--grpc-listen)
    /// and the metrics listener (--metrics-listen) on `rt`.
    pub fn bind(rt: &tokio::runtime::Runtime, opts: &Options) -> Result<Listeners> {
        let unix = match &opts.grpc_socket {
            Some(path) => Some(rt.block_on(grpc::bind(path))?),
            None => None,
        };
        let tcp = match (
            opts.grpc_listen,
            &opts.tls_cert,
            &opts.tls_key,
            &opts.tls_client_ca,
        ) {
            (Some(addr), Some(cert), Some(key), Some(ca)) => {
                Some(rt.block_on(grpc::bind_tcp(addr, cert, key, ca))?)
            }
            _ => None,
        };
        let metrics = match opts.metrics_listen {
            Some(addr) => Some(
                rt.block_on(tokio::net::TcpListener::bind(addr))
                    .with_context(|| format!("metrics listener on {addr}"))?,
            ),
            None => None,
        };
        Ok(Listeners { unix, tcp, metrics })
    }

    /// Serve the API and the metrics until `stop` is set; log what failed.
    pub async fn serve(self, api: grpc::Api, source: metrics::Source, stop: &AtomicBool) {
        let tcp_side = api.clone();
        let tcp_server = async {
            match self.tcp {
                Some(t) => grpc::serve_tcp(t, tcp_side, stop).await,
                None => Ok(()),
            }
        };
        let server = async {
            let unix = async {
                match self.unix {
                    Some(l) => grpc::serve(l, api, stop).await,
                    None => Ok(()),
                }
            };
            let (u, t) = tokio::join!(unix, tcp_server);
            u.and(t)
        };
        let exposition = async {
            match self.metrics {
                Some(l) => http::serve(l, source, stop).await,
                None => Ok(()),
            }
        };
        let (served, exposed) = tokio::join!(server, exposition);
        if let Err(e) = &served {
            tracing::error!(error = %e, "gRPC server");
        }
        if let Err(e) = &exposed {
            tracing::error!(error = %e, "metrics server");
        }
    }
}
