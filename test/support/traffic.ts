// Real traffic between lab namespaces with OpenBSD netcat: listeners that record what they
// receive and from whom, one-shot sends, and long-lived sessions. Every process is bounded by
// a timeout and killed on close, so nothing outlives a test.
import { spawn, type ChildProcess } from 'node:child_process';
import { runCommand } from '../../activities/exec.js';

const inNs = (netns: string, args: string[]) => spawn('ip', ['netns', 'exec', netns, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class Listener {
  received = '';
  /** Source addresses of accepted connections (nc -v prints "Connection received on <ip> <port>"). */
  peers: string[] = [];
  private constructor(private readonly child: ChildProcess) {
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (this.received += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      for (const m of d.matchAll(/Connection received on (\S+)/g)) this.peers.push(m[1]!);
    });
  }

  /** Listens on `port` in `netns`; TCP keeps accepting connections, UDP takes one peer. */
  static async open(netns: string, port: number, protocol: 'tcp' | 'udp' = 'tcp'): Promise<Listener> {
    const args = protocol === 'tcp' ? ['nc', '-l', '-k', '-v', '-n', String(port)] : ['nc', '-l', '-u', '-v', '-n', String(port)];
    const listener = new Listener(inNs(netns, args));
    await sleep(150); // let nc bind before anyone connects
    return listener;
  }

  async waitFor(text: string, timeoutMs = 3000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.received.includes(text)) return true;
      await sleep(50);
    }
    return this.received.includes(text);
  }

  close(): void {
    this.child.kill('SIGKILL');
  }
}

/** One message over a new connection; true when it was delivered (TCP: the connection was accepted). */
export async function send(netns: string, address: string, port: number, text: string, protocol: 'tcp' | 'udp' = 'tcp'): Promise<boolean> {
  const args = protocol === 'tcp' ? ['nc', '-n', '-N', '-w', '2', address, String(port)] : ['nc', '-n', '-u', '-w', '1', address, String(port)];
  const result = await runCommand('timeout', ['5', ...args], { netns, input: `${text}\n`, allowExitCodes: [1, 124] });
  return result.code === 0;
}

/** A long-lived TCP connection whose client writes on demand. */
export class Session {
  private constructor(private readonly child: ChildProcess) {}

  static async open(netns: string, address: string, port: number): Promise<Session> {
    const session = new Session(inNs(netns, ['nc', '-n', address, String(port)]));
    await sleep(200);
    return session;
  }

  write(text: string): void {
    this.child.stdin!.write(`${text}\n`);
  }

  close(): void {
    this.child.kill('SIGKILL');
  }
}

export async function ping(netns: string, address: string): Promise<boolean> {
  return (await runCommand('ping', ['-c', '1', '-W', '1', address], { netns, allowExitCodes: [1] })).code === 0;
}

/** conntrack entries in a namespace that mention an address (original or reply direction). */
export async function conntrackEntries(netns: string, address: string): Promise<string[]> {
  const { stdout } = await runCommand('conntrack', ['-L'], { netns, allowExitCodes: [1] });
  return stdout.split('\n').filter((line) => line.includes(`=${address} `));
}
