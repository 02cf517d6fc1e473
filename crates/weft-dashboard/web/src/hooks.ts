import { useEffect, useRef, useState, useCallback } from 'preact/hooks';
import { getJson } from './api';

export interface Route {
  /** Path segments after "#/", e.g. ["traces", "abc"]. */
  path: string[];
  query: URLSearchParams;
}

export function parseHash(hash: string): Route {
  const h = hash.replace(/^#\/?/, '');
  const qi = h.indexOf('?');
  const p = qi >= 0 ? h.slice(0, qi) : h;
  const q = qi >= 0 ? h.slice(qi + 1) : '';
  return {
    path: p.split('/').filter(Boolean).map((s) => decodeURIComponent(s)),
    query: new URLSearchParams(q),
  };
}

export function hashFor(path: string, params: Record<string, string | number | undefined | null> = {}): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return `#/${path}${s ? `?${s}` : ''}`;
}

/** Changes the route; `replace` keeps the history entry (for form controls). */
export function navigate(hash: string, replace = false) {
  if (replace) {
    history.replaceState(null, '', hash);
    window.dispatchEvent(new HashChangeEvent('hashchange'));
  } else {
    location.hash = hash;
  }
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseHash(location.hash));
  useEffect(() => {
    const on = () => setRoute(parseHash(location.hash));
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return route;
}

export interface ApiState<T> {
  data?: T;
  error?: unknown;
  loading: boolean;
  /** When the data was last fetched (ms). */
  updated?: number;
  reload: () => void;
}

/**
 * Fetches `url` (null: nothing), again every `refreshMs` while the page is visible.
 * With `keep`, the previous answer stays shown while a new URL loads (the graph).
 */
export function useApi<T>(url: string | null, refreshMs = 0, keep = false): ApiState<T> {
  const [state, setState] = useState<{ data?: T; error?: unknown; loading: boolean; updated?: number; url?: string }>({
    loading: !!url,
  });
  const [tick, setTick] = useState(0);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  const urlRef = useRef(url);
  urlRef.current = url;

  useEffect(() => {
    if (!url) {
      setState({ loading: false });
      return;
    }
    const ctl = new AbortController();
    setState((s) => (keep || s.url === url ? { ...s, loading: true } : { loading: true, url }));
    getJson<T>(url, ctl.signal).then(
      (data) => {
        if (!ctl.signal.aborted) setState({ data, loading: false, updated: Date.now(), url });
      },
      (error) => {
        if (!ctl.signal.aborted)
          setState((s) => ({ ...(keep || s.url === url ? s : {}), error, loading: false, url }));
      },
    );
    return () => ctl.abort();
  }, [url, tick]);

  useEffect(() => {
    if (!url || !refreshMs) return;
    const id = setInterval(() => {
      if (!document.hidden) setTick((t) => t + 1);
    }, refreshMs);
    return () => clearInterval(id);
  }, [url, refreshMs]);

  return { data: state.data, error: state.error, loading: state.loading, updated: state.updated, reload };
}
