// Runs external commands (ip, iptables-restore, conntrack, ...) and collects their output.
// Always an argument array through spawn, never a shell: addresses and names that reach these
// commands come from user resources, so nothing here may be interpreted by a shell.
import { spawn } from 'node:child_process';

export interface RunOptions {
  /** Run inside this network namespace (`ip netns exec <netns> ...`). */
  netns?: string;
  /** Written to stdin, which is then closed (e.g. for `iptables-restore --noflush`). */
  input?: string;
  /** Exit codes accepted besides 0 (e.g. 1 for `conntrack -D` when nothing matched). */
  allowExitCodes?: number[];
  /** Killed (and the run rejected) after this long; COMMAND_TIMEOUT_MS by default. */
  timeoutMs?: number;
}

/**
 * Every command's deadline. A command that hangs (a stuck netlink dump, a lock never released)
 * must fail the activity with its name rather than hold the agent's serialized applies until
 * the activity times out, and every apply after it; the agent's activities have 30 s.
 */
export const COMMAND_TIMEOUT_MS = 20_000;

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number;
}

/**
 * How the gateway agent's activities run commands, so that tests can answer them instead
 * (test/support/fake-commands.ts). Resolves when the command exits with 0 or an allowed code,
 * rejects otherwise (see `checkExit`).
 */
export interface CommandRunner {
  run(cmd: string, args: string[], opts?: RunOptions): Promise<RunResult>;
}

export function runCommand(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const argv = fullArgv(cmd, args, opts);

  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: 'pipe' });
    let stdout = '';
    let stderr = '';
    const timeoutMs = opts.timeoutMs ?? COMMAND_TIMEOUT_MS;
    let timedOut = false;
    const deadline = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));

    // 'error' covers a missing binary (ENOENT); 'close' then may not follow.
    child.on('error', (err) => {
      clearTimeout(deadline);
      reject(new Error(`${commandLine(cmd, args, opts)}: ${err.message}`, { cause: err }));
    });
    child.on('close', (code, signal) => {
      clearTimeout(deadline);
      if (timedOut) reject(new Error(`${commandLine(cmd, args, opts)} did not finish within ${timeoutMs / 1000} s and was killed${detail(stderr)}`));
      else if (code === null) reject(new Error(`${commandLine(cmd, args, opts)} was killed by ${signal}${detail(stderr)}`));
      else {
        try {
          resolve(checkExit(cmd, args, opts, { stdout, stderr, code }));
        } catch (err) {
          reject(err as Error);
        }
      }
    });

    // stdin is always closed (empty without input) so a command that reads it never hangs.
    // A command that exits before reading all its input gives EPIPE here; its exit code
    // (reported by 'close') is the meaningful error, so this one is ignored.
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? '');
  });
}

/** The real runner: one process per command. */
export const spawnRunner: CommandRunner = { run: runCommand };

/**
 * A command's result when its exit code is allowed, else the error every runner rejects with
 * (`<command line> exited with code N: <stderr>`, which callers parse, e.g. iptables-restore's line).
 */
export function checkExit(cmd: string, args: string[], opts: RunOptions, result: RunResult): RunResult {
  if (result.code === 0 || opts.allowExitCodes?.includes(result.code)) return result;
  throw new Error(`${commandLine(cmd, args, opts)} exited with code ${result.code}${detail(result.stderr)}`);
}

function fullArgv(cmd: string, args: string[], opts: RunOptions): string[] {
  return opts.netns ? ['ip', 'netns', 'exec', opts.netns, cmd, ...args] : [cmd, ...args];
}

function commandLine(cmd: string, args: string[], opts: RunOptions): string {
  return fullArgv(cmd, args, opts).map(quoteForDisplay).join(' ');
}

function detail(stderr: string): string {
  const trimmed = stderr.trim();
  return trimmed ? `: ${trimmed}` : '';
}

function quoteForDisplay(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : JSON.stringify(arg);
}
