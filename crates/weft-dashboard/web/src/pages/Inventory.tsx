// Services and Workloads: a table with current traffic, and for the selected one the
// charts of Istio's Grafana dashboards (and, for a workload, its pods).
import type { MetricsResponse, Namespace, ServiceSummary, WorkloadSummary } from '../types';
import { apiUrl } from '../api';
import { hashFor, navigate, useApi, type Route } from '../hooks';
import { fmtMs, fmtOpt, fmtPct, fmtRps } from '../format';
import { Chart } from '../components/Chart';
import { Empty, ErrorBox, Field, Loading, SyncBadge, tracesHref } from '../components/common';

type Kind = 'service' | 'workload';

const DURATIONS: [string, string][] = [
  ['300', '5m'],
  ['600', '10m'],
  ['1800', '30m'],
  ['3600', '1h'],
];

function stepFor(duration: number): number {
  return Math.max(15, Math.round(duration / 60 / 15) * 15);
}

function Detail({ kind, item, route }: { kind: Kind; item: ServiceSummary | WorkloadSummary; route: Route }) {
  const q = route.query;
  const direction = q.get('direction') === 'outbound' ? 'outbound' : 'inbound';
  const duration = q.get('duration') ?? '600';
  const page = kind === 'service' ? 'services' : 'workloads';
  const set = (k: string, v: string) => {
    const p: Record<string, string> = { ns: q.get('ns') ?? '', namespace: item.namespace, name: item.name, direction, duration };
    p[k] = v;
    navigate(hashFor(page, p), true);
  };
  const d = parseInt(duration, 10) || 600;
  const metrics = useApi<MetricsResponse>(
    apiUrl('/api/weft/metrics', { kind, namespace: item.namespace, name: item.name, direction, duration: d, step: stepFor(d) }),
    30000,
  );
  const traceName = `${item.app ?? item.name}.${item.namespace}`;
  const w = kind === 'workload' ? (item as WorkloadSummary) : undefined;
  return (
    <section class="detail" aria-label={`${kind} ${item.name}`}>
      <div class="detail-head">
        <h2>
          {item.name} <span class="muted">{item.namespace}</span>
        </h2>
        <div class="seg" role="group" aria-label="Direction">
          {(['inbound', 'outbound'] as const).map((x) => (
            <button type="button" key={x} class={direction === x ? 'on' : ''} aria-pressed={direction === x} onClick={() => set('direction', x)}>
              {x === 'inbound' ? 'Inbound' : 'Outbound'}
            </button>
          ))}
        </div>
        <label class="ctl">
          <span class="ctl-label">Window</span>
          <select name="duration" value={duration} onChange={(e) => set('duration', (e.target as HTMLSelectElement).value)}>
            {DURATIONS.map(([v, l]) => (
              <option key={v} value={v}>
                {l}
              </option>
            ))}
          </select>
        </label>
        <a class="button-link" href={tracesHref(traceName)}>
          Traces of {traceName}
        </a>
        <a class="button-link" href={hashFor('graph', { namespaces: item.namespace })}>
          Graph
        </a>
      </div>
      <div class="fields">
        {item.app && <Field label="App">{item.app}</Field>}
        {w?.version && <Field label="Version">{w.version}</Field>}
        {kind === 'service' && item.workloads && <Field label="Workloads">{item.workloads.join(', ') || '–'}</Field>}
        {w?.services && <Field label="Services">{w.services.join(', ') || '–'}</Field>}
      </div>
      {w?.pods && (
        <table class="grid pods" aria-label="Pods">
          <thead>
            <tr>
              <th>Pod</th>
              <th>Address</th>
              <th>Ready</th>
              <th>Proxy</th>
              <th>Sync</th>
            </tr>
          </thead>
          <tbody>
            {w.pods.map((p) => (
              <tr key={p.name} data-pod={p.name}>
                <td>{p.name}</td>
                <td>{p.address}</td>
                <td>
                  <span class={p.ready ? 'ready yes' : 'ready no'}>{p.ready ? 'Ready' : 'Not ready'}</span>
                </td>
                <td>{p.proxy ? <a href={hashFor('proxies', { q: p.proxy })}>{p.proxy}</a> : '–'}</td>
                <td>
                  <SyncBadge sync={p.sync} />
                </td>
              </tr>
            ))}
            {w.pods.length === 0 && (
              <tr>
                <td colSpan={5} class="muted">
                  No pods
                </td>
              </tr>
            )}
          </tbody>
        </table>
      )}
      <ErrorBox error={metrics.error} />
      {!metrics.data && metrics.loading && <Loading what="the charts" />}
      {metrics.data && (
        <div class="charts">
          {metrics.data.charts.map((c) => (
            <Chart
              key={c.id}
              chart={c}
              timestamps={metrics.data!.timestamps}
              extra={
                c.id === 'latency' ? (
                  <a class="chart-link" href={tracesHref(traceName)}>
                    traces
                  </a>
                ) : undefined
              }
            />
          ))}
        </div>
      )}
    </section>
  );
}

export function InventoryPage({ kind, route }: { kind: Kind; route: Route }) {
  const q = route.query;
  const page = kind === 'service' ? 'services' : 'workloads';
  const ns = q.get('ns') ?? '';
  const selNs = q.get('namespace');
  const selName = q.get('name');
  const nsList = useApi<Namespace[]>('/api/namespaces', 60000, true);
  const list = useApi<(ServiceSummary | WorkloadSummary)[]>(apiUrl(`/api/weft/${page}`, { namespace: ns }), 15000, true);
  const items = [...(list.data ?? [])].sort((a, b) => (a.namespace + '/' + a.name < b.namespace + '/' + b.name ? -1 : 1));
  const selected = items.find((i) => i.namespace === selNs && i.name === selName);
  const title = kind === 'service' ? 'Services' : 'Workloads';
  return (
    <div class="page inventory">
      <div class="toolbar">
        <h1>{title}</h1>
        <label class="ctl">
          <span class="ctl-label">Namespace</span>
          <select name="ns" value={ns} onChange={(e) => navigate(hashFor(page, { ns: (e.target as HTMLSelectElement).value }), true)}>
            <option value="">All</option>
            {(nsList.data ?? []).map((n) => (
              <option key={n.name} value={n.name}>
                {n.name}
              </option>
            ))}
          </select>
        </label>
      </div>
      <ErrorBox error={list.error} />
      {!list.data && list.loading && <Loading />}
      {list.data && items.length === 0 && <Empty>No {page} yet.</Empty>}
      {items.length > 0 && (
        <table class="grid selectable" aria-label={title}>
          <thead>
            <tr>
              <th>Name</th>
              <th>Namespace</th>
              {kind === 'service' ? <th>Workloads</th> : <th>Version</th>}
              {kind === 'workload' && <th>Pods</th>}
              <th class="num">Requests</th>
              <th class="num">Success</th>
              <th class="num">p50</th>
              <th class="num">p95</th>
              <th class="num">p99</th>
            </tr>
          </thead>
          <tbody>
            {items.map((i) => {
              const w = i as WorkloadSummary;
              const isSel = i === selected;
              const href = hashFor(page, { ns, namespace: i.namespace, name: i.name });
              const ready = w.pods ? w.pods.filter((p) => p.ready).length : 0;
              const low = i.successRate !== null && i.successRate !== undefined && i.successRate < 99.9;
              return (
                <tr key={`${i.namespace}/${i.name}`} class={isSel ? 'selected' : ''} data-name={i.name} data-namespace={i.namespace}>
                  <td>
                    <a href={href}>{i.name}</a>
                  </td>
                  <td>{i.namespace}</td>
                  {kind === 'service' ? <td>{(i.workloads ?? []).join(', ')}</td> : <td>{w.version ?? ''}</td>}
                  {kind === 'workload' && (
                    <td>
                      {w.pods ? (
                        <span class={ready === w.pods.length ? 'ready yes' : 'ready no'}>
                          {ready}/{w.pods.length}
                        </span>
                      ) : (
                        '–'
                      )}
                    </td>
                  )}
                  <td class="num">{fmtOpt(i.rps, (n) => `${fmtRps(n)} rps`)}</td>
                  <td class={`num${low ? (i.successRate! < 90 ? ' failure' : ' degraded') : ''}`}>{fmtOpt(i.successRate, fmtPct)}</td>
                  <td class="num">{fmtOpt(i.p50, fmtMs)}</td>
                  <td class="num">{fmtOpt(i.p95, fmtMs)}</td>
                  <td class="num">{fmtOpt(i.p99, fmtMs)}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      {selected && <Detail key={`${selected.namespace}/${selected.name}`} kind={kind} item={selected} route={route} />}
      {selName && list.data && !selected && (
        <Empty>
          No {kind} {selNs}/{selName}.
        </Empty>
      )}
    </div>
  );
}
