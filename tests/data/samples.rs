//! Where the tests find third-party sample data (see ATTRIBUTION.md beside this file).

use std::path::PathBuf;

/// A sample copied into this folder, its licence allowing it.
pub fn bundled(name: &str) -> PathBuf {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data")).join(name);
    assert!(
        path.exists(),
        "{} is missing from the repository",
        path.display()
    );
    path
}

/// A sample without a licence file, so not copied here: read from `../shared/data/` beside
/// the repository (or `FHIRGEN_SHARED_DATA`). Missing, it fails the test that needs it.
pub fn unlicensed(name: &str) -> PathBuf {
    let root = std::env::var_os("FHIRGEN_SHARED_DATA").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data")),
        PathBuf::from,
    );
    let path = root.join(name);
    let origin = match name {
        "synthea-bundles" => {
            "the folder `fhir/` of https://github.com/joundso/fhir-demo-data at commit \
             cc3428734fe0c3102b0cfae608f04037874b6571 (the files hospitalInformation1625487628939.json, \
             practitionerInformation1625487628939.json and the three patients Andreas188_*, Ken316_*, \
             Philip822_*)"
        }
        "bulk-ndjson/ktmtwm-sytheadata" => {
            "all 17 files of https://github.com/ktmtwm/sytheadata at commit \
             d7575382126c9c88373e31a67672a5a87b49aa9f"
        }
        _ => "the list in .github/workflows/ci.yml",
    };
    assert!(
        path.is_dir(),
        "sample data {} is missing: put there {origin} (the step `Fetch sample data` of \
         .github/workflows/ci.yml does it), or point FHIRGEN_SHARED_DATA at a folder holding `{name}`",
        path.display()
    );
    path
}
