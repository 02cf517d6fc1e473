// Every call to the API goes through getJson: it turns error bodies into ApiError and,
// on 401, asks for the admin token once (however many calls are waiting) and retries.

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly error: string,
    readonly hint: string,
    readonly url: string,
  ) {
    super(error);
  }
}

export interface AuthPrompt {
  error: string;
  hint: string;
  /** How many times a token was submitted and refused. */
  refused: number;
}

type Listener = (p: AuthPrompt | null) => void;

let prompt: AuthPrompt | null = null;
let waiters: (() => void)[] = [];
let submitted = 0;
const listeners = new Set<Listener>();

function setPrompt(p: AuthPrompt | null) {
  prompt = p;
  listeners.forEach((l) => l(p));
}

export function onAuthPrompt(l: Listener): () => void {
  listeners.add(l);
  l(prompt);
  return () => listeners.delete(l);
}

/** Stores the token as the `weft-token` cookie and retries every call that got a 401. */
export function submitToken(token: string) {
  const t = token.trim();
  const value = /^[A-Za-z0-9._~+/=-]*$/.test(t) ? t : encodeURIComponent(t);
  document.cookie = `weft-token=${value}; path=/; SameSite=Strict`;
  submitted++;
  const w = waiters;
  waiters = [];
  setPrompt(null);
  w.forEach((f) => f());
}

function waitForToken(body: { error: string; hint: string }): Promise<void> {
  return new Promise((resolve) => {
    waiters.push(resolve);
    if (!prompt) setPrompt({ ...body, refused: submitted });
  });
}

async function errorBody(res: Response): Promise<{ error: string; hint: string }> {
  let error = `${res.status} ${res.statusText}`.trim();
  let hint = '';
  try {
    const text = await res.text();
    try {
      const j = JSON.parse(text);
      if (j && typeof j === 'object') {
        if (typeof j.error === 'string') error = j.error;
        if (typeof j.hint === 'string') hint = j.hint;
      }
    } catch {
      if (text && text.length < 300) error = `${error}: ${text}`;
    }
  } catch {
    /* the body could not be read: keep the status line */
  }
  return { error, hint };
}

export async function getJson<T>(url: string, signal?: AbortSignal): Promise<T> {
  for (;;) {
    let res: Response;
    try {
      res = await fetch(url, {
        credentials: 'same-origin',
        headers: { Accept: 'application/json' },
        signal,
      });
    } catch (e) {
      if (signal?.aborted) throw e;
      throw new ApiError(0, `Could not reach the dashboard API (${String(e)})`, 'Is the control plane running?', url);
    }
    if (res.status === 401) {
      await waitForToken(await errorBody(res));
      if (signal?.aborted) throw new DOMException('aborted', 'AbortError');
      continue;
    }
    if (!res.ok) {
      const b = await errorBody(res);
      throw new ApiError(res.status, b.error, b.hint, url);
    }
    try {
      return (await res.json()) as T;
    } catch (e) {
      throw new ApiError(res.status, `The answer is not JSON (${String(e)})`, '', url);
    }
  }
}

/** Builds `path?k=v&...`, leaving out empty values. */
export function apiUrl(path: string, params: Record<string, string | number | undefined | null> = {}): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}
