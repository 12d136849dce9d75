//! HTTPS on the HTTP port (`--tls-cert`/`--tls-key`), with plain HTTP and ICE-TCP beside it.

use crate::support;

use std::path::PathBuf;
use std::process::Command;

use support::start;
use whip_echo::config::Config;
use whip_echo::server::{self, ServerError};

/// A directory removed when the test ends, passing or not.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed certificate for 127.0.0.1 and its key, made with the openssl CLI, in a directory
/// that goes when the first value is dropped.
fn self_signed(dir: &str) -> (TempDir, PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("whip-echo-{dir}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{made:?}");
    (TempDir(dir), cert, key)
}

#[tokio::test]
async fn https_and_http_share_the_port() {
    let (_dir, cert, key) = self_signed("https");
    let mut config = Config::for_tests();
    config.tls_cert = Some(cert);
    config.tls_key = Some(key);
    let server = start(config).await;
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let port = server.http_addr.port();
    for url in [
        format!("https://127.0.0.1:{port}/healthz"),
        format!("http://127.0.0.1:{port}/healthz"),
    ] {
        let response = http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
    }
    // A WHIP POST over HTTPS: the whole lifecycle works there.
    let base = format!("https://127.0.0.1:{port}");
    support::create_and_delete(
        &http,
        &base,
        "/whip/secure",
        include_str!("../data/offer.sdp"),
    )
    .await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unusable_key_is_refused_at_start() {
    let (_dir, cert, _) = self_signed("badkey");
    let mut config = Config::for_tests();
    config.tls_key = Some(cert.clone()); // a certificate is not a key
    config.tls_cert = Some(cert);
    let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
    let result = server::spawn(listener, config).await;
    assert!(
        matches!(result, Err(ServerError::Tls(_))),
        "{:?}",
        result.err()
    );
}
