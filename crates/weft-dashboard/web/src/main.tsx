import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { onAuthPrompt, submitToken, type AuthPrompt } from './api';
import { useApi, useRoute } from './hooks';
import type { Status } from './types';
import { GraphPage } from './graph/GraphPage';
import { InventoryPage } from './pages/Inventory';
import { TracesPage } from './pages/Traces';
import { ConfigPage } from './pages/Config';
import { ProxiesPage } from './pages/Proxies';
import { fmtBytes } from './format';

const PAGES: [string, string][] = [
  ['graph', 'Graph'],
  ['services', 'Services'],
  ['workloads', 'Workloads'],
  ['traces', 'Traces'],
  ['config', 'Istio config'],
  ['proxies', 'Proxies'],
];

function source(s: string | undefined): string {
  return !s ? '?' : s === 'builtin' ? 'built-in' : s;
}

function StatusLine() {
  const st = useApi<Status>('/api/weft/status', 30000, true);
  if (st.error) return <span class="status err">status unavailable</span>;
  const s = st.data;
  if (!s) return <span class="status" />;
  const m = s.metrics;
  return (
    <span class="status" aria-label="Data sources">
      <span title={m?.retention ? `scraped every ${m.scrapeInterval ?? '?'}s, ${Math.round(m.retention / 60)}m kept` : undefined}>
        metrics: <b>{source(m?.source)}</b>
        {m?.series !== undefined && ` · ${m.series.toLocaleString('en')} series`}
        {m?.bytes !== undefined && ` · ${fmtBytes(m.bytes)}`}
      </span>
      <span>
        tracing: <b>{source(s.tracing?.source)}</b>
      </span>
      {s.version && <span class="muted">v{s.version}</span>}
    </span>
  );
}

function TokenForm({ prompt }: { prompt: AuthPrompt }) {
  const [token, setToken] = useState('');
  return (
    <div class="modal-backdrop">
      <form
        class="modal token-form"
        aria-label="Admin token"
        onSubmit={(e) => {
          e.preventDefault();
          if (token.trim()) submitToken(token);
        }}
      >
        <h2>Admin token needed</h2>
        <p>
          {prompt.refused > 0 ? 'That token was not accepted. ' : ''}
          {prompt.error}
        </p>
        {prompt.hint && <p class="hint">{prompt.hint}</p>}
        <label>
          Token
          <input name="token" type="password" autoComplete="off" autoFocus value={token} onInput={(e) => setToken((e.target as HTMLInputElement).value)} />
        </label>
        <button type="submit" class="primary">
          Sign in
        </button>
      </form>
    </div>
  );
}

function App() {
  const route = useRoute();
  const [prompt, setPrompt] = useState<AuthPrompt | null>(null);
  useEffect(() => onAuthPrompt(setPrompt), []);
  const page = route.path[0] ?? 'graph';
  let body;
  switch (page) {
    case 'services':
      body = <InventoryPage key="services" kind="service" route={route} />;
      break;
    case 'workloads':
      body = <InventoryPage key="workloads" kind="workload" route={route} />;
      break;
    case 'traces':
      body = <TracesPage route={route} />;
      break;
    case 'config':
      body = <ConfigPage route={route} />;
      break;
    case 'proxies':
      body = <ProxiesPage route={route} />;
      break;
    default:
      body = <GraphPage route={route} />;
  }
  useEffect(() => {
    const name = PAGES.find(([p]) => p === page)?.[1] ?? 'Graph';
    document.title = `${name} · Weft`;
  }, [page]);
  return (
    <>
      <header class="topbar">
        <a class="brand" href="#/graph">
          <svg width="22" height="22" viewBox="0 0 22 22" aria-hidden="true">
            <path d="M2 6h18M2 11h18M2 16h18M6 2v18M11 2v18M16 2v18" stroke="currentColor" stroke-width="1.6" opacity="0.85" />
          </svg>
          Weft
        </a>
        <nav aria-label="Pages">
          {PAGES.map(([p, l]) => (
            <a key={p} href={`#/${p}`} class={p === page || (p === 'graph' && !PAGES.some(([x]) => x === page)) ? 'active' : ''} aria-current={p === page ? 'page' : undefined}>
              {l}
            </a>
          ))}
        </nav>
        <span class="grow" />
        <StatusLine />
      </header>
      <main>{body}</main>
      {prompt && <TokenForm prompt={prompt} />}
    </>
  );
}

render(<App />, document.getElementById('app')!);
