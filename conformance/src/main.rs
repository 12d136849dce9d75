//! `whip-conformance`: the command-line front of the checker.
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::process::ExitCode;

use clap::Parser;
use reqwest::Url;
use whip_conformance::{run_all, Level, Target};

/// Check a WHIP/WHEP server against RFC 9725 and draft-ietf-wish-whep.
#[derive(Debug, Parser)]
#[command(name = "whip-conformance", version, about)]
struct Cli {
    /// Base URL of the server, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "WHIP_CONFORMANCE_BASE_URL")]
    base_url: Url,
    /// WHIP endpoint path template ({stream} is replaced).
    #[arg(long, default_value = "/whip/{stream}")]
    whip_path: String,
    /// WHEP endpoint path template.
    #[arg(long, default_value = "/whep/{stream}")]
    whep_path: String,
    /// Path template of a single-connection echo extension (whip-echo: /echo/{stream}).
    #[arg(long)]
    echo_path: Option<String>,
    /// Bearer token (enables the authentication checks).
    #[arg(long, env = "WHIP_CONFORMANCE_TOKEN")]
    token: Option<String>,
    /// Local IP for the media peers (default: the address that routes to the server).
    #[arg(long)]
    local_ip: Option<IpAddr>,
    /// Skip the WebRTC media checks.
    #[arg(long)]
    skip_media: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let target = Target {
        base_url: cli.base_url,
        whip_path: cli.whip_path,
        whep_path: cli.whep_path,
        echo_path: cli.echo_path,
        token: cli.token,
        local_ip: cli.local_ip,
        skip_media: cli.skip_media,
    };
    let report = run_all(&target).await;
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serialises")
        );
    } else {
        print!("{}", report.to_text());
    }
    if report.failed(Level::Must).next().is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
