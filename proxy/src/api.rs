//! The daemon's HTTP API (hyper 1, HTTP/1.1 over a unix socket).
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/v1/mappings[?owner=ID]` | 200 `{"mappings":[MappingStatus…]}` |
//! | POST | `/v1/mappings` (body: MappingSpec) | 201 MappingStatus (new), 200 (identical one existed), 400, 409 `{"error","holder"}` |
//! | GET | `/v1/mappings/<id>` | 200 MappingStatus, 404 |
//! | DELETE | `/v1/mappings/<id>` | 204, 404 |
//! | DELETE | `/v1/mappings?owner=ID` | 200 `{"deleted":N}` |
//! | GET | `/v1/health` | 200 `{"status":"ok"}` |
//! | GET | `/metrics` | 200 Prometheus text |
//!
//! Errors are `{"error":"<message>"}` (409 adds `"holder"`).

use crate::daemon::Registry;
use crate::error::Error;
use crate::state::MappingSpec;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;

/// Largest request body accepted (a mapping is a few hundred bytes).
const MAX_BODY: usize = 64 * 1024;

/// Accepts API connections forever. Only root (or the daemon's own user) may talk to it:
/// the socket is 0600 and the peer's credentials are checked as well.
pub async fn serve(listener: tokio::net::UnixListener, registry: Arc<Registry>) {
    // SAFETY: geteuid has no preconditions.
    let own_uid = unsafe { libc::geteuid() };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let allowed = stream
            .peer_cred()
            .map(|c| c.uid() == 0 || c.uid() == own_uid)
            .unwrap_or(false);
        let registry = registry.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let service = hyper::service::service_fn(move |req| {
                let registry = registry.clone();
                async move {
                    if !allowed {
                        return Ok::<_, Infallible>(error_json(
                            StatusCode::FORBIDDEN,
                            "only root may use the ferry-proxy API",
                        ));
                    }
                    Ok::<_, Infallible>(handle(req, &registry).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

/// Routes one request.
pub async fn handle(req: Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let owner = req.uri().query().and_then(|q| query_value(q, "owner"));
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (&method, segs.as_slice()) {
        (&Method::GET, ["v1", "health"]) => json_response(StatusCode::OK, json!({"status": "ok"})),
        (&Method::GET, ["metrics"]) => Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "text/plain; version=0.0.4")
            .body(Full::new(Bytes::from(registry.metrics())))
            .unwrap_or_default(),
        (&Method::GET, ["v1", "mappings"]) => json_response(
            StatusCode::OK,
            json!({"mappings": registry.list(owner.as_deref())}),
        ),
        (&Method::POST, ["v1", "mappings"]) => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return error_json(
                        StatusCode::BAD_REQUEST,
                        &format!("reading the request body (at most {MAX_BODY} bytes): {e}"),
                    )
                }
            };
            let spec: MappingSpec = match serde_json::from_slice(&body) {
                Ok(s) => s,
                Err(e) => {
                    return error_json(
                        StatusCode::BAD_REQUEST,
                        &format!("the body is not a mapping: {e}"),
                    )
                }
            };
            match registry.add(spec) {
                Ok((status, true)) => json_response(StatusCode::CREATED, json!(status)),
                Ok((status, false)) => json_response(StatusCode::OK, json!(status)),
                Err(e) => error_response(&e),
            }
        }
        (&Method::DELETE, ["v1", "mappings"]) => match owner {
            Some(owner) if !owner.is_empty() => match registry.remove_owner(&owner) {
                Ok((n, closing)) => {
                    closing.finish().await;
                    json_response(StatusCode::OK, json!({"deleted": n}))
                }
                Err(e) => error_response(&e),
            },
            _ => error_json(
                StatusCode::BAD_REQUEST,
                "DELETE /v1/mappings needs ?owner=<owner>; delete one mapping with DELETE /v1/mappings/<id>",
            ),
        },
        (&Method::GET, ["v1", "mappings", id]) => match registry.get(id) {
            Ok(s) => json_response(StatusCode::OK, json!(s)),
            Err(e) => error_response(&e),
        },
        (&Method::DELETE, ["v1", "mappings", id]) => match registry.remove(id) {
            Ok(closing) => {
                closing.finish().await;
                Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .body(Full::new(Bytes::new()))
                    .unwrap_or_default()
            }
            Err(e) => error_response(&e),
        },
        (_, ["v1", "mappings", ..]) | (_, ["metrics"]) | (_, ["v1", "health"]) => {
            error_json(StatusCode::METHOD_NOT_ALLOWED, &format!("{method} is not allowed on {path}"))
        }
        _ => error_json(StatusCode::NOT_FOUND, &format!("no route {path}")),
    }
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_default()
}

fn error_json(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    json_response(status, json!({"error": msg}))
}

/// Maps a library error to its HTTP answer.
pub fn error_response(e: &Error) -> Response<Full<Bytes>> {
    match e {
        Error::Invalid(m) => error_json(StatusCode::BAD_REQUEST, m),
        Error::NotFound(m) => error_json(StatusCode::NOT_FOUND, m),
        Error::Conflict { msg, holder } => json_response(
            StatusCode::CONFLICT,
            json!({"error": msg, "holder": holder}),
        ),
        Error::Io { .. } | Error::Api { .. } => {
            error_json(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
        }
    }
}

/// Value of `key` in a query string, percent-decoded.
pub fn query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

/// Decodes `%XX` escapes (and `+` as space in queries); invalid escapes stay as they are.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes everything but unreserved characters (RFC 3986), for paths and query values.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_round_trip_and_query() {
        let s = "a b/c%d:e";
        assert_eq!(percent_decode(&percent_encode(s)), s);
        assert_eq!(
            query_value("x=1&owner=abc%20d", "owner").as_deref(),
            Some("abc d")
        );
        assert_eq!(query_value("x=1", "owner"), None);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
    }
}
