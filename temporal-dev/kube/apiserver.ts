/**
 * A real kube-apiserver for the local lab and the tests, started the way controller-runtime's
 * envtest does it: etcd and kube-apiserver on loopback only, no kubelet, no controller-manager.
 *
 * - etcd: client and peer ports picked free on 127.0.0.1, data under `<dataDir>/etcd`.
 * - kube-apiserver: secure port on 127.0.0.1, a serving certificate from a CA made here
 *   (openssl), a service-account key pair, an admin bearer token in `--token-auth-file`
 *   (group system:masters), RBAC authorization, the ServiceAccount admission plugin off.
 * - A kubeconfig for that admin is written to `<dataDir>/kubeconfig`.
 *
 * Binaries come from `temporal-dev/kube/build.sh` (built from the Go module proxy and cached
 * outside the repository; a no-op when cached), or from NATFLOW_KUBE_APISERVER / NATFLOW_ETCD.
 *
 * `npx tsx temporal-dev/kube/apiserver.ts` brings one up with natflow's CRDs installed, state
 * kept in `<repo>/.natflow/kube/`, prints the kubeconfig path and runs until Ctrl-C.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import {
  ApiextensionsV1Api,
  CustomObjectsApi,
  KubeConfig,
  KubernetesObjectApi,
  PatchStrategy,
  loadAllYaml,
  type KubernetesObject,
  type V1CustomResourceDefinition,
} from '@kubernetes/client-node';
import { repoRoot } from '../provision.js';
import { isMainModule, stopOnSignal } from '../../worker/process.js';
import { terminate, tiedToParent } from '../child-process.js';
import { reservePort } from '../ports.js';
import { loadKubeConfig } from '../../worker/kube-config.js';

const execFileP = promisify(execFile);

const HOST = '127.0.0.1';
const SERVICE_CLUSTER_IP_RANGE = '10.96.0.0/24';
/** The first address of the service range: the in-cluster `kubernetes` service. */
const KUBERNETES_SERVICE_IP = '10.96.0.1';
const ETCD_READY_TIMEOUT_MS = 30_000;
const APISERVER_READY_TIMEOUT_MS = 90_000;
const BUILD_TIMEOUT_MS = 60 * 60_000;
const LOG_TAIL_CHARS = 6_000;
const FIELD_MANAGER = 'natflow';

export interface KubeBinaries {
  kubeApiserver: string;
  etcd: string;
  kubectl: string;
}

export interface KubeApiserverOptions {
  /**
   * Where etcd data, certificates, logs and the kubeconfig live. Kept on stop() (and reused by
   * the next start, etcd data included) when given; a fresh temp dir removed on stop() if not.
   */
  dataDir?: string;
  /** kube-apiserver's secure port on 127.0.0.1; a free one if not given. */
  port?: number;
}

export interface KubeApiserver {
  /** Admin kubeconfig (token of a system:masters user). */
  kubeconfigPath: string;
  /** `https://127.0.0.1:<port>` */
  server: string;
  dataDir: string;
  /** The admin bearer token, also in the kubeconfig. */
  token: string;
  /** PEM of the CA that signed the serving certificate. */
  caPem: string;
  /** etcd's client URL. */
  etcdUrl: string;
  binaries: KubeBinaries;
  /** Process ids of the two servers (to check that stop() left nothing behind). */
  pids: { etcd: number; kubeApiserver: number };
  /** Stops kube-apiserver, then etcd, and waits for both to exit. Idempotent. */
  stop(): Promise<void>;
}

/** The directory the CRD manifests live in (`<repo>/deploy/crds`). */
export function crdDir(): string {
  return path.join(repoRoot(), 'deploy', 'crds');
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------
// Binaries

let binariesPromise: Promise<KubeBinaries> | undefined;

/**
 * Paths of kube-apiserver, etcd and kubectl, building what is missing with build.sh (a no-op
 * when cached; a first build takes minutes). NATFLOW_KUBE_APISERVER, NATFLOW_ETCD and
 * NATFLOW_KUBECTL override single binaries.
 */
export function ensureKubeBinaries(): Promise<KubeBinaries> {
  binariesPromise ??= (async () => {
    const script = path.join(repoRoot(), 'temporal-dev', 'kube', 'build.sh');
    const overrides = {
      kubeApiserver: process.env.NATFLOW_KUBE_APISERVER,
      etcd: process.env.NATFLOW_ETCD,
      kubectl: process.env.NATFLOW_KUBECTL,
    };
    const only: string[] = [];
    if (!overrides.kubeApiserver) only.push('--only', 'kube-apiserver');
    if (!overrides.etcd) only.push('--only', 'etcd');
    if (!overrides.kubectl) only.push('--only', 'kubectl');
    let paths: Record<string, string> = {};
    if (only.length > 0) {
      try {
        const { stdout } = await execFileP('bash', [script, ...only], { timeout: BUILD_TIMEOUT_MS, maxBuffer: 64 << 20 });
        paths = parsePaths(stdout);
      } catch (e) {
        const err = e as { stderr?: string; message?: string };
        throw new Error(`${script} failed: ${err.message ?? e}\n${(err.stderr ?? '').slice(-LOG_TAIL_CHARS)}`);
      }
    }
    const pick = (override: string | undefined, name: string) => {
      const p = override ?? paths[name];
      if (!p) throw new Error(`build.sh printed no path for ${name}`);
      return p;
    };
    return {
      kubeApiserver: pick(overrides.kubeApiserver, 'kube-apiserver'),
      etcd: pick(overrides.etcd, 'etcd'),
      kubectl: pick(overrides.kubectl, 'kubectl'),
    };
  })();
  binariesPromise.catch(() => {
    binariesPromise = undefined;
  });
  return binariesPromise;
}

function parsePaths(stdout: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of stdout.split('\n')) {
    const m = /^(kube-apiserver|etcd|kubectl)=(.+)$/.exec(line.trim());
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Certificates and credentials

interface Credentials {
  caCert: string;
  servingCert: string;
  servingKey: string;
  saKey: string;
  saPub: string;
  tokenFile: string;
  token: string;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  try {
    await execFileP('openssl', args, { cwd, timeout: 60_000 });
  } catch (e) {
    const err = e as { stderr?: string; message?: string };
    throw new Error(`openssl ${args.join(' ')} failed: ${err.stderr?.trim() || err.message}`);
  }
}

/** Makes (once per data dir) the CA, the serving cert, the service-account keys and the admin token. */
async function ensureCredentials(pki: string): Promise<Credentials> {
  await mkdir(pki, { recursive: true, mode: 0o700 });
  const f = (name: string) => path.join(pki, name);
  const creds: Credentials = {
    caCert: f('ca.crt'),
    servingCert: f('apiserver.crt'),
    servingKey: f('apiserver.key'),
    saKey: f('sa.key'),
    saPub: f('sa.pub'),
    tokenFile: f('tokens.csv'),
    token: '',
  };
  const ecKey = (out: string) => openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', out], pki);

  if (!existsSync(creds.caCert) || !existsSync(f('ca.key'))) {
    await ecKey('ca.key');
    await openssl(['req', '-x509', '-new', '-key', 'ca.key', '-sha256', '-days', '3650', '-subj', '/CN=natflow-kube-ca', '-out', 'ca.crt'], pki);
  }
  if (!existsSync(creds.servingCert) || !existsSync(creds.servingKey)) {
    await ecKey('apiserver.key');
    await openssl(['req', '-new', '-key', 'apiserver.key', '-subj', '/CN=kube-apiserver', '-out', 'apiserver.csr'], pki);
    const san = [
      'IP:127.0.0.1',
      `IP:${KUBERNETES_SERVICE_IP}`,
      'DNS:localhost',
      'DNS:kubernetes',
      'DNS:kubernetes.default',
      'DNS:kubernetes.default.svc',
      'DNS:kubernetes.default.svc.cluster.local',
    ].join(',');
    await writeFile(
      f('apiserver.ext'),
      `basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=${san}\n`,
    );
    await openssl(
      ['x509', '-req', '-in', 'apiserver.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-sha256', '-days', '3650', '-extfile', 'apiserver.ext', '-out', 'apiserver.crt'],
      pki,
    );
  }
  if (!existsSync(creds.saKey) || !existsSync(creds.saPub)) {
    await ecKey('sa.key');
    await openssl(['pkey', '-in', 'sa.key', '-pubout', '-out', 'sa.pub'], pki);
  }
  if (existsSync(creds.tokenFile)) {
    creds.token = (await readFile(creds.tokenFile, 'utf8')).split(',')[0]!.trim();
  }
  if (!creds.token) {
    creds.token = randomBytes(24).toString('hex');
    // token,user,uid,"groups"
    await writeFile(creds.tokenFile, `${creds.token},natflow-admin,natflow-admin,"system:masters"\n`, { mode: 0o600 });
  }
  return creds;
}

// ---------------------------------------------------------------------------------------------
// Processes

interface Proc {
  name: string;
  child: ChildProcess;
  logFile: string;
  exited: Promise<void>;
  hasExited(): boolean;
  stop(): Promise<void>;
  logTail(): Promise<string>;
}

/**
 * The local apiserver's Go garbage collector runs a quarter as often as Go's default (GOGC=100), as
 * the dev server's does: in a 1,000-pair burst through the API it took 11.4–12.5 cpu-s instead of
 * 14.7–15.2, for a peak RSS of 0.9 GiB instead of 0.5 (800: no less CPU, 1.5 GiB). A GOGC set in
 * the environment wins; a real cluster's apiserver is its own.
 */
const APISERVER_GOGC = '400';

/**
 * Starts a server process with its output in a log file; it dies with this process, even if this
 * process is killed (a crashed test leaves no apiserver behind).
 */
async function startProc(name: string, bin: string, args: string[], logFile: string, env?: NodeJS.ProcessEnv): Promise<Proc> {
  const log = await open(logFile, 'w');
  const [cmd, argv] = tiedToParent(bin, args, 'KILL');
  // Its own process group, as the dev server's: a terminal's Ctrl-C reaches only us, and we stop it in order.
  const child = spawn(cmd, argv, { stdio: ['ignore', log.fd, log.fd], detached: true, ...(env && { env }) });
  await log.close();
  let spawnError: Error | undefined;
  child.once('error', (e) => {
    spawnError = e;
  });
  const hasExited = () => child.exitCode !== null || child.signalCode !== null || spawnError !== undefined;
  const exited = new Promise<void>((resolve) => {
    if (hasExited()) resolve();
    child.once('exit', () => resolve());
    child.once('error', () => resolve());
  });
  const killOnExit = () => {
    if (!hasExited()) child.kill('SIGKILL');
  };
  process.on('exit', killOnExit);
  let stopping: Promise<void> | undefined;
  return {
    name,
    child,
    logFile,
    exited,
    hasExited,
    stop() {
      stopping ??= (async () => {
        await terminate(child, exited, hasExited);
        process.off('exit', killOnExit);
      })();
      return stopping;
    },
    async logTail() {
      try {
        return (await readFile(logFile, 'utf8')).slice(-LOG_TAIL_CHARS).trim();
      } catch {
        return '';
      }
    },
  };
}

function httpGet(url: string, opts: { ca?: string; token?: string; timeoutMs?: number } = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const mod = u.protocol === 'https:' ? https : http;
    const req = mod.request(
      u,
      {
        method: 'GET',
        ca: opts.ca,
        headers: opts.token ? { Authorization: `Bearer ${opts.token}` } : {},
        timeout: opts.timeoutMs ?? 2_000,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

async function waitFor(proc: Proc, what: string, timeoutMs: number, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc.hasExited()) {
      throw new Error(`${proc.name} exited during startup (code ${proc.child.exitCode ?? 'none'}, signal ${proc.child.signalCode ?? 'none'})`);
    }
    if (await probe().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what} not ready within ${timeoutMs / 1000}s`);
    await sleep(200);
  }
}

async function startEtcd(bin: string, dataDir: string): Promise<{ proc: Proc; url: string }> {
  // The ports are reserved among natflow's processes, but something else may still take one before
  // etcd binds it: try again on an early exit.
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const clientPort = await reservePort();
    const peerPort = await reservePort();
    const url = `http://${HOST}:${clientPort}`;
    const peer = `http://${HOST}:${peerPort}`;
    const proc = await startProc(
      'etcd',
      bin,
      [
        '--name=natflow',
        `--data-dir=${path.join(dataDir, 'etcd')}`,
        `--listen-client-urls=${url}`,
        `--advertise-client-urls=${url}`,
        `--listen-peer-urls=${peer}`,
        `--initial-advertise-peer-urls=${peer}`,
        `--initial-cluster=natflow=${peer}`,
        '--initial-cluster-state=new',
        // A throwaway store: no fsync (envtest does the same), no unbounded growth.
        '--unsafe-no-fsync=true',
        '--quota-backend-bytes=2147483648',
        '--auto-compaction-retention=10m',
        '--log-level=warn',
      ],
      path.join(dataDir, 'etcd.log'),
    );
    try {
      await waitFor(proc, `etcd on ${url}`, ETCD_READY_TIMEOUT_MS, async () => {
        const r = await httpGet(`${url}/health`);
        return r.status === 200 && /"health":\s*"true"/.test(r.body);
      });
      return { proc, url };
    } catch (e) {
      lastError = new Error(`${e instanceof Error ? e.message : e}\n--- etcd log (tail) ---\n${await proc.logTail()}`);
      await proc.stop();
    }
  }
  throw lastError;
}

function kubeconfigYaml(server: string, caPem: string, token: string): string {
  const ca = Buffer.from(caPem).toString('base64');
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '  - name: natflow-lab',
    '    cluster:',
    `      server: ${server}`,
    `      certificate-authority-data: ${ca}`,
    'users:',
    '  - name: natflow-admin',
    '    user:',
    `      token: ${token}`,
    'contexts:',
    '  - name: natflow-lab',
    '    context:',
    '      cluster: natflow-lab',
    '      user: natflow-admin',
    'current-context: natflow-lab',
    '',
  ].join('\n');
}

export async function startKubeApiserver(opts: KubeApiserverOptions = {}): Promise<KubeApiserver> {
  const binaries = await ensureKubeBinaries();
  const ownDir = opts.dataDir === undefined;
  const dataDir = ownDir ? await mkdtemp(path.join(os.tmpdir(), 'natflow-kube-')) : path.resolve(opts.dataDir!);
  await mkdir(dataDir, { recursive: true });

  const procs: Proc[] = [];
  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      // The apiserver first: it holds connections to etcd.
      for (const p of [...procs].reverse()) await p.stop();
      if (ownDir) await rm(dataDir, { recursive: true, force: true });
    })();
    return stopping;
  };

  try {
    const creds = await ensureCredentials(path.join(dataDir, 'pki'));
    const caPem = await readFile(creds.caCert, 'utf8');
    const etcd = await startEtcd(binaries.etcd, dataDir);
    procs.push(etcd.proc);

    const port = opts.port ?? (await reservePort());
    const server = `https://${HOST}:${port}`;
    const apiserver = await startProc(
      'kube-apiserver',
      binaries.kubeApiserver,
      [
        `--advertise-address=${HOST}`,
        `--bind-address=${HOST}`,
        `--secure-port=${port}`,
        `--tls-cert-file=${creds.servingCert}`,
        `--tls-private-key-file=${creds.servingKey}`,
        `--token-auth-file=${creds.tokenFile}`,
        '--authorization-mode=RBAC',
        '--disable-admission-plugins=ServiceAccount',
        `--service-cluster-ip-range=${SERVICE_CLUSTER_IP_RANGE}`,
        `--etcd-servers=${etcd.url}`,
        `--service-account-issuer=${server}`,
        `--service-account-key-file=${creds.saPub}`,
        `--service-account-signing-key-file=${creds.saKey}`,
        '--allow-privileged=true',
        // Nothing here runs pods or serves aggregated APIs; keep the server lean and quiet.
        '--enable-priority-and-fairness=false',
        '--profiling=false',
        '--v=0',
      ],
      path.join(dataDir, 'kube-apiserver.log'),
      { GOGC: APISERVER_GOGC, ...process.env },
    );
    procs.push(apiserver);
    try {
      await waitFor(apiserver, `kube-apiserver on ${server}`, APISERVER_READY_TIMEOUT_MS, async () => {
        const r = await httpGet(`${server}/readyz`, { ca: caPem, token: creds.token });
        return r.status === 200;
      });
    } catch (e) {
      throw new Error(`${e instanceof Error ? e.message : e}\n--- kube-apiserver log (tail) ---\n${await apiserver.logTail()}`);
    }

    const kubeconfigPath = path.join(dataDir, 'kubeconfig');
    await writeFile(kubeconfigPath, kubeconfigYaml(server, caPem, creds.token), { mode: 0o600 });
    return {
      kubeconfigPath,
      server,
      dataDir,
      token: creds.token,
      caPem,
      etcdUrl: etcd.url,
      binaries,
      pids: { etcd: etcd.proc.child.pid ?? -1, kubeApiserver: apiserver.child.pid ?? -1 },
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// CRDs

/** Every object in the YAML files of `dir` (sorted by file name), documents in file order. */
export async function readManifests(dir: string): Promise<KubernetesObject[]> {
  const files = (await readdir(dir)).filter((f) => /\.ya?ml$/.test(f)).sort();
  const out: KubernetesObject[] = [];
  for (const f of files) {
    for (const doc of loadAllYaml(await readFile(path.join(dir, f), 'utf8'))) {
      if (doc && typeof doc === 'object') out.push(doc as KubernetesObject);
    }
  }
  return out;
}

/** Server-side apply of objects (field manager `natflow`, conflicts forced), in order. */
export async function applyObjects(kc: KubeConfig, objects: KubernetesObject[]): Promise<KubernetesObject[]> {
  const client = KubernetesObjectApi.makeApiClient(kc);
  const applied: KubernetesObject[] = [];
  for (const obj of objects) {
    applied.push(await client.patch(obj, undefined, undefined, FIELD_MANAGER, true, PatchStrategy.ServerSideApply));
  }
  return applied;
}

async function listable(api: CustomObjectsApi, crd: V1CustomResourceDefinition): Promise<boolean> {
  const version = crd.spec.versions.find((v) => v.served)?.name ?? crd.spec.versions[0]!.name;
  return api.listClusterCustomObject({ group: crd.spec.group, version, plural: crd.spec.names.plural, limit: 1 }).then(
    () => true,
    () => false,
  );
}

function isEstablished(crd: V1CustomResourceDefinition): boolean {
  const conds = crd.status?.conditions ?? [];
  return ['Established', 'NamesAccepted'].every((t) => conds.some((c) => c.type === t && c.status === 'True'));
}

/**
 * Applies `deploy/crds/*.yaml` (server-side apply) and waits until each CRD is Established, its
 * names are accepted, and its objects can be listed (a fresh CRD's storage answers 429 "storage is
 * (re)initializing" for a moment: watchers started then would only log failures). Returns the CRD
 * names. Safe to repeat.
 */
export async function installCrds(kubeconfigPath: string, opts: { dir?: string; timeoutMs?: number } = {}): Promise<string[]> {
  const kc = loadKubeConfig(kubeconfigPath);
  const objects = await readManifests(opts.dir ?? crdDir());
  const crds = objects.filter((o) => o.kind === 'CustomResourceDefinition');
  if (crds.length === 0) throw new Error(`no CustomResourceDefinition in ${opts.dir ?? crdDir()}`);
  await applyObjects(kc, crds);
  const api = kc.makeApiClient(ApiextensionsV1Api);
  const objectsApi = kc.makeApiClient(CustomObjectsApi);
  const names = crds.map((c) => c.metadata!.name!);
  const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
  for (const name of names) {
    for (;;) {
      const crd = await api.readCustomResourceDefinition({ name });
      if (isEstablished(crd) && (await listable(objectsApi, crd))) break;
      if (Date.now() > deadline) {
        throw new Error(`CRD ${name} not established or not served: ${JSON.stringify(crd.status?.conditions ?? [])}`);
      }
      await sleep(100);
    }
  }
  return names;
}

// ---------------------------------------------------------------------------------------------
// CLI

if (isMainModule(import.meta.url)) {
  try {
    const dataDir = process.env.NATFLOW_KUBE_DIR ?? path.join(repoRoot(), '.natflow', 'kube');
    const port = process.env.NATFLOW_KUBE_PORT ? Number(process.env.NATFLOW_KUBE_PORT) : undefined;
    console.error('preparing kube-apiserver and etcd (a first build takes a while; see temporal-dev/kube/build.sh)...');
    const kube = await startKubeApiserver({ dataDir, ...(port ? { port } : {}) });
    const crds = await installCrds(kube.kubeconfigPath);
    console.log(kube.kubeconfigPath);
    console.error(`kube-apiserver: ${kube.server} (etcd ${kube.etcdUrl}, data in ${kube.dataDir})`);
    console.error(`CRDs installed: ${crds.join(', ')}`);
    console.error(`try: export KUBECONFIG=${kube.kubeconfigPath}; ${kube.binaries.kubectl} apply -f deploy/examples/ && ${kube.binaries.kubectl} get eip`);
    console.error('Press Ctrl-C to stop.');
    stopOnSignal(() => kube.stop());
  } catch (e) {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  }
}
