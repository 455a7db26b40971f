//! Running closures on EAL worker lcores, scoped like `std::thread::scope`:
//! every launched lcore is waited for before [`scope`] returns, even when the
//! scope's body panics, so closures may borrow from the caller.

use std::cell::RefCell;
use std::ffi::{c_int, c_void};
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::{DpdkError, Eal};

type Job<'env> = Box<dyn FnOnce() + Send + 'env>;

const JOB_OK: c_int = 0;
const JOB_PANICKED: c_int = -1;

/// Launches closures on worker lcores; see [`scope`].
pub struct Scope<'scope, 'env: 'scope> {
    launched: RefCell<Vec<u32>>,
    _scope: PhantomData<&'scope mut &'scope ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

/// Run `f` on the main lcore with a [`Scope`] to launch closures on worker
/// lcores. Returns `f`'s value once every launched lcore has finished, or an
/// error naming the lcores whose closure panicked.
pub fn scope<'env, R>(
    eal: &Eal,
    f: impl for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
) -> Result<R, DpdkError> {
    if !eal.on_main_lcore() {
        return Err(DpdkError::Invalid {
            what: "lcore scope",
            reason: "must be opened on the main lcore (the thread that initialised EAL)".into(),
        });
    }
    let scope = Scope {
        launched: RefCell::new(Vec::new()),
        _scope: PhantomData,
        _env: PhantomData,
    };
    // Waits on drop as well, so a panic in `f` cannot return while workers
    // still borrow from this stack frame.
    let guard = WaitGuard(&scope);
    let r = f(&scope);
    let panicked = guard.wait_all();
    std::mem::forget(guard);
    if panicked.is_empty() {
        Ok(r)
    } else {
        Err(DpdkError::Invalid {
            what: "worker lcores",
            reason: format!("closure panicked on lcore(s) {panicked:?}"),
        })
    }
}

impl<'scope, 'env> Scope<'scope, 'env> {
    /// Start `job` on worker lcore `lcore`, which must be idle.
    pub fn spawn<F>(&'scope self, lcore: u32, job: F) -> Result<(), DpdkError>
    where
        F: FnOnce() + Send + 'env,
    {
        let job: Box<Job<'env>> = Box::new(Box::new(job));
        let arg = Box::into_raw(job).cast::<c_void>();
        // SAFETY: `trampoline` takes back the box exactly once when the launch succeeds; the scope waits for the lcore before 'env ends.
        let ret = unsafe { dpdk_sys::rte_eal_remote_launch(Some(trampoline), arg, lcore) };
        if ret < 0 {
            // SAFETY: the launch failed, so `trampoline` never runs: we still own the box.
            drop(unsafe { Box::from_raw(arg.cast::<Job<'env>>()) });
            return Err(DpdkError::from_errno("rte_eal_remote_launch", -ret));
        }
        self.launched.borrow_mut().push(lcore);
        Ok(())
    }
}

extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Box<Job>` leaked by `spawn`, reclaimed only here.
    let job = unsafe { Box::from_raw(arg.cast::<Job<'static>>()) };
    match catch_unwind(AssertUnwindSafe(job)) {
        Ok(()) => JOB_OK,
        Err(_) => JOB_PANICKED,
    }
}

struct WaitGuard<'a, 'scope, 'env>(&'a Scope<'scope, 'env>);

impl WaitGuard<'_, '_, '_> {
    fn wait_all(&self) -> Vec<u32> {
        let mut panicked = Vec::new();
        for lcore in self.0.launched.borrow_mut().drain(..) {
            // SAFETY: called on the main lcore for an lcore we launched.
            if unsafe { dpdk_sys::rte_eal_wait_lcore(lcore) } == JOB_PANICKED {
                panicked.push(lcore);
            }
        }
        panicked
    }
}

impl Drop for WaitGuard<'_, '_, '_> {
    fn drop(&mut self) {
        self.wait_all();
    }
}
