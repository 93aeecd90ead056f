// Recorded workflow histories (test/histories/*.json): each is the history of one workflow run
// as the SDK's historyToJSON writes it, with where it came from.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { historyFromJSON, historyToJSON, type History } from '@temporalio/common/lib/proto-utils.js';

export const HISTORIES_DIR = fileURLToPath(new URL('../histories/', import.meta.url));

export interface FixtureMeta {
  scenario: string;
  workflowType: string;
  workflowId: string;
  /** The code it was recorded from: the commit, and whether the tree had changes on top. */
  codeVersion: string;
  recordedAt: string;
  howMade: string;
}

export interface Fixture {
  file: string;
  meta: FixtureMeta;
  history: History;
}

export function codeVersion(): string {
  const git = (...args: string[]) => execFileSync('git', args, { encoding: 'utf8' }).trim();
  return `${git('rev-parse', '--short', 'HEAD')}${git('status', '--porcelain', '--', 'workflows', 'domain').length > 0 ? '+changes' : ''}`;
}

export function saveFixture(meta: FixtureMeta, history: History): string {
  // The code version is part of the name: a new recording never replaces an older one.
  const file = path.join(HISTORIES_DIR, `${meta.scenario}--${meta.workflowType}--${meta.codeVersion}.json`);
  writeFileSync(file, `${JSON.stringify({ natflow: meta, history: JSON.parse(historyToJSON(history)) }, null, 1)}\n`);
  return file;
}

export function loadFixtures(): Fixture[] {
  return readdirSync(HISTORIES_DIR)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((file) => {
      const { natflow, history } = JSON.parse(readFileSync(path.join(HISTORIES_DIR, file), 'utf8'));
      return { file, meta: natflow as FixtureMeta, history: historyFromJSON(history) };
    });
}
