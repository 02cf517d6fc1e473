// Zipkin v2 spans → a tree in display order, for the waterfall.
import type { ZipkinSpan, ZipkinTrace } from '../types';

export interface SpanRow {
  key: string;
  span: ZipkinSpan;
  depth: number;
  children: SpanRow[];
  /** Offset from the trace's start, µs. */
  start: number;
  duration: number;
  error: boolean;
  service: string;
}

export interface TraceTree {
  traceId: string;
  start: number;
  duration: number;
  roots: SpanRow[];
  rows: SpanRow[];
  services: Map<string, number>;
  errors: number;
}

export function spanService(s: ZipkinSpan): string {
  return s.localEndpoint?.serviceName || s.tags?.['istio.canonical_service'] || 'unknown';
}

export function spanIsError(s: ZipkinSpan): boolean {
  const t = s.tags ?? {};
  if ('error' in t) return true;
  const code = parseInt(t['http.status_code'] ?? '', 10);
  return code >= 500;
}

export function buildTrace(trace: ZipkinTrace): TraceTree {
  const spans = [...trace].filter((s) => s && s.id);
  let start = Infinity;
  let end = -Infinity;
  for (const s of spans) {
    if (s.timestamp !== undefined) {
      start = Math.min(start, s.timestamp);
      end = Math.max(end, s.timestamp + (s.duration ?? 0));
    }
  }
  if (!Number.isFinite(start)) {
    start = 0;
    end = 0;
  }
  const rows: SpanRow[] = spans.map((s, i) => ({
    key: `${s.id}:${s.kind ?? ''}:${s.shared ? 's' : ''}:${i}`,
    span: s,
    depth: 0,
    children: [],
    start: (s.timestamp ?? start) - start,
    duration: s.duration ?? 0,
    error: spanIsError(s),
    service: spanService(s),
  }));
  const byId = new Map<string, SpanRow[]>();
  for (const r of rows) {
    const l = byId.get(r.span.id) ?? [];
    l.push(r);
    byId.set(r.span.id, l);
  }
  const parentOf = (r: SpanRow): SpanRow | undefined => {
    const same = byId.get(r.span.id)!;
    // A shared (server) span with the client's id hangs under that client span.
    if (r.span.shared && same.length > 1) {
      const client = same.find((x) => x !== r && !x.span.shared);
      if (client) return client;
    }
    if (!r.span.parentId) return undefined;
    const ps = byId.get(r.span.parentId);
    if (!ps || !ps.length) return undefined;
    return ps.find((x) => x.span.kind === 'SERVER' || x.span.shared) ?? ps[0];
  };
  const roots: SpanRow[] = [];
  for (const r of rows) {
    const p = parentOf(r);
    // Guard against cycles: a parent must not descend from r.
    let a = p;
    let cyclic = false;
    for (let i = 0; a && i < rows.length; i++) {
      if (a === r) {
        cyclic = true;
        break;
      }
      a = parentOf(a);
    }
    if (p && !cyclic) p.children.push(r);
    else roots.push(r);
  }
  const order: SpanRow[] = [];
  const byStart = (a: SpanRow, b: SpanRow) => a.start - b.start || (a.span.name ?? '').localeCompare(b.span.name ?? '');
  const walk = (r: SpanRow, depth: number) => {
    r.depth = depth;
    order.push(r);
    r.children.sort(byStart);
    for (const c of r.children) walk(c, depth + 1);
  };
  roots.sort(byStart);
  for (const r of roots) walk(r, 0);
  const services = new Map<string, number>();
  for (const r of rows) services.set(r.service, (services.get(r.service) ?? 0) + 1);
  return {
    traceId: spans[0]?.traceId ?? '',
    start,
    duration: end - start,
    roots,
    rows: order,
    services,
    errors: rows.filter((r) => r.error).length,
  };
}

/** A stable colour per service name. */
export function serviceHue(name: string): number {
  let h = 0;
  for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
  // Clear of red, which marks errors.
  return 35 + (h % 290);
}
