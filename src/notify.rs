//! Talking to systemd (`sd_notify`): the protocol only. What the `STATUS=` line says is
//! composed in [`crate::words`].
//!
//! The protocol is one datagram of `KEY=value` lines to the socket named by `NOTIFY_SOCKET`.
//! It is written here directly because the maintained crates do not all handle abstract
//! (`@`-prefixed) socket names, which systemd uses in some setups. Without `NOTIFY_SOCKET`
//! every call is a no-op, so the same binary runs under systemd, in a shell and in tests.

use std::ffi::OsString;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The longest one message may wait for room in the notification socket; then it is dropped.
const SEND_TIMEOUT: Duration = Duration::from_millis(500);

/// A connection to systemd's notification socket, if there is one.
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`; an unusable value is logged once and ignored.
    pub fn from_env() -> Notifier {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(path) => Self::to(&path),
            None => Notifier { target: None },
        }
    }

    /// Sends to this socket: a path, or `@name` for an abstract socket.
    pub fn to(path: &OsString) -> Notifier {
        match open(path) {
            Ok(target) => Notifier {
                target: Some(target),
            },
            Err(e) => {
                tracing::warn!(socket = ?path, error = %e, "cannot use NOTIFY_SOCKET; systemd will not hear from us");
                Notifier { target: None }
            }
        }
    }

    /// Sends one message (several `KEY=value` lines); failures are logged, never fatal.
    pub fn send(&self, message: &str) {
        let Some((socket, addr)) = &self.target else {
            return;
        };
        if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
            tracing::warn!(error = %e, "sd_notify failed; systemd may show a stale status until the next message");
        }
    }

    /// `READY=1` with the current status.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `STATUS=` only.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// `RELOADING=1` with the monotonic timestamp systemd uses to match it to the reload job.
    pub fn reloading(&self) {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading configuration",
            monotonic_usec()
        ));
    }

    /// `STOPPING=1` with the current status.
    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    /// `WATCHDOG=1`: the event loops are alive.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// How often to send `WATCHDOG=1` (half of `WATCHDOG_USEC`), when systemd asks for it.
    pub fn watchdog_interval() -> Option<Duration> {
        watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        )
    }
}

/// Half of `usec`, if the watchdog is meant for the process `own_pid`.
fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.parse().ok()?;
    if let Some(pid) = pid
        && pid.parse::<u32>().ok()? != own_pid
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

fn open(path: &OsString) -> std::io::Result<(UnixDatagram, SocketAddr)> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_bytes();
    let addr = match bytes.first() {
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&bytes[1..])?
        }
        Some(b'/') => SocketAddr::from_pathname(path)?,
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "expected an absolute path or an @abstract name",
            ));
        }
    };
    let socket = UnixDatagram::unbound()?;
    // The control thread sends these. Waiting for a full socket keeps every message and its
    // order (systemd reads promptly); waiting at most SEND_TIMEOUT means a reader that has
    // stopped reading only slows the control thread, it never stalls it.
    socket.set_write_timeout(Some(SEND_TIMEOUT))?;
    Ok((socket, addr))
}

fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

#[allow(unsafe_code)]
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::linux::net::SocketAddrExt;

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("set timeout");
        let mut buf = [0u8; 1024];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn a_socket_nobody_reads_delays_the_sender_but_never_stalls_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify.sock");
        let _unread = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier::to(&path.into_os_string());
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // a datagram socket queues 10 by default (net.unix.max_dgram_qlen): 4 more wait
            for i in 0..14 {
                n.status(&format!("serving 1 listener; es: {i}/3 servers up"));
            }
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(20))
            .expect("each message waits at most SEND_TIMEOUT for a socket nobody reads");
    }

    #[test]
    fn notifies_a_path_socket() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier::to(&path.clone().into_os_string());
        n.ready("serving 1 listener;\nes: 3/3 servers up");
        assert_eq!(
            receive(&socket),
            "READY=1\nSTATUS=serving 1 listener; es: 3/3 servers up"
        );
        n.reloading();
        let m = receive(&socket);
        assert!(m.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{m}");
        let usec: u64 = m.lines().nth(1).unwrap()["MONOTONIC_USEC=".len()..]
            .parse()
            .unwrap();
        assert!(
            usec.abs_diff(monotonic_usec()) < 5_000_000,
            "a CLOCK_MONOTONIC time: {usec}"
        );
        n.stopping("stopping");
        assert_eq!(receive(&socket), "STOPPING=1\nSTATUS=stopping");
        n.watchdog();
        assert_eq!(receive(&socket), "WATCHDOG=1");
    }

    #[test]
    fn notifies_an_abstract_socket() {
        let name = format!("roundhouse-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
        let socket = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        Notifier::to(&format!("@{name}").into()).status("DOWN: es: no healthy server");
        assert_eq!(receive(&socket), "STATUS=DOWN: es: no healthy server");
    }

    #[test]
    fn without_a_socket_nothing_happens() {
        Notifier { target: None }.ready("x");
        Notifier::to(&"relative/path".into()).ready("x");
    }

    #[test]
    fn watchdog_interval_is_half_and_only_for_us() {
        assert_eq!(
            watchdog_interval(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_interval(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }
}
