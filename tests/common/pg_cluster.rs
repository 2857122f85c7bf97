//! A PostgreSQL cluster of the test's own (`initdb`, `pg_ctl` on a free port),
//! so a test can stop the server, keep it down, and start it again without
//! touching the one other tests share.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A private cluster; stopped and deleted when dropped.
pub struct PrivatePg {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    running: bool,
}

/// Where Debian keeps the server's programs (`/usr/lib/postgresql/NN/bin`).
pub fn server_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server installed (scripts/up)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("a PostgreSQL server version with pg_ctl")
}

/// Whether the tests run as root (server programs then run as `postgres`).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a server program, as `postgres` when we are root (initdb refuses root).
pub fn run(program: &Path, args: &[&str]) {
    let status = if is_root() {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
    } else {
        Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
    }
    .expect("run a PostgreSQL program");
    assert!(status.success(), "{} {args:?} failed", program.display());
}

/// A loopback port nothing listens on (for the moment).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl PrivatePg {
    /// Initialises a cluster (trust auth, database `keel`) and starts it.
    pub fn start() -> Self {
        Self::init(None)
    }

    /// The same, but every connection over TCP must give `password` (scram).
    pub fn start_with_password(password: &str) -> Self {
        Self::init(Some(password))
    }

    fn init(password: Option<&str>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("keel-pg-")
            .tempdir()
            .expect("temp dir");
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success());
        }
        let bin = server_bin();
        let data = dir.path().join("data");
        let data_str = data.to_string_lossy().into_owned();
        match password {
            None => run(
                &bin.join("initdb"),
                &[
                    "-D",
                    &data_str,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                ],
            ),
            Some(password) => {
                let pwfile = dir.path().join("pw");
                std::fs::write(&pwfile, password).expect("password file");
                if is_root() {
                    let _ = Command::new("chown")
                        .args(["postgres:postgres"])
                        .arg(&pwfile)
                        .status();
                }
                let pwfile = pwfile.to_string_lossy().into_owned();
                run(
                    &bin.join("initdb"),
                    &[
                        "-D",
                        &data_str,
                        "-U",
                        "postgres",
                        "--auth-local=trust",
                        "--auth-host=scram-sha-256",
                        "--pwfile",
                        &pwfile,
                        "--no-sync",
                    ],
                );
            }
        }
        let mut pg = Self {
            port: free_port(),
            dir,
            bin,
            running: false,
        };
        pg.resume();
        // Over the cluster's socket, which trusts, so a password cluster needs
        // none here.
        let socket = pg.dir.path().to_string_lossy().into_owned();
        run(
            &pg.bin.join("createdb"),
            &[
                "-h",
                &socket,
                "-p",
                &pg.port.to_string(),
                "-U",
                "postgres",
                "keel",
            ],
        );
        pg
    }

    /// A trust cluster that takes TCP connections over TLS only, with the
    /// server certificate of `certs` and client certificates signed by its CA
    /// (`clientcert=verify-ca`); plain TCP is rejected by pg_hba.conf.
    pub fn start_with_tls(certs: &super::certs::Certs) -> Self {
        let mut pg = Self::init(None);
        let data = std::path::PathBuf::from(pg.data());
        for (from, to) in [
            ("server.pem", "server.crt"),
            ("server.key", "server.key"),
            ("ca.pem", "root.crt"),
        ] {
            let target = data.join(to);
            std::fs::copy(certs.path(from), &target).expect("copy certificate");
            let mut permissions = std::fs::metadata(&target).unwrap().permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o600);
            std::fs::set_permissions(&target, permissions).unwrap();
            if is_root() {
                let _ = Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(&target)
                    .status();
            }
        }
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("postgresql.conf");
        std::io::Write::write_all(
            &mut conf,
            b"ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nssl_ca_file = 'root.crt'\n",
        )
        .unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust clientcert=verify-ca\n\
             hostssl all all ::1/128 trust clientcert=verify-ca\n\
             hostnossl all all 0.0.0.0/0 reject\n\
             hostnossl all all ::/0 reject\n",
        )
        .unwrap();
        pg.stop();
        pg.resume();
        pg
    }

    /// `postgres://postgres@127.0.0.1:PORT/keel`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/keel", self.port)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_string_lossy().into_owned()
    }

    /// Starts the server (again) on its port and waits until it accepts.
    pub fn resume(&mut self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").to_string_lossy().into_owned();
        run(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
        self.running = true;
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "private PostgreSQL did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server at once, cutting every connection (`-m fast`, as a
    /// failover or an operator's restart does).
    pub fn stop(&mut self) {
        if self.running {
            run(
                &self.bin.join("pg_ctl"),
                &["-D", &self.data(), "-m", "fast", "-w", "stop"],
            );
            self.running = false;
        }
    }

    /// Runs SQL on the test's own connection.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(
            // The cluster's socket, which trusts even where TCP wants a password.
            &format!(
                "host={} port={} user=postgres dbname=keel",
                self.dir.path().display(),
                self.port
            ),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connect to the private cluster");
        tokio::spawn(connection);
        client
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        if self.running {
            let pg_ctl = self.bin.join("pg_ctl");
            let args = ["-D", &self.data(), "-m", "immediate", "stop"];
            let mut command = if is_root() {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(&pg_ctl);
                c
            } else {
                Command::new(&pg_ctl)
            };
            let _ = command
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
