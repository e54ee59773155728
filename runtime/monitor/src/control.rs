//! The monitor's control socket, `<socket-dir>/ctl`: a unix stream socket speaking one command
//! per line, each answered with `ok\n` or `error <message>\n`.
//!
//! | request      | effect                                                          |
//! |--------------|-----------------------------------------------------------------|
//! | `ping`       | answers `ok`: the monitor is alive                              |
//! | `reopen-log` | opens the log path again (after rotation), answers once it is open |
//!
//! A connection carries any number of commands. The protocol leaves room for `attach`: a
//! command after which the connection stops being line-based and carries the container's
//! stdin in and its output out; the monitor already keeps the stdin pipe's write end for it.

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::MonitorError;

/// The longest request line accepted.
const MAX_LINE: usize = 1024;
/// Connections beyond this are closed at once, so a misbehaving client cannot grow the monitor.
const MAX_CONNECTIONS: usize = 16;

/// A control request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Liveness check.
    Ping,
    /// Reopen the log file (CRI `ReopenContainerLog`).
    ReopenLog,
}

impl Request {
    /// The request's line on the wire, without the newline.
    pub fn as_str(self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::ReopenLog => "reopen-log",
        }
    }

    /// Parses a request line (without its newline).
    pub fn parse(line: &str) -> Option<Request> {
        match line.trim_end_matches('\r') {
            "ping" => Some(Request::Ping),
            "reopen-log" => Some(Request::ReopenLog),
            _ => None,
        }
    }
}

/// The listening side; the socket file is removed when dropped.
pub(crate) struct Server {
    pub(crate) listener: UnixListener,
    pub(crate) connections: Vec<Connection>,
    path: PathBuf,
}

impl Server {
    /// Binds `path`, creating its directory and replacing a stale socket from an earlier run.
    pub(crate) fn bind(path: &Path) -> Result<Server, MonitorError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| MonitorError::io(format!("creating {}", dir.display()), e))?;
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)
            .map_err(|e| MonitorError::io(format!("binding {}", path.display()), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| MonitorError::io("control socket", e))?;
        Ok(Server {
            listener,
            connections: Vec::new(),
            path: path.to_owned(),
        })
    }

    /// Accepts every pending connection.
    pub(crate) fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            if self.connections.len() >= MAX_CONNECTIONS || stream.set_nonblocking(true).is_err() {
                continue;
            }
            self.connections.push(Connection {
                stream,
                buf: Vec::new(),
            });
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One client connection with its unfinished request line.
pub(crate) struct Connection {
    pub(crate) stream: UnixStream,
    buf: Vec<u8>,
}

impl Connection {
    /// Reads what the client sent and calls `handle` for each complete line; returns `false`
    /// when the connection should be closed (peer closed, error, or an over-long line).
    pub(crate) fn serve(&mut self, mut handle: impl FnMut(&str) -> String) -> bool {
        let mut chunk = [0u8; 256];
        let open = loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => break false,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break false,
            }
        };
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            let reply = match std::str::from_utf8(&self.buf[..end]) {
                Ok(line) => handle(line),
                Err(_) => "error request is not UTF-8\n".to_owned(),
            };
            self.buf.drain(..=end);
            // Replies are a few bytes: they fit the socket buffer unless the client never
            // reads, and then dropping it is right.
            if self.stream.write_all(reply.as_bytes()).is_err() {
                return false;
            }
        }
        if self.buf.len() > MAX_LINE {
            let _ = self.stream.write_all(b"error request line too long\n");
            return false;
        }
        open
    }
}

/// Answers one request line; `reopen_log` reopens the log file.
pub(crate) fn answer(line: &str, reopen_log: impl FnOnce() -> io::Result<()>) -> String {
    match Request::parse(line) {
        Some(Request::Ping) => "ok\n".to_owned(),
        Some(Request::ReopenLog) => match reopen_log() {
            Ok(()) => "ok\n".to_owned(),
            Err(e) => format!("error reopening log: {e}\n"),
        },
        None => format!("error unknown request {:?}\n", line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for r in [Request::Ping, Request::ReopenLog] {
            assert_eq!(Request::parse(r.as_str()), Some(r));
        }
        assert_eq!(Request::parse("ping\r"), Some(Request::Ping));
        assert_eq!(Request::parse("attach"), None);
    }

    #[test]
    fn answers() {
        assert_eq!(answer("ping", || unreachable!()), "ok\n");
        assert_eq!(answer("reopen-log", || Ok(())), "ok\n");
        let err = answer("reopen-log", || Err(io::Error::other("disk full")));
        assert_eq!(err, "error reopening log: disk full\n");
        assert!(answer("bogus", || Ok(())).starts_with("error unknown request"));
    }

    #[test]
    fn serves_pipelined_lines_and_closes_on_eof() {
        let (mut client, server) = UnixStream::pair().unwrap();
        server.set_nonblocking(true).unwrap();
        let mut conn = Connection {
            stream: server,
            buf: Vec::new(),
        };
        client.write_all(b"ping\nbogus\npi").unwrap();
        assert!(conn.serve(|l| answer(l, || Ok(()))));
        client.write_all(b"ng\n").unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(!conn.serve(|l| answer(l, || Ok(()))));
        let mut replies = String::new();
        drop(conn);
        client.read_to_string(&mut replies).unwrap();
        assert_eq!(replies, "ok\nerror unknown request \"bogus\"\nok\n");
    }
}
