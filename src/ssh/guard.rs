//! A TCP stream with a deadline for the handshake: until it is disarmed (after authentication), every
//! read and write fails once the deadline has passed. russh runs the key exchange in its own task, which
//! does not notice a dropped handle while it waits on a stalled peer; failing its I/O ends that task,
//! so a host that stops answering mid-handshake cannot hold a socket and a task for ever.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

pub struct GuardedStream {
    inner: TcpStream,
    deadline: Pin<Box<Sleep>>,
    armed: Arc<AtomicBool>,
}

/// Disarms the deadline of its stream once the connection is established.
#[derive(Clone)]
pub struct Disarm(Arc<AtomicBool>);

impl Disarm {
    pub fn disarm(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl GuardedStream {
    pub fn new(inner: TcpStream, deadline: Instant) -> (GuardedStream, Disarm) {
        let armed = Arc::new(AtomicBool::new(true));
        let s = GuardedStream { inner, deadline: Box::pin(tokio::time::sleep_until(deadline)), armed: armed.clone() };
        (s, Disarm(armed))
    }

    /// `Err` once the deadline has passed while armed; also registers the waker for the deadline.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.armed.load(Ordering::SeqCst) && self.deadline.as_mut().poll(cx).is_ready() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the SSH handshake passed connect_timeout"));
        }
        Ok(())
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn reads_fail_after_the_deadline_until_disarmed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (_server, _) = listener.accept().await.unwrap();
        let (mut s, _disarm) = GuardedStream::new(tcp, Instant::now() + std::time::Duration::from_millis(50));
        let mut buf = [0u8; 8];
        let err = s.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let (mut s, disarm) = GuardedStream::new(tcp, Instant::now() + std::time::Duration::from_millis(50));
        disarm.disarm();
        tokio::time::sleep(std::time::Duration::from_millis(80)).await;
        tokio::io::AsyncWriteExt::write_all(&mut server, b"hi").await.unwrap();
        assert_eq!(s.read(&mut buf).await.unwrap(), 2);
    }
}
