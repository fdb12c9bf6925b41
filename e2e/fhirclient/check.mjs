// An off-the-shelf FHIR client (fhir-kit-client), used as any integration
// engineer would, against a running bridge: read the CapabilityStatement,
// page the whole worklist through the Bundle's next links, include the
// patients, create a DiagnosticReport, read it back. Exits non-zero on the
// first surprise. Usage: node check.mjs http://127.0.0.1:8080/fhir/acme

import { Client } from 'fhir-kit-client';

const baseUrl = process.argv[2];
if (!baseUrl) { console.error('usage: node check.mjs <fhir base>'); process.exit(2); }
const client = new Client({ baseUrl });

function fail(msg) { console.error('fhir-client check: ' + msg); process.exit(1); }

(async () => {
  const cs = await client.capabilityStatement();
  if (cs.resourceType !== 'CapabilityStatement' || cs.fhirVersion !== '4.0.1') fail('no R4 CapabilityStatement');

  // Page the worklist with the client's own next-link handling.
  let page = await client.search({ resourceType: 'ServiceRequest', searchParams: { _count: 200, _include: 'ServiceRequest:subject' } });
  const seen = new Set();
  let pages = 0, patients = 0;
  while (page) {
    pages++;
    for (const e of page.entry || []) {
      if (e.search && e.search.mode === 'include') { patients++; continue; }
      if (e.resource.resourceType !== 'ServiceRequest') fail('unexpected ' + e.resource.resourceType);
      if (seen.has(e.resource.id)) fail('ServiceRequest/' + e.resource.id + ' seen twice');
      seen.add(e.resource.id);
    }
    page = await client.nextPage({ bundle: page });
  }
  if (seen.size < 1000) fail('walked only ' + seen.size + ' studies');
  if (patients === 0) fail('no included patients');

  const first = [...seen][0];
  const sr = await client.read({ resourceType: 'ServiceRequest', id: first });
  const created = await client.create({
    resourceType: 'DiagnosticReport',
    body: {
      resourceType: 'DiagnosticReport', status: 'preliminary', code: { text: 'Imaging report' },
      basedOn: [{ reference: 'ServiceRequest/' + sr.id }], conclusion: 'No acute abnormality.',
    },
  });
  if (created.resourceType !== 'DiagnosticReport' || !created.id) fail('create returned no DiagnosticReport');
  const back = await client.read({ resourceType: 'DiagnosticReport', id: created.id });
  if (back.status !== 'preliminary') fail('read back status ' + back.status);
  console.log(`fhir-client check: ${seen.size} studies in ${pages} pages, ${patients} included patients, DiagnosticReport/${created.id} created and read`);
})().catch((err) => fail((err && err.response && err.response.status) + ' ' + (err && err.message)));
