//! What the emulator says about itself: the store resource (`fhirStores.get`) and the FHIR
//! CapabilityStatement (`metadata`), both from its options, and honest about what it does.

use serde_json::{Map, Value, json};

use super::{EmulatorOptions, validate};

/// The store as `fhirStores.get` describes it. Like Google's proto3 JSON, a setting that is
/// false is left out rather than written as `false`.
pub fn store_settings(name: &str, options: &EmulatorOptions) -> Value {
    let mut settings = Map::new();
    settings.insert("name".into(), json!(name));
    settings.insert("version".into(), json!("R4"));
    for (field, on) in [
        ("enableUpdateCreate", options.update_create),
        (
            "disableReferentialIntegrity",
            !options.referential_integrity,
        ),
        // Only the current version of a resource is kept: there is no history to read.
        ("disableResourceVersioning", true),
        // Unknown search parameters are refused, never ignored.
        ("defaultSearchHandlingStrict", true),
    ] {
        if on {
            settings.insert(field.into(), json!(true));
        }
    }
    // References are found (and checked) at any depth, extensions included.
    settings.insert("complexDataTypeReferenceParsing".into(), json!("ENABLED"));
    Value::Object(settings)
}

/// An R4 CapabilityStatement listing exactly the interactions and search parameters served.
pub fn capability_statement(base: &str, options: &EmulatorOptions) -> Value {
    let mut reference_policy = vec!["literal", "local"];
    if options.referential_integrity {
        reference_policy.push("enforced");
    }
    let resources: Vec<Value> = validate::RESOURCE_TYPES
        .iter()
        .map(|resource_type| {
            json!({
                "type": resource_type,
                "interaction": [
                    {"code": "read"},
                    {"code": "vread", "documentation": "only the current version is kept"},
                    {"code": "update"},
                    {"code": "create"},
                    {"code": "search-type"}
                ],
                "versioning": "versioned",
                "readHistory": false,
                "updateCreate": options.update_create,
                "conditionalCreate": true,
                "conditionalRead": "not-supported",
                "conditionalUpdate": true,
                "conditionalDelete": "not-supported",
                "referencePolicy": reference_policy,
                "searchParam": [
                    {"name": "_id", "type": "token"},
                    {"name": "identifier", "type": "token"},
                    {"name": "_tag", "type": "token"}
                ]
            })
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": chrono::Utc::now().format("%Y-%m-%d").to_string(),
        "kind": "instance",
        "software": {"name": "fhirgen emulator", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {
            "description": "In-memory emulator of a Cloud Healthcare API FHIR store",
            "url": base
        },
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "documentation": "Conditional create and update match by identifier only, as on \
                              the Cloud Healthcare API. Search also takes _count, _offset and \
                              _summary=count.",
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}]
        }]
    })
}
