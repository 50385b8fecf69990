//! TensorBoard for a job, on demand. The server runs the PyPI `tensorboard`
//! on the job's `KILN_TENSORBOARD_DIR`, on a port of 127.0.0.1 that only
//! it reaches, and the API proxies `/jobs/{id}/tensorboard/` to it behind
//! kiln's own sign-in. A board nobody has used for a while is stopped; the
//! next visit starts it again.
//!
//! With the sandbox, TensorBoard runs under bubblewrap seeing the host
//! read-only with kiln's data folder hidden except for the job owner's
//! space, so an event folder that is a symlink into someone else's space
//! shows nothing.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tracing::{debug, info, warn};

/// How long TensorBoard may take to load before kiln gives up on it; it
/// imports a lot of Python and is slow on a busy machine.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Lines of TensorBoard's output kept to explain a failed start.
const KEEP_LINES: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    #[error("TensorBoard is not installed on the server: install it (pip install tensorboard) or start kiln server with --tensorboard PROGRAM")]
    NotInstalled,
    #[error("TensorBoard did not start: {0}")]
    Start(String),
    #[error("TensorBoard is not answering: {0}")]
    Proxy(String),
}

/// Where a job's board looks, and what of the host it may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardSpec {
    /// The URL path it is served under: `/jobs/<user~name>/tensorboard`.
    pub prefix: String,
    pub logdir: PathBuf,
    /// Sandboxed: the owner's space, the one part of the data folder shown.
    pub space: Option<PathBuf>,
}

/// The command line that runs TensorBoard for `spec`: directly, or under
/// bubblewrap when `bwrap` is given (then `data_root` is hidden except for
/// the owner's space, and /tmp is private).
pub fn command_line(
    program: &Path,
    bwrap: Option<(&Path, &Path)>,
    spec: &BoardSpec,
) -> (PathBuf, Vec<OsString>) {
    let mut tb: Vec<OsString> = vec![
        "--logdir".into(),
        spec.logdir.clone().into(),
        "--host".into(),
        "127.0.0.1".into(),
        // TensorBoard picks a free port and says which.
        "--port".into(),
        "0".into(),
        "--path_prefix".into(),
        spec.prefix.clone().into(),
        "--reload_interval".into(),
        "15".into(),
    ];
    match (bwrap, &spec.space) {
        (Some((bwrap, data_root)), Some(space)) => {
            let mut args: Vec<OsString> = vec![
                "--ro-bind".into(),
                "/".into(),
                "/".into(),
                "--dev".into(),
                "/dev".into(),
                "--proc".into(),
                "/proc".into(),
                "--tmpfs".into(),
                "/tmp".into(),
                "--tmpfs".into(),
                data_root.into(),
                "--ro-bind".into(),
                space.into(),
                space.into(),
                "--unshare-pid".into(),
                "--die-with-parent".into(),
                "--".into(),
                program.into(),
            ];
            args.append(&mut tb);
            (bwrap.to_owned(), args)
        }
        _ => (program.to_owned(), tb),
    }
}

/// The port in TensorBoard's "TensorBoard 2.x at http://127.0.0.1:PORT/..."
/// line, the one it prints once it serves.
pub fn ready_port(line: &str) -> Option<u16> {
    let rest = &line[line.find(" at http://")? + " at http://".len()..];
    let host_port = rest.split('/').next()?;
    host_port.rsplit_once(':')?.1.parse().ok()
}

/// Headers that belong to one connection, or to kiln's sign-in, and are not
/// passed through: TensorBoard never sees a kiln token or cookie.
pub fn forwarded_headers(from: &HeaderMap) -> HeaderMap {
    const DROP: [&str; 10] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "host",
        "authorization",
        "cookie",
    ];
    let mut out = HeaderMap::new();
    for (k, v) in from {
        if !DROP.contains(&k.as_str()) {
            out.append(k.clone(), v.clone());
        }
    }
    out
}

struct Board {
    port: u16,
    child: Child,
    spec: BoardSpec,
}

/// One job's board: None until started, and again once stopped.
#[derive(Default)]
struct Slot {
    board: tokio::sync::Mutex<Option<Board>>,
    last_used_ms: AtomicU64,
}

pub struct Boards {
    program: Option<PathBuf>,
    /// bubblewrap and the data folder it hides, when sandboxed.
    bwrap: Option<(PathBuf, PathBuf)>,
    idle_after: Duration,
    slots: Mutex<HashMap<i64, Arc<Slot>>>,
    client: Client<HttpConnector, Body>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Boards {
    pub fn new(
        program: Option<PathBuf>,
        bwrap: Option<(PathBuf, PathBuf)>,
        idle_after: Duration,
    ) -> Self {
        Boards {
            program,
            bwrap,
            idle_after,
            slots: Mutex::new(HashMap::new()),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    fn slot(&self, key: i64) -> Arc<Slot> {
        match self.slots.lock() {
            Ok(mut m) => Arc::clone(m.entry(key).or_default()),
            // A poisoned map only means another request panicked mid-insert;
            // a fresh slot still works, it is just not shared.
            Err(_) => Arc::new(Slot::default()),
        }
    }

    /// Whether the job's board is running now.
    pub async fn running(&self, key: i64) -> bool {
        let slot = self.slot(key);
        let mut b = slot.board.lock().await;
        alive(&mut b)
    }

    /// Starts the job's board unless it runs; returns its port.
    pub async fn ensure(&self, key: i64, spec: BoardSpec) -> Result<u16, BoardError> {
        let slot = self.slot(key);
        slot.last_used_ms.store(now_ms(), Ordering::Relaxed);
        let mut b = slot.board.lock().await;
        if alive(&mut b) {
            if let Some(board) = b.as_ref() {
                if board.spec == spec {
                    return Ok(board.port);
                }
            }
        }
        // Stopped, died, or the job's folder moved: (re)start it.
        if let Some(mut old) = b.take() {
            let _ = old.child.kill().await;
        }
        let board = self.start(spec).await?;
        let port = board.port;
        info!(job_key = key, port, "tensorboard started");
        *b = Some(board);
        Ok(port)
    }

    async fn start(&self, spec: BoardSpec) -> Result<Board, BoardError> {
        let program = self.program.as_ref().ok_or(BoardError::NotInstalled)?;
        let bwrap = self
            .bwrap
            .as_ref()
            .map(|(b, root)| (b.as_path(), root.as_path()));
        let (exe, args) = command_line(program, bwrap, &spec);
        let mut child = Command::new(&exe)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BoardError::Start(format!("cannot run {}: {e}", exe.display())))?;
        let Some(stderr) = child.stderr.take() else {
            return Err(BoardError::Start("no output pipe".into()));
        };
        let mut lines = BufReader::new(stderr).lines();
        let mut said: Vec<String> = Vec::new();
        let found = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(port) = ready_port(&line) {
                    return Some(port);
                }
                if said.len() == KEEP_LINES {
                    said.remove(0);
                }
                said.push(line);
            }
            None
        })
        .await;
        let port = match found {
            Ok(Some(port)) => port,
            Ok(None) => {
                let status = child
                    .wait()
                    .await
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                return Err(BoardError::Start(format!(
                    "it exited ({status}): {}",
                    said.join(" | ")
                )));
            }
            Err(_) => {
                let _ = child.kill().await;
                return Err(BoardError::Start(format!(
                    "it did not serve within {}s: {}",
                    START_TIMEOUT.as_secs(),
                    said.join(" | ")
                )));
            }
        };
        // Keep reading what it says, so a full pipe never stalls it.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                debug!(target: "tensorboard", "{line}");
            }
        });
        Ok(Board { port, child, spec })
    }

    /// Stops the job's board; false when none ran.
    pub async fn stop(&self, key: i64) -> bool {
        let slot = self.slot(key);
        let mut b = slot.board.lock().await;
        match b.take() {
            Some(mut board) => {
                let _ = board.child.kill().await;
                info!(job_key = key, "tensorboard stopped");
                true
            }
            None => false,
        }
    }

    /// Passes one request to the job's board (started if need be) and its
    /// answer back, streamed both ways.
    pub async fn forward(
        &self,
        key: i64,
        spec: BoardSpec,
        req: Request<Body>,
    ) -> Result<Response<Body>, BoardError> {
        let port = self.ensure(key, spec).await?;
        let (parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let uri: Uri = format!("http://127.0.0.1:{port}{path}")
            .parse()
            .map_err(|e| BoardError::Proxy(format!("bad path {path}: {e}")))?;
        let mut out = Request::builder()
            .method(parts.method)
            .uri(uri)
            .body(body)
            .map_err(|e| BoardError::Proxy(e.to_string()))?;
        *out.headers_mut() = forwarded_headers(&parts.headers);
        let resp = self
            .client
            .request(out)
            .await
            .map_err(|e| BoardError::Proxy(e.to_string()))?;
        let (mut parts, body) = resp.into_parts();
        for h in ["connection", "keep-alive", "transfer-encoding"] {
            parts.headers.remove(HeaderName::from_static(h));
        }
        parts.headers.remove(header::SET_COOKIE);
        Ok(Response::from_parts(parts, Body::new(body)))
    }

    /// Stops boards nobody has used for `idle_after`; runs for as long as
    /// the server does.
    pub async fn reap_forever(self: Arc<Self>) {
        let every = (self.idle_after / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let slots: Vec<(i64, Arc<Slot>)> = match self.slots.lock() {
                Ok(m) => m.iter().map(|(k, s)| (*k, Arc::clone(s))).collect(),
                Err(_) => continue,
            };
            let idle_ms = self.idle_after.as_millis() as u64;
            for (key, slot) in slots {
                let unused = now_ms().saturating_sub(slot.last_used_ms.load(Ordering::Relaxed));
                if unused < idle_ms {
                    continue;
                }
                // A board that is starting or serving is not idle.
                let Ok(mut b) = slot.board.try_lock() else {
                    continue;
                };
                if let Some(mut board) = b.take() {
                    let _ = board.child.kill().await;
                    info!(
                        job_key = key,
                        idle_secs = unused / 1000,
                        "tensorboard stopped: unused"
                    );
                }
            }
        }
    }
}

/// Who may see one job's board: a browser cannot send kiln's Bearer token,
/// so `kiln tensorboard JOB` hands out a link with a one-time ticket, which
/// the proxy trades for a cookie that opens that job's board only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    pub user: String,
    pub is_admin: bool,
    pub key: i64,
    pub expires_ms: u64,
}

/// How long a ticket link works, and how long the cookie it gives does.
pub const TICKET_MS: u64 = 5 * 60 * 1000;
pub const SESSION_MS: u64 = 12 * 3600 * 1000;

/// Tickets and sessions, in memory: a restart of kiln signs browsers out of
/// TensorBoard, and `kiln tensorboard JOB` gives a new link.
#[derive(Default)]
pub struct Passes {
    tickets: Mutex<HashMap<String, Pass>>,
    sessions: Mutex<HashMap<String, Pass>>,
}

impl Passes {
    /// A one-time ticket for `pass` (its `expires_ms` is set here).
    pub fn ticket(&self, mut pass: Pass, now_ms: u64) -> Option<String> {
        let t = crate::auth::new_token().ok()?;
        pass.expires_ms = now_ms + TICKET_MS;
        let mut m = self.tickets.lock().ok()?;
        m.retain(|_, p| p.expires_ms > now_ms);
        m.insert(t.clone(), pass);
        Some(t)
    }

    /// Trades a live ticket for job `key` for a session id; a ticket works
    /// once.
    pub fn redeem(&self, ticket: &str, key: i64, now_ms: u64) -> Option<String> {
        let mut pass = {
            let mut m = self.tickets.lock().ok()?;
            let p = m.remove(ticket)?;
            (p.key == key && p.expires_ms > now_ms).then_some(p)?
        };
        let id = crate::auth::new_token().ok()?;
        pass.expires_ms = now_ms + SESSION_MS;
        let mut m = self.sessions.lock().ok()?;
        m.retain(|_, p| p.expires_ms > now_ms);
        m.insert(id.clone(), pass);
        Some(id)
    }

    /// The pass behind a session cookie, if it is live and for job `key`.
    pub fn session(&self, id: &str, key: i64, now_ms: u64) -> Option<Pass> {
        let m = self.sessions.lock().ok()?;
        m.get(id)
            .filter(|p| p.key == key && p.expires_ms > now_ms)
            .cloned()
    }
}

/// Whether the board in the slot still runs; clears it if it died.
fn alive(b: &mut Option<Board>) -> bool {
    let dead = match b.as_mut() {
        Some(board) => match board.child.try_wait() {
            Ok(None) => false,
            Ok(Some(status)) => {
                warn!(%status, "tensorboard exited on its own");
                true
            }
            Err(_) => true,
        },
        None => return false,
    };
    if dead {
        *b = None;
    }
    !dead
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_one_job_once_and_sessions_expire() {
        let passes = Passes::default();
        let pass = Pass {
            user: "alice".into(),
            is_admin: false,
            key: 7,
            expires_ms: 0,
        };
        let t = passes.ticket(pass.clone(), 1_000).expect("ticket");
        assert_eq!(passes.redeem(&t, 8, 1_000), None, "another job's board");
        // The wrong job used it up.
        assert_eq!(passes.redeem(&t, 7, 1_000), None);
        let t = passes.ticket(pass.clone(), 1_000).expect("ticket");
        assert_eq!(passes.redeem(&t, 7, 1_000 + TICKET_MS), None, "too late");
        let t = passes.ticket(pass, 1_000).expect("ticket");
        let s = passes.redeem(&t, 7, 2_000).expect("session");
        assert_eq!(passes.redeem(&t, 7, 2_000), None, "only once");
        assert_eq!(
            passes.session(&s, 7, 3_000).map(|p| p.user),
            Some("alice".into())
        );
        assert_eq!(passes.session(&s, 8, 3_000), None);
        assert_eq!(passes.session(&s, 7, 2_000 + SESSION_MS), None);
        assert_eq!(passes.session("kiln_made_up", 7, 3_000), None);
    }

    #[test]
    fn the_ready_line_gives_the_port() {
        assert_eq!(
            ready_port("TensorBoard 2.21.0 at http://127.0.0.1:39175/jobs/a~b/tensorboard/ (Press CTRL+C to quit)"),
            Some(39175)
        );
        assert_eq!(
            ready_port("TensorBoard 1.15 at http://localhost:6006/"),
            Some(6006)
        );
        assert_eq!(
            ready_port("NOTE: Using experimental fast data loading logic."),
            None
        );
        assert_eq!(ready_port("at http://127.0.0.1:notaport/"), None);
    }

    fn spec(space: Option<&str>) -> BoardSpec {
        BoardSpec {
            prefix: "/jobs/alice~mnist/tensorboard".into(),
            logdir: "/data/spaces/alice/Output/mnist/tensorboard".into(),
            space: space.map(PathBuf::from),
        }
    }

    #[test]
    fn sandboxed_it_sees_only_the_owners_space_of_the_data_folder() {
        let (exe, args) = command_line(
            Path::new("/venv/bin/tensorboard"),
            Some((Path::new("/usr/bin/bwrap"), Path::new("/data"))),
            &spec(Some("/data/spaces/alice")),
        );
        assert_eq!(exe, PathBuf::from("/usr/bin/bwrap"));
        let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into()).collect();
        let at = |a: &str| args.iter().position(|x| x == a);
        // The data folder is hidden first, then the space shown read-only.
        let hide = args
            .windows(2)
            .position(|w| w == ["--tmpfs", "/data"])
            .expect("hidden");
        let show = args
            .windows(3)
            .position(|w| w == ["--ro-bind", "/data/spaces/alice", "/data/spaces/alice"])
            .expect("space shown");
        assert!(hide < show);
        assert!(at("--bind").is_none(), "nothing writable: {args:?}");
        let sep = at("--").expect("--");
        assert_eq!(args[sep + 1], "/venv/bin/tensorboard");
        let tail = &args[sep + 2..];
        assert!(tail.windows(2).any(|w| w == ["--host", "127.0.0.1"]));
        assert!(tail
            .windows(2)
            .any(|w| w == ["--path_prefix", "/jobs/alice~mnist/tensorboard"]));
    }

    #[test]
    fn without_the_sandbox_it_runs_directly() {
        let (exe, args) = command_line(Path::new("/venv/bin/tensorboard"), None, &spec(None));
        assert_eq!(exe, PathBuf::from("/venv/bin/tensorboard"));
        assert_eq!(args[0], "--logdir");
    }

    #[test]
    fn kiln_credentials_and_connection_headers_stay_behind() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            "Bearer secret".parse().expect("value"),
        );
        h.insert(header::COOKIE, "kiln_tb=abc".parse().expect("value"));
        h.insert(header::CONNECTION, "keep-alive".parse().expect("value"));
        h.insert(header::HOST, "kiln:8420".parse().expect("value"));
        h.insert(header::ACCEPT, "text/html".parse().expect("value"));
        h.insert(
            header::CONTENT_TYPE,
            "application/json".parse().expect("value"),
        );
        let out = forwarded_headers(&h);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out.contains_key(header::ACCEPT) && out.contains_key(header::CONTENT_TYPE));
    }
}
