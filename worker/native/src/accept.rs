//! The listening socket: accept connections and hand each to its protocol.

use std::sync::Arc;

use hyper_util::server::graceful::GracefulConnection;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::calls::Shared;

#[derive(Clone, Copy)]
pub enum Protocol {
    Grpc,
    Http,
}

pub async fn accept_loop(
    listener: TcpListener,
    protocol: Protocol,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    let mut stopping = stop.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((sock, _)) => {
                    let _ = sock.set_nodelay(true);
                    let (shared, stop) = (shared.clone(), stop.clone());
                    match protocol {
                        Protocol::Grpc => tokio::spawn(crate::grpc::serve_connection(sock, shared, stop)),
                        Protocol::Http => tokio::spawn(crate::http::serve_connection(sock, shared, stop)),
                    };
                }
                // Out of file descriptors and the like: back off, keep serving.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            },
            _ = stopping.changed() => break,
        }
    }
}

/// Serve one connection until it ends; on stop, shut it down gracefully (HTTP/2 GOAWAY,
/// HTTP/1.1 closes once idle) and let the calls in flight finish.
pub async fn until_stopped<C: GracefulConnection>(conn: C, mut stop: watch::Receiver<bool>) {
    tokio::pin!(conn);
    if *stop.borrow_and_update() {
        conn.as_mut().graceful_shutdown();
    }
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stop.changed() => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}
