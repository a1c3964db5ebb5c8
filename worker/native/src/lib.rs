//! infleet_transport: the worker's compiled transport.
//!
//! Rust owns the sockets, HTTP/1.1, HTTP/2 and gRPC's message framing on its own
//! threads; Python owns meaning (decode, validate, cache, batch, encode). Calls reach
//! Python in bulk: an eventfd turns readable, `take()` returns every event queued
//! since, and answers go back in bulk too (`reply_many`, `respond_many`) or one by
//! one (`fail`, `send`, `finish`). Python's side is
//! worker/infleet_worker/grpc_native.py and http_native.py; docs/worker.md, "The
//! transports".

mod accept;
mod body;
mod calls;
mod framing;
mod grpc;
mod http;

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyList, PyTuple};
use tokio::sync::watch;

use accept::Protocol;
use body::Outcome;
use calls::{HttpAnswer, Shared};
use framing::Status;

#[pyclass(module = "infleet_transport")]
struct Server {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
}

#[pymethods]
impl Server {
    /// Serve `protocol` ("grpc" or "http") on a listening TCP socket (its fd is
    /// duplicated: the caller may close its own). gRPC: `streaming` lists the method
    /// paths that are streams, every other path is unary. HTTP: inference requests
    /// come to Python, everything else goes to the HTTP server on the Unix socket
    /// `proxy`.
    #[new]
    #[pyo3(signature = (fd, protocol, max_receive, streaming = Vec::new(), proxy = None, threads = 1))]
    fn new(
        fd: RawFd,
        protocol: &str,
        max_receive: usize,
        streaming: Vec<String>,
        proxy: Option<std::path::PathBuf>,
        threads: usize,
    ) -> PyResult<Self> {
        let protocol = match protocol {
            "grpc" => Protocol::Grpc,
            "http" => Protocol::Http,
            other => return Err(PyValueError::new_err(format!("unknown protocol {other:?}"))),
        };
        // SAFETY: plain syscalls on descriptors we own from here on.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(PyOSError::new_err(
                std::io::Error::last_os_error().to_string(),
            ));
        }
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            unsafe { libc::close(efd) };
            return Err(PyOSError::new_err(
                std::io::Error::last_os_error().to_string(),
            ));
        }
        let efd = unsafe { OwnedFd::from_raw_fd(efd) };
        let std_listener = unsafe { std::net::TcpListener::from_raw_fd(dup) };
        std_listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("infleet-grpc")
            .enable_all()
            .build()?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener)?
        };
        let shared = Arc::new(Shared::new(efd, max_receive, streaming, proxy));
        let (stop, stop_rx) = watch::channel(false);
        runtime.spawn(accept::accept_loop(
            listener,
            protocol,
            shared.clone(),
            stop_rx,
        ));
        Ok(Self {
            shared,
            stop,
            runtime: Mutex::new(Some(runtime)),
        })
    }

    /// Readable when events are queued (for the event loop's add_reader).
    fn event_fd(&self) -> RawFd {
        self.shared.event_fd()
    }

    /// Every queued event as (call, kind, path or None, message or None, headers or
    /// None); kinds are UNARY, OPEN, MESSAGE, END, CANCEL (gRPC) and HTTP, whose
    /// headers are (Content-Encoding, Inference-Header-Content-Length), each or None.
    fn take<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let events = self.shared.take();
        let list = PyList::empty(py);
        for e in events {
            let path = e.path.as_deref().map(|p| p.into_pyobject(py)).transpose()?;
            let payload = e.payload.as_deref().map(|b| PyBytes::new(py, b));
            let headers = match e.headers {
                Some(values) => values.into_pyobject(py)?.into_any(),
                None => py.None().into_bound(py),
            };
            let item = PyTuple::new(
                py,
                [
                    e.call.into_pyobject(py)?.into_any(),
                    e.kind.into_pyobject(py)?.into_any(),
                    path.map_or_else(|| py.None().into_bound(py), |p| p.into_any()),
                    payload.map_or_else(|| py.None().into_bound(py), |p| p.into_any()),
                    headers,
                ],
            )?;
            list.append(item)?;
        }
        Ok(list)
    }

    /// Answer many unary calls at once (one lock, and one wake-up of the transport's
    /// thread for all of them); returns how many calls were still there.
    fn reply_many(&self, answers: Vec<(u64, PyBackedBytes)>) -> usize {
        self.shared.answer_many(
            answers
                .into_iter()
                .map(|(call, message)| (call, Bytes::from_owner(message))),
        )
    }

    /// Answer HTTP requests: (call, status, content type, Inference-Header-Content-Length
    /// or None, body) each; returns how many were still there.
    #[allow(clippy::type_complexity)]
    fn respond_many(&self, answers: Vec<(u64, u16, String, Option<u64>, PyBackedBytes)>) -> usize {
        self.shared.answer_http_many(answers.into_iter().map(
            |(call, status, content_type, header_length, body)| {
                let answer = HttpAnswer {
                    status,
                    content_type,
                    header_length,
                    body: Bytes::from_owner(body),
                };
                (call, answer)
            },
        ))
    }

    /// End a unary call with a gRPC status code and message.
    fn fail(&self, call: u64, code: u32, message: &str) -> bool {
        self.shared.answer(call, Err(Status::new(code, message)))
    }

    /// The next response message of a stream.
    fn send(&self, call: u64, message: PyBackedBytes) -> bool {
        self.shared
            .stream_send(call, Outcome::Message(Bytes::from_owner(message)))
    }

    /// End a stream with a status (0 = OK).
    fn finish(&self, call: u64, code: u32, message: &str) -> bool {
        self.shared
            .stream_send(call, Outcome::End(Status::new(code, message)))
    }

    /// Calls not answered yet.
    fn open_calls(&self) -> usize {
        self.shared.open_calls()
    }

    /// Stop accepting connections; open connections get GOAWAY and finish the
    /// calls they have.
    fn stop_accepting(&self) {
        let _ = self.stop.send(true);
    }

    /// Stop everything (calls still open end with UNAVAILABLE).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let _ = self.stop.send(true);
        let runtime = self
            .runtime
            .lock()
            .map_err(|_| PyRuntimeError::new_err("transport lock poisoned"))?
            .take();
        if let Some(rt) = runtime {
            py.detach(|| rt.shutdown_timeout(Duration::from_secs(2)));
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(mut guard) = self.runtime.lock() {
            if let Some(rt) = guard.take() {
                rt.shutdown_background();
            }
        }
    }
}

#[pymodule]
fn infleet_transport(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Server>()?;
    m.add("UNARY", calls::UNARY)?;
    m.add("OPEN", calls::OPEN)?;
    m.add("MESSAGE", calls::MESSAGE)?;
    m.add("END", calls::END)?;
    m.add("CANCEL", calls::CANCEL)?;
    m.add("HTTP", calls::HTTP)?;
    Ok(())
}
