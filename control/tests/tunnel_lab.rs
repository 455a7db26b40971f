//! Tunnel forwarding end to end (issue #18; `LAB_TOPO=tunnel
//! scripts/lab.sh`): beside the flat segment's DR backends, a router leads
//! to a second segment whose backends the VIP reaches through tunnels only
//! (the router has no route to it): be5 and be6 take VXLAN on the kernel's
//! own vxlan devices, be7 IPIP and be8 GUE through the userspace
//! decapsulator `scripts/tundecap.py` (the kernel has no ipip or fou
//! module). Every backend answers the client directly through the router;
//! nothing comes back through lbd. lbd learns the route to the second
//! segment and the backends' tunnels from its state file, which
//! `lab.sh tunnel-state` writes and lbd reloads (SIGHUP).
//!
//! In order, on one lab: the decapsulators without lbd; VXLAN weights;
//! downloads through VXLAN with a drain and a capture on lbd's port
//! (direct return, VXLAN on the wire); failover by a check through the
//! tunnel; one VIP mixing DR and VXLAN; IPIP and GUE; uploads that need
//! path-MTU discovery through each tunnel (ICMP frag-needed from lbd).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lb_testkit::exposition;
use lb_testkit::lab::{complete, downloads, tally, unaccounted, wait_until, Download, Lab};

const VIP: &str = "198.51.100.10:80/tcp";
const VIP_ADDR: &str = "198.51.100.10";
const CLIENT: &str = "192.0.2.100";
/// lbd's address on the segment: the tunnels' outer source (no
/// tunnel_sources in the state file: the port's local address).
const LOCAL: &str = "192.0.2.1";
const BE1: &str = "192.0.2.11";

/// One line of `lab.sh tunnel-backends`.
#[derive(Debug, Clone)]
struct Remote {
    name: String,
    addr: String,
    method: String,
    mac: String,
    vni: u32,
    port: u16,
}

fn remotes(lab: &Lab) -> BTreeMap<String, Remote> {
    lab.ok(&["tunnel-backends"])
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 6, "tunnel-backends line: {l:?}");
            let r = Remote {
                name: f[0].to_string(),
                addr: f[1].to_string(),
                method: f[2].to_string(),
                mac: f[3].to_string(),
                vni: f[4].parse().unwrap_or(0),
                port: f[5].parse().unwrap_or(0),
            };
            (r.name.clone(), r)
        })
        .collect()
}

/// A metric that must exist (the core's new counters): its sum.
fn counter(lab: &Lab, name: &str) -> u64 {
    let text = lab.metrics();
    let samples = exposition::parse(&text);
    let found: Vec<_> = samples.iter().filter(|s| s.name == name).collect();
    assert!(!found.is_empty(), "lbd's metrics have no {name}");
    found.iter().map(|s| s.value).sum::<f64>() as u64
}

/// Write the state file with these backends ("beN" or "beN:W"); lbd
/// reloads it, then every one of them passes its checks (two in a row),
/// or the test fails naming their health.
fn state(lab: &Lab, backends: &[&str], addrs: &[&str]) {
    let mut args = vec!["tunnel-state"];
    args.extend_from_slice(backends);
    lab.ok(&args);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let health: Vec<serde_json::Value> = addrs.iter().map(|a| lab.health_on(VIP, a)).collect();
        if health
            .iter()
            .all(|h| h["consecutive_successes"].as_u64().unwrap_or(0) >= 2)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{backends:?} not passing their checks 20 s after the reload: {health:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A tcpdump writing `pcap`, stopped by [`stop`]. Immediate mode: what
/// the kernel took is read at once, not when a ring block times out (a
/// SIGINT before that loses the block).
fn capture(lab: &Lab, ns: &str, iface: &str, pcap: &str, filter: &[&str]) -> Child {
    let mut args = vec![
        "exec",
        ns,
        "tcpdump",
        "--immediate-mode",
        "-i",
        iface,
        "-n",
        "-U",
        "-s",
        "200",
        "-w",
        pcap,
    ];
    args.extend_from_slice(filter);
    let child = lab
        .command(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // tcpdump has no readiness signal but the file it creates.
    wait_until("tcpdump to start", Duration::from_secs(5), || {
        std::path::Path::new(pcap).exists()
    });
    std::thread::sleep(Duration::from_millis(300));
    child
}

fn stop(mut capture: Child) {
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("kill")
        .args(["-INT", &capture.id().to_string()])
        .status();
    let _ = capture.wait();
}

/// tshark's fields of the packets of `pcap` matching `filter`, one Vec per
/// packet (a field several layers have: its values joined by ',').
fn tshark(pcap: &str, decode: &[&str], filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let mut c = Command::new("tshark");
    c.args(["-n", "-r", pcap]);
    for d in decode {
        c.args(["-d", d]);
    }
    c.args(["-Y", filter, "-T", "fields", "-E", "separator=;"]);
    for f in fields {
        c.args(["-e", f]);
    }
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("tshark: {e} (scripts/setup.sh installs it)"));
    assert!(
        out.status.success(),
        "tshark -Y {filter:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split(';').map(str::to_string).collect())
        .collect()
}

#[test]
fn tunnel_lab() {
    let lab = Lab::up(
        env!("CARGO_BIN_EXE_lbd"),
        "tunnel",
        Duration::from_secs(300),
    );
    let be = remotes(&lab);
    assert_eq!(
        be.values().map(|r| r.method.as_str()).collect::<Vec<_>>(),
        ["vxlan", "vxlan", "ipip", "gue"],
        "{be:?}"
    );
    // Each remote backend answers a hand-crafted encapsulated SYN from the
    // VIP, straight to the client: the lab is right before lbd is in it.
    for n in ["5", "6", "7", "8"] {
        lab.ok(&["decap-selftest", n]);
    }
    // --json: the final counters, to account for every frame.
    lab.ok(&["lbd-start", "--json"]);

    vxlan_weights(&lab, &be);
    downloads_drain_and_the_wire(&lab, &be);
    failover_through_the_tunnel(&lab, &be);
    dr_and_vxlan_on_one_vip(&lab, &be);
    ipip_and_gue(&lab, &be);
    path_mtu(&lab, &be);

    lab.ok(&["lbd-stop"]);
    let report = lab.report();
    let missing = unaccounted(report["workers"].as_array().unwrap());
    assert!(missing.is_empty(), "frames no counter took: {missing:?}");
}

/// Two VXLAN backends with weights 1 and 3 take 400 new connections in
/// that proportion; their checks go via the VIP (through the tunnel, the
/// only way to the VIP on them) and pass; lbctl shows how each is reached.
fn vxlan_weights(lab: &Lab, be: &BTreeMap<String, Remote>) {
    let (be5, be6) = (&be["be5"], &be["be6"]);
    state(lab, &["be5:1", "be6:3"], &[&be5.addr, &be6.addr]);
    for r in [be5, be6] {
        let h = lab.health_on(VIP, &r.addr);
        assert_eq!(
            h["via"], "vip",
            "a tunnelled backend's auto check is via the VIP: {h}"
        );
        assert_eq!(h["vip_path"]["ok"], true, "{h}");
    }
    let list = lab.ok(&["lbctl", "backend", "list", VIP]);
    for r in [be5, be6] {
        let fwd = format!("vxlan:{}", r.vni);
        assert!(
            list.lines()
                .any(|l| l.contains(&r.addr) && l.contains(&fwd)),
            "backend list shows {} as {fwd}:\n{list}",
            r.addr
        );
    }

    let before = counter(lab, "lb_worker_encapsulated_total");
    let t = tally(&lab.ok(&["requests", "400"]));
    let encapsulated = counter(lab, "lb_worker_encapsulated_total") - before;
    eprintln!("vxlan weights 1:3: {t:?}, {encapsulated} packets encapsulated");
    assert_eq!(t.get("FAILED"), None, "{t:?}");
    let on5 = t.get("be5").copied().unwrap_or(0);
    let on6 = t.get("be6").copied().unwrap_or(0);
    assert_eq!(on5 + on6, 400, "only be5 and be6 serve: {t:?}");
    // Want 100 on be5: 30 is 3.5 standard deviations of a binomial.
    assert!(
        (70..=130).contains(&on5),
        "be5 {on5}, be6 {on6} of 400, want 100:300"
    );
    // A request is at least a SYN, an ACK with the request and a FIN.
    assert!(
        encapsulated >= 3 * 400,
        "{encapsulated} packets encapsulated for 400 requests"
    );
}

/// 20 long downloads through be5 and be6 while be5 is drained: all
/// complete, the drained one keeps its downloads and takes no new
/// connection. A capture on lbd's port meanwhile: client-to-VIP packets in,
/// each leaving again as VXLAN from lbd's address to its backend (the
/// backend's VNI, its vxlan device's MAC inside, the router's MAC
/// outside), and not one packet from the VIP to the client.
fn downloads_drain_and_the_wire(lab: &Lab, be: &BTreeMap<String, Remote>) {
    let (be5, be6) = (&be["be5"], &be["be6"]);
    state(lab, &["be5:1", "be6:1"], &[&be5.addr, &be6.addr]);
    let router_mac = lab
        .ok(&["exec", "router", "cat", "/sys/class/net/eth0/address"])
        .trim()
        .to_string();
    // The bridge's side of lbd's veth: every frame lbd's port sends or
    // receives, whatever way DPDK's af_packet transmits (a capture on
    // data0 itself may not see frames sent bypassing the qdisc).
    let pcap = format!("{}/port.pcap", lab.dir().display());
    let cap = capture(lab, "sw", "p-lb", &pcap, &[]);

    let running = lab.spawn_downloads(20, "1M");
    // Every download answered (its backend chosen) before the drain.
    std::thread::sleep(Duration::from_secs(1));
    lab.ok(&["lbctl", "backend", "drain", VIP, &be5.addr]);
    std::thread::sleep(Duration::from_millis(300));
    let t = tally(&lab.ok(&["requests", "100"]));
    let done = downloads(running);
    stop(cap);
    lab.ok(&["lbctl", "backend", "undrain", VIP, &be5.addr]);
    eprintln!("drain: new connections {t:?}");

    assert_eq!(done.len(), 20);
    let broken: Vec<&Download> = done.iter().filter(|d| !complete(d)).collect();
    assert!(
        broken.is_empty(),
        "downloads through VXLAN broke: {broken:?}"
    );
    let on_drained = done.iter().filter(|d| d.backend == "be5").count();
    assert!(
        on_drained > 0 && on_drained < 20,
        "downloads on be5 (drained mid-way) and be6: {done:?}"
    );
    assert_eq!(t.get("FAILED"), None, "{t:?}");
    assert_eq!(
        t.get("be5"),
        None,
        "the drained be5 took new connections: {t:?}"
    );

    // The wire. Unencapsulated: client to VIP only.
    let vxlan = ["udp.port==4789,vxlan"];
    let plain = |filter: &str| {
        tshark(
            &pcap,
            &vxlan,
            &format!("!vxlan && ({filter})"),
            &["frame.number"],
        )
        .len()
    };
    let to_vip = plain(&format!(
        "ip.src=={CLIENT} && ip.dst=={VIP_ADDR} && tcp.dstport==80"
    ));
    let from_vip = plain(&format!("ip.src=={VIP_ADDR} && ip.dst=={CLIENT}"));
    assert!(
        to_vip > 1000,
        "client packets to the VIP on lbd's port: {to_vip}"
    );
    assert_eq!(from_vip, 0, "replies from the VIP crossed lbd's port");
    // Encapsulated: what lbd sent.
    let frames = tshark(
        &pcap,
        &vxlan,
        "vxlan",
        &["eth.dst", "ip.src", "ip.dst", "udp.dstport", "vxlan.vni"],
    );
    let mut per_backend: BTreeMap<String, usize> = BTreeMap::new();
    let mut from_client = 0;
    for f in &frames {
        let eth: Vec<&str> = f[0].split(',').collect();
        let src: Vec<&str> = f[1].split(',').collect();
        let dst: Vec<&str> = f[2].split(',').collect();
        let port: Vec<&str> = f[3].split(',').collect();
        assert!(
            eth.len() == 2 && src.len() == 2 && dst.len() == 2,
            "VXLAN frame {f:?}"
        );
        let r = [be5, be6]
            .into_iter()
            .find(|r| r.addr == dst[0])
            .unwrap_or_else(|| panic!("VXLAN to {} (not be5, be6): {f:?}", dst[0]));
        assert_eq!(src[0], LOCAL, "outer source: {f:?}");
        assert_eq!(
            eth[0], router_mac,
            "outer Ethernet destination (the route's gateway): {f:?}"
        );
        assert_eq!(port[0], "4789", "outer UDP port: {f:?}");
        assert_eq!(f[4], r.vni.to_string(), "VNI of {}: {f:?}", r.name);
        assert_eq!(
            eth[1], r.mac,
            "inner Ethernet destination of {}: {f:?}",
            r.name
        );
        assert_eq!(dst[1], VIP_ADDR, "inner destination: {f:?}");
        // Inside: the client's packets, and lbd's own checks via the VIP.
        assert!(src[1] == CLIENT || src[1] == LOCAL, "inner source: {f:?}");
        from_client += usize::from(src[1] == CLIENT);
        *per_backend.entry(r.name.clone()).or_default() += 1;
    }
    eprintln!(
        "the wire: {to_vip} client packets to the VIP, {from_vip} from it, \
         {from_client} of theirs out in VXLAN ({per_backend:?} with checks)"
    );
    // Each client packet in went out again, encapsulated (a few may be
    // outside the capture's window at either end).
    assert!(
        from_client as f64 >= 0.95 * to_vip as f64 && from_client <= to_vip + 50,
        "{to_vip} client packets in, {from_client} encapsulated out: {per_backend:?}"
    );
    assert!(
        per_backend.len() == 2,
        "VXLAN to both backends: {per_backend:?}"
    );
}

/// nginx stops on be5: its check via the VIP, through the tunnel, fails and
/// takes it down; every new connection goes to be6. Back up, then be5's
/// tunnel device goes down with its server still running: the VIP path
/// fails while its own address answers, and it is down again.
fn failover_through_the_tunnel(lab: &Lab, be: &BTreeMap<String, Remote>) {
    let (be5, be6) = (&be["be5"], &be["be6"]);
    let check = lab.check();
    let limit = check.slowest_detection() + Duration::from_secs(2);
    lab.ok(&["nginx-stop", "5"]);
    wait_until("be5 down after its server stopped", limit, || {
        lab.health_on(VIP, &be5.addr)["health"] == "unhealthy"
    });
    let t = tally(&lab.ok(&["requests", "100"]));
    assert_eq!(t.get("FAILED"), None, "{t:?}");
    assert_eq!(
        t.get("be6"),
        Some(&100),
        "all on be6 while be5 is down: {t:?}"
    );
    lab.ok(&["nginx-start", "5"]);
    lab.wait_passing(Some(VIP), &[&be5.addr, &be6.addr], Duration::from_secs(20));

    lab.ok(&["exec", "be5", "ip", "link", "set", "vx0", "down"]);
    wait_until("be5 down without its tunnel", limit, || {
        lab.health_on(VIP, &be5.addr)["health"] == "unhealthy"
    });
    let h = lab.health_on(VIP, &be5.addr);
    assert_eq!(h["vip_path"]["ok"], false, "{h}");
    assert_eq!(
        h["real"]["ok"], true,
        "be5's server answers on its own address: {h}"
    );
    let t = tally(&lab.ok(&["requests", "50"]));
    assert_eq!(t.get("be6"), Some(&50), "{t:?}");
    lab.ok(&["exec", "be5", "ip", "link", "set", "vx0", "up"]);
    lab.wait_passing(Some(VIP), &[&be5.addr, &be6.addr], Duration::from_secs(20));
}

/// One VIP, a DR backend on the segment (be1) and two VXLAN backends
/// behind the router: each takes its share.
fn dr_and_vxlan_on_one_vip(lab: &Lab, be: &BTreeMap<String, Remote>) {
    let (be5, be6) = (&be["be5"], &be["be6"]);
    state(
        lab,
        &["be1:1", "be5:1", "be6:1"],
        &[BE1, &be5.addr, &be6.addr],
    );
    let list = lab.ok(&["lbctl", "backend", "list", VIP]);
    assert!(
        list.lines().any(|l| l.contains(BE1) && l.contains(" dr ")),
        "be1 shows as dr:\n{list}"
    );
    let t = tally(&lab.ok(&["requests", "300"]));
    eprintln!("dr + vxlan: {t:?}");
    assert_eq!(t.get("FAILED"), None, "{t:?}");
    for name in ["be1", "be5", "be6"] {
        let n = t.get(name).copied().unwrap_or(0);
        assert!(n >= 60, "{name}: {n} of 300, want about 100: {t:?}");
    }
    assert_eq!(t.values().sum::<usize>(), 300, "{t:?}");
}

/// "KIND N ..." of `lab.sh decap-counts` as a map.
fn decap_counts(lab: &Lab, n: &str) -> BTreeMap<String, u64> {
    let line = lab.ok(&["decap-counts", n]);
    let f: Vec<&str> = line.split_whitespace().collect();
    f.chunks(2)
        .map(|c| (c[0].to_string(), c[1].parse().unwrap()))
        .collect()
}

/// be7 (IPIP) and be8 (GUE, a port that is not the default) through the
/// userspace decapsulator: checks pass, requests through the VIP are served
/// by both, and the decapsulators took the packets (none malformed).
fn ipip_and_gue(lab: &Lab, be: &BTreeMap<String, Remote>) {
    let (be7, be8) = (&be["be7"], &be["be8"]);
    state(lab, &["be7:1", "be8:1"], &[&be7.addr, &be8.addr]);
    let list = lab.ok(&["lbctl", "backend", "list", VIP]);
    let gue = format!("gue:{}", be8.port);
    assert!(
        list.lines()
            .any(|l| l.contains(&be7.addr) && l.contains("ipip"))
            && list
                .lines()
                .any(|l| l.contains(&be8.addr) && l.contains(&gue)),
        "backend list shows be7 as ipip, be8 as {gue}:\n{list}"
    );
    let (ipip0, gue0) = (decap_counts(lab, "7"), decap_counts(lab, "8"));
    let t = tally(&lab.ok(&["requests", "200"]));
    let (ipip1, gue1) = (decap_counts(lab, "7"), decap_counts(lab, "8"));
    eprintln!("ipip + gue: {t:?}; be7 {ipip1:?}; be8 {gue1:?}");
    assert_eq!(t.get("FAILED"), None, "{t:?}");
    for name in ["be7", "be8"] {
        let n = t.get(name).copied().unwrap_or(0);
        assert!(n >= 50, "{name}: {n} of 200: {t:?}");
    }
    let grew = |a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>, k: &str| b[k] - a[k];
    let on7 = t.get("be7").copied().unwrap_or(0) as u64;
    let on8 = t.get("be8").copied().unwrap_or(0) as u64;
    assert!(
        grew(&ipip0, &ipip1, "ipip4") >= 3 * on7,
        "be7's decapsulator: {ipip1:?}"
    );
    assert!(
        grew(&gue0, &gue1, "gue4") >= 3 * on8,
        "be8's decapsulator: {gue1:?}"
    );
    for (name, c) in [("be7", &ipip1), ("be8", &gue1)] {
        assert_eq!(c["bad"], 0, "{name}: malformed tunnel packets: {c:?}");
        assert_eq!(c["write_errors"], 0, "{name}: {c:?}");
    }
}

/// The client, on a 1500-byte link, PUTs 8 MiB through each tunnel. Its
/// full-sized segments do not fit once encapsulated (lbd's --mtu is the
/// default 1500): lbd answers them with ICMP frag-needed giving 1500 less
/// the tunnel's overhead, the client's TCP lowers its segments, and the
/// whole body arrives. lbd's count of too-big messages sent is the count
/// the client saw.
fn path_mtu(lab: &Lab, be: &BTreeMap<String, Remote>) {
    for (name, overhead) in [("be5", 50), ("be7", 20), ("be8", 28)] {
        let r = &be[name];
        state(lab, &[name], &[&r.addr]);
        // Forget what an earlier case taught the client about the path.
        lab.ok(&["exec", "client", "ip", "route", "flush", "cache"]);
        let pcap = format!("{}/client-{name}.pcap", lab.dir().display());
        let cap = capture(lab, "client", "eth0", &pcap, &["icmp"]);
        let before = counter(lab, "lb_worker_too_big_sent_total");
        let upload = format!("{}.bin", r.method);
        let out = lab.ok(&["upload", "8", &upload]);
        let after = counter(lab, "lb_worker_too_big_sent_total");
        stop(cap);

        let f: Vec<&str> = out.split_whitespace().collect();
        assert!(
            f.len() == 4 && (f[0] == "201" || f[0] == "204") && f[1] == "8388608" && f[2] == name,
            "PUT of 8 MiB through {} to {name}: {out:?} (drops {:?})",
            r.method,
            lab.drops()
        );
        let stored = lab.dir().join(name).join("upload").join(&upload);
        let got = Command::new("sha256sum").arg(&stored).output().unwrap();
        let got = String::from_utf8_lossy(&got.stdout);
        assert_eq!(
            got.split_whitespace().next(),
            Some(f[3]),
            "{} holds what was sent",
            stored.display()
        );

        let icmp = tshark(
            &pcap,
            &[],
            "icmp.type==3 && icmp.code==4",
            &["icmp.mtu", "ip.dst"],
        );
        let sent = after - before;
        eprintln!(
            "{name} ({}): upload {out:?}, {sent} too-big sent, seen {icmp:?}",
            r.method
        );
        assert!(
            sent > 0,
            "{name} ({}): no too-big sent (drops {:?})",
            r.method,
            lab.drops()
        );
        assert_eq!(
            icmp.len() as u64,
            sent,
            "{name} ({}): lbd counted {sent} too-big, the client saw {icmp:?}",
            r.method
        );
        let want = (1500 - overhead).to_string();
        assert!(
            icmp.iter()
                .all(|m| m[0] == want && m[1].split(',').next() == Some(CLIENT)),
            "{name} ({}): frag-needed MTU, want {want}: {icmp:?}",
            r.method
        );
    }
}
