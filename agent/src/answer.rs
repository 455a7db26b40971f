//! What the agent answers, and its two spellings: the HAProxy agent-check
//! text line (`ready 75%\n`) and the JSON document of `GET /load`
//! (`{"state": "ready", "weight_percent": 75}`).
//!
//! The text grammar is HAProxy's agent-check reply: words separated by
//! spaces, tabs or commas, in any order, case-insensitive, ending with a
//! newline. The words this agent knows (and writes):
//! - `N%`, 0 to 100: the weight as a percentage of the configured one;
//! - `ready`, `drain`, `maint`: the administrative state (`ready` clears
//!   an earlier `drain` or `maint`);
//! - `up`, `down`, `fail`, `stopped`: the operational state (the last
//!   three may carry a reason after `#`, e.g. `down#disk full`, which is
//!   kept in the text and given as `"reason"` in JSON).
//!
//! Any other word (HAProxy's `maxconn:N`, a typo) is ignored, as HAProxy
//! ignores what it does not understand; [`Answer::parse`] reports them so
//! the agent can log them.

use std::fmt;

/// The administrative state: whether the balancer should send new streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admin {
    /// Back to normal: clears an earlier drain or maint.
    Ready,
    /// No new streams; existing ones stay.
    Drain,
    /// Out of service (maintenance).
    Maint,
}

impl Admin {
    pub fn as_str(self) -> &'static str {
        match self {
            Admin::Ready => "ready",
            Admin::Drain => "drain",
            Admin::Maint => "maint",
        }
    }
}

/// The operational state the server claims for itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Oper {
    Up,
    Down,
    Fail,
    Stopped,
}

impl Oper {
    pub fn as_str(self) -> &'static str {
        match self {
            Oper::Up => "up",
            Oper::Down => "down",
            Oper::Fail => "fail",
            Oper::Stopped => "stopped",
        }
    }
}

/// One answer. Every part is optional: an answer that says nothing about
/// the weight leaves the balancer's configured weight as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    pub admin: Option<Admin>,
    pub oper: Option<Oper>,
    /// With `oper` down, fail or stopped: why (the text after `#`).
    pub reason: Option<String>,
    /// 0 to 100.
    pub weight_percent: Option<u8>,
}

impl Answer {
    /// `ready N%`: what the agent says from a fixed or measured weight.
    pub fn ready(weight_percent: Option<u8>) -> Answer {
        Answer {
            admin: Some(Admin::Ready),
            weight_percent: weight_percent.map(|w| w.min(100)),
            ..Answer::default()
        }
    }

    /// Parse an agent-check line (the first line of `text`). The words it
    /// ignored come back beside it; the last word of each kind wins.
    pub fn parse(text: &str) -> (Answer, Vec<String>) {
        let line = text.lines().next().unwrap_or("");
        let mut a = Answer::default();
        let mut ignored = Vec::new();
        for word in line.split([' ', '\t', ',', '\r']).filter(|w| !w.is_empty()) {
            let (head, reason) = match word.split_once('#') {
                Some((h, r)) => (h, Some(r)),
                None => (word, None),
            };
            let lower = head.to_ascii_lowercase();
            let oper = |o| (Some(o), reason.filter(|r| !r.is_empty()).map(String::from));
            match lower.as_str() {
                "ready" if reason.is_none() => a.admin = Some(Admin::Ready),
                "drain" if reason.is_none() => a.admin = Some(Admin::Drain),
                "maint" if reason.is_none() => a.admin = Some(Admin::Maint),
                "up" if reason.is_none() => (a.oper, a.reason) = (Some(Oper::Up), None),
                "down" => (a.oper, a.reason) = oper(Oper::Down),
                "fail" => (a.oper, a.reason) = oper(Oper::Fail),
                "stopped" => (a.oper, a.reason) = oper(Oper::Stopped),
                _ => match lower
                    .strip_suffix('%')
                    .filter(|_| reason.is_none())
                    .and_then(|n| n.parse::<u8>().ok())
                    .filter(|n| *n <= 100)
                {
                    Some(n) => a.weight_percent = Some(n),
                    None => ignored.push(word.to_string()),
                },
            }
        }
        (a, ignored)
    }

    /// Says nothing at all.
    pub fn is_empty(&self) -> bool {
        self.admin.is_none() && self.oper.is_none() && self.weight_percent.is_none()
    }

    /// The agent-check line, newline included: `ready 75%\n`. (An empty
    /// answer would be a bare `\n`; the agent never gives one.)
    pub fn text(&self) -> String {
        format!("{self}\n")
    }

    /// The JSON document of the HTTP protocol: `weight_percent` (0 to 100)
    /// when the answer has one, `state` (`ready`, `drain`, `maint`) when it
    /// has an administrative state, `health` (`up`, `down`, `fail`,
    /// `stopped`) and `reason` when it has an operational state.
    pub fn json(&self) -> serde_json::Value {
        let mut doc = serde_json::Map::new();
        if let Some(w) = self.weight_percent {
            doc.insert("weight_percent".into(), w.into());
        }
        if let Some(s) = self.admin {
            doc.insert("state".into(), s.as_str().into());
        }
        if let Some(o) = self.oper {
            doc.insert("health".into(), o.as_str().into());
        }
        if let Some(r) = &self.reason {
            doc.insert("reason".into(), r.as_str().into());
        }
        serde_json::Value::Object(doc)
    }
}

/// The words of the line, space-separated, without the newline.
impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words: Vec<String> = Vec::new();
        if let Some(s) = self.admin {
            words.push(s.as_str().into());
        }
        if let Some(o) = self.oper {
            // The reason is the rest of the word: no separators in it.
            let reason = self
                .reason
                .as_deref()
                .map(|r| r.replace([' ', '\t', ',', '\r', '\n'], "_"));
            match reason {
                Some(r) if o != Oper::Up => words.push(format!("{}#{r}", o.as_str())),
                _ => words.push(o.as_str().into()),
            }
        }
        if let Some(w) = self.weight_percent {
            words.push(format!("{w}%"));
        }
        f.write_str(&words.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_of_a_weight() {
        let a = Answer::ready(Some(75));
        assert_eq!(a.text(), "ready 75%\n");
        assert_eq!(
            a.json(),
            serde_json::json!({"weight_percent": 75, "state": "ready"})
        );
        assert_eq!(Answer::ready(None).text(), "ready\n");
        assert_eq!(
            Answer::ready(None).json(),
            serde_json::json!({"state": "ready"})
        );
        // Clamped: a percentage over 100 is never written.
        assert_eq!(Answer::ready(Some(250)).text(), "ready 100%\n");
    }

    #[test]
    fn parses_haproxy_replies() {
        let p = |s: &str| Answer::parse(s).0;
        assert_eq!(p("75%\n").weight_percent, Some(75));
        assert_eq!(p("75%\n").admin, None);
        assert_eq!(p("drain\n").admin, Some(Admin::Drain));
        assert_eq!(p("MAINT").admin, Some(Admin::Maint));
        assert_eq!(p("ready 50%"), Answer::ready(Some(50)));
        let a = p("drain,0%");
        assert_eq!((a.admin, a.weight_percent), (Some(Admin::Drain), Some(0)));
        let a = p("  up\t ready , 100%  \r\n second line ignored");
        assert_eq!(
            (a.oper, a.admin, a.weight_percent),
            (Some(Oper::Up), Some(Admin::Ready), Some(100))
        );
        let a = p("down#disk full");
        // The reason ends at the first separator, as in HAProxy.
        assert_eq!(
            (a.oper, a.reason.as_deref()),
            (Some(Oper::Down), Some("disk"))
        );
        assert_eq!(a.text(), "down#disk\n");
        assert_eq!(
            a.json(),
            serde_json::json!({"health": "down", "reason": "disk"})
        );
        assert_eq!(p("stopped").oper, Some(Oper::Stopped));
        assert_eq!(p("fail#x").text(), "fail#x\n");
        // The last word of a kind wins.
        assert_eq!(p("drain ready 10% 20%"), Answer::ready(Some(20)));
        assert!(p("").is_empty());
        assert!(p("\n").is_empty());
    }

    #[test]
    fn ignores_what_it_does_not_know() {
        let (a, ignored) = Answer::parse("drian 101% maxconn:30 50 -1% 7%");
        assert_eq!(a.weight_percent, Some(7));
        assert_eq!(a.admin, None);
        assert_eq!(ignored, ["drian", "101%", "maxconn:30", "50", "-1%"]);
        let (a, ignored) = Answer::parse("ready#why");
        assert!(a.is_empty());
        assert_eq!(ignored, ["ready#why"]);
    }

    #[test]
    fn round_trips() {
        for line in [
            "ready 75%",
            "drain 0%",
            "maint",
            "up",
            "ready",
            "drain down#x 3%",
        ] {
            let (a, ignored) = Answer::parse(line);
            assert!(ignored.is_empty(), "{line}");
            assert_eq!(a.to_string(), line);
            assert_eq!(Answer::parse(&a.text()).0, a);
        }
    }
}
