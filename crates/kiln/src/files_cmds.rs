//! `kiln files ls|put|get|mkdir|rm|mv|du`: the user's space from a terminal.
//! Folders are copied file by file, so large trees stream like single files.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use kiln_server::api::files::Listing;
use kiln_server::spaces::{DatasetView, Usage};

use crate::client::{enc, Client};

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

pub fn put(local: &Path, remote: &str) -> Result<ExitCode> {
    let c = Client::from_env()?;
    let meta =
        std::fs::metadata(local).with_context(|| format!("cannot read {}", local.display()))?;
    if meta.is_dir() {
        put_tree(&c, local, remote)?;
    } else {
        put_one(&c, local, remote)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn put_one(c: &Client, local: &Path, remote: &str) -> Result<()> {
    let f =
        std::fs::File::open(local).with_context(|| format!("cannot read {}", local.display()))?;
    c.put_file(&files_path(remote), f)?;
    Ok(())
}

fn put_tree(c: &Client, local: &Path, remote: &str) -> Result<()> {
    c.ok(
        "POST",
        &format!("{}?op=mkdir", files_path(remote)),
        Some(Vec::new()),
    )?;
    for e in std::fs::read_dir(local).with_context(|| format!("cannot read {}", local.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let kind = e.file_type()?;
        if kind.is_dir() {
            put_tree(c, &e.path(), &join(remote, &name))?;
        } else if kind.is_file() {
            put_one(c, &e.path(), &join(remote, &name))?;
        } else {
            eprintln!(
                "kiln: skipping {} (not a file or folder)",
                e.path().display()
            );
        }
    }
    Ok(())
}

pub fn get(remote: &str, local: &Path) -> Result<ExitCode> {
    let c = Client::from_env()?;
    get_any(&c, remote, local)?;
    Ok(ExitCode::SUCCESS)
}

fn get_any(c: &Client, remote: &str, local: &Path) -> Result<()> {
    // A folder answers with its listing (JSON); a file with its bytes,
    // which go straight to disk.
    let (kind, mut body) = c.get_reader(&files_path(remote))?;
    if kind.starts_with("application/json") {
        let listing: Listing = serde_json::from_reader(body).context("a folder listing")?;
        std::fs::create_dir_all(local)
            .with_context(|| format!("cannot create {}", local.display()))?;
        for e in listing.entries {
            let (r, l) = (join(remote, &e.name), local.join(&e.name));
            match e.kind.as_str() {
                "dir" | "file" => get_any(c, &r, &l)?,
                _ => eprintln!("kiln: skipping {r} ({})", e.kind),
            }
        }
        return Ok(());
    }
    let target = if local.is_dir() {
        local.join(remote.rsplit('/').next().unwrap_or("file"))
    } else {
        local.to_owned()
    };
    let mut out = std::fs::File::create(&target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    std::io::copy(&mut body, &mut out)
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
