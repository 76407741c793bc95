//! The admin endpoint: the status page at `/`, `/metrics`, `/status`, `/healthz` and runtime
//! server state changes (`POST /servers/{backend}/{server}/{drain|maint|ready}`), served by
//! hyper on `admin.bind`.
//!
//! It runs on the control thread, never on a worker, and defends itself: a bounded number of
//! connections, small header limits, a header read timeout, and no request body is ever read.
//! Whatever arrives, the worst it can get is an error answer.

pub mod client;
mod page;
mod status;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::server::AdminState;
use crate::state::Shared;
use crate::words;

/// Admin connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 64;
/// Bytes of request head accepted; longer requests are refused by hyper.
const MAX_HEAD: usize = 16 * 1024;
/// A client that has not sent its request head within this is disconnected.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// A running admin endpoint; stops when dropped.
pub(crate) struct Admin {
    stop: CancellationToken,
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Binds the admin address (before anything else changes, so a failure can be reported).
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Serves the admin endpoint on a bound socket, on the current (control) event loop.
pub(crate) fn start(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
) -> std::io::Result<Admin> {
    let listener = TcpListener::from_std(listener)?;
    let local = listener.local_addr()?;
    let stop = CancellationToken::new();
    tokio::spawn(serve(listener, shared, stop.clone()));
    tracing::info!(addr = %local, "admin endpoint listening");
    Ok(Admin { stop })
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        let Ok((stream, _)) = accepted else {
            // out of descriptors: give the proxy the room, try again shortly
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue; // too many admin connections: this one is closed
        };
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&req, &shared)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = conn => {}
            }
            drop(slot);
        });
    }
}

/// Answers one request.
fn handle(req: &Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method(), segments.as_slice()) {
        (&Method::GET | &Method::HEAD, [""]) => status_page(shared),
        (&Method::GET | &Method::HEAD, ["metrics"]) => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            shared.metrics.render(),
        ),
        (&Method::GET | &Method::HEAD, ["status"]) => json(StatusCode::OK, &status::status(shared)),
        (&Method::GET | &Method::HEAD, ["healthz"]) => healthz(shared),
        (&Method::POST, ["servers", backend, server, action]) => {
            // A change is all in its request line; a body would go unread, so a request that
            // sends one is not what it seems (a client's mistake, or something smuggled).
            if !hyper::body::Body::is_end_stream(req.body()) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "changes take no request body (send Content-Length: 0 or none)",
                );
            }
            if !authorized(req, shared) {
                let mut r = error(
                    StatusCode::UNAUTHORIZED,
                    "this change needs Authorization: Bearer <token> (admin.token_file)",
                );
                r.headers_mut()
                    .insert(WWW_AUTHENTICATE, "Bearer".parse().expect("static header"));
                return r;
            }
            set_state(shared, backend, server, action)
        }
        (_, [""] | ["metrics"] | ["status"] | ["healthz"]) => not_allowed("GET, HEAD"),
        (_, ["servers", _, _, _]) => not_allowed("POST"),
        _ => error(
            StatusCode::NOT_FOUND,
            &format!(
                "no such endpoint: {} {path} (try GET / (the status page), /metrics, /status, /healthz or POST /servers/BACKEND/SERVER/drain|maint|ready)",
                req.method()
            ),
        ),
    }
}

fn authorized(req: &Request<Incoming>, shared: &Shared) -> bool {
    let running = shared.running.load();
    let Some(token) = &running.config.admin.token else {
        return true;
    };
    req.headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|given| token.matches(given))
}

fn set_state(shared: &Shared, backend: &str, server: &str, action: &str) -> Response<Full<Bytes>> {
    let state = match action {
        "drain" => AdminState::Drain,
        "maint" => AdminState::Maint,
        "ready" => AdminState::Ready,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("unknown action {:?}: expected drain, maint or ready", other),
            );
        }
    };
    let (Some(backend), Some(server)) = (percent_decode(backend), percent_decode(server)) else {
        return error(
            StatusCode::BAD_REQUEST,
            "malformed percent-encoding in the path",
        );
    };
    let running = shared.running.load();
    let Some(b) = running.backends.iter().find(|b| **b.name() == *backend) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no backend named {backend:?}"),
        );
    };
    let Some(s) = b.servers.iter().find(|s| *s.config.name == *server) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no server named {server:?} in backend {backend:?}"),
        );
    };
    let previous = s.state.set_admin(state);
    if previous != state {
        tracing::warn!(backend = %backend, server = %server, from = previous.as_str(), to = state.as_str(), "server state changed by the admin API");
    }
    json(
        StatusCode::OK,
        &serde_json::json!({
            "backend": backend,
            "server": server,
            "state": s.state.state_word(),
            "admin_state": state.as_str(),
            "previous_admin_state": previous.as_str(),
            "active_connections": s.state.metrics.active.get(),
        }),
    )
}

/// The status page: the `/status` document and the STATUS line, as HTML.
fn status_page(shared: &Shared) -> Response<Full<Bytes>> {
    let line = {
        let running = shared.running.load();
        let reload = shared.last_reload.lock().expect("reload record lock");
        words::status_line(
            running.routes.len(),
            &running.backends,
            running.loaded_at,
            reload.rejection.as_ref(),
        )
    };
    let body = page::render(&status::status(shared), &line, SystemTime::now());
    let mut r = reply(
        StatusCode::OK,
        "text/html; charset=utf-8",
        body.into_bytes(),
    );
    // The page has no script and loads nothing; should a value ever slip past its escaping,
    // the browser still runs nothing.
    r.headers_mut().insert(
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'; frame-ancestors 'none'"
            .parse()
            .expect("static header"),
    );
    r.headers_mut().insert(
        "X-Content-Type-Options",
        "nosniff".parse().expect("static header"),
    );
    r
}

fn healthz(shared: &Shared) -> Response<Full<Bytes>> {
    let running = shared.running.load();
    let down: Vec<String> = running
        .backends
        .iter()
        .filter(|b| b.servers_up() == 0)
        .map(|b| match b.failing_open_to().len() {
            0 => b.name().to_string(),
            n => format!("{} (failing open to {n} reachable)", b.name()),
        })
        .collect();
    if down.is_empty() {
        reply(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            b"ok: every backend has a server up\n".to_vec(),
        )
    } else {
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            format!("no server up in backend {}\n", down.join(", ")).into_bytes(),
        )
    }
}

/// Decodes `%XX` escapes; `None` for a broken escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .header("Cache-Control", "no-store")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec_pretty(value).expect("a JSON value serializes");
    body.push(b'\n');
    reply(status, "application/json", body)
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": message }))
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("method not allowed here; use {allow}"),
    );
    r.headers_mut()
        .insert(ALLOW, allow.parse().expect("static header"));
    r
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("es-1").as_deref(), Some("es-1"));
        assert_eq!(
            percent_decode("%5B%3A%3A1%5D%3A9200").as_deref(),
            Some("[::1]:9200")
        );
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
