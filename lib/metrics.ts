/**
 * The service's Prometheus metrics: per-process operation counters and durations (fed by
 * the HTTP access log), and a small writer of the text exposition format (0.0.4). No
 * client library: prom-client needs Node's cluster and perf_hooks, and this runs on
 * Workers too.
 */

export type Labels = Record<string, string>;

export interface Sample {
  labels?: Labels;
  value: number;
  /** Appended to the family name (`_sum`, `_count`, `_bucket`). */
  suffix?: string;
}

export interface MetricFamily {
  name: string;
  help: string;
  type: "counter" | "gauge" | "histogram" | "summary";
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function formatValue(n: number): string {
  if (Number.isNaN(n)) return "NaN";
  if (n === Infinity) return "+Inf";
  if (n === -Infinity) return "-Inf";
  return String(n);
}

/** The text exposition of these families, one HELP and TYPE line each. */
export function writeExposition(families: MetricFamily[]): string {
  const lines: string[] = [];
  for (const f of families) {
    if (!NAME.test(f.name)) throw new Error(`not a metric name: ${f.name}`);
    lines.push(`# HELP ${f.name} ${f.help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")}`);
    lines.push(`# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) {
      const labels = Object.entries(s.labels ?? {});
      for (const [k] of labels) if (!LABEL.test(k)) throw new Error(`not a label name: ${k}`);
      const set = labels.length ? `{${labels.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",")}}` : "";
      lines.push(`${f.name}${s.suffix ?? ""}${set} ${formatValue(s.value)}`);
    }
  }
  return lines.join("\n") + "\n";
}

interface DurationStats {
  sum: number;
  count: number;
}

/** Counts of operations by outcome and their durations (a summary: sum and count), since this process started. */
export class OperationMetrics {
  private readonly totals = new Map<string, number>();
  private readonly durations = new Map<string, DurationStats>();

  /** Records one finished operation; `outcome` is "ok" or "error". */
  observe(operation: string, outcome: string, seconds: number): void {
    const key = `${operation}\u0000${outcome}`;
    this.totals.set(key, (this.totals.get(key) ?? 0) + 1);
    const d = this.durations.get(operation) ?? { sum: 0, count: 0 };
    d.sum += seconds;
    d.count++;
    this.durations.set(operation, d);
  }

  families(): MetricFamily[] {
    const totals: Sample[] = [...this.totals].map(([key, value]) => {
      const [operation, outcome] = key.split("\u0000") as [string, string];
      return { labels: { operation, outcome }, value };
    });
    const durations: Sample[] = [];
    for (const [operation, d] of this.durations) {
      durations.push({ suffix: "_sum", labels: { operation }, value: d.sum });
      durations.push({ suffix: "_count", labels: { operation }, value: d.count });
    }
    return [
      { name: "chroma_backup_operations_total", help: "Operations served, by operation and outcome (ok or error), since this process started.", type: "counter", samples: totals },
      { name: "chroma_backup_duration_seconds", help: "How long operations took, by operation (rate(_sum)/rate(_count) is the mean).", type: "summary", samples: durations },
    ];
  }
}
