//! The gRPC API's request handling, from the decoded request on: a
//! sequence of up to 16 calls (a chunk's tag picks the method, its bytes
//! are the protobuf request, as tonic would decode them) against a fresh
//! `lbd` control side, so conversions, validation, changes and the
//! snapshots they publish all meet arbitrary input. Invariants: no panic;
//! every refusal has a specific code (never UNKNOWN or INTERNAL) and a
//! bounded message; after the calls, Export's TOML loads back to the same
//! state (what the state file and `lbctl apply` rely on).

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};

use crate::{chunks, PORT_MAC};
use control::config::Config;
use control::grpc::{Api, MAX_MESSAGE};
use control::hub::Control;
use control::state::DesiredState;
use lb_proto::v1 as pb;
use lb_proto::v1::load_balancer_server::LoadBalancer;
use prost::Message;
use tonic::{Code, Request, Status};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

/// Decode `bytes` as `M`; `None` where tonic would refuse it before the
/// handler runs.
fn req<M: Message + Default>(bytes: &[u8]) -> Option<Request<M>> {
    M::decode(bytes).ok().map(Request::new)
}

/// Call method `tag` (of [`crate::METHODS`]) with `bytes`.
async fn call(api: &Api, tag: u8, bytes: &[u8]) -> Option<Result<(), Status>> {
    fn done<T>(r: Result<T, Status>) -> Option<Result<(), Status>> {
        Some(r.map(drop))
    }
    match usize::from(tag) % crate::METHODS.len() {
        0 => done(api.create_vip(req::<pb::CreateVipRequest>(bytes)?).await),
        1 => done(api.delete_vip(req::<pb::VipKey>(bytes)?).await),
        2 => done(api.get_vip(req::<pb::VipKey>(bytes)?).await),
        3 => done(api.list_vips(req::<pb::Empty>(bytes)?).await),
        4 => done(api.update_vip(req::<pb::UpdateVipRequest>(bytes)?).await),
        5 => done(api.add_backend(req::<pb::AddBackendRequest>(bytes)?).await),
        6 => done(api.remove_backend(req::<pb::BackendKey>(bytes)?).await),
        7 => done(
            api.update_backend(req::<pb::UpdateBackendRequest>(bytes)?)
                .await,
        ),
        8 => done(api.apply(req::<pb::ApplyRequest>(bytes)?).await),
        9 => done(
            api.set_backends(req::<pb::SetBackendsRequest>(bytes)?)
                .await,
        ),
        10 => done(api.export(req::<pb::Empty>(bytes)?).await),
        11 => done(api.list_health(req::<pb::Empty>(bytes)?).await),
        12 => done(api.get_stats(req::<pb::Empty>(bytes)?).await),
        _ => done(api.get_info(req::<pb::Empty>(bytes)?).await),
    }
}

/// One input of the target.
pub fn run(data: &[u8]) {
    let control = Control::new(DesiredState::default(), PORT_MAC, || 0).expect("an empty hub");
    let api = Api {
        control: Arc::new(Mutex::new(control)),
        stats: Arc::from(Vec::new()),
        lcores: Vec::new(),
        port: "fuzz".into(),
        eal_args: Vec::new(),
    };
    // The committer publishes and acknowledges queued changes, as in lbd.
    let stop = AtomicBool::new(false);
    let calls = async {
        for (tag, bytes) in chunks(data) {
            let Some(Err(status)) = call(&api, tag, bytes).await else {
                continue;
            };
            let method = crate::METHODS[usize::from(tag) % crate::METHODS.len()];
            assert!(
                !matches!(status.code(), Code::Unknown | Code::Internal),
                "{method}: {status:?}"
            );
            assert!(
                status.message().len() <= MAX_MESSAGE + 64,
                "{method}: a message of {} bytes",
                status.message().len()
            );
        }
        let export = api
            .export(Request::new(pb::Empty {}))
            .await
            .expect("export answers")
            .into_inner();
        let config: Config = toml::from_str(&export.toml).expect("the export parses");
        let loaded = DesiredState::from_config(&config).expect("the export loads");
        let c = api.control.lock().expect("not poisoned");
        assert_eq!(loaded.digest(), c.state().digest(), "{}", export.toml);
    };
    runtime().block_on(async {
        tokio::select! {
            () = calls => {}
            () = control::commit::committer(&api.control, &stop) => {
                unreachable!("the committer runs until stopped")
            }
        }
    });
}
