//! Every unary method of `lb.v1.LoadBalancer` with an empty request and
//! with hostile ones (100 KB strings, NULs, control and odd unicode
//! characters, out-of-range numbers and enum values, broken TOML, unknown
//! fields): each gets one specific status code (never UNKNOWN or INTERNAL),
//! every error message is bounded (`grpc::MAX_MESSAGE`), nothing refused
//! changes the state, and the service goes on serving (grpc.health.v1
//! SERVING). In process: the real `grpc::serve` and committer (tests/common).
//! The Python suite (clients/python/tests/test_probe.py) probes a real lbd
//! the same way. The requests live in `lb_testkit::probe`, which `lbabuse`
//! (bench/harness.sh --abuse) sends too.

mod common;
use common::{hub, Lbd};

use control::grpc::MAX_MESSAGE;
use lb_proto::v1 as pb;
use lb_testkit::probe::{empty_requests, hostile_requests, Req, SETUP};
use prost::Message;
use tonic::Code;

/// The unary methods of the service, from the descriptors lbd serves.
fn unary_methods() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
    let service = set
        .file
        .iter()
        .flat_map(|f| &f.service)
        .find(|s| s.name() == "LoadBalancer")
        .unwrap();
    let mut m: Vec<String> = service
        .method
        .iter()
        .filter(|m| !m.server_streaming() && !m.client_streaming())
        .map(|m| m.name().to_string())
        .collect();
    m.sort();
    m
}

#[test]
fn the_probe_covers_every_unary_method() {
    let unary = unary_methods();
    assert_eq!(unary.len(), 14, "{unary:?}");
    for cases in [empty_requests(), hostile_requests()] {
        let mut covered: Vec<String> = cases.iter().map(|c| c.0.method().to_string()).collect();
        covered.sort();
        covered.dedup();
        assert_eq!(covered, unary);
    }
}

#[tokio::test]
async fn empty_and_hostile_requests_get_specific_codes_and_the_service_serves_on() {
    let lbd = Lbd::start("probe", hub(), true).await;
    let mut api = lbd.api();
    api.apply(pb::ApplyRequest {
        toml: SETUP.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let before = api.list_vips(pb::Empty {}).await.unwrap().into_inner();
    assert_eq!(before.vips.len(), 1);
    let generation = lbd.hub().generation();

    let mut wrong = Vec::new();
    for (req, want, part) in empty_requests().into_iter().chain(hostile_requests()) {
        let method = req.method();
        let (code, message) = match req.clone().call(&lbd.channel).await {
            Ok(()) => (Code::Ok, String::new()),
            Err(s) => (s.code(), s.message().to_string()),
        };
        let shown: String = match &req {
            Req::CreateVip(r) => format!("{r:?}"),
            Req::AddBackend(r) => format!("{r:?}"),
            Req::UpdateBackend(r) => format!("{r:?}"),
            Req::Apply(r) => format!("{r:?}"),
            _ => String::new(),
        }
        .chars()
        .take(160)
        .collect();
        if code != want || !message.contains(part) {
            let m: String = message.chars().take(200).collect();
            wrong.push(format!(
                "{method}({shown}): {code:?} {m:?}, expected {want:?} {part:?}"
            ));
        }
        if matches!(code, Code::Unknown | Code::Internal) {
            wrong.push(format!("{method}({shown}): {code:?}"));
        }
        // The cut message and its "... (N more bytes)".
        if message.len() > MAX_MESSAGE + 64 {
            wrong.push(format!(
                "{method}({shown}): a message of {} bytes",
                message.len()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Nothing refused (nor a dry run) changed anything.
    assert_eq!(
        api.list_vips(pb::Empty {}).await.unwrap().into_inner(),
        before
    );
    assert_eq!(lbd.hub().generation(), generation);
    // It serves on.
    let mut health = tonic_health::pb::health_client::HealthClient::new(lbd.channel.clone());
    for service in ["", "lb.v1.LoadBalancer"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    let info = api.get_info(pb::Empty {}).await.unwrap().into_inner();
    assert_eq!(info.port, "net_null0");
    // The empty configuration applied for real removes everything.
    let r = api
        .apply(pb::ApplyRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.changes.len(), 1, "{r:?}");
    assert!(api
        .list_vips(pb::Empty {})
        .await
        .unwrap()
        .into_inner()
        .vips
        .is_empty());
}
