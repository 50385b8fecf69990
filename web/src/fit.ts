// Whether a job from the submit form could ever run on this cluster, checked
// in the browser as the user types: the server refuses such a job with 422
// (kiln-sched's fit rules); this says so before the user presses Submit.
// Only what the form can judge without parsing quantities: GPUs, their
// model, CPUs. The server's answer stays the authority.
import type { NodeInfo, Spec } from './api';
import { t } from './i18n';

export interface FitWarning {
  path: string;
  message: string;
}

/** The scheduler's rule: a model is matched case-insensitively as a substring. */
const wants = (type: string | undefined, model: string) => !type || model.toLowerCase().includes(type.toLowerCase());

export function fitWarnings(spec: Spec, nodes: NodeInfo[]): FitWarning[] {
  // Nothing known yet: nothing to measure against.
  if (nodes.length === 0) return [];
  const models = [...new Set(nodes.flatMap((n) => n.gpus.map((g) => g.model)))];
  const largestCpus = Math.max(...nodes.map((n) => n.cpus));
  const out: FitWarning[] = [];
  let jobTypeSaid = false;
  spec.roles.forEach((r, i) => {
    const gpus = r.gpus ?? 0;
    const type = r.gpuType || spec.gpuType || undefined;
    if (gpus > 0 && type && !models.some((m) => wants(type, m))) {
      const jobWide = !r.gpuType;
      if (!(jobWide && jobTypeSaid)) {
        out.push({
          path: jobWide ? 'gpuType' : `roles[${i}].gpuType`,
          message: models.length ? t('fit.gpuType', { type, models: models.join(', ') }) : t('fit.noGpus', { type }),
        });
      }
      jobTypeSaid ||= jobWide;
    } else if (gpus > 0) {
      const largest = Math.max(...nodes.map((n) => n.gpus.filter((g) => wants(type, g.model)).length));
      if (gpus > largest) out.push({ path: `roles[${i}].gpus`, message: t('fit.gpus', { n: gpus, largest }) });
    }
    const cpus = r.cpus ?? 0;
    if (cpus > largestCpus) out.push({ path: `roles[${i}].cpus`, message: t('fit.cpus', { n: cpus, largest: largestCpus }) });
  });
  return out;
}
