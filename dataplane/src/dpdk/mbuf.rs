use std::ptr::NonNull;

use dpdk_sys::rte_mbuf;
use lb_core::frame::Frame;

/// Packets handled per poll: the usual DPDK burst.
pub const BURST_SIZE: usize = 32;

/// One owned packet buffer: returned to its pool on drop. Byte access covers
/// the first segment, which holds every header the dataplane reads (RX
/// scatter is never enabled, so received packets have one segment).
pub struct Mbuf {
    ptr: NonNull<rte_mbuf>,
}

// SAFETY: an mbuf is exclusively owned; moving it to another thread (as
// DPDK's rings do) is fine. Not Sync: byte access is not synchronised.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// # Safety
    /// `ptr` must be a valid mbuf owned by nobody else.
    pub(crate) unsafe fn from_raw(ptr: NonNull<rte_mbuf>) -> Mbuf {
        Mbuf { ptr }
    }

    pub(crate) fn into_raw(self) -> *mut rte_mbuf {
        let p = self.ptr.as_ptr();
        std::mem::forget(self);
        p
    }

    /// The packet bytes of the first segment.
    #[inline]
    pub fn data(&self) -> &[u8] {
        // SAFETY: we own the mbuf; see `seg_bytes`.
        unsafe { seg_bytes(self.ptr.as_ptr()) }
    }

    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: we own the mbuf exclusively (&mut self); see `seg_bytes_mut`.
        unsafe { seg_bytes_mut(self.ptr.as_ptr()) }
    }

    /// Total length over all segments.
    pub fn pkt_len(&self) -> u32 {
        // SAFETY: valid owned mbuf.
        unsafe { dpdk_sys::lb_rte_pktmbuf_pkt_len(self.ptr.as_ptr()) }
    }

    pub fn segments(&self) -> u16 {
        // SAFETY: valid owned mbuf.
        unsafe { dpdk_sys::lb_rte_pktmbuf_nb_segs(self.ptr.as_ptr()) }
    }

    /// Free room after the data.
    pub fn tailroom(&self) -> u16 {
        // SAFETY: valid owned mbuf.
        unsafe { dpdk_sys::lb_rte_pktmbuf_tailroom(self.ptr.as_ptr()) }
    }

    /// Append `bytes` at the tail; false (nothing written) without enough tailroom.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) -> bool {
        // SAFETY: we own this valid mbuf exclusively (&mut self).
        unsafe { append(self.ptr.as_ptr(), bytes) }
    }

    /// Remove `n` bytes from the tail; false (unchanged) when shorter than that.
    pub fn truncate_by(&mut self, n: u16) -> bool {
        // SAFETY: valid owned mbuf; trim checks the length.
        unsafe { dpdk_sys::lb_rte_pktmbuf_trim(self.ptr.as_ptr(), n) == 0 }
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf and never use it again.
        unsafe { dpdk_sys::lb_rte_pktmbuf_free(self.ptr.as_ptr()) }
    }
}

impl std::fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mbuf")
            .field("len", &self.data().len())
            .finish()
    }
}

/// Append `bytes` at the tail of `m`; false, nothing written, without
/// enough tailroom.
///
/// # Safety
/// `m` must be a valid mbuf that the caller owns exclusively.
unsafe fn append(m: *mut rte_mbuf, bytes: &[u8]) -> bool {
    let Ok(n) = u16::try_from(bytes.len()) else {
        return false;
    };
    // SAFETY: valid exclusive mbuf (caller); append checks the tailroom and returns NULL when short.
    let dst = unsafe { dpdk_sys::lb_rte_pktmbuf_append(m, n) };
    if dst.is_null() {
        return false;
    }
    // SAFETY: append reserved exactly n writable bytes at dst in this mbuf.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst.cast::<u8>(), bytes.len()) };
    true
}

/// # Safety
/// `m` must be a valid mbuf that the caller may read, kept alive for `'a`.
#[inline(always)]
unsafe fn seg_bytes<'a>(m: *mut rte_mbuf) -> &'a [u8] {
    // SAFETY: mtod points at data_len initialised bytes inside the mbuf's buffer.
    unsafe {
        std::slice::from_raw_parts(
            dpdk_sys::lb_rte_pktmbuf_mtod(m).cast::<u8>(),
            usize::from(dpdk_sys::lb_rte_pktmbuf_data_len(m)),
        )
    }
}

/// # Safety
/// `m` must be a valid mbuf owned exclusively by the caller for `'a`, with no
/// other slice of its data alive.
#[inline(always)]
unsafe fn seg_bytes_mut<'a>(m: *mut rte_mbuf) -> &'a mut [u8] {
    // SAFETY: as in `seg_bytes`, and exclusive by the caller's contract.
    unsafe {
        std::slice::from_raw_parts_mut(
            dpdk_sys::lb_rte_pktmbuf_mtod(m).cast::<u8>(),
            usize::from(dpdk_sys::lb_rte_pktmbuf_data_len(m)),
        )
    }
}

/// The first segment as a [`Frame`]: its data, with the headroom before it.
///
/// # Safety
/// As [`seg_bytes_mut`].
#[inline(always)]
unsafe fn seg_frame<'a>(m: *mut rte_mbuf) -> Frame<'a> {
    // SAFETY: valid mbuf (caller).
    let head = usize::from(unsafe { dpdk_sys::lb_rte_pktmbuf_headroom(m) });
    // SAFETY: valid mbuf (caller).
    let len = usize::from(unsafe { dpdk_sys::lb_rte_pktmbuf_data_len(m) });
    // The headroom is the `head` bytes of the mbuf's own buffer right
    // before the data, so `mtod - head .. mtod + len` lies inside it.
    // SAFETY: inside the mbuf's buffer (above); exclusive by the caller's contract.
    let buf = unsafe {
        std::slice::from_raw_parts_mut(
            dpdk_sys::lb_rte_pktmbuf_mtod(m).cast::<u8>().sub(head),
            head + len,
        )
    };
    Frame::new(buf, head, len).expect("head + len is the buffer's length")
}

/// What [`Burst::triage`] does with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Keep it for transmit, cut to this many bytes if shorter.
    Send(usize),
    /// Move it to the other burst (e.g. the exception path).
    Divert,
    Drop,
}

/// Up to [`BURST_SIZE`] owned packets in a fixed array: what one poll
/// receives and one transmit sends. No heap; packets still held when the
/// burst is dropped or cleared are freed in bulk.
pub struct Burst {
    pkts: [*mut rte_mbuf; BURST_SIZE],
    len: usize,
}

// SAFETY: the burst exclusively owns its mbufs, which may move between threads.
unsafe impl Send for Burst {}

impl Default for Burst {
    fn default() -> Self {
        Self::new()
    }
}

impl Burst {
    pub const fn new() -> Burst {
        Burst {
            pkts: [std::ptr::null_mut(); BURST_SIZE],
            len: 0,
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Add a packet; gives it back when the burst is full.
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len == BURST_SIZE {
            return Err(m);
        }
        self.pkts[self.len] = m.into_raw();
        self.len += 1;
        Ok(())
    }

    /// Take the last packet out.
    pub fn pop(&mut self) -> Option<Mbuf> {
        self.len = self.len.checked_sub(1)?;
        let p = self.pkts[self.len];
        // This one leaves the burst: ownership moves to the returned Mbuf.
        // SAFETY: entries below the old len are owned, non-null mbufs.
        Some(unsafe { Mbuf::from_raw(NonNull::new_unchecked(p)) })
    }

    /// Bytes of packet `i`.
    #[inline]
    pub fn data(&self, i: usize) -> Option<&[u8]> {
        let &p = self.pkts[..self.len].get(i)?;
        // SAFETY: entries below len are owned, valid mbufs, alive while &self is.
        Some(unsafe { seg_bytes(p) })
    }

    /// Mutable bytes of packet `i`.
    #[inline]
    pub fn data_mut(&mut self, i: usize) -> Option<&mut [u8]> {
        let &p = self.pkts[..self.len].get(i)?;
        // SAFETY: entries below len are owned, valid mbufs; &mut self makes the slice exclusive.
        Some(unsafe { seg_bytes_mut(p) })
    }

    /// Append `bytes` to packet `i` (a generator filling freshly allocated
    /// mbufs); false, nothing written, when `i` is out of range or the
    /// tailroom is short.
    pub fn extend_at(&mut self, i: usize, bytes: &[u8]) -> bool {
        let Some(&p) = self.pkts[..self.len].get(i) else {
            return false;
        };
        // SAFETY: entries below len are owned, valid mbufs; &mut self makes this one exclusive.
        unsafe { append(p, bytes) }
    }

    /// Prefetch the first cache line of every packet's data, so the headers
    /// are in cache by the time the burst is processed; with `headroom`
    /// the line before it too, which a tunnel's outer headers are written
    /// into (nothing else touches it: without this, a miss on every
    /// encapsulated packet).
    #[inline]
    pub fn prefetch_data(&self, headroom: bool) {
        for &p in &self.pkts[..self.len] {
            // SAFETY: valid owned mbuf; mtod only computes an address.
            let data = unsafe { dpdk_sys::lb_rte_pktmbuf_mtod(p) };
            // SAFETY: prefetch is a hint and cannot fault, whatever the address.
            unsafe { dpdk_sys::lb_rte_prefetch0(data) };
            if headroom {
                let before = data.cast::<u8>().wrapping_sub(64).cast();
                // SAFETY: as above (the address, inside the mbuf's headroom, is not read).
                unsafe { dpdk_sys::lb_rte_prefetch0(before) };
            }
        }
    }

    /// Keep the packets for which `keep` returns `Some(len)`, cut to `len`
    /// bytes when shorter (it may rewrite them in place), in order; free the
    /// others in one bulk call. Returns how many were freed.
    #[inline]
    pub fn retain_mut(&mut self, mut keep: impl FnMut(&mut [u8]) -> Option<usize>) -> usize {
        let mut unused = Burst::new();
        self.triage(&mut unused, |d| keep(d).map_or(Fate::Drop, Fate::Send))
    }

    /// Decide each packet's [`Fate`] (the closure may rewrite it in place):
    /// sent packets stay, in order, cut to their new length; diverted ones
    /// move to the end of `divert`; dropped ones are freed in one bulk call.
    /// Returns how many were freed. A packet diverted into a full `divert`
    /// is freed and counted as dropped.
    #[inline]
    ///
    /// The closure sees each packet as a [`Frame`]: it may also grow it at
    /// the front into the headroom (a tunnel's headers), which the mbuf
    /// then takes (`rte_pktmbuf_prepend`); `Send(len)` counts from the new
    /// start.
    pub fn triage(
        &mut self,
        divert: &mut Burst,
        mut fate: impl FnMut(&mut Frame<'_>) -> Fate,
    ) -> usize {
        let mut dropped = [std::ptr::null_mut(); BURST_SIZE];
        let mut n_dropped = 0;
        let mut kept = 0;
        for i in 0..self.len {
            let p = self.pkts[i];
            let (verdict, grown) = {
                // SAFETY: owned valid mbuf; the frame does not outlive this block.
                let mut frame = unsafe { seg_frame(p) };
                (fate(&mut frame), frame.headroom())
            };
            match verdict {
                Fate::Send(len) => {
                    // SAFETY: owned valid mbuf, no slice of it alive any more.
                    let head = usize::from(unsafe { dpdk_sys::lb_rte_pktmbuf_headroom(p) });
                    if grown < head {
                        #[allow(
                            clippy::cast_possible_truncation,
                            reason = "less than the u16 headroom"
                        )]
                        let n = (head - grown) as u16;
                        // SAFETY: owned valid mbuf; n is within its headroom, so prepend cannot fail.
                        unsafe { dpdk_sys::lb_rte_pktmbuf_prepend(p, n) };
                    }
                    // SAFETY: owned valid mbuf, no slice of it alive any more.
                    let cur = usize::from(unsafe { dpdk_sys::lb_rte_pktmbuf_data_len(p) });
                    // SAFETY: owned valid mbuf.
                    if len < cur && unsafe { dpdk_sys::lb_rte_pktmbuf_nb_segs(p) } == 1 {
                        #[allow(
                            clippy::cast_possible_truncation,
                            reason = "len < cur, a u16 data_len"
                        )]
                        let excess = (cur - len) as u16;
                        // SAFETY: owned valid mbuf; trimming less than data_len of a single-segment packet cannot fail.
                        unsafe { dpdk_sys::lb_rte_pktmbuf_trim(p, excess) };
                    }
                    self.pkts[kept] = p;
                    kept += 1;
                }
                Fate::Divert if divert.len < BURST_SIZE => {
                    divert.pkts[divert.len] = p;
                    divert.len += 1;
                }
                Fate::Divert | Fate::Drop => {
                    dropped[n_dropped] = p;
                    n_dropped += 1;
                }
            }
        }
        self.len = kept;
        free_bulk(&mut dropped[..n_dropped]);
        n_dropped
    }

    /// Length of packet `i` over all its segments.
    #[inline]
    pub fn pkt_len_of(&self, i: usize) -> Option<usize> {
        let &p = self.pkts[..self.len].get(i)?;
        // SAFETY: entries below len are owned, valid mbufs.
        Some(unsafe { dpdk_sys::lb_rte_pktmbuf_pkt_len(p) } as usize)
    }

    /// Length of packet `i` (first segment), without touching its data.
    #[inline]
    pub fn len_of(&self, i: usize) -> Option<usize> {
        let &p = self.pkts[..self.len].get(i)?;
        // SAFETY: entries below len are owned, valid mbufs.
        Some(usize::from(unsafe { dpdk_sys::lb_rte_pktmbuf_data_len(p) }))
    }

    /// Free every packet.
    pub fn clear(&mut self) {
        let n = std::mem::take(&mut self.len);
        free_bulk(&mut self.pkts[..n]);
    }

    /// The unused tail of the array and the current length, for RX and bulk
    /// alloc to fill; follow with `set_len`.
    pub(crate) fn spare_raw(&mut self) -> (&mut [*mut rte_mbuf], usize) {
        (&mut self.pkts[self.len..], self.len)
    }

    /// The owned packets, for transmit.
    pub(crate) fn raw(&mut self) -> &mut [*mut rte_mbuf] {
        &mut self.pkts[..self.len]
    }

    /// # Safety
    /// Entries below `len` must be owned, valid mbufs, and ownership of any
    /// entry at or above `len` must have passed elsewhere.
    pub(crate) unsafe fn set_len(&mut self, len: usize) {
        debug_assert!(len <= BURST_SIZE);
        self.len = len;
    }

    /// Drop the first `n` entries from the burst without freeing them
    /// (their ownership passed to the driver), keeping the rest in order.
    pub(crate) fn forget_front(&mut self, n: usize) {
        let n = n.min(self.len);
        self.pkts.copy_within(n..self.len, 0);
        self.len -= n;
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        self.clear();
    }
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "a slice of a burst: at most BURST_SIZE packets"
)]
fn free_bulk(pkts: &mut [*mut rte_mbuf]) {
    if pkts.is_empty() {
        return;
    }
    // SAFETY: every entry is an owned, valid mbuf the caller gives up here.
    unsafe { dpdk_sys::rte_pktmbuf_free_bulk(pkts.as_mut_ptr(), pkts.len() as u32) }
}
