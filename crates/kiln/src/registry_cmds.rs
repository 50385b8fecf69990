//! `kiln registry login|ls|logout`: the caller's credentials for private
//! container registries, used by their own tasks' pulls.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::{bail, Result};
use kiln_server::api::registries::CredentialView;

use crate::client::{enc, Client};

/// The secret: asked for without echo at a terminal, else one line of
/// standard input (`--password-stdin`, as `docker login` has it).
fn read_secret(registry: &str, from_stdin: bool) -> Result<String> {
    if !from_stdin && std::io::stdin().is_terminal() {
        let s = crate::user_cmds::ask_hidden(&format!("Password or token for {registry}: "))?;
        if s.is_empty() {
            bail!("registry login: no password typed; nothing stored");
        }
        return Ok(s);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let s = line.trim_end_matches(['\n', '\r']).to_owned();
    if s.is_empty() {
        bail!("registry login: standard input held no password");
    }
    Ok(s)
}

pub fn login(registry: &str, username: &str, from_stdin: bool) -> Result<ExitCode> {
    let secret = read_secret(registry, from_stdin)?;
    let body = serde_json::json!({"username": username, "password": secret});
    let view: CredentialView = Client::from_env()?.json(
        "PUT",
        &format!("/registries/{}", enc(registry)),
        Some(serde_json::to_vec(&body)?),
    )?;
    println!(
        "stored your credential for {} (user {}); your tasks pull its images with it",
        view.registry, view.username
    );
    Ok(ExitCode::SUCCESS)
}

pub fn list(json: bool) -> Result<ExitCode> {
    let list: Vec<CredentialView> = Client::from_env()?.json("GET", "/registries", None)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        for c in list {
            println!("{:<32} {}", c.registry, c.username);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn logout(registry: &str) -> Result<ExitCode> {
    Client::from_env()?.ok("DELETE", &format!("/registries/{}", enc(registry)), None)?;
    Ok(ExitCode::SUCCESS)
}
