import { formatBytes, formatCount, formatDuration } from "./format.js";

/** Where progress goes: stderr, which is a TTY or not. */
export interface ProgressOutput {
  write(text: string): void;
  isTTY: boolean;
  columns?: number;
}

import type { ProgressEvent } from "../lib/snapshot/progress.js";

const CLEAR_LINE = "\r\x1b[2K";

function truncate(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, max - 1)}…`;
}

/**
 * One bar per collection (the service reports progress per collection): records
 * done/total, bytes, rate and ETA, redrawn in place on a TTY. Elsewhere (`--progress`
 * into a pipe) one line per finished collection.
 */
export class ProgressBar {
  private current: { event: ProgressEvent; startedAt: number } | null = null;
  private drawn = false;
  /** When the latest event arrived: the next collection's reading started about then. */
  private lastEventAt: number;

  constructor(
    private readonly out: ProgressOutput,
    private readonly now: () => number = Date.now,
  ) {
    this.lastEventAt = now();
  }

  update(event: ProgressEvent): void {
    if (this.current && this.current.event.collection !== event.collection) this.completeLine();
    if (!this.current) this.current = { event, startedAt: this.lastEventAt };
    this.current.event = event;
    this.lastEventAt = this.now();
    if (this.out.isTTY) {
      this.out.write(CLEAR_LINE + this.line());
      this.drawn = true;
    }
  }

  /** Ends the current collection's line; call once the operation is over. */
  finish(): void {
    this.completeLine();
  }

  /** Clears a half-drawn bar, e.g. before printing an error. */
  clear(): void {
    if (this.drawn && this.out.isTTY) this.out.write(CLEAR_LINE);
    this.drawn = false;
    this.current = null;
  }

  private completeLine(): void {
    if (!this.current) return;
    if (this.out.isTTY) this.out.write(CLEAR_LINE + this.line(true) + "\n");
    else this.out.write(this.line(true) + "\n");
    this.drawn = false;
    this.current = null;
  }

  /** The rendered line of the current collection. */
  line(done = false): string {
    const { event, startedAt } = this.current!;
    const total = Math.max(event.totalRecords, event.records);
    const fraction = total === 0 ? 1 : event.records / total;
    const elapsedMs = Math.max(1, this.now() - startedAt);
    const rate = (event.records / elapsedMs) * 1000;
    const parts = [`${formatCount(event.records)}/${formatCount(total)} records`];
    if (event.bytes > 0) parts.push(formatBytes(event.bytes));
    if (done) parts.push(`in ${formatDuration(elapsedMs)}`);
    else {
      if (event.records > 0) parts.push(`${formatCount(Math.round(rate))} rec/s`);
      const etaMs = rate > 0 ? ((total - event.records) / rate) * 1000 : NaN;
      if (event.records < total) parts.push(`ETA ${etaMs < 1000 ? "<1s" : formatDuration(etaMs)}`);
    }
    const pct = `${String(Math.floor(fraction * 100)).padStart(3)}%`;
    const name = truncate(event.collection, 24);
    const tail = `${pct}  ${parts.join("  ")}`;
    const columns = this.out.columns ?? 80;
    if (!this.out.isTTY || columns < 50) return truncate(`${name}  ${tail}`, Math.max(20, columns - 1));
    // A fixed width, so the bar does not jump as the numbers after it grow.
    const barWidth = Math.max(10, Math.min(30, columns - name.length - 70));
    const filled = Math.round(fraction * barWidth);
    return truncate(`${name} [${"█".repeat(filled)}${"░".repeat(barWidth - filled)}] ${tail}`, columns - 1);
  }
}

const FRAMES = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/** A spinner with elapsed time, for operations without progress events (verify). TTY only. */
export class Spinner {
  private timer: ReturnType<typeof setInterval> | null = null;
  private frame = 0;
  private readonly startedAt: number;

  constructor(
    private readonly out: ProgressOutput,
    private readonly label: string,
    private readonly now: () => number = Date.now,
  ) {
    this.startedAt = now();
    if (!out.isTTY) return;
    this.draw();
    this.timer = setInterval(() => this.draw(), 100);
    this.timer.unref?.();
  }

  private draw(): void {
    this.out.write(`${CLEAR_LINE}${FRAMES[this.frame++ % FRAMES.length]} ${this.label} ${formatDuration(this.now() - this.startedAt)}`);
  }

  stop(): void {
    if (!this.timer) return;
    clearInterval(this.timer);
    this.timer = null;
    this.out.write(CLEAR_LINE);
  }
}

/** The lines of an NDJSON response body, each parsed. */
export async function* ndjsonLines(body: ReadableStream<Uint8Array>): AsyncGenerator<Record<string, unknown>> {
  const decoder = new TextDecoder();
  let buffered = "";
  const reader = body.getReader();
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let nl: number;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl).trim();
        buffered = buffered.slice(nl + 1);
        if (line) yield JSON.parse(line) as Record<string, unknown>;
      }
    }
    buffered += decoder.decode();
    if (buffered.trim()) yield JSON.parse(buffered) as Record<string, unknown>;
  } finally {
    reader.releaseLock();
  }
}
