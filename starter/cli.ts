// natflow's command-line tool: EIPs, subnets and gateways through the Temporal client, and the
// local lab. `--json` on any command prints machine-readable output; errors go to stderr with
// exit code 1 (and as {"error": ...} with --json).
import { Command, CommanderError, Option } from 'commander';
import type { EipSpec } from '../domain/eip.js';
import type { NatKind, NatSpec, NatSpecs } from '../domain/nat-resources.js';
import type { AuditReport } from '../domain/audit.js';
import { CONTROL_TASK_QUEUE, workflowIds, type ResourceKind } from '../domain/names.js';
import { AUDIT_EXIT, auditExitCode, runAudit } from './audit.js';
import { DEFAULT_EXTERNAL_SUBNET } from '../domain/subnet.js';
import { labDown, labStatus, labUp } from '../temporal-dev/lab.js';
import { connectTemporal, temporalTarget, type TemporalConnections } from '../worker/connection.js';
import { isMainModule } from '../worker/process.js';
import {
  createResource,
  refuseTakenName,
  deleteGateway,
  deleteResource,
  resourceStatus,
  updateNatSpec,
  ensureGateway,
  ensureSubnet,
  findRunning,
  gatewayState,
  subnetState,
  webUiLink,
  type Resources,
} from './resources.js';

interface GlobalOptions {
  address?: string;
  namespace?: string;
  uiUrl: string;
  json?: boolean;
}

/** The CLI, and a `close` for the Temporal connection it may have opened. */
export function buildCli(out: (text: string) => void = console.log): { program: Command; close(): Promise<void> } {
  const program = new Command('natflow')
    .description('Durable, leak-free EIPs and NAT rules on VPC NAT gateways')
    .option('--address <host:port>', 'Temporal frontend (env TEMPORAL_ADDRESS, default 127.0.0.1:7233)')
    .option('--namespace <ns>', 'Temporal namespace (env TEMPORAL_NAMESPACE, default "default")')
    .addOption(new Option('--ui-url <url>', 'Temporal Web UI base URL').env('NATFLOW_UI_URL').default('http://127.0.0.1:8233'))
    .option('--json', 'print JSON for scripts')
    .showHelpAfterError()
    // Usage errors throw (commander has already printed them) instead of exiting the process,
    // so the connection is closed on every path and the CLI can be driven in-process.
    .exitOverride();

  const globals = () => program.opts<GlobalOptions>();
  const print = (value: unknown, text: (v: never) => string) => out(globals().json ? JSON.stringify(value, null, 2) : text(value as never));
  let temporal: Promise<Omit<TemporalConnections, 'nativeConnection'>> | undefined;
  const resources = async (): Promise<Resources> => {
    temporal ??= connectTemporal(temporalTarget({ address: globals().address, namespace: globals().namespace }), { worker: false });
    return { client: (await temporal).client };
  };
  const link = (workflowId: string) => webUiLink(globals().uiUrl, temporalTarget({ namespace: globals().namespace }).namespace, workflowId);

  /** create/list/get/delete (and `set` for NAT rules) for one resource kind. */
  const resourceCommands = <K extends ResourceKind>(
    kind: K,
    description: string,
    options: SpecOption[],
    specFrom: (o: Record<string, string>) => Spec<K>,
  ) => {
    const group = program.command(kind).description(description);
    /** The spec's fields as options: required unless they have a default or are optional. */
    const withOptions = (cmd: Command) => {
      for (const o of options) {
        if (o.default === undefined && !o.optional) cmd.requiredOption(o.flags, o.help);
        else cmd.option(o.flags, o.help, o.default);
      }
      return cmd;
    };
    withOptions(group.command('create <name>').description(`create a ${kind}`))
      .option('--wait', 'wait until it is ready or reports a problem')
      .action(async (name: string, o: Record<string, string> & { wait?: boolean }) => {
        const r = await resources();
        await refuseTakenName(r, kind, name); // one of an object (its own uid) has the name too
        const created = await createResource(r, kind, name, specFrom(o));
        const status = o.wait ? await waitSettled(r, kind, name) : undefined;
        print({ ...created, ui: link(created.workflowId), ...(status && { status }) }, () =>
          `${kind} ${name} created (uid ${created.uid})${status ? `: ${status.phase} ${statusAddress(status)}` : ''}\n  ${link(created.workflowId)}`,
        );
      });
    group
      .command('list')
      .description(`list ${kind}s with their phase`)
      .action(async () => {
        const r = await resources();
        const rows = await Promise.all((await findRunning(r, kind)).map((found) => resourceStatus(r, kind, found.name)));
        print(rows, () => rows.map((s) => `${s.name}\t${s.phase}\t${statusAddress(s) || '-'}\t${s.natGwDp || '-'}`).join('\n') || `no ${kind}s`);
      });
    group
      .command('get <name>')
      .description('show status, conditions and the Web UI link')
      .action(async (name: string) => {
        const status = await resourceStatus(await resources(), kind, name);
        print({ ...status, ui: link(status.workflowId) }, () => `${JSON.stringify(status, null, 2)}\n${link(status.workflowId)}`);
      });
    if (kind !== 'eip') {
      withOptions(group.command('set <name>').description(`change a ${kind}'s spec (all fields, as an edit would)`)).action(async (name: string, o: Record<string, string>) => {
        const generation = await updateNatSpec(await resources(), kind as NatKind, name, specFrom(o) as NatSpec);
        print({ name, generation }, () => `${kind} ${name}: generation ${generation} sent`);
      });
    }
    group
      .command('delete <name>')
      .description('delete it; everything it holds on the gateway and in IPAM is given back')
      .option('--no-wait', 'return once the delete is requested')
      .action(async (name: string, o: { wait: boolean }) => {
        const workflowId = await deleteResource(await resources(), kind, name, o.wait);
        print({ name, workflowId, deleted: o.wait }, () => `${kind} ${name} ${o.wait ? 'deleted' : 'delete requested'}`);
      });
  };

  resourceCommands('eip', 'elastic IPs (IptablesEIP)', [
    { flags: '--gateway <name>', help: 'the NAT gateway (spec.natGwDp)' },
    { flags: '--subnet <name>', help: 'external subnet (spec.externalSubnet)', default: DEFAULT_EXTERNAL_SUBNET },
    { flags: '--v4ip <address>', help: 'a specific address (spec.v4ip)', optional: true },
  ], (o) => ({ natGwDp: o.gateway!, externalSubnet: o.subnet, v4ip: o.v4ip }));
  resourceCommands('fip', 'floating IPs (IptablesFIPRule): all traffic of an EIP to one internal IP', [
    { flags: '--eip <name>', help: 'the EIP (spec.eip)' },
    { flags: '--internal-ip <address>', help: 'spec.internalIp' },
  ], (o) => ({ eip: o.eip!, internalIp: o.internalIp! }));
  resourceCommands('dnat', 'port forwarding (IptablesDnatRule)', [
    { flags: '--eip <name>', help: 'the EIP (spec.eip)' },
    { flags: '--protocol <tcp|udp>', help: 'spec.protocol' },
    { flags: '--external-port <port>', help: 'spec.externalPort' },
    { flags: '--internal-ip <address>', help: 'spec.internalIp' },
    { flags: '--internal-port <port>', help: 'spec.internalPort' },
  ], (o) => ({ eip: o.eip!, protocol: o.protocol!, externalPort: o.externalPort!, internalIp: o.internalIp!, internalPort: o.internalPort! }));
  resourceCommands('snat', 'source NAT for a CIDR (IptablesSnatRule)', [
    { flags: '--eip <name>', help: 'the EIP (spec.eip)' },
    { flags: '--internal-cidr <cidr>', help: 'spec.internalCIDR' },
  ], (o) => ({ eip: o.eip!, internalCIDR: o.internalCidr! }));

  const subnet = program.command('subnet').description('external subnets and their IPAM');
  subnet
    .command('create <name>')
    .description('create an external subnet that EIPs are allocated from')
    .requiredOption('--cidr <cidr>', 'spec.cidrBlock, e.g. 172.18.0.0/24')
    .requiredOption('--gateway <address>', "spec.gateway, the subnet's router")
    .option('--exclude <entries>', 'spec.excludeIps, comma-separated addresses or a..b ranges', '')
    .action(async (name: string, o: { cidr: string; gateway: string; exclude: string }) => {
      const excludeIps = o.exclude.split(',').filter(Boolean);
      const workflowId = await ensureSubnet(await resources(), { name, cidrBlock: o.cidr, gateway: o.gateway, excludeIps });
      print({ name, workflowId, ui: link(workflowId) }, () => `subnet ${name} ready for allocations\n  ${link(workflowId)}`);
    });
  subnet
    .command('show <name>')
    .description("a subnet's usage (Kube-OVN status fields) and its allocations")
    .action(async (name: string) => {
      const state = await subnetState(await resources(), name);
      print(state, () =>
        [`subnet ${name} (${state.subnet.cidrBlock})`, ...Object.entries(state.usage).map(([k, v]) => `  ${k}: ${v}`), 'allocations:', ...Object.entries(state.allocations).map(([owner, ip]) => `  ${ip}\t${owner}`)].join('\n'),
      );
    });

  const gateway = program.command('gateway').description('NAT gateways (VpcNatGateway)');
  gateway
    .command('create <name>')
    .description('register a NAT gateway; its agent makes it ready')
    .option('--subnet <name>', 'its external subnet', DEFAULT_EXTERNAL_SUBNET)
    .action(async (name: string, o: { subnet: string }) => {
      const workflowId = await ensureGateway(await resources(), { name, externalSubnet: o.subnet });
      print({ name, workflowId, ui: link(workflowId) }, () => `gateway ${name} registered\n  ${link(workflowId)}`);
    });
  gateway
    .command('get <name>')
    .description("a gateway's readiness, agent and bound EIPs")
    .action(async (name: string) => {
      const state = await gatewayState(await resources(), name);
      print(state, () => JSON.stringify(state, null, 2));
    });
  gateway
    .command('delete <name>')
    .description('delete a gateway (refused while EIPs use it)')
    .action(async (name: string) => {
      await deleteGateway(await resources(), name);
      print({ name, deleted: true }, () => `gateway ${name} deleted`);
    });

  program
    .command('ui <kind> <name>')
    .description('print the Web UI link of a resource workflow (kind: eip, fip, dnat, snat, subnet, gateway)')
    .action(async (kind: string, name: string) => {
      const resourceKinds: string[] = ['eip', 'fip', 'dnat', 'snat'];
      const workflowId =
        kind === 'subnet'
          ? workflowIds.ipam(name)
          : kind === 'gateway'
            ? workflowIds.gateway(name)
            : resourceKinds.includes(kind)
              ? (await resourceStatus(await resources(), kind as ResourceKind, name)).workflowId
              : undefined;
      if (!workflowId) throw new Error(`unknown kind ${JSON.stringify(kind)}: use eip, fip, dnat, snat, subnet or gateway`);
      print({ kind, name, workflowId, ui: link(workflowId) }, () => link(workflowId));
    });

  program
    .command('audit')
    .description('compare every gateway, subnet and Kubernetes object with what natflow holds; exit 0 clean, 1 findings, 2 could not check')
    .option('--fix', 'apply the repairs that are safe, then audit again (without it nothing changes)')
    .option('--grace <seconds>', 'seconds between the two looks whose common findings are reported', '5')
    .option('--timeout <seconds>', 'give up (exit 2) when the audit has not finished by then, e.g. no control worker runs', '600')
    .option('--task-queue <queue>', "the control worker's task queue", CONTROL_TASK_QUEUE)
    .action(async (o: { fix?: boolean; grace: string; timeout: string; taskQueue: string }) => {
      const [graceMs, timeoutMs] = [o.grace, o.timeout].map((v) => Number(v) * 1000);
      if (!Number.isFinite(graceMs) || graceMs! < 0) throw new Error(`--grace ${JSON.stringify(o.grace)} must be a number of seconds`);
      if (!Number.isFinite(timeoutMs) || timeoutMs! <= 0) throw new Error(`--timeout ${JSON.stringify(o.timeout)} must be a positive number of seconds`);
      let report;
      try {
        report = await runAudit({ ...(await resources()), taskQueue: o.taskQueue }, { fix: o.fix, graceMs }, timeoutMs);
      } catch (err) {
        // Not a finding: the audit itself could not run (no server, no control worker).
        print({ error: (err as Error).message, unchecked: [{ what: 'everything', why: (err as Error).message }] }, () => `audit could not run: ${(err as Error).message}`);
        process.exitCode = AUDIT_EXIT.unchecked;
        return;
      }
      print({ ...report, ui: link(report.workflowId) }, () => auditText(report));
      process.exitCode = auditExitCode(report);
    });

  const lab = program.command('lab').description('the local lab: a NAT gateway made of network namespaces');
  lab
    .command('up <gateway>')
    .description('create (or repair) the lab gateway and its client and VMs; idempotent')
    .action(async (name: string) => {
      const topology = await labUp(name);
      print(topology, () => `lab ${name} is up: gateway netns ${topology.gatewayNs}, client ${topology.clientNs}, VMs ${topology.vmNamespaces.join(', ')}`);
    });
  lab
    .command('down <gateway>')
    .description('remove the lab gateway, leaving no namespace, link or process')
    .action(async (name: string) => {
      await labDown(name);
      print({ gateway: name, down: true }, () => `lab ${name} is down`);
    });
  lab
    .command('status <gateway>')
    .description('which of the lab namespaces exist')
    .action(async (name: string) => {
      const status = await labStatus(name);
      print(status, () => `present: ${status.present.join(', ') || '-'}\nmissing: ${status.missing.join(', ') || '-'}`);
    });
  return { program, close: async () => (await temporal)?.close() };
}

function auditText(report: AuditReport): string {
  const lines = report.findings.map((f) => `${f.kind}  ${f.resource}\n    expected: ${f.expected}\n    found:    ${f.found}\n    repair:   ${f.repairText}`);
  for (const u of report.unchecked) lines.push(`not checked: ${u.what}: ${u.why}`);
  for (const r of report.repairs ?? []) lines.push(`repair ${r.result}: ${r.finding}: ${r.detail}`);
  const counts = Object.entries(report.counts).map(([kind, n]) => `${kind} ${n}`).join(', ');
  if (report.omitted) lines.push(`(${report.omitted} more finding(s) not listed; counted below)`);
  const total = Object.values(report.counts).reduce((a, b) => a + (b ?? 0), 0);
  lines.push(total === 0 ? `clean${report.unchecked.length > 0 ? ' where checked' : ''}` : `${total} finding(s): ${counts}`);
  return lines.join('\n');
}

/** One spec field as a command-line option. */
interface SpecOption {
  flags: string;
  help: string;
  default?: string;
  optional?: true;
}

type Spec<K extends ResourceKind> = K extends 'eip' ? EipSpec : NatSpecs[Exclude<K, 'eip'>];

const statusAddress = (s: { ip?: string; v4ip?: string }) => s.ip ?? s.v4ip ?? '';

/** Polls until the resource is ready or stuck on something the user must act on. */
async function waitSettled(r: Resources, kind: ResourceKind, name: string, timeoutMs = 60_000) {
  const settled = ['Ready', 'Invalid', 'Failed', 'WaitingForGateway', 'WaitingForEip'];
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const status = await resourceStatus(r, kind, name).catch(() => undefined);
    if (status && settled.includes(status.phase)) return status;
    if (Date.now() > deadline) throw new Error(`${kind} ${name} did not settle within ${timeoutMs / 1000}s (phase ${status?.phase ?? 'unknown'})`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

if (isMainModule(import.meta.url)) {
  const { program, close } = buildCli();
  try {
    await program.parseAsync(process.argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode; // help, version or a usage error: already printed
    } else {
      const message = err instanceof Error ? err.message : String(err);
      console.error(program.opts<GlobalOptions>().json ? JSON.stringify({ error: message }) : `error: ${message}`);
      process.exitCode = 1;
    }
  } finally {
    await close();
  }
}
