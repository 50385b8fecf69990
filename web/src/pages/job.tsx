import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import type uPlot from 'uplot';
import { Api, ApiError, download, jid, type JobView, type SeriesView, type Spec, type TaskView, type UserView } from '../api';
import { t, tMaybe } from '../i18n';
import { pendingText } from '../pending';
import { fmtAgo, fmtBytes, fmtClock, fmtDuration, fmtNumber, fmtTime, runTime } from '../format';
import { Link, navigate, setQuery, useRoute } from '../router';
import { Chart } from '../components/chart';
import { LogFeed, type FeedStatus } from '../logfeed';
import { CodeEditor } from '../components/editor';
import { Empty, ErrorBox, Icon, Spinner, StateBadge, errorText, toast, usePoll, useNow } from '../components/ui';
import { cloneJob, deleteJob, extendJob, isActive, isFinished, stopJob } from './actions';

type Tab = 'overview' | 'logs' | 'metrics' | 'spec';
const TABS: Tab[] = ['overview', 'logs', 'metrics', 'spec'];

export function JobPage({ id }: { id: string; me: UserView | null }) {
  const route = useRoute();
  const tab = (TABS.includes(route.query.get('tab') as Tab) ? route.query.get('tab') : 'overview') as Tab;
  const [job, setJob] = useState<JobView | null>(null);
  const [error, setError] = useState<unknown>(null);
  const now = useNow(1000);

  // The id the page shows now: a late answer for another job is dropped.
  const current = useRef(id);
  current.current = id;
  const load = async () => {
    const asked = id;
    try {
      const j = await Api.job(asked);
      if (current.current !== asked) return;
      setJob(j);
      setError(null);
    } catch (e) {
      if (current.current === asked) setError(e);
    }
  };
  useEffect(() => {
    setJob(null);
    setError(null);
    load();
  }, [id]);
  const gone = error instanceof ApiError && error.status === 404;
  const active = !gone && (!job || isActive(job.state));
  usePoll(load, 2000, [id], active);

  if (error instanceof ApiError && error.status === 404) {
    return (
      <div class="page">
        <Crumbs name={id} />
        <Empty title={t('job.notFound')} hint={id}>
          <Link class="btn" href="/jobs">{t('notFound.back')}</Link>
        </Empty>
      </div>
    );
  }
  if (!job) {
    return (
      <div class="page">
        <Crumbs name={id} />
        {error != null ? <ErrorBox error={error} onRetry={load} /> : <Spinner />}
      </div>
    );
  }

  const act = async (f: () => Promise<boolean>) => {
    if (await f()) load();
  };
  const remove = async () => {
    if (await deleteJob(job)) navigate('/jobs');
  };
  const board = async () => {
    // Opened first, filled in after the answer: browsers block pop-ups opened later.
    const win = window.open('', '_blank');
    // The board must not reach back into this page.
    if (win) win.opener = null;
    try {
      const b = await Api.tensorboard(job.id);
      const url = b.url || `${b.origin ?? ''}${b.path}`;
      if (win) win.location.href = url;
      else window.open(url, '_blank', 'noopener');
    } catch (e) {
      win?.close();
      toast(errorText(e), 'error');
    }
  };

  const rt = runTime(job.startedAtMs, job.finishedAtMs, now);
  return (
    <div class="page">
      <Crumbs name={job.name} />
      <div class="page-head job-head">
        <div class="job-title">
          <h1>
            {job.name}
            <StateBadge state={job.state} />
          </h1>
          <div class="muted mono small">{job.id}</div>
        </div>
        <div class="actions">
          <button class="btn" onClick={board} data-testid="tensorboard">
            <Icon name="board" />
            {t('job.tensorboard')}
          </button>
          {job.state === 'RUNNING' && (
            <button class="btn" onClick={() => act(() => extendJob(job))} data-testid="extend">
              <Icon name="clock" />
              {job.deadlineAtMs != null ? t('action.extend') : t('action.setLimit')}
            </button>
          )}
          <button class="btn" onClick={() => cloneJob(job)} data-testid="clone">
            <Icon name="copy" />
            {t('action.clone')}
          </button>
          {isActive(job.state) && (
            <button class="btn btn-danger" disabled={job.state === 'STOPPING'} onClick={() => act(() => stopJob(job))} data-testid="stop">
              <Icon name="stop" />
              {t('action.stop')}
            </button>
          )}
          {isFinished(job.state) && (
            <button class="btn btn-danger-ghost" onClick={remove} data-testid="delete">
              <Icon name="trash" />
              {t('action.delete')}
            </button>
          )}
        </div>
      </div>

      {job.state === 'WAITING' && pendingText(job) && (
        <div class="alert alert-warn" data-testid="pending-reason">
          <Icon name="clock" />
          <div class="alert-body">
            <strong>{t('job.pending')}</strong> {pendingText(job)}
          </div>
        </div>
      )}
      {(job.notices ?? []).map((n) => (
        <div key={n} class="alert alert-warn">
          <Icon name="alert" />
          <div class="alert-body">{n}</div>
        </div>
      ))}

      <div class="card summary">
        <dl class="facts">
          <Fact label={t('job.user')}>{job.user}</Fact>
          <Fact label={t('job.queue')}>{job.queue}</Fact>
          <Fact label={t('job.format')}>{job.format}</Fact>
          <Fact label={t('job.submitted')}>
            <span title={fmtTime(job.submittedAtMs)}>{fmtAgo(job.submittedAtMs, now)}</span>
          </Fact>
          <Fact label={t('job.started')}>{job.startedAtMs ? fmtTime(job.startedAtMs) : '—'}</Fact>
          <Fact label={t('job.finished')}>{job.finishedAtMs ? fmtTime(job.finishedAtMs) : '—'}</Fact>
          <Fact label={t('job.duration')}>
            <span class="tabular" data-testid="duration">{rt == null ? '—' : fmtDuration(rt)}</span>
          </Fact>
          <Fact label={t('job.attempts')}>
            <span title={t('job.attemptHelp')} data-testid="attempt">
              #{job.attempt}
              {job.failedAttempts > 0 && <span class="muted"> · {t('job.attemptsFailed', { n: job.failedAttempts })}</span>}
            </span>
          </Fact>
          {job.deadlineAtMs && isActive(job.state) && (
            <Fact label={t('job.deadline')}>
              <span title={fmtTime(job.deadlineAtMs)}>{t('job.timeLeft', { d: fmtDuration(job.deadlineAtMs - now) })}</span>
            </Fact>
          )}
          {job.priority !== 0 && <Fact label={t('job.priority')}>{job.priority}</Fact>}
          <Fact label={t('job.reason')} wide={(job.reason || '').length > 30}>
            <span data-testid="exit-reason">{job.reason || '—'}</span>
          </Fact>
        </dl>
      </div>

      <div class="tabs" role="tablist">
        {TABS.map((x) => (
          <button key={x} role="tab" aria-selected={tab === x} class={`tab${tab === x ? ' active' : ''}`}
            onClick={() => setQuery('tab', x === 'overview' ? null : x)} data-testid={`tab-${x}`}>
            {t(`job.tab.${x}` as 'job.tab.overview')}
          </button>
        ))}
      </div>

      {tab === 'overview' && <Overview job={job} now={now} />}
      {tab === 'logs' && <Logs job={job} />}
      {tab === 'metrics' && <Metrics job={job} />}
      {tab === 'spec' && <SpecView job={job} />}
    </div>
  );
}

function Crumbs({ name }: { name: string }) {
  return (
    <nav class="crumbs" aria-label={t('nav.breadcrumb')}>
      <Link href="/jobs">{t('nav.jobs')}</Link>
      <Icon name="chevronRight" size={14} />
      <span>{name}</span>
    </nav>
  );
}

function Fact({ label, children, wide }: { label: string; children: preact.ComponentChildren; wide?: boolean }) {
  return (
    <div class={`fact${wide ? ' fact-wide' : ''}`}>
      <dt>{label}</dt>
      <dd>{children}</dd>
    </div>
  );
}

function Overview({ job, now }: { job: JobView; now: number }) {
  const events = [...(job.events ?? [])].reverse();
  return (
    <div class="overview">
      <section class="card">
        <div class="card-head">
          <h2>{t('job.tasks')}</h2>
          <span class="muted small">
            {job.attempt > 0 && <span class="tag tag-muted">{t('job.attemptN', { n: job.attempt })}</span>} {t('job.tasksCount', { n: job.tasks.length })}
          </span>
        </div>
        {job.tasks.length === 0 ? (
          <Empty title={t('job.noTasks')} hint={pendingText(job) || undefined} />
        ) : (
          <div class="table-scroll">
            <TaskTable job={job} tasks={job.tasks} now={now} />
          </div>
        )}
        {(job.attempts ?? []).length > 0 && (
          <details class="earlier">
            <summary>{t('job.earlierAttempts', { n: job.attempts!.length })}</summary>
            {job.attempts!.map((a) => (
              <div key={a.attempt} class="table-scroll">
                <h3 class="small">{t('job.attemptN', { n: a.attempt })}</h3>
                <TaskTable job={job} tasks={a.tasks} now={now} />
              </div>
            ))}
          </details>
        )}
      </section>
      <section class="card">
        <div class="card-head">
          <h2>{t('job.events')}</h2>
        </div>
        {events.length === 0 ? (
          <Empty title={t('job.noEvents')} />
        ) : (
          <ol class="timeline" data-testid="events">
            {events.map((e) => (
              <li key={e.seq} class={`ev ev-${e.kind}`}>
                <span class="ev-dot" aria-hidden="true" />
                <div class="ev-body">
                  <div class="ev-head">
                    <span class="ev-kind">{tMaybe(`event.${e.kind}`, e.kind)}</span>
                    <time class="muted small" title={fmtTime(e.atMs)}>{fmtClock(e.atMs)}</time>
                  </div>
                  <div class="ev-msg">{e.message}</div>
                </div>
              </li>
            ))}
          </ol>
        )}
      </section>
    </div>
  );
}

function TaskTable({ job, tasks, now }: { job: JobView; tasks: TaskView[]; now: number }) {
  return (
    <table class="table tasks-table" data-testid="tasks-table">
      <thead>
        <tr>
          <th>{t('task.id')}</th>
          <th>{t('task.state')}</th>
          <th>{t('task.node')}</th>
          <th>{t('task.gpus')}</th>
          <th>{t('task.ports')}</th>
          <th class="num">{t('task.exitCode')}</th>
          <th>{t('task.runTime')}</th>
          <th>{t('task.reason')}</th>
          <th />
        </tr>
      </thead>
      <tbody>
        {tasks.map((x) => {
          const rt = runTime(x.startedAtMs, x.finishedAtMs, now);
          const ports = Object.entries(x.ports || {});
          return (
            <tr key={`${x.attempt}-${x.id}`}>
              <td class="mono">{x.id}</td>
              <td>
                <StateBadge state={x.state} />
              </td>
              <td>{x.host || '—'}</td>
              <td class="mono">{x.gpus.length ? x.gpus.join(', ') : <span class="muted">—</span>}</td>
              <td class="mono small">{ports.length ? ports.map(([l, p]) => `${l}:${p.join(',')}`).join(' ') : <span class="muted">—</span>}</td>
              <td class="num mono">
                {x.exitCode ?? (x.signal ? `SIG${x.signal}` : <span class="muted">—</span>)}
              </td>
              <td class="tabular">{rt == null ? '—' : fmtDuration(rt)}</td>
              <td class="small cell-reason">
                {x.reason || <span class="muted">—</span>}
                {x.restarts > 0 && <span class="tag tag-muted">{t('task.restarts', { n: x.restarts })}</span>}
              </td>
              <td>
                <Link class="btn btn-sm btn-ghost" href={`/jobs/${encodeURIComponent(job.id)}?tab=logs&task=${encodeURIComponent(x.id)}${x.attempt !== job.attempt ? `&attempt=${x.attempt}` : ''}`}>
                  {t('task.logs')}
                </Link>
              </td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

// ---------------------------------------------------------------- logs

const TAIL = 1000;
const MAX_CHARS = 2_000_000;

function Logs({ job }: { job: JobView }) {
  const route = useRoute();
  const attempt = route.query.has('attempt') ? Number(route.query.get('attempt')) : job.attempt;
  const tasks = attempt === job.attempt ? job.tasks : (job.attempts ?? []).find((a) => a.attempt === attempt)?.tasks ?? [];
  const taskId = route.query.get('task') || tasks[0]?.id || '';
  const task = tasks.find((x) => x.id === taskId);
  const running = task?.state === 'RUNNING' && attempt === job.attempt;
  const started = !!task && task.state !== 'WAITING';
  const [full, setFull] = useState(false);
  const [follow, setFollow] = useState(true);
  const [text, setText] = useState('');
  const [status, setStatus] = useState<FeedStatus>({ kind: 'loading' });
  const [error, setError] = useState<unknown>(null);
  const [clipped, setClipped] = useState(false);
  const pre = useRef<HTMLPreElement>(null);
  const stick = useRef(true);
  const feed = useRef<LogFeed | null>(null);
  const runningNow = useRef(running);
  runningNow.current = running;
  const followNow = useRef(follow);
  followNow.current = follow;

  useEffect(() => {
    if (!task || !started) return;
    setText('');
    setClipped(false);
    setError(null);
    stick.current = true;
    const jobId = job.id;
    const f = new LogFeed({
      path: `/jobs/${jid(jobId)}/tasks/${encodeURIComponent(task.id)}/logs`,
      query: attempt !== job.attempt ? { attempt: String(attempt) } : {},
      full,
      tail: TAIL,
      maxChars: MAX_CHARS,
      isRunning: () => runningNow.current,
      checkRunning: async () => {
        const j = await Api.job(jobId);
        return j.attempt === attempt && j.tasks.some((x) => x.id === task.id && x.state === 'RUNNING');
      },
      onText: (s, c) => {
        setText(s);
        setClipped(c);
      },
      onStatus: setStatus,
      onError: setError,
    });
    feed.current = f;
    f.start(followNow.current);
    const onVis = () => (document.hidden ? f.pause() : f.resume());
    document.addEventListener('visibilitychange', onVis);
    return () => {
      document.removeEventListener('visibilitychange', onVis);
      f.stop();
      feed.current = null;
    };
  }, [job.id, task?.id, attempt, full, started]);

  useEffect(() => feed.current?.setFollow(follow), [follow]);
  // A task that runs (again) is followed, from where the feed stopped.
  useEffect(() => {
    if (running) feed.current?.poke();
  }, [running, task?.restarts]);

  useEffect(() => {
    const el = pre.current;
    if (el && stick.current) el.scrollTop = el.scrollHeight;
  }, [text]);

  if (tasks.length === 0) {
    return (
      <div class="card">
        <Empty title={t('logs.noTasks')} hint={pendingText(job) || undefined} />
      </div>
    );
  }

  const onScroll = () => {
    const el = pre.current;
    if (el) stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
  };
  const save = () =>
    download(`/jobs/${jid(job.id)}/tasks/${encodeURIComponent(taskId)}/logs?download=true${attempt !== job.attempt ? `&attempt=${attempt}` : ''}`, `${job.id}-${taskId}.log`).catch((e) =>
      toast(errorText(e), 'error'),
    );

  return (
    <section class="card logs" data-testid="logs">
      <div class="logs-bar">
        <div class="pills" role="tablist" aria-label={t('logs.task')}>
          {tasks.map((x) => (
            <button key={x.id} role="tab" aria-selected={x.id === taskId} class={`pill${x.id === taskId ? ' active' : ''}`}
              onClick={() => setQuery('task', x.id)}>
              <span class={`dot dot-${x.state.toLowerCase()}`} aria-hidden="true" />
              {x.id}
            </button>
          ))}
        </div>
        <div class="logs-tools">
          {(job.attempts ?? []).length > 0 && (
            <select class="input input-sm" value={attempt} aria-label={t('logs.attempt')} onChange={(e) => setQuery('attempt', (e.target as HTMLSelectElement).value)}>
              {[...(job.attempts ?? []).map((a) => a.attempt), job.attempt].map((a) => (
                <option key={a} value={a}>{t('job.attemptN', { n: a })}</option>
              ))}
            </select>
          )}
          <label class="switch" title={t('logs.followHint')}>
            <input type="checkbox" checked={follow} onChange={(e) => setFollow((e.target as HTMLInputElement).checked)} />
            <span class="switch-track" aria-hidden="true" />
            <span>{t('logs.follow')}</span>
          </label>
          <button class="btn btn-sm" onClick={() => setFull(!full)} data-testid="full-log">
            {full ? t('logs.tail', { n: TAIL }) : t('logs.full')}
          </button>
          <button class="btn btn-sm" onClick={save} data-testid="download-log">
            <Icon name="download" />
            {t('logs.download')}
          </button>
        </div>
      </div>
      {error != null && <ErrorBox error={error} />}
      <div class="logs-status muted small">
        {status.kind === 'live' && running ? (
          <span class="live" data-testid="log-live">
            <span class="live-dot" aria-hidden="true" />
            {t('logs.live')}
          </span>
        ) : status.kind === 'paused' && running ? (
          <span data-testid="log-paused">{t('logs.paused')}</span>
        ) : status.kind === 'retrying' && running ? (
          <span data-testid="log-retrying">{t('logs.reconnecting', { s: Math.round(status.inMs / 1000) })}</span>
        ) : (
          <span>{task ? tMaybe(`state.${task.state}`, task.state) : ''}</span>
        )}
        {!full && <span> · {t('logs.showingTail', { n: TAIL })}</span>}
        {clipped && <span> · {t('logs.clipped')}</span>}
      </div>
      <pre ref={pre} class="log" onScroll={onScroll} data-testid="log-text" tabIndex={0}>
        {text || (task?.state === 'WAITING' ? t('logs.notStarted') : status.kind === 'loading' ? t('common.loading') : t('logs.empty'))}
      </pre>
    </section>
  );
}

// ---------------------------------------------------------------- metrics

const isResource = (name: string) => name === 'cpu' || name === 'memory' || /^gpu\d+\./.test(name);

interface ChartData {
  key: string;
  title: string;
  labels: string[];
  data: uPlot.AlignedData;
  time: boolean;
  format?: (v: number) => string;
}

/** Puts series with different x values on one x axis (uPlot wants aligned data). */
function align(series: { label: string; points: [number, number][] }[]): uPlot.AlignedData {
  const xs = new Set<number>();
  for (const s of series) for (const [x] of s.points) xs.add(x);
  const x = [...xs].sort((a, b) => a - b);
  const index = new Map(x.map((v, i) => [v, i]));
  const ys = series.map((s) => {
    const col: (number | null)[] = new Array(x.length).fill(null);
    for (const [px, py] of s.points) col[index.get(px)!] = py;
    return col;
  });
  return [x, ...ys] as uPlot.AlignedData;
}

function buildCharts(series: SeriesView[]): { training: ChartData[]; resources: ChartData[] } {
  const byName = new Map<string, SeriesView[]>();
  for (const s of series) {
    if (!s.points.length) continue;
    const list = byName.get(s.name) ?? [];
    list.push(s);
    byName.set(s.name, list);
  }
  const training: ChartData[] = [];
  for (const [name, list] of byName) {
    if (isResource(name)) continue;
    const useStep = list.every((s) => s.points.every((p) => p.step != null));
    training.push({
      key: name,
      title: name,
      labels: list.map((s) => s.task),
      time: !useStep,
      data: align(list.map((s) => ({ label: s.task, points: s.points.map((p) => [useStep ? p.step! : p.tMs / 1000, p.value] as [number, number]) }))),
    });
  }
  training.sort((a, b) => order(a.key) - order(b.key) || a.key.localeCompare(b.key));

  const res = (key: string, title: string, pick: (n: string) => boolean, label: (s: SeriesView) => string, format: (v: number) => string): ChartData | null => {
    const list = series.filter((s) => pick(s.name) && s.points.length);
    if (!list.length) return null;
    return {
      key,
      title,
      labels: list.map(label),
      time: true,
      format,
      data: align(list.map((s) => ({ label: label(s), points: s.points.map((p) => [p.tMs / 1000, p.value] as [number, number]) }))),
    };
  };
  const gpuOf = (s: SeriesView) => `${s.task} · GPU ${/^gpu(\d+)/.exec(s.name)?.[1]}`;
  const resources = [
    res('cpu', t('metrics.cpu'), (n) => n === 'cpu', (s) => s.task, (v) => fmtNumber(v, 2)),
    res('memory', t('metrics.memory'), (n) => n === 'memory', (s) => s.task, (v) => fmtBytes(v)),
    res('gpu', t('metrics.gpuUtil'), (n) => /^gpu\d+\.utilization$/.test(n), gpuOf, (v) => `${fmtNumber(v, 0)}%`),
    res('gpumem', t('metrics.gpuMemory'), (n) => /^gpu\d+\.memory$/.test(n), gpuOf, (v) => fmtBytes(v)),
  ].filter((x): x is ChartData => x != null);
  return { training, resources };
}

function order(name: string) {
  const n = name.toLowerCase();
  if (n.includes('loss')) return 0;
  if (n.includes('acc')) return 1;
  return 2;
}

function Metrics({ job }: { job: JobView }) {
  const [series, setSeries] = useState<SeriesView[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const load = async () => {
    try {
      const r = await Api.metrics(job.id);
      setSeries(r.series);
      setError(null);
    } catch (e) {
      setError(e);
    }
  };
  useEffect(() => {
    load();
  }, [job.id, job.state]);
  usePoll(load, 3000, [job.id], isActive(job.state));
  const charts = useMemo(() => (series ? buildCharts(series) : null), [series]);

  if (error != null && !series) return <ErrorBox error={error} onRetry={load} />;
  if (!charts) return <Spinner />;
  return (
    <div class="metrics" data-testid="metrics">
      <section class="card">
        <div class="card-head">
          <h2>{t('metrics.training')}</h2>
          <span class="muted small">{t('metrics.trainingHint')}</span>
        </div>
        {charts.training.length === 0 ? (
          <Empty icon={<Icon name="chart" size={28} />} title={t('metrics.noTraining')} hint={t('metrics.noTrainingHint')} />
        ) : (
          <div class="chart-grid">
            {charts.training.map((c) => (
              <Chart key={c.key} testid={`chart-${c.key}`} title={c.title} labels={c.labels} data={c.data} time={c.time} xLabel={c.time ? t('metrics.time') : t('metrics.step')} />
            ))}
          </div>
        )}
      </section>
      <section class="card">
        <div class="card-head">
          <h2>{t('metrics.resources')}</h2>
        </div>
        {charts.resources.length === 0 ? (
          <Empty icon={<Icon name="cpu" size={28} />} title={t('metrics.noResources')} hint={t('metrics.noResourcesHint')} />
        ) : (
          <div class="chart-grid">
            {charts.resources.map((c) => (
              <Chart key={c.key} testid={`chart-${c.key}`} title={c.title} labels={c.labels} data={c.data} time={c.time} format={c.format} />
            ))}
          </div>
        )}
      </section>
    </div>
  );
}

// ---------------------------------------------------------------- spec

function SpecView({ job }: { job: JobView }) {
  const [spec, setSpec] = useState<Spec | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    Api.spec(job.id).then(setSpec, setError);
  }, [job.id]);
  const text = spec ? JSON.stringify(spec, null, 2) : '';
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(text);
      toast(t('spec.copied'));
    } catch {
      toast(t('spec.copyFailed'), 'error');
    }
  };
  if (error != null) return <ErrorBox error={error} />;
  if (!spec) return <Spinner />;
  return (
    <section class="card">
      <div class="card-head">
        <h2>{t('spec.title')}</h2>
        <div class="actions">
          <button class="btn btn-sm" onClick={copy}>
            <Icon name="copy" />
            {t('spec.copy')}
          </button>
          <button class="btn btn-sm" onClick={() => cloneJob(job)}>
            <Icon name="edit" />
            {t('spec.cloneEdit')}
          </button>
        </div>
      </div>
      <p class="muted small">{t('spec.hint')}</p>
      <CodeEditor value={text} readOnly height="auto" label={t('spec.title')} />
    </section>
  );
}
