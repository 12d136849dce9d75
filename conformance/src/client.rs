//! `whip-conformance client`: test a WHIP/WHEP *client* against whip-echo. It makes up a stream
//! name, says which URLs to give the client under test, finds the client's session when it
//! arrives (`GET /api/sessions`, by stream, live or just ended), follows its client report while it runs and prints
//! it, findings first, when the session ends (`/api/sessions/{id}/report`, whip-echo's). Whether a
//! finding failed is the command's exit status.

use std::io::Write;
use std::time::Duration;

use reqwest::Url;
use serde_json::Value;

/// How often the sessions and the report are read.
const POLL: Duration = Duration::from_millis(500);

/// What to watch for.
#[derive(Debug, Clone)]
pub struct Watch {
    /// whip-echo's base URL.
    pub base_url: Url,
    /// The stream the client under test publishes or plays.
    pub stream: String,
    /// whip-echo's `--admin-token`, where it has one (listing sessions needs it then).
    pub admin_token: Option<String>,
    /// How long to wait for the client's session to arrive.
    pub wait: Duration,
}

impl Watch {
    /// A watch of a stream with a fresh name on `base_url`.
    pub fn new(base_url: Url, admin_token: Option<String>, wait: Duration) -> Self {
        let stream = format!("client-test-{:08x}", rand::random::<u32>());
        Watch {
            base_url,
            stream,
            admin_token,
            wait,
        }
    }

    /// The URL of `path` on the server.
    fn url(&self, path: &str) -> Result<Url, String> {
        self.base_url.join(path).map_err(|e| e.to_string())
    }
}

/// Tells `out` the URLs to use, waits for the client's session, follows it until it ends and
/// prints its report. `Ok(true)` when no finding failed.
pub async fn run(watch: &Watch, out: &mut impl Write) -> Result<bool, String> {
    let http = reqwest::Client::new();
    let say = |out: &mut dyn Write, text: String| {
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    };
    say(
        out,
        format!(
            "Give the client under test one of these URLs (stream {:?}):",
            watch.stream
        ),
    );
    for (what, path) in [
        ("WHIP (publish)", "whip"),
        ("WHEP (play)", "whep"),
        ("echo", "echo"),
    ] {
        let url = watch.url(&format!("/{path}/{}", watch.stream))?;
        say(out, format!("  {what:16} {url}"));
    }
    say(out, "Waiting for its session…".into());
    let id = arrival(&http, watch).await?;
    say(
        out,
        format!("Its session arrived ({id}); following it until it ends."),
    );
    let report_url = watch.url(&format!("/api/sessions/{id}/report"))?;
    loop {
        let report = get(&http, watch, &report_url, "application/json").await?;
        let report: Value = serde_json::from_str(&report).map_err(|e| e.to_string())?;
        if report["state"] == "ended" {
            let text = get(&http, watch, &report_url, "text/plain").await?;
            say(out, format!("\n{text}"));
            let failed =
                (report["findings"].as_array().into_iter().flatten()).any(|f| f["level"] == "fail");
            return Ok(!failed);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The public id of the first session of the watched stream, once one is listed.
async fn arrival(http: &reqwest::Client, watch: &Watch) -> Result<String, String> {
    let list = watch.url("/api/sessions")?;
    let deadline = tokio::time::Instant::now() + watch.wait;
    loop {
        let text = get(http, watch, &list, "application/json").await?;
        let list: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        // Live, or (a short session that ended between two reads) ended.
        let sessions = list["sessions"].as_array().into_iter().flatten();
        let ended = list["ended"].as_array().into_iter().flatten();
        let found = (sessions.chain(ended))
            .find(|s| s["stream"] == watch.stream.as_str())
            .and_then(|s| s["id"].as_str());
        if let Some(id) = found {
            return Ok(id.to_owned());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "no session on stream {:?} in {:?}",
                watch.stream, watch.wait
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `url`'s body, as `accept`; a status other than 200 is an error that says what it was.
async fn get(
    http: &reqwest::Client,
    watch: &Watch,
    url: &Url,
    accept: &str,
) -> Result<String, String> {
    let mut request = http.get(url.clone()).header("accept", accept);
    if let Some(token) = &watch.admin_token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    let body = response.text().await.map_err(|e| format!("{url}: {e}"))?;
    if status != 200 {
        return Err(format!("{url}: {status}: {}", body.trim()));
    }
    Ok(body)
}
