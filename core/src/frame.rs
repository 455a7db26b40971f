//! A frame in its buffer, with the free room before it: what a tunnel
//! needs to put headers in front of a packet without copying it. On a
//! worker the buffer is an mbuf's first segment and the room its headroom;
//! in a test, any byte vector.

use std::ops::{Deref, DerefMut};

/// `buf[start..start + len]` is the frame; `buf[..start]` is free room.
/// Derefs to the frame's bytes, so whatever reads or rewrites a frame in
/// place takes a `&mut Frame` as it takes a `&mut [u8]`.
#[derive(Debug)]
pub struct Frame<'a> {
    buf: &'a mut [u8],
    start: usize,
    len: usize,
}

impl<'a> Frame<'a> {
    /// The frame `buf[start..start + len]`, or `None` when that is not
    /// inside `buf`.
    pub fn new(buf: &'a mut [u8], start: usize, len: usize) -> Option<Frame<'a>> {
        (start.checked_add(len)? <= buf.len()).then_some(Frame { buf, start, len })
    }

    /// A frame with no room before it: a plain byte slice.
    pub fn whole(buf: &'a mut [u8]) -> Frame<'a> {
        let len = buf.len();
        Frame { buf, start: 0, len }
    }

    /// Where the frame starts in its buffer: the free room before it.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.start
    }

    /// Grow the frame by `n` bytes at the front (their contents are
    /// whatever the buffer held); false, unchanged, without the room.
    #[inline]
    pub fn prepend(&mut self, n: usize) -> bool {
        if n > self.start {
            return false;
        }
        self.start -= n;
        self.len += n;
        true
    }

    /// Cut the frame to `len` bytes (no-op when it is not longer).
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

impl Deref for Frame<'_> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl DerefMut for Frame<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepend_uses_the_room_before_and_never_more() {
        let mut buf = [0u8, 0, 0, 1, 2, 3];
        let mut f = Frame::new(&mut buf, 3, 3).unwrap();
        assert_eq!(&*f, &[1, 2, 3]);
        assert!(!f.prepend(4));
        assert!(f.prepend(2));
        f[0] = 9;
        assert_eq!(&*f, &[9, 0, 1, 2, 3]);
        assert_eq!(f.headroom(), 1);
        f.truncate(2);
        assert_eq!(&*f, &[9, 0]);
        f.truncate(10);
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn a_frame_outside_its_buffer_is_refused() {
        let mut buf = [0u8; 4];
        assert!(Frame::new(&mut buf, 3, 2).is_none());
        assert!(Frame::new(&mut buf, usize::MAX, 2).is_none());
        assert_eq!(Frame::whole(&mut buf).len(), 4);
    }
}
