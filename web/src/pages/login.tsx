import { useState } from 'preact/hooks';
import { Api, ApiError, session, type UserView } from '../api';
import { t } from '../i18n';
import { navigate, useRoute } from '../router';
import { errorText, Icon, Logo } from '../components/ui';

export function LoginPage({ onLogin }: { onLogin: (u: UserView) => void }) {
  const route = useRoute();
  const [name, setName] = useState('');
  const [password, setPassword] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  const submit = async (e: Event) => {
    e.preventDefault();
    if (!name.trim() || !password) {
      setError(t('login.required'));
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const r = await Api.login(name.trim(), password);
      session.set(r.name, r.token);
      Api.me().then(onLogin, () => {});
      const next = route.query.get('next');
      navigate(next && next.startsWith('/') && !next.startsWith('//') ? next : '/jobs', { replace: true });
    } catch (err) {
      setError(err instanceof ApiError && err.status === 401 ? t('login.wrong') : errorText(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <div class="login-wrap">
      <form class="login-card" onSubmit={submit} noValidate>
        <div class="login-brand">
          <Logo size={40} />
          <div>
            <h1>kiln</h1>
            <p class="muted">{t('login.tagline')}</p>
          </div>
        </div>
        <h2 class="login-title">{t('login.title')}</h2>
        <label class="field">
          <span class="field-label">{t('login.name')}</span>
          <input class="input" name="username" autoComplete="username" autoFocus value={name}
            onInput={(e) => setName((e.target as HTMLInputElement).value)} data-testid="login-name" />
        </label>
        <label class="field">
          <span class="field-label">{t('login.password')}</span>
          <input class="input" type="password" name="password" autoComplete="current-password" value={password}
            onInput={(e) => setPassword((e.target as HTMLInputElement).value)} data-testid="login-password" />
        </label>
        {error && (
          <div class="alert alert-error" role="alert" data-testid="login-error">
            <Icon name="alert" />
            <div class="alert-body">{error}</div>
          </div>
        )}
        <button class="btn btn-primary btn-block" type="submit" disabled={busy} data-testid="login-submit">
          {busy ? t('login.signingIn') : t('login.submit')}
        </button>
        <p class="login-hint muted">{t('login.hint')}</p>
      </form>
    </div>
  );
}
