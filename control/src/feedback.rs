//! Load feedback: each backend with an agent is polled every interval (one
//! task per backend, as health checks are), and its answer scales the
//! backend's weight. What an answer means, and when it takes effect:
//! - a percentage scales the configured weight, in steps of [`STEP`]%, and
//!   moves only when the answer is a whole step away from the one in force
//!   (hysteresis: an answer wavering around a boundary changes nothing);
//! - `drain` (or 0%) drains the backend, `maint` takes it out as down
//!   does, `ready`/`up` end either;
//! - an agent that fails [`SILENT_AFTER`] polls in a row leaves the
//!   configured weight in force: a silent agent never takes a backend down;
//! - the hub applies the changes of a VIP at most every [`MIN_REBUILD`]
//!   (each changes its Maglev table), all of one evaluation in one
//!   snapshot. Flows keep their backend: the flow table holds them.
//!
//! Per-backend caps (`max_flows`/`min_flows`) are the hub's, from the
//! workers' flow counts ([`crate::hub::Control::update_caps`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb_core::snapshot::VipKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::hub::Control;
use crate::state::{AgentCheck, AgentKind};

/// Percentages are applied in steps of this many points.
pub const STEP: u8 = 5;
/// Consecutive failed polls after which the configured weight is back.
pub const SILENT_AFTER: u32 = 3;
/// The shortest time between two feedback rebuilds of one VIP's table.
pub const MIN_REBUILD: Duration = Duration::from_secs(2);
/// The most an agent may send (bytes): a line, or a small JSON object.
const MAX_ANSWER: usize = 4096;

/// What an agent asks for beside a percentage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AgentState {
    /// Takes new flows (`ready`, `up`, or nothing said).
    #[default]
    Ready,
    /// Keeps its flows, takes no new ones.
    Drain,
    /// Out, as down: its flows move.
    Maint,
}

impl std::fmt::Display for AgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AgentState::Ready => "ready",
            AgentState::Drain => "drain",
            AgentState::Maint => "maint",
        })
    }
}

/// One answer: a percentage and a state, each only if the agent said it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub percent: Option<u8>,
    pub state: Option<AgentState>,
}

/// HAProxy's agent-check line: words separated by spaces, tabs or commas;
/// `N%` (0-100), `ready`/`up`, `drain`, `maint`, and `down`/`fail`/
/// `stopped` (taken as `maint`: out). `maxconn:N` is HAProxy's own and
/// ignored; anything else is refused, so a misconfigured agent shows.
pub fn parse_text(line: &str) -> Result<Report, String> {
    let mut r = Report::default();
    let words = line
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty());
    for w in words {
        let lower = w.to_ascii_lowercase();
        if let Some(n) = lower.strip_suffix('%') {
            r.percent = Some(percent(n.parse::<f64>().map_err(|_| bad(w))?)?);
            continue;
        }
        r.state = Some(match lower.as_str() {
            "ready" | "up" => AgentState::Ready,
            "drain" => AgentState::Drain,
            "maint" | "down" | "fail" | "stopped" => AgentState::Maint,
            _ if lower.starts_with("maxconn:") => continue,
            _ => return Err(bad(w)),
        });
    }
    if r == Report::default() {
        return Err("an empty answer".into());
    }
    Ok(r)
}

/// A refused word, quoted in at most 32 characters of its escaped form
/// (a control character escapes to several: a cut before escaping would
/// not bound the message).
fn bad(word: &str) -> String {
    let escaped = word.escape_debug();
    let cut = if escaped.clone().count() > 32 {
        "..."
    } else {
        ""
    };
    let shown: String = escaped.take(32).collect();
    format!("\"{shown}\"{cut} is not an agent word (N%, ready, up, drain, maint)")
}

fn percent(v: f64) -> Result<u8, String> {
    if (0.0..=100.0).contains(&v) {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "checked to be within 0..=100"
        )]
        Ok(v.round() as u8)
    } else {
        // Display writes every digit of a huge or tiny float (6e209 is 210
        // characters): those are shown in scientific notation.
        let shown = format!("{v}");
        let shown = if shown.len() > 16 {
            format!("{v:e}")
        } else {
            shown
        };
        Err(format!("{shown}% is outside 0-100%"))
    }
}

/// A JSON value as an error quotes it: at most 32 characters of its text.
fn shown(v: &serde_json::Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(32) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// The HTTP form: `{"weight_percent": 75, "state": "drain"}`, both optional
/// (at least one given).
pub fn parse_json(body: &str) -> Result<Report, String> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let mut r = Report::default();
    if let Some(p) = v.get("weight_percent") {
        let p = p
            .as_f64()
            .ok_or_else(|| format!("weight_percent {} is not a number", shown(p)))?;
        r.percent = Some(percent(p)?);
    }
    if let Some(s) = v.get("state") {
        let s = s
            .as_str()
            .ok_or_else(|| format!("state {} is not a string", shown(s)))?;
        let Report { state, .. } = parse_text(s)?;
        r.state = state;
    }
    if r == Report::default() {
        return Err("neither weight_percent nor state".into());
    }
    Ok(r)
}

/// The percentage in force after an answer of `raw`, from `applied`:
/// rounded to a [`STEP`], and moved only when `raw` is a whole step away.
pub fn next_percent(applied: u8, raw: u8) -> u8 {
    if raw.abs_diff(applied) < STEP {
        return applied;
    }
    let steps = (u16::from(raw) + u16::from(STEP) / 2) / u16::from(STEP);
    #[allow(clippy::cast_possible_truncation, reason = "at most 100 / STEP * STEP")]
    let stepped = (steps * u16::from(STEP)).min(100) as u8;
    stepped
}

/// The weight new flows follow: `weight` scaled by `percent` (at least 1
/// while both are above 0, so a loaded backend is never silently out).
pub fn scaled(weight: u32, percent: u8) -> u32 {
    if weight == 0 || percent == 0 {
        return 0;
    }
    (weight * u32::from(percent)).div_ceil(100).max(1)
}

/// A backend's feedback as the hub keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    /// In force now (what the snapshot uses).
    pub percent: u8,
    pub state: AgentState,
    /// What the latest answers ask for, applied at the VIP's next rebuild.
    pub wanted_percent: u8,
    pub wanted_state: AgentState,
    /// The last poll was answered.
    pub answered: bool,
    pub failures: u32,
    /// The last answer, or why there was none.
    pub detail: String,
    /// When `percent`/`state` took their value.
    pub since: std::time::SystemTime,
}

impl Default for Feedback {
    fn default() -> Self {
        Feedback {
            percent: 100,
            state: AgentState::Ready,
            wanted_percent: 100,
            wanted_state: AgentState::Ready,
            answered: false,
            failures: 0,
            detail: "not polled yet (configured weight in force)".into(),
            since: std::time::SystemTime::now(),
        }
    }
}

impl Feedback {
    /// Take one poll's outcome; whether what it wants changed.
    pub fn observe(&mut self, result: Result<Report, String>) -> bool {
        let before = (self.wanted_percent, self.wanted_state);
        match result {
            Ok(r) => {
                self.answered = true;
                self.failures = 0;
                if let Some(p) = r.percent {
                    self.wanted_percent = next_percent(self.wanted_percent, p);
                }
                if let Some(s) = r.state {
                    self.wanted_state = s;
                }
                let said: Vec<String> = r
                    .percent
                    .map(|p| format!("{p}%"))
                    .into_iter()
                    .chain(r.state.map(|s| s.to_string()))
                    .collect();
                self.detail = format!(
                    "{} (in force: {}% {})",
                    said.join(" "),
                    self.wanted_percent,
                    self.wanted_state
                );
            }
            Err(e) => {
                self.answered = false;
                self.failures = self.failures.saturating_add(1);
                if self.failures >= SILENT_AFTER {
                    self.wanted_percent = 100;
                    self.wanted_state = AgentState::Ready;
                    self.detail = format!("no answer: {e} (configured weight in force)");
                } else {
                    self.detail = format!(
                        "no answer: {e} ({} of {SILENT_AFTER} before the configured weight is back)",
                        self.failures
                    );
                }
            }
        }
        (self.wanted_percent, self.wanted_state) != before
    }

    /// Put what is wanted in force; whether anything changed.
    pub fn apply(&mut self) -> bool {
        let changed = (self.percent, self.state) != (self.wanted_percent, self.wanted_state);
        if changed {
            self.percent = self.wanted_percent;
            self.state = self.wanted_state;
            self.since = std::time::SystemTime::now();
        }
        changed
    }
}

/// The running agent polls, kept in line with the state.
#[derive(Default)]
pub struct Agents {
    tasks: HashMap<(VipKey, IpAddr), (AgentCheck, JoinHandle<()>)>,
}

impl Agents {
    /// Start polls for new or changed agents, stop those of removed ones.
    pub fn reconcile(
        &mut self,
        wanted: Vec<(VipKey, IpAddr, AgentCheck)>,
        control: &Arc<Mutex<Control>>,
    ) {
        let keep: HashMap<(VipKey, IpAddr), AgentCheck> =
            wanted.into_iter().map(|(v, a, c)| ((v, a), c)).collect();
        self.tasks.retain(|key, (agent, task)| {
            let same = keep.get(key) == Some(agent);
            if !same {
                task.abort();
                if let Ok(mut c) = control.lock() {
                    c.forget_feedback(&key.0, &key.1);
                }
            }
            same
        });
        for (key, agent) in keep {
            if let std::collections::hash_map::Entry::Vacant(slot) = self.tasks.entry(key) {
                let task = tokio::spawn(run(key.0, key.1, agent.clone(), Arc::clone(control)));
                slot.insert((agent, task));
            }
        }
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        for (_, task) in self.tasks.values() {
            task.abort();
        }
    }
}

async fn run(vip: VipKey, addr: IpAddr, agent: AgentCheck, control: Arc<Mutex<Control>>) {
    let target = SocketAddr::new(addr, agent.port);
    let timeout = Duration::from_millis(u64::from(agent.timeout_ms));
    let mut tick = tokio::time::interval(Duration::from_millis(u64::from(agent.interval_ms)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = poll(target, &agent.kind, timeout).await;
        match control.lock() {
            Ok(mut c) => c.set_feedback(vip, addr, result),
            Err(_) => return,
        }
    }
}

/// What an agent's whole answer says: the first line of a TCP agent's
/// (HAProxy's protocol), or the JSON body of an HTTP agent's 200. Errors
/// quote at most a few words of the answer, never all of it.
pub fn answer_of(kind: &AgentKind, answer: &[u8]) -> Result<Report, String> {
    if answer.len() > MAX_ANSWER {
        return Err(format!("an answer over {MAX_ANSWER} bytes"));
    }
    let text = String::from_utf8_lossy(answer);
    match kind {
        AgentKind::Tcp => parse_text(text.lines().next().unwrap_or_default()),
        AgentKind::Http { .. } => {
            let (head, body) = text
                .split_once("\r\n\r\n")
                .ok_or("an HTTP answer without a body")?;
            match crate::health::http_status(head.as_bytes()) {
                Some(200) => parse_json(body),
                Some(code) => Err(format!("HTTP {code}, expected 200")),
                None => Err("no HTTP status line".into()),
            }
        }
    }
}

/// Ask the agent at `target` once.
pub async fn poll(
    target: SocketAddr,
    kind: &AgentKind,
    timeout: Duration,
) -> Result<Report, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(target)
            .await
            .map_err(|e| format!("connecting to {target}: {e}"))?;
        if let AgentKind::Http { path } = kind {
            let host = target.ip();
            let request = format!(
                "GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
            );
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| format!("sending the request: {e}"))?;
        }
        let mut answer = Vec::new();
        (&mut stream)
            .take(MAX_ANSWER as u64 + 1)
            .read_to_end(&mut answer)
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        answer_of(kind, &answer)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} ms", timeout.as_millis())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_or_tiny_percentage_is_quoted_briefly() {
        // Found by the long fuzz run: a 210-digit number came back whole.
        let huge = format!("6{}%", "0".repeat(209));
        let e = parse_text(&huge).unwrap_err();
        assert_eq!(e, "6e209% is outside 0-100%");
        let e = parse_json(r#"{"weight_percent": -1e-300}"#).unwrap_err();
        assert_eq!(e, "-1e-300% is outside 0-100%");
        assert_eq!(parse_text("101%").unwrap_err(), "101% is outside 0-100%");
    }

    #[test]
    fn haproxy_agent_words() {
        let r = |p: Option<u8>, s: Option<AgentState>| {
            Ok(Report {
                percent: p,
                state: s,
            })
        };
        assert_eq!(parse_text("75%"), r(Some(75), None));
        assert_eq!(parse_text("75%\r"), r(Some(75), None));
        assert_eq!(
            parse_text(" ready 50%"),
            r(Some(50), Some(AgentState::Ready))
        );
        assert_eq!(parse_text("drain,0%"), r(Some(0), Some(AgentState::Drain)));
        assert_eq!(parse_text("MAINT"), r(None, Some(AgentState::Maint)));
        assert_eq!(parse_text("down"), r(None, Some(AgentState::Maint)));
        assert_eq!(
            parse_text("up maxconn:30 12.6%"),
            r(Some(13), Some(AgentState::Ready))
        );
        assert!(parse_text("101%").unwrap_err().contains("outside"));
        assert!(parse_text("-1%").is_err());
        assert!(parse_text("x%").is_err());
        assert!(parse_text("hello")
            .unwrap_err()
            .contains("not an agent word"));
        assert!(parse_text("").is_err());
        assert!(parse_text(&"z".repeat(10_000)).unwrap_err().len() < 200);
    }

    #[test]
    fn http_json_answers() {
        assert_eq!(
            parse_json(r#"{"weight_percent": 75}"#),
            Ok(Report {
                percent: Some(75),
                state: None
            })
        );
        assert_eq!(
            parse_json(r#"{"weight_percent": 0, "state": "drain"}"#),
            Ok(Report {
                percent: Some(0),
                state: Some(AgentState::Drain)
            })
        );
        assert!(parse_json("{}").is_err());
        assert!(parse_json(r#"{"weight_percent": "75"}"#).is_err());
        assert!(parse_json(r#"{"weight_percent": 175}"#).is_err());
        assert!(parse_json(r#"{"state": "sleepy"}"#).is_err());
        assert!(parse_json("75%").is_err());
    }

    #[test]
    fn percentages_move_in_whole_steps() {
        assert_eq!(next_percent(100, 100), 100);
        assert_eq!(next_percent(100, 97), 100, "within a step: no change");
        assert_eq!(next_percent(100, 95), 95);
        assert_eq!(next_percent(100, 52), 50);
        assert_eq!(
            next_percent(50, 53),
            50,
            "wavering around 52.5 changes nothing"
        );
        assert_eq!(next_percent(50, 47), 50);
        assert_eq!(next_percent(50, 44), 45);
        assert_eq!(next_percent(50, 0), 0);
        assert_eq!(next_percent(0, 3), 0);
        assert_eq!(next_percent(0, 100), 100);
        // Every answer lands on a step.
        for applied in (0..=100).step_by(5) {
            for raw in 0..=100 {
                assert_eq!(next_percent(applied, raw) % STEP, 0);
            }
        }
    }

    #[test]
    fn weights_scale_and_never_vanish_above_zero() {
        assert_eq!(scaled(100, 50), 50);
        assert_eq!(scaled(1, 25), 1, "a weight of 1 at 25% still takes flows");
        assert_eq!(scaled(3, 50), 2);
        assert_eq!(scaled(10_000, 100), 10_000);
        assert_eq!(scaled(7, 0), 0);
        assert_eq!(scaled(0, 100), 0);
    }

    #[test]
    fn a_silent_agent_gives_the_configured_weight_back() {
        let mut f = Feedback::default();
        assert!(f.observe(Ok(Report {
            percent: Some(40),
            state: None
        })));
        assert!(f.apply());
        assert_eq!((f.percent, f.state), (40, AgentState::Ready));
        for n in 1..SILENT_AFTER {
            assert!(
                !f.observe(Err("refused".into())),
                "failure {n} changes nothing yet"
            );
            assert!(
                f.detail.contains("before the configured weight is back"),
                "{}",
                f.detail
            );
        }
        assert!(f.observe(Err("refused".into())));
        assert!(
            f.detail.contains("configured weight in force"),
            "{}",
            f.detail
        );
        assert!(f.apply());
        assert_eq!((f.percent, f.state), (100, AgentState::Ready));
        assert!(!f.apply(), "applied once");
    }

    #[tokio::test]
    async fn polls_a_tcp_and_an_http_agent() {
        let serve = |answer: &'static str| async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move {
                while let Ok((mut s, _)) = l.accept().await {
                    let mut buf = [0u8; 512];
                    // An HTTP client speaks first; a TCP agent need not wait.
                    if answer.starts_with("HTTP") {
                        let _ = s.read(&mut buf).await;
                    }
                    let _ = s.write_all(answer.as_bytes()).await;
                }
            });
            addr
        };
        let t = Duration::from_millis(500);
        let tcp = serve("drain 30%\n").await;
        assert_eq!(
            poll(tcp, &AgentKind::Tcp, t).await,
            Ok(Report {
                percent: Some(30),
                state: Some(AgentState::Drain)
            })
        );
        let http = serve(
            "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"weight_percent\": 60}",
        )
        .await;
        let kind = AgentKind::Http {
            path: "/load".into(),
        };
        assert_eq!(
            poll(http, &kind, t).await,
            Ok(Report {
                percent: Some(60),
                state: None
            })
        );
        let failing = serve("HTTP/1.0 503 Busy\r\n\r\n{}").await;
        assert!(poll(failing, &kind, t)
            .await
            .unwrap_err()
            .contains("HTTP 503"));
        // Nothing listens: refused, at once.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert!(poll(closed, &AgentKind::Tcp, t)
            .await
            .unwrap_err()
            .contains("connecting"));
    }
}
