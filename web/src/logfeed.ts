// A task's log as the job page shows it: loaded once, or followed live.
// A followed stream that ends while the task still runs (a proxy timeout, a
// server restart, a dropped connection) is opened again with backoff, and a
// hidden tab closes it until it shows again. Either way the feed goes on
// from where it stopped, without showing a line twice:
//  - when it knows the byte where its text ends (the whole log was read from
//    byte 0, or the server said where its answer starts in the
//    `X-Kiln-Log-Start` header), it asks for `offset=` that byte;
//  - otherwise (the last N lines, whose first byte the server does not name)
//    it asks for the last N lines again and joins them to what it has where
//    they overlap: the earliest line of its last N lines from which its text
//    and the new answer agree. Only output that repeats itself exactly, line
//    for line, could make it drop a repeated line; it never repeats one.
import { ApiError, request } from './api';

export type FeedStatus =
  | { kind: 'loading' }
  | { kind: 'live' }
  | { kind: 'paused' }
  | { kind: 'retrying'; inMs: number }
  | { kind: 'idle' };

export interface FeedOptions {
  /** The log's API path, without a query. */
  path: string;
  /** Extra query parameters (attempt). */
  query?: Record<string, string>;
  /** The whole log from byte 0; otherwise the last `tail` lines. */
  full: boolean;
  tail: number;
  /** The most text kept; older text is dropped (the download has it all). */
  maxChars: number;
  /** Whether the task runs, as last seen by the page. */
  isRunning: () => boolean;
  /** Asks the server whether the task still runs (after a stream ended). */
  checkRunning: () => Promise<boolean>;
  onText: (text: string, clipped: boolean) => void;
  onStatus: (s: FeedStatus) => void;
  onError: (e: unknown) => void;
}

/** The header in which the server may name the byte its answer starts at. */
export const START_HEADER = 'X-Kiln-Log-Start';
const FIRST_RETRY_MS = 1000;
const MAX_RETRY_MS = 30_000;

export class LogFeed {
  private text = '';
  private clipped = false;
  /** The byte after the last one received; null when unknown. */
  private pos: number | null;
  private decoder = new TextDecoder();
  /** An answer has come: later ones go on from it. */
  private loaded = false;
  private ctrl: AbortController | null = null;
  private timer: number | undefined;
  private retryMs = FIRST_RETRY_MS;
  private stopped = false;
  private paused = false;
  private follow = true;
  /** The server said the task no longer runs. */
  private ended = false;
  /** A connection (or a wait before one) is under way. */
  private busy = false;

  constructor(private o: FeedOptions) {
    this.pos = o.full ? 0 : null;
  }

  start(follow: boolean) {
    this.follow = follow;
    this.paused = document.hidden;
    this.connect(this.wantLive());
  }

  stop() {
    this.stopped = true;
    this.halt();
  }

  /** The tab was hidden: the live stream closes until it shows again. */
  pause() {
    if (this.stopped || this.paused) return;
    this.paused = true;
    if (this.busy && this.ctrl && this.wantLiveIgnoringPause()) {
      this.halt();
      this.o.onStatus({ kind: 'paused' });
    }
  }

  /** The tab shows again: go on from where the feed stopped. */
  resume() {
    if (this.stopped || !this.paused) return;
    this.paused = false;
    if (!this.busy && this.wantLive()) {
      this.retryMs = FIRST_RETRY_MS;
      this.connect(true);
    }
  }

  setFollow(on: boolean) {
    if (this.stopped || on === this.follow) return;
    this.follow = on;
    if (!on) {
      if (this.busy && this.wantLiveIgnoringFollow()) {
        this.halt();
        this.o.onStatus({ kind: 'idle' });
      }
    } else if (!this.busy) {
      this.retryMs = FIRST_RETRY_MS;
      this.connect(this.wantLive());
    }
  }

  /** The page saw the task (re)start: follow it if not already. */
  poke() {
    this.ended = false;
    if (this.stopped || this.busy || !this.wantLive()) return;
    this.retryMs = FIRST_RETRY_MS;
    this.connect(true);
  }

  private runs = () => !this.ended && this.o.isRunning();
  private wantLiveIgnoringPause = () => this.follow && this.runs();
  private wantLiveIgnoringFollow = () => !this.paused && this.runs();
  private wantLive = () => this.follow && !this.paused && this.runs();

  private halt() {
    window.clearTimeout(this.timer);
    this.timer = undefined;
    this.ctrl?.abort();
    this.ctrl = null;
    this.busy = false;
  }

  private async connect(live: boolean) {
    if (this.stopped) return;
    this.halt();
    this.busy = true;
    const ctrl = new AbortController();
    this.ctrl = ctrl;
    const q = new URLSearchParams(this.o.query);
    // Where to start: the tail or byte 0 the first time, then the byte
    // after the last one received, or the tail again to join.
    let join = false;
    if (!this.loaded) {
      if (!this.o.full) q.set('tail', String(this.o.tail));
    } else if (this.pos != null) {
      q.set('offset', String(this.pos));
    } else {
      q.set('tail', String(this.o.tail));
      join = true;
    }
    if (live) q.set('follow', 'true');
    if (!this.loaded) this.o.onStatus({ kind: 'loading' });
    let got = false;
    try {
      const res = await request(`${this.o.path}?${q}`, { signal: ctrl.signal });
      const first = !this.loaded;
      this.loaded = true;
      const start = Number(res.headers.get(START_HEADER) ?? NaN);
      if (Number.isFinite(start) && start >= 0) {
        if (join) {
          // The answer starts at a known byte after all: no joining needed
          // when it is where the text ends; else its tail replaces the text.
          join = false;
          this.text = '';
          this.clipped = false;
        }
        this.pos = start;
        if (q.has('tail') || first) this.decoder = new TextDecoder();
      } else if (join || first) {
        this.decoder = new TextDecoder();
      }
      if (live) this.o.onStatus({ kind: 'live' });
      const held = join ? this.text : '';
      const joiner = join ? new Joiner(held, this.o.tail) : null;
      const reader = res.body!.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (ctrl.signal.aborted) return;
        if (done) break;
        if (this.pos != null) this.pos += value.byteLength;
        const chunk = this.decoder.decode(value, { stream: true });
        if (!chunk) continue;
        got = true;
        if (joiner && !joiner.settled) this.text = joiner.add(chunk);
        else this.text += chunk;
        this.clip();
        this.o.onText(this.text, this.clipped);
        if (live) this.retryMs = FIRST_RETRY_MS;
      }
      if (!got) this.o.onText(this.text, this.clipped);
    } catch (e) {
      if (ctrl.signal.aborted || this.stopped) return;
      const transient = !(e instanceof ApiError) || e.status === 0 || e.status >= 500 || e.status === 429;
      if (!transient || !this.wantLive()) {
        this.busy = false;
        this.ctrl = null;
        this.o.onError(e);
        this.o.onStatus({ kind: 'idle' });
        return;
      }
      this.retry();
      return;
    }
    if (this.ctrl !== ctrl) return;
    this.ctrl = null;
    if (!live) {
      this.busy = false;
      // The tab was hidden or follow turned off before the first answer.
      this.o.onStatus({ kind: this.paused && this.wantLiveIgnoringPause() ? 'paused' : 'idle' });
      if (this.wantLive()) this.connect(true);
      return;
    }
    // A followed stream ends when the task ends, or when the connection
    // does: which one, the server says.
    let running = true;
    try {
      running = await this.o.checkRunning();
    } catch {
      /* unknown: try again later */
    }
    if (this.stopped || this.ctrl) return;
    if (!running) {
      // One last read, for anything written after a broken stream.
      this.ended = true;
      this.connect(false);
      return;
    }
    if (!this.wantLive()) {
      this.busy = false;
      this.o.onStatus({ kind: this.paused ? 'paused' : 'idle' });
      return;
    }
    this.retry();
  }

  private retry() {
    const ms = this.retryMs;
    this.retryMs = Math.min(MAX_RETRY_MS, this.retryMs * 2);
    this.busy = true;
    this.o.onStatus({ kind: 'retrying', inMs: ms });
    this.timer = window.setTimeout(() => {
      this.timer = undefined;
      if (this.stopped) return;
      if (this.paused) {
        this.busy = false;
        this.o.onStatus({ kind: 'paused' });
        return;
      }
      this.connect(this.wantLive());
    }, ms);
  }

  private clip() {
    if (this.text.length <= this.o.maxChars) return;
    let cut = this.text.length - this.o.maxChars;
    const nl = this.text.indexOf('\n', cut);
    if (nl >= 0 && nl - cut < 10_000) cut = nl + 1;
    this.text = this.text.slice(cut);
    this.clipped = true;
  }
}

/**
 * Joins the last lines of a log, read again, to the text held before: the
 * answer starts at the beginning of one of the held text's last `tail`
 * lines (or after them, when more than `tail` lines were written since).
 * Exported for tests.
 */
export class Joiner {
  private got = '';
  private starts: number[];
  settled = false;

  constructor(
    private held: string,
    tail: number,
  ) {
    // Where each of the held text's last `tail` lines begins.
    const starts: number[] = [];
    for (let i = held.length - 1; i >= 0 && starts.length < tail; i--) {
      if (i === 0 || held[i - 1] === '\n') starts.push(i);
    }
    this.starts = starts.reverse();
  }

  /** The text so far, with `chunk` added to the answer. */
  add(chunk: string): string {
    this.got += chunk;
    const { held, got } = this;
    for (const i of this.starts) {
      const rest = held.length - i;
      const agrees = got.length >= rest ? got.startsWith(held.slice(i)) : held.startsWith(got, i);
      if (!agrees) continue;
      // Once the answer is as long as the longest candidate, nothing changes.
      if (got.length >= held.length - this.starts[0]) this.settled = true;
      return got.length >= rest ? held.slice(0, i) + got : held;
    }
    // No overlap: the answer holds only newer lines (or the held text was
    // clipped before where the answer starts); the answer is the tail.
    if (got.length >= held.length - (this.starts[0] ?? held.length)) this.settled = true;
    return got;
  }
}
