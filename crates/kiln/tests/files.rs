//! Spaces through the real server and CLI: folders up and down, moves,
//! removals, quotas, and every way a path could try to leave a space.

mod common;

use std::path::Path;

use common::{tree, Server};

#[test]
fn folders_go_up_and_come_back_the_same() {
    let s = Server::start();
    let local = tempfile::tempdir().expect("tmp");
    let src = local.path().join("mnist");
    std::fs::create_dir_all(src.join("data/raw")).expect("mkdir");
    std::fs::write(src.join("train.py"), "print('train')\n").expect("write");
    // A bigger file, so streaming is exercised across many chunks.
    let big: Vec<u8> = (0..20_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(src.join("data/raw/images.bin"), &big).expect("write");

    s.ok(&["files", "put", src.to_str().expect("utf8"), "mnist"]);
    let ls = s.ok(&["files", "ls", "mnist"]);
    assert!(ls.contains("data/") && ls.contains("train.py"), "{ls}");
    let du = s.ok(&["files", "du"]);
    assert!(
        du.contains(&format!("{} bytes used", 20_000_000 + 15)),
        "{du}"
    );

    let back = local.path().join("back");
    s.ok(&["files", "get", "mnist", back.to_str().expect("utf8")]);
    assert_eq!(tree(&src), tree(&back));

    s.ok(&["files", "mkdir", "runs/2026/a"]);
    s.ok(&["files", "mv", "mnist/train.py", "runs/2026/a/train.py"]);
    assert!(s.ok(&["files", "ls", "runs/2026/a"]).contains("train.py"));
    let rm = s.cli(&["files", "rm", "mnist"]);
    assert!(!rm.status.success(), "a full folder needs -r");
    assert!(String::from_utf8_lossy(&rm.stderr).contains("not empty"));
    s.ok(&["files", "rm", "-r", "mnist"]);
    assert!(!s.ok(&["files", "ls"]).contains("mnist"));
    let gone = s.cli(&["files", "get", "mnist/train.py", "/tmp/x"]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("does not exist"));
}

#[test]
fn a_quota_refuses_what_does_not_fit_and_leaves_nothing_behind() {
    let s = Server::start_with(&["--quota", "1Mi", "--stop-grace", "1"]);
    let local = tempfile::tempdir().expect("tmp");
    let small = local.path().join("small");
    std::fs::write(&small, vec![1u8; 600_000]).expect("write");
    s.ok(&["files", "put", small.to_str().expect("utf8"), "a"]);
    let out = s.cli(&["files", "put", small.to_str().expect("utf8"), "b"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("quota exceeded"), "{err}");
    let listing = s.ok(&["files", "ls"]);
    assert_eq!(
        listing.lines().count(),
        1,
        "only a, no leftovers: {listing}"
    );
    let (status, u) = s.api("GET", "/space", None);
    assert_eq!(status, 200);
    assert_eq!(u["usedBytes"], 600_000);
    assert_eq!(u["quotaBytes"], 1 << 20);
}

#[test]
fn no_path_leaves_the_space() {
    let s = Server::start();
    let alice = {
        let v: serde_json::Value =
            serde_json::from_str(&s.ok(&["user", "add", "alice", "-o", "json"])).expect("json");
        v["token"].as_str().expect("token").to_owned()
    };
    let (status, _) = s.api_as(&alice, "PUT", "/files/notes.txt", Some("mine"));
    assert_eq!(status, 201);
    // Plant symlinks in alice's space, pointing out of it.
    let space = s.data.path().join("spaces/alice");
    std::os::unix::fs::symlink("/etc/passwd", space.join("passwd")).expect("symlink");
    std::os::unix::fs::symlink("../admin", space.join("admins")).expect("symlink");
    std::os::unix::fs::symlink("/tmp", space.join("tmp")).expect("symlink");
    for (method, path, body) in [
        ("GET", "/files/../admin.token", None),
        ("GET", "/files/%2e%2e/admin.token", None),
        ("GET", "/files/a/%2E%2E/%2E%2E/admin.token", None),
        ("GET", "/files/..%2fadmin.token", None),
        ("GET", "/files/x%00y", None),
        ("GET", "/files/passwd", None),
        ("GET", "/files/admins", None),
        ("GET", "/files/tmp", None),
        ("PUT", "/files/tmp/evil.txt", Some("x")),
        ("PUT", "/files/../evil.txt", Some("x")),
        ("POST", "/files/tmp/evil?op=mkdir", None),
        ("POST", "/files/notes.txt?op=move&to=../../evil.txt", None),
        ("POST", "/files/notes.txt?op=move&to=tmp/evil.txt", None),
    ] {
        let (status, p) = s.api_as(&alice, method, path, body);
        assert!(
            (400..500).contains(&status),
            "{method} {path} answered {status}: {p}"
        );
    }
    assert!(!Path::new("/tmp/evil.txt").exists());
    assert!(!Path::new("/tmp/evil").exists());
    // Deleting a planted link removes the link only.
    let (status, _) = s.api_as(&alice, "DELETE", "/files/passwd", None);
    assert_eq!(status, 204);
    assert!(Path::new("/etc/passwd").exists());
    // Another user's space: not found for users, reachable for the admin.
    let bob = {
        let v: serde_json::Value =
            serde_json::from_str(&s.ok(&["user", "add", "bob", "-o", "json"])).expect("json");
        v["token"].as_str().expect("token").to_owned()
    };
    assert_eq!(
        s.api_as(&bob, "GET", "/files/notes.txt?user=alice", None).0,
        404
    );
    let (status, text) = s.api("GET", "/files/notes.txt?user=alice", None);
    assert_eq!((status, text.as_str()), (200, Some("mine")));
    assert_eq!(s.api_as(&bob, "GET", "/files/notes.txt", None).0, 404);
}

#[test]
fn names_with_spaces_and_cjk_go_up_list_and_download_under_their_own_name() {
    let s = Server::start();
    let local = tempfile::tempdir().expect("tmp");
    let file = local.path().join("数据 集.csv");
    std::fs::write(&file, "step,loss\n1,0.5\n").expect("write");
    s.ok(&[
        "files",
        "put",
        file.to_str().expect("utf8"),
        "데이터 폴더/数据 集.csv",
    ]);
    let ls = s.ok(&["files", "ls", "데이터 폴더"]);
    assert!(ls.contains("数据 集.csv"), "{ls}");

    // The download names the file in the header as RFC 6266 says, with a
    // plain fallback, instead of failing on the non-ASCII name.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!(
        "{}/api/v1/files/%EB%8D%B0%EC%9D%B4%ED%84%B0%20%ED%8F%B4%EB%8D%94/%E6%95%B0%E6%8D%AE%20%E9%9B%86.csv",
        s.url
    );
    let mut resp = agent
        .get(&url)
        .header("Authorization", &format!("Bearer {}", s.token))
        .call()
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    let disposition = resp
        .headers()
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        disposition,
        "attachment; filename=\"__ _.csv\"; filename*=UTF-8''%E6%95%B0%E6%8D%AE%20%E9%9B%86.csv"
    );
    let body = resp.body_mut().read_to_string().expect("body");
    assert_eq!(body, "step,loss\n1,0.5\n");

    let back = local.path().join("back.csv");
    s.ok(&[
        "files",
        "get",
        "데이터 폴더/数据 集.csv",
        back.to_str().expect("utf8"),
    ]);
    assert_eq!(
        std::fs::read(&back).expect("read"),
        std::fs::read(&file).expect("read")
    );
    s.ok(&["files", "rm", "-r", "데이터 폴더"]);
    assert!(!s.ok(&["files", "ls"]).contains("데이터"));
}
