/**
 * The restore images' store API (the contract the build and startup code use): upload and
 * download in their own modules (Node only: they touch the filesystem), reading, picking
 * and pruning in catalog.ts (no filesystem: prune runs in a Worker too).
 */
export { listImages, pickImage, pruneImages, readImage } from "./catalog.js";
export { downloadImage } from "./download.js";
export { uploadImage } from "./upload.js";
