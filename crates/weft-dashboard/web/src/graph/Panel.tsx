// The side panel: what a selected node or edge carries, the config that applies, traces.
import type { ConfigRef } from '../types';
import type { GEdge, GNode, Model } from './model';
import { codeShare, isTcp, nodeName, traceService, weightsText } from './model';
import { fmtBytesRate, fmtMs, fmtPct, fmtRps, num } from '../format';
import { configHref, Field, tracesHref } from '../components/common';
import { hashFor } from '../hooks';
import type { Selection } from './GraphView';

function Rate({ e }: { e: GEdge }) {
  return <>{isTcp(e.protocol) ? fmtBytesRate(e.rate) : `${fmtRps(e.rate)} rps`}</>;
}

function ConfigList({ refs }: { refs: ConfigRef[] }) {
  if (!refs.length) return <p class="muted">No Istio config applies.</p>;
  return (
    <ul class="config-links">
      {refs.map((c) => (
        <li key={`${c.kind}/${c.namespace}/${c.name}`}>
          <a href={configHref(c.kind, c.namespace, c.name)}>
            <span class="kind">{c.kind}</span> {c.namespace}/{c.name}
          </a>
        </li>
      ))}
    </ul>
  );
}

function dedupe(refs: ConfigRef[]): ConfigRef[] {
  const seen = new Set<string>();
  return refs.filter((c) => {
    const k = `${c.kind}/${c.namespace}/${c.name}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

function EdgeTable({ edges, model, dir, onSelect }: { edges: GEdge[]; model: Model; dir: 'in' | 'out'; onSelect: (s: Selection) => void }) {
  if (!edges.length) return null;
  return (
    <table class="mini">
      <thead>
        <tr>
          <th>{dir === 'in' ? 'From' : 'To'}</th>
          <th>Rate</th>
          {dir === 'out' && <th>Share</th>}
          <th>Err</th>
          <th>p95</th>
        </tr>
      </thead>
      <tbody>
        {edges.map((e) => {
          const other = model.nodes.get(dir === 'in' ? e.source : e.target)!;
          return (
            <tr key={e.id} class={`clickable ${e.health}`} onClick={() => onSelect({ kind: 'edge', id: e.id })}>
              <td>{nodeName(other.data)}</td>
              <td>
                <Rate e={e} />
              </td>
              {dir === 'out' && <td>{e.share !== undefined ? fmtPct(e.share) : '–'}</td>}
              <td class={e.err > 0 ? `err ${e.health}` : ''}>{isTcp(e.protocol) ? '–' : fmtPct(e.err)}</td>
              <td>{e.p95 !== undefined ? fmtMs(e.p95) : '–'}</td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

const RATE_NAMES: Record<string, string> = {
  httpIn: 'HTTP in',
  httpOut: 'HTTP out',
  grpcIn: 'gRPC in',
  grpcOut: 'gRPC out',
  tcpIn: 'TCP in',
  tcpOut: 'TCP out',
};

function NodePanel({ n, model, onSelect }: { n: GNode; model: Model; onSelect: (s: Selection) => void }) {
  const d = n.data;
  const children = n.children.map((c) => model.nodes.get(c)!).filter(Boolean);
  // The versions a node leads to: a box's children, a service's destinations.
  const versions =
    n.shape === 'box'
      ? children
      : n.outEdges.map((e) => model.nodes.get(e.target)!).filter((t) => t.data.version && (n.shape === 'service' || n.shape === 'serviceentry'));
  // Config of the node, of a box's children, and of the services that route to them.
  const members = [n, ...children];
  const routing = members.flatMap((m) => m.inEdges.map((e) => model.nodes.get(e.source)!).filter((x) => x.shape === 'service'));
  const refs = dedupe([...members, ...routing].flatMap((m) => m.data.weft?.config ?? []));
  const ts = traceService(d);
  const metrics =
    n.shape === 'service' && d.service && d.namespace
      ? hashFor('services', { namespace: d.namespace, name: d.service })
      : d.workload && d.namespace
        ? hashFor('workloads', { namespace: d.namespace, name: d.workload })
        : undefined;
  const hasVS = d.hasVS && typeof d.hasVS === 'object' ? d.hasVS.hostnames ?? [] : [];
  return (
    <div>
      <h2>
        <span class={`type-chip ${n.shape}`}>{n.shape === 'box' ? 'app' : n.shape === 'serviceentry' ? 'service entry' : d.nodeType}</span> {nodeName(d)}
      </h2>
      <div class="fields">
        {d.namespace && <Field label="Namespace">{d.namespace}</Field>}
        {d.app && <Field label="App">{d.app}</Field>}
        {d.version && <Field label="Version">{d.version}</Field>}
        {d.workload && <Field label="Workload">{d.workload}</Field>}
        {d.service && <Field label="Service">{d.service}</Field>}
        {d.destServices && d.destServices.length > 0 && (
          <Field label="Serves">{d.destServices.map((s) => `${s.name}.${s.namespace}`).join(', ')}</Field>
        )}
        {d.isServiceEntry && (
          <Field label="ServiceEntry">
            {d.isServiceEntry.location} {d.isServiceEntry.hosts?.join(', ')}
          </Field>
        )}
        {d.isRoot && <Field label="Root">starts traffic</Field>}
        {d.isOutside && <Field label="Outside">namespace not selected</Field>}
      </div>
      {n.badges.length > 0 && (
        <ul class="badge-list">
          {n.badges.map((b) => (
            <li key={b.key}>
              <span class={`badge-chip badge-${b.key}`}>{b.text}</span> {b.title}
            </li>
          ))}
        </ul>
      )}
      {d.hasVS && hasVS.length > 0 && <Field label="VS hosts">{hasVS.join(', ')}</Field>}
      {d.weft?.weights && d.weft.weights.length > 0 && <Field label="Weights">{weightsText(d)}</Field>}

      {versions.length > 0 && (
        <section>
          <h3>Versions</h3>
          <table class="mini versions">
            <thead>
              <tr>
                <th>Version</th>
                <th>Workload</th>
                <th>In</th>
              </tr>
            </thead>
            <tbody>
              {versions.map((c) => {
                const inRate = c.inEdges.reduce((s, e) => s + (isTcp(e.protocol) ? 0 : e.rate), 0);
                return (
                  <tr key={c.id} class="clickable" data-version={c.data.version} onClick={() => onSelect({ kind: 'node', id: c.id })}>
                    <td>{c.data.version ?? nodeName(c.data)}</td>
                    <td>{c.data.workload ?? ''}</td>
                    <td>{inRate > 0 ? `${fmtRps(inRate)} rps` : '–'}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </section>
      )}

      {d.traffic && d.traffic.some((t) => t.rates && Object.keys(t.rates).length) && (
        <section>
          <h3>Traffic</h3>
          <div class="fields">
            {d.traffic.flatMap((t) =>
              Object.entries(t.rates ?? {}).map(([k, v]) => (
                <Field key={`${t.protocol}-${k}`} label={RATE_NAMES[k] ?? k}>
                  {k.startsWith('tcp') ? fmtBytesRate(num(v)) : `${fmtRps(num(v))} rps`}
                </Field>
              )),
            )}
          </div>
        </section>
      )}
      {n.inEdges.length > 0 && (
        <section>
          <h3>Inbound</h3>
          <EdgeTable edges={n.inEdges} model={model} dir="in" onSelect={onSelect} />
        </section>
      )}
      {n.outEdges.length > 0 && (
        <section>
          <h3>Outbound</h3>
          <EdgeTable edges={n.outEdges} model={model} dir="out" onSelect={onSelect} />
        </section>
      )}
      <section>
        <h3>Istio config</h3>
        <ConfigList refs={refs} />
      </section>
      <section class="links">
        {ts && (
          <a href={tracesHref(ts)} class="button-link">
            Traces of {ts}
          </a>
        )}
        {metrics && (
          <a href={metrics} class="button-link">
            Metrics
          </a>
        )}
      </section>
    </div>
  );
}

function EdgePanel({ e, model }: { e: GEdge; model: Model }) {
  const s = model.nodes.get(e.source)!;
  const t = model.nodes.get(e.target)!;
  const responses = Object.entries(e.data.traffic?.responses ?? {}).sort(([a], [b]) => (a < b ? -1 : 1));
  const refs = dedupe([...(s.data.weft?.config ?? []), ...(t.data.weft?.config ?? [])]);
  const ts = traceService(t.data) ?? traceService(s.data);
  const e5 = codeShare(e.data, '5');
  return (
    <div>
      <h2>
        <span class={`type-chip edge ${e.health}`}>{e.protocol}</span> {nodeName(s.data)} → {nodeName(t.data)}
      </h2>
      <div class="fields">
        <Field label="Rate">
          <Rate e={e} />
        </Field>
        {!isTcp(e.protocol) && (
          <>
            <Field label="Errors">
              <span class={e.err > 0 ? `err ${e.health}` : ''}>{fmtPct(e.err)}</span>
              {e5 > 0 && e5 !== e.err ? ` (5xx ${fmtPct(e5)})` : ''}
              {e.err4 > 0 ? ` · 4xx ${fmtPct(e.err4)}` : ''}
            </Field>
            {e.share !== undefined && <Field label="Share of source">{fmtPct(e.share)}</Field>}
            <Field label="p95">{e.p95 !== undefined ? fmtMs(e.p95) : '–'}</Field>
          </>
        )}
        {e.data.isMTLS !== undefined && <Field label="mTLS">{fmtPct(num(e.data.isMTLS))}</Field>}
        <Field label="Health">{e.health}</Field>
      </div>
      {responses.length > 0 && (
        <section>
          <h3>Responses</h3>
          <table class="mini responses">
            <thead>
              <tr>
                <th>Code</th>
                <th>Flags</th>
                <th>Hosts</th>
              </tr>
            </thead>
            <tbody>
              {responses.map(([code, r]) => (
                <tr key={code} class={code.startsWith('5') ? 'code-5xx' : code.startsWith('4') ? 'code-4xx' : ''}>
                  <td>{code}</td>
                  <td>
                    {Object.entries(r.flags ?? {}).map(([f, v]) => (
                      <div key={f}>
                        <code>{f}</code> {fmtPct(num(v))}
                      </div>
                    ))}
                  </td>
                  <td>
                    {Object.entries(r.hosts ?? {}).map(([h, v]) => (
                      <div key={h}>
                        {h} {fmtPct(num(v))}
                      </div>
                    ))}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
      )}
      <section>
        <h3>Istio config</h3>
        <ConfigList refs={refs} />
      </section>
      {ts && (
        <section class="links">
          <a href={tracesHref(ts)} class="button-link">
            Traces of {ts}
          </a>
        </section>
      )}
    </div>
  );
}

export function Panel({ model, selected, onSelect }: { model: Model; selected: Selection; onSelect: (s: Selection) => void }) {
  if (!selected) return null;
  let body;
  if (selected.kind === 'node') {
    const n = model.nodes.get(selected.id);
    if (!n) return null;
    body = <NodePanel n={n} model={model} onSelect={onSelect} />;
  } else {
    const e = model.edges.find((x) => x.id === selected.id);
    if (!e) return null;
    body = <EdgePanel e={e} model={model} />;
  }
  return (
    <aside class="side-panel" aria-label="Details" data-selected={selected.id}>
      <button type="button" class="close" aria-label="Close the details" onClick={() => onSelect(null)}>
        ×
      </button>
      {body}
    </aside>
  );
}
