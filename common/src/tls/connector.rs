//! The connector of coordinator channels: TCP, then mutual TLS, then a wait for the
//! coordinator's first bytes before the channel writes anything.
//!
//! TLS 1.3 checks the client's certificate after the client considers the handshake done, so
//! a coordinator that refuses it says so with an alert the client reads only later; a client
//! that writes its first call meanwhile usually sees a broken pipe instead. The coordinator
//! (an HTTP/2 server) speaks first, with its SETTINGS, so waiting for those bytes turns a
//! refusal into the alert it is, and costs nothing on a connection that is accepted.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::codegen::http::Uri;

/// How long to wait for the coordinator's first bytes; a server that waits for the client to
/// speak first is then spoken to anyway.
const FIRST_BYTES: Duration = Duration::from_secs(2);

/// Connects to the `host:port` of each URI it is given, checking the peer against
/// `server_name`.
#[derive(Debug, Clone)]
pub struct Connector {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
}

type Connected = TokioIo<Prefetched<TlsStream<TcpStream>>>;

impl tower::Service<Uri> for Connector {
    type Response = Connected;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Connected>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = TlsConnector::from(Arc::clone(&self.config));
        let server_name = self.server_name.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            let mut stream = connector.connect(server_name, tcp).await?;
            let mut first = vec![0; 16 * 1024];
            let read = match tokio::time::timeout(FIRST_BYTES, stream.read(&mut first)).await {
                Ok(read) => read?,
                Err(_) => 0,
            };
            first.truncate(read);
            Ok(TokioIo::new(Prefetched {
                first,
                offset: 0,
                inner: stream,
            }))
        })
    }
}

/// A stream whose first bytes were read ahead; they are read again first.
#[derive(Debug)]
pub struct Prefetched<S> {
    first: Vec<u8>,
    offset: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefetched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.offset < this.first.len() {
            let left = &this.first[this.offset..];
            let taken = left.len().min(buffer.remaining());
            buffer.put_slice(&left[..taken]);
            this.offset += taken;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(context, buffer)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefetched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(context, buffer)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn bytes_read_ahead_are_read_again_first_then_the_rest() {
        let (mut writer, reader) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut writer, b" world")
            .await
            .expect("write");
        drop(writer);
        let mut stream = Prefetched {
            first: b"hello".to_vec(),
            offset: 0,
            inner: reader,
        };
        let mut small = [0u8; 3];
        stream.read_exact(&mut small).await.expect("read");
        assert_eq!(&small, b"hel");
        let mut rest = String::new();
        stream.read_to_string(&mut rest).await.expect("read");
        assert_eq!(rest, "lo world");
    }
}
