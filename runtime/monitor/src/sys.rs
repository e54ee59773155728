//! The few system calls the monitor needs that nix (with the workspace's features) lacks.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

pub(crate) use libc::{POLLERR, POLLHUP, POLLIN, POLLOUT};

/// An entry for [`poll`].
pub(crate) fn poll_entry(fd: BorrowedFd<'_>) -> libc::pollfd {
    libc::pollfd {
        fd: fd.as_raw_fd(),
        events: POLLIN,
        revents: 0,
    }
}

/// Waits until one of `fds` is ready; `timeout_ms < 0` waits forever. EINTR is returned as
/// `ErrorKind::Interrupted` for the caller to loop.
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, exclusively borrowed slice of pollfd for the whole call.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Whether a poll result means "read now" (data, hang-up or error all surface through read).
pub(crate) fn readable(p: &libc::pollfd) -> bool {
    p.revents & (POLLIN | POLLHUP | POLLERR) != 0
}

/// Sets `O_NONBLOCK` on `fd`.
pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Sets the window size of the terminal whose master is `fd`; its foreground process group
/// gets SIGWINCH.
pub(crate) fn set_window_size(fd: BorrowedFd<'_>, width: u16, height: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize through the pointer, which outlives the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &size) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Closes every descriptor from 3 up, so nothing the caller leaked (a pipe skiffd reads, a
/// listening socket) is held open by a long-lived monitor.
pub fn close_inherited_fds() {
    // SAFETY: called at the start of main, before this process opened or borrowed any fd
    // above 2; close_range only closes descriptors.
    unsafe {
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
    }
}
