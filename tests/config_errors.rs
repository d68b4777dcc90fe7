//! `protogate check` on broken routes.toml files: one fixture per mistake in
//! tests/config/, each with the exact diagnostic the binary prints on stderr
//! (`<name>.stderr`). Run with `BLESS=1` to rewrite the expected files, then
//! review them by eye.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config")
}

/// What `protogate check --config tests/config/<name>.toml` did.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    /// With the fixture directory written as `tests/config`, wherever the repo is.
    stderr: String,
}

fn check(name: &str) -> Outcome {
    let dir = fixture_dir();
    let output = Command::new(env!("CARGO_BIN_EXE_protogate"))
        .arg("check")
        .arg("--config")
        .arg(dir.join(format!("{name}.toml")))
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "off")
        .output()
        .expect("run protogate");
    let stderr = String::from_utf8_lossy(&output.stderr)
        .replace(&dir.display().to_string(), "tests/config")
        .replace('\\', "/");
    Outcome {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr,
    }
}

/// Runs the fixture and compares stderr with `<name>.stderr` (or writes it under `BLESS=1`).
fn assert_diagnostic(name: &str) -> Outcome {
    let outcome = check(name);
    assert_eq!(
        outcome.code,
        Some(1),
        "{name}: check must exit 1\nstderr:\n{}",
        outcome.stderr
    );
    assert_eq!(
        outcome.stdout, "",
        "{name}: a failed check prints no route table"
    );
    let expected_path = fixture_dir().join(format!("{name}.stderr"));
    if std::env::var_os("BLESS").is_some_and(|v| !v.is_empty()) {
        std::fs::write(&expected_path, &outcome.stderr).expect("write .stderr");
        return outcome;
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with BLESS=1 to create it",
            expected_path.display()
        )
    });
    assert!(
        outcome.stderr == expected,
        "{name}: stderr differs from {} (BLESS=1 rewrites it)\n--- expected\n{expected}--- actual\n{}",
        expected_path.display(),
        outcome.stderr
    );
    outcome
}

macro_rules! fixtures {
    ($($test:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                assert_diagnostic($name);
            }
        )*
        /// Every fixture a test above runs.
        const FIXTURES: &[&str] = &[$($name,)* "many_mistakes"];
    };
}

fixtures! {
    idempotency_outside_unary_post_and_patch_is_reported_at_the_rule => "bad_idempotency",
    success_statuses_and_location_templates_are_checked_against_methods_and_responses => "bad_success_answers",
    unknown_service_is_reported_with_a_did_you_mean_hint => "unknown_service",
    override_of_an_unknown_method_is_reported_with_a_did_you_mean_hint => "unknown_method",
    unknown_upstream_is_reported_with_a_did_you_mean_hint => "unknown_upstream",
    upstream_without_endpoints_is_reported_at_its_table => "upstream_without_endpoints",
    endpoint_without_scheme_or_port_is_reported_at_each_endpoint => "bad_endpoint_url",
    otlp_endpoint_that_is_not_plain_http_is_reported_at_the_value => "bad_otlp_endpoint",
    openapi_server_that_is_no_url_or_path_is_reported_at_the_value => "bad_openapi_server",
    zero_connections_is_reported_at_the_value => "zero_connections",
    route_without_auth_policy_is_an_error => "missing_auth_policy",
    unknown_auth_provider_is_reported => "unknown_auth_provider",
    hmac_algorithm_with_a_public_key_source_is_refused => "hmac_algorithm_with_public_keys",
    provider_must_list_its_algorithms => "provider_without_algorithms",
    identity_metadata_cannot_be_forwarded_from_the_client => "forwarded_identity_header",
    unclosed_path_template_is_reported_at_the_template => "bad_path_template",
    path_variable_naming_no_field_is_reported_with_the_fields => "unknown_path_variable",
    path_variable_on_a_message_field_suggests_a_scalar_inside_it => "message_path_variable",
    path_variable_on_a_repeated_field_is_reported => "repeated_path_variable",
    body_naming_no_field_is_reported_at_the_body => "unknown_body_field",
    response_body_naming_no_field_is_reported_at_the_response_body => "unknown_response_body",
    get_with_a_body_is_reported_at_the_body => "get_with_body",
    service_listed_twice_is_one_error_naming_the_first_entry => "duplicate_service",
    split_service_binding_a_method_twice_names_the_methods => "split_service_overlap",
    two_methods_claiming_one_template_are_reported_at_the_second => "duplicate_binding",
    misspelt_upstream_key_is_reported_with_a_did_you_mean_hint => "unknown_key",
    misspelt_http_rule_key_is_reported_with_a_did_you_mean_hint => "unknown_key_in_http_rule",
    misspelt_section_is_reported_with_a_did_you_mean_hint => "unknown_section",
    misspelt_auth_provider_name_is_reported_with_a_did_you_mean_hint => "misspelt_auth_provider",
    missing_required_key_is_reported_at_its_table_and_the_rest_still_checked => "missing_required_key",
    unparseable_duration_is_reported_at_the_value => "bad_duration",
    zero_connection_bounds_are_refused => "zero_connection_bounds",
    worker_threads_beyond_the_bound_are_refused => "too_many_worker_threads",
    duration_without_unit_is_reported_as_needing_a_string => "bad_duration_unitless",
    unforwardable_request_headers_are_each_reported => "unforwardable_header",
    credential_headers_in_forward_request_are_refused_pointing_at_forward_authorization => "forwarded_credential_headers",
    proto_file_outside_the_include_paths_is_reported_with_the_searched_paths => "missing_proto_file",
    missing_descriptor_set_is_reported_at_its_path => "missing_descriptor_set",
    proto_files_and_descriptor_set_together_are_rejected => "files_and_descriptor_set",
    upstream_mixing_http_and_https_endpoints_is_reported_at_the_odd_one => "upstream_tls_mixed_schemes",
    tls_table_on_http_endpoints_is_reported_at_the_table => "upstream_tls_on_http_endpoints",
    unusable_upstream_tls_files_are_each_reported_at_their_key => "upstream_tls_bad_files",
    unusable_listener_certificate_files_are_each_reported_at_their_key => "server_tls_bad_files",
    resilience_settings_out_of_range_are_each_reported_at_their_key => "bad_resilience_settings",
    upstream_with_two_sources_of_endpoints_is_reported_at_the_second => "upstream_with_two_sources",
    dns_without_port_or_name_and_a_nameserver_that_is_no_ip_are_reported => "dns_without_port",
    dns_refresh_min_above_max_is_reported_at_the_min => "dns_refresh_min_above_max",
    etcd_without_endpoints_is_reported_at_its_table => "etcd_without_endpoints",
    bad_etcd_urls_an_empty_prefix_and_a_zero_bound_are_each_reported => "bad_etcd_settings",
    misspelt_etcd_key_is_reported_with_a_did_you_mean_hint => "unknown_etcd_key",
    dns_settings_without_dns_are_reported_at_each_key => "dns_settings_without_dns",
    multipart_part_over_the_body_limit_and_zero_parts_are_reported => "bad_multipart_limits",
    cors_origins_methods_and_headers_are_each_reported_at_their_value => "bad_cors",
    rate_limit_names_keys_rates_windows_and_scopes_are_each_reported => "bad_rate_limits",
    rate_limit_tiers_anonymous_consumers_and_the_redis_url_are_reported => "rate_limit_tiers_and_redis",
}

#[test]
fn several_mistakes_are_all_reported_in_file_order_with_their_count() {
    let outcome = assert_diagnostic("many_mistakes");
    let lines: Vec<usize> = outcome
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("error: tests/config/many_mistakes.toml:"))
        .map(|rest| rest.split(':').next().and_then(|n| n.parse().ok()))
        .collect::<Option<_>>()
        .expect("every error has a line");
    assert_eq!(lines.len(), 15, "{}", outcome.stderr);
    assert!(lines.is_sorted(), "errors in file order: {lines:?}");
    // Schema mistakes (which stopped reading at the first one before) and
    // semantic ones come out of the same run.
    for mistake in [
        "timeout: invalid duration \"5 secs please\": expected a number before \"please\"",
        "unknown key 'keepalive_intervall' in [upstreams.bookstore]",
        "endpoints: expected a sequence, found string",
        "leeway: expected a duration string",
        "unknown section 'respones_cache'",
        "unknown service 'testing.v1.Everything'",
        "unknown auth provider 'crop'",
        "this route has no auth policy",
    ] {
        assert!(
            outcome.stderr.contains(mistake),
            "{mistake}\n{}",
            outcome.stderr
        );
    }
    // The upstream whose endpoints had the wrong type is not also said to
    // have none: one mistake, one error.
    assert!(
        !outcome
            .stderr
            .contains("upstream 'everything' has no endpoints"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome
            .stderr
            .ends_with("15 errors in tests/config/many_mistakes.toml\n"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn every_fixture_has_a_test_and_an_expected_stderr() {
    let mut on_disk = Vec::new();
    for entry in std::fs::read_dir(fixture_dir()).expect("read tests/config") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("utf-8 name")
                .to_string();
            assert!(
                FIXTURES.contains(&name.as_str()),
                "{name}.toml has no test in tests/config_errors.rs"
            );
            on_disk.push(name);
        }
    }
    for name in FIXTURES {
        assert!(on_disk.iter().any(|n| n == name), "{name}.toml is missing");
        if std::env::var_os("BLESS").is_none() {
            assert!(
                fixture_dir().join(format!("{name}.stderr")).exists(),
                "{name}.stderr is missing; run with BLESS=1"
            );
        }
    }
}
