//! Zero-copy relaying with Linux `splice(2)`: socket -> pipe -> socket, the bytes never entering
//! user space. Used for a direction once it carries bulk data (a read filled a whole buffer),
//! as haproxy's `splice-auto` does; small request/response traffic stays on plain copies,
//! which are cheaper for a few hundred bytes.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Bytes a pipe holds; also the most one splice moves.
pub const PIPE_SIZE: usize = 256 * 1024;
/// Empty pipes kept for reuse per thread.
const POOL_LIMIT: usize = 64;

/// A kernel pipe used as the splice buffer of one direction.
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

thread_local! {
    static POOL: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

impl Pipe {
    /// A pipe from this thread's pool, or a new one.
    #[allow(unsafe_code)]
    pub fn take() -> io::Result<Pipe> {
        if let Some(p) = POOL.with_borrow_mut(|p| p.pop()) {
            return Ok(p);
        }
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 writes two descriptors into the array we own; we take ownership of them
        // only when it succeeded.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created by pipe2 and are owned by nobody else.
        let pipe = unsafe {
            Pipe {
                read: OwnedFd::from_raw_fd(fds[0]),
                write: OwnedFd::from_raw_fd(fds[1]),
            }
        };
        // A larger pipe moves more per system call; the default (64 KiB) still works.
        // SAFETY: F_SETPIPE_SZ on a pipe we own.
        unsafe {
            libc::fcntl(
                pipe.write.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                PIPE_SIZE as libc::c_int,
            )
        };
        Ok(pipe)
    }

    /// Returns an empty pipe to this thread's pool (a pipe with data in it is closed instead).
    pub fn give_back(self, empty: bool) {
        if empty {
            POOL.with_borrow_mut(|p| {
                if p.len() < POOL_LIMIT {
                    p.push(self);
                }
            });
        }
    }

    /// Moves up to `len` bytes from the socket `from` into the pipe.
    pub fn fill(&self, from: RawFd, len: usize) -> io::Result<usize> {
        splice(from, self.write.as_raw_fd(), len)
    }

    /// Moves up to `len` bytes from the pipe into the socket `to`.
    pub fn drain(&self, to: RawFd, len: usize) -> io::Result<usize> {
        splice(self.read.as_raw_fd(), to, len)
    }
}

#[allow(unsafe_code)]
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: splice reads and writes only through the two descriptors, both open for the
    // duration of the call; null offsets mean "the descriptors' own positions".
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
