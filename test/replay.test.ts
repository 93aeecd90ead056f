// Determinism: every recorded history (test/histories) replays against the current workflow
// code, bundled exactly as the worker bundles it. No server is needed.
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { DeterminismViolationError } from '@temporalio/workflow';
import { Worker } from '@temporalio/worker';
import { workflowBundleOptions } from '../worker/control.js';
import { loadFixtures } from './replay/fixtures.js';

const fixtures = loadFixtures();

describe('replay of recorded histories', () => {
  it('has fixtures for every workflow type', () => {
    const types = new Set(fixtures.map((f) => f.meta.workflowType));
    for (const type of ['eipWorkflow', 'fipWorkflow', 'dnatWorkflow', 'snatWorkflow', 'eipWorkflowV2', 'eipWorkflowV3', 'eipWorkflowV4', 'fipWorkflowV2', 'dnatWorkflowV2', 'snatWorkflowV2', 'fipWorkflowV3', 'dnatWorkflowV3', 'snatWorkflowV3', 'fipWorkflowV4', 'dnatWorkflowV4', 'snatWorkflowV4', 'eipWorkflowV5', 'fipWorkflowV5', 'dnatWorkflowV5', 'snatWorkflowV5', 'eipWorkflowV6', 'fipWorkflowV6', 'dnatWorkflowV6', 'snatWorkflowV6', 'gatewayWorkflow', 'ipamWorkflow']) expect(types).toContain(type);
  });

  it('replays every fixture against the current code', async () => {
    const failures: string[] = [];
    let replayed = 0;
    const histories = fixtures.map((f) => ({ workflowId: f.file, history: f.history }));
    for await (const result of Worker.runReplayHistories(workflowBundleOptions, histories)) {
      replayed++;
      if (result.error) failures.push(`${result.workflowId}: ${result.error.name}: ${result.error.message}`);
    }
    expect(failures).toEqual([]);
    expect(replayed).toBe(fixtures.length);
  });

  it('bites: a workflow whose activity order changed fails replay with a determinism error', async () => {
    const eipFixture = fixtures.find((f) => f.meta.scenario === 'eip-happy' && f.meta.codeVersion === 'bde8d8b')!;
    const variant = fileURLToPath(new URL('./replay/incompatible-workflows.ts', import.meta.url));
    const replay = Worker.runReplayHistory({ workflowsPath: variant }, eipFixture.history);
    const error = await replay.then(() => null, (err: unknown) => err);
    expect(error).toBeInstanceOf(DeterminismViolationError);
    // It fails where the order changed: the first activity scheduled is no longer the readiness check.
    expect((error as Error).message).toMatch(/'gatewayReadiness' does not match .* 'allocateAddress'/);
  });
});
