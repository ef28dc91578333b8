//! Where an unfinished upload's session URI is kept between runs, so that a run killed
//! mid-upload resumes its objects where the service says they stand instead of starting over.
//!
//! One small file per object under `$FHIRGEN_STATE_DIR`, else `$XDG_STATE_HOME/fhirgen/uploads`,
//! else `~/.local/state/fhirgen/uploads`; readable by the user only, since a session URI lets
//! whoever holds it write the object. A file that cannot be written costs only the resume.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone)]
pub struct SessionStore {
    dir: Option<PathBuf>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    endpoint: String,
    bucket: String,
    name: String,
    session: String,
}

impl SessionStore {
    /// The store in the directory the environment names (see the module's documentation).
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let dir = var("FHIRGEN_STATE_DIR")
            .or_else(|| var("XDG_STATE_HOME").map(|d| d.join("fhirgen").join("uploads")))
            .or_else(|| var("HOME").map(|d| d.join(".local/state/fhirgen/uploads")));
        Self { dir }
    }

    /// A store that keeps nothing: for objects whose content a later run may not make again.
    pub fn none() -> Self {
        Self { dir: None }
    }

    fn path(&self, endpoint: &str, bucket: &str, name: &str) -> Option<PathBuf> {
        let key = [endpoint, bucket, name].join("\n");
        let file = format!(
            "{:08x}{:08x}.json",
            crc32c::crc32c(key.as_bytes()),
            crc32c::crc32c(name.as_bytes())
        );
        Some(self.dir.as_ref()?.join(file))
    }

    /// The session URI of an earlier run's unfinished upload of this object, if one was kept.
    pub fn load(&self, endpoint: &str, bucket: &str, name: &str) -> Option<String> {
        let text = std::fs::read(self.path(endpoint, bucket, name)?).ok()?;
        let saved: Saved = serde_json::from_slice(&text).ok()?;
        (saved.endpoint == endpoint && saved.bucket == bucket && saved.name == name)
            .then_some(saved.session)
    }

    pub fn save(&self, endpoint: &str, bucket: &str, name: &str, session: &str) {
        let Some(path) = self.path(endpoint, bucket, name) else {
            return;
        };
        let saved = Saved {
            endpoint: endpoint.to_owned(),
            bucket: bucket.to_owned(),
            name: name.to_owned(),
            session: session.to_owned(),
        };
        if let Err(e) = write_private(&path, &serde_json::to_vec(&saved).unwrap_or_default()) {
            tracing::warn!(
                "cannot keep the upload session in {} ({e}): a run stopped now restarts this \
                 object instead of resuming it",
                path.display()
            );
        }
    }

    pub fn forget(&self, endpoint: &str, bucket: &str, name: &str) {
        if let Some(path) = self.path(endpoint, bucket, name) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Writes `data` to `path` (readable by the user only) through a file beside it, so that a
/// kill leaves the old file or the new one, never half of one.
fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let partial = path.with_extension("partial");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&partial)?;
    file.write_all(data)?;
    file.sync_all()?;
    std::fs::rename(&partial, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_kept_per_object_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap().to_owned();
        let store =
            SessionStore::from_env(|name| (name == "FHIRGEN_STATE_DIR").then(|| root.clone()));
        assert_eq!(store.load("e", "b", "o"), None);
        store.save("e", "b", "o", "http://x/session-1");
        assert_eq!(
            store.load("e", "b", "o").as_deref(),
            Some("http://x/session-1")
        );
        assert_eq!(store.load("e", "b", "other"), None);
        assert_eq!(store.load("another endpoint", "b", "o"), None);
        store.forget("e", "b", "o");
        assert_eq!(store.load("e", "b", "o"), None);
        let home = SessionStore::from_env(|name| (name == "HOME").then(|| "/home/u".to_owned()));
        assert_eq!(
            home.dir.unwrap(),
            PathBuf::from("/home/u/.local/state/fhirgen/uploads")
        );
    }
}
