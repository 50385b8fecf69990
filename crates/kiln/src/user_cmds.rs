//! `kiln user add|ls|passwd|token|revoke`.

use std::io::{BufRead, IsTerminal, Write};
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

/// The password: at a terminal, asked for twice without echo (as `passwd`
/// does, so it is neither shown nor mistyped); otherwise one line of
/// standard input, so scripts can pipe it in. `what` names the command.
fn read_password(what: &str) -> Result<String> {
    if std::io::stdin().is_terminal() {
        let first = ask_hidden("New password: ")?;
        if first.is_empty() {
            bail!("{what}: no password typed; nothing changed");
        }
        if ask_hidden("Repeat: ")? != first {
            bail!("{what}: the two passwords differ; nothing changed");
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let p = line.trim_end_matches(['\n', '\r']).to_owned();
    if p.is_empty() {
        bail!("{what}: standard input held no password");
    }
    Ok(p)
}

/// Puts the terminal's settings back when dropped, also on an error.
struct RestoreTerminal(libc::termios);

impl Drop for RestoreTerminal {
    fn drop(&mut self) {
        // SAFETY: tcsetattr reads a termios we own; fd 0 stays open.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.0);
        }
    }
}

/// Prints `prompt` on stderr and reads one line from the terminal on stdin
/// with echo off (the Enter still moves to the next line).
pub(crate) fn ask_hidden(prompt: &str) -> Result<String> {
    // SAFETY: an all-zero termios is a valid value for tcgetattr to fill.
    let mut term: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd 0 is open (a terminal, checked by the caller); `term` is ours.
    if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut term) } != 0 {
        bail!(
            "cannot read the terminal's settings: {}",
            std::io::Error::last_os_error()
        );
    }
    let restore = RestoreTerminal(term);
    term.c_lflag &= !libc::ECHO;
    term.c_lflag |= libc::ECHONL;
    // SAFETY: as above; TCSAFLUSH drops anything typed before the prompt.
    if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, &term) } != 0 {
        bail!(
            "cannot turn off the terminal's echo: {}",
            std::io::Error::last_os_error()
        );
    }
    // The prompt only once echo is off, so nothing typed after it shows.
    let mut err = std::io::stderr();
    err.write_all(prompt.as_bytes())?;
    err.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    drop(restore);
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

pub fn add(
    name: &str,
    password_stdin: bool,
    admin: bool,
    unix_user: Option<String>,
    queues: Vec<String>,
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
        "queues": queues,
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
        "revoked {} of {name} (API tokens and web sign-ins)",
        kiln_spec::words::count(v["revoked"].as_u64().unwrap_or(0), "token")
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
