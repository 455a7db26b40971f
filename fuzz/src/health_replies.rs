//! What lbd reads from backends: the status line of an HTTP check's answer,
//! and a feedback agent's answer in HAProxy's text protocol or as the HTTP
//! form's JSON. Invariants: no panic; a percentage is 0-100; an error
//! quotes a bounded part of the answer, never all of it (it travels in
//! events, `lbctl health` and metrics' logs).

use control::feedback::answer_of;
use control::health::http_status;
use control::state::AgentKind;

/// The longest refusal an answer may produce.
const MAX_ERROR: usize = 200;

/// One input of the target.
pub fn run(data: &[u8]) {
    if let Some(code) = http_status(data) {
        assert!((100..=999).contains(&code), "status {code}");
    }
    let http = AgentKind::Http {
        path: "/load".into(),
    };
    for kind in [AgentKind::Tcp, http] {
        match answer_of(&kind, data) {
            Ok(r) => assert!(r.percent.is_none_or(|p| p <= 100), "{r:?}"),
            Err(e) => assert!(e.len() <= MAX_ERROR, "{kind}: {} bytes: {e}", e.len()),
        }
    }
}
