//! Response shapes several resources share: JSON with the run's locations, and paginated lists.

use actix_web::http::header;
use actix_web::HttpResponse;
use serde_json::Value;

/// 200 JSON with `Content-Location` (and `Location` when given), as run-creating endpoints send.
pub fn json_with_location(
    body: &impl serde::Serialize,
    content_location: String,
    location: Option<String>,
) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    response.insert_header((header::CONTENT_LOCATION, content_location));
    if let Some(location) = location {
        response.insert_header((header::LOCATION, location));
    }
    response.json(body)
}

/// 200 JSON array with `X-Pagination-Total` and, when another page exists, `X-Pagination-Next`.
pub fn paginated(items: Vec<Value>, total: i64, offset: i64) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    response.insert_header(("X-Pagination-Total", total.to_string()));
    let next = offset + items.len() as i64;
    if next < total {
        response.insert_header(("X-Pagination-Next", next.to_string()));
    }
    response.json(items)
}
