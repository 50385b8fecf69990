//! The OpenAPI document, generated from the handlers' annotations so it
//! cannot drift from the code; served at `/api/v1/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::problem::{FieldError, Problem};
use super::users::{Login, NewUser, TokenView, UserView};
use super::views::{EventView, JobList, JobView, TaskView};

#[derive(OpenApi)]
#[openapi(
    info(title = "kiln", description = "GPU training jobs: submit, queue, place, run. Errors are application/problem+json with an `errors` array naming every invalid field."),
    paths(
        super::jobs::submit,
        super::jobs::list,
        super::jobs::show,
        super::jobs::spec,
        super::jobs::events,
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
        super::users::login,
    ),
    components(schemas(JobView, TaskView, EventView, JobList, Problem, FieldError, UserView, TokenView, NewUser, Login,
        super::jobs::PatchBody, super::jobs::CloneBody)),
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

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
