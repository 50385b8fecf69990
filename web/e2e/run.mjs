// Browser tests of the web UI against a real kiln server, and the
// screenshots in docs/screenshots/. `npm run e2e` from web/.
//
// Env: KILN_BIN (default ../target/debug/kiln), CHROMIUM (/usr/bin/chromium),
// KILN_UI_FROM_SERVER=1 to use the UI that kiln serves itself instead of
// web/dist behind a small Node server, SCREENSHOTS=0 to skip screenshots,
// E2E_SKIP_BUILD=1 to use web/dist as it is.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { serve } from './serve.mjs';

const WEB = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const REPO = resolve(WEB, '..');
const KILN = resolve(WEB, process.env.KILN_BIN || '../target/debug/kiln');
const FROM_SERVER = process.env.KILN_UI_FROM_SERVER === '1';
const SHOTS = process.env.SCREENSHOTS !== '0';
const SHOT_DIR = join(REPO, 'docs', 'screenshots');
const LANGS = ['en', 'zh-CN', 'ko'];
const USER = 'alice';
const PASSWORD = 'kiln-e2e-password';
const T0 = Date.now();

const cleanups = [];
const problems = []; // console errors, page errors
let failed = false;

const log = (...a) => console.log(`[${((Date.now() - T0) / 1000).toFixed(1).padStart(5)}s]`, ...a);

class Failure extends Error {}
function fail(msg) {
  throw new Failure(msg);
}

/** Waits until `f` returns something truthy; fails with `what` after `ms`. */
async function until(what, f, ms = 15000, every = 100) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await f();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) fail(`timed out after ${ms / 1000}s waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

async function visible(page, selector, what, ms = 15000) {
  try {
    await page.locator(selector).first().waitFor({ state: 'visible', timeout: ms });
  } catch {
    fail(`${what}: ${selector} did not appear within ${ms / 1000}s (at ${page.url()})`);
  }
  return page.locator(selector).first();
}

async function textOf(page, selector) {
  return (await page.locator(selector).first().textContent({ timeout: 2000 })) || '';
}

async function step(name, f) {
  const t = Date.now();
  log(`▶ ${name}`);
  await f();
  log(`✓ ${name} (${((Date.now() - t) / 1000).toFixed(1)}s)`);
}

// ------------------------------------------------------------------ kiln

async function startKiln() {
  if (!existsSync(KILN)) fail(`no kiln binary at ${KILN} (build it, or set KILN_BIN)`);
  const data = mkdtempSync(join(tmpdir(), 'kiln-e2e-'));
  const proc = spawn(
    KILN,
    ['server', '--listen', '127.0.0.1:0', '--data', data, '--fake-gpus', '4', '--cpus', '8', '--memory', '16Gi', '--stop-grace', '1', '--sample-every', '1'],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, KILN_DATA: data } },
  );
  let stderr = '';
  proc.stderr.on('data', (d) => {
    stderr = (stderr + d).slice(-20000);
  });
  cleanups.push(async () => {
    // Jobs still running are stopped first, so no task outlives the server.
    if (proc.exitCode == null && kilnUrl) {
      try {
        const tok = readFileSync(join(data, 'admin.token'), 'utf8').trim();
        const h = { authorization: `Bearer ${tok}` };
        const list = await (await fetch(`${kilnUrl}/api/v1/jobs?limit=500`, { headers: h })).json();
        const active = list.items.filter((j) => ['WAITING', 'RUNNING', 'STOPPING'].includes(j.state));
        for (const j of active) await fetch(`${kilnUrl}/api/v1/jobs/${encodeURIComponent(j.id)}/stop`, { method: 'POST', headers: h });
        const end = Date.now() + 10000;
        while (Date.now() < end) {
          const l = await (await fetch(`${kilnUrl}/api/v1/jobs?limit=500`, { headers: h })).json();
          if (!l.items.some((j) => ['WAITING', 'RUNNING', 'STOPPING'].includes(j.state))) break;
          await new Promise((r) => setTimeout(r, 200));
        }
      } catch {
        /* the server may be gone already */
      }
    }
    if (proc.exitCode == null) {
      proc.kill('SIGTERM');
      const gone = await Promise.race([new Promise((r) => proc.once('exit', () => r(true))), new Promise((r) => setTimeout(() => r(false), 5000))]);
      if (!gone) proc.kill('SIGKILL');
    }
    rmSync(data, { recursive: true, force: true, maxRetries: 3 });
  });
  let kilnUrl = null;
  const url = await new Promise((res, rej) => {
    let out = '';
    const timer = setTimeout(() => rej(new Failure(`kiln did not print its address within 30s\n${stderr}`)), 30000);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /kiln listening on (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        res(m[1]);
      }
    });
    proc.once('exit', (code) => rej(new Failure(`kiln exited (${code}) before listening\n${stderr}`)));
  });
  proc.stdout.resume();
  kilnUrl = url;
  const token = readFileSync(join(data, 'admin.token'), 'utf8').trim();
  return { url, token, data, stderr: () => stderr };
}

async function api(base, token, method, path, body) {
  const res = await fetch(`${base}/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  if (!res.ok) fail(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

// ------------------------------------------------------------------ main

async function main() {
  if (!FROM_SERVER && process.env.E2E_SKIP_BUILD !== '1') {
    await step('build web/dist', async () => {
      const r = spawnSync(join(WEB, 'node_modules/.bin/vite'), ['build', '--logLevel', 'warn'], { cwd: WEB, stdio: 'inherit' });
      if (r.status !== 0) fail('vite build failed');
    });
  }
  if (!FROM_SERVER && !existsSync(join(WEB, 'dist/index.html'))) fail('web/dist is not built (npm run build)');

  const kiln = await startKiln();
  log(`kiln at ${kiln.url}`);
  let base = kiln.url;
  if (!FROM_SERVER) {
    const server = await serve(join(WEB, 'dist'), kiln.url);
    cleanups.push(() => new Promise((r) => server.close(() => r())));
    server.closeAllConnections && cleanups.push(() => server.closeAllConnections());
    base = `http://127.0.0.1:${server.address().port}`;
    log(`web/dist served at ${base}`);
  }

  const aliceToken = (await api(kiln.url, kiln.token, 'POST', '/users', { name: USER, password: PASSWORD })).token;

  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  cleanups.unshift(() => browser.close());

  const newPage = async (ctx, label) => {
    const page = await ctx.newPage();
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') {
        const text = m.text();
        // Answers the scenario asks for on purpose (a wrong password: 401;
        // an invalid field: 422) are logged by Chromium as failed loads.
        const status = /Failed to load resource: the server responded with a status of (\d+)/.exec(text)?.[1];
        if (status && expected[status] > 0) {
          expected[status]--;
          return;
        }
        problems.push(`[${label}] console ${m.type()}: ${text} (${page.url()})`);
      }
    });
    page.on('pageerror', (e) => problems.push(`[${label}] page error: ${e.message} (${page.url()})`));
    return page;
  };
  const expected = { 401: 0, 422: 0 };

  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US', deviceScaleFactor: 1 });
  await ctx.addInitScript(() => {
    if (!localStorage.getItem('kiln.lang')) localStorage.setItem('kiln.lang', 'en');
  });
  const page = await newPage(ctx, 'desktop');
  page.setDefaultTimeout(15000);

  const go = async (path) => {
    await page.goto(base + path);
  };
  const jobUrl = (name) => `/jobs/${encodeURIComponent(`${USER}~${name}`)}`;
  const waitJobPage = async (name) => {
    await until(`the page of ${name}`, () => decodeURIComponent(new URL(page.url()).pathname) === `/jobs/${USER}~${name}`, 20000);
    await visible(page, `h1:has-text("${name}")`, `job page of ${name}`);
  };
  const confirm = async () => {
    const ok = await visible(page, '[data-testid=dialog-ok]', 'confirmation dialog');
    await ok.click();
  };
  const jobState = async (name) => (await api(kiln.url, kiln.token, 'GET', `/jobs/${encodeURIComponent(`${USER}~${name}`)}`)).state;

  await step('sign in with a password', async () => {
    await go('/jobs');
    await until('the redirect to /login', () => new URL(page.url()).pathname === '/login');
    await page.fill('[data-testid=login-name]', USER);
    await page.fill('[data-testid=login-password]', 'wrong-password');
    expected[401] = 1;
    await page.click('[data-testid=login-submit]');
    await visible(page, '[data-testid=login-error]', 'wrong password message');
    await page.fill('[data-testid=login-password]', PASSWORD);
    await page.click('[data-testid=login-submit]');
    await until('the job list after sign-in', () => new URL(page.url()).pathname === '/jobs');
    await visible(page, 'h1:has-text("Jobs")', 'job list heading');
    const who = await textOf(page, '[data-testid=user-name]');
    if (who.trim() !== USER) fail(`header shows user ${JSON.stringify(who)}, expected ${USER}`);
  });

  const trainCmd = 'echo hello from kiln; for i in 1 2 3 4 5; do echo "epoch=$i loss=0.$((9-i)) accuracy=0.$((5+i))"; sleep 1; done';
  await step('submit a job through the form (with a validation error first)', async () => {
    await go('/submit');
    await visible(page, 'input[name="name"]', 'submit form');
    await page.fill('input[name="name"]', 'hello-form');
    await page.fill('textarea[name="roles[0].command"]', trainCmd);
    await page.fill('input[name="roles[0].gpus"]', '1');
    // A server-side error lands beside its field.
    await page.fill('input[name="roles[0].cpus"]', '0');
    expected[422] = 1;
    await page.click('[data-testid=submit]');
    const err = await visible(page, '.field.has-error:has(input[name="roles[0].cpus"]) [data-testid=field-error]', 'error beside the CPU field');
    const msg = (await err.textContent()) || '';
    if (!/at least 1/.test(msg)) fail(`CPU field error says ${JSON.stringify(msg)}`);
    await page.fill('input[name="roles[0].cpus"]', '1');
    await until('the CPU error to clear', async () => (await page.locator('.field.has-error').count()) === 0, 10000);
    await page.click('[data-testid=submit]');
    await confirm();
    await waitJobPage('hello-form');
  });

  await step('submit a job through Edit JSON', async () => {
    await go('/submit');
    await page.click('[data-testid=edit-json]');
    await visible(page, '[data-testid=json-editor][data-ready] .cm-content', 'JSON editor');
    const spec = { name: 'sleeper', queue: 'default', roles: [{ name: 'main', command: 'sleep infinity', cpus: 1, gpus: 2, memory: '512Mi' }] };
    await page.click('.cm-content');
    await page.keyboard.press('Control+A');
    await page.keyboard.insertText(JSON.stringify(spec, null, 2));
    await page.click('[data-testid=json-apply]');
    await until('the form to take the JSON', async () => (await page.inputValue('input[name="name"]')) === 'sleeper');
    const gpus = await page.inputValue('input[name="roles[0].gpus"]');
    if (gpus !== '2') fail(`GPU field shows ${gpus} after Edit JSON, expected 2`);
    await page.click('[data-testid=submit]');
    await confirm();
    await waitJobPage('sleeper');
  });

  await step('import an OpenPAI v1 JSON file and submit it', async () => {
    await go('/submit');
    await visible(page, 'input[name="name"]', 'submit form');
    await page.setInputFiles('[data-testid=import-file]', join(REPO, 'examples/openpai/pytorch-ddp.json'));
    await visible(page, '[data-testid=submit-notice]', 'import notice');
    await until('the imported job name', async () => (await page.inputValue('input[name="name"]')) === 'pytorch-ddp');
    if ((await page.inputValue('input[name="roles[1].name"]')) !== 'worker') fail('imported form lacks the worker role');
    if ((await page.inputValue('input[name="roles[1].replicas"]')) !== '2') fail('imported worker role is not 2 instances');
    // Runnable here: no train.py, and no GPUs needed.
    for (const i of [0, 1]) {
      await page.fill(`textarea[name="roles[${i}].command"]`, 'echo "$KILN_TASK_ID rank $RANK of $WORLD_SIZE, master $MASTER_ADDR:$MASTER_PORT"');
      await page.fill(`input[name="roles[${i}].gpus"]`, '0');
      await page.fill(`input[name="roles[${i}].cpus"]`, '1');
    }
    await page.click('[data-testid=submit]');
    await confirm();
    await waitJobPage('pytorch-ddp');
    await until('pytorch-ddp to succeed', async () => (await jobState('pytorch-ddp')) === 'SUCCEEDED', 30000, 300);
  });

  await step('watch a job reach SUCCEEDED in the list and on its page', async () => {
    await go('/jobs');
    await visible(page, '[data-testid=job-row-hello-form]', 'hello-form in the list');
    await until('hello-form SUCCEEDED in the list', async () => (await page.getAttribute('[data-testid=job-row-hello-form]', 'data-state')) === 'SUCCEEDED', 30000, 250);
    const badge = await textOf(page, '[data-testid=job-row-hello-form] .badge');
    if (!/Succeeded/.test(badge)) fail(`list badge says ${JSON.stringify(badge)}`);
    await page.click('[data-testid=job-row-hello-form] a.job-link');
    await waitJobPage('hello-form');
    await visible(page, '.job-head .badge.state-succeeded', 'SUCCEEDED badge on the job page');
    await visible(page, '[data-testid=tasks-table] td:has-text("main-0")', 'task table');
    await visible(page, '[data-testid=events] .ev-finished', 'finished event');
  });

  await step('see the logs and the loss chart', async () => {
    await page.click('[data-testid=tab-logs]');
    await until('the log text', async () => {
      const text = await textOf(page, '[data-testid=log-text]');
      return text.includes('hello from kiln') && text.includes('epoch=5 loss=0.4');
    });
    await page.click('[data-testid=tab-metrics]');
    await visible(page, '[data-testid=chart-loss] canvas', 'loss chart');
    const legend = await textOf(page, '[data-testid=chart-loss] .u-legend');
    if (!legend.includes('main-0')) fail(`loss chart legend lacks main-0: ${legend}`);
    await visible(page, '[data-testid=chart-accuracy] canvas', 'accuracy chart');
    await visible(page, '[data-testid=chart-memory] canvas', 'memory chart');
  });

  await step('stop a running job', async () => {
    await until('sleeper to run', async () => (await jobState('sleeper')) === 'RUNNING', 20000, 200);
    await go('/jobs');
    await until('sleeper RUNNING in the list', async () => (await page.getAttribute('[data-testid=job-row-sleeper]', 'data-state')) === 'RUNNING', 15000, 200);
    await page.click('[data-testid=job-row-sleeper] [data-testid=row-stop]');
    await confirm();
    await until('sleeper STOPPED in the list', async () => (await page.getAttribute('[data-testid=job-row-sleeper]', 'data-state')) === 'STOPPED', 20000, 250);
  });

  await step('clone the stopped job and submit the copy', async () => {
    await page.click('[data-testid=job-row-sleeper] a.job-link');
    await waitJobPage('sleeper');
    await page.click('[data-testid=clone]');
    await until('the prefilled submit page', () => new URL(page.url()).pathname === '/submit' && new URL(page.url()).searchParams.get('clone') === `${USER}~sleeper`);
    await until('the cloned name', async () => (await page.inputValue('input[name="name"]', { timeout: 1000 })) === 'sleeper-2');
    if ((await page.inputValue('textarea[name="roles[0].command"]')) !== 'sleep infinity') fail('clone lost the command');
    if ((await page.inputValue('input[name="roles[0].gpus"]')) !== '2') fail('clone lost the GPUs');
    await page.click('[data-testid=submit]');
    await confirm();
    await waitJobPage('sleeper-2');
    await until('sleeper-2 to run', async () => (await jobState('sleeper-2')) === 'RUNNING', 20000, 200);
  });

  await step('upload a file on the Files page', async () => {
    await go('/files');
    await visible(page, '[data-testid=drop-zone]', 'files page');
    await page.click('[data-testid=mkdir]');
    await page.fill('.modal input', 'mnist');
    await confirm();
    await visible(page, '[data-testid=file-mnist]', 'the new folder');
    await page.setInputFiles('[data-testid=upload-input]', {
      name: 'train.py',
      mimeType: 'text/x-python',
      buffer: Buffer.from('print("hello from kiln")\n'.repeat(2000)),
    });
    await visible(page, '[data-testid=file-train\\.py]', 'the uploaded file in the listing');
    const listing = await api(kiln.url, kiln.token, 'GET', `/files/?user=${USER}`);
    if (!listing.entries.some((e) => e.name === 'train.py' && e.size === 50000)) fail(`upload did not land: ${JSON.stringify(listing)}`);
    await until('usage to count the file', async () => /KiB|MiB/.test(await textOf(page, '[data-testid=usage]')));
  });

  await step('switch the language to zh-CN and ko', async () => {
    await go('/jobs');
    await visible(page, 'h1:has-text("Jobs")', 'job list');
    await page.selectOption('[data-testid=lang]', 'zh-CN');
    await visible(page, 'h1:has-text("作业管理")', 'Chinese heading');
    await visible(page, '.nav-link:has-text("提交作业")', 'Chinese navigation');
    await visible(page, '[data-testid=job-row-hello-form] .badge:has-text("已完成")', 'Chinese state badge');
    await page.selectOption('[data-testid=lang]', 'ko');
    await visible(page, 'h1:has-text("작업")', 'Korean heading');
    await visible(page, '.nav-link:has-text("클러스터")', 'Korean navigation');
    await visible(page, '[data-testid=job-row-sleeper] .badge:has-text("중지됨")', 'Korean state badge');
    await page.reload();
    await visible(page, '.nav-link:has-text("클러스터")', 'the language kept after a reload');
    await page.selectOption('[data-testid=lang]', 'en');
    await visible(page, 'h1:has-text("Jobs")', 'English again');
  });

  if (SHOTS) {
    await step('more states for the screenshots (a failed job, a waiting one)', async () => {
      const submit = (spec) =>
        fetch(`${kiln.url}/api/v1/jobs`, {
          method: 'POST',
          headers: { authorization: `Bearer ${aliceToken}`, 'content-type': 'application/json' },
          body: JSON.stringify(spec),
        }).then(async (r) => r.ok || fail(`submit ${spec.name}: ${r.status} ${await r.text()}`));
      await submit({ name: 'bad-config', roles: [{ name: 'main', command: 'echo "loading config.yaml"; echo "error: config.yaml not found" >&2; exit 3', cpus: 1 }] });
      await submit({ name: 'llm-8gpu', roles: [{ name: 'main', command: 'python train.py', cpus: 4, gpus: 8, memory: '8Gi' }] });
      await until('bad-config to fail', async () => (await jobState('bad-config')) === 'FAILED', 20000, 200);
    });
    await step('screenshots', async () => {
      for (const lang of LANGS) {
        const dir = join(SHOT_DIR, lang);
        mkdirSync(dir, { recursive: true });
        await page.evaluate((l) => localStorage.setItem('kiln.lang', l), lang);
        const shot = async (name, p = page) => {
          await p.evaluate(() => document.fonts.ready);
          await p.mouse.move(0, 0);
          await p.screenshot({ path: join(dir, `${name}.png`), animations: 'disabled', caret: 'hide' });
        };

        const anon = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: lang });
        await anon.addInitScript((l) => localStorage.setItem('kiln.lang', l), lang);
        const lp = await newPage(anon, `login-${lang}`);
        await lp.goto(`${base}/login`);
        await visible(lp, '[data-testid=login-name]', 'login page');
        await shot('login', lp);
        await anon.close();

        await go('/jobs');
        await visible(page, '[data-testid=job-row-hello-form]', 'job list');
        await shot('jobs');

        await go(jobUrl('hello-form'));
        await visible(page, '[data-testid=tasks-table]', 'job page');
        await shot('job');
        await go(`${jobUrl('hello-form')}?tab=logs`);
        await until('log text', async () => (await textOf(page, '[data-testid=log-text]')).includes('epoch=5'));
        await shot('job-logs');
        await go(`${jobUrl('hello-form')}?tab=metrics`);
        await visible(page, '[data-testid=chart-loss] canvas', 'charts');
        await visible(page, '[data-testid=chart-memory] canvas', 'charts');
        await shot('job-metrics');
        await go(`${jobUrl('hello-form')}?tab=spec`);
        await visible(page, '[data-testid=json-editor][data-ready]', 'spec');
        await shot('job-json');

        await page.evaluate(() => localStorage.setItem('kiln.proMode', '0'));
        await go('/submit');
        await visible(page, 'input[name="name"]', 'submit form');
        await shot('submit');
        await page.click('[data-testid=pro-mode]', { force: true });
        await visible(page, '[data-testid=pro-section]', 'professional settings');
        await page.click('[data-testid=add-mount]');
        await visible(page, '[data-testid=picker-choose]', 'folder picker');
        await page.click('.picker-item:has-text("mnist")');
        await page.click('[data-testid=picker-choose]');
        await page.click('[data-testid=add-env-jobEnvs]');
        await page.fill('input[name="jobEnvs[0].name"]', 'NCCL_DEBUG');
        await page.fill('input[name="jobEnvs[0].value"]', 'INFO');
        await page.fill('input[name="maxDuration"]', '2h');
        await page.evaluate(() => {
          const el = document.querySelector('[data-testid=role-0]');
          window.scrollTo(0, el.getBoundingClientRect().top + window.scrollY - 72);
        });
        await shot('submit-pro');
        await page.click('[data-testid=edit-json]');
        await visible(page, '[data-testid=json-editor][data-ready] .cm-content', 'JSON editor');
        await shot('edit-json');
        await page.keyboard.press('Escape');
        await page.evaluate(() => localStorage.setItem('kiln.proMode', '0'));

        await go('/files');
        await visible(page, '[data-testid=file-train\\.py]', 'files');
        await shot('files');

        await go('/cluster');
        await visible(page, '[data-testid=gpus-table]', 'cluster');
        await shot('cluster');

        const phone = await browser.newContext({ viewport: { width: 375, height: 812 }, locale: lang, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
        const token = await page.evaluate(() => localStorage.getItem('kiln.token'));
        await phone.addInitScript(([l, tok, user]) => {
          localStorage.setItem('kiln.lang', l);
          localStorage.setItem('kiln.token', tok);
          localStorage.setItem('kiln.user', user);
        }, [lang, token, USER]);
        const pp = await newPage(phone, `phone-${lang}`);
        await pp.goto(`${base}/jobs`);
        await visible(pp, '[data-testid=job-row-hello-form]', 'phone job list');
        await shot('jobs-mobile', pp);
        await pp.goto(`${base}${jobUrl('hello-form')}`);
        await visible(pp, '[data-testid=tasks-table]', 'phone job page');
        await shot('job-mobile', pp);
        await phone.close();
        log(`  screenshots for ${lang} in docs/screenshots/${lang}/`);
      }
      await page.evaluate(() => localStorage.setItem('kiln.lang', 'en'));
    });
  }

  await step('no browser console errors', async () => {
    if (problems.length) fail(`the browser reported ${problems.length} problem(s):\n  ${problems.join('\n  ')}`);
  });
}

async function cleanup() {
  for (const c of cleanups.splice(0)) {
    try {
      await c();
    } catch {
      /* best effort */
    }
  }
}

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, async () => {
    await cleanup();
    process.exit(130);
  });
}
process.on('uncaughtException', async (e) => {
  console.error(`\n✗ e2e crashed: ${e.stack || e}`);
  await cleanup();
  process.exit(1);
});

try {
  await main();
} catch (e) {
  failed = true;
  console.error(`\n✗ e2e failed: ${e instanceof Failure ? e.message : e.stack || e}`);
  if (problems.length) console.error(`browser problems so far:\n  ${problems.join('\n  ')}`);
} finally {
  await cleanup();
}
const secs = ((Date.now() - T0) / 1000).toFixed(1);
if (failed) {
  console.error(`e2e: FAILED after ${secs}s`);
  process.exit(1);
}
console.log(`e2e: all steps passed in ${secs}s`);
