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
    /// The canonical job in kiln's own YAML (converts any format to kiln's).
    Yaml,
    /// The job as OpenPAI v1 JSON, where it fits that format.
    OpenpaiV1,
}

#[derive(Subcommand)]
enum Command {
    /// Check a job spec in any supported format; exit 0 when valid.
    Validate {
        /// Spec file, or - for standard input.
        file: String,
    },
    /// Internal: supervise one task (started by the local engine).
    #[command(name = "__supervise", hide = true)]
    Supervise {
        /// The task's run folder, holding launch.json.
        dir: std::path::PathBuf,
    },
    /// Show the canonical job and each task's environment under an example
    /// placement; `-o yaml` / `-o openpai-v1` print the job converted instead.
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
        Command::Supervise { dir } => {
            let dir = kiln_engine::local::TaskDir::new(dir);
            kiln_engine::local::supervise(&dir)
                .map(|()| ExitCode::SUCCESS)
                .map_err(anyhow::Error::from)
        }
        Command::Validate { file } => spec_cmds::validate(&file),
        Command::Render { file, output, user } => match output {
            Output::Text => spec_cmds::render(&file, false, user.as_deref()),
            Output::Json => spec_cmds::render(&file, true, user.as_deref()),
            Output::Yaml => spec_cmds::export(&file, spec_cmds::Export::KilnYaml),
            Output::OpenpaiV1 => spec_cmds::export(&file, spec_cmds::Export::OpenpaiV1),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kiln: {e:#}");
            ExitCode::from(2)
        }
    }
}
