import { Command, CommanderError, Option } from 'commander';
import { PhoenixError } from '../errors.js';
import { eventsCommand } from './events.js';
import { backupCommand, checkCommand, initCommand, logCommand, lsCommand, restoreCommand, versionsCommand } from './repo-commands.js';
import { printError } from './output.js';

/** Exit codes: 0 success, 1 failure, 2 usage error. */
export async function main(argv: string[]): Promise<number> {
  let result: Promise<number> = Promise.resolve(0);
  const program = new Command('phoenix')
    .description('Real-time backup for Linux: every change, versioned, deduplicated and encrypted.')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });

  program
    .command('events')
    .description('print the changes Phoenix sees under SOURCE as they happen (like inotifywait -m -r)')
    .argument('<SOURCE>', 'directory to watch')
    .option('--json', 'one JSON object per line')
    .addOption(new Option('--exclude <PATTERN>', 'exclude paths matching PATTERN (.gitignore syntax; repeatable)').argParser(collect).default([]))
    .option('--one-file-system', 'do not cross file system boundaries')
    .action((source: string, opts: { json?: boolean; exclude: string[]; oneFileSystem?: boolean }) => {
      result = eventsCommand(source, opts);
    });

  program
    .command('watch')
    .description('back SOURCE up continuously: every change durable in the repository within a fraction of a second')
    .argument('[SOURCE]', 'directory to watch (or the sources: of --config)')
    .option('-r, --repo <URL>', 'repository: a directory, or s3://bucket/prefix (default: $PHOENIX_REPOSITORY, the config file, or ~/.local/share/phoenix/repository)')
    .option('--config <FILE>', 'YAML configuration (README: Configuration); flags override it')
    .option('--password-file <FILE>', 'read the password from FILE (default: $PHOENIX_PASSWORD_FILE; or $PHOENIX_PASSWORD)')
    .option('--state <DIR>', 'local state directory (default: $XDG_STATE_HOME/phoenix)')
    .option('--source <NAME>', "the source's name in the repository (default: its absolute path)")
    .addOption(new Option('--exclude <PATTERN>', 'exclude paths matching PATTERN (.gitignore syntax; repeatable)').argParser(collect).default([]))
    .option('--one-file-system', 'do not cross file system boundaries')
    .addOption(new Option('--log-level <LEVEL>', 'log level (default: $PHOENIX_LOG_LEVEL or info)').choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']))
    .action((source: string | undefined, opts) => {
      // The daemon's modules (pino, zod, yaml) load only for the commands that need them.
      result = import('./watch.js').then((m) => m.watchCommand(source, opts));
    });
  program
    .command('status')
    .description('what the running phoenix watch is doing: state, pending changes, last commit, errors')
    .option('--state <DIR>', 'the state directory the daemon uses (default: $XDG_STATE_HOME/phoenix)')
    .option('--config <FILE>', 'read the state directory from this configuration')
    .option('--json', 'print JSON')
    .action((opts) => {
      result = import('./watch.js').then((m) => m.statusCommand(opts));
    });

  const repoCmd = (name: string, description: string): Command =>
    program
      .command(name)
      .description(description)
      .option('-r, --repo <URL>', 'repository: a directory, or s3://bucket/prefix (default: $PHOENIX_REPOSITORY)')
      .option('--password-file <FILE>', 'read the password from FILE (default: $PHOENIX_PASSWORD_FILE; or $PHOENIX_PASSWORD)')
      .option('--json', 'print JSON (one object per line)');
  const withSource = (c: Command): Command => c.option('--source <NAME>', 'which source of the repository (needed when it holds several)');
  const run = (p: Promise<number | void>): void => {
    result = p.then((code) => code ?? 0);
  };

  repoCmd('init', 'create a new repository (encrypted unless --insecure-no-encryption)')
    .option('--insecure-no-encryption', 'store everything in the clear (no password)')
    .action((opts) => run(initCommand(opts)));
  withSource(repoCmd('backup', 'back SOURCE up now: upload what changed since the last commit, as one commit'))
    .argument('<SOURCE>', 'directory to back up')
    .addOption(new Option('--exclude <PATTERN>', 'exclude paths matching PATTERN (.gitignore syntax; repeatable)').argParser(collect).default([]))
    .option('--one-file-system', 'do not cross file system boundaries')
    .option('--state <DIR>', 'local state directory (default: $XDG_STATE_HOME/phoenix)')
    .action((source: string, opts) => run(backupCommand(source, opts)));
  withSource(repoCmd('log', 'list the commits of a source: seq, time, counts, bytes')).action((opts) => run(logCommand(opts)));
  withSource(repoCmd('ls', 'list the tree of a source (below PATH) as it was at TIME'))
    .argument('[PATH]', 'only below this path')
    .option('--at <TIME>', 'ISO 8601, or a time ago: 30s, 10m, 2h, 3d (default: the latest commit)')
    .action((path: string | undefined, opts) => run(lsCommand(path, opts)));
  withSource(repoCmd('versions', 'every version of PATH: time, size, deletions and moves'))
    .argument('<PATH>', 'path inside the source')
    .action((path: string, opts) => run(versionsCommand(path, opts)));
  withSource(repoCmd('restore', 'restore a source (or PATHs of it) into DIR as it was at TIME'))
    .argument('[PATH...]', 'only these paths')
    .requiredOption('--target <DIR>', 'where to write (created if missing)')
    .option('--at <TIME>', 'ISO 8601, or a time ago: 30s, 10m, 2h, 3d (default: the latest commit)')
    .action((paths: string[], opts) => run(restoreCommand(paths, opts)));
  repoCmd('check', 'verify the repository: journals, checkpoints, every chunk reference; --read-data re-hashes every byte')
    .option('--read-data', 'also read every pack and verify every chunk')
    .action((opts) => run(checkCommand(opts)));

  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version exit 0; anything else is a usage error.
      return err.exitCode === 0 || err.code === 'commander.helpDisplayed' || err.code === 'commander.version' ? 0 : 2;
    }
    printError(err);
    return 1;
  }
  try {
    return await result;
  } catch (err) {
    printError(err);
    return err instanceof PhoenixError && (err.code === 'PHX_USAGE' || err.code === 'PHX_CONFIG') ? 2 : 1;
  }
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}
