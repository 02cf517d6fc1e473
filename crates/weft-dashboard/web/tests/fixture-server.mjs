// A stand-in for the control plane's dashboard server: ../assets/ at "/", the API from
// tests/fixtures/. No dependencies.
//
//   node tests/fixture-server.mjs [--port 20001] [--token SECRET]
//
// With a token, every /api/ call needs `Authorization: Bearer SECRET` or the
// `weft-token=SECRET` cookie, and answers 401 otherwise, as the real server does when
// it is bound to a non-loopback address.
//
// Tests steer it with POST /__fixture?scale=2&extra=1: `scale` multiplies the graph's
// rates (the topology stays), `extra` adds a node and an edge (reviews-v4).
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const fixtures = join(here, 'fixtures');
const assets = join(here, '..', '..', 'assets');

const load = (name) => JSON.parse(readFileSync(join(fixtures, name), 'utf8'));

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' };

function scaleRates(rates, f) {
  const out = {};
  for (const [k, v] of Object.entries(rates ?? {})) {
    out[k] = /Percent/.test(k) ? v : (parseFloat(v) * f).toFixed(2);
  }
  return out;
}

function graph(query, state) {
  const g = load('graph.json');
  g.graphType = query.get('graphType') ?? 'versionedApp';
  g.timestamp = Math.floor(Date.now() / 1000);
  const ns = (query.get('namespaces') ?? '').split(',').filter(Boolean);
  if (state.extra) {
    g.elements.nodes.push({
      data: {
        id: 'default-reviews-v4', nodeType: 'app', parent: 'box-default-reviews', namespace: 'default', app: 'reviews',
        version: 'v4', workload: 'reviews-v4', traffic: [{ protocol: 'http', rates: { httpIn: '0.40' } }],
      },
    });
    g.elements.edges.push({
      data: {
        id: 'svc-default-reviews>default-reviews-v4', source: 'svc-default-reviews', target: 'default-reviews-v4', responseTime: '9.0',
        traffic: { protocol: 'http', rates: { http: '0.40', httpPercentErr: '0.0', httpPercentReq: '7.0' } },
      },
    });
  }
  if (state.scale !== 1) {
    for (const n of g.elements.nodes) for (const t of n.data.traffic ?? []) t.rates = scaleRates(t.rates, state.scale);
    for (const e of g.elements.edges) if (e.data.traffic) e.data.traffic.rates = scaleRates(e.data.traffic.rates, state.scale);
  }
  if (ns.length) {
    // Nodes of namespaces not asked for stay when they talk to ones asked for (isOutside).
    const keep = new Set(g.elements.nodes.filter((n) => ns.includes(n.data.namespace)).map((n) => n.data.id));
    const edges = g.elements.edges.filter((e) => keep.has(e.data.source) || keep.has(e.data.target));
    const ids = new Set(edges.flatMap((e) => [e.data.source, e.data.target]));
    g.elements.edges = edges;
    g.elements.nodes = g.elements.nodes.filter((n) => keep.has(n.data.id) || ids.has(n.data.id) || (n.data.nodeType === 'box' && ns.includes(n.data.namespace)));
    for (const n of g.elements.nodes) if (!keep.has(n.data.id) && n.data.nodeType !== 'unknown') n.data.isOutside = true;
  }
  return g;
}

/** Moves the fixture's times so that they end now. */
function metrics(query) {
  const m = load('metrics.json');
  const shift = Math.floor(Date.now() / 1000 / m.step) * m.step - m.end;
  m.start += shift;
  m.end += shift;
  m.timestamps = m.timestamps.map((t) => t + shift);
  const kind = query.get('kind');
  const name = query.get('name');
  if (query.get('direction') === 'outbound') {
    m.charts[0].series = [{ name: `details.default`, values: m.charts[0].series[0].values.map((v) => (v === null ? null : +(v / 2).toFixed(2))) }];
  }
  m.charts[0].title = `Request volume (${kind} ${name})`;
  return m;
}

function traces() {
  const ts = load('zipkin-traces.json');
  let last = 0;
  for (const t of ts) for (const s of t) last = Math.max(last, s.timestamp + (s.duration ?? 0));
  const shift = (Date.now() - 60_000) * 1000 - last;
  for (const t of ts)
    for (const s of t) {
      s.timestamp += shift;
      for (const a of s.annotations ?? []) a.timestamp += shift;
    }
  return ts;
}

function api(path, query, state) {
  switch (path) {
    case '/api/namespaces':
      return load('namespaces.json');
    case '/api/namespaces/graph':
      return graph(query, state);
    case '/api/weft/status':
      return load('status.json');
    case '/api/weft/services':
    case '/api/weft/workloads': {
      const list = load(path.endsWith('services') ? 'services.json' : 'workloads.json');
      const ns = query.get('namespace');
      return ns ? list.filter((x) => x.namespace === ns) : list;
    }
    case '/api/weft/metrics':
      if (!query.get('name') || !query.get('namespace')) return [400, { error: 'metrics needs namespace and name', hint: 'add ?kind=service&namespace=...&name=...' }];
      return metrics(query);
    case '/api/weft/config':
      return load('config.json');
    case '/api/weft/proxies':
      return load('proxies.json');
    case '/api/zipkin/api/v2/services':
      return load('zipkin-services.json');
    case '/api/zipkin/api/v2/spans':
      return load('zipkin-spans.json')[query.get('serviceName') ?? ''] ?? [];
    case '/api/zipkin/api/v2/traces': {
      const svc = query.get('serviceName');
      const span = query.get('spanName');
      const min = parseInt(query.get('minDuration') ?? '0', 10) || 0;
      const limit = parseInt(query.get('limit') ?? '10', 10) || 10;
      return traces()
        .filter((t) => !svc || t.some((s) => s.localEndpoint?.serviceName === svc))
        .filter((t) => !span || t.some((s) => s.localEndpoint?.serviceName === svc && s.name === span))
        .filter((t) => Math.max(...t.map((s) => s.duration ?? 0)) >= min)
        .slice(0, limit);
    }
  }
  const m = path.match(/^\/api\/zipkin\/api\/v2\/trace\/([0-9a-f]+)$/);
  if (m) {
    const t = traces().find((x) => x[0]?.traceId === m[1]);
    return t ?? [404, { error: `trace ${m[1]} not found`, hint: 'traces are kept for an hour' }];
  }
  return [404, { error: `no such API: ${path}`, hint: 'see docs/dashboard-api.md' }];
}

function authorized(req, token) {
  if (!token) return true;
  if (req.headers.authorization === `Bearer ${token}`) return true;
  const cookies = (req.headers.cookie ?? '').split(';').map((c) => c.trim());
  return cookies.includes(`weft-token=${token}`);
}

function send(res, status, body, type = 'application/json') {
  const data = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store' });
  res.end(data);
}

/** Starts the server; resolves to { url, close, requests, state }. */
export function startFixtureServer({ port = 0, host = '127.0.0.1', token = '' } = {}) {
  const state = { scale: 1, extra: false };
  const requests = [];
  const server = createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    requests.push(`${req.method} ${u.pathname}${u.search}`);
    try {
      if (u.pathname === '/__fixture' && req.method === 'POST') {
        if (u.searchParams.has('scale')) state.scale = parseFloat(u.searchParams.get('scale')) || 1;
        if (u.searchParams.has('extra')) state.extra = u.searchParams.get('extra') === '1';
        return send(res, 200, state);
      }
      if (req.method !== 'GET') return send(res, 405, { error: 'GET only', hint: '' });
      if (u.pathname.startsWith('/api/')) {
        if (!authorized(req, token))
          return send(res, 401, { error: 'This call needs the control plane admin token', hint: 'Run `weft dashboard --print-token` (fixture token: see the test)' });
        const r = api(u.pathname, u.searchParams, state);
        return Array.isArray(r) && typeof r[0] === 'number' ? send(res, r[0], r[1]) : send(res, 200, r);
      }
      const name = u.pathname === '/' ? 'index.html' : normalize(u.pathname).replace(/^\/+/, '');
      if (!['index.html', 'app.js', 'app.css'].includes(name)) return send(res, 404, 'not found', 'text/plain');
      send(res, 200, readFileSync(join(assets, name)), TYPES[name.slice(name.lastIndexOf('.'))]);
    } catch (e) {
      send(res, 500, { error: String(e), hint: 'fixture server bug' });
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const a = server.address();
      resolve({
        url: `http://${host}:${a.port}`,
        requests,
        state,
        close: () => new Promise((r) => server.close(() => r())),
      });
    });
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const arg = (n, d) => {
    const i = process.argv.indexOf(n);
    return i > 0 ? process.argv[i + 1] : d;
  };
  const s = await startFixtureServer({ port: parseInt(arg('--port', '20001'), 10), token: arg('--token', '') });
  console.log(`fixture dashboard at ${s.url}/`);
}
