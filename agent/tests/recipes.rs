//! The adapter recipes of agent/README.md (SRS, nginx-rtmp, Icecast), run
//! as written there against a local HTTP server that serves documents of
//! the shape each server documents: the answer each writes, and the file
//! removed once the server fails. This checks the scripts (curl, jq,
//! xmllint, the arithmetic), not the streaming servers' real output.
//! Fails, saying so, where curl, jq or xmllint is missing.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SRS: &str = r#"{"code":0,"server":"vid-1","data":{"ok":true,"now_ms":1,"self":{"cpu_percent":0.5},"system":{"cpu_percent":0.12,"conn_sys":120,"conn_srs":37,"load_1m":0.5}}}"#;
const ICECAST: &str = r#"{"icestats":{"admin":"x","source":[{"listeners":12,"listenurl":"a"},{"listeners":5,"listenurl":"b"}]}}"#;
const RTMP: &str = "<?xml version=\"1.0\" encoding=\"utf-8\" ?>\n<rtmp><server>\
    <application><name>live</name><live><stream><name>a</name><nclients>3</nclients></stream>\
    <stream><name>b</name><nclients>2</nclients></stream><nclients>5</nclients></live></application>\
    <application><name>tv</name><live><nclients>4</nclients></live></application></server></rtmp>";

/// Serves the three documents until `failing`, then 503 for everything.
fn serve(failing: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = first.split(' ').nth(1).unwrap_or("");
            let body = match path {
                "/api/v1/summaries" => Some(SRS),
                "/status-json.xsl" => Some(ICECAST),
                "/stat" => Some(RTMP),
                _ => None,
            };
            let (status, body) = match body {
                Some(b) if !failing.load(Ordering::Relaxed) => ("200 OK", b),
                _ => ("503 Service Unavailable", "no\n"),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// The README's sh blocks that are adapters, by name.
fn recipes() -> Vec<(String, String)> {
    let readme = include_str!("../README.md");
    let mut out = Vec::new();
    for block in readme.split("```sh\n").skip(1) {
        let script = block.split("\n```").next().unwrap();
        if let Some(at) = script.find("/usr/local/bin/lb-agent-") {
            let name = script[at + "/usr/local/bin/".len()..]
                .split(':')
                .next()
                .unwrap()
                .to_string();
            out.push((name, script.to_string()));
        }
    }
    out
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_readme_recipes_write_the_answer() {
    for tool in ["curl", "jq", "xmllint"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map_or(true, |s| !s.success())
        {
            panic!("{tool} is missing (Debian: curl, jq, libxml2-utils; scripts/setup.sh installs them)");
        }
    }
    let recipes = recipes();
    let names: Vec<&str> = recipes.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["lb-agent-srs", "lb-agent-nginx-rtmp", "lb-agent-icecast"]
    );
    let failing = Arc::new(AtomicBool::new(false));
    let port = serve(failing.clone());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("agent-recipes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // MAX=100: SRS 37 connections, nginx-rtmp 5 + 4 clients, Icecast 12 + 5.
    let want = [
        ("lb-agent-srs", 63),
        ("lb-agent-nginx-rtmp", 91),
        ("lb-agent-icecast", 83),
    ];
    let mut running = Vec::new();
    for ((name, script), (want_name, w)) in recipes.iter().zip(want) {
        assert_eq!(name, want_name);
        let out = dir.join(name);
        let url = format!("http://127.0.0.1:{port}");
        let script = script
            .replace("http://127.0.0.1:1985", &url)
            .replace("http://127.0.0.1:8000", &url)
            .replace("http://127.0.0.1/", &format!("{url}/"))
            .replace("/run/lb-agent/answer", out.to_str().unwrap());
        let child = Command::new("sh")
            .args(["-c", &script])
            .env("MAX", "100")
            .stdout(Stdio::null())
            // curl's and xmllint's complaints once the server fails.
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        running.push((name.clone(), out, w, child));
    }
    for (name, out, w, _) in &running {
        wait_for(
            &format!("{name} wrote no answer"),
            Duration::from_secs(10),
            || out.exists(),
        );
        assert_eq!(
            std::fs::read_to_string(out).unwrap(),
            format!("ready {w}%\n"),
            "{name}"
        );
    }
    // The server fails: each removes its answer.
    failing.store(true, Ordering::Relaxed);
    for (name, out, _, _) in &running {
        wait_for(
            &format!("{name} kept its answer after the server failed"),
            Duration::from_secs(10),
            || !out.exists(),
        );
    }
    for (_, _, _, mut child) in running {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
