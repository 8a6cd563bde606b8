//! Connection management through the HTTP API.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends! {
    async fn a_created_connection_can_be_read_back_without_secrets(app) {
        let created = app
            .create_connection(Some("acme"), &auth_code_connection_body("graph"))
            .await;
        assert_eq!(created["connection_name"], "graph");
        assert_eq!(created["org_id"], "acme");
        assert_eq!(created["status"], "not_connected");
        assert_eq!(created["has_client_secret"], true);
        assert!(created.get("client_secret").is_none(), "secrets are write-only: {created}");
        assert_eq!(
            created["redirect_uri"],
            format!("{}/api/oauth/callback/graph", app.address)
        );

        let res = app.admin(Method::GET, "/api/oauth/connections/graph", Some("acme")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let read: Value = res.json().await.unwrap();
        assert_eq!(read, created);
    }

    async fn a_duplicate_name_in_one_org_is_a_conflict_and_changes_nothing(app) {
        let body = auth_code_connection_body("graph");
        app.create_connection(Some("acme"), &body).await;
        let before = app.db.snapshot().await;
        let res = app.admin(Method::POST, "/api/oauth/connections", Some("acme")).json(&body).send().await.unwrap();
        assert_eq!(res.status(), 409);
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["code"], "conflict");
        assert_eq!(app.db.snapshot().await, before);
        // The same name in another org is fine.
        app.create_connection(Some("other"), &body).await;
    }

    async fn a_credential_changing_edit_resets_the_connection(app) {
        app.create_connection(None, &auth_code_connection_body("svc")).await;
        let res = app
            .admin(Method::PATCH, "/api/oauth/connections/svc", None)
            .json(&json!({"test_url": "https://api.example.com/me"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["test_url"], "https://api.example.com/me");
        assert_eq!(body["status_message"], Value::Null, "a test_url edit keeps the grant");

        let res = app
            .admin(Method::PATCH, "/api/oauth/connections/svc", None)
            .json(&json!({"scopes": ["other"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["scopes"], json!(["other"]));
        assert_eq!(body["status"], "not_connected");
        assert_eq!(body["has_refresh_token"], false);
    }

    async fn deleting_a_connection_removes_it_and_keeps_its_audit_trail(app) {
        app.create_connection(None, &auth_code_connection_body("gone")).await;
        let res = app.admin(Method::DELETE, "/api/oauth/connections/gone", None).send().await.unwrap();
        assert_eq!(res.status(), 204);
        let res = app.admin(Method::GET, "/api/oauth/connections/gone", None).send().await.unwrap();
        assert_eq!(res.status(), 404);
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["code"], "not_found");
        let snapshot = app.db.snapshot().await;
        assert!(
            snapshot.iter().any(|r| r.starts_with("events:") && r.contains("deleted")),
            "a deleted event remains: {snapshot:#?}"
        );
    }
}
