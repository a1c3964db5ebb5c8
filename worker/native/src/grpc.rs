//! gRPC over HTTP/2: each call becomes events for Python, Python's answers become
//! responses.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

use crate::body::ReplyBody;
use crate::calls::{Call, Event, Shared, END, MESSAGE, OPEN, UNARY};
use crate::framing::{Deframer, Encoding, Status, CANCELLED, INTERNAL, UNAVAILABLE};

pub async fn serve_connection(sock: TcpStream, shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        .max_frame_size(1 << 20)
        .max_send_buf_size(4 << 20)
        .max_concurrent_streams(4096)
        .max_header_list_size(64 << 10);
    let conn = builder.serve_connection(TokioIo::new(sock), service);
    crate::accept::until_stopped(conn, stop).await;
}

type Answer = Result<Response<ReplyBody>, Infallible>;

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Answer {
    if req.method() != Method::POST {
        return Ok(plain(StatusCode::METHOD_NOT_ALLOWED));
    }
    let grpc = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if !grpc {
        return Ok(plain(StatusCode::UNSUPPORTED_MEDIA_TYPE));
    }
    let encoding = match Encoding::from_header(req.headers().get("grpc-encoding")) {
        Ok(e) => e,
        Err(message) => return Ok(status(Status::new(crate::framing::UNIMPLEMENTED, message))),
    };
    let path: Arc<str> = Arc::from(req.uri().path());
    let deframer = Deframer::new(encoding, shared.max_receive);
    if shared.streaming.iter().any(|p| **p == *path) {
        return Ok(stream(shared, path, deframer, req.into_body()));
    }
    Ok(match unary(shared, path, deframer, req.into_body()).await {
        Ok(message) => ok(ReplyBody::unary(message)),
        Err(s) => status(s),
    })
}

async fn unary(
    shared: Arc<Shared>,
    path: Arc<str>,
    mut deframer: Deframer,
    mut body: Incoming,
) -> Result<Bytes, Status> {
    let mut message = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Status::new(CANCELLED, format!("request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            deframer.push(&data);
            if let Some(m) = deframer.next()? {
                if message.is_some() {
                    return Err(Status::new(
                        INTERNAL,
                        "more than one message in a unary call",
                    ));
                }
                message = Some(m);
            }
        }
    }
    let message = match (message, deframer.leftover()) {
        (Some(m), 0) => m,
        (Some(_), _) => {
            return Err(Status::new(
                INTERNAL,
                "more than one message in a unary call",
            ))
        }
        (None, _) => return Err(Status::new(INTERNAL, "the call carried no request message")),
    };
    let (tx, rx) = oneshot::channel();
    let (id, _guard) = shared.open(Call::Unary(tx), false);
    shared.push(Event {
        call: id,
        kind: UNARY,
        path: Some(path),
        payload: Some(message),
        headers: None,
    });
    rx.await.unwrap_or_else(|_| {
        Err(Status::new(
            UNAVAILABLE,
            "the worker stopped before answering",
        ))
    })
}

fn stream(
    shared: Arc<Shared>,
    path: Arc<str>,
    deframer: Deframer,
    body: Incoming,
) -> Response<ReplyBody> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (id, guard) = shared.open(Call::Stream(tx), true);
    shared.push(Event {
        call: id,
        kind: OPEN,
        path: Some(path),
        payload: None,
        headers: None,
    });
    tokio::spawn(read_stream(shared, id, deframer, body));
    ok(ReplyBody::stream(rx, guard))
}

/// The client's messages of a stream, in order, then END; a broken request ends
/// the call with its status.
async fn read_stream(shared: Arc<Shared>, id: u64, mut deframer: Deframer, mut body: Incoming) {
    let push = |kind, payload| {
        shared.push(Event {
            call: id,
            kind,
            path: None,
            payload,
            headers: None,
        })
    };
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return; // the client reset the stream: the response body goes too (CANCEL)
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        deframer.push(&data);
        loop {
            match deframer.next() {
                Ok(Some(message)) => push(MESSAGE, Some(message)),
                Ok(None) => break,
                Err(s) => {
                    shared.stream_send(id, crate::body::Outcome::End(s));
                    return;
                }
            }
        }
    }
    push(END, None);
}

fn ok(body: ReplyBody) -> Response<ReplyBody> {
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert(
        "grpc-accept-encoding",
        HeaderValue::from_static("identity,deflate,gzip"),
    );
    resp
}

/// A trailers-only response: the status in the headers, no body.
fn status(s: Status) -> Response<ReplyBody> {
    let mut resp = ok(ReplyBody::Empty);
    resp.headers_mut().extend(s.headers());
    resp
}

fn plain(code: StatusCode) -> Response<ReplyBody> {
    let mut resp = Response::new(ReplyBody::Empty);
    *resp.status_mut() = code;
    resp
}
