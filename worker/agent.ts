// The gateway agent: one per NAT gateway, polling that gateway's own task queue, so every
// activity sent there runs against that gateway's network stack. In production it runs inside
// the NAT gateway pod; in the local lab it runs on the host and enters the gateway's network
// namespace for each command (`--netns`), because a process inside the lab namespace could not
// reach the Temporal server on the host's loopback.
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { Context } from '@temporalio/activity';
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import { Worker, type NativeConnection } from '@temporalio/worker';
import { createAddressActivities } from '../activities/gateway-addresses.js';
import { createNatActivities } from '../activities/gateway-nat.js';
import { runCommand, type CommandRunner } from '../activities/exec.js';
import type { AgentInfo, AgentSessionEnd } from '../domain/gateway.js';
import { gatewayTaskQueue, validateName, workflowIds } from '../domain/names.js';
import { agentStartedSignal, type GatewayAgentActivities } from '../domain/workflow-api.js';
import { connectTemporal, temporalTarget } from './connection.js';
import { isMainModule } from './process.js';

export interface AgentConfig {
  gateway: string;
  /** Network namespace to enter for every command; unset when already inside the gateway. */
  netns?: string;
  externalInterface: string;
  /** The VPC-side interface (hairpin NAT); `eth0` by default, as in Kube-OVN's gateway pod. */
  vpcInterface?: string;
  /** Runs ip, iptables and conntrack; real processes by default (a test gives a fake gateway). */
  runner?: CommandRunner;
  /** The ARP announcer (worker/garp, `--garp`); arping announces new EIPs when unset. */
  garp?: string;
}

// The agent remembers its nat table between changes (activities/gateway-nat.ts): a change on a gateway
// carrying 10,000 rules then costs what it costs at 100.
const natActivities = (cfg: AgentConfig) =>
  createNatActivities({ netns: cfg.netns, externalInterface: cfg.externalInterface, vpcInterface: cfg.vpcInterface, runner: cfg.runner, remember: true });

/** Checks the gateway's interfaces, sets the kernel switches NAT needs and creates natflow's chains; safe to repeat. */
export async function initGateway(cfg: AgentConfig): Promise<void> {
  await runCommand('ip', ['link', 'show', 'dev', cfg.externalInterface], { netns: cfg.netns });
  for (const setting of ['net.ipv4.ip_forward=1', `net.ipv4.conf.${cfg.externalInterface}.promote_secondaries=1`]) {
    await runCommand('sysctl', ['-q', '-w', setting], { netns: cfg.netns });
  }
  await natActivities(cfg).initNatChains();
}

/** How often a session heartbeats: well inside the gateway workflow's heartbeat timeout. */
export const SESSION_HEARTBEAT_MS = 3_000;

/**
 * The liveness check's agent side: heartbeats until `forMs` have passed, returns early when this
 * agent stops (its worker shuts down) and at once when asked about another instance. A process
 * that dies simply stops heartbeating: the gateway workflow learns it from the heartbeat timeout.
 */
export async function agentSession(info: AgentInfo, req: { instanceId: string; forMs: number }): Promise<AgentSessionEnd> {
  if (req.instanceId !== info.instanceId) return { instanceId: info.instanceId, ended: 'other-instance' };
  const ctx = Context.current();
  const until = Date.now() + req.forMs;
  try {
    for (let left = req.forMs; left > 0; left = until - Date.now()) {
      ctx.heartbeat();
      await ctx.sleep(Math.min(SESSION_HEARTBEAT_MS, left));
    }
    return { instanceId: info.instanceId, ended: 'expired' };
  } catch (err) {
    if (ctx.cancellationDetails?.workerShutdown) return { instanceId: info.instanceId, ended: 'stopping' };
    throw err; // cancelled by the gateway workflow
  }
}

export function createAgentActivities(cfg: AgentConfig, info: AgentInfo): GatewayAgentActivities {
  const addresses = createAddressActivities({ netns: cfg.netns, externalInterface: cfg.externalInterface, runner: cfg.runner, garp: cfg.garp });
  const nat = natActivities(cfg);
  return {
    agentInfo: async () => info,
    agentSession: (req) => agentSession(info, req),
    reconcileEipAddresses: addresses.reconcileEipAddresses,
    changeEipAddresses: addresses.changeEipAddresses,
    async applyGatewayChange({ eips, rules }) {
      await addresses.changeEipAddresses(eips);
      await nat.applyNatRules(rules);
    },
    initNatChains: nat.initNatChains,
    applyNatRules: nat.applyNatRules,
    flushConntrack: nat.flushConntrack,
    async readGateway() {
      const [rules, addressList, conntrack] = await Promise.all([nat.listChainRules(), addresses.listAddresses(), nat.natConntrack()]);
      return { instanceId: info.instanceId, externalInterface: cfg.externalInterface, rules, addresses: addressList, conntrack };
    },
    removeUntaggedRules: nat.removeUntaggedRules,
  };
}

export interface RunningAgent {
  info: AgentInfo;
  worker: Worker;
  /** Resolves when the worker has stopped. */
  done: Promise<void>;
  stop(): Promise<void>;
}

/** Initialises the gateway, starts polling, then tells the gateway workflow a new agent is up. */
export async function startGatewayAgent(cfg: AgentConfig, connection: NativeConnection, client: Client, namespace = 'default'): Promise<RunningAgent> {
  validateName(cfg.gateway, 'gateway name');
  await initGateway(cfg);
  const info: AgentInfo = { gateway: cfg.gateway, instanceId: randomUUID(), startedAt: new Date().toISOString(), externalInterface: cfg.externalInterface, changesInOneCall: true };
  const worker = await Worker.create({
    connection,
    namespace,
    taskQueue: gatewayTaskQueue(cfg.gateway),
    activities: createAgentActivities(cfg, info),
  });
  const done = worker.run();
  // Best effort: the gateway workflow also probes on its own, and may not exist yet.
  await client.workflow
    .getHandle(workflowIds.gateway(cfg.gateway))
    .signal(agentStartedSignal, info)
    .catch((err) => {
      if (!(err instanceof WorkflowNotFoundError)) throw err;
    });
  return {
    info,
    worker,
    done,
    stop: async () => {
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await done;
    },
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      gateway: { type: 'string' },
      netns: { type: 'string' },
      'external-interface': { type: 'string', default: 'net1' },
      'vpc-interface': { type: 'string' },
      garp: { type: 'string' },
      address: { type: 'string' },
      namespace: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help || !values.gateway) {
    console.log('usage: agent --gateway NAME [--netns NS] [--external-interface net1] [--vpc-interface eth0] [--garp PATH] [--address host:port] [--namespace default]');
    process.exit(values.help ? 0 : 2);
  }
  const target = temporalTarget({ address: values.address, namespace: values.namespace });
  const temporal = await connectTemporal(target);
  const agent = await startGatewayAgent({ gateway: values.gateway, netns: values.netns, externalInterface: values['external-interface']!, vpcInterface: values['vpc-interface'], garp: values.garp }, temporal.nativeConnection, temporal.client, target.namespace);
  console.log(JSON.stringify({ msg: 'gateway agent started', ...agent.info, taskQueue: gatewayTaskQueue(values.gateway) }));
  await agent.done;
  await temporal.close();
}

if (isMainModule(import.meta.url)) {
  await main();
}
