//! WebDAV at /dav/ with real clients: the litmus suite (basic and
//! copymove) and rclone copying a folder up and down; then every way a
//! WebDAV request could try to leave the user's space. scripts/test
//! installs litmus and rclone and sets KILN_REQUIRE_DAV_CLIENTS, so the
//! client tests never skip there.

mod common;

use std::path::Path;
use std::process::Command;

use common::{have_program, tree, Server};

const REQUIRE: &str = "KILN_REQUIRE_DAV_CLIENTS";

/// Adds a user with a password; returns their API token.
fn add_user(s: &Server, name: &str, password: &str) -> String {
    let (status, v) = s.api(
        "POST",
        "/users",
        Some(&format!(
            r#"{{"name": "{name}", "password": "{password}"}}"#
        )),
    );
    assert_eq!(status, 201, "{v}");
    v["token"].as_str().expect("token").to_owned()
}

/// One WebDAV request with any method; returns the status and body.
fn dav(
    s: &Server,
    auth: Option<(&str, &str)>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .allow_non_standard_methods(true)
        .build()
        .into();
    let mut req = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", s.url));
    if let Some((user, secret)) = auth {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
        req = req.header("Authorization", format!("Basic {b64}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = agent
        .run(req.body(body.to_owned()).expect("request"))
        .expect("sent");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

/// A PUT of `len` bytes that sends its headers with `Expect: 100-continue`
/// and its body only if the server says 100; returns the final status.
fn put_expecting_continue(s: &Server, user: &str, password: &str, path: &str, len: usize) -> u16 {
    use base64::Engine;
    use std::io::{BufRead, BufReader, Write};
    let addr = s.url.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    write!(
        conn,
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {b64}\r\n\
         Content-Length: {len}\r\nExpect: 100-continue\r\n\r\n"
    )
    .expect("headers");
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("status line");
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status in {line:?}"));
        // Skip the rest of this response's headers.
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).expect("header");
            if h == "\r\n" || h.is_empty() {
                break;
            }
        }
        if status != 100 {
            return status;
        }
        conn.write_all(&vec![b'x'; len]).expect("body");
    }
}

#[test]
fn litmus_basic_and_copymove_pass() {
    if !have_program("litmus", REQUIRE) {
        return;
    }
    let s = Server::start();
    add_user(&s, "alice", "litmus-password");
    let out = Command::new("litmus")
        .arg(format!("{}/dav/", s.url))
        .args(["alice", "litmus-password"])
        .env("TESTS", "basic copymove")
        .current_dir(s.data.path())
        .output()
        .expect("litmus ran");
    let text = String::from_utf8_lossy(&out.stdout);
    for group in ["basic", "copymove"] {
        let summary = text
            .lines()
            .find(|l| l.contains(&format!("summary for `{group}'")))
            .unwrap_or_else(|| panic!("no summary for {group}:\n{text}"));
        assert!(summary.contains(" 0 failed"), "{summary}\n{text}");
    }
    assert!(out.status.success(), "{text}");
}

#[test]
fn rclone_copies_a_folder_up_and_down() {
    if !have_program("rclone", REQUIRE) {
        return;
    }
    let s = Server::start();
    let token = add_user(&s, "alice", "rclone-password");
    let local = tempfile::tempdir().expect("tmp");
    let src = local.path().join("project");
    std::fs::create_dir_all(src.join("data/raw")).expect("mkdir");
    std::fs::create_dir_all(src.join("empty-later")).expect("mkdir");
    std::fs::write(src.join("train.py"), "print('train')\n").expect("write");
    std::fs::write(src.join("说明 메모.txt"), "unicode names\n").expect("write");
    let big: Vec<u8> = (0..12_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(src.join("data/raw/images.bin"), &big).expect("write");
    std::fs::write(src.join("empty-later/x"), "").expect("write");

    let obscured = Command::new("rclone")
        .args(["obscure", &token])
        .output()
        .expect("rclone obscure");
    let pass = String::from_utf8_lossy(&obscured.stdout).trim().to_owned();
    // The remote `kiln:` configured through the environment.
    let command = |args: &[&str]| {
        let mut c = Command::new("rclone");
        c.args(args)
            .env("RCLONE_CONFIG", local.path().join("rclone.conf"))
            .env("RCLONE_CONFIG_KILN_TYPE", "webdav")
            .env("RCLONE_CONFIG_KILN_URL", format!("{}/dav/", s.url))
            .env("RCLONE_CONFIG_KILN_VENDOR", "other")
            .env("RCLONE_CONFIG_KILN_USER", "alice")
            .env("RCLONE_CONFIG_KILN_PASS", &pass);
        c
    };
    let rclone = |args: &[&str]| {
        let out = command(args).output().expect("rclone ran");
        assert!(
            out.status.success(),
            "rclone {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    rclone(&["copy", src.to_str().expect("utf8"), "kiln:project"]);
    // Up: the space holds exactly the folder, as the API shows it too.
    assert_eq!(
        tree(&src),
        tree(&s.data.path().join("spaces/alice/project"))
    );
    let (status, v) = s.api("GET", "/files/project?user=alice", None);
    assert_eq!(status, 200);
    assert!(v.to_string().contains("train.py"), "{v}");
    let listing = rclone(&["lsf", "-R", "kiln:project"]);
    assert!(listing.contains("data/raw/images.bin"), "{listing}");
    // Down: the same bytes come back.
    let back = local.path().join("back");
    rclone(&["copy", "kiln:project", back.to_str().expect("utf8")]);
    assert_eq!(tree(&src), tree(&back));
    // A second copy up finds nothing to do, so sizes and times round-trip.
    let again = command(&["copy", "-v", src.to_str().expect("utf8"), "kiln:project"])
        .output()
        .expect("rclone ran");
    let log = String::from_utf8_lossy(&again.stderr);
    assert!(
        !log.contains("Copied"),
        "nothing should be copied again: {log}"
    );
}

#[test]
fn webdav_never_leaves_the_space() {
    let s = Server::start_with(&["--quota", "1Mi", "--no-sandbox"]);
    let alice = add_user(&s, "alice", "alice-password");
    let bob = add_user(&s, "bob", "bob-password");
    let a = Some(("alice", "alice-password"));
    assert_eq!(
        dav(&s, a, "PUT", "/dav/notes.txt", &[], "mine").0,
        201,
        "a plain PUT works"
    );
    assert_eq!(dav(&s, a, "GET", "/dav/notes.txt", &[], "").1, "mine");
    // The token works as the password, and as a Bearer token.
    assert_eq!(
        dav(
            &s,
            Some(("alice", &alice)),
            "GET",
            "/dav/notes.txt",
            &[],
            ""
        )
        .0,
        200
    );
    let bearer = format!("Bearer {alice}");
    assert_eq!(
        dav(
            &s,
            None,
            "GET",
            "/dav/notes.txt",
            &[("Authorization", &bearer)],
            ""
        )
        .0,
        200
    );

    // Signing in: nothing, a wrong password, someone else's token.
    let (status, _) = dav(&s, None, "PROPFIND", "/dav/", &[], "");
    assert_eq!(status, 401);
    assert_eq!(
        dav(
            &s,
            Some(("alice", "wrong-password")),
            "GET",
            "/dav/notes.txt",
            &[],
            ""
        )
        .0,
        401
    );
    assert_eq!(
        dav(&s, Some(("alice", &bob)), "GET", "/dav/notes.txt", &[], "").0,
        401
    );

    // Bob's /dav/ is bob's space: alice's file is not there.
    let b = Some(("bob", "bob-password"));
    assert_eq!(dav(&s, b, "GET", "/dav/notes.txt", &[], "").0, 404);

    // Symlinks planted in alice's space, pointing out of it.
    let space = s.data.path().join("spaces/alice");
    std::os::unix::fs::symlink("/etc/passwd", space.join("passwd")).expect("symlink");
    std::os::unix::fs::symlink("../bob", space.join("bobs")).expect("symlink");
    std::os::unix::fs::symlink("/tmp", space.join("tmp")).expect("symlink");
    let here = s.data.path().display().to_string();
    for (method, path, headers) in [
        ("GET", "/dav/passwd".to_owned(), vec![]),
        ("GET", "/dav/bobs/x".to_owned(), vec![]),
        ("PROPFIND", "/dav/tmp/".to_owned(), vec![("Depth", "1")]),
        ("PUT", "/dav/tmp/kiln-dav-evil.txt".to_owned(), vec![]),
        ("MKCOL", "/dav/tmp/kiln-dav-evil/".to_owned(), vec![]),
        ("GET", "/dav/%2e%2e/admin.token".to_owned(), vec![]),
        ("GET", "/dav/a/%2E%2E/%2E%2E/admin.token".to_owned(), vec![]),
        ("GET", "/dav/..%2fadmin.token".to_owned(), vec![]),
        ("GET", "/dav/x%00y".to_owned(), vec![]),
        (
            "COPY",
            "/dav/notes.txt".to_owned(),
            vec![("Destination", "/dav/tmp/kiln-dav-evil.txt")],
        ),
        (
            "MOVE",
            "/dav/notes.txt".to_owned(),
            vec![("Destination", "/dav/../admin.token")],
        ),
        (
            "COPY",
            "/dav/notes.txt".to_owned(),
            vec![("Destination", "/api/v1/files/copied.txt")],
        ),
        (
            "COPY",
            format!("/dav/{here}/admin.token"),
            vec![("Destination", "/dav/stolen.txt")],
        ),
    ] {
        let body = if method == "PUT" { "x" } else { "" };
        let (status, body) = dav(&s, a, method, &path, &headers, body);
        // 502 is RFC 4918's answer to a Destination outside this server's
        // WebDAV namespace.
        let foreign_destination = status == 502 && !headers.is_empty();
        assert!(
            (400..500).contains(&status)
                || foreign_destination
                || status == 207 && !body.contains("200 OK"),
            "{method} {path} {headers:?} answered {status}: {body}"
        );
    }
    assert!(!Path::new("/tmp/kiln-dav-evil.txt").exists());
    assert!(!Path::new("/tmp/kiln-dav-evil").exists());
    assert!(!space.join("stolen.txt").exists());
    assert!(!space.join("copied.txt").exists());
    // Planted links are not listed, so clients do not wander into them.
    let (status, listing) = dav(&s, a, "PROPFIND", "/dav/", &[("Depth", "1")], "");
    assert_eq!(status, 207, "{listing}");
    assert!(listing.contains("notes.txt"), "{listing}");
    for planted in ["passwd", "bobs", "/dav/tmp"] {
        assert!(!listing.contains(planted), "{planted} listed: {listing}");
    }
    // Deleting a planted link removes the link only.
    dav(&s, a, "DELETE", "/dav/passwd", &[], "");
    assert!(Path::new("/etc/passwd").exists());

    // The quota holds for WebDAV writes too, and says so with 507 before
    // the body is sent, to a client that waits for 100-continue as curl
    // does for large uploads. (A client that sends the body regardless may
    // see the connection closed under it instead: the server does not read
    // a body it has refused.)
    assert_eq!(
        put_expecting_continue(&s, "alice", "alice-password", "/dav/big.bin", 1_200_000),
        507
    );
    assert!(!space.join("big.bin").exists());
    let (status, _) = dav(&s, a, "PUT", "/dav/small.bin", &[], &"y".repeat(1000));
    assert_eq!(status, 201);
}

/// The space's root is not a resource a client may delete, move or
/// overwrite (issue 15, finding 4): `DELETE /dav/` used to empty the whole
/// space (answering 500 once it had), as did `rclone purge` of the remote.
#[test]
fn webdav_root_cannot_be_deleted_moved_or_overwritten() {
    let s = Server::start();
    add_user(&s, "alice", "alice-password");
    let a = Some(("alice", "alice-password"));
    assert_eq!(dav(&s, a, "PUT", "/dav/a.txt", &[], "a").0, 201);
    assert_eq!(dav(&s, a, "MKCOL", "/dav/sub/", &[], "").0, 201);
    assert_eq!(dav(&s, a, "PUT", "/dav/sub/b.txt", &[], "b").0, 201);
    let space = s.data.path().join("spaces/alice");
    let before = tree(&space);
    assert_eq!(before.len(), 2, "{before:?}");
    let roots = [
        "/dav",
        "/dav/",
        "/dav/.",
        "/dav/./",
        "/dav//",
        "/dav/%2e",
        "/dav/%2E/",
        "/dav/sub/..",
        "/dav/sub/%2e%2e/",
    ];
    for root in roots {
        for (method, headers) in [
            ("DELETE", vec![]),
            ("MOVE", vec![("Destination", "/dav/moved/")]),
        ] {
            let (status, body) = dav(&s, a, method, root, &headers, "");
            assert_eq!(status, 403, "{method} {root}: {body}");
            assert_eq!(tree(&space), before, "after {method} {root}");
        }
        // Onto the root: MOVE and COPY with Overwrite would delete
        // everything in it first.
        let dest_url = format!("{}{root}", s.url);
        for dest in [root, dest_url.as_str()] {
            for (method, from) in [("MOVE", "/dav/sub/"), ("COPY", "/dav/a.txt")] {
                let headers = [("Destination", dest), ("Overwrite", "T")];
                let (status, body) = dav(&s, a, method, from, &headers, "");
                assert_eq!(status, 403, "{method} {from} to {dest}: {body}");
                assert_eq!(tree(&space), before, "after {method} {from} to {dest}");
            }
        }
    }
    // What is in the root can still go, one by one.
    assert_eq!(dav(&s, a, "DELETE", "/dav/sub/", &[], "").0, 204);
    assert_eq!(dav(&s, a, "MKCOL", "/dav/sub/", &[], "").0, 201);
    assert_eq!(dav(&s, a, "PUT", "/dav/sub/b.txt", &[], "b").0, 201);
    assert_eq!(tree(&space), before);

    if !have_program("rclone", REQUIRE) {
        return;
    }
    let local = tempfile::tempdir().expect("tmp");
    let obscured = Command::new("rclone")
        .args(["obscure", "alice-password"])
        .output()
        .expect("rclone obscure");
    let out = Command::new("rclone")
        .args(["purge", "kiln:"])
        .env("RCLONE_CONFIG", local.path().join("rclone.conf"))
        .env("RCLONE_CONFIG_KILN_TYPE", "webdav")
        .env("RCLONE_CONFIG_KILN_URL", format!("{}/dav/", s.url))
        .env("RCLONE_CONFIG_KILN_VENDOR", "other")
        .env("RCLONE_CONFIG_KILN_USER", "alice")
        .env(
            "RCLONE_CONFIG_KILN_PASS",
            String::from_utf8_lossy(&obscured.stdout).trim(),
        )
        .output()
        .expect("rclone ran");
    assert!(
        !out.status.success(),
        "rclone purge of the root succeeded: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tree(&space), before, "after rclone purge");
}
