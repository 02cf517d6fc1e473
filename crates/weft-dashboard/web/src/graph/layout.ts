// Places the graph with dagre, and keeps it still: positions are cached by node id, the
// layout runs again only when the set of nodes, edges or boxes changes, and then the nodes
// that were already on screen stay where they were while new ones go where dagre puts them.
import { Graph, layout as dagreLayout } from '@dagrejs/dagre';
import type { GNode, Model } from './model';

export interface Point {
  x: number;
  y: number;
}

export interface Rect {
  x: number;
  y: number;
  w: number;
  h: number;
}

/** Geometry of a leaf node, relative to its shape's centre. */
export const SHAPE_R = 18;
const BADGE_ROW = 18;
const LINE_H = 13;
const CHAR_W = 6.6;
const BOX_PAD = 14;
const BOX_LABEL = 20;

export function badgeWidth(text: string): number {
  return text.length * 5.6 + 8;
}

/** The rectangle a leaf occupies (badges, shape, label) around its shape centre (0, 0). */
export function leafExtent(n: GNode): Rect {
  const labelW = Math.max(...n.label.map((l) => l.length * CHAR_W), 0);
  const badgesW = n.badges.reduce((s, b) => s + badgeWidth(b.text) + 3, 0);
  const w = Math.max(SHAPE_R * 2 + 24, labelW + 10, badgesW);
  const top = SHAPE_R + (n.badges.length ? BADGE_ROW : 4);
  const bottom = SHAPE_R + 6 + n.label.length * LINE_H;
  return { x: -w / 2, y: -top, w, h: top + bottom };
}

export interface Layout {
  /** Shape centres of the leaves. */
  pos: Map<string, Point>;
  boxes: Map<string, Rect>;
  bounds: Rect;
  /** Laid out anew, keeping nothing from before (the view fits it to the screen again). */
  fresh: boolean;
}

export interface LayoutCache {
  signature: string;
  pos: Map<string, Point>;
}

export function signature(m: Model): string {
  const n = m.leaves.map((x) => `${x.id}@${x.parent ?? ''}:${x.label.length}:${x.badges.length}`).join(',');
  const e = m.edges.map((x) => `${x.source}>${x.target}`).join(',');
  return `${n}|${e}`;
}

function dagrePositions(m: Model): Map<string, Point> {
  const g = new Graph({ compound: true, multigraph: false, directed: true });
  g.setGraph({ rankdir: 'LR', nodesep: 28, ranksep: 110, edgesep: 16, marginx: 20, marginy: 20 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const b of m.boxes) if (b.children.length) g.setNode(b.id, { paddingTop: BOX_LABEL + BOX_PAD, paddingLeft: BOX_PAD, paddingRight: BOX_PAD, paddingBottom: BOX_PAD });
  const ext = new Map<string, Rect>();
  for (const n of m.leaves) {
    const r = leafExtent(n);
    ext.set(n.id, r);
    g.setNode(n.id, { width: r.w, height: r.h });
  }
  for (const b of m.boxes) {
    if (b.parent && b.children.length && g.hasNode(b.parent)) g.setParent(b.id, b.parent);
  }
  for (const n of m.leaves) if (n.parent && g.hasNode(n.parent)) g.setParent(n.id, n.parent);
  for (const e of m.edges) if (e.source !== e.target) g.setEdge(e.source, e.target, { minlen: 1, weight: 1 });
  dagreLayout(g);
  const pos = new Map<string, Point>();
  for (const n of m.leaves) {
    const d = g.node(n.id) as { x: number; y: number; height: number };
    const r = ext.get(n.id)!;
    // dagre gives the rectangle's centre; keep the shape's centre.
    pos.set(n.id, { x: d.x, y: d.y - d.height / 2 - r.y });
  }
  return pos;
}

function rectAt(ext: Rect, p: Point, pad = 0): Rect {
  return { x: p.x + ext.x - pad, y: p.y + ext.y - pad, w: ext.w + 2 * pad, h: ext.h + 2 * pad };
}

function overlaps(a: Rect, b: Rect): boolean {
  return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
}

function union(a: Rect | undefined, b: Rect): Rect {
  if (!a) return { ...b };
  const x = Math.min(a.x, b.x);
  const y = Math.min(a.y, b.y);
  return { x, y, w: Math.max(a.x + a.w, b.x + b.w) - x, h: Math.max(a.y + a.h, b.y + b.h) - y };
}

function boxRects(m: Model, pos: Map<string, Point>): Map<string, Rect> {
  const boxes = new Map<string, Rect>();
  const depth = (n: GNode): number => (n.parent ? 1 + depth(m.nodes.get(n.parent)!) : 0);
  // Deepest boxes first, so that a box around boxes sees their rectangles.
  const order = [...m.boxes].sort((a, b) => depth(b) - depth(a));
  for (const b of order) {
    let r: Rect | undefined;
    for (const c of b.children) {
      const cn = m.nodes.get(c)!;
      if (cn.shape === 'box') {
        const cr = boxes.get(c);
        if (cr) r = union(r, cr);
      } else {
        const p = pos.get(c);
        if (p) r = union(r, rectAt(leafExtent(cn), p));
      }
    }
    if (r) boxes.set(b.id, { x: r.x - BOX_PAD, y: r.y - BOX_PAD - BOX_LABEL, w: r.w + 2 * BOX_PAD, h: r.h + 2 * BOX_PAD + BOX_LABEL });
  }
  return boxes;
}

export function computeLayout(m: Model, cache: LayoutCache | undefined): { layout: Layout; cache: LayoutCache } {
  const sig = signature(m);
  let pos: Map<string, Point>;
  let fresh = true;
  if (cache && cache.signature === sig) {
    pos = cache.pos;
    fresh = false;
  } else {
    const laid = dagrePositions(m);
    const kept = cache ? m.leaves.filter((n) => cache.pos.has(n.id)) : [];
    if (cache && kept.length > 0 && kept.length * 2 >= m.leaves.length) {
      fresh = false;
      // Keep every node that was there; move dagre's answer so that, on average, it
      // agrees with them, and put the new nodes there, clear of the old ones.
      let dx = 0;
      let dy = 0;
      for (const n of kept) {
        const o = cache.pos.get(n.id)!;
        const l = laid.get(n.id)!;
        dx += o.x - l.x;
        dy += o.y - l.y;
      }
      dx /= kept.length;
      dy /= kept.length;
      pos = new Map();
      const placed: Rect[] = [];
      for (const n of kept) {
        const p = cache.pos.get(n.id)!;
        pos.set(n.id, p);
        placed.push(rectAt(leafExtent(n), p, 8));
      }
      for (const n of m.leaves) {
        if (pos.has(n.id)) continue;
        const l = laid.get(n.id)!;
        const p = { x: l.x + dx, y: l.y + dy };
        const ext = leafExtent(n);
        for (let i = 0; i < 400 && placed.some((r) => overlaps(r, rectAt(ext, p, 8))); i++) p.y += 12;
        pos.set(n.id, p);
        placed.push(rectAt(ext, p, 8));
      }
    } else {
      pos = laid;
    }
  }
  const boxes = boxRects(m, pos);
  let bounds: Rect | undefined;
  for (const n of m.leaves) {
    const p = pos.get(n.id);
    if (p) bounds = union(bounds, rectAt(leafExtent(n), p));
  }
  for (const r of boxes.values()) bounds = union(bounds, r);
  return {
    layout: { pos, boxes, bounds: bounds ?? { x: 0, y: 0, w: 1, h: 1 }, fresh },
    cache: { signature: sig, pos },
  };
}
