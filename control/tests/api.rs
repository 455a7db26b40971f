//! The gRPC API end to end, as an operator uses it: `lbctl` against a running
//! `lbd` (on `net_null`), every validation error, and a restart that restores
//! the same state from the state file.

mod common;
use common::certs::make_certs;
use common::process::{lbctl_path, Lbd};
use lb_testkit::eal;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const VIP: &str = "198.51.100.10:443/tcp";

#[test]
fn lbctl_drives_lbd_and_state_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("lbd-api-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let lbd = Lbd::start_with(&dir, "api1", &["--metrics-listen", &metrics_addr]);
    // Watch events while the configuration changes.
    let events = Command::new(lbctl_path())
        .arg("--socket")
        .arg(&lbd.socket)
        .args(["--output", "json", "events", "--count", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(lbd.ok(&["vip", "add", VIP]).contains(VIP));
    lbd.ok(&[
        "vip",
        "add",
        "[2001:db8::10]:5000/udp",
        "--table-size",
        "655373",
        "--udp-idle-timeout",
        "20",
    ]);
    lbd.ok(&[
        "backend",
        "add",
        VIP,
        "192.0.2.11",
        "--mac",
        "02:00:00:00:00:11",
    ]);
    lbd.ok(&["backend", "add", VIP, "192.0.2.12", "--weight", "2"]);
    lbd.ok(&["backend", "add", VIP, "192.0.2.13"]);
    lbd.ok(&["backend", "drain", VIP, "192.0.2.13"]);
    lbd.ok(&["backend", "set-weight", VIP, "192.0.2.11", "3"]);
    lbd.ok(&["backend", "add", VIP, "192.0.2.14"]);
    lbd.ok(&["backend", "del", VIP, "192.0.2.14"]);

    let events = events.wait_with_output().unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&events.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["kind"], "config");
    assert_eq!(lines[0]["event"]["what"], format!("vip {VIP} created"));
    assert!(lines[1]["event"]["what"]
        .as_str()
        .unwrap()
        .contains("[2001:db8::10]:5000/udp"));

    let vips = lbd.json(&["vip", "list"]);
    let list = vips.as_array().unwrap();
    assert_eq!(list.len(), 2, "{vips}");
    let v = list.iter().find(|v| v["vip"] == VIP).unwrap();
    let backends = v["backends"].as_array().unwrap();
    let by_addr = |a: &str| {
        backends
            .iter()
            .find(|b| b["address"] == a)
            .unwrap_or_else(|| panic!("{a} in {v}"))
    };
    assert_eq!(backends.len(), 3, "{v}");
    assert_eq!(by_addr("192.0.2.11")["weight"], 3);
    assert_eq!(by_addr("192.0.2.11")["effective_mac"], "02:00:00:00:00:11");
    assert_eq!(by_addr("192.0.2.12")["weight"], 2);
    assert_eq!(
        by_addr("192.0.2.12")["effective_mac"],
        "",
        "unresolved until ARP answers"
    );
    assert_eq!(by_addr("192.0.2.13")["state"], "draining");
    // When the MAC in use took effect: a static one at once, none while unresolved.
    let since = by_addr("192.0.2.11")["mac_since_unix_ms"].as_u64().unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(since > 0 && since <= now_ms, "{since} vs {now_ms}");
    assert_eq!(by_addr("192.0.2.12")["mac_since_unix_ms"], 0);
    let udp = list
        .iter()
        .find(|v| v["vip"] == "[2001:db8::10]:5000/udp")
        .unwrap();
    assert_eq!(udp["table_size"], 655373);
    assert_eq!(udp["udp_idle_timeout_s"], 20, "a VIP's own idle timeout");
    let e = lbd.err(&[
        "vip",
        "add",
        "198.51.100.60:80/tcp",
        "--tcp-idle-timeout",
        "70000",
    ]);
    assert!(e.contains("vip.tcp_idle_timeout_s"), "{e}");

    // Every refusal names the field or the object, with the right code, and changes nothing.
    for (args, want) in [
        (vec!["vip", "add", VIP], "already exists (AlreadyExists)"),
        (vec!["vip", "add", "198.51.100.10:0/tcp"], "vip.port"),
        (
            vec![
                "vip",
                "add",
                "198.51.100.20:80/tcp",
                "--table-size",
                "65536",
            ],
            "vip.table_size: 65536 is not prime",
        ),
        (vec!["vip", "add", "0.0.0.0:80/tcp"], "vip.address"),
        (
            vec!["vip", "del", "198.51.100.99:80/tcp"],
            "not found (NotFound)",
        ),
        (
            vec!["backend", "add", VIP, "198.51.100.10"],
            "VIP's own address",
        ),
        (vec!["backend", "add", VIP, "192.0.2.11"], "already exists"),
        (
            vec!["backend", "add", VIP, "192.0.2.20", "--weight", "100000"],
            "backend.weight",
        ),
        (
            vec![
                "backend",
                "add",
                VIP,
                "192.0.2.20",
                "--mac",
                "ff:ff:ff:ff:ff:ff",
            ],
            "backend.mac",
        ),
        (vec!["backend", "add", VIP, "not-an-ip"], "backend.address"),
        (vec!["backend", "del", VIP, "192.0.2.99"], "not found"),
        (
            vec!["backend", "add", "198.51.100.10:443", "192.0.2.20"],
            "ADDRESS:PORT/PROTOCOL",
        ),
    ] {
        let e = lbd.err(&args);
        assert!(e.contains(want), "lbctl {args:?}: {e}");
    }
    let small = "198.51.100.30:80/tcp";
    lbd.ok(&["vip", "add", small, "--table-size", "251"]);
    lbd.ok(&["backend", "add", small, "192.0.2.1"]);
    lbd.ok(&["backend", "add", small, "192.0.2.2"]);
    let e = lbd.err(&["backend", "add", small, "192.0.2.3"]);
    assert!(
        e.contains("FailedPrecondition") && e.contains("100 slots per backend"),
        "{e}"
    );
    lbd.ok(&["vip", "del", small]);
    assert_eq!(
        lbd.json(&["vip", "list"]),
        vips,
        "refused requests changed nothing"
    );

    let stats = lbd.json(&["stats"]);
    assert_eq!(stats["workers"].as_array().unwrap().len(), 1, "{stats}");
    assert!(
        stats["workers"][0]["rx_packets"].as_u64().unwrap() > 0,
        "{stats}"
    );
    assert_eq!(stats["workers"][0]["flow_rejected"], 0, "{stats}");
    assert_eq!(
        stats["workers"][0]["tx_failed"], 0,
        "net_null takes every packet: {stats}"
    );
    // The worker timed each snapshot from its publication to its first
    // burst on it (net_null keeps it busy, so none is skipped for long).
    let adoption = &stats["workers"][0]["snapshot_adoption"];
    assert!(adoption["snapshots"].as_u64().unwrap() >= 5, "{stats}");
    let (p50, max) = (
        adoption["p50_us"].as_u64().unwrap(),
        adoption["max_us"].as_u64().unwrap(),
    );
    assert!(p50 <= max && max < 1_000_000, "{stats}");
    // One worker: it is the last to take each snapshot it takes (the
    // stats may be read between its two records: one less at most).
    let all = stats["snapshot_all_workers"]["snapshots"].as_u64().unwrap();
    let taken = adoption["snapshots"].as_u64().unwrap();
    assert!(all <= taken && all + 1 >= taken, "{stats}");
    let table = lbd.ok(&["stats"]);
    assert!(table.contains("new snapshots reached it: "), "{table}");
    assert!(
        table.contains("every worker on a new snapshot: "),
        "{table}"
    );
    let info = lbd.json(&["info"]);
    assert_eq!(info["port"], "net_null0");
    assert!(
        info["snapshot_generation"].as_u64().unwrap() >= 10,
        "one generation per change: {info}"
    );
    assert!(info["state_file"].as_str().unwrap().ends_with("state.toml"));

    // Declarative: export, apply the same (nothing changes), apply an edit.
    let exported = lbd.ok(&["export"]);
    let file = dir.join("lb.toml");
    std::fs::write(&file, &exported).unwrap();
    let f = file.display().to_string();
    assert!(
        lbd.ok(&["apply", "-f", &f]).contains("no change"),
        "apply is idempotent"
    );
    let gen_before = lbd.json(&["info"])["snapshot_generation"].clone();
    let edited = exported
        .replacen("weight = 3", "weight = 4", 1)
        .replace("address = \"2001:db8::10\"", "address = \"2001:db8::20\"");
    std::fs::write(&file, edited).unwrap();
    let dry = lbd.json(&["apply", "-f", &f, "--dry-run"]);
    assert_eq!(
        dry["changes"].as_array().unwrap().len(),
        3,
        "one VIP replaced, one weight: {dry}"
    );
    assert_eq!(
        lbd.json(&["info"])["snapshot_generation"],
        gen_before,
        "a dry run changes nothing"
    );
    let applied = lbd.ok(&["apply", "-f", &f]);
    assert!(
        applied.contains("backend 192.0.2.11 of 198.51.100.10:443/tcp updated"),
        "{applied}"
    );
    assert!(
        applied.contains("vip [2001:db8::20]:5000/udp created"),
        "{applied}"
    );
    assert_eq!(
        lbd.json(&["info"])["snapshot_generation"].as_u64(),
        gen_before.as_u64().map(|g| g + 1),
        "one snapshot for the whole apply"
    );
    assert!(lbd.ok(&["apply", "-f", &f]).contains("no change"));
    std::fs::write(
        &file,
        "[[vip]]\naddress = \"198.51.100.10\"\nport = 443\nprotocol = \"tcp\"\ntable_size = 100\n",
    )
    .unwrap();
    let e = lbd.err(&["apply", "-f", &f]);
    assert!(
        e.contains("vip.table_size") && e.contains("InvalidArgument"),
        "{e}"
    );
    // Back to the exported state for the restart check below.
    std::fs::write(&file, &exported).unwrap();
    lbd.ok(&["apply", "-f", &f]);
    assert_eq!(lbd.json(&["vip", "list"]), vips);

    // Prometheus exposition.
    let metrics = match try_http_get(&metrics_addr, "/metrics") {
        Ok(m) => m,
        Err(e) => panic!("scraping {metrics_addr}: {e}\nlbd: {}", lbd.stop()),
    };
    assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
    assert!(
        metrics.contains("Content-Type: application/openmetrics-text; version=1.0.0")
            || metrics.contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{metrics}"
    );
    let body = metrics
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    assert!(
        body.contains("# TYPE lb_worker_rx_packets counter\n"),
        "{body}"
    );
    assert!(body.contains("# TYPE lb_backend_up gauge\n"), "{body}");
    for (selector, want) in [
        (
            "lb_worker_drops_total{worker=\"1\",reason=\"not_for_us\"}",
            None,
        ),
        ("lb_worker_flow_rejected_total{worker=\"1\"}", Some(0)),
        (
            "lb_backend_up{vip=\"198.51.100.10:443/tcp\",backend=\"192.0.2.11\"}",
            Some(1),
        ),
        (
            "lb_backend_up{vip=\"198.51.100.10:443/tcp\",backend=\"192.0.2.13\"}",
            Some(0),
        ),
        (
            "lb_vip_packets_total{vip=\"198.51.100.10:443/tcp\"}",
            Some(0),
        ),
        ("lb_vips", Some(2)),
        ("process_open_fds", None),
        ("process_resident_memory_bytes", None),
    ] {
        let got = lb_testkit::exposition::value(body, selector);
        assert!(got.is_some(), "missing {selector} in\n{body}");
        if let Some(want) = want {
            assert_eq!(got, Some(f64::from(want)), "{selector}");
        }
    }
    // The adoption histogram: its +Inf bucket is its count, and no finer
    // bucket holds more.
    let value = |selector: &str| -> u64 {
        lb_testkit::exposition::value(body, selector)
            .unwrap_or_else(|| panic!("missing {selector} in\n{body}")) as u64
    };
    let adoption = "lb_worker_snapshot_adoption_seconds";
    let count = value(&format!("{adoption}_count{{worker=\"1\"}}"));
    assert!(count >= 5, "{metrics}");
    assert_eq!(
        value(&format!("{adoption}_bucket{{worker=\"1\",le=\"+Inf\"}}")),
        count
    );
    assert!(
        value(&format!(
            "{adoption}_bucket{{worker=\"1\",le=\"0.000001\"}}"
        )) <= count
    );
    let all = value("lb_snapshot_all_workers_seconds_count");
    assert_eq!(
        value("lb_snapshot_all_workers_seconds_bucket{le=\"+Inf\"}"),
        all
    );
    assert!(all >= 5 && all <= count, "{metrics}");
    assert!(http_get(&metrics_addr, "/other").starts_with("HTTP/1.1 404"));

    // A second lbd on the same socket refuses to start.
    let mut args = eal::eal_args("api-dup", "0@0,1@1", &["net_null0"]);
    args.extend(
        [
            "--",
            "--port",
            "net_null0",
            "--grpc-socket",
            &lbd.socket.display().to_string(),
        ]
        .map(String::from),
    );
    let dup = Command::new(env!("CARGO_BIN_EXE_lbd"))
        .args(&args)
        .output()
        .unwrap();
    assert!(!dup.status.success());
    assert!(
        String::from_utf8_lossy(&dup.stderr).contains("another lbd"),
        "{}",
        String::from_utf8_lossy(&dup.stderr)
    );

    lbd.stop();
    assert!(lbd_socket_gone(&dir), "the socket is removed on exit");

    // Restart with the same state file: the same VIPs and backends.
    let lbd = Lbd::start(&dir, "api2");
    // The same VIPs and backends; when each MAC took effect is this run's.
    let without_since = |mut v: serde_json::Value| {
        for vip in v.as_array_mut().unwrap() {
            for b in vip["backends"].as_array_mut().unwrap() {
                b.as_object_mut().unwrap().remove("mac_since_unix_ms");
            }
        }
        v
    };
    assert_eq!(
        without_since(lbd.json(&["vip", "list"])),
        without_since(vips)
    );
    lbd.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

fn http_get(addr: &str, path: &str) -> String {
    try_http_get(addr, path).unwrap()
}

fn try_http_get(addr: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    // Deliberately in pieces (write! issues several writes): the server must
    // reassemble the request line.
    write!(s, "GET {path} HTTP/1.1\r\nHost: lbd\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn lbd_socket_gone(dir: &Path) -> bool {
    !dir.join("lbd.sock").exists()
}

/// lbctl for scripts: distinct exit statuses (2 usage, 3 refused by lbd,
/// 4 lbd not reached), errors as JSON under --output json, `apply -f -`
/// from standard input.
#[test]
fn lbctl_exit_statuses_json_errors_and_stdin() {
    use std::io::Write;
    let lbctl = || Command::new(lbctl_path());
    let usage = lbctl().args(["vip", "frobnicate"]).output().unwrap();
    assert_eq!(usage.status.code(), Some(2), "usage error");
    let gone = lbctl()
        .args([
            "--output",
            "json",
            "--socket",
            "/nonexistent/lbd.sock",
            "vip",
            "list",
        ])
        .output()
        .unwrap();
    assert_eq!(gone.status.code(), Some(4), "unreachable");
    let e: serde_json::Value = serde_json::from_slice(&gone.stderr)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&gone.stderr)));
    assert_eq!(e["error"]["kind"], "Unreachable", "{e}");
    assert_eq!(e["error"]["exit_status"], 4, "{e}");

    let dir = std::env::temp_dir().join(format!("lbd-api-exit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let lbd = Lbd::start(&dir, "api-exit");
    let refused = lbd.ctl(&[
        "--output",
        "json",
        "vip",
        "add",
        "198.51.100.10:443/tcp",
        "--table-size",
        "100",
    ]);
    assert_eq!(refused.status.code(), Some(3), "refused by lbd");
    let e: serde_json::Value = serde_json::from_slice(&refused.stderr).unwrap();
    assert_eq!(e["error"]["kind"], "InvalidArgument", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("table_size"),
        "{e}"
    );
    let mut apply = Command::new(lbctl_path())
        .arg("--socket")
        .arg(&lbd.socket)
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    apply
        .stdin
        .take()
        .unwrap()
        .write_all(b"[[vip]]\naddress = \"198.51.100.10\"\nport = 80\nprotocol = \"tcp\"\n")
        .unwrap();
    assert!(apply.wait_with_output().unwrap().status.success());
    assert!(lbd.ok(&["vip", "list"]).contains("198.51.100.10:80/tcp"));
    lbd.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn lbctl_without_lbd_says_so() {
    let out = Command::new(lbctl_path())
        .args(["--socket", "/nonexistent/lbd.sock", "vip", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("connecting to lbd at /nonexistent/lbd.sock"),
        "{e}"
    );
}

#[test]
fn tcp_api_requires_a_client_certificate_from_the_ca() {
    let dir = std::env::temp_dir().join(format!("lbd-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    make_certs(&dir);
    let p = |f: &str| dir.join(f).display().to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let lbd = Lbd::start_with(
        &dir,
        "tls",
        &[
            "--grpc-listen",
            &addr,
            "--tls-cert",
            &p("server.pem"),
            "--tls-key",
            &p("server.key"),
            "--tls-client-ca",
            &p("ca.pem"),
        ],
    );
    let url = format!("https://{addr}");
    let tcp = |cert: &str, key: &str| {
        Command::new(lbctl_path())
            .args([
                "--server",
                &url,
                "--tls-ca",
                &p("ca.pem"),
                "--tls-cert",
                &p(cert),
                "--tls-key",
                &p(key),
            ])
            .args(["--output", "json", "vip", "add", "198.51.100.50:443/tcp"])
            .output()
            .unwrap()
    };
    let good = tcp("client.pem", "client.key");
    assert!(
        good.status.success(),
        "a client of the CA is served: {}",
        String::from_utf8_lossy(&good.stderr)
    );
    let rogue = tcp("rogue.pem", "rogue.key");
    assert!(!rogue.status.success(), "a client of another CA is refused");
    assert_eq!(
        lbd.json(&["vip", "list"]).as_array().unwrap().len(),
        1,
        "only the trusted client changed anything"
    );
    lbd.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Generic gRPC tools discover the API through server reflection.
#[test]
fn server_reflection_lists_the_service() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let dir = std::env::temp_dir().join(format!("lbd-refl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let lbd = Lbd::start(&dir, "refl");
    let socket = lbd.socket.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let services = rt.block_on(async move {
        let channel = lb_proto::connect_unix(socket).await.unwrap();
        let mut client = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let reply = tokio::time::timeout(Duration::from_secs(5), responses.message()).await;
        let reply = reply
            .expect("a reflection reply within 5 s")
            .unwrap()
            .expect("one reply");
        match reply.message_response {
            Some(MessageResponse::ListServicesResponse(l)) => {
                l.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
            }
            other => panic!("unexpected reflection reply {other:?}"),
        }
    });
    drop(rt);
    // A watcher that never leaves does not hold up the shutdown.
    let mut watcher = Command::new(lbctl_path())
        .arg("--socket")
        .arg(&lbd.socket)
        .arg("events")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let log = lbd.stop();
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert!(
        services.iter().any(|s| s == "lb.v1.LoadBalancer"),
        "{services:?}\n{log}"
    );
    // The log of the whole session stays short at the default level.
    assert!(log.len() < 16 << 10, "{} bytes of log", log.len());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Changes that arrive together share one state-file write (group commit)
/// and each is acknowledged only once written; a write that fails undoes
/// every change it carried and says so.
#[test]
fn changes_are_acknowledged_once_written_and_undone_when_the_write_fails() {
    let dir = std::env::temp_dir().join(format!("lbd-commit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let lbd = Lbd::start(&dir, "commit1");
    lbd.ok(&["vip", "add", VIP]);

    // 20 backends added at once, by 20 clients.
    let adds: Vec<Child> = (1..=20)
        .map(|i| {
            Command::new(lbctl_path())
                .arg("--socket")
                .arg(&lbd.socket)
                .args(["backend", "add", VIP, &format!("192.0.2.{}", 100 + i)])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for a in adds {
        let out = a.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    // Acknowledged means written: the file has all of them now.
    let file = std::fs::read_to_string(dir.join("state.toml")).unwrap();
    assert_eq!(file.matches("[[vip.backend]]").count(), 20, "{file}");

    // A write that cannot happen (its temporary file's name is taken by a
    // directory, which stops root too): the change is refused and undone.
    let blocker = dir.join(".state.toml.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let e = lbd.err(&["backend", "add", VIP, "192.0.2.200"]);
    assert!(e.contains("state file") && e.contains("undone"), "{e}");
    let list = lbd.ok(&["backend", "list", VIP]);
    assert!(!list.contains("192.0.2.200"), "{list}");
    assert_eq!(list.lines().count(), 21, "{list}");

    std::fs::remove_dir(&blocker).unwrap();
    lbd.ok(&["backend", "add", VIP, "192.0.2.200"]);
    let log = lbd.stop();
    assert!(log.contains("undoing the changes"), "{log}");
    let lbd = Lbd::start(&dir, "commit2");
    assert_eq!(
        lbd.ok(&["backend", "list", VIP]).lines().count(),
        22,
        "header and 21 backends after the restart"
    );
    lbd.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Run lbctl (`args`, on `socket`) until `enough` says its lines so far
/// suffice (or 20 s passed), then kill it: a command that runs until
/// interrupted, as `stats --watch`. Its stdout lines.
fn lbctl_until(socket: &Path, args: &[&str], enough: impl Fn(&[String]) -> bool) -> Vec<String> {
    use std::io::BufRead;
    let mut child = Command::new(lbctl_path())
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = Vec::new();
    while !enough(&lines) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    lines
}

/// lbctl for scripts, continued: a multi-instance JSON run names each
/// instance beside its result or its error; `vip list` shows each VIP's
/// backends under it (JSON and table); `stats --watch` adds rates.
#[test]
fn lbctl_names_instances_nests_backends_and_watches_rates() {
    let base = std::env::temp_dir().join(format!("lbd-api-multi-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (dir_a, dir_b) = (base.join("a"), base.join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let a = Lbd::start(&dir_a, "multi-a");
    let b = Lbd::start(&dir_b, "multi-b");
    let vip_b = "198.51.100.20:53/udp";
    a.ok(&["vip", "add", VIP]);
    a.ok(&[
        "backend",
        "add",
        VIP,
        "192.0.2.11",
        "--mac",
        "02:00:00:00:00:11",
    ]);
    a.ok(&["backend", "add", VIP, "192.0.2.12", "--weight", "2"]);
    b.ok(&["vip", "add", vip_b]);

    // vip list, JSON: each VIP with its backends nested.
    let vips = a.json(&["vip", "list"]);
    let list = vips.as_array().expect("one instance: the array as before");
    assert_eq!(list.len(), 1, "{vips}");
    assert_eq!(list[0]["vip"], VIP);
    let backends = list[0]["backends"].as_array().unwrap();
    let addrs: Vec<_> = backends.iter().map(|b| b["address"].clone()).collect();
    assert_eq!(addrs, ["192.0.2.11", "192.0.2.12"], "{vips}");
    assert_eq!(backends[1]["weight"], 2, "{vips}");
    assert_eq!(backends[0]["effective_mac"], "02:00:00:00:00:11");
    // The table: each backend on its own line under its VIP.
    let table = a.ok(&["vip", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "header, VIP, 2 backends:\n{table}");
    assert!(
        lines[1].starts_with(VIP) && lines[1].trim_end().ends_with(" 2"),
        "{table}"
    );
    let row = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>();
    assert!(lines[2].starts_with("  192.0.2.11 "), "{table}");
    assert_eq!(
        row(2)[1..],
        ["weight", "1", "up", "unchecked", "dr", "02:00:00:00:00:11"],
        "{table}"
    );
    assert_eq!(row(3)[..3], ["192.0.2.12", "weight", "2"], "{table}");
    assert_eq!(row(3).last(), Some(&"(resolving)"), "{table}");

    // Several instances, JSON: one document, each entry named.
    let (sa, sb) = (
        a.socket.display().to_string(),
        b.socket.display().to_string(),
    );
    let multi = |sockets: &[&str], args: &[&str]| {
        let mut c = Command::new(lbctl_path());
        for s in sockets {
            c.args(["--socket", *s]);
        }
        c.args(["--output", "json"]).args(args).output().unwrap()
    };
    let out = multi(&[sa.as_str(), sb.as_str()], &["vip", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let inst = doc["instances"].as_array().unwrap();
    assert_eq!(inst.len(), 2, "{doc}");
    assert_eq!(inst[0]["instance"], sa.as_str(), "{doc}");
    assert_eq!(inst[0]["result"], vips, "instance a's own VIPs: {doc}");
    assert_eq!(inst[1]["instance"], sb.as_str(), "{doc}");
    assert_eq!(inst[1]["result"][0]["vip"], vip_b, "{doc}");
    assert_eq!(inst[1]["result"].as_array().unwrap().len(), 1, "{doc}");
    assert!(inst.iter().all(|i| i.get("error").is_none()), "{doc}");

    // One instance failing: its entry names it with its error, the others
    // keep their results, and the run fails naming it.
    let gone = "/nonexistent/lbd.sock";
    let out = multi(&[sa.as_str(), gone, sb.as_str()], &["vip", "show", VIP]);
    assert_eq!(out.status.code(), Some(1), "some instances failed");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let inst = doc["instances"].as_array().unwrap();
    assert_eq!(inst.len(), 3, "{doc}");
    assert_eq!(inst[0]["instance"], sa.as_str());
    assert_eq!(inst[0]["result"][0]["vip"], VIP, "{doc}");
    assert!(inst[0].get("error").is_none(), "{doc}");
    assert_eq!(inst[1]["instance"], gone, "{doc}");
    assert!(inst[1].get("result").is_none(), "{doc}");
    assert_eq!(inst[1]["error"]["kind"], "Unreachable", "{doc}");
    assert_eq!(inst[1]["error"]["exit_status"], 4, "{doc}");
    assert_eq!(inst[2]["instance"], sb.as_str());
    assert_eq!(
        inst[2]["error"]["kind"], "NotFound",
        "b has no {VIP}: {doc}"
    );
    assert_eq!(inst[2]["error"]["exit_status"], 3, "{doc}");
    let e: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("failed on 2 of 3 instances") && msg.contains(gone) && msg.contains(&sb),
        "{e}"
    );
    // The table names each instance too.
    let out = Command::new(lbctl_path())
        .args(["--socket", &sa, "--socket", &sb, "vip", "list"])
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains(&format!("== {sa}\n")) && table.contains(&format!("== {sb}\n")),
        "{table}"
    );

    // stats --watch: from the second print on, rates since the previous one.
    let printed = |lines: &[String], n: usize| lines.iter().filter(|l| l.is_empty()).count() >= n;
    let table = lbctl_until(&a.socket, &["stats", "--watch", "--interval", "1"], |l| {
        printed(l, 2)
    });
    let text = table.join("\n");
    let starts: Vec<usize> = (0..table.len())
        .filter(|&i| table[i].starts_with("rates per second over the last "))
        .collect();
    assert!(!starts.is_empty(), "no rates:\n{text}");
    assert!(
        !table[..table.iter().position(|l| l.is_empty()).unwrap()]
            .iter()
            .any(|l| l.starts_with("rates")),
        "no rates in the first print:\n{text}"
    );
    let r = starts[0];
    let over: f64 = table[r]["rates per second over the last ".len()..]
        .trim_end_matches(" s:")
        .parse()
        .unwrap_or_else(|e| panic!("{e}: {}", table[r]));
    assert!(
        (0.9..5.0).contains(&over),
        "the measured interval: {over}\n{text}"
    );
    assert!(
        table[r + 1].starts_with("WORKER") && table[r + 1].contains("DROPS/S"),
        "{text}"
    );
    let numbers = |line: &str, skip: usize| -> Vec<f64> {
        line.split_whitespace()
            .skip(skip)
            .map(|n| {
                n.parse()
                    .unwrap_or_else(|e| panic!("{e}: {n:?} in {line:?}"))
            })
            .collect()
    };
    assert!(table[r + 2].starts_with("lcore 1 "), "{text}");
    let worker = numbers(&table[r + 2], 2);
    assert_eq!(worker.len(), 7, "{text}");
    assert!(
        worker[0] > 0.0,
        "net_null delivers packets all the time:\n{text}"
    );
    assert!(worker.iter().all(|&n| n >= 0.0), "{text}");
    assert!(table[r + 3].starts_with("VIP / BACKEND"), "{text}");
    assert!(table[r + 4].starts_with(VIP), "{text}");
    assert_eq!(
        numbers(&table[r + 4], 1),
        [0.0; 3],
        "no traffic to the VIP:\n{text}"
    );
    assert!(table[r + 5].starts_with("  192.0.2.11 "), "{text}");
    assert_eq!(numbers(&table[r + 5], 1).len(), 3, "{text}");

    let json = lbctl_until(
        &a.socket,
        &["--output", "json", "stats", "--watch", "--interval", "1"],
        |l| l.len() >= 2,
    );
    assert!(json.len() >= 2, "{json:?}");
    let first: serde_json::Value = serde_json::from_str(&json[0]).unwrap();
    assert!(first.get("rates_over_s").is_none(), "{first}");
    assert!(
        first["workers"][0].get("rx_packets_per_s").is_none(),
        "{first}"
    );
    let second: serde_json::Value = serde_json::from_str(&json[1]).unwrap();
    let over = second["rates_over_s"]
        .as_f64()
        .unwrap_or_else(|| panic!("{second}"));
    assert!((0.9..5.0).contains(&over), "{second}");
    let w = &second["workers"][0];
    assert!(w["rx_packets"].as_u64().is_some(), "the counts stay: {w}");
    for k in [
        "rx_packets_per_s",
        "rx_bits_per_s",
        "tx_packets_per_s",
        "tx_bits_per_s",
        "forwarded_per_s",
        "new_flows_per_s",
        "drops_per_s",
    ] {
        assert!(w[k].as_f64().is_some_and(|n| n >= 0.0), "{k}: {w}");
    }
    assert!(w["rx_packets_per_s"].as_f64().unwrap() > 0.0, "{w}");
    let v = &second["vips"][0];
    assert_eq!(v["vip"], VIP);
    for k in ["packets_per_s", "bits_per_s", "new_flows_per_s"] {
        assert_eq!(v[k].as_f64(), Some(0.0), "{k}: {v}");
        assert_eq!(v["backends"][0][k].as_f64(), Some(0.0), "{k}: {v}");
    }
    assert_eq!(v["backends"][1]["address"], "192.0.2.12", "{v}");
    assert!(v["backends"][1]["packets_per_s"].as_f64().is_some(), "{v}");

    a.stop();
    b.stop();
    let _ = std::fs::remove_dir_all(&base);
}

/// Tunnelled backends (issue #18) over the API: a VXLAN backend added over
/// gRPC is read back with its method, VNI, port and next hop (the
/// instance's route's gateway, at its static MAC); a bad VNI is refused
/// with a BadRequest naming the field; Info shows the instance's own
/// routes, tunnel sources and MTU, which Export leaves out.
#[test]
fn tunnelled_backends_over_the_api() {
    use lb_proto::v1 as pb;
    use lb_proto::v1::load_balancer_client::LoadBalancerClient;
    use tonic_types::StatusExt;

    let dir = std::env::temp_dir().join(format!("lbd-tun-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("state.toml"),
        "local_addresses = [\"192.0.2.1\"]\ntunnel_sources = [\"192.0.2.2\"]\n\
         [[route]]\nprefix = \"10.20.0.0/16\"\ngateway = \"192.0.2.254\"\nmac = \"02:00:00:00:00:fe\"\n",
    )
    .unwrap();
    let lbd = Lbd::start_with(&dir, "tun", &["--mtu", "9000"]);
    lbd.ok(&["vip", "add", VIP]);
    let socket = lbd.socket.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let vip = pb::VipKey {
        address: "198.51.100.10".into(),
        port: 443,
        protocol: pb::Protocol::Tcp as i32,
    };
    let (added, refused) = rt.block_on(async move {
        let channel = lb_proto::connect_unix(socket).await.unwrap();
        let mut c = LoadBalancerClient::new(channel);
        let req = |vni| pb::AddBackendRequest {
            vip: Some(vip.clone()),
            address: "10.20.0.11".into(),
            mac: "02:00:00:00:01:11".into(),
            forward: pb::ForwardMethod::Vxlan as i32,
            vni,
            ..Default::default()
        };
        let refused = c.add_backend(req(1 << 24)).await.unwrap_err();
        let added = c.add_backend(req(100)).await.unwrap().into_inner();
        (added, refused)
    });
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    let violations = refused
        .get_error_details()
        .bad_request()
        .expect("a BadRequest")
        .field_violations
        .clone();
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].field, "backend.vni", "{refused:?}");
    assert!(refused.message().contains("16777216"), "{refused:?}");
    assert_eq!(added.forward, pb::ForwardMethod::Vxlan as i32);
    assert_eq!((added.vni, added.tunnel_port), (100, 4789));
    assert_eq!(added.next_hop, "192.0.2.254");
    assert_eq!(added.mac, "02:00:00:00:01:11", "the VXLAN device's");
    assert_eq!(added.effective_mac, "02:00:00:00:00:fe", "the gateway's");

    // Read back, as JSON and in the table's FWD column.
    let list = lbd.json(&["backend", "list", VIP]);
    let b = &list[0];
    assert_eq!(
        (&b["forward"], &b["vni"], &b["tunnel_port"], &b["next_hop"]),
        (
            &serde_json::json!("vxlan"),
            &serde_json::json!(100),
            &serde_json::json!(4789),
            &serde_json::json!("192.0.2.254")
        ),
        "{list}"
    );
    let table = lbd.ok(&["backend", "list", VIP]);
    assert!(
        table.contains("FWD") && table.contains("vxlan:100"),
        "{table}"
    );
    assert!(lbd.ok(&["vip", "list"]).contains("vxlan:100"));
    // lbctl's own refusals name the field too.
    let e = lbd.err(&[
        "backend",
        "add",
        VIP,
        "10.20.0.12",
        "--forward",
        "vxlan",
        "--vni",
        "5",
    ]);
    assert!(
        e.contains("backend.mac") && e.contains("vxlan device"),
        "{e}"
    );
    let e = lbd.err(&[
        "backend",
        "add",
        VIP,
        "10.20.0.12",
        "--forward",
        "ipip",
        "--tunnel-port",
        "5",
    ]);
    assert!(e.contains("backend.tunnel_port"), "{e}");
    lbd.ok(&["backend", "add", VIP, "192.0.2.21", "--forward", "gue"]);
    let gue = lbd.json(&["backend", "list", VIP]);
    let gue = gue
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == "192.0.2.21")
        .unwrap();
    assert_eq!(gue["tunnel_port"], 6080);
    assert_eq!(gue["next_hop"], "192.0.2.21", "on the segment: itself");
    let h = lbd.ok(&["health"]);
    assert!(h.contains("192.0.2.21 unresolved"), "{h}");

    // Another method drops the old one's parameters; the flows' identity stays.
    let changed = lbd.json(&[
        "backend",
        "set-forward",
        VIP,
        "10.20.0.11",
        "--forward",
        "gue",
        "--tunnel-port",
        "5555",
    ]);
    assert_eq!(changed[0]["forward"], "gue");
    assert_eq!(changed[0]["tunnel_port"], 5555);
    assert_eq!(
        (&changed[0]["mac"], &changed[0]["vni"]),
        (&serde_json::json!(""), &serde_json::json!(0))
    );

    // Info: the instance's own; Export: not them, the backends' methods yes.
    let info = lbd.json(&["info"]);
    assert_eq!(info["mtu"], 9000);
    assert_eq!(info["tunnel_sources"], serde_json::json!(["192.0.2.2"]));
    assert_eq!(info["routes"][0]["prefix"], "10.20.0.0/16");
    assert_eq!(info["routes"][0]["effective_mac"], "02:00:00:00:00:fe");
    let text = lbd.ok(&["info"]);
    assert!(
        text.contains("route       10.20.0.0/16 via 192.0.2.254"),
        "{text}"
    );
    let exported = lbd.ok(&["export"]);
    assert!(exported.contains("forward = \"gue\"") && exported.contains("tunnel_port = 5555"));
    assert!(
        !exported.contains("[[route]]") && !exported.contains("tunnel_sources"),
        "{exported}"
    );
    let file = dir.join("exported.toml");
    std::fs::write(&file, &exported).unwrap();
    let again = lbd.ok(&["apply", "-f", file.to_str().unwrap()]);
    assert!(again.contains("no change"), "{again}");
    // The state file keeps the instance's own beside the change.
    let saved = std::fs::read_to_string(dir.join("state.toml")).unwrap();
    assert!(
        saved.contains("[[route]]") && saved.contains("forward = \"gue\""),
        "{saved}"
    );
    // Routes in an Apply that are not the instance's own are refused.
    std::fs::write(
        &file,
        format!("[[route]]\nprefix = \"10.0.0.0/8\"\ngateway = \"192.0.2.9\"\n{exported}"),
    )
    .unwrap();
    let e = lbd.err(&["apply", "-f", file.to_str().unwrap()]);
    assert!(e.contains("toml.route"), "{e}");
    lbd.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// QUIC mode (issue #19) over the API: a UDP VIP in QUIC mode takes
/// backends with server ids (lbctl and gRPC), refuses one without or with a
/// taken id naming `backend.server_id` (a BadRequest over gRPC), and a
/// length on a TCP VIP naming `vip.quic_server_id_len`; QUIC mode off is
/// always allowed; Export carries all of it and Apply converges to it.
#[test]
fn quic_mode_over_the_api() {
    use lb_proto::v1 as pb;
    use lb_proto::v1::load_balancer_client::LoadBalancerClient;
    use tonic_types::StatusExt;

    const UDP: &str = "198.51.100.10:443/udp";
    let dir = std::env::temp_dir().join(format!("lbd-quic-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let lbd = Lbd::start_with(&dir, "quic", &[]);
    let v = lbd.json(&[
        "vip",
        "add",
        UDP,
        "--quic-server-id-len",
        "2",
        "--drain-flows",
        "move",
    ]);
    assert_eq!(
        (&v[0]["quic_server_id_len"], &v[0]["drain_flows"]),
        (&serde_json::json!(2), &serde_json::json!("move")),
        "{v}"
    );
    let e = lbd.err(&["vip", "add", VIP, "--quic-server-id-len", "2"]);
    assert!(
        e.contains("vip.quic_server_id_len") && e.contains("UDP"),
        "{e}"
    );
    lbd.ok(&["backend", "add", UDP, "192.0.2.11", "--server-id", "0a01"]);
    let e = lbd.err(&["backend", "add", UDP, "192.0.2.12"]);
    assert!(
        e.contains("backend.server_id") && e.contains("every backend of a QUIC VIP"),
        "{e}"
    );
    let e = lbd.err(&["backend", "add", UDP, "192.0.2.12", "--server-id", "0a0102"]);
    assert!(
        e.contains("backend.server_id") && e.contains("3 bytes"),
        "{e}"
    );

    // Over gRPC: a taken id is a BadRequest naming the field and the other backend.
    let socket = lbd.socket.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (refused, added) = rt.block_on(async move {
        let channel = lb_proto::connect_unix(socket).await.unwrap();
        let mut c = LoadBalancerClient::new(channel);
        let req = |id: &str| pb::AddBackendRequest {
            vip: Some(pb::VipKey {
                address: "198.51.100.10".into(),
                port: 443,
                protocol: pb::Protocol::Udp as i32,
            }),
            address: "192.0.2.12".into(),
            server_id: id.into(),
            ..Default::default()
        };
        let refused = c.add_backend(req("0a01")).await.unwrap_err();
        let added = c.add_backend(req("0A02")).await.unwrap().into_inner();
        (refused, added)
    });
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    let violations = refused
        .get_error_details()
        .bad_request()
        .expect("a BadRequest")
        .field_violations
        .clone();
    assert_eq!(violations[0].field, "backend.server_id", "{refused:?}");
    assert!(refused.message().contains("192.0.2.11"), "{refused:?}");
    assert_eq!(added.server_id, "0a02");

    let table = lbd.ok(&["backend", "list", UDP]);
    assert!(table.contains("SID") && table.contains("0a02"), "{table}");
    let vips = lbd.ok(&["vip", "list"]);
    assert!(vips.contains("quic id 2B, drain move"), "{vips}");
    let e = lbd.err(&["backend", "set-server-id", UDP, "192.0.2.12", "none"]);
    assert!(e.contains("backend.server_id"), "{e}");

    // Export carries it; another digest once changed; Apply converges back.
    let exported = lbd.ok(&["export"]);
    for want in [
        "quic_server_id_len = 2",
        "drain_flows = \"move\"",
        "server_id = \"0a02\"",
    ] {
        assert!(exported.contains(want), "{want}: {exported}");
    }
    let digest = lbd.json(&["info"])["config_digest"].clone();
    let off = lbd.json(&["vip", "set", UDP, "--no-quic", "--drain-flows", "keep"]);
    assert_eq!(off[0]["quic_server_id_len"], 0, "{off}");
    assert_eq!(
        off[0]["backends"][1]["server_id"], "0a02",
        "ids stay: {off}"
    );
    lbd.ok(&["backend", "set-server-id", UDP, "192.0.2.12", "none"]);
    assert_ne!(lbd.json(&["info"])["config_digest"], digest);
    let e = lbd.err(&["vip", "set", UDP, "--quic-server-id-len", "2"]);
    assert!(
        e.contains("backend.server_id") && e.contains("192.0.2.12"),
        "{e}"
    );
    let file = dir.join("exported.toml");
    std::fs::write(&file, &exported).unwrap();
    let changed = lbd.ok(&["apply", "-f", file.to_str().unwrap()]);
    assert!(changed.contains("quic"), "{changed}");
    assert_eq!(lbd.json(&["info"])["config_digest"], digest);
    let stats = lbd.json(&["stats"]);
    assert!(stats["workers"][0]["quic_by_id"].is_u64(), "{stats}");
    lbd.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
