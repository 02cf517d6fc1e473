import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import type { GraphResponse, Namespace } from '../types';
import { apiUrl } from '../api';
import { hashFor, navigate, useApi, type Route } from '../hooks';
import { buildModel, nodeName, type Model } from './model';
import { computeLayout, type LayoutCache } from './layout';
import { GraphView, type Selection } from './GraphView';
import { Panel } from './Panel';
import { Empty, ErrorBox, Loading } from '../components/common';
import { fmtClock } from '../format';

const GRAPH_TYPES: [string, string][] = [
  ['app', 'App'],
  ['versionedApp', 'Versioned app'],
  ['workload', 'Workload'],
  ['service', 'Service'],
];
const DURATIONS: [string, string][] = [
  ['60', 'Last 1m'],
  ['300', 'Last 5m'],
  ['600', 'Last 10m'],
  ['1800', 'Last 30m'],
  ['3600', 'Last 1h'],
];
const REFRESH: [string, string][] = [
  ['0', 'Off'],
  ['5', 'Every 5s'],
  ['10', 'Every 10s'],
  ['15', 'Every 15s'],
];

function NamespacePicker({ all, selected, onChange }: { all: string[]; selected: string[]; onChange: (v: string[]) => void }) {
  const ref = useRef<HTMLDetailsElement>(null);
  useEffect(() => {
    const close = (ev: MouseEvent) => {
      if (ref.current && !ref.current.contains(ev.target as Node)) ref.current.open = false;
    };
    document.addEventListener('click', close);
    return () => document.removeEventListener('click', close);
  }, []);
  const names = [...new Set([...all, ...selected])].sort();
  const toggle = (n: string) => onChange(selected.includes(n) ? selected.filter((x) => x !== n) : [...selected, n].sort());
  return (
    <details class="ns-picker" ref={ref}>
      <summary aria-label="Namespaces">
        <span class="ctl-label">Namespaces</span> {selected.length ? selected.join(', ') : 'all with traffic'}
      </summary>
      <div class="ns-menu" role="group" aria-label="Namespaces">
        {names.map((n) => (
          <label key={n}>
            <input type="checkbox" value={n} checked={selected.includes(n)} onChange={() => toggle(n)} /> {n}
          </label>
        ))}
        {names.length === 0 && <span class="muted">No namespaces</span>}
        <button type="button" class="linkish" onClick={() => onChange([])}>
          All with traffic
        </button>
      </div>
    </details>
  );
}

function Select({ label, value, options, onChange, name }: { label: string; value: string; options: [string, string][]; onChange: (v: string) => void; name: string }) {
  return (
    <label class="ctl">
      <span class="ctl-label">{label}</span>
      <select name={name} value={value} onChange={(e) => onChange((e.target as HTMLSelectElement).value)}>
        {options.map(([v, l]) => (
          <option key={v} value={v}>
            {l}
          </option>
        ))}
      </select>
    </label>
  );
}

function GraphTable({ model, visible, onSelect }: { model: Model; visible: boolean; onSelect: (s: Selection) => void }) {
  return (
    <section class={visible ? 'graph-table' : 'graph-table sr-only'} aria-label="Graph as tables">
      <table aria-label="Graph nodes">
        <caption>Nodes</caption>
        <thead>
          <tr>
            <th>Name</th>
            <th>Type</th>
            <th>Namespace</th>
            <th>Badges</th>
            <th>Health</th>
          </tr>
        </thead>
        <tbody>
          {[...model.boxes, ...model.leaves].map((n) => (
            <tr key={n.id} data-id={n.id}>
              <td>
                <button type="button" class="linkish" onClick={() => onSelect({ kind: 'node', id: n.id })}>
                  {nodeName(n.data)}
                </button>
              </td>
              <td>{n.data.nodeType}</td>
              <td>{n.data.namespace}</td>
              <td>{n.badges.map((b) => b.title).join('; ')}</td>
              <td>{n.health}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <table aria-label="Graph edges">
        <caption>Edges</caption>
        <thead>
          <tr>
            <th>From</th>
            <th>To</th>
            <th>Protocol</th>
            <th>Traffic</th>
            <th>Health</th>
          </tr>
        </thead>
        <tbody>
          {model.edges.map((e) => (
            <tr key={e.id} data-source={e.source} data-target={e.target}>
              <td>{nodeName(model.nodes.get(e.source)!.data)}</td>
              <td>
                <button type="button" class="linkish" onClick={() => onSelect({ kind: 'edge', id: e.id })}>
                  {nodeName(model.nodes.get(e.target)!.data)}
                </button>
              </td>
              <td>{e.protocol}</td>
              <td>{e.label.map((l) => l.map((s) => s.text).join('')).join(', ') || 'no traffic'}</td>
              <td>{e.health}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

function Legend() {
  return (
    <div class="legend" aria-label="Legend">
      <span class="lg healthy">ok</span>
      <span class="lg degraded">&gt;0.1% 5xx</span>
      <span class="lg failure">&gt;10% 5xx</span>
      <span class="lg tcp">TCP</span>
      <span class="lg idle">idle</span>
    </div>
  );
}

export function GraphPage({ route }: { route: Route }) {
  const q = route.query;
  const namespaces = (q.get('namespaces') ?? '').split(',').filter(Boolean);
  const graphType = q.get('graphType') ?? 'versionedApp';
  const duration = q.get('duration') ?? '60';
  const refresh = q.get('refresh') ?? '10';
  const [showTable, setShowTable] = useState(false);
  const [selected, setSelected] = useState<Selection>(null);

  const set = (k: string, v: string) => {
    const p: Record<string, string> = { namespaces: namespaces.join(','), graphType, duration, refresh };
    p[k] = v;
    navigate(hashFor('graph', p), true);
  };

  const nsList = useApi<Namespace[]>('/api/namespaces', 60000, true);
  const url = apiUrl('/api/namespaces/graph', {
    namespaces: namespaces.join(','),
    graphType,
    duration: `${duration}s`,
  });
  const graph = useApi<GraphResponse>(url, num(refresh) * 1000, true);

  const model = useMemo(() => buildModel(graph.data), [graph.data]);
  const cache = useRef<LayoutCache | undefined>(undefined);
  const layout = useMemo(() => {
    const r = computeLayout(model, cache.current);
    cache.current = r.cache;
    return r.layout;
  }, [model]);

  useEffect(() => {
    if (selected && !(selected.kind === 'node' ? model.nodes.has(selected.id) : model.edges.some((e) => e.id === selected.id))) setSelected(null);
  }, [model]);

  const allNs = (nsList.data ?? []).map((n) => n.name);
  const empty = graph.data && model.leaves.length === 0;

  return (
    <div class="page graph-page">
      <div class="toolbar" role="toolbar" aria-label="Graph controls">
        <NamespacePicker all={allNs} selected={namespaces} onChange={(v) => set('namespaces', v.join(','))} />
        <Select label="Graph" name="graphType" value={graphType} options={GRAPH_TYPES} onChange={(v) => set('graphType', v)} />
        <Select label="Window" name="duration" value={duration} options={DURATIONS} onChange={(v) => set('duration', v)} />
        <Select label="Refresh" name="refresh" value={refresh} options={REFRESH} onChange={(v) => set('refresh', v)} />
        <button type="button" class="refresh" onClick={graph.reload} disabled={graph.loading} aria-label="Refresh now">
          ↻ Refresh
        </button>
        <span class="updated" aria-live="polite">
          {graph.loading ? 'Loading…' : graph.updated ? `Updated ${fmtClock(graph.updated)}` : ''}
        </span>
        <span class="grow" />
        <Legend />
        <button type="button" class="linkish" aria-pressed={showTable} onClick={() => setShowTable(!showTable)}>
          {showTable ? 'Hide table' : 'Show as table'}
        </button>
      </div>
      <ErrorBox error={graph.error} />
      <ErrorBox error={nsList.error} />
      <div class="graph-main">
        {!graph.data && graph.loading && <Loading what="the graph" />}
        {empty && (
          <Empty>
            No traffic in this window{namespaces.length ? ` for ${namespaces.join(', ')}` : ''}. Send some requests, or widen the window.
          </Empty>
        )}
        {graph.data && !empty && <GraphView model={model} layout={layout} selected={selected} onSelect={setSelected} />}
        <Panel model={model} selected={selected} onSelect={setSelected} />
      </div>
      {graph.data && <GraphTable model={model} visible={showTable} onSelect={setSelected} />}
    </div>
  );
}

function num(s: string): number {
  const n = parseInt(s, 10);
  return Number.isFinite(n) ? n : 0;
}
