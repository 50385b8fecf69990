// Small shared pieces: state badges, dialogs, toasts, empty and loading states.
import type { ComponentChildren } from 'preact';
import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { t, tMaybe } from '../i18n';
import { ApiError } from '../api';

export function StateBadge({ state, tip }: { state: string; tip?: string | null }) {
  const label = tMaybe(`state.${state}`, state);
  return (
    <span class={`badge state-${state.toLowerCase()}${tip ? ' has-tip' : ''}`} data-tip={tip || undefined} aria-label={tip ? `${label}: ${tip}` : label}>
      <span class="dot" aria-hidden="true" />
      {label}
    </span>
  );
}

export function Spinner({ label }: { label?: string }) {
  return (
    <div class="loading" role="status">
      <span class="spinner" aria-hidden="true" />
      <span>{label || t('common.loading')}</span>
    </div>
  );
}

export function Empty({ title, hint, children, icon }: { title: string; hint?: string; children?: ComponentChildren; icon?: ComponentChildren }) {
  return (
    <div class="empty">
      <div class="empty-icon" aria-hidden="true">{icon || <Icon name="inbox" size={28} />}</div>
      <div class="empty-title">{title}</div>
      {hint && <div class="empty-hint">{hint}</div>}
      {children && <div class="empty-actions">{children}</div>}
    </div>
  );
}

export function ErrorBox({ error, onRetry }: { error: unknown; onRetry?: () => void }) {
  return (
    <div class="alert alert-error" role="alert">
      <Icon name="alert" />
      <div class="alert-body">
        <div>{errorText(error)}</div>
        {onRetry && (
          <button class="btn btn-sm" onClick={onRetry}>
            {t('common.retry')}
          </button>
        )}
      </div>
    </div>
  );
}

export function errorText(e: unknown): string {
  if (e instanceof ApiError) {
    if (e.status === 0) return t('error.network');
    return e.problem.detail || e.problem.title;
  }
  if (e instanceof Error) return e.message;
  return String(e);
}

// ---- icons (inline SVG, stroke style) ----
const ICONS: Record<string, string> = {
  inbox: 'M22 12h-6l-2 3h-4l-2-3H2M5.45 5.11 2 12v6a2 2 0 0 0 2 2h16a2 2 0 0 0 2-2v-6l-3.45-6.89A2 2 0 0 0 16.76 4H7.24a2 2 0 0 0-1.79 1.11z',
  alert: 'M12 9v4m0 4h.01M10.29 3.86 1.82 18a2 2 0 0 0 1.71 3h16.94a2 2 0 0 0 1.71-3L13.71 3.86a2 2 0 0 0-3.42 0z',
  stop: 'M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18zM9.5 9.5h5v5h-5z',
  copy: 'M8 8h12v12H8zM4 16V4h12',
  trash: 'M3 6h18M8 6V4h8v2m-9 0 1 14h8l1-14',
  plus: 'M12 5v14M5 12h14',
  upload: 'M12 16V4m0 0-5 5m5-5 5 5M4 20h16',
  download: 'M12 4v12m0 0-5-5m5 5 5-5M4 20h16',
  folder: 'M3 7a2 2 0 0 1 2-2h4l2 2h8a2 2 0 0 1 2 2v8a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2z',
  file: 'M14 3H6a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2V9zM14 3v6h6',
  db: 'M4 6c0-1.7 3.6-3 8-3s8 1.3 8 3-3.6 3-8 3-8-1.3-8-3zm0 0v12c0 1.7 3.6 3 8 3s8-1.3 8-3V6M4 12c0 1.7 3.6 3 8 3s8-1.3 8-3',
  clock: 'M12 7v5l3 3M21 12a9 9 0 1 1-18 0 9 9 0 0 1 18 0z',
  chart: 'M4 20V10m6 10V4m6 16v-7m4 7H2',
  code: 'm8 8-4 4 4 4m8-8 4 4-4 4',
  refresh: 'M20 11a8 8 0 1 0-2.3 5.7M20 4v7h-7',
  x: 'M6 6l12 12M18 6 6 18',
  chevronRight: 'm9 6 6 6-6 6',
  chevronLeft: 'm15 6-6 6 6 6',
  logout: 'M15 4h3a2 2 0 0 1 2 2v12a2 2 0 0 1-2 2h-3M10 17l5-5-5-5M15 12H3',
  globe: 'M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18zM3 12h18M12 3c2.5 2.7 3.8 5.7 3.8 9s-1.3 6.3-3.8 9c-2.5-2.7-3.8-5.7-3.8-9S9.5 5.7 12 3z',
  search: 'M11 19a8 8 0 1 0 0-16 8 8 0 0 0 0 16zm10 2-4.35-4.35',
  board: 'M3 3h18v14H3zM8 21h8M12 17v4M7 13l3-4 3 2 4-5',
  edit: 'M4 20h4L19 9l-4-4L4 16zM14 6l4 4',
  import: 'M12 3v12m0 0-4-4m4 4 4-4M5 21h14',
  cpu: 'M6 6h12v12H6zM9 9h6v6H9zM9 2v4m6-4v4M9 18v4m6-4v4M2 9h4m-4 6h4m12-6h4m-4 6h4',
  gpu: 'M2 7h20v10H2zM6 17v3m4-3v3m4-3v3m4-3v3M7 10h4v4H7z',
  memory: 'M4 8h16v8H4zM8 8v8m4-8v8m4-8v8',
  server: 'M3 4h18v7H3zM3 13h18v7H3zM7 7.5h.01M7 16.5h.01',
  queue: 'M4 6h16M4 12h16M4 18h10',
  check: 'm5 12 5 5L20 7',
};

export function Icon({ name, size = 16 }: { name: string; size?: number }) {
  return (
    <svg class="icon" width={size} height={size} viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="1.8" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true">
      <path d={ICONS[name] || ''} />
    </svg>
  );
}

// ---- dialogs ----
interface DialogSpec {
  title: string;
  body?: ComponentChildren;
  ok?: string;
  cancel?: string;
  danger?: boolean;
  wide?: boolean;
  /** For a prompt: the initial value of a text field. */
  input?: { value: string; label: string; placeholder?: string };
  resolve: (v: string | boolean | null) => void;
}

let showDialog: (d: DialogSpec | null) => void = () => {};

/** Asks for confirmation; resolves true when the user agrees. */
export function confirmDialog(opts: Omit<DialogSpec, 'resolve' | 'input'>): Promise<boolean> {
  return new Promise((resolve) => showDialog({ ...opts, resolve: (v) => resolve(v === true || typeof v === 'string') }));
}

/** Asks for a line of text; resolves null when cancelled. */
export function promptDialog(opts: Omit<DialogSpec, 'resolve'> & { input: NonNullable<DialogSpec['input']> }): Promise<string | null> {
  return new Promise((resolve) => showDialog({ ...opts, resolve: (v) => resolve(typeof v === 'string' ? v : null) }));
}

export function DialogHost() {
  const [d, setD] = useState<DialogSpec | null>(null);
  const [value, setValue] = useState('');
  const okRef = useRef<HTMLButtonElement>(null);
  const inputRef = useRef<HTMLInputElement>(null);
  const close = (v: string | boolean | null) => {
    if (!d) return;
    setD(null);
    d.resolve(v);
  };
  useEffect(() => {
    showDialog = (spec) => {
      setD(spec);
      if (spec?.input) setValue(spec.input.value);
    };
  }, []);
  useEffect(() => {
    if (!d) return;
    if (d.input) inputRef.current?.select();
    else okRef.current?.focus();
  }, [d]);
  if (!d) return null;
  const ok = () => close(d.input ? value.trim() : true);
  return (
    <Modal title={d.title} onClose={() => close(null)} wide={d.wide}
      footer={
        <>
          <button class="btn" onClick={() => close(null)}>{d.cancel || t('common.cancel')}</button>
          <button ref={okRef} class={`btn ${d.danger ? 'btn-danger' : 'btn-primary'}`} data-testid="dialog-ok"
            disabled={!!d.input && !value.trim()} onClick={ok}>
            {d.ok || t('common.ok')}
          </button>
        </>
      }>
      {d.body && <div class="dialog-text">{d.body}</div>}
      {d.input && (
        <label class="field">
          <span class="field-label">{d.input.label}</span>
          <input ref={inputRef} class="input" value={value} placeholder={d.input.placeholder}
            onInput={(e) => setValue((e.target as HTMLInputElement).value)}
            onKeyDown={(e) => { if (e.key === 'Enter' && value.trim()) ok(); }} />
        </label>
      )}
    </Modal>
  );
}

// Open modals, the newest last: only it answers Escape and holds the focus.
const openModals: symbol[] = [];

const FOCUSABLE = 'a[href], button:not([disabled]), input:not([disabled]):not([type=hidden]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"]), [contenteditable="true"]';

/** A dialog: Escape or a click outside closes it; Tab and Shift+Tab stay
 * inside it; the focus goes back where it was when it closes. */
export function Modal({ title, children, footer, onClose, wide }: { title: string; children?: ComponentChildren; footer?: ComponentChildren; onClose: () => void; wide?: boolean }) {
  const box = useRef<HTMLDivElement>(null);
  const close = useRef(onClose);
  close.current = onClose;
  // Before the first paint, so no key pressed once it shows is missed.
  useLayoutEffect(() => {
    const me = Symbol('modal');
    openModals.push(me);
    const before = document.activeElement as HTMLElement | null;
    // The dialog's own code may focus a field first; else its first control.
    const el = box.current;
    if (el && !el.contains(document.activeElement)) {
      const first = el.querySelector<HTMLElement>(`.modal-body ${FOCUSABLE.split(', ').join(', .modal-body ')}`) ?? el.querySelector<HTMLElement>(FOCUSABLE);
      (first ?? el).focus();
    }
    const onKey = (e: KeyboardEvent) => {
      if (openModals[openModals.length - 1] !== me || !box.current) return;
      if (e.key === 'Escape') {
        e.preventDefault();
        e.stopPropagation();
        close.current();
        return;
      }
      if (e.key !== 'Tab') return;
      const items = [...box.current.querySelectorAll<HTMLElement>(FOCUSABLE)].filter((x) => x.offsetParent !== null || x === document.activeElement);
      if (!items.length) {
        e.preventDefault();
        box.current.focus();
        return;
      }
      const first = items[0];
      const last = items[items.length - 1];
      const active = document.activeElement;
      if (e.shiftKey && (active === first || !box.current.contains(active))) {
        e.preventDefault();
        last.focus();
      } else if (!e.shiftKey && (active === last || !box.current.contains(active))) {
        e.preventDefault();
        first.focus();
      }
    };
    // The focus never rests outside an open dialog.
    const onFocus = (e: FocusEvent) => {
      if (openModals[openModals.length - 1] !== me || !box.current) return;
      if (e.target instanceof Node && !box.current.contains(e.target)) box.current.focus();
    };
    // Capture: before CodeMirror or a field can swallow Escape.
    window.addEventListener('keydown', onKey, true);
    document.addEventListener('focusin', onFocus);
    return () => {
      window.removeEventListener('keydown', onKey, true);
      document.removeEventListener('focusin', onFocus);
      const i = openModals.indexOf(me);
      if (i >= 0) openModals.splice(i, 1);
      if (before && before.isConnected && typeof before.focus === 'function') before.focus();
    };
  }, []);
  return (
    <div class="overlay" onMouseDown={(e) => { if (e.target === e.currentTarget) onClose(); }}>
      <div ref={box} tabIndex={-1} class={`modal${wide ? ' modal-wide' : ''}`} role="dialog" aria-modal="true" aria-label={title}>
        <div class="modal-head">
          <h2>{title}</h2>
          <button class="icon-btn" onClick={onClose} aria-label={t('common.close')} title={t('common.close')}>
            <Icon name="x" />
          </button>
        </div>
        <div class="modal-body">{children}</div>
        {footer && <div class="modal-foot">{footer}</div>}
      </div>
    </div>
  );
}

// ---- toasts ----
interface ToastItem { id: number; text: string; kind: 'ok' | 'error' | 'info' }
let pushToast: (t: ToastItem) => void = () => {};
let toastSeq = 0;

export function toast(text: string, kind: ToastItem['kind'] = 'ok') {
  pushToast({ id: ++toastSeq, text, kind });
}

export function ToastHost() {
  const [items, setItems] = useState<ToastItem[]>([]);
  useEffect(() => {
    pushToast = (item) => {
      setItems((xs) => [...xs, item]);
      setTimeout(() => setItems((xs) => xs.filter((x) => x.id !== item.id)), item.kind === 'error' ? 7000 : 3500);
    };
  }, []);
  return (
    <div class="toasts" aria-live="polite">
      {items.map((i) => (
        <div key={i.id} class={`toast toast-${i.kind}`}>
          <Icon name={i.kind === 'error' ? 'alert' : 'check'} />
          <span>{i.text}</span>
        </div>
      ))}
    </div>
  );
}

/** Re-runs `f` every `ms` while the tab is visible (and at once when it
 * shows again). The next run is timed from the end of the last one, so slow
 * answers never pile up. */
export function usePoll(f: () => unknown, ms: number, deps: unknown[], enabled = true) {
  const fn = useRef(f);
  fn.current = f;
  useEffect(() => {
    if (!enabled) return;
    let timer: number | undefined;
    let stopped = false;
    let running = false;
    const schedule = () => {
      window.clearTimeout(timer);
      if (!stopped && !document.hidden) timer = window.setTimeout(tick, ms);
    };
    const tick = async () => {
      if (stopped || running || document.hidden) return;
      running = true;
      try {
        await fn.current();
      } catch {
        // The callers show their own errors.
      } finally {
        running = false;
        schedule();
      }
    };
    const onVis = () => {
      if (document.hidden) window.clearTimeout(timer);
      else tick();
    };
    schedule();
    document.addEventListener('visibilitychange', onVis);
    return () => {
      stopped = true;
      window.clearTimeout(timer);
      document.removeEventListener('visibilitychange', onVis);
    };
  }, [...deps, enabled, ms]);
}

/** A clock that ticks every `ms` while mounted, for live durations. */
export function useNow(ms = 1000): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const id = setInterval(() => {
      if (!document.hidden) setNow(Date.now());
    }, ms);
    return () => clearInterval(id);
  }, [ms]);
  return now;
}

export function Logo({ size = 26 }: { size?: number }) {
  return (
    <svg width={size} height={size} viewBox="0 0 32 32" aria-hidden="true">
      <rect width="32" height="32" rx="8" fill="#1f2937" />
      <path d="M9 23V9m0 8 9-8M13 14l6 9" stroke="#fff" stroke-width="2.6" fill="none" stroke-linecap="round" stroke-linejoin="round" />
      <circle cx="23" cy="10" r="2.6" fill="#f08a3c" />
    </svg>
  );
}
