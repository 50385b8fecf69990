// Numbers, sizes, times and durations in the current language.
import { getLang, t } from './i18n';

export function fmtBytes(n: number | null | undefined): string {
  if (n == null || !isFinite(n)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  const digits = i === 0 || v >= 100 ? 0 : v >= 10 ? 1 : 2;
  return `${v.toFixed(digits).replace(/\.0+$|(\.\d*?)0+$/, '$1')} ${units[i]}`;
}

export const fmtMb = (mb: number) => fmtBytes(mb * 1024 * 1024);

/** A span of time: "1h 5m", "1小时5分", "1시간 5분". */
export function fmtDuration(ms: number | null | undefined): string {
  if (ms == null || !isFinite(ms)) return '—';
  let s = Math.max(0, Math.floor(ms / 1000));
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  const parts: string[] = [];
  if (d) parts.push(t('dur.d', { n: d }));
  if (h) parts.push(t('dur.h', { n: h }));
  if (m && !d) parts.push(t('dur.m', { n: m }));
  if (!d && !h) parts.push(t('dur.s', { n: s }));
  return parts.slice(0, 2).join(t('dur.sep'));
}

export function fmtTime(ms: number | null | undefined): string {
  if (ms == null) return '—';
  return new Intl.DateTimeFormat(getLang(), {
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
    hour12: false,
  }).format(new Date(ms));
}

export function fmtClock(ms: number): string {
  return new Intl.DateTimeFormat(getLang(), {
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
    hour12: false,
  }).format(new Date(ms));
}

/** "3 minutes ago", "3分钟前", "3분 전". */
export function fmtAgo(ms: number | null | undefined, now = Date.now()): string {
  if (ms == null) return '—';
  const rtf = new Intl.RelativeTimeFormat(getLang(), { numeric: 'auto' });
  const diff = (ms - now) / 1000;
  const abs = Math.abs(diff);
  if (abs < 45) return rtf.format(Math.round(diff), 'second');
  if (abs < 45 * 60) return rtf.format(Math.round(diff / 60), 'minute');
  if (abs < 22 * 3600) return rtf.format(Math.round(diff / 3600), 'hour');
  if (abs < 26 * 86400) return rtf.format(Math.round(diff / 86400), 'day');
  return fmtTime(ms);
}

export function fmtNumber(n: number, digits = 2): string {
  return new Intl.NumberFormat(getLang(), { maximumFractionDigits: digits }).format(n);
}

/** "1Gi", "512Mi", 1024 (MiB) → MiB. */
export function parseSize(v: string | number | undefined | null): number | null {
  if (v == null || v === '') return null;
  if (typeof v === 'number') return v;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?|[kMGT])?\s*$/.exec(v);
  if (!m) return null;
  const n = parseFloat(m[1]);
  const unit = m[2] || 'Mi';
  const bytes: Record<string, number> = {
    Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40,
    k: 1e3, K: 1e3, M: 1e6, G: 1e9, T: 1e12,
  };
  return (n * (bytes[unit] ?? 2 ** 20)) / 2 ** 20;
}

/** The run time of a job or task: from start to finish, or to now. */
export function runTime(startedAtMs?: number | null, finishedAtMs?: number | null, now = Date.now()): number | null {
  if (!startedAtMs) return null;
  return (finishedAtMs || now) - startedAtMs;
}
