//! The monitor's steady state: copy the container's output into the log and to attached
//! clients, answer the control socket, reap children, and record the init's exit.

use std::fs::File;
use std::io;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::attach::Attach;
use super::control::{self, Served};
use super::cri_log::{now_unix_nanos, LineSplitter, LogFile, LogStream};
use super::exit_file::{write_exit_file, ExitStatus};
use super::oom::OomCounter;
use super::pages::CleanPages;
use super::sys::{self, poll_entry, readable};

#[derive(PartialEq, Eq)]
enum ReadState {
    Read,
    Empty,
    Ended,
}

/// One container output: a pipe, or the pty master of a TTY container.
pub(crate) struct Output {
    file: File,
    stream: LogStream,
    lines: LineSplitter,
}

impl Output {
    /// Wraps the (non-blocking) read end of a container output.
    pub(crate) fn new(fd: OwnedFd, stream: LogStream) -> Output {
        Output {
            file: File::from(fd),
            stream,
            lines: LineSplitter::new(),
        }
    }

    /// Reads once and logs the finished lines. A pty master reports the end with EIO once the
    /// last slave fd closes, so every error but EAGAIN ends the stream.
    fn read_some(&mut self, log: &mut LogFile, attach: &mut Attach) -> ReadState {
        loop {
            match self.file.read(self.lines.spare()) {
                Ok(0) => return ReadState::Ended,
                Ok(n) => {
                    let stream = self.stream;
                    attach.output(stream, &self.lines.spare()[..n]);
                    // A failed log write is dropped: the container must keep running and its
                    // output keep draining, as containerd does.
                    self.lines.commit(n, |content, partial| {
                        let _ = log.write(stream, partial, content);
                    });
                    return ReadState::Read;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return ReadState::Empty,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return ReadState::Ended,
            }
        }
    }

    /// Reads everything already written and writes out the unfinished line (as partial).
    /// A stream still held open by another process stops at EAGAIN instead of its end.
    fn drain(mut self, log: &mut LogFile, attach: &mut Attach) {
        while self.read_some(log, attach) == ReadState::Read {}
        self.end(log);
    }

    fn end(mut self, log: &mut LogFile) {
        let stream = self.stream;
        self.lines.flush(|content, partial| {
            let _ = log.write(stream, partial, content);
        });
    }
}

/// The running monitor after a successful `create`.
pub(crate) struct Monitor {
    /// The container's init process (our child since `create` exited).
    pub(crate) init: Pid,
    /// Set once the init is reaped: its status and when.
    pub(crate) init_exit: Option<(WaitStatus, i64)>,
    /// SIGCHLD, blocked and read through a signalfd.
    pub(crate) signals: SignalFd,
    pub(crate) outputs: Vec<Output>,
    /// Attach sessions; they own the container's stdin (the pipe's write end is held so the
    /// container never sees EOF while it runs, unless `--stdin-once` says so).
    pub(crate) attach: Attach,
    /// A TTY container's pty master, for resizing.
    pub(crate) console: Option<File>,
    pub(crate) log: LogFile,
    pub(crate) control: control::Server,
    pub(crate) oom: Option<OomCounter>,
    pub(crate) exit_file: PathBuf,
    /// Code and constants to drop from memory when the monitor goes idle.
    pub(crate) pages: CleanPages,
}

/// How long the monitor must have had nothing to do before it drops its code pages again.
const IDLE_RELEASE_MS: i32 = 1000;

impl Monitor {
    /// Runs until the init exits; returns the monitor's exit code.
    pub(crate) fn run(mut self) -> i32 {
        let mut fds = Vec::new();
        // Start-up is over: nothing that ran so far needs to stay resident.
        self.pages.release();
        // -1 (block) once released; after any event, wait IDLE_RELEASE_MS for the next one and
        // release again if none comes.
        let mut timeout = -1;
        loop {
            if let Some((status, at)) = self.init_exit.take() {
                return self.finish(status, at);
            }
            fds.clear();
            fds.push(poll_entry(self.signals.as_fd()));
            fds.push(poll_entry(self.control.listener.as_fd()));
            fds.extend(self.outputs.iter().map(|o| poll_entry(o.file.as_fd())));
            let conns = &self.control.connections;
            fds.extend(conns.iter().map(|c| poll_entry(c.stream.as_fd())));
            let attach_at = fds.len();
            self.attach.poll_entries(&mut fds);
            match sys::poll(&mut fds, timeout) {
                Ok(0) => {
                    self.pages.release();
                    timeout = -1;
                    continue;
                }
                Ok(_) => timeout = IDLE_RELEASE_MS,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // poll only fails for bad arguments or no memory: nothing to retry.
                Err(_) => return 1,
            }
            let n_out = self.outputs.len();
            // Before anything changes the list of clients the entries were made for.
            self.attach.handle(&fds[attach_at..]);
            // Outputs before signals: whatever the init wrote before exiting is logged before
            // its exit.
            let mut ended = Vec::new();
            for (i, out) in self.outputs.iter_mut().enumerate() {
                if readable(&fds[2 + i])
                    && out.read_some(&mut self.log, &mut self.attach) == ReadState::Ended
                {
                    ended.push(i);
                }
            }
            for i in ended.into_iter().rev() {
                self.outputs.remove(i).end(&mut self.log);
            }
            self.attach.flush();
            for j in (0..self.control.connections.len()).rev() {
                if !readable(&fds[2 + n_out + j]) {
                    continue;
                }
                let mut handler = Handler {
                    log: &mut self.log,
                    console: self.console.as_ref(),
                };
                let served = self.control.connections[j]
                    .serve(|request| control::answer(request, &mut handler));
                match served {
                    Served::Open => {}
                    Served::Closed => {
                        self.control.connections.remove(j);
                    }
                    Served::Attach { stdin, leftover } => {
                        let conn = self.control.connections.remove(j);
                        self.attach.add(conn.stream, stdin, &leftover);
                    }
                }
            }
            if readable(&fds[1]) {
                self.control.accept();
            }
            if readable(&fds[0]) {
                drain_signalfd(&self.signals);
                let init = self.init;
                reap_children(|status, at| {
                    if status.pid() == Some(init) {
                        self.init_exit = Some((status, at));
                    }
                });
            }
        }
    }

    /// Logs the last output, writes the exit file, hands attached clients the rest of the
    /// output and removes the control socket.
    fn finish(self, status: WaitStatus, at: i64) -> i32 {
        let Monitor {
            outputs,
            mut log,
            control,
            oom,
            exit_file,
            mut attach,
            ..
        } = self;
        for out in outputs {
            out.drain(&mut log, &mut attach);
        }
        let oom_killed = oom.as_ref().is_some_and(OomCounter::oom_killed);
        let code = match ExitStatus::from_wait(status, at, oom_killed) {
            Some(exit) if write_exit_file(&exit_file, &exit).is_ok() => 0,
            _ => 1,
        };
        // After the exit file: a slow client must not delay the exit being seen.
        attach.finish();
        drop(control);
        code
    }
}

/// What control requests act on in a running monitor.
struct Handler<'a> {
    log: &'a mut LogFile,
    console: Option<&'a File>,
}

impl control::Handler for Handler<'_> {
    fn reopen_log(&mut self) -> io::Result<()> {
        self.log.reopen()
    }

    fn resize(&mut self, width: u16, height: u16) -> io::Result<()> {
        match self.console {
            Some(console) => sys::set_window_size(console.as_fd(), width, height),
            None => Err(io::Error::other("the container has no terminal")),
        }
    }
}

/// Empties the signalfd so poll blocks again; the signals themselves carry nothing we need.
pub(crate) fn drain_signalfd(signals: &SignalFd) {
    while let Ok(Some(_)) = signals.read_signal() {}
}

/// Reaps every exited child without blocking, calling `on_exit` with each status and the time.
pub(crate) fn reap_children(mut on_exit: impl FnMut(WaitStatus, i64)) {
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return,
            Ok(status) => on_exit(status, now_unix_nanos()),
            Err(Errno::EINTR) => {}
            // ECHILD: no children left.
            Err(_) => return,
        }
    }
}
