// A small SVG line chart: one line per series, gaps where a value is null, a hover read-out.
import { useLayoutEffect, useRef, useState } from 'preact/hooks';
import type { ComponentChildren } from 'preact';
import type { MetricChart } from '../types';
import { fmtClock, fmtUnit } from '../format';

const COLORS = ['#2b6cb0', '#d97706', '#2f855a', '#b83280', '#6b46c1', '#c53030', '#0f766e', '#975a16', '#4a5568', '#0369a1'];

export function seriesColor(i: number): string {
  return COLORS[i % COLORS.length];
}

/** A top for the y axis that splits into four round steps. */
function niceMax(v: number): number {
  if (v <= 0) return 1;
  const raw = v / 4;
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p * 4 >= v) return m * p * 4;
  return 40 * p;
}

const H = 180;
const M = { l: 56, r: 12, t: 10, b: 24 };

export function Chart({ chart, timestamps, extra }: { chart: MetricChart; timestamps: number[]; extra?: ComponentChildren }) {
  const ref = useRef<HTMLDivElement>(null);
  const [w, setW] = useState(420);
  const [hover, setHover] = useState<number | null>(null);
  useLayoutEffect(() => {
    const el = ref.current;
    if (!el) return;
    const m = () => setW(Math.max(200, el.clientWidth));
    m();
    const ro = new ResizeObserver(m);
    ro.observe(el);
    return () => ro.disconnect();
  }, []);

  const series = chart.series.filter((s) => s.values.some((v) => v !== null && v !== undefined));
  let max = 0;
  for (const s of series) for (const v of s.values) if (v !== null && v !== undefined && v > max) max = v;
  if (chart.unit === '%') max = Math.max(max, 100);
  const top = niceMax(max);
  const n = timestamps.length;
  const iw = w - M.l - M.r;
  const ih = H - M.t - M.b;
  const t0 = timestamps[0] ?? 0;
  const t1 = timestamps[n - 1] ?? 1;
  const xs = (i: number) => M.l + (n > 1 ? ((timestamps[i] - t0) / (t1 - t0 || 1)) * iw : iw / 2);
  const ys = (v: number) => M.t + ih - (v / top) * ih;

  const path = (values: (number | null)[]) => {
    let d = '';
    let pen = false;
    for (let i = 0; i < n; i++) {
      const v = values[i];
      if (v === null || v === undefined || !Number.isFinite(v)) {
        pen = false;
        continue;
      }
      d += `${pen ? 'L' : 'M'}${xs(i).toFixed(1)},${ys(v).toFixed(1)}`;
      pen = true;
    }
    return d;
  };

  const yTicks = [0, 0.25, 0.5, 0.75, 1].map((f) => f * top);
  const xTicks: number[] = [];
  if (n > 1) for (let k = 0; k <= 4; k++) xTicks.push(Math.round((k * (n - 1)) / 4));

  const onMove = (ev: MouseEvent) => {
    if (n === 0) return;
    const r = (ev.currentTarget as SVGElement).getBoundingClientRect();
    const x = ev.clientX - r.left;
    let best = 0;
    for (let i = 1; i < n; i++) if (Math.abs(xs(i) - x) < Math.abs(xs(best) - x)) best = i;
    setHover(best);
  };

  return (
    <figure class="chart" data-chart-id={chart.id}>
      <figcaption>
        <span class="chart-title">{chart.title}</span> <span class="unit">{chart.unit}</span>
        {extra}
      </figcaption>
      <div ref={ref} class="chart-body">
        {series.length === 0 ? (
          <div class="chart-empty">No data</div>
        ) : (
          <svg width={w} height={H} role="img" aria-label={`${chart.title} chart`} onMouseMove={onMove} onMouseLeave={() => setHover(null)}>
            {yTicks.map((v) => (
              <g key={v} class="tick">
                <line x1={M.l} x2={w - M.r} y1={ys(v)} y2={ys(v)} />
                <text x={M.l - 6} y={ys(v) + 4} text-anchor="end">
                  {fmtUnit(v, chart.unit)}
                </text>
              </g>
            ))}
            {xTicks.map((i, k) => (
              <text key={i} class="tick" x={xs(i)} y={H - 6} text-anchor={k === 0 ? 'start' : k === xTicks.length - 1 ? 'end' : 'middle'}>
                {fmtClock(timestamps[i] * 1000, false)}
              </text>
            ))}
            {series.map((s) => (
              <path key={s.name} class="series" d={path(s.values)} stroke={seriesColor(chart.series.indexOf(s))} />
            ))}
            {hover !== null && <line class="cursor" x1={xs(hover)} x2={xs(hover)} y1={M.t} y2={M.t + ih} />}
          </svg>
        )}
        {hover !== null && series.length > 0 && (
          <div class="chart-tip" style={{ left: `${Math.min(xs(hover) + 8, w - 160)}px` }}>
            <div class="tip-time">{fmtClock(timestamps[hover] * 1000)}</div>
            {series.map((s) => {
              const v = s.values[hover];
              return (
                <div key={s.name}>
                  <span class="swatch" style={{ background: seriesColor(chart.series.indexOf(s)) }} /> {s.name}:{' '}
                  {v === null || v === undefined ? '–' : fmtUnit(v, chart.unit)}
                </div>
              );
            })}
          </div>
        )}
      </div>
      {series.length > 0 && (
        <ul class="chart-legend">
          {series.map((s) => (
            <li key={s.name}>
              <span class="swatch" style={{ background: seriesColor(chart.series.indexOf(s)) }} />
              {s.name}
            </li>
          ))}
        </ul>
      )}
    </figure>
  );
}
