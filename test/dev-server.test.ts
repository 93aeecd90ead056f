import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startDevServer } from '../temporal-dev/dev-server.js';
import { findOrProvisionTemporalCli } from '../temporal-dev/provision.js';
import { VISIBILITY_INDEXES_KEPT, visibilityIndexes } from '../temporal-dev/visibility-indexes.js';
import { NATFLOW_SEARCH_ATTRIBUTE_KEYS } from '../domain/search-attributes.js';

const NAMES = NATFLOW_SEARCH_ATTRIBUTE_KEYS.map((k) => k.name);
import { createTestEnv } from './support/temporal-env.js';
import { eventually } from './support/workflows.js';

// Provisioning may have to install the CLI on a fresh checkout; do it once, up front.
beforeAll(async () => {
  await findOrProvisionTemporalCli();
}, 15 * 60_000);

describe('createTestEnv', () => {
  let env: TestWorkflowEnvironment | undefined;

  beforeAll(async () => {
    env = await createTestEnv();
  }, 60_000);

  afterAll(async () => {
    await env?.teardown();
  }, 30_000);

  test('registers every natflow search attribute as Keyword', async () => {
    const { customAttributes } = await env!.connection.operatorService.listSearchAttributes({ namespace: 'default' });
    for (const name of NAMES) {
      // INDEXED_VALUE_TYPE_KEYWORD = 2
      expect(customAttributes?.[name], name).toBe(2);
    }
  });
});

describe('startDevServer', () => {
  let scratch: string;

  beforeAll(async () => {
    scratch = await mkdtemp(path.join(tmpdir(), 'natflow-dev-server-test-'));
  });

  afterAll(async () => {
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  test('serves gRPC + UI on the given ports and persists across a restart', { timeout: 120_000 }, async () => {
    const opts = { port: 17233, uiPort: 18233, dbFile: path.join(scratch, 'db', 'temporal.sqlite') };

    const first = await startDevServer(opts);
    try {
      expect(first.address).toBe('127.0.0.1:17233');
      expect(first.uiUrl).toBe('http://127.0.0.1:18233');
      const res = await fetch(first.uiUrl);
      expect(res.status).toBe(200);
      await res.body?.cancel();
    } finally {
      await first.stop();
    }

    const second = await startDevServer(opts);
    try {
      const connection = await Connection.connect({ address: second.address });
      try {
        const ns = await connection.workflowService.describeNamespace({ namespace: 'default' });
        expect(ns.namespaceInfo?.name).toBe('default');
        const { customAttributes } = await connection.operatorService.listSearchAttributes({ namespace: 'default' });
        expect(Object.keys(customAttributes ?? {})).toEqual(expect.arrayContaining(NAMES));
      } finally {
        await connection.close();
      }
    } finally {
      await second.stop();
    }
  });

  test('keeps only the visibility indexes natflow lists by, at every start; a list on another column still answers', { timeout: 120_000 }, async () => {
    const opts = { port: 17253, uiPort: 18253, dbFile: path.join(scratch, 'indexes', 'temporal.sqlite') };
    for (const start of ['first', 'restart']) {
      const server = await startDevServer(opts);
      try {
        expect((await visibilityIndexes(opts.dbFile)).sort(), start).toEqual([...VISIBILITY_INDEXES_KEPT].sort());
        // RootWorkflowId's index is dropped: a list on it walks the table, and finds the row.
        const connection = await Connection.connect({ address: server.address });
        try {
          const workflowId = `index-check-${start}`;
          const handle = await new Client({ connection }).workflow.start('nothingRunsIt', { taskQueue: 'nobody-polls', workflowId });
          const byRoot = () => connection.workflowService.countWorkflowExecutions({ namespace: 'default', query: `RootWorkflowId = ${JSON.stringify(workflowId)}` });
          await eventually(async () => Number((await byRoot()).count), (n) => n === 1, 10_000, 'the workflow listed by RootWorkflowId');
          await handle.terminate();
        } finally {
          await connection.close();
        }
      } finally {
        await server.stop();
      }
    }
  });

  test('does not outlive a kill -9 of the process that started it, and keeps what it committed', { timeout: 120_000 }, async () => {
    const opts = { port: 17243, uiPort: 18243, dbFile: path.join(scratch, 'killed', 'temporal.sqlite') };
    const script = `import { startDevServer } from './temporal-dev/dev-server.ts';
      const server = await startDevServer(${JSON.stringify(opts)});
      console.log('READY ' + server.address);
      setInterval(() => {}, 60_000);`;
    const parent = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    parent.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
    while (!out.includes('READY')) {
      if (parent.exitCode !== null) throw new Error(`the starting process exited: ${out}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const connection = await Connection.connect({ address: '127.0.0.1:17243' });
    await connection.workflowService.updateNamespace({ namespace: 'default', updateInfo: { description: 'written before the kill' } });
    await connection.close();

    parent.kill('SIGKILL');
    await once(parent, 'exit');
    // The server saw its parent die and stopped: its port is free (a server still there would be reused by the next start).
    const answers = () => new Promise<boolean>((resolve) => {
      const socket = connect({ host: '127.0.0.1', port: 17243 }).once('connect', () => resolve(true)).once('error', () => resolve(false));
      socket.unref();
      setTimeout(() => socket.destroy(), 1000);
    });
    const deadline = Date.now() + 15_000;
    while ((await answers()) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 250));
    expect(await answers()).toBe(false);
    const next = await startDevServer(opts);
    try {
      const reconnected = await Connection.connect({ address: next.address });
      const ns = await reconnected.workflowService.describeNamespace({ namespace: 'default' });
      expect(ns.namespaceInfo?.description).toBe('written before the kill');
      await reconnected.close();
    } finally {
      await next.stop();
    }
  });
});
