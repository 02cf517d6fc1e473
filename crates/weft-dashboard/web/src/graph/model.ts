// Turns Kiali's graph JSON into what the SVG view draws: health, labels and badges.
import type { GraphEdgeData, GraphNodeData, GraphResponse } from '../types';
import { fmtBytesRate, fmtMs, fmtPct, fmtRps, num } from '../format';

export type Health = 'healthy' | 'degraded' | 'failure' | 'idle' | 'tcp' | 'none';

const RANK: Record<Health, number> = { none: 0, idle: 0, tcp: 0, healthy: 1, degraded: 2, failure: 3 };

export function worse(a: Health, b: Health): Health {
  return RANK[b] > RANK[a] ? b : a;
}

export type Shape = 'box' | 'app' | 'workload' | 'service' | 'serviceentry' | 'unknown';

export interface Badge {
  key: string;
  text: string;
  title: string;
}

export interface Seg {
  text: string;
  cls?: string;
}

export interface GNode {
  id: string;
  data: GraphNodeData;
  shape: Shape;
  parent?: string;
  children: string[];
  label: string[];
  badges: Badge[];
  health: Health;
  inEdges: GEdge[];
  outEdges: GEdge[];
}

export interface GEdge {
  id: string;
  data: GraphEdgeData;
  source: string;
  target: string;
  protocol: string;
  /** Requests per second (http, grpc) or bytes per second (tcp). */
  rate: number;
  /** Share of 5xx (or non-OK gRPC) responses, percent. */
  err: number;
  /** Share of 4xx responses, percent (from `responses`). */
  err4: number;
  /** This edge's share of its source's requests, percent, when given. */
  share?: number;
  p95?: number;
  /** Share of the traffic that was mutual TLS, percent, as the destinations reported it. */
  mtls?: number;
  health: Health;
  label: Seg[][];
}

export interface Model {
  nodes: Map<string, GNode>;
  edges: GEdge[];
  /** Nodes drawn as shapes (not boxes), sorted by id. */
  leaves: GNode[];
  boxes: GNode[];
  namespaces: string[];
}

export function isTcp(protocol: string): boolean {
  return protocol === 'tcp';
}

/** Sum of the flag shares of response codes whose first digit is `digit`. */
export function codeShare(e: GraphEdgeData, digit: string): number {
  const r = e.traffic?.responses;
  if (!r) return 0;
  let s = 0;
  for (const [code, d] of Object.entries(r)) {
    if (code.startsWith(digit) && d.flags) for (const v of Object.values(d.flags)) s += num(v);
  }
  return s;
}

export function edgeHealth(protocol: string, rate: number, err5: number, err4: number): Health {
  if (rate <= 0) return 'idle';
  if (isTcp(protocol)) return 'tcp';
  if (err5 > 10 || err4 > 20) return 'failure';
  if (err5 > 0.1 || err4 > 10) return 'degraded';
  return 'healthy';
}

function shapeOf(d: GraphNodeData): Shape {
  if (d.nodeType === 'box' || d.isBox) return 'box';
  if (d.nodeType === 'unknown') return 'unknown';
  if (d.nodeType === 'service') return d.isServiceEntry ? 'serviceentry' : 'service';
  if (d.nodeType === 'workload') return 'workload';
  return 'app';
}

export function nodeName(d: GraphNodeData): string {
  switch (d.nodeType) {
    case 'box':
      return d.app ?? d.namespace ?? d.id;
    case 'service':
      return d.service ?? d.app ?? d.id;
    case 'workload':
      return d.workload ?? d.app ?? d.id;
    case 'unknown':
      return 'unknown';
    default:
      return d.version ? `${d.app ?? d.workload ?? d.id} ${d.version}` : (d.app ?? d.workload ?? d.id);
  }
}

/** The trace service name Istio gives the node's spans: `<app>.<namespace>`. */
export function traceService(d: GraphNodeData): string | undefined {
  if (d.nodeType === 'unknown' || d.isServiceEntry || !d.namespace || d.namespace === 'unknown') return undefined;
  const app = d.app ?? d.workload ?? d.service;
  return app ? `${app}.${d.namespace}` : undefined;
}

export function weightsText(d: GraphNodeData, sep = ' / '): string {
  return (d.weft?.weights ?? []).map((w) => `${w.subset ?? w.host ?? '?'} ${w.weight}`).join(sep);
}

function badgesOf(d: GraphNodeData): Badge[] {
  const b: Badge[] = [];
  if (d.isRoot) b.push({ key: 'root', text: 'root', title: 'Root: starts traffic, no inbound edges' });
  if (d.hasVS) {
    const hosts = typeof d.hasVS === 'object' && d.hasVS.hostnames?.length ? `: ${d.hasVS.hostnames.join(', ')}` : '';
    b.push({ key: 'vs', text: 'VS', title: `A VirtualService routes here${hosts}` });
  }
  if (d.hasTrafficShifting) {
    const w = d.weft?.weights ?? [];
    b.push({
      key: 'shift',
      text: w.length ? w.map((x) => x.weight).join('/') : 'split',
      title: `Traffic shifting${w.length ? `: ${weightsText(d)}` : ''}`,
    });
  }
  if (d.hasFaultInjection) b.push({ key: 'fault', text: 'fault', title: 'Fault injection' });
  if (d.hasRequestTimeout) b.push({ key: 'timeout', text: 'timeout', title: 'Request timeout' });
  if (d.hasMirroring) b.push({ key: 'mirror', text: 'mirror', title: 'Traffic mirroring' });
  if (d.hasCB)
    b.push({ key: 'cb', text: 'CB', title: 'Circuit breaker (DestinationRule connectionPool or outlierDetection)' });
  if (d.isServiceEntry) {
    const loc = d.isServiceEntry.location ?? '';
    const hosts = d.isServiceEntry.hosts?.length ? `: ${d.isServiceEntry.hosts.join(', ')}` : '';
    b.push({
      key: 'se',
      text: loc === 'MESH_INTERNAL' ? 'SE' : 'ext',
      title: `ServiceEntry${loc ? ` (${loc})` : ''}${hosts}`,
    });
  }
  return b;
}

function edgeOf(d: GraphEdgeData): GEdge {
  const protocol = d.traffic?.protocol ?? 'http';
  const rates = d.traffic?.rates ?? {};
  let rate: number;
  let err = 0;
  if (isTcp(protocol)) rate = num(rates.tcp);
  else if (protocol === 'grpc') {
    rate = num(rates.grpc);
    err = num(rates.grpcPercentErr);
  } else {
    rate = num(rates.http);
    err = num(rates.httpPercentErr);
  }
  const err4 = isTcp(protocol) ? 0 : codeShare(d, '4');
  const shareRaw = rates.httpPercentReq ?? rates.grpcPercentReq;
  const share = shareRaw !== undefined ? num(shareRaw) : undefined;
  const p95 = d.responseTime !== undefined && d.responseTime !== '' ? num(d.responseTime) : undefined;
  const health = edgeHealth(protocol, rate, err, err4);
  const label: Seg[][] = [];
  if (rate > 0) {
    if (isTcp(protocol)) label.push([{ text: fmtBytesRate(rate) }]);
    else {
      const l1: Seg[] = [{ text: `${fmtRps(rate)} rps` }];
      if (share !== undefined && share > 0 && share < 99.95) l1.push({ text: ` · ${fmtPct(share)}`, cls: 'share' });
      label.push(l1);
      const l2: Seg[] = [];
      if (p95 !== undefined && p95 > 0) l2.push({ text: `p95 ${fmtMs(p95)}` });
      if (err > 0) l2.push({ text: `${l2.length ? ' · ' : ''}${fmtPct(err)} err`, cls: `err ${health}` });
      if (l2.length) label.push(l2);
    }
  }
  const mtls = d.isMTLS !== undefined && d.isMTLS !== '' ? num(d.isMTLS) : undefined;
  return { id: d.id, data: d, source: d.source, target: d.target, protocol, rate, err, err4, share, p95, mtls, health, label };
}

export function buildModel(g: GraphResponse | undefined): Model {
  const nodes = new Map<string, GNode>();
  for (const n of g?.elements?.nodes ?? []) {
    const d = n.data;
    if (!d || !d.id || nodes.has(d.id)) continue;
    nodes.set(d.id, {
      id: d.id,
      data: d,
      shape: shapeOf(d),
      parent: d.parent,
      children: [],
      label: [],
      badges: badgesOf(d),
      health: 'none',
      inEdges: [],
      outEdges: [],
    });
  }
  for (const n of nodes.values()) {
    if (n.parent && nodes.has(n.parent) && nodes.get(n.parent)!.shape === 'box') nodes.get(n.parent)!.children.push(n.id);
    else n.parent = undefined;
  }
  const edges: GEdge[] = [];
  const seen = new Set<string>();
  for (const e of g?.elements?.edges ?? []) {
    const d = e.data;
    if (!d || !nodes.has(d.source) || !nodes.has(d.target)) continue;
    const s = nodes.get(d.source)!;
    const t = nodes.get(d.target)!;
    if (s.shape === 'box' || t.shape === 'box') continue;
    const id = d.id || `${d.source}>${d.target}`;
    if (seen.has(id)) continue;
    seen.add(id);
    const ge = edgeOf({ ...d, id });
    edges.push(ge);
    s.outEdges.push(ge);
    t.inEdges.push(ge);
  }
  edges.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));

  const namespaces = [...new Set([...nodes.values()].map((n) => n.data.namespace).filter((x): x is string => !!x && x !== 'unknown'))].sort();
  // The namespace goes under a node's name when it is not the graph's main one.
  const count = new Map<string, number>();
  for (const n of nodes.values()) if (n.data.namespace) count.set(n.data.namespace, (count.get(n.data.namespace) ?? 0) + 1);
  const main = [...count.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))[0]?.[0];
  for (const n of nodes.values()) {
    for (const e of n.inEdges) n.health = worse(n.health, e.health);
    const d = n.data;
    const ns = d.namespace && d.namespace !== 'unknown' && (d.isOutside || d.namespace !== main) ? d.namespace : undefined;
    switch (n.shape) {
      case 'box':
        n.label = [d.app ?? d.namespace ?? d.id];
        if (ns && d.app) n.label.push(ns);
        break;
      case 'app':
        n.label = [d.app ?? d.workload ?? d.id];
        if (d.version) n.label.push(d.version);
        if (ns && !n.parent) n.label.push(ns);
        break;
      default:
        n.label = [nodeName(d)];
        if (ns) n.label.push(ns);
    }
  }
  for (const n of nodes.values()) {
    if (n.shape === 'box') for (const c of n.children) n.health = worse(n.health, nodes.get(c)!.health);
  }
  const sorted = [...nodes.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return {
    nodes,
    edges,
    leaves: sorted.filter((n) => n.shape !== 'box'),
    boxes: sorted.filter((n) => n.shape === 'box'),
    namespaces,
  };
}
