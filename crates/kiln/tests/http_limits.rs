//! The HTTP listener against clients that hold connections open without
//! finishing a request (issue 15, finding 5): a request head or body that
//! stalls is cut off after its timeout, and a flood of idle connections from
//! one address, or from many, cannot use up the server's file descriptors,
//! while slow but live uploads and long responses are never cut.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{kiln_exe, until, Server};

/// How long the tests give a server to act on a timeout of 2 s.
const DEADLINE: Duration = Duration::from_secs(10);

fn addr(s: &Server) -> SocketAddr {
    s.url
        .trim_start_matches("http://")
        .parse()
        .expect("server address")
}

/// Server flags with these request timeouts: short ones, so the tests take
/// seconds, or a long one, so that only the caps close a flood's
/// connections within the tests' deadlines.
fn timeouts(header: &str, body: &str) -> Vec<String> {
    [
        "--no-sandbox",
        "--cpus",
        "16",
        "--memory",
        "64Gi",
        "--http-header-timeout",
        header,
        "--http-body-timeout",
        body,
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect()
}

fn start(args: &[String]) -> Server {
    Server::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// A server as `common::Server` starts one, but with at most 1,024 open
/// files (soft and hard), the common default that a flood exhausts.
fn start_with_1024_files(args: &[String]) -> Server {
    let data = tempfile::tempdir().expect("tmp");
    let mut cmd = Command::new(kiln_exe());
    cmd.arg("server")
        .arg("--data")
        .arg(data.path())
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 1024,
                rlim_max: 1024,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("server started");
    let url = common::listening_url(&mut child);
    let token = std::fs::read_to_string(data.path().join("admin.token"))
        .expect("admin token")
        .trim()
        .to_owned();
    Server {
        child: Some(child),
        url,
        data,
        args: args.to_vec(),
        envs: Vec::new(),
        relative: false,
        token,
    }
}

/// Enough open files here for the attacker's side of a flood.
fn raise_own_open_files() {
    // SAFETY: plain get/setrlimit on this process.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        assert!(
            lim.rlim_max >= 4096,
            "the test needs 4096 open files, the hard limit is {}",
            lim.rlim_max
        );
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

/// A TCP connection to `to` from the local address `from`.
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&SocketAddr::new(IpAddr::V4(from), 0).into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(5))?;
    Ok(s.into())
}

/// Whether the server has closed the connection (EOF or reset), without
/// waiting.
fn closed_by_server(c: &TcpStream) -> bool {
    c.set_nonblocking(true).expect("nonblocking");
    let mut b = [0u8; 1];
    let r = (&*c).read(&mut b);
    c.set_nonblocking(false).expect("blocking");
    match r {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    }
}

/// Blocks until the server closes `c` (after reading whatever it still
/// sends), up to `DEADLINE`; returns how long that took, or what it got.
fn wait_closed(c: &mut TcpStream, since: Instant) -> Result<Duration, String> {
    let mut got = Vec::new();
    loop {
        let left = DEADLINE.saturating_sub(since.elapsed());
        if left.is_zero() {
            return Err(format!(
                "still open after {DEADLINE:?}; got {:?}",
                String::from_utf8_lossy(&got)
            ));
        }
        c.set_read_timeout(Some(left)).expect("timeout");
        let mut b = [0u8; 4096];
        match c.read(&mut b) {
            Ok(0) => return Ok(since.elapsed()),
            Ok(n) => got.extend_from_slice(&b[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Ok(since.elapsed()),
        }
    }
}

/// Reads one response off `c`: its status and body (Content-Length only).
fn read_response(c: &mut TcpStream) -> (u16, String) {
    c.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut r = BufReader::new(c);
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {line:?}"));
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).expect("header");
        if h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().expect("length");
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn get_me(addr: SocketAddr, token: &str) -> String {
    format!("GET /api/v1/me HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n")
}

/// `GET /api/v1/me` from 127.0.0.1 on a fresh connection; its time.
fn legit_request(s: &Server) -> Result<Duration, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .max_idle_connections(0)
        .build()
        .into();
    let t = Instant::now();
    let resp = agent
        .get(format!("{}/api/v1/me", s.url))
        .header("Authorization", format!("Bearer {}", s.token))
        .call()
        .map_err(|e| format!("GET /api/v1/me: {e}"))?;
    match resp.status().as_u16() {
        200 => Ok(t.elapsed()),
        other => Err(format!("GET /api/v1/me answered {other}")),
    }
}

fn percentile(times: &mut [Duration], p: usize) -> Duration {
    times.sort();
    times[(times.len() * p / 100).min(times.len() - 1)]
}

#[test]
fn stalled_request_heads_and_idle_connections_are_closed() {
    let s = start(&timeouts("2s", "2s"));
    let to = addr(&s);
    // Nothing at all; half a request line; a kept-alive connection that
    // has had its answer and says nothing more.
    let start = Instant::now();
    let mut silent = TcpStream::connect(to).expect("connect");
    let mut half = TcpStream::connect(to).expect("connect");
    half.write_all(b"GET /api/v1/m").expect("half a line");
    let mut kept = TcpStream::connect(to).expect("connect");
    kept.write_all(get_me(to, &s.token).as_bytes())
        .expect("request");
    let (status, body) = read_response(&mut kept);
    assert_eq!(status, 200, "{body}");
    let kept_since = Instant::now();
    let silent_after = wait_closed(&mut silent, start).expect("a silent connection closed");
    let half_after = wait_closed(&mut half, start).expect("half a request line closed");
    let kept_after = wait_closed(&mut kept, kept_since).expect("an idle kept-alive closed");
    eprintln!(
        "closed after: silent {silent_after:.1?}, half a line {half_after:.1?}, \
         idle keep-alive {kept_after:.1?} (header timeout 2 s)"
    );
    // The server still answers.
    legit_request(&s).expect("answered afterwards");
}

#[test]
fn stalled_request_bodies_are_cut_but_slow_ones_and_long_answers_are_not() {
    let s = start(&timeouts("2s", "2s"));
    let to = addr(&s);
    // 10 of 1,000 announced bytes, then nothing.
    let mut c = TcpStream::connect(to).expect("connect");
    let start = Instant::now();
    write!(
        c,
        "POST /api/v1/jobs HTTP/1.1\r\nHost: {to}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"name\": ",
        s.token
    )
    .expect("request");
    let after = wait_closed(&mut c, start).expect("a stalled body answered and closed");
    eprintln!("stalled body: answered and closed after {after:.1?} (body timeout 2 s)");

    // A slow upload, a byte a second for longer than the body timeout, is
    // not cut: each gap is shorter than the timeout.
    let mut c = TcpStream::connect(to).expect("connect");
    write!(
        c,
        "PUT /api/v1/files/slow.txt HTTP/1.1\r\nHost: {to}\r\nAuthorization: Bearer {}\r\n\
         Content-Length: 4\r\n\r\n",
        s.token
    )
    .expect("request");
    for b in b"slow" {
        // The client's pace, not a wait for the server.
        std::thread::sleep(Duration::from_secs(1));
        c.write_all(&[*b]).expect("a byte");
    }
    let (status, body) = read_response(&mut c);
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        std::fs::read_to_string(s.data.path().join("spaces/admin/slow.txt")).expect("uploaded"),
        "slow"
    );

    // A followed log that goes on past both timeouts comes whole.
    let out = s.ok(&[
        "run",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do echo tick $i; sleep 1; done",
    ]);
    assert_eq!(out, "tick 1\ntick 2\ntick 3\ntick 4\ntick 5\n");
}

#[test]
fn a_flood_of_idle_connections_from_one_address_leaves_others_served() {
    raise_own_open_files();
    let s = start_with_1024_files(&timeouts("60s", "60s"));
    let to = addr(&s);
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    let mut flood: Vec<TcpStream> = (0..1100)
        .map(|i| connect_from(attacker, to).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    let mut times = Vec::new();
    for wave in 0..2 {
        for _ in 0..25 {
            times.push(
                legit_request(&s).unwrap_or_else(|e| panic!("during the flood (wave {wave}): {e}")),
            );
        }
        // The server keeps at most 256 connections of one address and closes
        // the rest at once instead of leaving them queued.
        let held = until(10, "the server closes what is over the cap", || {
            let held = flood.iter().filter(|c| !closed_by_server(c)).count();
            if held <= 256 {
                Ok(held)
            } else {
                Err(format!("{held} of 1100 still open"))
            }
        });
        eprintln!("wave {wave}: the server holds {held} of the attacker's 1100 connections");
        // The attacker opens again what was closed.
        for c in &mut flood {
            if closed_by_server(c) {
                *c = connect_from(attacker, to).expect("reconnect");
            }
        }
    }
    eprintln!(
        "GET /api/v1/me during the flood: p50 {:.1?}, max {:.1?} over {} requests",
        percentile(&mut times, 50),
        percentile(&mut times, 100),
        times.len()
    );
    // The attacker leaves; its address is served again, as is everyone.
    drop(flood);
    until(10, "the attacker's address served again", || {
        let mut c = connect_from(attacker, to).map_err(|e| e.to_string())?;
        c.write_all(get_me(to, &s.token).as_bytes())
            .map_err(|e| e.to_string())?;
        match read_response(&mut c) {
            (200, _) => Ok(()),
            (status, body) => Err(format!("{status}: {body}")),
        }
    });
    legit_request(&s).expect("answered after the flood");
}

#[test]
fn a_flood_from_many_addresses_stops_at_the_overall_cap() {
    raise_own_open_files();
    let s = start_with_1024_files(&timeouts("60s", "60s"));
    let to = addr(&s);
    // 5 addresses × 220: under the cap per address, over the overall cap
    // (1,024 open files less 256 kept for everything else: 768).
    let flood: Vec<TcpStream> = (0..1100u32)
        .map(|i| {
            let from = Ipv4Addr::new(127, 0, 1, 1 + (i % 5) as u8);
            connect_from(from, to).unwrap_or_else(|e| panic!("connection {i}: {e}"))
        })
        .collect();
    let held = until(10, "the server closes what is over the overall cap", || {
        let held = flood.iter().filter(|c| !closed_by_server(c)).count();
        if held <= 768 {
            Ok(held)
        } else {
            Err(format!("{held} of 1100 still open"))
        }
    });
    eprintln!("the server holds {held} of 1100 connections from 5 addresses");
    // Their descriptors were never exhausted: once they leave (or time
    // out), the server answers at once.
    drop(flood);
    until(10, "answered after the flood", || legit_request(&s));
}
