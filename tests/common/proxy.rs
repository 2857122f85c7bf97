//! A TCP proxy in front of a real server, to take that server "down" and back
//! "up" for one test without touching the server other tests share.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward every connection.
    Up,
    /// Close new connections at once and cut existing ones, as a stopped server does.
    Down,
}

pub struct TcpProxy {
    pub port: u16,
    mode: Arc<watch::Sender<Mode>>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(target_port: u16, mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target: SocketAddr = ([127, 0, 0, 1], target_port).into();
        let (tx, _) = watch::channel(mode);
        let mode = Arc::new(tx);
        let modes = Arc::clone(&mode);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut watch = modes.subscribe();
                if *watch.borrow() == Mode::Down {
                    drop(client);
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watch.wait_for(|m| *m == Mode::Down) => {}
                    }
                });
            }
        });
        Self { port, mode, accept }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.set(Mode::Down);
        self.accept.abort();
    }
}
