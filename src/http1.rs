//! HTTP/1.1 requests on a fresh connection: what the health checks and the admin CLI need.
//! Generic over the stream, so a check can speak it over TCP or TLS alike.

use std::future::Future;
use std::pin::pin;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper::header::{HeaderName, HeaderValue};
use hyper::rt::{Read, Write};

/// Why a request got no usable answer. The `Display` form is the reason a health check or the
/// command line shows.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("HTTP handshake failed: {0}")]
    Handshake(#[source] hyper::Error),
    #[error("cannot build the request for {path:?}: {source}")]
    Request {
        path: String,
        #[source]
        source: hyper::http::Error,
    },
    #[error("no HTTP answer: {0}")]
    NoAnswer(#[source] hyper::Error),
    #[error("reading the answer failed: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("HTTP connection failed: {0}")]
    Connection(#[source] hyper::Error),
}

/// Sends `method path` with `headers` over `io` and reads the answer, at most `max_body` bytes
/// of it. Returns the status code and the body.
pub async fn request<T>(
    io: T,
    method: hyper::Method,
    path: &str,
    headers: &[(HeaderName, HeaderValue)],
    max_body: usize,
) -> Result<(u16, Bytes), Error>
where
    T: Read + Write + Unpin + Send + 'static,
{
    session(io, |mut s| async move {
        s.send(method, path, headers, max_body).await
    })
    .await
}

/// Requests one after another on one connection (a health check that also asks the node about
/// itself does not pay for a second connection or TLS handshake).
pub struct Session {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl Session {
    /// Sends `method path` with `headers` and reads the answer, at most `max_body` bytes of it.
    pub async fn send(
        &mut self,
        method: hyper::Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        max_body: usize,
    ) -> Result<(u16, Bytes), Error> {
        let mut builder = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            builder = builder.header(k, v);
        }
        let request = builder
            .header(
                hyper::header::USER_AGENT,
                concat!("roundhouse/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|source| Error::Request {
                path: path.to_owned(),
                source,
            })?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(Error::NoAnswer)?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), max_body)
            .collect()
            .await
            .map_err(Error::Body)?
            .to_bytes();
        Ok((status, body))
    }
}

/// Opens an HTTP/1.1 connection over `io` and runs `exchange` on it; the connection's I/O is
/// driven meanwhile, and a failure of the connection itself is reported as such.
pub async fn session<T, F, Fut, R>(io: T, exchange: F) -> Result<R, Error>
where
    T: Read + Write + Unpin + Send + 'static,
    F: FnOnce(Session) -> Fut,
    Fut: Future<Output = Result<R, Error>>,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(Error::Handshake)?;
    let mut exchange = pin!(exchange(Session { sender }));
    let mut conn = pin!(conn);
    let mut conn_done = false;
    // The connection future drives the I/O; the exchange finishes first unless the connection fails.
    loop {
        tokio::select! {
            biased;
            r = &mut exchange => return r,
            r = &mut conn, if !conn_done => {
                conn_done = true;
                r.map_err(Error::Connection)?;
            }
        }
    }
}
