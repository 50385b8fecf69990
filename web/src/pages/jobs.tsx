import { useEffect, useRef, useState } from 'preact/hooks';
import { Api, JOB_STATES, type JobList, type JobView, type UserView } from '../api';
import { t } from '../i18n';
import { pendingText } from '../pending';
import { fmtAgo, fmtDuration, fmtTime, runTime } from '../format';
import { Link, navigate, setQuery, useRoute } from '../router';
import { Empty, ErrorBox, Icon, StateBadge, usePoll, useNow } from '../components/ui';
import { cloneJob, deleteJob, isActive, isFinished, stopJob } from './actions';

const PAGE_SIZES = [20, 50, 100];

export function JobsPage({ me }: { me: UserView | null }) {
  const route = useRoute();
  const state = route.query.get('state') || '';
  const q = route.query.get('q') || '';
  const [limit, setLimit] = useState(20);
  // The `before` cursor of each page seen so far; the last one is shown.
  const [cursors, setCursors] = useState<(number | undefined)[]>([undefined]);
  const [data, setData] = useState<JobList | null>(null);
  const [error, setError] = useState<unknown>(null);
  const now = useNow(1000);
  const seq = useRef(0);
  const before = cursors[cursors.length - 1];

  const load = async () => {
    const mine = ++seq.current;
    try {
      // The text filter runs on the server, over every page.
      const r = await Api.jobs({ state: state || undefined, limit, before, name: q.trim() || undefined });
      if (mine !== seq.current) return;
      setData(r);
      setError(null);
    } catch (e) {
      if (mine === seq.current) setError(e);
    }
  };

  useEffect(() => {
    setData(null);
    load();
  }, [state, limit, before, q]);
  useEffect(() => setCursors([undefined]), [state, limit, q]);
  usePoll(load, 3000, [state, limit, before, q]);

  const items = data?.items ?? [];

  const act = async (f: () => Promise<boolean>) => {
    if (await f()) load();
  };

  const showUser = !!me?.isAdmin;
  const pageNo = cursors.length;

  return (
    <div class="page">
      <div class="page-head">
        <div>
          <h1>{t('jobs.title')}</h1>
          <p class="muted">{t('jobs.subtitle')}</p>
        </div>
        <Link class="btn btn-primary" href="/submit" data-testid="new-job">
          <Icon name="plus" />
          {t('jobs.new')}
        </Link>
      </div>

      <div class="toolbar">
        <div class="search">
          <Icon name="search" />
          <input class="input" type="search" placeholder={t('jobs.search')} aria-label={t('jobs.search')} value={q}
            onInput={(e) => setQuery('q', (e.target as HTMLInputElement).value)} data-testid="job-search" />
        </div>
        <div class="segmented" role="group" aria-label={t('jobs.filterState')}>
          <button class={`seg${state === '' ? ' active' : ''}`} onClick={() => setQuery('state', null)}>{t('jobs.all')}</button>
          {JOB_STATES.map((s) => (
            <button key={s} class={`seg${state === s ? ' active' : ''}`} onClick={() => setQuery('state', s)} data-testid={`filter-${s}`}>
              {t(`state.${s}` as 'state.WAITING')}
            </button>
          ))}
        </div>
        <select class="input select-state" value={state} aria-label={t('jobs.filterState')} onChange={(e) => setQuery('state', (e.target as HTMLSelectElement).value || null)}>
          <option value="">{t('jobs.allStates')}</option>
          {JOB_STATES.map((s) => (
            <option key={s} value={s}>{t(`state.${s}` as 'state.WAITING')}</option>
          ))}
        </select>
      </div>

      {error != null && <ErrorBox error={error} onRetry={load} />}

      <div class="card table-card">
        {data == null && error == null ? (
          <SkeletonRows />
        ) : items.length === 0 ? (
          <Empty
            title={q || state ? t('jobs.noMatch') : t('jobs.empty')}
            hint={q || state ? t('jobs.noMatchHint') : t('jobs.emptyHint')}>
            {!(q || state) && (
              <Link class="btn btn-primary" href="/submit">
                <Icon name="plus" />
                {t('jobs.new')}
              </Link>
            )}
          </Empty>
        ) : (
          <table class="table jobs-table" data-testid="jobs-table">
            <thead>
              <tr>
                <th>{t('jobs.col.name')}</th>
                {showUser && <th>{t('jobs.col.user')}</th>}
                <th>{t('jobs.col.submitted')}</th>
                <th>{t('jobs.col.runTime')}</th>
                <th>{t('jobs.col.queue')}</th>
                <th>{t('jobs.col.state')}</th>
                <th class="num">{t('jobs.col.gpus')}</th>
                <th class="actions-col">{t('jobs.col.actions')}</th>
              </tr>
            </thead>
            <tbody>
              {items.map((j) => (
                <JobRow key={j.id} job={j} now={now} showUser={showUser} gpus={j.totalGpus} onAct={act} />
              ))}
            </tbody>
          </table>
        )}
      </div>

      <div class="pager">
        <span class="muted" data-testid="page-no">
          {t('jobs.page', { n: pageNo })}
          {data && ` · ${t('jobs.shown', { n: items.length })}`}
        </span>
        <div class="pager-buttons">
          <select class="input input-sm" value={limit} aria-label={t('jobs.pageSize')} onChange={(e) => setLimit(Number((e.target as HTMLSelectElement).value))}>
            {PAGE_SIZES.map((n) => (
              <option key={n} value={n}>{t('jobs.perPage', { n })}</option>
            ))}
          </select>
          <button class="btn btn-sm" disabled={cursors.length <= 1} onClick={() => setCursors((c) => c.slice(0, -1))} data-testid="newer">
            <Icon name="chevronLeft" />
            {t('jobs.newer')}
          </button>
          <button class="btn btn-sm" disabled={!data?.next} onClick={() => data?.next && setCursors((c) => [...c, data.next!])} data-testid="older">
            {t('jobs.older')}
            <Icon name="chevronRight" />
          </button>
        </div>
      </div>
    </div>
  );
}

function JobRow({ job, now, showUser, gpus, onAct }: { job: JobView; now: number; showUser: boolean; gpus?: number; onAct: (f: () => Promise<boolean>) => void }) {
  const rt = runTime(job.startedAtMs, job.finishedAtMs, now);
  const tip = job.state === 'WAITING' ? pendingText(job) : job.reason;
  const open = (e: MouseEvent) => {
    const el = e.target as HTMLElement;
    if (el.closest('a,button,select,input')) return;
    navigate(`/jobs/${encodeURIComponent(job.id)}`);
  };
  return (
    <tr class="clickable" onClick={open} data-testid={`job-row-${job.name}`} data-state={job.state}>
      <td class="cell-name" data-label={t('jobs.col.name')}>
        <Link href={`/jobs/${encodeURIComponent(job.id)}`} class="job-link">{job.name}</Link>
        {job.format !== 'kiln' && <span class="tag tag-muted">{job.format}</span>}
      </td>
      {showUser && <td data-label={t('jobs.col.user')}>{job.user}</td>}
      <td data-label={t('jobs.col.submitted')} title={fmtTime(job.submittedAtMs)}>{fmtAgo(job.submittedAtMs, now)}</td>
      <td data-label={t('jobs.col.runTime')} class="tabular">{rt == null ? <span class="muted">—</span> : fmtDuration(rt)}</td>
      <td data-label={t('jobs.col.queue')}>{job.queue}</td>
      <td data-label={t('jobs.col.state')} class="cell-state">
        <StateBadge state={job.state} tip={tip} />
        {job.state === 'WAITING' && pendingText(job) && <div class="sub muted pending-reason">{pendingText(job)}</div>}
      </td>
      <td data-label={t('jobs.col.gpus')} class="num tabular">{gpus ?? <span class="muted">·</span>}</td>
      <td class="cell-meta" aria-hidden="true">
        {showUser && <span>{job.user}</span>}
        <span>{job.queue}</span>
        <span title={fmtTime(job.submittedAtMs)}>{fmtAgo(job.submittedAtMs, now)}</span>
        {rt != null && <span class="tabular">{fmtDuration(rt)}</span>}
        {gpus != null && gpus > 0 && <span>{t('submit.totalGpus', { n: gpus })}</span>}
        {job.state === 'WAITING' && pendingText(job) && <span class="meta-reason">{pendingText(job)}</span>}
      </td>
      <td class="actions-col">
        <div class="row-actions">
          {isActive(job.state) && (
            <button class="icon-btn danger" title={t('action.stop')} aria-label={t('action.stop')} disabled={job.state === 'STOPPING'}
              onClick={() => onAct(() => stopJob(job))} data-testid="row-stop">
              <Icon name="stop" />
            </button>
          )}
          <button class="icon-btn" title={t('action.clone')} aria-label={t('action.clone')} onClick={() => cloneJob(job)} data-testid="row-clone">
            <Icon name="copy" />
          </button>
          {isFinished(job.state) && (
            <button class="icon-btn danger" title={t('action.delete')} aria-label={t('action.delete')} onClick={() => onAct(() => deleteJob(job))} data-testid="row-delete">
              <Icon name="trash" />
            </button>
          )}
        </div>
      </td>
    </tr>
  );
}

function SkeletonRows() {
  return (
    <div class="skeleton-list" aria-busy="true" aria-label={t('common.loading')}>
      {[0, 1, 2, 3, 4].map((i) => (
        <div key={i} class="skeleton-row">
          <span class="sk sk-w40" />
          <span class="sk sk-w15" />
          <span class="sk sk-w10" />
          <span class="sk sk-w15" />
        </div>
      ))}
    </div>
  );
}
