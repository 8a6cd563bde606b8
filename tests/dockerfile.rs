//! No Docker engine runs here, so the Dockerfile is checked for what can be checked:
//! what it copies exists, it builds the binary this crate declares, and the runtime
//! image runs it as a non-root user on the port and health route the service has.

const DOCKERFILE: &str = include_str!("../Dockerfile");

fn instructions(name: &str) -> Vec<String> {
    DOCKERFILE
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(name))
        .map(|l| l[name.len()..].trim().to_owned())
        .collect()
}

#[test]
fn every_path_the_build_stage_copies_exists() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for copy in instructions("COPY ") {
        if copy.starts_with("--from=") {
            continue;
        }
        let parts: Vec<&str> = copy.split_whitespace().collect();
        for source in &parts[..parts.len() - 1] {
            assert!(
                root.join(source).exists(),
                "Dockerfile copies {source}, which does not exist"
            );
        }
    }
}

#[test]
fn the_image_builds_and_runs_this_crates_binary_as_a_non_root_user() {
    assert!(
        DOCKERFILE.contains("cargo build --release --locked"),
        "a locked release build"
    );
    let copied = instructions("COPY --from=build ");
    assert!(
        copied
            .iter()
            .any(|c| c.starts_with(concat!("/src/target/release/", env!("CARGO_PKG_NAME")))),
        "the runtime stage copies the release binary: {copied:?}"
    );
    let user = instructions("USER ");
    assert!(
        !user.is_empty() && user.iter().all(|u| u != "root" && u != "0"),
        "runs as {user:?}"
    );
    assert!(DOCKERFILE.contains("OAUTH_BROKER_LISTEN=0.0.0.0:8080"));
    assert!(instructions("EXPOSE ").contains(&"8080".to_owned()));
    assert!(DOCKERFILE.contains("OAUTH_BROKER_DATABASE_URL=sqlite:///data/oauth-broker.db"));
    assert!(instructions("VOLUME ").iter().any(|v| v.contains("/data")));
    let health = instructions("CMD curl").join(" ") + &instructions("HEALTHCHECK").join(" ");
    assert!(
        DOCKERFILE.contains("http://127.0.0.1:8080/healthz"),
        "HEALTHCHECK on /healthz: {health}"
    );
}
