// The end-to-end stack for tests: a throwaway dev server, a lab gateway in network namespaces,
// a control worker and that gateway's agent, all real. One per test file.
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { KubeConfig } from '@kubernetes/client-node';
import { createAddressActivities } from '../../activities/gateway-addresses.js';
import { createNatActivities } from '../../activities/gateway-nat.js';
import { labExternalSubnet, type LabTopology } from '../../domain/lab.js';
import type { SubnetSpec } from '../../domain/subnet.js';
import { labDown, labUp } from '../../temporal-dev/lab.js';
import { startGatewayAgent, type RunningAgent } from '../../worker/agent.js';
import { createControlWorker, type ControlWorker } from '../../worker/control.js';
import { ensureGateway, ensureSubnet, type Resources } from '../../starter/resources.js';
import { connectTemporal, temporalTarget } from '../../worker/connection.js';
import { createTestEnv } from './temporal-env.js';
import { uniqueQueue, workflowBundle } from './workflows.js';
import { labGarp } from '../../temporal-dev/garp.js';

export interface Stack {
  /** The Temporal side: a throwaway test server, or the given one. */
  env: Pick<TestWorkflowEnvironment, 'client' | 'nativeConnection'>;
  resources: Resources;
  subnet: SubnetSpec;
  /** Lab gateways brought up by this stack, by name. */
  gateways: Map<string, { topology: LabTopology; agent: RunningAgent }>;
  /** Brings up a lab gateway and its agent; `register: false` leaves the gateway workflow to someone else (the bridge). */
  addGateway(name: string, opts?: { register?: boolean }): Promise<LabTopology>;
  /** Stops a gateway's agent (the pod dies) and starts a new one. */
  restartAgent(name: string, beforeStart?: () => Promise<void>): Promise<void>;
  eipAddresses(gateway: string): Promise<string[]>;
  /** natflow-tagged NAT rules on the gateway, read from its nat table. */
  natRules(gateway: string): Promise<{ chain: string; owner: string; spec: string[] }[]>;
  teardown(): Promise<void>;
}

/** `kubeConfig`: the cluster whose objects the bridge maps (the control worker writes finalizers and status there). */
/** A throwaway test server, or connections to a server someone else runs (and may restart). */
async function temporalFor(address?: string): Promise<{ env: Stack['env']; closeEnv: () => Promise<void> }> {
  if (!address) {
    // The workers' and the tests' client is natflow's own (its close waits out the client's retries), on the test server.
    const server = await createTestEnv();
    const temporal = await connectTemporal(temporalTarget({ address: server.address }));
    return { env: temporal, closeEnv: () => temporal.close().finally(() => server.teardown()) };
  }
  const temporal = await connectTemporal(temporalTarget({ address }));
  return { env: temporal, closeEnv: temporal.close };
}

export async function startStack(subnetName: string, opts: { kubeConfig?: KubeConfig; registerSubnet?: boolean; temporalAddress?: string; gatewayRebuildWindowMs?: number } = {}): Promise<Stack> {
  const { env, closeEnv } = await temporalFor(opts.temporalAddress);
  const resources: Resources = { client: env.client, taskQueue: uniqueQueue('control'), gatewayRebuildWindowMs: opts.gatewayRebuildWindowMs };
  const control: ControlWorker = await createControlWorker({ connection: env.nativeConnection, client: env.client, taskQueue: resources.taskQueue, workflowBundle: await workflowBundle(), kubeConfig: opts.kubeConfig });
  const controlRun = control.run();
  const gateways: Stack['gateways'] = new Map();
  const agentFor = (name: string, topology: LabTopology) =>
    startGatewayAgent({ gateway: name, netns: topology.gatewayNs, externalInterface: topology.externalInterface, vpcInterface: topology.vpcInterface, garp: labGarp() }, env.nativeConnection, env.client);

  const stack: Stack = {
    env,
    resources,
    subnet: labExternalSubnet(subnetName),
    gateways,
    async addGateway(name, { register = true } = {}) {
      const topology = await labUp(name);
      if (register) await ensureGateway(resources, { name, externalSubnet: stack.subnet.name, lanIp: topology.lanIp, internalCidr: topology.vpcCidr });
      gateways.set(name, { topology, agent: await agentFor(name, topology) });
      return topology;
    },
    async restartAgent(name, beforeStart) {
      const gw = gateways.get(name)!;
      await gw.agent.stop();
      await beforeStart?.();
      gw.agent = await agentFor(name, gw.topology);
    },
    eipAddresses(gateway) {
      const topology = gateways.get(gateway)!.topology;
      return createAddressActivities({ netns: topology.gatewayNs, externalInterface: topology.externalInterface }).listEipAddresses();
    },
    natRules(gateway) {
      return createNatActivities({ netns: gateways.get(gateway)!.topology.gatewayNs }).listNatRules();
    },
    async teardown() {
      // Each step runs even when an earlier one failed: a failing test must not leak a server or a namespace.
      const steps = [
        ...[...gateways].flatMap(([name, gw]) => [() => gw.agent.stop(), () => labDown(name)]),
        async () => {
          control.shutdown();
          await controlRun;
        },
        closeEnv,
      ];
      const errors: unknown[] = [];
      for (const step of steps) await step().catch((err) => errors.push(err));
      if (errors.length > 0) throw errors[0];
    },
  };
  if (opts.registerSubnet ?? true) await ensureSubnet(resources, stack.subnet);
  return stack;
}
