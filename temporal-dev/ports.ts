/**
 * Ports for the servers natflow starts on 127.0.0.1 (a dev server and its UI, etcd, a
 * kube-apiserver) when nobody names them. Tests and benches start many at once, so a port that is
 * merely free now (the kernel's pick, released, then handed to a child) can be taken before the
 * child binds it: by another test's pick, or by the dev server's own picks of free ports for its
 * internal services. So ports come from below Linux's ephemeral range, which the kernel never
 * hands out (not to bind(0), not to an outgoing connection), and each is reserved for this
 * process's life by a lock file that other natflow processes respect.
 */
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const HOST = '127.0.0.1';
/** Below the ephemeral range's default start (32768), above the well-known and common fixed ports. */
const RANGE = { low: 20_000, high: 32_000 };
const LOCK_DIR = path.join(os.tmpdir(), 'natflow-ports');
const TRIES = 200;

const held = new Set<string>();
process.once('exit', () => {
  for (const file of held) rmSync(file, { force: true });
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes the lock file if the process that took it is gone (killed: a test worker is, at its end); true if it did. */
function dropIfStale(file: string): boolean {
  let owner: number;
  try {
    owner = Number(readFileSync(file, 'utf8').trim());
  } catch {
    return true; // gone already
  }
  if (owner > 0 && alive(owner)) return false;
  rmSync(file, { force: true });
  return true;
}

/** Takes the port's lock file unless a live process holds it. */
function lock(port: number): string | undefined {
  const file = path.join(LOCK_DIR, String(port));
  for (let i = 0; i < 2; i++) {
    try {
      writeFileSync(file, String(process.pid), { flag: 'wx' });
      return file;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      if (!dropIfStale(file)) return undefined;
    }
  }
  return undefined;
}

let swept = false;

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, HOST, () => srv.close(() => resolve(true)));
  });
}

/** A port on 127.0.0.1 that nothing listens on and no other natflow process will be given while this one lives. */
export async function reservePort(): Promise<number> {
  mkdirSync(LOCK_DIR, { recursive: true });
  if (!swept) {
    swept = true;
    for (const name of readdirSync(LOCK_DIR)) dropIfStale(path.join(LOCK_DIR, name));
  }
  for (let i = 0; i < TRIES; i++) {
    const port = RANGE.low + Math.floor(Math.random() * (RANGE.high - RANGE.low));
    const file = lock(port);
    if (!file) continue;
    if (await bindable(port)) {
      held.add(file);
      return port;
    }
    rmSync(file, { force: true }); // someone outside natflow has it
  }
  throw new Error(`no free port in ${RANGE.low}-${RANGE.high} after ${TRIES} tries (locks in ${LOCK_DIR})`);
}
