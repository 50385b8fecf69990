//! `kiln tensorboard JOB`: the server runs the real TensorBoard (from the
//! venv `scripts/test` prepares) on the job's TensorBoard folder, under
//! bubblewrap, and serves it at `/jobs/{id}/tensorboard/` behind kiln's
//! sign-in; an unused board stops and the next visit starts it again.

mod common;

use common::{torch_bin, until, Server};

/// Writes scalars `tag` = 1.0, 0.5, 0.25 as a TensorBoard event file in `dir`.
fn write_events(bin: &std::path::Path, dir: &std::path::Path, tag: &str) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let status = std::process::Command::new(bin.join("python3"))
        .args([
            "-c",
            &format!(
                "from tensorboardX import SummaryWriter\n\
                 w = SummaryWriter({dir:?})\n\
                 for i, v in enumerate([1.0, 0.5, 0.25]):\n    w.add_scalar({tag:?}, v, i)\n\
                 w.close()\n",
                dir = dir.display().to_string()
            ),
        ])
        .status()
        .expect("python ran");
    assert!(status.success());
}

/// A GET without redirects, with an optional cookie or token; returns the
/// status, the headers we look at, and the body.
fn get(
    url: &str,
    cookie: Option<&str>,
    token: Option<&str>,
) -> (u16, Option<String>, Option<String>, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let mut req = agent.get(url);
    if let Some(c) = cookie {
        req = req.header("Cookie", c);
    }
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut resp = req.call().expect("request");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (location, set_cookie) = (header("location"), header("set-cookie"));
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    (status, location, set_cookie, body)
}

/// TensorBoard processes serving a socket in this data folder.
fn boards_running(data: &std::path::Path) -> usize {
    let data = data.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("python") && c.contains(&data) && c.contains("board.sock"))
        .filter(|c| !c.contains("bwrap"))
        .count()
}

#[test]
fn tensorboard_is_served_behind_sign_in_and_stops_when_unused() {
    let Some(bin) = torch_bin() else { return };
    let sandboxed = kiln_engine::local::sandbox::find_bwrap().is_some();
    assert!(
        sandboxed || std::env::var_os("KILN_REQUIRE_BWRAP").is_none(),
        "KILN_REQUIRE_BWRAP is set but bwrap is not installed"
    );
    let tensorboard = bin.join("tensorboard");
    let mut args = vec![
        "--tensorboard",
        tensorboard.to_str().expect("utf8"),
        "--tensorboard-idle",
        "3s",
        "--tensorboard-max",
        "1",
        "--stop-grace",
        "1",
    ];
    if !sandboxed {
        args.push("--no-sandbox");
    }
    let s = Server::start_with(&args);
    let (status, v) = s.api("POST", "/users", Some(r#"{"name": "alice"}"#));
    assert_eq!(status, 201, "{v}");
    let alice = v["token"].as_str().expect("token").to_owned();
    let (_, v) = s.api("POST", "/users", Some(r#"{"name": "bob"}"#));
    let bob = v["token"].as_str().expect("token").to_owned();

    let spec = s.write_spec("fit", "name: fit\ncommand: 'true'\n");
    let out = s.cli_as(&alice, &["submit", spec.to_str().expect("utf8"), "--wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = "alice~fit";
    // The job's TensorBoard folder, as KILN_TENSORBOARD_DIR named it.
    let job = s.job(id);
    assert_eq!(job["state"], "SUCCEEDED", "{job}");
    let spaces = s.data.path().join("spaces");
    let logdir = if sandboxed {
        spaces.join("alice/Output/fit/tensorboard")
    } else {
        let key = std::fs::read_dir(s.data.path().join("jobs"))
            .expect("jobs")
            .flatten()
            .find(|e| e.path().join("output").exists())
            .expect("the job's folder")
            .path();
        key.join("output/tensorboard")
    };
    write_events(&bin, &logdir.join("run1"), "loss");
    if sandboxed {
        // Bob's run, and a link to it planted in Alice's folder: her board
        // must not show it. A link to a run elsewhere in her own space,
        // named to sort after it, shows that links are followed at all and
        // that the board has read past the planted one.
        let bobs = spaces.join("bob/Output/secret/tensorboard");
        write_events(&bin, &bobs, "bobs_loss");
        std::os::unix::fs::symlink(&bobs, logdir.join("stolen")).expect("symlink");
        let mine = spaces.join("alice/elsewhere/tensorboard");
        write_events(&bin, &mine, "mine_loss");
        std::os::unix::fs::symlink(&mine, logdir.join("zz_mine")).expect("symlink");
    }

    // Boards have their own origin: another port than the API and the UI.
    let (_, v) = s.api_as(&alice, "GET", "/jobs/fit/tensorboard", None);
    let origin = v["origin"].as_str().expect("origin").to_owned();
    assert!(
        origin.starts_with("http://127.0.0.1:") && origin != s.url,
        "{origin} vs {}",
        s.url
    );
    let page = format!("{origin}/jobs/{id}/tensorboard/");
    // The API's listener sends a board's path there, ticket and all...
    let (status, location, _, _) = get(
        &format!("{}/jobs/{id}/tensorboard/?ticket=x", s.url),
        None,
        None,
    );
    assert_eq!(
        (status, location.as_deref()),
        (307, Some(format!("{page}?ticket=x").as_str()))
    );
    // ...and the boards' listener serves boards only: no API, no UI.
    assert_eq!(
        get(&format!("{origin}/api/v1/jobs"), None, Some(&alice)).0,
        404
    );
    assert_eq!(get(&format!("{origin}/"), None, None).0, 404);

    // Nobody signed in: nothing, not even whether the job exists.
    assert_eq!(get(&page, None, None).0, 401);
    assert_eq!(
        get(
            &format!("{origin}/jobs/alice~nope/tensorboard/"),
            None,
            None
        )
        .0,
        401
    );

    // `kiln tensorboard` prints a link; the link trades its ticket for a
    // cookie for this board.
    let out = s.cli_as(&alice, &["tensorboard", "fit"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(link.starts_with(&format!("{page}?ticket=")), "{link}");
    let (status, location, set_cookie, _) = get(&link, None, None);
    assert_eq!(status, 303);
    assert_eq!(
        location.as_deref(),
        Some(format!("/jobs/{id}/tensorboard/").as_str())
    );
    let set_cookie = set_cookie.expect("a cookie");
    assert!(
        set_cookie.contains("HttpOnly")
            && set_cookie.contains(&format!("Path=/jobs/{id}/tensorboard/")),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().expect("name=value").to_owned();
    // A ticket works once.
    assert_eq!(get(&link, None, None).0, 401);

    let (status, _, _, html) = get(&page, Some(&cookie), None);
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("<!doctype html>") && html.contains("tb-relative-root"),
        "{}",
        &html[..html.len().min(300)]
    );
    // TensorBoard's own data, through the proxy: Alice's scalars only.
    let tags_url = format!("{page}data/plugin/scalars/tags");
    let want = if sandboxed {
        "\"mine_loss\""
    } else {
        "\"loss\""
    };
    let tags = until(60, "the runs loaded", || {
        let (status, _, _, body) = get(&tags_url, Some(&cookie), None);
        (status == 200 && body.contains("\"loss\"") && body.contains(want))
            .then_some(body.clone())
            .ok_or(format!("{status} {body}"))
    });
    assert!(tags.contains("run1"), "{tags}");
    assert!(!tags.contains("bobs_loss"), "Bob's run leaked: {tags}");
    // Bob: not with his token, and not with Alice's cookie on his path.
    assert_eq!(get(&page, None, Some(&bob)).0, 404);
    let (status, _) = s.api_as(&bob, "POST", &format!("/jobs/{id}/tensorboard"), None);
    assert_eq!(status, 404);
    // Alice's token works too, and her short id leads to the one path.
    assert_eq!(get(&page, None, Some(&alice)).0, 200);
    let (status, location, _, _) = get(
        &format!("{origin}/jobs/fit/tensorboard/"),
        None,
        Some(&alice),
    );
    assert_eq!(
        (status, location.as_deref()),
        (308, Some(format!("/jobs/{id}/tensorboard/").as_str()))
    );

    // Unused for 3 s, it stops; the next visit starts it again.
    until(30, "stopped when unused", || {
        let (_, v) = s.api_as(&alice, "GET", "/jobs/fit/tensorboard", None);
        (v["running"] == false).then_some(()).ok_or(v.to_string())
    });
    let (status, _, _, html) = get(&page, Some(&cookie), None);
    assert_eq!(status, 200, "{html}");
    let (_, v) = s.api_as(&alice, "GET", "/jobs/fit/tensorboard", None);
    assert_eq!(v["running"], true, "{v}");
    // At most one board runs here: another job's board makes room.
    let spec2 = s.write_spec("fit2", "name: fit2\ncommand: 'true'\n");
    let out = s.cli_as(&alice, &["submit", spec2.to_str().expect("utf8"), "--wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, v) = s.api_as(&alice, "POST", "/jobs/fit2/tensorboard", None);
    assert_eq!(status, 200, "{v}");
    let (_, v) = s.api_as(&alice, "GET", "/jobs/fit/tensorboard", None);
    assert_eq!(
        v["running"], false,
        "the least recently used made room: {v}"
    );
    // Deleting a job stops its board: no board process is left.
    s.cli_as(&alice, &["rm", "fit2"]);
    until(10, "the deleted job's board gone", || {
        let n = boards_running(s.data.path());
        (n == 0).then_some(()).ok_or(format!("{n} running"))
    });
    let (status, _, _, _) = get(&page, Some(&cookie), None);
    assert_eq!(status, 200);
    assert_eq!(boards_running(s.data.path()), 1);
    // And `--stop` stops it.
    let out = s.cli_as(&alice, &["tensorboard", "fit", "--stop"]);
    assert!(out.status.success());
    let (_, v) = s.api_as(&alice, "GET", "/jobs/fit/tensorboard", None);
    assert_eq!(v["running"], false, "{v}");
}
