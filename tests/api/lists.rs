//! Lists are pages (the contract's "Lists: pagination and filters"): `limit`,
//! `starting_after`, `has_more`, `next_cursor`, a stable order, each item once in a walk
//! even while items are added and deleted, and filters on connections.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::on_both_backends;

async fn get_ok(app: &TestApp, path: &str, org: Option<&str>) -> Value {
    let res = app.admin(Method::GET, path, org).send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    assert_eq!(status, 200, "GET {path}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// One page: its items' `field`s, after checking the page's own bookkeeping.
async fn page(
    app: &TestApp,
    path: &str,
    org: Option<&str>,
    array: &str,
    field: &str,
) -> (Vec<String>, Option<String>) {
    let body = get_ok(app, path, org).await;
    let items: Vec<String> = body[array]
        .as_array()
        .unwrap_or_else(|| panic!("GET {path} has `{array}`: {body}"))
        .iter()
        .map(|item| item[field].to_string().trim_matches('"').to_owned())
        .collect();
    assert_eq!(
        body["count"],
        items.len(),
        "count is this page's size: {body}"
    );
    let cursor = body["next_cursor"].as_str().map(str::to_owned);
    assert_eq!(
        body["has_more"],
        cursor.is_some(),
        "a cursor exactly when more follow: {body}"
    );
    (items, cursor)
}

/// Every item of a list, walking pages of `limit`, calling `between` after each page.
async fn walk(
    app: &TestApp,
    base: &str,
    org: Option<&str>,
    array: &str,
    field: &str,
    limit: usize,
    mut between: impl AsyncFnMut(usize),
) -> Vec<String> {
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for n in 0.. {
        let path = match &cursor {
            None => format!("{base}{sep}limit={limit}"),
            Some(c) => format!("{base}{sep}limit={limit}&starting_after={c}"),
        };
        let (items, next) = page(app, &path, org, array, field).await;
        assert!(items.len() <= limit, "a page holds at most limit items");
        seen.extend(items);
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        between(n).await;
        assert!(n < 1000, "the walk ends");
    }
    seen
}

async fn create(app: &TestApp, org: Option<&str>, name: &str) {
    app.create_connection(org, &auth_code_connection_body(name))
        .await;
}

async fn delete(app: &TestApp, org: Option<&str>, name: &str) {
    let res = app
        .admin(
            Method::DELETE,
            &format!("/api/oauth/connections/{name}"),
            org,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204, "deleting {name}");
}

fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i:02}")).collect()
}

on_both_backends! {
    async fn walking_the_connections_page_by_page_returns_each_once_while_others_come_and_go(app) {
        // Arrange: 23 connections in acme (names m00..m22) and 4 in GLOBAL.
        for name in names("m", 0..23) {
            create(&app, Some("acme"), &name).await;
        }
        for name in names("g", 0..4) {
            create(&app, None, &name).await;
        }

        // Act: walk acme's list (GLOBAL included: the key sees every org) 5 a page; after
        // the second page delete one seen and one not yet seen, and add one before and
        // one after the walk's position.
        let seen = walk(&app, "/api/oauth/connections", Some("acme"), "connections", "connection_name", 5, async |n| {
            if n == 1 {
                delete(&app, Some("acme"), "m01").await;
                delete(&app, Some("acme"), "m20").await;
                create(&app, Some("acme"), "a-before").await;
                create(&app, Some("acme"), "z-after").await;
            }
        })
        .await;

        // Assert: no item twice; every item present for the whole walk seen; the one
        // deleted before its page never; the one added after the position seen.
        let unique: BTreeSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "no connection twice in one walk: {seen:?}");
        let stable: Vec<String> = names("m", 0..23)
            .into_iter()
            .filter(|n| n != "m01" && n != "m20")
            .chain(names("g", 0..4))
            .collect();
        for name in &stable {
            assert!(seen.contains(name), "{name} was there all along and is listed: {seen:?}");
        }
        assert!(seen.contains(&"m01".to_owned()), "m01 was listed before its deletion");
        assert!(!seen.contains(&"m20".to_owned()), "m20 was deleted before its page");
        assert!(seen.contains(&"z-after".to_owned()), "an item added ahead of the walk is listed");
        // The order is by org then name (byte order: "GLOBAL" before "acme").
        let acme: Vec<&String> = seen.iter().filter(|n| !n.starts_with('g')).collect();
        let mut sorted = acme.clone();
        sorted.sort();
        assert_eq!(acme, sorted, "acme's connections come by name");
        assert_eq!(&seen[..4], names("g", 0..4).as_slice(), "GLOBAL's first: {seen:?}");

        // A page of 1000 holds everything; one of 1 says more follow.
        let (all, cursor) = page(&app, "/api/oauth/connections?limit=1000", Some("acme"), "connections", "connection_name").await;
        assert_eq!(all.len(), 23 - 1 + 1 + 4, "everything on one page: {all:?}");
        assert_eq!(cursor, None);
    }

    async fn connections_filter_by_status_and_name_prefix(app) {
        // Arrange: authorization-code connections stay not_connected; one whose token
        // endpoint refuses ends failed.
        for name in ["github-main", "github-ci", "gitlab", "google", "git"] {
            create(&app, Some("acme"), name).await;
        }
        let provider = wiremock::MockServer::start().await;
        wiremock::Mock::given(wiremock::matchers::method("POST"))
            .respond_with(wiremock::ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_client"})))
            .mount(&provider)
            .await;
        let failed = app
            .create_connection(Some("acme"), &client_credentials_body("github-broken", &format!("{}/token", provider.uri())))
            .await;
        assert_eq!(failed["status"], "failed", "{failed}");

        // Act + Assert
        let listed = async |query: &str| {
            let path = format!("/api/oauth/connections?include_global=false&{query}");
            page(&app, &path, Some("acme"), "connections", "connection_name").await.0
        };
        assert_eq!(listed("q=github").await, ["github-broken", "github-ci", "github-main"]);
        assert_eq!(listed("q=git").await, ["git", "github-broken", "github-ci", "github-main", "gitlab"]);
        assert_eq!(listed("q=go").await, ["google"]);
        assert_eq!(listed("q=x").await, Vec::<String>::new());
        assert_eq!(listed("status=failed").await, ["github-broken"]);
        assert_eq!(listed("status=not_connected&q=github").await, ["github-ci", "github-main"]);
        // Filters and pages together: the cursor continues the filtered list.
        let seen = walk(&app, "/api/oauth/connections?include_global=false&q=git", Some("acme"), "connections", "connection_name", 2, async |_| {}).await;
        assert_eq!(seen, ["git", "github-broken", "github-ci", "github-main", "gitlab"]);
    }

    async fn bad_page_parameters_and_filters_are_refused(app) {
        create(&app, Some("acme"), "graph").await;
        let events_cursor = {
            // Two events so that a page of one has a cursor (an events cursor is a number).
            let res = app
                .admin(Method::PATCH, "/api/oauth/connections/graph", Some("acme"))
                .json(&json!({"scopes": ["a"]}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            page(&app, "/api/oauth/connections/graph/events?limit=1", Some("acme"), "events", "kind").await.1.expect("more events follow")
        };
        let cases = [
            ("a limit of 0", "/api/oauth/connections?limit=0", "limit"),
            ("a limit over 1000", "/api/oauth/connections?limit=1001", "limit"),
            ("a negative limit", "/api/oauth/keys?limit=-1", "limit"),
            ("an unknown status", "/api/oauth/connections?status=broken", "status"),
            ("a name prefix with a space", "/api/oauth/connections?q=a%20b", "q"),
            ("a disabled-workflows limit over 1000", "/api/oauth/workflows/disabled?limit=5000", "limit"),
        ];
        for (reason, path, field) in cases {
            let request = app.admin(Method::GET, path, Some("acme"));
            assert_refused(&app, reason, request, 422, "validation_failed", Some(field)).await;
        }
        let cursors = [
            ("not base64", "%25%25%25".to_owned()),
            ("base64 of no JSON", "bm90IGpzb24".to_owned()),
            ("another list's cursor", events_cursor),
            ("far too long", "A".repeat(2000)),
        ];
        for (reason, cursor) in cursors {
            let path = format!("/api/oauth/connections?starting_after={cursor}");
            let request = app.admin(Method::GET, &path, Some("acme"));
            let problem = assert_refused(&app, &format!("a cursor that is {reason}"), request, 400, "bad_request", None).await;
            assert!(problem["detail"].as_str().unwrap_or_default().contains("starting_after"), "{problem}");
        }
    }

    async fn events_keys_and_disabled_workflows_are_pages_too(app) {
        // Events: newest first, the walk equals the single page.
        create(&app, Some("acme"), "graph").await;
        for i in 0..6 {
            let res = app
                .admin(Method::PATCH, "/api/oauth/connections/graph", Some("acme"))
                .json(&json!({"scopes": [format!("scope-{i}")]}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
        }
        let body = get_ok(&app, "/api/oauth/connections/graph/events", Some("acme")).await;
        let all: Vec<String> = body["events"].as_array().unwrap().iter().map(|e| e["at"].to_string() + &e["kind"].to_string() + &e["detail"].to_string()).collect();
        assert_eq!(all.len(), 7, "created and six updates: {body}");
        assert_eq!(body["events"][0]["kind"], "updated", "newest first: {body}");
        assert_eq!(body["events"][6]["kind"], "created", "oldest last: {body}");
        let mut walked = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                None => "/api/oauth/connections/graph/events?limit=3".to_owned(),
                Some(c) => format!("/api/oauth/connections/graph/events?limit=3&starting_after={c}"),
            };
            let body = get_ok(&app, &path, Some("acme")).await;
            walked.extend(body["events"].as_array().unwrap().iter().map(|e| e["at"].to_string() + &e["kind"].to_string() + &e["detail"].to_string()));
            match body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(walked, all, "walking the events in pages of 3 gives the same list");

        // Keys: by name.
        for name in ["kilo", "alpha", "echo", "bravo"] {
            app.create_key(name, "workflow", "acme").await;
        }
        let keys = walk(&app, "/api/oauth/keys", None, "keys", "name", 2, async |_| {}).await;
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "keys come by name");
        for name in ["kilo", "alpha", "echo", "bravo"] {
            assert_eq!(keys.iter().filter(|k| *k == name).count(), 1, "{name} once in {keys:?}");
        }

        // Disabled workflows: deleting a connection with dependents disables them.
        for workflow in ["wf-c", "wf-a", "wf-b"] {
            let res = app
                .admin(Method::POST, &format!("/api/oauth/workflows/{workflow}/dependencies"), Some("acme"))
                .json(&json!({"connection_name": "graph", "workflow_name": workflow}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 201);
        }
        let res = app
            .admin(Method::DELETE, "/api/oauth/connections/graph?confirm_disable_workflows=true", Some("acme"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        let disabled = walk(&app, "/api/oauth/workflows/disabled", Some("acme"), "workflows", "workflow_id", 2, async |_| {}).await;
        assert_eq!(disabled, ["wf-a", "wf-b", "wf-c"], "by workflow id, each once");
    }
}
