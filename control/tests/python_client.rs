//! The Python client (`clients/python`, the package `lbd-client`) against a
//! real `lbd` on `net_null`: a virtual environment under the target
//! directory (`target/pyenv`: grpcio and grpcio-tools from PyPI, then the
//! package built from this checkout, its stubs generated from
//! `proto/lb.proto`), and its unittest suite run against lbd with both
//! listeners: the client workflow (VIPs, backends, Watch, stats, info,
//! export) on the Unix socket and again over mutual TLS on 127.0.0.1 (the
//! test CA's client certificate; one without is refused), and the probe of
//! every unary method with empty and hostile requests; then
//! `examples/quickstart.py`.

mod common;
use common::certs::TlsLbd;
use common::{repo, target_dir};

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

fn run(what: &str, cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e} ({cmd:?})"));
    assert!(
        out.status.success(),
        "{what} failed ({cmd:?}):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The virtual environment with the package installed from this checkout
/// (reinstalled every run, so the stubs are generated from the current
/// proto); its python.
fn python_env() -> PathBuf {
    let env = target_dir().join("pyenv");
    let python = env.join("bin/python");
    if !python.exists() {
        run(
            "creating a Python virtual environment (Debian: python3-venv; scripts/setup.sh installs it)",
            Command::new("python3").arg("-m").arg("venv").arg(&env),
        );
    }
    let pip = |args: &[&str]| {
        let mut cmd = Command::new(&python);
        cmd.args(["-m", "pip", "--disable-pip-version-check", "-q", "install"])
            .args(args);
        cmd
    };
    run(
        "installing grpcio and grpcio-tools from PyPI",
        &mut pip(&["grpcio", "grpcio-tools", "setuptools"]),
    );
    let package = repo().join("clients/python");
    run(
        "building and installing clients/python",
        pip(&["--no-build-isolation", "--force-reinstall", "--no-deps"]).arg(&package),
    );
    python
}

#[test]
fn the_python_client_drives_lbd_and_every_method_answers_hostile_requests() {
    let t0 = Instant::now();
    let python = python_env();
    let setup = t0.elapsed();

    let dir = common::temp_dir("python");
    let TlsLbd {
        lbd,
        addr,
        ca,
        cert,
        key,
    } = TlsLbd::start(&dir, "python");
    let out = Command::new(&python)
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(repo().join("clients/python/tests"))
        .env("LBD_SOCKET", &lbd.socket)
        .env("LBD_TLS_ADDR", &addr)
        .env("LBD_TLS_CA", &ca)
        .env("LBD_TLS_CERT", &cert)
        .env("LBD_TLS_KEY", &key)
        // The installed package, not the source tree's (which has no stubs).
        .current_dir(&dir)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stderr).to_string();
    // The README's example, on the state the suite left (empty).
    let example = Command::new(&python)
        .arg(repo().join("clients/python/examples/quickstart.py"))
        .arg(&lbd.socket)
        .output()
        .unwrap();
    let log = lbd.stop();
    assert!(
        out.status.success(),
        "the Python suite failed:\n{report}{}\nlbd:\n{log}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Every test ran (none skipped, none left undiscovered).
    let ran = report
        .lines()
        .find_map(|l| {
            l.strip_prefix("Ran ")?
                .split(' ')
                .next()?
                .parse::<u32>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no unittest summary in\n{report}"));
    assert!(ran >= 8, "{ran} Python tests ran:\n{report}");
    assert!(!report.contains("skipped"), "{report}");
    // Each ran (and, the suite having passed, passed), the workflow on both
    // listeners.
    for test in [
        "test_client.Client.test_vip_backends_events_stats_info_export",
        "test_client.ClientOverTls.test_vip_backends_events_stats_info_export",
        "test_client.ClientOverTls.test_a_client_without_a_certificate_is_refused",
        "test_client.ClientOverTls.test_pem_bytes_work_as_paths_do",
        "test_client.ClientOverTls.test_tls_is_not_for_the_unix_socket",
        "test_probe.Probe.test_empty_and_hostile_requests_get_specific_codes_and_lbd_serves_on",
        "test_probe.Probe.test_the_probe_covers_every_unary_method",
    ] {
        let name = test.rsplit('.').next().unwrap();
        assert!(
            report.contains(&format!("{name} ({test}) ... ")),
            "{test} did not run:\n{report}"
        );
    }
    let shown = String::from_utf8_lossy(&example.stdout).to_string()
        + &String::from_utf8_lossy(&example.stderr);
    assert!(example.status.success(), "quickstart.py: {shown}");
    for line in [
        "lbd on net_null0",
        "event: vip 198.51.100.10:443/tcp created",
        "event: backend 192.0.2.12 added to 198.51.100.10:443/tcp",
        "backend 192.0.2.11 weight 1 UP mac (resolving)",
        "backend 192.0.2.12 weight 2 UP mac (resolving)",
        "VIP packets 0, new flows 0",
        "worker 1: rx ",
    ] {
        assert!(
            shown.contains(line),
            "missing {line:?} in quickstart.py's\n{shown}"
        );
    }
    assert!(!shown.contains("fewer events"), "{shown}");
    eprintln!(
        "python env {:.1} s, suite {:.1} s",
        setup.as_secs_f64(),
        (t0.elapsed() - setup).as_secs_f64()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
