//! Attach sessions: control connections that asked `attach` and from then on carry the
//! container's output out and, when asked and the container has stdin, the client's bytes in.
//!
//! After the monitor's `ok\n`, the connection is no longer line-based:
//! - monitor → client: frames of a 1-byte stream tag ([`TAG_STDOUT`], [`TAG_STDERR`]), a 4-byte
//!   big-endian length and that many bytes of output; a TTY container's output is all stdout.
//!   The monitor closes the connection once the container has exited and its output is sent.
//! - client → monitor: raw bytes for the container's stdin (read and dropped unless the client
//!   asked `attach stdin`). When such a client ends its input (shuts down its write side, or
//!   goes away), a `--stdin-once` container's stdin is closed; otherwise stdin stays open for
//!   the next session.
//!
//! Neither direction may block the container or the log writer: a client that lets more than
//! [`MAX_QUEUED_OUTPUT`] bytes pile up is disconnected, and input is read only while the stdin
//! buffer has room, so a container that does not read its stdin pushes back on the clients'
//! sockets, not on the monitor's memory.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::cri_log::LogStream;
use super::sys::{self, POLLERR, POLLHUP, POLLIN, POLLOUT};

/// Tag of a frame of the container's stdout (and of a TTY's only output).
pub const TAG_STDOUT: u8 = 1;
/// Tag of a frame of the container's stderr.
pub const TAG_STDERR: u8 = 2;
/// Bytes before each frame's payload: the tag and the big-endian length.
pub const FRAME_HEADER: usize = 5;
/// No frame is longer than this (the monitor reads at most a log line's worth at a time);
/// readers may refuse longer ones.
pub const MAX_FRAME: usize = 64 << 10;

/// Output queued for one client before it is considered dead and disconnected.
const MAX_QUEUED_OUTPUT: usize = 256 << 10;
/// Client input buffered for the container's stdin before clients are no longer read.
const MAX_STDIN_BUFFER: usize = 64 << 10;
/// A drained output buffer larger than this is freed.
const SMALL_BUFFER: usize = 16 << 10;
/// Attach sessions at once; more are refused.
const MAX_CLIENTS: usize = 16;
/// When the container has exited, how long clients get to take the last of its output.
const FINAL_FLUSH: Duration = Duration::from_secs(1);

/// Splits a frame header into the stream and the payload length; `None` for an unknown tag.
pub fn decode_header(header: [u8; FRAME_HEADER]) -> Option<(LogStream, usize)> {
    let stream = match header[0] {
        TAG_STDOUT => LogStream::Stdout,
        TAG_STDERR => LogStream::Stderr,
        _ => return None,
    };
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    Some((stream, len))
}

/// One attached client.
struct Client {
    stream: UnixStream,
    /// Framed output not yet written.
    out: Vec<u8>,
    /// Its bytes go to the container's stdin.
    input: bool,
    /// Nothing more is read from it (it shut down its side).
    read_closed: bool,
    /// To be disconnected.
    dead: bool,
}

/// Every attach session, and the container's stdin they share.
pub(crate) struct Attach {
    clients: Vec<Client>,
    /// The stdin pipe's write end, or the pty master of a TTY container with stdin; `None`
    /// without stdin or once closed. Non-blocking.
    stdin: Option<File>,
    /// Client input the container has not taken yet.
    pending: Vec<u8>,
    stdin_once: bool,
    /// Close stdin once `pending` is written (a `--stdin-once` session ended).
    close_stdin: bool,
}

impl Attach {
    /// No sessions yet; `stdin` is where client input goes.
    pub(crate) fn new(stdin: Option<File>, stdin_once: bool) -> Attach {
        Attach {
            clients: Vec::new(),
            stdin,
            pending: Vec::new(),
            stdin_once,
            close_stdin: false,
        }
    }

    /// Takes over a control connection that asked to attach; `leftover` is what the client
    /// sent after its request line (already stdin). The reply is a few bytes on an empty
    /// socket, so writing it cannot block.
    pub(crate) fn add(&mut self, mut stream: UnixStream, input: bool, leftover: &[u8]) {
        if self.clients.len() >= MAX_CLIENTS {
            let _ = stream.write_all(b"error too many attach sessions\n");
            return;
        }
        if stream.write_all(b"ok\n").is_err() {
            return;
        }
        let input = input && self.stdin.is_some();
        if input {
            self.pending.extend_from_slice(leftover);
        }
        self.clients.push(Client {
            stream,
            out: Vec::new(),
            input,
            read_closed: false,
            dead: false,
        });
    }

    /// Queues `data`, read from the container's `stream`, for every client; a client too far
    /// behind is disconnected. Call [`Attach::flush`] afterwards.
    pub(crate) fn output(&mut self, stream: LogStream, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let tag = match stream {
            LogStream::Stdout => TAG_STDOUT,
            LogStream::Stderr => TAG_STDERR,
        };
        for chunk in data.chunks(MAX_FRAME) {
            for client in self.clients.iter_mut().filter(|c| !c.dead) {
                if client.out.len() + FRAME_HEADER + chunk.len() > MAX_QUEUED_OUTPUT {
                    client.dead = true;
                    continue;
                }
                client.out.push(tag);
                client
                    .out
                    .extend_from_slice(&(chunk.len() as u32).to_be_bytes());
                client.out.extend_from_slice(chunk);
            }
        }
    }

    /// Writes what each client can take now and disconnects the dead ones.
    pub(crate) fn flush(&mut self) {
        for client in &mut self.clients {
            client.write_some();
        }
        self.reap();
    }

    /// Appends this module's poll entries: one for stdin, then one per client, in the order
    /// [`Attach::handle`] expects them.
    pub(crate) fn poll_entries(&self, fds: &mut Vec<libc::pollfd>) {
        let stdin = self.stdin.as_ref().filter(|_| !self.pending.is_empty());
        fds.push(entry(stdin.map(|f| f.as_raw_fd()), POLLOUT));
        let room = self.pending.len() < MAX_STDIN_BUFFER;
        for c in &self.clients {
            let mut events = 0;
            if !c.read_closed && (room || !c.input) {
                events |= POLLIN;
            }
            if !c.out.is_empty() {
                events |= POLLOUT;
            }
            // A reader held back by a full stdin buffer is left out of the poll entirely:
            // otherwise a hang-up, reported whatever the events asked, would spin the loop.
            let skip = events == 0 && !c.read_closed;
            let fd = (!skip).then(|| c.stream.as_raw_fd());
            fds.push(entry(fd, events));
        }
    }

    /// Acts on the poll results of the entries [`Attach::poll_entries`] appended.
    pub(crate) fn handle(&mut self, fds: &[libc::pollfd]) {
        if fds.len() != self.clients.len() + 1 {
            return;
        }
        if fds[0].revents != 0 {
            self.write_stdin();
        }
        let mut ended_input = false;
        for (client, p) in self.clients.iter_mut().zip(&fds[1..]) {
            if p.revents == 0 {
                continue;
            }
            if p.revents & POLLOUT != 0 {
                client.write_some();
            }
            if p.events & POLLIN != 0 && p.revents & (POLLIN | POLLHUP | POLLERR) != 0 {
                let target = if client.input {
                    Some(&mut self.pending)
                } else {
                    None
                };
                client.read_some(target);
            } else if client.read_closed && p.revents & (POLLHUP | POLLERR) != 0 {
                client.dead = true;
            }
            ended_input |= client.input && (client.read_closed || client.dead);
            if client.read_closed {
                // Its input has ended: nothing more to take from it.
                client.input = false;
            }
        }
        if ended_input && self.stdin_once {
            self.close_stdin = true;
        }
        self.reap();
        self.write_stdin();
    }

    /// After the container exited: gives clients a moment to take the rest of its output,
    /// then disconnects them all.
    pub(crate) fn finish(mut self) {
        self.stdin = None;
        let deadline = Instant::now() + FINAL_FLUSH;
        self.flush();
        while self.clients.iter().any(|c| !c.out.is_empty()) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            let mut fds: Vec<_> = self
                .clients
                .iter()
                .map(|c| entry(Some(c.stream.as_raw_fd()), POLLOUT))
                .collect();
            match sys::poll(&mut fds, left.as_millis().max(1) as i32) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
            self.flush();
            // Clients done with their output are closed now, not after the slowest one.
            self.clients.retain(|c| !c.out.is_empty());
        }
    }

    /// Writes pending input to the container's stdin, and closes it when a `--stdin-once`
    /// session has ended and everything is written.
    fn write_stdin(&mut self) {
        let Some(stdin) = self.stdin.as_mut() else {
            self.pending.clear();
            return;
        };
        while !self.pending.is_empty() {
            match stdin.write(&self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                // EPIPE: the container closed its stdin; nobody will read it again.
                Err(_) => {
                    self.pending.clear();
                    self.stdin = None;
                    return;
                }
            }
        }
        if self.close_stdin {
            self.stdin = None;
        }
    }

    fn reap(&mut self) {
        self.clients.retain(|c| !c.dead);
    }
}

impl Client {
    /// Reads what the client sent, into `stdin` when given (up to the buffer's room), else
    /// into nothing.
    fn read_some(&mut self, stdin: Option<&mut Vec<u8>>) {
        let mut scratch = [0u8; 4096];
        let (buf, room) = match stdin {
            Some(pending) => {
                let room = MAX_STDIN_BUFFER.saturating_sub(pending.len());
                (Some(pending), room.min(scratch.len()))
            }
            None => (None, scratch.len()),
        };
        if room == 0 {
            return;
        }
        match self.stream.read(&mut scratch[..room]) {
            Ok(0) => self.read_closed = true,
            Ok(n) => {
                if let Some(pending) = buf {
                    pending.extend_from_slice(&scratch[..n]);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(_) => self.dead = true,
        }
    }

    /// Writes as much queued output as the socket takes.
    fn write_some(&mut self) {
        while !self.out.is_empty() && !self.dead {
            match self.stream.write(&self.out) {
                Ok(0) => self.dead = true,
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => self.dead = true,
            }
        }
        // A burst's buffer is not kept for the rest of a long session.
        if self.out.is_empty() && self.out.capacity() > SMALL_BUFFER {
            self.out = Vec::new();
        }
    }
}

/// A poll entry; `None` is an entry poll skips.
fn entry(fd: Option<i32>, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd: fd.unwrap_or(-1),
        events,
        revents: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attached(input: bool) -> (Attach, UnixStream, UnixStream) {
        let (stdin_r, stdin_w) = UnixStream::pair().unwrap();
        stdin_w.set_nonblocking(true).unwrap();
        let mut attach = Attach::new(Some(File::from(std::os::fd::OwnedFd::from(stdin_w))), true);
        let (client, server) = UnixStream::pair().unwrap();
        server.set_nonblocking(true).unwrap();
        attach.add(server, input, b"early ");
        (attach, client, stdin_r)
    }

    fn poll_and_handle(attach: &mut Attach) {
        let mut fds = Vec::new();
        attach.poll_entries(&mut fds);
        sys::poll(&mut fds, 100).unwrap();
        attach.handle(&fds);
    }

    #[test]
    fn frames_round_trip() {
        let (mut attach, mut client, _stdin) = attached(false);
        attach.output(LogStream::Stderr, b"oops");
        attach.output(LogStream::Stdout, b"");
        attach.flush();
        let mut got = [0u8; 3 + FRAME_HEADER + 4];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got[..3], b"ok\n");
        let header: [u8; FRAME_HEADER] = got[3..8].try_into().unwrap();
        assert_eq!(decode_header(header), Some((LogStream::Stderr, 4)));
        assert_eq!(&got[8..], b"oops");
        assert_eq!(decode_header([9, 0, 0, 0, 0]), None);
    }

    #[test]
    fn input_reaches_stdin_and_stdin_once_closes_it() {
        let (mut attach, mut client, mut stdin) = attached(true);
        client.write_all(b"hello").unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        for _ in 0..3 {
            poll_and_handle(&mut attach);
        }
        let mut got = String::new();
        stdin.read_to_string(&mut got).unwrap();
        assert_eq!(got, "early hello", "stdin closed after the session's input");
    }

    #[test]
    fn a_client_that_never_reads_is_dropped() {
        let (mut attach, client, _stdin) = attached(false);
        let chunk = vec![b'x'; 16 << 10];
        for _ in 0..200 {
            attach.output(LogStream::Stdout, &chunk);
            attach.flush();
        }
        assert!(attach.clients.is_empty());
        drop(client);
    }
}
