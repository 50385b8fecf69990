import { Fragment } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { Api, type Cluster, type NodeInfo, type QueueView, type UserView } from '../api';
import { t } from '../i18n';
import { fmtMb } from '../format';
import { Link } from '../router';
import { Empty, ErrorBox, Icon, Spinner, usePoll } from '../components/ui';
import { QueuesSection, keepUnchanged } from './queues';

export function ClusterPage({ me }: { me: UserView | null }) {
  const [c, setC] = useState<Cluster | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [queues, setQueues] = useState<QueueView[] | null>(null);
  const [queuesError, setQueuesError] = useState<unknown>(null);
  const load = async () => {
    // Nodes and queues together, each shown (or its error) on its own.
    const [nodes, qs] = await Promise.allSettled([Api.nodes(), Api.queues()]);
    if (nodes.status === 'fulfilled') {
      setC(nodes.value);
      setError(null);
    } else setError(nodes.reason);
    if (qs.status === 'fulfilled') {
      setQueues((prev) => keepUnchanged(prev, qs.value));
      setQueuesError(null);
    } else setQueuesError(qs.reason);
  };
  useEffect(() => {
    load();
  }, []);
  usePoll(load, 5000, []);

  const totals = c
    ? c.nodes.reduce(
        (a, n) => ({
          gpus: a.gpus + n.gpus.length,
          gpusUsed: a.gpusUsed + Object.keys(n.gpuJobs || {}).length,
          cpus: a.cpus + n.cpus,
          cpusUsed: a.cpusUsed + n.cpusAllocated,
          mem: a.mem + n.memoryMb,
          memUsed: a.memUsed + n.memoryMbAllocated,
        }),
        { gpus: 0, gpusUsed: 0, cpus: 0, cpusUsed: 0, mem: 0, memUsed: 0 },
      )
    : null;

  return (
    <div class="page">
      <div class="page-head">
        <div>
          <h1>{t('cluster.title')}</h1>
          <p class="muted">{t('cluster.subtitle')}</p>
        </div>
      </div>
      {error != null && <ErrorBox error={error} onRetry={load} />}
      {!c || !totals ? (
        error == null && <Spinner />
      ) : (
        <>
          <div class="stats" data-testid="cluster-stats">
            <Stat icon="gpu" label={t('cluster.gpus')} value={`${totals.gpusUsed} / ${totals.gpus}`} sub={t('cluster.inUse')} pct={totals.gpus ? totals.gpusUsed / totals.gpus : 0} />
            <Stat icon="cpu" label={t('cluster.cpus')} value={`${totals.cpusUsed} / ${totals.cpus}`} sub={t('cluster.allocated')} pct={totals.cpus ? totals.cpusUsed / totals.cpus : 0} />
            <Stat icon="memory" label={t('cluster.memory')} value={`${fmtMb(totals.memUsed)} / ${fmtMb(totals.mem)}`} sub={t('cluster.allocated')} pct={totals.mem ? totals.memUsed / totals.mem : 0} />
            <Stat icon="queue" label={t('cluster.queue')} value={String(c.waiting)} sub={t('cluster.runningN', { n: c.running })} />
          </div>
          <QueuesSection queues={queues} error={queuesError} me={me} onReload={load} />
          {c.nodes.length === 0 ? (
            <Empty title={t('cluster.noNodes')} />
          ) : (
            c.nodes.map((n) => <NodeCard key={n.name} node={n} />)
          )}
        </>
      )}
    </div>
  );
}

function Stat({ icon, label, value, sub, pct }: { icon: string; label: string; value: string; sub: string; pct?: number }) {
  return (
    <div class="card stat">
      <div class="stat-head">
        <Icon name={icon} />
        <span>{label}</span>
      </div>
      <div class="stat-value tabular">
        {/* "768 MiB / 16 GiB" wraps, on a phone, only between its two sizes. */}
        {value.split(' / ').map((part, i) => (
          <Fragment key={i}>
            {i > 0 && ' '}
            <span class="nowrap">{i > 0 ? `/ ${part}` : part}</span>
          </Fragment>
        ))}
      </div>
      <div class="muted small">{sub}</div>
      {pct != null && (
        <div class="bar" aria-hidden="true">
          <span class={`bar-fill${pct > 0.9 ? ' bar-warn' : ''}`} style={{ width: `${Math.round(pct * 100)}%` }} />
        </div>
      )}
    </div>
  );
}

function NodeCard({ node }: { node: NodeInfo }) {
  return (
    <section class="card node" data-testid={`node-${node.name}`}>
      <div class="card-head">
        <h2>
          <Icon name="server" />
          {node.name}
        </h2>
        <div class="node-meta muted small">
          <span>{t('cluster.cpusOf', { used: node.cpusAllocated, total: node.cpus })}</span>
          <span>{t('cluster.memOf', { used: fmtMb(node.memoryMbAllocated), total: fmtMb(node.memoryMb) })}</span>
          {node.gpuSource && <span>{t('cluster.gpuSource', { s: node.gpuSource })}</span>}
          {node.limits && <span>{t('cluster.limits', { s: node.limits })}</span>}
        </div>
      </div>
      {(node.controllers ?? []).length > 0 && (
        <ul class="controllers small" data-testid="controllers">
          {(node.controllers ?? []).map((c) => (
            <li key={c.controller} class={c.enforced ? 'ok' : 'warn'} title={c.detail}>
              <Icon name={c.enforced ? 'check' : 'alert'} />
              {t(c.enforced ? 'cluster.controllerOn' : 'cluster.controllerOff', { c: c.controller })}
              {!c.enforced && <span class="muted"> — {c.detail}</span>}
            </li>
          ))}
        </ul>
      )}
      {(node.notes ?? []).map((n) => (
        <div key={n} class="alert alert-warn">
          <Icon name="alert" />
          <div class="alert-body">{n}</div>
        </div>
      ))}
      {node.gpus.length === 0 ? (
        <p class="muted">{t('cluster.noGpus')}</p>
      ) : (
        <div class="table-scroll">
          <table class="table gpus-table" data-testid="gpus-table">
            <thead>
              <tr>
                <th>{t('cluster.gpu')}</th>
                <th>{t('cluster.model')}</th>
                <th class="num">{t('cluster.gpuMemory')}</th>
                <th>{t('cluster.heldBy')}</th>
              </tr>
            </thead>
            <tbody>
              {node.gpus.map((g) => {
                const job = node.gpuJobs?.[String(g.index)];
                return (
                  <tr key={g.index}>
                    <td class="mono">GPU {g.index}</td>
                    <td>{g.model}</td>
                    <td class="num tabular">{fmtMb(g.memoryMb)}</td>
                    <td>
                      {job ? (
                        <Link href={`/jobs/${encodeURIComponent(job)}`} class="held">
                          <span class="dot dot-running" aria-hidden="true" />
                          {job}
                        </Link>
                      ) : (
                        <span class="free">
                          <span class="dot dot-free" aria-hidden="true" />
                          {t('cluster.free')}
                        </span>
                      )}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
