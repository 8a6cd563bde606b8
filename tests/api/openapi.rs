//! The committed OpenAPI document must match the code.

#[test]
fn the_committed_openapi_document_is_current() {
    let generated = oauth_broker::http::openapi::document();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    if std::env::var("UPDATE_OPENAPI").is_ok_and(|v| v == "1") {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json is stale: run `UPDATE_OPENAPI=1 cargo test --test api openapi` \
         (or `cargo run -- openapi > openapi/openapi.json`) and commit the result"
    );
}

#[actix_web::test]
async fn the_served_document_is_the_committed_one() {
    let generated: serde_json::Value =
        serde_json::from_str(&oauth_broker::http::openapi::document()).unwrap();
    assert_eq!(generated["openapi"], "3.1.0");
    for path in [
        "/api/oauth/connections",
        "/api/oauth/keys",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            generated["paths"].get(path).is_some(),
            "{path} is documented"
        );
    }
}
