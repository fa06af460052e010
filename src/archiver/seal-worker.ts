// A worker thread that computes chunk ids and seals blobs, so that hashing, compression
// and encryption run on every core. Messages: {job, data} in, {job, id, sealed} out.
import { parentPort, workerData } from 'node:worker_threads';
import { Keys } from '../repo/crypto.js';
import { sealBlob } from '../repo/pack.js';

const { master } = workerData as { master: Uint8Array | null };
const keys = master === null ? Keys.none() : Keys.fromMaster(Buffer.from(master));

parentPort?.on('message', (msg: { job: number; data: ArrayBuffer }) => {
  const data = Buffer.from(msg.data);
  const id = keys.id(data).toString('hex');
  let sealed = sealBlob(keys, data);
  if (sealed.byteOffset !== 0 || sealed.buffer.byteLength !== sealed.length) sealed = Buffer.from(sealed); // own its memory
  parentPort?.postMessage({ job: msg.job, id, sealed: sealed.buffer }, [sealed.buffer as ArrayBuffer]);
});
