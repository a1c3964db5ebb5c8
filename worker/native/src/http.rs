//! KServe v2 over HTTP/1.1: inference requests (`POST /v2/models/.../infer`) become
//! events for Python; every other route is passed through to the worker's aiohttp
//! app on a Unix socket (health, metadata, statistics, OpenAI routes: rare, and one
//! implementation of them).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{oneshot, watch};

use crate::body::ReplyBody;
use crate::calls::{Call, Event, HttpAnswer, Shared, HTTP, HTTP_HEADERS};

pub async fn serve_connection(sock: TcpStream, shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(sock), service);
    crate::accept::until_stopped(conn, stop).await;
}

fn is_infer(req: &Request<Incoming>) -> bool {
    let path = req.uri().path();
    req.method() == Method::POST && path.starts_with("/v2/models/") && path.ends_with("/infer")
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<ReplyBody>, Infallible> {
    Ok(if is_infer(&req) {
        infer(shared, req).await
    } else {
        proxy(shared, req).await
    })
}

async fn infer(shared: Arc<Shared>, req: Request<Incoming>) -> Response<ReplyBody> {
    let max = shared.max_receive;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared.filter(|&n| n > max as u64) {
        let msg = format!("request body of {len} bytes exceeds the limit of {max} bytes");
        return json_error(StatusCode::PAYLOAD_TOO_LARGE, &msg);
    }
    let path: Arc<str> = Arc::from(req.uri().path());
    let headers = HTTP_HEADERS.map(|name| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let body = match Limited::new(req.into_body(), max).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            let msg = format!("request body exceeds the limit of {max} bytes");
            return json_error(StatusCode::PAYLOAD_TOO_LARGE, &msg);
        }
        Err(e) => {
            let msg = format!("cannot read the request body: {e}");
            return json_error(StatusCode::BAD_REQUEST, &msg);
        }
    };
    let (tx, rx) = oneshot::channel();
    let (id, _guard) = shared.open(Call::Http(tx), false);
    shared.push(Event {
        call: id,
        kind: HTTP,
        path: Some(path),
        payload: Some(body),
        headers: Some(headers),
    });
    match rx.await {
        Ok(answer) => respond(answer),
        Err(_) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the worker stopped before answering; retry",
        ),
    }
}

fn respond(a: HttpAnswer) -> Response<ReplyBody> {
    let mut resp = Response::new(ReplyBody::full(a.body));
    *resp.status_mut() =
        StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&a.content_type) {
        h.insert(CONTENT_TYPE, v);
    }
    if let Some(n) = a.header_length {
        h.insert("inference-header-content-length", HeaderValue::from(n));
    }
    resp
}

async fn proxy(shared: Arc<Shared>, req: Request<Incoming>) -> Response<ReplyBody> {
    let Some(path) = shared.proxy.as_ref() else {
        return json_error(StatusCode::NOT_FOUND, "not found");
    };
    let stream = match UnixStream::connect(path).await {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("the worker's routes are not up: {e}");
            return json_error(StatusCode::SERVICE_UNAVAILABLE, &msg);
        }
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(pair) => pair,
        Err(e) => return json_error(StatusCode::BAD_GATEWAY, &format!("internal routes: {e}")),
    };
    tokio::spawn(conn);
    match sender.send_request(req).await {
        Ok(resp) => resp.map(ReplyBody::Proxied),
        Err(e) => json_error(StatusCode::BAD_GATEWAY, &format!("internal routes: {e}")),
    }
}

/// The worker's HTTP error shape: {"error": "..."}.
fn json_error(status: StatusCode, message: &str) -> Response<ReplyBody> {
    let mut escaped = String::with_capacity(message.len() + 2);
    for c in message.chars() {
        match c {
            '"' => escaped.push_str("\\\""),
            '\\' => escaped.push_str("\\\\"),
            c if (c as u32) < 0x20 => escaped.push_str(&format!("\\u{:04x}", c as u32)),
            c => escaped.push(c),
        }
    }
    let body = Bytes::from(format!("{{\"error\":\"{escaped}\"}}"));
    let mut resp = Response::new(ReplyBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
