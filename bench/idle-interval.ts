/**
 * What an automatic-backup interval costs when nothing changed (issue 13), measured in the
 * bench's process against its seeded Chroma:
 * - with a change signal (the embedded Chroma behind the gate, which counts writes): the
 *   interval looks at the count and does nothing else;
 * - without one (a Chroma the service does not front, `CHROMA_URL`): every interval reads
 *   Chroma whole and ends in the `unchanged` skip, committing nothing.
 * Requests are counted at the service's Chroma client; CPU is this process's user+system
 * time over the intervals (the bench's other work is idle meanwhile).
 */
import { AutoBackup } from "../lib/auto-backup.js";
import { ChromaRest } from "../lib/chroma/rest.js";
import { BackupService } from "../lib/service.js";
import { fsStorage } from "../lib/storage/fs.js";

export interface IdleIntervalCost {
  intervals: number;
  /** Chroma requests per interval. */
  requests: number;
  /** CPU ms per interval. */
  cpuMs: number;
  /** Snapshots committed over all intervals (0 expected: nothing changed). */
  committed: number;
}

export interface IdleIntervalResult {
  withChangeSignal: IdleIntervalCost;
  withoutChangeSignal: IdleIntervalCost;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function measure(url: string, storeDir: string, changeSignal: boolean, intervals: number): Promise<IdleIntervalCost> {
  let requests = 0;
  const chroma = new ChromaRest({
    url,
    fetch: (input, init) => {
      requests++;
      return fetch(input, init);
    },
  });
  const service = new BackupService({ chroma, storage: fsStorage(storeDir), storagePrefix: "", retention: { keepLast: 24, keepSafety: 3 }, log: () => {} });
  let committed = 0;
  // The newest snapshot holds exactly what Chroma holds, as after a restore or a backup.
  await service.backup({ force: true });
  const writes = 0; // the gate's count: no app writes during the measurement
  const intervalMs = 250;
  const auto = new AutoBackup({ service, intervalSeconds: intervalMs / 1000, changeSignal: changeSignal ? () => writes : undefined, log: () => {}, onStopTimeoutSeconds: 0 });
  const unwatch = service.watch({ backupStarting: () => (outcome) => void (outcome && !outcome.skipped && committed++) });
  auto.markProtected();
  requests = 0;
  const cpu = process.cpuUsage();
  auto.start();
  // Each unchanged full read takes longer than the interval on a big collection: wait for
  // the intervals to have run (the next one starts only after the previous one ended).
  let seen = 0;
  const stopWatching = service.watch({ backupStarting: () => void seen++ });
  const deadline = Date.now() + intervals * intervalMs;
  while (Date.now() < deadline || (!changeSignal && seen < intervals)) await sleep(intervalMs / 5);
  auto.stop();
  while (service.runningOperation) await sleep(20);
  const used = process.cpuUsage(cpu);
  stopWatching();
  unwatch();
  const ran = changeSignal ? intervals : seen;
  return { intervals: ran, requests: requests / ran, cpuMs: (used.user + used.system) / 1000 / ran, committed };
}

export async function measureIdleIntervals(url: string, storeDir: string, intervals = 8): Promise<IdleIntervalResult> {
  const withChangeSignal = await measure(url, `${storeDir}-signal`, true, intervals);
  const withoutChangeSignal = await measure(url, `${storeDir}-nosignal`, false, Math.min(intervals, 3));
  return { withChangeSignal, withoutChangeSignal };
}
