// One workflow per NAT gateway: it holds the gateway's desired state (the EIP addresses bound on
// it, and in time its NAT rules), serialises and batches every change to it, probes its agent,
// and restores the whole desired state whenever a new agent instance appears (a restarted
// gateway pod starts empty). Its existence is the gateway's existence for natflow.
import * as wf from '@temporalio/workflow';
import { NatflowError, Reason } from '../domain/errors.js';
import type { EipAddress, GatewayInput, GatewayState } from '../domain/gateway.js';
import { gatewayTaskQueue } from '../domain/names.js';
import { cidrContains, parseCidr, parseIPv4 } from '../domain/ip.js';
import { conntrackTarget, dnatConflict, ruleDiff, validateNatRule, type NatRule } from '../domain/nat-rules.js';
import { searchAttributes } from '../domain/search-attributes.js';
import { agentStartedSignal, bindEipUpdate, gatewayChangedSignal, gatewayStateQuery, removeRuleUpdate, setRuleUpdate, unbindEipUpdate, type Fence } from '../domain/workflow-api.js';
import { gatewayAgent, wakeUps } from './activity-proxies.js';
import { checkFence, domainCall } from './failures.js';

const PROBE_WHEN_READY = '30s';
const MAX_PROBE_BACKOFF_MS = 30_000;

export async function gatewayWorkflow(input: GatewayInput): Promise<void> {
  const { spec } = input;
  const agent = gatewayAgent(spec.name);
  const state: GatewayState = { spec, ready: false, reason: 'agent not probed yet', agent: null, eips: { ...input.eips }, rules: { ...input.rules }, deleting: false };
  // The rules the current agent instance has: a diff against them is all one change sends.
  let appliedRules: Record<string, NatRule> = {};
  let fullRestore = true;
  let desiredGeneration = 1; // a new run always applies its full state once
  let appliedGeneration = 0;
  let probeRequested = true;
  let failedProbes = 0;

  wf.upsertSearchAttributes(searchAttributes({ kind: 'gateway', name: spec.name, gateway: spec.name, subnet: spec.externalSubnet ?? '' }));
  const setReady = (ready: boolean, reason: string) => {
    state.ready = ready;
    state.reason = reason;
    wf.upsertSearchAttributes(searchAttributes({ phase: ready ? 'Ready' : 'AgentNotReady' }));
    wf.setCurrentDetails(ready ? `Ready: agent ${state.agent?.instanceId}` : `Not ready: ${reason}`);
  };
  const notReady = () =>
    wf.ApplicationFailure.nonRetryable(`gateway ${spec.name} is not ready: ${state.reason}`, Reason.GatewayNotReady);
  /** Records a change and waits until an apply that includes it has finished. */
  const change = async (mutate: () => void): Promise<boolean> => {
    mutate();
    const generation = ++desiredGeneration;
    await wf.condition(() => appliedGeneration >= generation || !state.ready || state.deleting);
    return appliedGeneration >= generation;
  };

  wf.setHandler(gatewayStateQuery, () => state);
  wf.setHandler(agentStartedSignal, () => void (probeRequested = true));
  wf.setHandler(
    bindEipUpdate,
    async ({ owner, address, prefixLength }: { owner: string } & EipAddress) => {
      if (!state.ready || state.deleting) throw notReady();
      if (await change(() => (state.eips[owner] = { address, prefixLength }))) return;
      // Nothing half-bound stays desired: the caller compensates by releasing the address.
      if (state.eips[owner]?.address === address) await change(() => delete state.eips[owner]);
      throw notReady();
    },
    {
      validator: ({ owner, address, prefixLength }: { owner: string } & EipAddress, fence?: Fence) => {
        checkFence(fence);
        parseIPv4(address, 'EIP address');
        if (!Number.isInteger(prefixLength) || prefixLength < 0 || prefixLength > 32) throw new Error(`bad prefix length ${prefixLength}`);
        const holder = Object.entries(state.eips).find(([o, e]) => o !== owner && e.address === address);
        if (holder) throw new Error(`${address} is already bound on ${spec.name} by ${holder[0]}`);
      },
    },
  );
  wf.setHandler(
    setRuleUpdate,
    async (rule: NatRule) => {
      if (!state.ready || state.deleting) throw notReady();
      if (await change(() => (state.rules[rule.owner] = rule))) return;
      throw notReady(); // the caller removes it again as part of its compensation
    },
    {
      validator: (rule: NatRule, fence?: Fence) =>
        domainCall(() => {
          checkFence(fence);
          validateNatRule(rule);
          const conflict = dnatConflict(state.rules, rule);
          if (conflict) throw new NatflowError(Reason.DuplicateDnat, conflict);
          const internal = rule.kind === 'snat' ? parseCidr(rule.internalCidr).first : parseIPv4(rule.internalIp);
          if (spec.internalCidr && !cidrContains(parseCidr(spec.internalCidr), internal)) {
            throw new NatflowError(Reason.InvalidSpec, `${rule.kind === 'snat' ? rule.internalCidr : rule.internalIp} is outside the VPC subnet ${spec.internalCidr} of gateway ${spec.name}`);
          }
        }),
    },
  );
  wf.setHandler(removeRuleUpdate, async ({ owner }) => {
    if (!(owner in state.rules) && !(owner in appliedRules)) return { applied: true };
    return { applied: await change(() => delete state.rules[owner]) };
  });
  wf.setHandler(unbindEipUpdate, async ({ owner }) => {
    if (!(owner in state.eips)) return { applied: true };
    // When the agent is down the removal is still recorded: the next agent restores without it.
    return { applied: await change(() => delete state.eips[owner]) };
  });

  const apply = async () => {
    const target = desiredGeneration;
    try {
      await agent.reconcileEipAddresses(Object.values(state.eips));
      const desired = { ...state.rules };
      if (fullRestore) {
        await agent.initNatChains();
        await agent.applyNatRules({ add: Object.values(desired), removeOwners: [], replaceAll: true });
        fullRestore = false;
      } else {
        const diff = ruleDiff(appliedRules, desired);
        if (diff.add.length + diff.removeOwners.length > 0) await agent.applyNatRules({ add: diff.add, removeOwners: diff.removeOwners });
        // Only once the rules are gone, or new packets would make new entries.
        if (diff.removed.length > 0) await agent.flushConntrack(diff.removed.map(conntrackTarget));
      }
      appliedRules = desired;
      appliedGeneration = target;
    } catch (err) {
      setReady(false, `applying desired state failed: ${(err as Error).message}`);
    }
  };

  const probe = async () => {
    try {
      const info = await agent.agentInfo();
      if (state.ready && info.instanceId === state.agent?.instanceId) return;
      // A new agent instance (or one coming back): restore everything before declaring ready.
      state.agent = info;
      state.ready = true; // so that apply's failure path can mark it unready again
      appliedGeneration = 0;
      fullRestore = true;
      await apply();
      if (!state.ready) return;
      failedProbes = 0;
      setReady(true, '');
      await wakeUps.notifyGatewayWaiters(spec.name);
    } catch (err) {
      failedProbes++;
      setReady(false, `agent on task queue ${gatewayTaskQueue(spec.name)} did not answer: ${(err as Error).message}`);
    }
  };

  try {
    for (;;) {
      const interval = state.ready ? PROBE_WHEN_READY : Math.min(1000 * 2 ** failedProbes, MAX_PROBE_BACKOFF_MS);
      const woken = await wf.condition(() => probeRequested || (state.ready && desiredGeneration > appliedGeneration), interval);
      if (!woken || probeRequested) {
        probeRequested = false;
        await probe();
      }
      if (state.ready && desiredGeneration > appliedGeneration) await apply();
      const info = wf.workflowInfo();
      if ((info.continueAsNewSuggested || info.historyLength >= (input.maxHistoryLength ?? 10_000)) && desiredGeneration === appliedGeneration && wf.allHandlersFinished()) {
        await wf.continueAsNew<typeof gatewayWorkflow>({ ...input, eips: state.eips, rules: state.rules });
      }
    }
  } catch (err) {
    if (!wf.isCancellation(err)) throw err;
    await wf.CancellationScope.nonCancellable(async () => {
      // Deleting the gateway: take its addresses off (best effort: an unreachable agent's pod is
      // going away with them) and tell every bound EIP, which then releases its address.
      state.deleting = true;
      setReady(false, 'gateway is being deleted');
      const owners = Object.keys(state.eips);
      state.eips = {};
      state.rules = {};
      if (state.agent) await apply();
      for (const owner of owners) {
        await wf.getExternalWorkflowHandle(owner).signal(gatewayChangedSignal).catch(() => undefined);
      }
    });
    throw err;
  }
}
