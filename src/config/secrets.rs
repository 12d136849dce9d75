//! The configuration's secrets: read once from their `--*-file` flags, and hidden from the
//! start-up log line.

use std::path::{Path, PathBuf};

use super::{AccessFlags, ClusterFlags, Config, TurnFlags};

impl Config {
    /// The configuration with its secrets (tokens, the JWT and TURN secrets, the TURN
    /// password) replaced by `<redacted>`, for the start-up log line.
    pub fn redacted(&self) -> Config {
        let hide = |s: &Option<String>| s.as_ref().map(|_| REDACTED.to_owned());
        // A token's stream scope (`secret@stream`) is configuration, not secret.
        let hide_tokens = |tokens: &[String]| -> Vec<String> {
            tokens
                .iter()
                .map(|t| match t.rsplit_once('@') {
                    Some((_, scope)) => format!("{REDACTED}@{scope}"),
                    None => REDACTED.to_owned(),
                })
                .collect()
        };
        let (access, turn, cluster) = (&self.access, &self.turn, &self.cluster);
        Config {
            access: AccessFlags {
                publish_tokens: hide_tokens(&access.publish_tokens),
                play_tokens: hide_tokens(&access.play_tokens),
                jwt_secret: hide(&access.jwt_secret),
                admin_token: hide(&access.admin_token),
                ..access.clone()
            },
            turn: TurnFlags {
                turn_secret: hide(&turn.turn_secret),
                turn_password: hide(&turn.turn_password),
                ..turn.clone()
            },
            cluster: ClusterFlags {
                cluster_secret: hide(&cluster.cluster_secret),
                cluster_redis: cluster.cluster_redis.as_deref().map(redact_url),
                ..cluster.clone()
            },
            ..self.clone()
        }
    }

    /// Reads the `--*-file` secrets into their flags' fields (the server does, before anything
    /// uses them), each once: a path read is cleared. A file that cannot be read, or holds
    /// nothing, is an error that names it.
    pub fn read_secret_files(&mut self) -> Result<(), String> {
        self.read_token_files()?;
        self.read_single_files()
    }

    /// `--publish-token-file` and `--play-token-file`: a token a line, added to the flags'.
    fn read_token_files(&mut self) -> Result<(), String> {
        if let Some(path) = self.access.publish_token_file.take() {
            let tokens = lines(read("publish-token-file", &path)?);
            self.access.publish_tokens.extend(tokens);
        }
        if let Some(path) = self.access.play_token_file.take() {
            let tokens = lines(read("play-token-file", &path)?);
            self.access.play_tokens.extend(tokens);
        }
        Ok(())
    }

    /// The `--*-file` of each single secret.
    fn read_single_files(&mut self) -> Result<(), String> {
        let singles: [(&str, &mut Option<PathBuf>, &mut Option<String>); 6] = [
            (
                "jwt-secret-file",
                &mut self.access.jwt_secret_file,
                &mut self.access.jwt_secret,
            ),
            (
                "admin-token-file",
                &mut self.access.admin_token_file,
                &mut self.access.admin_token,
            ),
            (
                "turn-secret-file",
                &mut self.turn.turn_secret_file,
                &mut self.turn.turn_secret,
            ),
            (
                "turn-password-file",
                &mut self.turn.turn_password_file,
                &mut self.turn.turn_password,
            ),
            (
                "cluster-redis-file",
                &mut self.cluster.cluster_redis_file,
                &mut self.cluster.cluster_redis,
            ),
            (
                "cluster-secret-file",
                &mut self.cluster.cluster_secret_file,
                &mut self.cluster.cluster_secret,
            ),
        ];
        for (flag, path, field) in singles {
            if let Some(path) = path.take() {
                *field = Some(read(flag, &path)?);
            }
        }
        Ok(())
    }
}

const REDACTED: &str = "<redacted>";

/// A Redis URL without its password (`redis://user:pw@host` → `redis://user:<redacted>@host`),
/// for logs and error messages.
pub(crate) fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split_once(':').map_or("", |(u, _)| u);
                format!("{scheme}://{user}:{REDACTED}@{host}")
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// The secret in the file at `path` (`--flag`), without its final line break; an error that
/// names it when it cannot be read or holds nothing.
fn read(flag: &str, path: &Path) -> Result<String, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--{flag} {}: {e}", path.display()))?;
    let text = text.trim_end_matches(['\r', '\n']);
    if text.trim().is_empty() {
        return Err(format!("--{flag} {}: empty", path.display()));
    }
    Ok(text.to_owned())
}

/// The non-empty lines of `text`, trimmed.
fn lines(text: String) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}
