// A life of months in minutes: the full stack (dev server, control worker, agent, lab gateway,
// kube-apiserver, bridge with a fast resync) on a dev server whose per-run limits are tiny, with
// minutes of creates, spec changes and deletes through the API. No workflow may be terminated,
// fail or time out; every object converges; nothing is left behind; and an idle system writes
// (almost) no history.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '@temporalio/client';
import type { KubeKind } from '../domain/kube.js';
import { DEFAULT_EXTERNAL_SUBNET } from '../domain/subnet.js';
import { KubeBridge } from '../starter/bridge.js';
import { subnetState } from '../starter/resources.js';
import { statusQuery } from '../domain/workflow-api.js';
import { startDevServer, type DevServer } from '../temporal-dev/dev-server.js';
import { reservePort } from '../temporal-dev/ports.js';
import { applyExampleNetwork, ensureKubeBinaries, kubeovnObjects, startKube, type KubeEnv } from './support/kube.js';
import { startStack, type Stack } from './support/stack.js';
import { eventually } from './support/workflows.js';

const GW = 't-months';
/** The server's per-run limits, lowered so that minutes of churn cross them many times over. */
const SERVER_LIMITS = {
  'limit.historyCount.suggestContinueAsNew': 60,
  'limit.historyCount.warn': 120,
  'limit.historyCount.error': 400,
  'history.maximumSignalsPerExecution': 60,
  'history.maxTotalUpdates': 60,
};
/** What natflow's workflows are told to stay under (below the server's, as in production). */
const HISTORY_LIMITS = { events: 150, signals: 40, updates: 40 };
const ROUNDS = 8;

async function countWorkflows(client: Client, query: string): Promise<string[]> {
  const ids: string[] = [];
  for await (const w of client.workflow.list({ query })) ids.push(`${w.workflowId} (${w.status.name})`);
  return ids;
}

describe('a life of months, compressed', () => {
  let dir: string;
  let temporal: DevServer;
  let kube: KubeEnv;
  let stack: Stack;
  let bridge: KubeBridge;

  beforeAll(async () => {
    await ensureKubeBinaries();
    dir = await mkdtemp(path.join(tmpdir(), 'natflow-months-'));
    temporal = await startDevServer({ port: await reservePort(), uiPort: await reservePort(), dbFile: path.join(dir, 'temporal.sqlite'), dynamicConfig: SERVER_LIMITS });
    kube = await startKube();
    stack = await startStack(DEFAULT_EXTERNAL_SUBNET, { kubeConfig: kube.kc, registerSubnet: false, temporalAddress: temporal.address });
    await stack.addGateway(GW, { register: false });
    await applyExampleNetwork(kube.kc, GW);
    bridge = new KubeBridge({ kubeConfig: kube.kc, client: stack.env.client, taskQueue: stack.resources.taskQueue, resyncMs: 2000, historyLimits: HISTORY_LIMITS, log: () => undefined });
    await bridge.start();
  }, 900_000);
  afterAll(async () => {
    await bridge?.stop();
    await stack?.teardown();
    await kube?.stop();
    await temporal?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const objects = kubeovnObjects(() => kube.custom, 180_000);
  const client = () => stack.env.client;
  /** Every running resource workflow's phase and Ready message: what a convergence failure needs to be understood. */
  const everyResource = async () => {
    const lines: string[] = [];
    for await (const w of client().workflow.list({ query: 'NatflowKind IN ("eip", "fip", "dnat", "snat") AND ExecutionStatus = "Running"' })) {
      const status = await client().workflow.getHandle(w.workflowId).query(statusQuery).catch((err: Error) => ({ phase: `(no answer: ${err.message})`, conditions: [] }));
      lines.push(`${w.workflowId}: ${status.phase}: ${status.conditions.find((c) => c.type === 'Ready')?.message ?? ''}`);
    }
    return lines.sort().join('\n');
  };
  /** Ready, or a failure that says where every resource was. */
  const ready = (kind: KubeKind, name: string) =>
    objects.ready(kind, name).catch(async (err: Error) => {
      throw new Error(`${err.message}\n--- resource workflows ---\n${await everyResource()}`);
    });

  it('minutes of churn through the API: nothing terminated, everything converges, nothing leaks, idle writes nothing', async () => {
    // Churn: each round creates EIPs with a FIP, a DNAT and an SNAT, moves the FIP, deletes the
    // previous round's objects (some while in use, some the instant they were created).
    let previous: [KubeKind, string][] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const made: [KubeKind, string][] = [];
      const make = async (kind: KubeKind, name: string, spec: Record<string, unknown>) => {
        await objects.create(kind, name, spec);
        made.push([kind, name]);
      };
      await make('eip', `eip-f${round}`, { natGwDp: GW });
      await make('eip', `eip-s${round}`, { natGwDp: GW });
      await make('fip', `fip${round}`, { eip: `eip-f${round}`, internalIp: '10.0.1.10' });
      await make('dnat', `dnat${round}`, { eip: `eip-s${round}`, protocol: 'tcp', externalPort: String(8000 + round), internalIp: '10.0.1.11', internalPort: '80' });
      await make('snat', `snat${round}`, { eip: `eip-s${round}`, internalCIDR: '10.0.1.0/24' });
      await make('eip', `eip-race${round}`, { natGwDp: GW });
      await objects.del('eip', `eip-race${round}`); // created and deleted at once
      made.pop();
      await ready('fip', `fip${round}`);
      await objects.patchSpec('fip', `fip${round}`, { internalIp: '10.0.1.11' });
      await ready('snat', `snat${round}`);
      // The previous round goes, EIPs first: they wait for their rules.
      for (const [kind, name] of [...previous].reverse()) await objects.del(kind, name);
      previous = made;
      for (const [kind, name] of made) await ready(kind, name);
    }

    // Everything live becomes Ready with a status of its latest generation (the FIP moved last
    // may still show the Ready of its first generation when this starts).
    for (const [kind, name] of previous) {
      const obj = await eventually(() => objects.get(kind, name), (o) => o.status?.ready === true && o.status.observedGeneration === o.metadata?.generation, 60_000, `${kind} ${name} Ready at its latest generation`).catch(async (err: Error) => {
        throw new Error(`${err.message}\n--- resource workflows ---\n${await everyResource()}`);
      });
      expect(obj.status?.observedGeneration, `${kind} ${name}`).toBe(obj.metadata?.generation);
    }
    // The limits were crossed many times over, and no run was ever cut short.
    expect((await countWorkflows(client(), 'ExecutionStatus = "ContinuedAsNew"')).length).toBeGreaterThan(10);
    expect(await countWorkflows(client(), 'ExecutionStatus IN ("Terminated", "Failed", "TimedOut")')).toEqual([]);

    // Idle: with nothing changing and the bridge resyncing every 2 s, history stays put.
    const lengths = async () => {
      const running = new Map<string, number>();
      // Visibility's historyLength is as of the run's last visibility write: ask each run itself.
      for await (const w of client().workflow.list({ query: 'ExecutionStatus = "Running"' })) running.set(w.workflowId, (await client().workflow.getHandle(w.workflowId).describe()).historyLength);
      return running;
    };
    // The last round's deletes have finished: only the live objects' workflows run.
    await eventually(() => countWorkflows(client(), 'NatflowKind IN ("eip", "fip", "dnat", "snat") AND ExecutionStatus = "Running"'), (running) => running.length === previous.length, 60_000, 'only the live resources running');
    await new Promise((r) => setTimeout(r, 5000)); // let the last statuses land
    const before = await lengths();
    await new Promise((r) => setTimeout(r, 30_000));
    const after = await lengths();
    const grown = [...after].filter(([id, length]) => before.has(id) && length - before.get(id)! > 3).map(([id, length]) => `${id}: +${length - before.get(id)!}`);
    expect(grown).toEqual([]);

    // Everything goes: nothing is left on the gateway, in IPAM or in Kubernetes.
    for (const [kind, name] of [...previous].reverse()) await objects.del(kind, name);
    for (const [kind, name] of previous) await objects.gone(kind, name);
    expect(await stack.natRules(GW)).toEqual([]);
    expect(await stack.eipAddresses(GW)).toEqual([]);
    await eventually(() => subnetState(stack.resources, DEFAULT_EXTERNAL_SUBNET), (s) => Object.keys(s.allocations).length === 0, 60_000, 'no allocation');
    // A run ends in the task that lets its object go, or just after (visibility follows a moment later).
    await eventually(() => countWorkflows(client(), 'NatflowKind IN ("eip", "fip", "dnat", "snat") AND ExecutionStatus = "Running"'), (running) => running.length === 0, 30_000, 'no resource workflow running');
    expect(await countWorkflows(client(), 'ExecutionStatus IN ("Terminated", "Failed", "TimedOut")')).toEqual([]);
  }, 900_000);
});
