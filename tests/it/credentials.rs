//! Each Application Default Credentials type end to end: `load --store` against stand-ins for
//! Google's token endpoints and the store, checking the token the store receives, the quota
//! project it is billed to, and that no secret is ever shown.

use std::path::{Path, PathBuf};

use crate::common::google::*;
use crate::common::*;
use serde_json::{Value, json};

const AUDIENCE: &str =
    "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/pool/providers/github";
const LOADER: &str = "loader@p.iam.gserviceaccount.com";

fn write_json(dir: &Path, name: &str, value: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    path
}

fn authorized_user(stand_in: &StandIn) -> Value {
    let mut user = stand_in.authorized_user();
    user["quota_project_id"] = json!("file-quota-project");
    user
}

fn external_account(stand_in: &StandIn, credential_source: Value) -> Value {
    json!({
        "type": "external_account",
        "audience": AUDIENCE,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": stand_in.url("/sts/token"),
        "credential_source": credential_source,
    })
}

/// The load, with `file` as the Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS).
fn load_with_credential_file(stand_in: &StandIn, file: &Path) -> std::process::Command {
    let mut command = load_command(stand_in);
    command.env("GOOGLE_APPLICATION_CREDENTIALS", file);
    command
}

/// Runs the load and checks it stored everything with `token`, billed to `quota_project`.
async fn loads_with(
    command: std::process::Command,
    stand_in: &StandIn,
    token: &str,
    quota_project: Option<&str>,
) -> std::process::Output {
    let output = run(command).await;
    assert_exit(&output, 0);
    assert_eq!(summary(&output)["stored"], 20);
    stand_in.seen.assert_store_requests_carried(token, 20);
    let projects = stand_in.seen.quota_projects();
    assert!(
        projects.iter().all(|p| p.as_deref() == quota_project),
        "{projects:?}"
    );
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorized_user_named_by_google_application_credentials_bills_its_quota_project() {
    let stand_in = start_google().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_json(dir.path(), "user.json", &authorized_user(&stand_in));
    let command = load_with_credential_file(&stand_in, &file);
    let output = loads_with(command, &stand_in, USER_TOKEN, Some("file-quota-project")).await;
    assert_no_secrets(&output, &[], &[]);
    // One token for the run, not one per request.
    assert_eq!(stand_in.seen.token_paths(), ["/oauth/token"]);
}

/// A token endpoint that answers 503 twice is asked again, with backoff, before the run is
/// told it has no token; one that keeps failing is reported with its last answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_that_blinks_is_asked_again() {
    let stand_in = start_google().await;
    let dir = tempfile::tempdir().unwrap();
    let mut credential = authorized_user(&stand_in);
    credential["token_uri"] = json!(stand_in.url("/blinking/oauth/token"));
    let file = write_json(dir.path(), "user.json", &credential);

    *stand_in.seen.blinks_left.lock().unwrap() = 2;
    let command = load_with_credential_file(&stand_in, &file);
    loads_with(command, &stand_in, USER_TOKEN, Some("file-quota-project")).await;
    assert_eq!(
        stand_in.seen.token_paths(),
        [
            "/blinking/oauth/token",
            "/blinking/oauth/token",
            "/oauth/token"
        ]
    );

    *stand_in.seen.blinks_left.lock().unwrap() = 100;
    let command = load_with_credential_file(&stand_in, &file);
    let output = run(command).await;
    assert_ne!(output.status.code(), Some(0));
    let stderr = stderr(&output);
    assert!(
        stderr.contains("503") && stderr.contains("try again"),
        "{stderr}"
    );
    // The first try and three more.
    assert_eq!(*stand_in.seen.blinks_left.lock().unwrap(), 96);
    assert_no_secrets(&output, &[], &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gclouds_adc_file_is_found_and_quota_project_flag_wins() {
    let stand_in = start_google().await;
    let config = tempfile::tempdir().unwrap();
    write_json(
        config.path(),
        "application_default_credentials.json",
        &authorized_user(&stand_in),
    );
    let mut command = load_command(&stand_in);
    command
        .env("CLOUDSDK_CONFIG", config.path())
        .args(["--quota-project", "flag-project"]);
    let output = loads_with(command, &stand_in, USER_TOKEN, Some("flag-project")).await;
    assert_no_secrets(&output, &[], &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_account_from_a_file_exchanges_at_sts_then_impersonates() {
    let stand_in = start_google().await;
    let dir = tempfile::tempdir().unwrap();
    let subject = dir.path().join("oidc-token");
    std::fs::write(&subject, format!("{SUBJECT_TOKEN}\n")).unwrap();
    let mut account = external_account(&stand_in, json!({ "file": subject }));
    account["service_account_impersonation_url"] = json!(stand_in.impersonation_url(LOADER));
    account["quota_project_id"] = json!("wif-project");
    let file = write_json(dir.path(), "wif.json", &account);
    let command = load_with_credential_file(&stand_in, &file);
    let output = loads_with(
        command,
        &stand_in,
        &impersonated_token(LOADER),
        Some("wif-project"),
    )
    .await;
    assert_no_secrets(&output, &[], &[&impersonated_token(LOADER)]);
    assert_eq!(
        stand_in.seen.token_paths(),
        [
            "/sts/token".to_owned(),
            format!("/iam/{LOADER}:generateAccessToken")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_account_from_a_url_reads_the_json_field_it_names() {
    let stand_in = start_google().await;
    let dir = tempfile::tempdir().unwrap();
    // What google-github-actions/auth writes: the runner's OIDC URL with its bearer token.
    let account = external_account(
        &stand_in,
        json!({
            "url": stand_in.url("/subject?audience=x"),
            "headers": { "Authorization": format!("Bearer {SUBJECT_URL_BEARER}") },
            "format": { "type": "json", "subject_token_field_name": "value" },
        }),
    );
    let file = write_json(dir.path(), "wif.json", &account);
    let command = load_with_credential_file(&stand_in, &file);
    let output = loads_with(command, &stand_in, STS_TOKEN, None).await;
    assert_no_secrets(&output, &[], &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonated_service_account_file_uses_its_source_credentials() {
    let stand_in = start_google().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_json(
        dir.path(),
        "impersonated.json",
        &json!({
            "type": "impersonated_service_account",
            "service_account_impersonation_url": stand_in.impersonation_url(LOADER),
            "source_credentials": authorized_user(&stand_in),
            "delegates": [],
        }),
    );
    let command = load_with_credential_file(&stand_in, &file);
    let output = loads_with(command, &stand_in, &impersonated_token(LOADER), None).await;
    assert_no_secrets(&output, &[], &[&impersonated_token(LOADER)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonate_flag_works_on_top_of_any_credential() {
    let stand_in = start_google().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_json(dir.path(), "user.json", &authorized_user(&stand_in));
    let mut command = load_command(&stand_in);
    command
        .env("GOOGLE_APPLICATION_CREDENTIALS", &file)
        .env("FHIRGEN_IAM_CREDENTIALS_ENDPOINT", stand_in.endpoint())
        .args(["--impersonate-service-account", LOADER]);
    loads_with(
        command,
        &stand_in,
        &impersonated_token(LOADER),
        Some("file-quota-project"),
    )
    .await;

    // Also with a static token as the source.
    let stand_in = start_google().await;
    let mut command = load_command(&stand_in);
    command
        .env("FHIRGEN_IAM_CREDENTIALS_ENDPOINT", stand_in.endpoint())
        .env("FHIRGEN_IMPERSONATE_SERVICE_ACCOUNT", LOADER)
        .args(["--access-token", "a-static-token-2222"]);
    let output = loads_with(command, &stand_in, &impersonated_token(LOADER), None).await;
    assert_no_secrets(&output, &[], &["a-static-token-2222"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonation_refused_names_the_account_and_the_role_to_grant() {
    let stand_in = start_google().await;
    let mut command = load_command(&stand_in);
    command
        .env("FHIRGEN_IAM_CREDENTIALS_ENDPOINT", stand_in.endpoint())
        .args(["--impersonate-service-account", LOADER])
        .args(["--access-token", "an-unknown-token-3333"]);
    let output = run(command).await;
    assert_exit(&output, 2);
    let stderr = stderr(&output);
    assert!(stderr.contains(LOADER), "{stderr}");
    assert!(
        stderr.contains("roles/iam.serviceAccountTokenCreator"),
        "{stderr}"
    );
    assert_no_secrets(&output, &[], &["an-unknown-token-3333"]);
    assert!(stand_in.seen.store_authorizations().is_empty());
}

/// Each broken file exits 2 before any request, naming the file, its type and the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_credential_files_name_the_field_that_is_wrong() {
    let stand_in = start_google().await;
    let dir = tempfile::tempdir().unwrap();
    let mut no_token_url = external_account(&stand_in, json!({ "file": "/nonexistent" }));
    no_token_url.as_object_mut().unwrap().remove("token_url");
    let aws = external_account(
        &stand_in,
        json!({ "environment_id": "aws1", "region_url": "http://169.254.169.254/latest/meta-data/placement/availability-zone" }),
    );
    let bad_format = external_account(
        &stand_in,
        json!({ "file": "/nonexistent", "format": { "type": "json" } }),
    );
    let mut user_without_secret = authorized_user(&stand_in);
    user_without_secret
        .as_object_mut()
        .unwrap()
        .remove("client_secret");
    let mut plain_http_sts = external_account(&stand_in, json!({ "file": "/nonexistent" }));
    plain_http_sts["token_url"] = json!("http://sts.example.com/v1/token");
    let key = || service_account(KEY_ACCOUNT, &stand_in.url("/sa/token"));
    let mut key_without_email = key();
    key_without_email
        .as_object_mut()
        .unwrap()
        .remove("client_email");
    let mut key_not_pem = key();
    key_not_pem["private_key"] = json!("-----BEGIN PRIVATE KEY-----\nnot a key\n");
    let mut key_over_plain_http = key();
    key_over_plain_http["token_uri"] = json!("http://oauth2.example.com/token");
    let cases = [
        (no_token_url, "`token_url` is missing"),
        (aws, "`credential_source.environment_id`"),
        (
            bad_format,
            "`credential_source.format.subject_token_field_name` is missing",
        ),
        (user_without_secret, "`client_secret` is missing"),
        (
            json!({"type": "gdch_service_account"}),
            "`type` is not one fhirgen knows",
        ),
        (plain_http_sts, "`token_url` must be an https URL"),
        (key_without_email, "`client_email` is missing"),
        (key_not_pem, "`private_key` is not a usable PKCS#8 RSA key"),
        (key_over_plain_http, "`token_uri` must be an https URL"),
    ];
    for (index, (content, expected)) in cases.into_iter().enumerate() {
        let kind = content["type"].as_str().unwrap().to_owned();
        let file = write_json(dir.path(), &format!("case-{index}.json"), &content);
        let command = load_with_credential_file(&stand_in, &file);
        let output = run(command).await;
        assert_exit(&output, 2);
        let stderr = stderr(&output);
        assert!(stderr.contains(expected), "case {index}: {stderr}");
        assert!(stderr.contains(&file.display().to_string()), "{stderr}");
        assert!(stderr.contains(&kind), "{stderr}");
        assert_no_secrets(&output, &[], &[]);
    }
    assert!(stand_in.seen.token_paths().is_empty());
    assert!(stand_in.seen.store_authorizations().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_token_names_the_credential() {
    let stand_in = start_google().await;
    let dir = tempfile::tempdir().unwrap();
    let mut user = authorized_user(&stand_in);
    user["refresh_token"] = json!("a-revoked-refresh-token-4444");
    let file = write_json(dir.path(), "user.json", &user);
    let command = load_with_credential_file(&stand_in, &file);
    let output = run(command).await;
    assert_exit(&output, 2);
    let stderr = stderr(&output);
    assert!(stderr.contains("authorized_user"), "{stderr}");
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    assert!(stderr.contains("400"), "{stderr}");
    assert_no_secrets(&output, &[], &["a-revoked-refresh-token-4444"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_key_signs_an_assertion_for_its_token_uri() {
    let stand_in = start_google().await;
    let dir = tempfile::tempdir().unwrap();
    let mut key = service_account(KEY_ACCOUNT, &stand_in.url("/sa/token"));
    key["quota_project_id"] = json!("key-project");
    let file = write_json(dir.path(), "key.json", &key);
    let command = load_with_credential_file(&stand_in, &file);
    let output = loads_with(command, &stand_in, KEY_TOKEN, Some("key-project")).await;
    assert_no_secrets(&output, &[], &[&private_key_line()]);
    // The stand-in checked the signature and the claims; one token for the run.
    assert_eq!(stand_in.seen.token_paths(), ["/sa/token"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_key_is_a_source_for_impersonation() {
    let stand_in = start_google().await;
    let dir = tempfile::tempdir().unwrap();
    let key = service_account(KEY_ACCOUNT, &stand_in.url("/sa/token"));
    let file = write_json(dir.path(), "key.json", &key);
    let mut command = load_command(&stand_in);
    command
        .env("GOOGLE_APPLICATION_CREDENTIALS", &file)
        .env("FHIRGEN_IAM_CREDENTIALS_ENDPOINT", stand_in.endpoint())
        .args(["--impersonate-service-account", LOADER]);
    let output = loads_with(command, &stand_in, &impersonated_token(LOADER), None).await;
    assert_no_secrets(&output, &[], &[&private_key_line()]);
    let through_iam = [
        "/sa/token".to_owned(),
        format!("/iam/{LOADER}:generateAccessToken"),
    ];
    assert_eq!(stand_in.seen.token_paths(), through_iam);

    // The key as an impersonated_service_account file's source_credentials.
    let stand_in = start_google().await;
    let file = write_json(
        dir.path(),
        "impersonated.json",
        &json!({
            "type": "impersonated_service_account",
            "service_account_impersonation_url": stand_in.impersonation_url(LOADER),
            "source_credentials": service_account(KEY_ACCOUNT, &stand_in.url("/sa/token")),
        }),
    );
    let command = load_with_credential_file(&stand_in, &file);
    let output = loads_with(command, &stand_in, &impersonated_token(LOADER), None).await;
    assert_no_secrets(&output, &[], &[&private_key_line()]);
    assert_eq!(stand_in.seen.token_paths(), through_iam);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_service_account_key_names_the_file_and_the_account() {
    let stand_in = start_google().await;
    let dir = tempfile::tempdir().unwrap();
    let key = service_account(DELETED_ACCOUNT, &stand_in.url("/sa/token"));
    let file = write_json(dir.path(), "key.json", &key);
    let command = load_with_credential_file(&stand_in, &file);
    let output = run(command).await;
    assert_exit(&output, 2);
    let stderr = stderr(&output);
    for expected in [
        "service_account",
        &file.display().to_string(),
        DELETED_ACCOUNT,
        "400",
        // The endpoint's own message, then what to do about it.
        "Invalid grant: account not found",
        "gcloud iam service-accounts keys list",
    ] {
        assert!(
            stderr.contains(expected),
            "expected `{expected}`:\n{stderr}"
        );
    }
    let requests = stand_in.seen.token_requests.lock().unwrap().clone();
    let [(path, form)] = &requests[..] else {
        panic!("{requests:?}");
    };
    assert_eq!(path, "/sa/token");
    let assertion = form
        .split("\"assertion\": \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap();
    assert_no_secrets(&output, &[], &[&private_key_line(), assertion]);
    assert!(stand_in.seen.store_authorizations().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_say_they_cannot_be_refreshed_and_must_not_be_empty() {
    let stand_in = start_google().await;
    let mut command = load_command(&stand_in);
    command.args(["--access-token", "a-static-token-2222"]);
    let output = loads_with(command, &stand_in, "a-static-token-2222", None).await;
    let stderr = stderr(&output);
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.contains("cannot be refreshed"))
            .count(),
        1,
        "{stderr}"
    );
    assert_no_secrets(&output, &[], &["a-static-token-2222"]);

    let mut command = load_command(&stand_in);
    command.args(["--access-token", ""]);
    let output = run(command).await;
    assert_exit(&output, 2);
    assert!(crate::common::stderr(&output).contains("empty"));
}
