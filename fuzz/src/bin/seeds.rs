//! `fuzz-seeds OUT_DIR`: the seed corpus of every target, in
//! `OUT_DIR/TARGET/`: the frames of the golden pcaps (alone and four at a
//! time, from the port and from the host), the example and fixture state
//! files, call sequences that build a working configuration, and answers
//! of checks and agents.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use control::grpc::Api;
use control::hub::Control;
use lb_fuzz::{encode, fixture_state, join, Record, FIXTURE, METHODS, PORT_MAC};
use lb_proto::v1 as pb;
use lb_proto::v1::load_balancer_server::LoadBalancer;
use prost::Message;

fn main() -> Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .context("usage: fuzz-seeds OUT_DIR")?,
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let golden = root.join("control/tests/golden");
    let mut frames = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&golden)
        .with_context(|| format!("reading {}", golden.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pcap"))
        .collect();
    names.sort();
    for p in &names {
        let host = p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("host-in"));
        for f in pcap_frames(&std::fs::read(p).with_context(|| format!("reading {}", p.display()))?)
            .with_context(|| p.display().to_string())?
        {
            frames.push((host, f));
        }
    }
    if frames.is_empty() {
        bail!("no frames in {}", golden.display());
    }
    let mut packets = Vec::new();
    let mut forward = Vec::new();
    for (host, f) in &frames {
        packets.push(f.clone());
        let one = Record {
            from_kernel: *host,
            advance: 0,
            frame: f,
        };
        forward.push(encode(&[one]));
    }
    for group in frames.chunks(4) {
        let records: Vec<Record<'_>> = group
            .iter()
            .map(|(host, f)| Record {
                from_kernel: *host,
                advance: 1,
                frame: f,
            })
            .collect();
        forward.push(encode(&records));
    }
    write(&out.join("packets"), &packets)?;
    write(&out.join("forward"), &forward)?;

    let example = std::fs::read(root.join("control/lb.example.toml")).context("the example")?;
    write(
        &out.join("state_file"),
        &[example, FIXTURE.as_bytes().to_vec()],
    )?;
    write(&out.join("grpc_api"), &calls()?)?;
    let answers: Vec<Vec<u8>> = [
        "75%\n",
        "drain 50%\n",
        "maint\n",
        "up, ready maxconn:30\r\n",
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"weight_percent\": 60}",
        "HTTP/1.0 200 OK\r\n\r\n{\"weight_percent\": 12.5, \"state\": \"drain\"}",
        "HTTP/1.0 503 Busy\r\n\r\n{}",
    ]
    .iter()
    .map(|a| a.as_bytes().to_vec())
    .collect();
    write(&out.join("health_replies"), &answers)?;
    Ok(())
}

/// The records of a classic pcap file (either byte order, micro- or
/// nanosecond stamps).
fn pcap_frames(b: &[u8]) -> Result<Vec<Vec<u8>>> {
    let magic = b.get(..4).context("no pcap header")?;
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => bail!("not a pcap file"),
    };
    let u32_at = |at: usize| -> Result<usize> {
        let w: [u8; 4] = b.get(at..at + 4).context("cut short")?.try_into()?;
        Ok(usize::try_from(if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        })?)
    };
    let mut at = 24;
    let mut out = Vec::new();
    while at < b.len() {
        let len = u32_at(at + 8)?;
        let data = b
            .get(at + 16..at + 16 + len)
            .context("a record cut short")?;
        out.push(data.to_vec());
        at += 16 + len;
    }
    Ok(out)
}

fn vip(address: &str, port: u32, protocol: pb::Protocol) -> pb::VipKey {
    pb::VipKey {
        address: address.into(),
        port,
        protocol: protocol.into(),
    }
}

/// Call sequences a controller makes: create, add, change, set, apply
/// (TOML and typed), read. The typed configuration is the fixture's, as
/// Export gives it.
fn calls() -> Result<Vec<Vec<u8>>> {
    let tag = |name: &str| -> u8 {
        let i = METHODS.iter().position(|m| *m == name).expect("a method");
        u8::try_from(i).expect("few methods")
    };
    let key = vip("198.51.100.10", 443, pb::Protocol::Tcp);
    let create = pb::CreateVipRequest {
        vip: Some(key.clone()),
        table_size: 1009,
        ..Default::default()
    };
    let add = |a: &str| pb::AddBackendRequest {
        vip: Some(key.clone()),
        address: a.into(),
        weight: Some(2),
        mac: "02:00:00:00:00:11".into(),
        ..Default::default()
    };
    let update = pb::UpdateBackendRequest {
        backend: Some(pb::BackendKey {
            vip: Some(key.clone()),
            address: "192.0.2.11".into(),
        }),
        weight: Some(5),
        drain: Some(true),
        ..Default::default()
    };
    let set = pb::SetBackendsRequest {
        vip: Some(key.clone()),
        backends: vec![pb::BackendConfig {
            address: "192.0.2.13".into(),
            weight: Some(3),
            ..Default::default()
        }],
        ..Default::default()
    };
    let toml = pb::ApplyRequest {
        toml: FIXTURE.into(),
        ..Default::default()
    };
    let typed = pb::ApplyRequest {
        config: export_of_fixture()?.config,
        ..Default::default()
    };
    let empty = pb::Empty {}.encode_to_vec();
    let building = [
        (tag("CreateVip"), create.encode_to_vec()),
        (tag("AddBackend"), add("192.0.2.11").encode_to_vec()),
        (tag("AddBackend"), add("192.0.2.12").encode_to_vec()),
        (tag("UpdateBackend"), update.encode_to_vec()),
        (tag("SetBackends"), set.encode_to_vec()),
        (tag("GetVip"), key.encode_to_vec()),
        (tag("ListHealth"), empty.clone()),
        (tag("DeleteVip"), key.encode_to_vec()),
    ];
    let applying = [
        (tag("Apply"), toml.encode_to_vec()),
        (tag("Export"), empty.clone()),
        (tag("Apply"), typed.encode_to_vec()),
        (tag("GetStats"), empty.clone()),
        (tag("GetInfo"), empty),
    ];
    let as_input = |calls: &[(u8, Vec<u8>)]| {
        let chunks: Vec<(u8, &[u8])> = calls.iter().map(|(t, b)| (*t, &b[..])).collect();
        join(&chunks)
    };
    Ok(vec![as_input(&building), as_input(&applying)])
}

/// Export from a control side running the fixture.
fn export_of_fixture() -> Result<pb::ExportResponse> {
    let control = Control::new(fixture_state(), PORT_MAC, || 0).context("the fixture's hub")?;
    let api = Api {
        control: Arc::new(Mutex::new(control)),
        stats: Arc::from(Vec::new()),
        lcores: Vec::new(),
        port: "seeds".into(),
        eal_args: Vec::new(),
    };
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let r = rt.block_on(api.export(tonic::Request::new(pb::Empty {})))?;
    Ok(r.into_inner())
}

fn write(dir: &Path, seeds: &[Vec<u8>]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (i, s) in seeds.iter().enumerate() {
        let p = dir.join(format!("seed-{i:04}"));
        std::fs::write(&p, s).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
