// Translations: one dictionary per language with the same keys (en is the
// reference; scripts/check-i18n.mjs and the type below check the others).
import en from './i18n/en.json';
import zhCN from './i18n/zh-CN.json';
import ko from './i18n/ko.json';

export type Key = keyof typeof en;
export type Lang = 'en' | 'zh-CN' | 'ko';
export const LANGS: { code: Lang; label: string }[] = [
  { code: 'zh-CN', label: '简体中文' },
  { code: 'ko', label: '한국어' },
  { code: 'en', label: 'English' },
];

const dicts: Record<Lang, Record<Key, string>> = { en, 'zh-CN': zhCN, ko };

const STORE = 'kiln.lang';

function initial(): Lang {
  const saved = localStorage.getItem(STORE);
  if (saved === 'en' || saved === 'zh-CN' || saved === 'ko') return saved;
  for (const l of navigator.languages?.length ? navigator.languages : [navigator.language]) {
    const low = (l || '').toLowerCase();
    if (low.startsWith('zh')) return 'zh-CN';
    if (low.startsWith('ko')) return 'ko';
    if (low.startsWith('en')) return 'en';
  }
  return 'en';
}

let lang: Lang = initial();
document.documentElement.lang = lang;

export function getLang(): Lang {
  return lang;
}

export function setLang(l: Lang) {
  lang = l;
  localStorage.setItem(STORE, l);
  document.documentElement.lang = l;
}

/** The text of `key` in the current language, with `{name}` filled in. */
export function t(key: Key, params?: Record<string, string | number>): string {
  let s = dicts[lang][key] ?? en[key] ?? key;
  // "{n} task|{n} tasks": the plural form by the language's rules.
  if (s.includes('|') && params && typeof params.n === 'number') {
    const forms = s.split('|');
    s = new Intl.PluralRules(lang).select(params.n) === 'one' ? forms[0] : forms[forms.length - 1];
  }
  if (params) s = s.replace(/\{(\w+)\}/g, (m, k) => (k in params ? String(params[k]) : m));
  return s;
}

/** For keys built at run time (states, event kinds): the key if known, else the raw value. */
export function tMaybe(key: string, fallback: string): string {
  return key in en ? t(key as Key) : fallback;
}

if (import.meta.env.DEV) {
  for (const code of Object.keys(dicts) as Lang[]) {
    const missing = Object.keys(en).filter((k) => !(k in dicts[code]));
    if (missing.length) console.error(`i18n: ${code} lacks ${missing.join(', ')}`);
  }
}
