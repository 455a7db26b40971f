//! A failing disk under a running lbd: its state directory full (a small
//! tmpfs, filled) and then read-only (remounted so). A change is refused
//! with a reason naming the state file, nothing is half-applied (the state
//! file, the configuration and its revision as before), and forwarding goes
//! on (the workers keep receiving). Once the disk recovers, the same change
//! is accepted.

mod common;
use common::process::Lbd;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted for the test, unmounted when it ends.
struct Disk(PathBuf);

impl Disk {
    fn mount(at: &Path, size: &str) -> Disk {
        std::fs::create_dir_all(at).unwrap();
        sh(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "tmpfs",
            &at.display().to_string(),
        ]);
        Disk(at.to_path_buf())
    }

    fn remount(&self, mode: &str) {
        sh(&[
            "mount",
            "-o",
            &format!("remount,{mode}"),
            &self.0.display().to_string(),
        ]);
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rx_packets(lbd: &Lbd) -> u64 {
    lbd.json(&["stats"])["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["rx_packets"].as_u64().unwrap())
        .sum()
}

#[test]
fn a_full_or_read_only_state_disk_refuses_changes_and_forwarding_goes_on() {
    let dir = common::temp_dir("disk");
    let disk = Disk::mount(&dir.join("disk"), "256k");
    let state = disk.0.join("lb.toml");
    let lbd = Lbd::start_with_state(&dir, &state, "disk", &[]);
    lbd.ok(&["vip", "add", "198.51.100.10:443/tcp", "--table-size", "251"]);
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(saved.contains("198.51.100.10"), "{saved}");
    let before = lbd.json(&["info"])["config_revision"].as_u64().unwrap();
    let exported = lbd.ok(&["export"]);

    let refused = |why: &str| {
        let rx = rx_packets(&lbd);
        let e = lbd.err(&["vip", "add", "198.51.100.11:443/tcp", "--table-size", "251"]);
        assert!(
            e.contains("state file") && e.contains(&state.display().to_string()) && e.contains(why),
            "the refusal names the state file and why: {e}"
        );
        assert!(
            e.contains("undone") && e.contains("(Unavailable)"),
            "refused by lbd, not unreachable: {e}"
        );
        assert_eq!(lbd.ok(&["export"]), exported, "nothing half-applied");
        assert_eq!(
            lbd.json(&["info"])["config_revision"].as_u64(),
            Some(before)
        );
        assert_eq!(
            std::fs::read_to_string(&state).unwrap(),
            saved,
            "the file as it was"
        );
        assert!(rx_packets(&lbd) > rx, "the workers keep receiving");
    };

    // Full: a file takes every block left.
    let fill = disk.0.join("fill");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", &format!("of={}", fill.display()), "bs=4k"])
        .output()
        .unwrap();
    refused("No space left on device");
    std::fs::remove_file(&fill).unwrap();
    lbd.ok(&["vip", "add", "198.51.100.11:443/tcp", "--table-size", "251"]);
    assert_eq!(
        lbd.json(&["info"])["config_revision"].as_u64(),
        Some(before + 1)
    );

    // Read-only.
    let saved = std::fs::read_to_string(&state).unwrap();
    let exported = lbd.ok(&["export"]);
    disk.remount("ro");
    let rx = rx_packets(&lbd);
    let e = lbd.err(&["vip", "add", "198.51.100.12:443/tcp", "--table-size", "251"]);
    assert!(
        e.contains(&state.display().to_string()) && e.contains("Read-only file system"),
        "{e}"
    );
    assert_eq!(lbd.ok(&["export"]), exported);
    assert_eq!(std::fs::read_to_string(&state).unwrap(), saved);
    assert!(rx_packets(&lbd) > rx);
    disk.remount("rw");
    lbd.ok(&["vip", "add", "198.51.100.12:443/tcp", "--table-size", "251"]);
    let vips = lbd.json(&["vip", "list"]);
    assert_eq!(vips.as_array().unwrap().len(), 3, "{vips}");
    let log = lbd.stop();
    assert!(log.contains("state file not written"), "{log}");
    drop(disk);
    let _ = std::fs::remove_dir_all(&dir);
}
