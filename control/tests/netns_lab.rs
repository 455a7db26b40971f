//! `lbd` on a real L2 segment in network namespaces created here and removed
//! afterwards (documentation address ranges only): a client, a backend that
//! owns the VIP on `lo` (the classic DR setup), and lbd on `net_af_packet`
//! with two queue pairs and two workers, plus its exception interface.
//! Real Linux TCP on both ends; the backend answers the client directly.

#[path = "../../dataplane/tests/common/eal.rs"]
mod eal;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const VIP: &str = "198.51.100.10";
const LOCAL: &str = "192.0.2.1";
const CLIENT: &str = "192.0.2.7";
const BACKEND: &str = "192.0.2.11";

fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Namespaces and links of one test, removed on drop (even after a failure).
struct Lab {
    ns: Vec<String>,
    children: Vec<Child>,
}

impl Lab {
    fn ns(&self, i: usize) -> &str {
        &self.ns[i]
    }

    fn exec(&self, ns: &str, args: &[&str]) -> Output {
        let mut a = vec!["ip", "netns", "exec", ns];
        a.extend_from_slice(args);
        sh(&a)
    }

    fn exec_status(&self, ns: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// switch (bridge) <- client, lb, backend.
fn build_lab(tag: &str) -> Lab {
    let id = format!("{}{}", tag, std::process::id() % 100_000);
    let names = ["sw", "cl", "lb", "be"].map(|r| format!("lbt{r}{id}"));
    let mut lab = Lab {
        ns: Vec::new(),
        children: Vec::new(),
    };
    for n in &names {
        sh(&["ip", "netns", "add", n]);
        lab.ns.push(n.clone());
    }
    let (sw, cl, lb, be) = (&names[0], &names[1], &names[2], &names[3]);
    lab.exec(sw, &["ip", "link", "add", "br0", "type", "bridge"]);
    lab.exec(sw, &["ip", "link", "set", "br0", "up"]);
    for (ns, port, iface) in [
        (cl, "pcl", "eth0"),
        (lb, "plb", "data0"),
        (be, "pbe", "eth0"),
    ] {
        lab.exec(
            sw,
            &[
                "ip", "link", "add", port, "type", "veth", "peer", "name", iface, "netns", ns,
            ],
        );
        lab.exec(sw, &["ip", "link", "set", port, "master", "br0", "up"]);
        lab.exec(ns, &["ip", "link", "set", iface, "up"]);
        lab.exec(ns, &["ip", "link", "set", "lo", "up"]);
        // veth TX checksum offload leaves partial checksums that arrive
        // broken once a frame has crossed DPDK.
        lab.exec(ns, &["ethtool", "-K", iface, "tx", "off"]);
    }
    lab.exec(
        cl,
        &["ip", "addr", "add", &format!("{CLIENT}/24"), "dev", "eth0"],
    );
    lab.exec(
        cl,
        &["ip", "route", "add", &format!("{VIP}/32"), "dev", "eth0"],
    );
    lab.exec(
        be,
        &["ip", "addr", "add", &format!("{BACKEND}/24"), "dev", "eth0"],
    );
    lab.exec(
        be,
        &["ip", "addr", "add", &format!("{VIP}/32"), "dev", "lo"],
    );
    for (k, v) in [
        ("net.ipv4.conf.all.arp_ignore", "1"),
        ("net.ipv4.conf.all.arp_announce", "2"),
    ] {
        lab.exec(be, &["sysctl", "-qw", &format!("{k}={v}")]);
    }
    lab
}

/// lbd must not outlive a failed test (it would spin on its cores).
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One HTTP GET from the client through the VIP.
fn http_get(lab: &Lab, cl: &str) -> bool {
    let code = format!(
        "import urllib.request; print(urllib.request.urlopen('http://{VIP}/', timeout=5).status)"
    );
    let out = lab.exec_status(cl, &["python3", "-c", &code]);
    String::from_utf8_lossy(&out.stdout).trim() == "200"
}

/// `lbctl` is built next to `lbd` (`make test` builds every binary first).
fn lbctl_path() -> std::path::PathBuf {
    let p = std::path::Path::new(env!("CARGO_BIN_EXE_lbd")).with_file_name("lbctl");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build -p lbctl` (make test does)",
        p.display()
    );
    p
}

fn mac_of(lab: &Lab, ns: &str, iface: &str) -> String {
    let out = lab.exec(ns, &["cat", &format!("/sys/class/net/{iface}/address")]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dr_through_two_workers_and_the_exception_path() {
    let mut lab = build_lab("a");
    let (cl, lb, be) = (
        lab.ns(1).to_string(),
        lab.ns(2).to_string(),
        lab.ns(3).to_string(),
    );

    // The backend serves HTTP on the VIP (and on its own address, where the
    // health check asks).
    let server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &be,
            "python3",
            "-m",
            "http.server",
            "--bind",
            "0.0.0.0",
            "80",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    lab.children.push(server);

    let config = std::env::temp_dir().join(format!("lbd-lab-{}.toml", std::process::id()));
    let socket = std::env::temp_dir().join(format!("lbd-lab-{}.sock", std::process::id()));
    let lbctl = |args: &[&str]| -> serde_json::Value {
        let out = Command::new(lbctl_path())
            .arg("--socket")
            .arg(&socket)
            .args(["--output", "json"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "lbctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let health = |lbctl: &dyn Fn(&[&str]) -> serde_json::Value| {
        lbctl(&["health"])[0]["health"].as_str().map(str::to_string)
    };
    // No MAC for the backend: lbd resolves it with ARP from the dataplane.
    // The check is scripts/lab.sh's: fast, but three misses to go down.
    std::fs::write(
        &config,
        format!(
            "local_addresses = [\"{LOCAL}\"]\n[[vip]]\naddress = \"{VIP}\"\nport = 80\nprotocol = \"tcp\"\n\
             [[vip.backend]]\naddress = \"{BACKEND}\"\n\
             [vip.backend.check]\nkind = \"http:/\"\ninterval_ms = 200\ntimeout_ms = 190\nrise = 2\nfall = 3\n"
        ),
    )
    .unwrap();
    let mut args = vec![
        "netns".to_string(),
        "exec".into(),
        lb.clone(),
        env!("CARGO_BIN_EXE_lbd").into(),
    ];
    args.extend(eal::eal_args(
        "lab",
        "0@0,1@1,2@1",
        &["net_af_packet0,iface=data0,qpairs=2"],
    ));
    args.extend(
        [
            "--",
            "--port",
            "net_af_packet0",
            "--config",
            &config.display().to_string(),
            "--kernel-iface",
            "lbk0",
            "--flows",
            "4096",
            "--json",
            "--grpc-socket",
            &socket.display().to_string(),
            "--metrics-listen",
            "127.0.0.1:9910",
        ]
        .map(String::from),
    );
    // stderr to a file: an unread pipe fills and blocks lbd.
    let log = std::env::temp_dir().join(format!("lbd-lab-{}.log", std::process::id()));
    let mut lbd = KillOnDrop(Some(
        Command::new("ip")
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    ));

    // The host behind the exception interface gets the port's own address.
    wait_until("the exception interface", || {
        lab.exec_status(&lb, &["ip", "link", "show", "lbk0"])
            .status
            .success()
    });
    lab.exec(
        &lb,
        &["ip", "addr", "add", &format!("{LOCAL}/24"), "dev", "lbk0"],
    );

    // The host answers a ping through DPDK: port -> tap -> kernel -> tap -> port.
    let ping = lab.exec_status(&cl, &["ping", "-c", "3", "-i", "0.2", "-W", "2", LOCAL]);
    let ping_ok = ping.status.success();

    // Twenty HTTP requests through the VIP; replies go straight back.
    wait_until("the backend's HTTP server", || {
        lab.exec_status(
            &be,
            &[
                "python3",
                "-c",
                &format!("import socket; socket.create_connection(('{VIP}', 80), 1)"),
            ],
        )
        .status
        .success()
    });
    wait_until("the backend's health check to pass", || {
        health(&lbctl).as_deref() == Some("healthy")
    });
    let ok = (0..20).filter(|_| http_get(&lab, &cl)).count();

    // The server dies: the HTTP check takes the backend down within
    // fall x interval (plus a timeout); it comes back after rise successes.
    let mut server = lab.children.remove(0);
    server.kill().unwrap();
    server.wait().unwrap();
    let died = Instant::now();
    wait_until("the backend to be marked down", || {
        health(&lbctl).as_deref() == Some("unhealthy")
    });
    let detection = died.elapsed();
    let backend_state = lbctl(&["backend", "list", &format!("{VIP}:80/tcp")])[0]["state"].clone();
    let restarted = Command::new("ip")
        .args([
            "netns",
            "exec",
            &be,
            "python3",
            "-m",
            "http.server",
            "--bind",
            "0.0.0.0",
            "80",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    lab.children.push(restarted);
    wait_until("the backend to come back", || {
        health(&lbctl).as_deref() == Some("healthy")
    });
    wait_until("a request through the VIP after recovery", || {
        http_get(&lab, &cl)
    });
    let stats = lbctl(&["stats"]);
    // Prometheus, scraped inside lbd's namespace.
    let metrics = String::from_utf8(
        lab.exec(&lb, &["curl", "-sf", "http://127.0.0.1:9910/metrics"])
            .stdout,
    )
    .unwrap();
    let sample = |name: &str| -> u64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in\n{metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };

    let backend_mac = mac_of(&lab, &be, "eth0");
    let lbd = lbd.0.take().unwrap();
    let pid = lbd.id().to_string();
    // `ip netns exec` runs lbd as its child (exec): signal the real process.
    let _ = Command::new("pkill").args(["-TERM", "-P", &pid]).status();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let out = lbd.wait_with_output().unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&config);
    assert!(out.status.success(), "lbd: {stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));

    assert!(
        detection < Duration::from_millis(3 * 200 + 190 + 600),
        "down after {detection:?}"
    );
    assert_eq!(
        backend_state, "down",
        "a failing backend is down for the dataplane"
    );
    assert!(
        stats["vips"][0]["packets"].as_u64().unwrap() >= 20,
        "{stats}"
    );
    assert!(
        sample("lb_vip_packets_total{vip=\"198.51.100.10:80/tcp\"}") >= 20,
        "{metrics}"
    );
    assert!(
        sample("lb_backend_new_flows_total{vip=\"198.51.100.10:80/tcp\",backend=\"192.0.2.11\"}")
            >= 20
    );
    assert_eq!(
        sample("lb_backend_healthy{vip=\"198.51.100.10:80/tcp\",backend=\"192.0.2.11\"}"),
        1
    );
    assert!(
        sample("lb_worker_to_kernel_total{worker=\"1\"}")
            + sample("lb_worker_to_kernel_total{worker=\"2\"}")
            >= 3
    );
    assert!(
        ping_ok,
        "ping through the exception path: {}\n{report}",
        String::from_utf8_lossy(&ping.stdout)
    );
    assert_eq!(ok, 20, "every request through the VIP succeeded: {report}");
    let total = &report["total"];
    assert!(total["neigh_requests"].as_u64().unwrap() >= 1, "{report}");
    assert!(
        total["neigh_learned"].as_u64().unwrap() >= 1,
        "the backend's ARP reply was seen: {report}"
    );
    assert!(
        stderr.contains("backend resolved") && stderr.contains(&backend_mac),
        "{stderr}"
    );
    assert!(total["to_kernel"].as_u64().unwrap() >= 3, "{report}");
    assert!(total["from_kernel"].as_u64().unwrap() >= 3, "{report}");
    assert!(
        total["arp_replies"].as_u64().unwrap() >= 1,
        "the client resolved the VIP through us: {report}"
    );
    assert!(total["new_flows"].as_u64().unwrap() >= 20, "{report}");
    let workers = report["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    for w in workers {
        assert!(
            w["new_flows"].as_u64().unwrap() > 0,
            "both workers own flows in their own tables: {report}"
        );
    }
    let flows: u64 = workers
        .iter()
        .map(|w| w["active_flows"].as_u64().unwrap())
        .sum();
    assert!(flows >= 20, "{report}");
}
