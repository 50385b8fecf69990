// Stop, clone, delete and extend: shared by the job list and a job's page.
import { Api, type JobView } from '../api';
import { t } from '../i18n';
import { navigate } from '../router';
import { confirmDialog, errorText, promptDialog, toast } from '../components/ui';

export const isActive = (s: string) => s === 'WAITING' || s === 'RUNNING' || s === 'STOPPING';
export const isFinished = (s: string) => s === 'SUCCEEDED' || s === 'FAILED' || s === 'STOPPED';

export async function stopJob(job: JobView): Promise<boolean> {
  const ok = await confirmDialog({
    title: t('action.stopTitle'),
    body: t('action.stopBody', { id: job.id }),
    ok: t('action.stop'),
    danger: true,
  });
  if (!ok) return false;
  try {
    await Api.stop(job.id);
    toast(t('action.stopped', { id: job.id }));
    return true;
  } catch (e) {
    toast(errorText(e), 'error');
    return false;
  }
}

export async function deleteJob(job: JobView): Promise<boolean> {
  const ok = await confirmDialog({
    title: t('action.deleteTitle'),
    body: t('action.deleteBody', { id: job.id }),
    ok: t('action.delete'),
    danger: true,
  });
  if (!ok) return false;
  try {
    await Api.remove(job.id);
    toast(t('action.deleted', { id: job.id }));
    return true;
  } catch (e) {
    toast(errorText(e), 'error');
    return false;
  }
}

export function cloneJob(job: JobView) {
  navigate(`/submit?clone=${encodeURIComponent(job.id)}`);
}

/** Adds time to a running job's max duration, or sets one when it has none. */
export async function extendJob(job: JobView): Promise<boolean> {
  const hasLimit = job.deadlineAtMs != null;
  const v = hasLimit
    ? await promptDialog({
        title: t('action.extendTitle'),
        body: t('action.extendBody', { id: job.id }),
        ok: t('action.extend'),
        input: { value: '1h', label: t('action.extendBy'), placeholder: '1h, 30m, 1d' },
      })
    : await promptDialog({
        title: t('action.setLimitTitle'),
        body: t('action.setLimitBody', { id: job.id }),
        ok: t('action.setLimit'),
        input: { value: '2h', label: t('action.setLimitLabel'), placeholder: '2h, 90m, 1d' },
      });
  if (!v) return false;
  try {
    if (hasLimit) {
      await Api.extend(job.id, v);
      toast(t('action.extended', { id: job.id, by: v }));
    } else {
      await Api.setMaxDuration(job.id, v);
      toast(t('action.limitSet', { id: job.id, d: v }));
    }
    return true;
  } catch (e) {
    toast(errorText(e), 'error');
    return false;
  }
}
