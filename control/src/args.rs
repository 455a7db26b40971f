//! Command line: `lbd [EAL options] -- [lbd options]`, as every DPDK application.

use anyhow::{Context, Result};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "lbd",
    about = "Layer-4 DR load balancer daemon",
    override_usage = "lbd [EAL options] -- --port NAME [OPTIONS]"
)]
pub struct Options {
    /// The DPDK port to serve: a device name (net_pcap0, 0000:01:00.0) or a port number.
    #[arg(long)]
    pub port: String,
    /// Static next hop: frames to Ethernet destination DST are sent to NEXT (DST=NEXT, MACs as aa:bb:cc:dd:ee:ff). Repeatable.
    #[arg(long = "route", value_name = "DST=NEXT", value_parser = parse_route)]
    pub routes: Vec<([u8; 6], [u8; 6])>,
    /// Mbufs in the packet pool.
    #[arg(long, default_value_t = 8191)]
    pub mbufs: u32,
    /// RX descriptors per queue.
    #[arg(long, default_value_t = 1024)]
    pub rx_desc: u16,
    /// TX descriptors per queue.
    #[arg(long, default_value_t = 1024)]
    pub tx_desc: u16,
    /// Stop after this many milliseconds without a received packet (pcap replay).
    #[arg(long, value_name = "MS")]
    pub exit_idle_ms: Option<u64>,
    /// Log the counters every N seconds.
    #[arg(long, value_name = "SECONDS")]
    pub stats_interval_s: Option<u64>,
    /// Print the final counters as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Split at the first `--`: EAL's arguments before, ours after.
pub fn parse(argv: &[String]) -> Result<(Vec<String>, Options)> {
    let (eal, ours) = match argv.iter().position(|a| a == "--") {
        Some(i) => (&argv[..i], &argv[i + 1..]),
        None => (&argv[..0], argv),
    };
    let opts =
        Options::try_parse_from(std::iter::once("lbd").chain(ours.iter().map(String::as_str)))
            .map_err(|e| {
                if matches!(
                    e.kind(),
                    clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
                ) {
                    print!("{e}");
                    std::process::exit(0);
                }
                e
            })
            .context("lbd options (after --)")?;
    Ok((eal.to_vec(), opts))
}

fn parse_route(s: &str) -> Result<([u8; 6], [u8; 6]), String> {
    let (dst, next) = s
        .split_once('=')
        .ok_or_else(|| format!("route {s:?}: expected DST=NEXT"))?;
    Ok((parse_mac(dst)?, parse_mac(next)?))
}

pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts
            .next()
            .ok_or_else(|| format!("MAC {s:?}: expected six hex bytes separated by ':'"))?;
        if p.len() != 2 {
            return Err(format!("MAC {s:?}: byte {p:?} is not two hex digits"));
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| format!("MAC {s:?}: byte {p:?} is not hex"))?;
    }
    if parts.next().is_some() {
        return Err(format!("MAC {s:?}: more than six bytes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn splits_eal_and_lbd_arguments() {
        let (eal, o) = parse(&v(&[
            "-l",
            "0,1",
            "--no-pci",
            "--",
            "--port",
            "net_pcap0",
            "--route",
            "02:00:00:00:00:aa=02:00:00:00:00:bb",
        ]))
        .unwrap();
        assert_eq!(eal, v(&["-l", "0,1", "--no-pci"]));
        assert_eq!(o.port, "net_pcap0");
        assert_eq!(
            o.routes,
            vec![([2, 0, 0, 0, 0, 0xaa], [2, 0, 0, 0, 0, 0xbb])]
        );
    }

    #[test]
    fn bad_mac_names_the_problem() {
        let e = parse(&v(&[
            "--",
            "--port",
            "p",
            "--route",
            "02:00:00:00:00=02:00:00:00:00:bb",
        ]))
        .unwrap_err();
        assert!(format!("{e:#}").contains("expected six hex bytes"), "{e:#}");
        let e = parse(&v(&[
            "--",
            "--port",
            "p",
            "--route",
            "02:00:00:00:00:zz=02:00:00:00:00:bb",
        ]))
        .unwrap_err();
        assert!(format!("{e:#}").contains("not hex"), "{e:#}");
        assert!(parse_mac("02:00:00:00:00:00:01").is_err());
        assert!(
            parse(&v(&["--", "--route", "a=b"])).is_err(),
            "port is required"
        );
    }
}
