//! Deployment files, validated offline (no container engine runs on the build machines): the
//! Dockerfiles pass `tests/deploy/check_dockerfiles.py` (pinned bases, non-root, a health check,
//! every COPY source in the build context, both binaries on PATH), the checker catches each
//! thing it checks, and the image's example application is a valid application file.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn check(root: &Path, files: &[&Path]) -> (bool, String) {
    let out = Command::new("python3")
        .arg(Path::new(ROOT).join("tests/deploy/check_dockerfiles.py"))
        .arg(root)
        .args(files)
        .output()
        .expect("python3 (pip install -r tests/interop/requirements.txt)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "the checker failed: {stderr}");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_dockerfiles_pass_the_offline_checks() {
    let root = Path::new(ROOT);
    let (ok, problems) = check(
        root,
        &[&root.join("Dockerfile"), &root.join("Dockerfile.sqlfile")],
    );
    assert!(ok, "{problems}");
    assert_eq!(problems, "");
}

#[test]
fn the_dockerfile_checker_catches_each_thing_it_checks() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::create_dir(dir.path().join("secret")).unwrap();
    std::fs::write(dir.path().join(".dockerignore"), "secret\n").unwrap();
    let bad = dir.path().join("Dockerfile");
    std::fs::write(
        &bad,
        "FROM rust:latest AS build\nCOPY src src\nCOPY missing missing\n\
         FROM debian\nCOPY secret /secret\nCOPY --from=build /x/velo-sql /usr/local/bin/\n",
    )
    .unwrap();
    let (ok, problems) = check(dir.path(), &[&bad]);
    assert!(!ok);
    assert_eq!(
        problems.lines().collect::<Vec<_>>(),
        [
            "Dockerfile: FROM rust:latest: the base image is not pinned to a tag",
            "Dockerfile: COPY missing: not in the build context",
            "Dockerfile: FROM debian: the base image is not pinned to a tag",
            "Dockerfile: COPY secret: excluded by .dockerignore",
            "Dockerfile: the final stage runs as root (no USER, or USER root)",
            "Dockerfile: the final stage has no HEALTHCHECK",
            "Dockerfile: velo-sql-multi is not copied to /usr/local/bin",
        ]
    );
}

#[test]
fn the_images_example_application_is_a_valid_application_file() {
    let text = std::fs::read_to_string(Path::new(ROOT).join("deploy/app.sql")).unwrap();
    let app = velostream::server::app::parse_application(&text).unwrap();
    let names: Vec<&str> = app.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["large_orders", "revenue_per_minute"]);
    assert_eq!(app.jobs[0].sink_topic.as_deref(), Some("large_orders"));
}
