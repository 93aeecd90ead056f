// The soak's processes, each one the soak can kill: natflow's three (control worker, gateway
// agent, bridge) as child processes kept running the way a Deployment keeps its pods (one that
// exits on its own is started again, and counted), and the two servers (Temporal dev server on
// SQLite, kube-apiserver + etcd) restarted on the same state and port.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { runCommand } from '../../activities/exec.js';
import { tiedToParent } from '../../temporal-dev/child-process.js';
import { startDevServer, type DevServer, type DevServerOptions } from '../../temporal-dev/dev-server.js';
import { installCrds, startKubeApiserver, type KubeApiserver } from '../../temporal-dev/kube/apiserver.js';
import { repoRoot } from '../../temporal-dev/provision.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A natflow process run as `node --import tsx <script> <args>`, tied to the soak (it dies with it, even on SIGKILL). */
export class Supervised {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  /** Exits the soak asked for (a kill, a stop): not restarted by the supervisor. */
  private expectExit = false;
  private stopped = false;
  private restartTimer: NodeJS.Timeout | undefined;
  /** Exits nobody asked for, with their code or signal. */
  readonly unexpectedExits: string[] = [];
  starts = 0;

  constructor(
    readonly name: string,
    private readonly script: string,
    private readonly args: string[],
    private readonly logFile: string,
    private readonly log: (msg: string) => void,
  ) {}

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  start(): void {
    if (this.stopped || this.running) return;
    const out = openSync(this.logFile, 'a');
    const [cmd, argv] = tiedToParent(process.execPath, ['--import', 'tsx', this.script, ...this.args], 'KILL');
    // Its own process group: a terminal's Ctrl-C reaches the soak only, which stops everything in order.
    const child = spawn(cmd, argv, { cwd: repoRoot(), stdio: ['ignore', out, out], detached: true });
    closeSync(out);
    this.child = child;
    this.starts++;
    this.expectExit = false;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    child.once('exit', (code, signal) => {
      if (this.child !== child || this.expectExit || this.stopped) return;
      this.unexpectedExits.push(code !== null ? `code ${code}` : `signal ${signal}`);
      this.log(`${this.name} exited on its own (${code !== null ? `code ${code}` : signal}); started again in 1 s`);
      this.restartTimer = setTimeout(() => this.start(), 1000);
    });
  }

  /** SIGKILL: the process dies mid-work, as an OOM kill or a node loss does. Not restarted until `start()`. */
  async kill(): Promise<void> {
    clearTimeout(this.restartTimer);
    this.expectExit = true;
    this.child?.kill('SIGKILL');
    await this.exited;
  }

  /** SIGTERM, then SIGKILL after 10 s; never started again. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.restartTimer);
    if (!this.running) return;
    this.expectExit = true;
    this.child!.kill('SIGTERM');
    const timer = setTimeout(() => this.child?.kill('SIGKILL'), 10_000);
    await this.exited;
    clearTimeout(timer);
  }

  async logTail(lines = 15): Promise<string> {
    return (await readFile(this.logFile, 'utf8').catch(() => '')).trim().split('\n').slice(-lines).join('\n');
  }
}

/** The pid listening on a TCP port of this host (from `ss`), or null. */
async function listenerPid(port: number): Promise<number | null> {
  const { stdout } = await runCommand('ss', ['-Hltnp', `sport = :${port}`]);
  const m = /pid=(\d+)/.exec(stdout);
  return m ? Number(m[1]) : null;
}

/** The Temporal dev server on its SQLite file; `restart` brings it back on the same file and port. */
export class TemporalServer {
  private server: DevServer | undefined;
  constructor(private readonly opts: Required<Pick<DevServerOptions, 'port' | 'uiPort' | 'dbFile'>>) {}

  get address(): string {
    return `127.0.0.1:${this.opts.port}`;
  }

  async start(): Promise<void> {
    this.server = await startDevServer(this.opts);
  }

  /** Down for `downMs`: SIGKILL (`hard`) or SIGTERM, then started again on the same state. */
  async restart(downMs: number, hard: boolean): Promise<void> {
    if (hard) {
      const pid = await listenerPid(this.opts.port);
      if (pid) process.kill(pid, 'SIGKILL');
    }
    await this.stop();
    await sleep(downMs);
    await this.start();
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    await server?.stop();
  }
}

/** kube-apiserver + etcd on a data dir and port of their own; `restart` brings them back on the same state. */
export class KubeServer {
  private kube: KubeApiserver | undefined;
  kubeconfigPath = '';
  constructor(private readonly opts: { dataDir: string; port: number }) {}

  async start(): Promise<void> {
    const first = this.kube === undefined && this.kubeconfigPath === '';
    this.kube = await startKubeApiserver(this.opts);
    this.kubeconfigPath = this.kube.kubeconfigPath;
    if (first) await installCrds(this.kubeconfigPath);
  }

  async restart(downMs: number, hard: boolean): Promise<void> {
    if (hard && this.kube) {
      for (const pid of [this.kube.pids.kubeApiserver, this.kube.pids.etcd]) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
    await this.stop();
    await sleep(downMs);
    await this.start();
  }

  async stop(): Promise<void> {
    const kube = this.kube;
    this.kube = undefined;
    await kube?.stop();
  }
}
