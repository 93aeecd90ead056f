// Throughput through the CLI path: N EIP+FIP pairs created on one gateway (through
// starter/resources.ts, `--inflight` creates at a time) until all are Ready, then deleted until
// nothing is left (no running workflow, no rule or address on the gateway, no allocation), for
// each N; beside it the Temporal floor: as many trivial workflows running as many no-op
// activities as natflow's workflows ran, on the same server and worker settings.
//
//   npm run bench:throughput -- --pairs 50,200,1000
//
// It starts its own dev server (SQLite in a temporary directory, as `npm start` runs it), a lab
// gateway `gwb` with a /20 external subnet, the control worker and the agent in this process.
// The FIPs point at addresses of a /16 VPC that the lab does not route: no traffic is measured.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { Client } from '@temporalio/client';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import { labDown, labUp } from '../temporal-dev/lab.js';
import { startDevServer } from '../temporal-dev/dev-server.js';
import { startGatewayAgent } from '../worker/agent.js';
import { connectTemporal, temporalTarget } from '../worker/connection.js';
import { createControlWorker, RESOURCE_TUNING } from '../worker/control.js';
import { createResource, ensureGateway, ensureSubnet, gatewayState, subnetState } from '../starter/resources.js';

const { values } = parseArgs({ options: { pairs: { type: 'string', default: '50,200,1000' }, inflight: { type: 'string', default: '50' }, 'no-floor': { type: 'boolean' } } });
const sizes = values.pairs!.split(',').map(Number);
const inflight = Number(values.inflight);
if (sizes.some((n) => !(n > 0 && n <= 4000)) || !(inflight > 0)) throw new Error('--pairs: sizes from 1 to 4000 (a /20); --inflight: a positive number');

Runtime.install({ logger: new DefaultLogger('ERROR'), shutdownSignals: [] });
const GATEWAY = 'gwb';
const SUBNET = 'bench-ext';
const seconds = (ms: number) => (ms / 1000).toFixed(1);
/** How often the bench counts: each count walks every running workflow's visibility record. */
const POLL_MS = 500;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

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

/** Peak RSS of this process (control worker + agent + bench client), sampled. */
let peakRss = 0;
setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 250).unref();

const scratch = await mkdtemp(path.join(os.tmpdir(), 'natflow-bench-'));
const server = await startDevServer({ port: 17433, uiPort: 18433, dbFile: path.join(scratch, 'temporal.sqlite') });
const topology = await labUp(GATEWAY);
const temporal = await connectTemporal(temporalTarget({ address: server.address }));
const { client, nativeConnection } = temporal;
const control = await createControlWorker({ connection: nativeConnection, client });
const controlRun = control.run();
const r = { client };
const rows: string[][] = [];
try {
  await ensureSubnet(r, { name: SUBNET, cidrBlock: '172.30.0.0/20', gateway: '172.30.0.1', excludeIps: [] });
  await ensureGateway(r, { name: GATEWAY, externalSubnet: SUBNET, lanIp: topology.lanIp, internalCidr: '10.0.0.0/16' });
  const agent = await startGatewayAgent({ gateway: GATEWAY, netns: topology.gatewayNs, externalInterface: topology.externalInterface, vpcInterface: topology.vpcInterface }, nativeConnection, client);
  await until('the gateway ready', async () => (await gatewayState(r, GATEWAY)).ready);

  for (const [round, n] of sizes.entries()) {
    const pairs = Array.from({ length: n }, (_, i) => ({ eip: `b${round}-e${i}`, fip: `b${round}-f${i}`, internalIp: `10.0.${16 + Math.floor(i / 250)}.${1 + (i % 250)}` }));
    const created: string[] = [];
    const t0 = Date.now();
    await pool(pairs, inflight, async (p) => {
      created.push((await createResource(r, 'eip', p.eip, { natGwDp: GATEWAY, externalSubnet: SUBNET })).workflowId);
      created.push((await createResource(r, 'fip', p.fip, { eip: p.eip, internalIp: p.internalIp })).workflowId);
    });
    const started = Date.now() - t0;
    await until(`${n} FIPs Ready`, async () => (await count(client, 'NatflowKind = "fip" AND NatflowPhase = "Ready" AND ExecutionStatus = "Running"')) >= n);
    const ready = Date.now() - t0;
    // What a pair cost: activities and local activities per resource workflow (from a sample), for the floor.
    const sample = ['eip', 'fip'].flatMap((kind) => created.filter((id) => id.startsWith(`natflow/${kind}/`)).slice(0, 10));
    let activities = 0;
    let localActivities = 0;
    for (const id of sample) {
      const events = (await client.workflow.getHandle(id).fetchHistory()).events ?? [];
      activities += events.filter((e) => e.activityTaskScheduledEventAttributes).length;
      localActivities += events.filter((e) => e.markerRecordedEventAttributes?.markerName === 'core_local_activity').length;
    }
    const perWorkflow = { activities: Math.round(activities / sample.length), localActivities: Math.round(localActivities / sample.length) };

    const t1 = Date.now();
    await pool(created, inflight, (id) => client.workflow.getHandle(id).cancel());
    // Counted first: the state queries are large and cost the gateway and IPAM workflow tasks.
    await until('every workflow ended', async () => (await count(client, 'NatflowKind IN ("eip", "fip") AND ExecutionStatus = "Running"')) === 0);
    await until('nothing left on the gateway and in IPAM', async () => {
      const gw = await gatewayState(r, GATEWAY);
      const ipam = await subnetState(r, SUBNET);
      return Object.keys(gw.rules).length === 0 && Object.keys(gw.eips).length === 0 && Object.keys(ipam.allocations).length === 0;
    });
    const deleted = Date.now() - t1;

    let floor = '-';
    if (!values['no-floor']) floor = seconds(await temporalFloor(client, nativeConnection, 2 * n, perWorkflow));
    rows.push([String(n), seconds(started), seconds(ready), seconds(deleted), (ready / n).toFixed(1), `${perWorkflow.activities} + ${perWorkflow.localActivities} local`, floor, floor === '-' ? '-' : (ready / 1000 / Number(floor)).toFixed(2)]);
    console.log(`[bench] ${n} pairs: Ready in ${seconds(ready)} s, deleted in ${seconds(deleted)} s`);
  }
  await agent.stop();
} finally {
  control.shutdown();
  await controlRun.catch(() => undefined);
  await temporal.close();
  await labDown(GATEWAY);
  await server.stop();
  await rm(scratch, { recursive: true, force: true });
}

console.log(`\nnatflow throughput, CLI path (${new Date().toISOString().slice(0, 10)}; ${os.cpus().length} cores, ${os.cpus()[0]?.model}; node ${process.version}; @temporalio ${(await import('@temporalio/worker/package.json', { with: { type: 'json' } })).default.version})`);
console.log(`${inflight} creates in flight; dev server on SQLite (WAL); peak RSS of control worker + agent + bench: ${Math.round(peakRss / 2 ** 20)} MiB\n`);
const header = ['pairs', 'created s', 'all Ready s', 'all deleted s', 'ms/pair', 'activities/wf', 'floor s', 'Ready/floor'];
console.log(header.join('\t'));
for (const row of rows) console.log(row.join('\t'));

/** The floor: `workflows` trivial workflows of as many no-op (local) activities each as natflow's ran, `inflight` starts at a time, until all completed. */
async function temporalFloor(client: Client, connection: typeof nativeConnection, workflows: number, perWorkflow: { activities: number; localActivities: number }): Promise<number> {
  const taskQueue = 'bench-floor';
  const worker = await Worker.create({
    connection,
    taskQueue,
    workflowsPath: new URL('./floor-workflow.ts', import.meta.url).pathname,
    activities: { noop: async () => undefined },
    ...RESOURCE_TUNING, // the resource workflows' own worker settings
  });
  return worker.runUntil(async () => {
    const t0 = Date.now();
    const handles: { result(): Promise<unknown> }[] = [];
    await pool(Array.from({ length: workflows }, (_, i) => i), inflight, async (i) => {
      handles.push(await client.workflow.start('floorWorkflow', { taskQueue, workflowId: `bench-floor-${t0}-${i}`, args: [perWorkflow.activities, perWorkflow.localActivities] }));
    });
    await Promise.all(handles.map((h) => h.result()));
    return Date.now() - t0;
  });
}
