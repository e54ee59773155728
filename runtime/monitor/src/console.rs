//! Receiving a TTY container's pty master over `--console-socket`, as runc-shaped runtimes send
//! it: connect to the socket and pass the fd with `SCM_RIGHTS`.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use super::MonitorError;

/// The listening console socket; removed from the file system when dropped.
pub(crate) struct ConsoleSocket {
    pub(crate) listener: UnixListener,
    pub(crate) path: PathBuf,
}

impl ConsoleSocket {
    /// Binds `path` (replacing a stale socket).
    pub(crate) fn bind(path: &Path) -> Result<ConsoleSocket, MonitorError> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)
            .map_err(|e| MonitorError::io(format!("binding {}", path.display()), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| MonitorError::io("console socket", e))?;
        Ok(ConsoleSocket {
            listener,
            path: path.to_owned(),
        })
    }

    /// Accepts a pending connection and receives the pty master; `Ok(None)` when nobody has
    /// connected yet.
    pub(crate) fn try_receive(&self) -> Result<Option<OwnedFd>, MonitorError> {
        let stream = match self.listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(MonitorError::io("accepting on the console socket", e)),
        };
        // The runtime sends right after connecting; don't let a stuck one hang the monitor.
        let setup = stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_read_timeout(Some(Duration::from_secs(10))));
        setup.map_err(|e| MonitorError::io("console connection", e))?;
        receive_fd(stream.as_raw_fd()).map(Some)
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Receives one fd sent with `SCM_RIGHTS` on `sock`; extra fds are closed.
fn receive_fd(sock: RawFd) -> Result<OwnedFd, MonitorError> {
    // runc sends the terminal's name as the payload; it is not needed.
    let mut payload = [0u8; 256];
    let mut iov = [IoSliceMut::new(&mut payload)];
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(|e| MonitorError::io("receiving the console fd", e))?;
    let mut received: Option<OwnedFd> = None;
    for c in msg
        .cmsgs()
        .map_err(|e| MonitorError::io("console control message", e))?
    {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: SCM_RIGHTS installed `fd` in this process; nothing else owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                received.get_or_insert(owned);
            }
        }
    }
    received
        .ok_or_else(|| MonitorError::RuntimeProtocol("console socket message carried no fd".into()))
}
