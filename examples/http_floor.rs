//! The HTTP client's own cost, for bench/run.sh to quote beside fhirgen's: 64 tasks POST a
//! small fixed Patient (the Go baseline's) and read each answer whole, with reqwest configured
//! as fhirgen configures it for plain http, or with the bare hyper-util client fhirgen used
//! before reqwest. No generation, no checks, no bookkeeping.
//!
//!   cargo run --release --example http_floor -- http://127.0.0.1:PORT/fhir 40000 reqwest|hyper

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Full};

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const WORKERS: usize = 64;
const FHIR_JSON: &str = "application/fhir+json;charset=utf-8";

type HyperClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<bytes::Bytes>,
>;

/// One of the two clients measured.
#[derive(Clone)]
enum Client {
    Reqwest(reqwest::Client),
    Hyper(Box<HyperClient>),
}

impl Client {
    async fn post(&self, url: &reqwest::Url, body: String) {
        match self {
            Client::Reqwest(client) => {
                let answer = client
                    .post(url.clone())
                    .header(http::header::CONTENT_TYPE, FHIR_JSON)
                    .body(body)
                    .send()
                    .await
                    .expect("the sink answers");
                assert!(answer.status().is_success(), "{}", answer.status());
                answer.bytes().await.expect("a whole answer");
            }
            Client::Hyper(client) => {
                let request = http::Request::post(url.as_str())
                    .header(http::header::CONTENT_TYPE, FHIR_JSON)
                    .body(Full::new(bytes::Bytes::from(body)))
                    .expect("a request");
                let answer = client.request(request).await.expect("the sink answers");
                assert!(answer.status().is_success(), "{}", answer.status());
                answer.into_body().collect().await.expect("a whole answer");
            }
        }
    }
}

// One runtime thread, as `fhirgen load` drives a store over the network (src/runtime.rs).
#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(base), Some(count), Some(kind)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: http_floor FHIR_BASE COUNT reqwest|hyper");
        std::process::exit(2);
    };
    let count: usize = count.parse().expect("COUNT is a number");
    let client = match kind.as_str() {
        "reqwest" => Client::Reqwest(
            reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .retry(reqwest::retry::never().max_retries_per_request(0))
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(10))
                .pool_max_idle_per_host(WORKERS)
                .http1_only()
                .build()
                .expect("an HTTP client"),
        ),
        "hyper" => Client::Hyper(Box::new(
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(WORKERS)
                .build_http(),
        )),
        other => {
            eprintln!("http_floor: the client is reqwest or hyper, not {other}");
            std::process::exit(2);
        }
    };
    let url: reqwest::Url = format!("{base}/Patient")
        .parse()
        .expect("FHIR_BASE is a URL");
    let next = Arc::new(AtomicUsize::new(0));
    let started = std::time::Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (client, url, next) = (client.clone(), url.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let body = format!(
                        r#"{{"resourceType":"Patient","identifier":[{{"system":"https://example.org/sid/patient","value":"p-{i}"}}],"name":[{{"family":"Smith","given":["Alex"]}}],"gender":"female","birthDate":"1980-01-01"}}"#
                    );
                    client.post(&url, body).await;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("a worker");
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{{\"requests\":{count},\"elapsed_seconds\":{elapsed:.3},\"requests_per_second\":{:.1}}}",
        count as f64 / elapsed
    );
}
