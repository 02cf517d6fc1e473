// Number formatting shared by the graph, the tables and the charts.

export function num(v: string | number | null | undefined): number {
  if (v === null || v === undefined || v === '') return 0;
  const n = typeof v === 'number' ? v : parseFloat(v);
  return Number.isFinite(n) ? n : 0;
}

/** Requests per second: 2 decimals below 10 (as Kiali), fewer above. */
export function fmtRps(n: number): string {
  if (n === 0) return '0';
  if (n < 0.01) return '<0.01';
  if (n < 10) return n.toFixed(2);
  if (n < 1000) return n.toFixed(1);
  return `${(n / 1000).toFixed(1)}k`;
}

/** A percentage: one decimal at most, trailing ".0" dropped. */
export function fmtPct(n: number): string {
  if (n > 0 && n < 0.05) return '<0.1%';
  const r = Math.round(n * 10) / 10;
  return `${Number.isInteger(r) ? r.toFixed(0) : r.toFixed(1)}%`;
}

export function fmtMs(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '–';
  if (n < 10) return `${n.toFixed(1)}ms`;
  if (n < 1000) return `${Math.round(n)}ms`;
  return `${(n / 1000).toFixed(2)}s`;
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

export function fmtBytes(n: number): string {
  let i = 0;
  let v = n;
  while (Math.abs(v) >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  if (i === 0) return `${Math.round(v)} B`;
  return `${v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)} ${UNITS[i]}`;
}

export function fmtBytesRate(n: number): string {
  return `${fmtBytes(n)}/s`;
}

/** Microseconds, as Zipkin counts them. */
export function fmtMicros(us: number | undefined): string {
  if (us === undefined || !Number.isFinite(us)) return '–';
  if (us < 1000) return `${Math.round(us)}µs`;
  return fmtMs(us / 1000);
}

export function fmtSeconds(s: number | undefined): string {
  if (s === undefined || !Number.isFinite(s)) return '–';
  if (s < 60) return `${Math.round(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${Math.round(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

export function fmtOpt(n: number | null | undefined, f: (n: number) => string): string {
  return n === null || n === undefined || !Number.isFinite(n) ? '–' : f(n);
}

function pad(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

export function fmtClock(ms: number, seconds = true): string {
  const d = new Date(ms);
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return seconds ? `${hm}:${pad(d.getSeconds())}` : hm;
}

export function fmtDateTime(ms: number): string {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${fmtClock(ms)}`;
}

/** Formats a chart value in the chart's unit. */
export function fmtUnit(v: number, unit: string): string {
  switch (unit) {
    case 'req/s':
    case 'ops':
      return `${fmtRps(v)}`;
    case '%':
      return fmtPct(v);
    case 'ms':
      return fmtMs(v);
    case 'B':
      return fmtBytes(v);
    case 'B/s':
      return fmtBytesRate(v);
    default:
      return `${Math.abs(v) < 10 ? +v.toFixed(2) : +v.toFixed(1)} ${unit}`.trim();
  }
}

/** "5m" / "600" / "1h30m" → seconds (NaN when not understood). */
export function parseDuration(s: string): number {
  const t = s.trim();
  if (/^\d+(\.\d+)?$/.test(t)) return parseFloat(t);
  const re = /(\d+(?:\.\d+)?)(ms|us|µs|s|m|h|d)/g;
  let total = 0;
  let matched = '';
  let m: RegExpExecArray | null;
  while ((m = re.exec(t))) {
    matched += m[0];
    const v = parseFloat(m[1]);
    total += v * ({ us: 1e-6, µs: 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600, d: 86400 }[m[2]] ?? NaN);
  }
  return matched === t && t ? total : NaN;
}
