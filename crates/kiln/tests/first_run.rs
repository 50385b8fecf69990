//! What a new user meets first (issue 16): `kiln files put|get` say what
//! they copied, `kiln user passwd` at a terminal asks without echo, the
//! server's log in a file has no colour codes, and `kiln nodes` says in
//! words that there are no GPUs. The README's own commands are run by
//! scripts/readme-check; the piped `kiln user passwd` is in tests/auth.rs.

mod common;

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{kiln_exe, listening_url, Server};

#[test]
fn files_put_and_get_say_what_they_copied() {
    let s = Server::start();
    let local = tempfile::tempdir().expect("tmp");
    let src = local.path().join("mnist");
    std::fs::create_dir_all(src.join("data")).expect("mkdir");
    std::fs::write(src.join("train.py"), "print('train')\n").expect("write");
    std::fs::write(src.join("data/big.bin"), vec![7u8; 3 << 20]).expect("write");
    let src_arg = src.to_str().expect("utf8");

    let out = s.cli(&["files", "put", src_arg, "mnist"]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(said.trim(), "uploaded 2 files (3.0 MiB) to mnist", "{said}");
    // Not a terminal: no progress bar drawn into a log or a pipe.
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains('\r'),
        "{out:?}"
    );

    let one = src.join("train.py");
    let said = s.ok(&[
        "files",
        "put",
        one.to_str().expect("utf8"),
        "notes/train.py",
    ]);
    assert_eq!(
        said.trim(),
        format!("uploaded {} (15 B) to notes/train.py", one.display())
    );

    let back = local.path().join("back");
    let back_arg = back.to_str().expect("utf8");
    let said = s.ok(&["files", "get", "mnist", back_arg]);
    assert_eq!(
        said.trim(),
        format!("downloaded 2 files (3.0 MiB) from mnist to {back_arg}")
    );
    assert_eq!(
        std::fs::read(back.join("data/big.bin"))
            .expect("read")
            .len(),
        3 << 20
    );

    let file = local.path().join("train.py");
    let file_arg = file.to_str().expect("utf8");
    let said = s.ok(&["files", "get", "mnist/train.py", file_arg]);
    assert_eq!(
        said.trim(),
        format!("downloaded mnist/train.py (15 B) to {file_arg}")
    );
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        "print('train')\n"
    );
}

#[test]
fn nodes_without_gpus_says_so_in_words() {
    let s = Server::start_with(&["--cpus", "4", "--memory", "8Gi", "--no-sandbox"]);
    let nodes = s.ok(&["nodes"]);
    assert!(!nodes.contains("(None)"), "{nodes}");
    if !nodes.contains("GPU 0:") {
        assert!(
            nodes.contains("no GPUs found") && nodes.contains("--fake-gpus"),
            "{nodes}"
        );
    }
    let fake = Server::start_with(&["--fake-gpus", "0", "--no-sandbox"]);
    let nodes = fake.ok(&["nodes"]);
    assert!(nodes.contains("no GPUs (--fake-gpus 0)"), "{nodes}");
}

/// A pseudo-terminal: the child gets the follower side as its standard
/// streams, the test reads and types on the leader side.
struct Pty {
    leader: std::fs::File,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    /// Starts `cmd` on a new terminal; everything it prints is collected.
    fn spawn(mut cmd: Command) -> (Pty, Child) {
        let (mut leader, mut follower) = (-1, -1);
        // SAFETY: openpty writes two descriptors into our ints; the other
        // arguments may be null.
        let rc = unsafe {
            libc::openpty(
                &mut leader,
                &mut follower,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned here only.
        let (leader, follower) =
            unsafe { (OwnedFd::from_raw_fd(leader), OwnedFd::from_raw_fd(follower)) };
        let child = cmd
            .stdin(Stdio::from(follower.try_clone().expect("dup")))
            .stdout(Stdio::from(follower.try_clone().expect("dup")))
            .stderr(Stdio::from(follower))
            .spawn()
            .expect("spawned");
        drop(cmd);
        let leader = std::fs::File::from(leader);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (mut reader, sink) = (leader.try_clone().expect("dup"), seen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once the child and every copy of the follower
            // are gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("lock").extend_from_slice(&buf[..n]);
            }
        });
        (Pty { leader, seen }, child)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().expect("lock")).into_owned()
    }

    fn wait_for(&self, what: &str) {
        let end = Instant::now() + Duration::from_secs(20);
        while !self.text().contains(what) {
            assert!(
                Instant::now() < end,
                "no {what:?} within 20s: {:?}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn type_line(&mut self, line: &str) {
        self.leader
            .write_all(format!("{line}\n").as_bytes())
            .expect("typed");
    }
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("the command did not end within 20s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn passwd_at_a_terminal_asks_twice_and_does_not_show_the_password() {
    let s = Server::start();
    let passwd = || {
        let mut cmd = Command::new(kiln_exe());
        cmd.args(["user", "passwd"])
            .env("KILN_URL", &s.url)
            .env("KILN_DATA", s.data.path())
            .env_remove("KILN_TOKEN");
        Pty::spawn(cmd)
    };
    let login = |password: &str| {
        let body = serde_json::json!({"name": "admin", "password": password}).to_string();
        s.api_as("", "POST", "/login", Some(&body)).0
    };

    let (mut pty, mut child) = passwd();
    pty.wait_for("New password:");
    pty.type_line("terminal-secret-1");
    pty.wait_for("Repeat:");
    pty.type_line("terminal-secret-1");
    assert!(wait_exit(&mut child).success(), "{}", pty.text());
    pty.wait_for("password of admin set");
    assert!(
        !pty.text().contains("terminal-secret-1"),
        "echoed: {:?}",
        pty.text()
    );
    assert_eq!(login("terminal-secret-1"), 200);

    // Two different passwords change nothing.
    let (mut pty, mut child) = passwd();
    pty.wait_for("New password:");
    pty.type_line("terminal-secret-2");
    pty.wait_for("Repeat:");
    pty.type_line("terminal-secret-3");
    assert!(!wait_exit(&mut child).success(), "{}", pty.text());
    pty.wait_for("differ");
    assert_eq!(login("terminal-secret-1"), 200);
    assert_eq!(login("terminal-secret-2"), 401);
}

/// The server's log as it goes to `stderr`, up to its "listening" line.
fn server_log(stderr: Stdio, envs: &[(&str, &str)]) -> (Child, tempfile::TempDir) {
    let data = tempfile::tempdir().expect("tmp");
    let mut child = Command::new(kiln_exe())
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--no-sandbox",
            "--data",
        ])
        .arg(data.path())
        .args(["--fake-gpus", "1"])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("server started");
    listening_url(&mut child);
    (child, data)
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_server_log_has_colours_only_at_a_terminal() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("server.log");
    let file = std::fs::File::create(&path).expect("log file");
    let (child, _data) = server_log(Stdio::from(file), &[]);
    stop(child);
    let log = std::fs::read_to_string(&path).expect("log");
    assert!(log.contains("listening"), "{log}");
    assert!(
        !log.contains("\x1b["),
        "colour codes in a log file: {log:?}"
    );

    // At a terminal colours stay, unless NO_COLOR says otherwise.
    for (envs, coloured) in [(&[][..], true), (&[("NO_COLOR", "1")][..], false)] {
        let mut cmd = Command::new(kiln_exe());
        let data = tempfile::tempdir().expect("tmp");
        cmd.args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--no-sandbox",
            "--data",
        ])
        .arg(data.path())
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .envs(envs.iter().copied());
        let (pty, child) = Pty::spawn(cmd);
        pty.wait_for("kiln listening on");
        pty.wait_for("kiln server listening");
        stop(child);
        assert_eq!(
            pty.text().contains("\x1b["),
            coloured,
            "{envs:?}: {:?}",
            pty.text()
        );
    }
}
