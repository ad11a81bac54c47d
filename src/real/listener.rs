//! The HTTP server's accept loop: one task per connection, served by
//! hyper's HTTP/1 with upgrades (the agents' WebSockets), a deadline for
//! reading a request's header block, and a graceful drain.
//!
//! `axum::serve` installs no timer in hyper, which leaves hyper's header
//! read timeout inert: a client that opens connections and never finishes
//! a request head would hold them forever. Here every connection has one,
//! so a slow or silent client is cut off after `header_read_timeout`,
//! counted from when the server starts waiting for a request head (the
//! connection's start, or the end of the previous exchange): an idle
//! keep-alive connection closes after it too.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

/// How long to wait before accepting again after `accept` failed (out of
/// file descriptors, say), so a persistent error does not spin.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Serve `app` on `listener` until `shutdown` completes; then stop
/// accepting, let every connection finish the request it is serving (idle
/// keep-alive connections close at once) and return. Upgraded connections
/// (WebSockets) live in their own tasks and are not waited for.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_read_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(connection(
                        stream,
                        peer,
                        app.clone(),
                        header_read_timeout,
                        stopping.clone(),
                    ));
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                }
            },
        }
    }
    drop(listener);
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Serve one connection until it ends, or until `stopping` turns true
/// (then finish the request in progress and close).
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    header_read_timeout: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
    }
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(request)
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(served);
    let result = tokio::select! {
        biased;
        result = served.as_mut() => result,
        () = async {
            // The guard `wait_for` returns is not `Send`: drop it here.
            let _ = stopping.wait_for(|stop| *stop).await;
        } => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(error) = result {
        // Timeouts, resets and malformed requests end here; none is the
        // server's fault.
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}
