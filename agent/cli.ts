#!/usr/bin/env -S node --max-semi-space-size=4
/**
 * picloud-node: the command line (DESIGN.md fixes it). Dispatches subcommands; each bad
 * flag gets a clear message and exit code 2.
 */
import { constants as osConstants } from 'node:os';
import { ConfigError, parseAgentArgs } from './config.js';
import { missingNodeFlags } from './node-flags.js';

const VERSION = '0.1.0';

const USAGE = `usage: picloud-node <command> [flags]

commands:
  agent --name NAME --data-dir DIR [--bootstrap | --join HOST[:PORT] --token TOKEN]
        [--role manager|worker] [--bind ADDR] [--advertise ADDR] [--client-port 2379]
        [--peer-port 2380] [--gossip-port 7946] [--http-port 7480] [--lb-port 8080]
        [--s3-port 9000] [--dns-port 8600] [--config FILE] [--dev]
        [--heartbeat-interval 100] [--election-timeout 1000]
        [--quota-backend-bytes N] [--auto-compaction-mode periodic|revision|off]
        [--auto-compaction-retention 1h|REVISIONS] [--snapshot-count N]
        [--snapshot-catchup-entries N] [--auth-token-ttl SECONDS] [--new-board BOARD]
        [--experimental-watch-progress-notify-interval 10m]
        [--cert-file FILE --key-file FILE | --auto-tls] [--trusted-ca-file FILE] [--client-cert-auth]
        [--peer-auto-tls (accepted; the peer port is always encrypted with the cluster token)]
  token [--data-dir DIR] [--worker]
  members [--json] [--watch] [--http HOST:PORT]
  keyring list|install|use|remove|generate [KEY] [--http HOST:PORT]
  snapshot save FILE [--endpoints [https://]HOST:PORT] [--user NAME[:PASSWORD]] [--password P]
                     [--cacert FILE] [--cert FILE --key FILE]
  snapshot restore FILE --data-dir DIR
  version
  kv | svc | blob | bench: not available in this version yet`;

type Command = (argv: string[]) => Promise<number>;

const NOT_YET = (name: string): Command => async () => {
  process.stderr.write(`picloud-node ${name}: not available in this version yet\n`);
  return 2;
};

/** After a failed write to the data dir, how long the agent may take to stop before it exits anyway. */
const FAILED_STOP_DEADLINE_MS = 10_000;

const COMMANDS: Record<string, Command> = {
  agent: async (argv) => {
    const config = parseAgentArgs(argv);
    const { runAgent, logger } = await import('./agent.js');
    // Node prints its warnings (a deprecation in a library) as plain text on stderr, between
    // the agent's JSON log lines: they go into the log instead.
    process.removeAllListeners('warning');
    process.on('warning', (w: Error & { code?: string }) => logger.warn({ warning: w.name, code: w.code, detail: w.message }, 'Node.js warning'));
    const missing = missingNodeFlags(process.execArgv);
    if (missing.length > 0) logger.warn({ missing }, 'node was started without the flags picloud-node runs with (npm start and the picloud-node command pass them): writes pause longer for garbage collection');
    // Signals are heard from the start: a start can wait a while (a join retried for tens of
    // seconds). One while starting exits at once, as a crash would (every step of a start is
    // redone or resumed by the next); a second one while stopping (the leadership hand-off can
    // take an election timeout) exits at once too. Each says so in the log.
    let stopRequested: ((why: Record<string, string>) => void) | undefined;
    let stopping = false;
    const onSignal = (sig: NodeJS.Signals): void => {
      const code = 128 + (osConstants.signals[sig] ?? 15);
      if (stopRequested === undefined) {
        logger.warn({ signal: sig }, 'signal while starting: exiting now (the next start resumes or redoes this one)');
        process.exit(code);
      }
      if (stopping) {
        logger.warn({ signal: sig }, 'second signal while stopping: exiting now');
        process.exit(code);
      }
      stopRequested({ signal: sig });
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    const agent = await runAgent(config);
    let exitCode = 0;
    await new Promise<void>((resolve) => {
      const stop = (why: Record<string, string>): void => {
        // A signal can arrive while the agent is already stopping by itself.
        if (stopping) return;
        stopping = true;
        logger.info(why, 'stopping');
        void agent.stop().then(resolve);
      };
      stopRequested = stop;
      void agent.ended.then((e) => {
        if (e.failed) {
          exitCode = 1;
          // A dying SD card can hang a write (and with it the stop) instead of failing it.
          setTimeout(() => {
            logger.error({ afterMs: FAILED_STOP_DEADLINE_MS }, 'stopping did not finish; exiting');
            process.exit(1);
          }, FAILED_STOP_DEADLINE_MS).unref();
        }
        stop({ reason: e.reason });
      });
    });
    return exitCode;
  },
  version: async () => {
    process.stdout.write(`picloud-node ${VERSION} (node ${process.version})\n`);
    return 0;
  },
  token: async (argv) => (await import('./commands/token.js')).run(argv),
  members: async (argv) => (await import('./commands/members.js')).run(argv),
  keyring: async (argv) => (await import('./commands/keyring.js')).run(argv),
  kv: NOT_YET('kv'),
  svc: NOT_YET('svc'),
  blob: NOT_YET('blob'),
  snapshot: async (argv) => (await import('./commands/snapshot.js')).run(argv),
  bench: NOT_YET('bench'),
};

async function main(): Promise<number> {
  const [cmd, ...rest] = process.argv.slice(2);
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    // Asked for: on stdout; given nothing (a mistake): on stderr, exit 2.
    (cmd ? process.stdout : process.stderr).write(USAGE + '\n');
    return cmd ? 0 : 2;
  }
  const run = COMMANDS[cmd];
  // `picloud-node agent --help` as well as `picloud-node --help`.
  if (Object.hasOwn(COMMANDS, cmd) && (rest.includes('--help') || rest.includes('-h'))) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  if (!run) {
    process.stderr.write(`picloud-node: unknown command "${cmd}"\n${USAGE}\n`);
    return 2;
  }
  try {
    return await run(rest);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`picloud-node ${cmd}: ${e.message}\n`);
      return 2;
    }
    // Typed errors (they carry a stable code) are the user's to act on: message only.
    if (e instanceof Error && typeof (e as { code?: unknown }).code === 'string') {
      process.stderr.write(`picloud-node ${cmd}: ${e.message}\n`);
      return 1;
    }
    process.stderr.write(`picloud-node ${cmd}: ${(e as Error).stack ?? String(e)}\n`);
    return 1;
  }
}

main().then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(String(e) + '\n');
    process.exit(1);
  },
);
