use std::ffi::{c_char, c_int, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use super::DpdkError;

static ATTEMPTED: AtomicBool = AtomicBool::new(false);
static EAL: OnceLock<Eal> = OnceLock::new();

/// Proof that DPDK's EAL is initialised in this process. It is never torn
/// down: `rte_eal_init` works once per process (a second call fails even after
/// `rte_eal_cleanup`), and every DPDK object relies on it staying alive.
#[derive(Debug)]
pub struct Eal {
    main_lcore: u32,
}

impl Eal {
    /// Initialise EAL from its argument list (without the program name, which
    /// is supplied). Errors carry DPDK's message; a second call in the same
    /// process fails with [`DpdkError::EalAlreadyInitialised`] without
    /// touching DPDK.
    pub fn init<I, S>(args: I) -> Result<&'static Eal, DpdkError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut owned = vec![CString::new("lbd").expect("no NUL")];
        for a in args {
            let a = a.as_ref();
            owned.push(CString::new(a).map_err(|_| DpdkError::NulInArgument(a.to_owned()))?);
        }
        if ATTEMPTED.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::EalAlreadyInitialised);
        }
        // EAL may keep pointers into argv (and permutes it): the strings live
        // for the rest of the process, like a C program's argv.
        let argv: &'static mut [*mut c_char] = Vec::leak(
            owned
                .into_iter()
                .map(CString::into_raw)
                .chain(std::iter::once(std::ptr::null_mut()))
                .collect(),
        );
        let argc = c_int::try_from(argv.len() - 1).map_err(|_| DpdkError::Invalid {
            what: "EAL arguments",
            reason: "too many".into(),
        })?;
        // argv is leaked so that it outlives EAL.
        // SAFETY: argv holds argc valid NUL-terminated strings followed by NULL; ATTEMPTED guarantees a single call.
        let ret = unsafe { dpdk_sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            return Err(DpdkError::last("rte_eal_init"));
        }
        // SAFETY: EAL is initialised; a plain getter.
        let main_lcore = unsafe { dpdk_sys::rte_get_main_lcore() };
        Ok(EAL.get_or_init(|| Eal { main_lcore }))
    }

    /// The EAL instance, if [`Eal::init`] succeeded in this process.
    pub fn get() -> Option<&'static Eal> {
        EAL.get()
    }

    /// The lcore that called `rte_eal_init` (the tokio/control side later).
    pub fn main_lcore(&self) -> u32 {
        self.main_lcore
    }

    /// The worker lcores enabled by `-l`/`-c`, in order, without the main lcore.
    pub fn worker_lcores(&self) -> Vec<u32> {
        let mut out = Vec::new();
        let mut i = u32::MAX; // rte_get_next_lcore(-1, ...) starts the walk
        loop {
            // SAFETY: plain iteration over EAL's lcore table; skip_main=1, wrap=0.
            i = unsafe { dpdk_sys::rte_get_next_lcore(i, 1, 0) };
            if i >= dpdk_sys::RTE_MAX_LCORE {
                return out;
            }
            out.push(i);
        }
    }

    /// Whether the calling thread is EAL's main lcore.
    pub fn on_main_lcore(&self) -> bool {
        current_lcore() == Some(self.main_lcore)
    }

    /// Frequency of [`super::rdtsc`] in Hz.
    pub fn tsc_hz(&self) -> u64 {
        // SAFETY: plain getter after EAL init.
        unsafe { dpdk_sys::rte_get_tsc_hz() }
    }

    /// Create a virtual device at run time, as `--vdev NAME,ARGS` would at
    /// start (e.g. the `net_tap` exception interface once the port's MAC is known).
    pub fn create_vdev(&self, name: &str, args: &str) -> Result<(), DpdkError> {
        let devargs = CString::new(format!("{name},{args}")).map_err(|_| DpdkError::Invalid {
            what: "vdev arguments",
            reason: "contain a NUL byte".into(),
        })?;
        // SAFETY: EAL is initialised; a valid C string for the call's duration.
        DpdkError::check("rte_dev_probe", unsafe {
            dpdk_sys::rte_dev_probe(devargs.as_ptr())
        })?;
        Ok(())
    }

    /// NUMA socket of the calling thread.
    pub fn socket_id(&self) -> i32 {
        // SAFETY: plain getter after EAL init.
        let s = unsafe { dpdk_sys::rte_socket_id() };
        i32::try_from(s).unwrap_or(dpdk_sys::SOCKET_ID_ANY)
    }
}

/// The calling thread's lcore id, or `None` for a thread EAL does not manage.
pub fn current_lcore() -> Option<u32> {
    // SAFETY: reads a thread-local; valid on any thread.
    let id = unsafe { dpdk_sys::lb_rte_lcore_id() };
    (id != u32::MAX).then_some(id)
}
