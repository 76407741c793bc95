//! Zero-copy relaying with Linux `splice(2)`: socket -> pipe -> socket, the bytes never entering
//! user space. Used for a direction once it carries bulk data (a read filled a whole buffer),
//! as haproxy's `splice-auto` does; small request/response traffic stays on plain copies,
//! which are cheaper for a few hundred bytes.
//!
//! A pipe's size is what one splice can move, so big pipes mean fewer system calls and wake-ups
//! per MiB. But the kernel limits the pipe sizes one unprivileged user holds in all
//! (`fs.pipe-user-pages-soft`, 64 MiB by default; roundhouse runs as its own user): past it, a
//! pipe can no longer be enlarged and new pipes get two pages (8 KiB). So the enlarged sizes
//! have shares of that limit ([`TIERS`]): a new pipe is made the largest size whose share has
//! room, pooled pipes counted, and past them keeps the kernel's default (64 KiB). 16 pipes of
//! 1 MiB, 128 of 256 KiB and 256 of the default fit below the limit, where pipes of 256 KiB
//! alone made 256.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The most a pipe holds, and so the most one splice moves: the largest size an unprivileged
/// process may set (`fs.pipe-max-size`). Against pipes of 256 KiB, in the same runs: bulk
/// 1.01-1.08x the rate at 0.82-0.87x the CPU per GiB (medians of 4 series, 21 runs); against
/// 64 KiB, 1.30x and 0.55x.
pub const PIPE_MAX: usize = 1024 * 1024;
const MIB: usize = 1024 * 1024;
/// The enlarged sizes, the largest first, each with its share of the kernel's 64 MiB per user.
static TIERS: [Tier; 2] = [
    Tier::new(PIPE_MAX, 16 * MIB),
    Tier::new(256 * 1024, 32 * MIB),
];
/// Empty pipes kept for reuse per thread.
const POOL_LIMIT: usize = 64;

/// One enlarged pipe size and the bytes its pipes may hold in all in the process.
struct Tier {
    size: usize,
    share: usize,
    used: AtomicUsize,
}

impl Tier {
    const fn new(size: usize, share: usize) -> Tier {
        Tier {
            size,
            share,
            used: AtomicUsize::new(0),
        }
    }

    /// Takes room for one pipe if the share has it.
    fn take(&self) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(self.size).filter(|&u| u <= self.share)
            })
            .is_ok()
    }

    fn give_back(&self) {
        self.used.fetch_sub(self.size, Ordering::Relaxed);
    }
}

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
        Ok(pipe.enlarged())
    }

    /// This pipe made the largest size of [`TIERS`] whose share has room; past them it keeps
    /// the kernel's default size, with which splicing works all the same, in smaller steps.
    #[allow(unsafe_code)]
    fn enlarged(self) -> Pipe {
        if let Some(tier) = TIERS.iter().find(|t| t.take()) {
            // SAFETY: F_SETPIPE_SZ on a pipe we own.
            let rc = unsafe {
                libc::fcntl(
                    self.write.as_raw_fd(),
                    libc::F_SETPIPE_SZ,
                    tier.size as libc::c_int,
                )
            };
            if rc < 0 {
                // refused by the kernel (its limits were lowered): the default size will do
                tier.give_back();
            }
        }
        self
    }

    /// The pipe's size, which says which of [`TIERS`] it came from: asked of the kernel when it
    /// closes. Stored in the pipe, it made every pump 8 bytes larger, and an idle connection
    /// 2.08 KiB against 1.95 (4 same-run runs).
    #[allow(unsafe_code)]
    fn size(&self) -> usize {
        // SAFETY: F_GETPIPE_SZ on a pipe we own.
        let rc = unsafe { libc::fcntl(self.write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        usize::try_from(rc).unwrap_or(0)
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

impl Drop for Pipe {
    fn drop(&mut self) {
        let size = self.size();
        if let Some(tier) = TIERS.iter().find(|t| t.size == size) {
            tier.give_back();
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tier_hands_out_no_more_than_its_share() {
        let tier = Tier::new(2, 5);
        assert!(tier.take());
        assert!(tier.take());
        assert!(!tier.take(), "a third would be 6, past 5");
        tier.give_back();
        assert!(tier.take(), "what was given back is taken again");
        assert!(!tier.take());
    }

    /// The only test in this crate that creates pipes: it counts on the whole shares.
    #[test]
    fn pipes_get_smaller_as_the_shares_of_the_larger_sizes_fill() {
        let (big, mid) = (16, 128);
        let mut pipes: Vec<Pipe> = (0..big + mid + 2).map(|_| Pipe::take().unwrap()).collect();
        let made: Vec<_> = pipes.iter().map(Pipe::size).collect();
        assert!(made[..big].iter().all(|&s| s == 1 << 20), "{made:?}");
        assert!(
            made[big..big + mid].iter().all(|&s| s == 256 << 10),
            "{made:?}"
        );
        assert!(made[big + mid..].iter().all(|&s| s < 256 << 10), "{made:?}");
        // a closed pipe gives its room back; a pooled one keeps it
        drop(pipes.swap_remove(0));
        let again = Pipe::take().unwrap();
        assert_eq!(again.size(), 1 << 20, "the closed one's room");
        again.give_back(true);
        let pooled = Pipe::take().unwrap();
        assert_eq!(pooled.size(), 1 << 20, "the pooled big pipe again");
        let past = Pipe::take().unwrap();
        assert!(past.size() < 256 << 10, "the pooled pipe kept its room");
        drop(pipes.swap_remove(big));
        assert_eq!(
            Pipe::take().unwrap().size(),
            256 << 10,
            "a closed 256 KiB one's room"
        );
    }
}
