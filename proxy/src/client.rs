//! A small synchronous client for the daemon's API: plain HTTP/1.1 over
//! `std::os::unix::net::UnixStream`, no async runtime — what a CNI plugin (a short-lived
//! process) needs to reserve and release host ports.
//!
//! ```no_run
//! use ferry_proxy::client::Client;
//! use ferry_proxy::state::{MappingSpec, Proto};
//! let client = Client::new("/run/ferry/proxy.sock");
//! let spec = MappingSpec {
//!     id: String::new(), // derived: <owner>_<proto>_<hostIP>_<hostPort>
//!     owner: "0123abcd".into(),
//!     proto: Proto::Tcp,
//!     host_ip: "0.0.0.0".parse().unwrap(),
//!     host_port: 8080,
//!     host_port_end: None,
//!     container_ip: "10.88.0.2".parse().unwrap(),
//!     container_port: 80,
//!     proxy_protocol: None,
//! };
//! match client.add(&spec) {
//!     Ok(status) => println!("serving {}", status.spec.id),
//!     Err(ferry_proxy::Error::Conflict { holder, .. }) => eprintln!("port held by {holder}"),
//!     Err(e) => eprintln!("{e}"),
//! }
//! client.delete_owner("0123abcd").unwrap();
//! ```

use crate::api::percent_encode;
use crate::error::{Error, IoContext, Result};
use crate::state::{MappingSpec, MappingStatus};
use serde::Deserialize;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest response accepted (a list of 10,000 mappings fits easily).
const MAX_RESPONSE: u64 = 64 * 1024 * 1024;

/// Talks to one daemon socket; each call is one connection (`Connection: close`).
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

/// A decoded HTTP answer.
#[derive(Debug)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Body bytes (chunked encoding already removed).
    pub body: Vec<u8>,
}

#[derive(Deserialize)]
struct MappingList {
    mappings: Vec<MappingStatus>,
}

#[derive(Deserialize)]
struct Deleted {
    deleted: usize,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    holder: Option<String>,
}

impl Client {
    /// A client for the daemon listening on `socket` (default timeout 10 s per request).
    pub fn new(socket: impl AsRef<Path>) -> Client {
        Client {
            socket: socket.as_ref().to_path_buf(),
            timeout: Duration::from_secs(10),
        }
    }

    /// Changes the per-request read/write timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// `GET /v1/health`: Ok when the daemon answers (use it to wait for start-up).
    pub fn health(&self) -> Result<()> {
        self.expect_ok(self.request("GET", "/v1/health", None)?)
            .map(|_| ())
    }

    /// `GET /v1/mappings`: every mapping.
    pub fn list(&self) -> Result<Vec<MappingStatus>> {
        let r = self.expect_ok(self.request("GET", "/v1/mappings", None)?)?;
        Ok(decode::<MappingList>(&r.body)?.mappings)
    }

    /// `GET /v1/mappings?owner=…`: the mappings of one owner (container).
    pub fn list_owner(&self, owner: &str) -> Result<Vec<MappingStatus>> {
        let path = format!("/v1/mappings?owner={}", percent_encode(owner));
        let r = self.expect_ok(self.request("GET", &path, None)?)?;
        Ok(decode::<MappingList>(&r.body)?.mappings)
    }

    /// `POST /v1/mappings`: binds the host port(s) and starts forwarding. Adding an
    /// identical mapping again succeeds. A taken port is [`Error::Conflict`] naming the
    /// holder; a bad field is [`Error::Invalid`].
    pub fn add(&self, spec: &MappingSpec) -> Result<MappingStatus> {
        let body = serde_json::to_vec(spec)
            .map_err(|e| Error::Invalid(format!("encoding the mapping: {e}")))?;
        let r = self.expect_ok(self.request("POST", "/v1/mappings", Some(&body))?)?;
        decode(&r.body)
    }

    /// `DELETE /v1/mappings/<id>`: true when it existed, false when it was already gone
    /// (so a CNI DEL stays idempotent).
    pub fn delete(&self, id: &str) -> Result<bool> {
        let r = self.request(
            "DELETE",
            &format!("/v1/mappings/{}", percent_encode(id)),
            None,
        )?;
        if r.status == 404 {
            return Ok(false);
        }
        self.expect_ok(r).map(|_| true)
    }

    /// `DELETE /v1/mappings?owner=…`: removes every mapping of a container; returns how many.
    pub fn delete_owner(&self, owner: &str) -> Result<usize> {
        let path = format!("/v1/mappings?owner={}", percent_encode(owner));
        let r = self.expect_ok(self.request("DELETE", &path, None)?)?;
        Ok(decode::<Deleted>(&r.body)?.deleted)
    }

    /// `GET /metrics`: the Prometheus text.
    pub fn metrics(&self) -> Result<String> {
        let r = self.expect_ok(self.request("GET", "/metrics", None)?)?;
        Ok(String::from_utf8_lossy(&r.body).into_owned())
    }

    fn expect_ok(&self, r: RawResponse) -> Result<RawResponse> {
        if (200..300).contains(&r.status) {
            return Ok(r);
        }
        let parsed: Option<ErrorBody> = serde_json::from_slice(&r.body).ok();
        let (msg, holder) = match parsed {
            Some(b) => (b.error, b.holder),
            None => (String::from_utf8_lossy(&r.body).into_owned(), None),
        };
        Err(match (r.status, holder) {
            (409, Some(holder)) => Error::Conflict { msg, holder },
            (409, None) => Error::Conflict {
                msg,
                holder: String::new(),
            },
            (400, _) => Error::Invalid(msg),
            (404, _) => Error::NotFound(msg),
            (status, _) => Error::Api { status, msg },
        })
    }

    /// Sends one request and reads the whole answer.
    pub fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<RawResponse> {
        let sock = self.socket.display().to_string();
        let mut stream = UnixStream::connect(&self.socket).ctx(|| {
            format!(
                "connecting to the ferry-proxy daemon at {sock} (is `ferry-proxy daemon` running?)"
            )
        })?;
        stream
            .set_read_timeout(Some(self.timeout))
            .and_then(|_| stream.set_write_timeout(Some(self.timeout)))
            .ctx(|| "setting socket timeouts".into())?;
        let body = body.unwrap_or(&[]);
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: ferry-proxy\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|_| stream.write_all(body))
            .ctx(|| format!("sending {method} {path} to {sock}"))?;
        let mut raw = Vec::new();
        stream
            .take(MAX_RESPONSE)
            .read_to_end(&mut raw)
            .ctx(|| format!("reading the answer to {method} {path} from {sock}"))?;
        parse_response(&raw)
    }
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::Api {
        status: 200,
        msg: format!("unexpected answer from the daemon: {e}"),
    })
}

/// Parses an HTTP/1.1 response (status line, headers, body by length, chunks or EOF).
pub fn parse_response(raw: &[u8]) -> Result<RawResponse> {
    let bad = |what: &str| Error::Api {
        status: 0,
        msg: format!("malformed HTTP answer from the daemon: {what}"),
    };
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("headers are not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status code"))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                length = v.parse::<usize>().ok();
            } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        decode_chunked(rest).ok_or_else(|| bad("broken chunked body"))?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or_else(|| bad("body shorter than Content-Length"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(RawResponse { status, body })
}

fn decode_chunked(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_and_chunked_bodies() {
        let r = parse_response(b"HTTP/1.1 409 Conflict\r\ncontent-length: 5\r\n\r\nhello").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (409, &b"hello"[..]));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"abcde");
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn error_bodies_become_typed_errors() {
        let c = Client::new("/nonexistent");
        let conflict = c
            .expect_ok(RawResponse {
                status: 409,
                body: br#"{"error":"taken","holder":"nginx (pid 1)"}"#.to_vec(),
            })
            .unwrap_err();
        assert!(
            matches!(conflict, Error::Conflict { ref holder, .. } if holder == "nginx (pid 1)")
        );
        assert!(c.health().unwrap_err().to_string().contains("/nonexistent"));
    }
}
