//! The two runtimes' sockets behind one interface: [`Transport`] for connections and
//! [`Acceptor`] for listeners, implemented for tokio-uring (io_uring) and tokio
//! (epoll). Buffers are owned and handed back, because io_uring owns a buffer while
//! the kernel uses it.

use std::io;
use std::net::SocketAddr;

/// A connected socket.
pub trait Transport {
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
    fn close(&self);
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

    fn close(&self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
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

    fn close(&self) {
        let _ = socket2::SockRef::from(self).shutdown(std::net::Shutdown::Both);
    }
}

/// A listening socket.
pub trait Acceptor {
    type Stream: Transport + 'static;
    fn accept(&self) -> impl std::future::Future<Output = io::Result<(Self::Stream, SocketAddr)>>;
    fn set_nodelay(stream: &Self::Stream);
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
