//! Why the decision dropped a packet: one counter per reason. The list is
//! declared once below; the enum, [`DropReason::ALL`], the stable names
//! (metrics labels, API counter names) and their descriptions derive from it.

macro_rules! drop_reasons {
    ($($(#[doc = $doc:literal])+ $variant:ident => $name:literal,)+) => {
        /// Why a packet was dropped; each reason has its own counter.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(usize)]
        pub enum DropReason {
            $($(#[doc = $doc])+ $variant,)+
        }

        impl DropReason {
            /// Every reason, in counter order (`reason as usize` indexes it).
            pub const ALL: [DropReason; [$(DropReason::$variant),+].len()] = [$(DropReason::$variant),+];

            /// Stable name, used as a metrics label and in the API.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)+
                }
            }

            /// What the reason means, for metrics help and documentation.
            pub fn describe(self) -> &'static str {
                match self {
                    $(DropReason::$variant => concat!($($doc),+).trim_ascii(),)+
                }
            }
        }
    };
}

drop_reasons! {
    /// Shorter than its headers.
    Truncated => "truncated",
    /// IP version differs from the ethertype's.
    BadVersion => "bad_version",
    /// IPv4 IHL or TCP data offset below the minimum.
    BadHeaderLength => "bad_header_length",
    /// A length field that contradicts itself.
    BadLength => "bad_length",
    /// More IPv6 extension headers than the dataplane walks.
    TooManyExtensionHeaders => "too_many_extension_headers",
    /// ARP for a hardware or protocol type other than Ethernet/IPv4.
    UnsupportedArp => "unsupported_arp",
    /// Unicast to another MAC (seen in promiscuous mode on a shared segment).
    NotForUs => "not_for_us",
    /// To a VIP address, but no VIP on that port and protocol.
    UnknownVipPort => "unknown_vip_port",
    /// The VIP has no backend that can take the flow.
    NoBackend => "no_backend",
    /// The flow's backend has no known MAC yet (ARP/ND still resolving).
    BackendUnresolved => "backend_unresolved",
    /// ICMP to a VIP that is not an error about one of its flows.
    IcmpNotForFlow => "icmp_not_for_flow",
    /// For the host, but there is no exception path to the kernel (or it was full).
    NoKernelPath => "no_kernel_path",
    /// An echo request to a VIP whose ICMP checksum does not verify (not answered).
    BadChecksum => "bad_checksum",
    /// An echo request to a VIP over the worker's reply rate (lbd --vip-ping-rate).
    EchoRateLimited => "echo_rate_limited",
    /// From the host to a VIP from a source port of the probe range that
    /// names no backend of that VIP address (the range is reserved for checks via the VIP).
    ProbeNoBackend => "probe_no_backend",
    /// Larger than the port's MTU once encapsulated for its tunnelled
    /// backend, and fragmentable (IPv4 without DF), or an ICMP error or
    /// fragment: not fragmented on the hot path.
    Oversize => "oversize",
    /// Too big for its backend's tunnel and not to be fragmented, but over
    /// the worker's rate of ICMP too-big replies (lbd --too-big-rate).
    TooBigRateLimited => "too_big_rate_limited",
    /// No room in the buffer before the frame for the tunnel's headers.
    NoHeadroom => "no_headroom",
}

impl DropReason {
    pub const COUNT: usize = Self::ALL.len();
}

impl From<crate::packet::Error> for DropReason {
    fn from(e: crate::packet::Error) -> DropReason {
        use crate::packet::Error;
        match e {
            Error::Truncated => DropReason::Truncated,
            Error::BadVersion => DropReason::BadVersion,
            Error::BadHeaderLength => DropReason::BadHeaderLength,
            Error::BadLength => DropReason::BadLength,
            Error::TooManyExtensionHeaders => DropReason::TooManyExtensionHeaders,
            Error::Unsupported => DropReason::UnsupportedArp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_the_order_is_the_index() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert!(
                !r.describe().is_empty() && r.describe().ends_with('.'),
                "{r:?}"
            );
        }
    }
}
