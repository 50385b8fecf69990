//! `kiln files ls|put|get|mkdir|rm|mv|du`: the user's space from a terminal.
//! Folders are copied file by file, so large trees stream like single files;
//! `put` and `get` end with one line saying what they copied.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use kiln_server::api::files::Listing;
use kiln_server::spaces::{DatasetView, Usage};

use crate::client::{enc, Client};
use crate::progress::{self, Progress};

/// `/files/a/b` with every segment encoded.
fn files_path(remote: &str) -> String {
    let segs: Vec<String> = remote
        .split('/')
        .filter(|s| !s.is_empty())
        .map(enc)
        .collect();
    format!("/files/{}", segs.join("/"))
}

fn join(remote: &str, name: &str) -> String {
    format!("{}/{name}", remote.trim_end_matches('/'))
}

pub fn list(path: &str, json: bool) -> Result<ExitCode> {
    let c = Client::from_env()?;
    let listing: Listing = c.json("GET", &files_path(path), None).or_else(|e| {
        // A file answers with its bytes, not a listing.
        if e.to_string().contains("not what this kiln expects") {
            bail!("{path} is a file; use kiln files get")
        } else {
            Err(e)
        }
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&listing)?);
        return Ok(ExitCode::SUCCESS);
    }
    for e in &listing.entries {
        let name = if e.kind == "dir" {
            format!("{}/", e.name)
        } else {
            e.name.clone()
        };
        println!(
            "{:>12}  {name}",
            if e.kind == "dir" {
                "-".into()
            } else {
                e.size.to_string()
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Uploads a file or a folder and says what was copied; a progress bar
/// on stderr while a big upload runs at a terminal.
pub fn put(local: &Path, remote: &str) -> Result<ExitCode> {
    let c = Client::from_env()?;
    let meta =
        std::fs::metadata(local).with_context(|| format!("cannot read {}", local.display()))?;
    if !meta.is_dir() {
        let mut progress = Progress::new("uploading", meta.len());
        put_one(&c, local, remote, &mut progress)?;
        let done = progress.done();
        drop(progress);
        println!(
            "uploaded {} ({}) to {remote}",
            local.display(),
            progress::size(done)
        );
        return Ok(ExitCode::SUCCESS);
    }
    // The whole tree first, so the bar knows how far there is to go.
    let mut plan = Plan::default();
    plan_tree(local, remote, &mut plan)?;
    let mut progress = Progress::new("uploading", plan.bytes);
    for folder in &plan.folders {
        c.ok(
            "POST",
            &format!("{}?op=mkdir", files_path(folder)),
            Some(Vec::new()),
        )?;
    }
    for (l, r) in &plan.files {
        put_one(&c, l, r, &mut progress)?;
    }
    let done = progress.done();
    drop(progress);
    println!(
        "uploaded {} ({}) to {remote}",
        progress::files(plan.files.len() as u64),
        progress::size(done)
    );
    Ok(ExitCode::SUCCESS)
}

/// A local folder to upload: its folders (parents first, so empty ones
/// come too) and its files, with their remote paths.
#[derive(Default)]
struct Plan {
    folders: Vec<String>,
    files: Vec<(PathBuf, String)>,
    bytes: u64,
}

fn plan_tree(local: &Path, remote: &str, plan: &mut Plan) -> Result<()> {
    plan.folders.push(remote.to_owned());
    let entries =
        std::fs::read_dir(local).with_context(|| format!("cannot read {}", local.display()))?;
    for e in entries {
        let e = e.with_context(|| format!("cannot read {}", local.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let kind = e
            .file_type()
            .with_context(|| format!("cannot read {}", path.display()))?;
        if kind.is_dir() {
            plan_tree(&path, &join(remote, &name), plan)?;
        } else if kind.is_file() {
            let meta = e
                .metadata()
                .with_context(|| format!("cannot read {}", path.display()))?;
            plan.bytes += meta.len();
            plan.files.push((path, join(remote, &name)));
        } else {
            eprintln!("kiln: skipping {} (not a file or folder)", path.display());
        }
    }
    Ok(())
}

fn put_one(c: &Client, local: &Path, remote: &str, progress: &mut Progress) -> Result<()> {
    let mut f =
        std::fs::File::open(local).with_context(|| format!("cannot read {}", local.display()))?;
    let len = f
        .metadata()
        .with_context(|| format!("cannot read {}", local.display()))?
        .len();
    c.put_reader(&files_path(remote), &mut progress.reader(&mut f), len)?;
    Ok(())
}

/// Downloads a file or a folder and says what was copied; a progress bar
/// on stderr while a big download runs at a terminal.
pub fn get(remote: &str, local: &Path) -> Result<ExitCode> {
    let c = Client::from_env()?;
    // A folder answers with its listing (JSON); a file with its bytes,
    // which go straight to disk.
    let first = c.download(&files_path(remote))?;
    if !first.kind.starts_with("application/json") {
        let target = if local.is_dir() {
            local.join(remote.rsplit('/').next().unwrap_or("file"))
        } else {
            local.to_owned()
        };
        let mut progress = Progress::new("downloading", first.len.unwrap_or(0));
        save(first.body, &target, &mut progress)?;
        let done = progress.done();
        drop(progress);
        println!(
            "downloaded {remote} ({}) to {}",
            progress::size(done),
            target.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let listing: Listing = serde_json::from_reader(first.body).context("a folder listing")?;
    let mut files = Vec::new();
    let mut total = 0;
    plan_remote(&c, remote, local, listing, &mut files, &mut total)?;
    let mut progress = Progress::new("downloading", total);
    for (r, l) in &files {
        save(c.download(&files_path(r))?.body, l, &mut progress)?;
    }
    let done = progress.done();
    drop(progress);
    println!(
        "downloaded {} ({}) from {remote} to {}",
        progress::files(files.len() as u64),
        progress::size(done),
        local.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Makes the local folders of a remote one and lists the files to fetch
/// into them, adding up their sizes for the bar.
fn plan_remote(
    c: &Client,
    remote: &str,
    local: &Path,
    listing: Listing,
    files: &mut Vec<(String, PathBuf)>,
    total: &mut u64,
) -> Result<()> {
    std::fs::create_dir_all(local).with_context(|| format!("cannot create {}", local.display()))?;
    for e in listing.entries {
        let (r, l) = (join(remote, &e.name), local.join(&e.name));
        match e.kind.as_str() {
            "dir" => {
                let sub: Listing = c.json("GET", &files_path(&r), None)?;
                plan_remote(c, &r, &l, sub, files, total)?;
            }
            "file" => {
                *total += e.size;
                files.push((r, l));
            }
            _ => eprintln!("kiln: skipping {r} ({})", e.kind),
        }
    }
    Ok(())
}

fn save(body: impl Read, target: &Path, progress: &mut Progress) -> Result<()> {
    let mut out = std::fs::File::create(target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    std::io::copy(&mut progress.reader(body), &mut out)
        .with_context(|| format!("cannot write {}", target.display()))?;
    Ok(())
}

pub fn mkdir(path: &str) -> Result<ExitCode> {
    Client::from_env()?.ok(
        "POST",
        &format!("{}?op=mkdir", files_path(path)),
        Some(Vec::new()),
    )?;
    Ok(ExitCode::SUCCESS)
}

pub fn remove(path: &str, recursive: bool) -> Result<ExitCode> {
    let q = if recursive { "?recursive=true" } else { "" };
    Client::from_env()?.ok("DELETE", &format!("{}{q}", files_path(path)), None)?;
    Ok(ExitCode::SUCCESS)
}

pub fn rename(from: &str, to: &str) -> Result<ExitCode> {
    Client::from_env()?.ok(
        "POST",
        &format!("{}?op=move&to={}", files_path(from), enc(to)),
        Some(Vec::new()),
    )?;
    Ok(ExitCode::SUCCESS)
}

pub fn usage(json: bool) -> Result<ExitCode> {
    let u: Usage = Client::from_env()?.json("GET", "/space", None)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&u)?);
    } else {
        match u.quota_bytes {
            Some(q) => println!("{} bytes used of {q}", u.used_bytes),
            None => println!("{} bytes used (no quota)", u.used_bytes),
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn dataset_add(name: &str, space_folder: &str) -> Result<ExitCode> {
    let body = serde_json::to_vec(&serde_json::json!({ "name": name, "fromSpace": space_folder }))?;
    Client::from_env()?.ok("POST", "/datasets", Some(body))?;
    println!("dataset {name}: jobs mount it with `mounts: [dataset:{name}]` (at /mnt/{name})");
    Ok(ExitCode::SUCCESS)
}

pub fn dataset_list(json: bool) -> Result<ExitCode> {
    let list: Vec<DatasetView> = Client::from_env()?.json("GET", "/datasets", None)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        for d in list {
            println!("{:<24} {}", d.name, d.default_target);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn dataset_remove(name: &str) -> Result<ExitCode> {
    Client::from_env()?.ok("DELETE", &format!("/datasets/{}", enc(name)), None)?;
    Ok(ExitCode::SUCCESS)
}
