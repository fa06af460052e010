// The repository's front door: what the other layers (archiver, restore, state, daemon, cli)
// use of it. Worker threads import the leaf modules they need (crypto, pack, chunker) directly,
// so that each worker loads only those.
export { checkRepository, type CheckResult } from './check.js';
export { DEFAULT_CHUNKER, FINE_CHUNKER, nextCut, type ChunkerParams } from './chunker.js';
export { corrupt, Keys } from './crypto.js';
export { affectedPaths, applyTracked, TreeDigest, type TrackedTree } from './digest.js';
export * from './format.js';
export * from './history.js';
export { chunkWhat, openChunk, parseHeader } from './pack.js';
export * from './repository.js';
export { partKey } from './meta.js';
