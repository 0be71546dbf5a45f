//! The listening socket for executed workers, made at the first one: a run whose workers are
//! all forked by the zygote is born connected to them (`zygote.rs`) and never makes one.

use super::listener::{self, Registration, SocketDir};
use powerpool_shared::{transport, TOKEN_LEN};
use std::path::PathBuf;
use tokio::sync::mpsc;

/// The listening socket for executed workers: made at the first one.
pub enum Listening {
    NotYet {
        token: [u8; TOKEN_LEN],
        workers: u64,
        register_rx: mpsc::UnboundedReceiver<Registration>,
        refusals_tx: mpsc::UnboundedSender<String>,
    },
    Open {
        /// Removed, with the socket, when dropped.
        dir: SocketDir,
        accept: tokio::task::JoinHandle<()>,
    },
    Closed,
}

impl Listening {
    /// Makes the socket directory and the socket, and starts accepting connections for worker
    /// `first_id` (the one about to be executed) and those after it; returns the socket's
    /// path, or `None` if it is open already.
    pub fn open(&mut self, first_id: u64, also: Vec<u64>) -> std::io::Result<Option<PathBuf>> {
        if !matches!(self, Listening::NotYet { .. }) {
            return Ok(None);
        }
        let dir = SocketDir::create()?;
        let socket = dir.socket_path();
        let bound = transport::bind(&socket)?;
        let Listening::NotYet { token, workers, register_rx, refusals_tx } =
            std::mem::replace(self, Listening::Closed)
        else {
            unreachable!("checked above")
        };
        let accept = tokio::spawn(listener::accept_loop(
            bound,
            token,
            workers,
            first_id,
            also,
            register_rx,
            refusals_tx,
        ));
        *self = Listening::Open { dir, accept };
        Ok(Some(socket))
    }

    /// Stops accepting and removes the socket and its directory.
    pub fn close(&mut self) {
        if let Listening::Open { dir, accept } = std::mem::replace(self, Listening::Closed) {
            accept.abort();
            drop(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_socket_is_made_once_and_removed_on_close() {
        let (_register, register_rx) = mpsc::unbounded_channel();
        let (refusals_tx, _refusals) = mpsc::unbounded_channel();
        let mut listening =
            Listening::NotYet { token: [7; TOKEN_LEN], workers: 2, register_rx, refusals_tx };
        let socket = listening.open(2, Vec::new()).expect("opens").expect("a new socket");
        assert!(socket.exists(), "{}", socket.display());
        assert!(listening.open(3, Vec::new()).expect("still open").is_none(), "made once");
        let dir = socket.parent().expect("a directory").to_path_buf();
        listening.close();
        assert!(!dir.exists(), "{} left behind", dir.display());
        assert!(
            listening.open(4, Vec::new()).expect("closed").is_none(),
            "not made again once closed"
        );
    }
}
