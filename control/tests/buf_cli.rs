//! buf (https://buf.build), pinned and installed from npm by
//! `scripts/buf.sh` into the target directory (`target/buf`): `buf lint`
//! of proto/lb.proto against the STANDARD rules with `buf.yaml`'s
//! exceptions, and `buf curl` (a grpcurl-like client: server reflection,
//! JSON) against a real lbd on `net_null` over both listeners, its Unix
//! socket and its TCP listener on 127.0.0.1 with mutual TLS, each with
//! buf curl's defaults but for the addressing, `--protocol grpc` (lbd
//! speaks gRPC, buf curl's default is Connect) and the certificates.

mod common;
use common::certs::TlsLbd;
use common::{repo, target_dir};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

/// The pinned buf, installed by scripts/buf.sh when missing.
fn buf() -> PathBuf {
    let out = Command::new(repo().join("scripts/buf.sh"))
        .arg(target_dir().join("buf"))
        .output()
        .expect("running scripts/buf.sh");
    assert!(
        out.status.success(),
        "scripts/buf.sh could not provide buf (scripts/setup.sh installs npm):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(path.exists(), "{}", path.display());
    path
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// The rules buf.yaml waives (the keys of `ignore_only`).
fn waived_rules() -> BTreeSet<String> {
    let yaml = std::fs::read_to_string(repo().join("buf.yaml")).unwrap();
    let mut rules = BTreeSet::new();
    let mut inside = false;
    for line in yaml.lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        if line == "  ignore_only:" {
            inside = true;
        } else if inside && line.starts_with("    ") && !line.starts_with("     ") {
            rules.insert(line.trim().trim_end_matches(':').to_string());
        } else if inside && !line.starts_with("      ") {
            inside = false;
        }
    }
    rules
}

#[test]
fn buf_lint_passes_with_each_exception_needed() {
    let t0 = Instant::now();
    let buf = buf();
    let installed = t0.elapsed();

    // The repository's configuration: clean.
    let lint = Command::new(&buf)
        .arg("lint")
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(lint.status.success(), "buf lint:\n{}", text(&lint));
    assert_eq!(text(&lint), "", "buf lint says nothing when clean");

    // The same rules without the exceptions: exactly the waived rules fail,
    // each on proto/lb.proto (every exception is needed, none is missing).
    let waived = waived_rules();
    assert!(waived.len() >= 4, "{waived:?}");
    let plain = Command::new(&buf)
        .args(["lint", "--error-format=json", "--config"])
        .arg(r#"{"version":"v2","modules":[{"path":"proto"}],"lint":{"use":["STANDARD"]}}"#)
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(!plain.status.success(), "{}", text(&plain));
    let mut failed = BTreeSet::new();
    for line in String::from_utf8_lossy(&plain.stdout).lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["path"], "proto/lb.proto", "{line}");
        failed.insert(v["type"].as_str().unwrap().to_string());
    }
    assert_eq!(failed, waived, "the STANDARD rules lb.proto breaks");

    // A copy of the module: clean as it is, and a name that breaks an
    // unwaived rule fails where it is (buf lints lb.proto itself).
    let dir = common::temp_dir("buf-lint");
    std::fs::create_dir_all(dir.join("proto")).unwrap();
    std::fs::copy(repo().join("buf.yaml"), dir.join("buf.yaml")).unwrap();
    let proto = std::fs::read_to_string(repo().join("proto/lb.proto")).unwrap();
    std::fs::write(dir.join("proto/lb.proto"), &proto).unwrap();
    let copy = Command::new(&buf)
        .arg("lint")
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(copy.status.success(), "the copy: {}", text(&copy));
    let lines = proto.lines().count();
    std::fs::write(
        dir.join("proto/lb.proto"),
        proto + "message bad_name {\n  string BadField = 1;\n}\n",
    )
    .unwrap();
    let broken = Command::new(&buf)
        .args(["lint", "--error-format=json"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let shown = text(&broken);
    assert!(!broken.status.success(), "{shown}");
    let mut found = BTreeSet::new();
    for line in String::from_utf8_lossy(&broken.stdout).lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["path"], "proto/lb.proto", "{line}");
        assert!(v["start_line"].as_u64().unwrap() > lines as u64, "{line}");
        found.insert(v["type"].as_str().unwrap().to_string());
    }
    assert_eq!(
        found,
        BTreeSet::from([
            "MESSAGE_PASCAL_CASE".to_string(),
            "FIELD_LOWER_SNAKE_CASE".to_string()
        ]),
        "{shown}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    eprintln!(
        "buf install/check {:.1} s, lint {:.1} s",
        installed.as_secs_f64(),
        (t0.elapsed() - installed).as_secs_f64()
    );
}

/// Runs `buf curl` with `args`; its output, and whether it succeeded.
fn curl(buf: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(buf).arg("curl").args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn json(what: &str, (ok, out, err): (bool, String, String)) -> serde_json::Value {
    assert!(ok, "buf curl {what}: {err}{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("buf curl {what}: not JSON ({e}): {out}"))
}

#[test]
fn buf_curl_calls_lbd_by_reflection_on_both_listeners() {
    let t0 = Instant::now();
    let buf = buf();
    let dir = common::temp_dir("buf-curl");
    let TlsLbd {
        lbd,
        addr,
        ca,
        cert,
        key,
    } = TlsLbd::start(&dir, "buf");
    let started = t0.elapsed();
    let socket = lbd.socket.display().to_string();
    let unix = |method: &str, data: Option<&str>| {
        let url = format!("http://localhost/lb.v1.LoadBalancer/{method}");
        let mut args = vec!["--unix-socket", &socket, "--protocol", "grpc"];
        if let Some(d) = data {
            args.extend(["-d", d]);
        }
        args.push(&url);
        curl(&buf, &args)
    };
    let (ca, cert, key) = (
        ca.display().to_string(),
        cert.display().to_string(),
        key.display().to_string(),
    );
    let tls = |method: &str, data: Option<&str>, client: bool| {
        let url = format!("https://{addr}/lb.v1.LoadBalancer/{method}");
        let mut args = vec!["--protocol", "grpc", "--cacert", &ca];
        if client {
            args.extend(["--cert", &cert, "--key", &key]);
        }
        if let Some(d) = data {
            args.extend(["-d", d]);
        }
        args.push(&url);
        curl(&buf, &args)
    };

    // The Unix socket: the service's methods by reflection, then calls.
    let (ok, methods, err) = curl(
        &buf,
        &[
            "--unix-socket",
            &socket,
            "--protocol",
            "grpc",
            "--list-methods",
            "http://localhost",
        ],
    );
    assert!(ok, "--list-methods: {err}");
    for m in ["GetInfo", "CreateVip", "GetVip", "Watch", "SetBackends"] {
        assert!(
            methods
                .lines()
                .any(|l| l == format!("lb.v1.LoadBalancer/{m}")),
            "{m} not listed:\n{methods}"
        );
    }
    let info = json("GetInfo (socket)", unix("GetInfo", None));
    assert_eq!(info["port"], "net_null0", "{info}");
    assert_eq!(info["workerLcores"], serde_json::json!([1]), "{info}");
    assert_eq!(info["configDigest"].as_str().unwrap().len(), 64, "{info}");

    let vip = r#"{"address":"198.51.100.80","port":443,"protocol":"TCP"}"#;
    let created = json(
        "CreateVip (socket)",
        unix(
            "CreateVip",
            Some(&format!(r#"{{"vip":{vip},"udpIdleTimeoutS":30}}"#)),
        ),
    );
    let key_json: serde_json::Value = serde_json::from_str(vip).unwrap();
    assert_eq!(created["key"], key_json, "{created}");
    assert_eq!(created["tableSize"], 65537, "{created}");
    assert_eq!(created["udpIdleTimeoutS"], 30, "{created}");
    let got = json("GetVip (socket)", unix("GetVip", Some(vip)));
    assert_eq!(got, created);
    // A refusal: the status code and lbd's message, in buf curl's JSON.
    let (ok, _, err) = unix("CreateVip", Some(&format!(r#"{{"vip":{vip}}}"#)));
    assert!(!ok);
    assert!(err.contains(r#""code": "already_exists""#), "{err}");

    // The TLS listener: the same lbd, and a change made there.
    let info = json("GetInfo (TLS)", tls("GetInfo", None, true));
    assert_eq!(info["port"], "net_null0", "{info}");
    assert_eq!(
        json("GetVip (TLS)", tls("GetVip", Some(vip), true)),
        created
    );
    let other = r#"{"address":"2001:db8::80","port":53,"protocol":"UDP"}"#;
    let made = json(
        "CreateVip (TLS)",
        tls("CreateVip", Some(&format!(r#"{{"vip":{other}}}"#)), true),
    );
    assert_eq!(made["key"]["address"], "2001:db8::80", "{made}");
    assert_eq!(made["key"]["protocol"], "UDP", "{made}");
    // Without a client certificate lbd's TLS listener refuses the call.
    let (ok, out, err) = tls("GetInfo", None, false);
    assert!(!ok, "served without a client certificate: {out}");
    // (buf reports a reflection that failed as a missing service, so the
    // TLS alert shows when the call goes by the schema of proto/lb.proto.)
    assert!(err.contains("lb.v1.LoadBalancer"), "{err}");
    let schema = repo().join("proto/lb.proto").display().to_string();
    let (ok, out, err) = curl(
        &buf,
        &[
            "--schema",
            &schema,
            "--protocol",
            "grpc",
            "--cacert",
            &ca,
            &format!("https://{addr}/lb.v1.LoadBalancer/GetInfo"),
        ],
    );
    assert!(!ok, "served without a client certificate: {out}");
    // TLS 1.3 refuses the certificate after the handshake, so the client
    // sees the alert or, racing it, only the connection going away
    // ("certificate required", "could not be established", "broken pipe"):
    // a transport failure, where the same call with the certificate
    // succeeded above.
    assert!(
        [
            "certificate required",
            "could not be established",
            "broken pipe",
            "connection reset"
        ]
        .iter()
        .any(|m| err.contains(m)),
        "{err}"
    );

    let vips = lbd.json(&["vip", "list"]);
    let log = lbd.stop();
    let names: Vec<&str> = vips
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["vip"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["198.51.100.80:443/tcp", "[2001:db8::80]:53/udp"],
        "{vips}\n{log}"
    );
    eprintln!(
        "lbd start {:.1} s, buf curl {:.1} s",
        started.as_secs_f64(),
        (t0.elapsed() - started).as_secs_f64()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
