//! Certificates a test makes for its own TLS servers, with `openssl`: a CA, a
//! server certificate for the given hosts, a client certificate, and a second
//! CA that signed none of them (the wrong one to trust).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The files, all PEM, in a temporary directory of their own.
pub struct Certs {
    pub dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

const CURVE: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

fn ca(dir: &Path, name: &str) {
    let mut args = vec!["req", "-x509"];
    args.extend(CURVE);
    let key = format!("{name}.key");
    let pem = format!("{name}.pem");
    let subject = format!("/CN=keel test {name}");
    args.extend([
        "-keyout",
        &key,
        "-out",
        &pem,
        "-days",
        "2",
        "-subj",
        &subject,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &args);
}

fn leaf(dir: &Path, name: &str, subject: &str, extensions: &str) {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let pem = format!("{name}.pem");
    let ext = format!("{name}.ext");
    std::fs::write(dir.join(&ext), extensions).unwrap();
    let mut args = vec!["req"];
    args.extend(CURVE);
    args.extend(["-keyout", &key, "-out", &csr, "-subj", subject]);
    openssl(dir, &args);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
}

impl Certs {
    /// A CA, a server certificate for `hosts` (names or IP addresses), a client
    /// certificate for `client_user`, and an unrelated CA.
    pub fn make(hosts: &[&str], client_user: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("keel-certs-")
            .tempdir()
            .unwrap();
        let path = dir.path();
        ca(path, "ca");
        ca(path, "other-ca");
        let san: Vec<String> = hosts
            .iter()
            .map(|h| {
                if h.parse::<std::net::IpAddr>().is_ok() {
                    format!("IP:{h}")
                } else {
                    format!("DNS:{h}")
                }
            })
            .collect();
        leaf(
            path,
            "server",
            &format!("/CN={}", hosts[0]),
            &format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
                san.join(",")
            ),
        );
        leaf(
            path,
            "client",
            &format!("/CN={client_user}"),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
        );
        Self { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}
