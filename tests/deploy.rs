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

fn python(script: &str, args: &[&Path]) -> (bool, String) {
    let out = Command::new("python3")
        .arg(Path::new(ROOT).join(script))
        .args(args)
        .output()
        .expect("python3 (pip install -r tests/interop/requirements.txt)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("Traceback"),
        "the checker failed: {stderr}"
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_compose_stack_passes_the_offline_checks_and_the_checker_catches_mistakes() {
    let (ok, problems) = python(
        "tests/deploy/check_compose.py",
        &[&Path::new(ROOT).join("docker-compose.yml")],
    );
    assert!(ok, "{problems}");
    assert_eq!(problems, "");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("docker-compose.yml");
    std::fs::write(
        &bad,
        "services:\n  a:\n    image: kafka:latest\n    volumes: [\"./missing:/x\", \"data:/y\"]\n  \
         b:\n    build: {context: ., dockerfile: Nope}\n    healthcheck: {test: [\"CMD\", \"true\"]}\n    helthcheck: {}\n    \
         depends_on: {a: {condition: service_healthy}, c: {condition: service_started}}\n",
    )
    .unwrap();
    let (ok, problems) = python("tests/deploy/check_compose.py", &[&bad]);
    assert!(!ok);
    assert_eq!(
        problems.lines().collect::<Vec<_>>(),
        [
            "services.b: schema: 'helthcheck' does not match any of the regexes: '^x-'",
            "a: image kafka:latest is not pinned to a tag",
            "a: no healthcheck",
            "a: mounts ./missing, which does not exist",
            "a: volume data is not declared",
            "b: Nope does not exist",
            "b: waits for a to be healthy, which has no healthcheck",
            "b: depends on c, which is not a service",
        ]
    );
}

fn kubernetes_validate(files: &[&Path]) -> (bool, String) {
    let out = Command::new("python3")
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "--kubernetes-version",
            "1.30.0",
        ])
        .args(files)
        .output()
        .expect("python3 -m kubernetes_validate (pip install -r tests/interop/requirements.txt)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_kubernetes_manifests_validate_against_the_api_schemas_and_a_mistake_does_not() {
    let k8s = Path::new(ROOT).join("k8s");
    let kustomization = std::fs::read_to_string(k8s.join("kustomization.yaml")).unwrap();
    let mut manifests = Vec::new();
    for entry in std::fs::read_dir(&k8s).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            assert!(
                kustomization.contains(&name),
                "kustomization.yaml does not list {name}"
            );
            manifests.push(path);
        }
    }
    assert_eq!(manifests.len(), 7);
    let refs: Vec<&Path> = manifests.iter().map(|p| p.as_path()).collect();
    let (ok, report) = kubernetes_validate(&refs);
    assert!(ok, "{report}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  ports:\n    - port: \"eighty\"\n  sessionAffinityy: None\n",
    )
    .unwrap();
    let (ok, report) = kubernetes_validate(&[&bad]);
    assert!(!ok, "{report}");
}

#[test]
fn the_clusters_configuration_and_application_load_as_the_server_would_load_them() {
    let text = std::fs::read_to_string(Path::new(ROOT).join("k8s/configmap.yaml")).unwrap();
    let configmap: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let config = configmap["data"]["velo.yaml"].as_str().unwrap();
    let config = velostream::server::config::Config::from_yaml(config).unwrap();
    config.validate().unwrap();
    assert_eq!(config.without_effect, Vec::<String>::new());
    assert_eq!(config.server.metrics_port, Some(9091));
    let app = configmap["data"]["app.sql"].as_str().unwrap();
    let app = velostream::server::app::parse_application(app).unwrap();
    assert_eq!(app.jobs.len(), 1);
    // Every ConfigMap key the server's pod mounts is in the ConfigMap, and the server is
    // pointed at the files they become.
    let text = std::fs::read_to_string(Path::new(ROOT).join("k8s/statefulset.yaml")).unwrap();
    let statefulset: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let mut mounted = Vec::new();
    for volume in statefulset["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .unwrap()
    {
        if volume["configMap"]["name"].as_str() == Some("velostream-config") {
            for item in volume["configMap"]["items"].as_sequence().unwrap() {
                let key = item["key"].as_str().unwrap();
                assert!(
                    configmap["data"].get(key).is_some(),
                    "the ConfigMap has no key {key}"
                );
                mounted.push(key.to_string());
            }
        }
    }
    assert_eq!(mounted, ["velo.yaml", "app.sql"]);
    let container = &statefulset["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert_eq!(
        args,
        ["server", "--config", "/etc/velostream/config/velo.yaml"]
    );
    assert_eq!(
        config.sql.file.as_deref(),
        Some(Path::new("/etc/velostream/app/app.sql"))
    );
}
