//! The host's routes for checks via the VIP: for the kernel to send a
//! check to VIP:port through the exception interface (where the dataplane
//! steers it to the backend its source port names,
//! `lb_core::forward::from_kernel`), every VIP address gets a host
//! route on that interface and a permanent neighbour entry at the port's
//! MAC (nobody answers ARP for a VIP on the tap side):
//!
//! ```text
//! ip route replace VIP/32 dev <iface>      (/128 for IPv6)
//! ip neigh replace VIP lladdr <port MAC> dev <iface> nud permanent
//! ```
//!
//! The monitor reconciles them with the VIP addresses of the desired state
//! once a second: an address added gets both, one removed loses both, and
//! a command that failed is tried again at the next round. An entry
//! removed from outside lbd (or flushed by a link flap) is not noticed
//! until the address is removed and added again. They go away with the
//! interface when lbd exits.

use std::collections::BTreeSet;
use std::net::IpAddr;

use lb_core::packet::MacAddr;

/// Runs one command (`ip ...`); Err with what it said.
pub type Runner = Box<dyn FnMut(&[String]) -> Result<(), String> + Send>;

pub struct VipRoutes {
    iface: String,
    mac: MacAddr,
    installed: BTreeSet<IpAddr>,
    run: Runner,
}

impl VipRoutes {
    /// Routes on `iface`, neighbour entries at `mac`, set with `ip`.
    pub fn new(iface: &str, mac: MacAddr) -> VipRoutes {
        VipRoutes::with_runner(iface, mac, Box::new(run_command))
    }

    pub fn with_runner(iface: &str, mac: MacAddr, run: Runner) -> VipRoutes {
        VipRoutes {
            iface: iface.to_string(),
            mac,
            installed: BTreeSet::new(),
            run,
        }
    }

    /// The addresses whose route and neighbour entry are in place.
    pub fn installed(&self) -> &BTreeSet<IpAddr> {
        &self.installed
    }

    /// Install what `wanted` adds, remove what it no longer has; returns
    /// the errors (those addresses are tried again next time).
    pub fn reconcile(&mut self, wanted: &BTreeSet<IpAddr>) -> Vec<String> {
        let mut errors = Vec::new();
        let gone: Vec<IpAddr> = self.installed.difference(wanted).copied().collect();
        for addr in gone {
            // Removal errors are not retried: the entry may already be gone.
            for cmd in self.remove_commands(addr) {
                if let Err(e) = (self.run)(&cmd) {
                    errors.push(e);
                }
            }
            self.installed.remove(&addr);
        }
        let new: Vec<IpAddr> = wanted.difference(&self.installed).copied().collect();
        for addr in new {
            let mut ok = true;
            for cmd in self.add_commands(addr) {
                if let Err(e) = (self.run)(&cmd) {
                    errors.push(e);
                    ok = false;
                }
            }
            if ok {
                self.installed.insert(addr);
            }
        }
        errors
    }

    fn add_commands(&self, addr: IpAddr) -> [Vec<String>; 2] {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        [
            words(&format!(
                "ip route replace {addr}/{prefix} dev {}",
                self.iface
            )),
            words(&format!(
                "ip neigh replace {addr} lladdr {} dev {} nud permanent",
                self.mac, self.iface
            )),
        ]
    }

    fn remove_commands(&self, addr: IpAddr) -> [Vec<String>; 2] {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        [
            words(&format!("ip neigh del {addr} dev {}", self.iface)),
            words(&format!("ip route del {addr}/{prefix} dev {}", self.iface)),
        ]
    }
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

fn run_command(cmd: &[String]) -> Result<(), String> {
    match std::process::Command::new(&cmd[0]).args(&cmd[1..]).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "{}: {}",
            cmd.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("{}: {e}", cmd.join(" "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn routes_follow_the_vip_addresses_and_failures_are_retried() {
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let fail = Arc::new(Mutex::new(false));
        let (l, f) = (Arc::clone(&log), Arc::clone(&fail));
        let mut r = VipRoutes::with_runner(
            "lbk0",
            MacAddr([2, 0, 0, 0, 0, 1]),
            Box::new(move |cmd| {
                l.lock().unwrap().push(cmd.join(" "));
                if *f.lock().unwrap() {
                    Err("RTNETLINK answers: Network is down".into())
                } else {
                    Ok(())
                }
            }),
        );
        let v4: IpAddr = "198.51.100.10".parse().unwrap();
        let v6: IpAddr = "2001:db8::10".parse().unwrap();
        let take = || std::mem::take(&mut *log.lock().unwrap());
        assert!(r.reconcile(&[v4, v6].into()).is_empty());
        assert_eq!(
            take(),
            [
                "ip route replace 198.51.100.10/32 dev lbk0",
                "ip neigh replace 198.51.100.10 lladdr 02:00:00:00:00:01 dev lbk0 nud permanent",
                "ip route replace 2001:db8::10/128 dev lbk0",
                "ip neigh replace 2001:db8::10 lladdr 02:00:00:00:00:01 dev lbk0 nud permanent",
            ]
        );
        // Nothing changed: nothing run.
        assert!(r.reconcile(&[v4, v6].into()).is_empty());
        assert!(take().is_empty());
        // One removed.
        assert!(r.reconcile(&[v4].into()).is_empty());
        assert_eq!(
            take(),
            [
                "ip neigh del 2001:db8::10 dev lbk0",
                "ip route del 2001:db8::10/128 dev lbk0"
            ]
        );
        // A failed add is tried again.
        *fail.lock().unwrap() = true;
        assert_eq!(r.reconcile(&[v4, v6].into()).len(), 2);
        assert_eq!(take().len(), 2);
        assert_eq!(r.installed(), &[v4].into());
        *fail.lock().unwrap() = false;
        assert!(r.reconcile(&[v4, v6].into()).is_empty());
        assert_eq!(take().len(), 2);
        assert_eq!(r.installed(), &[v4, v6].into());
    }
}
