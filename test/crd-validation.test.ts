// The CRDs' validation rules (x-kubernetes-validations, CEL) against a real kube-apiserver:
// every Kube-OVN manifest still applies — the examples, the manifests Kube-OVN's Go client
// writes (every spec string present, "" when unset) and values at the edges of what Kube-OVN
// takes (TCP in capitals, "+8080", a dual-stack v4ip pair, a bare SNAT address, ...); a bad
// value of each rule is refused with a message naming its field; an EIP's natGwDp cannot
// change once set while its v4ip can; status and finalizer writes go through; objects stored
// before the rules existed keep working (only a field that changes is checked).
import { ApiException, ApiextensionsV1Api, type KubernetesObject, type V1CustomResourceDefinition } from '@kubernetes/client-node';
import { describe, expect, test } from 'vitest';
import { mergePatch } from '../activities/kube.js';
import { crd, KUBEOVN_API_VERSION, KUBEOVN_KINDS, type KubeKind } from '../domain/kube.js';
import { applyObjects, crdDir, installCrds, readManifests } from '../temporal-dev/kube/apiserver.js';
import { examplesDir, shortNameOf, useKube } from './support/kube.js';
import { eventually } from './support/workflows.js';

type Spec = Record<string, unknown>;
type Obj = KubernetesObject & { spec?: Spec; status?: Record<string, unknown> };

describe('CRD validation rules against a real kube-apiserver', () => {
  const env = useKube();

  const body = (kind: KubeKind, name: string, spec: Spec): Obj => ({ apiVersion: KUBEOVN_API_VERSION, kind: KUBEOVN_KINDS[kind].kind, metadata: { name }, spec });
  const create = (kind: KubeKind, name: string, spec: Spec, dryRun?: 'All') =>
    env().custom.createClusterCustomObject({ ...crd(kind), body: body(kind, name, spec), dryRun }) as Promise<Obj>;
  const get = (kind: KubeKind, name: string) => env().custom.getClusterCustomObject({ ...crd(kind), name }) as Promise<Obj>;
  const patch = (kind: KubeKind, name: string, patchBody: object) =>
    env().custom.patchClusterCustomObject({ ...crd(kind), name, body: patchBody }, mergePatch) as Promise<Obj>;
  const patchStatus = (kind: KubeKind, name: string, status: Record<string, unknown>) =>
    env().custom.patchClusterCustomObjectStatus({ ...crd(kind), name, body: { status } }, mergePatch) as Promise<Obj>;
  const exists = (kind: KubeKind, name: string) =>
    get(kind, name).then(
      () => true,
      (e) => (e instanceof ApiException && e.code === 404 ? false : Promise.reject(e)),
    );

  /** The apiserver's refusal of a request: its HTTP code and message (throws if it was accepted). */
  async function refusal(request: Promise<unknown>, what = 'the request'): Promise<{ code: number; message: string }> {
    try {
      await request;
    } catch (e) {
      if (e instanceof ApiException) {
        const parsed = typeof e.body === 'string' ? (JSON.parse(e.body) as { message?: string }) : (e.body as { message?: string });
        return { code: e.code, message: parsed?.message ?? String(e.body) };
      }
      throw e;
    }
    throw new Error(`${what} was accepted`);
  }

  test('every example in deploy/examples applies unchanged and reads back as written', async () => {
    const examples = (await readManifests(examplesDir())) as Obj[];
    expect(examples.length).toBeGreaterThanOrEqual(8);
    await env().applyDir();
    for (const ex of examples) {
      const got = await get(shortNameOf(ex.kind!), ex.metadata!.name!);
      expect(got.spec, `${ex.kind}/${ex.metadata!.name}`).toEqual(ex.spec);
    }
    await env().applyDir(); // again: a no-op
  });

  test('manifests Kube-OVN accepts still apply: Go-client style empty fields, and values at the edges of each rule', async () => {
    // Kube-OVN's Go types have no omitempty on these spec fields: its clients write "" for unset.
    const accepted: [KubeKind, string, Spec][] = [
      ['eip', 'eip-go-client', { v4ip: '', v6ip: '', macAddress: '', natGwDp: '', qosPolicy: '', externalSubnet: '' }],
      ['eip', 'eip-static', { natGwDp: 'gw1', v4ip: '172.18.0.111', v6ip: '', macAddress: '00:00:00:aa:bb:cc', qosPolicy: 'eip-qos', externalSubnet: 'ovn-vpc-external-network' }],
      // Kube-OVN's controller allocates a static dual-stack pair given in v4ip (then splits it).
      ['eip', 'eip-dual-pair', { natGwDp: 'gw1', v4ip: '172.18.0.112,fd00:18::112' }],
      ['eip', 'eip-dual-pair-v6-first', { natGwDp: 'gw1', v4ip: 'fd00:18::113,172.18.0.113' }],
      ['eip', 'eip-subdomain-names', { natGwDp: 'gw.zone-a', externalSubnet: 'ext.net-1' }],
      ['eip', 'eip-edge-addresses', { natGwDp: 'gw1', v4ip: '255.255.255.255' }],
      ['fip', 'fip-go-client', { eip: '', internalIp: '' }],
      ['fip', 'fip-plain', { eip: 'eip-fip', internalIp: '10.0.1.10' }],
      ['dnat', 'dnat-go-client', { eip: '', externalPort: '', protocol: '', internalIp: '', internalPort: '' }],
      // Kube-OVN compares the protocol case-insensitively and reads ports with strconv.Atoi.
      ['dnat', 'dnat-upper-tcp', { eip: 'eip-shared', protocol: 'TCP', externalPort: '8081', internalIp: '10.0.1.11', internalPort: '80' }],
      ['dnat', 'dnat-mixed-udp', { eip: 'eip-shared', protocol: 'Udp', externalPort: '53', internalIp: '10.0.1.11', internalPort: '53' }],
      ['dnat', 'dnat-port-edges', { eip: 'eip-shared', protocol: 'tcp', externalPort: '65535', internalIp: '10.0.1.11', internalPort: '1' }],
      ['dnat', 'dnat-atoi-ports', { eip: 'eip-shared', protocol: 'udp', externalPort: '+8082', internalIp: '10.0.1.11', internalPort: '08080' }],
      ['snat', 'snat-go-client', { eip: '', internalCIDR: '' }],
      ['snat', 'snat-host-bits', { eip: 'eip-shared', internalCIDR: '10.0.1.5/24' }],
      // Kube-OVN's controller takes one bare IPv4 address as /32.
      ['snat', 'snat-bare-address', { eip: 'eip-shared', internalCIDR: '10.0.1.10' }],
      ['snat', 'snat-everything', { eip: 'eip-shared', internalCIDR: '0.0.0.0/0' }],
      ['snat', 'snat-host-route', { eip: 'eip-shared', internalCIDR: '10.0.1.10/32' }],
      // Go's net.ParseCIDR (Kube-OVN's parser) takes a zero-padded prefix length.
      ['snat', 'snat-padded-prefix', { eip: 'eip-shared', internalCIDR: '10.0.1.0/024' }],
    ];
    for (const [kind, name, spec] of accepted) {
      await create(kind, name, spec).catch((e) => {
        throw new Error(`${kind} ${name} ${JSON.stringify(spec)} refused: ${e instanceof ApiException ? e.body : e}`);
      });
      expect((await get(kind, name)).spec, `${kind} ${name}`).toEqual(spec);
    }
    // The same through server-side apply (kubectl apply --server-side), as a user applies a file.
    await applyObjects(env().kc, [body('dnat', 'dnat-applied', { eip: 'eip-shared', protocol: 'UDP', externalPort: '5353', internalIp: '10.0.1.11', internalPort: '53' })]);
    expect((await get('dnat', 'dnat-applied')).spec?.protocol).toBe('UDP');
  });

  // [kind, field, bad values, the rule's message]
  const refusals: [KubeKind, string, unknown[], RegExp][] = [
    ['eip', 'v4ip', ['172.18.0.999', '172.18.0', '172.18.0.010', 'fd00:18::10', '172.18.0.10,172.18.0.11', '172.18.0.10,fd00::1,fd00::2', '::ffff:172.18.0.10', '172.18.0.10 ', 'eip-1'], /must be an IPv4 address/],
    ['eip', 'natGwDp', ['GW1', 'gw_1', '-gw', 'gw 1', 'gw1;reboot'], /must be the name of a VpcNatGateway/],
    ['eip', 'externalSubnet', ['Ext_Net', 'ext net', 'ext..net', 'x'.repeat(254)], /must be the name of a Subnet|Too long/],
    ['fip', 'eip', ['Eip-Fip', 'eip fip', 'eip/fip'], /must be the name of an IptablesEIP/],
    ['fip', 'internalIp', ['10.0.1', '10.0.1.256', 'fd00::10', '10.0.1.10/32', '10.0.1.10 '], /must be an IPv4 address/],
    ['dnat', 'eip', ['EIP', 'eip;reboot'], /must be the name of an IptablesEIP/],
    ['dnat', 'protocol', ['sctp', 'icmp', 'tcp ', 'tcp|udp', 'tcp,udp'], /must be tcp or udp/],
    ['dnat', 'externalPort', ['0', '65536', '-1', 'http', '80 ', '8080-8081', '0x50', '99999999999999999999'], /must be a port number from 1 to 65535/],
    ['dnat', 'internalPort', ['0', '70000', '8o'], /must be a port number from 1 to 65535/],
    ['dnat', 'internalIp', ['10.0.1.300', '10.0.1.11:80', 'fd00::11'], /must be an IPv4 address/],
    ['snat', 'eip', ['Eip_Shared'], /must be the name of an IptablesEIP/],
    ['snat', 'internalCIDR', ['10.0.1.0/33', '10.0.1.0/', '10.0.1.0/24,10.0.2.0/24', 'fd00::/64', '10.0.1/24', '10.0.1.0/24 ', 'vpc1-subnet1', '10.0.1.0/-1'], /must be an IPv4 CIDR block/],
  ];
  const goodSpec: Record<'eip' | 'fip' | 'dnat' | 'snat', Spec> = {
    eip: { natGwDp: 'gw1', v4ip: '172.18.0.50', externalSubnet: 'ovn-vpc-external-network' },
    fip: { eip: 'eip-fip', internalIp: '10.0.1.10' },
    dnat: { eip: 'eip-shared', protocol: 'tcp', externalPort: '9090', internalIp: '10.0.1.11', internalPort: '80' },
    snat: { eip: 'eip-shared', internalCIDR: '10.0.1.0/24' },
  };

  test('a bad value of each rule is refused on create, with a message naming its field', async () => {
    for (const [kind, field, values, message] of refusals) {
      const kindName = kind as 'eip' | 'fip' | 'dnat' | 'snat';
      // The valid neighbour of every bad object is accepted: it is the field that is refused.
      await create(kind, `${kind}-good-${field.toLowerCase()}`, goodSpec[kindName], 'All');
      for (const [i, value] of values.entries()) {
        const name = `${kind}-bad-${field.toLowerCase()}-${i}`;
        const refused = await refusal(create(kind, name, { ...goodSpec[kindName], [field]: value }), `${kind} ${name} with ${field}=${JSON.stringify(value)}`);
        expect(refused.code, `${kind} ${field}=${JSON.stringify(value)}`).toBe(422);
        expect(refused.message, `${kind} ${field}=${JSON.stringify(value)}`).toContain(`spec.${field}: `);
        expect(refused.message, `${kind} ${field}=${JSON.stringify(value)}`).toMatch(message);
        expect(await exists(kind, name)).toBe(false);
      }
    }
  });

  test('a bad value is refused on update too, and every bad field is reported at once', async () => {
    await create('dnat', 'dnat-update', goodSpec.dnat);
    const refused = await refusal(patch('dnat', 'dnat-update', { spec: { protocol: 'sctp', externalPort: '0' } }));
    expect(refused.code).toBe(422);
    expect(refused.message).toMatch(/spec\.protocol: Invalid value: "sctp": must be tcp or udp/);
    expect(refused.message).toMatch(/spec\.externalPort: Invalid value: "0": must be a port number/);
    expect((await get('dnat', 'dnat-update')).spec).toEqual(goodSpec.dnat);
    // A good change goes through.
    expect((await patch('dnat', 'dnat-update', { spec: { protocol: 'UDP', externalPort: '9091' } })).spec).toMatchObject({ protocol: 'UDP', externalPort: '9091' });
  });

  test("an EIP's natGwDp cannot change once set, while its v4ip can", async () => {
    await create('eip', 'eip-move', { natGwDp: 'gw1', v4ip: '172.18.0.120' });
    const immutable = /spec\.natGwDp: Forbidden: natGwDp is immutable once set/;
    for (const change of [{ spec: { natGwDp: 'gw2' } }, { spec: { natGwDp: '' } }, { spec: { natGwDp: null } }, { spec: null }]) {
      const refused = await refusal(patch('eip', 'eip-move', change), `eip-move patched with ${JSON.stringify(change)}`);
      expect(refused.code, JSON.stringify(change)).toBe(422);
      expect(refused.message, JSON.stringify(change)).toMatch(immutable);
    }
    // A server-side apply that moves it (kubectl apply of an edited file) is refused the same way.
    const applied = await refusal(applyObjects(env().kc, [body('eip', 'eip-move', { natGwDp: 'gw2', v4ip: '172.18.0.120' })]));
    expect(applied.message).toMatch(immutable);
    expect((await get('eip', 'eip-move')).spec).toEqual({ natGwDp: 'gw1', v4ip: '172.18.0.120' });

    // v4ip may change (natflow moves the EIP once its users are gone), and may be dropped.
    expect((await patch('eip', 'eip-move', { spec: { v4ip: '172.18.0.121' } })).spec).toEqual({ natGwDp: 'gw1', v4ip: '172.18.0.121' });
    expect((await patch('eip', 'eip-move', { spec: { v4ip: null, qosPolicy: 'eip-qos' } })).spec).toEqual({ natGwDp: 'gw1', qosPolicy: 'eip-qos' });
    // Re-stating the same natGwDp is no change.
    await applyObjects(env().kc, [body('eip', 'eip-move', { natGwDp: 'gw1', qosPolicy: 'eip-qos' })]);

    // "Once set", as Kube-OVN's webhook says: an EIP created without a gateway may get one, then keeps it.
    await create('eip', 'eip-late', { natGwDp: '', v4ip: '' });
    expect((await patch('eip', 'eip-late', { spec: { natGwDp: 'gw1' } })).spec?.natGwDp).toBe('gw1');
    expect((await refusal(patch('eip', 'eip-late', { spec: { natGwDp: 'gw2' } }))).message).toMatch(immutable);
    await create('eip', 'eip-no-spec', {});
    expect((await patch('eip', 'eip-no-spec', { spec: { natGwDp: 'gw1' } })).spec?.natGwDp).toBe('gw1');
  });

  test('status (subresource) and finalizer writes go through with the rules in place', async () => {
    await create('eip', 'eip-status', { natGwDp: 'gw1', v4ip: '172.18.0.130' });
    const generation = (await get('eip', 'eip-status')).metadata!.generation!;
    // The bridge's adopt: a finalizer on the main resource.
    expect((await patch('eip', 'eip-status', { metadata: { finalizers: ['natflow.io/cleanup'] } })).metadata?.finalizers).toEqual(['natflow.io/cleanup']);
    const now = new Date().toISOString();
    const status = {
      ready: true,
      ip: '172.18.0.130',
      nat: 'dnat,snat',
      phase: 'Ready',
      natGwDp: 'gw1',
      observedGeneration: generation,
      conditions: [{ type: 'Ready', status: 'True', reason: 'Bound', message: 'bound to gw1', lastUpdateTime: now, lastTransitionTime: now, observedGeneration: generation }],
    };
    expect((await patchStatus('eip', 'eip-status', status)).status).toMatchObject(status);
    // Status is not spec: natflow's status.natGwDp may say anything.
    expect((await patchStatus('eip', 'eip-status', { natGwDp: '', ready: false, phase: 'WaitingForGateway' })).status).toMatchObject({ natGwDp: '', ready: false });

    await create('dnat', 'dnat-status', { ...goodSpec.dnat, protocol: 'TCP', externalPort: '9092' });
    const dnatStatus = { ready: true, v4ip: '172.18.0.130', natGwDp: 'gw1', protocol: 'TCP', internalIp: '10.0.1.11', internalPort: '80', externalPort: '9092', observedGeneration: 1 };
    expect((await patchStatus('dnat', 'dnat-status', dnatStatus)).status).toMatchObject(dnatStatus);
    for (const [kind, name, st] of [
      ['fip', 'fip-plain', { ready: true, v4ip: '172.18.0.2', natGwDp: 'gw1', internalIp: '10.0.1.10' }],
      ['snat', 'snat-host-bits', { ready: false, phase: 'Invalid', internalCIDR: '10.0.1.0/24' }],
    ] as const) {
      expect((await patchStatus(kind, name, st)).status).toMatchObject(st);
    }

    // Remove the finalizer and delete: the object goes.
    await patch('eip', 'eip-status', { metadata: { finalizers: null } });
    await env().custom.deleteClusterCustomObject({ ...crd('eip'), name: 'eip-status' });
    expect(await exists('eip', 'eip-status')).toBe(false);
  });

  test('objects stored before the rules keep working: finalizer, status and other changes go through, only a changed field is checked', async () => {
    // The CRDs as they were before the rules (no x-kubernetes-validations, no maxLength),
    // replaced in place, then put back as natflow installs them.
    const ext = env().kc.makeApiClient(ApiextensionsV1Api);
    const names = (await readManifests(crdDir())).map((o) => o.metadata!.name!).filter((n) => n.startsWith('iptables-'));
    expect(names).toHaveLength(4);
    const bad = { eip: 'eip-shared', protocol: 'sctp', externalPort: '8083', internalIp: '10.0.1.11', internalPort: '80' };
    try {
      for (const name of names) {
        const current = await ext.readCustomResourceDefinition({ name });
        await ext.replaceCustomResourceDefinition({ name, body: strip(current) as V1CustomResourceDefinition });
      }
      await eventually(() => create('dnat', 'dnat-probe', bad, 'All').then(() => true, () => false), (ok) => ok, 30_000, 'the CRDs without rules to be served');
      await create('dnat', 'dnat-old', bad);
      await create('eip', 'eip-old', { natGwDp: 'gw1', v4ip: '172.18.0.999' });
    } finally {
      await installCrds(env().kubeconfigPath);
    }
    await eventually(() => create('dnat', 'dnat-probe', bad, 'All').then(() => true, () => false), (ok) => !ok, 30_000, 'the CRDs with rules to be served');

    // What the bridge does to an object it finds: adopt (finalizer) and publish status.
    await patch('dnat', 'dnat-old', { metadata: { finalizers: ['natflow.io/cleanup'] } });
    await patchStatus('dnat', 'dnat-old', { ready: false, phase: 'Invalid' });
    await patch('eip', 'eip-old', { metadata: { finalizers: ['natflow.io/cleanup'] } });
    await patchStatus('eip', 'eip-old', { ready: false, phase: 'Invalid' });
    // A change of another field: the unchanged bad one is not re-checked (CRD validation ratcheting).
    expect((await patch('dnat', 'dnat-old', { spec: { externalPort: '8084' } })).spec).toMatchObject({ protocol: 'sctp', externalPort: '8084' });
    // The bad field itself may only change to a good value.
    expect((await refusal(patch('dnat', 'dnat-old', { spec: { protocol: 'icmp' } }))).message).toMatch(/spec\.protocol: Invalid value: "icmp": must be tcp or udp/);
    expect((await patch('dnat', 'dnat-old', { spec: { protocol: 'udp' } })).spec?.protocol).toBe('udp');
    expect((await refusal(patch('eip', 'eip-old', { spec: { v4ip: '172.18.0.998' } }))).message).toMatch(/spec\.v4ip: Invalid value: "172\.18\.0\.998": must be an IPv4 address/);
    expect((await patch('eip', 'eip-old', { spec: { v4ip: '172.18.0.99' } })).spec?.v4ip).toBe('172.18.0.99');
    // And they can still be deleted once natflow lets go.
    for (const [kind, name] of [['dnat', 'dnat-old'], ['eip', 'eip-old']] as const) {
      await patch(kind, name, { metadata: { finalizers: null } });
      await env().custom.deleteClusterCustomObject({ ...crd(kind), name });
      expect(await exists(kind, name)).toBe(false);
    }
  });
});

/** A copy of a CRD without any validation rule or maxLength (as the client models name them, or as YAML does). */
const STRIPPED = new Set(['x-kubernetes-validations', 'x_kubernetes_validations', 'maxLength']);
function strip(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(strip);
  if (value && typeof value === 'object' && !(value instanceof Date)) {
    return Object.fromEntries(
      Object.entries(value)
        .filter(([k]) => !STRIPPED.has(k))
        .map(([k, v]) => [k, strip(v)]),
    );
  }
  return value;
}
