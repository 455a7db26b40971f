//! quic-peer: the lab's QUIC server and client (quinn), for lbd's QUIC mode
//! (issue #19). A test tool: its client accepts any certificate (the
//! server's is self-signed, made at start) and must not be used to talk to
//! anything that matters.
//!
//! `quic-peer server --listen VIP:4433 --server-id 0a01 --id-len 2`: every
//! connection ID it issues carries the server id ([`quic_peer::cid`]). On
//! each bidirectional stream it reads a request `GET N\n` and answers with a
//! line naming itself (`--name`), then N bytes. `--tcp-check ADDR` also
//! listens on TCP there (accepts and closes) for lbd's health check.
//!
//! `quic-peer client --connect VIP:4433 --bytes N`: one (or `--connections
//! K`) connection, each one request of N bytes. `--rate-limit` throttles its
//! reads (flow control passes that on to the server), so a transfer lasts;
//! `--rebind-after B1,B2,...` moves the client to a new UDP socket bound to
//! `--rebind-to` (port 0: a new port) after each of those many bytes.
//! Prints `connected I NAME` once connection I knows its server, then per
//! connection `ok NAME BYTES rebinds=R` or `failed NAME KIND BYTES
//! rebinds=R` (KIND: reset, timeout, closed, short, ...); exits 0 iff every
//! connection is ok.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use quic_peer::cid::{parse_server_id, QuicLbConnectionIdGenerator};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{ConnectionError, Endpoint, EndpointConfig, IdleTimeout, TransportConfig, VarInt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

const ALPN: &[u8] = b"lab";
/// The IDs the server issues: byte 0, the id, random bytes.
const CID_LEN: usize = 8;
/// Short, so that a connection whose packets go astray fails fast.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// The client's keep-alive, well within the idle timeout.
const KEEP_ALIVE: Duration = Duration::from_millis(500);
/// The longest request line.
const MAX_REQUEST: usize = 64;

#[derive(Parser)]
#[command(
    name = "quic-peer",
    about = "QUIC test peer for lbd's QUIC mode (trusts any certificate: a test tool)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A server issuing QUIC-LB connection IDs with its server id.
    Server(ServerArgs),
    /// A client that downloads and may move to another socket mid-transfer.
    Client(ClientArgs),
}

#[derive(clap::Args)]
struct ServerArgs {
    /// UDP address to listen on (in DR: the VIP and its port).
    #[arg(long)]
    listen: SocketAddr,
    /// The server id, hex ("0a01"), as given to lbctl.
    #[arg(long)]
    server_id: String,
    /// The VIP's server-id length in bytes (the id must be this long).
    #[arg(long, default_value_t = 2)]
    id_len: usize,
    /// Also a TCP listener here, accepting and closing (a health check's target).
    #[arg(long)]
    tcp_check: Option<SocketAddr>,
    /// The name the server gives in each answer.
    #[arg(long, default_value = "server")]
    name: String,
    /// Stateless-reset key, hex; the same on every server of a VIP, so that
    /// one server's reset of another's connection is believed.
    #[arg(long)]
    reset_key: Option<String>,
}

#[derive(clap::Args)]
struct ClientArgs {
    /// The server (the VIP) to connect to.
    #[arg(long)]
    connect: SocketAddr,
    /// Bytes to request on each connection.
    #[arg(long, default_value_t = 1_000_000)]
    bytes: u64,
    /// Read at most this many bytes a second per connection (0: no limit).
    #[arg(long, default_value_t = 0)]
    rate_limit: u64,
    /// Local address of the first socket.
    #[arg(long, default_value = "0.0.0.0:0")]
    bind: SocketAddr,
    /// Move to a new socket after each of these byte counts (comma separated).
    #[arg(long, value_delimiter = ',')]
    rebind_after: Vec<u64>,
    /// The new socket's local address (port 0: a new port each time).
    #[arg(long, default_value = "0.0.0.0:0")]
    rebind_to: SocketAddr,
    /// Separate connections, at most 32 at a time (rebinds move them all).
    #[arg(long, default_value_t = 1)]
    connections: usize,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Server(args) => runtime.block_on(server(args)),
        Command::Client(args) => {
            let all_ok = runtime.block_on(client(args))?;
            std::process::exit(if all_ok { 0 } else { 1 });
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport() -> Result<TransportConfig> {
    let mut t = TransportConfig::default();
    t.max_idle_timeout(Some(IdleTimeout::try_from(IDLE_TIMEOUT)?));
    Ok(t)
}

async fn server(args: ServerArgs) -> Result<()> {
    let server_id = parse_server_id(&args.server_id)?;
    if server_id.len() != args.id_len {
        bail!(
            "server id {} is {} bytes, the VIP's ids are {}",
            args.server_id,
            server_id.len(),
            args.id_len
        );
    }
    // Checked once here; the generator cannot fail afterwards.
    QuicLbConnectionIdGenerator::new(server_id.clone(), CID_LEN)?;
    let key_bytes = match &args.reset_key {
        Some(hex) => parse_server_id(hex).context("--reset-key")?,
        None => {
            let mut k = vec![0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut k)
                .map_err(|_| anyhow::anyhow!("no random numbers"))?;
            k
        }
    };
    let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key_bytes);
    let mut endpoint_config = EndpointConfig::new(Arc::new(reset_key));
    endpoint_config.cid_generator(move || {
        Box::new(
            QuicLbConnectionIdGenerator::new(server_id.clone(), CID_LEN).expect("checked at start"),
        )
    });

    let cert = rcgen::generate_simple_self_signed(vec!["lab".to_string()])?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut server_config =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    server_config.transport_config(Arc::new(transport()?));

    let socket = UdpSocket::bind(args.listen).with_context(|| format!("bind {}", args.listen))?;
    let endpoint = Endpoint::new(
        endpoint_config,
        Some(server_config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    if let Some(addr) = args.tcp_check {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind tcp {addr}"))?;
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                drop(stream);
            }
        });
    }
    println!(
        "quic-peer: {} listening on {} (server id {})",
        args.name, args.listen, args.server_id
    );
    let name: Arc<str> = args.name.into();
    while let Some(incoming) = endpoint.accept().await {
        let name = name.clone();
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(answer(send, recv, name.clone()));
            }
        });
    }
    Ok(())
}

/// One request: "GET N\n" in, the name line and N bytes out.
async fn answer(mut send: quinn::SendStream, mut recv: quinn::RecvStream, name: Arc<str>) {
    let Ok(request) = recv.read_to_end(MAX_REQUEST).await else {
        return;
    };
    let text = String::from_utf8_lossy(&request);
    let Some(n) = text
        .trim_end()
        .strip_prefix("GET ")
        .and_then(|n| n.parse::<u64>().ok())
    else {
        let _ = send.reset(VarInt::from_u32(1));
        return;
    };
    if send
        .write_all(format!("{name}\n").as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let chunk = vec![0u8; 64 * 1024];
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len() as u64) as usize;
        if send.write_all(&chunk[..k]).await.is_err() {
            return;
        }
        left -= k as u64;
    }
    let _ = send.finish();
    // Until the client has it all (or the connection is gone).
    let _ = send.stopped().await;
}

async fn client(args: ClientArgs) -> Result<bool> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(TrustAny(provider())))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    let mut t = transport()?;
    // A small window: the server cannot run far ahead of the throttled
    // reads, so a rebind happens mid-transfer, not after it.
    t.stream_receive_window(VarInt::from_u32(256 * 1024));
    t.receive_window(VarInt::from_u32(512 * 1024));
    // A waiting reader sends nothing on its own: keep-alives keep packets
    // going, so a connection whose server is gone learns it (a stateless
    // reset from whichever server gets them) rather than idling out.
    t.keep_alive_interval(Some(KEEP_ALIVE));
    config.transport_config(Arc::new(t));

    let socket = UdpSocket::bind(args.bind).with_context(|| format!("bind {}", args.bind))?;
    let endpoint = Endpoint::new(
        EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    let args = Arc::new(args);
    let rebinds = Arc::new(AtomicUsize::new(0));
    let limit = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 1..=args.connections {
        let (endpoint, config, args, rebinds, limit) = (
            endpoint.clone(),
            config.clone(),
            args.clone(),
            rebinds.clone(),
            limit.clone(),
        );
        tasks.spawn(async move {
            let _permit = limit.acquire().await;
            let mut t = Transfer::default();
            let result = transfer(&endpoint, config, &args, i, &rebinds, &mut t).await;
            let rebinds = rebinds.load(Ordering::Relaxed);
            match result {
                Ok(()) => println!("ok {} {} rebinds={rebinds}", t.name, t.bytes),
                Err(ref kind) => println!("failed {} {kind} {} rebinds={rebinds}", t.name, t.bytes),
            }
            result.is_ok()
        });
    }
    let mut all_ok = true;
    while let Some(ok) = tasks.join_next().await {
        all_ok &= ok?;
    }
    endpoint.wait_idle().await;
    Ok(all_ok)
}

struct Transfer {
    name: String,
    bytes: u64,
}

impl Default for Transfer {
    fn default() -> Self {
        Transfer {
            name: "-".to_string(),
            bytes: 0,
        }
    }
}

/// One connection's request and read; the error is a one-word kind.
async fn transfer(
    endpoint: &Endpoint,
    config: quinn::ClientConfig,
    args: &ClientArgs,
    index: usize,
    rebinds: &AtomicUsize,
    t: &mut Transfer,
) -> Result<(), String> {
    let conn = endpoint
        .connect_with(config, args.connect, "lab")
        .map_err(|e| format!("connect({e})"))?
        .await
        .map_err(|e| kind(&e))?;
    let result = read(&conn, endpoint, args, index, rebinds, t).await;
    conn.close(VarInt::from_u32(0), b"done");
    result
}

async fn read(
    conn: &quinn::Connection,
    endpoint: &Endpoint,
    args: &ClientArgs,
    index: usize,
    rebinds: &AtomicUsize,
    t: &mut Transfer,
) -> Result<(), String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| kind(&e))?;
    send.write_all(format!("GET {}\n", args.bytes).as_bytes())
        .await
        .map_err(|e| write_kind(&e))?;
    send.finish().map_err(|_| "closed-stream".to_string())?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut line = Vec::new();
    let mut next_rebind = args.rebind_after.iter().copied().peekable();
    let start = Instant::now();
    loop {
        let n = match recv.read(&mut buf).await {
            Ok(Some(n)) => n,
            Ok(None) => break,
            Err(e) => return Err(read_kind(&e)),
        };
        let mut data = &buf[..n];
        if t.name == "-" {
            match data.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    line.extend_from_slice(&data[..end]);
                    t.name = String::from_utf8_lossy(&line).into_owned();
                    println!("connected {index} {}", t.name);
                    data = &data[end + 1..];
                }
                None => {
                    line.extend_from_slice(data);
                    if line.len() > MAX_REQUEST {
                        return Err("no-name".to_string());
                    }
                    continue;
                }
            }
        }
        t.bytes += data.len() as u64;
        while next_rebind.peek().is_some_and(|&after| t.bytes >= after) {
            next_rebind.next();
            let socket = UdpSocket::bind(args.rebind_to).map_err(|e| format!("bind({e})"))?;
            endpoint
                .rebind(socket)
                .map_err(|e| format!("rebind({e})"))?;
            rebinds.fetch_add(1, Ordering::Relaxed);
        }
        if args.rate_limit > 0 {
            let due = Duration::from_secs_f64(t.bytes as f64 / args.rate_limit as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    if t.bytes == args.bytes {
        Ok(())
    } else {
        Err("short".to_string())
    }
}

fn kind(e: &ConnectionError) -> String {
    match e {
        ConnectionError::Reset => "reset",
        ConnectionError::TimedOut => "timeout",
        ConnectionError::ConnectionClosed(_) => "closed",
        ConnectionError::ApplicationClosed(_) => "app-closed",
        ConnectionError::TransportError(_) => "transport",
        ConnectionError::VersionMismatch => "version",
        ConnectionError::LocallyClosed => "local",
        ConnectionError::CidsExhausted => "cids",
    }
    .to_string()
}

fn read_kind(e: &quinn::ReadError) -> String {
    match e {
        quinn::ReadError::ConnectionLost(e) => kind(e),
        quinn::ReadError::Reset(_) => "stream-reset".to_string(),
        other => format!("read({other})").replace(' ', "-"),
    }
}

fn write_kind(e: &quinn::WriteError) -> String {
    match e {
        quinn::WriteError::ConnectionLost(e) => kind(e),
        other => format!("write({other})").replace(' ', "-"),
    }
}

/// Trusts any server certificate (checks only that the handshake's
/// signatures are sound): the lab's servers make theirs at start. A test
/// tool's verifier; nothing else should do this.
#[derive(Debug)]
struct TrustAny(Arc<CryptoProvider>);

impl ServerCertVerifier for TrustAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
