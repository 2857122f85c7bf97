//! A private PgBouncer in front of the shared PostgreSQL, taking TLS clients
//! only (`client_tls_sslmode = require`), in transaction pooling as production
//! runs it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::certs::Certs;
use super::db::PG_PORT;
use super::pg_cluster::is_root;

pub struct TlsPgBouncer {
    pub port: u16,
    process: Child,
    _dir: tempfile::TempDir,
}

impl TlsPgBouncer {
    pub fn start(certs: &Certs) -> Self {
        let port = super::pg_cluster::free_port();
        let dir = tempfile::Builder::new()
            .prefix("keel-pgbouncer-")
            .tempdir()
            .unwrap();
        let path = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
        for file in ["server.pem", "server.key", "ca.pem"] {
            std::fs::copy(certs.path(file), dir.path().join(file)).unwrap();
        }
        std::fs::write(
            dir.path().join("pgbouncer.ini"),
            format!(
                "[databases]\n* = host=127.0.0.1 port={PG_PORT}\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {}\npool_mode = transaction\n\
                 max_client_conn = 200\ndefault_pool_size = 10\n\
                 ignore_startup_parameters = extra_float_digits\n\
                 client_tls_sslmode = require\nclient_tls_cert_file = {}\n\
                 client_tls_key_file = {}\nclient_tls_ca_file = {}\n\
                 logfile = {}\n",
                path("userlist.txt"),
                path("server.pem"),
                path("server.key"),
                path("ca.pem"),
                path("pgbouncer.log"),
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("userlist.txt"), "\"postgres\" \"\"\n").unwrap();
        let binary = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("pgbouncer is installed (scripts/up --test-tools)");
        let mut command = if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", binary]);
            c
        } else {
            Command::new(binary)
        };
        // Its own process group, so the stop reaches PgBouncer under runuser.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let process = command
            .arg(path("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "private PgBouncer did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            port,
            process,
            _dir: dir,
        }
    }
}

impl Drop for TlsPgBouncer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.process.id())])
            .status();
        let _ = self.process.wait();
    }
}
