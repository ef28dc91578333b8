//! Store and token requests go through the proxy the environment names, and NO_PROXY takes a
//! host out of it: HTTP_PROXY forwards plain-http requests, HTTPS_PROXY tunnels https ones
//! with CONNECT (what users behind a corporate proxy have). reqwest makes no exception for
//! loopback addresses, so a proxy on 127.0.0.1 sees requests for 127.0.0.1. A proxy's
//! credentials are sent to it and never shown.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::common::google::*;
use crate::common::*;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A forward proxy for plain http: keeps the absolute URL of each request and passes it on.
#[derive(Clone, Default)]
struct ForwardProxy {
    seen: Arc<Mutex<Vec<String>>>,
}

async fn forward(State(proxy): State<ForwardProxy>, request: Request) -> Response {
    let uri = request.uri().clone();
    proxy.seen.lock().unwrap().push(uri.to_string());
    if uri.scheme_str() != Some("http") {
        return (
            StatusCode::BAD_REQUEST,
            "this proxy forwards absolute http URLs only",
        )
            .into_response();
    }
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 1 << 24).await.unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut outgoing = client.request(parts.method, uri.to_string()).body(body);
    for (name, value) in &parts.headers {
        if name != "host" && name != "proxy-connection" {
            outgoing = outgoing.header(name, value);
        }
    }
    let answer = outgoing.send().await.unwrap();
    let status = answer.status();
    let headers = answer.headers().clone();
    let body = answer.bytes().await.unwrap();
    let mut response = (status, body).into_response();
    for (name, value) in &headers {
        if name != "content-length" && name != "transfer-encoding" {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

async fn start_proxy() -> (String, ForwardProxy) {
    let proxy = ForwardProxy::default();
    let app = Router::new().fallback(forward).with_state(proxy.clone());
    (format!("http://{}", serve_on_loopback(app).await), proxy)
}

fn user_credential(dir: &std::path::Path, stand_in: &StandIn) -> std::path::PathBuf {
    let path = dir.join("user.json");
    std::fs::write(&path, stand_in.authorized_user().to_string()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_and_token_requests_go_through_the_proxy() {
    let stand_in = start_google().await;
    let (proxy_url, proxy) = start_proxy().await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = load_command(&stand_in);
    command
        .env(
            "GOOGLE_APPLICATION_CREDENTIALS",
            user_credential(dir.path(), &stand_in),
        )
        .env("HTTP_PROXY", &proxy_url);
    let output = run(command).await;
    assert_exit(&output, 0);
    assert_eq!(summary(&output)["stored"], 20);
    assert_no_secrets(&output, &[], &[]);
    let seen = proxy.seen.lock().unwrap().clone();
    let token_url = stand_in.url("/oauth/token");
    assert_eq!(
        seen.iter().filter(|u| **u == token_url).count(),
        1,
        "{seen:?}"
    );
    let store_base = format!("{}/{STORE}/fhir/", stand_in.endpoint());
    assert_eq!(
        seen.iter().filter(|u| u.starts_with(&store_base)).count(),
        20,
        "{seen:?}"
    );
    assert_eq!(stand_in.seen.store_authorizations().len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_proxy_takes_a_host_out_of_the_proxy() {
    let stand_in = start_google().await;
    let (proxy_url, proxy) = start_proxy().await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = load_command(&stand_in);
    command
        .env(
            "GOOGLE_APPLICATION_CREDENTIALS",
            user_credential(dir.path(), &stand_in),
        )
        .env("http_proxy", &proxy_url)
        .env("NO_PROXY", "127.0.0.1");
    let output = run(command).await;
    assert_exit(&output, 0);
    assert_eq!(summary(&output)["stored"], 20);
    assert!(proxy.seen.lock().unwrap().is_empty());
    assert_eq!(stand_in.seen.store_authorizations().len(), 20);
}

/// A proxy that wants credentials it was not given answers a plain-http request with 407:
/// the run stops at once with what to check, instead of failing every resource in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_wants_credentials_stops_the_run() {
    let refusing = Router::new().fallback(|| async {
        (
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            [("proxy-authenticate", "Basic realm=\"corp\"")],
            "proxy authentication required",
        )
    });
    let proxy = format!("http://{}", serve_on_loopback(refusing).await);
    let mut command = fhirgen();
    command
        .args([
            "load",
            "--fhir-url",
            "http://127.0.0.1:9/fhir",
            "--count",
            "200",
        ])
        .args(["--workers", "4", "--json"])
        .env("HTTP_PROXY", &proxy);
    let output = run(command).await;
    assert_exit(&output, 1);
    let stderr = stderr(&output);
    assert!(
        stderr.contains("the proxy refused fhirgen's credentials (HTTP 407")
            && stderr.contains("check the user:password in HTTPS_PROXY"),
        "{stderr}"
    );
    let summary = summary(&output);
    assert_eq!(summary["stored"], 0);
    assert!(summary["requests"].as_u64().unwrap() <= 4, "{summary}");
}

/// An https proxy: answers `CONNECT host:port` with 200 and then passes bytes both ways. It
/// keeps each CONNECT's target and Proxy-Authorization, and refuses with 407 any other
/// Proxy-Authorization than `required`, when one is.
#[derive(Clone, Default)]
struct ConnectProxy {
    targets: Arc<Mutex<Vec<String>>>,
    authorizations: Arc<Mutex<Vec<Option<String>>>>,
    required: Option<String>,
}

impl ConnectProxy {
    fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }

    async fn tunnel(self, mut client: tokio::net::TcpStream) {
        // Byte by byte up to the blank line: nothing of the tunnel is read past the head.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            match client.read_u8().await {
                Ok(byte) if head.len() < 8192 => head.push(byte),
                _ => return,
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let mut lines = head.lines();
        let request_line: Vec<&str> = lines.next().unwrap_or_default().split(' ').collect();
        let ["CONNECT", target, _] = request_line[..] else {
            let _ = client
                .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
                .await;
            return;
        };
        let authorization = lines.find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("proxy-authorization")
                .then(|| value.trim().to_owned())
        });
        self.targets.lock().unwrap().push(target.to_owned());
        self.authorizations
            .lock()
            .unwrap()
            .push(authorization.clone());
        if self.required.is_some() && authorization != self.required {
            let _ = client
                .write_all(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n",
                )
                .await;
            return;
        }
        let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
            let _ = client
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                .await;
            return;
        };
        if client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_ok()
        {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
    }
}

/// Starts a CONNECT proxy on 127.0.0.1; gives its port.
async fn start_connect_proxy(proxy: &ConnectProxy) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let proxy = proxy.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(proxy.clone().tunnel(socket));
        }
    });
    port
}

/// Writes the TLS stand-in's certificate for `--ca-file`.
fn ca_file(dir: &Path, stand_in: &StandIn) -> PathBuf {
    let path = dir.join("ca.pem");
    std::fs::write(&path, stand_in.certificate_pem.as_deref().unwrap()).unwrap();
    path
}

/// `load --fhir-url` into the TLS stand-in's store, trusting its certificate, no credential.
fn load_over_tls(stand_in: &StandIn, ca_file: &Path) -> std::process::Command {
    let mut command = fhirgen();
    without_proxies(&mut command);
    command
        .args([
            "load",
            "--fhir-url",
            &format!("{}/{STORE}/fhir", stand_in.endpoint()),
        ])
        .arg("--ca-file")
        .arg(ca_file)
        .args(SMALL_LOAD);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_store_requests_tunnel_through_https_proxy() {
    let stand_in = start_google_tls().await;
    let proxy = ConnectProxy::default();
    let proxy_port = start_connect_proxy(&proxy).await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = load_over_tls(&stand_in, &ca_file(dir.path(), &stand_in));
    command.env("HTTPS_PROXY", format!("http://127.0.0.1:{proxy_port}"));
    let output = run(command).await;
    assert_exit(&output, 0);
    assert_eq!(summary(&output)["stored"], 20);
    assert_eq!(stand_in.seen.store_requests.lock().unwrap().len(), 20);
    // One tunnel per connection, each to the store.
    let targets = proxy.targets();
    let store = stand_in.addr.to_string();
    assert!(!targets.is_empty());
    assert!(targets.iter().all(|t| *t == store), "{targets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_token_request_tunnels_unless_no_proxy_names_its_host() {
    let stand_in = start_google_tls().await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca_file(dir.path(), &stand_in);
    // The token endpoint by another name than the store's, so that each has its own tunnel.
    let key = service_account(KEY_ACCOUNT, &stand_in.localhost_url("/sa/token"));
    let key_file = dir.path().join("key.json");
    std::fs::write(&key_file, key.to_string()).unwrap();
    let token_host = format!("localhost:{}", stand_in.addr.port());
    let store_host = stand_in.addr.to_string();
    for no_proxy in [None, Some("localhost")] {
        let proxy = ConnectProxy::default();
        let proxy_port = start_connect_proxy(&proxy).await;
        let before = stand_in.seen.token_paths().len();
        let mut command = load_command(&stand_in);
        command
            .env("GOOGLE_APPLICATION_CREDENTIALS", &key_file)
            .env("HTTPS_PROXY", format!("http://127.0.0.1:{proxy_port}"))
            .arg("--ca-file")
            .arg(&ca_file);
        if let Some(hosts) = no_proxy {
            command.env("NO_PROXY", hosts);
        }
        let output = run(command).await;
        assert_exit(&output, 0);
        assert_eq!(summary(&output)["stored"], 20);
        assert_no_secrets(&output, &[], &[&private_key_line()]);
        assert_eq!(stand_in.seen.token_paths()[before..], ["/sa/token"]);
        let targets = proxy.targets();
        let tunnels_to = |host: &str| targets.iter().filter(|t| *t == host).count();
        let expected_token_tunnels = if no_proxy.is_some() { 0 } else { 1 };
        assert_eq!(
            tunnels_to(&token_host),
            expected_token_tunnels,
            "{targets:?}"
        );
        assert!(tunnels_to(&store_host) >= 1, "{targets:?}");
        assert_eq!(
            tunnels_to(&token_host) + tunnels_to(&store_host),
            targets.len(),
            "{targets:?}"
        );
    }
    stand_in.seen.assert_store_requests_carried(KEY_TOKEN, 40);
}

const PROXY_PASSWORD: &str = "proxy-pa$$word-4242";
/// `PROXY_PASSWORD` percent-encoded, as it goes in a proxy URL.
const PROXY_PASSWORD_ENCODED: &str = "proxy-pa%24%24word-4242";
/// base64("proxy-user:proxy-pa$$word-4242"), as Proxy-Authorization carries it.
const PROXY_BASIC: &str = "cHJveHktdXNlcjpwcm94eS1wYSQkd29yZC00MjQy";

/// Proxy-Authorization goes to the proxy in each CONNECT; neither `-vv` nor `RUST_LOG=trace`
/// shows the password in any form, nor does the failure when the proxy refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_password_is_sent_to_the_proxy_and_never_shown() {
    let stand_in = start_google_tls().await;
    let proxy = ConnectProxy {
        required: Some(format!("Basic {PROXY_BASIC}")),
        ..ConnectProxy::default()
    };
    let proxy_port = start_connect_proxy(&proxy).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca_file(dir.path(), &stand_in);
    let failed = dir.path().join("failed.ndjson");
    let with_password = |password: &str, logs: &[&str]| {
        let mut command = load_over_tls(&stand_in, &ca_file);
        command
            .env(
                "HTTPS_PROXY",
                format!("http://proxy-user:{password}@127.0.0.1:{proxy_port}"),
            )
            .args(["--max-retries", "0", "--failed"])
            .arg(&failed);
        match logs {
            ["RUST_LOG", directives] => command.env("RUST_LOG", directives),
            _ => command.args(logs),
        };
        command
    };
    for logs in [&["-vv"][..], &["RUST_LOG", "trace"]] {
        let output = run(with_password(PROXY_PASSWORD_ENCODED, logs)).await;
        assert_exit(&output, 0);
        assert_eq!(summary(&output)["stored"], 20);
        assert_no_secrets(
            &output,
            &[&failed],
            &[PROXY_PASSWORD, PROXY_PASSWORD_ENCODED, PROXY_BASIC],
        );
    }
    let authorizations = proxy.authorizations.lock().unwrap().clone();
    assert!(!authorizations.is_empty());
    assert!(
        authorizations
            .iter()
            .all(|a| a.as_deref() == Some(&format!("Basic {PROXY_BASIC}"))),
        "{authorizations:?}"
    );

    let wrong = "a-wrong-proxy-password-5151";
    let output = run(with_password(wrong, &["-vv"])).await;
    assert_exit(&output, 1);
    let stderr = stderr(&output);
    assert!(stderr.contains("proxy authorization required"), "{stderr}");
    // No retry changes a proxy's mind: the run stops with the reason and what to check.
    assert!(
        stderr.contains("the proxy refused fhirgen's credentials")
            && stderr.contains("check the user:password in HTTPS_PROXY"),
        "{stderr}"
    );
    // base64("proxy-user:a-wrong-proxy-password-5151")
    let wrong_basic = "cHJveHktdXNlcjphLXdyb25nLXByb3h5LXBhc3N3b3JkLTUxNTE=";
    assert_no_secrets(&output, &[&failed], &[wrong, wrong_basic]);
}

/// A store behind a forwarding proxy that echoes every header it got, Proxy-Authorization
/// among them, in its error body: what fhirgen shows of that answer holds no part of the
/// proxy's password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_password_echoed_by_a_store_is_cut_from_what_is_shown() {
    let echoing_store = Router::new().fallback(|headers: axum::http::HeaderMap| async move {
        let echoed = headers
            .get("proxy-authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none");
        (
            StatusCode::BAD_REQUEST,
            format!("cannot parse a request with proxy-authorization: {echoed}"),
        )
    });
    let store = serve_on_loopback(echoing_store).await;
    let (proxy_url, proxy) = start_proxy().await;
    let authenticated = proxy_url.replace(
        "http://",
        &format!("http://proxy-user:{PROXY_PASSWORD_ENCODED}@"),
    );
    let dir = tempfile::tempdir().unwrap();
    let failed = dir.path().join("failed.ndjson");
    let mut command = fhirgen();
    without_proxies(&mut command);
    command
        .env("HTTP_PROXY", &authenticated)
        .args(["load", "--fhir-url", &format!("http://{store}/fhir")])
        .args(["--mode", "create", "--count", "5", "--workers", "2"])
        .args(["--max-retries", "0", "--json", "-vv", "--failed"])
        .arg(&failed);
    let output = run(command).await;
    assert_exit(&output, 1);
    // The metadata read and the three shared resources that refer to nothing: the store
    // refuses them, so the two that refer to them are not sent. All five are in --failed.
    let carried = proxy.seen.lock().unwrap().len();
    assert_eq!(carried, 4, "requests through the proxy");
    let failed_lines = std::fs::read_to_string(&failed).unwrap();
    assert_eq!(failed_lines.lines().count(), 5);
    // The echo reached the report, with the credential cut out of it.
    assert!(
        failed_lines.contains("proxy-authorization: Basic (redacted)"),
        "{failed_lines}"
    );
    assert_no_secrets(
        &output,
        &[&failed],
        &[PROXY_PASSWORD, PROXY_PASSWORD_ENCODED, PROXY_BASIC],
    );
}
