// The local lab gateway (see domain/lab.ts): network namespaces wired like a Kube-OVN VPC NAT
// gateway pod, with an external client and a few VMs. `labUp` converges from any state (nothing,
// a partial up, a working lab) without disturbing what already works, so it is safe to re-run;
// `labDown` removes everything and is equally safe to re-run.
//
// CLI for manual use: npx tsx temporal-dev/lab.ts up|down|status <gateway>
import { runCommand } from '../activities/exec.js';
import { DEFAULT_LAB_PREFIX, labTopology, type LabTopology } from '../domain/lab.js';
import { isMainModule } from '../worker/process.js';

// A DNS-1123 label, like the VpcNatGateway name it mirrors; shorter than 63 so that the
// derived namespace names (nf-<gw>-vm<i>) stay readable.
const GATEWAY_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const MAX_GATEWAY_NAME_LENGTH = 40;

export function validateGatewayName(gateway: string): void {
  if (typeof gateway !== 'string' || gateway.length === 0 || gateway.length > MAX_GATEWAY_NAME_LENGTH || !GATEWAY_NAME.test(gateway)) {
    throw new Error(
      `invalid lab gateway name ${JSON.stringify(gateway)}: must be a DNS-1123 label ` +
        `(lowercase letters, digits and '-', starting and ending with a letter or digit) ` +
        `of at most ${MAX_GATEWAY_NAME_LENGTH} characters`,
    );
  }
}

const LAB_PREFIX = /^[a-z][a-z0-9]{0,7}$/;

/**
 * The prefix of this process's lab namespaces: NATFLOW_LAB_PREFIX, or "nf". Namespaces are
 * host-wide, so two runs that both want a gateway called gw1 (test files in parallel workers)
 * must not share them: one's teardown would delete the other's gateway.
 */
export function labPrefix(): string {
  const prefix = process.env.NATFLOW_LAB_PREFIX ?? DEFAULT_LAB_PREFIX;
  if (!LAB_PREFIX.test(prefix)) {
    throw new Error(`invalid NATFLOW_LAB_PREFIX ${JSON.stringify(prefix)}: 1 to 8 lowercase letters and digits, starting with a letter`);
  }
  return prefix;
}

export interface LabStatus {
  topology: LabTopology;
  present: string[];
  missing: string[];
}

export async function labStatus(gateway: string): Promise<LabStatus> {
  validateGatewayName(gateway);
  const topology = labTopology(gateway, labPrefix());
  const existing = await listNamespaces();
  const all = allNamespaces(topology);
  return {
    topology,
    present: all.filter((ns) => existing.has(ns)),
    missing: all.filter((ns) => !existing.has(ns)),
  };
}

export async function labUp(gateway: string): Promise<LabTopology> {
  validateGatewayName(gateway);
  const t = labTopology(gateway, labPrefix());
  const gw = t.gatewayNs;

  const existing = await listNamespaces();
  for (const ns of allNamespaces(t)) {
    if (!existing.has(ns)) await runCommand('ip', ['netns', 'add', ns]);
  }

  // Links are created directly inside their namespaces: nothing ever appears in the root
  // namespace, so parallel labs (and the host) cannot clash on interface names.
  await ensureVethPair({ ns: gw, name: t.externalInterface }, { ns: t.clientNs, name: 'eth0' });
  if (!(await listLinks(gw)).has(t.vpcInterface)) {
    await ip(gw, 'link', 'add', t.vpcInterface, 'type', 'bridge');
  }
  for (const [i, vmNs] of t.vmNamespaces.entries()) {
    const port = `vm${i + 1}`;
    await ensureVethPair({ ns: gw, name: port }, { ns: vmNs, name: 'eth0' });
    await ip(gw, 'link', 'set', port, 'master', t.vpcInterface, 'up');
  }

  // Before any address: promote_secondaries makes deleting the first address of a subnet
  // promote the next one instead of flushing them all, so removing one EIP keeps the others.
  // net1's own setting only exists once net1 does.
  await runCommand(
    'sysctl',
    [
      '-q',
      '-w',
      'net.ipv4.ip_forward=1',
      'net.ipv4.conf.all.promote_secondaries=1',
      `net.ipv4.conf.${t.externalInterface}.promote_secondaries=1`,
    ],
    { netns: gw },
  );

  const prefix = (cidr: string) => cidr.split('/')[1]!;
  const extPrefix = prefix(t.externalCidr);
  const vpcPrefix = prefix(t.vpcCidr);

  // Gateway: `replace` leaves an existing address (and the EIPs beside it) untouched.
  await ip(gw, 'link', 'set', 'lo', 'up');
  await ip(gw, 'addr', 'replace', `${t.gatewayExternalIp}/${extPrefix}`, 'dev', t.externalInterface);
  await ip(gw, 'link', 'set', t.externalInterface, 'up');
  await ip(gw, 'addr', 'replace', `${t.lanIp}/${vpcPrefix}`, 'dev', t.vpcInterface);
  await ip(gw, 'link', 'set', t.vpcInterface, 'up');
  await ip(gw, 'route', 'replace', 'default', 'via', t.externalGatewayIp, 'dev', t.externalInterface);

  // External client: on the external subnet only, with no route to the VPC, so anything it
  // reaches inside the VPC must have gone through the gateway's NAT.
  await ip(t.clientNs, 'link', 'set', 'lo', 'up');
  await ip(t.clientNs, 'addr', 'replace', `${t.externalGatewayIp}/${extPrefix}`, 'dev', 'eth0');
  await ip(t.clientNs, 'link', 'set', 'eth0', 'up');

  for (const [i, vmNs] of t.vmNamespaces.entries()) {
    await ip(vmNs, 'link', 'set', 'lo', 'up');
    await ip(vmNs, 'addr', 'replace', `${t.vmIps[i]}/${vpcPrefix}`, 'dev', 'eth0');
    await ip(vmNs, 'link', 'set', 'eth0', 'up');
    await ip(vmNs, 'route', 'replace', 'default', 'via', t.lanIp, 'dev', 'eth0');
  }
  return t;
}

export async function labDown(gateway: string): Promise<void> {
  validateGatewayName(gateway);
  const t = labTopology(gateway, labPrefix());
  const existing = await listNamespaces();
  // VMs and client first, the gateway last; the veth pairs go with whichever end goes first.
  for (const ns of [...t.vmNamespaces, t.clientNs, t.gatewayNs]) {
    if (!existing.has(ns)) continue;
    // A process left inside (an agent, a stray nc) would keep the namespace and its links
    // alive after the name is gone; kill it first.
    const { stdout } = await runCommand('ip', ['netns', 'pids', ns]);
    const pids = stdout.split(/\s+/).filter(Boolean);
    if (pids.length > 0) {
      // Exit code 1: some process already exited on its own, which is what we want anyway.
      await runCommand('kill', ['-KILL', ...pids], { allowExitCodes: [1] });
    }
    await runCommand('ip', ['netns', 'delete', ns]);
  }
}

function allNamespaces(t: LabTopology): string[] {
  return [t.gatewayNs, t.clientNs, ...t.vmNamespaces];
}

function ip(ns: string, ...args: string[]) {
  return runCommand('ip', ['-n', ns, ...args]);
}

async function listNamespaces(): Promise<Set<string>> {
  const { stdout } = await runCommand('ip', ['-j', 'netns', 'list']);
  // Prints nothing at all when /run/netns does not exist yet.
  const entries = stdout.trim() ? (JSON.parse(stdout) as { name: string }[]) : [];
  return new Set(entries.map((e) => e.name));
}

async function listLinks(ns: string): Promise<Set<string>> {
  const { stdout } = await runCommand('ip', ['-n', ns, '-j', 'link', 'show']);
  return new Set((JSON.parse(stdout) as { ifname: string }[]).map((l) => l.ifname));
}

interface LinkEnd {
  ns: string;
  name: string;
}

// Both ends present: the pair is taken as is (the lab only ever creates them together, and
// deleting either end deletes both). One end alone is a leftover from something else: it is
// removed so that the pair can be created.
async function ensureVethPair(a: LinkEnd, b: LinkEnd): Promise<void> {
  const aExists = (await listLinks(a.ns)).has(a.name);
  const bExists = (await listLinks(b.ns)).has(b.name);
  if (aExists && bExists) return;
  if (aExists) await ip(a.ns, 'link', 'del', a.name);
  if (bExists) await ip(b.ns, 'link', 'del', b.name);
  await runCommand('ip', ['link', 'add', a.name, 'netns', a.ns, 'type', 'veth', 'peer', 'name', b.name, 'netns', b.ns]);
}

async function main(argv: string[]): Promise<number> {
  const [command, gateway] = argv;
  if (!gateway || !['up', 'down', 'status'].includes(command ?? '')) {
    console.error('usage: npx tsx temporal-dev/lab.ts up|down|status <gateway>');
    return 2;
  }
  if (command === 'up') {
    console.log(JSON.stringify(await labUp(gateway), null, 2));
  } else if (command === 'down') {
    await labDown(gateway);
    console.log(`lab ${gateway} is down`);
  } else {
    const status = await labStatus(gateway);
    console.log(JSON.stringify({ gateway, present: status.present, missing: status.missing }, null, 2));
    return status.missing.length === 0 ? 0 : 1;
  }
  return 0;
}

if (isMainModule(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(err instanceof Error ? err.message : err);
      process.exit(1);
    },
  );
}
