//! Classify + decide + rewrite (and a tunnel's encapsulation) on arbitrary
//! frames against a snapshot with a VIP of every kind, some from the port
//! and some from the host, sharing one flow table as a worker's burst does.
//! Beyond "no panic": the output frame differs from the input only where
//! the action says, outer headers verify by an independent checksum, and
//! the flow table's counters add up.

use crate::{outer_headers_ok, records, snapshot, HEADROOM, PORT_MAC};
use lb_core::flow::{FlowConfig, FlowTable};
use lb_core::forward::{decide_frame, from_kernel, Action, FromKernel};
use lb_core::frame::Frame;
use lb_core::snapshot::Snapshot;

/// One input of the target.
pub fn run(data: &[u8]) {
    let snap = snapshot();
    let mut flows = FlowTable::new(256, FlowConfig::default());
    let mut now = 0u32;
    let mut buf = vec![0u8; HEADROOM + 65536];
    for r in records(data) {
        now += r.advance;
        let orig = r.frame;
        let end = HEADROOM + orig.len();
        buf[HEADROOM..end].copy_from_slice(orig);
        if r.from_kernel {
            let f = &mut buf[HEADROOM..end];
            let got = from_kernel(f, snap, &mut flows, now);
            check_from_kernel(got, orig, f, snap);
        } else {
            let mut frame = Frame::new(&mut buf, HEADROOM, orig.len()).expect("fits the buffer");
            let action = decide_frame(&mut frame, snap, &mut flows, now);
            check_action(action, orig, &frame, snap);
        }
    }
    let s = flows.stats();
    assert!(s.active <= flows.capacity() as u64, "{s:?}");
    assert!(
        s.active + s.expired + s.evicted_confirmed + s.evicted_unconfirmed <= s.inserts,
        "every entry gone was once inserted: {s:?}"
    );
    let pinned: u64 = (0..4096u16)
        .map(|slot| u64::from(flows.backend_flows(slot).active))
        .sum();
    assert_eq!(pinned, s.active, "per-backend counts add up to the table's");
}

fn check_action(action: Action, orig: &[u8], out: &[u8], snap: &Snapshot) {
    match action {
        Action::Forward {
            vip, slot, quic, ..
        } => {
            check_forwarded(orig, out, snap, slot);
            let v = snap.vip(vip).expect("the action's VIP exists");
            assert!(
                quic.is_none() || v.quic.is_some(),
                "QUIC routes only on QUIC VIPs"
            );
        }
        Action::IcmpToBackend { slot, .. } => check_forwarded(orig, out, snap, slot),
        Action::TooBig { len } => {
            assert!(
                len <= out.len() && len >= 14 + 20 + 8,
                "too-big of {len} bytes"
            );
            back_to_sender(orig, out);
        }
        Action::ArpReply | Action::EchoReply => {
            assert_eq!(out.len(), orig.len(), "a reply in place");
            back_to_sender(orig, out);
        }
        Action::NdAdvert { len } => {
            assert!(len <= out.len(), "advert of {len} bytes");
            back_to_sender(orig, out);
        }
        Action::VipConflict { vip_addr, mac } => {
            assert_eq!(out, orig, "a conflict leaves the frame");
            assert!(snap.is_vip_addr(vip_addr) && mac != PORT_MAC);
        }
        Action::ToKernel | Action::Drop(_) | Action::Learned { .. } => {
            assert_eq!(out, orig, "{action:?} leaves the frame");
        }
    }
}

fn check_from_kernel(got: FromKernel, orig: &[u8], out: &[u8], snap: &Snapshot) {
    match got {
        FromKernel::Steered { slot, .. } | FromKernel::Balanced { slot, .. } => {
            let b = snap.backend(slot).expect("the slot exists");
            assert_eq!(Some(&out[..6]), b.mac.as_ref().map(|m| &m.0[..]));
            assert_eq!(&out[6..12], &PORT_MAC.0);
            assert_eq!(&out[12..], &orig[12..], "only Ethernet addresses change");
        }
        FromKernel::Reply => assert_eq!(out.len(), orig.len()),
        FromKernel::Dropped(_) | FromKernel::Unchanged => assert_eq!(out, orig),
    }
}

/// A reply goes back where the frame came from, from our MAC.
fn back_to_sender(orig: &[u8], out: &[u8]) {
    assert_eq!(&out[..6], &orig[6..12], "back to the sender");
    assert_eq!(&out[6..12], &PORT_MAC.0, "from us");
}

/// To backend `slot`: Ethernet addresses rewritten (next hop, us), and for
/// a tunnelled backend the outer headers inserted after the L2 header with
/// the client's IP packet unchanged after them.
fn check_forwarded(orig: &[u8], out: &[u8], snap: &Snapshot, slot: u16) {
    let b = snap.backend(slot).expect("the slot exists");
    let mac = b.mac.expect("forwarded only to a resolved next hop");
    assert_eq!(&out[..6], &mac.0, "to the next hop");
    assert_eq!(&out[6..12], &PORT_MAC.0, "from us");
    let Some(w) = &b.wrap else {
        assert_eq!(
            &out[12..],
            &orig[12..],
            "DR: only Ethernet addresses change"
        );
        return;
    };
    let l2 = if orig[12..14] == [0x81, 0x00] { 18 } else { 14 };
    let inner = out.len() - l2 - w.overhead();
    assert!(
        inner >= 20 && l2 + inner <= orig.len(),
        "inner packet of {inner} bytes"
    );
    assert_eq!(&out[12..l2 - 2], &orig[12..l2 - 2], "the VLAN tag stays");
    assert_eq!(
        &out[l2 + w.overhead()..],
        &orig[l2..l2 + inner],
        "the client's packet, unchanged, after the outer headers"
    );
    // VXLAN's inner Ethernet header sits between UDP and the client's packet.
    let ip_len = if out[l2] >> 4 == 6 { 40 } else { 20 };
    let inner_at = (w.overhead() - ip_len).saturating_sub(8);
    if let Err(e) = outer_headers_ok(&out[l2..], inner_at) {
        panic!("{e}");
    }
}
