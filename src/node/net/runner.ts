/**
 * @module node/net/runner
 * How the NetManager talks to the kernel: by spawning iproute2 and nftables, never through a shell.
 * Measurements (docs/dependencies.md 2.6) showed that one `ip -batch -` spawn does the work of many single
 * commands (3.9 ms for four steps versus 15 ms), and that `nft -f -` in NATIVE syntax is the only safe way
 * to write nftables: nft 1.0.6 segfaults on JSON input with concatenated maps, so `nft -j` is for reading only.
 *
 * Everything goes through the small `CommandRunner` interface so the plumbing can be unit-tested with the
 * recording `FakeRunner` and run for real with `ExecRunner` (execFile, a timeout, no shell).
 * A failed command becomes a `CommandFailedError` (a `SystemError`, code E_SYSTEM) carrying the command line,
 * the exit code and stderr; for `ip -batch` it also names the input line that failed.
 */
import { execFile } from 'node:child_process';
import { SystemError } from '../../errors.ts';

/** What a finished command printed. */
export interface CommandResult {
  /** Standard output, UTF-8. */
  stdout: string;
  /** Standard error, UTF-8 (commands may warn on success). */
  stderr: string;
}

/** Runs one external command without a shell. */
export interface CommandRunner {
  /** Runs `cmd args...` with `input` on stdin (empty stdin when absent); rejects with CommandFailedError on failure. */
  run(cmd: string, args: string[], input?: string): Promise<CommandResult>;
}

/** A system command failed: it exited non-zero, was killed by the timeout, or could not be started. */
export class CommandFailedError extends SystemError {
  /** 1-based line of the stdin script that failed, when the command said so (`ip -batch`: "Command failed -:N"). */
  readonly failedLine: number | undefined;

  constructor(
    /** The command and its arguments. */
    readonly command: readonly string[],
    /** Exit status, or undefined when the command was killed or could not be started. */
    readonly exitCode: number | undefined,
    /** What the command wrote to stderr (or the spawn error). */
    readonly stderr: string,
    input?: string,
    options?: { cause?: unknown },
  ) {
    const lineMatch = /Command failed -:(\d+)/.exec(stderr);
    const failedLine = lineMatch ? Number(lineMatch[1]) : undefined;
    const lineText =
      failedLine !== undefined && input !== undefined ? input.split('\n')[failedLine - 1] : undefined;
    const status = exitCode === undefined ? 'did not finish' : `exit ${exitCode}`;
    super(
      `command failed (${status}): ${command.join(' ')}: ${stderr.trim() || '(no stderr)'}` +
        (lineText !== undefined ? ` [input line ${failedLine}: ${lineText}]` : ''),
      options,
    );
    this.failedLine = failedLine;
  }
}

/** True when `err` is a failed command whose stderr says the object to remove does not exist (any more). */
export function isAlreadyGone(err: unknown): boolean {
  return (
    err instanceof CommandFailedError &&
    /Cannot find device|No such device|No such process|No such file or directory|does not exist/i.test(
      err.stderr,
    )
  );
}

/** Options of ExecRunner. */
export interface ExecRunnerOptions {
  /** Kill the command (SIGKILL) after this many milliseconds; default 15000. */
  timeoutMs?: number;
}

/** The real runner: child_process.execFile, no shell, stdin from `input`, bounded by a timeout. */
export class ExecRunner implements CommandRunner {
  private readonly timeoutMs: number;

  constructor(options: ExecRunnerOptions = {}) {
    this.timeoutMs = options.timeoutMs ?? 15_000;
  }

  /** Runs the command; non-zero exit, timeout or spawn failure rejects with CommandFailedError. */
  run(cmd: string, args: string[], input?: string): Promise<CommandResult> {
    return new Promise((resolve, reject) => {
      const child = execFile(
        cmd,
        args,
        { encoding: 'utf8', timeout: this.timeoutMs, killSignal: 'SIGKILL', maxBuffer: 64 * 1024 * 1024 },
        (err, stdout, stderr) => {
          if (!err) {
            resolve({ stdout, stderr });
            return;
          }
          const code = typeof err.code === 'number' ? err.code : undefined;
          let detail = stderr;
          if (err.killed || err.signal)
            detail = `${stderr}\nkilled by ${err.signal ?? 'signal'} (timeout ${this.timeoutMs} ms)`;
          else if (code === undefined) detail = `${stderr}\n${err.message}`;
          reject(new CommandFailedError([cmd, ...args], code, detail.trim(), input, { cause: err }));
        },
      );
      // A command that exits before reading all of stdin makes the write fail with EPIPE; the exit status
      // already tells what happened, so the stream error is not interesting.
      child.stdin?.on('error', () => {});
      child.stdin?.end(input ?? '');
    });
  }
}

/** One call a FakeRunner received. */
export interface RecordedCall {
  cmd: string;
  args: string[];
  input: string | undefined;
}

/** What a FakeRunner answers: output, or a failure with stderr (and exit code, default 1). */
export type FakeResponse = { stdout?: string; stderr?: string } | { fail: string; exitCode?: number };

/** A CommandRunner for unit tests: records every call and answers through `respond` (default: empty success). */
export class FakeRunner implements CommandRunner {
  /** Every call, in order. */
  readonly calls: RecordedCall[] = [];

  constructor(private readonly respond: (call: RecordedCall) => FakeResponse | undefined = () => undefined) {}

  /** Records the call and answers it. */
  run(cmd: string, args: string[], input?: string): Promise<CommandResult> {
    const call = { cmd, args: [...args], input };
    this.calls.push(call);
    const response = this.respond(call);
    if (response && 'fail' in response) {
      return Promise.reject(
        new CommandFailedError([cmd, ...args], response.exitCode ?? 1, response.fail, input),
      );
    }
    return Promise.resolve({ stdout: response?.stdout ?? '', stderr: response?.stderr ?? '' });
  }

  /** The calls as command lines ("ip -batch -"), for compact assertions. */
  commandLines(): string[] {
    return this.calls.map((c) => [c.cmd, ...c.args].join(' '));
  }
}

/** Options of ipBatch. */
export interface IpBatchOptions {
  /** `ip -force`: go on after a failing line (the exit status is still non-zero). */
  force?: boolean;
}

/**
 * Runs `lines` as one `ip -batch -` (one spawn), in the network namespace of `netnsPid` when given
 * (`nsenter -t <pid> -n ip -batch -`). ip stops at the first failing line unless `force`. No lines: no spawn.
 */
export async function ipBatch(
  runner: CommandRunner,
  lines: readonly string[],
  netnsPid?: number,
  options: IpBatchOptions = {},
): Promise<void> {
  if (lines.length === 0) return;
  for (const line of lines) {
    if (/[\n\r]/.test(line)) throw new Error(`ip batch line contains a newline: ${JSON.stringify(line)}`);
  }
  const ipArgs = [...(options.force ? ['-force'] : []), '-batch', '-'];
  const input = lines.join('\n') + '\n';
  if (netnsPid === undefined) await runner.run('ip', ipArgs, input);
  else await runner.run('nsenter', ['-t', String(netnsPid), '-n', 'ip', ...ipArgs], input);
}

/** Runs `ip -j <args>` (optionally in the netns of `netnsPid`) and returns the parsed JSON array. */
export async function ipJson(runner: CommandRunner, args: string[], netnsPid?: number): Promise<unknown[]> {
  const { stdout } =
    netnsPid === undefined
      ? await runner.run('ip', ['-j', ...args])
      : await runner.run('nsenter', ['-t', String(netnsPid), '-n', 'ip', '-j', ...args]);
  const text = stdout.trim();
  if (text === '') return [];
  const parsed = parseJson(text, `ip -j ${args.join(' ')}`);
  if (!Array.isArray(parsed)) throw new SystemError(`ip -j ${args.join(' ')} did not print a JSON array`);
  return parsed as unknown[];
}

/** Applies `script` (native nft syntax, atomically as one transaction) with `nft -f -`. */
export async function nft(runner: CommandRunner, script: string): Promise<void> {
  await runner.run('nft', ['-f', '-'], script);
}

/** Runs `nft -j <args>` (reads only, e.g. `list table inet x`) and returns the `nftables` array. */
export async function nftJson(runner: CommandRunner, args: string[]): Promise<unknown[]> {
  const { stdout } = await runner.run('nft', ['-j', ...args]);
  const text = stdout.trim();
  if (text === '') return [];
  const parsed = parseJson(text, `nft -j ${args.join(' ')}`);
  const list = isRecord(parsed) ? parsed['nftables'] : undefined;
  if (!Array.isArray(list))
    throw new SystemError(`nft -j ${args.join(' ')} did not print {"nftables": [...]}`);
  return list as unknown[];
}

/** True for a non-null, non-array object (for narrowing parsed JSON). */
export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new SystemError(`${what} printed invalid JSON`, { cause: err });
  }
}
