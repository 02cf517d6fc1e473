// Traces: Zipkin v2's query API, a search form, the matching traces, a waterfall per trace.
import { useMemo, useState } from 'preact/hooks';
import type { ZipkinSpan, ZipkinTrace } from '../types';
import { apiUrl } from '../api';
import { hashFor, navigate, useApi, type Route } from '../hooks';
import { fmtDateTime, fmtMicros, parseDuration } from '../format';
import { Empty, ErrorBox, Loading } from '../components/common';
import { buildTrace, serviceHue, spanIsError, spanService, type SpanRow } from './trace-model';

const Z = '/api/zipkin/api/v2';

const LOOKBACKS: [string, string][] = [
  ['300000', 'Last 5m'],
  ['900000', 'Last 15m'],
  ['3600000', 'Last 1h'],
  ['7200000', 'Last 2h'],
  ['21600000', 'Last 6h'],
  ['86400000', 'Last 24h'],
];

function ServiceChip({ name }: { name: string }) {
  return (
    <span class="svc-chip" style={{ borderColor: `hsl(${serviceHue(name)} 55% 45%)` }}>
      {name}
    </span>
  );
}

function SearchForm({ route }: { route: Route }) {
  const q = route.query;
  const [service, setService] = useState(q.get('service') ?? '');
  const [operation, setOperation] = useState(q.get('operation') ?? '');
  const [minDuration, setMinDuration] = useState(q.get('minDuration') ?? '');
  const [lookback, setLookback] = useState(q.get('lookback') ?? '3600000');
  const [limit, setLimit] = useState(q.get('limit') ?? '20');
  const services = useApi<string[]>(`${Z}/services`, 0, true);
  const spans = useApi<string[]>(service ? apiUrl(`${Z}/spans`, { serviceName: service }) : null, 0);
  const svcNames = [...new Set([...(services.data ?? []), ...(service ? [service] : [])])].sort();
  const opNames = [...new Set([...(spans.data ?? []), ...(operation ? [operation] : [])])].sort();
  const badMin = minDuration.trim() !== '' && !Number.isFinite(parseDuration(minDuration));
  const submit = (ev: Event) => {
    ev.preventDefault();
    if (badMin) return;
    navigate(hashFor('traces', { service, operation, minDuration: minDuration.trim(), lookback, limit, t: Date.now() }));
  };
  return (
    <form class="toolbar trace-search" onSubmit={submit} aria-label="Find traces">
      <label class="ctl">
        <span class="ctl-label">Service</span>
        <select
          name="service"
          value={service}
          onChange={(e) => {
            setService((e.target as HTMLSelectElement).value);
            setOperation('');
          }}
        >
          <option value="">All services</option>
          {svcNames.map((s) => (
            <option key={s} value={s}>
              {s}
            </option>
          ))}
        </select>
      </label>
      <label class="ctl">
        <span class="ctl-label">Operation</span>
        <select name="operation" value={operation} onChange={(e) => setOperation((e.target as HTMLSelectElement).value)} disabled={!service}>
          <option value="">All operations</option>
          {opNames.map((s) => (
            <option key={s} value={s}>
              {s}
            </option>
          ))}
        </select>
      </label>
      <label class="ctl">
        <span class="ctl-label">Min duration</span>
        <input
          name="minDuration"
          placeholder="e.g. 100ms"
          size={9}
          value={minDuration}
          aria-invalid={badMin}
          onInput={(e) => setMinDuration((e.target as HTMLInputElement).value)}
        />
      </label>
      <label class="ctl">
        <span class="ctl-label">Lookback</span>
        <select name="lookback" value={lookback} onChange={(e) => setLookback((e.target as HTMLSelectElement).value)}>
          {LOOKBACKS.map(([v, l]) => (
            <option key={v} value={v}>
              {l}
            </option>
          ))}
        </select>
      </label>
      <label class="ctl">
        <span class="ctl-label">Limit</span>
        <input name="limit" type="number" min={1} max={1000} size={4} value={limit} onInput={(e) => setLimit((e.target as HTMLInputElement).value)} />
      </label>
      <button type="submit" class="primary">
        Find traces
      </button>
      <ErrorBox error={services.error} />
    </form>
  );
}

function TraceList({ route }: { route: Route }) {
  const q = route.query;
  const key = q.toString();
  const url = useMemo(() => {
    const min = parseDuration(q.get('minDuration') ?? '');
    return apiUrl(`${Z}/traces`, {
      serviceName: q.get('service'),
      spanName: q.get('operation'),
      minDuration: Number.isFinite(min) && min > 0 ? Math.round(min * 1e6) : undefined,
      endTs: Date.now(),
      lookback: q.get('lookback') ?? '3600000',
      limit: q.get('limit') ?? '20',
    });
  }, [key]);
  const traces = useApi<ZipkinTrace[]>(url);
  const rows = useMemo(
    () =>
      (traces.data ?? [])
        .filter((t) => t.length > 0)
        .map((t) => {
          const tree = buildTrace(t);
          const root = tree.roots[0]?.span;
          return { tree, root };
        })
        .sort((a, b) => b.tree.start - a.tree.start),
    [traces.data],
  );
  const maxDur = Math.max(1, ...rows.map((r) => r.tree.duration));
  if (traces.error) return <ErrorBox error={traces.error} />;
  if (!traces.data) return <Loading what="traces" />;
  if (!rows.length) return <Empty>No traces match. Widen the lookback, or send some requests.</Empty>;
  return (
    <table class="grid traces-list" aria-label="Traces">
      <thead>
        <tr>
          <th>Trace</th>
          <th>Started</th>
          <th>Spans</th>
          <th>Services</th>
          <th class="num">Duration</th>
        </tr>
      </thead>
      <tbody>
        {rows.map(({ tree, root }) => (
          <tr key={tree.traceId} data-trace-id={tree.traceId} class={tree.errors ? 'has-error' : ''}>
            <td>
              <a href={`#/traces/${encodeURIComponent(tree.traceId)}`}>
                {root ? `${spanService(root)}: ${root.name ?? '?'}` : tree.traceId}
              </a>
              <div class="muted mono">{tree.traceId}</div>
            </td>
            <td>{tree.start ? fmtDateTime(tree.start / 1000) : '–'}</td>
            <td>
              {tree.rows.length}
              {tree.errors > 0 && <span class="err-count"> · {tree.errors} errors</span>}
            </td>
            <td class="svc-cell">
              {[...tree.services.entries()].map(([s, c]) => (
                <span key={s}>
                  <ServiceChip name={s} /> {c}{' '}
                </span>
              ))}
            </td>
            <td class="num dur-cell">
              <span class="dur-bar" style={{ width: `${(tree.duration / maxDur) * 100}%` }} />
              <span>{fmtMicros(tree.duration)}</span>
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

const KNOWN_TAGS = [
  'http.method',
  'http.url',
  'http.status_code',
  'http.protocol',
  'response_flags',
  'upstream_cluster',
  'upstream_cluster.name',
  'istio.canonical_service',
  'istio.canonical_revision',
  'istio.namespace',
  'istio.mesh_id',
  'node_id',
  'peer.address',
  'downstream_cluster',
  'request_size',
  'response_size',
  'guid:x-request-id',
  'component',
  'error',
];

function SpanDetail({ row, traceStart }: { row: SpanRow; traceStart: number }) {
  const s: ZipkinSpan = row.span;
  const tags = Object.entries(s.tags ?? {}).sort(([a], [b]) => {
    const ia = KNOWN_TAGS.indexOf(a);
    const ib = KNOWN_TAGS.indexOf(b);
    return (ia < 0 ? 999 : ia) - (ib < 0 ? 999 : ib) || a.localeCompare(b);
  });
  return (
    <section class="span-detail" aria-label="Span details" data-span-id={s.id}>
      <h3>
        <ServiceChip name={row.service} /> {s.name}
      </h3>
      <div class="fields">
        <div class="field">
          <span class="field-label">Span</span>
          <span class="field-value mono">{s.id}</span>
        </div>
        {s.parentId && (
          <div class="field">
            <span class="field-label">Parent</span>
            <span class="field-value mono">{s.parentId}</span>
          </div>
        )}
        <div class="field">
          <span class="field-label">Kind</span>
          <span class="field-value">{s.kind ?? '–'}</span>
        </div>
        <div class="field">
          <span class="field-label">Start</span>
          <span class="field-value">+{fmtMicros(row.start)}</span>
        </div>
        <div class="field">
          <span class="field-label">Duration</span>
          <span class="field-value">{fmtMicros(row.duration)}</span>
        </div>
        {s.remoteEndpoint && (
          <div class="field">
            <span class="field-label">Remote</span>
            <span class="field-value">
              {[s.remoteEndpoint.serviceName, s.remoteEndpoint.ipv4 ?? s.remoteEndpoint.ipv6, s.remoteEndpoint.port].filter(Boolean).join(' ')}
            </span>
          </div>
        )}
      </div>
      {tags.length > 0 && (
        <table class="mini tags" aria-label="Tags">
          <tbody>
            {tags.map(([k, v]) => (
              <tr key={k} class={k === 'error' || (k === 'http.status_code' && parseInt(v, 10) >= 500) ? 'code-5xx' : ''}>
                <th>{k}</th>
                <td class="mono">{v}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {s.annotations && s.annotations.length > 0 && (
        <>
          <h4>Annotations</h4>
          <table class="mini annotations" aria-label="Annotations">
            <tbody>
              {s.annotations.map((a, i) => (
                <tr key={i}>
                  <th>+{fmtMicros(a.timestamp - traceStart)}</th>
                  <td>{a.value}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
    </section>
  );
}

export function TraceView({ id }: { id: string }) {
  const trace = useApi<ZipkinTrace>(`${Z}/trace/${encodeURIComponent(id)}`);
  const tree = useMemo(() => (trace.data ? buildTrace(trace.data) : undefined), [trace.data]);
  const [sel, setSel] = useState<string | null>(null);
  const [collapsed, setCollapsed] = useState<Set<string>>(new Set());
  if (trace.error)
    return (
      <div class="page">
        <a href="#/traces">← Traces</a>
        <ErrorBox error={trace.error} />
      </div>
    );
  if (!tree) return <Loading what="the trace" />;
  const total = Math.max(1, tree.duration);
  const hidden = new Set<SpanRow>();
  const hide = (r: SpanRow) => r.children.forEach((c) => (hidden.add(c), hide(c)));
  tree.rows.forEach((r) => collapsed.has(r.key) && hide(r));
  const visible = tree.rows.filter((r) => !hidden.has(r));
  const selected = tree.rows.find((r) => r.key === sel);
  const root = tree.roots[0];
  const ticks = [0, 0.25, 0.5, 0.75, 1];
  const toggle = (k: string) => {
    const n = new Set(collapsed);
    n.has(k) ? n.delete(k) : n.add(k);
    setCollapsed(n);
  };
  return (
    <div class="page trace-page">
      <div class="trace-head">
        <a href="#/traces">← Traces</a>
        <h1>
          {root ? `${root.service}: ${root.span.name ?? ''}` : 'Trace'} <span class="muted mono">{tree.traceId}</span>
        </h1>
        <div class="fields">
          <div class="field">
            <span class="field-label">Started</span>
            <span class="field-value">{tree.start ? fmtDateTime(tree.start / 1000) : '–'}</span>
          </div>
          <div class="field">
            <span class="field-label">Duration</span>
            <span class="field-value">{fmtMicros(tree.duration)}</span>
          </div>
          <div class="field">
            <span class="field-label">Spans</span>
            <span class="field-value">{tree.rows.length}</span>
          </div>
          <div class="field">
            <span class="field-label">Services</span>
            <span class="field-value">{tree.services.size}</span>
          </div>
          {tree.errors > 0 && (
            <div class="field">
              <span class="field-label">Errors</span>
              <span class="field-value err failure">{tree.errors}</span>
            </div>
          )}
        </div>
      </div>
      <div class="trace-body">
        <div class="waterfall" role="table" aria-label="Trace waterfall">
          <div class="wf-row wf-axis" role="row">
            <div class="wf-name" role="columnheader">
              Service: operation
            </div>
            <div class="wf-track" role="columnheader">
              {ticks.map((t) => (
                <span key={t} class="wf-tick" style={{ left: `${t * 100}%` }}>
                  {fmtMicros(t * total)}
                </span>
              ))}
            </div>
          </div>
          {visible.map((r) => {
            const left = (r.start / total) * 100;
            const width = Math.max(0.3, (r.duration / total) * 100);
            const hue = serviceHue(r.service);
            return (
              <div
                key={r.key}
                class={`wf-row span-row${r.key === sel ? ' selected' : ''}${r.error ? ' error' : ''}`}
                role="row"
                tabIndex={0}
                aria-selected={r.key === sel}
                data-span-id={r.span.id}
                data-parent-id={r.span.parentId}
                data-depth={r.depth}
                onClick={() => setSel(r.key === sel ? null : r.key)}
                onKeyDown={(e) => (e.key === 'Enter' || e.key === ' ') && (e.preventDefault(), setSel(r.key))}
              >
                <div class="wf-name" role="cell" style={{ paddingLeft: `${6 + r.depth * 14}px` }} title={`${r.service}: ${r.span.name ?? ''}`}>
                  {r.children.length > 0 ? (
                    <button
                      type="button"
                      class="wf-toggle"
                      aria-label={collapsed.has(r.key) ? 'Expand' : 'Collapse'}
                      onClick={(e) => {
                        e.stopPropagation();
                        toggle(r.key);
                      }}
                    >
                      {collapsed.has(r.key) ? '▸' : '▾'}
                    </button>
                  ) : (
                    <span class="wf-toggle-space" />
                  )}
                  <span class="wf-svc" style={{ color: `hsl(${hue} 55% 35%)` }}>
                    {r.service}
                  </span>{' '}
                  <span class="span-name">{r.span.name ?? '?'}</span>
                </div>
                <div class="wf-track" role="cell">
                  <span
                    class="wf-bar"
                    style={{ left: `${left}%`, width: `${width}%`, background: r.error ? undefined : `hsl(${hue} 55% 55%)` }}
                    title={`${fmtMicros(r.duration)}`}
                  />
                  {(r.span.annotations ?? []).map((a, i) => (
                    <span key={i} class="wf-annot" title={a.value} style={{ left: `${((a.timestamp - tree.start) / total) * 100}%` }} />
                  ))}
                  <span
                    class={`wf-dur${width > 22 ? ' inside' : ''}`}
                    style={width > 22 ? { right: `${100 - left - width + 0.5}%` } : left + width > 80 ? { right: `${100 - left + 0.5}%` } : { left: `${left + width + 0.5}%` }}
                  >
                    {fmtMicros(r.duration)}
                    {spanIsError(r.span) && r.span.tags?.['http.status_code'] ? ` · ${r.span.tags['http.status_code']}` : ''}
                  </span>
                </div>
              </div>
            );
          })}
        </div>
        {selected ? <SpanDetail row={selected} traceStart={tree.start} /> : <p class="muted hint-select">Select a span to see its tags and annotations.</p>}
      </div>
    </div>
  );
}

export function TracesPage({ route }: { route: Route }) {
  if (route.path[1]) return <TraceView key={route.path[1]} id={route.path[1]} />;
  return (
    <div class="page traces">
      <div class="toolbar">
        <h1>Traces</h1>
      </div>
      <SearchForm key={route.query.toString()} route={route} />
      <TraceList route={route} />
    </div>
  );
}
