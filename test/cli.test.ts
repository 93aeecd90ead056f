// The command-line tool as a script would use it (--json), against a real dev server and a
// control worker on the default queue. No gateway exists, so EIPs wait; that is enough to
// drive every command.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { workflowIds } from '../domain/names.js';
import { allocateUpdate } from '../domain/workflow-api.js';
import { buildCli } from '../starter/cli.js';
import { cliUid, createResource, deleteResource, findRunning } from '../starter/resources.js';
import { createControlWorker, type ControlWorker } from '../worker/control.js';
import { createTestEnv } from './support/temporal-env.js';
import { workflowBundle } from './support/workflows.js';

describe('natflow CLI', () => {
  let env: TestWorkflowEnvironment;
  let worker: ControlWorker;
  let running: Promise<void>;
  beforeAll(async () => {
    env = await createTestEnv();
    worker = await createControlWorker({ connection: env.nativeConnection, client: env.client, workflowBundle: await workflowBundle() });
    running = worker.run();
  });
  afterAll(async () => {
    worker?.shutdown();
    await running;
    await env?.teardown();
  });

  /** Runs one command line; its printed JSON, or the error it ended with. */
  async function natflow(...args: string[]): Promise<any> {
    const printed: string[] = [];
    const { program, close } = buildCli((text) => printed.push(text));
    try {
      await program.parseAsync(['node', 'natflow', '--address', env.address, '--json', ...args]);
      return JSON.parse(printed.join('\n'));
    } finally {
      await close();
    }
  }

  it('creates a subnet, an EIP (which waits for its gateway), lists, shows and deletes it', async () => {
    const subnet = await natflow('subnet', 'create', 'ext-cli', '--cidr', '172.20.0.0/24', '--gateway', '172.20.0.1', '--exclude', '172.20.0.250..172.20.0.254');
    expect(subnet.ui).toBe('http://127.0.0.1:8233/namespaces/default/workflows/natflow%2Fipam%2Fext-cli');

    const created = await natflow('eip', 'create', 'e1', '--gateway', 'no-gw', '--subnet', 'ext-cli', '--wait');
    expect(created).toMatchObject({ kind: 'eip', name: 'e1', status: { phase: 'WaitingForGateway', ip: '' } });
    expect(created.workflowId).toBe(`natflow/eip/e1/${created.uid}`);

    expect((await natflow('eip', 'list')).map((s: { name: string }) => s.name)).toEqual(['e1']);
    const got = await natflow('eip', 'get', 'e1');
    expect(got.conditions[0]).toMatchObject({ reason: 'GatewayNotFound', message: 'NAT gateway no-gw does not exist' });
    expect((await natflow('ui', 'eip', 'e1')).ui).toBe(`http://127.0.0.1:8233/namespaces/default/workflows/${encodeURIComponent(created.workflowId)}`);
    expect((await natflow('subnet', 'show', 'ext-cli')).usage).toMatchObject({ v4usingIPs: 0, v4availableIPs: 248 });

    expect(await natflow('eip', 'delete', 'e1')).toMatchObject({ name: 'e1', deleted: true });
    expect(await natflow('eip', 'list')).toEqual([]);
  });

  it('audit: exit 0 when clean, 1 with findings (JSON names them), 0 again after --fix; 2 when something cannot be checked or the audit cannot run', async () => {
    const audit = async (...args: string[]) => {
      process.exitCode = undefined;
      const report = await natflow('audit', '--grace', '0.5', ...args);
      const code = process.exitCode;
      process.exitCode = undefined;
      return { report, code };
    };
    await natflow('subnet', 'create', 'ext-audit', '--cidr', '172.22.0.0/24', '--gateway', '172.22.0.1');
    expect(await audit()).toMatchObject({ code: 0, report: { findings: [], unchecked: [] } });

    // An allocation whose EIP is gone (Kube-OVN's seed leak).
    await env.client.workflow.getHandle(workflowIds.ipam('ext-audit')).executeUpdate(allocateUpdate, { args: [{ owner: 'natflow/eip/gone/0', requested: '172.22.0.9' }] });
    const leaking = await audit();
    expect(leaking.code).toBe(1);
    expect(leaking.report.findings).toEqual([expect.objectContaining({ kind: 'orphaned-allocation', resource: 'subnet ext-audit address 172.22.0.9', repair: { releaseAllocation: { subnet: 'ext-audit', owner: 'natflow/eip/gone/0' } } })]);
    expect(leaking.report.ui).toContain('natflow%2Faudit%2Fmanual-');
    const fixed = await audit('--fix');
    expect(fixed).toMatchObject({ code: 0, report: { findings: [], repairs: [{ result: 'applied', detail: 'released 172.22.0.9' }] } });

    // A gateway whose agent never answers cannot be checked.
    await natflow('gateway', 'create', 'gw-no-agent');
    const unchecked = await audit();
    expect(unchecked.code).toBe(2);
    expect(unchecked.report.unchecked).toEqual([expect.objectContaining({ what: 'gateway gw-no-agent' })]);
    // No control worker on that queue: the audit never runs.
    const nobody = await audit('--task-queue', 'no-such-queue', '--timeout', '2');
    expect(nobody.code).toBe(2);
    expect(nobody.report.error).toBeTruthy();
  });

  it('refuses bad input with a clear error and creates nothing', async () => {
    await expect(natflow('eip', 'create', 'bad', '--gateway', 'gw1', '--v4ip', '10.0.0.999')).rejects.toThrow(/spec.v4ip "10.0.0.999" is not an IPv4 address/);
    await expect(natflow('dnat', 'create', 'd1', '--eip', 'e1', '--protocol', 'tcp')).rejects.toThrow(/required option '--external-port <port>' not specified/);
    await expect(natflow('subnet', 'create', 'bad-subnet', '--cidr', '172.21.0.0/24', '--gateway', '10.0.0.1')).rejects.toThrow(/gateway 10.0.0.1 is outside cidrBlock/);
    await expect(natflow('ui', 'route', 'x')).rejects.toThrow(/unknown kind "route"/);
    expect(await natflow('eip', 'list')).toEqual([]);
  });

  it('a name is one resource at a time: of creates racing for it one starts, and it is free again once deleted', async () => {
    const r = { client: env.client };
    const spec = { natGwDp: 'no-gw', externalSubnet: 'ext-cli' };
    // Its uid (its rules' owner on a gateway) is one per kind and name.
    expect(new Set(['eip', 'fip', 'dnat', 'snat'].flatMap((kind) => ['a', 'b'].map((name) => cliUid(kind as 'eip', name)))).size).toBe(8);
    const raced = await Promise.allSettled(Array.from({ length: 5 }, () => createResource(r, 'eip', 'e-raced', spec)));
    expect(raced.filter((o) => o.status === 'fulfilled')).toHaveLength(1);
    for (const o of raced) if (o.status === 'rejected') expect(String(o.reason)).toMatch(/eip e-raced already exists/);
    expect((await findRunning(r, 'eip', { name: 'e-raced' })).length).toBe(1);
    await deleteResource(r, 'eip', 'e-raced');
    await createResource(r, 'eip', 'e-raced', spec);
    await deleteResource(r, 'eip', 'e-raced');

    // The command also refuses a name that a workflow of another uid (an object's) has.
    await createResource(r, 'eip', 'e-object', spec, 'uid-of-an-object');
    await expect(natflow('eip', 'create', 'e-object', '--gateway', 'no-gw', '--subnet', 'ext-cli')).rejects.toThrow(/eip e-object already exists/);
    await deleteResource(r, 'eip', 'e-object');
    expect(await natflow('eip', 'list')).toEqual([]);
  });

  it('a lookup by name finds the running resource of its kind, not another kind of the same name', async () => {
    const r = { client: env.client };
    const eip = await createResource(r, 'eip', 'shared', { natGwDp: 'no-gw', externalSubnet: 'ext-cli' });
    const fip = await createResource(r, 'fip', 'shared', { eip: 'shared', internalIp: '10.0.0.5' });
    // Visibility follows starts and ends a moment later.
    const found = (kind: 'eip' | 'fip' | 'dnat') => expect.poll(async () => (await findRunning(r, kind, { name: 'shared' })).map((w) => w.workflowId), { timeout: 10_000 });
    await found('fip').toEqual([fip.workflowId]);
    await found('eip').toEqual([eip.workflowId]);
    expect(await findRunning(r, 'dnat', { name: 'shared' })).toEqual([]);
    await deleteResource(r, 'fip', 'shared');
    await deleteResource(r, 'eip', 'shared');
    await found('eip').toEqual([]);
  });
});
