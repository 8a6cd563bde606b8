//! `/api/oauth/workflows`: registering dependencies, and what deleting a connection
//! that workflows depend on does to them (refusal, or disabling and re-enabling).

use reqwest::Method;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use crate::helpers::*;
use crate::on_both_backends;

/// Sends `request`, asserts its status (showing the body when it differs) and returns
/// the body as JSON (`null` when empty).
async fn expect(request: reqwest::RequestBuilder, status: u16, what: &str) -> Value {
    let res = request.send().await.unwrap();
    let got = res.status().as_u16();
    let text = res.text().await.unwrap();
    assert_eq!(got, status, "{what}: {text}");
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"))
    }
}

/// Registers `workflow` as depending on `connection` in `org`, asserting 201.
async fn register(
    app: &TestApp,
    key: &str,
    org: Option<&str>,
    workflow: &str,
    connection: &str,
) -> Value {
    expect(
        app.with_key(
            key,
            Method::POST,
            &format!("/api/oauth/workflows/{workflow}/dependencies"),
            org,
        )
        .json(&json!({"connection_name": connection, "workflow_name": format!("{workflow} job")})),
        201,
        &format!("registering {workflow} on {connection} in {org:?}"),
    )
    .await
}

/// The connection names a workflow depends on in `org`.
async fn dependencies(app: &TestApp, org: Option<&str>, workflow: &str) -> Vec<String> {
    let body = expect(
        app.admin(
            Method::GET,
            &format!("/api/oauth/workflows/{workflow}/dependencies"),
            org,
        ),
        200,
        &format!("listing the dependencies of {workflow}"),
    )
    .await;
    assert_eq!(body["workflow_id"], workflow, "{body}");
    body["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["connection_name"].as_str().unwrap().to_owned())
        .collect()
}

/// The ids of the workflows disabled in `org`.
async fn disabled(app: &TestApp, org: Option<&str>) -> Vec<Value> {
    let body = expect(
        app.admin(Method::GET, "/api/oauth/workflows/disabled", org),
        200,
        "listing disabled workflows",
    )
    .await;
    body["workflows"].as_array().unwrap().clone()
}

fn ids(workflows: &[Value]) -> Vec<&str> {
    workflows
        .iter()
        .map(|w| w["workflow_id"].as_str().unwrap())
        .collect()
}

on_both_backends! {
    async fn dependencies_are_registered_listed_and_removed(app) {
        // Arrange: `graph` in acme, `shared` only in GLOBAL.
        app.create_connection(Some("acme"), &auth_code_connection_body("graph")).await;
        app.create_connection(None, &auth_code_connection_body("shared")).await;
        let key = app.create_key("acme-workflows", "workflow", "acme").await;

        // A workflow key may register, on its org's connection or a GLOBAL one.
        let created = register(&app, &key, Some("acme"), "wf-1", "graph").await;
        assert_eq!(
            created,
            json!({
                "connection_name": "graph",
                "org_id": "acme",
                "workflow_name": "wf-1 job",
                "registered_at": "2026-01-15T09:00:00Z",
                "last_accessed_at": null,
            })
        );
        register(&app, &key, Some("acme"), "wf-1", "shared").await;

        // Listing is for admins.
        assert_eq!(dependencies(&app, Some("acme"), "wf-1").await, ["graph", "shared"]);
        assert_refused(
            &app,
            "a workflow key listing dependencies",
            app.with_key(&key, Method::GET, "/api/oauth/workflows/wf-1/dependencies", Some("acme")),
            403,
            "forbidden",
            None,
        )
        .await;
        assert_eq!(dependencies(&app, Some("beta"), "wf-1").await, Vec::<String>::new(), "another org's workflow of the same id");

        // Removing one: 204, then it is gone.
        expect(app.admin(Method::DELETE, "/api/oauth/workflows/wf-1/dependencies/graph", Some("acme")), 204, "removing").await;
        assert_refused(
            &app,
            "removing a dependency twice",
            app.admin(Method::DELETE, "/api/oauth/workflows/wf-1/dependencies/graph", Some("acme")),
            404,
            "not_found",
            None,
        )
        .await;
        assert_eq!(dependencies(&app, Some("acme"), "wf-1").await, ["shared"]);

        // A connection neither acme nor GLOBAL has.
        assert_refused(
            &app,
            "registering on a connection that does not exist",
            app.with_key(&key, Method::POST, "/api/oauth/workflows/wf-1/dependencies", Some("acme"))
                .json(&json!({"connection_name": "nowhere"})),
            404,
            "not_found",
            None,
        )
        .await;
    }

    async fn deleting_a_connection_with_dependents_is_refused_or_disables_them(app) {
        // Arrange: two acme workflows depend on acme's `graph`.
        let server = MockServer::start().await;
        Mock::given(method("POST")).and(path("/token"))
            .respond_with(NumberedTokens::new("at", 3600))
            .mount(&server).await;
        let token_url = format!("{}/token", server.uri());
        app.create_connection(Some("acme"), &client_credentials_body("graph", &token_url)).await;
        let key = app.create_key("acme-workflows", "workflow", "acme").await;
        register(&app, &key, Some("acme"), "wf-2", "graph").await;
        register(&app, &key, Some("acme"), "wf-1", "graph").await;
        let as_wf1 = || {
            app.with_key(&key, Method::GET, "/api/oauth/credentials/graph", Some("acme"))
                .header("X-Workflow-Id", "wf-1")
        };
        expect(as_wf1(), 200, "wf-1 reading before the deletion").await;
        // The read is recorded off the request's path: let it land before comparing
        // the database around the refusal below.
        for _ in 0..50 {
            let recorded = app.db.query_texts("select count(*) from events where kind = 'credentials_read'").await;
            if recorded != vec![vec!["0".to_owned()]] {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }

        // Without confirmation: 409 naming them, nothing changes.
        let problem = assert_refused(
            &app,
            "deleting a connection two workflows depend on",
            app.admin(Method::DELETE, "/api/oauth/connections/graph", Some("acme")),
            409,
            "dependents_exist",
            None,
        )
        .await;
        assert_eq!(problem["dependent_workflows"], json!(["wf-1", "wf-2"]), "{problem}");

        // With confirmation: deleted, and both workflows disabled.
        expect(
            app.admin(Method::DELETE, "/api/oauth/connections/graph?confirm_disable_workflows=true", Some("acme")),
            204,
            "deleting with confirm_disable_workflows=true",
        )
        .await;
        let listed = disabled(&app, Some("acme")).await;
        let mut listed_ids = ids(&listed);
        listed_ids.sort();
        assert_eq!(listed_ids, ["wf-1", "wf-2"], "{listed:?}");
        for w in &listed {
            assert_eq!(w["org_id"], "acme", "{w}");
            assert_eq!(w["related_oauth_connection"], "graph", "{w}");
            assert_eq!(w["disabled_at"], "2026-01-15T09:00:00Z", "{w}");
            assert!(w["disabled_reason"].as_str().is_some_and(|r| r.contains("graph")), "{w}");
        }
        assert_eq!(disabled(&app, Some("beta")).await, Vec::<Value>::new(), "disabled only in acme");

        // A disabled workflow may not read, even once the connection is back.
        app.create_connection(Some("acme"), &client_credentials_body("graph", &token_url)).await;
        let problem = assert_refused(&app, "a disabled workflow reading", as_wf1(), 403, "forbidden", None).await;
        assert!(!problem.to_string().contains("at-"), "{problem}");

        // Enabled again, it reads.
        let enabled = expect(app.admin(Method::POST, "/api/oauth/workflows/wf-1/enable", Some("acme")), 200, "enabling wf-1").await;
        assert_eq!(enabled["workflow_id"], "wf-1", "{enabled}");
        let body = expect(as_wf1(), 200, "wf-1 reading once enabled").await;
        assert_eq!(body["access_token"], "at-2", "{body}");
        assert_eq!(ids(&disabled(&app, Some("acme")).await), ["wf-2"]);

        // Enabling what is not disabled.
        for (reason, workflow) in [("enabling wf-1 twice", "wf-1"), ("enabling a workflow never disabled", "wf-9")] {
            assert_refused(
                &app,
                reason,
                app.admin(Method::POST, &format!("/api/oauth/workflows/{workflow}/enable"), Some("acme")),
                404,
                "not_found",
                None,
            )
            .await;
        }
    }

    async fn a_global_connection_counts_the_org_workflows_that_fall_back_to_it(app) {
        // acme has no `graph`: its workflow resolves to GLOBAL's.
        app.create_connection(None, &auth_code_connection_body("graph")).await;
        register(&app, &app.admin_key, Some("acme"), "wf-a", "graph").await;
        let problem = assert_refused(
            &app,
            "deleting a GLOBAL connection an acme workflow falls back to",
            app.admin(Method::DELETE, "/api/oauth/connections/graph", None),
            409,
            "dependents_exist",
            None,
        )
        .await;
        assert_eq!(problem["dependent_workflows"], json!(["wf-a"]), "{problem}");

        // acme has its own `mail`: its workflow does not depend on GLOBAL's; beta's does.
        app.create_connection(None, &auth_code_connection_body("mail")).await;
        app.create_connection(Some("acme"), &auth_code_connection_body("mail")).await;
        register(&app, &app.admin_key, Some("acme"), "wf-own", "mail").await;
        register(&app, &app.admin_key, Some("beta"), "wf-beta", "mail").await;
        let problem = assert_refused(
            &app,
            "deleting a GLOBAL connection only beta falls back to",
            app.admin(Method::DELETE, "/api/oauth/connections/mail", None),
            409,
            "dependents_exist",
            None,
        )
        .await;
        assert_eq!(problem["dependent_workflows"], json!(["wf-beta"]), "acme's workflow uses acme's own: {problem}");

        expect(
            app.admin(Method::DELETE, "/api/oauth/connections/mail?confirm_disable_workflows=true", None),
            204,
            "deleting GLOBAL's mail with confirmation",
        )
        .await;
        assert_eq!(ids(&disabled(&app, Some("beta")).await), ["wf-beta"]);
        assert_eq!(disabled(&app, Some("acme")).await, Vec::<Value>::new(), "acme's workflow is untouched");
        assert_eq!(dependencies(&app, Some("acme"), "wf-own").await, ["mail"], "and keeps its dependency");
    }
}
