// Browser checks of the dashboard, one function each. The generic ones (checkShell,
// checkGraph, checkServices, checkTraces, checkConfig, checkProxies, checkTokenForm) hold for any
// backend that follows docs/dashboard-api.md, so they run against the real control plane
// too (WEFT_DASHBOARD_URL); the *Fixture ones know tests/fixtures/.
//
// Every function takes a Playwright page and { base } (the dashboard's URL, no trailing
// slash) and waits for conditions; none sleeps.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const OUT_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'test-output');

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Debian's Chromium; never a downloaded one. */
export function launchBrowser() {
  return chromium.launch({ executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium', args: CHROMIUM_ARGS });
}

/** A page in a fresh context that remembers uncaught page errors in page.errors. */
export async function newPage(browser, { viewport = { width: 1440, height: 900 } } = {}) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(String(e)));
  return page;
}

export async function screenshot(page, name) {
  mkdirSync(OUT_DIR, { recursive: true });
  await page.screenshot({ path: join(OUT_DIR, name), fullPage: false });
}

async function go(page, base, hash) {
  await page.goto(`${base}/${hash}`);
}

/** GET an API path from inside the page (same cookies as the app). */
export function apiGet(page, path) {
  return page.evaluate(async (p) => {
    const r = await fetch(p, { credentials: 'same-origin' });
    return { status: r.status, body: await r.json().catch(() => null) };
  }, path);
}

const RATE = /^(?:[\d.]+k?|<0\.01) rps|^[\d.]+ (?:B|KiB|MiB|GiB|TiB)\/s/;

// ---------------------------------------------------------------- generic checks

export async function checkShell(page, { base }) {
  await go(page, base, '#/graph');
  await page.locator('header.topbar .brand', { hasText: 'Weft' }).waitFor();
  const nav = await page.locator('header.topbar nav a').allTextContents();
  assert.deepEqual(nav, ['Graph', 'Services', 'Workloads', 'Traces', 'Istio config', 'Proxies']);
  const status = page.locator('header .status');
  await status.getByText('metrics:').waitFor();
  await status.getByText('tracing:').waitFor();
}

/** The graph draws the API's nodes and edges, with rate labels, and a click opens the panel. */
export async function checkGraph(page, { base, minEdges = 1, minLocked = 0, query = 'refresh=0', shot }) {
  await go(page, base, `#/graph?${query}`);
  const api = await apiGet(page, '/api/namespaces/graph?graphType=versionedApp&duration=60s');
  assert.equal(api.status, 200, 'graph API answers');
  await page.waitForFunction((n) => document.querySelectorAll('svg.graph-svg g.edge').length >= n, minEdges);
  const { nodes, edges } = await page.evaluate(() => ({
    nodes: [...document.querySelectorAll('svg.graph-svg g.node')].map((g) => ({
      id: g.getAttribute('data-id'),
      type: g.getAttribute('data-node-type'),
      leaf: g.classList.contains('leaf'),
    })),
    edges: [...document.querySelectorAll('svg.graph-svg g.edge')].map((g) => ({
      source: g.getAttribute('data-source'),
      target: g.getAttribute('data-target'),
      protocol: g.getAttribute('data-protocol'),
      health: g.getAttribute('data-health'),
      label: [...g.querySelectorAll('text.edge-label > tspan')].map((t) => t.textContent),
    })),
  }));
  const ids = new Set(nodes.map((n) => n.id));
  for (const n of nodes) assert.ok(n.id && n.type, `node has data-id and data-node-type: ${JSON.stringify(n)}`);
  for (const e of edges) {
    assert.ok(ids.has(e.source) && ids.has(e.target), `edge ends are drawn: ${e.source} > ${e.target}`);
    if (e.label.length) assert.match(e.label[0], RATE, `edge label starts with a rate: ${e.label.join(' | ')}`);
    if (e.health === 'idle') assert.equal(e.label.length, 0, 'idle edges carry no label');
  }
  // Kiali's padlock on edges whose traffic is mutual TLS, as the API's isMTLS says.
  const locked = await page.locator('svg.graph-svg g.edge g.edge-lock').count();
  const apiLocked = (api.body.elements.edges ?? []).filter((e) => Number(e.data.isMTLS) > 0).length;
  assert.ok(locked >= minLocked && apiLocked >= minLocked, `at least ${minLocked} mTLS edges (${locked} drawn with a lock, ${apiLocked} in the API)`);
  const apiEdges = (api.body.elements.edges ?? []).length;
  assert.ok(edges.length >= minEdges && apiEdges >= minEdges, `at least ${minEdges} edges (${edges.length} drawn, ${apiEdges} in the API)`);
  // The same graph as tables, for screen readers.
  assert.equal(await page.locator('table[aria-label="Graph edges"] tbody tr').count(), edges.length);
  assert.equal(await page.locator('table[aria-label="Graph nodes"] tbody tr').count(), nodes.length);
  // A click on a node opens the side panel about it.
  if (shot) await screenshot(page, shot);
  const first = nodes.find((n) => n.leaf);
  await page.locator(`svg.graph-svg g.node[data-id="${first.id}"]`).click();
  await page.locator(`aside.side-panel[data-selected="${first.id}"]`).waitFor();
  await page.locator('aside.side-panel button.close').click();
  await page.locator('aside.side-panel').waitFor({ state: 'detached' });
  return { nodes, edges };
}

/** Services: the list, and for the first one a chart per `charts[]` entry. */
export async function checkServices(page, { base, kind = 'services' }) {
  await go(page, base, `#/${kind}`);
  const rows = page.locator(`table.grid[aria-label="${kind === 'services' ? 'Services' : 'Workloads'}"] tbody tr`);
  await rows.first().waitFor();
  const first = rows.first();
  const name = await first.getAttribute('data-name');
  const ns = await first.getAttribute('data-namespace');
  await first.locator('a').first().click();
  const api = await apiGet(page, `/api/weft/metrics?kind=${kind.slice(0, -1)}&namespace=${ns}&name=${encodeURIComponent(name)}&direction=inbound&duration=600&step=15`);
  assert.equal(api.status, 200, 'metrics API answers');
  await page.waitForFunction((n) => document.querySelectorAll('.charts figure.chart').length === n, api.body.charts.length);
  await page.locator('figure.chart[data-chart-id="latency"] a.chart-link[href^="#/traces?service="]').waitFor();
  return { name, ns, charts: api.body.charts.length };
}

/** Traces: the search lists traces; the first opens as a waterfall of DOM rows. */
export async function checkTraces(page, { base, minRows = 1, required = false, shot }) {
  await go(page, base, '#/traces');
  const list = page.locator('table.traces-list tbody tr');
  await Promise.race([list.first().waitFor(), page.locator('.page.traces .empty').waitFor()]);
  if ((await list.count()) === 0) {
    assert.ok(!required, 'the trace search lists traces');
    return { traces: 0, rows: 0 };
  }
  const id = await list.first().getAttribute('data-trace-id');
  const traces = await list.count();
  await list.first().locator('a').first().click();
  await page.waitForURL(`**/#/traces/${id}`);
  await page.waitForFunction((n) => document.querySelectorAll('.waterfall .span-row[data-span-id]').length >= n, minRows);
  const rows = await page.locator('.waterfall .span-row').evaluateAll((rs) =>
    rs.map((r) => ({ id: r.getAttribute('data-span-id'), name: r.querySelector('.span-name')?.textContent ?? '', bar: r.querySelector('.wf-bar')?.style.width ?? '' })),
  );
  for (const r of rows) {
    assert.ok(r.id, 'span row has data-span-id');
    assert.ok(r.name.trim(), `span row ${r.id} shows a name`);
    assert.match(r.bar, /%$/, `span row ${r.id} has a bar`);
  }
  await page.locator('.waterfall .span-row').first().click();
  await page.locator(`section.span-detail[data-span-id="${rows[0].id}"]`).waitFor();
  if (shot) await screenshot(page, shot);
  return { traces, rows: rows.length, id };
}

export async function checkConfig(page, { base, shot }) {
  await go(page, base, '#/config');
  await page.locator('table.config-table').waitFor();
  const rows = await page.locator('table.config-table tbody tr[data-kind]').count();
  if (rows > 0) {
    await page.locator('table.config-table tbody tr[data-kind] a').first().click();
    await page.locator('section.config-detail pre.yaml').waitFor();
  }
  if (shot) await screenshot(page, shot);
  return { rows };
}

export async function checkProxies(page, { base }) {
  await go(page, base, '#/proxies');
  await Promise.race([page.locator('table.proxies-table').waitFor(), page.locator('.page.proxies .empty').waitFor()]);
  const syncs = await page.locator('table.proxies-table tbody tr').evaluateAll((rs) => rs.map((r) => r.getAttribute('data-sync')));
  for (const s of syncs) assert.ok(['SYNCED', 'STALE', 'NACKED', 'NOT SENT'].includes(s), `sync status ${s}`);
  return { rows: syncs.length };
}

/**
 * With a backend that wants the admin token: the page asks for it, a wrong token is
 * refused, the right one is stored as the weft-token cookie and the call is retried.
 */
export async function checkTokenForm(page, { base, token, wrong = 'not-the-token' }) {
  await go(page, base, '#/proxies');
  const form = page.locator('form.token-form');
  await form.waitFor();
  await form.locator('input[name="token"]').fill(wrong);
  await form.locator('button[type="submit"]').click();
  await form.getByText('That token was not accepted').waitFor();
  await form.locator('input[name="token"]').fill(token);
  await form.locator('button[type="submit"]').click();
  await form.waitFor({ state: 'detached' });
  await page.locator('table.proxies-table tbody tr').first().waitFor();
  const cookie = (await page.context().cookies()).find((c) => c.name === 'weft-token');
  assert.ok(cookie, 'weft-token cookie set');
  assert.equal(cookie.value, token);
  assert.equal(cookie.path, '/');
  assert.equal(cookie.sameSite, 'Strict');
  // A reload needs no form: the cookie carries the token.
  await page.reload();
  await page.locator('table.proxies-table tbody tr').first().waitFor();
  assert.equal(await form.count(), 0);
}

// ---------------------------------------------------------------- fixture checks

const EXPECTED_EDGES = [
  ['istio-system-istio-ingressgateway', 'svc-default-productpage', ['5.10 rps', 'p95 38ms'], 'healthy'],
  ['unknown', 'svc-default-productpage', ['0.10 rps', 'p95 12ms'], 'healthy'],
  ['svc-default-productpage', 'default-productpage-v1', ['5.20 rps', 'p95 36ms'], 'healthy'],
  ['default-productpage-v1', 'svc-default-details', ['5.20 rps · 50%', 'p95 4.8ms · 0.5% err'], 'degraded'],
  ['svc-default-details', 'default-details-v1', ['5.20 rps', 'p95 4.6ms · 0.5% err'], 'degraded'],
  ['default-productpage-v1', 'svc-default-reviews', ['5.20 rps · 50%', 'p95 25ms'], 'healthy'],
  ['svc-default-reviews', 'default-reviews-v1', ['1.04 rps · 20%', 'p95 6.1ms'], 'healthy'],
  ['svc-default-reviews', 'default-reviews-v2', ['1.56 rps · 30%', 'p95 20ms'], 'healthy'],
  ['svc-default-reviews', 'default-reviews-v3', ['2.60 rps · 50%', 'p95 29ms'], 'healthy'],
  ['default-reviews-v2', 'svc-default-ratings', ['1.56 rps', 'p95 2.2ms'], 'healthy'],
  ['default-reviews-v3', 'svc-default-ratings', ['2.60 rps', 'p95 1.9ms · 15% err'], 'failure'],
  ['svc-default-ratings', 'default-ratings-v1', ['3.77 rps', 'p95 1.5ms'], 'healthy'],
  ['default-sleep-v1', 'svc-default-tcp-echo', ['1.48 KiB/s'], 'tcp'],
  ['svc-default-tcp-echo', 'default-tcp-echo-v1', ['1.48 KiB/s'], 'tcp'],
  ['default-sleep-v1', 'svc-default-httpbin.org', ['0.50 rps', 'p95 182ms'], 'healthy'],
];

const edgeSel = (s, t) => `svg.graph-svg g.edge[data-source="${s}"][data-target="${t}"]`;
const nodeSel = (id) => `svg.graph-svg g.node[data-id="${id}"]`;

async function edgeLines(page, s, t) {
  return page.locator(`${edgeSel(s, t)} text.edge-label > tspan`).allTextContents();
}

export async function checkGraphFixture(page, { base }) {
  await go(page, base, '#/graph?refresh=0');
  await page.waitForFunction((n) => document.querySelectorAll('svg.graph-svg g.edge').length === n, EXPECTED_EDGES.length);
  for (const [s, t, lines, health] of EXPECTED_EDGES) {
    assert.deepEqual(await edgeLines(page, s, t), lines, `label of ${s} > ${t}`);
    assert.equal(await page.locator(edgeSel(s, t)).getAttribute('data-health'), health, `colour of ${s} > ${t}`);
  }
  // Node colour: the worst inbound edge.
  assert.match(await page.locator(nodeSel('svc-default-ratings')).getAttribute('class'), /\bfailure\b/);
  assert.match(await page.locator(nodeSel('svc-default-details')).getAttribute('class'), /\bdegraded\b/);
  assert.match(await page.locator(nodeSel('default-productpage-v1')).getAttribute('class'), /\bhealthy\b/);
  // Data attributes and shapes.
  const v2 = page.locator(nodeSel('default-reviews-v2'));
  assert.equal(await v2.getAttribute('data-app'), 'reviews');
  assert.equal(await v2.getAttribute('data-version'), 'v2');
  assert.equal(await v2.getAttribute('data-node-type'), 'app');
  assert.deepEqual(await v2.locator('text.node-label tspan').allTextContents(), ['reviews', 'v2']);
  assert.equal(await page.locator(nodeSel('unknown')).getAttribute('data-node-type'), 'unknown');
  assert.equal(await page.locator(`${nodeSel('svc-default-reviews')} path.shape`).count(), 1, 'a service is a triangle');
  assert.equal(await page.locator(`${nodeSel('svc-default-httpbin.org')} polygon.shape`).count(), 1, 'a service entry is a pentagon');
  // The box around reviews' versions contains them.
  const box = await page.locator(`${nodeSel('box-default-reviews')} rect.box-rect`).boundingBox();
  for (const v of ['v1', 'v2', 'v3']) {
    const b = await page.locator(`${nodeSel(`default-reviews-${v}`)} .shape`).boundingBox();
    assert.ok(b.x >= box.x && b.y >= box.y && b.x + b.width <= box.x + box.width && b.y + b.height <= box.y + box.height, `reviews ${v} inside its box`);
  }
  // Badges.
  const badge = (id, key) => page.locator(`${nodeSel(id)} g.badge[data-badge="${key}"]`);
  assert.equal(await badge('svc-default-reviews', 'shift').locator('text').textContent(), '20/30/50');
  assert.match(await badge('svc-default-reviews', 'shift').locator('title').textContent(), /v1 20 \/ v2 30 \/ v3 50/);
  assert.equal(await badge('svc-default-reviews', 'vs').locator('text').textContent(), 'VS');
  assert.equal(await badge('svc-default-reviews', 'cb').locator('text').textContent(), 'CB');
  assert.equal(await badge('svc-default-ratings', 'fault').locator('text').textContent(), 'fault');
  assert.equal(await badge('svc-default-httpbin.org', 'se').locator('text').textContent(), 'ext');
  assert.equal(await badge('istio-system-istio-ingressgateway', 'root').locator('text').textContent(), 'root');
  // A padlock where the destinations reported mutual TLS: whole, or partial for part of it.
  const lock = (s, t) => page.locator(`${edgeSel(s, t)} g.edge-lock`);
  assert.equal(await lock('default-productpage-v1', 'svc-default-reviews').count(), 1);
  assert.equal(await lock('svc-default-tcp-echo', 'default-tcp-echo-v1').count(), 1);
  assert.match(await lock('default-reviews-v2', 'svc-default-ratings').getAttribute('class'), /\bpartial\b/);
  assert.match(await lock('default-reviews-v2', 'svc-default-ratings').locator('title').textContent(), /mTLS: 50(\.0)?% of the traffic/);
  assert.equal(await lock('istio-system-istio-ingressgateway', 'svc-default-productpage').count(), 0);
  assert.equal(await page.locator('svg.graph-svg g.edge-lock').count(), 6);
  await screenshot(page, 'graph.png');

  // The box's panel lists the versions.
  await page.locator(`${nodeSel('box-default-reviews')} text.box-label`).click();
  const panel = page.locator('aside.side-panel[data-selected="box-default-reviews"]');
  await panel.waitFor();
  assert.deepEqual(await panel.locator('table.versions tbody tr').evaluateAll((r) => r.map((x) => x.getAttribute('data-version'))), ['v1', 'v2', 'v3']);
  await panel.locator('a[href="#/config?kind=VirtualService&namespace=default&name=reviews"]').waitFor();

  // The service's panel: versions, weights, config links, traces.
  await page.locator(nodeSel('svc-default-reviews')).click();
  const sp = page.locator('aside.side-panel[data-selected="svc-default-reviews"]');
  await sp.waitFor();
  assert.deepEqual(await sp.locator('table.versions tbody tr').evaluateAll((r) => r.map((x) => x.getAttribute('data-version'))), ['v1', 'v2', 'v3']);
  await sp.getByText('v1 20 / v2 30 / v3 50').first().waitFor();
  await sp.locator('a[href="#/config?kind=DestinationRule&namespace=default&name=reviews"]').waitFor();
  await sp.locator('a[href="#/traces?service=reviews.default"]').waitFor();
  await screenshot(page, 'graph-panel.png');

  // An edge's panel: response codes with flags and hosts.
  await sp.locator('button.close').click();
  await page.locator(`${edgeSel('default-reviews-v3', 'svc-default-ratings')} text.edge-label`).click();
  const ep = page.locator('aside.side-panel[data-selected="default-reviews-v3>svc-default-ratings"]');
  await ep.waitFor();
  const codes = await ep.locator('table.responses tbody tr').allTextContents();
  assert.equal(codes.length, 2);
  assert.match(codes[1], /^503.*FI 15%.*ratings\.default\.svc\.cluster\.local 15%/);
  await ep.locator('a[href="#/config?kind=VirtualService&namespace=default&name=ratings"]').waitFor();
  // Its config link leads to the config page.
  await ep.locator('a[href="#/config?kind=VirtualService&namespace=default&name=ratings"]').click();
  await page.locator('section.config-detail pre.yaml', { hasText: 'httpStatus: 503' }).waitFor();
}

async function leafTransforms(page) {
  return page.locator('svg.graph-svg g.node.leaf').evaluateAll((gs) => Object.fromEntries(gs.map((g) => [g.getAttribute('data-id'), g.getAttribute('transform')])));
}

/**
 * Rates change, nothing moves; a node is added, the others stay put. `steer(params)` sets the
 * fixture server's state (POST /__fixture).
 */
export async function checkStableLayoutFixture(page, { base, steer }) {
  await steer('scale=1&extra=0');
  await go(page, base, '#/graph?refresh=0');
  await page.waitForFunction((n) => document.querySelectorAll('svg.graph-svg g.edge').length === n, EXPECTED_EDGES.length);
  const before = await leafTransforms(page);
  const viewport = await page.locator('svg.graph-svg g.viewport').getAttribute('transform');
  await steer('scale=2');
  await page.locator('button.refresh').click();
  await page.locator(edgeSel('istio-system-istio-ingressgateway', 'svc-default-productpage'), { hasText: '10.2 rps' }).waitFor();
  assert.deepEqual(await leafTransforms(page), before, 'no node moves when only rates change');
  assert.equal(await page.locator('svg.graph-svg g.viewport').getAttribute('transform'), viewport, 'the view stays');
  await steer('extra=1');
  await page.locator('button.refresh').click();
  await page.locator(nodeSel('default-reviews-v4')).waitFor();
  const after = await leafTransforms(page);
  for (const [id, t] of Object.entries(before)) assert.equal(after[id], t, `${id} stays where it was when a node is added`);
  // The new node is inside the reviews box.
  const box = await page.locator(`${nodeSel('box-default-reviews')} rect.box-rect`).boundingBox();
  const v4 = await page.locator(`${nodeSel('default-reviews-v4')} .shape`).boundingBox();
  assert.ok(v4.y >= box.y && v4.y + v4.height <= box.y + box.height, 'reviews v4 inside the grown box');
  await steer('scale=1&extra=0');
}

/** The controls change the query, and the refresh interval refetches by itself. */
export async function checkGraphControls(page, { base }) {
  await go(page, base, '#/graph?refresh=0');
  await page.locator('svg.graph-svg g.edge').first().waitFor();
  let req = page.waitForRequest((r) => r.url().includes('/api/namespaces/graph') && r.url().includes('graphType=workload'));
  await page.locator('select[name="graphType"]').selectOption('workload');
  await req;
  req = page.waitForRequest((r) => r.url().includes('/api/namespaces/graph') && r.url().includes('duration=300s'));
  await page.locator('select[name="duration"]').selectOption('300');
  await req;
  req = page.waitForRequest((r) => r.url().includes('/api/namespaces/graph') && /namespaces=default(&|$)/.test(r.url()));
  await page.locator('details.ns-picker summary').click();
  await page.locator('details.ns-picker input[value="default"]').check();
  await req;
  // The namespace not asked for is drawn as outside.
  await page.locator('details.ns-picker summary', { hasText: 'default' }).waitFor();
  assert.match(page.url(), /namespaces=default/);
  // Live refresh, no reload: 5 s later another request comes by itself.
  await page.locator('select[name="refresh"]').selectOption('5');
  const t0 = Date.now();
  await page.waitForRequest((r) => r.url().includes('/api/namespaces/graph'), { timeout: 9000 });
  assert.ok(Date.now() - t0 >= 3000, 'the refetch waited for the interval');
}

export async function checkServicesFixture(page, { base }) {
  await go(page, base, '#/services?namespace=default&name=reviews');
  await page.locator('table.grid tr.selected[data-name="reviews"]').waitFor();
  await page.waitForFunction(() => document.querySelectorAll('.charts figure.chart').length === 7);
  assert.equal(await page.locator('figure.chart[data-chart-id="latency"] .chart-legend li').count(), 3, 'p50, p90, p99');
  assert.equal(await page.locator('figure.chart[data-chart-id="tcp_sent"] .chart-empty').count(), 1, 'empty chart says so');
  await page.locator('figure.chart[data-chart-id="latency"] a[href="#/traces?service=reviews.default"]').waitFor();
  const req = page.waitForRequest((r) => r.url().includes('/api/weft/metrics') && r.url().includes('direction=outbound'));
  await page.locator('.seg button', { hasText: 'Outbound' }).click();
  await req;
  await page.locator('figure.chart[data-chart-id="requests"] .chart-legend li', { hasText: 'details.default' }).waitFor();

  await go(page, base, '#/workloads?namespace=default&name=reviews-v2');
  const pods = page.locator('table.pods tbody tr');
  await pods.first().waitFor();
  assert.equal(await pods.count(), 2);
  await page.locator('table.pods tr[data-pod="reviews-v2-1"]', { hasText: 'Not ready' }).waitFor();
  await page.locator('table.pods tr[data-pod="reviews-v2-1"] .sync-stale').waitFor();
  await page.waitForFunction(() => document.querySelectorAll('.charts figure.chart svg path.series').length > 0);
}

export async function checkTracesFixture(page, { base }) {
  // Search by service: only the trace that reached ratings.
  await go(page, base, '#/traces');
  await page.locator('table.traces-list tbody tr').nth(2).waitFor();
  const hasOption = (sel, v) => page.waitForFunction(([s, x]) => [...(document.querySelector(s)?.options ?? [])].some((o) => o.value === x), [sel, v]);
  await hasOption('select[name="service"]', 'ratings.default');
  await page.locator('select[name="service"]').selectOption('ratings.default');
  await hasOption('select[name="operation"]', 'ratings.default.svc.cluster.local:9080/*');
  const req = page.waitForRequest((r) => r.url().includes('/api/zipkin/api/v2/traces?') && r.url().includes('serviceName=ratings.default') && r.url().includes('minDuration=1000'));
  await page.locator('input[name="minDuration"]').fill('1ms');
  await page.locator('form.trace-search button[type="submit"]').click();
  await req;
  await page.waitForFunction(() => document.querySelectorAll('table.traces-list tbody tr').length === 1);
  await page.locator('table.traces-list tbody tr[data-trace-id="5f1e2d3c4b5a69788796a5b4c3d2e1f0"] a').click();

  // The waterfall: 8 rows nested by parentId, in time order.
  await page.waitForFunction(() => document.querySelectorAll('.waterfall .span-row').length === 8);
  const rows = await page.locator('.waterfall .span-row').evaluateAll((rs) => rs.map((r) => [r.getAttribute('data-span-id'), +r.getAttribute('data-depth'), r.querySelector('.span-name').textContent]));
  assert.deepEqual(rows.map((r) => r[1]), [0, 1, 2, 3, 2, 3, 4, 5]);
  assert.equal(rows[0][2], 'productpage.default.svc.cluster.local:9080/productpage');
  const bar = async (i) => page.locator('.waterfall .span-row').nth(i).locator('.wf-bar').evaluate((b) => [parseFloat(b.style.left), parseFloat(b.style.width)]);
  assert.deepEqual(await bar(0), [0, 100], 'the root spans the trace');
  const [l4, w4] = await bar(4);
  assert.ok(l4 > 25 && l4 < 30 && w4 > 60 && w4 < 63, `reviews call placed by time (${l4}%, ${w4}%)`);
  await page.locator('.waterfall .span-row[data-span-id="5f1e2d3c4b5a0008"]').click();
  const detail = page.locator('section.span-detail[data-span-id="5f1e2d3c4b5a0008"]');
  await detail.waitFor();
  for (const [k, v] of [['http.status_code', '200'], ['istio.canonical_service', 'ratings'], ['upstream_cluster', 'inbound|9080||'], ['http.url', 'http://ratings:9080/ratings/0']])
    await detail.locator('table.tags tr', { hasText: k }).locator('td', { hasText: v }).waitFor();
  await screenshot(page, 'trace-waterfall.png');

  // The faulty trace: the aborted call is an error, with its annotation; a retry shows.
  await go(page, base, '#/traces/0a1b2c3d4e5f60718293a4b5c6d7e8f9');
  await page.waitForFunction(() => document.querySelectorAll('.waterfall .span-row').length === 7);
  const fault = page.locator('.waterfall .span-row[data-span-id="0a1b2c3d4e5f0007"]');
  assert.match(await fault.getAttribute('class'), /\berror\b/);
  await fault.click();
  const fd = page.locator('section.span-detail[data-span-id="0a1b2c3d4e5f0007"]');
  await fd.locator('table.annotations', { hasText: 'fault: abort 503' }).waitFor();
  await fd.locator('table.tags tr', { hasText: 'response_flags' }).locator('td', { hasText: 'FI' }).waitFor();
  await page.locator('.waterfall .span-row[data-span-id="0a1b2c3d4e5f0003"]').click();
  await page.locator('section.span-detail table.annotations', { hasText: 'retry 1' }).waitFor();

  // A trace that is not there says so.
  await go(page, base, '#/traces/deadbeefdeadbeef');
  await page.locator('.error-box', { hasText: 'trace deadbeefdeadbeef not found' }).waitFor();
}

export async function checkConfigFixture(page, { base }) {
  await go(page, base, '#/config');
  const row = page.locator('table.config-table tr[data-name="ratings-canary"]');
  await row.waitFor();
  assert.equal(await row.getAttribute('data-level'), 'Error');
  assert.equal(await page.locator('table.config-table tr[data-level="Warning"]').count(), 1);
  assert.equal(await page.locator('table.config-table tr[data-level="Info"]').count(), 1);
  // Filters.
  await page.locator('select[name="kind"]').selectOption('DestinationRule');
  await page.waitForFunction(() => document.querySelectorAll('table.config-table tbody tr[data-kind]').length === 1);
  await page.locator('select[name="kind"]').selectOption('');
  await page.locator('select[name="namespace"]').selectOption('istio-system');
  await page.waitForFunction(() => document.querySelectorAll('table.config-table tbody tr[data-kind]').length === 1);
  await page.locator('select[name="namespace"]').selectOption('');
  await row.locator('a').click();
  const d = page.locator('section.config-detail');
  const msg = d.locator('li.message-error[data-code="IST0101"]');
  await msg.waitFor();
  assert.match(await msg.textContent(), /Referenced host not found: "ratingz"/);
  assert.match(await msg.locator('.path').textContent(), /spec\.http\[0\]\.route\[0\]\.destination\.host/);
  assert.match(await d.locator('pre.yaml').textContent(), /host: ratingz/);
  // The line the message is about is marked in the YAML, with the message as its title.
  const marked = d.locator('pre.yaml .yaml-line.invalid');
  assert.equal(await marked.count(), 1);
  assert.equal((await marked.textContent()).trim(), 'host: ratingz');
  assert.equal(await marked.getAttribute('data-line'), '12');
  assert.match(await marked.getAttribute('title'), /IST0101 Referenced host not found/);
  assert.match(await msg.locator('.path').textContent(), /line 12/);
  // The messages come before the YAML.
  const order = await d.evaluate((s) => [s.querySelector('ul.messages'), s.querySelector('pre.yaml')].map((e) => [...s.querySelectorAll('*')].indexOf(e)));
  assert.ok(order[0] < order[1], 'messages above the YAML');
  const bg = await msg.evaluate((e) => getComputedStyle(e).borderLeftColor);
  assert.equal(bg, 'rgb(201, 25, 11)', 'an Error is red');
  await screenshot(page, 'config.png');
}

export async function checkProxiesFixture(page, { base }) {
  await go(page, base, '#/proxies');
  const nacked = page.locator('table.proxies-table tr[data-sync="NACKED"]');
  await nacked.waitFor();
  assert.equal(await nacked.count(), 1);
  assert.equal(await nacked.getAttribute('data-proxy'), 'ratings-v1-0.default');
  assert.match(await nacked.textContent(), /unknown HTTP filter envoy\.filters\.http\.wasm_v2/);
  const bg = await nacked.evaluate((e) => getComputedStyle(e).backgroundColor);
  assert.notEqual(bg, 'rgba(0, 0, 0, 0)', 'a NACKED row is highlighted');
  assert.equal(await page.locator('table.proxies-table tr[data-sync="STALE"]').count(), 2);
  await page.locator('input[name="q"]').fill('nacked');
  await page.waitForFunction(() => document.querySelectorAll('table.proxies-table tbody tr').length === 1);
}

/** An API error's `error` and `hint` reach the page. */
export async function checkErrorFixture(page, { base }) {
  await go(page, base, '#/services?namespace=default&name=reviews');
  await page.locator('.charts figure.chart').first().waitFor();
  const msg = await apiGet(page, '/api/weft/metrics?kind=service');
  assert.equal(msg.status, 400);
  await go(page, base, '#/traces/0123456789abcdef');
  const box = page.locator('.error-box');
  await box.waitFor();
  assert.match(await box.textContent(), /trace 0123456789abcdef not found.*traces are kept for an hour/);
}
