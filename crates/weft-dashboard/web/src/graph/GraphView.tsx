// The graph as SVG: boxes, edges with their labels, nodes with badges, pan and zoom.
import { useEffect, useLayoutEffect, useMemo, useRef, useState } from 'preact/hooks';
import type { JSX } from 'preact';
import type { GEdge, GNode, Health, Model } from './model';
import { badgeWidth, leafExtent, SHAPE_R, type Layout, type Point } from './layout';
import { fmtPct } from '../format';

export type Selection = { kind: 'node'; id: string } | { kind: 'edge'; id: string } | null;

interface Props {
  model: Model;
  layout: Layout;
  selected: Selection;
  onSelect: (s: Selection) => void;
}

interface View {
  k: number;
  x: number;
  y: number;
}

const HEALTHS: Health[] = ['healthy', 'degraded', 'failure', 'idle', 'tcp', 'none'];

function shapePath(n: GNode): JSX.Element {
  const r = SHAPE_R;
  switch (n.shape) {
    case 'workload':
      return <circle class="shape" r={r} />;
    case 'service':
      return <path class="shape" d={`M0,${-r - 3} L${r + 4},${r - 2} L${-r - 4},${r - 2} Z`} stroke-linejoin="round" />;
    case 'serviceentry': {
      const pts: string[] = [];
      for (let i = 0; i < 5; i++) {
        const a = -Math.PI / 2 + (i * 2 * Math.PI) / 5;
        pts.push(`${(Math.cos(a) * (r + 2)).toFixed(1)},${(Math.sin(a) * (r + 2)).toFixed(1)}`);
      }
      return <polygon class="shape" points={pts.join(' ')} stroke-linejoin="round" />;
    }
    case 'unknown':
      return (
        <g>
          <circle class="shape unknown" r={r} />
          <text class="glyph" y={5} text-anchor="middle">
            ?
          </text>
        </g>
      );
    default:
      return <rect class="shape" x={-r} y={-r} width={2 * r} height={2 * r} rx={8} />;
  }
}

/** Where a line from `a` towards `b` leaves a circle of radius `r` around `a`. */
function clip(a: Point, b: Point, r: number): Point {
  const dx = b.x - a.x;
  const dy = b.y - a.y;
  const d = Math.hypot(dx, dy) || 1;
  return { x: a.x + (dx / d) * r, y: a.y + (dy / d) * r };
}

interface EdgeGeom {
  d: string;
  /** The point at parameter t along the edge. */
  at: (t: number) => Point;
}

function edgeGeometry(e: GEdge, layout: Layout, curved: boolean): EdgeGeom {
  const s = layout.pos.get(e.source)!;
  const t = layout.pos.get(e.target)!;
  if (e.source === e.target) {
    const r = SHAPE_R;
    const d = `M${s.x + r * 0.7},${s.y - r * 0.7} C${s.x + r * 3},${s.y - r * 3} ${s.x - r * 3},${s.y - r * 3} ${s.x - r * 0.7},${s.y - r * 0.7}`;
    return { d, at: () => ({ x: s.x, y: s.y - r * 2.6 }) };
  }
  const dx = t.x - s.x;
  const dy = t.y - s.y;
  const len = Math.hypot(dx, dy) || 1;
  // A pair of edges both ways bends apart, each to its own left.
  const bend = curved ? 28 : 0;
  const c = { x: (s.x + t.x) / 2 + (dy / len) * bend, y: (s.y + t.y) / 2 - (dx / len) * bend };
  const p0 = clip(s, curved ? c : t, SHAPE_R + 4);
  const p2 = clip(t, curved ? c : s, SHAPE_R + 6);
  const f = (n: number) => n.toFixed(1);
  const d = curved ? `M${f(p0.x)},${f(p0.y)} Q${f(c.x)},${f(c.y)} ${f(p2.x)},${f(p2.y)}` : `M${f(p0.x)},${f(p0.y)} L${f(p2.x)},${f(p2.y)}`;
  const at = (u: number) =>
    curved
      ? {
          x: (1 - u) * (1 - u) * p0.x + 2 * u * (1 - u) * c.x + u * u * p2.x,
          y: (1 - u) * (1 - u) * p0.y + 2 * u * (1 - u) * c.y + u * u * p2.y,
        }
      : { x: p0.x + (p2.x - p0.x) * u, y: p0.y + (p2.y - p0.y) * u };
  return { d, at };
}

interface Box {
  x: number;
  y: number;
  w: number;
  h: number;
}

function hit(a: Box, b: Box): boolean {
  return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
}

function labelBox(e: GEdge, p: Point): Box {
  const w = Math.max(...e.label.map((l) => l.reduce((n, s) => n + s.text.length, 0))) * 5.6 + 6;
  const h = e.label.length * 12 + 2;
  return { x: p.x - w / 2, y: p.y - h / 2, w, h };
}

const SPOTS = [0.5, 0.42, 0.58, 0.34, 0.66, 0.26, 0.74, 0.18, 0.82];

/** Where an edge's lock goes: left of its label, or on the label's point without one. */
function lockPoint(e: GEdge, p: Point): Point {
  if (!e.label.length) return p;
  const b = labelBox(e, p);
  return { x: b.x - 7, y: p.y - (e.label.length - 1) * 6 };
}

/** Kiali's padlock on an edge whose traffic is mutual TLS. */
function Lock({ at, pct }: { at: Point; pct: number }) {
  return (
    <g class={`edge-lock${pct < 100 ? ' partial' : ''}`} transform={`translate(${at.x.toFixed(1)},${at.y.toFixed(1)})`} aria-label={`mTLS ${fmtPct(pct)}`}>
      <title>{`mTLS: ${fmtPct(pct)} of the traffic`}</title>
      <path class="lock-shackle" d="M-2.6,-1.5 v-1.6 a2.6,2.6 0 0 1 5.2,0 v1.6" />
      <rect class="lock-body" x={-4} y={-1.5} width={8} height={6.5} rx={1.2} />
    </g>
  );
}

/** Edge paths, and a place for each label along its edge that no other label or node takes. */
function placeEdges(model: Model, layout: Layout): Map<string, { d: string; label: Point }> {
  const pairs = new Set(model.edges.map((e) => `${e.source}>${e.target}`));
  // A label over another label is worse than one over a node's empty corners.
  const nodesTaken: Box[] = [];
  const taken: Box[] = [];
  for (const n of model.leaves) {
    const p = layout.pos.get(n.id);
    if (!p) continue;
    const x = leafExtent(n);
    nodesTaken.push({ x: p.x + x.x, y: p.y + x.y, w: x.w, h: x.h });
  }
  const out = new Map<string, { d: string; label: Point }>();
  // Busy edges choose first.
  const order = [...model.edges].sort((a, b) => b.label.length - a.label.length || (a.id < b.id ? -1 : 1));
  for (const e of order) {
    const g = edgeGeometry(e, layout, pairs.has(`${e.target}>${e.source}`));
    let best = g.at(0.5);
    if (e.label.length) {
      let bestScore = Infinity;
      for (const t of SPOTS) {
        const p = g.at(t);
        const b = labelBox(e, p);
        const score = 3 * taken.filter((x) => hit(x, b)).length + nodesTaken.filter((x) => hit(x, b)).length;
        if (score < bestScore) {
          bestScore = score;
          best = p;
          if (score === 0) break;
        }
      }
      taken.push(labelBox(e, best));
    }
    out.set(e.id, { d: g.d, label: best });
  }
  return out;
}

function ariaNode(n: GNode): string {
  return [n.data.nodeType, ...n.label, ...n.badges.map((b) => b.title)].join(', ');
}

export function GraphView({ model, layout, selected, onSelect }: Props) {
  const wrap = useRef<HTMLDivElement>(null);
  const [size, setSize] = useState({ w: 800, h: 600 });
  const [view, setView] = useState<View>({ k: 1, x: 0, y: 0 });
  const [autoFit, setAutoFit] = useState(true);
  const drag = useRef<{ x: number; y: number; vx: number; vy: number; moved: boolean } | null>(null);

  useLayoutEffect(() => {
    const el = wrap.current;
    if (!el) return;
    const measure = () => {
      const r = el.getBoundingClientRect();
      if (r.width > 0 && r.height > 0) setSize({ w: r.width, h: r.height });
    };
    measure();
    const ro = new ResizeObserver(measure);
    ro.observe(el);
    return () => ro.disconnect();
  }, []);

  useEffect(() => {
    if (layout.fresh) setAutoFit(true);
  }, [layout]);

  const b = layout.bounds;
  useEffect(() => {
    if (!autoFit) return;
    const pad = 24;
    const k = Math.min(1.4, Math.max(0.1, Math.min((size.w - 2 * pad) / b.w, (size.h - 2 * pad) / b.h)));
    setView({ k, x: (size.w - b.w * k) / 2 - b.x * k, y: (size.h - b.h * k) / 2 - b.y * k });
  }, [autoFit, size.w, size.h, b.x, b.y, b.w, b.h]);

  const zoom = (f: number, cx = size.w / 2, cy = size.h / 2) => {
    setAutoFit(false);
    setView((v) => {
      const k = Math.min(4, Math.max(0.05, v.k * f));
      const r = k / v.k;
      return { k, x: cx - (cx - v.x) * r, y: cy - (cy - v.y) * r };
    });
  };

  const onWheel = (ev: WheelEvent) => {
    ev.preventDefault();
    const r = wrap.current!.getBoundingClientRect();
    zoom(Math.exp(-ev.deltaY * 0.0015), ev.clientX - r.left, ev.clientY - r.top);
  };

  const onPointerDown = (ev: PointerEvent) => {
    const t = ev.target as Element;
    if (t.closest('.node, .edge, .box-label, .graph-tools')) return;
    drag.current = { x: ev.clientX, y: ev.clientY, vx: view.x, vy: view.y, moved: false };
    (ev.currentTarget as Element).setPointerCapture?.(ev.pointerId);
  };
  const onPointerMove = (ev: PointerEvent) => {
    const d = drag.current;
    if (!d) return;
    const dx = ev.clientX - d.x;
    const dy = ev.clientY - d.y;
    if (!d.moved && Math.hypot(dx, dy) < 3) return;
    d.moved = true;
    setAutoFit(false);
    setView((v) => ({ ...v, x: d.vx + dx, y: d.vy + dy }));
  };
  const onPointerUp = () => {
    const d = drag.current;
    drag.current = null;
    if (d && !d.moved) onSelect(null);
  };

  const placed = useMemo(() => placeEdges(model, layout), [model, layout]);
  const sel = (kind: 'node' | 'edge', id: string) => selected?.kind === kind && selected.id === id;
  const activate = (s: Selection) => (ev: KeyboardEvent) => {
    if (ev.key === 'Enter' || ev.key === ' ') {
      ev.preventDefault();
      onSelect(s);
    }
  };

  return (
    <div class="graph-wrap" ref={wrap}>
      <svg
        class="graph-svg"
        width={size.w}
        height={size.h}
        aria-label="Service graph"
        onWheel={onWheel}
        onPointerDown={onPointerDown}
        onPointerMove={onPointerMove}
        onPointerUp={onPointerUp}
      >
        <defs>
          <filter id="label-bg" x="-0.04" y="0" width="1.08" height="1">
            <feFlood flood-color="#fff" flood-opacity="0.88" />
            <feComposite in="SourceGraphic" operator="over" />
          </filter>
          {HEALTHS.map((h) => (
            <marker
              id={`arrow-${h}`}
              key={h}
              viewBox="0 0 10 10"
              refX="9"
              refY="5"
              markerWidth="9"
              markerHeight="9"
              markerUnits="userSpaceOnUse"
              orient="auto"
            >
              <path d="M0,0 L10,5 L0,10 z" class={`arrow ${h}`} />
            </marker>
          ))}
        </defs>
        <g class="viewport" transform={`translate(${view.x.toFixed(2)},${view.y.toFixed(2)}) scale(${view.k.toFixed(4)})`}>
          <g class="boxes">
            {model.boxes.map((n) => {
              const r = layout.boxes.get(n.id);
              if (!r) return null;
              return (
                <g
                  key={n.id}
                  class={`node box ${n.health}${sel('node', n.id) ? ' selected' : ''}`}
                  data-id={n.id}
                  data-node-type={n.data.nodeType}
                  data-app={n.data.app}
                  data-namespace={n.data.namespace}
                  data-box={n.data.isBox}
                  role="button"
                  tabIndex={0}
                  aria-label={`box ${n.label.join(' ')}`}
                  onClick={() => onSelect({ kind: 'node', id: n.id })}
                  onKeyDown={activate({ kind: 'node', id: n.id })}
                >
                  <rect class="box-rect" x={r.x} y={r.y} width={r.w} height={r.h} rx={12} />
                  <text class="box-label" x={r.x + 10} y={r.y + 15}>
                    {n.label.join(' · ')}
                  </text>
                </g>
              );
            })}
          </g>
          <g class="edges">
            {model.edges.map((e) => {
              const g = placed.get(e.id)!;
              const lx = g.label.x;
              const s: Selection = { kind: 'edge', id: e.id };
              return (
                <g
                  key={e.id}
                  class={`edge ${e.health} ${e.protocol}${sel('edge', e.id) ? ' selected' : ''}`}
                  data-id={e.id}
                  data-source={e.source}
                  data-target={e.target}
                  data-protocol={e.protocol}
                  data-health={e.health}
                  data-mtls={e.mtls}
                  role="button"
                  tabIndex={0}
                  aria-label={`edge ${e.source} to ${e.target}: ${e.label.map((l) => l.map((x) => x.text).join('')).join(', ') || 'no traffic'}`}
                  onClick={() => onSelect(s)}
                  onKeyDown={activate(s)}
                >
                  <path class="edge-hit" d={g.d} />
                  <path class="edge-line" d={g.d} marker-end={`url(#arrow-${e.health})`} />
                  {e.mtls !== undefined && e.mtls > 0 && <Lock at={lockPoint(e, g.label)} pct={e.mtls} />}
                  {e.label.length > 0 && (
                    <text class="edge-label" x={lx} y={g.label.y - (e.label.length - 1) * 6 + 4} text-anchor="middle" filter="url(#label-bg)">
                      {e.label.map((line, i) => (
                        <tspan key={i} x={lx} dy={i === 0 ? 0 : 12}>
                          {line.map((seg, j) => (
                            <tspan key={j} class={seg.cls}>
                              {seg.text}
                            </tspan>
                          ))}
                        </tspan>
                      ))}
                    </text>
                  )}
                </g>
              );
            })}
          </g>
          <g class="nodes">
            {model.leaves.map((n) => {
              const p = layout.pos.get(n.id);
              if (!p) return null;
              const ext = leafExtent(n);
              const s: Selection = { kind: 'node', id: n.id };
              const bw = n.badges.reduce((a, x) => a + badgeWidth(x.text) + 3, -3);
              let bx = -bw / 2;
              return (
                <g
                  key={n.id}
                  class={`node leaf ${n.shape} ${n.health}${sel('node', n.id) ? ' selected' : ''}`}
                  transform={`translate(${p.x.toFixed(1)},${p.y.toFixed(1)})`}
                  data-id={n.id}
                  data-node-type={n.data.nodeType}
                  data-app={n.data.app}
                  data-version={n.data.version}
                  data-workload={n.data.workload}
                  data-service={n.data.service}
                  data-namespace={n.data.namespace}
                  data-root={n.data.isRoot ? 'true' : undefined}
                  role="button"
                  tabIndex={0}
                  aria-label={ariaNode(n)}
                  onClick={() => onSelect(s)}
                  onKeyDown={activate(s)}
                >
                  <rect class="node-hit" x={ext.x} y={ext.y} width={ext.w} height={ext.h} />
                  {shapePath(n)}
                  {n.badges.length > 0 && (
                    <g class="badges" transform={`translate(0,${-SHAPE_R - 16})`}>
                      {n.badges.map((x) => {
                        const w = badgeWidth(x.text);
                        const el = (
                          <g class={`badge badge-${x.key}`} key={x.key} data-badge={x.key} transform={`translate(${bx.toFixed(1)},0)`}>
                            <title>{x.title}</title>
                            <rect width={w} height={12} rx={3} />
                            <text x={w / 2} y={9} text-anchor="middle">
                              {x.text}
                            </text>
                          </g>
                        );
                        bx += w + 3;
                        return el;
                      })}
                    </g>
                  )}
                  <text class="node-label" y={SHAPE_R + 15} text-anchor="middle">
                    {n.label.map((l, i) => (
                      <tspan key={i} x={0} dy={i === 0 ? 0 : 13} class={i === 0 ? 'l1' : 'l2'}>
                        {l}
                      </tspan>
                    ))}
                  </text>
                </g>
              );
            })}
          </g>
        </g>
      </svg>
      <div class="graph-tools" role="toolbar" aria-label="Zoom">
        <button type="button" title="Zoom in" onClick={() => zoom(1.25)}>
          +
        </button>
        <button type="button" title="Zoom out" onClick={() => zoom(0.8)}>
          −
        </button>
        <button type="button" title="Fit the graph to the view" class={autoFit ? 'on' : ''} onClick={() => setAutoFit(true)}>
          Fit
        </button>
      </div>
    </div>
  );
}
