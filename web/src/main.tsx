import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import './styles.css';
import { Api, onUnauthorized, session, type UserView } from './api';
import { getLang, LANGS, setLang, t, type Lang } from './i18n';
import { Link, navigate, useRoute } from './router';
import { DialogHost, Icon, Logo, ToastHost, confirmDialog } from './components/ui';
import { LoginPage } from './pages/login';
import { JobsPage } from './pages/jobs';
import { JobPage } from './pages/job';
import { SubmitPage } from './pages/submit';
import { FilesPage } from './pages/files';
import { ClusterPage } from './pages/cluster';

function toLogin() {
  const here = location.pathname + location.search;
  if (location.pathname !== '/login') navigate(`/login${here && here !== '/' ? `?next=${encodeURIComponent(here)}` : ''}`, { replace: true });
}
onUnauthorized(toLogin);

function App() {
  const route = useRoute();
  const [lang, setLangState] = useState<Lang>(getLang());
  const [me, setMe] = useState<UserView | null>(null);
  const path = route.path;

  useEffect(() => {
    if (!session.token && path !== '/login') toLogin();
    else if (path === '/') navigate('/jobs', { replace: true });
  }, [path]);

  useEffect(() => {
    if (session.token && path !== '/login' && (!me || me.name !== session.name)) {
      Api.me().then(setMe, () => {});
    }
  }, [path, session.token]);

  useEffect(() => {
    document.title = `${pageTitle(path)} · kiln`;
  }, [path, lang]);

  const changeLang = (l: Lang) => {
    setLang(l);
    setLangState(l);
  };

  let page;
  if (path === '/login') page = <LoginPage onLogin={(u) => setMe(u)} />;
  else if (!session.token) page = null;
  else if (path === '/jobs' || path === '/') page = <JobsPage me={me} />;
  else if (path.startsWith('/jobs/') && decoded(path.slice('/jobs/'.length)) !== null)
    page = <JobPage id={decoded(path.slice('/jobs/'.length)) as string} me={me} />;
  else if (path === '/submit') page = <SubmitPage />;
  else if ((path === '/files' || path.startsWith('/files/')) && decoded(path.slice('/files'.length)) !== null)
    page = <FilesPage path={decoded(path.slice('/files'.length)) as string} />;
  else if (path === '/cluster') page = <ClusterPage me={me} />;
  else page = <NotFound />;

  return (
    <div class="app">
      <Header path={path} me={me} lang={lang} onLang={changeLang} />
      <main class={`main${path === '/login' ? ' main-login' : ''}`}>{page}</main>
      <DialogHost />
      <ToastHost />
    </div>
  );
}

/** A path part decoded, or null for a malformed `%` sequence (then the page
 * is NotFound rather than a blank app). */
function decoded(part: string): string | null {
  try {
    return decodeURIComponent(part);
  } catch {
    return null;
  }
}

function pageTitle(path: string): string {
  if (path.startsWith('/jobs/')) return decoded(path.slice(6)) ?? 'kiln';
  if (path.startsWith('/submit')) return t('nav.submit');
  if (path.startsWith('/files')) return t('nav.files');
  if (path.startsWith('/cluster')) return t('nav.cluster');
  if (path.startsWith('/login')) return t('login.title');
  return t('nav.jobs');
}

function Header({ path, me, lang, onLang }: { path: string; me: UserView | null; lang: Lang; onLang: (l: Lang) => void }) {
  const signedIn = !!session.token && path !== '/login';
  const nav = [
    { href: '/jobs', label: t('nav.jobs'), active: path === '/jobs' || path.startsWith('/jobs/') },
    { href: '/submit', label: t('nav.submit'), active: path === '/submit' },
    { href: '/files', label: t('nav.files'), active: path.startsWith('/files') },
    { href: '/cluster', label: t('nav.cluster'), active: path === '/cluster' },
  ];
  const signOut = async () => {
    const ok = await confirmDialog({ title: t('header.signOutTitle'), body: t('header.signOutBody'), ok: t('header.signOut') });
    if (!ok) return;
    // Revoked on the server, so a copy of the token is useless too; the
    // local sign-out happens even if the server cannot be reached.
    await Api.logout().catch(() => undefined);
    session.clear();
    navigate('/login', { replace: true });
  };
  return (
    <header class="header">
      <div class="header-inner">
        <Link href={signedIn ? '/jobs' : '/login'} class="brand" aria-label="kiln">
          <Logo />
          <span class="brand-name">kiln</span>
        </Link>
        {signedIn && (
          <nav class="nav" aria-label={t('nav.label')}>
            {nav.map((n) => (
              <Link key={n.href} href={n.href} class={`nav-link${n.active ? ' active' : ''}`} aria-current={n.active ? 'page' : undefined}>
                {n.label}
              </Link>
            ))}
          </nav>
        )}
        <div class="header-right">
          <label class="lang" title={t('header.language')}>
            <Icon name="globe" />
            <select aria-label={t('header.language')} value={lang} data-testid="lang" onChange={(e) => onLang((e.target as HTMLSelectElement).value as Lang)}>
              {LANGS.map((l) => (
                <option key={l.code} value={l.code}>{l.label}</option>
              ))}
            </select>
          </label>
          {signedIn && (
            <>
              <span class="user" title={me?.isAdmin ? t('header.admin') : undefined}>
                <span class="avatar" aria-hidden="true">{(session.name || '?').slice(0, 1).toUpperCase()}</span>
                <span class="user-name" data-testid="user-name">{session.name}</span>
                {me?.isAdmin && <span class="tag">{t('header.admin')}</span>}
              </span>
              <button class="icon-btn" onClick={signOut} title={t('header.signOut')} aria-label={t('header.signOut')} data-testid="sign-out">
                <Icon name="logout" />
              </button>
            </>
          )}
        </div>
      </div>
    </header>
  );
}

function NotFound() {
  return (
    <div class="page">
      <div class="empty">
        <div class="empty-title">{t('notFound.title')}</div>
        <div class="empty-actions">
          <Link class="btn btn-primary" href="/jobs">{t('notFound.back')}</Link>
        </div>
      </div>
    </div>
  );
}

render(<App />, document.getElementById('app')!);
