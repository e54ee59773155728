//! The monitor's control socket, `<socket-dir>/ctl`: a unix stream socket speaking one command
//! per line, each answered with `ok\n` or `error <message>\n`.
//!
//! | request          | effect                                                          |
//! |------------------|-----------------------------------------------------------------|
//! | `ping`           | answers `ok`: the monitor is alive                              |
//! | `reopen-log`     | opens the log path again (after rotation), answers once it is open |
//! | `resize W H`     | sets a TTY container's terminal to W columns and H rows         |
//! | `attach [stdin]` | answers `ok`, then the connection carries the container's output, and with `stdin` the client's input (see [`crate::attach`]) |
//!
//! A connection carries any number of commands until an `attach`, which is its last.

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
    /// Set the terminal size of a TTY container.
    Resize {
        /// Columns.
        width: u16,
        /// Rows.
        height: u16,
    },
    /// Turn this connection into an attach session.
    Attach {
        /// The client's bytes go to the container's stdin.
        stdin: bool,
    },
}

impl std::fmt::Display for Request {
    /// The request's line on the wire, without the newline.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Ping => f.write_str("ping"),
            Request::ReopenLog => f.write_str("reopen-log"),
            Request::Resize { width, height } => write!(f, "resize {width} {height}"),
            Request::Attach { stdin: false } => f.write_str("attach"),
            Request::Attach { stdin: true } => f.write_str("attach stdin"),
        }
    }
}

impl Request {
    /// Parses a request line (without its newline).
    pub fn parse(line: &str) -> Option<Request> {
        let mut words = line.trim_end_matches('\r').split(' ');
        let request = match (words.next()?, words.next(), words.next()) {
            ("ping", None, _) => Request::Ping,
            ("reopen-log", None, _) => Request::ReopenLog,
            ("attach", None, _) => Request::Attach { stdin: false },
            ("attach", Some("stdin"), None) => Request::Attach { stdin: true },
            ("resize", Some(w), Some(h)) => Request::Resize {
                width: w.parse().ok()?,
                height: h.parse().ok()?,
            },
            _ => return None,
        };
        words.next().is_none().then_some(request)
    }
}

/// What became of a connection after [`Connection::serve`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Served {
    /// Still a control connection.
    Open,
    /// To be closed.
    Closed,
    /// It asked to attach; `leftover` is what it sent after the request line.
    Attach {
        /// The client sends stdin.
        stdin: bool,
        /// Bytes already read past the request line.
        leftover: Vec<u8>,
    },
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
    /// Reads what the client sent and calls `handle` for each complete request but `attach`,
    /// which ends the line-based protocol and is returned for the caller to take over.
    pub(crate) fn serve(&mut self, mut handle: impl FnMut(Request) -> String) -> Served {
        let mut chunk = [0u8; 256];
        let open = loop {
            // Enough for a request line: the rest waits in the socket (after an `attach`
            // it is stdin, read at the attach session's pace).
            if self.buf.len() > MAX_LINE {
                break true;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => break false,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break false,
            }
        };
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            let request = std::str::from_utf8(&self.buf[..end])
                .map_err(|_| "error request is not UTF-8\n".to_owned())
                .and_then(|line| {
                    Request::parse(line).ok_or_else(|| format!("error unknown request {line:?}\n"))
                });
            self.buf.drain(..=end);
            let reply = match request {
                Ok(Request::Attach { stdin }) => {
                    return Served::Attach {
                        stdin,
                        leftover: std::mem::take(&mut self.buf),
                    }
                }
                Ok(request) => handle(request),
                Err(reply) => reply,
            };
            // Replies are a few bytes: they fit the socket buffer unless the client never
            // reads, and then dropping it is right.
            if self.stream.write_all(reply.as_bytes()).is_err() {
                return Served::Closed;
            }
        }
        if self.buf.len() > MAX_LINE {
            let _ = self.stream.write_all(b"error request line too long\n");
            return Served::Closed;
        }
        if open {
            Served::Open
        } else {
            Served::Closed
        }
    }
}

/// What the control requests act on.
pub(crate) trait Handler {
    /// Reopens the log file.
    fn reopen_log(&mut self) -> io::Result<()>;
    /// Resizes the container's terminal.
    fn resize(&mut self, width: u16, height: u16) -> io::Result<()>;
}

/// Answers one request (`attach` is not answered here: see [`Connection::serve`]).
pub(crate) fn answer(request: Request, handler: &mut impl Handler) -> String {
    let result = match request {
        Request::Ping => Ok(()),
        Request::ReopenLog => handler
            .reopen_log()
            .map_err(|e| format!("reopening log: {e}")),
        Request::Resize { width, height } => handler
            .resize(width, height)
            .map_err(|e| format!("resizing the terminal: {e}")),
        Request::Attach { .. } => Err("attach must be the last request".to_owned()),
    };
    match result {
        Ok(()) => "ok\n".to_owned(),
        Err(e) => format!("error {e}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(io::Result<()>);

    impl Handler for Fake {
        fn reopen_log(&mut self) -> io::Result<()> {
            std::mem::replace(&mut self.0, Ok(()))
        }
        fn resize(&mut self, width: u16, height: u16) -> io::Result<()> {
            assert_eq!((width, height), (80, 24));
            std::mem::replace(&mut self.0, Ok(()))
        }
    }

    #[test]
    fn requests_round_trip() {
        for r in [
            Request::Ping,
            Request::ReopenLog,
            Request::Resize {
                width: 80,
                height: 24,
            },
            Request::Attach { stdin: false },
            Request::Attach { stdin: true },
        ] {
            assert_eq!(Request::parse(&r.to_string()), Some(r));
        }
        assert_eq!(Request::parse("ping\r"), Some(Request::Ping));
        for bad in [
            "ping x",
            "attach all",
            "resize 1",
            "resize 1 2 3",
            "resize -1 2",
            "",
        ] {
            assert_eq!(Request::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn answers() {
        assert_eq!(answer(Request::Ping, &mut Fake(Ok(()))), "ok\n");
        assert_eq!(answer(Request::ReopenLog, &mut Fake(Ok(()))), "ok\n");
        let err = answer(
            Request::ReopenLog,
            &mut Fake(Err(io::Error::other("disk full"))),
        );
        assert_eq!(err, "error reopening log: disk full\n");
        let resize = Request::Resize {
            width: 80,
            height: 24,
        };
        let err = answer(resize, &mut Fake(Err(io::Error::other("not a tty"))));
        assert_eq!(err, "error resizing the terminal: not a tty\n");
    }

    fn connection() -> (UnixStream, Connection) {
        let (client, server) = UnixStream::pair().unwrap();
        server.set_nonblocking(true).unwrap();
        let conn = Connection {
            stream: server,
            buf: Vec::new(),
        };
        (client, conn)
    }

    #[test]
    fn serves_pipelined_lines_and_closes_on_eof() {
        let (mut client, mut conn) = connection();
        client.write_all(b"ping\nbogus\npi").unwrap();
        assert_eq!(conn.serve(|r| answer(r, &mut Fake(Ok(())))), Served::Open);
        client.write_all(b"ng\n").unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(conn.serve(|r| answer(r, &mut Fake(Ok(())))), Served::Closed);
        let mut replies = String::new();
        drop(conn);
        client.read_to_string(&mut replies).unwrap();
        assert_eq!(replies, "ok\nerror unknown request \"bogus\"\nok\n");
    }

    #[test]
    fn attach_ends_the_line_protocol() {
        let (mut client, mut conn) = connection();
        client.write_all(b"ping\nattach stdin\nping\n").unwrap();
        let served = conn.serve(|r| answer(r, &mut Fake(Ok(()))));
        assert_eq!(
            served,
            Served::Attach {
                stdin: true,
                leftover: b"ping\n".to_vec()
            }
        );
    }
}
