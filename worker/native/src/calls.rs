//! What crosses between the transport's threads and Python: events (calls that
//! arrived, stream messages, ends, cancellations) queued for Python, woken through
//! an eventfd; and the open calls, each waiting for Python's answer.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::body::Outcome;
use crate::framing::Status;

pub const UNARY: u8 = 0; // a whole unary call: path and its one message
pub const OPEN: u8 = 1; // a stream opened: path
pub const MESSAGE: u8 = 2; // a stream's next message
pub const END: u8 = 3; // the client closed its side of a stream
pub const CANCEL: u8 = 4; // the client went away (or broke the stream)
pub const HTTP: u8 = 5; // an HTTP inference request: path, body, headers

/// The request headers an HTTP inference event carries, in this order.
pub const HTTP_HEADERS: [&str; 2] = ["content-encoding", "inference-header-content-length"];

pub struct Event {
    pub call: u64,
    pub kind: u8,
    pub path: Option<Arc<str>>,
    pub payload: Option<Bytes>,
    pub headers: Option<[Option<String>; 2]>,
}

/// Python's answer to an HTTP request.
pub struct HttpAnswer {
    pub status: u16,
    pub content_type: String,
    pub header_length: Option<u64>,
    pub body: Bytes,
}

pub enum Call {
    Unary(oneshot::Sender<Result<Bytes, Status>>),
    Stream(mpsc::UnboundedSender<Outcome>),
    Http(oneshot::Sender<HttpAnswer>),
}

pub struct Shared {
    events: Mutex<Vec<Event>>,
    calls: Mutex<HashMap<u64, Call>>,
    next: AtomicU64,
    efd: OwnedFd, // closed when the last thread lets go of Shared
    pub max_receive: usize,
    pub streaming: Vec<String>, // gRPC: the streaming methods' paths
    pub proxy: Option<std::path::PathBuf>, // HTTP: where requests other than infer go
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    pub fn new(
        efd: OwnedFd,
        max_receive: usize,
        streaming: Vec<String>,
        proxy: Option<std::path::PathBuf>,
    ) -> Self {
        Self {
            events: Mutex::new(Vec::new()),
            calls: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            efd,
            max_receive,
            streaming,
            proxy,
        }
    }

    pub fn event_fd(&self) -> RawFd {
        self.efd.as_raw_fd()
    }

    /// Queue an event for Python; the eventfd turns readable when the queue stops
    /// being empty (one write per drain, not per event). The write comes after the
    /// lock is released, so the woken loop's take() never waits for it; a take()
    /// between the push and the write only makes the next wake find nothing.
    pub fn push(&self, event: Event) {
        let was_empty = {
            let mut q = lock(&self.events);
            let was_empty = q.is_empty();
            q.push(event);
            was_empty
        };
        if was_empty {
            // SAFETY: efd is an eventfd owned by self.
            unsafe { libc::eventfd_write(self.efd.as_raw_fd(), 1) };
        }
    }

    /// Everything queued, and the eventfd reset (under the queue's lock: an event
    /// left in the queue always has its push's write still to come or after the reset).
    pub fn take(&self) -> Vec<Event> {
        let mut q = lock(&self.events);
        let mut value: libc::eventfd_t = 0;
        // SAFETY: as in push; non-blocking, EAGAIN when already 0.
        unsafe { libc::eventfd_read(self.efd.as_raw_fd(), &mut value) };
        std::mem::take(&mut *q)
    }

    /// A new call waiting for its answer; the guard forgets it when the HTTP/2
    /// stream goes (answered, or the client left).
    pub fn open(self: &Arc<Self>, call: Call, cancel_event: bool) -> (u64, CallGuard) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.calls).insert(id, call);
        let guard = CallGuard {
            shared: self.clone(),
            id,
            cancel_event,
        };
        (id, guard)
    }

    /// Take the calls these answers are for out of the open calls, keeping those that
    /// are not of the kind ``sender`` accepts. Answers are sent by the caller after the
    /// lock is released: each send wakes the transport's thread, whose first act on a
    /// finished call (dropping its guard) takes the same lock; sending under it made
    /// that thread block on the lock while Python still held it.
    fn take_calls<T, S>(
        &self,
        answers: impl Iterator<Item = (u64, T)>,
        sender: impl Fn(Call) -> Result<S, Call>,
    ) -> Vec<(S, T)> {
        let mut calls = lock(&self.calls);
        answers
            .filter_map(|(id, answer)| match sender(calls.remove(&id)?) {
                Ok(tx) => Some((tx, answer)),
                Err(other) => {
                    calls.insert(id, other);
                    None
                }
            })
            .collect()
    }

    /// Python's answer to a unary call; false when the call is gone.
    pub fn answer(&self, id: u64, result: Result<Bytes, Status>) -> bool {
        self.take_calls(std::iter::once((id, result)), unary)
            .into_iter()
            .any(|(tx, result)| tx.send(result).is_ok())
    }

    /// Unary answers; how many were still wanted.
    pub fn answer_many(&self, answers: impl Iterator<Item = (u64, Bytes)>) -> usize {
        self.take_calls(answers, unary)
            .into_iter()
            .map(|(tx, message)| usize::from(tx.send(Ok(message)).is_ok()))
            .sum()
    }

    /// HTTP answers; how many were still wanted.
    pub fn answer_http_many(&self, answers: impl Iterator<Item = (u64, HttpAnswer)>) -> usize {
        let http = |call| match call {
            Call::Http(tx) => Ok(tx),
            other => Err(other),
        };
        self.take_calls(answers, http)
            .into_iter()
            .map(|(tx, answer)| usize::from(tx.send(answer).is_ok()))
            .sum()
    }

    /// The next message of a stream, or its end (which forgets the call).
    pub fn stream_send(&self, id: u64, outcome: Outcome) -> bool {
        let tx = {
            let mut calls = lock(&self.calls);
            let tx = match calls.get(&id) {
                Some(Call::Stream(tx)) => Some(tx.clone()),
                _ => None,
            };
            if matches!(outcome, Outcome::End(_)) {
                calls.remove(&id);
            }
            tx
        };
        tx.is_some_and(|tx| tx.send(outcome).is_ok())
    }

    pub fn open_calls(&self) -> usize {
        lock(&self.calls).len()
    }
}

type UnaryTx = oneshot::Sender<Result<Bytes, Status>>;

fn unary(call: Call) -> Result<UnaryTx, Call> {
    match call {
        Call::Unary(tx) => Ok(tx),
        other => Err(other),
    }
}

pub struct CallGuard {
    shared: Arc<Shared>,
    id: u64,
    cancel_event: bool,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let gone = lock(&self.shared.calls).remove(&self.id).is_some();
        if gone && self.cancel_event {
            self.shared.push(Event {
                call: self.id,
                kind: CANCEL,
                path: None,
                payload: None,
                headers: None,
            });
        }
    }
}
