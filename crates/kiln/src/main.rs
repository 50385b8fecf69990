//! `kiln`: the single binary. Today it holds the offline commands that work on
//! job specs; the server and the API client commands join it as they land.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod spec_cmds;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "GPU training jobs: submit, queue, place, run"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Human-readable text.
    Text,
    /// The same objects the API returns.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Check a job spec in any supported format; exit 0 when valid.
    Validate {
        /// Spec file, or - for standard input.
        file: String,
    },
    /// Show the canonical job and each task's environment under an example placement.
    Render {
        /// Spec file, or - for standard input.
        file: String,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Output,
        /// User the job is rendered for (default: the spec's user, else $USER).
        #[arg(long)]
        user: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate { file } => spec_cmds::validate(&file),
        Command::Render { file, output, user } => {
            spec_cmds::render(&file, output == Output::Json, user.as_deref())
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kiln: {e:#}");
            ExitCode::from(2)
        }
    }
}
