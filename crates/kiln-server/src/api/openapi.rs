//! The OpenAPI document, generated from the handlers' annotations so it
//! cannot drift from the code; served at `/api/v1/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::problem::{FieldError, Problem};
use super::users::{Login, NewUser, TokenView, UserView};
use super::views::{AttemptView, EventView, JobList, JobView, TaskView};

#[derive(OpenApi)]
#[openapi(
    info(title = "kiln", description = "GPU training jobs: submit, queue, place, run. Errors are application/problem+json with an `errors` array naming every invalid field."),
    paths(
        super::jobs::submit,
        super::jobs::list,
        super::jobs::show,
        super::jobs::spec,
        super::jobs::events,
        super::metrics::series,
        super::tensorboard::start,
        super::tensorboard::status,
        super::tensorboard::stop,
        super::jobs::stop,
        super::jobs::clone,
        super::jobs::patch,
        super::jobs::delete,
        super::logs::logs,
        super::nodes,
        super::users::me,
        super::users::list,
        super::users::add,
        super::users::token,
        super::users::set_password,
        super::users::login,
        super::users::logout,
        super::users::revoke,
        super::queues::list,
        super::queues::show,
        super::queues::add,
        super::queues::patch,
        super::queues::remove,
        super::files::usage,
        super::files::get,
        super::files::put,
        super::files::post,
        super::files::delete,
        super::registries::list,
        super::registries::put,
        super::registries::remove,
        super::datasets::list,
        super::datasets::add,
        super::datasets::remove,
    ),
    components(schemas(super::metrics::JobSeriesView, super::tensorboard::BoardView, super::metrics::SeriesView, JobView, TaskView, AttemptView, EventView, JobList, Problem, FieldError, UserView, TokenView, NewUser, Login, super::users::NewPassword, super::users::Revoked,
        super::jobs::PatchBody, super::jobs::CloneBody, super::jobs::StateName, super::logs::StreamName,
        super::files::Listing, super::files::Written, crate::spaces::Entry, crate::spaces::Usage,
        crate::spaces::DatasetView, super::datasets::NewDataset,
        super::registries::NewCredential, super::registries::CredentialView,
        super::queues::QueueView, super::queues::QuotaView, super::queues::QuotaBody, super::queues::GpuQuotaView,
        super::queues::NewQueue, super::queues::QueuePatch, super::queues::RemovedQueue)),
    modifiers(&BearerAuth),
    security(("token" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "an API token: `kiln user token`, or the admin's in <data>/admin.token",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document as served: problem documents are declared with the media
/// type they are sent with, `application/problem+json`.
pub fn document_json() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    if let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) {
        for op in paths.values_mut().filter_map(|p| p.as_object_mut()) {
            for method in op.values_mut() {
                let Some(responses) = method.get_mut("responses").and_then(|r| r.as_object_mut())
                else {
                    continue;
                };
                for response in responses.values_mut() {
                    let Some(content) = response.get_mut("content").and_then(|c| c.as_object_mut())
                    else {
                        continue;
                    };
                    let is_problem = content
                        .get("application/json")
                        .and_then(|c| c.pointer("/schema/$ref"))
                        .and_then(|r| r.as_str())
                        .is_some_and(|r| r.ends_with("/Problem"));
                    if is_problem {
                        if let Some(c) = content.remove("application/json") {
                            content.insert("application/problem+json".into(), c);
                        }
                    }
                }
            }
        }
    }
    doc
}

pub async fn document() -> Json<serde_json::Value> {
    Json(document_json())
}
