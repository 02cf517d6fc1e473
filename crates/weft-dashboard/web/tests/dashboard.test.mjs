// npm test: the dashboard in Debian's Chromium, against the fixture server or, with
// WEFT_DASHBOARD_URL set, against a running control plane (only the checks that do not
// depend on the fixtures; WEFT_DASHBOARD_TOKEN adds the token form check, for a backend
// bound to a non-loopback address).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { startFixtureServer } from './fixture-server.mjs';
import * as c from './checks.mjs';

const external = process.env.WEFT_DASHBOARD_URL?.replace(/\/+$/, '');
const externalToken = process.env.WEFT_DASHBOARD_TOKEN;
const TOKEN = 'fixture-token-3f9a';

let browser;
let server;
let authServer;
let base = external;

before(async () => {
  rmSync(c.OUT_DIR, { recursive: true, force: true });
  browser = await c.launchBrowser();
  if (!external) {
    server = await startFixtureServer();
    authServer = await startFixtureServer({ token: TOKEN });
    base = server.url;
  }
});

after(async () => {
  await browser?.close();
  await server?.close();
  await authServer?.close();
});

async function withPage(fn, opts) {
  const page = await c.newPage(browser, opts);
  try {
    if (external && externalToken) {
      const u = new URL(base);
      await page.context().addCookies([{ name: 'weft-token', value: externalToken, domain: u.hostname, path: '/', sameSite: 'Strict' }]);
    }
    await fn(page);
    assert.deepEqual(page.errors, [], 'no uncaught errors in the page');
  } catch (e) {
    await c.screenshot(page, `failure-${Date.now()}.png`).catch(() => {});
    throw e;
  } finally {
    await page.context().close();
  }
}

const steer = async (params) => {
  const r = await fetch(`${server.url}/__fixture?${params}`, { method: 'POST' });
  assert.equal(r.status, 200);
};

test('shell: top bar, nav, status line', () => withPage((p) => c.checkShell(p, { base })));
test('graph: nodes, edges, rate labels, panel', () => withPage((p) => c.checkGraph(p, { base, minEdges: external ? 1 : 15, minLocked: external ? 1 : 6, shot: external && 'live-graph.png' })));
test('services: list and charts', () => withPage((p) => c.checkServices(p, { base, kind: 'services' })));
test('workloads: list and charts', () => withPage((p) => c.checkServices(p, { base, kind: 'workloads' })));
test('traces: search and waterfall', () => withPage(async (p) => {
  const r = await c.checkTraces(p, { base, minRows: 1, required: !!external, shot: external && 'live-trace.png' });
  if (!external) assert.equal(r.traces, 3);
}));
test('config: table and YAML', () => withPage((p) => c.checkConfig(p, { base, shot: external && 'live-config.png' })));
test('proxies: table', () => withPage((p) => c.checkProxies(p, { base })));

if (external) {
  test('token form (WEFT_DASHBOARD_TOKEN)', { skip: !externalToken && 'WEFT_DASHBOARD_TOKEN not set' }, async () => {
    const page = await c.newPage(browser);
    try {
      await c.checkTokenForm(page, { base, token: externalToken });
    } finally {
      await page.context().close();
    }
  });
} else {
  test('fixture graph: labels, colours, badges, box, panels', () => withPage((p) => c.checkGraphFixture(p, { base })));
  test('fixture graph: stable layout on refresh and on a new node', () => withPage((p) => c.checkStableLayoutFixture(p, { base, steer })));
  test('fixture graph: controls and live refresh', () => withPage((p) => c.checkGraphControls(p, { base })));
  test('fixture services and workloads: charts, direction, pods', () => withPage((p) => c.checkServicesFixture(p, { base })));
  test('fixture traces: search, waterfall rows, tags, annotations', () => withPage((p) => c.checkTracesFixture(p, { base })));
  test('fixture config: IST0101 with its path above the YAML', () => withPage((p) => c.checkConfigFixture(p, { base })));
  test('fixture proxies: the NACKED row', () => withPage((p) => c.checkProxiesFixture(p, { base })));
  test('fixture errors: error and hint shown', () => withPage((p) => c.checkErrorFixture(p, { base })));
  test('401: token form, refusal, retry, cookie', async () => {
    const page = await c.newPage(browser);
    try {
      await c.checkTokenForm(page, { base: authServer.url, token: TOKEN });
      assert.deepEqual(page.errors, []);
    } finally {
      await page.context().close();
    }
  });
}
