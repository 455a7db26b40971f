//! The poll loop of one worker lcore on its own RX/TX queue pair: burst RX,
//! prefetch, decide and rewrite in place, burst TX, free and count what was
//! not sent. Nothing here allocates, locks or makes a syscall; counters are
//! published once per burst.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::dpdk::{Burst, Queue, BURST_SIZE};
use crate::mac_table::{MacTable, Verdict};
use crate::stats::{DropReason, WorkerStats};

pub struct Worker<'a> {
    queue: Queue<'a>,
    table: &'a MacTable,
    port_mac: [u8; 6],
    stats: &'a WorkerStats,
}

impl<'a> Worker<'a> {
    pub fn new(
        queue: Queue<'a>,
        table: &'a MacTable,
        port_mac: [u8; 6],
        stats: &'a WorkerStats,
    ) -> Worker<'a> {
        Worker {
            queue,
            table,
            port_mac,
            stats,
        }
    }

    /// Poll until `stop` is set (checked once per iteration).
    pub fn run(&mut self, stop: &AtomicBool) {
        let mut burst = Burst::new();
        while !stop.load(Ordering::Relaxed) {
            self.poll_once(&mut burst);
        }
    }

    /// One RX burst through to TX; returns how many packets arrived.
    #[inline]
    pub fn poll_once(&mut self, burst: &mut Burst) -> usize {
        let n = self.queue.rx(burst);
        if n == 0 {
            return 0;
        }
        burst.prefetch_data();

        let mut rx_bytes = 0u64;
        let mut drops = [0u64; DropReason::COUNT];
        let mut lens = [0u16; BURST_SIZE];
        let mut kept = 0;
        let (table, mac) = (self.table, self.port_mac);
        burst.retain_mut(|frame| {
            rx_bytes += frame.len() as u64;
            match table.rewrite(frame, mac) {
                Verdict::Forward => {
                    lens[kept] = frame.len() as u16;
                    kept += 1;
                    true
                }
                Verdict::Drop(reason) => {
                    drops[reason as usize] += 1;
                    false
                }
            }
        });
        let out = self.queue.tx(burst);

        let s = self.stats;
        s.rx_packets.add(n as u64);
        s.rx_bytes.add(rx_bytes);
        s.tx_packets.add(out.sent as u64);
        s.tx_bytes
            .add(lens[..out.sent].iter().map(|&l| u64::from(l)).sum());
        s.tx_dropped.add(out.dropped as u64);
        for (c, d) in s.drops.iter().zip(drops) {
            if d != 0 {
                c.add(d);
            }
        }
        n
    }
}
