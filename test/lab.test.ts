// The local lab in real network namespaces: up converges without disturbing a working lab,
// traffic flows where it should (and not where only NAT may take it), down leaves nothing.
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCommand } from '../activities/exec.js';
import { labTopology } from '../domain/lab.js';
import { labDown, labPrefix, labStatus, labUp } from '../temporal-dev/lab.js';
import { ping } from './support/traffic.js';
import { eventually } from './support/workflows.js';

const GW = 't-lab';
const t = labTopology(GW, labPrefix());
const allNs = [t.gatewayNs, t.clientNs, ...t.vmNamespaces];

// Everything that must not change when up runs again: links (by ifindex, so a recreated link
// shows), addresses and routes of every namespace.
async function snapshot(): Promise<string> {
  const parts: string[] = [];
  for (const ns of allNs) {
    const addrs = JSON.parse((await runCommand('ip', ['-n', ns, '-j', 'addr', 'show'])).stdout) as {
      ifindex: number;
      ifname: string;
      addr_info: { family: string; local: string; prefixlen: number }[];
    }[];
    for (const l of addrs) {
      // IPv4 only: IPv6 link-local addresses appear on their own, a moment after a link is up.
      const v4 = l.addr_info.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`);
      parts.push(`${ns} ${l.ifindex} ${l.ifname} ${v4.sort().join(',')}`);
    }
    parts.push(`${ns} routes: ${(await runCommand('ip', ['-n', ns, '-4', 'route', 'show'])).stdout.trim()}`);
  }
  return parts.join('\n');
}

async function rootLinks(): Promise<string[]> {
  const links = JSON.parse((await runCommand('ip', ['-j', 'link', 'show'])).stdout) as { ifname: string }[];
  return links.map((l) => l.ifname).sort();
}

describe('local lab', () => {
  let rootBefore: string[];

  beforeAll(async () => {
    await labDown(GW);
    rootBefore = await rootLinks();
  });

  afterAll(async () => {
    await labDown(GW);
  });

  it('comes up, and a second up changes nothing', async () => {
    expect(await labUp(GW)).toEqual(t);
    const first = await snapshot();
    await labUp(GW);
    expect(await snapshot()).toBe(first);
    expect((await labStatus(GW)).missing).toEqual([]);
    // Every link lives inside a namespace.
    expect(await rootLinks()).toEqual(rootBefore);
  });

  it('wires the gateway like Kube-OVN: forwarding on, secondaries promoted', async () => {
    const { stdout } = await runCommand(
      'sysctl',
      ['-n', 'net.ipv4.ip_forward', 'net.ipv4.conf.all.promote_secondaries', 'net.ipv4.conf.net1.promote_secondaries'],
      { netns: t.gatewayNs },
    );
    expect(stdout.trim().split('\n')).toEqual(['1', '1', '1']);
  });

  it('lets VMs reach the gateway lanIp and the client reach the gateway external IP', async () => {
    for (const ns of t.vmNamespaces) expect(await ping(ns, t.lanIp)).toBe(true);
    expect(await ping(t.vmNamespaces[1]!, t.vmIps[0]!)).toBe(true);
    expect(await ping(t.clientNs, t.gatewayExternalIp)).toBe(true);
  });

  it('gives the client no route into the VPC', async () => {
    const { code, stderr } = await runCommand('ip', ['-n', t.clientNs, 'route', 'get', t.vmIps[0]!], { allowExitCodes: [2] });
    expect(code).toBe(2);
    expect(stderr).toMatch(/unreachable/i);
  });

  it('converges from a partial lab without touching what works', async () => {
    const netIndex = async () =>
      (JSON.parse((await runCommand('ip', ['-n', t.gatewayNs, '-j', 'link', 'show', 'dev', 'net1'])).stdout) as { ifindex: number }[])[0]!
        .ifindex;
    const before = await netIndex();
    await runCommand('ip', ['netns', 'delete', t.vmNamespaces[1]!]);
    await runCommand('ip', ['-n', t.clientNs, 'addr', 'flush', 'dev', 'eth0']);

    await labUp(GW);
    expect(await netIndex()).toBe(before);
    expect(await ping(t.vmNamespaces[1]!, t.lanIp)).toBe(true);
    expect(await ping(t.clientNs, t.gatewayExternalIp)).toBe(true);
  });

  it('down kills what runs inside, removes every namespace, and can run twice', async () => {
    const sleeper = spawn('ip', ['netns', 'exec', t.gatewayNs, 'sleep', '30'], { stdio: 'ignore' });
    const exited = new Promise<NodeJS.Signals | null>((resolve) => sleeper.on('exit', (_code, signal) => resolve(signal)));
    await eventually(async () => (await runCommand('ip', ['netns', 'pids', t.gatewayNs])).stdout.trim(), (pids) => pids !== '', 10_000, 'the process inside the namespace');

    await labDown(GW);
    expect(await exited).toBe('SIGKILL');
    expect((await labStatus(GW)).present).toEqual([]);
    expect(await rootLinks()).toEqual(rootBefore);

    await labDown(GW);
    expect((await labStatus(GW)).present).toEqual([]);
  });

  it('rejects a gateway name that is not a short DNS-1123 label', async () => {
    await expect(labUp('Bad_Name')).rejects.toThrow(/invalid lab gateway name "Bad_Name".*DNS-1123/);
    await expect(labDown('x'.repeat(41))).rejects.toThrow(/at most 40 characters/);
    await expect(labStatus('-gw')).rejects.toThrow(/invalid lab gateway name/);
  });
});
