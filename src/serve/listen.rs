//! Binding the listening sockets, and making sure one process serves a port.
//!
//! Each worker thread has its own listener on the one address, all with
//! `SO_REUSEPORT`, so the kernel spreads connections over the threads. That option
//! also lets any other process of the same user bind the port, and the kernel would
//! then spread new connections over both processes, silently: an operator would see
//! random misses. So a server first takes the port's [`PortLock`], an abstract Unix
//! socket named after the port, which the kernel releases when the process exits,
//! however it exits. A second server finds the lock taken and refuses to start,
//! naming the process that holds it. A process that is not a tracer and listens on
//! the port is found by a probe bind without `SO_REUSEPORT`.
//!
//! `--takeover` is the deliberate exception (a zero-downtime restart or upgrade): the
//! new server binds its listeners beside the old ones, then asks the old one, through
//! the lock's socket, to hand over; the old one closes its listeners, drains and
//! exits, and the new one takes the lock. Only a process of the same user (or root)
//! may ask.

use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::time::Duration;

pub fn listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// Bind `threads` listeners on `addr`; with port 0, the first one's port is shared by
/// the others. Returns the listeners and the bound address.
pub fn bind_all(
    addr: SocketAddr,
    threads: usize,
) -> Result<(Vec<std::net::TcpListener>, SocketAddr), (SocketAddr, io::Error)> {
    let first = listener(addr).map_err(|e| (addr, e))?;
    let bound = first.local_addr().map_err(|e| (addr, e))?;
    let mut all = vec![first];
    for _ in 1..threads {
        all.push(listener(bound).map_err(|e| (bound, e))?);
    }
    Ok((all, bound))
}

/// Whether a process that does not share the port (no `SO_REUSEPORT`, or another
/// user) listens on `addr`: bind a plain socket there and see.
pub fn foreign_listener(addr: SocketAddr) -> bool {
    use socket2::{Domain, Protocol, Socket, Type};
    let Ok(s) = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)) else {
        return false;
    };
    let _ = s.set_reuse_address(true);
    matches!(s.bind(&addr.into()), Err(e) if e.kind() == io::ErrorKind::AddrInUse)
}

fn lock_name(port: u16) -> String {
    format!("tracer/serve/port/{port}")
}

/// The lock on a port: held for as long as this process serves it.
pub struct PortLock {
    listener: UnixListener,
    port: u16,
}

impl PortLock {
    /// Take the lock of `port`; `None` when another process holds it.
    pub fn try_take(port: u16) -> io::Result<Option<PortLock>> {
        let addr = UnixAddr::from_abstract_name(lock_name(port).as_bytes())?;
        match UnixListener::bind_addr(&addr) {
            Ok(listener) => Ok(Some(PortLock { listener, port })),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Answer other servers' questions on the lock's socket, on a thread of its own:
    /// `who` gets this process's id and address; `takeover` (from the same user)
    /// gets a yes, then `on_takeover` is called with the asker's process id.
    pub fn answer_requests(
        &self,
        listening: SocketAddr,
        on_takeover: impl Fn(u32) + Send + 'static,
    ) -> io::Result<()> {
        let listener = self.listener.try_clone()?;
        std::thread::Builder::new()
            .name("tracer-port-lock".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    if let Some(pid) = answer(conn, listening) {
                        on_takeover(pid);
                    }
                }
            })?;
        Ok(())
    }
}

/// One request on the lock's socket; `Some(pid)` when a takeover was granted.
fn answer(conn: UnixStream, listening: SocketAddr) -> Option<u32> {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line).ok()?;
    let mut w = &conn;
    let me = std::process::id();
    match line.split_whitespace().collect::<Vec<_>>()[..] {
        ["who"] => {
            let _ = writeln!(w, "tracer {me} {listening}");
            None
        }
        ["takeover", pid] => {
            let same_user = peer_uid(&conn).is_some_and(|uid| uid == 0 || uid == current_uid());
            if !same_user {
                let _ = writeln!(w, "refused: not the same user");
                tracing::warn!("a takeover was asked by another user's process; refused");
                return None;
            }
            let _ = writeln!(w, "ok {me}");
            pid.parse().ok()
        }
        _ => {
            let _ = writeln!(w, "unknown request");
            None
        }
    }
}

/// Ask the holder of `port`'s lock something; its one-line answer.
pub fn ask_holder(port: u16, request: &str) -> io::Result<String> {
    let addr = UnixAddr::from_abstract_name(lock_name(port).as_bytes())?;
    let s = UnixStream::connect_addr(&addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    (&s).write_all(format!("{request}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line)?;
    Ok(line.trim().to_string())
}

fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The user id of the process at the other end of a Unix socket.
fn peer_uid(s: &UnixStream) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes one `ucred` into `cred`, whose size `len` gives.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(cred.uid)
}
