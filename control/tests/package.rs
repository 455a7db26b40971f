//! The Debian package (`scripts/package.sh deb`, what `make deb` runs, on
//! the debug build): its contents and metadata; installed into a scratch
//! root, `lbd` started the way `lbd.service` starts it (its ExecStart with
//! `/etc/lbd/lbd.conf`'s variables, within the unit's capability bounding
//! set, under a notification socket as systemd gives one) on net_af_packet
//! with the tap exception interface, in a namespace of its own: READY=1,
//! WATCHDOG=1, the ExecStartPost address, /healthz, SIGHUP (RELOADING=1,
//! READY=1, the state file's change applied), SIGTERM (STOPPING=1, exit 0),
//! and a log without escape codes.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lb_testkit::eal;

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The value of `key=` in a unit file.
fn unit_line(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
        .to_string()
}

/// The notifications that arrive within `limit`, until `want` is among them.
fn wait_notify(sock: &UnixDatagram, want: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(deadline - Instant::now()))
            .unwrap();
        let Ok(n) = sock.recv(&mut buf) else { break };
        let msg = String::from_utf8_lossy(&buf[..n]).to_string();
        let done = msg.lines().any(|l| l == want);
        seen.push(msg);
        if done {
            return seen;
        }
    }
    panic!("no {want} within {limit:?}; got {seen:?}");
}

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn the_package_installs_and_lbd_runs_as_its_unit_does() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    // scripts/package.sh ARGS on the debug build; its stdout.
    let package = |args: &[&str]| {
        let out = Command::new(root.join("scripts/package.sh"))
            .args(args)
            .env("PROFILE", "debug")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "package.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let deb = root.join(package(&["deb"]).trim());

    // Contents and metadata.
    let list = sh(&format!("dpkg-deb -c {}", deb.display()));
    for path in [
        "./usr/bin/lbd",
        "./usr/bin/lbctl",
        "./lib/systemd/system/lbd.service",
        "./etc/lbd/lbd.conf",
        "./usr/share/man/man8/lbd.8.gz",
        "./usr/share/man/man1/lbctl.1.gz",
        "./usr/share/bash-completion/completions/lbctl",
        "./usr/share/zsh/vendor-completions/_lbctl",
        "./usr/share/fish/vendor_completions.d/lbctl.fish",
        "./usr/share/doc/lbd/DEPLOYMENT.md",
        "./usr/share/doc/lbd/lb.example.toml",
        "./usr/share/lbd/prometheus/lbd-alerts.yml",
        "./usr/share/lbd/prometheus/lbd-alerts.test.yml",
        "./usr/share/lbd/grafana/lbd.json",
    ] {
        assert!(
            list.lines().any(|l| l.ends_with(&format!(" {path}"))),
            "{path} not in the package:\n{list}"
        );
    }
    let depends = sh(&format!("dpkg-deb -f {} Depends", deb.display()));
    assert!(
        depends.contains("librte-ethdev23") && depends.contains("dpdk"),
        "{depends}"
    );
    let conffiles = sh(&format!(
        "dpkg-deb --ctrl-tarfile {} | tar -xO ./conffiles",
        deb.display()
    ));
    assert_eq!(conffiles.trim(), "/etc/lbd/lbd.conf");

    // `make install`: the same files, without a package, and the state directory.
    let staged =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staged);
    package(&["install", &staged.display().to_string()]);
    for path in list.lines().filter_map(|l| l.split_whitespace().last()) {
        let p = staged.join(path.trim_start_matches("./"));
        assert!(p.exists(), "{} not installed", p.display());
    }
    assert!(staged.join("var/lib/lbd").is_dir());
    let _ = std::fs::remove_dir_all(&staged);

    // Installed into a scratch root.
    let scratch =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("pkg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    sh(&format!(
        "dpkg-deb -x {} {}",
        deb.display(),
        scratch.display()
    ));
    let at = |p: &str| scratch.join(p.trim_start_matches('/'));
    let version = sh(&format!("{} --version", at("/usr/bin/lbd").display()));
    assert!(
        version.starts_with("lbd 0.1.0 (") && !version.contains("unknown"),
        "{version}"
    );
    assert!(sh(&format!("{} --version", at("/usr/bin/lbctl").display())).starts_with("lbctl "));
    assert!(sh(&format!(
        "zcat {}",
        at("/usr/share/man/man8/lbd.8.gz").display()
    ))
    .contains(".TH lbd 8"));
    let lbctl_man = sh(&format!(
        "zcat {}",
        at("/usr/share/man/man1/lbctl.1.gz").display()
    ));
    assert!(lbctl_man.contains(".TH lbctl 1") && lbctl_man.contains("diagnose"));
    sh(&format!(
        "bash -n {}",
        at("/usr/share/bash-completion/completions/lbctl").display()
    ));

    // Started the way the unit starts it.
    let unit = std::fs::read_to_string(at("/lib/systemd/system/lbd.service")).unwrap();
    assert_eq!(unit_line(&unit, "Type"), "notify");
    assert_eq!(unit_line(&unit, "ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(unit_line(&unit, "LimitMEMLOCK"), "infinity");
    let caps = unit_line(&unit, "CapabilityBoundingSet");
    let exec = unit_line(&unit, "ExecStart");
    let post = unit_line(&unit, "ExecStartPost");
    assert!(std::fs::read_to_string(at("/etc/lbd/lbd.conf"))
        .unwrap()
        .contains("LBD_EAL_OPTIONS="));

    let ns = Netns(format!("lbpkg-{}", std::process::id()));
    sh(&format!(
        "ip netns add {0} && ip netns exec {0} sh -c 'ip link set lo up && \
         ip link add pkd0 type veth peer name pkp0 && ip link set pkd0 up && ip link set pkp0 up'",
        ns.0
    ));
    let state_dir = at("/var/lib/lbd");
    std::fs::create_dir_all(&state_dir).unwrap();
    let sock = scratch.join("lbd.sock");
    let eal = eal::eal_args("pkg", "0@0,1@1", &["net_af_packet0,iface=pkd0"]).join(" ");
    let metrics = "127.0.0.1:9911";
    // The conf file's variables, as the unit's EnvironmentFile gives them.
    let env = [
        ("LBD_EAL_OPTIONS", eal),
        (
            "LBD_OPTIONS",
            // The last --log-format wins: text, to read the log here.
            format!(
                "--port net_af_packet0 --kernel-iface pkk0 --metrics-listen {metrics} --log-format text"
            ),
        ),
        ("LBD_KERNEL_IFACE", "pkk0".to_string()),
        ("LBD_KERNEL_ADDRESS", "192.0.2.1/24".to_string()),
    ];
    // systemd splits an unquoted $VAR on whitespace, as sh does.
    let command = exec
        .replace("/usr/bin/lbd", &at("/usr/bin/lbd").display().to_string())
        .replace("/var/lib/lbd", &state_dir.display().to_string())
        .replace("/run/lbd.sock", &sock.display().to_string());
    let bounding: Vec<String> = caps
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let notify_path = scratch.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let log_path = scratch.join("lbd.log");
    let mut lbd = Command::new("ip")
        .args(["netns", "exec", &ns.0, "setpriv"])
        .arg(format!("--bounding-set=-all,{}", bounding.join(",")))
        // systemd names the watched process: this shell's pid is lbd's.
        .args([
            "--",
            "sh",
            "-c",
            &format!("export WATCHDOG_PID=$$; exec {command}"),
        ])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "1000000")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let seen = wait_notify(&notify, "READY=1", Duration::from_secs(30));
    assert!(
        seen.iter().any(|m| m.contains("STATUS=forwarding")),
        "{seen:?}\n{}",
        log()
    );
    wait_notify(&notify, "WATCHDOG=1", Duration::from_secs(3));
    // ExecStartPost: the host's address on the exception interface.
    let in_ns = |cmd: &str| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns.0, "sh", "-c", cmd]);
        c.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        c.output().unwrap()
    };
    assert!(in_ns(&post).status.success(), "{post}");
    let addr = String::from_utf8_lossy(&in_ns("ip -4 addr show dev pkk0").stdout).to_string();
    assert!(addr.contains("192.0.2.1/24"), "{addr}");
    let health = in_ns(&format!("curl -s http://{metrics}/healthz"));
    assert_eq!(String::from_utf8_lossy(&health.stdout), "ok\n", "{}", log());

    // SIGHUP: a VIP added to the state file is applied.
    let state = state_dir.join("lb.toml");
    let text = std::fs::read_to_string(&state).unwrap_or_default();
    std::fs::write(
        &state,
        format!("{text}\n[[vip]]\naddress = \"198.51.100.10\"\nport = 80\nprotocol = \"tcp\"\n"),
    )
    .unwrap();
    sh(&format!("kill -HUP {}", lbd.id()));
    wait_notify(&notify, "RELOADING=1", Duration::from_secs(5));
    let seen = wait_notify(&notify, "READY=1", Duration::from_secs(5));
    assert!(
        seen.iter().any(|m| m.contains("STATUS=reloaded: 1 change")),
        "{seen:?}"
    );
    let lbctl = at("/usr/bin/lbctl");
    let vips = sh(&format!(
        "{} --socket {} vip list",
        lbctl.display(),
        sock.display()
    ));
    assert!(vips.contains("198.51.100.10:80/tcp"), "{vips}");

    // SIGTERM: stopping, and a clean exit.
    sh(&format!("kill -TERM {}", lbd.id()));
    wait_notify(&notify, "STOPPING=1", Duration::from_secs(5));
    let status = lbd.wait().unwrap();
    assert!(status.success(), "lbd exited {status}:\n{}", log());
    let log = log();
    assert!(log.contains("reload: applied"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a log to a file:\n{log}"
    );
    drop(notify);
    let _ = std::fs::remove_dir_all(&scratch);
}
