//! `/api/v1/jobs`: submit, list, show, stop, clone, change the max duration,
//! delete.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_spec::completion::JobState;
use kiln_spec::quantity::parse_duration_secs;
use kiln_spec::{JobId, JobSpec};
use kiln_store::{JobFilter, JobRecord, NewJob};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::extract::{Body, P, Q};
use super::views::{AttemptView, EventView, JobList, JobView, TaskView};
use super::{blocking, AppState, Caller, Problem};
use crate::control::DeadlineChange;
use crate::now_ms;

/// The job `id` names, if the caller may see it. Another user's job is
/// "not found", never "forbidden": its existence is not the caller's business.
pub(crate) async fn resolve(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<JobRecord, Problem> {
    let (user, name) = match id.split_once('~') {
        Some((u, n)) => (u, n),
        None => (caller.name.as_str(), id),
    };
    let not_found = || Problem::not_found(format!("job {user}~{name} not found"));
    if !caller.is_admin && user != caller.name {
        return Err(not_found());
    }
    let Ok(job_id) = JobId::new(user, name) else {
        return Err(not_found());
    };
    let store = Arc::clone(&state.store);
    blocking(move || store.job(&job_id))
        .await?
        .ok_or_else(not_found)
}

async fn detail(state: &AppState, job: &JobRecord, with_events: bool) -> Result<JobView, Problem> {
    let (key, attempt) = (job.key, job.attempt);
    let store = Arc::clone(&state.store);
    let (tasks, events, earlier) = blocking(move || {
        let tasks = store.tasks(key, attempt)?;
        let (events, earlier) = if with_events {
            let earlier = (0..attempt)
                .map(|a| store.tasks(key, a).map(|t| (a, t)))
                .collect::<Result<Vec<_>, _>>()?;
            (Some(store.events(key)?), earlier)
        } else {
            (None, Vec::new())
        };
        Ok((tasks, events, earlier))
    })
    .await?;
    let mut view = JobView::new(job, state.control.pending_reason(key), &tasks);
    view.events = events.map(|e| e.iter().map(EventView::from_record).collect());
    view.notices = state.hub.notices(key);
    view.attempts = earlier
        .into_iter()
        .map(|(attempt, tasks)| AttemptView {
            attempt,
            tasks: tasks.iter().map(TaskView::from_record).collect(),
        })
        .collect();
    Ok(view)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct SubmitQuery {
    /// Validate and render the environment; store nothing.
    #[serde(default)]
    dry_run: bool,
    /// With dryRun: false checks the spec alone, not whether a node
    /// could hold the job (the web UI's Import converts a file this way,
    /// then shows what does not fit on the form's fields). Default true.
    #[serde(default = "yes")]
    check_capacity: bool,
}

fn yes() -> bool {
    true
}

#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", params(SubmitQuery),
    request_body(content = String, description = "a job spec in any supported format (kiln YAML or JSON, OpenPAI v1 JSON, OpenPAI v2 YAML, Kubeflow PyTorchJob YAML), detected by content",
        content_type = "application/yaml"),
    responses((status = 201, description = "the job as stored, WAITING", body = JobView),
        (status = 200, description = "with dryRun: the canonical job and each task's environment"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 409, body = Problem), (status = 413, body = Problem),
        (status = 422, description = "every invalid field, with its path", body = Problem)))]
/// Submits a job.
pub async fn submit(
    caller: Caller,
    State(state): State<AppState>,
    Q(q): Q<SubmitQuery>,
    Body(body): Body,
) -> Result<Response, Problem> {
    let parsed = kiln_spec::parse(&body).map_err(|e| Problem::invalid_spec(&e))?;
    let mut spec = parsed.job;
    // The caller owns what they submit, whatever the spec says.
    spec.user = Some(caller.name.clone());
    let mut admission = crate::admission::admit(&spec, state.engine);
    admission
        .errors
        .extend(queue_refusal(&state, &caller, &spec, parsed.format).await?);
    // Only a dry run may skip it: nothing is stored that could never run.
    if admission.errors.is_empty() && (q.check_capacity || !q.dry_run) {
        admission.errors = fit(&state, &spec);
    }
    if admission.errors.is_empty() {
        super::sources::check(&state, &caller.name, &spec, &mut admission.errors).await?;
    }
    if !admission.errors.is_empty() {
        let e = kiln_spec::SpecError::Invalid {
            issues: admission.errors,
        };
        return Err(Problem::invalid_spec(&e));
    }
    let warnings: Vec<_> = parsed
        .warnings
        .iter()
        .chain(&admission.warnings)
        .map(|w| serde_json::json!({"path": w.path, "message": w.message}))
        .collect();
    if q.dry_run {
        let ctx = kiln_spec::env::example_context(&spec, &caller.name)
            .map_err(|e| Problem::invalid_spec(&e))?;
        let env = kiln_spec::env::render_env(&spec, &ctx).map_err(|e| Problem::invalid_spec(&e))?;
        return Ok(Json(serde_json::json!({
            "format": parsed.format.as_str(),
            "job": spec,
            "warnings": warnings,
            "tasks": env,
        }))
        .into_response());
    }
    let rec = store_new_job(&state, &caller.name, &spec, parsed.format.as_str()).await?;
    state.control.submitted(rec.key);
    let mut view = serde_json::to_value(JobView::new(&rec, None, &[]))
        .map_err(|e| Problem::internal(e.to_string()))?;
    if !warnings.is_empty() {
        view["warnings"] = serde_json::Value::Array(warnings);
    }
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Why `spec` may not go to its queue (none, or a queue the caller was
/// not granted), if it may not.
async fn queue_refusal(
    state: &AppState,
    caller: &Caller,
    spec: &JobSpec,
    format: kiln_spec::Format,
) -> Result<Option<kiln_spec::Issue>, Problem> {
    if spec
        .queue
        .as_deref()
        .is_none_or(|q| q == kiln_spec::model::DEFAULT_QUEUE)
    {
        return Ok(None);
    }
    let store = Arc::clone(&state.store);
    let queues = blocking(move || store.queues()).await?;
    Ok(crate::admission::admit_queue(
        spec,
        format,
        &caller.name,
        caller.is_admin,
        &queues,
    ))
}

/// What about `spec` no node of this cluster could ever hold.
fn fit(state: &AppState, spec: &JobSpec) -> Vec<kiln_spec::Issue> {
    let nodes: Vec<kiln_sched::Node> = state
        .control
        .cluster()
        .nodes
        .into_iter()
        .map(|n| n.node)
        .collect();
    crate::admission::admit_size(spec, &nodes, state.engine)
}

async fn store_new_job(
    state: &AppState,
    owner: &str,
    spec: &JobSpec,
    format: &str,
) -> Result<JobRecord, Problem> {
    // The rule for new names, stricter than the one stored ids still meet.
    kiln_spec::ids::check_job_name(&spec.name).map_err(|m| Problem::field("name", m))?;
    let id = JobId::new(owner, &spec.name).map_err(Problem::bad_request)?;
    let spec_json =
        kiln_spec::export::to_json(spec).map_err(|e| Problem::internal(e.to_string()))?;
    let new = NewJob {
        id: id.clone(),
        spec_json,
        format: format.to_owned(),
        queue: spec
            .queue
            .clone()
            .unwrap_or_else(|| kiln_spec::model::DEFAULT_QUEUE.to_owned()),
        priority: spec.priority,
        pending_reason: "queued".into(),
        submitted_at_ms: now_ms(),
    };
    let staged = super::sources::stage_code(state, owner, spec).await?;
    let store = Arc::clone(&state.store);
    let stored = blocking(move || store.submit(&new)).await;
    if let Some(st) = staged {
        super::sources::place_code(state, st, stored.as_ref().ok().map(|r| r.key)).await;
    }
    stored.map_err(|p| {
        if p.status == StatusCode::CONFLICT.as_u16() {
            Problem::conflict(format!(
                "job {id} already exists; pick another name or delete it first"
            ))
        } else {
            p
        }
    })
}

/// Job states, as the API names them.
#[derive(Debug, ToSchema)]
#[allow(clippy::upper_case_acronyms, dead_code)]
pub enum StateName {
    WAITING,
    RUNNING,
    STOPPING,
    SUCCEEDED,
    FAILED,
    STOPPED,
}

/// Most jobs one page holds.
const MAX_PAGE: u32 = 500;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this user's jobs (the admin; others always see only their own).
    user: Option<String>,
    /// Only jobs in this state.
    #[param(value_type = Option<StateName>)]
    state: Option<String>,
    /// Jobs whose name contains this (ASCII letters in any case).
    name: Option<String>,
    /// Page size, default 50.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next` of the previous page.
    before: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, body = JobList), (status = 400, body = Problem), (status = 401, body = Problem)))]
/// Jobs, newest first; a user sees their own, the admin everyone's.
pub async fn list(
    caller: Caller,
    State(state): State<AppState>,
    Q(q): Q<ListQuery>,
) -> Result<Json<JobList>, Problem> {
    let job_state = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(JobState::parse(&s.to_ascii_uppercase()).ok_or_else(|| {
            Problem::bad_request(format!(
                "unknown state '{s}': use WAITING, RUNNING, STOPPING, SUCCEEDED, FAILED or STOPPED"
            ))
        })?),
    };
    let user = if caller.is_admin {
        q.user.filter(|u| !u.is_empty())
    } else {
        Some(caller.name.clone())
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Problem::bad_request(format!(
            "limit: must be between 1 and {MAX_PAGE}, got {limit}"
        )));
    }
    let filter = JobFilter {
        user,
        state: job_state,
        name: q.name.filter(|n| !n.is_empty()),
        limit: limit + 1,
        before_key: q.before,
    };
    let store = Arc::clone(&state.store);
    let mut jobs = blocking(move || store.jobs(&filter)).await?;
    let next = if jobs.len() > limit as usize {
        jobs.truncate(limit as usize);
        jobs.last().map(|j| j.key)
    } else {
        None
    };
    let items = jobs
        .iter()
        .map(|j| JobView::new(j, state.control.pending_reason(j.key), &[]))
        .collect();
    Ok(Json(JobList { items, next }))
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "user~name, or name for your own job")),
    responses((status = 200, body = JobView), (status = 401, body = Problem), (status = 404, body = Problem)))]
/// A job with its tasks, pending reason and event history.
pub async fn show(
    caller: Caller,
    State(state): State<AppState>,
    P(id): P<String>,
) -> Result<Json<JobView>, Problem> {
    let job = resolve(&state, &caller, &id).await?;
    Ok(Json(detail(&state, &job, true).await?))
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}/spec", tag = "jobs", params(("id" = String, Path, description = "user~name, or name for your own job")),
    responses((status = 200, description = "the canonical job in kiln's JSON format"), (status = 401, body = Problem), (status = 404, body = Problem)))]
/// The job's spec, as kiln stores it.
pub async fn spec(
    caller: Caller,
    State(state): State<AppState>,
    P(id): P<String>,
) -> Result<Response, Problem> {
    let job = resolve(&state, &caller, &id).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], job.spec_json).into_response())
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}/events", tag = "jobs", params(("id" = String, Path, description = "user~name, or name for your own job")),
    responses((status = 200, body = Vec<EventView>), (status = 401, body = Problem), (status = 404, body = Problem)))]
/// The job's history: submitted, placed, started, exited, retried, stopped, ...
pub async fn events(
    caller: Caller,
    State(state): State<AppState>,
    P(id): P<String>,
) -> Result<Json<Vec<EventView>>, Problem> {
    let job = resolve(&state, &caller, &id).await?;
    let store = Arc::clone(&state.store);
    let key = job.key;
    let events = blocking(move || store.events(key)).await?;
    Ok(Json(events.iter().map(EventView::from_record).collect()))
}

#[utoipa::path(post, path = "/api/v1/jobs/{id}/stop", tag = "jobs", params(("id" = String, Path, description = "user~name, or name for your own job")),
    responses((status = 200, body = JobView), (status = 401, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
/// Stops a job: WAITING → STOPPED at once; RUNNING → STOPPING → STOPPED.
pub async fn stop(
    caller: Caller,
    State(state): State<AppState>,
    P(id): P<String>,
) -> Result<Json<JobView>, Problem> {
    let job = resolve(&state, &caller, &id).await?;
    let job = state.control.stop(job.key, &caller.name).await?;
    Ok(Json(detail(&state, &job, false).await?))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CloneBody {
    /// The copy's name; default: the first free `<name>-N`.
    name: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/jobs/{id}/clone", tag = "jobs", params(("id" = String, Path, description = "user~name, or name for your own job")),
    request_body(content = Option<CloneBody>, description = "optional; empty for a generated name"),
    responses((status = 201, body = JobView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
/// Submits a copy of a job under a new name.
pub async fn clone(
    caller: Caller,
    State(state): State<AppState>,
    P(id): P<String>,
    Body(body): Body,
) -> Result<Response, Problem> {
    let source = resolve(&state, &caller, &id).await?;
    let body: CloneBody = if body.iter().all(u8::is_ascii_whitespace) {
        CloneBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| Problem::bad_request(format!("body: expected {{\"name\": ...}}: {e}")))?
    };
    let mut spec = kiln_spec::parse_stored(source.spec_json.as_bytes())
        .map_err(|e| Problem::internal(format!("stored spec does not parse: {e}")))?
        .job;
    spec.user = Some(caller.name.clone());
    let name = match body.name {
        Some(n) => {
            kiln_spec::ids::check_job_name(&n).map_err(|m| Problem::field("name", m))?;
            n
        }
        None => free_clone_name(&state, &caller.name, source.id.name()).await?,
    };
    spec.name = name;
    // The queue may be gone, or no longer granted, since the original.
    let format = kiln_spec::Format::from_name(&source.format).unwrap_or(kiln_spec::Format::Kiln);
    if let Some(refused) = queue_refusal(&state, &caller, &spec, format).await? {
        let e = kiln_spec::SpecError::Invalid {
            issues: vec![refused],
        };
        return Err(Problem::invalid_spec(&e));
    }
    // The cluster may have shrunk since the original was submitted.
    let too_big = fit(&state, &spec);
    if !too_big.is_empty() {
        let e = kiln_spec::SpecError::Invalid { issues: too_big };
        return Err(Problem::invalid_spec(&e));
    }
    let rec = store_new_job(&state, &caller.name, &spec, &source.format).await?;
    state.control.submitted(rec.key);
    Ok((StatusCode::CREATED, Json(JobView::new(&rec, None, &[]))).into_response())
}

/// `name-2`, `name-3`, ...: the first that the user does not have yet.
async fn free_clone_name(state: &AppState, user: &str, name: &str) -> Result<String, Problem> {
    let base = match name.rsplit_once('-') {
        Some((b, n)) if n.parse::<u32>().is_ok() => b,
        _ => name,
    };
    for i in 2..10_000u32 {
        let candidate = format!("{base}-{i}");
        let Ok(id) = JobId::new(user, &candidate) else {
            break;
        };
        let store = Arc::clone(&state.store);
        if blocking(move || store.job(&id)).await?.is_none() {
            return Ok(candidate);
        }
    }
    Err(Problem::conflict(format!(
        "no free name for a clone of {name}; give one"
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchBody {
    /// Total max duration, from the attempt's start ("3h").
    max_duration: Option<String>,
    /// Added to the current max duration ("1h").
    extend_by: Option<String>,
}

#[utoipa::path(patch, path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "user~name, or name for your own job")), request_body = PatchBody,
    responses((status = 200, body = JobView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
/// Changes a running job's max duration (Crater's 设定工作时长).
pub async fn patch(
    caller: Caller,
    State(state): State<AppState>,
    P(id): P<String>,
    Body(body): Body,
) -> Result<Json<JobView>, Problem> {
    let job = resolve(&state, &caller, &id).await?;
    let body: PatchBody = serde_json::from_slice(&body).map_err(|e| {
        Problem::bad_request(format!(
            "body: expected {{\"maxDuration\": \"3h\"}} or {{\"extendBy\": \"1h\"}}: {e}"
        ))
    })?;
    let field =
        |path: &str, text: &str| parse_duration_secs(text).map_err(|m| Problem::field(path, m));
    let change = match (body.max_duration, body.extend_by) {
        (Some(t), None) => DeadlineChange::Total(field("maxDuration", &t)?),
        (None, Some(t)) => DeadlineChange::ExtendBy(field("extendBy", &t)?),
        _ => {
            return Err(Problem::bad_request(
                "give exactly one of maxDuration or extendBy",
            ))
        }
    };
    let job = state
        .control
        .change_deadline(job.key, &caller.name, change)
        .await?;
    Ok(Json(detail(&state, &job, false).await?))
}

#[utoipa::path(delete, path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "user~name, or name for your own job")),
    responses((status = 204, description = "deleted, with its logs"), (status = 401, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
/// Deletes a finished job with its logs.
pub async fn delete(
    caller: Caller,
    State(state): State<AppState>,
    P(id): P<String>,
) -> Result<StatusCode, Problem> {
    let job = resolve(&state, &caller, &id).await?;
    if !job.state.is_finished() {
        return Err(Problem::conflict(format!(
            "job {} is {}; stop it first, only finished jobs can be deleted",
            job.id,
            job.state.as_str()
        )));
    }
    let key = job.key;
    state.hub.forget(key);
    state.boards.forget(key).await;
    let store = Arc::clone(&state.store);
    let dir = state.layout.job(key);
    blocking(move || {
        store.delete_job(key)?;
        // Logs and outputs go with the job.
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %dir.display(), error = %e, "cannot remove a deleted job's folder");
            }
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
