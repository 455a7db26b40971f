//! Mbuf and burst ownership against real DPDK: everything allocated comes
//! back to the pool (in-use count returns to zero), including packets the
//! driver refuses on transmit. One EAL for this process, shared by its tests;
//! each test has its own pool and its own virtual device.

use lb_testkit::eal;

use std::sync::OnceLock;

use dataplane::dpdk::{Burst, Eal, Fate, Mbuf, Mempool, Port, PortConfig, BURST_SIZE};

fn eal() -> &'static Eal {
    static EAL: OnceLock<&'static Eal> = OnceLock::new();
    EAL.get_or_init(|| {
        let args = eal::eal_args(
            "mbuf",
            "0",
            // net_ring2 is never opened: a closed port leaves the list, and
            // the tests run in parallel.
            &["net_ring0", "net_null0,size=64", "net_ring1", "net_ring2"],
        );
        Eal::init(&args).expect("EAL init")
    })
}

fn pool(name: &str, size: u32) -> &'static Mempool {
    Mempool::create(eal(), name, size, 0, None).expect("pool")
}

fn frame(tag: u8, len: usize, pool: &Mempool) -> Mbuf {
    let mut m = pool.alloc().expect("pool has room");
    assert!(m.extend_from_slice(&vec![tag; len]));
    m
}

#[test]
fn second_eal_init_is_refused_without_touching_dpdk() {
    eal();
    let e = Eal::init(["--no-pci"]).unwrap_err();
    assert!(
        e.to_string().contains("one rte_eal_init per process"),
        "{e}"
    );
}

#[test]
fn mbuf_is_freed_on_drop_and_bytes_round_trip() {
    let p = pool("mb_single", 63);
    let mut m = frame(7, 100, p);
    assert_eq!(m.data(), &[7u8; 100][..]);
    m.data_mut()[0] = 1;
    assert_eq!(m.data()[0], 1);
    assert_eq!(m.pkt_len(), 100);
    assert_eq!(m.segments(), 1);
    assert!(m.truncate_by(40));
    assert_eq!(m.data().len(), 60);
    assert!(!m.truncate_by(61), "cannot trim more than the data");
    assert!(
        !m.extend_from_slice(&vec![0; usize::from(m.tailroom()) + 1]),
        "no room: nothing written"
    );
    assert_eq!(m.data().len(), 60);
    assert_eq!(p.in_use(), 1);
    drop(m);
    assert_eq!(p.in_use(), 0);
}

#[test]
fn exhausted_pool_says_so_and_recovers() {
    let p = pool("mb_exhaust", 31);
    let held: Vec<Mbuf> = std::iter::from_fn(|| p.alloc()).collect();
    assert_eq!(held.len(), 31);
    assert!(p.alloc().is_none());
    let mut b = Burst::new();
    assert!(
        !p.alloc_bulk(&mut b, 4),
        "bulk alloc from an empty pool fails"
    );
    assert!(b.is_empty());
    drop(held);
    assert_eq!(p.in_use(), 0);
    assert!(p.alloc_bulk(&mut b, 4));
    assert_eq!((b.len(), p.in_use()), (4, 4));
    // A generator fills fresh mbufs in place.
    assert!(b.extend_at(1, &[9; 60]));
    assert_eq!(b.data(1), Some(&[9u8; 60][..]));
    assert_eq!(b.data(0), Some(&[][..]));
    assert!(!b.extend_at(4, &[1]), "past the burst: nothing written");
    assert!(
        !b.extend_at(2, &vec![0; 70_000]),
        "no room: nothing written"
    );
    assert_eq!(b.data(2), Some(&[][..]));
    drop(b);
    assert_eq!(p.in_use(), 0);
}

#[test]
fn burst_push_pop_retain_clear() {
    let p = pool("mb_burst", 127);
    let mut b = Burst::new();
    for i in 0..BURST_SIZE {
        b.push(frame(i as u8, 64, p)).expect("room");
    }
    let extra = b
        .push(frame(99, 64, p))
        .expect_err("a full burst gives the packet back");
    drop(extra);
    assert_eq!(p.in_use(), BURST_SIZE as u32);

    // Keep the even tags, rewriting them; the odd ones are freed.
    let freed = b.retain_mut(|d| {
        let keep = d[0] % 2 == 0;
        if keep {
            d[1] = 0xee;
        }
        keep.then_some(if d[0] == 0 { 10 } else { d.len() })
    });
    assert_eq!(freed, BURST_SIZE / 2);
    assert_eq!(b.len(), BURST_SIZE / 2);
    assert_eq!(p.in_use(), (BURST_SIZE / 2) as u32);
    assert_eq!(
        b.len_of(0),
        Some(10),
        "kept packets are cut to the length asked for"
    );
    assert_eq!(b.len_of(1), Some(64));
    for i in 0..b.len() {
        let d = b.data(i).unwrap();
        assert_eq!(
            (d[0], d[1]),
            ((2 * i) as u8, 0xee),
            "order kept, rewrite visible"
        );
    }
    assert!(b.data(b.len()).is_none());
    b.data_mut(0).unwrap()[2] = 5;
    assert_eq!(b.data(0).unwrap()[2], 5);

    let last = b.pop().unwrap();
    assert_eq!(last.data()[0], (BURST_SIZE - 2) as u8);
    drop(last);
    b.clear();
    assert!(b.is_empty());
    assert!(b.pop().is_none());
    assert_eq!(p.in_use(), 0);
}

#[test]
fn ring_tx_refusal_is_freed_and_counted() {
    let p = pool("mb_ring", 4095);
    let mut port =
        Port::open(eal(), "net_ring0", &PortConfig::default(), p).expect("open net_ring0");
    port.start().unwrap();
    assert!(port.link().expect("link").up);
    let mut q = port.queue(0).unwrap();
    assert!(port.queue(0).is_err(), "a queue has one owner");

    // TX without RX until the ring is full: the rest must be freed and counted.
    let (mut sent, mut dropped, mut offered) = (0, 0, 0);
    for round in 0..100u32 {
        let mut b = Burst::new();
        for i in 0..BURST_SIZE {
            b.push(frame((round as usize * BURST_SIZE + i) as u8, 60, p))
                .unwrap();
        }
        offered += BURST_SIZE;
        let out = q.tx(&mut b);
        assert!(b.is_empty(), "tx leaves the burst empty");
        assert_eq!(out.sent + out.dropped, BURST_SIZE);
        sent += out.sent;
        dropped += out.dropped;
    }
    assert!(
        dropped > 0,
        "the ring must fill up ({offered} offered, {sent} sent)"
    );
    assert_eq!(sent + dropped, offered);
    assert_eq!(
        p.in_use() as usize,
        sent,
        "only what the ring holds is in use"
    );

    // Everything sent comes back, in order.
    let mut received = 0;
    let mut b = Burst::new();
    loop {
        let n = q.rx(&mut b);
        if n == 0 {
            break;
        }
        for i in 0..n {
            assert_eq!(b.data(i).unwrap()[0], (received + i) as u8);
        }
        received += n;
        b.clear();
    }
    assert_eq!(received, sent);
    assert_eq!(p.in_use(), 0, "no leak after draining the ring");
    drop(q);
    port.stop().unwrap();
    assert!(port.queue(0).is_err(), "no queue handle on a stopped port");
}

#[test]
fn null_device_bursts_are_full_and_freed() {
    let p = pool("mb_null", 1023);
    let mut port =
        Port::open(eal(), "net_null0", &PortConfig::default(), p).expect("open net_null0");
    port.start().unwrap();
    let mut q = port.queue(0).unwrap();
    let mut b = Burst::new();
    for _ in 0..1000 {
        assert_eq!(q.rx(&mut b), BURST_SIZE, "net_null always fills a burst");
        assert_eq!(b.data(0).unwrap().len(), 64);
        let out = q.tx(&mut b);
        assert_eq!(
            (out.sent, out.dropped),
            (BURST_SIZE, 0),
            "net_null takes everything"
        );
    }
    assert_eq!(p.in_use(), 0);
    // RX into a burst that already holds packets only fills the free space.
    assert_eq!(q.rx(&mut b), BURST_SIZE);
    assert_eq!(q.rx(&mut b), 0);
    b.retain_mut(|_| None);
    assert_eq!(p.in_use(), 0);
}

#[test]
fn port_errors_name_the_problem() {
    let p = pool("mb_errors", 255);
    let e = Port::open(eal(), "net_nonexistent0", &PortConfig::default(), p).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("net_nonexistent0") && msg.contains("net_ring2"),
        "{msg}"
    );
    let cfg = PortConfig {
        queues: 0,
        ..PortConfig::default()
    };
    let e = Port::open(eal(), "net_ring1", &cfg, p).unwrap_err();
    assert!(e.to_string().contains("queue pairs"), "{e}");
    let port = Port::open(eal(), "net_ring1", &PortConfig::default(), p).unwrap();
    assert!(
        port.queue(0).is_err(),
        "queues only exist once the port is started"
    );
    let xstats = port.xstats().expect("xstats");
    assert!(
        xstats.iter().any(|(n, _)| n == "rx_good_packets"),
        "{xstats:?}"
    );
}

#[test]
fn triage_sends_diverts_and_drops() {
    let p = pool("mb_triage", 127);
    let mut b = Burst::new();
    for i in 0..12u8 {
        b.push(frame(i, 64, p)).unwrap();
    }
    let mut diverted = Burst::new();
    let dropped = b.triage(&mut diverted, |d| match d[0] % 3 {
        0 => Fate::Send(d.len()),
        1 => Fate::Divert,
        _ => Fate::Drop,
    });
    assert_eq!((b.len(), diverted.len(), dropped), (4, 4, 4));
    assert_eq!(b.data(1).unwrap()[0], 3, "sent ones keep their order");
    assert_eq!(diverted.data(1).unwrap()[0], 4, "diverted ones too");
    assert_eq!(p.in_use(), 8, "dropped ones were freed");
    // A full divert burst cannot take more: the packet is freed and counted.
    let mut full = Burst::new();
    for i in 0..BURST_SIZE {
        full.push(frame(i as u8, 64, p)).unwrap();
    }
    assert_eq!(b.triage(&mut full, |_| Fate::Divert), 4);
    drop((b, diverted, full));
    assert_eq!(p.in_use(), 0);
}

/// A frame grown at the front in triage (a tunnel's headers) is what the
/// mbuf then holds: data offset, data and packet lengths follow; a cut
/// after growing counts from the new start; no room, no growth.
#[test]
fn triage_takes_what_a_frame_grew_into_its_headroom() {
    let p = pool("mb_grow", 63);
    let mut b = Burst::new();
    b.push(frame(7, 100, p)).unwrap();
    b.push(frame(8, 100, p)).unwrap();
    let head = b.data(0).unwrap().as_ptr() as usize;
    let mut unused = Burst::new();
    b.triage(&mut unused, |f| {
        let tag = f[0];
        let room = f.headroom();
        assert!(room >= 64, "DPDK leaves RTE_PKTMBUF_HEADROOM: {room}");
        assert!(f.prepend(50));
        f[..50].fill(0xee);
        assert!(!f.prepend(room), "never beyond the headroom");
        if tag == 8 {
            return Fate::Send(120);
        }
        Fate::Send(f.len())
    });
    let d = b.data(0).unwrap();
    assert_eq!(d.len(), 150);
    assert_eq!(
        d.as_ptr() as usize,
        head - 50,
        "the data starts 50 bytes earlier"
    );
    assert!(d[..50].iter().all(|&x| x == 0xee));
    assert_eq!(d[50], 7, "the original frame follows");
    assert_eq!(b.pkt_len_of(0), Some(150));
    assert_eq!(b.data(1).unwrap().len(), 120, "cut from the new start");
    assert_eq!(b.data(1).unwrap()[50], 8);
    assert_eq!(b.pkt_len_of(1), Some(120));
    drop(b);
    assert_eq!(p.in_use(), 0);
}
