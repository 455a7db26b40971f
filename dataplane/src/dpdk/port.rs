use std::ffi::{c_char, CStr, CString};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{info, warn};

use super::{Burst, DpdkError, Eal, Mempool};

const ENOTSUP: i32 = 95;

/// How to set up a port: one RX/TX queue pair per worker.
#[derive(Debug, Clone)]
pub struct PortConfig {
    /// RX/TX queue pairs (1..=64).
    pub queues: u16,
    pub rx_desc: u16,
    pub tx_desc: u16,
    /// MTU to set; `None` keeps the device's.
    pub mtu: Option<u16>,
    pub promiscuous: bool,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig {
            queues: 1,
            rx_desc: 1024,
            tx_desc: 1024,
            mtu: None,
            promiscuous: true,
        }
    }
}

/// Link state as the driver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub up: bool,
    /// Megabits per second; 0 when the device does not say (most vdevs).
    pub speed_mbps: u32,
}

/// The port's basic counters (`rte_eth_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_nombuf: u64,
}

/// An ethdev port, configured with N queue pairs. Stopped and closed on drop
/// (closing flushes what vdevs such as net_pcap buffer).
#[derive(Debug)]
pub struct Port {
    id: u16,
    name: String,
    queues: u16,
    mac: [u8; 6],
    rss: bool,
    promiscuous: bool,
    started: bool,
    taken: AtomicU64,
}

impl Port {
    /// Configure the port named `name` (a DPDK device name such as
    /// `net_pcap0` or `0000:01:00.0`, or a port number). Features a virtual
    /// device lacks (RSS, MTU) are logged and tolerated.
    pub fn open(
        _eal: &Eal,
        name: &str,
        config: &PortConfig,
        pool: &'static Mempool,
    ) -> Result<Port, DpdkError> {
        let id = port_id(name)?;
        if config.queues == 0 || config.queues > 64 {
            return Err(DpdkError::Invalid {
                what: "queues",
                reason: format!(
                    "{} queue pairs requested; 1 to 64 are supported",
                    config.queues
                ),
            });
        }
        let mut info = dpdk_sys::rte_eth_dev_info::default();
        // SAFETY: valid port id; info is a writable struct of the right type.
        DpdkError::check("rte_eth_dev_info_get", unsafe {
            dpdk_sys::rte_eth_dev_info_get(id, &mut info)
        })?;
        if config.queues > info.max_rx_queues || config.queues > info.max_tx_queues {
            return Err(DpdkError::Invalid {
                what: "queues",
                reason: format!(
                    "{} queue pairs requested; port {name} has at most {} RX and {} TX queues",
                    config.queues, info.max_rx_queues, info.max_tx_queues
                ),
            });
        }

        let mut conf = dpdk_sys::rte_eth_conf::default();
        // SAFETY: a getter for a constant.
        let rss_hf = unsafe { dpdk_sys::lb_rss_hf_ip_tcp_udp() } & info.flow_type_rss_offloads;
        let rss = config.queues > 1 && rss_hf != 0;
        if rss {
            conf.rxmode.mq_mode = dpdk_sys::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
        } else if config.queues > 1 {
            warn!(port = name, "device has no RSS: flows are spread over queues by the device itself, or not at all");
        }
        // SAFETY: valid port id and a fully initialised conf.
        DpdkError::check("rte_eth_dev_configure", unsafe {
            dpdk_sys::rte_eth_dev_configure(id, config.queues, config.queues, &conf)
        })?;
        let (mut rx_desc, mut tx_desc) = (config.rx_desc, config.tx_desc);
        // SAFETY: valid port id; the counts are in/out parameters.
        DpdkError::check("rte_eth_dev_adjust_nb_rx_tx_desc", unsafe {
            dpdk_sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut rx_desc, &mut tx_desc)
        })?;
        // SAFETY: valid port id.
        let socket = unsafe { dpdk_sys::rte_eth_dev_socket_id(id) };
        // Unknown (negative): SOCKET_ID_ANY, as the unsigned int DPDK takes.
        let socket = u32::try_from(socket).unwrap_or(dpdk_sys::SOCKET_ID_ANY.cast_unsigned());
        for q in 0..config.queues {
            // SAFETY: configured port, queue in range, default rxconf (NULL), a live pool.
            DpdkError::check("rte_eth_rx_queue_setup", unsafe {
                dpdk_sys::rte_eth_rx_queue_setup(
                    id,
                    q,
                    rx_desc,
                    socket,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            })?;
            // SAFETY: configured port, queue in range, default txconf (NULL).
            DpdkError::check("rte_eth_tx_queue_setup", unsafe {
                dpdk_sys::rte_eth_tx_queue_setup(id, q, tx_desc, socket, std::ptr::null())
            })?;
        }
        if let Some(mtu) = config.mtu {
            // SAFETY: valid port id.
            let ret = unsafe { dpdk_sys::rte_eth_dev_set_mtu(id, mtu) };
            if ret == -ENOTSUP {
                warn!(
                    port = name,
                    mtu, "device cannot set its MTU; keeping the device's"
                );
            } else {
                DpdkError::check("rte_eth_dev_set_mtu", ret)?;
            }
        }
        let mut addr = dpdk_sys::rte_ether_addr::default();
        // SAFETY: valid port id; addr is writable.
        DpdkError::check("rte_eth_macaddr_get", unsafe {
            dpdk_sys::rte_eth_macaddr_get(id, &mut addr)
        })?;
        info!(
            port = name,
            id,
            queues = config.queues,
            rx_desc,
            tx_desc,
            rss,
            "port configured"
        );
        Ok(Port {
            id,
            name: name.to_owned(),
            queues: config.queues,
            mac: addr.addr_bytes,
            rss,
            promiscuous: config.promiscuous,
            started: false,
            taken: AtomicU64::new(0),
        })
    }

    /// Start the port (and enable promiscuous mode if configured; a device
    /// that cannot is logged, not fatal).
    pub fn start(&mut self) -> Result<(), DpdkError> {
        if self.started {
            return Ok(());
        }
        // SAFETY: a configured port with all queues set up.
        DpdkError::check("rte_eth_dev_start", unsafe {
            dpdk_sys::rte_eth_dev_start(self.id)
        })?;
        self.started = true;
        if self.promiscuous {
            // SAFETY: valid started port.
            let ret = unsafe { dpdk_sys::rte_eth_promiscuous_enable(self.id) };
            if ret < 0 {
                warn!(port = self.name, error = %DpdkError::from_errno("rte_eth_promiscuous_enable", -ret), "promiscuous mode not enabled");
            }
        }
        Ok(())
    }

    /// Stop the port. No [`Queue`] can be alive: they borrow the port.
    pub fn stop(&mut self) -> Result<(), DpdkError> {
        if !self.started {
            return Ok(());
        }
        self.started = false;
        // SAFETY: valid started port; no queue handle exists (&mut self).
        DpdkError::check("rte_eth_dev_stop", unsafe {
            dpdk_sys::rte_eth_dev_stop(self.id)
        })?;
        Ok(())
    }

    /// The unique handle to queue pair `q`, for one worker. Fails if the port
    /// is not started, `q` is out of range, or the queue is already taken.
    pub fn queue(&self, q: u16) -> Result<Queue<'_>, DpdkError> {
        if !self.started {
            return Err(DpdkError::Invalid {
                what: "queue",
                reason: format!("port {} is not started", self.name),
            });
        }
        if q >= self.queues {
            return Err(DpdkError::Invalid {
                what: "queue",
                reason: format!(
                    "queue {q} out of range: port {} has {} queue pairs",
                    self.name, self.queues
                ),
            });
        }
        let bit = 1u64 << q;
        if self.taken.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
            return Err(DpdkError::Invalid {
                what: "queue",
                reason: format!("queue {q} of port {} is already in use", self.name),
            });
        }
        Ok(Queue {
            port: self.id,
            queue: q,
            taken: &self.taken,
            _not_sync: PhantomData,
        })
    }

    pub fn id(&self) -> u16 {
        self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn queues(&self) -> u16 {
        self.queues
    }

    /// Whether RSS spreads flows over the queues.
    pub fn rss(&self) -> bool {
        self.rss
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// A handle for reading this port's counters and link from another
    /// thread (the metrics) while the workers poll it.
    pub fn reader(&self) -> PortReader {
        PortReader { id: self.id }
    }

    pub fn link(&self) -> Result<Link, DpdkError> {
        self.reader().link()
    }

    pub fn stats(&self) -> Result<PortStats, DpdkError> {
        self.reader().stats()
    }
}

/// Reads a port's counters and link state by its id: what
/// `rte_eth_stats_get` and `rte_eth_link_get_nowait` allow from a control
/// thread while workers poll the port. Once the port is closed they fail
/// (DPDK checks the id), they do not touch freed memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortReader {
    id: u16,
}

impl PortReader {
    pub fn link(&self) -> Result<Link, DpdkError> {
        let mut link = dpdk_sys::rte_eth_link::default();
        // SAFETY: valid port; link is writable.
        DpdkError::check("rte_eth_link_get_nowait", unsafe {
            dpdk_sys::rte_eth_link_get_nowait(self.id, &mut link)
        })?;
        Ok(Link {
            up: u32::from(link.link_status()) == dpdk_sys::RTE_ETH_LINK_UP,
            speed_mbps: link.link_speed,
        })
    }

    pub fn stats(&self) -> Result<PortStats, DpdkError> {
        let mut s = dpdk_sys::rte_eth_stats::default();
        // SAFETY: valid port; s is writable.
        DpdkError::check("rte_eth_stats_get", unsafe {
            dpdk_sys::rte_eth_stats_get(self.id, &mut s)
        })?;
        Ok(PortStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }
}

impl Port {
    /// The driver's extended statistics, by name.
    pub fn xstats(&self) -> Result<Vec<(String, u64)>, DpdkError> {
        // SAFETY: valid port; a NULL array asks for the count.
        let n = count(DpdkError::check("rte_eth_xstats_get_names", unsafe {
            dpdk_sys::rte_eth_xstats_get_names(self.id, std::ptr::null_mut(), 0)
        })?);
        let mut names = vec![dpdk_sys::rte_eth_xstat_name::default(); n as usize];
        let mut values = vec![dpdk_sys::rte_eth_xstat::default(); n as usize];
        // SAFETY: both arrays have room for n entries.
        let got_names = count(DpdkError::check("rte_eth_xstats_get_names", unsafe {
            dpdk_sys::rte_eth_xstats_get_names(self.id, names.as_mut_ptr(), n)
        })?) as usize;
        // SAFETY: as above.
        let got = count(DpdkError::check("rte_eth_xstats_get", unsafe {
            dpdk_sys::rte_eth_xstats_get(self.id, values.as_mut_ptr(), n)
        })?) as usize;
        let mut out = Vec::with_capacity(got.min(got_names));
        for v in values.iter().take(got) {
            let Some(name) = usize::try_from(v.id).ok().and_then(|id| names.get(id)) else {
                continue;
            };
            // SAFETY: DPDK writes NUL-terminated names into the fixed array.
            let name = unsafe { CStr::from_ptr(name.name.as_ptr()) };
            out.push((name.to_string_lossy().into_owned(), v.value));
        }
        Ok(out)
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            warn!(port = self.name, error = %e, "stopping port");
        }
        // SAFETY: stopped port, no queue handles alive (&mut self); not used again.
        let ret = unsafe { dpdk_sys::rte_eth_dev_close(self.id) };
        if ret < 0 {
            warn!(port = self.name, error = %DpdkError::from_errno("rte_eth_dev_close", -ret), "closing port");
        }
    }
}

fn port_id(name: &str) -> Result<u16, DpdkError> {
    if let Ok(id) = name.parse::<u16>() {
        // SAFETY: a validity check on any number.
        if unsafe { dpdk_sys::rte_eth_dev_is_valid_port(id) } == 1 {
            return Ok(id);
        }
    }
    let cname = CString::new(name).map_err(|_| DpdkError::Invalid {
        what: "port",
        reason: "name contains a NUL byte".into(),
    })?;
    let mut id = 0u16;
    // SAFETY: a valid C string and a writable id.
    if unsafe { dpdk_sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) } == 0 {
        return Ok(id);
    }
    Err(DpdkError::NoSuchPort {
        name: name.to_owned(),
        available: port_names().join(", "),
    })
}

/// A count [`DpdkError::check`] let through: never negative.
fn count(n: i32) -> u32 {
    u32::try_from(n).expect("DpdkError::check passes no negative value")
}

/// Names of every port DPDK probed.
pub fn port_names() -> Vec<String> {
    let mut out = Vec::new();
    let max_ports = u16::try_from(dpdk_sys::RTE_MAX_ETHPORTS).expect("port ids are u16");
    for id in 0..max_ports {
        let mut buf = [0 as c_char; 64];
        // SAFETY: buf is writable and larger than RTE_ETH_NAME_MAX_LEN (64 with the NUL).
        if unsafe { dpdk_sys::rte_eth_dev_get_name_by_port(id, buf.as_mut_ptr()) } == 0 {
            // SAFETY: DPDK wrote a NUL-terminated name.
            let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
            out.push(name.to_string_lossy().into_owned());
        }
    }
    if out.is_empty() {
        out.push("none (add one with --vdev or a PCI device)".into());
    }
    out
}

/// What one transmit did: packets the driver took, and packets it refused,
/// which were freed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxOutcome {
    pub sent: usize,
    pub dropped: usize,
}

/// The unique handle to one RX/TX queue pair of a started port. `Send`, so it
/// can move to its worker lcore; not `Sync` or `Clone`: one thread per queue.
pub struct Queue<'p> {
    port: u16,
    queue: u16,
    taken: &'p AtomicU64,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

impl Queue<'_> {
    pub fn index(&self) -> u16 {
        self.queue
    }

    /// Receive into the burst's free space; returns how many arrived.
    #[inline]
    pub fn rx(&mut self, burst: &mut Burst) -> usize {
        let (spare, len) = burst.spare_raw();
        #[allow(clippy::cast_possible_truncation, reason = "at most BURST_SIZE")]
        let room = spare.len() as u16;
        let ptr = spare.as_mut_ptr();
        // The driver writes `n` owned mbufs at `ptr`.
        // SAFETY: this handle is the only user of the queue; `ptr` has room for `room` pointers.
        let n = unsafe { dpdk_sys::lb_rte_eth_rx_burst(self.port, self.queue, ptr, room) };
        let n = usize::from(n);
        // SAFETY: the n entries after len now hold owned mbufs.
        unsafe { burst.set_len(len + n) };
        n
    }

    /// Transmit the whole burst: the driver owns what it took; what it did
    /// not take is freed here and counted. The burst is empty afterwards.
    #[inline]
    pub fn tx(&mut self, burst: &mut Burst) -> TxOutcome {
        let pkts = burst.raw();
        #[allow(clippy::cast_possible_truncation, reason = "at most BURST_SIZE")]
        let n = pkts.len() as u16;
        // SAFETY: this handle is the only user of the queue; `pkts` holds n owned mbufs.
        let sent = usize::from(unsafe {
            dpdk_sys::lb_rte_eth_tx_burst(self.port, self.queue, pkts.as_mut_ptr(), n)
        });
        burst.forget_front(sent);
        let dropped = burst.len();
        burst.clear();
        TxOutcome { sent, dropped }
    }
}

impl Drop for Queue<'_> {
    fn drop(&mut self) {
        self.taken
            .fetch_and(!(1u64 << self.queue), Ordering::AcqRel);
    }
}
