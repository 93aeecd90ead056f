// Runs one external command (ip, iptables-restore, conntrack, ...) and collects its output.
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
}

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number;
}

export function runCommand(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const argv = opts.netns ? ['ip', 'netns', 'exec', opts.netns, cmd, ...args] : [cmd, ...args];
  const commandLine = argv.map(quoteForDisplay).join(' ');
  const allowed = new Set([0, ...(opts.allowExitCodes ?? [])]);

  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: 'pipe' });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));

    // 'error' covers a missing binary (ENOENT); 'close' then may not follow.
    child.on('error', (err) => reject(new Error(`${commandLine}: ${err.message}`, { cause: err })));
    child.on('close', (code, signal) => {
      if (code === null) {
        reject(new Error(`${commandLine} was killed by ${signal}${detail(stderr)}`));
      } else if (!allowed.has(code)) {
        reject(new Error(`${commandLine} exited with code ${code}${detail(stderr)}`));
      } else {
        resolve({ stdout, stderr, code });
      }
    });

    // stdin is always closed (empty without input) so a command that reads it never hangs.
    // A command that exits before reading all its input gives EPIPE here; its exit code
    // (reported by 'close') is the meaningful error, so this one is ignored.
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? '');
  });
}

function detail(stderr: string): string {
  const trimmed = stderr.trim();
  return trimmed ? `: ${trimmed}` : '';
}

function quoteForDisplay(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : JSON.stringify(arg);
}
