//! The REST side of the protocol, over plain HTTP/1.1 (one connection per call).

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use parley_protocol::Message;
use parley_protocol::rest::{
    AuthReply, Credentials, ErrorBody, MessagesPage, PostMessage, RoomInfo, SearchPage,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use crate::{ClientError, Result};

/// A response: status and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
    pub headers: hyper::HeaderMap,
}

impl Response {
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ClientError::Protocol(format!("bad JSON body: {e}")))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Turns a non-2xx response into [`ClientError::Http`].
    pub fn ok(self) -> Result<Self> {
        if (200..300).contains(&self.status) {
            return Ok(self);
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&self.body) {
            Ok(b) => (Some(b.error.code), b.error.message),
            Err(_) => (None, self.text()),
        };
        Err(ClientError::Http {
            status: self.status,
            code,
            message,
        })
    }
}

/// Sends one request to `base` (`http://host:port`).
pub async fn request(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> Result<Response> {
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| ClientError::Connect {
            url: base.into(),
            message: "only http:// URLs are supported".into(),
        })?
        .trim_end_matches('/');
    let stream = TcpStream::connect(authority)
        .await
        .map_err(|e| ClientError::Connect {
            url: base.into(),
            message: e.to_string(),
        })?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| ClientError::Connect {
            url: base.into(),
            message: e.to_string(),
        })?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    let req = builder
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| ClientError::Request(e.to_string()))?;
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Request(e.to_string()))?
        .to_bytes();
    Ok(Response {
        status,
        body,
        headers,
    })
}

async fn json_call<B: Serialize, T: DeserializeOwned>(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&B>,
) -> Result<T> {
    let body = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
    request(base, method, path, token, body).await?.ok()?.json()
}

pub async fn register(base: &str, username: &str, password: &str) -> Result<AuthReply> {
    let creds = Credentials {
        username: username.into(),
        password: password.into(),
    };
    json_call(base, "POST", "/api/auth/register", None, Some(&creds)).await
}

pub async fn login(base: &str, username: &str, password: &str) -> Result<AuthReply> {
    let creds = Credentials {
        username: username.into(),
        password: password.into(),
    };
    json_call(base, "POST", "/api/auth/login", None, Some(&creds)).await
}

pub async fn rooms(base: &str, token: &str) -> Result<Vec<RoomInfo>> {
    json_call::<(), _>(base, "GET", "/api/rooms", Some(token), None).await
}

/// `GET /api/rooms/{room}/messages` with optional `before`, `after`, `limit`.
pub async fn messages(
    base: &str,
    token: &str,
    room: &str,
    before: Option<u64>,
    after: Option<u64>,
    limit: Option<u32>,
) -> Result<MessagesPage> {
    let mut query = Vec::new();
    if let Some(b) = before {
        query.push(format!("before={b}"));
    }
    if let Some(a) = after {
        query.push(format!("after={a}"));
    }
    if let Some(l) = limit {
        query.push(format!("limit={l}"));
    }
    let path = format!(
        "/api/rooms/{}/messages?{}",
        encode_path(room),
        query.join("&")
    );
    json_call::<(), _>(base, "GET", &path, Some(token), None).await
}

/// `GET /api/search`: messages whose current text holds every word of
/// `q`, newest first, over the rooms the caller may read; `room` narrows it
/// to one room, `before` is the `next` of the previous page.
pub async fn search(
    base: &str,
    token: &str,
    q: &str,
    room: Option<&str>,
    limit: Option<u32>,
    before: Option<&str>,
) -> Result<SearchPage> {
    let mut query = vec![format!("q={}", encode_path(q))];
    if let Some(r) = room {
        query.push(format!("room={}", encode_path(r)));
    }
    if let Some(l) = limit {
        query.push(format!("limit={l}"));
    }
    if let Some(b) = before {
        query.push(format!("before={}", encode_path(b)));
    }
    let path = format!("/api/search?{}", query.join("&"));
    json_call::<(), _>(base, "GET", &path, Some(token), None).await
}

pub async fn post_message(
    base: &str,
    token: &str,
    room: &str,
    text: &str,
    nonce: Option<&str>,
) -> Result<Message> {
    let body = PostMessage {
        text: text.into(),
        nonce: nonce.map(Into::into),
    };
    json_call(
        base,
        "POST",
        &format!("/api/rooms/{}/messages", encode_path(room)),
        Some(token),
        Some(&body),
    )
    .await
}

/// Percent-encodes a path segment (room names may hold `:`).
pub fn encode_path(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
