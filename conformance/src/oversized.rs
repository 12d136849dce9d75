//! A POST whose body the server may refuse before it has read it all (the 10 MB hostile check).
//!
//! RFC 9110 §15.5.14 lets a server answer 413 as soon as the body passes its cap and close the
//! connection. A client that only reads the response after writing the whole body then sees a
//! broken pipe (the server's kernel resets the connection that still has unread data) instead of
//! the 413 that arrived first. reqwest reports whichever comes first, so the check was flaky
//! against a correct server. Here the request is written by hand on one connection while a
//! second half of it reads the response concurrently; a write that fails after a response arrived
//! is the expected outcome, not an error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Url;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::Exchange;

/// How long the server has to answer once the body is written (or refused).
const ANSWER_WAIT: Duration = Duration::from_secs(30);
/// Bytes of the response kept; a refusal is short.
const MAX_RESPONSE: usize = 64 * 1024;
/// Bytes written per call, so a refusal is noticed while the body is still being sent.
const CHUNK: usize = 64 * 1024;

/// POSTs `body` to `url` with `headers` on a fresh connection (`Connection: close`), reading the
/// response while the body is being written. `Err` only when no response arrived at all.
pub async fn post(url: &Url, headers: &[(&str, &str)], body: Bytes) -> Result<Exchange, String> {
    let started = Instant::now();
    let host = url.host_str().ok_or("URL without host")?.to_owned();
    let port = url.port_or_known_default().ok_or("URL without port")?;
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connect {host}:{port}: {e}"))?;
    let head = request_head(url, headers, body.len());
    let raw = match url.scheme() {
        "https" => exchange(tls(tcp, &host).await?, head, body).await?,
        _ => exchange(tcp, head, body).await?,
    };
    let (status, headers, body) = parse_response(&raw)?;
    Ok(Exchange {
        status,
        headers,
        body,
        url: url.clone(),
        redirects: Vec::new(),
        elapsed: started.elapsed(),
    })
}

fn request_head(url: &Url, headers: &[(&str, &str)], len: usize) -> String {
    let mut path = url.path().to_owned();
    if let Some(query) = url.query() {
        path = format!("{path}?{query}");
    }
    let host = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len}\r\nConnection: close\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// Writes `head` and `body` while reading the response; returns the response bytes received.
async fn exchange<S>(stream: S, head: String, body: Bytes) -> Result<Vec<u8>, String>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let read = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 8192];
        // A reset after the response is how a refusing server ends: keep what came before it.
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 || got.len() >= MAX_RESPONSE {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    });
    let mut write_error = None;
    if let Err(e) = writer.write_all(head.as_bytes()).await {
        write_error = Some(e);
    }
    for chunk in body.chunks(CHUNK) {
        if write_error.is_some() || read.is_finished() {
            break;
        }
        if let Err(e) = writer.write_all(chunk).await {
            write_error = Some(e);
        }
    }
    let _ = writer.flush().await;
    let got = tokio::time::timeout(ANSWER_WAIT, read)
        .await
        .map_err(|_| "no response in time".to_owned())?
        .map_err(|e| e.to_string())?;
    if got.is_empty() {
        return Err(match write_error {
            Some(e) => format!("no response (writing the body: {e})"),
            None => "no response".to_owned(),
        });
    }
    Ok(got)
}

async fn tls(
    tcp: TcpStream,
    host: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| format!("TLS server name {host}: {e}"))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {host}: {e}"))
}

/// Status, headers and (possibly partial) body of an HTTP/1.x response.
fn parse_response(raw: &[u8]) -> Result<(u16, HeaderMap, Bytes), String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("incomplete response head")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value.trim()),
        ) {
            headers.append(name, value);
        }
    }
    Ok((status, headers, Bytes::copy_from_slice(&raw[end + 4..])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_refusal() {
        let raw = b"HTTP/1.1 413 Payload Too Large\r\ncontent-type: text/plain\r\n\r\ntoo big\n";
        let (status, headers, body) = parse_response(raw).unwrap();
        assert_eq!(status, 413);
        assert_eq!(headers.get("content-type").unwrap(), "text/plain");
        assert_eq!(&body[..], b"too big\n");
        assert!(parse_response(b"HTTP/1.1 413").is_err());
        assert!(parse_response(b"SSH-2.0-x\r\n\r\n").is_err());
    }

    #[test]
    fn head_names_path_host_and_length() {
        let url = Url::parse("http://127.0.0.1:8080/whip/x?a=1").unwrap();
        let head = request_head(&url, &[("content-type", "application/sdp")], 10);
        assert!(head.starts_with("POST /whip/x?a=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(head.contains("Content-Length: 10\r\n"));
        assert!(head.ends_with("content-type: application/sdp\r\n\r\n"));
    }

    /// A server that answers 413 after reading a little and closes with unread data (so its
    /// kernel resets the connection) is seen answering 413, every time.
    #[tokio::test]
    async fn a_refusal_before_the_body_is_read_is_seen() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/whip/x", listener.local_addr().unwrap())).unwrap();
        let server = tokio::spawn(async move {
            for _ in 0..5 {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let _ = conn
                    .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n")
                    .await;
                drop(conn);
            }
        });
        for _ in 0..5 {
            let body = Bytes::from(vec![b'v'; 10 << 20]);
            let e = post(&url, &[("content-type", "application/sdp")], body)
                .await
                .unwrap();
            assert_eq!(e.status, 413);
        }
        server.await.unwrap();
    }
}
