// The cluster page's queues: each queue's quota, what it uses, borrows and
// lends, its users' shares and its waiting jobs; the admin adds, changes
// and removes queues here.
import { Fragment } from 'preact';
import { memo } from 'preact/compat';
import { useCallback, useRef, useState } from 'preact/hooks';
import { Api, ApiError, session, type FieldError, type GpuQuota, type QueueBody, type QueuePatch, type QueueView, type UserView } from '../api';
import { getLang, t, type Lang } from '../i18n';
import { fmtMb } from '../format';
import { Link } from '../router';
import { ErrorBox, Icon, Modal, Spinner, confirmDialog, errorText, toast } from '../components/ui';
import { Field } from './submit';
import { pendingDetailText } from '../pending';

/** The new list with every queue that did not change kept as the same
 * object (and the list itself when none did), so unchanged rows are not
 * rendered again on each refresh. */
export function keepUnchanged(prev: QueueView[] | null, next: QueueView[]): QueueView[] {
  if (!prev) return next;
  const old = new Map(prev.map((q) => [q.name, q]));
  const out = next.map((q) => {
    const o = old.get(q.name);
    return o && JSON.stringify(o) === JSON.stringify(q) ? o : q;
  });
  return out.length === prev.length && out.every((q, i) => q === prev[i]) ? prev : out;
}

const gpuTotal = (gpus: GpuQuota[]) => gpus.reduce((a, g) => a + g.count, 0);

function gpuText(gpus: GpuQuota[]): string {
  if (!gpus.length) return t('queues.noGpus');
  return gpus.map((g) => (g.model ? t('queues.gpusModel', { n: g.count, model: g.model }) : t('queues.gpusAny', { n: g.count }))).join(', ');
}

const hours = (n: number) => new Intl.NumberFormat(getLang(), { minimumFractionDigits: 2, maximumFractionDigits: 2 }).format(n);
const percent = (n: number) => new Intl.NumberFormat(getLang(), { style: 'percent', maximumFractionDigits: 1 }).format(n);

/** Whether the signed-in user may open a job's page (their own, or any for the admin). */
const mayOpen = (job: string, me: UserView | null) => !!me?.isAdmin || job.startsWith(`${me?.name ?? session.name}~`);

export function QueuesSection({ queues, error, me, onReload }: { queues: QueueView[] | null; error: unknown; me: UserView | null; onReload: () => void }) {
  const [open, setOpen] = useState<Set<string>>(new Set());
  const [editing, setEditing] = useState<QueueView | 'new' | null>(null);
  const [refused, setRefused] = useState<string | null>(null);
  const admin = !!me?.isAdmin;
  const reload = useRef(onReload);
  reload.current = onReload;

  const toggle = useCallback((name: string) => setOpen((s) => {
    const n = new Set(s);
    if (n.has(name)) n.delete(name);
    else n.add(name);
    return n;
  }), []);
  const edit = useCallback((q: QueueView) => setEditing(q), []);
  const remove = useCallback(async (q: QueueView) => {
    const ok = await confirmDialog({ title: t('queues.removeTitle', { name: q.name }), body: t('queues.removeBody'), ok: t('common.remove'), danger: true });
    if (!ok) return;
    try {
      await Api.removeQueue(q.name);
      setRefused(null);
      toast(t('queues.removed', { name: q.name }));
      reload.current();
    } catch (e) {
      // A 409 (jobs still wait or run in it) says what to do; it stays until closed.
      setRefused(errorText(e));
    }
  }, []);

  const cols = admin ? 7 : 6;
  const lang = getLang();
  return (
    <section class="card queues" data-testid="queues">
      <div class="card-head">
        <div>
          <h2>
            <Icon name="queue" />
            {t('queues.title')}
          </h2>
          <p class="muted small">{t('queues.subtitle')}</p>
        </div>
        {admin && (
          <button class="btn btn-sm" onClick={() => setEditing('new')} data-testid="queue-add">
            <Icon name="plus" />
            {t('queues.add')}
          </button>
        )}
      </div>
      {refused && (
        <div class="alert alert-error" role="alert" data-testid="queue-refused">
          <Icon name="alert" />
          <div class="alert-body">{refused}</div>
          <button class="icon-btn" onClick={() => setRefused(null)} aria-label={t('common.close')}><Icon name="x" /></button>
        </div>
      )}
      {error != null && <ErrorBox error={error} onRetry={onReload} />}
      {!queues ? (
        error == null && <Spinner />
      ) : (
        <div class="table-scroll">
          <table class="table queues-table" data-testid="queues-table">
            <thead>
              <tr>
                <th>{t('queues.col.name')}</th>
                <th>{t('queues.col.quota')}</th>
                <th>{t('queues.col.inUse')}</th>
                <th>{t('queues.col.lent')}</th>
                <th>{t('queues.col.userLimit')}</th>
                <th class="num">{t('queues.col.waiting')}</th>
                {admin && <th class="actions-col">{t('jobs.col.actions')}</th>}
              </tr>
            </thead>
            <tbody>
              {queues.map((q) => (
                <QueueRow key={q.name} q={q} open={open.has(q.name)} cols={cols} me={me} lang={lang} onToggle={toggle} onEdit={edit} onRemove={remove} />
              ))}
            </tbody>
          </table>
        </div>
      )}
      {editing && (
        <QueueDialog queue={editing === 'new' ? null : editing} onClose={() => setEditing(null)}
          onSaved={() => {
            setEditing(null);
            onReload();
          }} />
      )}
    </section>
  );
}

interface RowProps {
  q: QueueView;
  open: boolean;
  cols: number;
  me: UserView | null;
  /** Only so a language switch renders the row again. */
  lang: Lang;
  onToggle: (name: string) => void;
  onEdit: (q: QueueView) => void;
  onRemove: (q: QueueView) => void;
}

const QueueRow = memo(function QueueRow({ q, open, cols, me, onToggle, onEdit, onRemove }: RowProps) {
  const live = q.live;
  const admin = !!me?.isAdmin;
  const detailId = `queue-detail-${q.name}`;
  return (
    <Fragment>
      <tr class={`queue-row${open ? ' open' : ''}`} data-testid={`queue-row-${q.name}`}>
        <td>
          <button class="queue-toggle" onClick={() => onToggle(q.name)} aria-expanded={open} aria-controls={detailId}
            title={t(open ? 'queues.collapse' : 'queues.expand')} data-testid={`queue-toggle-${q.name}`}>
            <Icon name="chevronRight" />
            <span class="mono strong">{q.name}</span>
          </button>
          {!q.explicit && <span class="tag tag-muted" title={t('queues.remainderHelp')}>{t('queues.remainder')}</span>}
          {!q.mayUse && <span class="tag tag-muted">{t('queues.notGranted')}</span>}
        </td>
        <td data-testid="queue-quota">
          <div>{gpuText(q.quota.gpus)}</div>
          <div class="muted small nowrap">{t('queues.cpus', { n: q.quota.cpus })} · {fmtMb(q.quota.memoryMb)}</div>
        </td>
        <td class="tabular" data-testid="queue-used">
          <div>{t('queues.usedOf', { used: live?.usedGpus ?? 0, quota: gpuTotal(q.quota.gpus) })}</div>
          {!!live?.borrowedGpus && <div class="muted small">{t('queues.borrowed', { n: live.borrowedGpus })}</div>}
        </td>
        <td data-testid="queue-lent">
          {live?.lentGpus ? t('queues.lentTo', { n: live.lentGpus, to: live.lentTo.join(', ') }) : <span class="muted">—</span>}
        </td>
        <td>{q.userMaxGpus != null ? t('queues.gpuN', { n: q.userMaxGpus }) : <span class="muted">{t('queues.noLimit')}</span>}</td>
        <td class="num tabular" data-testid="queue-waiting">{live?.waitingTotal ?? 0}</td>
        {admin && (
          <td class="actions-col">
            <div class="row-actions">
              <button class="icon-btn" onClick={() => onEdit(q)} title={t('queues.edit', { name: q.name })} aria-label={t('queues.edit', { name: q.name })} data-testid={`queue-edit-${q.name}`}>
                <Icon name="edit" />
              </button>
              {q.explicit && (
                <button class="icon-btn danger" onClick={() => onRemove(q)} title={t('queues.remove', { name: q.name })} aria-label={t('queues.remove', { name: q.name })} data-testid={`queue-remove-${q.name}`}>
                  <Icon name="trash" />
                </button>
              )}
            </div>
          </td>
        )}
      </tr>
      {open && (
        <tr class="queue-detail" id={detailId} data-testid={detailId}>
          <td colSpan={cols}>
            <QueueDetail q={q} me={me} />
          </td>
        </tr>
      )}
    </Fragment>
  );
});

function QueueDetail({ q, me }: { q: QueueView; me: UserView | null }) {
  const live = q.live;
  const users = live?.users ?? [];
  const waiting = live?.waiting ?? [];
  const more = (live?.waitingTotal ?? 0) - waiting.length;
  return (
    <div class="queue-detail-body">
      <p class="muted small">
        {q.name === 'default' ? t('queues.grantedEveryone') : q.users.length ? t('queues.grantedTo', { users: q.users.join(', ') }) : t('queues.grantedNone')}
      </p>
      <div class="queue-detail-grid">
        <div>
          <h3>{t('queues.users')}</h3>
          {users.length === 0 ? (
            <p class="muted small">{t('queues.noUsers')}</p>
          ) : (
            <table class="table table-compact" data-testid="queue-users">
              <thead>
                <tr>
                  <th>{t('queues.col.user')}</th>
                  <th class="num">{t('queues.col.share')}</th>
                  <th class="num">{t('queues.col.usage')}</th>
                  <th class="num">{t('queues.col.running')}</th>
                </tr>
              </thead>
              <tbody>
                {users.map((u) => (
                  <tr key={u.user}>
                    <td>{u.user}</td>
                    <td class="num tabular">{percent(u.share)}</td>
                    <td class="num tabular">{hours(u.usageGpuHours)}</td>
                    <td class="num tabular">{u.runningGpus}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </div>
        <div>
          <h3>{t('queues.waitingJobs')}</h3>
          {waiting.length === 0 ? (
            <p class="muted small">{t('queues.noWaiting')}</p>
          ) : (
            <ol class="queue-waiting" data-testid="queue-waiting-jobs">
              {waiting.map((w) => (
                <li key={w.job}>
                  {mayOpen(w.job, me) ? (
                    <Link href={`/jobs/${encodeURIComponent(w.job)}`} class="mono">{w.job}</Link>
                  ) : (
                    <span class="mono">{w.job}</span>
                  )}
                  {(w.detail || w.reason) && <div class="muted small">{w.detail ? pendingDetailText(w.detail) : w.reason}</div>}
                </li>
              ))}
            </ol>
          )}
          {more > 0 && <p class="muted small">{t('queues.moreWaiting', { n: more })}</p>}
        </div>
      </div>
    </div>
  );
}

// ---- the admin's form ----

interface GpuRow {
  count: string;
  model: string;
}

const MEM_UNITS = { Gi: 1024, Mi: 1 } as const;

function splitUsers(s: string): string[] {
  return [...new Set(s.split(/[\s,，、]+/).map((x) => x.trim()).filter(Boolean))];
}

const intOrUndefined = (s: string) => (s.trim() === '' ? undefined : Number(s));

function QueueDialog({ queue, onClose, onSaved }: { queue: QueueView | null; onClose: () => void; onSaved: () => void }) {
  // The implicit `default` (no quota of its own) is given one by adding it.
  const creating = !queue || !queue.explicit;
  const mem = queue?.quota.memoryMb;
  const [name, setName] = useState(queue?.name ?? '');
  const [gpus, setGpus] = useState<GpuRow[]>(
    queue?.quota.gpus.length ? queue.quota.gpus.map((g) => ({ count: String(g.count), model: g.model ?? '' })) : [{ count: '1', model: '' }],
  );
  // CPUs and memory are left empty for a new queue: the server gives it the
  // GPUs' share of the cluster. An existing one shows what it has now.
  const [cpus, setCpus] = useState(queue ? String(queue.quota.cpus) : '');
  const [memUnit, setMemUnit] = useState<keyof typeof MEM_UNITS>(mem != null && mem % 1024 !== 0 ? 'Mi' : 'Gi');
  const [memory, setMemory] = useState(mem != null ? String(mem % 1024 === 0 ? mem / 1024 : mem) : '');
  const [userMax, setUserMax] = useState(queue?.userMaxGpus != null ? String(queue.userMaxGpus) : '');
  const [users, setUsers] = useState((queue?.users ?? []).join(', '));
  const [errors, setErrors] = useState<FieldError[]>([]);
  const [busy, setBusy] = useState(false);

  const at = (...paths: string[]) => errors.filter((e) => paths.includes(e.path)).map((e) => e.message);
  const atPrefix = (prefix: string) => errors.filter((e) => e.path.startsWith(prefix)).map((e) => e.message);
  const known = (p: string) => /^(name|quota\.(cpus|memoryMb|gpus(\[\d+\]\.(count|model))?)|userMaxGpus|(users|addUsers|removeUsers)(\[\d+\])?)$/.test(p);
  const other = errors.filter((e) => !e.path || !known(e.path));

  const save = async () => {
    setBusy(true);
    const quota: QueueBody['quota'] = {
      gpus: gpus
        .filter((g) => g.count.trim() !== '' || g.model.trim() !== '')
        .map((g) => ({ count: Number(g.count || 0), ...(g.model.trim() ? { model: g.model.trim() } : {}) })),
    };
    const c = intOrUndefined(cpus);
    if (c !== undefined) quota.cpus = c;
    const m = intOrUndefined(memory);
    if (m !== undefined) quota.memoryMb = Math.round(m * MEM_UNITS[memUnit]);
    const limit = intOrUndefined(userMax);
    const wanted = splitUsers(users);
    try {
      if (creating) {
        const body: QueueBody = { name: name.trim(), quota, users: wanted };
        if (limit !== undefined) body.userMaxGpus = limit;
        await Api.addQueue(body);
        toast(t('queues.created', { name: body.name }));
      } else {
        const before = queue!.users;
        const patch: QueuePatch = {
          quota,
          userMaxGpus: limit ?? null,
          addUsers: wanted.filter((u) => !before.includes(u)),
          removeUsers: before.filter((u) => !wanted.includes(u)),
        };
        await Api.patchQueue(queue!.name, patch);
        toast(t('queues.saved', { name: queue!.name }));
      }
      onSaved();
    } catch (e) {
      if (e instanceof ApiError && e.problem.errors?.length) setErrors(e.problem.errors);
      else if (e instanceof ApiError && e.status === 409 && creating) setErrors([{ path: 'name', message: e.problem.detail }]);
      else setErrors([{ path: '', message: errorText(e) }]);
    } finally {
      setBusy(false);
    }
  };

  const setGpu = (i: number, k: keyof GpuRow, v: string) => setGpus(gpus.map((g, j) => (j === i ? { ...g, [k]: v } : g)));
  const val = (e: Event) => (e.target as HTMLInputElement).value;

  return (
    <Modal title={queue && !creating ? t('queues.editTitle', { name: queue.name }) : t('queues.addTitle')} onClose={onClose} wide
      footer={
        <>
          <button class="btn" onClick={onClose}>{t('common.cancel')}</button>
          <button class="btn btn-primary" onClick={save} disabled={busy || !name.trim()} data-testid="queue-save">
            {creating ? t('queues.create') : t('queues.save')}
          </button>
        </>
      }>
      <div class="queue-form" data-testid="queue-form"
        onKeyDown={(e) => {
          // Enter in a text or number field saves, as in a form.
          if (e.key === 'Enter' && e.target instanceof HTMLInputElement && !busy && name.trim()) {
            e.preventDefault();
            save();
          }
        }}>
        <div class="grid-3">
          <Field label={t('queues.name')} help={t('queues.nameHelp')} errors={at('name')} required>
            <input class="input mono" name="queue.name" value={name} disabled={!!queue} spellcheck={false} autoComplete="off"
              onInput={(e) => setName(val(e))} />
          </Field>
          <Field label={t('queues.userMax')} help={t('queues.userMaxHelp')} errors={at('userMaxGpus')}>
            <input class="input" type="number" min={0} name="queue.userMaxGpus" value={userMax} placeholder={t('queues.noLimit')} onInput={(e) => setUserMax(val(e))} />
          </Field>
          <Field label={t('queues.usersLabel')} help={t('queues.usersHelp')} errors={[...atPrefix('users'), ...atPrefix('addUsers'), ...atPrefix('removeUsers')]}>
            <input class="input" name="queue.users" value={users} placeholder="alice, bob" spellcheck={false} autoComplete="off" onInput={(e) => setUsers(val(e))} />
          </Field>
        </div>
        <div class="subsection">
          <div class="subsection-head">
            <h3>{t('queues.quotaGpus')}</h3>
            <button class="btn btn-sm btn-ghost" onClick={() => setGpus([...gpus, { count: '1', model: '' }])} data-testid="queue-add-gpus">
              <Icon name="plus" />
              {t('queues.addGpus')}
            </button>
          </div>
          <div class="rows">
            {gpus.map((g, i) => (
              <div key={i} class="row-edit">
                <Field label={t('queues.gpuCount')} errors={at(`quota.gpus[${i}].count`, `quota.gpus[${i}]`)}>
                  <input class="input" type="number" min={0} name={`queue.gpus[${i}].count`} value={g.count} onInput={(e) => setGpu(i, 'count', val(e))} />
                </Field>
                <Field label={t('queues.gpuModel')} help={t('queues.gpuModelHelp')} errors={at(`quota.gpus[${i}].model`)}>
                  <input class="input" name={`queue.gpus[${i}].model`} value={g.model} placeholder={t('queues.gpuModelAny')} spellcheck={false} onInput={(e) => setGpu(i, 'model', val(e))} />
                </Field>
                <button class="icon-btn danger row-remove" aria-label={t('common.remove')} title={t('common.remove')} onClick={() => setGpus(gpus.filter((_, j) => j !== i))}>
                  <Icon name="trash" />
                </button>
              </div>
            ))}
            {at('quota.gpus').length > 0 && <div class="field-error" role="alert" data-testid="field-error">{at('quota.gpus').map((m, i) => <div key={i}>{m}</div>)}</div>}
          </div>
        </div>
        <div class="grid-3">
          <Field label={t('queues.cpusLabel')} help={t('queues.shareHelp')} errors={at('quota.cpus')}>
            <input class="input" type="number" min={0} name="queue.cpus" value={cpus} placeholder={t('queues.sharePlaceholder')} onInput={(e) => setCpus(val(e))} />
          </Field>
          <Field label={t('queues.memory')} help={t('queues.shareHelp')} errors={at('quota.memoryMb')}>
            <div class="input-group">
              <input class="input" type="number" min={0} name="queue.memory" value={memory} placeholder={t('queues.sharePlaceholder')} onInput={(e) => setMemory(val(e))} />
              <select class="input unit" aria-label={t('submit.unit')} value={memUnit} onChange={(e) => setMemUnit(val(e) as keyof typeof MEM_UNITS)}>
                <option value="Gi">GiB</option>
                <option value="Mi">MiB</option>
              </select>
            </div>
          </Field>
        </div>
        {other.length > 0 && (
          <div class="alert alert-error" role="alert" data-testid="queue-form-error">
            <Icon name="alert" />
            <div class="alert-body">{other.map((e, i) => <div key={i}>{e.path ? <code>{e.path}</code> : null} {e.message}</div>)}</div>
          </div>
        )}
      </div>
    </Modal>
  );
}
