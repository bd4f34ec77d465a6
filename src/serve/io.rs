//! The two runtimes' sockets behind one interface: [`Transport`] for connections and
//! [`Acceptor`] for listeners, implemented for tokio-uring (io_uring) and tokio
//! (epoll). Buffers are owned and handed back, because io_uring owns a buffer while
//! the kernel uses it.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Socket options and non-blocking checks, done with plain syscalls on the
/// descriptor whichever runtime owns it.
fn with_socket<T>(fd: &(impl AsRawFd + ?Sized), f: impl FnOnce(socket2::SockRef<'_>) -> T) -> T {
    // SAFETY: the descriptor belongs to a stream that outlives this call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd.as_raw_fd()) };
    f(socket2::SockRef::from(&fd))
}

/// Whether bytes (or an EOF) wait in the socket's receive queue: a peek that never
/// blocks.
fn input_pending(fd: &(impl AsRawFd + ?Sized)) -> bool {
    let mut one = [MaybeUninit::<u8>::uninit(); 1];
    with_socket(fd, |s| {
        s.recv_with_flags(&mut one, libc::MSG_PEEK | libc::MSG_DONTWAIT)
            .is_ok()
    })
}

/// Connections waiting in a listening socket's accept queue: for a listener, Linux
/// reports the queue's length as `tcpi_unacked` of `TCP_INFO`. 0 when unknown.
pub fn accept_queue_len(fd: &(impl AsRawFd + ?Sized)) -> usize {
    // SAFETY: tcp_info is plain integers, for which all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is writable for `len` bytes, and the kernel writes at most `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        info.tcpi_unacked as usize
    } else {
        0
    }
}

/// Hold partial segments back (`TCP_CORK`) until the socket is shut down or
/// uncorked: the last answer of a connection and its FIN then leave in one segment,
/// so the client reads the answer and the end of the connection together.
pub fn cork(fd: &(impl AsRawFd + ?Sized)) {
    with_socket(fd, |s| {
        let _ = s.set_tcp_cork(true);
    })
}

pub fn shutdown(fd: &(impl AsRawFd + ?Sized), how: std::net::Shutdown) {
    with_socket(fd, |s| {
        let _ = s.shutdown(how);
    })
}

/// A connected socket.
pub trait Transport: AsRawFd {
    /// Read into the spare capacity of `buf`, appending. `Ok(0)` is EOF.
    fn read_into(
        &mut self,
        buf: Vec<u8>,
    ) -> impl std::future::Future<Output = (io::Result<usize>, Vec<u8>)>;
    fn write_all(
        &mut self,
        buf: Vec<u8>,
    ) -> impl std::future::Future<Output = (io::Result<()>, Vec<u8>)>;
    /// End the connection now. Dropping is not enough under io_uring: a cancelled read
    /// still holds the descriptor until the kernel completes it, and shutting the
    /// socket down is what completes it.
    fn close(&self) {
        shutdown(self, std::net::Shutdown::Both)
    }

    /// Send our FIN after what has been written; reading goes on.
    fn shutdown_write(&self) {
        shutdown(self, std::net::Shutdown::Write)
    }

    /// See [`cork`].
    fn cork(&self) {
        cork(self)
    }

    /// Bytes or an EOF are waiting to be read.
    fn input_pending(&self) -> bool {
        input_pending(self)
    }
}

impl Transport for tokio_uring::net::TcpStream {
    async fn read_into(&mut self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        use tokio_uring::buf::BoundedBuf;
        let len = buf.len();
        let (res, slice) = self.read(buf.slice(len..)).await;
        (res, slice.into_inner())
    }

    async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        tokio_uring::net::TcpStream::write_all(self, buf).await
    }
}

impl Transport for tokio::net::TcpStream {
    async fn read_into(&mut self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        use tokio::io::AsyncReadExt;
        let res = self.read_buf(&mut buf).await;
        (res, buf)
    }

    async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        use tokio::io::AsyncWriteExt;
        let res = AsyncWriteExt::write_all(self, &buf).await;
        (res, buf)
    }
}

/// A listening socket.
pub trait Acceptor: AsRawFd {
    type Stream: Transport + 'static;
    fn accept(&self) -> impl std::future::Future<Output = io::Result<(Self::Stream, SocketAddr)>>;
    fn set_nodelay(stream: &Self::Stream);

    /// Stop listening now. Dropping is not enough under io_uring: an accept in flight
    /// keeps the socket listening until it completes, and it would take a connection
    /// only to drop it. Shutting a listening socket down takes it out of the port's
    /// `SO_REUSEPORT` group at once and completes that accept.
    fn close(&self) {
        shutdown(self, std::net::Shutdown::Both)
    }
}

impl Acceptor for tokio_uring::net::TcpListener {
    type Stream = tokio_uring::net::TcpStream;
    async fn accept(&self) -> io::Result<(Self::Stream, SocketAddr)> {
        tokio_uring::net::TcpListener::accept(self).await
    }
    fn set_nodelay(stream: &Self::Stream) {
        let _ = stream.set_nodelay(true);
    }
}

impl Acceptor for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept(&self) -> io::Result<(Self::Stream, SocketAddr)> {
        tokio::net::TcpListener::accept(self).await
    }
    fn set_nodelay(stream: &Self::Stream) {
        let _ = stream.set_nodelay(true);
    }
}
