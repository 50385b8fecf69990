import { useEffect, useRef, useState } from 'preact/hooks';
import { Api, download, spacePath, upload, type Dataset, type Entry, type Listing, type Usage } from '../api';
import { t } from '../i18n';
import { fmtAgo, fmtBytes, fmtTime } from '../format';
import { Link, navigate } from '../router';
import { Empty, ErrorBox, Icon, Modal, Spinner, confirmDialog, errorText, promptDialog, toast } from '../components/ui';

interface UploadItem {
  id: number;
  name: string;
  loaded: number;
  total: number;
  state: 'uploading' | 'done' | 'error';
  error?: string;
  abort: () => void;
}

let uploadSeq = 0;
const join = (dir: string, name: string) => [...dir.split('/').filter(Boolean), name].join('/');

export function FilesPage({ path }: { path: string }) {
  const dir = path.split('/').filter(Boolean).join('/');
  const [listing, setListing] = useState<Listing | null>(null);
  // The path is a file (its size, when known): it is offered for download.
  const [file, setFile] = useState<{ size: number | null } | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [usage, setUsage] = useState<Usage | null>(null);
  const [datasets, setDatasets] = useState<Dataset[] | null>(null);
  const [uploads, setUploads] = useState<UploadItem[]>([]);
  const [dragging, setDragging] = useState(0);
  const input = useRef<HTMLInputElement>(null);

  // The folder shown now: an answer for a folder left since is dropped, so
  // a listing never shows (or acts) under another folder's path.
  const shown = useRef(dir);
  shown.current = dir;
  const load = async () => {
    const asked = dir;
    try {
      const r = await Api.browse(asked);
      if (shown.current !== asked) return;
      if (r.kind === 'dir') {
        setListing(r.listing);
        setFile(null);
      } else {
        setListing(null);
        setFile({ size: r.size });
      }
      setError(null);
    } catch (e) {
      if (shown.current === asked) setError(e);
    }
  };
  const loadUsage = () => Api.space().then(setUsage, () => {});

  useEffect(() => {
    setListing(null);
    setFile(null);
    load();
  }, [dir]);
  useEffect(() => {
    loadUsage();
    Api.datasets().then(setDatasets, () => setDatasets([]));
  }, []);

  const patch = (id: number, p: Partial<UploadItem>) => setUploads((xs) => xs.map((x) => (x.id === id ? { ...x, ...p } : x)));

  const startUploads = (files: FileList | File[]) => {
    const list = Array.from(files);
    if (!list.length) return;
    let pending = list.length;
    for (const f of list) {
      const id = ++uploadSeq;
      const target = join(dir, f.name);
      const u = upload(target, f, (loaded, total) => patch(id, { loaded, total }));
      setUploads((xs) => [...xs, { id, name: f.name, loaded: 0, total: f.size, state: 'uploading', abort: u.abort }]);
      u.promise.then(
        () => {
          patch(id, { state: 'done', loaded: f.size, total: f.size });
          toast(t('files.uploaded', { name: f.name }));
          setTimeout(() => setUploads((xs) => xs.filter((x) => x.id !== id)), 4000);
        },
        (e) => patch(id, { state: 'error', error: errorText(e) }),
      ).finally(() => {
        if (--pending === 0) {
          load();
          loadUsage();
        }
      });
    }
  };

  const mkdir = async () => {
    const name = await promptDialog({ title: t('files.newFolder'), ok: t('files.create'), input: { value: '', label: t('files.folderName'), placeholder: 'mnist' } });
    if (!name) return;
    try {
      await Api.mkdir(join(dir, name));
      toast(t('files.folderCreated', { name }));
      load();
    } catch (e) {
      toast(errorText(e), 'error');
    }
  };

  const remove = async (e: Entry) => {
    const isDir = e.kind === 'dir';
    const ok = await confirmDialog({
      title: isDir ? t('files.deleteFolderTitle') : t('files.deleteFileTitle'),
      body: isDir ? t('files.deleteFolderBody', { name: e.name }) : t('files.deleteFileBody', { name: e.name }),
      ok: t('action.delete'),
      danger: true,
    });
    if (!ok) return;
    try {
      await Api.rm(join(dir, e.name), isDir);
      toast(t('files.deleted', { name: e.name }));
      load();
      loadUsage();
    } catch (err) {
      toast(errorText(err), 'error');
    }
  };

  const get = (e: Entry) => download(`/files/${spacePath(join(dir, e.name))}`, e.name).catch((err) => toast(errorText(err), 'error'));

  const crumbs = dir ? dir.split('/') : [];
  const entries = listing ? [...listing.entries].sort((a, b) => (a.kind === 'dir' ? 0 : 1) - (b.kind === 'dir' ? 0 : 1) || a.name.localeCompare(b.name)) : [];
  const pct = usage?.quotaBytes ? Math.min(100, (usage.usedBytes / usage.quotaBytes) * 100) : null;

  return (
    <div class="page">
      <div class="page-head">
        <div>
          <h1>{t('files.title')}</h1>
          <p class="muted">{t('files.subtitle')}</p>
        </div>
        <div class="usage card" data-testid="usage">
          <div class="usage-line">
            <span class="muted small">{t('files.usage')}</span>
            <strong>{usage ? (usage.quotaBytes ? t('files.usedOf', { used: fmtBytes(usage.usedBytes), quota: fmtBytes(usage.quotaBytes) }) : t('files.usedNoQuota', { used: fmtBytes(usage.usedBytes) })) : '…'}</strong>
          </div>
          {pct != null && (
            <div class="bar" aria-hidden="true">
              <span class={`bar-fill${pct > 90 ? ' bar-danger' : ''}`} style={{ width: `${pct}%` }} />
            </div>
          )}
        </div>
      </div>

      <div class="files-layout">
        <section
          class={`card drop${dragging > 0 ? ' dragging' : ''}`}
          onDragEnter={(e) => { e.preventDefault(); setDragging((n) => n + 1); }}
          onDragOver={(e) => e.preventDefault()}
          onDragLeave={() => setDragging((n) => Math.max(0, n - 1))}
          onDrop={(e) => {
            e.preventDefault();
            setDragging(0);
            if (e.dataTransfer?.files.length) startUploads(e.dataTransfer.files);
          }}
          data-testid="drop-zone">
          <div class="files-bar">
            <nav class="crumbs path" aria-label={t('files.path')}>
              <Link href="/files">{t('files.home')}</Link>
              {crumbs.map((c, i) => (
                <span key={i} class="crumb">
                  <Icon name="chevronRight" size={14} />
                  {i === crumbs.length - 1 ? <span>{c}</span> : <Link href={`/files/${crumbs.slice(0, i + 1).map(encodeURIComponent).join('/')}`}>{c}</Link>}
                </span>
              ))}
            </nav>
            <div class="actions">
              <button class="btn btn-sm" onClick={() => { load(); loadUsage(); }} title={t('common.refresh')} aria-label={t('common.refresh')}>
                <Icon name="refresh" />
              </button>
              <button class="btn btn-sm" onClick={mkdir} data-testid="mkdir">
                <Icon name="folder" />
                {t('files.newFolder')}
              </button>
              <button class="btn btn-sm btn-primary" onClick={() => input.current?.click()} data-testid="upload">
                <Icon name="upload" />
                {t('files.upload')}
              </button>
              <input ref={input} type="file" multiple hidden data-testid="upload-input"
                onChange={(e) => {
                  const fs = (e.target as HTMLInputElement).files;
                  if (fs) startUploads(fs);
                  (e.target as HTMLInputElement).value = '';
                }} />
            </div>
          </div>

          {uploads.length > 0 && (
            <ul class="uploads" data-testid="uploads">
              {uploads.map((u) => {
                const p = u.total ? Math.round((u.loaded / u.total) * 100) : 0;
                return (
                  <li key={u.id} class={`upload upload-${u.state}`}>
                    <div class="upload-line">
                      <Icon name={u.state === 'error' ? 'alert' : u.state === 'done' ? 'check' : 'upload'} />
                      <span class="upload-name">{u.name}</span>
                      <span class="muted small tabular">
                        {u.state === 'error' ? u.error : `${fmtBytes(u.loaded)} / ${fmtBytes(u.total)} · ${p}%`}
                      </span>
                      {u.state === 'uploading' ? (
                        <button class="btn btn-sm btn-ghost" onClick={u.abort}>{t('common.cancel')}</button>
                      ) : (
                        <button class="icon-btn" aria-label={t('common.close')} onClick={() => setUploads((xs) => xs.filter((x) => x.id !== u.id))}><Icon name="x" /></button>
                      )}
                    </div>
                    <div class="bar" role="progressbar" aria-valuenow={p} aria-valuemin={0} aria-valuemax={100} aria-label={u.name}>
                      <span class={`bar-fill${u.state === 'error' ? ' bar-danger' : u.state === 'done' ? ' bar-ok' : ''}`} style={{ width: `${p}%` }} />
                    </div>
                  </li>
                );
              })}
            </ul>
          )}

          {error != null && <ErrorBox error={error} onRetry={load} />}
          {file ? (
            <Empty icon={<Icon name="file" size={28} />} title={crumbs[crumbs.length - 1] || ''} hint={file.size != null ? `${t('files.isFile')} · ${fmtBytes(file.size)}` : t('files.isFile')}>
              <button class="btn btn-primary" data-testid="file-download" onClick={() => download(`/files/${spacePath(dir)}`, crumbs[crumbs.length - 1]).catch((e) => toast(errorText(e), 'error'))}>
                <Icon name="download" />
                {t('files.download')}
              </button>
            </Empty>
          ) : listing == null && error == null ? (
            <Spinner />
          ) : listing && entries.length === 0 ? (
            <Empty icon={<Icon name="upload" size={28} />} title={t('files.empty')} hint={t('files.emptyHint')}>
              <button class="btn btn-primary" onClick={() => input.current?.click()}>
                <Icon name="upload" />
                {t('files.upload')}
              </button>
            </Empty>
          ) : listing ? (
            <div class="table-scroll">
              <table class="table files-table" data-testid="files-table">
                <thead>
                  <tr>
                    <th>{t('files.name')}</th>
                    <th class="num">{t('files.size')}</th>
                    <th class="hide-sm">{t('files.modified')}</th>
                    <th class="actions-col">{t('jobs.col.actions')}</th>
                  </tr>
                </thead>
                <tbody>
                  {dir && (
                    <tr>
                      <td colSpan={4}>
                        <Link class="file-name" href={crumbs.length > 1 ? `/files/${crumbs.slice(0, -1).map(encodeURIComponent).join('/')}` : '/files'}>
                          <Icon name="folder" />
                          ..
                        </Link>
                      </td>
                    </tr>
                  )}
                  {entries.map((e) => (
                    <tr key={e.name} data-testid={`file-${e.name}`}>
                      <td>
                        {e.kind === 'dir' ? (
                          <Link class="file-name" href={`/files/${[...crumbs, e.name].map(encodeURIComponent).join('/')}`}>
                            <Icon name="folder" />
                            {e.name}
                          </Link>
                        ) : (
                          <span class="file-name">
                            <Icon name="file" />
                            {e.name}
                          </span>
                        )}
                      </td>
                      <td class="num tabular">{e.kind === 'dir' ? <span class="muted">—</span> : fmtBytes(e.size)}</td>
                      <td class="hide-sm" title={e.modifiedAtMs ? fmtTime(e.modifiedAtMs) : undefined}>{e.modifiedAtMs ? fmtAgo(e.modifiedAtMs) : '—'}</td>
                      <td class="actions-col">
                        <div class="row-actions">
                          {e.kind !== 'dir' && (
                            <button class="icon-btn" onClick={() => get(e)} title={t('files.download')} aria-label={t('files.download')} data-testid="file-get">
                              <Icon name="download" />
                            </button>
                          )}
                          <button class="icon-btn danger" onClick={() => remove(e)} title={t('action.delete')} aria-label={t('action.delete')} data-testid="file-rm">
                            <Icon name="trash" />
                          </button>
                        </div>
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          ) : null}
          <div class="drop-hint muted small">
            <Icon name="upload" />
            {t('files.dropHint')}
          </div>
          {dragging > 0 && (
            <div class="drop-overlay" aria-hidden="true">
              <Icon name="upload" size={32} />
              <span>{t('files.dropHere', { dir: dir ? `/${dir}` : t('files.home') })}</span>
            </div>
          )}
        </section>

        <aside class="card datasets" data-testid="datasets">
          <div class="card-head">
            <h2>{t('files.datasets')}</h2>
          </div>
          <p class="muted small">{t('files.datasetsHint')}</p>
          {datasets == null ? (
            <Spinner />
          ) : datasets.length === 0 ? (
            <Empty icon={<Icon name="db" size={24} />} title={t('files.noDatasets')} hint={t('files.noDatasetsHint')} />
          ) : (
            <ul class="dataset-list">
              {datasets.map((d) => (
                <li key={d.name}>
                  <Icon name="db" />
                  <div>
                    <div class="strong">{d.name}</div>
                    <div class="mono small muted">{d.defaultTarget}</div>
                  </div>
                  <span class="tag tag-muted">{t('files.readOnly')}</span>
                </li>
              ))}
            </ul>
          )}
        </aside>
      </div>
    </div>
  );
}

/** Picks a folder of the user's space (for mounts). */
export function FolderPicker({ onPick, onClose }: { onPick: (path: string) => void; onClose: () => void }) {
  const [dir, setDir] = useState('');
  const [listing, setListing] = useState<Listing | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    setListing(null);
    Api.list(dir).then((l) => { setListing(l); setError(null); }, setError);
  }, [dir]);
  const parts = dir.split('/').filter(Boolean);
  const folders = (listing?.entries ?? []).filter((e) => e.kind === 'dir').sort((a, b) => a.name.localeCompare(b.name));
  return (
    <Modal title={t('picker.title')} onClose={onClose}
      footer={
        <>
          <button class="btn" onClick={onClose}>{t('common.cancel')}</button>
          <button class="btn btn-primary" disabled={!dir} onClick={() => onPick(dir)} data-testid="picker-choose">
            {dir ? t('picker.choose', { dir }) : t('picker.chooseOne')}
          </button>
        </>
      }>
      <nav class="crumbs path">
        <button class="link" onClick={() => setDir('')}>{t('files.home')}</button>
        {parts.map((p, i) => (
          <span key={i} class="crumb">
            <Icon name="chevronRight" size={14} />
            <button class="link" onClick={() => setDir(parts.slice(0, i + 1).join('/'))}>{p}</button>
          </span>
        ))}
      </nav>
      {error != null && <ErrorBox error={error} />}
      {listing == null && error == null ? (
        <Spinner />
      ) : folders.length === 0 ? (
        <Empty icon={<Icon name="folder" size={24} />} title={t('picker.none')}>
          <button class="btn btn-sm" onClick={() => navigate('/files')}>{t('picker.goFiles')}</button>
        </Empty>
      ) : (
        <ul class="picker-list">
          {folders.map((f) => (
            <li key={f.name}>
              <button class="picker-item" onClick={() => setDir(join(dir, f.name))}>
                <Icon name="folder" />
                <span>{f.name}</span>
                <Icon name="chevronRight" size={14} />
              </button>
            </li>
          ))}
        </ul>
      )}
    </Modal>
  );
}
