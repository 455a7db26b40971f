//! The only safe layer over `dpdk-sys`: EAL, lcores, mempool, mbuf and
//! ethdev port. Every `unsafe` block of the dataplane lives under this
//! module and says why it is sound; everything above it is safe Rust.
//!
//! Ownership rules that make the safe API sound:
//! - EAL is initialised at most once per process and never torn down, so
//!   every DPDK object may assume it lives for the rest of the process.
//! - Mempools are created once and never freed (`&'static Mempool`), so an
//!   mbuf can never outlive its pool.
//! - An [`Mbuf`] and the packets in a [`Burst`] are owned: freed on drop,
//!   handed back to DPDK only by transmit, which consumes them.
//! - A [`Queue`] is a unique handle to one RX/TX queue pair of a started
//!   port; it borrows the [`Port`], so the port cannot be stopped under it.

// The one module of the dataplane allowed `unsafe` (the workspace denies
// it): the FFI to dpdk-sys, each block with its `// SAFETY:` argument.
#![allow(unsafe_code)]

mod eal;
mod error;
mod lcore;
mod mbuf;
mod mempool;
mod port;

pub use eal::Eal;
pub use error::DpdkError;
pub use lcore::{scope, Scope};
pub use mbuf::{Burst, Fate, Mbuf, BURST_SIZE};
pub use mempool::Mempool;
pub use port::{Link, Port, PortConfig, PortReader, PortStats, Queue, TxOutcome};

/// Prefetch the cache line at `p` into all cache levels. A hint: never faults.
/// Inline (DPDK's `rte_prefetch0` would be a call through the C shim, on
/// the per-packet path).
#[inline(always)]
pub fn prefetch<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: prefetch is a hint that cannot fault and reads nothing; `p` is a valid reference anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(p).cast()) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: prefetch is a hint that cannot fault and reads nothing; `p` is a valid reference anyway.
        unsafe { dpdk_sys::lb_rte_prefetch0(std::ptr::from_ref(p).cast()) }
    }
}

/// Ask the kernel to back `mem` with transparent huge pages: a table read at
/// random (the flow table) then costs one TLB entry per 2 MiB instead of one
/// per 4 KiB. Call it before the memory is first touched. Only advice: where
/// THP is off, or the call fails, nothing changes.
pub fn advise_hugepages<T>(mem: &mut [std::mem::MaybeUninit<T>]) {
    const PAGE: usize = 4096;
    let start = mem.as_mut_ptr() as usize;
    let end = start + std::mem::size_of_val(mem);
    let aligned = start.next_multiple_of(PAGE);
    if end <= aligned + PAGE {
        return;
    }
    // MADV_HUGEPAGE changes how pages are backed, never their contents or validity.
    // SAFETY: the range lies inside `mem`, which we borrow exclusively, and starts on a page boundary.
    unsafe {
        libc::madvise(
            aligned as *mut libc::c_void,
            (end - aligned) / PAGE * PAGE,
            libc::MADV_HUGEPAGE,
        );
    }
}

/// A flow table for at least `capacity` flows in memory advised for huge
/// pages before its first touch (the core crate takes its memory from here).
pub fn flow_table(capacity: usize, config: lb_core::flow::FlowConfig) -> lb_core::flow::FlowTable {
    let mut memory = Vec::with_capacity(lb_core::flow::FlowTable::slots_for(capacity));
    advise_hugepages(memory.spare_capacity_mut());
    lb_core::flow::FlowTable::in_memory(memory, capacity, config)
}

/// The CPU time stamp counter; see [`Eal::tsc_hz`] for its frequency.
#[inline(always)]
pub fn rdtsc() -> u64 {
    // SAFETY: reads the TSC register; no memory is touched.
    unsafe { dpdk_sys::lb_rte_rdtsc() }
}
