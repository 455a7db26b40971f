//! The agent's own Debian package (`scripts/package.sh agent-deb`, what
//! `make deb-agent` runs, on the debug build) and `make install-agent`:
//! the files, the metadata (no DPDK: it runs on the backends), the man
//! page, and the installed binary started as lb-agent.service starts it
//! (its ExecStart with /etc/lb-agent/lb-agent.conf's variables), answering
//! on loopback.

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn unit_line(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
        .to_string()
}

const FILES: [&str; 5] = [
    "usr/bin/lb-agent",
    "lib/systemd/system/lb-agent.service",
    "etc/lb-agent/lb-agent.conf",
    "usr/share/man/man8/lb-agent.8.gz",
    "usr/share/doc/lb-agent/README.md",
];

fn package(root: &Path, args: &[&str]) -> String {
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
}

#[test]
fn the_agent_package_installs_and_runs_as_its_unit_does() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));

    // make install-agent: the files under DESTDIR.
    let staged = tmp.join(format!("agent-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staged);
    package(&root, &["agent-install", staged.to_str().unwrap()]);
    for f in FILES {
        assert!(staged.join(f).is_file(), "{f} not installed");
    }
    let _ = std::fs::remove_dir_all(&staged);

    // make deb-agent, where dpkg-deb is (Debian): contents and metadata.
    let installed = if Command::new("dpkg-deb").arg("--version").output().is_ok() {
        let deb = root.join(package(&root, &["agent-deb"]).trim());
        let list = sh(&format!("dpkg-deb -c {}", deb.display()));
        for f in FILES {
            assert!(
                list.lines().any(|l| l.ends_with(&format!(" ./{f}"))),
                "{f} not in the package:\n{list}"
            );
        }
        let field = |f: &str| sh(&format!("dpkg-deb -f {} {f}", deb.display()));
        assert_eq!(field("Package").trim(), "lb-agent");
        let depends = field("Depends");
        assert!(
            depends.contains("libc6") && !depends.contains("dpdk") && !depends.contains("rte"),
            "{depends}"
        );
        let conffiles = sh(&format!(
            "dpkg-deb --ctrl-tarfile {} | tar -xO ./conffiles",
            deb.display()
        ));
        assert_eq!(conffiles.trim(), "/etc/lb-agent/lb-agent.conf");
        let scratch = tmp.join(format!("agent-pkg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        sh(&format!(
            "dpkg-deb -x {} {}",
            deb.display(),
            scratch.display()
        ));
        scratch
    } else {
        eprintln!("no dpkg-deb: the package is not built, the staged install is run instead");
        package(&root, &["agent-install", staged.to_str().unwrap()]);
        staged.clone()
    };
    let at = |p: &str| installed.join(p);

    let version = sh(&format!("{} --version", at("usr/bin/lb-agent").display()));
    assert_eq!(version.trim(), "lb-agent 0.1.0");
    let man = sh(&format!(
        "zcat {}",
        at("usr/share/man/man8/lb-agent.8.gz").display()
    ));
    assert!(
        man.contains(".TH lb-agent 8") && man.contains("ceiling"),
        "{man}"
    );
    let readme = std::fs::read_to_string(at("usr/share/doc/lb-agent/README.md")).unwrap();
    assert!(readme.contains("10999"), "the README names the port");

    // Started the way the unit starts it, the conf's options first; a
    // later --listen wins, so it listens on a loopback port here.
    let unit = std::fs::read_to_string(at("lib/systemd/system/lb-agent.service")).unwrap();
    assert_eq!(
        unit_line(&unit, "EnvironmentFile"),
        "-/etc/lb-agent/lb-agent.conf"
    );
    assert_eq!(unit_line(&unit, "DynamicUser"), "yes");
    let exec = unit_line(&unit, "ExecStart");
    assert_eq!(exec, "/usr/bin/lb-agent $LB_AGENT_OPTIONS");
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let command = format!(
        ". {}; exec {} --listen 127.0.0.1:{port} --fixed 40",
        at("etc/lb-agent/lb-agent.conf").display(),
        exec.replace(
            "/usr/bin/lb-agent",
            at("usr/bin/lb-agent").to_str().unwrap()
        )
    );
    let mut agent = Command::new("sh")
        .args(["-c", &command])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        if let Ok(mut s) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "the installed agent does not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(reply, "ready 40%\n");
    let _ = std::fs::remove_dir_all(&installed);
}
