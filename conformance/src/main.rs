//! `whip-conformance`: the command-line front of the checker.
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::process::ExitCode;

use clap::Parser;
use reqwest::Url;
use whip_conformance::{run_all, Level, Target};

/// Check a WHIP/WHEP server against RFC 9725 and draft-ietf-wish-whep; or, with `client`, a
/// WHIP/WHEP client against whip-echo.
#[derive(Debug, Parser)]
#[command(
    name = "whip-conformance",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Base URL of the server, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "WHIP_CONFORMANCE_BASE_URL", required = true)]
    base_url: Option<Url>,
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

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Test a client: print the URLs to give it, wait for its session on whip-echo, and print
    /// whip-echo's report of what it did when the session ends (exit status 1 on a failed
    /// finding).
    Client {
        /// whip-echo's base URL, e.g. http://127.0.0.1:8080.
        #[arg(long, env = "WHIP_CONFORMANCE_BASE_URL")]
        base_url: Url,
        /// whip-echo's `--admin-token`, if it has one (listing sessions needs it then).
        #[arg(long, env = "WHIP_CONFORMANCE_ADMIN_TOKEN")]
        admin_token: Option<String>,
        /// Seconds to wait for the client's session to arrive.
        #[arg(long, default_value_t = 600)]
        wait: u64,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Client {
        base_url,
        admin_token,
        wait,
    }) = cli.command
    {
        let watch = whip_conformance::client::Watch::new(
            base_url,
            admin_token,
            std::time::Duration::from_secs(wait),
        );
        return match whip_conformance::client::run(&watch, &mut std::io::stdout()).await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("whip-conformance client: {e}");
                ExitCode::from(2)
            }
        };
    }
    let Some(base_url) = cli.base_url else {
        eprintln!("whip-conformance: --base-url is required");
        return ExitCode::from(2);
    };
    let target = Target {
        base_url,
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
