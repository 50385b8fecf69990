// A small history-API router: the path and query as state, links that do
// not reload the page.
import { h, type AnchorHTMLAttributes, type ComponentChildren, type TargetedMouseEvent } from 'preact';
import { useEffect, useState } from 'preact/hooks';

type Listener = () => void;
const listeners = new Set<Listener>();

export function navigate(to: string, opts: { replace?: boolean } = {}) {
  const current = location.pathname + location.search;
  if (to === current && !opts.replace) return;
  if (opts.replace) history.replaceState(null, '', to);
  else history.pushState(null, '', to);
  listeners.forEach((l) => l());
  if (!opts.replace) window.scrollTo(0, 0);
}

window.addEventListener('popstate', () => listeners.forEach((l) => l()));

export interface Route {
  path: string;
  query: URLSearchParams;
}

function current(): Route {
  return { path: location.pathname, query: new URLSearchParams(location.search) };
}

export function useRoute(): Route {
  const [route, setRoute] = useState(current);
  useEffect(() => {
    const l = () => setRoute(current());
    listeners.add(l);
    return () => {
      listeners.delete(l);
    };
  }, []);
  return route;
}

/** Replaces one query parameter of the current URL, keeping the path. */
export function setQuery(key: string, value: string | null) {
  const q = new URLSearchParams(location.search);
  if (value === null || value === '') q.delete(key);
  else q.set(key, value);
  const s = q.toString();
  navigate(location.pathname + (s ? `?${s}` : ''), { replace: true });
}

type AnchorProps = AnchorHTMLAttributes<HTMLAnchorElement> & { href: string; children?: ComponentChildren };

export function Link(props: AnchorProps) {
  const { href, onClick, ...rest } = props;
  return h('a', {
    ...rest,
    href,
    onClick: (e: TargetedMouseEvent<HTMLAnchorElement>) => {
      if (onClick) (onClick as (e: TargetedMouseEvent<HTMLAnchorElement>) => void)(e);
      if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
      e.preventDefault();
      navigate(href);
    },
  });
}
