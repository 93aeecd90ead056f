/**
 * The local Temporal dev server (`temporal server start-dev`) with its Web UI, persisted in
 * SQLite under `<repo>/.natflow/` so workflows survive a restart, with natflow's search
 * attributes registered.
 *
 * Run `npx tsx temporal-dev/dev-server.ts` to start it; it prints the gRPC address and the UI
 * URL and runs until Ctrl-C.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { findOrProvisionTemporalCli, repoRoot } from './provision.js';
import { NATFLOW_SEARCH_ATTRIBUTE_KEYS } from '../domain/search-attributes.js';
import { isMainModule, stopOnSignal } from '../worker/process.js';
import { cpuSecondsOf, peakRssOf, terminate, tiedToParent } from './child-process.js';
import { dropUnusedVisibilityIndexes } from './visibility-indexes.js';

export interface DevServerOptions {
  /** gRPC port, default 7233. */
  port?: number;
  /** Web UI port, default 8233. */
  uiPort?: number;
  /** SQLite file, default `<repo>/.natflow/temporal.sqlite` (its directory is created). */
  dbFile?: string;
  /** Namespace created at startup, default `default`. */
  namespace?: string;
  /** `--dynamic-config-value KEY=VALUE` for each entry, e.g. lower per-run limits to test a life of months in minutes. */
  dynamicConfig?: Record<string, string | number>;
}

export interface DevServer {
  /** gRPC address, `host:port`. */
  address: string;
  /** Web UI URL. */
  uiUrl: string;
  /** SIGTERM the server and wait for it to exit; does nothing if an already-running server was reused. */
  stop(): Promise<void>;
  /** Its peak resident memory so far, in bytes; undefined for a reused server or once it has exited. */
  peakRss(): number | undefined;
  /** Its CPU time so far, in seconds; undefined for a reused server or once it has exited. */
  cpuSeconds(): number | undefined;
}

const HOST = '127.0.0.1';
const READY_TIMEOUT_MS = 30_000;
const LOG_TAIL_CHARS = 8_192;

export function defaultDbFile(): string {
  return path.join(repoRoot(), '.natflow', 'temporal.sqlite');
}

const SQLITE_PRAGMAS = ['journal_mode=wal', 'synchronous=normal'];

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** True if something accepts TCP connections on host:port. */
function tcpAnswers(host: string, port: number, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** True if a Temporal frontend answers on `address` (and, if given, knows `namespace`). */
async function temporalAnswers(address: string, namespace?: string, timeoutMs = 2_000): Promise<boolean> {
  let connection: Connection | undefined;
  try {
    connection = await Connection.connect({ address, connectTimeout: timeoutMs });
    if (namespace) await connection.workflowService.describeNamespace({ namespace });
    return true;
  } catch {
    return false;
  } finally {
    await connection?.close().catch(() => undefined);
  }
}

/**
 * The server's side of natflow's choices: an activity a workflow task schedules on its own queue
 * goes back to that worker in the task's completion (eager dispatch; the SDK asks for it), not
 * through a poll: the resource workflows' calls are remote activities. Every task queue has one
 * partition, not four: on a one-process server a task that lands in a partition no poller waits
 * on is forwarded or stored and read back (measured: 2,000 workflows of two no-op activities,
 * 56–59 s with four partitions, 51 s with one; a production cluster sizes its own).
 *
 * Two of the CLI's own defaults for `start-dev` are undone (measured with `perf` on the server
 * under a 1,000-pair burst through the API): it re-reads the search attributes from SQLite on
 * every read of them (so that one registered a moment ago is seen at once), 5.6 % of its CPU,
 * once per row of every visibility list; natflow registers its own before the server serves. And
 * its mutable-state cache holds 8,096 workflows: a 5,000-pair burst keeps 10,000 open.
 */
const SERVER_DEFAULTS = {
  'system.enableActivityEagerExecution': true,
  'matching.numTaskqueueReadPartitions': 1,
  'matching.numTaskqueueWritePartitions': 1,
  'system.forceSearchAttributesCacheRefreshOnRead': false,
  'history.hostLevelCacheMaxSize': 16_384,
};

/**
 * The server's Go garbage collector runs less often than Go's default (GOGC=100): it was 11 % of
 * the server's CPU in a burst, the server is what bounds one, and a dev server's live heap is
 * small beside this machine's memory (peak RSS in the benchmark's report). A GOGC set in the
 * environment wins.
 */
const SERVER_GOGC = '800';

export async function startDevServer(opts: DevServerOptions = {}): Promise<DevServer> {
  const port = opts.port ?? 7233;
  const uiPort = opts.uiPort ?? 8233;
  const dbFile = path.resolve(opts.dbFile ?? defaultDbFile());
  const namespace = opts.namespace ?? 'default';
  const address = `${HOST}:${port}`;
  const uiUrl = `http://${HOST}:${uiPort}`;

  if (await tcpAnswers(HOST, port)) {
    if (await temporalAnswers(address, undefined, 5_000)) {
      return { address, uiUrl, stop: async () => undefined, peakRss: () => undefined, cpuSeconds: () => undefined };
    }
    throw new Error(`port ${port} on ${HOST} is in use by something that is not a Temporal server`);
  }

  const cli = await findOrProvisionTemporalCli();
  await mkdir(path.dirname(dbFile), { recursive: true });

  const args = [
    'server',
    'start-dev',
    '--db-filename',
    dbFile,
    '--ip',
    HOST,
    '--port',
    String(port),
    '--ui-port',
    String(uiPort),
    '--namespace',
    namespace,
    '--log-level',
    'warn',
    // WAL with synchronous=normal: 3x the throughput of SQLite's defaults (measured: 1,000 workflows
    // x 7 activities, 124 s -> 40 s). A commit survives the server's crash or kill -9; a power loss
    // or kernel crash can lose the last commits (never corrupt the file). See docs/architecture.md.
    ...SQLITE_PRAGMAS.flatMap((pragma) => ['--sqlite-pragma', pragma]),
  ];
  for (const key of NATFLOW_SEARCH_ATTRIBUTE_KEYS) args.push('--search-attribute', `${key.name}=Keyword`);
  const dynamicConfig = { ...SERVER_DEFAULTS, ...opts.dynamicConfig };
  for (const [key, value] of Object.entries(dynamicConfig)) args.push('--dynamic-config-value', `${key}=${JSON.stringify(value)}`);

  // It stops with this process even on kill -9 (a SIGTERM, so SQLite closes cleanly). Its own
  // process group: a terminal's Ctrl-C reaches only us, and we stop it last (the workers shutting
  // down still need it to hand back their tasks).
  const [cmd, argv] = tiedToParent(cli, args, 'TERM');
  const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: { GOGC: SERVER_GOGC, ...process.env } });
  let logTail = '';
  const keep = (chunk: Buffer) => {
    logTail = (logTail + chunk.toString()).slice(-LOG_TAIL_CHARS);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);

  let spawnError: Error | undefined;
  child.once('error', (e) => {
    spawnError = e;
  });
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
  const hasExited = () => child.exitCode !== null || child.signalCode !== null || spawnError !== undefined;

  // Never leave an orphaned server behind if this process exits without calling stop().
  const killOnExit = () => {
    if (!hasExited()) child.kill('SIGKILL');
  };
  process.on('exit', killOnExit);

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      await terminate(child, exited, hasExited);
      process.off('exit', killOnExit);
    })();
    return stopping;
  };

  try {
    await waitUntilReady(child, { address, namespace, uiPort, hasExited, spawnError: () => spawnError });
    await dropUnusedVisibilityIndexes(dbFile);
  } catch (e) {
    await stop();
    const detail = logTail.trim() ? `\n--- temporal output (tail) ---\n${logTail.trim()}` : '';
    throw new Error(`${e instanceof Error ? e.message : String(e)} (${cli} ${args.join(' ')})${detail}`);
  }
  return { address, uiUrl, stop, peakRss: () => peakRssOf(child.pid), cpuSeconds: () => cpuSecondsOf(child.pid) };
}

async function waitUntilReady(
  child: ChildProcess,
  w: { address: string; namespace: string; uiPort: number; hasExited: () => boolean; spawnError: () => Error | undefined },
): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  const checkAlive = () => {
    const err = w.spawnError();
    if (err) throw new Error(`temporal dev server failed to start: ${err.message}`);
    if (w.hasExited()) {
      throw new Error(
        `temporal dev server exited during startup (code ${child.exitCode ?? 'none'}, signal ${child.signalCode ?? 'none'})`,
      );
    }
  };
  for (;;) {
    checkAlive();
    if (await temporalAnswers(w.address, w.namespace)) break;
    if (Date.now() > deadline) throw new Error(`temporal dev server did not answer on ${w.address} within ${READY_TIMEOUT_MS / 1000}s`);
    await sleep(250);
  }
  // The UI is served by the same process; make sure its port is open too so the returned URL works.
  for (;;) {
    checkAlive();
    if (await tcpAnswers(HOST, w.uiPort)) return;
    if (Date.now() > deadline) throw new Error(`temporal dev server UI did not open port ${w.uiPort} within ${READY_TIMEOUT_MS / 1000}s`);
    await sleep(250);
  }
}

if (isMainModule(import.meta.url)) {
  try {
    const server = await startDevServer();
    console.log(`Temporal gRPC: ${server.address}`);
    console.log(`Temporal UI:   ${server.uiUrl}`);
    console.log('Press Ctrl-C to stop.');
    stopOnSignal(() => server.stop());
  } catch (e) {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  }
}
