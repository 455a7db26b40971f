//! The text protocol against a real HAProxy agent-check (Debian's
//! `haproxy`, which scripts/setup.sh installs): the agent's answers set
//! the server's weight, DRAIN, MAINT and back, as HAProxy reads them, with
//! and without `agent-send`. Fails, saying so, where haproxy is missing.
//!
//! `timeout check 1s`: without `agent-send` HAProxy has nothing to send,
//! and its connection holds back the handshake's last ACK (the kernel's
//! delayed ACK, up to 200 ms), so the agent can only accept, and answer,
//! that late; the default timeout of a 200 ms `agent-inter` would expire
//! first (L7TOUT) whatever the agent does.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent(port: u16, args: &[&str]) -> Killed {
    Killed(
        Command::new(env!("CARGO_BIN_EXE_lb-agent"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// `show stat`: (status, weight) of each server of backend `be`.
fn servers(sock: &Path) -> Vec<(String, String, String)> {
    let Ok(mut s) = UnixStream::connect(sock) else {
        return Vec::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = s.write_all(b"show stat\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let mut lines = out.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let cols: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    let col = |name: &str| cols.iter().position(|c| *c == name).unwrap();
    let (sv, status, weight) = (col("svname"), col("status"), col("weight"));
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.len() > weight && f[0] == "be" && f[sv].starts_with('s'))
        .map(|f| {
            (
                f[sv].to_string(),
                f[status].to_string(),
                f[weight].to_string(),
            )
        })
        .collect()
}

fn wait_for(sock: &Path, what: &str, ok: impl Fn(&[(String, String, String)]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = servers(sock);
        if ok(&now) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {now:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn server<'a>(all: &'a [(String, String, String)], name: &str) -> Option<(&'a str, &'a str)> {
    all.iter()
        .find(|s| s.0 == name)
        .map(|s| (s.1.as_str(), s.2.as_str()))
}

#[test]
fn haproxy_reads_the_answers() {
    if Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        panic!("haproxy is missing (Debian: haproxy; scripts/setup.sh installs it)");
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("agent-haproxy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("answer");
    let (a1, a2) = (free_port(), free_port());
    let _file_agent = agent(a1, &["--file", file.to_str().unwrap()]);
    let _fixed_agent = agent(a2, &["--fixed", "40"]);
    let sock = dir.join("stats.sock");
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n    stats socket {} mode 600 level admin\n\
             defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n\
             \x20   timeout check 1s\n\
             backend be\n\
             \x20   server s1 127.0.0.1:{a1} agent-check agent-port {a1} agent-inter 200ms weight 100\n\
             \x20   server s2 127.0.0.1:{a2} agent-check agent-port {a2} agent-inter 200ms agent-send \"state\\n\" weight 100\n",
            sock.display()
        ),
    )
    .unwrap();
    let _haproxy = Killed(
        Command::new("haproxy")
            .args(["-db", "-f", cfg.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let weight = |all: &[(String, String, String)], s: &str, w: &str| {
        server(all, s).is_some_and(|x| x.1 == w)
    };
    let status = |all: &[(String, String, String)], s: &str, p: &str| {
        server(all, s).is_some_and(|x| x.0.starts_with(p))
    };
    // With agent-send (the agent reads and drops it): ready 40%.
    wait_for(&sock, "s2 at 40", |all| weight(all, "s2", "40"));
    let put = |text: &str| {
        let tmp = dir.join("answer.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
    };
    put("50%\n");
    wait_for(&sock, "s1 at 50", |all| weight(all, "s1", "50"));
    put("drain\n");
    wait_for(&sock, "s1 drained", |all| status(all, "s1", "DRAIN"));
    put("ready 20%\n");
    wait_for(&sock, "s1 ready at 20", |all| {
        weight(all, "s1", "20") && !status(all, "s1", "DRAIN")
    });
    put("maint\n");
    wait_for(&sock, "s1 in maintenance", |all| status(all, "s1", "MAINT"));
    // The file gone: `ready` alone, out of maintenance, the weight kept.
    std::fs::remove_file(&file).unwrap();
    wait_for(&sock, "s1 back", |all| {
        !status(all, "s1", "MAINT") && weight(all, "s1", "20")
    });
    let _ = std::fs::remove_dir_all(&dir);
}
