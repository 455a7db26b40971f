use std::ffi::CString;
use std::ptr::NonNull;

use super::{Burst, DpdkError, Eal, Mbuf};

/// A pool of packet mbufs. Pools are never freed: a DPDK application creates
/// them once at start, and keeping them for the whole process means no mbuf
/// can outlive its pool.
#[derive(Debug)]
pub struct Mempool {
    ptr: NonNull<dpdk_sys::rte_mempool>,
    name: String,
    size: u32,
}

// SAFETY: DPDK packet pools are created multi-producer/multi-consumer:
// get and put are safe from any thread.
unsafe impl Send for Mempool {}
// SAFETY: as above; no method takes &self and mutates Rust-side state.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Create a pool of `size` mbufs with a per-lcore cache of `cache` and
    /// DPDK's default data room (2048 bytes + headroom) on `socket`
    /// (`None`: any). `name` must be unique in the process.
    pub fn create(
        _eal: &Eal,
        name: &str,
        size: u32,
        cache: u32,
        socket: Option<i32>,
    ) -> Result<&'static Mempool, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::Invalid {
            what: "mempool name",
            reason: "contains a NUL byte".into(),
        })?;
        // SAFETY: a getter for a constant.
        let data_room = unsafe { dpdk_sys::lb_mbuf_default_buf_size() };
        // SAFETY: EAL is initialised (we hold &Eal); name is a valid C string.
        let raw = unsafe {
            dpdk_sys::rte_pktmbuf_pool_create(
                cname.as_ptr(),
                size,
                cache,
                0,
                data_room,
                socket.unwrap_or(dpdk_sys::SOCKET_ID_ANY),
            )
        };
        let ptr = NonNull::new(raw).ok_or_else(|| DpdkError::last("rte_pktmbuf_pool_create"))?;
        Ok(Box::leak(Box::new(Mempool {
            ptr,
            name: name.to_owned(),
            size,
        })))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of mbufs the pool was created with.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// One empty mbuf, or `None` when the pool is exhausted.
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool is valid for the whole process.
        let m = unsafe { dpdk_sys::lb_rte_pktmbuf_alloc(self.ptr.as_ptr()) };
        // SAFETY: a non-null mbuf fresh from the pool is owned by nobody else.
        NonNull::new(m).map(|m| unsafe { Mbuf::from_raw(m) })
    }

    /// Fill `burst` up to `n` packets with empty mbufs, all or nothing.
    /// Returns false (and leaves `burst` as it was) when the pool cannot give them all.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "n <= the burst's spare room, at most BURST_SIZE"
    )]
    pub fn alloc_bulk(&self, burst: &mut Burst, n: usize) -> bool {
        let (spare, len) = burst.spare_raw();
        let n = n.min(spare.len());
        // On success DPDK writes n fresh mbufs, which the burst then owns; on failure nothing.
        // SAFETY: `spare` has room for n pointers.
        let ret = unsafe {
            dpdk_sys::lb_rte_pktmbuf_alloc_bulk(self.ptr.as_ptr(), spare.as_mut_ptr(), n as u32)
        };
        if ret == 0 {
            // SAFETY: the n entries after len were just filled with owned mbufs.
            unsafe { burst.set_len(len + n) };
            true
        } else {
            false
        }
    }

    /// Mbufs currently out of the pool (in use by the application or a
    /// driver). Per-lcore caches count as available.
    pub fn in_use(&self) -> u32 {
        // SAFETY: the pool is valid; a read-only count.
        unsafe { dpdk_sys::rte_mempool_in_use_count(self.ptr.as_ptr()) }
    }

    /// Mbufs available in the pool and its caches.
    pub fn available(&self) -> u32 {
        // SAFETY: the pool is valid; a read-only count.
        unsafe { dpdk_sys::rte_mempool_avail_count(self.ptr.as_ptr()) }
    }

    pub(crate) fn as_ptr(&self) -> *mut dpdk_sys::rte_mempool {
        self.ptr.as_ptr()
    }
}
