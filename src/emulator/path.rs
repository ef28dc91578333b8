//! Which store a request path addresses, and what it asks of it.

use super::STORE_NAME;

/// A FHIR request path split into the store it addresses and the part after `/fhir`.
#[derive(Debug, PartialEq, Eq)]
pub struct FhirPath<'a> {
    pub store: String,
    /// The path up to and including `/fhir`.
    pub prefix: &'a str,
    pub rest: &'a str,
}

impl<'a> FhirPath<'a> {
    pub fn parse(path: &'a str) -> Option<Self> {
        if let Some(rest) = path.strip_prefix("/fhir") {
            if rest.is_empty() || rest.starts_with('/') {
                return Some(Self {
                    store: STORE_NAME.to_owned(),
                    prefix: "/fhir",
                    rest,
                });
            }
            return None;
        }
        let segments: Vec<&str> = path.strip_prefix("/v1/")?.splitn(10, '/').collect();
        match segments.as_slice() {
            [
                "projects",
                p,
                "locations",
                l,
                "datasets",
                d,
                "fhirStores",
                s,
                "fhir",
                rest @ ..,
            ] if [p, l, d, s].iter().all(|part| !part.is_empty()) => {
                let prefix_len = match rest.first() {
                    Some(rest) => path.len() - rest.len() - 1,
                    None => path.len(),
                };
                Some(Self {
                    store: store_name(p, l, d, s),
                    prefix: &path[..prefix_len],
                    rest: &path[prefix_len..],
                })
            }
            _ => None,
        }
    }

    /// executeBundle: a POST to the FHIR base itself.
    pub fn is_base(&self) -> bool {
        self.rest.is_empty() || self.rest == "/"
    }
}

/// The store a `fhirStores.get` path names: `/v1/projects/P/locations/L/datasets/D/fhirStores/S`.
pub fn store_resource(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.strip_prefix("/v1/")?.split('/').collect();
    match segments.as_slice() {
        [
            "projects",
            p,
            "locations",
            l,
            "datasets",
            d,
            "fhirStores",
            s,
        ] if [p, l, d, s].iter().all(|part| !part.is_empty()) => Some(store_name(p, l, d, s)),
        _ => None,
    }
}

fn store_name(project: &str, location: &str, dataset: &str, store: &str) -> String {
    format!("projects/{project}/locations/{location}/datasets/{dataset}/fhirStores/{store}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_store() {
        let p =
            FhirPath::parse("/v1/projects/a/locations/b/datasets/c/fhirStores/d/fhir/Patient/1")
                .unwrap();
        assert_eq!(p.store, "projects/a/locations/b/datasets/c/fhirStores/d");
        assert_eq!(
            p.prefix,
            "/v1/projects/a/locations/b/datasets/c/fhirStores/d/fhir"
        );
        assert_eq!(p.rest, "/Patient/1");
        assert!(!p.is_base());
        let bare = "/v1/projects/a/locations/b/datasets/c/fhirStores/d/fhir";
        let p = FhirPath::parse(bare).unwrap();
        assert_eq!((p.prefix, p.rest), (bare, ""));
        assert!(p.is_base());
        let slash = format!("{bare}/");
        let p = FhirPath::parse(&slash).unwrap();
        assert_eq!((p.prefix, p.rest), (bare, "/"));
        assert!(p.is_base());
        let p = FhirPath::parse("/fhir/metadata").unwrap();
        assert_eq!(
            (p.store.as_str(), p.prefix, p.rest),
            (STORE_NAME, "/fhir", "/metadata")
        );
        assert!(FhirPath::parse("/fhirx").is_none());
        assert!(FhirPath::parse("/v1/projects/a/locations/b/datasets/c/fhirStores/d").is_none());
        assert!(
            FhirPath::parse("/v1/projects//locations/b/datasets/c/fhirStores/d/fhir").is_none()
        );
    }

    #[test]
    fn store_resource_paths() {
        assert_eq!(
            store_resource("/v1/projects/a/locations/b/datasets/c/fhirStores/d").as_deref(),
            Some("projects/a/locations/b/datasets/c/fhirStores/d")
        );
        assert!(
            store_resource("/v1/projects/a/locations/b/datasets/c/fhirStores/d/fhir").is_none()
        );
        assert!(store_resource("/v1/projects/a/locations/b/datasets/c/fhirStores/").is_none());
        assert!(store_resource("/fhir").is_none());
    }
}
