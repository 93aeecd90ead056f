// The domain modules the workflow bundle shares between workflows (worker/control.ts,
// SHARED_DOMAIN_MODULES): evaluated once per worker thread, so they must hold no state of their
// own and must not reach the workflow API, whose module state is each workflow's.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { SHARED_DOMAIN_MODULES } from '../worker/control.js';

const domain = path.join(import.meta.dirname, '..', 'domain');
const source = (name: string) => readFileSync(path.join(domain, `${name}.ts`), 'utf8');

/** The modules a module imports at run time (type-only imports are erased), by specifier. */
function runtimeImports(text: string): string[] {
  return [...text.matchAll(/^import\s+(?!type\b)[^;]*?from\s+'([^']+)'/gms)].map((m) => m[1]!);
}

describe('the shared domain modules', () => {
  it('import only each other and libraries, never the workflow API', () => {
    for (const name of SHARED_DOMAIN_MODULES) {
      for (const spec of runtimeImports(source(name))) {
        expect(spec, `${name}.ts imports ${spec}`).not.toMatch(/^@temporalio\/workflow/);
        if (spec.startsWith('.')) expect(SHARED_DOMAIN_MODULES, `${name}.ts imports ${spec}`).toContain(path.basename(spec, '.js'));
      }
    }
  });

  it('hold no module state: nothing assignable at their top level', () => {
    for (const name of SHARED_DOMAIN_MODULES) expect(source(name), `${name}.ts`).not.toMatch(/^(export\s+)?(let|var)\s/m);
  });
});
