//! The pty master of a TTY exec: received over a console socket (SCM_RIGHTS, as runc-shaped
//! runtimes send it), then read and written asynchronously and resized with TIOCSWINSZ.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use tokio::io::unix::AsyncFd;
use tokio::net::UnixListener;

/// How long the runtime gets to send the master once it has connected.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A pty master in non-blocking mode.
pub struct Pty {
    fd: AsyncFd<OwnedFd>,
}

impl Pty {
    /// Wraps a pty master (made non-blocking).
    pub fn new(fd: OwnedFd) -> io::Result<Pty> {
        let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?;
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags))?;
        // SAFETY: `fd` is an open OwnedFd that the AsyncFd owns from here on, so it stays open
        // and the same descriptor for the AsyncFd's whole life.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(Pty { fd })
    }

    /// Reads what the terminal printed; `Ok(0)` once no process holds the terminal open
    /// (the master then reads EIO).
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.fd.readable().await?;
            match ready.try_io(|fd| nix::unistd::read(fd.as_raw_fd(), buf).map_err(io::Error::from))
            {
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `data` to the terminal (the process's input).
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut ready = self.fd.writable().await?;
            match ready.try_io(|fd| nix::unistd::write(fd.as_fd(), data).map_err(io::Error::from)) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Sets the terminal size; the foreground process gets SIGWINCH.
    pub fn resize(&self, width: u16, height: u16) -> io::Result<()> {
        let size = libc::winsize {
            ws_row: height,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which outlives the call.
        let rc = unsafe { libc::ioctl(self.fd.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &size) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Accepts the runtime's connection on the console socket and receives the pty master.
pub async fn receive_master(listener: &UnixListener) -> io::Result<OwnedFd> {
    let (stream, _) = listener.accept().await?;
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(RECEIVE_TIMEOUT))?;
    tokio::task::spawn_blocking(move || receive_fd(stream.as_raw_fd()))
        .await
        .map_err(io::Error::other)?
}

/// Receives one fd sent with SCM_RIGHTS; extra fds are closed.
fn receive_fd(sock: RawFd) -> io::Result<OwnedFd> {
    // runc-shaped runtimes send the terminal's name as the payload; it is not needed.
    let mut payload = [0u8; 256];
    let mut iov = [IoSliceMut::new(&mut payload)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut master = None;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: SCM_RIGHTS installed `fd` in this process and nothing else owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                master.get_or_insert(owned);
            }
        }
    }
    master.ok_or_else(|| io::Error::other("the console socket message carried no fd"))
}
