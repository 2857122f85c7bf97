//! The built `keel` binary as a child process: spawned with its stderr
//! readable line by line, killed if the test ends first.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const KEEL: &str = env!("CARGO_BIN_EXE_keel");

pub fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("keel.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Forwards the child's stderr lines to a channel, so the test can wait for one.
pub fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A `keel` process that is killed if the test ends (or panics) first.
pub struct Keel(pub Child);

impl std::ops::Deref for Keel {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Keel {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Keel {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `keel ARGS --config CONFIG` with its stderr readable line by line.
pub fn spawn_keel(args: &[&str], config: &Path) -> (Keel, mpsc::Receiver<String>) {
    spawn_keel_with(args, config, &[])
}

/// Like [`spawn_keel`], with these variables added to its environment.
pub fn spawn_keel_with(
    args: &[&str],
    config: &Path,
    envs: &[(&str, &str)],
) -> (Keel, mpsc::Receiver<String>) {
    let mut child = Command::new(KEEL)
        .args(args)
        .arg("--config")
        .arg(config)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    (Keel(child), lines)
}

pub fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(e) => panic!("no line containing {needle:?} within {timeout:?}: {e}"),
        }
    }
}

pub fn wait_exit(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("keel did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A loopback port nothing listens on (for the moment).
pub fn closed_port() -> u16 {
    super::pg_cluster::free_port()
}
