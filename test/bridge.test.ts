// The kube watcher bridge end to end: a real kube-apiserver + etcd with natflow's CRDs, the dev
// server, the control worker (writing finalizers and status), the lab gateway gw1 with its agent,
// and real traffic. Objects are written through the API, as `kubectl apply` would.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { crd, FINALIZER, type KubeKind } from '../domain/kube.js';
import { mergePatch } from '../activities/kube.js';
import type { LabTopology } from '../domain/lab.js';
import { DEFAULT_EXTERNAL_SUBNET } from '../domain/subnet.js';
import { KubeBridge } from '../starter/bridge.js';
import { ensureKubeBinaries, examplesDir, kubeovnObjects, shortNameOf, startKube, type KubeEnv } from './support/kube.js';
import { startStack, type Stack } from './support/stack.js';
import { conntrackEntries, Listener, send } from './support/traffic.js';
import { eventually } from './support/workflows.js';
import { readManifests } from '../temporal-dev/kube/apiserver.js';
import { reservePort } from '../temporal-dev/ports.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';


describe('kube watcher bridge (real kube-apiserver)', () => {
  let kube: KubeEnv;
  let stack: Stack;
  let lab: LabTopology;
  let bridge: KubeBridge;
  const newBridge = () => new KubeBridge({ kubeConfig: kube.kc, client: stack.env.client, taskQueue: stack.resources.taskQueue, resyncMs: 3000, log: () => undefined });

  let kubeDir: string;
  let kubePort: number;
  beforeAll(async () => {
    await ensureKubeBinaries();
    // A data dir and port of our own, so that the apiserver can be restarted on the same state.
    kubeDir = await mkdtemp(path.join(tmpdir(), 'natflow-bridge-kube-'));
    kubePort = await reservePort();
    kube = await startKube({ dataDir: kubeDir, port: kubePort });
    stack = await startStack(DEFAULT_EXTERNAL_SUBNET, { kubeConfig: kube.kc, registerSubnet: false });
    lab = await stack.addGateway('gw1', { register: false });
    bridge = newBridge();
    await bridge.start();
  }, 900_000);
  afterAll(async () => {
    await bridge?.stop();
    await stack?.teardown();
    await kube?.stop();
    await rm(kubeDir, { recursive: true, force: true });
  });

  const { get, exists, list, create, patchSpec, del, ready, gone, condition } = kubeovnObjects(() => kube.custom);

  it('the examples become ready with Kube-OVN status fields, and the FIP passes traffic', async () => {
    await kube.applyDir(examplesDir());
    const eip = await ready('eip', 'eip-fip');
    expect(eip.status).toMatchObject({ ready: true, ip: expect.stringMatching(/^172\.18\.0\./) });
    expect(eip.metadata?.finalizers).toContain(FINALIZER);
    const fip = await ready('fip', 'fip-vm1');
    await eventually(() => get('eip', 'eip-fip'), (o) => o.status?.nat === 'fip', 30_000, 'EIP status.nat');
    expect(fip.status).toMatchObject({ ready: true, v4ip: eip.status!.ip, natGwDp: 'gw1', internalIp: '10.0.1.10' });
    expect(condition(fip)).toMatchObject({ reason: 'Ready' });
    await ready('dnat', 'dnat-vm2-http');
    await ready('snat', 'snat-vpc1-subnet1');
    await eventually(() => get('eip', 'eip-shared'), (o) => o.status?.nat === 'dnat,snat', 30_000, 'shared EIP status.nat');
    const subnet = await eventually(() => get('subnet', DEFAULT_EXTERNAL_SUBNET), (s) => s.status?.v4usingIPs === 2, 30_000, 'subnet usage');
    expect(subnet.status).toMatchObject({ v4usingIPs: 2, v4availableIPs: 250 });

    const listener = await Listener.open(lab.vmNamespaces[0]!, 8081);
    try {
      expect(await send(lab.clientNs, eip.status!.ip, 8081, 'via-kube')).toBe(true);
      expect(await listener.waitFor('via-kube')).toBe(true);
    } finally {
      listener.close();
    }
  });

  it('a changed internalIp moves the mapping: the new VM gets traffic, the old one does not', async () => {
    const ip = (await get('eip', 'eip-fip')).status!.ip as string;
    await patchSpec('fip', 'fip-vm1', { internalIp: '10.0.1.11' });
    await eventually(() => get('fip', 'fip-vm1'), (o) => o.status?.ready === true && o.status?.internalIp === '10.0.1.11', 60_000, 'moved');
    const [old, next] = [await Listener.open(lab.vmNamespaces[0]!, 8082), await Listener.open(lab.vmNamespaces[1]!, 8082)];
    try {
      expect(await send(lab.clientNs, ip, 8082, 'moved')).toBe(true);
      expect(await next.waitFor('moved')).toBe(true);
      expect(old.received).not.toContain('moved');
    } finally {
      old.close();
      next.close();
    }
  });

  it('bad specs get a condition with reason and message, and nothing is applied', async () => {
    const rulesBefore = await stack.natRules('gw1');
    await create('fip', 'bad-unknown-eip', { eip: 'no-such-eip', internalIp: '10.0.1.10' });
    await create('eip', 'bad-outside', { natGwDp: 'gw1', v4ip: '10.9.9.9' });
    await create('dnat', 'bad-dup-port', { eip: 'eip-shared', protocol: 'tcp', externalPort: '8080', internalIp: '10.0.1.10', internalPort: '80' });
    const reasonOf = (kind: KubeKind, name: string, reason: string) => eventually(() => get(kind, name), (o) => condition(o)?.reason === reason, 60_000, `${kind} ${name} ${reason}`);
    expect(condition(await reasonOf('fip', 'bad-unknown-eip', 'EipNotFound'))?.message).toBe('EIP no-such-eip does not exist');
    expect(condition(await reasonOf('eip', 'bad-outside', 'AddressOutOfRange'))?.message).toMatch(/10\.9\.9\.9 is outside subnet/);
    expect(condition(await reasonOf('dnat', 'bad-dup-port', 'DuplicateDnat'))?.message).toMatch(/already forwarded/);
    expect(await stack.natRules('gw1')).toEqual(rulesBefore);
    for (const [kind, name] of [['fip', 'bad-unknown-eip'], ['eip', 'bad-outside'], ['dnat', 'bad-dup-port']] as const) {
      await del(kind, name);
      await gone(kind, name);
    }
  });

  it('an EIP on a gateway that does not exist allocates nothing, says so, and is deleted at once', async () => {
    const usage = (await get('subnet', DEFAULT_EXTERNAL_SUBNET)).status;
    await create('eip', 'eip-nowhere', { natGwDp: 'no-such-gw' });
    const waiting = await eventually(() => get('eip', 'eip-nowhere'), (o) => condition(o)?.reason === 'GatewayNotFound', 60_000, 'waiting');
    expect(condition(waiting)?.message).toBe('NAT gateway no-such-gw does not exist');
    expect(waiting.status?.ip ?? '').toBe('');
    await del('eip', 'eip-nowhere');
    await gone('eip', 'eip-nowhere');
    await bridge.resync();
    expect((await get('subnet', DEFAULT_EXTERNAL_SUBNET)).status).toMatchObject({ v4usingIPs: usage!.v4usingIPs, v4usingIPrange: usage!.v4usingIPrange });
  });

  it('an object another finalizer keeps gets its last status (Deleted) with the release of natflow\'s finalizer', async () => {
    await create('eip', 'eip-kept', { natGwDp: 'no-such-gw' }); // no gateway needed: its finalizer is on, and its delete runs the same cleanup
    const held = await eventually(() => get('eip', 'eip-kept'), (o) => condition(o)?.reason === 'GatewayNotFound', 60_000, 'adopted and waiting');
    const keep = 'example.com/keep';
    await kube.custom.patchClusterCustomObject({ ...crd('eip'), name: 'eip-kept', body: { metadata: { finalizers: [...(held.metadata?.finalizers ?? []), keep] } } }, mergePatch);
    await del('eip', 'eip-kept');
    const kept = await eventually(() => get('eip', 'eip-kept'), (o) => JSON.stringify(o.metadata?.finalizers) === JSON.stringify([keep]), 60_000, 'only the other finalizer left');
    expect(kept.status).toMatchObject({ phase: 'Deleted', ready: false, ip: '' });
    await kube.custom.patchClusterCustomObject({ ...crd('eip'), name: 'eip-kept', body: { metadata: { finalizers: [] } } }, mergePatch);
    await gone('eip', 'eip-kept');
  });

  it('a resource deleted while the bridge is down is still cleaned up, and disappears', async () => {
    await create('eip', 'eip-offline', { natGwDp: 'gw1' });
    await create('fip', 'fip-offline', { eip: 'eip-offline', internalIp: '10.0.1.10' });
    const ip = (await ready('eip', 'eip-offline')).status!.ip as string;
    await ready('fip', 'fip-offline');
    await bridge.stop();
    await del('fip', 'fip-offline');
    await del('eip', 'eip-offline');
    // The finalizers hold both objects while nobody drives their cleanup.
    await new Promise((r) => setTimeout(r, 2000));
    expect(await exists('fip', 'fip-offline')).toBe(true);
    expect(await stack.eipAddresses('gw1')).toContain(`${ip}/24`);
    bridge = newBridge();
    await bridge.start();
    await gone('fip', 'fip-offline');
    await gone('eip', 'eip-offline');
    expect(await stack.eipAddresses('gw1')).not.toContain(`${ip}/24`);
    expect(await conntrackEntries(lab.gatewayNs, ip)).toEqual([]);
  });

  it('after an apiserver restart the watches come back and new objects converge', async () => {
    await kube.stop();
    kube = await startKube({ dataDir: kubeDir, port: kubePort });
    await create('eip', 'eip-after-restart', { natGwDp: 'gw1' });
    await create('fip', 'fip-after-restart', { eip: 'eip-after-restart', internalIp: '10.0.1.11' });
    const ip = (await ready('eip', 'eip-after-restart')).status!.ip as string;
    await ready('fip', 'fip-after-restart');
    const listener = await Listener.open(lab.vmNamespaces[1]!, 8083);
    try {
      expect(await send(lab.clientNs, ip, 8083, 'after-restart')).toBe(true);
      expect(await listener.waitFor('after-restart')).toBe(true);
    } finally {
      listener.close();
    }
    await del('fip', 'fip-after-restart');
    await del('eip', 'eip-after-restart');
    await gone('fip', 'fip-after-restart');
    await gone('eip', 'eip-after-restart');
  });

  it('Kube-OVN race through the API: 200 FIPs created and deleted 0–50 ms later all disappear, leaving no rule', async () => {
    const lanes = 8;
    for (let l = 0; l < lanes; l++) await create('eip', `eip-r${l}`, { natGwDp: 'gw1' });
    for (let l = 0; l < lanes; l++) await ready('eip', `eip-r${l}`);
    const rulesBefore = (await stack.natRules('gw1')).length;
    await Promise.all(
      Array.from({ length: lanes }, async (_, l) => {
        for (let i = 0; i < 200 / lanes; i++) {
          const name = `fip-r${l}-${i}`;
          await create('fip', name, { eip: `eip-r${l}`, internalIp: '10.0.1.10' });
          await new Promise((r) => setTimeout(r, Math.random() * 50));
          await del('fip', name);
        }
      }),
    );
    await eventually(
      async () => (await list('fip')).filter((o) => o.metadata?.name?.startsWith('fip-r')),
      (items) => items.length === 0,
      300_000,
      'every raced FIP gone',
    );
    expect((await stack.natRules('gw1')).length).toBe(rulesBefore);
    for (let l = 0; l < lanes; l++) {
      const o = await get('eip', `eip-r${l}`);
      expect(o.status?.nat ?? '').toBe('');
      await del('eip', `eip-r${l}`);
    }
    for (let l = 0; l < lanes; l++) await gone('eip', `eip-r${l}`);
  });

  it('deleting the examples leaves no finalizer, no rule and no address', async () => {
    for (const obj of (await readManifests(examplesDir())).reverse()) {
      const kind = shortNameOf(obj.kind!);
      if (kind === 'subnet' || kind === 'vpc-nat-gw') continue;
      await del(kind, obj.metadata!.name!);
    }
    for (const [kind, name] of [['fip', 'fip-vm1'], ['dnat', 'dnat-vm2-http'], ['snat', 'snat-vpc1-subnet1'], ['eip', 'eip-fip'], ['eip', 'eip-shared']] as const) await gone(kind, name);
    expect(await stack.natRules('gw1')).toEqual([]);
    expect(await stack.eipAddresses('gw1')).toEqual([]);
  });
});
