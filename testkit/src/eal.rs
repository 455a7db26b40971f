//! EAL arguments for tests. Every test process gets its own `--file-prefix`
//! and `--no-pci`. Memory comes from hugepages with `--in-memory` (what
//! `make test` reserves through `hugepages/`); a test fails with the reason
//! when none are free. `LB_EAL_NO_HUGE=1` runs on plain memory instead
//! (`--no-huge --no-shconf`), as an explicit choice, never a silent fallback.

const MEM_MB: u32 = 256;

/// EAL arguments for a test process: `lcores` as for `--lcores`
/// (e.g. "0" or "0@0,1@1,2@1"), and the virtual devices to create.
pub fn eal_args(prefix: &str, lcores: &str, vdevs: &[&str]) -> Vec<String> {
    let pid = std::process::id();
    let mut args = vec![
        "--lcores".to_string(),
        lcores.to_string(),
        "--no-pci".into(),
        "--file-prefix".into(),
        format!("lbtest-{prefix}-{pid}"),
        "--log-level".into(),
        "lib.eal:warning".into(),
        "-m".into(),
        MEM_MB.to_string(),
    ];
    args.extend(memory_args());
    args.extend(vdevs.iter().map(|v| format!("--vdev={v}")));
    args
}

fn memory_args() -> Vec<String> {
    if std::env::var("LB_EAL_NO_HUGE").is_ok_and(|v| v == "1") {
        return vec!["--no-huge".into(), "--no-shconf".into()];
    }
    let free = hugepages_free_mb();
    assert!(
        free >= u64::from(MEM_MB),
        "this test needs {MEM_MB} MiB of free hugepages and {free} MiB are free: \
         run `make setup` (or `hugepages/hugepages.sh 1024` as root), \
         or set LB_EAL_NO_HUGE=1 to run EAL on plain memory"
    );
    vec!["--in-memory".into()]
}

fn hugepages_free_mb() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    field("HugePages_Free:") * field("Hugepagesize:") / 1024
}
