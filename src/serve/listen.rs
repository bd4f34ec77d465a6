//! Binding the listening sockets: one per worker thread, all on one address with
//! `SO_REUSEPORT`, so the kernel spreads connections over the threads.

use std::net::SocketAddr;

pub fn listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
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
) -> Result<(Vec<std::net::TcpListener>, SocketAddr), (SocketAddr, std::io::Error)> {
    let first = listener(addr).map_err(|e| (addr, e))?;
    let bound = first.local_addr().map_err(|e| (addr, e))?;
    let mut all = vec![first];
    for _ in 1..threads {
        all.push(listener(bound).map_err(|e| (bound, e))?);
    }
    Ok((all, bound))
}
