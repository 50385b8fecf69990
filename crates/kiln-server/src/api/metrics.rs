//! Series of a job (`GET /api/v1/jobs/{id}/metrics`) and kiln's own
//! numbers for Prometheus (`GET /metrics`).

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_metrics::series::Point;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{P, Q};
use super::jobs::resolve;
use super::{blocking, AppState, Caller, Problem};
use crate::metrics::prom::RouteLabels;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(default, deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// Only this task (`tensorboard` for TensorBoard scalars).
    task: Option<String>,
    /// Only these metrics, comma-separated (`cpu,memory,loss`).
    name: Option<String>,
    /// From this time (ms since the epoch).
    from: Option<u64>,
    /// Up to this time (ms since the epoch).
    to: Option<u64>,
    /// Only the newest point of each series.
    last: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeriesView {
    task: String,
    name: String,
    /// `{tMs, value, step?}`; cpu is in cores, memory in bytes.
    #[schema(value_type = Vec<Object>)]
    points: Vec<Point>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobSeriesView {
    job: String,
    series: Vec<SeriesView>,
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}/metrics", tag = "jobs",
    params(("id" = String, Path, description = "user~name, or name for your own job"), SeriesQuery),
    responses((status = 200, body = JobSeriesView), (status = 401, body = Problem), (status = 404, body = Problem)))]
/// Resource use per task (cpu, memory) and training metrics, from printed
/// lines (per task) and TensorBoard files (task `tensorboard`).
pub async fn series(
    caller: Caller,
    State(state): State<AppState>,
    P(id): P<String>,
    Q(q): Q<SeriesQuery>,
) -> Result<Json<JobSeriesView>, Problem> {
    let job = resolve(&state, &caller, &id).await?;
    let hub = Arc::clone(&state.hub);
    let name = job.id.to_string();
    let all = blocking(move || Ok(hub.series(&job))).await?;
    let names: Option<Vec<&str>> = q.name.as_deref().map(|n| n.split(',').collect());
    let (from, to) = (q.from.unwrap_or(0), q.to.unwrap_or(u64::MAX));
    let mut out = Vec::new();
    for (task, metrics) in &all.tasks {
        if q.task.as_ref().is_some_and(|t| t != task) {
            continue;
        }
        for (metric, s) in metrics {
            if names
                .as_ref()
                .is_some_and(|n| !n.contains(&metric.as_str()))
            {
                continue;
            }
            let pts = s.range(from, to);
            let points = if q.last {
                pts.last().copied().into_iter().collect()
            } else {
                pts.to_vec()
            };
            out.push(SeriesView {
                task: task.clone(),
                name: metric.clone(),
                points,
            });
        }
    }
    Ok(Json(JobSeriesView {
        job: name,
        series: out,
    }))
}

/// OpenMetrics text (what prometheus-client writes); open like `/api/v1/health`, since scrapers
/// rarely carry tokens and these are counts, not anyone's data.
pub async fn prometheus(State(state): State<AppState>) -> Result<Response, Problem> {
    let store = Arc::clone(&state.store);
    let by_state = blocking(move || store.count_by_state()).await?;
    let body = state.prom.render(&by_state, &state.control.cluster());
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

/// Times every request by its route.
pub async fn time_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    let method = req.method().to_string();
    let t = std::time::Instant::now();
    let resp = next.run(req).await;
    state
        .prom
        .requests
        .get_or_create(&RouteLabels { method, route })
        .observe(t.elapsed().as_secs_f64());
    resp
}
