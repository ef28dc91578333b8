//! Store and token requests go through the proxy the environment names (HTTP_PROXY here, as
//! the stand-ins speak plain http), and NO_PROXY takes a host out of it. reqwest makes no
//! exception for loopback addresses, so a proxy on 127.0.0.1 sees requests for 127.0.0.1.

mod common;
#[path = "common/google.rs"]
mod google;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::*;
use google::*;

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
    let user = serde_json::json!({
        "type": "authorized_user",
        "client_id": "123.apps.googleusercontent.com",
        "client_secret": CLIENT_SECRET,
        "refresh_token": REFRESH_TOKEN,
        "token_uri": stand_in.url("/oauth/token"),
    });
    std::fs::write(&path, user.to_string()).unwrap();
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
