//! The web UI as the server serves it: the app's page for every path the
//! API does not claim (the app routes from there), its hashed assets with
//! long caching, and JSON problems, never a page, for unknown API paths.
//! The browser tests of the UI itself are in web/e2e (run by scripts/test).

mod common;

use common::Server;

fn get(url: &str) -> (u16, String, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent.get(url).call().expect("request");
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (ctype, cache) = (h("content-type"), h("cache-control"));
    let status = resp.status().as_u16();
    (
        status,
        ctype,
        cache,
        resp.body_mut().read_to_string().unwrap_or_default(),
    )
}

#[test]
fn the_app_is_served_for_its_routes_and_the_api_stays_json() {
    let s = Server::start();
    let (status, ctype, cache, index) = get(&format!("{}/", s.url));
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/html"), "{ctype}");
    assert_eq!(cache, "no-cache");
    assert!(
        index.to_ascii_lowercase().starts_with("<!doctype html"),
        "{index}"
    );
    for route in [
        "/jobs",
        "/jobs/alice~mnist",
        "/jobs/john.doe~resnet-v1.5",
        "/files/data/raw",
        "/files/data.v2/x.csv",
        "/login",
        "/cluster",
    ] {
        let (status, _, _, page) = get(&format!("{}{route}", s.url));
        assert_eq!((status, page.as_str()), (200, index.as_str()), "{route}");
    }
    let (status, ctype, _, body) = get(&format!("{}/api/v1/nope", s.url));
    assert_eq!(status, 404);
    assert!(
        ctype.starts_with("application/problem+json"),
        "{ctype}: {body}"
    );
    for missing in ["/assets/missing-0000.js", "/favicon.ico"] {
        let (status, _, _, _) = get(&format!("{}{missing}", s.url));
        assert_eq!(status, 404, "{missing}");
    }
    // With the real UI built in (scripts/test requires it): its scripts
    // come with their type and are cached for good.
    let required = std::env::var_os("KILN_REQUIRE_WEB").is_some();
    let script = index
        .split("src=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .filter(|p| p.starts_with("/assets/"));
    match script {
        Some(path) => {
            let (status, ctype, cache, _) = get(&format!("{}{path}", s.url));
            assert_eq!(status, 200, "{path}");
            assert!(ctype.contains("javascript"), "{ctype}");
            assert!(cache.contains("immutable"), "{cache}");
        }
        None => assert!(
            !required,
            "KILN_REQUIRE_WEB is set but the UI is not built in: {index}"
        ),
    }
}
