// A Temporal outage loses nothing: with a persistent dev server (SQLite) stopped and started
// again, a delete and a create made through Kubernetes while it was down both converge, and the
// gateway is left exactly as the cluster says.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_EXTERNAL_SUBNET } from '../domain/subnet.js';
import { KubeBridge } from '../starter/bridge.js';
import { startDevServer, type DevServer } from '../temporal-dev/dev-server.js';
import { reservePort } from '../temporal-dev/ports.js';
import { applyExampleNetwork, ensureKubeBinaries, kubeovnObjects, startKube, type KubeEnv } from './support/kube.js';
import { startStack, type Stack } from './support/stack.js';

const GW = 't-outage';

describe('Temporal outage', () => {
  let dir: string;
  let temporal: DevServer;
  let ports: { port: number; uiPort: number };
  let kube: KubeEnv;
  let stack: Stack;
  let bridge: KubeBridge;

  beforeAll(async () => {
    await ensureKubeBinaries();
    dir = await mkdtemp(path.join(tmpdir(), 'natflow-outage-'));
    ports = { port: await reservePort(), uiPort: await reservePort() };
    temporal = await startDevServer({ ...ports, dbFile: path.join(dir, 'temporal.sqlite') });
    kube = await startKube();
    stack = await startStack(DEFAULT_EXTERNAL_SUBNET, { kubeConfig: kube.kc, registerSubnet: false, temporalAddress: temporal.address });
    await stack.addGateway(GW, { register: false });
    await applyExampleNetwork(kube.kc, GW);
    bridge = new KubeBridge({ kubeConfig: kube.kc, client: stack.env.client, taskQueue: stack.resources.taskQueue, resyncMs: 2000, log: () => undefined });
    await bridge.start();
  }, 900_000);
  afterAll(async () => {
    await bridge?.stop();
    await stack?.teardown();
    await kube?.stop();
    await temporal?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const { get, create, del, ready, gone } = kubeovnObjects(() => kube.custom, 120_000);

  it('a delete and a create made while Temporal was down converge once it is back', async () => {
    await create('eip', 'eip-kept', { natGwDp: GW });
    await create('fip', 'fip-doomed', { eip: 'eip-kept', internalIp: '10.0.1.10' });
    const kept = (await ready('eip', 'eip-kept')).status!.ip as string;
    await ready('fip', 'fip-doomed');
    expect((await stack.natRules(GW)).length).toBeGreaterThan(0);

    await temporal.stop();
    await del('fip', 'fip-doomed');
    await create('eip', 'eip-new', { natGwDp: GW });
    await new Promise((r) => setTimeout(r, 5000)); // several resyncs fail meanwhile
    expect((await get('fip', 'fip-doomed')).metadata?.deletionTimestamp).toBeTruthy(); // held by its finalizer

    temporal = await startDevServer({ ...ports, dbFile: path.join(dir, 'temporal.sqlite') });
    await gone('fip', 'fip-doomed');
    const created = (await ready('eip', 'eip-new')).status!.ip as string;
    expect(await stack.natRules(GW)).toEqual([]);
    expect((await stack.eipAddresses(GW)).sort()).toEqual([`${kept}/24`, `${created}/24`].sort());

    await del('eip', 'eip-kept');
    await del('eip', 'eip-new');
    await gone('eip', 'eip-kept');
    await gone('eip', 'eip-new');
    expect(await stack.eipAddresses(GW)).toEqual([]);
  });
});
