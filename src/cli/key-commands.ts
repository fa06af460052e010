import { PhoenixError } from '../errors.js';
import { iso, newPasswordFrom, print, showTime, withRepo, type RepoFlags } from './common.js';

/** `phoenix key list`: every password that opens the repository. */
export async function keyListCommand(flags: RepoFlags): Promise<void> {
  return withRepo(flags, async (repo) => {
    for (const k of await repo.keyList()) {
      const created = k.createdMs === null ? null : iso(k.createdMs);
      print(
        flags,
        { id: k.id, created, host: k.host, user: k.user, current: k.current },
        `${k.current ? '*' : ' '} ${k.id}  ${k.createdMs === null ? 'made by init'.padEnd(29) : showTime(k.createdMs).padEnd(29)}  ${k.user || '-'}@${k.host || '-'}`,
      );
    }
  });
}

export interface NewKeyFlags extends RepoFlags {
  newPasswordFile?: string;
}

/** `phoenix key add`: another password for the same repository. */
export async function keyAddCommand(flags: NewKeyFlags): Promise<void> {
  return withRepo(flags, async (repo) => {
    const pw = await chosen(flags, 'Choose the new password. Either password opens the repository afterwards.');
    const id = await repo.addKey(pw);
    print(flags, { id, added: true }, `added key ${id}; phoenix key list shows every key`);
  });
}

/** `phoenix key remove ID`: that password no longer opens the repository. */
export async function keyRemoveCommand(id: string, flags: RepoFlags): Promise<void> {
  return withRepo(flags, async (repo) => {
    const removed = await repo.removeKey(id);
    print(flags, { id: removed, removed: true }, `removed key ${removed}: its password no longer opens the repository`);
  });
}

/** `phoenix key passwd`: replaces the password used to open the repository (a new key, then the old one removed). */
export async function keyPasswdCommand(flags: NewKeyFlags): Promise<void> {
  return withRepo(flags, async (repo) => {
    const pw = await chosen(flags, 'Choose the new password. The current one stops working.');
    const id = await repo.addKey(pw);
    const old = repo.keyId as string;
    await repo.removeKey(old, { evenCurrent: true });
    print(flags, { id, replaced: old }, `changed the password: key ${id} replaces key ${old}`);
  });
}

async function chosen(flags: NewKeyFlags, intro: string): Promise<string> {
  const pw = await newPasswordFrom(flags.newPasswordFile, intro);
  if (pw === undefined) {
    throw new PhoenixError('PHX_NO_PASSWORD', 'no new password was given', {
      hint: 'name a file holding it with --new-password-file FILE, or run on a terminal to type it',
    });
  }
  return pw;
}
