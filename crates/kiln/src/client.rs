//! The HTTP client behind every CLI verb that talks to a server: where the
//! server is (`KILN_URL`), who we are (`KILN_TOKEN`, else the admin token the
//! local server wrote), and errors turned into one clear line each.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use kiln_server::api::Problem;
use serde::de::DeserializeOwned;

pub const DEFAULT_URL: &str = "http://127.0.0.1:8420";

/// The data folder: `--data`, else `KILN_DATA`, else `$XDG_DATA_HOME/kiln`
/// (`~/.local/share/kiln`).
pub fn data_dir(flag: Option<PathBuf>) -> Result<PathBuf> {
    let given = flag.or_else(|| {
        std::env::var_os("KILN_DATA")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
    });
    if let Some(d) = given {
        return std::path::absolute(&d).with_context(|| format!("data folder {}", d.display()));
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(x).join("kiln"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| anyhow!("no data folder: set KILN_DATA or HOME"))?;
    Ok(PathBuf::from(home).join(".local/share/kiln"))
}

pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

/// A GET's answer as a stream: its media type, its size when known, and
/// the body.
pub struct Download {
    pub kind: String,
    pub len: Option<u64>,
    pub body: Box<dyn std::io::Read + Send>,
}

pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Client {
    pub fn from_env() -> Result<Self> {
        let base = std::env::var("KILN_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        let token = match std::env::var("KILN_TOKEN").ok().filter(|t| !t.is_empty()) {
            Some(t) => t,
            None => {
                let file = data_dir(None)?.join("admin.token");
                std::fs::read_to_string(&file)
                    .with_context(|| {
                        format!(
                            "no API token: set KILN_TOKEN, or run on the server's machine where {} exists",
                            file.display()
                        )
                    })?
                    .trim()
                    .to_owned()
            }
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .build()
            .into();
        Ok(Client {
            base: base.trim_end_matches('/').to_owned(),
            token,
            agent,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    fn unreachable(&self, e: ureq::Error) -> anyhow::Error {
        anyhow!(
            "cannot reach the kiln server at {}: {e} (is `kiln server` running? set KILN_URL if it is elsewhere)",
            self.base
        )
    }

    pub fn send(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<Reply> {
        let url = self.url(path);
        let auth = format!("Bearer {}", self.token);
        let result = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call(),
            ("POST", b) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send(b.unwrap_or_default()),
            ("PUT", b) => self
                .agent
                .put(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(b.unwrap_or_default()),
            ("PATCH", b) => self
                .agent
                .patch(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(b.unwrap_or_default()),
            (m, _) => bail!("unsupported method {m}"),
        };
        let mut resp = result.map_err(|e| self.unreachable(e))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .map_err(|e| self.unreachable(e))?;
        Ok(Reply { status, body })
    }

    /// GETs `path` and hands back its media type and a reader over the
    /// body, for answers too big to hold.
    pub fn get_reader(&self, path: &str) -> Result<(String, Box<dyn std::io::Read + Send>)> {
        let d = self.download(path)?;
        Ok((d.kind, d.body))
    }

    /// GETs `path` as a stream, with its size when the server says it (so
    /// a download can show its progress).
    pub fn download(&self, path: &str) -> Result<Download> {
        let resp = self
            .agent
            .get(self.url(path))
            .header("Authorization", &format!("Bearer {}", self.token))
            .call()
            .map_err(|e| self.unreachable(e))?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let kind = header("content-type").unwrap_or_default();
        let len = header("content-length").and_then(|v| v.parse().ok());
        let mut body = resp.into_body();
        if !(200..300).contains(&status) {
            let bytes = body.read_to_vec().map_err(|e| self.unreachable(e))?;
            return Err(problem_error(status, &bytes));
        }
        Ok(Download {
            kind,
            len,
            body: Box::new(body.into_reader()),
        })
    }

    /// PUTs `len` bytes read from `body`, streamed. The length is sent
    /// ahead so the server can refuse what is over a quota at once.
    pub fn put_reader(
        &self,
        path: &str,
        body: &mut dyn std::io::Read,
        len: u64,
    ) -> Result<Vec<u8>> {
        let resp = self
            .agent
            .put(self.url(path))
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", &len.to_string())
            // Lets the server refuse (quota, auth) before the body is sent,
            // so the refusal arrives instead of a broken pipe.
            .header("Expect", "100-continue")
            .send(ureq::SendBody::from_reader(body))
            .map_err(|e| self.unreachable(e))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .read_to_vec()
            .map_err(|e| self.unreachable(e))?;
        if (200..300).contains(&status) {
            Ok(bytes)
        } else {
            Err(problem_error(status, &bytes))
        }
    }

    /// GETs `path` and copies the body to `out` as it arrives, flushing each
    /// chunk (for following logs).
    pub fn stream_to(&self, path: &str, out: &mut impl std::io::Write) -> Result<()> {
        let (_, mut reader) = self.get_reader(path)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => bail!("the stream broke off: {e}"),
            };
            out.write_all(&buf[..n])?;
            out.flush()?;
        }
    }

    /// Sends and expects success; turns a problem document into an error
    /// listing every field it names.
    pub fn ok(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<Vec<u8>> {
        let reply = self.send(method, path, body)?;
        if (200..300).contains(&reply.status) {
            return Ok(reply.body);
        }
        Err(problem_error(reply.status, &reply.body))
    }

    pub fn json<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T> {
        let bytes = self.ok(method, path, body)?;
        serde_json::from_slice(&bytes).context("the server's answer is not what this kiln expects")
    }
}

pub fn problem_error(status: u16, body: &[u8]) -> anyhow::Error {
    let Ok(p) = serde_json::from_slice::<Problem>(body) else {
        return anyhow!(
            "server answered {status}: {}",
            String::from_utf8_lossy(body).trim()
        );
    };
    let mut text = if status == 401 {
        format!("authentication failed: {} (check KILN_TOKEN)", p.detail)
    } else {
        p.detail.clone()
    };
    if p.errors.len() > 1 || p.errors.first().is_some_and(|e| !text.contains(&e.message)) {
        for e in &p.errors {
            let at = match (e.line, e.column) {
                (Some(l), Some(c)) => format!("line {l}, column {c}"),
                _ if e.path.is_empty() => "(document)".into(),
                _ => e.path.clone(),
            };
            text.push_str(&format!("\n  {at}: {}", e.message));
        }
    }
    anyhow!(text)
}

/// Percent-encodes one path segment or query value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
