import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { findOrProvisionTemporalCli, temporalCliVersion } from '../temporal-dev/provision.js';

describe('findOrProvisionTemporalCli', () => {
  const saved = process.env.TEMPORAL_CLI;
  let realCli: string;
  let scratch: string;

  beforeAll(async () => {
    delete process.env.TEMPORAL_CLI;
    realCli = await findOrProvisionTemporalCli(); // may provision into .tools/ on a fresh checkout
    scratch = await mkdtemp(path.join(tmpdir(), 'natflow-provision-test-'));
  }, 15 * 60_000);

  afterEach(() => {
    if (saved === undefined) delete process.env.TEMPORAL_CLI;
    else process.env.TEMPORAL_CLI = saved;
  });

  afterAll(async () => {
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  test('TEMPORAL_CLI pointing at a missing file is a clear error', async () => {
    const missing = path.join(scratch, 'no-such-temporal');
    process.env.TEMPORAL_CLI = missing;
    await expect(findOrProvisionTemporalCli()).rejects.toThrow(
      `TEMPORAL_CLI is set to "${missing}", but no file exists at ${missing}`,
    );
  });

  test('TEMPORAL_CLI pointing at something that does not run is a clear error', async () => {
    const bogus = path.join(scratch, 'bogus-temporal');
    await writeFile(bogus, '#!/bin/sh\nexit 3\n', { mode: 0o755 });
    process.env.TEMPORAL_CLI = bogus;
    await expect(findOrProvisionTemporalCli()).rejects.toThrow(/TEMPORAL_CLI is set to .*--version` failed/);
  });

  test('TEMPORAL_CLI pointing at the real binary returns that path', { timeout: 30_000 }, async () => {
    process.env.TEMPORAL_CLI = realCli;
    expect(await findOrProvisionTemporalCli()).toBe(realCli);
    expect(path.isAbsolute(realCli)).toBe(true);
    expect(await temporalCliVersion(realCli)).toMatch(/^temporal version \d+\.\d+\.\d+/);
  });
});
