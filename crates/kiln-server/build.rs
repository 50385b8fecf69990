//! Builds the web UI (`web/`, a Vite project) into `$OUT_DIR/web`, which
//! `ui.rs` embeds into the binary, so `kiln server` serves it with no other
//! process. npm runs only when the UI's sources change. Without npm the
//! server still builds, with a page that says how to get the UI; with
//! `KILN_REQUIRE_WEB=1` (the test suite) a failed UI build fails the build.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let web = manifest.join("../../web");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo")).join("web");
    for p in [
        "src",
        "public",
        "index.html",
        "package.json",
        "package-lock.json",
        "vite.config.ts",
        "tsconfig.json",
    ] {
        println!("cargo:rerun-if-changed={}", web.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=KILN_REQUIRE_WEB");
    println!("cargo:rerun-if-env-changed=KILN_SKIP_WEB");
    let required = std::env::var_os("KILN_REQUIRE_WEB").is_some_and(|v| v == "1");
    let result = if std::env::var_os("KILN_SKIP_WEB").is_some_and(|v| v == "1") {
        Err("KILN_SKIP_WEB=1".to_owned())
    } else if !web.join("package.json").exists() {
        Err(format!("{} has no package.json", web.display()))
    } else {
        build(&web, &out)
    };
    if let Err(why) = result {
        if required {
            panic!("the web UI did not build: {why}");
        }
        println!("cargo:warning=the web UI is not built ({why}); kiln serves a page saying how to get it");
        placeholder(&out, &why);
    }
}

fn build(web: &Path, out: &Path) -> Result<(), String> {
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    // `npm ci` when the installed packages are not the locked ones.
    let lock = web.join("package-lock.json");
    let installed = web.join("node_modules/.package-lock.json");
    let stale = match (modified(&lock), modified(&installed)) {
        (Some(l), Some(i)) => l > i,
        _ => true,
    };
    if stale {
        run(
            Command::new(npm)
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(web),
            "npm ci",
        )?;
    }
    // Vite itself rather than the `build` script, to choose where it writes.
    run(
        Command::new(web.join("node_modules/.bin/vite"))
            .args(["build", "--logLevel", "warn", "--outDir"])
            .arg(out)
            .arg("--emptyOutDir")
            .current_dir(web),
        "vite build",
    )
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let output = cmd
        .output()
        .map_err(|e| format!("cannot run {what}: {e} (install Node.js 20+ and npm)"))?;
    if output.status.success() {
        return Ok(());
    }
    let tail = |b: &[u8]| {
        let s = String::from_utf8_lossy(b);
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    };
    Err(format!(
        "{what} failed ({}):\n{}\n{}",
        output.status,
        tail(&output.stdout),
        tail(&output.stderr)
    ))
}

fn modified(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn placeholder(out: &Path, why: &str) {
    let _ = std::fs::remove_dir_all(out);
    let _ = std::fs::create_dir_all(out);
    let why = why
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let page = format!(
        "<!doctype html><meta charset=\"utf-8\"><title>kiln</title>\
         <body style=\"font-family:system-ui,sans-serif;max-width:40em;margin:4em auto\">\
         <h1>kiln</h1><p>This kiln was built without its web UI. Install Node.js 20 or newer \
         with npm and build again (<code>cargo build --release</code>); the API, the CLI and \
         WebDAV work without it.</p><pre style=\"white-space:pre-wrap;color:#666\">{why}</pre>"
    );
    let _ = std::fs::write(out.join("index.html"), page);
}
