//! The in-memory FHIR store: create, update, read, search and bundle execution, with no HTTP in
//! sight so it can be tested directly.
//!
//! Each store keeps one table per resource type behind a single `RwLock`. Reads share the lock;
//! a write (a single resource or a whole transaction) takes it once, decides, checks and commits
//! without awaiting, so transactions are atomic and conditional creates cannot race. Parsing and
//! validation happen before the lock. Resources are kept serialized (`Bytes`), so a read costs a
//! reference-count increment and the body is never serialized twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};

use bytes::Bytes;
use serde_json::{Map, Value};

use super::query::{self, SearchQuery, Token};
use super::validate;
use crate::fhir::for_each_reference_mut;

/// Transactions with more entries are refused at once, as on the Healthcare API (its quotas
/// page: "FHIR executeBundle size limits").
pub const MAX_TRANSACTION_ENTRIES: usize = 4500;

/// A failure to report as an OperationOutcome with this HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FhirError {
    pub status: u16,
    /// The OperationOutcome `issue.code`.
    pub code: &'static str,
    pub diagnostics: String,
}

impl FhirError {
    pub fn new(status: u16, code: &'static str, diagnostics: impl Into<String>) -> Self {
        Self {
            status,
            code,
            diagnostics: diagnostics.into(),
        }
    }

    pub fn invalid(diagnostics: impl Into<String>) -> Self {
        Self::new(400, "invalid", diagnostics)
    }

    pub fn not_found(diagnostics: impl Into<String>) -> Self {
        Self::new(404, "not-found", diagnostics)
    }

    pub fn not_supported(diagnostics: impl Into<String>) -> Self {
        Self::new(400, "not-supported", diagnostics)
    }

    /// Prefixes the diagnostics with the index of the Bundle entry that failed.
    fn in_entry(mut self, index: usize) -> Self {
        self.diagnostics = format!("entry {index}: {}", self.diagnostics);
        self
    }

    pub fn operation_outcome(&self) -> Value {
        serde_json::json!({
            "resourceType": "OperationOutcome",
            "issue": [{
                "severity": "error",
                "code": self.code,
                "diagnostics": self.diagnostics,
            }]
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Refuse references to resources that do not exist (the Healthcare API default).
    pub referential_integrity: bool,
    /// Let PUT create a resource that does not exist (`enableUpdateCreate`).
    pub update_create: bool,
    /// Write a transaction's entries each on its own, as a batch, and answer as a transaction.
    pub transaction_as_batch: bool,
    /// Answer every `_tag` search with nothing, as some servers do for some types (Medplum
    /// for `Binary?_tag=`).
    pub tag_search_blind: bool,
}

/// A new Google store's settings.
impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            referential_integrity: true,
            update_create: false,
            transaction_as_batch: false,
            tag_search_blind: false,
        }
    }
}

/// One stored resource, as readers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResource {
    pub resource_type: String,
    pub id: String,
    pub version: u64,
    pub last_updated: Arc<str>,
    /// The resource as JSON, with `id` and `meta` set by the store.
    pub body: Bytes,
}

impl StoredResource {
    /// `Type/id/_history/version`, relative to the FHIR base.
    pub fn location(&self) -> String {
        format!(
            "{}/{}/_history/{}",
            self.resource_type, self.id, self.version
        )
    }

    pub fn etag(&self) -> String {
        format!("W/\"{}\"", self.version)
    }
}

/// The result of one write: what is stored now, and whether this request created it.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteResult {
    /// false for updates and for conditional creates that found the resource already there.
    pub created: bool,
    pub resource: StoredResource,
}

impl WriteResult {
    pub fn status(&self) -> u16 {
        if self.created { 201 } else { 200 }
    }
}

/// One write request: a single create or update, or one Bundle entry.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteEntry {
    pub resource_type: String,
    pub method: WriteMethod,
    /// The entry's `fullUrl`, which other entries of a transaction may reference.
    pub full_url: Option<String>,
    pub resource: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum WriteMethod {
    /// POST; with a condition, nothing is created when exactly one resource matches it.
    Create { if_none_exist: Option<Vec<Token>> },
    /// PUT to this id.
    Update { id: String },
    /// PUT `Type?identifier=...`: updates the one match, or creates when nothing matches.
    ConditionalUpdate { condition: Vec<Token> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A single create or update, or one entry of a batch: `urn:` references are left alone.
    Single,
    /// A transaction: `urn:uuid` references must name an entry's fullUrl.
    Transaction,
}

impl Scope {
    /// An entry's error as the client sees it: a transaction's names the entry.
    fn label(self, index: usize, error: FhirError) -> FhirError {
        match self {
            Self::Transaction => error.in_entry(index),
            Self::Single => error,
        }
    }
}

/// What executeBundle did.
#[derive(Debug, Clone, PartialEq)]
pub enum BundleResult {
    /// Every entry was written (or found by its condition), in request order.
    Transaction(Vec<WriteResult>),
    /// One result per entry, in request order.
    Batch(Vec<Result<WriteResult, FhirError>>),
    /// A transaction written as a batch, to be answered as a transaction.
    TransactionAsBatch(Vec<Result<WriteResult, FhirError>>),
}

/// One page of search results and how many matched in all.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPage {
    pub total: usize,
    pub resources: Vec<StoredResource>,
}

#[derive(Debug)]
struct Stored {
    version: u64,
    last_updated: Arc<str>,
    body: Bytes,
    /// Kept to maintain the identifier index on update.
    identifiers: Box<[Identifier]>,
    /// `meta.tag` codings, for `_tag` searches.
    tags: Box<[Identifier]>,
}

/// A system and a value: an identifier, or a tag's system and code.
#[derive(Debug)]
struct Identifier {
    system: Option<Box<str>>,
    value: Box<str>,
}

#[derive(Debug)]
struct IndexEntry {
    system: Option<Box<str>>,
    id: Arc<str>,
}

#[derive(Debug, Default)]
struct TypeTable {
    by_id: HashMap<Arc<str>, Stored>,
    /// Ids in creation order: paging by offset stays stable while resources are added.
    order: Vec<Arc<str>>,
    /// identifier value -> (system, id): conditional creates and references look up here.
    by_identifier: HashMap<Box<str>, Vec<IndexEntry>>,
}

impl TypeTable {
    /// Ids of the resources matching any of `tokens`, without duplicates.
    fn find(&self, tokens: &[Token]) -> Vec<Arc<str>> {
        let mut found: Vec<Arc<str>> = Vec::new();
        for token in tokens {
            match token.value() {
                Some(value) => {
                    for entry in self.by_identifier.get(value).into_iter().flatten() {
                        if token.matches(entry.system.as_deref(), value)
                            && !found.contains(&entry.id)
                        {
                            found.push(entry.id.clone());
                        }
                    }
                }
                None => {
                    for id in &self.order {
                        if self.by_id[id].matches(std::slice::from_ref(token))
                            && !found.contains(id)
                        {
                            found.push(id.clone());
                        }
                    }
                }
            }
        }
        found
    }

    fn put(&mut self, id: Arc<str>, stored: Stored) {
        for identifier in stored.identifiers.iter() {
            self.by_identifier
                .entry(identifier.value.clone())
                .or_default()
                .push(IndexEntry {
                    system: identifier.system.clone(),
                    id: id.clone(),
                });
        }
        if let Some(old) = self.by_id.insert(id.clone(), stored) {
            for identifier in old.identifiers.iter() {
                if let Some(entries) = self.by_identifier.get_mut(&identifier.value) {
                    // The new identifiers were pushed last; drop only the old copies.
                    if let Some(pos) = entries.iter().position(|e| e.id == id) {
                        entries.remove(pos);
                    }
                }
            }
        } else {
            self.order.push(id);
        }
    }

    fn remove(&mut self, id: &str) {
        let Some(old) = self.by_id.remove(id) else {
            return;
        };
        self.order.retain(|kept| &**kept != id);
        for identifier in old.identifiers.iter() {
            if let Some(entries) = self.by_identifier.get_mut(&identifier.value) {
                entries.retain(|e| &*e.id != id);
            }
        }
    }

    fn view(&self, resource_type: &str, id: &str) -> Option<StoredResource> {
        let (id, stored) = self.by_id.get_key_value(id)?;
        Some(stored.view(resource_type, id))
    }
}

impl Stored {
    fn view(&self, resource_type: &str, id: &str) -> StoredResource {
        StoredResource {
            resource_type: resource_type.to_owned(),
            id: id.to_owned(),
            version: self.version,
            last_updated: self.last_updated.clone(),
            body: self.body.clone(),
        }
    }

    fn matches(&self, tokens: &[Token]) -> bool {
        any_matches(&self.identifiers, tokens)
    }

    fn tagged(&self, tokens: &[Token]) -> bool {
        any_matches(&self.tags, tokens)
    }
}

#[derive(Debug, Default)]
struct Tables {
    by_type: HashMap<String, TypeTable>,
}

impl Tables {
    fn exists(&self, resource_type: &str, id: &str) -> bool {
        self.by_type
            .get(resource_type)
            .is_some_and(|t| t.by_id.contains_key(id))
    }

    fn find(&self, resource_type: &str, tokens: &[Token]) -> Vec<Arc<str>> {
        self.by_type
            .get(resource_type)
            .map(|t| t.find(tokens))
            .unwrap_or_default()
    }
}

/// One FHIR store.
#[derive(Debug, Default)]
pub struct Store {
    options: StoreOptions,
    tables: RwLock<Tables>,
}

/// What a write decided for one entry, under the lock.
enum Plan {
    Create(Arc<str>),
    Update {
        id: Arc<str>,
        version: u64,
    },
    /// The condition matched this stored resource: nothing is written.
    Existing(Arc<str>),
    /// The condition matched the resource of this earlier entry: nothing more is written.
    SameAs(usize, Arc<str>),
}

impl Plan {
    fn id(&self) -> &Arc<str> {
        match self {
            Plan::Create(id)
            | Plan::Update { id, .. }
            | Plan::Existing(id)
            | Plan::SameAs(_, id) => id,
        }
    }

    fn writes(&self) -> bool {
        matches!(self, Plan::Create(_) | Plan::Update { .. })
    }
}

/// A resource a write is about to store, as conditional references may find it.
struct BundleResource<'a> {
    resource_type: String,
    id: Arc<str>,
    identifiers: &'a [Identifier],
}

/// What a write works out about its entries before it takes the lock.
struct EntryFacts {
    /// The server id each create (or conditional update) would get.
    new_ids: Vec<Option<Arc<str>>>,
    identifiers: Vec<Box<[Identifier]>>,
    tags: Vec<Box<[Identifier]>>,
    /// `meta.lastUpdated` of everything this write stores.
    now: Arc<str>,
}

impl EntryFacts {
    /// Checks each entry on its own (and that no fullUrl is used twice), then notes its facts.
    fn of(entries: &[WriteEntry], scope: Scope) -> Result<Self, FhirError> {
        let mut full_urls = HashSet::new();
        for (i, entry) in entries.iter().enumerate() {
            check_entry(entry).map_err(|e| scope.label(i, e))?;
            if let Some(url) = &entry.full_url {
                if !full_urls.insert(url.as_str()) {
                    let error =
                        FhirError::invalid(format!("fullUrl {url} appears in more than one entry"));
                    return Err(scope.label(i, error));
                }
            }
        }
        Ok(Self {
            new_ids: entries
                .iter()
                .map(|entry| match entry.method {
                    WriteMethod::Create { .. } | WriteMethod::ConditionalUpdate { .. } => {
                        Some(Arc::from(uuid::Uuid::new_v4().to_string()))
                    }
                    WriteMethod::Update { .. } => None,
                })
                .collect(),
            identifiers: entries.iter().map(|e| identifiers(&e.resource)).collect(),
            tags: entries.iter().map(|e| tags(&e.resource)).collect(),
            now: Arc::from(
                chrono::Utc::now()
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                    .as_str(),
            ),
        })
    }
}

/// A resource ready to commit: its type, id and stored form.
type Staged = (String, Arc<str>, Stored);

/// The answer for every entry, and the resources to commit: stamped and serialized, so that
/// committing them cannot fail half-way.
fn stage(
    tables: &Tables,
    entries: Vec<WriteEntry>,
    plans: Vec<Plan>,
    mut facts: EntryFacts,
) -> Result<(Vec<WriteResult>, Vec<Staged>), FhirError> {
    let mut results: Vec<WriteResult> = Vec::with_capacity(entries.len());
    let mut staged = Vec::new();
    for (i, (entry, plan)) in entries.into_iter().zip(plans).enumerate() {
        let (id, version, created) = match plan {
            Plan::Existing(id) => {
                let existing = tables.by_type[&entry.resource_type]
                    .view(&entry.resource_type, &id)
                    .expect("a matched resource exists");
                results.push(WriteResult {
                    created: false,
                    resource: existing,
                });
                continue;
            }
            Plan::SameAs(j, _) => {
                let resource = results[j].resource.clone();
                results.push(WriteResult {
                    created: false,
                    resource,
                });
                continue;
            }
            Plan::Create(id) => (id, 1, true),
            Plan::Update { id, version } => (id, version, version == 1),
        };
        let body = stamp(
            entry.resource,
            &entry.resource_type,
            &id,
            version,
            &facts.now,
        );
        let body = Bytes::from(
            serde_json::to_vec(&body)
                .map_err(|e| FhirError::new(500, "exception", format!("cannot serialize: {e}")))?,
        );
        let stored = Stored {
            version,
            last_updated: facts.now.clone(),
            body,
            identifiers: std::mem::take(&mut facts.identifiers[i]),
            tags: std::mem::take(&mut facts.tags[i]),
        };
        results.push(WriteResult {
            created,
            resource: stored.view(&entry.resource_type, &id),
        });
        staged.push((entry.resource_type, id, stored));
    }
    Ok((results, staged))
}

/// What reference resolution needs to know about the entries of one write.
struct WriteContext<'a> {
    scope: Scope,
    /// fullUrl -> `Type/id` of the entry it names.
    local: HashMap<String, String>,
    /// `Type/id` of every resource this write stores.
    written: HashSet<String>,
    /// The resources this write stores.
    bundle: Vec<BundleResource<'a>>,
    /// Conditional references already resolved in this write.
    conditional: HashMap<String, String>,
    tables: &'a Tables,
}

impl Store {
    pub fn new(options: StoreOptions) -> Self {
        Self {
            options,
            tables: RwLock::default(),
        }
    }

    /// `POST {base}/{type}`, with the `If-None-Exist` condition if any.
    pub fn create(
        &self,
        resource_type: &str,
        resource: Value,
        if_none_exist: Option<&str>,
    ) -> Result<WriteResult, FhirError> {
        let if_none_exist = if_none_exist
            .map(query::parse_condition)
            .transpose()
            .map_err(|e| FhirError::invalid(format!("If-None-Exist: {e}")))?;
        let entry = WriteEntry {
            resource_type: resource_type.to_owned(),
            method: WriteMethod::Create { if_none_exist },
            full_url: None,
            resource,
        };
        Ok(self.write(vec![entry], Scope::Single)?.remove(0))
    }

    /// `PUT {base}/{type}/{id}`.
    pub fn update(
        &self,
        resource_type: &str,
        id: &str,
        resource: Value,
    ) -> Result<WriteResult, FhirError> {
        let entry = WriteEntry {
            resource_type: resource_type.to_owned(),
            method: WriteMethod::Update { id: id.to_owned() },
            full_url: None,
            resource,
        };
        Ok(self.write(vec![entry], Scope::Single)?.remove(0))
    }

    /// `PUT {base}/{type}?identifier=...`.
    pub fn conditional_update(
        &self,
        resource_type: &str,
        condition: &str,
        resource: Value,
    ) -> Result<WriteResult, FhirError> {
        let entry = WriteEntry {
            resource_type: resource_type.to_owned(),
            method: WriteMethod::ConditionalUpdate {
                condition: parse_update_condition(condition)?,
            },
            full_url: None,
            resource,
        };
        Ok(self.write(vec![entry], Scope::Single)?.remove(0))
    }

    pub fn read(&self, resource_type: &str, id: &str) -> Result<StoredResource, FhirError> {
        check_type(resource_type)?;
        self.lock_read()
            .by_type
            .get(resource_type)
            .and_then(|t| t.view(resource_type, id))
            .ok_or_else(|| FhirError::not_found(format!("{resource_type}/{id} not found")))
    }

    pub fn search(
        &self,
        resource_type: &str,
        query: &SearchQuery,
    ) -> Result<SearchPage, FhirError> {
        check_type(resource_type)?;
        let tables = self.lock_read();
        let blind = self.options.tag_search_blind && !query.tags.is_empty();
        let Some(table) = tables.by_type.get(resource_type).filter(|_| !blind) else {
            return Ok(SearchPage {
                total: 0,
                resources: Vec::new(),
            });
        };
        let page = |ids: &[Arc<str>]| -> Vec<StoredResource> {
            if query.summary_count {
                return Vec::new();
            }
            let start = query.offset.min(ids.len());
            let end = start.saturating_add(query.count).min(ids.len());
            ids[start..end]
                .iter()
                .map(|id| table.by_id[id].view(resource_type, id))
                .collect()
        };
        // Start from the narrowest index there is, then keep what matches everything.
        let mut ids: Vec<Arc<str>> = match (query.identifiers.first(), &query.ids) {
            (Some(first), _) => table.find(first),
            (None, Some(ids)) => {
                let mut unique: Vec<Arc<str>> = Vec::new();
                for id in ids {
                    match table.by_id.get_key_value(id.as_str()) {
                        Some((key, _)) if !unique.contains(key) => unique.push(key.clone()),
                        _ => {}
                    }
                }
                unique
            }
            (None, None) if query.tags.is_empty() => {
                return Ok(SearchPage {
                    total: table.order.len(),
                    resources: page(&table.order),
                });
            }
            (None, None) => table.order.clone(),
        };
        ids.retain(|id| {
            let stored = &table.by_id[id];
            query
                .identifiers
                .iter()
                .skip(1)
                .all(|tokens| stored.matches(tokens))
                && query.tags.iter().all(|tokens| stored.tagged(tokens))
                && query
                    .ids
                    .as_ref()
                    .is_none_or(|wanted| wanted.iter().any(|w| **w == **id))
        });
        Ok(SearchPage {
            total: ids.len(),
            resources: page(&ids),
        })
    }

    /// `POST {base}` with a `transaction` or `batch` Bundle.
    pub fn execute_bundle(&self, bundle: Value) -> Result<BundleResult, FhirError> {
        let Value::Object(mut bundle) = bundle else {
            return Err(FhirError::invalid("executeBundle needs a Bundle resource"));
        };
        match bundle.get("resourceType").and_then(Value::as_str) {
            Some("Bundle") => {}
            other => {
                return Err(FhirError::invalid(format!(
                    "executeBundle needs a Bundle resource, got resourceType {}",
                    other.unwrap_or("(none)")
                )));
            }
        }
        let entries = match bundle.remove("entry") {
            None => Vec::new(),
            Some(Value::Array(entries)) => entries,
            Some(_) => return Err(FhirError::invalid("Bundle.entry must be an array")),
        };
        match bundle.get("type").and_then(Value::as_str) {
            Some("transaction") if entries.len() > MAX_TRANSACTION_ENTRIES => {
                Err(FhirError::invalid(format!(
                    "the transaction has {} entries; the Healthcare API refuses transactions of \
                     more than {MAX_TRANSACTION_ENTRIES} entries: split it into smaller bundles",
                    entries.len()
                )))
            }
            Some("transaction") if self.options.transaction_as_batch => {
                Ok(BundleResult::TransactionAsBatch(self.each_alone(entries)))
            }
            Some("transaction") => {
                let entries = entries
                    .into_iter()
                    .enumerate()
                    .map(|(i, entry)| parse_entry(entry).map_err(|e| e.in_entry(i)))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(BundleResult::Transaction(
                    self.write(entries, Scope::Transaction)?,
                ))
            }
            Some("batch") => Ok(BundleResult::Batch(self.each_alone(entries))),
            other => Err(FhirError::invalid(format!(
                "Bundle.type must be transaction or batch, got {}",
                other.unwrap_or("(none)")
            ))),
        }
    }

    /// Writes each of `entries` on its own, as a batch does.
    fn each_alone(&self, entries: Vec<Value>) -> Vec<Result<WriteResult, FhirError>> {
        entries
            .into_iter()
            .map(|entry| {
                let entry = parse_entry(entry)?;
                Ok(self.write(vec![entry], Scope::Single)?.remove(0))
            })
            .collect()
    }

    /// Writes all `entries` or none of them.
    pub fn write(
        &self,
        mut entries: Vec<WriteEntry>,
        scope: Scope,
    ) -> Result<Vec<WriteResult>, FhirError> {
        // Everything that needs no store state is done before taking the lock.
        let mut facts = EntryFacts::of(&entries, scope)?;
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        let (plans, written) = self.plan_all(&tables, &entries, &mut facts, scope)?;
        self.point_references(&tables, &mut entries, &plans, written, &facts, scope)?;
        // Stamp and serialize, then commit: nothing below can fail half-way.
        let (results, staged) = stage(&tables, entries, plans, facts)?;
        for (resource_type, id, stored) in staged {
            tables
                .by_type
                .entry(resource_type)
                .or_default()
                .put(id, stored);
        }
        Ok(results)
    }

    /// Decides what each entry does: its plan, and the `Type/id` of every resource written.
    fn plan_all(
        &self,
        tables: &Tables,
        entries: &[WriteEntry],
        facts: &mut EntryFacts,
        scope: Scope,
    ) -> Result<(Vec<Plan>, HashSet<String>), FhirError> {
        let mut plans: Vec<Plan> = Vec::with_capacity(entries.len());
        let mut written = HashSet::new();
        for (i, entry) in entries.iter().enumerate() {
            let mut plan = self
                .plan(tables, entry, facts.new_ids[i].take())
                .map_err(|e| scope.label(i, e))?;
            if let (
                Plan::Create(_),
                WriteMethod::Create {
                    if_none_exist: Some(tokens),
                },
            ) = (&plan, &entry.method)
            {
                // A resource written earlier in the same bundle satisfies the condition too.
                let earlier: Vec<usize> = (0..i)
                    .filter(|&j| {
                        plans[j].writes()
                            && entries[j].resource_type == entry.resource_type
                            && any_matches(&facts.identifiers[j], tokens)
                    })
                    .collect();
                match earlier.as_slice() {
                    [] => {}
                    [j] => plan = Plan::SameAs(*j, plans[*j].id().clone()),
                    many => {
                        let error = multiple_matches(many.len(), &entry.resource_type);
                        return Err(scope.label(i, error));
                    }
                }
            }
            if plan.writes() {
                let key = format!("{}/{}", entry.resource_type, plan.id());
                if !written.insert(key.clone()) {
                    let error =
                        FhirError::invalid(format!("{key} is written by more than one entry"));
                    return Err(scope.label(i, error));
                }
            }
            plans.push(plan);
        }
        Ok((plans, written))
    }

    /// Points the references of every resource written at their targets, and checks that the
    /// targets exist.
    fn point_references(
        &self,
        tables: &Tables,
        entries: &mut [WriteEntry],
        plans: &[Plan],
        written: HashSet<String>,
        facts: &EntryFacts,
        scope: Scope,
    ) -> Result<(), FhirError> {
        let local = entries
            .iter()
            .zip(plans)
            .filter_map(|(entry, plan)| {
                let url = entry.full_url.clone()?;
                Some((url, format!("{}/{}", entry.resource_type, plan.id())))
            })
            .collect();
        let bundle = entries
            .iter()
            .zip(plans)
            .zip(&facts.identifiers)
            .filter(|((_, plan), _)| plan.writes())
            .map(|((entry, plan), identifiers)| BundleResource {
                resource_type: entry.resource_type.clone(),
                id: plan.id().clone(),
                identifiers,
            })
            .collect();
        let mut context = WriteContext {
            scope,
            local,
            written,
            bundle,
            conditional: HashMap::new(),
            tables,
        };
        for (i, (entry, plan)) in entries.iter_mut().zip(plans).enumerate() {
            if !plan.writes() {
                continue;
            }
            let mut failure = None;
            for_each_reference_mut(&mut entry.resource, &mut |reference| {
                if failure.is_some() {
                    return;
                }
                match self.resolve_reference(reference, &mut context) {
                    Ok(Some(target)) => *reference = target,
                    Ok(None) => {}
                    Err(e) => failure = Some(e),
                }
            });
            if let Some(e) = failure {
                return Err(scope.label(i, e));
            }
        }
        Ok(())
    }

    fn plan(
        &self,
        tables: &Tables,
        entry: &WriteEntry,
        new_id: Option<Arc<str>>,
    ) -> Result<Plan, FhirError> {
        let resource_type = entry.resource_type.as_str();
        match (&entry.method, new_id) {
            (WriteMethod::Create { if_none_exist }, Some(new_id)) => {
                let Some(tokens) = if_none_exist else {
                    return Ok(Plan::Create(new_id));
                };
                let mut found = tables.find(resource_type, tokens);
                match found.len() {
                    0 => Ok(Plan::Create(new_id)),
                    1 => Ok(Plan::Existing(found.remove(0))),
                    n => Err(multiple_matches(n, resource_type)),
                }
            }
            (WriteMethod::Update { id }, _) => self.plan_update(tables, resource_type, id),
            (WriteMethod::ConditionalUpdate { condition }, Some(new_id)) => {
                let body_id = entry.resource.get("id").and_then(Value::as_str);
                let found = tables.find(resource_type, condition);
                match (found.as_slice(), body_id) {
                    ([found], Some(body_id)) if **found != *body_id => {
                        Err(FhirError::invalid(format!(
                            "the resource has id {body_id}, but the condition matches \
                             {resource_type}/{found}: leave the id out or make it match"
                        )))
                    }
                    ([found], _) => self.plan_update(tables, resource_type, found),
                    ([], None) => Ok(Plan::Create(new_id)),
                    ([], Some(body_id)) if tables.exists(resource_type, body_id) => {
                        Err(FhirError::new(
                            409,
                            "conflict",
                            format!(
                                "nothing matches the condition, and {resource_type}/{body_id} \
                                 exists without matching it: the update would replace another \
                                 resource"
                            ),
                        ))
                    }
                    ([], Some(body_id)) => self.plan_update(tables, resource_type, body_id),
                    (many, _) => Err(FhirError::new(
                        412,
                        "multiple-matches",
                        format!(
                            "the update condition matches {} {resource_type} resources; it must \
                             match at most one",
                            many.len()
                        ),
                    )),
                }
            }
            (WriteMethod::Create { .. } | WriteMethod::ConditionalUpdate { .. }, None) => {
                unreachable!("creates and conditional updates get an id up front")
            }
        }
    }

    /// An update of `Type/id`: the next version if it exists, else a create if the store
    /// allows that (`enableUpdateCreate`).
    fn plan_update(
        &self,
        tables: &Tables,
        resource_type: &str,
        id: &str,
    ) -> Result<Plan, FhirError> {
        let current = tables
            .by_type
            .get(resource_type)
            .and_then(|t| t.by_id.get_key_value(id));
        match current {
            Some((id, stored)) => Ok(Plan::Update {
                id: id.clone(),
                version: stored.version + 1,
            }),
            None if self.options.update_create => Ok(Plan::Update {
                id: Arc::from(id),
                version: 1,
            }),
            None => Err(FhirError::not_found(format!(
                "resource not found: {resource_type}/{id} does not exist, and this store does \
                 not create resources on update (enableUpdateCreate is false): create it with \
                 POST, or update it conditionally by identifier"
            ))),
        }
    }

    /// The new text of `reference`, if it changes; an error if it must not be stored.
    fn resolve_reference(
        &self,
        reference: &str,
        context: &mut WriteContext<'_>,
    ) -> Result<Option<String>, FhirError> {
        if let Some(target) = context.local.get(reference) {
            return Ok(Some(target.clone()));
        }
        if reference.starts_with('#')
            || reference.starts_with("http://")
            || reference.starts_with("https://")
        {
            return Ok(None);
        }
        if reference.starts_with("urn:") {
            let bundle_style =
                reference.starts_with("urn:uuid:") || reference.starts_with("urn:oid:");
            if context.scope == Scope::Transaction && bundle_style {
                return Err(FhirError::invalid(format!(
                    "reference {reference} does not match the fullUrl of any entry in the bundle"
                )));
            }
            return Ok(None);
        }
        if let Some((resource_type, condition)) = reference.split_once('?') {
            if let Some(target) = context.conditional.get(reference) {
                return Ok(Some(target.clone()));
            }
            let target = resolve_conditional(context, resource_type, condition).map_err(|e| {
                FhirError::invalid(format!("conditional reference {reference}: {e}"))
            })?;
            context
                .conditional
                .insert(reference.to_owned(), target.clone());
            return Ok(Some(target));
        }
        if !self.options.referential_integrity {
            return Ok(None);
        }
        let parts: Vec<&str> = reference.split('/').collect();
        let (resource_type, id) = match parts.as_slice() {
            [t, id] | [t, id, "_history", _]
                if validate::is_resource_type(t) && validate::is_valid_id(id) =>
            {
                (*t, *id)
            }
            _ => {
                return Err(FhirError::invalid(format!(
                    "reference {reference} is not a valid reference (expected Type/id)"
                )));
            }
        };
        let key = &reference[..resource_type.len() + 1 + id.len()];
        if context.written.contains(key) || context.tables.exists(resource_type, id) {
            Ok(None)
        } else {
            Err(FhirError::invalid(format!(
                "referential integrity: reference {reference} points to a resource that does \
                 not exist"
            )))
        }
    }

    /// Resources per type.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        self.lock_read()
            .by_type
            .iter()
            .map(|(t, table)| (t.clone(), table.by_id.len()))
            .collect()
    }

    /// `fhirStores.import` of one resource: stored under its own id whatever the store's
    /// settings say, an existing one replaced in place (no new version), references not
    /// checked, as Google documents the import.
    pub fn import(&self, resource: Value) -> Result<(), FhirError> {
        let resource_type = resource["resourceType"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        check_type(&resource_type)?;
        let Some(id) = resource["id"].as_str().map(str::to_owned) else {
            return Err(FhirError::invalid(format!(
                "the {resource_type} has no id: every imported resource needs its own"
            )));
        };
        check_id(&id)?;
        validate::check_resource(&resource, &resource_type).map_err(FhirError::invalid)?;
        let (identifiers, tags) = (identifiers(&resource), tags(&resource));
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        let table = tables.by_type.entry(resource_type.clone()).or_default();
        let version = table
            .by_id
            .get(id.as_str())
            .map_or(1, |stored| stored.version);
        let body = stamp(resource, &resource_type, &id, version, &now);
        let body = serde_json::to_vec(&body)
            .map_err(|e| FhirError::new(500, "exception", format!("cannot serialize: {e}")))?;
        let stored = Stored {
            version,
            last_updated: Arc::from(now.as_str()),
            body: Bytes::from(body),
            identifiers,
            tags,
        };
        table.put(Arc::from(id.as_str()), stored);
        Ok(())
    }

    /// `DELETE {base}/{type}/{id}`: the resource is gone; deleting one that is not there is not
    /// an error. Unlike Google with referential integrity on, a resource that others refer to
    /// is deleted too.
    pub fn delete(&self, resource_type: &str, id: &str) -> Result<(), FhirError> {
        check_type(resource_type)?;
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(table) = tables.by_type.get_mut(resource_type) {
            table.remove(id);
        }
        Ok(())
    }

    /// The stored form of every resource of `types` (all when `None`), per type in name order
    /// and within a type in creation order: what `fhirStores.export` writes.
    pub fn bodies(&self, types: Option<&[String]>) -> Vec<(String, Vec<Bytes>)> {
        let tables = self.lock_read();
        let mut bodies: Vec<(String, Vec<Bytes>)> = tables
            .by_type
            .iter()
            .filter(|(t, table)| {
                !table.by_id.is_empty() && types.is_none_or(|types| types.contains(t))
            })
            .map(|(t, table)| {
                let ordered = table.order.iter().map(|id| table.by_id[id].body.clone());
                (t.clone(), ordered.collect())
            })
            .collect();
        bodies.sort_by(|a, b| a.0.cmp(&b.0));
        bodies
    }

    fn lock_read(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        self.tables.read().unwrap_or_else(PoisonError::into_inner)
    }
}

fn check_type(resource_type: &str) -> Result<(), FhirError> {
    if validate::is_resource_type(resource_type) {
        Ok(())
    } else {
        Err(FhirError::invalid(format!(
            "`{resource_type}` is not a FHIR R4 resource type"
        )))
    }
}

fn check_entry(entry: &WriteEntry) -> Result<(), FhirError> {
    validate::check_resource(&entry.resource, &entry.resource_type).map_err(FhirError::invalid)?;
    if let WriteMethod::ConditionalUpdate { .. } = &entry.method {
        if let Some(id) = entry.resource.get("id").and_then(Value::as_str) {
            check_id(id)?;
        }
    }
    if let WriteMethod::Update { id } = &entry.method {
        check_id(id)?;
        match entry.resource.get("id").and_then(Value::as_str) {
            Some(body_id) if body_id == id => {}
            Some(body_id) => {
                return Err(FhirError::invalid(format!(
                    "resource id {body_id} does not match the id in the URL ({id})"
                )));
            }
            None => {
                return Err(FhirError::invalid(format!(
                    "the resource has no id; an update needs the id of the URL ({id})"
                )));
            }
        }
    }
    Ok(())
}

fn check_id(id: &str) -> Result<(), FhirError> {
    if validate::is_valid_id(id) {
        Ok(())
    } else {
        Err(FhirError::invalid(format!(
            "`{id}` is not a valid id: it must match [A-Za-z0-9\\-\\.]{{1,64}}"
        )))
    }
}

/// The query of a conditional update: only `identifier=...`, as on the Healthcare API.
fn parse_update_condition(condition: &str) -> Result<Vec<Token>, FhirError> {
    query::parse_condition(condition)
        .map_err(|e| FhirError::invalid(format!("conditional update: {e}")))
}

/// The one resource a conditional reference names, in the store or among those being written.
fn resolve_conditional(
    context: &WriteContext<'_>,
    resource_type: &str,
    condition: &str,
) -> Result<String, String> {
    if !validate::is_resource_type(resource_type) {
        return Err(format!("`{resource_type}` is not a FHIR R4 resource type"));
    }
    let tokens = query::parse_condition(condition)?;
    let mut found = context.tables.find(resource_type, &tokens);
    for resource in &context.bundle {
        if resource.resource_type == resource_type
            && any_matches(resource.identifiers, &tokens)
            && !found.contains(&resource.id)
        {
            found.push(resource.id.clone());
        }
    }
    match found.as_slice() {
        [id] => Ok(format!("{resource_type}/{id}")),
        [] => Err("no resource matches".to_owned()),
        many => Err(format!(
            "{} resources match; it must match exactly one",
            many.len()
        )),
    }
}

fn any_matches(identifiers: &[Identifier], tokens: &[Token]) -> bool {
    identifiers.iter().any(|identifier| {
        tokens
            .iter()
            .any(|token| token.matches(identifier.system.as_deref(), &identifier.value))
    })
}

fn multiple_matches(n: usize, resource_type: &str) -> FhirError {
    FhirError::new(
        412,
        "multiple-matches",
        format!(
            "the create condition matches {n} {resource_type} resources; it must match at most one"
        ),
    )
}

/// Turns a Bundle entry into a write.
fn parse_entry(entry: Value) -> Result<WriteEntry, FhirError> {
    let Value::Object(mut entry) = entry else {
        return Err(FhirError::invalid("a Bundle entry must be an object"));
    };
    let full_url = entry
        .get("fullUrl")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let request = entry
        .get("request")
        .ok_or_else(|| FhirError::invalid("the entry has no request"))?;
    let field = |name: &str| {
        request
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| FhirError::invalid(format!("the entry has no request.{name}")))
    };
    let method = field("method")?;
    let url = field("url")?.trim_start_matches('/');
    let (resource_type, method) = match method {
        "POST" => {
            if url.contains(['/', '?']) {
                return Err(FhirError::invalid(format!(
                    "request.url of a POST must be a resource type, got {url}"
                )));
            }
            let if_none_exist = request
                .get("ifNoneExist")
                .and_then(Value::as_str)
                .map(query::parse_condition)
                .transpose()
                .map_err(|e| FhirError::invalid(format!("ifNoneExist: {e}")))?;
            (url.to_owned(), WriteMethod::Create { if_none_exist })
        }
        "PUT" => {
            if let Some((resource_type, condition)) = url.split_once('?') {
                let method = WriteMethod::ConditionalUpdate {
                    condition: parse_update_condition(condition)?,
                };
                (resource_type.to_owned(), method)
            } else {
                let Some((resource_type, id)) = url.split_once('/') else {
                    return Err(FhirError::invalid(format!(
                        "request.url of a PUT must be Type/id, got {url}"
                    )));
                };
                (
                    resource_type.to_owned(),
                    WriteMethod::Update { id: id.to_owned() },
                )
            }
        }
        other => {
            return Err(FhirError::not_supported(format!(
                "request.method {other} is not supported by the emulator (POST and PUT are)"
            )));
        }
    };
    let resource = entry
        .remove("resource")
        .ok_or_else(|| FhirError::invalid("the entry has no resource"))?;
    Ok(WriteEntry {
        resource_type,
        method,
        full_url,
        resource,
    })
}

/// The resource's identifiers that have a value.
fn identifiers(resource: &Value) -> Box<[Identifier]> {
    system_values(resource.get("identifier"), "value")
}

/// The resource's `meta.tag` codings that have a code.
fn tags(resource: &Value) -> Box<[Identifier]> {
    system_values(resource.get("meta").and_then(|m| m.get("tag")), "code")
}

fn system_values(items: Option<&Value>, value_key: &str) -> Box<[Identifier]> {
    let one = |item: &Value| {
        let value = item.get(value_key)?.as_str()?;
        let system = item.get("system").and_then(Value::as_str);
        Some(Identifier {
            system: system.map(Box::from),
            value: Box::from(value),
        })
    };
    match items {
        Some(Value::Array(items)) => items.iter().filter_map(one).collect(),
        Some(single @ Value::Object(_)) => one(single).into_iter().collect(),
        _ => Box::default(),
    }
}

/// The resource with the store's `id` and `meta.versionId`/`meta.lastUpdated`, in the usual
/// order: resourceType, id, meta, then the rest as sent.
fn stamp(resource: Value, resource_type: &str, id: &str, version: u64, now: &str) -> Value {
    let Value::Object(fields) = resource else {
        return resource;
    };
    let mut meta = Map::new();
    let mut rest = Vec::with_capacity(fields.len());
    for (key, value) in fields {
        match key.as_str() {
            "resourceType" | "id" => {}
            "meta" => {
                if let Value::Object(m) = value {
                    meta = m;
                }
            }
            _ => rest.push((key, value)),
        }
    }
    meta.insert("versionId".into(), Value::String(version.to_string()));
    meta.insert("lastUpdated".into(), Value::String(now.to_owned()));
    let mut out = Map::with_capacity(rest.len() + 3);
    out.insert(
        "resourceType".into(),
        Value::String(resource_type.to_owned()),
    );
    out.insert("id".into(), Value::String(id.to_owned()));
    out.insert("meta".into(), Value::Object(meta));
    out.extend(rest);
    Value::Object(out)
}

/// Every store of the emulator, by name (`projects/.../fhirStores/S`), created on first use.
#[derive(Debug, Default)]
pub struct Stores {
    options: StoreOptions,
    by_name: RwLock<HashMap<String, Arc<Store>>>,
}

impl Stores {
    pub fn new(options: StoreOptions) -> Self {
        Self {
            options,
            by_name: RwLock::default(),
        }
    }

    pub fn get(&self, name: &str) -> Arc<Store> {
        if let Some(store) = self
            .by_name
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
        {
            return store.clone();
        }
        self.by_name
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Store::new(self.options)))
            .clone()
    }

    /// Forgets every store and everything in them.
    pub fn clear(&self) {
        self.by_name
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn all(&self) -> Vec<Arc<Store>> {
        self.by_name
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Resources per type, summed over all stores.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut total = BTreeMap::new();
        for store in self.all() {
            for (resource_type, n) in store.counts() {
                *total.entry(resource_type).or_insert(0) += n;
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SID: &str = "https://fhirgen.dev/sid/patient";

    fn patient(value: &str) -> Value {
        json!({
            "resourceType": "Patient",
            "identifier": [{"system": SID, "value": value}],
            "gender": "female"
        })
    }

    fn body(result: &WriteResult) -> Value {
        serde_json::from_slice(&result.resource.body).unwrap()
    }

    fn transaction(entries: Vec<Value>) -> Value {
        json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    }

    /// A store with `enableUpdateCreate`, where PUT may create.
    fn update_create_store() -> Store {
        Store::new(StoreOptions {
            update_create: true,
            ..StoreOptions::default()
        })
    }

    fn tagged(value: &str, tag: &str) -> Value {
        let mut resource = patient(value);
        resource["meta"] = json!({"tag": [{"system": "https://fhirgen.dev/load", "code": tag}]});
        resource
    }

    #[test]
    fn create_assigns_id_and_meta() {
        let store = Store::default();
        let created = store.create("Patient", patient("1"), None).unwrap();
        assert!(created.created);
        let stored = body(&created);
        assert_eq!(stored["id"], created.resource.id.as_str());
        assert_eq!(stored["meta"]["versionId"], "1");
        let keys: Vec<&String> = stored.as_object().unwrap().keys().collect();
        assert_eq!(keys[..3], ["resourceType", "id", "meta"]);
        let read = store.read("Patient", &created.resource.id).unwrap();
        assert_eq!(read.body, created.resource.body);
        assert_eq!(store.read("Patient", "nope").unwrap_err().status, 404);
    }

    #[test]
    fn conditional_create_finds_instead_of_duplicating() {
        let store = Store::default();
        let condition = format!("identifier={SID}|1");
        let first = store
            .create("Patient", patient("1"), Some(&condition))
            .unwrap();
        let second = store
            .create("Patient", patient("1"), Some(&condition))
            .unwrap();
        assert!(first.created);
        assert!(!second.created);
        assert_eq!(first.resource.id, second.resource.id);
        assert_eq!(store.counts()["Patient"], 1);

        store.create("Patient", patient("1"), None).unwrap();
        let err = store
            .create("Patient", patient("1"), Some(&condition))
            .unwrap_err();
        assert_eq!(err.status, 412);
    }

    #[test]
    fn update_bumps_the_version_and_reindexes() {
        let store = update_create_store();
        let mut body = patient("a");
        body["id"] = json!("p1");
        let first = store.update("Patient", "p1", body.clone()).unwrap();
        assert!(first.created);
        body["identifier"][0]["value"] = json!("b");
        let second = store.update("Patient", "p1", body).unwrap();
        assert!(!second.created);
        assert_eq!(second.resource.version, 2);
        let by = |v: &str| {
            let q = SearchQuery::parse(&format!("identifier={SID}|{v}")).unwrap();
            store.search("Patient", &q).unwrap().total
        };
        assert_eq!((by("a"), by("b")), (0, 1));

        let err = store.update("Patient", "p2", patient("c")).unwrap_err();
        assert!(err.diagnostics.contains("no id"), "{}", err.diagnostics);
    }

    #[test]
    fn put_does_not_create_by_default() {
        let store = Store::default();
        let mut body = patient("a");
        body["id"] = json!("p1");
        let err = store.update("Patient", "p1", body.clone()).unwrap_err();
        assert_eq!((err.status, err.code), (404, "not-found"));
        assert!(err.diagnostics.contains("enableUpdateCreate"));
        let put = json!({"resource": body, "request": {"method": "PUT", "url": "Patient/p1"}});
        let err = store.execute_bundle(transaction(vec![put])).unwrap_err();
        assert_eq!(err.status, 404);
        assert!(
            err.diagnostics.starts_with("entry 0: "),
            "{}",
            err.diagnostics
        );
        assert!(store.counts().is_empty());
    }

    #[test]
    fn conditional_update_by_identifier() {
        let store = Store::default();
        let condition = format!("identifier={SID}|c");
        // Nothing matches and the body has no id: created with a server id.
        let created = store
            .conditional_update("Patient", &condition, patient("c"))
            .unwrap();
        assert!(created.created);
        let id = created.resource.id.clone();
        // One match: updated in place, with or without the matching id in the body.
        let mut changed = patient("c");
        changed["gender"] = json!("male");
        let updated = store
            .conditional_update("Patient", &condition, changed.clone())
            .unwrap();
        assert_eq!((updated.created, updated.resource.version), (false, 2));
        assert_eq!(updated.resource.id, id);
        assert_eq!(body(&updated)["gender"], "male");
        changed["id"] = json!(id.as_str());
        assert!(
            store
                .conditional_update("Patient", &condition, changed.clone())
                .is_ok()
        );
        // A body id that is not the match's.
        changed["id"] = json!("someone-else");
        let err = store
            .conditional_update("Patient", &condition, changed)
            .unwrap_err();
        assert_eq!(err.status, 400);
        // No match and a client id: needs enableUpdateCreate.
        let mut with_id = patient("d");
        with_id["id"] = json!("client-d");
        let other = format!("identifier={SID}|d");
        let err = store
            .conditional_update("Patient", &other, with_id.clone())
            .unwrap_err();
        assert_eq!(err.status, 404);
        let lenient = update_create_store();
        let created = lenient
            .conditional_update("Patient", &other, with_id.clone())
            .unwrap();
        assert!(created.created);
        assert_eq!(created.resource.id, "client-d");
        // ... unless that id is taken by a resource the condition does not match.
        let taken = format!("identifier={SID}|e");
        let err = lenient
            .conditional_update("Patient", &taken, with_id)
            .unwrap_err();
        assert_eq!(err.status, 409);
        // Several matches.
        store.create("Patient", patient("c"), None).unwrap();
        let err = store
            .conditional_update("Patient", &condition, patient("c"))
            .unwrap_err();
        assert_eq!((err.status, err.code), (412, "multiple-matches"));
        // Only identifier conditions, as on the Healthcare API.
        let err = store
            .conditional_update("Patient", "name=Doe", patient("c"))
            .unwrap_err();
        assert_eq!(err.status, 400);
        assert_eq!(store.counts()["Patient"], 2);
    }

    #[test]
    fn conditional_update_in_bundles() {
        let store = Store::default();
        let entry = |value: &str| {
            json!({"resource": patient(value),
                   "request": {"method": "PUT", "url": format!("Patient?identifier={SID}|{value}")}})
        };
        let BundleResult::Transaction(first) = store
            .execute_bundle(transaction(vec![entry("b1"), entry("b2")]))
            .unwrap()
        else {
            panic!("transaction expected")
        };
        assert_eq!(
            first.iter().map(WriteResult::status).collect::<Vec<_>>(),
            [201, 201]
        );
        let batch = json!({"resourceType": "Bundle", "type": "batch",
                           "entry": [entry("b1"), entry("b3")]});
        let BundleResult::Batch(second) = store.execute_bundle(batch).unwrap() else {
            panic!("batch expected")
        };
        let statuses: Vec<u16> = second
            .iter()
            .map(|r| r.as_ref().unwrap().status())
            .collect();
        assert_eq!(statuses, [200, 201]);
        assert_eq!(
            second[0].as_ref().unwrap().resource.id,
            first[0].resource.id
        );
        assert_eq!(store.counts()["Patient"], 3);
    }

    #[test]
    fn search_by_tag() {
        let store = Store::default();
        store.create("Patient", tagged("1", "run-a"), None).unwrap();
        store.create("Patient", tagged("2", "run-b"), None).unwrap();
        store.create("Patient", patient("3"), None).unwrap();
        let total = |q: &str| {
            store
                .search("Patient", &SearchQuery::parse(q).unwrap())
                .unwrap()
                .total
        };
        assert_eq!(total("_tag=https://fhirgen.dev/load|run-a"), 1);
        assert_eq!(total("_tag=run-a,run-b"), 2);
        assert_eq!(total("_tag=https://fhirgen.dev/load|"), 2);
        assert_eq!(total("_tag=other|run-a"), 0);
        assert_eq!(total(&format!("_tag=run-a&identifier={SID}|1")), 1);
        assert_eq!(total(&format!("_tag=run-a&identifier={SID}|2")), 0);
        assert_eq!(total(""), 3);
    }

    #[test]
    fn transactions_over_the_entry_limit_are_refused_whole() {
        let store = Store::default();
        let entries = |n: usize| {
            (0..n)
                .map(|i| {
                    json!({"resource": patient(&i.to_string()),
                           "request": {"method": "POST", "url": "Patient"}})
                })
                .collect::<Vec<_>>()
        };
        let err = store
            .execute_bundle(transaction(entries(MAX_TRANSACTION_ENTRIES + 1)))
            .unwrap_err();
        assert_eq!(err.status, 400);
        assert!(err.diagnostics.contains("4500"), "{}", err.diagnostics);
        assert!(store.counts().is_empty());
        assert!(
            store
                .execute_bundle(transaction(entries(MAX_TRANSACTION_ENTRIES)))
                .is_ok()
        );
    }

    #[test]
    fn referential_integrity() {
        let store = Store::default();
        let encounter = json!({
            "resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
            "subject": {"reference": "Patient/missing"},
            "contained": [{"resourceType": "Location", "id": "l"}],
            "location": [{"location": {"reference": "#l"}}],
            "serviceProvider": {"reference": "https://example.org/Organization/1"}
        });
        let err = store
            .create("Encounter", encounter.clone(), None)
            .unwrap_err();
        assert!(
            err.diagnostics.contains("Patient/missing"),
            "{}",
            err.diagnostics
        );

        let lax = Store::new(StoreOptions {
            referential_integrity: false,
            ..StoreOptions::default()
        });
        assert!(lax.create("Encounter", encounter, None).is_ok());
    }

    #[test]
    fn conditional_references_resolve() {
        let store = Store::default();
        let p = store.create("Patient", patient("x|1"), None).unwrap();
        let encounter = json!({
            "resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
            "subject": {"reference": format!("Patient?identifier={SID}|x\\|1")}
        });
        let e = store.create("Encounter", encounter.clone(), None).unwrap();
        assert_eq!(
            body(&e)["subject"]["reference"],
            format!("Patient/{}", p.resource.id)
        );
        let mut missing = encounter;
        missing["subject"]["reference"] = json!(format!("Patient?identifier={SID}|2"));
        let err = store.create("Encounter", missing, None).unwrap_err();
        assert!(err.diagnostics.contains("no resource matches"));
    }

    fn patient_bundle(value: &str) -> Value {
        transaction(vec![
            json!({
                "fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111",
                "resource": patient(value),
                "request": {"method": "POST", "url": "Patient",
                            "ifNoneExist": format!("identifier={SID}|{value}")}
            }),
            json!({
                "fullUrl": "urn:uuid:22222222-2222-4222-8222-222222222222",
                "resource": {
                    "resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
                    "subject": {"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"}
                },
                "request": {"method": "POST", "url": "Encounter"}
            }),
        ])
    }

    #[test]
    fn transaction_rewrites_urn_uuids_and_honours_if_none_exist() {
        let store = Store::default();
        let BundleResult::Transaction(first) = store.execute_bundle(patient_bundle("t")).unwrap()
        else {
            panic!("transaction expected")
        };
        assert_eq!(
            first.iter().map(WriteResult::status).collect::<Vec<_>>(),
            [201, 201]
        );
        let patient_id = &first[0].resource.id;
        assert_eq!(
            body(&first[1])["subject"]["reference"],
            format!("Patient/{patient_id}")
        );

        let BundleResult::Transaction(second) = store.execute_bundle(patient_bundle("t")).unwrap()
        else {
            panic!("transaction expected")
        };
        assert_eq!(second[0].status(), 200);
        assert_eq!(&second[0].resource.id, patient_id);
        // The second encounter refers to the patient that was already there.
        assert_eq!(
            body(&second[1])["subject"]["reference"],
            format!("Patient/{patient_id}")
        );
        assert_eq!(store.counts()["Patient"], 1);
    }

    #[test]
    fn conditions_see_earlier_entries_of_the_same_bundle() {
        let store = Store::default();
        let post = |full_url: &str| {
            json!({
                "fullUrl": full_url,
                "resource": patient("d"),
                "request": {"method": "POST", "url": "Patient",
                            "ifNoneExist": format!("identifier={SID}|d")}
            })
        };
        let encounter = json!({
            "resource": {
                "resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
                "subject": {"reference": format!("Patient?identifier={SID}|d")}
            },
            "request": {"method": "POST", "url": "Encounter"}
        });
        let bundle = transaction(vec![post("urn:uuid:a"), post("urn:uuid:b"), encounter]);
        let BundleResult::Transaction(results) = store.execute_bundle(bundle).unwrap() else {
            panic!("transaction expected")
        };
        let statuses: Vec<u16> = results.iter().map(WriteResult::status).collect();
        assert_eq!(statuses, [201, 200, 201]);
        assert_eq!(results[1].resource, results[0].resource);
        assert_eq!(
            body(&results[2])["subject"]["reference"],
            format!("Patient/{}", results[0].resource.id)
        );
        assert_eq!(store.counts()["Patient"], 1);
    }

    #[test]
    fn failed_transaction_writes_nothing() {
        let store = Store::default();
        let mut bundle = patient_bundle("f");
        bundle["entry"][1]["resource"]["subject"]["reference"] =
            json!("urn:uuid:33333333-3333-4333-8333-333333333333");
        let err = store.execute_bundle(bundle).unwrap_err();
        assert_eq!(err.status, 400);
        assert!(
            err.diagnostics.starts_with("entry 1: "),
            "{}",
            err.diagnostics
        );
        assert!(store.counts().is_empty());

        let mut bundle = patient_bundle("f");
        bundle["entry"][1]["resource"]
            .as_object_mut()
            .unwrap()
            .remove("status");
        let err = store.execute_bundle(bundle).unwrap_err();
        assert!(err.diagnostics.contains("Encounter.status"));
        assert!(store.counts().is_empty());
    }

    #[test]
    fn transaction_put_entries_and_duplicates() {
        let store = update_create_store();
        let mut p = patient("u");
        p["id"] = json!("pu");
        let put = json!({"resource": p, "request": {"method": "PUT", "url": "Patient/pu"}});
        let encounter = json!({
            "resource": {
                "resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
                "subject": {"reference": "Patient/pu"}
            },
            "request": {"method": "POST", "url": "Encounter"}
        });
        let result = store
            .execute_bundle(transaction(vec![put.clone(), encounter]))
            .unwrap();
        assert!(matches!(result, BundleResult::Transaction(r) if r[0].status() == 201));
        let err = store
            .execute_bundle(transaction(vec![put.clone(), put]))
            .unwrap_err();
        assert!(err.diagnostics.contains("more than one entry"));
    }

    #[test]
    fn batch_entries_fail_alone() {
        let store = Store::default();
        let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": patient("b1"), "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Observation"}, "request": {"method": "POST", "url": "Observation"}},
            {"resource": patient("b2"), "request": {"method": "DELETE", "url": "Patient/x"}},
        ]});
        let BundleResult::Batch(results) = store.execute_bundle(bundle).unwrap() else {
            panic!("batch expected")
        };
        assert!(results[0].is_ok());
        assert_eq!(results[1].as_ref().unwrap_err().status, 400);
        assert_eq!(results[2].as_ref().unwrap_err().code, "not-supported");
        assert_eq!(store.counts()["Patient"], 1);
    }

    #[test]
    fn search_pages_in_creation_order() {
        let store = Store::default();
        let ids: Vec<String> = (0..25)
            .map(|i| {
                store
                    .create("Patient", patient(&i.to_string()), None)
                    .unwrap()
                    .resource
                    .id
            })
            .collect();
        let mut seen = Vec::new();
        let mut query = SearchQuery {
            count: 10,
            ..SearchQuery::default()
        };
        loop {
            let page = store.search("Patient", &query).unwrap();
            assert_eq!(page.total, 25);
            if page.resources.is_empty() {
                break;
            }
            seen.extend(page.resources.into_iter().map(|r| r.id));
            query.offset += query.count;
        }
        assert_eq!(seen, ids);

        let q = SearchQuery::parse(&format!("identifier={SID}|7,{SID}|8&_summary=count")).unwrap();
        let page = store.search("Patient", &q).unwrap();
        assert_eq!((page.total, page.resources.len()), (2, 0));
        let q = SearchQuery::parse(&format!("_id={},{},nope", ids[3], ids[4])).unwrap();
        assert_eq!(store.search("Patient", &q).unwrap().total, 2);
        assert_eq!(
            store
                .search("Observation", &SearchQuery::default())
                .unwrap()
                .total,
            0
        );
    }
}
