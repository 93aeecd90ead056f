// Stopping a local server process: politely first, then for sure.
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';

const STOP_TIMEOUT_MS = 15_000;

/** SIGTERM, then SIGKILL if it has not exited within the timeout; resolves once it has exited. */
export async function terminate(child: ChildProcess, exited: Promise<unknown>, hasExited: () => boolean, timeoutMs = STOP_TIMEOUT_MS): Promise<void> {
  if (hasExited()) return;
  child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const timedOut = await Promise.race([exited.then(() => false), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), timeoutMs)))]);
  clearTimeout(timer);
  if (timedOut && !hasExited()) {
    child.kill('SIGKILL');
    await exited;
  }
}

const SETPRIV = '/usr/bin/setpriv';

/**
 * The command line that runs `bin` so that it dies with this process, even when this process is
 * killed with SIGKILL and no exit handler runs: util-linux's setpriv sets the parent-death signal
 * and execs it (same pid). Without setpriv, `bin` as it is.
 */
export function tiedToParent(bin: string, args: string[], signal: 'TERM' | 'KILL'): [string, string[]] {
  return existsSync(SETPRIV) ? [SETPRIV, ['--pdeathsig', signal, '--', bin, ...args]] : [bin, args];
}

/**
 * A running process's CPU time so far, in seconds: user and system, all its threads, and the
 * commands it ran and waited for (an agent's iptables-restore, ip, conntrack). Undefined once it has exited.
 */
export function cpuSecondsOf(pid: number | undefined): number | undefined {
  try {
    // After the command name (which may hold spaces): utime, stime, cutime, cstime, in clock ticks (100 a second on Linux).
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ').at(-1)!.split(' ');
    return fields.slice(11, 15).reduce((sum, ticks) => sum + Number(ticks), 0) / 100;
  } catch {
    return undefined;
  }
}

/** A running process's peak resident memory so far, in bytes (the kernel's high-water mark); undefined once it has exited. */
export function peakRssOf(pid: number | undefined): number | undefined {
  try {
    const kib = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kib ? Number(kib) * 1024 : undefined;
  } catch {
    return undefined;
  }
}
