//! Who may do what: org scoping of connection routes, the keys routes, key revocation.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::on_both_backends;

/// `mine` in acme, `theirs` in other, `shared` in GLOBAL, created by the `*` admin key.
async fn three_orgs(app: &TestApp) {
    for (org, name) in [
        (Some("acme"), "mine"),
        (Some("other"), "theirs"),
        (None, "shared"),
    ] {
        app.create_connection(org, &authorization_code_body(name))
            .await;
    }
}

/// A connection that is created without calling a provider.
fn authorization_code_body(name: &str) -> Value {
    json!({
        "connection_name": name,
        "oauth_flow_type": "authorization_code",
        "client_id": "client-1",
        "client_secret": "secret-1",
        "authorization_url": "https://login.example.com/authorize",
        "token_url": "https://login.example.com/token",
        "scopes": ["User.Read"],
    })
}

/// Sends `request`, asserts its status (showing the body when it differs) and returns
/// the body as JSON (`null` when empty).
async fn expect_status(request: reqwest::RequestBuilder, status: u16, what: &str) -> Value {
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

/// The `org/name`s a listing shows, sorted, after checking `count`.
async fn listed(app: &TestApp, key: &str, org: Option<&str>, query: &str) -> Vec<String> {
    let path = format!("/api/oauth/connections{query}");
    let request = app.with_key(key, Method::GET, &path, org);
    let body = expect_status(request, 200, &format!("listing {path} in {org:?}")).await;
    let mut names: Vec<String> = body["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}/{}",
                c["org_id"].as_str().unwrap(),
                c["connection_name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(body["count"], names.len(), "count matches the list: {body}");
    names.sort();
    names
}

/// Creates a key and returns (id, key).
async fn create_key_with_id(app: &TestApp, name: &str, role: &str, org: &str) -> (String, String) {
    let request = app
        .admin(Method::POST, "/api/oauth/keys", None)
        .json(&json!({"name": name, "role": role, "org_id": org}));
    let body = expect_status(request, 201, &format!("creating key {name}")).await;
    (
        body["id"].as_str().unwrap().to_owned(),
        body["key"].as_str().unwrap().to_owned(),
    )
}

on_both_backends! {
    async fn a_key_bound_to_an_org_manages_that_org_and_nothing_else(app) {
        three_orgs(&app).await;
        let acme = app.create_key("acme-admin", "admin", "acme").await;
        let edit = json!({"test_url": "https://api.example.com/me"});
        let forbidden = [
            ("listing another org", Method::GET, "/api/oauth/connections", Some("other"), None),
            ("listing GLOBAL", Method::GET, "/api/oauth/connections", None, None),
            ("creating in another org", Method::POST, "/api/oauth/connections", Some("other"), Some(authorization_code_body("new"))),
            ("creating in GLOBAL", Method::POST, "/api/oauth/connections", None, Some(authorization_code_body("new"))),
            ("reading in another org", Method::GET, "/api/oauth/connections/theirs", Some("other"), None),
            ("reading in GLOBAL", Method::GET, "/api/oauth/connections/shared", None, None),
            ("reading a missing name in another org (no existence leak)", Method::GET, "/api/oauth/connections/nothing", Some("other"), None),
            ("editing in another org", Method::PATCH, "/api/oauth/connections/theirs", Some("other"), Some(edit.clone())),
            ("editing in GLOBAL", Method::PATCH, "/api/oauth/connections/shared", None, Some(edit.clone())),
            ("reading events in another org", Method::GET, "/api/oauth/connections/theirs/events", Some("other"), None),
            ("reading events in GLOBAL", Method::GET, "/api/oauth/connections/shared/events", None, None),
            ("deleting in another org", Method::DELETE, "/api/oauth/connections/theirs", Some("other"), None),
            ("deleting in GLOBAL", Method::DELETE, "/api/oauth/connections/shared", None, None),
        ];
        for (reason, method, path, org, body) in forbidden {
            let mut request = app.with_key(&acme, method, path, org);
            if let Some(body) = body {
                request = request.json(&body);
            }
            assert_refused(&app, &format!("an acme key {reason}"), request, 403, "forbidden", None).await;
        }

        // Its own org works on every route.
        assert_eq!(listed(&app, &acme, Some("acme"), "").await, ["acme/mine"]);
        let mine = "/api/oauth/connections/mine";
        expect_status(app.with_key(&acme, Method::GET, mine, Some("acme")), 200, "an acme key reads in acme").await;
        let request = app.with_key(&acme, Method::PATCH, mine, Some("acme")).json(&edit);
        let changed = expect_status(request, 200, "an acme key edits in acme").await;
        assert_eq!(changed["test_url"], "https://api.example.com/me");
        let request = app.with_key(&acme, Method::GET, "/api/oauth/connections/mine/events", Some("acme"));
        let events = expect_status(request, 200, "an acme key reads events in acme").await;
        assert_eq!(events["events"][0]["actor"], "acme-admin", "the edit is attributed to the key: {events}");
        expect_status(app.with_key(&acme, Method::DELETE, mine, Some("acme")), 204, "an acme key deletes in acme").await;
        let request = app
            .with_key(&acme, Method::POST, "/api/oauth/connections", Some("acme"))
            .json(&authorization_code_body("again"));
        expect_status(request, 201, "an acme key creates in acme").await;

        // Nothing outside acme was touched.
        assert_eq!(listed(&app, &app.admin_key, None, "").await, ["GLOBAL/shared"]);
        assert_eq!(listed(&app, &app.admin_key, Some("other"), "?include_global=false").await, ["other/theirs"]);
    }

    async fn an_org_bound_key_never_lists_global_connections(app) {
        three_orgs(&app).await;
        let acme = app.create_key("acme-admin", "admin", "acme").await;
        for query in ["", "?include_global=true", "?include_global=false"] {
            assert_eq!(
                listed(&app, &acme, Some("acme"), query).await,
                ["acme/mine"],
                "an acme key listing with `{query}` sees acme only"
            );
        }
    }

    async fn an_admin_key_for_every_org_lists_its_org_plus_global_unless_told_not_to(app) {
        three_orgs(&app).await;
        let key = &app.admin_key;
        assert_eq!(listed(&app, key, Some("acme"), "").await, ["GLOBAL/shared", "acme/mine"], "include_global defaults to true");
        assert_eq!(listed(&app, key, Some("acme"), "?include_global=true").await, ["GLOBAL/shared", "acme/mine"]);
        assert_eq!(listed(&app, key, Some("acme"), "?include_global=false").await, ["acme/mine"]);
        assert_eq!(listed(&app, key, None, "").await, ["GLOBAL/shared"], "GLOBAL is listed once");
        assert_eq!(listed(&app, key, Some("nobody"), "?include_global=false").await, Vec::<String>::new());
    }

    async fn only_an_admin_key_for_every_org_manages_keys(app) {
        let (victim_id, victim) = create_key_with_id(&app, "victim", "workflow", "acme").await;
        let acme_admin = app.create_key("acme-admin", "admin", "acme").await;
        let every_org_workflow = app.create_key("all-workflow", "workflow", "*").await;
        let revoke = format!("/api/oauth/keys/{victim_id}");
        let new_key = json!({"name": "another", "role": "workflow", "org_id": "acme"});
        for (who, key) in [("an acme admin key", &acme_admin), ("a workflow key for every org", &every_org_workflow)] {
            let cases = [
                ("creating a key", Method::POST, "/api/oauth/keys", Some(&new_key)),
                ("listing keys", Method::GET, "/api/oauth/keys", None),
                ("revoking a key", Method::DELETE, revoke.as_str(), None),
            ];
            for (what, method, path, body) in cases {
                let mut request = app.with_key(key, method, path, None);
                if let Some(body) = body {
                    request = request.json(body);
                }
                assert_refused(&app, &format!("{who} {what}"), request, 403, "forbidden", None).await;
            }
        }
        // Nothing was revoked: the victim key is still known (403 for its role, not 401).
        let request = app.with_key(&victim, Method::GET, "/api/oauth/connections", Some("acme"));
        expect_status(request, 403, "the victim key is still known").await;

        // A second admin key for every org may do all of it.
        let (_, root) = create_key_with_id(&app, "root-2", "admin", "*").await;
        let request = app.with_key(&root, Method::POST, "/api/oauth/keys", None).json(&new_key);
        let created = expect_status(request, 201, "an admin key for every org creates keys").await;
        assert!(created["key"].as_str().is_some_and(|k| k.starts_with("obk_")), "the new key is shown once: {created}");
        expect_status(app.with_key(&root, Method::GET, "/api/oauth/keys", None), 200, "an admin key for every org lists keys").await;
        expect_status(app.with_key(&root, Method::DELETE, &revoke, None), 204, "an admin key for every org revokes keys").await;
    }

    async fn a_revoked_key_is_refused_at_once_on_the_replica_that_revoked_it(app) {
        let (id, key) = create_key_with_id(&app, "temporary", "admin", "acme").await;
        let revoke = format!("/api/oauth/keys/{id}");
        // Use it first, so the replica has it cached as valid.
        let list = "/api/oauth/connections";
        expect_status(app.with_key(&key, Method::GET, list, Some("acme")), 200, "the new key works").await;

        expect_status(app.admin(Method::DELETE, &revoke, None), 204, "revoking").await;

        let res = app.with_key(&key, Method::GET, list, Some("acme")).send().await.unwrap();
        assert_eq!(res.status(), 401, "a revoked key is refused at once, not after the cache expires");
        assert!(res.headers().contains_key("www-authenticate"), "401 carries WWW-Authenticate");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["code"], "unauthorized");

        let request = app.admin(Method::DELETE, &revoke, None);
        assert_refused(&app, "revoking a revoked key", request, 404, "not_found", None).await;
        let request = app.admin(Method::DELETE, "/api/oauth/keys/no-such-id", None);
        assert_refused(&app, "revoking an unknown key", request, 404, "not_found", None).await;

        let keys = expect_status(app.admin(Method::GET, "/api/oauth/keys", None), 200, "listing keys").await;
        let entry = keys["keys"].as_array().unwrap().iter().find(|k| k["id"] == id.as_str()).cloned();
        let entry = entry.unwrap_or_else(|| panic!("the revoked key is still listed: {keys}"));
        assert!(entry["revoked_at"].is_string(), "the list shows when it was revoked: {entry}");
    }

    async fn listing_keys_never_shows_key_material(app) {
        let (_, workflow) = create_key_with_id(&app, "ci", "workflow", "acme").await;
        let (_, admin) = create_key_with_id(&app, "ops", "admin", "*").await;
        let res = app.admin(Method::GET, "/api/oauth/keys", None).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let text = res.text().await.unwrap();
        for (what, key) in [("the workflow key", &workflow), ("the admin key", &admin), ("the bootstrap key", &app.admin_key)] {
            assert!(!text.contains(key.as_str()), "{what} appears in GET /keys: {text}");
            let hash = oauth_broker::service::keys::hash_key(key);
            assert!(!text.contains(&hash), "the hash of {what} appears in GET /keys: {text}");
        }
        let list: Value = serde_json::from_str(&text).unwrap();
        let keys = list["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 3, "the bootstrap key and the two new ones: {list}");
        for entry in keys {
            assert!(entry.get("key").is_none(), "no `key` member in a listing: {entry}");
            let prefix = entry["key_prefix"].as_str().unwrap_or("");
            assert!(prefix.len() <= 8, "a prefix recognises a key without revealing it: {entry}");
        }
        let ci = keys.iter().find(|k| k["name"] == "ci").unwrap();
        assert_eq!(ci["role"], "workflow");
        assert_eq!(ci["org_id"], "acme");
        assert!(workflow.starts_with(ci["key_prefix"].as_str().unwrap()), "the prefix is the key's: {ci}");
    }

    async fn a_duplicate_key_name_is_a_conflict_and_changes_nothing(app) {
        app.create_key("ci", "workflow", "acme").await;
        let request = app
            .admin(Method::POST, "/api/oauth/keys", None)
            .json(&json!({"name": "ci", "role": "admin", "org_id": "*"}));
        let problem = assert_refused(&app, "a second key named ci", request, 409, "conflict", None).await;
        assert!(problem.get("key").is_none(), "no key is handed out on conflict: {problem}");
    }

    async fn bad_key_requests_are_refused_naming_the_field(app) {
        let cases = [
            ("a name with a slash", json!({"name": "a/b", "role": "admin", "org_id": "*"}), "name"),
            ("an empty name", json!({"name": "", "role": "admin", "org_id": "*"}), "name"),
            ("an unknown role", json!({"name": "n", "role": "root", "org_id": "*"}), "role"),
            ("a bad org", json!({"name": "n", "role": "admin", "org_id": "a b"}), "org_id"),
            ("a missing org", json!({"name": "n", "role": "admin"}), "org_id"),
            ("an unknown field", json!({"name": "n", "role": "admin", "org_id": "*", "key": "obk_mine"}), "key"),
        ];
        for (reason, body, field) in cases {
            let request = app.admin(Method::POST, "/api/oauth/keys", None).json(&body);
            assert_refused(&app, reason, request, 422, "validation_failed", Some(field)).await;
        }
    }
}
