// The command runner every agent activity goes through: a command that hangs is killed at its
// deadline and fails with its name, so it cannot hold the agent's serialized applies.
import { describe, expect, it } from 'vitest';
import { runCommand } from '../activities/exec.js';

describe('runCommand', () => {
  it('kills a command that outlives its deadline and names it', async () => {
    const started = Date.now();
    await expect(runCommand('sleep', ['30'], { timeoutMs: 300 })).rejects.toThrow(/^sleep 30 did not finish within 0.3 s and was killed/);
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('leaves a command that ends in time alone', async () => {
    await expect(runCommand('sh', ['-c', 'sleep 0.2; echo done'], { timeoutMs: 5_000 })).resolves.toMatchObject({ stdout: 'done\n', code: 0 });
  });
});
