// Why a job waits, in the reader's language: the server sends the reason as
// data (`pendingDetail`) beside its English words (`pendingReason`).
import type { JobView, PendingDetail, Missing, Share } from './api';
import { fmtBytes, fmtClock } from './format';
import { t } from './i18n';

const mib = (n: number) => fmtBytes(n * 1024 * 1024);

function gpus(n: number, type?: string | null): string {
  return type ? t('pending.gpusType', { n, type }) : t('pending.gpus', { n });
}

const cpus = (n: number) => t('pending.cpus', { n });

function missing(m: Missing): string {
  switch (m.resource) {
    case 'gpus':
      return t('pending.missingGpus', { need: gpus(m.need, m.gpuType), free: m.free });
    case 'cpus':
      return t('pending.missingCpus', { cpuCount: cpus(m.need), free: m.free });
    case 'memory':
      return t('pending.missingMemory', { need: mib(m.needMb), free: mib(m.freeMb) });
  }
}

/** "the queue uses 6 of its 8 GPUs, 2 lent to nlp until it needs them". */
function shareText(s: Share): string {
  let text = t('pending.share', { used: s.usedGpus, quota: gpus(s.quotaGpus) });
  if (s.borrowedGpus > 0) text += t('pending.shareBorrowed', { n: s.borrowedGpus });
  if (s.lentGpus > 0) text += t('pending.shareLent', { n: s.lentGpus, to: s.lentTo.join(t('pending.listSep')) });
  return text;
}

export function pendingDetailText(d: PendingDetail): string {
  switch (d.code) {
    case 'taskTooBig':
      return t('pending.taskTooBig', { task: d.task, gpus: gpus(d.gpus, d.gpuType), cpuCount: cpus(d.cpus), memory: mib(d.memoryMb) });
    case 'jobTooBig':
      return t('pending.jobTooBig', { gpuCount: gpus(d.gpus), cpuCount: cpus(d.cpus), memory: mib(d.memoryMb) });
    default: {
      let place = t('pending.place', { ahead: d.ahead, queue: d.queue });
      if (d.share) place += t('pending.listSep') + shareText(d.share);
      switch (d.code) {
        case 'short':
          return t('pending.short', { missing: d.missing.map(missing).join(t('pending.listSep')), place });
        case 'scattered':
          return t('pending.scattered', { place });
        case 'behindHead':
          return t('pending.behindHead', { head: d.head, place });
        case 'wouldDelay':
          return t('pending.wouldDelay', { head: d.head, place });
        case 'userLimit':
          return t('pending.userLimit', { user: d.user, limit: gpus(d.limit), queue: d.queue, running: d.running, need: d.need, place });
        case 'overQuota':
          return t('pending.overQuota', { queue: d.queue, need: gpus(d.need), place });
        case 'preempting':
          return t('pending.preempting', { jobs: d.jobs.join(t('pending.listSep')), place });
        case 'draining':
          return t('pending.draining', { jobs: d.jobs.join(t('pending.listSep')), until: fmtClock(d.untilMs), place });
      }
    }
  }
}

/** The reason a waiting job waits, translated when the server gave it as data. */
export function pendingText(job: JobView): string | null {
  if (job.state !== 'WAITING') return null;
  if (job.pendingDetail) return pendingDetailText(job.pendingDetail);
  return job.pendingReason ?? null;
}
