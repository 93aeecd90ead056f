// The Kubernetes side of the lab against a real kube-apiserver + etcd: natflow's CRDs install,
// Kube-OVN manifests (the examples, and a richer one as Kube-OVN users write them) are
// accepted unchanged, kubectl lists them with their short names, the schema refuses what
// Kube-OVN's refuses, status is a subresource, the RBAC is least privilege, state survives a
// restart, and stop() leaves no process behind.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import {
  ApiException,
  AuthorizationV1Api,
  CustomObjectsApi,
  loadAllYaml,
  type KubernetesObject,
} from '@kubernetes/client-node';
import { beforeAll, describe, expect, test } from 'vitest';
import { applyObjects, readManifests } from '../temporal-dev/kube/apiserver.js';
import { loadKubeConfig } from '../worker/kube-config.js';
import { repoRoot } from '../temporal-dev/provision.js';
import { createKubeActivities, mergePatch } from '../activities/kube.js';
import { crd, FINALIZER, KUBEOVN_API_VERSION, KUBEOVN_GROUP } from '../domain/kube.js';
import { KUBEOVN_KIND_LIST, ensureKubeBinaries, shortNameOf, startKube, useKube } from './support/kube.js';

const execFileP = promisify(execFile);

type Obj = KubernetesObject & { spec?: Record<string, unknown>; status?: Record<string, unknown> };

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

// A first run on a machine builds kube-apiserver and etcd from the Go module proxy.
beforeAll(async () => {
  await ensureKubeBinaries();
}, 60 * 60_000);

describe('kube-apiserver with natflow CRDs', () => {
  const env = useKube();

  const kubectl = async (...args: string[]) =>
    (await execFileP(env().binaries.kubectl, ['--kubeconfig', env().kubeconfigPath, ...args], { encoding: 'utf8' })).stdout;

  const create = (body: Obj) =>
    env().custom.createClusterCustomObject({ ...crd(shortNameOf(body.kind!)), body });

  async function rejection(body: Obj): Promise<{ code: number; message: string }> {
    try {
      await create(body);
    } catch (e) {
      if (e instanceof ApiException) return { code: e.code, message: String(e.body) };
      throw e;
    }
    throw new Error(`${body.kind} ${body.metadata?.name} was accepted`);
  }

  test("natflow's KubeConfig keeps one connection for a run of requests (the client alone opens one per request)", async () => {
    const port = new URL(env().kube.server).port;
    const established = async () => (await execFileP('ss', ['-Htn', 'state', 'established', `dst 127.0.0.1:${port}`])).stdout.trim().split('\n').filter(Boolean).length;
    const before = await established();
    const api = loadKubeConfig(env().kubeconfigPath).makeApiClient(CustomObjectsApi);
    for (let i = 0; i < 20; i++) await api.listClusterCustomObject(crd('eip'));
    expect((await established()) - before).toBe(1);
  });

  test('serves the six kinds as Kube-OVN does: names, short names, cluster scope, status subresource', async () => {
    const { stdout } = await execFileP(env().binaries.kubectl, ['--kubeconfig', env().kubeconfigPath, 'get', '--raw', `/apis/${KUBEOVN_API_VERSION}`], {
      encoding: 'utf8',
    });
    const resources = (JSON.parse(stdout) as { resources: { name: string; kind: string; namespaced: boolean; shortNames?: string[] }[] }).resources;
    for (const k of KUBEOVN_KIND_LIST) {
      const main = resources.find((r) => r.name === k.plural);
      expect(main, k.plural).toMatchObject({ kind: k.kind, namespaced: false, shortNames: [k.shortName] });
      expect(resources.some((r) => r.name === `${k.plural}/status`), `${k.plural}/status`).toBe(true);
    }
  });

  test('every example applies unchanged and reads back as written', async () => {
    const examples = (await readManifests(path.join(repoRoot(), 'deploy', 'examples'))) as Obj[];
    expect(examples.map((o) => o.kind).sort()).toEqual(
      ['IptablesDnatRule', 'IptablesEIP', 'IptablesEIP', 'IptablesFIPRule', 'IptablesSnatRule', 'Subnet', 'Subnet', 'VpcNatGateway'].sort(),
    );
    await env().applyDir();
    for (const ex of examples) {
      const got = (await env().custom.getClusterCustomObject({ ...crd(shortNameOf(ex.kind!)), name: ex.metadata!.name! })) as Obj;
      expect(got.spec, `${ex.kind}/${ex.metadata!.name}`).toEqual(ex.spec);
    }
    // Applying again is a no-op, not an error.
    await env().applyDir();
  });

  test('kubectl lists every kind by its short name, with Kube-OVN printer columns', async () => {
    const eips = await kubectl('get', 'eip');
    expect(eips.split('\n')[0]).toMatch(/^NAME\s+IP\s+MAC\s+NAT\s+NATGWDP\s+READY/);
    expect(eips).toMatch(/eip-fip\s+gw1/);
    expect(eips).toMatch(/eip-shared\s+gw1/);
    const dnat = await kubectl('get', 'dnat');
    expect(dnat).toMatch(/dnat-vm2-http\s+eip-shared\s+tcp\s+10\.0\.1\.11\s+8080\s+80/);
    const subnets = await kubectl('get', 'subnet');
    expect(subnets.split('\n')[0]).toContain('V4USED');
    expect(subnets).toMatch(/ovn-vpc-external-network\s+.*172\.18\.0\.0\/24/);
    for (const k of KUBEOVN_KIND_LIST) {
      const names = (await kubectl('get', k.shortName, '-o', 'name')).trim().split('\n');
      expect(names.length, k.shortName).toBeGreaterThan(0);
      // The same list through the API, as the bridge's informers will see it.
      const list = (await env().custom.listClusterCustomObject(crd(k.shortName))) as { items: Obj[] };
      expect(list.items.map((o) => `${k.kind.toLowerCase()}.${KUBEOVN_GROUP}/${o.metadata!.name}`).sort()).toEqual(names.sort());
    }
  });

  test('a manifest written for Kube-OVN, with fields natflow does not use, keeps all of them', async () => {
    const gateway: Obj = {
      apiVersion: KUBEOVN_API_VERSION,
      kind: 'VpcNatGateway',
      metadata: { name: 'gw-kubeovn-style' },
      spec: {
        vpc: 'test-vpc-1',
        subnet: 'net1',
        lanIp: '10.0.1.254',
        selector: ['kubernetes.io/hostname: kube-ovn-worker', 'kubernetes.io/os: linux'],
        externalSubnets: ['ovn-vpc-external-network'],
        qosPolicy: 'gw-qos',
        noDefaultEIP: true,
        routes: [{ cidr: '0.0.0.0/0', nextHopIP: '172.18.0.1' }],
        bgpSpeaker: { enabled: false, asn: 65001, remoteAsn: 65000, neighbors: ['172.18.0.1'] },
        tolerations: [{ key: 'node-role.kubernetes.io/control-plane', operator: 'Exists', effect: 'NoSchedule' }],
        affinity: {
          nodeAffinity: {
            requiredDuringSchedulingIgnoredDuringExecution: {
              nodeSelectorTerms: [{ matchExpressions: [{ key: 'kubernetes.io/os', operator: 'In', values: ['linux'] }] }],
            },
          },
        },
      },
    };
    const subnet: Obj = {
      apiVersion: KUBEOVN_API_VERSION,
      kind: 'Subnet',
      metadata: { name: 'net1' },
      spec: {
        vpc: 'test-vpc-1',
        protocol: 'IPv4',
        cidrBlock: '10.0.1.0/24',
        gateway: '10.0.1.1',
        excludeIps: ['10.0.1.1..10.0.1.9'],
        natOutgoing: false,
        private: false,
        gatewayType: 'distributed',
        enableDHCP: false,
        acls: [{ direction: 'to-lport', priority: 1000, match: 'ip4.src==10.0.1.0/24', action: 'allow-related' }],
      },
    };
    const eip: Obj = {
      apiVersion: KUBEOVN_API_VERSION,
      kind: 'IptablesEIP',
      metadata: { name: 'eip-static', labels: { 'ovn.kubernetes.io/vpc-nat-gw-name': 'gw-kubeovn-style' } },
      spec: { natGwDp: 'gw-kubeovn-style', v4ip: '172.18.0.111', macAddress: '00:00:00:aa:bb:cc', qosPolicy: 'eip-qos' },
    };
    await applyObjects(env().kc, [gateway, subnet, eip]);
    for (const o of [gateway, subnet, eip]) {
      const got = (await env().custom.getClusterCustomObject({ ...crd(shortNameOf(o.kind!)), name: o.metadata!.name! })) as Obj;
      expect(got.spec, o.kind).toEqual(o.spec);
    }
  });

  test("schema-invalid manifests are refused by the apiserver, as Kube-OVN's schema refuses them", async () => {
    const dnat = (externalPort: unknown): Obj => ({
      apiVersion: KUBEOVN_API_VERSION,
      kind: 'IptablesDnatRule',
      metadata: { name: 'dnat-bad' },
      spec: { eip: 'eip-shared', protocol: 'tcp', externalPort, internalIp: '10.0.1.11', internalPort: '80' },
    });
    const object = await rejection(dnat({}));
    expect(object.code).toBe(422);
    expect(object.message).toMatch(/spec\.externalPort.*must be of type string/);
    // Kube-OVN keeps ports as strings: an unquoted port is refused there and here.
    expect((await rejection(dnat(8080))).message).toMatch(/spec\.externalPort.*must be of type string/);

    const badSubnetName = await rejection({ apiVersion: KUBEOVN_API_VERSION, kind: 'Subnet', metadata: { name: '1-subnet' }, spec: { cidrBlock: '10.9.0.0/24' } });
    expect(badSubnetName.code).toBe(422);
    expect(badSubnetName.message).toMatch(/metadata\.name/);
    const badProtocol = await rejection({ apiVersion: KUBEOVN_API_VERSION, kind: 'Subnet', metadata: { name: 'subnet-bad' }, spec: { protocol: 'IPv5' } });
    expect(badProtocol.message).toMatch(/spec\.protocol.*supported values/i);
    const badGateway = await rejection({ apiVersion: KUBEOVN_API_VERSION, kind: 'VpcNatGateway', metadata: { name: 'gw-bad' }, spec: { externalSubnets: 'ovn-vpc-external-network' } });
    expect(badGateway.message).toMatch(/spec\.externalSubnets.*must be of type array/);
    const badFip = await rejection({ apiVersion: KUBEOVN_API_VERSION, kind: 'IptablesFIPRule', metadata: { name: 'fip-bad' }, spec: { eip: ['eip-fip'], internalIp: '10.0.1.10' } });
    expect(badFip.message).toMatch(/spec\.eip.*must be of type string/);

    for (const { shortName, plural } of KUBEOVN_KIND_LIST) {
      const list = (await env().custom.listClusterCustomObject(crd(shortName))) as { items: Obj[] };
      for (const o of list.items) expect(o.metadata!.name, plural).not.toMatch(/-bad$|^1-/);
    }
  });

  test('status is a subresource: merge patches write Kube-OVN fields plus observedGeneration, and leave spec alone', async () => {
    const ref = { ...crd('eip'), name: 'eip-fip' };
    const before = (await env().custom.getClusterCustomObject(ref)) as Obj;
    const generation = before.metadata!.generation!;
    const now = new Date().toISOString();
    const status = {
      ready: true,
      ip: '172.18.0.2',
      nat: 'fip',
      redo: '',
      qosPolicy: '',
      phase: 'Ready',
      natGwDp: 'gw1',
      observedGeneration: generation,
      conditions: [{ type: 'Ready', status: 'True', reason: 'Bound', message: 'bound to gw1', lastUpdateTime: now, lastTransitionTime: now, observedGeneration: generation }],
    };
    const patched = (await env().custom.patchClusterCustomObjectStatus({ ...ref, body: { status: { ...status, notAField: 'pruned' } } }, mergePatch)) as Obj;
    expect(patched.status).toEqual(status); // every field kept, unknown ones pruned
    expect(patched.spec).toEqual(before.spec);
    expect(patched.metadata!.generation).toBe(generation); // status never bumps generation

    // Status written through the main resource is ignored, as with any status subresource.
    const viaMain = (await env().custom.patchClusterCustomObject({ ...ref, body: { status: { ready: false } } }, mergePatch)) as Obj;
    expect(viaMain.status?.ready).toBe(true);

    // kubectl shows it in the printer columns.
    expect(await kubectl('get', 'eip', 'eip-fip', '--no-headers')).toMatch(/eip-fip\s+172\.18\.0\.2\s+fip\s+gw1\s+true/);

    // Rule and subnet status carry Kube-OVN's fields too.
    const dnat = (await env().custom.patchClusterCustomObjectStatus(
      {
        ...crd('dnat'),
        name: 'dnat-vm2-http',
        body: { status: { ready: true, v4ip: '172.18.0.3', natGwDp: 'gw1', protocol: 'tcp', internalIp: '10.0.1.11', internalPort: '80', externalPort: '8080', observedGeneration: 1 } },
      },
      mergePatch,
    )) as Obj;
    expect(dnat.status).toMatchObject({ ready: true, v4ip: '172.18.0.3', externalPort: '8080', observedGeneration: 1 });
    const usage = { v4usingIPs: 2, v4availableIPs: 250, v4usingIPrange: '172.18.0.2-172.18.0.3', v4availableIPrange: '172.18.0.4-172.18.0.253', observedGeneration: 1 };
    const subnet = (await env().custom.patchClusterCustomObjectStatus({ ...crd('subnet'), name: 'ovn-vpc-external-network', body: { status: usage } }, mergePatch)) as Obj;
    expect(subnet.status).toMatchObject(usage);
    expect(await kubectl('get', 'subnet', 'ovn-vpc-external-network', '--no-headers')).toMatch(/\s2\s+250\s/);
  });

  test("natflow's kube calls write only the object of their uid: status, finalizer on, finalizer off (kept when another holds it)", async () => {
    const calls = createKubeActivities(loadKubeConfig(env().kubeconfigPath));
    const get = async (name: string) => (await env().custom.getClusterCustomObject({ ...crd('fip'), name })) as Obj;
    const make = async (name: string, finalizers?: string[]) =>
      (await create({ apiVersion: KUBEOVN_API_VERSION, kind: 'IptablesFIPRule', metadata: { name, ...(finalizers && { finalizers }) }, spec: { eip: 'e', internalIp: '10.0.1.5' } })) as Obj;
    const refOf = (o: Obj) => ({ kind: 'fip' as const, name: o.metadata!.name!, uid: o.metadata!.uid! });

    // A new object is adopted in one request (the apiserver's own count): its finalizer added, nothing read first.
    const requests = async () => {
      const counts = { GET: 0, PATCH: 0 };
      for (const [, labels, value] of (await execFileP(env().binaries.kubectl, ['--kubeconfig', env().kubeconfigPath, 'get', '--raw', '/metrics'], { encoding: 'utf8', maxBuffer: 64 * 2 ** 20 })).stdout.matchAll(/^apiserver_request_total\{(.*)\} (\S+)$/gm)) {
        const verb = /verb="(\w+)"/.exec(labels!)?.[1];
        if (labels!.includes('resource="iptables-fip-rules"') && (verb === 'GET' || verb === 'PATCH')) counts[verb] += Number(value);
      }
      return counts;
    };
    const fip = refOf(await make('kc-fip'));
    const before = await requests();
    expect(await calls.kubeAdopt(fip)).toEqual({ exists: true, deleting: false });
    expect(await requests()).toEqual({ GET: before.GET, PATCH: before.PATCH + 1 });
    expect((await get('kc-fip')).metadata!.finalizers).toEqual([FINALIZER]);
    // Adopted again (a retried call): read, and left as it is.
    expect(await calls.kubeAdopt(fip)).toEqual({ exists: true, deleting: false });
    expect((await get('kc-fip')).metadata!.finalizers).toEqual([FINALIZER]);
    await calls.kubePublishStatus({ ...fip, status: { phase: 'Applying', ready: false, v4ip: '172.18.0.9' } });
    await calls.kubePublishStatus({ ...fip, status: { phase: 'Ready', ready: true } });
    expect((await get('kc-fip')).status).toEqual({ phase: 'Ready', ready: true }); // the whole status, as the workflow has it

    // The same name, another object: nothing is written to it, and no call fails.
    await env().custom.patchClusterCustomObject({ ...crd('fip'), name: 'kc-fip', body: { metadata: { finalizers: null } } }, mergePatch);
    await env().custom.deleteClusterCustomObject({ ...crd('fip'), name: 'kc-fip' });
    const other = await make('kc-fip', ['example.com/other']);
    await calls.kubePublishStatus({ ...fip, status: { phase: 'Deleting', ready: false } });
    await calls.kubeRelease({ ...fip, status: { phase: 'Deleted', ready: false } });
    expect((await get('kc-fip')).status).toBeUndefined();
    expect((await get('kc-fip')).metadata!.finalizers).toEqual(['example.com/other']);
    // A status the schema refuses is an error, not taken for a replaced object.
    await expect(calls.kubePublishStatus({ ...refOf(other), status: { ready: 'yes' } })).rejects.toThrow();

    // Released while another finalizer keeps it: the final status is written, the other finalizer stays.
    const held = refOf(other);
    await calls.kubeAdopt(held);
    await calls.kubeRelease({ ...held, status: { phase: 'Deleted', ready: false } });
    expect(await get('kc-fip')).toMatchObject({ metadata: { finalizers: ['example.com/other'] }, status: { phase: 'Deleted' } });
    // Ours alone: released, the object goes with it once deleted; a release of what is gone is fine.
    await env().custom.patchClusterCustomObject({ ...crd('fip'), name: 'kc-fip', body: { metadata: { finalizers: [FINALIZER] } } }, mergePatch);
    await env().custom.deleteClusterCustomObject({ ...crd('fip'), name: 'kc-fip' });
    expect(await calls.kubeAdopt(held)).toEqual({ exists: true, deleting: true });
    await calls.kubeRelease(held);
    await expect(get('kc-fip')).rejects.toMatchObject({ code: 404 });
    await calls.kubeRelease(held);
    await calls.kubePublishStatus({ ...held, status: { phase: 'Deleted' } });
    expect(await calls.kubeAdopt(held)).toEqual({ exists: false, deleting: false });
  });

  test("an EIP's status.nat handed to its claimer is written only while it still is what the EIP had", async () => {
    const calls = createKubeActivities(loadKubeConfig(env().kubeconfigPath));
    const get = async () => (await env().custom.getClusterCustomObject({ ...crd('eip'), name: 'kc-eip' })) as Obj;
    const made = (await create({ apiVersion: KUBEOVN_API_VERSION, kind: 'IptablesEIP', metadata: { name: 'kc-eip' }, spec: { natGwDp: 'gw1' } })) as Obj;
    const object = { kind: 'eip' as const, name: 'kc-eip', uid: made.metadata!.uid! };
    await calls.kubePublishStatus({ ...object, status: { ready: true, ip: '172.18.0.7', nat: '' } });
    await calls.kubeWriteNat({ object, from: '', to: 'fip' });
    expect((await get()).status).toEqual({ ready: true, ip: '172.18.0.7', nat: 'fip' });
    // A newer status is there (another claimer's, or the EIP's own): left as it is, and no error.
    await calls.kubeWriteNat({ object, from: '', to: 'dnat' });
    expect((await get()).status).toMatchObject({ nat: 'fip' });
    // Another object of the name, or none: nothing written, no error.
    await calls.kubeWriteNat({ object: { ...object, uid: 'another' }, from: 'fip', to: 'snat' });
    expect((await get()).status).toMatchObject({ nat: 'fip' });
    await env().custom.deleteClusterCustomObject({ ...crd('eip'), name: 'kc-eip' });
    await calls.kubeWriteNat({ object, from: 'fip', to: '' });
  });

  test('the RBAC lets the natflow service account read, write status and finalizers, and nothing else', async () => {
    const rbac = loadAllYaml(await readFile(path.join(repoRoot(), 'deploy', 'rbac.yaml'), 'utf8')) as KubernetesObject[];
    expect(rbac.map((o) => o.kind)).toEqual(['Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding']);
    await applyObjects(env().kc, rbac);
    const authz = env().kc.makeApiClient(AuthorizationV1Api);
    const can = async (verb: string, resource: string, subresource = '', group = KUBEOVN_GROUP) => {
      const review = await authz.createSubjectAccessReview({
        body: {
          apiVersion: 'authorization.k8s.io/v1',
          kind: 'SubjectAccessReview',
          spec: {
            user: 'system:serviceaccount:natflow:natflow',
            groups: ['system:serviceaccounts', 'system:serviceaccounts:natflow', 'system:authenticated'],
            resourceAttributes: { group, resource, subresource, verb },
          },
        },
      });
      return review.status?.allowed === true;
    };
    // The authorizer learns of a new binding from its own watch: wait until it has (the first grant), then check them all.
    const first = KUBEOVN_KIND_LIST[0]!.plural;
    for (const deadline = Date.now() + 10_000; !(await can('get', first)) && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 100));
    for (const { plural } of KUBEOVN_KIND_LIST) {
      for (const verb of ['get', 'list', 'watch']) expect(await can(verb, plural), `${verb} ${plural}`).toBe(true);
      for (const verb of ['patch', 'update']) {
        expect(await can(verb, plural, 'status'), `${verb} ${plural}/status`).toBe(true);
        expect(await can(verb, plural), `${verb} ${plural} (finalizers)`).toBe(true);
      }
      for (const verb of ['create', 'delete', 'deletecollection']) expect(await can(verb, plural), `${verb} ${plural}`).toBe(false);
    }
    expect(await can('get', 'secrets', '', '')).toBe(false);
    expect(await can('list', 'pods', '', '')).toBe(false);
    expect(await can('create', 'events', '', '')).toBe(false);
    expect(await can('list', 'vpcs')).toBe(false);
  });
});

describe('kube-apiserver lifecycle', () => {
  test('state survives a restart on the same data dir, and stop() leaves no process behind', async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'natflow-kube-test-'));
    try {
      const first = await startKube({ dataDir });
      const pids = Object.values(first.kube.pids);
      await first.custom.createClusterCustomObject({
        ...crd('eip'),
        body: { apiVersion: KUBEOVN_API_VERSION, kind: 'IptablesEIP', metadata: { name: 'eip-kept', finalizers: ['natflow.io/test'] }, spec: { natGwDp: 'gw1' } },
      });
      await first.stop();
      for (const pid of pids) expect(alive(pid), `pid ${pid}`).toBe(false);

      const second = await startKube({ dataDir });
      try {
        const kept = (await second.custom.getClusterCustomObject({ ...crd('eip'), name: 'eip-kept' })) as Obj;
        expect(kept.metadata!.finalizers).toEqual(['natflow.io/test']);
      } finally {
        await second.stop();
      }
      for (const pid of Object.values(second.kube.pids)) expect(alive(pid), `pid ${pid}`).toBe(false);
      await stat(path.join(dataDir, 'kubeconfig')); // a given data dir is kept
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  }, 120_000);

  test('a temp data dir is removed on stop, and stop() is idempotent', async () => {
    const env = await startKube();
    const { dataDir } = env.kube;
    await Promise.all([env.stop(), env.stop()]);
    await env.stop();
    await expect(stat(dataDir)).rejects.toThrow(/ENOENT/);
    for (const pid of Object.values(env.kube.pids)) expect(alive(pid), `pid ${pid}`).toBe(false);
  }, 120_000);
});
