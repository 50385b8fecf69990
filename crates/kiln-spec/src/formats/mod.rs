//! Input formats. [`parse`] looks at the content (never the file name), picks
//! the format, and turns it into a valid canonical [`JobSpec`] or reports every
//! problem with the path of its field.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Issue, SpecError};
use crate::model::{JobSpec, RestartPolicy};
use crate::validate::{validate, Field, Paths};
use reader::Reader;

pub mod kubeflow;
pub mod native;
pub mod openpai_v1;
pub mod openpai_v2;
pub(crate) mod reader;

/// Largest spec accepted. Real specs are a few KiB, even with an inline
/// script. Building the tree of a hostile document costs up to ~0.5 s per MiB
/// (half a million tiny nested lists), so the bound is kept well below that.
pub const MAX_SPEC_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// kiln's own YAML/JSON.
    Kiln,
    /// OpenPAI job protocol v1 (JSON with `jobName` and a `taskRoles` list).
    OpenpaiV1,
    /// OpenPAI job protocol v2 (YAML with `protocolVersion: 2`).
    OpenpaiV2,
    /// Kubeflow `PyTorchJob` (kubeflow.org/v1).
    KubeflowPytorchjob,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Kiln => "kiln",
            Format::OpenpaiV1 => "openpai-v1",
            Format::OpenpaiV2 => "openpai-v2",
            Format::KubeflowPytorchjob => "kubeflow-pytorchjob",
        }
    }

    /// The format [`Format::as_str`] names (as the store keeps it).
    pub fn from_name(name: &str) -> Option<Format> {
        [
            Format::Kiln,
            Format::OpenpaiV1,
            Format::OpenpaiV2,
            Format::KubeflowPytorchjob,
        ]
        .into_iter()
        .find(|f| f.as_str() == name)
    }

    /// Where a job-level field (one outside any role, e.g. [`Field::Queue`])
    /// sits in this format, for errors found after parsing, such as a queue
    /// the user may not use. Role fields need the document's roles; ask the
    /// parser for those.
    pub fn job_field_path(self, f: Field<'_>) -> String {
        let paths: Box<dyn Paths> = match self {
            Format::Kiln => Box::new(native::NativePaths { single: false }),
            Format::OpenpaiV1 => Box::new(openpai_v1::V1Paths),
            Format::OpenpaiV2 => Box::new(openpai_v2::V2Paths::default()),
            Format::KubeflowPytorchjob => Box::new(kubeflow::KubeflowPaths::default()),
        };
        paths.path(f)
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job that passed every rule, with what kiln had to say about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Parsed {
    pub job: JobSpec,
    pub format: Format,
    /// Fields kiln ignored or could not honour exactly, each named.
    pub warnings: Vec<Issue>,
}

/// Parses a job in any supported format.
pub fn parse(input: &[u8]) -> Result<Parsed, SpecError> {
    parse_as(input, false)
}

/// Parses a job kiln stored earlier: names that rules added since then
/// refuse (a job name with `~`) still load, so an upgrade never fails a
/// job that was accepted.
pub fn parse_stored(input: &[u8]) -> Result<Parsed, SpecError> {
    parse_as(input, true)
}

fn parse_as(input: &[u8], stored: bool) -> Result<Parsed, SpecError> {
    let doc = load(input)?;
    let Value::Object(doc) = &doc else {
        return Err(SpecError::Invalid {
            issues: vec![Issue::new(
                "",
                format!(
                    "a job spec must be a mapping of fields, got {}",
                    reader::type_name(&doc)
                ),
            )],
        });
    };
    let format = detect(doc);
    let mut r = Reader::default();
    let (job, paths): (JobSpec, Box<dyn Paths>) = match format {
        Format::Kiln => native::read(doc, &mut r),
        Format::OpenpaiV1 => openpai_v1::read(doc, &mut r),
        Format::OpenpaiV2 => openpai_v2::read(doc, &mut r),
        Format::KubeflowPytorchjob => kubeflow::read(doc, &mut r),
    };
    let skip = r.failed_paths();
    let mut issues = r.errors;
    let mut warnings = r.warnings;
    // A document kiln could not make sense of as a whole gets that one error,
    // not a rule-by-rule list about placeholders.
    if !skip.contains("") {
        let (errors, more_warnings) = validate(&job, paths.as_ref(), &skip, stored);
        issues.extend(errors);
        warnings.extend(more_warnings);
    }
    let max = crate::validate::limits::MAX_ISSUES;
    if issues.len() > max {
        let more = issues.len() - max;
        issues.truncate(max);
        issues.push(Issue::new("", format!("{more} more problems not shown")));
    }
    if issues.is_empty() {
        Ok(Parsed {
            job,
            format,
            warnings,
        })
    } else {
        Err(SpecError::Invalid { issues })
    }
}

/// Bytes to a JSON/YAML tree: size, encoding and syntax checks.
fn load(input: &[u8]) -> Result<Value, SpecError> {
    if input.len() > MAX_SPEC_BYTES {
        return Err(SpecError::TooLarge {
            size: input.len(),
            max: MAX_SPEC_BYTES,
        });
    }
    let text = std::str::from_utf8(input).map_err(|e| SpecError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(SpecError::Empty);
    }
    // A body that opens with a bracket was written as JSON (a YAML job is a
    // block mapping, and no job is a list): its errors are JSON's, and
    // serde_json's recursion limit turns a deep `[[[[...` into one of them
    // rather than a YAML message about a format the user did not write.
    if trimmed.starts_with(['{', '[']) {
        serde_json::from_str(text).map_err(|e| SpecError::Syntax {
            format: "JSON",
            line: e.line(),
            column: e.column(),
            message: strip_position(&e.to_string()),
        })
    } else {
        check_flow_depth(text)?;
        serde_norway::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            SpecError::Syntax {
                format: "YAML",
                line,
                column,
                message: strip_position(&e.to_string()),
            }
        })
    }
}

/// Deepest bracket nesting a YAML spec may have; real specs stay under 10.
const MAX_FLOW_DEPTH: usize = 32;

/// libyaml's scanner costs time proportional to nesting depth for every token,
/// so 200 KB of `[[[[...` takes it minutes before serde's recursion limit is
/// ever reached. Counting brackets first keeps that linear. Brackets inside
/// quotes or comments are counted too; that only makes the check stricter,
/// never lets a deep document through.
fn check_flow_depth(text: &str) -> Result<(), SpecError> {
    let mut depth = 0usize;
    for (n, line) in text.lines().enumerate() {
        for (col, c) in line.char_indices() {
            match c {
                '[' | '{' => depth += 1,
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => continue,
            }
            if depth > MAX_FLOW_DEPTH {
                return Err(SpecError::Syntax {
                    format: "YAML",
                    line: n + 1,
                    column: col + 1,
                    message: format!("brackets nested more than {MAX_FLOW_DEPTH} deep"),
                });
            }
        }
    }
    Ok(())
}

/// serde's messages carry " at line L column C"; the position is kept in its
/// own fields, so drop it from the text.
fn strip_position(msg: &str) -> String {
    let Some(i) = msg.find(" at line ") else {
        return msg.to_owned();
    };
    let rest = &msg[i + " at line ".len()..];
    let skip = rest
        .find(|c: char| {
            !(c.is_ascii_digit() || c == ' ' || c.is_ascii_lowercase() && "column".contains(c))
        })
        .unwrap_or(rest.len());
    format!("{}{}", &msg[..i], &rest[skip..])
}

fn detect(doc: &Map<String, Value>) -> Format {
    let api = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if api.starts_with("kubeflow.org/")
        || doc.get("kind").and_then(Value::as_str) == Some("PyTorchJob")
    {
        Format::KubeflowPytorchjob
    } else if doc.contains_key("protocolVersion") {
        Format::OpenpaiV2
    } else if doc.contains_key("jobName") || doc.get("taskRoles").is_some_and(Value::is_array) {
        Format::OpenpaiV1
    } else {
        Format::Kiln
    }
}

/// Stands in for a list item that was not an object, so the items after it
/// keep their indices (and their own errors). Its path has failed already,
/// so validation passes over it.
/// `codeDir`, `dataDir` or `outputDir`, as a folder of the user's space.
pub(crate) fn read_space_dir(
    doc: &Map<String, Value>,
    key: &str,
    job_name: &str,
    r: &mut Reader,
) -> Option<String> {
    let raw = r.opt_string(doc, key, "")?;
    match crate::dirs::space_dir(&raw, job_name) {
        Ok(p) => Some(p),
        Err(e) => {
            r.error(key, e);
            None
        }
    }
}

pub(crate) fn placeholder_role() -> crate::model::TaskRole {
    crate::model::TaskRole {
        pids: None,
        name: String::new(),
        replicas: 1,
        cpus: 1,
        memory_mb: crate::validate::limits::MIN_MEMORY_MB,
        shm_mb: crate::model::DEFAULT_SHM_MB,
        gpus: 0,
        gpu_type: None,
        image: None,
        ports: Vec::new(),
        command: String::new(),
        min_failed: Some(1),
        min_succeeded: None,
        env: Default::default(),
        restart_policy: RestartPolicy::Never,
    }
}

/// How a format spells its port list: OpenPAI v1 says `portList` with
/// required `beginAt` and `portNumber`; kiln says `ports` with `count`, both
/// optional (0 = ports chosen by kiln, 1 port).
pub(crate) struct PortKeys {
    pub list: &'static str,
    pub count: &'static str,
    pub required: bool,
}

/// Reads a role's port list. A non-object entry keeps its index (with a
/// placeholder) so the entries after it are still checked.
pub(crate) fn read_ports(
    m: &Map<String, Value>,
    path: &str,
    keys: &PortKeys,
    r: &mut Reader,
) -> Vec<crate::model::PortSpec> {
    use crate::validate::limits;
    let Some(list) = r.opt_list(m, keys.list, path, limits::MAX_PORT_LABELS) else {
        return Vec::new();
    };
    let lp = reader::field(path, keys.list);
    let mut out = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let ip = reader::index(&lp, i);
        let Some(pm) = r.object(item, &ip) else {
            out.push(crate::model::PortSpec {
                label: String::new(),
                begin_at: 0,
                count: 0,
            });
            continue;
        };
        r.unknown_keys(pm, &ip, &["label", "beginAt", keys.count]);
        let (begin_at, count) = if keys.required {
            (
                r.req_uint(pm, "beginAt", &ip, 65_535).unwrap_or(0),
                r.req_uint(pm, keys.count, &ip, limits::MAX_PORTS)
                    .unwrap_or(0),
            )
        } else {
            (
                r.opt_uint(pm, "beginAt", &ip, 65_535).unwrap_or(0),
                r.opt_uint(pm, keys.count, &ip, limits::MAX_PORTS)
                    .unwrap_or(1),
            )
        };
        out.push(crate::model::PortSpec {
            label: r.req_string(pm, "label", &ip).unwrap_or_default(),
            begin_at: begin_at as u16,
            count: count as u16,
        });
    }
    out
}

/// Restart policies as Kubernetes spells them.
pub(crate) fn restart_policy(text: &str, path: &str, r: &mut Reader) -> RestartPolicy {
    match text {
        "Never" => RestartPolicy::Never,
        "OnFailure" => RestartPolicy::OnFailure,
        "ExitCode" => RestartPolicy::ExitCode,
        "Always" => {
            r.warn(
                path,
                "Always would restart tasks that succeeded; kiln restarts only failed tasks (OnFailure)",
            );
            RestartPolicy::OnFailure
        }
        other => {
            r.error(
                path,
                format!(
                    "must be Never, OnFailure or ExitCode, got {}",
                    crate::ids::quoted(other)
                ),
            );
            RestartPolicy::Never
        }
    }
}
