// Proxies: what `weft proxy-status` shows, NACKs first to the eye.
import { useState } from 'preact/hooks';
import type { Proxy } from '../types';
import { useApi, type Route } from '../hooks';
import { fmtSeconds } from '../format';
import { Empty, ErrorBox, Loading, SyncBadge } from '../components/common';

export function ProxiesPage({ route }: { route: Route }) {
  const [filter, setFilter] = useState(route.query.get('q') ?? '');
  const px = useApi<Proxy[]>('/api/weft/proxies', 10000, true);
  const all = [...(px.data ?? [])].sort((a, b) => `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`));
  const f = filter.trim().toLowerCase();
  const shown = f ? all.filter((p) => `${p.name}.${p.namespace} ${p.workload ?? ''} ${p.sync ?? ''}`.toLowerCase().includes(f)) : all;
  const counts = new Map<string, number>();
  for (const p of all) counts.set(p.sync ?? '?', (counts.get(p.sync ?? '?') ?? 0) + 1);
  return (
    <div class="page proxies">
      <div class="toolbar">
        <h1>Proxies</h1>
        <label class="ctl">
          <span class="ctl-label">Filter</span>
          <input name="q" value={filter} placeholder="name, workload, sync" onInput={(e) => setFilter((e.target as HTMLInputElement).value)} />
        </label>
        <span class="grow" />
        {px.data && (
          <span class="summary">
            {all.length} proxies
            {[...counts.entries()].map(([s, c]) => (
              <span key={s}>
                {' '}
                · <SyncBadge sync={s} /> {c}
              </span>
            ))}
          </span>
        )}
      </div>
      <ErrorBox error={px.error} />
      {!px.data && px.loading && <Loading what="the proxies" />}
      {px.data && all.length === 0 && <Empty>No proxy is connected.</Empty>}
      {shown.length > 0 && (
        <table class="grid proxies-table" aria-label="Proxies">
          <thead>
            <tr>
              <th>Proxy</th>
              <th>Workload</th>
              <th>Address</th>
              <th>Version</th>
              <th>Sync</th>
              <th>Sent</th>
              <th>Acked</th>
              <th>NACK</th>
              <th class="num">Connected</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((p) => {
              const s = (p.sync ?? '').toLowerCase().replace(/\s+/g, '-');
              return (
                <tr key={`${p.namespace}/${p.name}`} class={`sync-row-${s}`} data-sync={p.sync} data-proxy={`${p.name}.${p.namespace}`}>
                  <td class="mono">
                    {p.name}.{p.namespace}
                  </td>
                  <td>{p.workload}</td>
                  <td class="mono">{p.address}</td>
                  <td>{p.version}</td>
                  <td>
                    <SyncBadge sync={p.sync} />
                  </td>
                  <td class="mono">{p.sent}</td>
                  <td class="mono">{p.acked}</td>
                  <td class="nack">
                    {p.nacked && <span class="mono">{p.nacked}</span>} {p.nackReason}
                  </td>
                  <td class="num">{fmtSeconds(p.connectedSeconds)}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </div>
  );
}
