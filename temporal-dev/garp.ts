// The lab gateway's ARP announcer (worker/garp): built from its source by worker/garp/build.sh
// (`npm run setup` builds it first; here it is a no-op then) and given to the lab's agents.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { repoRoot } from './provision.js';

let built: string | undefined;

/** The announcer's path, built if missing. */
export function labGarp(): string {
  built ??= execFileSync('bash', [path.join(repoRoot(), 'worker', 'garp', 'build.sh')], { encoding: 'utf8' }).trim().split('\n').at(-1)!;
  return built;
}
