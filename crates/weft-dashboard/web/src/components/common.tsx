import type { ComponentChildren } from 'preact';
import { ApiError } from '../api';

export function ErrorBox({ error }: { error: unknown }) {
  if (!error) return null;
  if (error instanceof DOMException && error.name === 'AbortError') return null;
  const e = error instanceof ApiError ? error : undefined;
  return (
    <div class="error-box" role="alert">
      <strong>{e ? e.error : String(error)}</strong>
      {e?.hint && <div class="hint">{e.hint}</div>}
      {e && <div class="url">{e.status ? `${e.status} · ` : ''}{e.url}</div>}
    </div>
  );
}

export function Loading({ what }: { what?: string }) {
  return <div class="loading">Loading{what ? ` ${what}` : ''}…</div>;
}

export function Empty({ children }: { children: ComponentChildren }) {
  return <div class="empty">{children}</div>;
}

const LEVELS: Record<string, number> = { Error: 3, Warning: 2, Info: 1 };

export function levelRank(l: string | undefined): number {
  return (l && LEVELS[l]) || 0;
}

export function LevelBadge({ level }: { level: string }) {
  return <span class={`level level-${level.toLowerCase()}`}>{level}</span>;
}

export function SyncBadge({ sync }: { sync?: string }) {
  const s = sync || 'UNKNOWN';
  return <span class={`sync sync-${s.toLowerCase().replace(/\s+/g, '-')}`}>{s}</span>;
}

export function Field({ label, children }: { label: string; children: ComponentChildren }) {
  return (
    <div class="field">
      <span class="field-label">{label}</span>
      <span class="field-value">{children}</span>
    </div>
  );
}

export function configHref(kind: string, namespace: string, name: string): string {
  const q = new URLSearchParams({ kind, namespace, name });
  return `#/config?${q.toString()}`;
}

export function tracesHref(service: string): string {
  return `#/traces?${new URLSearchParams({ service }).toString()}`;
}
