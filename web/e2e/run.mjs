// Browser tests of the web UI against a real kiln server, with screenshots
// of every page (into target/screenshots/; `bash scripts/screenshots`
// refreshes docs/screenshots/). `npm run e2e` from web/.
//
// Env: KILN_BIN (default ../target/debug/kiln), CHROMIUM (/usr/bin/chromium),
// KILN_UI_FROM_SERVER=1 to use the UI that kiln serves itself instead of
// web/dist behind a small Node server, SCREENSHOTS=0 to skip screenshots,
// KILN_SCREENSHOTS_DIR for where they go (default target/screenshots),
// E2E_SKIP_BUILD=1 to use web/dist as it is, KILN_TENSORBOARD for the
// TensorBoard program (default: the one beside $KILN_TEST_PYTHON, which
// scripts/test sets, else ~/.cache/kiln/venv-torch/bin/tensorboard; the
// TensorBoard step is skipped, with a notice, when there is none).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { serve } from './serve.mjs';

const WEB = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const REPO = resolve(WEB, '..');
const KILN = resolve(WEB, process.env.KILN_BIN || '../target/debug/kiln');
const FROM_SERVER = process.env.KILN_UI_FROM_SERVER === '1';
const SHOTS = process.env.SCREENSHOTS !== '0';
// A test run keeps its screenshots out of the tree (target/screenshots);
// scripts/screenshots sets KILN_SCREENSHOTS_DIR=docs/screenshots to refresh
// the committed ones.
const SHOT_DIR = resolve(REPO, process.env.KILN_SCREENSHOTS_DIR || 'target/screenshots');
const LANGS = ['en', 'zh-CN', 'ko'];
const USER = 'alice';
const PASSWORD = 'kiln-e2e-password';
const T0 = Date.now();
const TENSORBOARD = [
  process.env.KILN_TENSORBOARD,
  process.env.KILN_TEST_PYTHON && join(dirname(process.env.KILN_TEST_PYTHON), 'tensorboard'),
  join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'kiln/venv-torch/bin/tensorboard'),
].find((p) => p && existsSync(p));

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
    ['server', '--listen', '127.0.0.1:0', '--data', data, '--containers', 'none', '--fake-gpus', '4', '--cpus', '8', '--memory', '16Gi', '--stop-grace', '1', '--sample-every', '1',
      ...(TENSORBOARD ? ['--tensorboard', TENSORBOARD] : [])],
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
  const raw = body instanceof Uint8Array;
  const res = await fetch(`${base}/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': raw ? 'application/octet-stream' : 'application/json' } : {}) },
    body: body ? (raw ? body : JSON.stringify(body)) : undefined,
  });
  const text = await res.text();
  if (!res.ok) fail(`${method} ${path}: ${res.status} ${text}`);
  return text && (res.headers.get('content-type') || '').includes('json') ? JSON.parse(text) : text;
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
  const expected = { 401: 0, 409: 0, 422: 0 };

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
  const asAlice = (method, path, body) => api(kiln.url, aliceToken, method, path, body);
  const rowNames = () =>
    page.locator('[data-testid=jobs-table] tbody tr').evaluateAll((trs) => trs.map((tr) => (tr.getAttribute('data-testid') || '').replace(/^job-row-/, '')));
  const noModal = (what) => until(what, async () => (await page.locator('.modal').count()) === 0, 5000);
  const signIn = async () => {
    await page.fill('[data-testid=login-name]', USER);
    await page.fill('[data-testid=login-password]', PASSWORD);
    await page.click('[data-testid=login-submit]');
    await until('the job list after sign-in', () => new URL(page.url()).pathname === '/jobs');
  };
  // The tick numbers in the log view, checked to be 1, 2, 3 … with none
  // shown twice and none left out.
  const ticks = async () => {
    const text = await textOf(page, '[data-testid=log-text]');
    const xs = [...text.matchAll(/^tick (\d+) /gm)].map((m) => Number(m[1]));
    for (let i = 0; i < xs.length; i++) {
      if (xs[i] !== i + 1) fail(`the log shows tick ${xs[i]} where tick ${i + 1} belongs (a line repeated or lost): ${xs.slice(Math.max(0, i - 3), i + 3).join(', ')}`);
    }
    return xs.length;
  };
  const serverTicks = async () => {
    const text = await asAlice('GET', `/jobs/${encodeURIComponent(`${USER}~ticker`)}/tasks/main-0/logs?tail=1`);
    return Number(/tick (\d+)/.exec(text)?.[1] || 0);
  };
  const setHidden = (hidden) =>
    page.evaluate((h) => {
      window.__kilnHidden = h;
      if (!window.__kilnVisibilityPatched) {
        window.__kilnVisibilityPatched = true;
        Object.defineProperty(document, 'hidden', { configurable: true, get: () => !!window.__kilnHidden });
        Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => (window.__kilnHidden ? 'hidden' : 'visible') });
      }
      document.dispatchEvent(new Event('visibilitychange'));
    }, hidden);

  // A job that prints a line, with a step and a loss, every half second: for
  // the live log, the live chart, extending and TensorBoard.
  const TICKS = 'for i in $(seq 1 2400); do printf "tick %d step=%d loss=0.%03d\\n" $i $i $((999 - i % 1000)); sleep 0.5; done';

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
  await asAlice('POST', '/jobs', { name: 'ticker', command: TICKS, cpus: 1, memory: '256Mi', maxDuration: '30m' });

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

  await step('professional fields (priority, retries, restarts, a role\'s GPU type) through Edit JSON, submit and Import', async () => {
    await page.evaluate(() => localStorage.setItem('kiln.proMode', '0'));
    await go('/submit');
    await visible(page, 'input[name="name"]', 'submit form');
    if (await page.locator('input[name="priority"], select[name="roles[0].restartPolicy"]').count()) fail('professional fields show in basic mode');
    await page.click('[data-testid=pro-mode]', { force: true });
    await visible(page, 'input[name="priority"]', 'the priority field in professional mode');
    await page.fill('input[name="name"]', 'pro-fields');
    await page.fill('textarea[name="roles[0].command"]', 'echo "attempt $KILN_ATTEMPT"');
    await page.fill('input[name="priority"]', '5');
    await page.fill('input[name="retryCount"]', '2');
    await page.fill('input[name="maxRestarts"]', '3');
    await page.fill('input[name="roles[0].gpus"]', '1');
    await page.selectOption('select[name="roles[0].gpuType"]', 'Fake GPU');
    await page.selectOption('select[name="roles[0].restartPolicy"]', 'OnFailure');

    // Edit JSON shows them, and what is changed there comes back.
    await page.click('[data-testid=edit-json]');
    await visible(page, '[data-testid=json-editor][data-ready] .cm-content', 'JSON editor');
    const shown = JSON.parse(await page.locator('.cm-content').innerText());
    const want = { priority: 5, retryCount: 2, maxRestarts: 3 };
    for (const [k, v] of Object.entries(want)) if (shown[k] !== v) fail(`Edit JSON shows ${k}=${JSON.stringify(shown[k])}, expected ${v}`);
    if (shown.roles[0].gpuType !== 'Fake GPU' || shown.roles[0].restartPolicy !== 'OnFailure') fail(`Edit JSON lacks the role's fields: ${JSON.stringify(shown.roles[0])}`);
    shown.priority = 7;
    shown.roles[0].restartPolicy = 'ExitCode';
    await page.click('.cm-content');
    await page.keyboard.press('Control+A');
    await page.keyboard.insertText(JSON.stringify(shown, null, 2));
    await page.click('[data-testid=json-apply]');
    await until('the form to take the JSON', async () => (await page.inputValue('input[name="priority"]')) === '7');
    if ((await page.inputValue('select[name="roles[0].restartPolicy"]')) !== 'ExitCode') fail('the restart policy did not come back from Edit JSON');

    // The confirmation lists the priority; Escape closes it unsent.
    await page.click('[data-testid=submit]');
    await visible(page, '.modal .kv th:has-text("Priority")', 'the priority in the confirmation');
    await page.keyboard.press('Escape');
    await noModal('Escape to close the confirmation');
    if (new URL(page.url()).pathname !== '/submit') fail('Escape submitted the job');
    await page.click('[data-testid=submit]');
    await confirm();
    await waitJobPage('pro-fields');
    const spec = await asAlice('GET', `/jobs/${encodeURIComponent(`${USER}~pro-fields`)}/spec`);
    const role = spec.roles[0];
    if (spec.priority !== 7 || spec.retryCount !== 2 || spec.maxRestarts !== 3 || role.gpuType !== 'Fake GPU' || role.restartPolicy !== 'ExitCode')
      fail(`the server got ${JSON.stringify(spec)}`);

    // The same fields from an imported kiln YAML file.
    await go('/submit');
    await visible(page, 'input[name="name"]', 'submit form');
    const yaml = [
      'name: imported-pro',
      'priority: -3',
      'retryCount: 1',
      'maxRestarts: 4',
      'roles:',
      '  - {name: master, command: python train.py, gpus: 1, gpuType: Fake GPU, restartPolicy: OnFailure}',
      '  - {name: worker, replicas: 2, command: python train.py, restartPolicy: ExitCode}',
      '',
    ].join('\n');
    await page.setInputFiles('[data-testid=import-file]', { name: 'pro.yaml', mimeType: 'application/yaml', buffer: Buffer.from(yaml) });
    await until('the imported job name', async () => (await page.inputValue('input[name="name"]')) === 'imported-pro');
    await visible(page, '[data-testid=pro-section]', 'professional mode, on by itself for an import that needs it');
    const got = {
      priority: await page.inputValue('input[name="priority"]'),
      retryCount: await page.inputValue('input[name="retryCount"]'),
      maxRestarts: await page.inputValue('input[name="maxRestarts"]'),
      gpuType: await page.inputValue('select[name="roles[0].gpuType"]'),
      master: await page.inputValue('select[name="roles[0].restartPolicy"]'),
      worker: await page.inputValue('select[name="roles[1].restartPolicy"]'),
    };
    const expect = { priority: '-3', retryCount: '1', maxRestarts: '4', gpuType: 'Fake GPU', master: 'OnFailure', worker: 'ExitCode' };
    if (JSON.stringify(got) !== JSON.stringify(expect)) fail(`imported form shows ${JSON.stringify(got)}, expected ${JSON.stringify(expect)}`);
    await page.evaluate(() => localStorage.setItem('kiln.proMode', '0'));
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

  // A chart that holds data points and has drawn them: pixels of the first
  // series' colour on its canvas.
  const drawnChart = async (testid, minPoints) => {
    const sel = `[data-testid=${testid}]`;
    await visible(page, `${sel} canvas`, `chart ${testid}`);
    await until(`${minPoints}+ points in ${testid}`, async () => Number(await page.getAttribute(sel, 'data-points')) >= minPoints, 15000);
    await until(`${testid} drawn`, () =>
      page.evaluate((s) => {
        const c = document.querySelector(`${s} canvas`);
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i] - 0x3b) < 30 && Math.abs(d[i + 1] - 0x6f) < 30 && Math.abs(d[i + 2] - 0xe0) < 30 && d[i + 3] > 200) n++;
        return n > 40;
      }, sel),
    );
  };

  await step('see the logs and the loss chart', async () => {
    await page.click('[data-testid=tab-logs]');
    await until('the log text', async () => {
      const text = await textOf(page, '[data-testid=log-text]');
      return text.includes('hello from kiln') && text.includes('epoch=5 loss=0.4');
    });
    await page.click('[data-testid=tab-metrics]');
    await drawnChart('chart-loss', 5);
    const legend = await textOf(page, '[data-testid=chart-loss] .u-legend');
    if (!legend.includes('main-0')) fail(`loss chart legend lacks main-0: ${legend}`);
    await drawnChart('chart-accuracy', 5);
    await visible(page, '[data-testid=chart-memory] canvas', 'memory chart');
  });

  await step('follow a running job\'s log: new lines arrive, a dropped stream reconnects, a hidden tab pauses', async () => {
    await until('ticker to run', async () => (await jobState('ticker')) === 'RUNNING', 20000, 200);
    // The first followed stream ends at once, as a proxy or a restart would
    // end it, while the task runs on: the page must connect again.
    let dropped = 0;
    const route = /\/api\/v1\/jobs\/[^/]*ticker\/tasks\/main-0\/logs\?.*follow=true/;
    const drop = async (r) => {
      if (dropped > 0) return r.continue();
      dropped++;
      const url = new URL(r.request().url());
      url.searchParams.delete('follow');
      await r.fulfill({ response: await r.fetch({ url: url.toString() }) });
    };
    await page.route(route, drop);
    await go(`${jobUrl('ticker')}?tab=logs`);
    await until('the log text', async () => (await ticks()) >= 2);
    await until('the dropped stream', () => dropped === 1);
    await until('the log to follow again', async () => (await page.locator('[data-testid=log-live]').count()) > 0, 15000);
    await page.unroute(route, drop);
    const before = await ticks();
    await until('new lines while following', async () => (await ticks()) >= before + 3, 10000);

    // Hidden: the stream closes, and nothing new shows while the task writes on.
    await setHidden(true);
    await visible(page, '[data-testid=log-paused]', 'the paused notice');
    const atPause = await ticks();
    await until('the task to write 3 more lines', async () => (await serverTicks()) >= atPause + 3, 10000, 200);
    if ((await ticks()) > atPause + 1) fail('the log kept streaming in a hidden tab');
    // Shown again: it goes on from where it stopped.
    await setHidden(false);
    const target = await serverTicks();
    await until(`tick ${target} after the tab shows again`, async () => (await ticks()) >= target, 10000);
    await visible(page, '[data-testid=log-live]', 'live again');

    // The full log goes on by byte offset instead: the same, once more.
    await page.click('[data-testid=full-log]');
    await until('the full log, live', async () => (await ticks()) >= target && (await page.locator('[data-testid=log-live]').count()) > 0, 10000);
    await setHidden(true);
    await visible(page, '[data-testid=log-paused]', 'the paused notice');
    const atPause2 = await ticks();
    await until('the task to write 2 more lines', async () => (await serverTicks()) >= atPause2 + 2, 10000, 200);
    await setHidden(false);
    const target2 = await serverTicks();
    await until(`tick ${target2} in the full log`, async () => (await ticks()) >= target2, 10000);
  });

  await step('a live chart with data points keeps the zoom as data arrives', async () => {
    await page.click('[data-testid=tab-metrics]');
    const sel = '[data-testid=chart-loss]';
    await drawnChart('chart-loss', 5);
    await drawnChart('chart-cpu', 2);
    const box = await page.locator(`${sel} .u-over`).boundingBox();
    const y = box.y + box.height / 2;
    await page.mouse.move(box.x + box.width * 0.2, y);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width * 0.5, y, { steps: 5 });
    await page.mouse.up();
    await until('the chart to zoom', async () => (await page.getAttribute(sel, 'data-zoomed')) === 'true', 5000);
    const range = await page.getAttribute(sel, 'data-x');
    const points = Number(await page.getAttribute(sel, 'data-points'));
    await until('new points while zoomed', async () => Number(await page.getAttribute(sel, 'data-points')) > points, 15000, 200);
    const after = await page.getAttribute(sel, 'data-x');
    if (after !== range || (await page.getAttribute(sel, 'data-zoomed')) !== 'true') fail(`new data reset the zoom: x was ${range}, now ${after}`);
    // A double click shows everything again, and new data widens it.
    await page.mouse.dblclick(box.x + box.width / 2, y);
    await until('the zoom to reset', async () => (await page.getAttribute(sel, 'data-zoomed')) === 'false', 5000);
    const all = await page.getAttribute(sel, 'data-x');
    await until('the x axis to grow with new data', async () => (await page.getAttribute(sel, 'data-x')) !== all, 15000, 200);
  });

  await step('extend a running job\'s duration (the dialog closes on Escape and keeps the focus)', async () => {
    await page.click('[data-testid=tab-overview]');
    const before = (await asAlice('GET', `/jobs/${encodeURIComponent(`${USER}~ticker`)}`)).deadlineAtMs;
    if (!before) fail('ticker has no deadline');
    await page.click('[data-testid=extend]');
    await visible(page, '.modal input', 'the extend dialog');
    await page.keyboard.press('Escape');
    await noModal('Escape to close the extend dialog');
    await page.click('[data-testid=extend]');
    const input = await visible(page, '.modal input', 'the extend dialog');
    for (let i = 0; i < 6; i++) {
      await page.keyboard.press(i % 2 ? 'Shift+Tab' : 'Tab');
      await page.keyboard.press('Tab');
      if (!(await page.evaluate(() => !!document.activeElement?.closest('.modal')))) fail('Tab moved the focus out of the dialog');
    }
    await input.fill('1h');
    await confirm();
    await until('the deadline to move by an hour', async () => (await asAlice('GET', `/jobs/${encodeURIComponent(`${USER}~ticker`)}`)).deadlineAtMs === before + 3600_000, 10000, 200);
    await visible(page, '[data-testid=events] .ev-extended', 'the extended event');
  });

  await step('open TensorBoard in a new tab, on its own port', async () => {
    if (!TENSORBOARD) {
      log('  NOTICE: no TensorBoard found (KILN_TENSORBOARD, KILN_TEST_PYTHON or ~/.cache/kiln/venv-torch); the TensorBoard step is skipped');
      return;
    }
    // TensorBoard's own page is not kiln's: its console is not checked.
    const [tab] = await Promise.all([ctx.waitForEvent('page', { timeout: 30000 }), page.click('[data-testid=tensorboard]')]);
    try {
      await until('TensorBoard\'s page', async () => /TensorBoard/.test(await tab.title()), 60000, 250);
      const origin = new URL(tab.url()).origin;
      if (origin === new URL(base).origin) fail(`TensorBoard opened on the UI's own origin ${origin}`);
      if (!new URL(tab.url()).pathname.startsWith(`/jobs/${USER}~ticker/tensorboard/`)) fail(`TensorBoard at ${tab.url()}`);
      await tab.locator('tb-webapp, tf-tensorboard').first().waitFor({ state: 'attached', timeout: 30000 });
      if (await tab.evaluate(() => window.opener !== null)) fail('the TensorBoard tab can reach the UI through window.opener');
    } finally {
      await tab.close();
    }
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

  await step('a folder and a file named with spaces, Chinese and Korean: drop, list, download, delete', async () => {
    const folder = '我的 数据 폴더';
    const name = '训练 日志 결과 1.txt';
    const content = 'loss 0.25 损失 손실\n'.repeat(200);
    await go('/files');
    await visible(page, '[data-testid=drop-zone]', 'files page');
    await page.click('[data-testid=mkdir]');
    await page.fill('.modal input', folder);
    await confirm();
    await page.click(`[data-testid="file-${folder}"] a.file-name`);
    await until('the folder\'s page', () => decodeURIComponent(new URL(page.url()).pathname) === `/files/${folder}`);
    await visible(page, `.crumbs.path span:has-text("${folder}")`, 'the folder in the path');
    // Dragged in from the desktop: a drop with the file in its DataTransfer.
    const dt = await page.evaluateHandle(([n, c]) => {
      const d = new DataTransfer();
      d.items.add(new File([c], n, { type: 'text/plain' }));
      return d;
    }, [name, content]);
    const zone = page.locator('[data-testid=drop-zone]');
    await zone.dispatchEvent('dragenter', { dataTransfer: dt });
    await visible(page, '.drop-overlay', 'the drop overlay while dragging');
    await zone.dispatchEvent('dragover', { dataTransfer: dt });
    await zone.dispatchEvent('drop', { dataTransfer: dt });
    const row = `[data-testid="file-${name}"]`;
    await visible(page, row, 'the dropped file in the listing');
    if (await page.locator('.drop-overlay').count()) fail('the drop overlay stayed after the drop');
    const listing = await asAlice('GET', `/files/${encodeURIComponent(folder)}`);
    if (!listing.entries.some((e) => e.name === name && e.size === Buffer.byteLength(content))) fail(`the drop did not land: ${JSON.stringify(listing)}`);

    const [dl] = await Promise.all([page.waitForEvent('download'), page.click(`${row} [data-testid=file-get]`)]);
    if (dl.suggestedFilename() !== name) fail(`downloaded as ${JSON.stringify(dl.suggestedFilename())}, expected ${JSON.stringify(name)}`);
    if (readFileSync(await dl.path(), 'utf8') !== content) fail('the downloaded file differs from the upload');

    await page.click(`${row} [data-testid=file-rm]`);
    await confirm();
    await until('the file to go', async () => (await page.locator(row).count()) === 0);
    const after = await asAlice('GET', `/files/${encodeURIComponent(folder)}`);
    if (after.entries.length) fail(`the file is still there: ${JSON.stringify(after)}`);
  });

  await step('opening a big file\'s path reads its size, not its bytes', async () => {
    const size = 32 << 20;
    await asAlice('PUT', '/files/big.bin', new Uint8Array(size));
    // How much of the file each request for it read: null when cut off.
    const reads = [];
    const mine = (req) => req.url().includes('/api/v1/files/big.bin');
    const onDone = async (req) => mine(req) && reads.push((await req.sizes()).responseBodySize);
    const onFail = (req) => mine(req) && reads.push(null);
    page.on('requestfinished', onDone);
    page.on('requestfailed', onFail);
    try {
      await go('/files/big.bin');
      await visible(page, '[data-testid=file-download]', 'the file\'s download button');
      await visible(page, '.empty-hint:has-text("32 MiB")', 'the file\'s size');
      await until('the request for the file to end', () => reads.length > 0, 10000);
    } finally {
      page.off('requestfinished', onDone);
      page.off('requestfailed', onFail);
    }
    if (reads.some((n) => n != null && n >= size / 2)) fail(`opening the file's path downloaded it: ${reads.join(', ')} bytes`);
    log(`  the file's request read ${reads.map((n) => (n == null ? 'nothing more (cancelled)' : `${n} bytes`)).join(', ')}`);
    await asAlice('DELETE', '/files/big.bin');
  });

  await step('page through more than 20 jobs and search them by name', async () => {
    const bulk = Array.from({ length: 22 }, (_, i) => `bulk-${String(i + 1).padStart(2, '0')}`);
    await Promise.all(bulk.map((name) => asAlice('POST', '/jobs', { name, command: 'true', cpus: 1, memory: '128Mi' })));
    const total = (await asAlice('GET', '/jobs?limit=500')).items.length;
    await go('/jobs');
    await until('a full first page', async () => (await rowNames()).length === 20);
    const first = await rowNames();
    await page.click('[data-testid=older]');
    await until(`page 2 with the other ${total - 20} jobs`, async () => {
      const names = await rowNames();
      return names.length === total - 20 && !names.some((n) => first.includes(n));
    });
    if (!/2/.test(await textOf(page, '[data-testid=page-no]'))) fail(`the pager says ${await textOf(page, '[data-testid=page-no]')}`);
    await page.click('[data-testid=newer]');
    await until('page 1 again', async () => (await rowNames()).join() === first.join());

    // Any case, over all pages.
    await page.fill('[data-testid=job-search]', 'BULK-2');
    await until('the jobs matching BULK-2', async () => (await rowNames()).sort().join() === 'bulk-20,bulk-21,bulk-22');
    await page.fill('[data-testid=job-search]', '');
    await until('the whole list again', async () => (await rowNames()).length === 20);
  });

  await step('delete a finished job, after its confirmation', async () => {
    await until('bulk-01 to finish', async () => (await jobState('bulk-01')) === 'SUCCEEDED', 30000, 250);
    await go(jobUrl('bulk-01'));
    await waitJobPage('bulk-01');
    await page.click('[data-testid=delete]');
    await visible(page, '.modal:has-text("bulk-01")', 'the delete confirmation');
    await page.click('.modal button:has-text("Cancel")');
    await noModal('the dialog to close on Cancel');
    if ((await jobState('bulk-01')) !== 'SUCCEEDED') fail('Cancel deleted the job');
    await page.click('[data-testid=delete]');
    await confirm();
    await until('the job list', () => new URL(page.url()).pathname === '/jobs');
    const res = await fetch(`${kiln.url}/api/v1/jobs/${encodeURIComponent(`${USER}~bulk-01`)}`, { headers: { authorization: `Bearer ${aliceToken}` } });
    if (res.status !== 404) fail(`the deleted job answers ${res.status}`);
    await visible(page, '[data-testid=jobs-table]', 'job list');
    if (await page.locator('[data-testid=job-row-bulk-01]').count()) fail('the deleted job is still listed');
    // The rest go too (through the API), so the screenshots show the others.
    const rest = Array.from({ length: 21 }, (_, i) => `${USER}~bulk-${String(i + 2).padStart(2, '0')}`);
    await until('the bulk jobs to finish', async () => {
      const items = (await asAlice('GET', '/jobs?name=bulk-&limit=100')).items;
      return items.every((j) => ['SUCCEEDED', 'FAILED', 'STOPPED'].includes(j.state));
    }, 60000, 300);
    await Promise.all(rest.map((id) => asAlice('DELETE', `/jobs/${encodeURIComponent(id)}`)));
  });

  await step('the cluster page says, controller by controller, which limits hold', async () => {
    await go('/cluster');
    await visible(page, '[data-testid=controllers]', 'the limits of the node');
    const rows = await page.locator('[data-testid=controllers] li').allTextContents();
    for (const c of ['memory', 'cpu', 'pids']) {
      if (!rows.some((r) => r.startsWith(`${c}: `))) fail(`no ${c} line among ${JSON.stringify(rows)}`);
    }
    // What the page says is what the server says.
    const node = (await asAlice('GET', '/nodes')).nodes[0];
    for (const c of node.controllers) {
      const row = rows.find((r) => r.startsWith(`${c.controller}: `));
      if (row.includes('not enforced') === c.enforced) fail(`${c.controller}: the server says enforced=${c.enforced}, the page ${row}`);
    }
  });

  // The queues the submit form offers (Preact sets an option's value as a property, not an attribute).
  const queueOptions = (p) => p.locator('select[name="queue"] option').evaluateAll((os) => os.map((o) => o.value));

  await step('queues: the admin adds one on the cluster page, alice picks it in the form; a queue with a waiting job is not removed', async () => {
    const admin = await api(kiln.url, kiln.token, 'GET', '/me');
    const actx = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US' });
    await actx.addInitScript(([tok, name]) => {
      localStorage.setItem('kiln.lang', 'en');
      localStorage.setItem('kiln.token', tok);
      localStorage.setItem('kiln.user', name);
    }, [kiln.token, admin.name]);
    const ap = await newPage(actx, 'admin');
    try {
      await ap.goto(`${base}/cluster`);
      await visible(ap, '[data-testid=queue-row-default]', 'the default queue');
      await ap.click('[data-testid=queue-add]');
      await visible(ap, 'input[name="queue.name"]', 'the new queue form');
      await ap.fill('input[name="queue.name"]', 'vision');
      await ap.fill('input[name="queue.gpus[0].count"]', '2');
      await ap.fill('input[name="queue.gpus[0].model"]', 'Fake');
      await ap.fill('input[name="queue.cpus"]', '4');
      await ap.fill('input[name="queue.memory"]', '8');
      await ap.fill('input[name="queue.userMaxGpus"]', '1');
      // The server's field error lands beside the field.
      await ap.fill('input[name="queue.users"]', `${USER}, nobody`);
      expected[422]++;
      await ap.click('[data-testid=queue-save]');
      const err = await visible(ap, '.field.has-error:has(input[name="queue.users"]) [data-testid=field-error]', 'the error beside the users field');
      if (!/nobody/.test((await err.textContent()) || '')) fail(`the users field's error says ${JSON.stringify(await err.textContent())}`);
      await ap.fill('input[name="queue.users"]', USER);
      await ap.click('[data-testid=queue-save]');
      await until('the form to close', async () => (await ap.locator('.modal').count()) === 0, 5000);
      const quota = await textOf(ap, '[data-testid=queue-row-vision] [data-testid=queue-quota]');
      if (!quota.includes('2 × Fake') || !quota.includes('4 CPUs · 8 GiB')) fail(`the new queue's quota shows ${JSON.stringify(quota)}`);
      const made = await api(kiln.url, kiln.token, 'GET', '/queues/vision');
      const want = { cpus: 4, memoryMb: 8192, gpus: [{ model: 'Fake', count: 2 }] };
      if (JSON.stringify(made.quota) !== JSON.stringify(want) || made.userMaxGpus !== 1 || made.users.join() !== USER) fail(`the server made ${JSON.stringify(made)}`);

      // A job that waits in a queue keeps it (409, said on the page); it is
      // linked for the admin, plain text for alice (whose job it is not).
      await api(kiln.url, kiln.token, 'POST', '/queues', { name: 'scratch', quota: { cpus: 1, memoryMb: 1024, gpus: [] } });
      await api(kiln.url, kiln.token, 'POST', '/jobs', { name: 'held', queue: 'scratch', preemptible: false, roles: [{ name: 'main', command: 'true', cpus: 1, gpus: 1, memory: '128Mi' }] });
      const held = `${admin.name}~held`;
      await ap.goto(`${base}/cluster`);
      await ap.click('[data-testid=queue-toggle-scratch]');
      await visible(ap, `[data-testid=queue-detail-scratch] a:has-text("${held}")`, 'the waiting job, linked for the admin');
      await go('/cluster');
      await page.click('[data-testid=queue-toggle-scratch]');
      await visible(page, `[data-testid=queue-detail-scratch] li:has-text("${held}")`, 'the waiting job for alice');
      if (await page.locator(`[data-testid=queue-detail-scratch] a:has-text("${held}")`).count()) fail('another user\'s waiting job is linked for alice');
      expected[409]++;
      await ap.click('[data-testid=queue-remove-scratch]');
      await ap.click('[data-testid=dialog-ok]');
      const refused = await visible(ap, '[data-testid=queue-refused]', 'the refusal');
      if (!/waiting or running/.test((await refused.textContent()) || '')) fail(`the refusal says ${JSON.stringify(await refused.textContent())}`);
      await api(kiln.url, kiln.token, 'POST', `/jobs/${encodeURIComponent(held)}/stop`);
      await until('held to stop', async () => (await api(kiln.url, kiln.token, 'GET', `/jobs/${encodeURIComponent(held)}`)).state === 'STOPPED', 10000, 100);
      await ap.click('[data-testid=queue-remove-scratch]');
      await ap.click('[data-testid=dialog-ok]');
      await until('scratch to go', async () => (await ap.locator('[data-testid=queue-row-scratch]').count()) === 0, 5000);

      // The admin may use every queue.
      await ap.goto(`${base}/submit`);
      await until('vision among the admin\'s queues', async () => (await queueOptions(ap)).includes('vision'), 5000);
    } finally {
      await actx.close();
    }

    // Alice was granted vision: the form offers it and sends it, with preemptible: false.
    await go('/submit');
    await until('vision among alice\'s queues', async () => (await queueOptions(page)).includes('vision'), 5000);
    if ((await page.inputValue('select[name="queue"]')) !== 'default') fail('the form does not start on the default queue');
    await page.selectOption('select[name="queue"]', 'vision');
    await page.uncheck('[data-testid=preemptible]');
    await page.click('[data-testid=edit-json]');
    await visible(page, '[data-testid=json-editor][data-ready] .cm-content', 'JSON editor');
    const shown = JSON.parse(await page.locator('.cm-content').innerText());
    if (shown.queue !== 'vision' || shown.preemptible !== false) fail(`Edit JSON shows queue ${shown.queue}, preemptible ${shown.preemptible}`);
    await page.keyboard.press('Escape');
    await noModal('Escape to close Edit JSON');
  });

  await step('sign out: the token is revoked, then sign in again', async () => {
    await go('/files');
    await visible(page, '[data-testid=drop-zone]', 'files page');
    const token = await page.evaluate(() => localStorage.getItem('kiln.token'));
    if (!token) fail('no token in localStorage');
    await page.click('[data-testid=sign-out]');
    await confirm();
    await until('the sign-in page', () => new URL(page.url()).pathname === '/login');
    if (await page.evaluate(() => localStorage.getItem('kiln.token'))) fail('the token is still in localStorage');
    const res = await fetch(`${kiln.url}/api/v1/me`, { headers: { authorization: `Bearer ${token}` } });
    if (res.status !== 401) fail(`the signed-out token gets ${res.status} from /api/v1/me, expected 401`);
    await visible(page, '[data-testid=login-name]', 'sign-in form');
    await signIn();
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
      // Waiting for GPUs another job holds (a job no node could hold is
      // refused at submit, so it never waits).
      await submit({ name: 'eval-2gpu', roles: [{ name: 'main', command: 'sleep 600', cpus: 1, gpus: 2, memory: '1Gi' }] });
      await until('eval-2gpu to run', async () => (await jobState('eval-2gpu')) === 'RUNNING', 20000, 200);
      await submit({ name: 'llm-4gpu', roles: [{ name: 'main', command: 'python train.py', cpus: 4, gpus: 4, memory: '8Gi' }] });
      await until('bad-config to fail', async () => (await jobState('bad-config')) === 'FAILED', 20000, 200);
    });
    await step('screenshots', async () => {
      for (const lang of LANGS) {
        const dir = join(SHOT_DIR, lang);
        mkdirSync(dir, { recursive: true });
        await page.evaluate((l) => localStorage.setItem('kiln.lang', l), lang);
        const shot = async (name, p = page, fullPage = false) => {
          await p.evaluate(() => document.fonts.ready);
          await p.mouse.move(0, 0);
          // No field with a focus ring in the pictures (the JSON editor keeps its own).
          await p.evaluate(() => {
            const el = document.activeElement;
            if (el instanceof HTMLElement && !el.closest('.cm-editor')) el.blur();
          });
          await p.screenshot({ path: join(dir, `${name}.png`), animations: 'disabled', caret: 'hide', fullPage });
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
        await go(`${jobUrl('ticker')}?tab=metrics`);
        await drawnChart('chart-loss', 5);
        await drawnChart('chart-memory', 2);
        await shot('job-metrics');
        await go(`${jobUrl('ticker')}?tab=logs`);
        await visible(page, '[data-testid=log-live]', 'live log');
        await until('log text', async () => (await ticks()) > 5);
        await shot('job-live-logs');
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
        await page.fill('input[name="priority"]', '10');
        await page.selectOption('select[name="roles[0].restartPolicy"]', 'OnFailure');
        await page.fill('input[name="maxRestarts"]', '3');
        await page.evaluate(() => {
          const el = document.querySelector('[data-testid=role-0]');
          window.scrollTo(0, el.getBoundingClientRect().top + window.scrollY - 72);
        });
        await shot('submit-pro');
        await page.evaluate(() => {
          const el = document.querySelector('[data-testid=pro-section]');
          window.scrollTo(0, el.getBoundingClientRect().top + window.scrollY - 72);
        });
        await shot('submit-pro-settings');
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
        // The default queue opened: its users and its waiting job.
        await page.click('[data-testid=queue-toggle-default]');
        await visible(page, '[data-testid=queue-detail-default] [data-testid=queue-users]', 'the default queue\'s users');
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
        await pp.goto(`${base}${jobUrl('ticker')}?tab=logs`);
        await visible(pp, '[data-testid=log-live]', 'phone live log');
        await shot('job-logs-mobile', pp);
        await pp.evaluate(() => localStorage.setItem('kiln.proMode', '0'));
        await pp.goto(`${base}/submit`);
        await visible(pp, 'input[name="name"]', 'phone submit form');
        await shot('submit-mobile', pp);
        await pp.goto(`${base}/files`);
        await visible(pp, '[data-testid=file-train\\.py]', 'phone files');
        await shot('files-mobile', pp);
        await pp.goto(`${base}/cluster`);
        await visible(pp, '[data-testid=gpus-table]', 'phone cluster');
        await shot('cluster-mobile', pp);
        await phone.close();
        log(`  screenshots for ${lang} in ${relative(REPO, dir) || dir}/`);
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
