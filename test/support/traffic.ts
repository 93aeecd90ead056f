// Real traffic between lab namespaces with OpenBSD netcat: listeners that record what they
// receive and from whom, one-shot sends, long-lived sessions, and streams of new UDP flows; and
// what conntrack holds. Every process is bounded by a timeout and killed on close, so nothing
// outlives a test.
import { spawn, type ChildProcess } from 'node:child_process';
import { runCommand } from '../../activities/exec.js';

const inNs = (netns: string, args: string[]) => spawn('ip', ['netns', 'exec', netns, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Whether `child` says `pattern` on stderr within `timeoutMs` (nc -v tells when it is bound or connected). */
function saysOnStderr(child: ChildProcess, pattern: RegExp, timeoutMs = 10_000): Promise<boolean> {
  return new Promise((resolve) => {
    let said = '';
    const done = (result: boolean) => {
      clearTimeout(timer);
      child.stderr!.off('data', onData);
      child.off('close', onClose);
      resolve(result);
    };
    const onData = (d: Buffer | string) => {
      said += d.toString();
      if (pattern.test(said)) done(true);
    };
    const onClose = () => done(false);
    const timer = setTimeout(() => done(false), timeoutMs);
    child.stderr!.on('data', onData);
    child.on('close', onClose);
  });
}

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
    const child = inNs(netns, args);
    const listener = new Listener(child);
    if (!(await saysOnStderr(child, /^(Listening|Bound) on /m))) {
      listener.close();
      throw new Error(`nc did not bind ${protocol} port ${port} in ${netns}`);
    }
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

  /** Once connected (or, if it could not connect, once nc gave up: what the test checks then tells). */
  static async open(netns: string, address: string, port: number): Promise<Session> {
    const child = inNs(netns, ['nc', '-v', '-n', address, String(port)]);
    await saysOnStderr(child, / succeeded!/);
    return new Session(child);
  }

  write(text: string): void {
    this.child.stdin!.write(`${text}\n`);
  }

  close(): void {
    this.child.kill('SIGKILL');
  }
}

/** One echo request; true when answered (no answer, or no route, is false). */
export async function ping(netns: string, address: string): Promise<boolean> {
  return (await runCommand('ping', ['-c', '1', '-W', '1', address], { netns, allowExitCodes: [1, 2] })).code === 0;
}

/**
 * A stream of new UDP flows from `netns` to each address (one datagram from a fresh source port to
 * each, every `everyMs`), so that every packet makes a conntrack entry of its own wherever it
 * passes. Bounded: it ends by itself after `maxMs`, and `stop()` ends it sooner.
 */
export class UdpFlows {
  private output = '';
  private readonly exited: Promise<void>;
  private constructor(private readonly child: ChildProcess) {
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (this.output += d));
    this.exited = new Promise((resolve) => child.on('close', () => resolve()));
  }

  static async start(netns: string, addresses: readonly string[], port: number, { everyMs = 20, maxMs = 120_000 } = {}): Promise<UdpFlows> {
    // A datagram per address per tick, each from a socket of its own (a new source port); prints how many it sent.
    const script = `
      const dgram = require('node:dgram');
      const [everyMs, port, ...addresses] = process.argv.slice(1);
      let sent = 0;
      const tick = setInterval(() => {
        for (const address of addresses) {
          const socket = dgram.createSocket('udp4');
          socket.on('error', () => socket.close());
          socket.send('natflow-test', Number(port), address, () => socket.close());
          sent++;
        }
      }, Number(everyMs));
      process.on('SIGTERM', () => { clearInterval(tick); process.stdout.write(String(sent)); process.exit(0); });`;
    const seconds = String(Math.ceil(maxMs / 1000));
    const flows = new UdpFlows(inNs(netns, ['timeout', seconds, process.execPath, '-e', script, String(everyMs), String(port), ...addresses]));
    await sleep(300); // let node start
    return flows;
  }

  /** Stops the stream; how many datagrams it sent. */
  async stop(): Promise<number> {
    this.child.kill('SIGTERM');
    await this.exited;
    return Number(this.output) || 0;
  }
}

/** `conntrack -L` in a namespace, with conntrack's own filter (`-d <ip>`, `-q <ip>`, `-p tcp --dport <n>`...): one entry a line. */
export async function conntrack(netns: string, ...filter: string[]): Promise<string[]> {
  const { stdout } = await runCommand('conntrack', ['-L', ...filter], { netns, allowExitCodes: [1] });
  return stdout.split('\n').filter(Boolean);
}

/**
 * conntrack entries in a namespace that mention an address (original or reply direction), or any
 * of several. `nat`: only those that were translated, i.e. whose reply does not simply come back
 * from the original destination to the original source (a DNAT to a VM, an SNAT to an EIP).
 */
export async function conntrackEntries(netns: string, address: string | readonly string[], { nat = false } = {}): Promise<string[]> {
  const addresses = typeof address === 'string' ? [address] : address;
  return (await conntrack(netns)).filter((line) => addresses.some((a) => line.includes(`=${a} `)) && (!nat || translated(line)));
}

/** An entry's tuples are `src= dst=` (original) then `src= dst=` (reply). */
function translated(line: string): boolean {
  const [origSrc, replySrc] = [...line.matchAll(/\bsrc=(\S+)/g)].map((m) => m[1]);
  const [origDst, replyDst] = [...line.matchAll(/\bdst=(\S+)/g)].map((m) => m[1]);
  return replySrc !== origDst || replyDst !== origSrc;
}
