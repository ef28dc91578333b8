//! The managed-import path: a data set written to Cloud Storage as NDJSON objects
//! (`generate -o gs://BUCKET/PREFIX/`), which the store's `fhirStores.import` reads
//! (`load --via gs://BUCKET/PREFIX`).

pub mod dataset;
pub mod input;
pub mod operation;
pub mod prefix;
pub mod sessions;
pub mod shards;
pub mod via;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::{GenerateArgs, OutputFormat, StorageArgs};
use crate::config::ConnectionConfig;
use crate::exit::usage;
use crate::generate::GeneratorConfig;
use crate::store::auth::Credentials;
use crate::store::storage::{Endpoint, GcsUrl, StorageClient};
use crate::store::target;
use dataset::{Layout, Uploader};
use sessions::SessionStore;

/// `-o gs://...` checked, or `None` for a file or stdout.
pub fn gcs_output(output: Option<&Path>) -> anyhow::Result<Option<GcsUrl>> {
    let Some(raw) = output
        .and_then(Path::to_str)
        .filter(|raw| GcsUrl::is_gcs(raw))
    else {
        return Ok(None);
    };
    GcsUrl::parse(raw)
        .map(Some)
        .map_err(|why| usage(format!("-o {raw} is not a Cloud Storage location: {why}")))
}

/// The Cloud Storage client with the store's credential, proxies and CAs, or none of the
/// credential for an emulator.
pub async fn storage_client(
    connection: &ConnectionConfig,
    storage: &StorageArgs,
) -> anyhow::Result<StorageClient> {
    let endpoint = Endpoint::resolve(storage.storage_endpoint.as_deref(), |name| {
        std::env::var(name).ok()
    })?;
    let credentials = if endpoint.emulated {
        Credentials::none()
    } else {
        target::google_credentials(&connection.auth, &connection.network).await?
    };
    StorageClient::new(
        endpoint,
        Arc::new(credentials),
        &connection.network,
        connection.retry.clone(),
        connection.timeout,
    )
}

/// `fhirgen generate -o gs://BUCKET/PREFIX/`.
pub async fn generate(
    args: GenerateArgs,
    config: GeneratorConfig,
    url: GcsUrl,
) -> anyhow::Result<ExitCode> {
    if args.format != OutputFormat::Ndjson {
        return Err(usage(
            "-o gs://... writes NDJSON, one resource per line, which is what the import reads: \
             leave out --format bundle",
        ));
    }
    let connection = ConnectionConfig::from_args(args.connection)?;
    let client = storage_client(&connection, &args.storage).await?;
    let uploader = Uploader {
        client: Arc::new(client),
        sessions: SessionStore::from_env(|name| std::env::var(name).ok()),
        chunk_size: args.storage.upload_chunk_size,
    };
    let layout = Layout::new(url, &config);
    let written = uploader.write(&layout, &config).await?;
    let bytes: u64 = written.manifest.objects.iter().map(|o| o.bytes).sum();
    crate::say!(
        "{} resources in {} objects ({:.1} MB) under {}: {} uploaded, {} already there; \
         manifest {}",
        written.manifest.total,
        written.manifest.objects.len(),
        bytes as f64 / 1e6,
        layout.url,
        written.uploaded,
        written.reused,
        layout.url.object_url(&layout.manifest_name()),
    );
    Ok(crate::exit::SUCCESS.into())
}
