//! Every function of the C shim, called for real against EAL with a net_ring
//! port. One test: EAL can be initialised once per process.

#![allow(
    unsafe_code,
    reason = "calls the raw FFI it tests; each block says why"
)]

use std::ffi::{c_char, CString};
use std::ptr;

use dpdk_sys::*;

use lb_testkit::eal;

fn init_eal() {
    let mut args = vec!["shim-test".to_string()];
    args.extend(eal::eal_args("shim", "0", &["net_ring0"]));
    let cargs: Vec<CString> = args
        .iter()
        .map(|a| CString::new(a.as_str()).unwrap())
        .collect();
    let mut argv: Vec<*mut c_char> = cargs.iter().map(|a| a.as_ptr().cast_mut()).collect();
    // SAFETY: argv holds valid C strings that outlive the call (cargs is leaked below).
    let ret = unsafe { rte_eal_init(argv.len() as i32, argv.as_mut_ptr()) };
    assert!(ret >= 0, "rte_eal_init failed: errno {}", unsafe_errno());
    std::mem::forget(cargs);
    std::mem::forget(argv);
}

fn unsafe_errno() -> i32 {
    // SAFETY: reads a thread-local.
    unsafe { lb_rte_errno() }
}

#[test]
fn every_shim_function_works() {
    init_eal();
    let name = CString::new("shim_pool").unwrap();
    // SAFETY: EAL initialised; valid name.
    let mp = unsafe {
        rte_pktmbuf_pool_create(
            name.as_ptr(),
            7,
            0,
            0,
            lb_mbuf_default_buf_size(),
            SOCKET_ID_ANY,
        )
    };
    assert!(!mp.is_null());

    // lb_rte_errno: a second pool with the same name fails with EEXIST.
    // SAFETY: as above.
    let dup = unsafe { rte_pktmbuf_pool_create(name.as_ptr(), 7, 0, 0, 2176, SOCKET_ID_ANY) };
    assert!(dup.is_null());
    assert_eq!(
        unsafe_errno(),
        17,
        "rte_errno after a duplicate pool name should be EEXIST"
    );

    // SAFETY: constant getters.
    unsafe {
        assert_eq!(lb_mbuf_default_buf_size(), 2048 + 128);
        let rss = lb_rss_hf_ip_tcp_udp();
        assert_ne!(rss & (1 << 2), 0, "RTE_ETH_RSS_IPV4 in RSS_IP");
        assert_ne!(rss & (1 << 4), 0, "RTE_ETH_RSS_NONFRAG_IPV4_TCP in RSS_TCP");
        assert_ne!(rss & (1 << 5), 0, "RTE_ETH_RSS_NONFRAG_IPV4_UDP in RSS_UDP");
    }

    // SAFETY: lcore id and TSC are thread-local/register reads.
    unsafe {
        assert_eq!(lb_rte_lcore_id(), 0, "the EAL thread is lcore 0");
        let other = std::thread::spawn(|| lb_rte_lcore_id()).join().unwrap();
        assert_eq!(other, u32::MAX, "a non-EAL thread has LCORE_ID_ANY");
        let a = lb_rte_rdtsc();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = lb_rte_rdtsc();
        assert!(b > a, "TSC advances");
        assert!(
            b - a >= rte_get_tsc_hz() / 1000,
            "2 ms is at least 1 ms of TSC ticks"
        );
    }

    // SAFETY: mp is a valid pool; every mbuf is used while owned and freed once.
    unsafe {
        assert_eq!(rte_mempool_in_use_count(mp), 0);
        let m = lb_rte_pktmbuf_alloc(mp);
        assert!(!m.is_null());
        assert_eq!(lb_rte_pktmbuf_pool(m), mp);
        assert_eq!(lb_rte_pktmbuf_nb_segs(m), 1);
        assert_eq!(lb_rte_pktmbuf_data_len(m), 0);
        let room = lb_rte_pktmbuf_tailroom(m);
        assert_eq!(room, 2048);
        let p = lb_rte_pktmbuf_append(m, 100);
        assert!(!p.is_null());
        assert_eq!(
            p.cast::<u8>(),
            lb_rte_pktmbuf_mtod(m).cast::<u8>(),
            "first append starts at mtod"
        );
        ptr::write_bytes(p.cast::<u8>(), 0xab, 100);
        lb_rte_prefetch0(p.cast());
        assert_eq!(lb_rte_pktmbuf_data_len(m), 100);
        assert_eq!(lb_rte_pktmbuf_pkt_len(m), 100);
        assert_eq!(lb_rte_pktmbuf_tailroom(m), room - 100);
        assert!(
            lb_rte_pktmbuf_append(m, 4000).is_null(),
            "append past the tailroom fails"
        );
        assert_eq!(lb_rte_pktmbuf_trim(m, 10), 0);
        assert_eq!(lb_rte_pktmbuf_data_len(m), 90);
        assert_eq!(lb_rte_pktmbuf_trim(m, 1000), -1, "trim past the data fails");
        assert_eq!(rte_mempool_in_use_count(mp), 1);
        lb_rte_pktmbuf_free(m);
        assert_eq!(rte_mempool_in_use_count(mp), 0);

        let mut bulk = [ptr::null_mut::<rte_mbuf>(); 8];
        assert!(
            lb_rte_pktmbuf_alloc_bulk(mp, bulk.as_mut_ptr(), 8) < 0,
            "7-mbuf pool cannot give 8"
        );
        assert_eq!(
            rte_mempool_in_use_count(mp),
            0,
            "a failed bulk alloc takes nothing"
        );
        assert_eq!(lb_rte_pktmbuf_alloc_bulk(mp, bulk.as_mut_ptr(), 7), 0);
        assert_eq!(rte_mempool_in_use_count(mp), 7);
        assert!(
            lb_rte_pktmbuf_alloc(mp).is_null(),
            "exhausted pool gives NULL"
        );
        rte_pktmbuf_free_bulk(bulk.as_mut_ptr(), 7);
        assert_eq!(rte_mempool_in_use_count(mp), 0);
    }

    // rx/tx burst through net_ring0, whose TX loops back to its RX.
    let ring = CString::new("net_ring0").unwrap();
    let mut port = 0u16;
    // SAFETY: valid name; port is writable; default conf; valid pool.
    unsafe {
        assert_eq!(rte_eth_dev_get_port_by_name(ring.as_ptr(), &mut port), 0);
        let conf = rte_eth_conf::default();
        assert_eq!(rte_eth_dev_configure(port, 1, 1, &conf), 0);
        assert_eq!(rte_eth_rx_queue_setup(port, 0, 64, 0, ptr::null(), mp), 0);
        assert_eq!(rte_eth_tx_queue_setup(port, 0, 64, 0, ptr::null()), 0);
        assert_eq!(rte_eth_dev_start(port), 0);

        let mut out = [ptr::null_mut::<rte_mbuf>(); 3];
        assert_eq!(lb_rte_pktmbuf_alloc_bulk(mp, out.as_mut_ptr(), 3), 0);
        for (i, &m) in out.iter().enumerate() {
            let p = lb_rte_pktmbuf_append(m, 60).cast::<u8>();
            ptr::write_bytes(p, i as u8 + 1, 60);
        }
        assert_eq!(lb_rte_eth_tx_burst(port, 0, out.as_mut_ptr(), 3), 3);
        let mut back = [ptr::null_mut::<rte_mbuf>(); 8];
        assert_eq!(lb_rte_eth_rx_burst(port, 0, back.as_mut_ptr(), 8), 3);
        for (i, &m) in back[..3].iter().enumerate() {
            assert_eq!(lb_rte_pktmbuf_data_len(m), 60);
            assert_eq!(
                *lb_rte_pktmbuf_mtod(m).cast::<u8>(),
                i as u8 + 1,
                "ring keeps order and bytes"
            );
        }
        assert_eq!(
            lb_rte_eth_rx_burst(port, 0, back.as_mut_ptr(), 8),
            0,
            "ring is empty again"
        );
        rte_pktmbuf_free_bulk(back.as_mut_ptr(), 3);
        assert_eq!(rte_mempool_in_use_count(mp), 0);
        assert_eq!(rte_eth_dev_stop(port), 0);
    }
}
