//! Response bodies: a unary answer (prefix, message, OK trailers), a stream of
//! answers ended by a status, or nothing (a trailers-only status in the headers).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

use crate::calls::CallGuard;
use crate::framing::{prefix, Status, CANCELLED, OK};

/// What Python sends down a stream.
pub enum Outcome {
    Message(Bytes),
    End(Status),
}

pub enum GrpcBody {
    Empty,
    Frames(VecDeque<Frame<Bytes>>),
    Stream {
        rx: mpsc::UnboundedReceiver<Outcome>,
        pending: Option<Bytes>,
        done: bool,
        _guard: CallGuard,
    },
}

impl GrpcBody {
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

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            GrpcBody::Empty => Poll::Ready(None),
            GrpcBody::Frames(frames) => Poll::Ready(frames.pop_front().map(Ok)),
            GrpcBody::Stream {
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
            GrpcBody::Empty => true,
            GrpcBody::Frames(frames) => frames.is_empty(),
            GrpcBody::Stream { done, pending, .. } => *done && pending.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GrpcBody::Empty => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
