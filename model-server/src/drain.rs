//! Stopping the gRPC server within a time limit.
//!
//! On the stop signal, tonic stops accepting connections and waits for the open ones to finish
//! their requests, however long that takes: a model with a long queue, a client that stalls in
//! the middle of its upload. [`serve`] gives them the grace period, then closes every connection
//! still open (ending its requests), so that the server returns.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures::{FutureExt as _, Stream};
use tandem_core::shutdown::Shutdown;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::oneshot,
};
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

/// Runs `server` on the connections `incoming` accepts until it stops on its own after `stop`
/// (every connection closed) or, at most `grace` after `stop`, until the connections still
/// open have been closed. `server` is handed the connections and `stop`, and is expected to
/// stop accepting on `stop` and then wait for the open connections.
pub async fn serve<F, E>(
    incoming: TcpIncoming,
    stop: Shutdown,
    grace: Duration,
    server: impl FnOnce(Incoming, Shutdown) -> F,
) -> Result<(), E>
where
    F: Future<Output = Result<(), E>>,
{
    // Fires when sent to or dropped: no connection outlives this function.
    let (cut, cut_signal) = oneshot::channel::<()>();
    let incoming = Incoming {
        inner: incoming,
        cut: tandem_core::shutdown::shared(async {
            let _ = cut_signal.await;
        }),
    };
    let serving = server(incoming, stop.clone());
    tokio::pin!(serving);
    tokio::select! {
        result = &mut serving => result,
        () = stop => match tokio::time::timeout(grace, &mut serving).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(
                    ?grace,
                    "requests still running when the shutdown grace period ended; \
                     closing their connections"
                );
                drop(cut);
                serving.await
            }
        },
    }
}

/// The accepted connections, each of which [`serve`] can close.
#[derive(Debug)]
pub struct Incoming {
    inner: TcpIncoming,
    cut: Shutdown,
}

impl Stream for Incoming {
    type Item = io::Result<Connection>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let cut = self.cut.clone();
        Pin::new(&mut self.inner)
            .poll_next(cx)
            .map_ok(|io| Connection { io, cut })
    }
}

/// A TCP connection whose reads and writes fail once `cut` resolves, which ends it.
#[derive(Debug)]
pub struct Connection {
    io: TcpStream,
    cut: Shutdown,
}

impl Connection {
    /// An error once the connection has been cut; else `cx` is woken when it is.
    fn cut(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        self.cut.poll_unpin(cx).is_ready().then(|| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed: the shutdown grace period is over",
            )
        })
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.cut(cx) {
            Some(e) => Poll::Ready(Err(e)),
            None => Pin::new(&mut this.io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.cut(cx) {
            Some(e) => Poll::Ready(Err(e)),
            None => Pin::new(&mut this.io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.cut(cx) {
            Some(e) => Poll::Ready(Err(e)),
            None => Pin::new(&mut this.io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.cut(cx) {
            Some(e) => Poll::Ready(Err(e)),
            None => Pin::new(&mut this.io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
