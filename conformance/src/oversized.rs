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

use crate::http::{redirect_target, Exchange};

/// How long the server has to answer once the body is written (or refused).
const ANSWER_WAIT: Duration = Duration::from_secs(30);
/// Bytes of the response kept; a refusal is short.
const MAX_RESPONSE: usize = 64 * 1024;
/// Bytes written per call, so a refusal is noticed while the body is still being sent.
const CHUNK: usize = 64 * 1024;

/// POSTs `body` to `url` with `headers` on a fresh connection (`Connection: close`), reading the
/// response while the body is being written, and following 307/308 with the same method and
/// body. `Err` only when no response arrived at all.
pub async fn post(url: &Url, headers: &[(&str, &str)], body: Bytes) -> Result<Exchange, String> {
    let started = Instant::now();
    let mut url = url.clone();
    let mut redirects = Vec::new();
    loop {
        let (status, response_headers, response_body) =
            post_once(&url, headers, body.clone()).await?;
        if let Some(next) = redirect_target(status, &response_headers, &url, redirects.len()) {
            redirects.push(status);
            url = next;
            continue;
        }
        return Ok(Exchange {
            status,
            headers: response_headers,
            body: response_body,
            url,
            redirects,
            elapsed: started.elapsed(),
        });
    }
}

async fn post_once(
    url: &Url,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<(u16, HeaderMap, Bytes), String> {
    // `socket_addrs` handles IPv6 literals (`[::1]`) and names alike.
    let addrs = url
        .socket_addrs(|| None)
        .map_err(|e| format!("{url}: {e}"))?;
    let tcp = TcpStream::connect(&addrs[..])
        .await
        .map_err(|e| format!("connect {url}: {e}"))?;
    let head = request_head(url, headers, body.len());
    let raw = match url.scheme() {
        "https" => exchange(tls(tcp, url).await?, head, body).await?,
        _ => exchange(tcp, head, body).await?,
    };
    parse_response(&raw)
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
        // A server that keeps the connection open is done once the whole response is in.
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.len() >= MAX_RESPONSE || response_complete(&got) {
                break;
            }
        }
        got
    });
    let mut read = read;
    let mut write_error = None;
    let mut answered = None;
    if let Err(e) = writer.write_all(head.as_bytes()).await {
        write_error = Some(e);
    }
    // A server that stops reading without closing would block the writer for good: the answer
    // ends the writing as soon as it is in.
    for chunk in body.chunks(CHUNK) {
        if write_error.is_some() {
            break;
        }
        tokio::select! {
            written = writer.write_all(chunk) => {
                if let Err(e) = written {
                    write_error = Some(e);
                }
            }
            done = &mut read => {
                answered = Some(done);
                break;
            }
        }
    }
    let done = match answered {
        Some(done) => done,
        None => {
            let _ = writer.flush().await;
            tokio::time::timeout(ANSWER_WAIT, read)
                .await
                .map_err(|_| "no response in time".to_owned())?
        }
    };
    let got = done.map_err(|e| e.to_string())?;
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
    url: &Url,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = match url.host() {
        Some(url::Host::Domain(d)) => rustls::pki_types::ServerName::try_from(d.to_owned())
            .map_err(|e| format!("TLS server name {d}: {e}"))?,
        Some(url::Host::Ipv4(ip)) => rustls::pki_types::ServerName::IpAddress(ip.into()),
        Some(url::Host::Ipv6(ip)) => rustls::pki_types::ServerName::IpAddress(ip.into()),
        None => return Err(format!("{url}: no host")),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {url}: {e}"))
}

/// Whether `raw` holds a response head and as much body as its Content-Length says.
fn response_complete(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    length.is_some_and(|n| raw.len() >= end + 4 + n)
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
    fn a_response_is_complete_with_its_body() {
        assert!(!response_complete(
            b"HTTP/1.1 413 X\r\ncontent-length: 4\r\n\r\nab"
        ));
        assert!(response_complete(
            b"HTTP/1.1 413 X\r\nContent-Length: 4\r\n\r\nabcd"
        ));
        assert!(!response_complete(b"HTTP/1.1 413 X\r\n"));
        // Without a length, only the end of the connection says.
        assert!(!response_complete(b"HTTP/1.1 413 X\r\n\r\nabcd"));
    }

    #[test]
    fn head_names_path_host_and_length() {
        let url = Url::parse("http://127.0.0.1:8080/whip/x?a=1").unwrap();
        let head = request_head(&url, &[("content-type", "application/sdp")], 10);
        assert!(head.starts_with("POST /whip/x?a=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(head.contains("Content-Length: 10\r\n"));
        assert!(head.ends_with("content-type: application/sdp\r\n\r\n"));
    }

    /// A 307 in front is followed; a server that keeps the connection open after its 413 is
    /// still heard; an IPv6 literal host works.
    #[tokio::test]
    async fn redirects_open_connections_and_ipv6() {
        let Ok(listener) = tokio::net::TcpListener::bind("[::1]:0").await else {
            return; // no IPv6 loopback on this machine
        };
        let port = listener.local_addr().unwrap().port();
        let url = Url::parse(&format!("http://[::1]:{port}/whip/x")).unwrap();
        let server = tokio::spawn(async move {
            let mut open = Vec::new();
            for answer in [
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: /elsewhere\r\ncontent-length: 0\r\n\r\n",
                "HTTP/1.1 413 Payload Too Large\r\ncontent-length: 3\r\n\r\nbig",
            ] {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let _ = conn.read(&mut buf).await;
                conn.write_all(answer.as_bytes()).await.unwrap();
                open.push(conn); // never closed while the client waits
            }
            open
        });
        let body = Bytes::from(vec![b'v'; 10 << 20]);
        let e = tokio::time::timeout(
            Duration::from_secs(20),
            post(&url, &[("content-type", "application/sdp")], body),
        )
        .await
        .expect("the open connection does not hold the answer back")
        .unwrap();
        assert_eq!((e.status, e.redirects.as_slice()), (413, &[307][..]));
        assert_eq!(e.url.path(), "/elsewhere");
        drop(server.await.unwrap());
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
