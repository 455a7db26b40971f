//! lbd's log: text on stderr (colour only on a terminal, so files and
//! journald get none), JSON lines on stderr, or journald's native protocol
//! (each event's level becomes its priority: error 3, warn 4, info 5,
//! debug 6, trace 7). `LBD_LOG` filters (default `info`).

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines on stderr.
    #[default]
    Text,
    /// One JSON object per line on stderr.
    Json,
    /// To journald directly, with priorities and fields (the unit's choice);
    /// text on stderr where journald cannot be reached.
    Journald,
}

fn filter() -> EnvFilter {
    EnvFilter::try_from_env("LBD_LOG").unwrap_or_else(|_| "info".into())
}

/// Install the global subscriber.
pub fn init(format: LogFormat) {
    let text = || {
        tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    };
    match format {
        LogFormat::Text => text(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .init(),
        LogFormat::Journald => match tracing_journald::layer() {
            Ok(layer) => tracing_subscriber::registry()
                .with(filter())
                .with(layer.with_syslog_identifier("lbd".into()))
                .init(),
            Err(e) => {
                text();
                tracing::warn!(error = %e, "journald is not reachable: logging to stderr");
            }
        },
    }
}
