//! Response bodies: whole frames (a gRPC unary answer: prefix, message, OK trailers;
//! an HTTP answer), a gRPC stream of answers ended by a status, a proxied response,
//! or nothing (a trailers-only gRPC status in the headers).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::mpsc;

use crate::calls::CallGuard;
use crate::framing::{prefix, Status, CANCELLED, OK};

/// What Python sends down a stream.
pub enum Outcome {
    Message(Bytes),
    End(Status),
}

pub enum ReplyBody {
    Empty,
    Frames(VecDeque<Frame<Bytes>>),
    Stream {
        rx: mpsc::UnboundedReceiver<Outcome>,
        pending: Option<Bytes>,
        done: bool,
        _guard: CallGuard,
    },
    Proxied(Incoming),
}

impl ReplyBody {
    /// A whole HTTP body.
    pub fn full(body: Bytes) -> Self {
        Self::Frames(VecDeque::from([Frame::data(body)]))
    }

    /// One message and the OK trailers.
    pub fn unary(message: Bytes) -> Self {
        let mut frames = VecDeque::with_capacity(3);
        frames.push_back(Frame::data(prefix(message.len())));
        frames.push_back(Frame::data(message));
        frames.push_back(Frame::trailers(Status::new(OK, "").headers()));
        Self::Frames(frames)
    }

    pub fn stream(rx: mpsc::UnboundedReceiver<Outcome>, guard: CallGuard) -> Self {
        Self::Stream {
            rx,
            pending: None,
            done: false,
            _guard: guard,
        }
    }
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ReplyBody::Empty => Poll::Ready(None),
            ReplyBody::Frames(frames) => Poll::Ready(frames.pop_front().map(Ok)),
            // A broken upstream ends the body early (hyper then closes the connection).
            ReplyBody::Proxied(inner) => match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(Some(Err(_))) => Poll::Ready(None),
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            ReplyBody::Stream {
                rx, pending, done, ..
            } => {
                if let Some(message) = pending.take() {
                    return Poll::Ready(Some(Ok(Frame::data(message))));
                }
                if *done {
                    return Poll::Ready(None);
                }
                match rx.poll_recv(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Some(Outcome::Message(message))) => {
                        *pending = Some(message.clone());
                        Poll::Ready(Some(Ok(Frame::data(prefix(message.len())))))
                    }
                    Poll::Ready(Some(Outcome::End(status))) => {
                        *done = true;
                        Poll::Ready(Some(Ok(Frame::trailers(status.headers()))))
                    }
                    Poll::Ready(None) => {
                        *done = true;
                        let status = Status::new(CANCELLED, "the server dropped the stream");
                        Poll::Ready(Some(Ok(Frame::trailers(status.headers()))))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReplyBody::Empty => true,
            ReplyBody::Frames(frames) => frames.is_empty(),
            ReplyBody::Stream { done, pending, .. } => *done && pending.is_none(),
            ReplyBody::Proxied(inner) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReplyBody::Empty => SizeHint::with_exact(0),
            ReplyBody::Frames(frames) if frames.len() == 1 => match frames.front() {
                Some(f) => f
                    .data_ref()
                    .map_or_else(SizeHint::default, |d| SizeHint::with_exact(d.len() as u64)),
                None => SizeHint::default(),
            },
            ReplyBody::Proxied(inner) => inner.size_hint(),
            _ => SizeHint::default(),
        }
    }
}
