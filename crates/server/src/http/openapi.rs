//! `GET /api/openapi.json`: the OpenAPI 3.1 document of the whole HTTP API
//! (`crates/server/openapi.json`, embedded in the binary).
//!
//! The document is written by hand; the test below holds it to the router:
//! its paths and methods must be exactly [`super::routes`], the table the
//! router is built from.

use axum::http::header;
use axum::response::IntoResponse;

/// The document, as served.
pub const DOCUMENT: &str = include_str!("../../openapi.json");

pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

/// The (path, METHOD) pairs the document describes, sorted.
pub fn documented_routes(document: &serde_json::Value) -> Vec<(String, String)> {
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let mut routes: Vec<(String, String)> = document
        .get("paths")
        .and_then(|p| p.as_object())
        .into_iter()
        .flatten()
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flatten()
                .filter(|(key, _)| METHODS.contains(&key.as_str()))
                .map(|(method, _)| (path.clone(), method.to_ascii_uppercase()))
        })
        .collect();
    routes.sort();
    routes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router_routes() -> Vec<(String, String)> {
        let mut routes: Vec<(String, String)> = super::super::routes()
            .into_iter()
            .flat_map(|(path, methods)| {
                methods
                    .iter()
                    .map(move |m| (path.to_string(), m.to_string()))
            })
            .collect();
        routes.sort();
        routes
    }

    #[test]
    fn the_document_describes_exactly_the_routes_of_the_router() {
        let document: serde_json::Value = serde_json::from_str(DOCUMENT).expect("valid JSON");
        assert_eq!(document["openapi"], "3.1.0");
        let documented = documented_routes(&document);
        let routed = router_routes();
        let undocumented: Vec<_> = routed.iter().filter(|r| !documented.contains(r)).collect();
        let unrouted: Vec<_> = documented.iter().filter(|r| !routed.contains(r)).collect();
        assert!(
            undocumented.is_empty() && unrouted.is_empty(),
            "routes missing from openapi.json: {undocumented:?}; \
             documented but not routed: {unrouted:?}"
        );
    }

    #[test]
    fn every_reference_resolves_and_every_operation_has_an_id() {
        let document: serde_json::Value = serde_json::from_str(DOCUMENT).expect("valid JSON");
        let text = DOCUMENT;
        for piece in text.split("\"$ref\": \"#/components/schemas/").skip(1) {
            let name = piece.split('"').next().unwrap_or_default();
            assert!(
                document["components"]["schemas"].get(name).is_some(),
                "unresolved $ref {name}"
            );
        }
        let mut ids = Vec::new();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                let id = op["operationId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
                assert!(!ids.contains(&id), "operationId {id} twice");
                ids.push(id);
                for security in op["security"].as_array().expect("security") {
                    for scheme in security.as_object().expect("requirement").keys() {
                        assert!(
                            document["components"]["securitySchemes"]
                                .get(scheme)
                                .is_some(),
                            "unknown security scheme {scheme}"
                        );
                    }
                }
            }
        }
    }
}
