import type { ComponentChildren } from 'preact';
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { Api, ApiError, RESTART_POLICIES, type Dataset, type DryRun, type FieldError, type MountSpec, type NodeInfo, type QueueView, type RoleSpec, type Spec } from '../api';
import { fitWarnings, type FitWarning } from '../fit';
import { t, tMaybe, type Key } from '../i18n';
import { fmtMb, parseSize } from '../format';
import { navigate, useRoute } from '../router';
import { CodeEditor } from '../components/editor';
import { Icon, Modal, Spinner, confirmDialog, errorText, promptDialog, toast } from '../components/ui';
import { FolderPicker } from './files';

// The form edits kiln's own job format directly: what "Edit JSON" shows is
// what is submitted, and fields the form has no input for (description,
// extras, secrets...) survive a round trip.

const PRO_KEY = 'kiln.proMode';

function defaultName() {
  const d = new Date();
  const p = (n: number) => String(n).padStart(2, '0');
  return `job-${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

function newRole(name = 'main'): RoleSpec {
  return { name, replicas: 1, command: 'sleep infinity', cpus: 1, gpus: 0, memory: '1Gi', shm: '64Mi' };
}

function newSpec(): Spec {
  return { name: defaultName(), queue: 'default', roles: [newRole()] };
}

/** The spec without empty optional fields: what Edit JSON shows and what is sent. */
export function clean(spec: Spec): Spec {
  const out: Spec = JSON.parse(JSON.stringify(spec));
  delete out.user;
  const dropEmpty = (o: Record<string, unknown>, keys: string[]) => {
    for (const k of keys) {
      const v = o[k];
      if (v === '' || v === undefined || v === null || (Array.isArray(v) && v.length === 0) || (typeof v === 'object' && v && !Array.isArray(v) && Object.keys(v).length === 0))
        delete o[k];
    }
  };
  dropEmpty(out, ['queue', 'gpuType', 'image', 'description', 'maxDuration', 'mounts', 'jobEnvs', 'workingDir']);
  if (out.retryCount === 0) delete out.retryCount;
  if (out.priority === 0) delete out.priority;
  // null and absent both mean unlimited restarts.
  if (out.maxRestarts == null) delete out.maxRestarts;
  for (const r of out.roles || []) {
    dropEmpty(r as Record<string, unknown>, ['image', 'gpuType', 'ports', 'env', 'memory', 'shm']);
    if (!r.restartPolicy || r.restartPolicy === 'Never') delete r.restartPolicy;
    if (r.cpus == null) delete r.cpus;
    if (r.gpus == null) delete r.gpus;
    if (r.replicas == null) delete r.replicas;
  }
  for (const m of out.mounts || []) if (!m.readOnly) delete m.readOnly;
  const roles = (out.roles || []).map((r) => ordered(r, ROLE_ORDER));
  // The roles last, after any field the form does not know.
  const rest: Record<string, unknown> = { ...out };
  delete rest.roles;
  return { ...ordered(rest, JOB_ORDER), roles } as Spec;
}

// The order Edit JSON shows the fields in, as README's format section
// lists them; fields the form does not know keep their place after these.
const JOB_ORDER = ['name', 'description', 'queue', 'preemptible', 'priority', 'image', 'gpuType', 'retryCount', 'maxRestarts', 'maxDuration', 'workingDir', 'mounts', 'jobEnvs', 'pytorch'];
const ROLE_ORDER = ['name', 'replicas', 'cpus', 'memory', 'shm', 'gpus', 'gpuType', 'image', 'ports', 'command', 'restartPolicy', 'minFailed', 'minSucceeded', 'env'];

function ordered<T extends object>(o: T, order: string[]): T {
  const src = o as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const k of order) if (k in src) out[k] = src[k];
  for (const k of Object.keys(src)) if (!(k in out)) out[k] = src[k];
  return out as T;
}

function fromServer(spec: Spec): Spec {
  const s: Spec = JSON.parse(JSON.stringify(spec));
  delete s.user;
  if (!s.roles || !s.roles.length) s.roles = [newRole()];
  return s;
}

// Which error paths the form shows beside a field; the rest go to the summary.
const BASIC_PATHS = [/^name$/, /^queue$/, /^preemptible$/, /^gpuType$/, /^roles\[\d+\]\.(name|replicas|command|shm|cpus|gpus|image)$/, /^roles\[\d+\]\.ports(\[\d+\](\.\w+)?)?$/, /^roles$/];
const PRO_PATHS = [/^roles\[\d+\]\.(memory|minFailed|minSucceeded|gpuType|restartPolicy)$/, /^roles\[\d+\]\.env(\..+)?$/, /^mounts(\[\d+\](\.\w+)?)?$/, /^(retryCount|maxRestarts|priority|maxDuration)$/, /^jobEnvs(\..+)?$/];
const mapped = (path: string, pro: boolean) => BASIC_PATHS.some((r) => r.test(path)) || (pro && PRO_PATHS.some((r) => r.test(path)));
const needsPro = (path: string) => PRO_PATHS.some((r) => r.test(path));

export function SubmitPage() {
  const route = useRoute();
  const cloneId = route.query.get('clone');
  const [spec, setSpec] = useState<Spec | null>(cloneId ? null : newSpec());
  const [pro, setProState] = useState(localStorage.getItem(PRO_KEY) === '1');
  const [errors, setErrors] = useState<FieldError[]>([]);
  const [warnings, setWarnings] = useState<FieldError[]>([]);
  const [notice, setNotice] = useState<string | null>(null);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [jsonOpen, setJsonOpen] = useState(false);
  // The cluster's nodes, as the cluster page shows them: for the GPU models
  // offered and the warning about a job no node could hold.
  const [nodes, setNodes] = useState<NodeInfo[]>([]);
  const gpuModels = useMemo(() => [...new Set(nodes.flatMap((n) => n.gpus.map((g) => g.model)))], [nodes]);
  const [datasets, setDatasets] = useState<Dataset[]>([]);
  // The queues this user may submit to.
  const [queues, setQueues] = useState<QueueView[]>([]);
  const validated = useRef(false);
  const fileInput = useRef<HTMLInputElement>(null);

  const setPro = (v: boolean) => {
    setProState(v);
    localStorage.setItem(PRO_KEY, v ? '1' : '0');
  };

  useEffect(() => {
    Api.nodes().then((c) => setNodes(c.nodes), () => {});
    Api.datasets().then(setDatasets, () => {});
    Api.queues().then((qs) => setQueues(qs.filter((q) => q.mayUse)), () => {});
  }, []);

  // /submit?clone=ID: the job's spec under a free name.
  useEffect(() => {
    if (!cloneId) return;
    let live = true;
    (async () => {
      try {
        const s = fromServer(await Api.spec(cloneId));
        s.name = await freeName(s.name);
        if (!live) return;
        setSpec(s);
        setNotice(t('submit.clonedFrom', { id: cloneId }));
        if (usesPro(s)) setPro(true);
      } catch (e) {
        if (live) {
          setLoadError(errorText(e));
          setSpec(newSpec());
        }
      }
    })();
    return () => {
      live = false;
    };
  }, [cloneId]);

  // After a failed check, re-check as the user edits, so errors clear.
  useEffect(() => {
    if (!spec || !validated.current) return;
    const h = setTimeout(() => check(spec, false), 600);
    return () => clearTimeout(h);
  }, [spec]);

  // Only the newest check's answer counts: an older one arriving last
  // would bring back errors already fixed.
  const checks = useRef(0);
  const check = async (s: Spec, showPro: boolean): Promise<DryRun | null> => {
    const mine = ++checks.current;
    try {
      const r = await Api.submit(JSON.stringify(clean(s)), 'application/json', true);
      if (mine !== checks.current) return r;
      setErrors([]);
      setWarnings(r.warnings || []);
      return r;
    } catch (e) {
      if (mine !== checks.current) return null;
      if (e instanceof ApiError && e.problem.errors?.length) {
        setErrors(e.problem.errors);
        if (showPro && e.problem.errors.some((x) => needsPro(x.path))) setPro(true);
      } else {
        setErrors([{ path: '', message: errorText(e) }]);
      }
      return null;
    }
  };

  if (!spec) {
    return (
      <div class="page">
        <Spinner label={t('submit.loadingClone')} />
      </div>
    );
  }

  const update = (f: (s: Spec) => void) => {
    const next: Spec = JSON.parse(JSON.stringify(spec));
    f(next);
    setSpec(next);
  };
  const setField = (k: keyof Spec, v: unknown) => update((s) => {
    if (v === undefined) delete s[k];
    else (s as Record<string, unknown>)[k as string] = v;
  });
  const setRole = (i: number, k: keyof RoleSpec, v: unknown) => update((s) => {
    const r = s.roles[i] as Record<string, unknown>;
    if (v === undefined) delete r[k as string];
    else r[k as string] = v;
  });

  const errs = (path: string) => errors.filter((e) => e.path === path || e.path.startsWith(`${path}.`) || e.path.startsWith(`${path}[`)).map((e) => e.message);
  const exact = (path: string) => errors.filter((e) => e.path === path).map((e) => e.message);
  const unmapped = errors.filter((e) => !e.path || !mapped(e.path, pro));

  const fit = fitWarnings(spec, nodes);

  const submit = async () => {
    setBusy(true);
    validated.current = true;
    try {
      // Said before the server refuses it; if the user goes on, the
      // server's 422 lands on the fields like any other error.
      if (fit.length > 0) {
        const anyway = await confirmDialog({ title: t('fit.title'), body: <FitList warnings={fit} />, ok: t('fit.submitAnyway') });
        if (!anyway) return;
      }
      const r = await check(spec, true);
      if (!r) {
        toast(t('submit.fixErrors'), 'error');
        requestAnimationFrame(() => document.querySelector('.has-error, .error-summary')?.scrollIntoView({ block: 'center', behavior: 'smooth' }));
        return;
      }
      const ok = await confirmDialog({ title: t('submit.confirmTitle'), body: <ConfirmBody dry={r} />, ok: t('submit.submit'), wide: true });
      if (!ok) return;
      const job = await Api.submit(JSON.stringify(clean(spec)), 'application/json', false);
      toast(t('submit.submitted', { id: job.id }));
      navigate(`/jobs/${encodeURIComponent(job.id)}`);
    } catch (e) {
      if (e instanceof ApiError && e.problem.errors?.length) setErrors(e.problem.errors);
      else if (e instanceof ApiError && e.status === 409) setErrors([{ path: 'name', message: e.problem.detail }]);
      else toast(errorText(e), 'error');
    } finally {
      setBusy(false);
    }
  };

  const importFile = async (file: File) => {
    const text = await file.text();
    const yaml = /\.ya?ml$/i.test(file.name);
    try {
      const r = await Api.submit(text, yaml ? 'application/yaml' : 'application/json', true, false);
      const s = fromServer(r.job);
      setSpec(s);
      setErrors([]);
      setWarnings(r.warnings || []);
      setNotice(t('submit.imported', { file: file.name, format: r.format }));
      if (usesPro(s)) setPro(true);
      toast(t('submit.importedToast', { file: file.name }));
    } catch (e) {
      if (e instanceof ApiError && e.problem.errors?.length) {
        setErrors(e.problem.errors.map((x) => ({ ...x, path: '' , message: `${file.name}: ${x.path ? `${x.path}: ` : ''}${x.message}` })));
      } else setErrors([{ path: '', message: `${file.name}: ${errorText(e)}` }]);
      toast(t('submit.importFailed', { file: file.name }), 'error');
    }
  };

  const pytorch = async () => {
    const v = await promptDialog({
      title: t('submit.pytorchTitle'),
      body: t('submit.pytorchBody'),
      ok: t('submit.pytorchApply'),
      input: { value: '2', label: t('submit.pytorchWorkers') },
    });
    const n = v == null ? NaN : parseInt(v, 10);
    if (!(n >= 1)) return;
    update((s) => {
      const base = { ...s.roles[0] };
      s.pytorch = s.pytorch || {};
      s.roles = [
        { ...base, name: 'master', replicas: 1 },
        { ...base, name: 'worker', replicas: n },
      ];
    });
  };

  const totals = totalsOf(spec);

  return (
    <div class="page submit">
      <div class="page-head">
        <div>
          <h1>{t('submit.title')}</h1>
          <p class="muted">{t('submit.subtitle')}</p>
        </div>
        <div class="actions">
          <input ref={fileInput} type="file" accept=".json,.yaml,.yml,application/json,application/yaml" hidden data-testid="import-file"
            onChange={(e) => {
              const f = (e.target as HTMLInputElement).files?.[0];
              if (f) importFile(f);
              (e.target as HTMLInputElement).value = '';
            }} />
          <button class="btn" onClick={() => fileInput.current?.click()} data-testid="import">
            <Icon name="import" />
            {t('submit.import')}
          </button>
          <button class="btn" onClick={() => setJsonOpen(true)} data-testid="edit-json">
            <Icon name="code" />
            {t('submit.editJson')}
          </button>
          <label class="switch switch-pro">
            <input type="checkbox" checked={pro} onChange={(e) => setPro((e.target as HTMLInputElement).checked)} data-testid="pro-mode" />
            <span class="switch-track" aria-hidden="true" />
            <span>{t('submit.pro')}</span>
          </label>
        </div>
      </div>

      {fit.length > 0 && (
        <div class="alert alert-warn" data-testid="fit-warnings">
          <Icon name="alert" />
          <div class="alert-body">
            <strong>{t('fit.title')}</strong>
            <FitList warnings={fit} />
          </div>
        </div>
      )}
      {loadError && <div class="alert alert-error"><Icon name="alert" /><div class="alert-body">{loadError}</div></div>}
      {notice && (
        <div class="alert alert-info" data-testid="submit-notice">
          <Icon name="check" />
          <div class="alert-body">{notice}</div>
          <button class="icon-btn" onClick={() => setNotice(null)} aria-label={t('common.close')}><Icon name="x" /></button>
        </div>
      )}

      <section class="card form-section">
        <div class="section-head">
          <h2>{t('submit.basic')}</h2>
          <p class="muted small">{t('submit.basicHint')}</p>
        </div>
        <div class="grid-3">
          <Field label={t('submit.jobName')} help={t('submit.jobNameHelp')} errors={exact('name')} required>
            <input class="input" name="name" value={spec.name} onInput={(e) => setField('name', val(e))} spellcheck={false} />
          </Field>
          <Field label={t('submit.queue')} help={t('submit.queueHelp')} errors={exact('queue')}>
            {/* An imported or cloned spec's queue shows even if it is not (or no longer) one of the user's. */}
            <select class="input" name="queue" value={spec.queue || 'default'} onChange={(e) => setField('queue', val(e))}>
              {[...new Set(['default', ...queues.map((q) => q.name), ...(spec.queue ? [spec.queue] : [])])].map((q) => (
                <option key={q} value={q}>{q}</option>
              ))}
            </select>
          </Field>
          <Field label={t('submit.gpuType')} help={t('submit.gpuTypeHelp')} errors={exact('gpuType')}>
            <select class="input" name="gpuType" value={spec.gpuType ?? ''} onChange={(e) => setField('gpuType', val(e) || undefined)}>
              <option value="">{t('submit.gpuAny')}</option>
              {[...new Set([...gpuModels, ...(spec.gpuType ? [spec.gpuType] : [])])].map((m) => (
                <option key={m} value={m}>{m}</option>
              ))}
            </select>
          </Field>
          <Field label={t('submit.preemption')} help={t('submit.preemptibleHelp')} errors={exact('preemptible')}>
            <label class="check">
              <input type="checkbox" name="preemptible" checked={spec.preemptible !== false} data-testid="preemptible"
                onChange={(e) => setField('preemptible', (e.target as HTMLInputElement).checked ? undefined : false)} />
              {t('submit.preemptible')}
            </label>
          </Field>
        </div>
      </section>

      <section class="card form-section">
        <div class="section-head">
          <div>
            <h2>{t('submit.tasks')}</h2>
            <p class="muted small">{t('submit.tasksHint')}</p>
          </div>
          <div class="actions">
            <button class="btn btn-sm" onClick={pytorch} data-testid="pytorch-preset">
              <Icon name="gpu" />
              {t('submit.pytorch')}
            </button>
            <button class="btn btn-sm" onClick={() => update((s) => s.roles.push(newRole(uniqueRoleName(s))))} data-testid="add-role">
              <Icon name="plus" />
              {t('submit.addRole')}
            </button>
          </div>
        </div>
        {errs('roles').length > 0 && exact('roles').length > 0 && <FieldErrors messages={exact('roles')} />}
        {spec.roles.map((r, i) => (
          <RoleCard key={i} role={r} index={i} count={spec.roles.length} pro={pro} errs={errs} exact={exact} gpuModels={gpuModels} jobGpuType={spec.gpuType}
            set={(k, v) => setRole(i, k, v)}
            remove={() => update((s) => s.roles.splice(i, 1))} />
        ))}
      </section>

      {pro && (
        <section class="card form-section" data-testid="pro-section">
          <div class="section-head">
            <h2>{t('submit.proSettings')}</h2>
            <p class="muted small">{t('submit.proHint')}</p>
          </div>
          <div class="grid-3">
            <Field label={t('submit.priority')} help={t('submit.priorityHelp')} errors={exact('priority')}>
              <input class="input" type="number" min={-1000} max={1000} step={1} name="priority" value={spec.priority ?? 0} onInput={(e) => setField('priority', num(e) ?? 0)} />
            </Field>
            <Field label={t('submit.retryCount')} help={t('submit.retryHelp')} errors={exact('retryCount')}>
              <input class="input" type="number" min={0} max={1000} name="retryCount" value={spec.retryCount ?? 0} onInput={(e) => setField('retryCount', num(e) ?? 0)} />
            </Field>
            <Field label={t('submit.maxRestarts')} help={t('submit.maxRestartsHelp')} errors={exact('maxRestarts')}>
              <input class="input" type="number" min={0} name="maxRestarts" value={spec.maxRestarts ?? ''} placeholder={t('submit.unlimited')}
                onInput={(e) => setField('maxRestarts', num(e))} />
            </Field>
            <Field label={t('submit.maxDuration')} help={t('submit.maxDurationHelp')} errors={exact('maxDuration')}>
              <input class="input" name="maxDuration" value={spec.maxDuration ?? ''} placeholder={t('submit.maxDurationPlaceholder')} onInput={(e) => setField('maxDuration', val(e) || undefined)} />
            </Field>
            <Field label={t('submit.debug')} help={t('submit.debugHelp')}>
              <label class="switch">
                <input type="checkbox" name="debug" checked={spec.jobEnvs?.isDebug === true || spec.jobEnvs?.isDebug === 'true'}
                  onChange={(e) => update((s) => {
                    const on = (e.target as HTMLInputElement).checked;
                    s.jobEnvs = { ...(s.jobEnvs || {}) };
                    if (on) s.jobEnvs.isDebug = true;
                    else delete s.jobEnvs.isDebug;
                  })} />
                <span class="switch-track" aria-hidden="true" />
                <span>{t('submit.debugOn')}</span>
              </label>
            </Field>
          </div>
          <Mounts mounts={spec.mounts ?? []} datasets={datasets} errs={errs} exact={exact} onChange={(m) => setField('mounts', m.length ? m : undefined)} />
          <div class="subsection">
            <h3>{t('submit.jobEnv')}</h3>
            <p class="muted small">{t('submit.jobEnvHelp')}</p>
            <EnvEditor prefix="jobEnvs" env={Object.fromEntries(Object.entries(spec.jobEnvs ?? {}).filter(([k]) => k !== 'isDebug').map(([k, v]) => [k, String(v)]))}
              errs={errs}
              onChange={(env) => update((s) => {
                const debug = s.jobEnvs?.isDebug;
                s.jobEnvs = { ...env, ...(debug !== undefined ? { isDebug: debug } : {}) };
                if (!Object.keys(s.jobEnvs).length) delete s.jobEnvs;
              })} />
          </div>
        </section>
      )}

      <div class="submit-bar">
        <div class="submit-summary">
          <span><Icon name="cpu" /> {t('submit.totalCpus', { n: totals.cpus })}</span>
          <span><Icon name="memory" /> {totals.memory}</span>
          <span><Icon name="gpu" /> {t('submit.totalGpus', { n: totals.gpus })}</span>
          <span class="muted">{t('submit.totalTasks', { n: totals.tasks })}</span>
        </div>
        <button class="btn btn-primary btn-lg" onClick={submit} disabled={busy} data-testid="submit">
          {busy ? t('submit.checking') : t('submit.submitJob')}
        </button>
      </div>

      {(unmapped.length > 0 || errors.length > 0) && (
        <div class="alert alert-error error-summary" role="alert" data-testid="error-summary">
          <Icon name="alert" />
          <div class="alert-body">
            <strong>{t('submit.errorsTitle', { n: errors.length })}</strong>
            {unmapped.length > 0 && (
              <ul>
                {unmapped.map((e, i) => (
                  <li key={i}>
                    {e.path && <code>{e.path}</code>} {e.message}
                  </li>
                ))}
              </ul>
            )}
            {unmapped.length === 0 && <div>{t('submit.errorsBeside')}</div>}
          </div>
        </div>
      )}
      {warnings.length > 0 && errors.length === 0 && (
        <div class="alert alert-warn" data-testid="warnings">
          <Icon name="alert" />
          <div class="alert-body">
            <strong>{t('submit.warnings', { n: warnings.length })}</strong>
            <ul>
              {warnings.map((w, i) => (
                <li key={i}>{w.path && <code>{w.path}</code>} {w.message}</li>
              ))}
            </ul>
          </div>
        </div>
      )}

      {jsonOpen && (
        <JsonDialog spec={spec} onClose={() => setJsonOpen(false)}
          onApply={(s) => {
            setSpec(s);
            setJsonOpen(false);
            if (usesPro(s)) setPro(true);
            toast(t('submit.jsonApplied'));
          }} />
      )}
    </div>
  );
}

/** Whether the spec sets anything only professional mode shows. */
function usesPro(s: Spec): boolean {
  return !!(s.mounts?.length || s.retryCount || s.maxDuration || s.priority || s.maxRestarts != null || (s.jobEnvs && Object.keys(s.jobEnvs).length) ||
    s.roles.some((r) => (r.env && Object.keys(r.env).length) || (r.memory != null && parseSize(r.memory) !== 1024) || r.gpuType ||
      (r.restartPolicy && r.restartPolicy !== 'Never') || (r.minFailed !== undefined && r.minFailed !== 1) || r.minSucceeded != null));
}

async function freeName(name: string): Promise<string> {
  const base = name.replace(/-\d+$/, '');
  for (let n = 2; n < 50; n++) {
    const candidate = `${base}-${n}`;
    try {
      const r = await Api.jobs({ name: candidate, limit: 1 });
      if (!r.items.length) return candidate;
    } catch {
      return candidate;
    }
  }
  return `${base}-${Date.now() % 100000}`;
}

function uniqueRoleName(s: Spec): string {
  const names = new Set(s.roles.map((r) => r.name));
  for (const n of ['worker', 'ps', 'evaluator']) if (!names.has(n)) return n;
  let i = 2;
  while (names.has(`role${i}`)) i++;
  return `role${i}`;
}

function totalsOf(s: Spec) {
  let cpus = 0, gpus = 0, mem = 0, tasks = 0;
  for (const r of s.roles) {
    const n = r.replicas ?? 1;
    tasks += n;
    cpus += n * (r.cpus ?? 1);
    gpus += n * (r.gpus ?? 0);
    mem += n * (parseSize(r.memory ?? '1Gi') ?? 0);
  }
  return { cpus, gpus, tasks, memory: fmtMb(mem) };
}

const val = (e: Event) => (e.target as HTMLInputElement).value;
const num = (e: Event) => {
  const v = (e.target as HTMLInputElement).value;
  return v === '' ? undefined : Number(v);
};

let fieldSeq = 0;

export function Field({ label, help, errors, children, required, wide }: { label: string; help?: string; errors?: string[]; children: ComponentChildren; required?: boolean; wide?: boolean }) {
  const bad = !!errors?.length;
  const labelRef = useRef<HTMLLabelElement>(null);
  // The label names the field's first control (and its errors describe it).
  useEffect(() => {
    const l = labelRef.current;
    const control = l?.parentElement?.querySelector<HTMLElement>('input:not([type=checkbox]), select, textarea');
    if (!l || !control) return;
    if (!control.id) control.id = `f${++fieldSeq}`;
    l.htmlFor = control.id;
    control.setAttribute('aria-invalid', bad ? 'true' : 'false');
  });
  return (
    <div class={`field${bad ? ' has-error' : ''}${wide ? ' field-wide' : ''}`}>
      <label class="field-label" ref={labelRef}>
        <span>{label}{required && <span class="req" aria-hidden="true">*</span>}</span>
        {help && <span class="help" tabIndex={0} data-tip={help} aria-label={help}>?</span>}
      </label>
      {children}
      {bad && <FieldErrors messages={errors!} />}
    </div>
  );
}

function FitList({ warnings }: { warnings: FitWarning[] }) {
  return (
    <div>
      <p>{t('fit.hint')}</p>
      <ul>
        {warnings.map((w, i) => (
          <li key={i}><code>{w.path}</code> {w.message}</li>
        ))}
      </ul>
    </div>
  );
}

function FieldErrors({ messages }: { messages: string[] }) {
  return (
    <div class="field-error" role="alert" data-testid="field-error">
      {messages.map((m, i) => <div key={i}>{m}</div>)}
    </div>
  );
}

function RoleCard({ role, index, count, pro, errs, exact, gpuModels, jobGpuType, set, remove }: {
  role: RoleSpec; index: number; count: number; pro: boolean; gpuModels: string[]; jobGpuType?: string;
  errs: (p: string) => string[]; exact: (p: string) => string[];
  set: (k: keyof RoleSpec, v: unknown) => void; remove: () => void;
}) {
  const p = `roles[${index}]`;
  return (
    <div class="role-card" data-testid={`role-${index}`}>
      <div class="role-head">
        <span class="role-index">{index + 1}</span>
        <strong>{role.name || t('submit.unnamedRole')}</strong>
        {(role.replicas ?? 1) > 1 && <span class="tag">× {role.replicas}</span>}
        <span class="spacer" />
        {count > 1 && (
          <button class="btn btn-sm btn-ghost danger" onClick={remove} data-testid={`remove-role-${index}`}>
            <Icon name="trash" />
            {t('submit.removeRole')}
          </button>
        )}
      </div>
      <div class="grid-4">
        <Field label={t('submit.taskName')} help={t('submit.taskNameHelp')} errors={exact(`${p}.name`)} required>
          <input class="input" name={`${p}.name`} value={role.name} spellcheck={false} onInput={(e) => set('name', val(e))} />
        </Field>
        <Field label={t('submit.replicas')} help={t('submit.replicasHelp')} errors={exact(`${p}.replicas`)}>
          <input class="input" type="number" min={1} name={`${p}.replicas`} value={role.replicas ?? 1} onInput={(e) => set('replicas', num(e))} />
        </Field>
        <Field label={t('submit.cpus')} errors={exact(`${p}.cpus`)}>
          <input class="input" type="number" min={1} name={`${p}.cpus`} value={role.cpus ?? 1} onInput={(e) => set('cpus', num(e))} />
        </Field>
        <Field label={t('submit.gpus')} errors={exact(`${p}.gpus`)}>
          <input class="input" type="number" min={0} name={`${p}.gpus`} value={role.gpus ?? 0} onInput={(e) => set('gpus', num(e))} />
        </Field>
        <Field label={t('submit.shm')} help={t('submit.shmHelp')} errors={exact(`${p}.shm`)}>
          <SizeInput name={`${p}.shm`} value={role.shm ?? '64Mi'} onChange={(v) => set('shm', v)} />
        </Field>
        {pro && (
          <Field label={t('submit.memory')} help={t('submit.memoryHelp')} errors={exact(`${p}.memory`)}>
            <SizeInput name={`${p}.memory`} value={role.memory ?? '1Gi'} onChange={(v) => set('memory', v)} />
          </Field>
        )}
        <Field label={t('submit.image')} help={t('submit.imageHelp')} errors={exact(`${p}.image`)} wide={!pro}>
          <input class="input" name={`${p}.image`} value={role.image ?? ''} placeholder="pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime" spellcheck={false} onInput={(e) => set('image', val(e) || undefined)} />
        </Field>
      </div>
      <Field label={t('submit.command')} help={t('submit.commandHelp')} errors={exact(`${p}.command`)} required wide>
        <textarea class="input mono" rows={Math.min(10, Math.max(3, (role.command || '').split('\n').length + 1))} name={`${p}.command`} value={role.command} spellcheck={false}
          onInput={(e) => set('command', (e.target as HTMLTextAreaElement).value)} />
      </Field>
      <Ports prefix={`${p}.ports`} ports={role.ports ?? []} errs={errs} exact={exact} onChange={(ports) => set('ports', ports.length ? ports : undefined)} />
      {pro && (
        <div class="grid-4">
          <Field label={t('submit.roleGpuType')} help={t('submit.roleGpuTypeHelp')} errors={exact(`${p}.gpuType`)}>
            <select class="input" name={`${p}.gpuType`} value={role.gpuType ?? ''} onChange={(e) => set('gpuType', val(e) || undefined)}>
              <option value="">{jobGpuType ? t('submit.gpuAsJob', { type: jobGpuType }) : t('submit.gpuAny')}</option>
              {[...new Set([...gpuModels, ...(role.gpuType ? [role.gpuType] : [])])].map((m) => (
                <option key={m} value={m}>{m}</option>
              ))}
            </select>
          </Field>
          <Field label={t('submit.restartPolicy')} help={t('submit.restartPolicyHelp')} errors={exact(`${p}.restartPolicy`)}>
            <select class="input" name={`${p}.restartPolicy`} value={role.restartPolicy ?? 'Never'} onChange={(e) => set('restartPolicy', val(e) === 'Never' ? undefined : val(e))}>
              {[...new Set([...RESTART_POLICIES, role.restartPolicy ?? 'Never'])].map((x) => (
                <option key={x} value={x}>{tMaybe(`submit.restart.${x}`, x)}</option>
              ))}
            </select>
          </Field>
          <Field label={t('submit.minFailed')} help={t('submit.minFailedHelp')} errors={exact(`${p}.minFailed`)}>
            <input class="input" type="number" min={1} name={`${p}.minFailed`} value={role.minFailed ?? ''} placeholder={role.minFailed === null ? t('submit.minFailedNever') : '1'}
              onInput={(e) => set('minFailed', num(e))} />
          </Field>
          <Field label={t('submit.minSucceeded')} help={t('submit.minSucceededHelp')} errors={exact(`${p}.minSucceeded`)}>
            <input class="input" type="number" min={1} name={`${p}.minSucceeded`} value={role.minSucceeded ?? ''} placeholder={t('submit.all')}
              onInput={(e) => set('minSucceeded', num(e))} />
          </Field>
        </div>
      )}
      {pro && (
        <div class="subsection">
          <h3>{t('submit.roleEnv')}</h3>
          <EnvEditor prefix={`${p}.env`} env={role.env ?? {}} errs={errs} onChange={(env) => set('env', Object.keys(env).length ? env : undefined)} />
        </div>
      )}
    </div>
  );
}

/** A size as kiln writes it ("1Gi", "512Mi"): a number and a unit. */
function SizeInput({ name, value, onChange }: { name: string; value: string | number; onChange: (v: string) => void }) {
  const text = String(value);
  const m = /^(\d+(?:\.\d+)?)(Mi|Gi)?$/.exec(text);
  if (!m) {
    return <input class="input" name={name} value={text} onInput={(e) => onChange(val(e))} />;
  }
  const n = m[1];
  const unit = m[2] || 'Mi';
  return (
    <div class="input-group">
      <input class="input" type="number" min={0} name={name} value={n} onInput={(e) => onChange(`${val(e)}${unit}`)} />
      <select class="input unit" aria-label={t('submit.unit')} value={unit} onChange={(e) => onChange(`${n}${val(e)}`)}>
        <option value="Mi">MiB</option>
        <option value="Gi">GiB</option>
      </select>
    </div>
  );
}

function Ports({ prefix, ports, exact, onChange }: { prefix: string; ports: NonNullable<RoleSpec['ports']>; errs: (p: string) => string[]; exact: (p: string) => string[]; onChange: (p: NonNullable<RoleSpec['ports']>) => void }) {
  const set = (i: number, k: 'label' | 'beginAt' | 'count', v: string | number) => {
    const next = ports.map((p) => ({ ...p }));
    (next[i] as Record<string, unknown>)[k] = v;
    onChange(next);
  };
  return (
    <div class="subsection">
      <div class="subsection-head">
        <h3>{t('submit.ports')}</h3>
        <button class="btn btn-sm btn-ghost" onClick={() => onChange([...ports, { label: ports.length ? `port${ports.length + 1}` : 'http', beginAt: 0, count: 1 }])} data-testid="add-port">
          <Icon name="plus" />
          {t('submit.addPort')}
        </button>
      </div>
      {ports.length === 0 ? (
        <p class="muted small">{t('submit.noPorts')}</p>
      ) : (
        <div class="rows">
          {ports.map((p, i) => (
            <div key={i} class="row-edit">
              <Field label={t('submit.portLabel')} errors={exact(`${prefix}[${i}].label`)}>
                <input class="input" name={`${prefix}[${i}].label`} value={p.label} onInput={(e) => set(i, 'label', val(e))} />
              </Field>
              <Field label={t('submit.portCount')} errors={exact(`${prefix}[${i}].count`)}>
                <input class="input" type="number" min={1} name={`${prefix}[${i}].count`} value={p.count} onInput={(e) => set(i, 'count', num(e) ?? 1)} />
              </Field>
              <Field label={t('submit.portBegin')} help={t('submit.portBeginHelp')} errors={exact(`${prefix}[${i}].beginAt`)}>
                <input class="input" type="number" min={0} name={`${prefix}[${i}].beginAt`} value={p.beginAt} onInput={(e) => set(i, 'beginAt', num(e) ?? 0)} />
              </Field>
              <button class="icon-btn danger row-remove" aria-label={t('common.remove')} title={t('common.remove')} onClick={() => onChange(ports.filter((_, j) => j !== i))}>
                <Icon name="trash" />
              </button>
            </div>
          ))}
          <FieldErrorsFor messages={exact(prefix)} />
        </div>
      )}
    </div>
  );
}

function FieldErrorsFor({ messages }: { messages: string[] }) {
  return messages.length ? <FieldErrors messages={messages} /> : null;
}

function EnvEditor({ prefix, env, errs, onChange }: { prefix: string; env: Record<string, string>; errs: (p: string) => string[]; onChange: (e: Record<string, string>) => void }) {
  // Rows are kept as a list while editing, so a half-typed or duplicate name is not lost.
  const [rows, setRows] = useState<[string, string][]>(() => Object.entries(env));
  const envKey = JSON.stringify(env);
  useEffect(() => {
    const fromRows = JSON.stringify(Object.fromEntries(rows.filter(([k]) => k)));
    if (fromRows !== envKey) setRows(Object.entries(env));
  }, [envKey]);
  const commit = (next: [string, string][]) => {
    setRows(next);
    onChange(Object.fromEntries(next.filter(([k]) => k.trim()).map(([k, v]) => [k.trim(), v])));
  };
  return (
    <div class="rows">
      {rows.map(([k, v], i) => {
        const messages = k ? errs(`${prefix}.${k}`) : [];
        return (
          <div key={i} class={`row-edit env-row${messages.length ? ' has-error' : ''}`}>
            <input class="input mono" placeholder={t('submit.envName')} aria-label={t('submit.envName')} value={k} name={`${prefix}[${i}].name`}
              onInput={(e) => commit(rows.map((r, j) => (j === i ? [val(e), r[1]] : r)))} />
            <span class="eq" aria-hidden="true">=</span>
            <input class="input mono" placeholder={t('submit.envValue')} aria-label={t('submit.envValue')} value={v} name={`${prefix}[${i}].value`}
              onInput={(e) => commit(rows.map((r, j) => (j === i ? [r[0], val(e)] : r)))} />
            <button class="icon-btn danger" aria-label={t('common.remove')} title={t('common.remove')} onClick={() => commit(rows.filter((_, j) => j !== i))}>
              <Icon name="trash" />
            </button>
            {messages.length > 0 && <FieldErrors messages={messages} />}
          </div>
        );
      })}
      {errs(prefix).length > 0 && rows.every(([k]) => !errs(`${prefix}.${k}`).length) && <FieldErrors messages={errs(prefix)} />}
      <div>
        <button class="btn btn-sm btn-ghost" onClick={() => setRows([...rows, ['', '']])} data-testid={`add-env-${prefix}`}>
          <Icon name="plus" />
          {t('submit.addEnv')}
        </button>
      </div>
    </div>
  );
}

function Mounts({ mounts, datasets, exact, onChange }: { mounts: MountSpec[]; datasets: Dataset[]; errs: (p: string) => string[]; exact: (p: string) => string[]; onChange: (m: MountSpec[]) => void }) {
  const [picking, setPicking] = useState<number | null>(null);
  const set = (i: number, m: MountSpec) => onChange(mounts.map((x, j) => (j === i ? m : x)));
  return (
    <div class="subsection">
      <div class="subsection-head">
        <div>
          <h3>{t('submit.mounts')}</h3>
          <p class="muted small">{t('submit.mountsHelp')}</p>
        </div>
        <div class="actions">
          <button class="btn btn-sm btn-ghost" onClick={() => { onChange([...mounts, { space: '', target: '' }]); setPicking(mounts.length); }} data-testid="add-mount">
            <Icon name="folder" />
            {t('submit.addFolder')}
          </button>
          <button class="btn btn-sm btn-ghost" disabled={!datasets.length} title={datasets.length ? undefined : t('submit.noDatasets')}
            onClick={() => onChange([...mounts, { dataset: datasets[0].name, target: datasets[0].defaultTarget }])} data-testid="add-dataset">
            <Icon name="db" />
            {t('submit.addDataset')}
          </button>
        </div>
      </div>
      {mounts.length === 0 ? (
        <p class="muted small">{t('submit.noMounts')}</p>
      ) : (
        <div class="rows">
          {mounts.map((m, i) => {
            const p = `mounts[${i}]`;
            const isData = m.dataset !== undefined;
            return (
              <div key={i} class="row-edit mount-row">
                <span class="tag">{isData ? t('submit.dataset') : t('submit.folder')}</span>
                {isData ? (
                  <Field label={t('submit.dataset')} errors={[...exact(`${p}.dataset`), ...exact(p)]}>
                    <select class="input" name={`${p}.dataset`} value={m.dataset} onChange={(e) => {
                      const d = datasets.find((x) => x.name === val(e));
                      set(i, { ...m, dataset: val(e), target: d?.defaultTarget ?? m.target });
                    }}>
                      {[...new Set([...datasets.map((d) => d.name), m.dataset!])].map((n) => <option key={n} value={n}>{n}</option>)}
                    </select>
                  </Field>
                ) : (
                  <Field label={t('submit.folder')} errors={[...exact(`${p}.space`), ...exact(p)]}>
                    <div class="input-group">
                      <input class="input mono" name={`${p}.space`} value={m.space} placeholder="mnist" onInput={(e) => set(i, { ...m, space: val(e) })} />
                      <button class="btn" onClick={() => setPicking(i)}>{t('submit.browse')}</button>
                    </div>
                  </Field>
                )}
                <Field label={t('submit.target')} errors={exact(`${p}.target`)}>
                  <input class="input mono" name={`${p}.target`} value={m.target ?? ''} placeholder={`/mnt/${(isData ? m.dataset : m.space) || ''}`} onInput={(e) => set(i, { ...m, target: val(e) })} />
                </Field>
                {!isData && (
                  <label class="check">
                    <input type="checkbox" checked={!!m.readOnly} onChange={(e) => set(i, { ...m, readOnly: (e.target as HTMLInputElement).checked })} />
                    {t('submit.readOnly')}
                  </label>
                )}
                <button class="icon-btn danger row-remove" aria-label={t('common.remove')} title={t('common.remove')} onClick={() => onChange(mounts.filter((_, j) => j !== i))}>
                  <Icon name="trash" />
                </button>
              </div>
            );
          })}
        </div>
      )}
      {picking != null && (
        <FolderPicker
          onClose={() => setPicking(null)}
          onPick={(folder) => {
            const m = mounts[picking] ?? {};
            const target = !m.target || m.target.startsWith('/mnt/') ? `/mnt/${folder.split('/').pop()}` : m.target;
            set(picking, { ...m, space: folder, target });
            setPicking(null);
          }} />
      )}
    </div>
  );
}

function JsonDialog({ spec, onClose, onApply }: { spec: Spec; onClose: () => void; onApply: (s: Spec) => void }) {
  const initial = useMemo(() => JSON.stringify(clean(spec), null, 2), []);
  const [text, setText] = useState(initial);
  const [error, setError] = useState<string[] | null>(null);
  const [busy, setBusy] = useState(false);
  const apply = async () => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      setError([t('submit.jsonInvalid', { msg: (e as Error).message })]);
      return;
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
      setError([t('submit.jsonNotObject')]);
      return;
    }
    const o = parsed as Record<string, unknown>;
    if (Array.isArray(o.roles) && o.roles.every((r) => r && typeof r === 'object')) {
      onApply(fromServer(o as unknown as Spec));
      return;
    }
    // Another format (OpenPAI JSON, or kiln's single-task form): kiln converts it.
    setBusy(true);
    try {
      const r = await Api.submit(text, 'application/json', true, false);
      onApply(fromServer(r.job));
    } catch (e) {
      if (e instanceof ApiError && e.problem.errors?.length) setError(e.problem.errors.map((x) => `${x.path ? `${x.path}: ` : ''}${x.message}`));
      else setError([errorText(e)]);
    } finally {
      setBusy(false);
    }
  };
  return (
    <Modal title={t('submit.editJson')} onClose={onClose} wide
      footer={
        <>
          <span class="muted small spacer-left">{t('submit.jsonHint')}</span>
          <button class="btn" onClick={onClose}>{t('common.cancel')}</button>
          <button class="btn btn-primary" onClick={apply} disabled={busy} data-testid="json-apply">{t('submit.jsonApply')}</button>
        </>
      }>
      <CodeEditor value={initial} onChange={setText} height="min(60vh, 520px)" label={t('submit.editJson')} />
      {error && (
        <div class="alert alert-error" role="alert" data-testid="json-error">
          <Icon name="alert" />
          <div class="alert-body">{error.map((m, i) => <div key={i}>{m}</div>)}</div>
        </div>
      )}
    </Modal>
  );
}

function ConfirmBody({ dry }: { dry: DryRun }) {
  const s = dry.job;
  const totals = totalsOf(s);
  const row = (k: Key, v: ComponentChildren) => (
    <tr>
      <th>{t(k)}</th>
      <td>{v}</td>
    </tr>
  );
  return (
    <div class="confirm">
      <p>{t('submit.confirmBody')}</p>
      <table class="kv">
        <tbody>
          {row('submit.jobName', <strong>{s.name}</strong>)}
          {row('submit.queue', s.queue || 'default')}
          {s.preemptible === false && row('submit.preemption', t('submit.notPreemptible'))}
          {s.gpuType && row('submit.gpuType', s.gpuType)}
          {row('submit.totalLabel', `${t('submit.totalTasks', { n: totals.tasks })} · ${t('submit.totalCpus', { n: totals.cpus })} · ${totals.memory} · ${t('submit.totalGpus', { n: totals.gpus })}`)}
          {!!s.priority && row('submit.priority', s.priority)}
          {s.maxDuration != null && row('submit.maxDuration', String(s.maxDuration))}
          {!!s.retryCount && row('submit.retryCount', s.retryCount)}
          {s.roles.some((r) => r.restartPolicy && r.restartPolicy !== 'Never') && row('submit.maxRestarts', s.maxRestarts ?? t('submit.unlimited'))}
        </tbody>
      </table>
      <table class="table table-compact">
        <thead>
          <tr>
            <th>{t('submit.taskName')}</th>
            <th class="num">{t('submit.replicas')}</th>
            <th class="num">{t('submit.cpus')}</th>
            <th class="num">{t('submit.memory')}</th>
            <th class="num">{t('submit.gpus')}</th>
            <th>{t('submit.command')}</th>
          </tr>
        </thead>
        <tbody>
          {s.roles.map((r) => (
            <tr key={r.name}>
              <td class="mono">{r.name}</td>
              <td class="num">{r.replicas ?? 1}</td>
              <td class="num">{r.cpus ?? 1}</td>
              <td class="num">{String(r.memory ?? '1Gi')}</td>
              <td class="num">{r.gpus ? `${r.gpus}${(r.gpuType || s.gpuType) ? ` × ${r.gpuType || s.gpuType}` : ''}` : 0}</td>
              <td class="mono small ellipsis" title={r.command}>
                {r.restartPolicy && r.restartPolicy !== 'Never' && <span class="tag tag-muted">{r.restartPolicy}</span>}
                {r.command}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {dry.warnings.length > 0 && (
        <div class="alert alert-warn">
          <Icon name="alert" />
          <div class="alert-body">
            <strong>{t('submit.warnings', { n: dry.warnings.length })}</strong>
            <ul>{dry.warnings.map((w, i) => <li key={i}>{w.path && <code>{w.path}</code>} {w.message}</li>)}</ul>
          </div>
        </div>
      )}
    </div>
  );
}
