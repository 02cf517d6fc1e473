// Istio config: every resource in force, with the analysers' messages, and its YAML.
import { useState } from 'preact/hooks';
import type { ConfigResource } from '../types';
import { hashFor, useApi, type Route } from '../hooks';
import { configHref, Empty, ErrorBox, LevelBadge, levelRank, Loading } from '../components/common';

function worst(r: ConfigResource): string | undefined {
  let w: string | undefined;
  for (const m of r.messages ?? []) if (levelRank(m.level) > levelRank(w)) w = m.level;
  return w;
}

function Messages({ r }: { r: ConfigResource }) {
  const ms = [...(r.messages ?? [])].sort((a, b) => levelRank(b.level) - levelRank(a.level));
  if (!ms.length) return <p class="muted">No messages: the analysers found nothing to say.</p>;
  return (
    <ul class="messages" aria-label="Messages">
      {ms.map((m, i) => (
        <li key={i} class={`message message-${m.level.toLowerCase()}`} data-code={m.code}>
          <LevelBadge level={m.level} /> <strong class="code">{m.code}</strong> {m.message}
          {m.path && (
            <div class="path">
              at <code>{m.path}</code>
              {m.line && <span class="muted"> (line {m.line})</span>}
            </div>
          )}
        </li>
      ))}
    </ul>
  );
}

/** The YAML, a line per element; lines a message points at are marked with it. */
function Yaml({ r }: { r: ConfigResource }) {
  const marks = new Map<number, { level: string; text: string }>();
  for (const m of [...(r.messages ?? [])].sort((a, b) => levelRank(a.level) - levelRank(b.level))) {
    if (m.line) marks.set(m.line, { level: m.level, text: `${m.code} ${m.message}` });
  }
  const lines = (r.yaml ?? '').replace(/\n$/, '').split('\n');
  return (
    <pre class="yaml" aria-label="YAML">
      {lines.map((text, i) => {
        const mark = marks.get(i + 1);
        return (
          <span
            key={i}
            class={mark ? `yaml-line invalid invalid-${mark.level.toLowerCase()}` : 'yaml-line'}
            data-line={i + 1}
            title={mark?.text}
            aria-invalid={mark ? 'true' : undefined}
          >
            {text}
            {'\n'}
          </span>
        );
      })}
    </pre>
  );
}

export function ConfigPage({ route }: { route: Route }) {
  const q = route.query;
  const selKind = q.get('kind');
  const selNs = q.get('namespace');
  const selName = q.get('name');
  const [fKind, setFKind] = useState(selName ? '' : (selKind ?? ''));
  const [fNs, setFNs] = useState(selName ? '' : (selNs ?? ''));
  const [onlyMsgs, setOnlyMsgs] = useState(false);
  const cfg = useApi<ConfigResource[]>('/api/weft/config', 30000, true);
  const all = [...(cfg.data ?? [])].sort((a, b) =>
    `${a.kind}/${a.namespace}/${a.name}`.localeCompare(`${b.kind}/${b.namespace}/${b.name}`),
  );
  const kinds = [...new Set(all.map((r) => r.kind))].sort();
  const nss = [...new Set(all.map((r) => r.namespace))].sort();
  const shown = all.filter((r) => (!fKind || r.kind === fKind) && (!fNs || r.namespace === fNs) && (!onlyMsgs || (r.messages ?? []).length));
  const selected = selName ? all.find((r) => r.name === selName && (!selKind || r.kind === selKind) && (!selNs || r.namespace === selNs)) : undefined;
  const counts = { Error: 0, Warning: 0, Info: 0 } as Record<string, number>;
  for (const r of all) for (const m of r.messages ?? []) counts[m.level] = (counts[m.level] ?? 0) + 1;

  return (
    <div class="page config">
      <div class="toolbar">
        <h1>Istio config</h1>
        <label class="ctl">
          <span class="ctl-label">Kind</span>
          <select name="kind" value={fKind} onChange={(e) => setFKind((e.target as HTMLSelectElement).value)}>
            <option value="">All</option>
            {kinds.map((k) => (
              <option key={k}>{k}</option>
            ))}
          </select>
        </label>
        <label class="ctl">
          <span class="ctl-label">Namespace</span>
          <select name="namespace" value={fNs} onChange={(e) => setFNs((e.target as HTMLSelectElement).value)}>
            <option value="">All</option>
            {nss.map((k) => (
              <option key={k}>{k}</option>
            ))}
          </select>
        </label>
        <label class="ctl check">
          <input type="checkbox" checked={onlyMsgs} onChange={(e) => setOnlyMsgs((e.target as HTMLInputElement).checked)} /> Only with messages
        </label>
        <span class="grow" />
        {cfg.data && (
          <span class="summary">
            <LevelBadge level="Error" /> {counts.Error} <LevelBadge level="Warning" /> {counts.Warning} <LevelBadge level="Info" /> {counts.Info}
          </span>
        )}
      </div>
      <ErrorBox error={cfg.error} />
      {!cfg.data && cfg.loading && <Loading what="the config" />}
      <div class="split">
        {cfg.data && (
          <table class="grid selectable config-table" aria-label="Istio config">
            <thead>
              <tr>
                <th>Kind</th>
                <th>Namespace</th>
                <th>Name</th>
                <th>Messages</th>
              </tr>
            </thead>
            <tbody>
              {shown.map((r) => {
                const w = worst(r);
                return (
                  <tr
                    key={`${r.kind}/${r.namespace}/${r.name}`}
                    class={`${r === selected ? 'selected ' : ''}${w ? `row-${w.toLowerCase()}` : ''}`}
                    data-kind={r.kind}
                    data-namespace={r.namespace}
                    data-name={r.name}
                    data-level={w}
                  >
                    <td>{r.kind}</td>
                    <td>{r.namespace}</td>
                    <td>
                      <a href={configHref(r.kind, r.namespace, r.name)}>{r.name}</a>
                    </td>
                    <td>
                      {w ? (
                        <>
                          <LevelBadge level={w} /> {(r.messages ?? []).map((m) => m.code).join(', ')}
                        </>
                      ) : (
                        <span class="muted">–</span>
                      )}
                    </td>
                  </tr>
                );
              })}
              {shown.length === 0 && (
                <tr>
                  <td colSpan={4} class="muted">
                    Nothing matches.
                  </td>
                </tr>
              )}
            </tbody>
          </table>
        )}
        {selected && (
          <section class="config-detail" aria-label={`${selected.kind} ${selected.namespace}/${selected.name}`}>
            <div class="detail-head">
              <h2>
                <span class="kind">{selected.kind}</span> {selected.namespace}/{selected.name}
              </h2>
              <a href={hashFor('config')} class="close-link" aria-label="Close">
                ×
              </a>
            </div>
            {selected.apiVersion && <div class="muted">{selected.apiVersion}</div>}
            <Messages r={selected} />
            <Yaml r={selected} />
          </section>
        )}
        {selName && cfg.data && !selected && (
          <Empty>
            No {selKind ?? 'resource'} {selNs}/{selName} in force.
          </Empty>
        )}
      </div>
    </div>
  );
}
