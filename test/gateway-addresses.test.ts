// EIP addresses on a real lab gateway: reconcile converges, only ever touches labelled
// addresses, and the external network sees exactly the EIPs that are desired.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCommand, type CommandRunner } from '../activities/exec.js';
import { createAddressActivities } from '../activities/gateway-addresses.js';
import type { EipAddress } from '../domain/gateway.js';
import type { LabTopology } from '../domain/lab.js';
import { labDown, labUp } from '../temporal-dev/lab.js';
import { labGarp } from '../temporal-dev/garp.js';
import { ping } from './support/traffic.js';

const GW = 't-addr';
let t: LabTopology;
let acts: ReturnType<typeof createAddressActivities>;
const warnings: string[] = [];

const eip = (address: string, prefixLength = 24): EipAddress => ({ address, prefixLength });

/** Every IPv4 address on net1 as `cidr label`, sorted. */
async function net1(): Promise<string[]> {
  const { stdout } = await runCommand('ip', ['-n', t.gatewayNs, '-j', '-4', 'addr', 'show', 'dev', 'net1']);
  const [link] = JSON.parse(stdout) as { addr_info: { local: string; prefixlen: number; label: string }[] }[];
  return link!.addr_info.map((a) => `${a.local}/${a.prefixlen} ${a.label}`).sort();
}

describe('EIP addresses on the gateway', () => {
  beforeAll(async () => {
    await labDown(GW);
    t = await labUp(GW);
    acts = createAddressActivities({ netns: t.gatewayNs, externalInterface: t.externalInterface, warn: (m) => warnings.push(m) });
  });

  afterAll(async () => {
    await labDown(GW);
  });

  it('adds the desired EIPs, labelled, beside the gateway address', async () => {
    const result = await acts.reconcileEipAddresses([eip('172.18.0.10'), eip('172.18.0.11'), eip('172.18.0.12')]);
    expect(result).toEqual({ added: ['172.18.0.10/24', '172.18.0.11/24', '172.18.0.12/24'], removed: [] });
    expect(await net1()).toEqual([
      '172.18.0.10/24 net1:eip',
      '172.18.0.11/24 net1:eip',
      '172.18.0.12/24 net1:eip',
      '172.18.0.254/24 net1',
    ]);
    expect(await acts.listEipAddresses()).toEqual(['172.18.0.10/24', '172.18.0.11/24', '172.18.0.12/24']);
    await acts.announced();
    expect(warnings).toEqual([]);
  });

  it('is idempotent', async () => {
    const before = await net1();
    expect(await acts.reconcileEipAddresses([eip('172.18.0.12'), eip('172.18.0.10'), eip('172.18.0.11')])).toEqual({
      added: [],
      removed: [],
    });
    expect(await net1()).toEqual(before);
  });

  it('makes an added EIP reachable from outside, and unreachable once removed', async () => {
    expect(await ping(t.clientNs, '172.18.0.10')).toBe(true);
    await acts.reconcileEipAddresses([eip('172.18.0.11'), eip('172.18.0.12')]);
    expect(await ping(t.clientNs, '172.18.0.10')).toBe(false);
    expect(await ping(t.clientNs, '172.18.0.11')).toBe(true);
  });

  it('removes only labelled addresses, never the gateway address or a foreign one', async () => {
    await runCommand('ip', ['-n', t.gatewayNs, 'addr', 'add', '172.18.0.50/24', 'dev', 'net1']);
    expect(await acts.reconcileEipAddresses([])).toEqual({ added: [], removed: ['172.18.0.11/24', '172.18.0.12/24'] });
    expect(await net1()).toEqual(['172.18.0.254/24 net1', '172.18.0.50/24 net1']);
    expect(await ping(t.clientNs, t.gatewayExternalIp)).toBe(true);
    await runCommand('ip', ['-n', t.gatewayNs, 'addr', 'del', '172.18.0.50/24', 'dev', 'net1']);
  });

  it('keeps the other EIPs when the first one of a subnet is removed', async () => {
    // In a subnet of their own the first EIP is the primary address: without
    // promote_secondaries, deleting it would take the others with it.
    await acts.reconcileEipAddresses([eip('198.51.100.10'), eip('198.51.100.11'), eip('198.51.100.12')]);
    expect(await acts.reconcileEipAddresses([eip('198.51.100.11'), eip('198.51.100.12')])).toEqual({
      added: [],
      removed: ['198.51.100.10/24'],
    });
    expect(await acts.listEipAddresses()).toEqual(['198.51.100.11/24', '198.51.100.12/24']);
    await acts.reconcileEipAddresses([]);
  });

  it('converges from a partial state: a stray labelled address, a missing one, a changed prefix', async () => {
    await runCommand('ip', ['-n', t.gatewayNs, 'addr', 'add', '172.18.0.20/24', 'dev', 'net1', 'label', 'net1:eip']);
    await runCommand('ip', ['-n', t.gatewayNs, 'addr', 'add', '172.18.0.21/32', 'dev', 'net1', 'label', 'net1:eip']);
    const result = await acts.reconcileEipAddresses([eip('172.18.0.21'), eip('172.18.0.22')]);
    expect(result).toEqual({ added: ['172.18.0.21/24', '172.18.0.22/24'], removed: ['172.18.0.20/24', '172.18.0.21/32'] });
    expect(await acts.listEipAddresses()).toEqual(['172.18.0.21/24', '172.18.0.22/24']);
  });

  it('announces an added EIP so that neighbours drop a stale MAC for it', async () => {
    // As if the EIP had lived on another gateway before.
    await runCommand('ip', ['-n', t.clientNs, 'neigh', 'replace', '172.18.0.13', 'lladdr', '02:00:00:00:00:99', 'dev', 'eth0', 'nud', 'stale']);
    const { stdout } = await runCommand('ip', ['-n', t.gatewayNs, '-j', 'link', 'show', 'dev', 'net1']);
    const net1Mac = (JSON.parse(stdout) as { address: string }[])[0]!.address;

    await acts.reconcileEipAddresses([eip('172.18.0.13')]);
    await acts.announced();
    let mac = '';
    for (let i = 0; i < 20 && mac !== net1Mac; i++) {
      const neigh = await runCommand('ip', ['-n', t.clientNs, '-j', 'neigh', 'show', '172.18.0.13', 'dev', 'eth0']);
      mac = (JSON.parse(neigh.stdout) as { lladdr?: string }[])[0]?.lladdr ?? '';
      if (mac !== net1Mac) await new Promise((r) => setTimeout(r, 50));
    }
    expect(mac).toBe(net1Mac);
    await acts.announced();
    expect(warnings).toEqual([]);
  });

  it('announces with the batch announcer (worker/garp) as with arping', async () => {
    const withGarp = createAddressActivities({ netns: t.gatewayNs, externalInterface: t.externalInterface, warn: (m) => warnings.push(m), garp: labGarp() });
    await runCommand('ip', ['-n', t.clientNs, 'neigh', 'replace', '172.18.0.14', 'lladdr', '02:00:00:00:00:98', 'dev', 'eth0', 'nud', 'stale']);
    const { stdout } = await runCommand('ip', ['-n', t.gatewayNs, '-j', 'link', 'show', 'dev', 'net1']);
    const net1Mac = (JSON.parse(stdout) as { address: string }[])[0]!.address;

    await withGarp.changeEipAddresses({ add: [eip('172.18.0.14')], remove: [] });
    await withGarp.announced();
    const neigh = await runCommand('ip', ['-n', t.clientNs, '-j', 'neigh', 'show', '172.18.0.14', 'dev', 'eth0']);
    expect((JSON.parse(neigh.stdout) as { lladdr?: string }[])[0]?.lladdr).toBe(net1Mac);
    expect(warnings).toEqual([]);
    await withGarp.changeEipAddresses({ add: [], remove: ['172.18.0.14'] });
  });

  it('takes a burst of 500 EIPs on and off in one pass each', async () => {
    const before = await net1();
    const burst = Array.from({ length: 500 }, (_, i) => eip(`172.18.${1 + Math.floor(i / 250)}.${1 + (i % 250)}`, 16));
    expect((await acts.reconcileEipAddresses(burst)).added).toHaveLength(500);
    expect(await acts.listEipAddresses()).toHaveLength(500);
    expect((await acts.reconcileEipAddresses([])).removed).toHaveLength(500);
    expect((await net1()).filter((a) => a.endsWith('net1:eip'))).toEqual([]);
    expect((await net1()).filter((a) => !before.includes(a))).toEqual([]);
  });

  it('rejects bad addresses with a clear, non-retryable error and changes nothing', async () => {
    const before = await net1();
    const bad: [EipAddress[], RegExp][] = [
      [[eip('172.18.0.30'), eip('172.18.0.300')], /"172\.18\.0\.300"\/24: address must be an IPv4 dotted quad/],
      [[eip('172.18.0.30', 33)], /"172\.18\.0\.30"\/33: prefix length must be an integer from 0 to 32/],
      [[eip('172.18.0.30', 24.5)], /prefix length must be an integer/],
      [[eip('172.18.1')], /address must be an IPv4 dotted quad/],
      [[eip('fd00::1', 64)], /address must be an IPv4 dotted quad/],
      [[eip('172.18.0.30; reboot')], /address must be an IPv4 dotted quad/],
      [[eip('224.0.0.1', 32)], /a multicast address cannot be an EIP/],
      [[eip('172.18.0.30', 24), eip('172.18.0.30', 32)], /172\.18\.0\.30 is desired with two prefix lengths/],
      [[{ address: 12, prefixLength: 24 } as unknown as EipAddress], /address must be an IPv4 dotted quad/],
    ];
    for (const [desired, message] of bad) {
      const err = await acts.reconcileEipAddresses(desired).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, JSON.stringify(desired)).toMatchObject({ type: 'InvalidEipAddress', nonRetryable: true });
      expect((err as Error).message).toMatch(message);
    }
    expect(await net1()).toEqual(before);
  });

  it('refuses to take over the gateway address as an EIP', async () => {
    const before = await net1();
    await expect(acts.reconcileEipAddresses([eip('172.18.0.31'), eip(t.gatewayExternalIp)])).rejects.toMatchObject({
      type: 'EipAddressConflict',
      nonRetryable: true,
      message: expect.stringMatching(/172\.18\.0\.254 is already on net1 without the net1:eip label/),
    });
    expect(await net1()).toEqual(before);
  });

  it('rejects an external interface too long for its label', () => {
    expect(() => createAddressActivities({ externalInterface: 'averylongname' })).toThrow(/at most 11 characters/);
  });
});

describe('EIP address activities through a given runner', () => {
  it('run every command through it, in the namespace', async () => {
    const ran: string[] = [];
    const addresses = [
      { family: 'inet', local: '172.18.0.254', prefixlen: 24, label: 'net1' },
      { family: 'inet', local: '172.18.0.10', prefixlen: 24, label: 'net1:eip' },
    ];
    const runner: CommandRunner = {
      async run(cmd, args, opts) {
        ran.push([opts?.netns ?? '-', cmd, ...args, ...(opts?.input ? [`<<< ${JSON.stringify(opts.input)}`] : [])].join(' '));
        return { stdout: args[0] === '-j' ? JSON.stringify([{ addr_info: addresses }]) : '', stderr: '', code: 0 };
      },
    };
    const faked = createAddressActivities({ netns: 'gw-fake', externalInterface: 'net1', runner, warn: () => {} });
    expect(await faked.listEipAddresses()).toEqual(['172.18.0.10/24']);
    expect(await faked.reconcileEipAddresses([eip('172.18.0.11'), eip('172.18.0.12')])).toEqual({ added: ['172.18.0.11/24', '172.18.0.12/24'], removed: ['172.18.0.10/24'] });
    await faked.announced();
    // The additions of a pass go in one process, however many there are.
    expect(ran).toEqual([
      'gw-fake ip -j -4 addr show dev net1',
      'gw-fake ip -j -4 addr show dev net1',
      'gw-fake ip -batch - <<< "addr del 172.18.0.10/24 dev net1\\n"',
      'gw-fake ip -j -4 addr show dev net1',
      'gw-fake ip -batch - <<< "addr replace 172.18.0.11/24 dev net1 label net1:eip\\naddr replace 172.18.0.12/24 dev net1 label net1:eip\\n"',
      '- arping --help',
      'gw-fake arping -q -U -c 1 -I net1 172.18.0.11',
      'gw-fake arping -q -U -c 1 -I net1 172.18.0.12',
    ]);
    // A change (the gateway's usual call) keeps the other labelled addresses, reading the interface once.
    ran.length = 0;
    expect(await faked.changeEipAddresses({ add: [eip('172.18.0.13')], remove: [] })).toEqual({ added: ['172.18.0.13/24'], removed: [] });
    await faked.announced();
    expect(ran).toEqual([
      'gw-fake ip -j -4 addr show dev net1',
      'gw-fake ip -batch - <<< "addr replace 172.18.0.13/24 dev net1 label net1:eip\\n"',
      'gw-fake arping -q -U -c 1 -I net1 172.18.0.13',
    ]);
  });

  it('answers before announcing; an address removed before its turn is not announced, one being announced is removed after it', async () => {
    const onInterface = new Map<string, string>(); // address -> cidr
    const arpings: { address: string; done: () => void }[] = [];
    const runner: CommandRunner = {
      async run(cmd, args, opts) {
        if (cmd === 'arping') {
          if (args[0] === '--help') return { stdout: '', stderr: '', code: 0 }; // iputils' flavour
          await new Promise<void>((done) => arpings.push({ address: args.at(-1)!, done }));
          return { stdout: '', stderr: '', code: 0 };
        }
        if (args[0] === '-j') return { stdout: JSON.stringify([{ addr_info: [...onInterface.values()].map((c) => ({ family: 'inet', local: c.split('/')[0], prefixlen: 24, label: 'net1:eip' })) }]), stderr: '', code: 0 };
        for (const line of (opts?.input ?? '').split('\n').filter(Boolean)) {
          const [, verb, c] = line.split(' ');
          if (verb === 'replace') onInterface.set(c!.split('/')[0]!, c!);
          else onInterface.delete(c!.split('/')[0]!);
        }
        return { stdout: '', stderr: '', code: 0 };
      },
    };
    const faked = createAddressActivities({ externalInterface: 'net1', runner, warn: () => {} });
    const burst = Array.from({ length: 20 }, (_, i) => eip(`172.18.0.${10 + i}`));
    // Answered while every announcement is still on its way (none has finished).
    expect((await faked.reconcileEipAddresses(burst)).added).toHaveLength(20);
    for (let i = 0; i < 100 && arpings.length < 16; i++) await new Promise((r) => setTimeout(r, 10));
    expect(arpings.map((a) => a.address)).toEqual(burst.slice(0, 16).map((e) => e.address)); // 16 at a time
    const announced: string[] = [];
    const release = (address?: string) => {
      for (const a of arpings.filter((x) => address === undefined || x.address === address)) {
        arpings.splice(arpings.indexOf(a), 1);
        announced.push(a.address);
        a.done();
      }
    };
    // The first is being announced and the last waits: both are removed. The last is not
    // announced; the first leaves the interface only once its announcement has gone out.
    const removing = faked.reconcileEipAddresses(burst.slice(1, 19));
    await new Promise((r) => setTimeout(r, 50));
    expect(onInterface.has('172.18.0.10')).toBe(true);
    release('172.18.0.10');
    await removing;
    expect(onInterface.has('172.18.0.10')).toBe(false);
    let settled = false;
    const done = faked.announced().then(() => (settled = true));
    while (!settled) {
      release();
      await new Promise((r) => setTimeout(r, 1));
    }
    await done;
    expect(announced.sort()).toEqual(burst.slice(0, 19).map((e) => e.address).sort());
  });

  it('with the batch announcer, announces what waits in one process, removes an address only after its batch, and warns each address of a failed batch', async () => {
    const onInterface = new Set<string>();
    const batches: { addresses: string[]; finish: (code: number) => void }[] = [];
    const runner: CommandRunner = {
      async run(cmd, args, opts) {
        if (cmd === '/opt/garp') {
          const code = await new Promise<number>((finish) => batches.push({ addresses: args.slice(1), finish }));
          if (code !== 0) throw new Error(`garp exited with code ${code}`);
          return { stdout: '', stderr: '', code };
        }
        if (args[0] === '-j') return { stdout: JSON.stringify([{ addr_info: [...onInterface].map((a) => ({ family: 'inet', local: a, prefixlen: 24, label: 'net1:eip' })) }]), stderr: '', code: 0 };
        for (const line of (opts?.input ?? '').split('\n').filter(Boolean)) {
          const [, verb, c] = line.split(' ');
          if (verb === 'replace') onInterface.add(c!.split('/')[0]!);
          else onInterface.delete(c!.split('/')[0]!);
        }
        return { stdout: '', stderr: '', code: 0 };
      },
    };
    const warned: string[] = [];
    const faked = createAddressActivities({ externalInterface: 'net1', runner, warn: (m) => warned.push(m), garp: '/opt/garp' });
    const settle = () => new Promise((r) => setTimeout(r, 20));
    const burst = Array.from({ length: 20 }, (_, i) => eip(`172.18.0.${10 + i}`));
    await faked.changeEipAddresses({ add: burst, remove: [] }); // answered before the announcement
    await settle();
    expect(batches.map((b) => b.addresses)).toEqual([burst.map((e) => e.address)]);
    // Two more arrive while it is sent: they wait for the next process, together.
    await faked.changeEipAddresses({ add: [eip('172.18.0.40'), eip('172.18.0.41')], remove: [] });
    // An address of the batch being sent is removed only once the batch has gone out.
    const removing = faked.changeEipAddresses({ add: [], remove: ['172.18.0.10'] });
    await settle();
    expect(onInterface.has('172.18.0.10')).toBe(true);
    batches.shift()!.finish(0);
    await removing;
    expect(onInterface.has('172.18.0.10')).toBe(false);
    await settle();
    expect(batches.map((b) => b.addresses)).toEqual([['172.18.0.40', '172.18.0.41']]);
    batches.shift()!.finish(1);
    await faked.announced();
    expect(warned).toEqual([
      'EIP 172.18.0.40 added on net1 but the ARP announcement failed: garp exited with code 1',
      'EIP 172.18.0.41 added on net1 but the ARP announcement failed: garp exited with code 1',
    ]);
  });
});
