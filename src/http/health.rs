//! `GET /ok` and `GET /info`.

use actix_web::HttpResponse;
use serde_json::json;

/// Liveness.
pub async fn ok() -> HttpResponse {
    HttpResponse::Ok().json(json!({"ok": true}))
}

/// Server version and feature flags, in the official server's shape.
pub async fn info() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "server": "spindle",
        "langgraph_py_version": null,
        "flags": {"assistants": true, "crons": false, "langsmith": false},
        "host": {"kind": "self-hosted", "project_id": null, "host_revision_id": null, "revision_id": null, "tenant_id": null},
    }))
}
