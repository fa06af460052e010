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
  const sealed = sealBlob(keys, data);
  // A buffer of its own, exactly the blob: a small Buffer is a view into Node's shared 8 KiB
  // pool (Buffer.from copies into the pool too), and its .buffer would carry the whole pool.
  const own = new Uint8Array(sealed);
  parentPort?.postMessage({ job: msg.job, id, sealed: own.buffer }, [own.buffer]);
});
