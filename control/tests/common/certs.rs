//! Test certificates (openssl): a CA, lbd's server certificate for
//! 127.0.0.1, client certificates of that CA and of an unknown one; and lbd
//! started with both listeners, its TLS one on 127.0.0.1.

use super::process::Lbd;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Certificates for one test: a CA, lbd's server certificate for 127.0.0.1,
/// a client certificate from the same CA, and one from an unknown CA.
pub fn make_certs(dir: &Path) {
    let script = r#"
set -e
key() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$1" 2>/dev/null; }
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=lb-test-ca 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout rogue-ca.key -out rogue-ca.pem -days 2 -subj /CN=rogue-ca 2>/dev/null
key server; key client; key rogue
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' > server.ext
printf 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n' > client.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile server.ext 2>/dev/null
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 -extfile client.ext 2>/dev/null
openssl x509 -req -in rogue.csr -CA rogue-ca.pem -CAkey rogue-ca.key -CAcreateserial -out rogue.pem -days 2 -extfile client.ext 2>/dev/null
"#;
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "making test certificates: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A free TCP port on 127.0.0.1 (bound, then released for lbd).
pub fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// lbd with its Unix socket and its TCP listener on 127.0.0.1 (mutual TLS
/// with the certificates `make_certs` wrote into `dir`).
pub struct TlsLbd {
    pub lbd: Lbd,
    /// host:port of the TLS listener.
    pub addr: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsLbd {
    pub fn start(dir: &Path, tag: &str) -> TlsLbd {
        make_certs(dir);
        let p = |f: &str| dir.join(f).display().to_string();
        let addr = free_addr();
        let lbd = Lbd::start_with(
            dir,
            tag,
            &[
                "--grpc-listen",
                &addr,
                "--tls-cert",
                &p("server.pem"),
                "--tls-key",
                &p("server.key"),
                "--tls-client-ca",
                &p("ca.pem"),
            ],
        );
        TlsLbd {
            lbd,
            addr,
            ca: dir.join("ca.pem"),
            cert: dir.join("client.pem"),
            key: dir.join("client.key"),
        }
    }
}
