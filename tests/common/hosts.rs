//! Hosts of the test's own: network namespaces joined by veth links it makes
//! (`ip netns`, as root). One namespace holds Redis and PostgreSQL; each node
//! namespace holds a Keel instance, with one link to that database host and
//! one to the test's own namespace, where the simulator runs. Taking a node's
//! database link down cuts it from Redis and PostgreSQL while the exchange
//! stays reachable. Everything is removed when dropped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The second octet of every address here (10.213.x.y).
const NET: &str = "10.213";

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The namespaces and links of one test.
pub struct Hosts {
    tag: String,
    nodes: Vec<usize>,
    servers: Vec<Child>,
    pub dir: tempfile::TempDir,
}

impl Hosts {
    /// The database host and the root link; `Err` says why namespaces cannot
    /// be made here (not root, no `ip`, a container without the capability).
    pub fn create() -> Result<Self, String> {
        let tag = format!("kt{}", std::process::id() % 100_000);
        let dir = tempfile::Builder::new()
            .prefix("keel-hosts-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let hosts = Self {
            tag,
            nodes: Vec::new(),
            servers: Vec::new(),
            dir,
        };
        let db = hosts.db();
        ip(&["netns", "add", &db])?;
        ip(&["-n", &db, "link", "set", "lo", "up"])?;
        let (here, there) = (format!("{}r", hosts.tag), format!("{}d", hosts.tag));
        ip(&[
            "link", "add", &here, "type", "veth", "peer", "name", &there, "netns", &db,
        ])?;
        ip(&["addr", "add", &format!("{NET}.0.2/24"), "dev", &here])?;
        ip(&["link", "set", &here, "up"])?;
        ip(&[
            "-n",
            &db,
            "addr",
            "add",
            &format!("{NET}.0.1/24"),
            "dev",
            &there,
        ])?;
        ip(&["-n", &db, "link", "set", &there, "up"])?;
        Ok(hosts)
    }

    /// The database host's namespace.
    pub fn db(&self) -> String {
        format!("{}db", self.tag)
    }

    /// Node `n`'s namespace.
    pub fn node(&self, n: usize) -> String {
        format!("{}n{n}", self.tag)
    }

    /// Where the test reaches the database host.
    pub fn db_from_here(&self) -> String {
        format!("{NET}.0.1")
    }

    /// Where node `n` reaches the database host.
    pub fn db_from(&self, n: usize) -> String {
        format!("{NET}.{n}.1")
    }

    /// Where node `n` reaches the test's namespace (the exchange).
    pub fn here_from(&self, n: usize) -> String {
        format!("{NET}.{}.1", 100 + n)
    }

    /// A node namespace linked to the database host and to the test's own.
    pub fn add_node(&mut self, n: usize) -> Result<(), String> {
        let (db, node) = (self.db(), self.node(n));
        ip(&["netns", "add", &node])?;
        self.nodes.push(n);
        ip(&["-n", &node, "link", "set", "lo", "up"])?;
        let (db_end, node_end) = (format!("{}a{n}", self.tag), format!("{}b{n}", self.tag));
        ip(&[
            "link", "add", &db_end, "netns", &db, "type", "veth", "peer", "name", &node_end,
            "netns", &node,
        ])?;
        ip(&[
            "-n",
            &db,
            "addr",
            "add",
            &format!("{NET}.{n}.1/24"),
            "dev",
            &db_end,
        ])?;
        ip(&["-n", &db, "link", "set", &db_end, "up"])?;
        ip(&[
            "-n",
            &node,
            "addr",
            "add",
            &format!("{NET}.{n}.2/24"),
            "dev",
            &node_end,
        ])?;
        ip(&["-n", &node, "link", "set", &node_end, "up"])?;
        let (here, there) = (format!("{}x{n}", self.tag), format!("{}y{n}", self.tag));
        ip(&[
            "link", "add", &here, "type", "veth", "peer", "name", &there, "netns", &node,
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{NET}.{}.1/24", 100 + n),
            "dev",
            &here,
        ])?;
        ip(&["link", "set", &here, "up"])?;
        ip(&[
            "-n",
            &node,
            "addr",
            "add",
            &format!("{NET}.{}.2/24", 100 + n),
            "dev",
            &there,
        ])?;
        ip(&["-n", &node, "link", "set", &there, "up"])
    }

    /// Takes node `n`'s link to the database host down (`up: false`) or up.
    pub fn database_link(&self, n: usize, up: bool) {
        let end = format!("{}b{n}", self.tag);
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.node(n), "link", "set", &end, state]).expect("the link changes state");
    }

    /// A command run in namespace `ns`.
    pub fn command(ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    /// Redis on the database host (port 6379, no persistence).
    pub fn start_redis(&mut self) {
        let child = Self::command(&self.db(), "redis-server")
            .args([
                "--port",
                "6379",
                "--bind",
                "0.0.0.0",
                "--protected-mode",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.servers.push(child);
    }

    /// PostgreSQL on the database host (port 5432, trust from the links),
    /// with database `keel`.
    pub fn start_postgres(&mut self) {
        let bin = super::pg_cluster::server_bin();
        let data = self.dir.path().join("pg");
        std::fs::create_dir_all(&data).expect("data dir");
        let chown = |path: &Path| {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(path)
                .status()
                .expect("chown");
            assert!(status.success());
        };
        chown(self.dir.path());
        let data_str = data.to_string_lossy().into_owned();
        super::pg_cluster::run(
            &bin.join("initdb"),
            &[
                "-D",
                &data_str,
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        );
        let hba = data.join("pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        text.push_str(&format!("host all all {NET}.0.0/16 trust\n"));
        std::fs::write(&hba, text).expect("pg_hba.conf");
        let postgres: PathBuf = bin.join("postgres");
        let mut c = Command::new("ip");
        // setpriv execs (runuser would fork), so killing the child kills the server.
        c.args([
            "netns",
            "exec",
            &self.db(),
            "setpriv",
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
        ])
        .arg(postgres)
        .args([
            "-D",
            &data_str,
            "-p",
            "5432",
            "-c",
            "listen_addresses=*",
            "-k",
            &data_str,
            "-c",
            "fsync=off",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        self.servers.push(c.spawn().expect("postgres starts"));
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        for n in self.nodes.clone() {
            let _ = ip(&["netns", "del", &self.node(n)]);
            let _ = ip(&["link", "del", &format!("{}x{n}", self.tag)]);
        }
        let _ = ip(&["link", "del", &format!("{}r", self.tag)]);
        let _ = ip(&["netns", "del", &self.db()]);
    }
}
