// Throughput through the CLI path: N EIP+FIP pairs created on one gateway (through
// starter/resources.ts, `--inflight` creates at a time) until all are Ready, then deleted until
// nothing is left (no running workflow, no rule or address on the gateway, no allocation), for
// each N; beside it the Temporal floor: as many trivial workflows running as many no-op
// activities as natflow's workflows ran (an EIP's and a FIP's counted apart: since the V6 types a
// FIP from Kubernetes makes fewer), on the same server and worker settings. "All Ready" is
// the latest of the FIPs' Ready writes on the server, each the one it has kept since (through the
// API: the watch event that showed its object ready), as the floor's end is its last completion.
//
//   npm run bench:throughput -- --pairs 50,200,1000
//
// Latency (`--latency SECONDS`, `--rate R`): on a pool of ready EIPs, a steady R FIP creates and R
// FIP deletes a second (each FIP deleted 3 s after its create) for that long; create → Ready (the
// server's time of the FIP's Ready write) and delete → clean (the time its workflow closed, its
// rules and conntrack entries gone from the gateway) per FIP, p50 and p99. `--pairs 0` skips the bursts.
//
// `--breakdown`: after each scenario, where its time went, from the histories (bench/breakdown.ts):
// a sample of its resource workflows and its gateway's runs, steps by the time they took in all.
//
// API path (`--path api`): the same pairs as IptablesEIP and IptablesFIPRule objects created
// through a kube-apiserver (the bridge starts the workflows, status is written back), Ready when
// every FIP object's status says so, deleted when every object is gone (finalizers released).
//
// It starts its own dev server (SQLite in a temporary directory, as `npm start` runs it), a lab
// gateway `gwb` with a /19 external subnet, the control worker in this process and the gateway's
// agent in a process of its own (as a gateway pod runs it).
// The FIPs point at addresses of a /16 VPC that the lab does not route: no traffic is measured.
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { Client } from '@temporalio/client';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { CustomObjectsApi, makeInformer, type Informer, type KubernetesObject, type ObjectCache } from '@kubernetes/client-node';
import { crd, KUBEOVN_API_VERSION, KUBEOVN_GROUP, KUBEOVN_KINDS, KUBEOVN_VERSION } from '../domain/kube.js';
import { KubeBridge } from '../starter/bridge.js';
import { installCrds, startKubeApiserver } from '../temporal-dev/kube/apiserver.js';
import { loadKubeConfig } from '../worker/kube-config.js';
import { labDown, labUp } from '../temporal-dev/lab.js';
import { startDevServer } from '../temporal-dev/dev-server.js';
import { startAgentProcess, type AgentProcess } from '../temporal-dev/agent-process.js';
import { connectTemporal, temporalTarget } from '../worker/connection.js';
import { createControlWorker, createResourceWorker } from '../worker/control.js';
import { reportRow } from './results.js';
import { Teardown } from './teardown.js';
import { addSteps, historyOf, printSteps, quantile, type History, type Steps } from './breakdown.js';
import { workflowIds } from '../domain/names.js';
import { createResource, ensureGateway, ensureSubnet, findRunning, gatewayState, subnetState } from '../starter/resources.js';

const { values } = parseArgs({
  options: {
    pairs: { type: 'string', default: '50,200,1000' },
    inflight: { type: 'string', default: '50' },
    'no-floor': { type: 'boolean' },
    latency: { type: 'string', default: '0' },
    rate: { type: 'string', default: '20' },
    path: { type: 'string', default: 'cli' },
    breakdown: { type: 'boolean' },
  },
});
const apiPath = values.path === 'api';
if (!['cli', 'api'].includes(values.path!)) throw new Error('--path: cli or api');
const sizes = values.pairs === '0' ? [] : values.pairs!.split(',').map(Number);
const inflight = Number(values.inflight);
const [latencySeconds, rate] = [Number(values.latency), Number(values.rate)];
if (sizes.some((n) => !(n > 0 && n <= 8000)) || !(inflight > 0)) throw new Error('--pairs: sizes from 1 to 8000 (a /19), or 0; --inflight: a positive number');
if (!(latencySeconds >= 0) || !(rate > 0 && rate <= 100)) throw new Error('--latency: seconds (0: none); --rate: FIP creates (and deletes) a second, up to 100');

Runtime.install({ logger: new DefaultLogger('ERROR'), shutdownSignals: [] });
const GATEWAY = 'gwb';
const SUBNET = 'bench-ext';
const seconds = (ms: number) => (ms / 1000).toFixed(1);
const mib = (bytes: number | undefined) => `${Math.round((bytes ?? 0) / 2 ** 20)} MiB`;
/** How often the bench counts: each count walks every running workflow's visibility record. */
const POLL_MS = 500;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** `task` of every item, `limit` at a time, in order. */
async function mapPool<T, R>(items: T[], limit: number, task: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = [];
  await pool(items.map((item, i) => [item, i] as const), limit, async ([item, i]) => (results[i] = await task(item)));
  return results;
}

/** Runs `task` on every item, `limit` at a time. */
async function pool<T>(items: T[], limit: number, task: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await task(items[next++]!);
  }));
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 15 * 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(POLL_MS);
  }
}

const count = async (client: Client, query: string) => (await client.workflow.count(query)).count;

/** Peak RSS of this process (control worker + bench client), sampled. */
let peakRss = 0;
/** The agent's and the dev server's, read from the kernel before they stop. */
let agentPeakRss = 0;
let serverPeakRss = 0;
setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 250).unref();

// Each thing is taken down as it was set up, in reverse: at the end, after a failure, on Ctrl-C.
const teardown = new Teardown((line) => console.error(`[bench] ${line}`)).onInterrupt();
const scratch = await mkdtemp(path.join(os.tmpdir(), 'natflow-bench-'));
teardown.add('remove the scratch directory', () => rm(scratch, { recursive: true, force: true }));
const server = await startDevServer({ port: 17433, uiPort: 18433, dbFile: path.join(scratch, 'temporal.sqlite') });
teardown.add('stop the Temporal server', () => server.stop());
teardown.add('take the lab down', () => labDown(GATEWAY));
const topology = await labUp(GATEWAY);
const temporal = await connectTemporal(temporalTarget({ address: server.address }));
teardown.add('close the Temporal connections', () => temporal.close());
const { client, nativeConnection } = temporal;
// The API path's cluster: a kube-apiserver with the CRDs, and the bridge.
const kube = apiPath ? await startKubeApiserver({ dataDir: path.join(scratch, 'kube') }) : undefined;
if (kube) teardown.add('stop kube-apiserver', () => kube.stop());
if (kube) await installCrds(kube.kubeconfigPath);
const kubeConfig = kube ? loadKubeConfig(kube.kubeconfigPath) : undefined;
const objects = kubeConfig?.makeApiClient(CustomObjectsApi);
const control = await createControlWorker({ connection: nativeConnection, client, kubeConfig });
const controlRun = control.run();
teardown.add('stop the control worker', () => (control.shutdown(), controlRun.catch(() => undefined)));
const bridge = kubeConfig ? new KubeBridge({ kubeConfig, client, log: () => undefined }) : undefined;
if (bridge) teardown.add('stop the bridge', () => bridge.stop());
await bridge?.start();
const watched = objects ? { eip: await watchObjects('eip'), fip: await watchObjects('fip') } : undefined;
if (watched) teardown.add('stop the watches', () => Promise.all(Object.values(watched).map((w) => w.stop())));
const r = { client };
const rows: string[][] = [];
let latency: { fips: number; ready: number[]; clean: number[]; busy: number } | null = null;
try {
  await ensureSubnet(r, { name: SUBNET, cidrBlock: '172.30.0.0/19', gateway: '172.30.0.1', excludeIps: [] });
  await ensureGateway(r, { name: GATEWAY, externalSubnet: SUBNET, lanIp: topology.lanIp, internalCidr: '10.0.0.0/16' });
  const agent = startAgentProcess(server.address, GATEWAY, topology);
  teardown.add('stop the agent', () => agent.stop());
  const cpu = cpuMeter(agent);
  await until('the gateway ready', async () => (await gatewayState(r, GATEWAY)).ready);

  for (const [round, n] of sizes.entries()) {
    const pairs = Array.from({ length: n }, (_, i) => ({ eip: `b${round}-e${i}`, fip: `b${round}-f${i}`, internalIp: `10.0.${16 + Math.floor(i / 250)}.${1 + (i % 250)}` }));
    const created: string[] = [];
    console.log(`[bench] ${n} pairs: creating`);
    const t0 = Date.now();
    const cpu0 = cpu.now();
    await pool(pairs, inflight, async (p) => {
      if (objects) {
        await objects.createClusterCustomObject({ ...crd('eip'), body: kubeObject('eip', p.eip, { natGwDp: GATEWAY, externalSubnet: SUBNET }) });
        await objects.createClusterCustomObject({ ...crd('fip'), body: kubeObject('fip', p.fip, { eip: p.eip, internalIp: p.internalIp }) });
        return;
      }
      created.push((await createResource(r, 'eip', p.eip, { natGwDp: GATEWAY, externalSubnet: SUBNET })).workflowId);
      created.push((await createResource(r, 'fip', p.fip, { eip: p.eip, internalIp: p.internalIp })).workflowId);
    });
    const started = Date.now() - t0;
    if (objects) await until(`${n} FIP objects ready`, async () => readyIn(watched!.fip.list()) >= n && readyIn(await listObjects('fip')) >= n);
    else await until(`${n} FIPs Ready`, async () => (await count(client, 'NatflowKind = "fip" AND NatflowPhase = "Ready" AND ExecutionStatus = "Running"')) >= n);
    const burstCpu = cpu.since(cpu0);
    // When the last one became Ready (and stayed so), not when the check above (every POLL_MS) saw
    // it: the floor's end is its last workflow's completion, to the millisecond. Where that time is
    // not known (a run continued as new since, a watch event missed), the check's time stands.
    const seen = Date.now();
    const readyTimes = objects
      ? pairs.map((p) => watched!.fip.readyAt.get(p.fip))
      : await mapPool(created.filter((id) => id.startsWith('natflow/fip/')), 20, (id) => readyWrittenAt(id, 'lasting'));
    const unknown = readyTimes.filter((t) => t === undefined).length;
    if (unknown > 0) console.log(`[bench] ${unknown} of ${n} FIPs without a known Ready time: counted at ${seconds(seen - t0)} s`);
    const times = readyTimes.map((t) => (t ?? seen) - t0);
    const ready = Math.max(...times);
    // The shape of the burst: a tail of stragglers reads differently from a machine full to the end.
    console.log(`[bench] ${n} pairs: half Ready at ${seconds(quantile(times, 0.5))} s, 90 % at ${seconds(quantile(times, 0.9))} s, 99 % at ${seconds(quantile(times, 0.99))} s`);
    if (objects) for await (const w of client.workflow.list({ query: 'NatflowKind IN ("eip", "fip") AND ExecutionStatus = "Running"' })) created.push(w.workflowId);
    // A sample of each kind: what a pair cost (activities and local activities per EIP and per FIP workflow, for the floor), and where the time went.
    const samples = (['eip', 'fip'] as const).map((kind) => created.filter((id) => id.startsWith(`natflow/${kind}/`)).slice(0, 20));
    const perKind = await Promise.all(samples.map(callsPerWorkflow));

    console.log(`[bench] ${n} pairs: Ready in ${seconds(ready)} s; deleting`);
    const t1 = Date.now();
    if (objects) {
      await pool(pairs.flatMap((p) => [['fip', p.fip], ['eip', p.eip]] as const), inflight, ([kind, name]) => objects.deleteClusterCustomObject({ ...crd(kind), name }));
      await until('every object gone', async () => watched!.eip.list().length + watched!.fip.list().length === 0 && (await listObjects('eip')).length + (await listObjects('fip')).length === 0);
    } else await pool(created, inflight, (id) => client.workflow.getHandle(id).cancel());
    // Counted first: the state queries are large and cost the gateway and IPAM workflow tasks.
    await until('every workflow ended', async () => (await count(client, 'NatflowKind IN ("eip", "fip") AND ExecutionStatus = "Running"')) === 0);
    await until('nothing left on the gateway and in IPAM', async () => {
      const gw = await gatewayState(r, GATEWAY);
      const ipam = await subnetState(r, SUBNET);
      return Object.keys(gw.rules).length === 0 && Object.keys(gw.eips).length === 0 && Object.keys(ipam.allocations).length === 0;
    });
    const deleted = Date.now() - t1;
    if (values.breakdown) {
      const sample = await Promise.all(samples.flat().map((workflowId) => historyOf(client, { workflowId })));
      const gateway = await gatewayHistories();
      for (const [phase, window] of [['creating', [t0, t0 + ready]], ['deleting', [t1, t1 + deleted]]] as const) {
        printSteps(`${n} pairs ${phase}: ${sample.length} EIP and FIP workflows`, stepsOf(sample, [...window]));
        printSteps(`${n} pairs ${phase}: the gateway`, stepsOf(gateway, [...window]));
      }
    }

    let floor = '-';
    let floorCpu = '-';
    if (!values['no-floor']) {
      const measured = await temporalFloor(client, nativeConnection, n, perKind, cpu);
      floor = seconds(measured.ms);
      floorCpu = measured.cpu;
    }
    console.log(`[bench] ${n} pairs: CPU seconds until all Ready: ${burstCpu}; the floor's: ${floorCpu}`);
    rows.push([String(n), seconds(started), seconds(ready), seconds(deleted), (ready / n).toFixed(1), perKind.map((c, i) => `${i === 0 ? 'eip' : 'fip'} ${c.activities} + ${c.localActivities} local`).join(', '), burstCpu, floor, floorCpu, floor === '-' ? '-' : (ready / 1000 / Number(floor)).toFixed(2)]);
    const rss = `control ${mib(peakRss)}, agent ${mib(agent.peakRss())}, server ${mib(server.peakRss())}`;
    reportRow({ scenario: `EIP+FIP pairs to Ready (${apiPath ? 'API path: kube objects, bridge, status' : 'CLI path'})`, size: `${n} pairs`, result: `${seconds(ready)} s`, versus: floor === '-' ? undefined : `floor ${floor} s`, ratio: floor === '-' ? undefined : `${(ready / 1000 / Number(floor)).toFixed(2)}×`, rss });
    reportRow({ scenario: 'the same pairs deleted, nothing left', size: `${n} pairs`, result: `${seconds(deleted)} s`, versus: `create ${seconds(ready)} s`, ratio: `${(deleted / ready).toFixed(2)}×` });
    console.log(`[bench] ${n} pairs: Ready in ${seconds(ready)} s, deleted in ${seconds(deleted)} s`);
  }
  if (latencySeconds > 0) latency = await steadyLatency(latencySeconds, rate);
  agentPeakRss = agent.peakRss() ?? 0;
  serverPeakRss = server.peakRss() ?? 0;
} finally {
  await teardown.run();
}

if (rows.length > 0) console.log(`\nnatflow throughput, ${apiPath ? 'API path (kubectl-style creates through a kube-apiserver, the bridge, status written back)' : 'CLI path'} (${new Date().toISOString().slice(0, 10)}; ${os.cpus().length} cores, ${os.cpus()[0]?.model}; node ${process.version}; @temporalio ${(await import('@temporalio/worker/package.json', { with: { type: 'json' } })).default.version})`);
if (rows.length > 0) {
  console.log(`${inflight} creates in flight; dev server on SQLite (WAL); peak RSS of control worker + bench ${mib(peakRss)}, of the agent ${mib(agentPeakRss)}, of the dev server ${mib(serverPeakRss)}\n`);
  console.log(['pairs', 'created s', 'all Ready s', 'all deleted s', 'ms/pair', 'activities/wf', 'CPU s until Ready', 'floor s', 'floor CPU s', 'Ready/floor'].join('\t'));
  for (const row of rows) console.log(row.join('\t'));
}

if (latency) {
  const ms = (v: number) => `${Math.round(v)} ms`;
  console.log(`\nlatency: ${rate} FIP creates/s and ${rate} deletes/s for ${latencySeconds} s (${latency.fips} FIPs); the machine ${latency.busy} % busy meanwhile`);
  console.log(['', 'p50', 'p99', 'max', 'measured'].join('\t'));
  for (const [what, values] of [['create → Ready', latency.ready], ['delete → clean', latency.clean]] as const) {
    console.log([what, ms(quantile(values, 0.5)), ms(quantile(values, 0.99)), ms(Math.max(...values)), String(values.length)].join('\t'));
    reportRow({ scenario: `FIP ${what}, ${rate}/s created and deleted`, size: `${latencySeconds} s, ${values.length} FIPs`, result: `max ${ms(Math.max(...values))}`, p50: ms(quantile(values, 0.5)), p99: ms(quantile(values, 0.99)), versus: `machine ${latency.busy} % busy` });
  }
}

function kubeObject(kind: 'eip' | 'fip', name: string, spec: Record<string, string>) {
  return { apiVersion: KUBEOVN_API_VERSION, kind: KUBEOVN_KINDS[kind].kind, metadata: { name }, spec };
}

type Watched = KubernetesObject & { status?: { ready?: boolean } };

async function listObjects(kind: 'eip' | 'fip'): Promise<Watched[]> {
  return ((await objects!.listClusterCustomObject(crd(kind))) as { items: Watched[] }).items;
}

function readyIn(items: readonly Watched[]): number {
  return items.filter((o) => o.status?.ready === true).length;
}

/**
 * The kind's objects as a watch sees them, as `kubectl wait` follows them: a full list of thousands
 * of objects twice a second would load the apiserver being measured. A list confirms the end once.
 */
async function watchObjects(kind: 'eip' | 'fip'): Promise<Informer<Watched> & ObjectCache<Watched> & { readyAt: Map<string, number> }> {
  const informer = makeInformer<Watched>(kubeConfig!, `/apis/${KUBEOVN_GROUP}/${KUBEOVN_VERSION}/${KUBEOVN_KINDS[kind].plural}`, () => objects!.listClusterCustomObject(crd(kind)) as never);
  // When the watch showed each object ready, since it last showed it not ready: the time a
  // `kubectl wait` would have returned.
  const readyAt = new Map<string, number>();
  const seen = (o: Watched) => {
    const name = o.metadata?.name;
    if (!name) return;
    if (o.status?.ready !== true) readyAt.delete(name);
    else if (!readyAt.has(name)) readyAt.set(name, Date.now());
  };
  informer.on('add', seen);
  informer.on('update', seen);
  await informer.start();
  return Object.assign(informer, { readyAt });
}

/**
 * The server's time (ms) of the workflow's Ready write (its NatflowPhase search attribute) in its
 * current run: the first one, or the one it has kept since (`lasting`: none if it is not Ready now).
 */
async function readyWrittenAt(workflowId: string, which: 'first' | 'lasting'): Promise<number | undefined> {
  const events = await historyOf(client, { workflowId });
  const phases = events.flatMap((e) => {
    const phase = e.upsertWorkflowSearchAttributesEventAttributes?.searchAttributes?.indexedFields?.NatflowPhase?.data;
    if (!phase || e.eventTime?.seconds == null) return [];
    return [{ ready: Buffer.from(phase).toString().includes('"Ready"'), at: Number(e.eventTime.seconds) * 1000 + Math.round((e.eventTime.nanos ?? 0) / 1e6) }];
  });
  const lastNotReady = which === 'first' ? -1 : phases.map((p) => p.ready).lastIndexOf(false);
  return phases.slice(lastNotReady + 1).find((p) => p.ready)?.at;
}

/**
 * A steady churn of FIPs on a pool of ready EIPs: every 1/rate s one FIP is created, and the one
 * created 3 s earlier deleted. Times come from the server afterwards (the Ready write's event time,
 * the close time), so measuring takes nothing from the run.
 */
async function steadyLatency(seconds: number, perSecond: number): Promise<{ fips: number; ready: number[]; clean: number[]; busy: number }> {
  const lagTicks = 3 * perSecond;
  const poolSize = 10 * perSecond; // an EIP's last FIP was deleted ~7 s before the next one claims it
  const eips = Array.from({ length: poolSize }, (_, i) => `l-e${i}`);
  await pool(eips, inflight, (name) => createResource(r, 'eip', name, { natGwDp: GATEWAY, externalSubnet: SUBNET }));
  await until(`${poolSize} EIPs Ready`, async () => (await count(client, 'NatflowKind = "eip" AND NatflowPhase = "Ready" AND ExecutionStatus = "Running"')) >= poolSize);
  const fips: { workflowId: string; createdAt: number; deletedAt?: number }[] = [];
  const work: Promise<unknown>[] = [];
  const ticks = seconds * perSecond;
  const t0 = Date.now();
  const cpuAtStart = cpuTimes();
  for (let k = 0; k < ticks + lagTicks; k++) {
    await sleep(Math.max(0, t0 + (k * 1000) / perSecond - Date.now()));
    if (k < ticks) {
      const createdAt = Date.now();
      const slot = fips.length;
      fips.push({ workflowId: '', createdAt });
      work.push(createResource(r, 'fip', `l-f${k}`, { eip: eips[k % poolSize]!, internalIp: `10.0.${16 + Math.floor(k / 250) % 200}.${1 + (k % 250)}` }).then((c) => (fips[slot]!.workflowId = c.workflowId)));
    }
    const old = fips[k - lagTicks];
    if (old) {
      work.push(
        (async () => {
          while (!old.workflowId) await sleep(10);
          old.deletedAt = Date.now();
          await client.workflow.getHandle(old.workflowId).cancel();
        })(),
      );
    }
  }
  await Promise.all(work);
  // Near full, the latency depends on the hour as much as on the code (README, "Where the time goes").
  const cpu = cpuTimes();
  const busy = Math.round((100 * (cpu.busy - cpuAtStart.busy)) / (cpu.total - cpuAtStart.total));
  await until('every FIP closed', async () => (await count(client, 'NatflowKind = "fip" AND ExecutionStatus = "Running"')) === 0);
  const ready: number[] = [];
  const clean: number[] = [];
  for (const f of fips) {
    const readyAt = await readyWrittenAt(f.workflowId, 'first');
    if (readyAt !== undefined) ready.push(readyAt - f.createdAt);
    const closed = (await client.workflow.getHandle(f.workflowId).describe()).closeTime;
    if (closed && f.deletedAt) clean.push(closed.getTime() - f.deletedAt);
  }
  if (values.breakdown) {
    const steps: Steps = new Map();
    for (const f of fips.filter((_, i) => i % 5 === 0)) addSteps(steps, await historyOf(client, f), [t0, Infinity], f.createdAt);
    printSteps('latency: 1 in 5 FIP workflows', steps);
    printSteps('latency: the gateway', stepsOf(await gatewayHistories(), [t0, Date.now()]));
  }
  for (const name of eips) await client.workflow.getHandle((await findRunning(r, 'eip', { name }))[0]!.workflowId).cancel();
  await until('every EIP closed', async () => (await count(client, 'NatflowKind = "eip" AND ExecutionStatus = "Running"')) === 0);
  return { fips: fips.length, ready, clean, busy };
}

/** CPU seconds of this process (the control worker and the bench's client), the dev server and the agent: `now()`, and since then as the report prints them. */
function cpuMeter(agent: AgentProcess) {
  const now = () => {
    const own = process.cpuUsage();
    return [(own.user + own.system) / 1e6, server.cpuSeconds() ?? NaN, agent.cpuSeconds() ?? NaN];
  };
  const since = (before: number[]) => {
    const after = now();
    return ['control', 'server', 'agent'].map((name, i) => `${name} ${(after[i]! - before[i]!).toFixed(1)}`).join(', ');
  };
  return { now, since };
}

/** The machine's CPU time, all cores, busy and in all (/proc/stat: idle and iowait are not busy). */
function cpuTimes(): { busy: number; total: number } {
  const ticks = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1, 9).map(Number); // user … steal (guest time is in user already)
  const total = ticks.reduce((a, b) => a + b, 0);
  return { busy: total - ticks[3]! - ticks[4]!, total };
}

/** The histories of the gateway's runs. */
async function gatewayHistories(): Promise<History[]> {
  const histories: History[] = [];
  for await (const run of client.workflow.list({ query: `WorkflowId = ${JSON.stringify(workflowIds.gateway(GATEWAY))}` })) histories.push(await historyOf(client, run));
  return histories;
}

/** The steps of these histories in `window`. */
function stepsOf(histories: History[], window: [number, number]): Steps {
  const steps: Steps = new Map();
  for (const events of histories) addSteps(steps, events, window);
  return steps;
}

interface Calls {
  activities: number;
  localActivities: number;
}

/** The activities and local activities these workflows ran, on average (rounded). */
async function callsPerWorkflow(workflowIds: string[]): Promise<Calls> {
  let activities = 0;
  let localActivities = 0;
  for (const id of workflowIds) {
    const events = await historyOf(client, { workflowId: id });
    activities += events.filter((e) => e.activityTaskScheduledEventAttributes).length;
    localActivities += events.filter((e) => e.markerRecordedEventAttributes?.markerName === 'core_local_activity').length;
  }
  return { activities: Math.round(activities / workflowIds.length), localActivities: Math.round(localActivities / workflowIds.length) };
}

/**
 * The floor: for each pair, a trivial workflow of as many no-op (local) activities as natflow's EIPs
 * ran and one of as many as its FIPs ran (`perKind`), `inflight` starts at a time, until all completed.
 */
async function temporalFloor(client: Client, connection: typeof nativeConnection, pairs: number, perKind: Calls[], cpu: ReturnType<typeof cpuMeter>): Promise<{ ms: number; cpu: string }> {
  const taskQueue = 'bench-floor';
  const worker = await createResourceWorker({
    connection,
    taskQueue,
    workflowsPath: new URL('./floor-workflow.ts', import.meta.url).pathname,
    activities: { noop: async () => undefined },
  });
  return worker.runUntil(async () => {
    const t0 = Date.now();
    const cpu0 = cpu.now(); // from here, as natflow's: the worker made (its bundle built) before
    const handles: { result(): Promise<unknown> }[] = [];
    await pool(Array.from({ length: pairs * perKind.length }, (_, i) => i), inflight, async (i) => {
      const calls = perKind[i % perKind.length]!;
      handles.push(await client.workflow.start('floorWorkflow', { taskQueue, workflowId: `bench-floor-${t0}-${i}`, args: [calls.activities, calls.localActivities] }));
    });
    // Waited for `inflight` at a time, as they were started: a wait is a long poll, and the server
    // limits those per namespace (10,000 at once, at 5,000 pairs: "namespace concurrent poller limit exceeded").
    await pool(handles, inflight, (h) => h.result());
    return { ms: Date.now() - t0, cpu: cpu.since(cpu0) };
  });
}
