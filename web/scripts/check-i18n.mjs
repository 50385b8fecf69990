// Checks the translations: every language has exactly the keys of en.json,
// with the same {placeholders}, no empty text, and every t('key') in the
// sources exists. Exits 1 on any problem.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', 'src');
const dir = join(root, 'i18n');
const load = (code) => JSON.parse(readFileSync(join(dir, `${code}.json`), 'utf8'));
const en = load('en');
const problems = [];
const holes = (s) => [...new Set([...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]))].sort().join(',');

for (const file of readdirSync(dir).filter((f) => f.endsWith('.json'))) {
  const code = file.replace(/\.json$/, '');
  const d = load(code);
  for (const k of Object.keys(en)) {
    if (!(k in d)) problems.push(`${code}: missing ${k}`);
    else if (typeof d[k] !== 'string' || (d[k] === '' && en[k] !== '' && k !== 'dur.sep')) problems.push(`${code}: empty ${k}`);
    else if (holes(d[k]) !== holes(en[k])) problems.push(`${code}: ${k} has {${holes(d[k])}}, en has {${holes(en[k])}}`);
  }
  for (const k of Object.keys(d)) if (!(k in en)) problems.push(`${code}: ${k} is not in en.json`);
}

const walk = (p) => (statSync(p).isDirectory() ? readdirSync(p).flatMap((f) => walk(join(p, f))) : [p]);
for (const f of walk(root).filter((p) => /\.tsx?$/.test(p))) {
  const src = readFileSync(f, 'utf8');
  for (const m of src.matchAll(/\b(?:t|row)\('([\w.-]+)'/g)) {
    if (!(m[1] in en)) problems.push(`${f.slice(root.length + 1)}: t('${m[1]}') is not in en.json`);
  }
}

if (problems.length) {
  console.error(`i18n: ${problems.length} problem(s)\n  ${problems.join('\n  ')}`);
  process.exit(1);
}
console.log(`i18n: ${Object.keys(en).length} keys, every language complete`);
