//! Generates bindings to the system DPDK and builds the C shim. Both use the
//! flags `pkg-config --cflags libdpdk` gives, unchanged.

use std::env;
use std::path::PathBuf;
use std::process::exit;

const PACKAGES: &str = "apt-get install libdpdk-dev dpdk pkg-config libclang-dev";

fn fail(what: &str) -> ! {
    eprintln!(
        "error: dpdk-sys: {what}; on Debian 12 install the build dependencies with: {PACKAGES}"
    );
    exit(1);
}

fn main() {
    println!("cargo:rerun-if-changed=src/shim.h");
    println!("cargo:rerun-if-changed=src/shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    if which("pkg-config").is_none() {
        fail("pkg-config is not installed");
    }
    // Emits the link flags for every library `pkg-config --libs libdpdk` names.
    if let Err(e) = pkg_config::Config::new()
        .atleast_version("22.11")
        .probe("libdpdk")
    {
        fail(&format!(
            "libdpdk >= 22.11 not found by pkg-config ({})",
            first_line(&e.to_string())
        ));
    }
    let cflags = cflags();

    let mut shim = cc::Build::new();
    shim.file("src/shim.c").opt_level(2).warnings(true);
    for flag in &cflags {
        shim.flag(flag);
    }
    shim.compile("lbdpdkshim");

    let builder = bindgen::Builder::default()
        .header("src/shim.h")
        .clang_args(&cflags)
        .allowlist_function(ALLOWED_FUNCTIONS)
        .allowlist_type("rte_eth_conf|rte_eth_dev_info|rte_eth_link|rte_eth_xstat|rte_eth_xstat_name|rte_eth_stats|rte_ether_addr|rte_mbuf|rte_mempool|rte_eth_rxconf|rte_eth_txconf")
        .allowlist_var("RTE_MAX_LCORE|RTE_MAX_ETHPORTS|RTE_ETH_XSTATS_NAME_SIZE|RTE_ETHER_ADDR_LEN|RTE_ETH_LINK_UP|RTE_ETH_LINK_DOWN|RTE_PKTMBUF_HEADROOM|RTE_MEMPOOL_CACHE_MAX_SIZE|SOCKET_ID_ANY|LCORE_ID_ANY|rte_eth_rx_mq_mode_.*|rte_eth_tx_mq_mode_.*")
        .derive_debug(false)
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(true)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));

    // bindgen panics when it cannot load libclang: turn that into one clear line.
    std::panic::set_hook(Box::new(|_| {}));
    let generated =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || builder.generate()));
    let _ = std::panic::take_hook();
    let bindings = match generated {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => fail(&format!("bindgen could not parse the DPDK headers ({e})")),
        Err(_) => fail("bindgen could not load libclang"),
    };
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR set by cargo"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .unwrap_or_else(|e| fail(&format!("cannot write bindings: {e}")));
}

const ALLOWED_FUNCTIONS: &str = concat!(
    "lb_.*",
    "|rte_eal_init|rte_eal_cleanup|rte_eal_remote_launch|rte_eal_wait_lcore|rte_eal_get_lcore_state",
    "|rte_strerror|rte_socket_id|rte_lcore_count|rte_get_main_lcore|rte_get_next_lcore|rte_lcore_to_socket_id",
    "|rte_get_tsc_hz|rte_dev_probe",
    "|rte_pktmbuf_pool_create|rte_mempool_free|rte_mempool_avail_count|rte_mempool_in_use_count|rte_pktmbuf_free_bulk",
    "|rte_eth_dev_count_avail|rte_eth_dev_get_port_by_name|rte_eth_dev_get_name_by_port|rte_eth_dev_is_valid_port",
    "|rte_eth_dev_info_get|rte_eth_dev_configure|rte_eth_dev_start|rte_eth_dev_stop|rte_eth_dev_close",
    "|rte_eth_dev_socket_id|rte_eth_dev_set_mtu|rte_eth_dev_adjust_nb_rx_tx_desc",
    "|rte_eth_rx_queue_setup|rte_eth_tx_queue_setup|rte_eth_promiscuous_enable|rte_eth_macaddr_get",
    "|rte_eth_link_get_nowait|rte_eth_xstats_get_names|rte_eth_xstats_get|rte_eth_stats_get",
);

/// `pkg-config --cflags libdpdk`, split into arguments; it already carries
/// `-include rte_config.h -march=...` and every include path.
fn cflags() -> Vec<String> {
    let out = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot run pkg-config: {e}")));
    if !out.status.success() {
        fail("pkg-config --cflags libdpdk failed");
    }
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn which(cmd: &str) -> Option<PathBuf> {
    env::var_os("PATH").and_then(|paths| {
        env::split_paths(&paths)
            .map(|p| p.join(cmd))
            .find(|p| p.is_file())
    })
}

fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s).trim()
}
