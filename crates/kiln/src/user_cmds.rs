//! `kiln user add|ls|token`.

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::{bail, Result};
use kiln_server::api::users::{TokenView, UserView};

use crate::client::{enc, Client};
use crate::job_cmds::print_json;

fn print_token(t: &TokenView, json: bool) -> Result<ExitCode> {
    if json {
        return print_json(t);
    }
    println!("{}", t.token);
    Ok(ExitCode::SUCCESS)
}

/// One line of standard input, the password; `what` names the flag.
fn read_password(what: &str) -> Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let p = line.trim_end_matches(['\n', '\r']).to_owned();
    if p.is_empty() {
        bail!("{what}: standard input held no password");
    }
    Ok(p)
}

pub fn add(
    name: &str,
    password_stdin: bool,
    admin: bool,
    unix_user: Option<String>,
    json: bool,
) -> Result<ExitCode> {
    let c = Client::from_env()?;
    let password = if password_stdin {
        Some(read_password("--password-stdin")?)
    } else {
        None
    };
    let body = serde_json::to_vec(&serde_json::json!({
        "name": name,
        "password": password,
        "admin": admin,
        "unixUser": unix_user,
    }))?;
    let t: TokenView = c.json("POST", "/users", Some(body))?;
    print_token(&t, json)
}

pub fn list(json: bool) -> Result<ExitCode> {
    let c = Client::from_env()?;
    let users: Vec<UserView> = c.json("GET", "/users", None)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&users)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<24} ROLE", "USER");
    for u in users {
        println!(
            "{:<24} {}",
            u.name,
            if u.is_admin { "admin" } else { "user" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Sets a password, read from standard input, for yourself or (admin) NAME.
pub fn passwd(name: Option<String>) -> Result<ExitCode> {
    let c = Client::from_env()?;
    let name = match name {
        Some(n) => n,
        None => c.json::<UserView>("GET", "/me", None)?.name,
    };
    let password = read_password("kiln user passwd")?;
    let body = serde_json::to_vec(&serde_json::json!({ "password": password }))?;
    c.ok(
        "PUT",
        &format!("/users/{}/password", enc(&name)),
        Some(body),
    )?;
    eprintln!("password of {name} set");
    Ok(ExitCode::SUCCESS)
}

pub fn revoke(name: Option<String>, json: bool) -> Result<ExitCode> {
    let c = Client::from_env()?;
    let name = match name {
        Some(n) => n,
        None => c.json::<UserView>("GET", "/me", None)?.name,
    };
    let v: serde_json::Value = c.json("DELETE", &format!("/users/{}/tokens", enc(&name)), None)?;
    if json {
        return print_json(&v);
    }
    println!(
        "revoked {} token(s) and sign-in(s) of {name}",
        v["revoked"].as_u64().unwrap_or(0)
    );
    Ok(ExitCode::SUCCESS)
}

pub fn token(name: Option<String>, json: bool) -> Result<ExitCode> {
    let c = Client::from_env()?;
    let name = match name {
        Some(n) => n,
        None => c.json::<UserView>("GET", "/me", None)?.name,
    };
    let t: TokenView = c.json(
        "POST",
        &format!("/users/{}/tokens", enc(&name)),
        Some(Vec::new()),
    )?;
    print_token(&t, json)
}
