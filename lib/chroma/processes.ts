import { readdir, readFile } from "node:fs/promises";

/**
 * What the kernel says about a process (Linux /proc). Elsewhere only liveness is known:
 * `startTicks` and `argv` are null, and callers treat the pid at face value.
 */
export interface ProcessInfo {
  pid: number;
  ppid: number | null;
  /** Start time in clock ticks since boot: with the pid, it names one process (pids are reused). */
  startTicks: number | null;
  argv: string[] | null;
}

/** The process, or null when there is none (a zombie counts as gone: it has exited). */
export async function processInfo(pid: number): Promise<ProcessInfo | null> {
  if (!Number.isInteger(pid) || pid <= 0) return null;
  let stat: string;
  try {
    stat = await readFile(`/proc/${pid}/stat`, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT" || process.platform === "linux") return null;
    return signalZeroAnswers(pid) ? { pid, ppid: null, startTicks: null, argv: null } : null;
  }
  // "pid (comm) state ppid ... starttime(22nd)"; comm may hold spaces and parentheses.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  if (fields[0] === "Z" || fields[0] === "X") return null;
  let argv: string[] | null = null;
  try {
    argv = (await readFile(`/proc/${pid}/cmdline`, "utf8")).split("\0").filter((a) => a !== "");
  } catch {
    return null; // exited meanwhile
  }
  return { pid, ppid: Number(fields[1]), startTicks: Number(fields[19]), argv };
}

function signalZeroAnswers(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Every process whose argv `match` accepts (Linux; elsewhere none are found). */
export async function findProcesses(match: (argv: string[]) => boolean): Promise<ProcessInfo[]> {
  let entries: string[];
  try {
    entries = await readdir("/proc");
  } catch {
    return [];
  }
  const found: ProcessInfo[] = [];
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    const info = await processInfo(Number(entry));
    if (info?.argv && match(info.argv)) found.push(info);
  }
  return found;
}

/** True while `info` still names a running process (same pid, same start time). */
export async function stillRunning(info: Pick<ProcessInfo, "pid" | "startTicks">): Promise<boolean> {
  const now = await processInfo(info.pid);
  return now !== null && (info.startTicks === null || now.startTicks === null || now.startTicks === info.startTicks);
}

/** SIGKILLs the process and waits (up to `timeoutMs`) until it is gone; false if it is still there. */
export async function killAndWait(info: Pick<ProcessInfo, "pid" | "startTicks">, timeoutMs = 5000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  try {
    process.kill(info.pid, "SIGKILL");
  } catch {
    // gone already
  }
  while (await stillRunning(info)) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}
