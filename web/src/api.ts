// The REST API of kiln (see /api/v1/openapi.json): typed calls, the token,
// and problem+json errors.

export interface FieldError {
  path: string;
  message: string;
  line?: number | null;
  column?: number | null;
}

export interface Problem {
  type?: string;
  title: string;
  status: number;
  detail: string;
  errors?: FieldError[];
}

export type JobState = 'WAITING' | 'RUNNING' | 'STOPPING' | 'SUCCEEDED' | 'FAILED' | 'STOPPED';
export const JOB_STATES: JobState[] = ['WAITING', 'RUNNING', 'STOPPING', 'SUCCEEDED', 'FAILED', 'STOPPED'];

export interface TaskView {
  id: string;
  role: string;
  index: number;
  attempt: number;
  state: string;
  exitCode?: number | null;
  signal?: number | null;
  host: string;
  gpus: number[];
  ports: Record<string, number[]>;
  restarts: number;
  reason?: string | null;
  startedAtMs?: number | null;
  finishedAtMs?: number | null;
}

export interface EventView {
  seq: number;
  atMs: number;
  kind: string;
  message: string;
}

export interface JobView {
  id: string;
  name: string;
  user: string;
  state: JobState;
  pendingReason?: string | null;
  /** The same reason as data, to show it in the reader's language. */
  pendingDetail?: PendingDetail | null;
  reason?: string | null;
  attempt: number;
  failedAttempts: number;
  attempts?: { attempt: number; tasks: TaskView[] }[];
  queue: string;
  priority: number;
  /** GPUs it asks for, all its tasks together. */
  totalGpus: number;
  format: string;
  submittedAtMs: number;
  startedAtMs?: number | null;
  finishedAtMs?: number | null;
  deadlineAtMs?: number | null;
  stopRequested: boolean;
  notices?: string[];
  tasks: TaskView[];
  events?: EventView[] | null;
}

export interface JobList {
  items: JobView[];
  next?: number | null;
}

export interface Point {
  tMs: number;
  value: number;
  step?: number;
}

export interface SeriesView {
  task: string;
  name: string;
  points: Point[];
}

export interface Entry {
  name: string;
  kind: 'file' | 'dir' | 'symlink' | string;
  size: number;
  modifiedAtMs?: number | null;
}

export interface Listing {
  path: string;
  entries: Entry[];
}

export interface Usage {
  user: string;
  usedBytes: number;
  quotaBytes?: number | null;
}

export interface Dataset {
  name: string;
  defaultTarget: string;
}

export interface UserView {
  name: string;
  isAdmin: boolean;
  createdAtMs: number;
}

export interface GpuInfo {
  index: number;
  model: string;
  memoryMb: number;
}

export interface NodeInfo {
  name: string;
  cpus: number;
  memoryMb: number;
  gpus: GpuInfo[];
  gpuSource?: string;
  gpuJobs: Record<string, string>;
  cpusAllocated: number;
  memoryMbAllocated: number;
  limits?: string;
  /** Memory, CPU and process limits one by one: what holds, or why not. */
  controllers?: { controller: string; enforced: boolean; detail: string }[];
  notes?: string[];
}

export interface Cluster {
  nodes: NodeInfo[];
  waiting: number;
  running: number;
}

export interface GpuQuota {
  /** A case-insensitive part of the GPU model name; absent: any model. */
  model?: string | null;
  count: number;
}

export interface Quota {
  cpus: number;
  memoryMb: number;
  gpus: GpuQuota[];
}

/** What a queue holds now and who waits in it (as of the last scheduling pass). */
export interface QueueLive {
  usedGpus: number;
  usedCpus: number;
  usedMemoryMb: number;
  /** Part of usedGpus beyond the quota. */
  borrowedGpus: number;
  /** GPUs of its quota that other queues' jobs hold now. */
  lentGpus: number;
  lentTo: string[];
  /** Lightest usage first. */
  users: { user: string; runningGpus: number; usageGpuHours: number; share: number }[];
  /** In the order the scheduler takes them (the first 50). */
  waiting: { job: string; reason?: string | null; detail?: PendingDetail | null }[];
  waitingTotal: number;
}

export interface QueueView {
  name: string;
  quota: Quota;
  userMaxGpus?: number | null;
  users: string[];
  /** Whether the caller may submit to it. */
  mayUse: boolean;
  /** False for `default` while it has no quota of its own (it gets what the others leave). */
  explicit: boolean;
  createdAtMs?: number | null;
  live?: QueueLive | null;
}

/** A queue as sent: CPUs and memory left out default to the GPUs' share of the cluster. */
export interface QueueBody {
  name: string;
  quota: { cpus?: number; memoryMb?: number; gpus: GpuQuota[] };
  userMaxGpus?: number;
  users?: string[];
}

export interface QueuePatch {
  quota?: QueueBody['quota'];
  /** null removes the limit. */
  userMaxGpus?: number | null;
  addUsers?: string[];
  removeUsers?: string[];
}

export interface DryRun {
  format: string;
  job: Spec;
  warnings: FieldError[];
  tasks: { task: string; env: Record<string, string> }[];
}

export interface Board {
  running: boolean;
  /** The board's path on its own origin (another port than the UI's). */
  path: string;
  origin?: string | null;
  /** The full sign-in link, on the board's origin. */
  url?: string | null;
}

/** kiln's own job format, as JSON (see README "kiln's own job format"). */
export interface Spec {
  name: string;
  user?: string;
  description?: string;
  queue?: string;
  /** false: never runs on borrowed resources, so never preempted (default true). */
  preemptible?: boolean;
  priority?: number;
  image?: string;
  gpuType?: string;
  retryCount?: number;
  /** In-place task restarts per attempt for roles with a restart policy; absent or null = unlimited. */
  maxRestarts?: number | null;
  maxDuration?: string | number;
  mounts?: MountSpec[];
  jobEnvs?: Record<string, unknown>;
  pytorch?: { nprocPerNode?: number };
  roles: RoleSpec[];
  [other: string]: unknown;
}

export interface RoleSpec {
  name: string;
  replicas?: number;
  cpus?: number;
  memory?: string | number;
  shm?: string | number;
  gpus?: number;
  gpuType?: string;
  image?: string;
  ports?: { label: string; beginAt: number; count: number }[];
  command: string;
  env?: Record<string, string>;
  minFailed?: number | null;
  minSucceeded?: number | null;
  restartPolicy?: RestartPolicy;
  [other: string]: unknown;
}

/** What happens to a task that fails, within one attempt (kiln-spec's RestartPolicy). */
export type RestartPolicy = 'Never' | 'OnFailure' | 'ExitCode';
export const RESTART_POLICIES: RestartPolicy[] = ['Never', 'OnFailure', 'ExitCode'];

export interface MountSpec {
  space?: string;
  dataset?: string;
  target?: string;
  readOnly?: boolean;
}

export type Missing =
  | { resource: 'gpus'; gpuType?: string | null; need: number; free: number }
  | { resource: 'cpus'; need: number; free: number }
  | { resource: 'memory'; needMb: number; freeMb: number };

/** A queue's GPUs, when the admin made queues. */
export interface Share {
  quotaGpus: number;
  usedGpus: number;
  borrowedGpus: number;
  lentGpus: number;
  lentTo: string[];
}

interface InQueue {
  ahead: number;
  queue: string;
  share?: Share | null;
}

/** Why a job waits (the scheduler's reason, as data). */
export type PendingDetail =
  | { code: 'taskTooBig'; task: string; gpus: number; gpuType?: string | null; cpus: number; memoryMb: number }
  | { code: 'jobTooBig'; gpus: number; cpus: number; memoryMb: number }
  | ({ code: 'short'; missing: Missing[] } & InQueue)
  | ({ code: 'scattered' } & InQueue)
  | ({ code: 'behindHead'; head: string } & InQueue)
  | ({ code: 'wouldDelay'; head: string } & InQueue)
  | ({ code: 'userLimit'; user: string; limit: number; running: number; need: number } & InQueue)
  | ({ code: 'overQuota'; need: number } & InQueue)
  | ({ code: 'preempting'; jobs: string[] } & InQueue)
  | ({ code: 'draining'; jobs: string[]; untilMs: number } & InQueue);

export class ApiError extends Error {
  constructor(
    public status: number,
    public problem: Problem,
  ) {
    super(problem.detail || problem.title);
  }
}

const TOKEN_KEY = 'kiln.token';
const NAME_KEY = 'kiln.user';

export const session = {
  get token(): string | null {
    return localStorage.getItem(TOKEN_KEY);
  },
  get name(): string | null {
    return localStorage.getItem(NAME_KEY);
  },
  set(name: string, token: string) {
    localStorage.setItem(TOKEN_KEY, token);
    localStorage.setItem(NAME_KEY, name);
  },
  clear() {
    localStorage.removeItem(TOKEN_KEY);
    localStorage.removeItem(NAME_KEY);
  },
};

let unauthorized: () => void = () => {};
/** What to do when any call answers 401 (the app goes to /login). */
export function onUnauthorized(f: () => void) {
  unauthorized = f;
}

export interface RequestOptions {
  method?: string;
  body?: BodyInit | object | null;
  contentType?: string;
  signal?: AbortSignal;
  /** A 401 is an answer (the login form), not a lost session. */
  quiet401?: boolean;
}

export const API = '/api/v1';

function isBodyInit(b: unknown): b is BodyInit {
  return (
    typeof b === 'string' ||
    b instanceof Blob ||
    b instanceof ArrayBuffer ||
    b instanceof FormData ||
    b instanceof URLSearchParams ||
    ArrayBuffer.isView(b)
  );
}

export async function request(path: string, opts: RequestOptions = {}): Promise<Response> {
  const headers: Record<string, string> = {};
  const token = session.token;
  if (token) headers.Authorization = `Bearer ${token}`;
  let body: BodyInit | undefined;
  if (opts.body != null) {
    if (isBodyInit(opts.body)) {
      body = opts.body;
      if (opts.contentType) headers['Content-Type'] = opts.contentType;
    } else {
      body = JSON.stringify(opts.body);
      headers['Content-Type'] = 'application/json';
    }
  }
  let res: Response;
  try {
    res = await fetch(API + path, { method: opts.method || 'GET', headers, body, signal: opts.signal });
  } catch (e) {
    if (e instanceof DOMException && e.name === 'AbortError') throw e;
    throw new ApiError(0, { title: 'Network error', status: 0, detail: String((e as Error).message || e) });
  }
  if (!res.ok) {
    const problem = await readProblem(res);
    if (res.status === 401 && !opts.quiet401) {
      session.clear();
      unauthorized();
    }
    throw new ApiError(res.status, problem);
  }
  return res;
}

export async function readProblem(res: Response): Promise<Problem> {
  const text = await res.text().catch(() => '');
  try {
    const p = JSON.parse(text);
    if (p && typeof p === 'object' && 'status' in p) return p as Problem;
  } catch {
    /* not JSON */
  }
  return { title: res.statusText || `HTTP ${res.status}`, status: res.status, detail: text || res.statusText };
}

export async function api<T>(path: string, opts: RequestOptions = {}): Promise<T> {
  const res = await request(path, opts);
  if (res.status === 204) return undefined as T;
  const ct = res.headers.get('content-type') || '';
  if (ct.includes('json')) return (await res.json()) as T;
  return (await res.text()) as unknown as T;
}

/** A job id (`user~name`) as a path segment. */
export const jid = (id: string) => encodeURIComponent(id);

/** A path in the space, each segment encoded. */
export const spacePath = (p: string) =>
  p
    .split('/')
    .filter(Boolean)
    .map(encodeURIComponent)
    .join('/');

export const Api = {
  login: (name: string, password: string) =>
    api<{ name: string; token: string }>('/login', { method: 'POST', body: { name, password }, quiet401: true }),
  /** Ends this sign-in on the server, not only in this browser. */
  logout: () => api<void>('/logout', { method: 'POST', quiet401: true }),
  me: () => api<UserView>('/me'),
  jobs: (q: { state?: string; limit?: number; before?: number; name?: string; user?: string }, signal?: AbortSignal) => {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(q)) if (v !== undefined && v !== '') p.set(k, String(v));
    return api<JobList>(`/jobs?${p}`, { signal });
  },
  job: (id: string, signal?: AbortSignal) => api<JobView>(`/jobs/${jid(id)}`, { signal }),
  spec: (id: string) => api<Spec>(`/jobs/${jid(id)}/spec`),
  stop: (id: string) => api<JobView>(`/jobs/${jid(id)}/stop`, { method: 'POST' }),
  remove: (id: string) => api<void>(`/jobs/${jid(id)}`, { method: 'DELETE' }),
  extend: (id: string, extendBy: string) => api<JobView>(`/jobs/${jid(id)}`, { method: 'PATCH', body: { extendBy } }),
  setMaxDuration: (id: string, maxDuration: string) => api<JobView>(`/jobs/${jid(id)}`, { method: 'PATCH', body: { maxDuration } }),
  /** With `capacity: false` (dry runs only) the spec is converted and
   *  checked without asking whether a node could hold it: Import loads a
   *  file first, then the form's live check says what does not fit. */
  submit: (text: string, contentType: string, dryRun: boolean, capacity = true) =>
    api<DryRun & JobView>(`/jobs${dryRun ? `?dryRun=true${capacity ? '' : '&checkCapacity=false'}` : ''}`, { method: 'POST', body: text, contentType }),
  metrics: (id: string, signal?: AbortSignal) =>
    api<{ job: string; series: SeriesView[] }>(`/jobs/${jid(id)}/metrics`, { signal }),
  tensorboard: (id: string) => api<Board>(`/jobs/${jid(id)}/tensorboard`, { method: 'POST' }),
  nodes: (signal?: AbortSignal) => api<Cluster>('/nodes', { signal }),
  /** A folder's listing; a file's bytes are never read (see browse). */
  list: async (path: string): Promise<Listing> => {
    const r = await browse(path);
    if (r.kind === 'file') throw new ApiError(409, { title: 'Not a folder', status: 409, detail: `${path} is a file` });
    return r.listing;
  },
  browse: (path: string, signal?: AbortSignal) => browse(path, signal),
  mkdir: (path: string) => api<void>(`/files/${spacePath(path)}?op=mkdir`, { method: 'POST' }),
  rm: (path: string, recursive: boolean) =>
    api<void>(`/files/${spacePath(path)}${recursive ? '?recursive=true' : ''}`, { method: 'DELETE' }),
  space: () => api<Usage>('/space'),
  datasets: () => api<Dataset[]>('/datasets'),
  queues: (signal?: AbortSignal) => api<QueueView[]>('/queues', { signal }),
  addQueue: (body: QueueBody) => api<QueueView>('/queues', { method: 'POST', body }),
  patchQueue: (name: string, body: QueuePatch) => api<QueueView>(`/queues/${encodeURIComponent(name)}`, { method: 'PATCH', body }),
  removeQueue: (name: string) => api<{ name: string }>(`/queues/${encodeURIComponent(name)}`, { method: 'DELETE' }),
};

/** What a path of the space is: a folder with its listing, or a file with
 * its size. The server answers both on one URL (a listing as JSON, a file as
 * its bytes); for a file only the headers are read and the transfer is
 * cancelled, so browsing never downloads a file. */
async function browse(path: string, signal?: AbortSignal): Promise<{ kind: 'dir'; listing: Listing } | { kind: 'file'; size: number | null }> {
  const ctrl = new AbortController();
  const stop = () => ctrl.abort();
  signal?.addEventListener('abort', stop);
  try {
    const res = await request(`/files/${spacePath(path)}`, { signal: ctrl.signal });
    if ((res.headers.get('content-type') || '').includes('json')) return { kind: 'dir', listing: (await res.json()) as Listing };
    const len = res.headers.get('content-length');
    await res.body?.cancel().catch(() => undefined);
    ctrl.abort();
    return { kind: 'file', size: len == null ? null : Number(len) };
  } finally {
    signal?.removeEventListener('abort', stop);
  }
}

/** Fetches with the token and hands the bytes to the browser as a download. */
export async function download(path: string, filename: string) {
  const res = await request(path);
  const blob = await res.blob();
  // The caller always knows the name; the header's bytes would arrive as
  // Latin-1 and garble non-ASCII names.
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** PUT with upload progress (fetch has none). */
export function upload(
  path: string,
  file: Blob,
  onProgress: (loaded: number, total: number) => void,
): { promise: Promise<void>; abort: () => void } {
  const xhr = new XMLHttpRequest();
  const promise = new Promise<void>((resolve, reject) => {
    xhr.open('PUT', `${API}/files/${spacePath(path)}`);
    const token = session.token;
    if (token) xhr.setRequestHeader('Authorization', `Bearer ${token}`);
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) return resolve();
      let problem: Problem = { title: xhr.statusText, status: xhr.status, detail: xhr.responseText };
      try {
        problem = JSON.parse(xhr.responseText);
      } catch {
        /* keep text */
      }
      if (xhr.status === 401) {
        session.clear();
        unauthorized();
      }
      reject(new ApiError(xhr.status, problem));
    };
    xhr.onerror = () => reject(new ApiError(0, { title: 'Network error', status: 0, detail: 'upload failed' }));
    xhr.onabort = () => reject(new DOMException('aborted', 'AbortError'));
    xhr.send(file);
  });
  return { promise, abort: () => xhr.abort() };
}
