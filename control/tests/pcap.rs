//! Just enough of the classic pcap format (microsecond or nanosecond,
//! little-endian, Ethernet) to write golden inputs and read what net_pcap wrote.

#![allow(dead_code)]

use std::path::Path;

pub fn write(path: &Path, frames: &[Vec<u8>]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]); // thiszone, sigfigs
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    for (i, f) in frames.iter().enumerate() {
        out.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        out.extend_from_slice(&(i as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    std::fs::write(path, out).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// The frames of a pcap file, timestamps ignored.
pub fn read(path: &Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert!(data.len() >= 24, "{}: no pcap header", path.display());
    let magic = u32::from_le_bytes(data[..4].try_into().unwrap());
    assert!(
        magic == 0xa1b2_c3d4 || magic == 0xa1b2_3c4d,
        "{}: not a little-endian pcap (magic {magic:#x})",
        path.display()
    );
    let mut frames = Vec::new();
    let mut at = 24;
    while at < data.len() {
        assert!(
            at + 16 <= data.len(),
            "{}: truncated record header",
            path.display()
        );
        let caplen = u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
        let origlen = u32::from_le_bytes(data[at + 12..at + 16].try_into().unwrap()) as usize;
        assert_eq!(
            caplen,
            origlen,
            "{}: frame {} was cut",
            path.display(),
            frames.len()
        );
        at += 16;
        assert!(
            at + caplen <= data.len(),
            "{}: truncated frame",
            path.display()
        );
        frames.push(data[at..at + caplen].to_vec());
        at += caplen;
    }
    frames
}
