use std::ffi::CStr;

/// An error from DPDK, naming the `rte_*` call that failed and DPDK's message.
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    #[error("{call} failed: {message} (errno {errno})")]
    Call {
        call: &'static str,
        errno: i32,
        message: String,
    },
    #[error(
        "EAL was already initialised in this process: DPDK allows one rte_eal_init per process"
    )]
    EalAlreadyInitialised,
    #[error("EAL argument {0:?} contains a NUL byte")]
    NulInArgument(String),
    #[error("no DPDK port named {name:?}; available: {available}")]
    NoSuchPort { name: String, available: String },
    #[error("{what}: {reason}")]
    Invalid { what: &'static str, reason: String },
}

impl DpdkError {
    /// For calls that return a negative errno (most of ethdev).
    pub(crate) fn check(call: &'static str, ret: i32) -> Result<i32, DpdkError> {
        if ret < 0 {
            Err(Self::from_errno(call, -ret))
        } else {
            Ok(ret)
        }
    }

    /// For calls that return -1 or NULL and set `rte_errno` (EAL, mempool).
    pub(crate) fn last(call: &'static str) -> DpdkError {
        // SAFETY: reads the calling thread's rte_errno; no arguments.
        let errno = unsafe { dpdk_sys::lb_rte_errno() };
        Self::from_errno(call, errno)
    }

    pub(crate) fn from_errno(call: &'static str, errno: i32) -> DpdkError {
        // SAFETY: rte_strerror returns a NUL-terminated string (static, or a thread-local buffer valid until the next call on this thread), copied at once.
        let message = unsafe { CStr::from_ptr(dpdk_sys::rte_strerror(errno)) }
            .to_string_lossy()
            .into_owned();
        DpdkError::Call {
            call,
            errno,
            message,
        }
    }

    /// The errno of a failed call, if this error carries one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            DpdkError::Call { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}
