// End to end: convergence without fixed waits. Whatever waits on another resource is woken by
// that resource's change (the timers behind the wake-ups are an hour long), and a bad spec is
// refused before anything is taken, with a message that names the object.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Reason } from '../domain/errors.js';
import { DEFAULT_EXTERNAL_SUBNET } from '../domain/subnet.js';
import { createResource, deleteResource, resourceStatus } from '../starter/resources.js';
import { startStack, type Stack } from './support/stack.js';
import { eventually, resourcePhase } from './support/workflows.js';

const GW = 't-converge';

describe('convergence by wake-ups (end to end)', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack(DEFAULT_EXTERNAL_SUBNET);
    await stack.addGateway(GW);
  });
  afterAll(async () => {
    await stack?.teardown();
  });
  const r = () => stack.resources;

  it('a FIP refused because its EIP was taken is Ready within seconds of the other FIP giving it up', async () => {
    await createResource(r(), 'eip', 'eip-shared', { natGwDp: GW });
    const { ip } = await resourcePhase(r(), 'eip', 'eip-shared', 'Ready');
    await createResource(r(), 'fip', 'fip-first', { eip: 'eip-shared', internalIp: '10.0.1.10' });
    await resourcePhase(r(), 'fip', 'fip-first', 'Ready');
    await createResource(r(), 'fip', 'fip-second', { eip: 'eip-shared', internalIp: '10.0.1.11' });
    const refused = await resourcePhase(r(), 'fip', 'fip-second', 'Failed');
    expect(refused.conditions.find((c) => c.type === 'Ready')?.reason).toBe(Reason.EipInUse);
    // While the other FIP keeps the EIP, the refused one waits quietly: no retry loop.
    const second = (await resourceStatus(r(), 'fip', 'fip-second')).workflowId;
    const historyLength = async () => (await stack.env.client.workflow.getHandle(second).describe()).historyLength;
    // Its last steps (asking the EIP to wake it, its re-check timer) land first; then nothing more.
    const settled = async () => {
      const before = await historyLength();
      await new Promise((resolve) => setTimeout(resolve, 2000));
      return { before, after: await historyLength() };
    };
    const { after: quiet } = await eventually(settled, (h) => h.before === h.after, 30_000, 'its history settled');
    await new Promise((resolve) => setTimeout(resolve, 5000));
    expect(await historyLength()).toBe(quiet);

    await deleteResource(r(), 'fip', 'fip-first');
    // Its next timed re-check is an hour away: only the EIP's wake-up can make this.
    const ready = await resourcePhase(r(), 'fip', 'fip-second', 'Ready', 60_000);
    expect(ready).toMatchObject({ v4ip: ip, internalIp: '10.0.1.11' });
    const uid = (await resourceStatus(r(), 'fip', 'fip-second')).workflowId.split('/')[3];
    expect((await stack.natRules(GW)).map((rule) => rule.owner)).toEqual([uid, uid]);
    await deleteResource(r(), 'fip', 'fip-second');
    await deleteResource(r(), 'eip', 'eip-shared');
  });

  it('the wake-up is not lost when the EIP continues as new in the same task that sends it', async () => {
    // The giving-up is the update that spends the EIP's budget: the signal to the waiting FIP and
    // the continue-as-new leave in one workflow task. The server drops a signal whose sender has
    // closed by the time it is sent, so the EIP must see it delivered before it hands over.
    await createResource({ ...r(), historyLimits: { updates: 2 } }, 'eip', 'eip-handover', { natGwDp: GW });
    await resourcePhase(r(), 'eip', 'eip-handover', 'Ready');
    await createResource(r(), 'fip', 'fip-leaving', { eip: 'eip-handover', internalIp: '10.0.1.10' });
    await resourcePhase(r(), 'fip', 'fip-leaving', 'Ready');
    await createResource(r(), 'fip', 'fip-waiting', { eip: 'eip-handover', internalIp: '10.0.1.11' });
    await resourcePhase(r(), 'fip', 'fip-waiting', 'Failed');
    const eip = await resourceStatus(r(), 'eip', 'eip-handover');
    const runsBefore = (await stack.env.client.workflow.count(`WorkflowId = "${eip.workflowId}"`)).count;

    await deleteResource(r(), 'fip', 'fip-leaving');
    await resourcePhase(r(), 'fip', 'fip-waiting', 'Ready', 60_000);
    expect((await stack.env.client.workflow.count(`WorkflowId = "${eip.workflowId}"`)).count).toBeGreaterThan(runsBefore); // it did continue as new
    await deleteResource(r(), 'fip', 'fip-waiting');
    await deleteResource(r(), 'eip', 'eip-handover');
  });

  it('rules created before their EIPs: each is Ready once its own EIP is, and no other EIP wakes it', async () => {
    await createResource(r(), 'fip', 'fip-early', { eip: 'eip-late', internalIp: '10.0.1.10' });
    await createResource(r(), 'fip', 'fip-other', { eip: 'eip-never', internalIp: '10.0.1.11' });
    await resourcePhase(r(), 'fip', 'fip-early', 'WaitingForEip');
    await resourcePhase(r(), 'fip', 'fip-other', 'WaitingForEip');
    await createResource(r(), 'eip', 'eip-late', { natGwDp: GW });
    await resourcePhase(r(), 'eip', 'eip-late', 'Ready');
    await resourcePhase(r(), 'fip', 'fip-early', 'Ready', 60_000);
    // The rule waiting for another EIP got no wake-up: a ready EIP signals only the rules naming it.
    const other = await resourceStatus(r(), 'fip', 'fip-other');
    const signals = ((await stack.env.client.workflow.getHandle(other.workflowId).fetchHistory()).events ?? []).flatMap((e) => e.workflowExecutionSignaledEventAttributes?.signalName ?? []);
    expect(signals).not.toContain('eipChanged');
    await deleteResource(r(), 'fip', 'fip-early');
    await deleteResource(r(), 'fip', 'fip-other');
    await deleteResource(r(), 'eip', 'eip-late');
  });

  it('two rules the gateway refuses on one EIP do not wake each other in a loop', async () => {
    // Each refused rule gives its claim back, which is a change of the EIP for the other one.
    await createResource(r(), 'eip', 'eip-refusals', { natGwDp: GW });
    await resourcePhase(r(), 'eip', 'eip-refusals', 'Ready');
    for (const name of ['dnat-out-a', 'dnat-out-b']) {
      await createResource(r(), 'dnat', name, { eip: 'eip-refusals', protocol: 'tcp', externalPort: name.endsWith('a') ? '81' : '82', internalIp: '192.168.9.9', internalPort: '80' });
    }
    const failed = await Promise.all(['dnat-out-a', 'dnat-out-b'].map((name) => resourcePhase(r(), 'dnat', name, 'Failed')));
    expect(failed.map((s) => s.conditions.find((c) => c.type === 'Ready')?.message)).toEqual([expect.stringContaining('outside the VPC subnet'), expect.stringContaining('outside the VPC subnet')]);
    const eipId = (await resourceStatus(r(), 'eip', 'eip-refusals')).workflowId;
    const claims = async () => ((await stack.env.client.workflow.getHandle(eipId).fetchHistory()).events ?? []).filter((e) => e.workflowExecutionUpdateAcceptedEventAttributes?.acceptedRequest?.input?.name === 'claim').length;
    const before = await claims();
    await new Promise((resolve) => setTimeout(resolve, 15_000));
    // A loop claims several times a second (hundreds here); backing off from 1 s, doubling, each rule tries at most 5 times in 15 s.
    expect((await claims()) - before).toBeLessThanOrEqual(10);
    for (const name of ['dnat-out-a', 'dnat-out-b']) await deleteResource(r(), 'dnat', name);
    await deleteResource(r(), 'eip', 'eip-refusals');
  });

  it('a rule that began to wait for an EIP during its delete learns within seconds that it is gone', async () => {
    // The EIP's delete waits for its user; meanwhile a second rule names it and waits for it.
    await createResource(r(), 'eip', 'eip-doomed', { natGwDp: GW });
    await resourcePhase(r(), 'eip', 'eip-doomed', 'Ready');
    await createResource(r(), 'fip', 'fip-user', { eip: 'eip-doomed', internalIp: '10.0.1.10' });
    await resourcePhase(r(), 'fip', 'fip-user', 'Ready');
    await deleteResource(r(), 'eip', 'eip-doomed', false);
    await resourcePhase(r(), 'eip', 'eip-doomed', 'Deleting');
    await createResource(r(), 'fip', 'fip-late', { eip: 'eip-doomed', internalIp: '10.0.1.11' });
    const waiting = await resourcePhase(r(), 'fip', 'fip-late', 'WaitingForEip');
    expect(waiting.conditions.find((c) => c.type === 'Ready')?.reason).toBe(Reason.EipNotReady);
    await deleteResource(r(), 'fip', 'fip-user'); // the EIP's delete goes on and ends
    // Not the hour-long re-check: the EIP wakes who watched it during its delete once it is gone.
    const gone = await eventually(() => resourceStatus(r(), 'fip', 'fip-late'), (s) => s.conditions.find((c) => c.type === 'Ready')?.reason === Reason.EipNotFound, 60_000, 'the rule sees its EIP gone');
    expect(gone.phase).toBe('WaitingForEip');
    await deleteResource(r(), 'fip', 'fip-late');
  });

  it('an invalid rule is refused before it claims anything, and its message names it', async () => {
    await createResource(r(), 'eip', 'eip-valid', { natGwDp: GW });
    await resourcePhase(r(), 'eip', 'eip-valid', 'Ready');
    await createResource(r(), 'dnat', 'dnat-web', { eip: 'eip-valid', protocol: 'sctp', externalPort: '8080', internalIp: '10.0.1.10', internalPort: '80' });
    const invalid = await resourcePhase(r(), 'dnat', 'dnat-web', 'Invalid');
    expect(invalid.conditions.find((c) => c.type === 'Ready')?.message).toBe('dnat dnat-web: spec.protocol "sctp" must be tcp or udp');
    // Nothing was claimed: the EIP has no users.
    expect((await resourceStatus(r(), 'eip', 'eip-valid')).nat).toBe('');
    await deleteResource(r(), 'dnat', 'dnat-web');
    await deleteResource(r(), 'eip', 'eip-valid');
  });
});
