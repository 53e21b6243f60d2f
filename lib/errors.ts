/**
 * The domain's typed errors. lib/ throws these (and StorageError); the HTTP layer maps
 * them to the API's JSON errors in one place.
 */
export class BackupError extends Error {
  override name = "BackupError";
  constructor(
    message: string,
    readonly details?: unknown,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The caller asked for something malformed (a bad id, an unknown option). */
export class InvalidRequestError extends BackupError {
  override name = "InvalidRequestError";
}

/** An unknown snapshot id (or collection in a snapshot). */
export class NotFoundError extends BackupError {
  override name = "NotFoundError";
}

/** Another backup or prune holds the lock. */
export class ConflictError extends BackupError {
  override name = "ConflictError";
}

/** The caller went away (a client that disconnected): the operation was stopped and committed nothing. */
export class OperationCancelledError extends BackupError {
  override name = "OperationCancelledError";
}

/** A checksum, size or decode failure in data read back from storage. */
export class SnapshotCorruptError extends BackupError {
  override name = "SnapshotCorruptError";
  constructor(
    message: string,
    readonly chunk: string | null,
    readonly collection: string | null,
    options?: { cause?: unknown },
  ) {
    super(message, { chunk, collection }, options);
  }
}

/** Chroma could not be reached, or failed in a way that is not the caller's fault. */
export class ChromaUnavailableError extends BackupError {
  override name = "ChromaUnavailableError";
}

/** Chroma refused a request (a 4xx from Chroma): the data or the request is at fault. */
export class ChromaRequestError extends BackupError {
  override name = "ChromaRequestError";
  constructor(
    message: string,
    readonly status: number,
    options?: { cause?: unknown },
  ) {
    super(message, { status }, options);
  }
}

/**
 * An automatic backup (interval, on-stop, `ifOlderThan`) refused because the startup
 * restore has not succeeded: committing now could make an empty or partial Chroma the
 * newest snapshot.
 */
export class RestorePendingError extends BackupError {
  override name = "RestorePendingError";
}

/**
 * The target Chroma cannot hold what a restore would write (e.g. array metadata on a
 * server older than 1.2): refused before anything is replaced.
 */
export class RestoreIncompatibleError extends BackupError {
  override name = "RestoreIncompatibleError";
  constructor(
    message: string,
    /** More fields where the refusal has them (a target limit: size, limit, count, first). */
    readonly incompatibility: { collection: string; record: string | null; field: string | null; lacks: string; [more: string]: unknown },
    options?: { cause?: unknown },
  ) {
    super(message, incompatibility, options);
  }
}

/**
 * The runtime ran out of a resource (memory, CPU time) while encoding or decoding: not a
 * fault in the data, so never reported as corruption. Retrying with more headroom (a
 * bigger instance, fewer collections at once) may succeed.
 */
export class ResourceLimitError extends BackupError {
  override name = "ResourceLimitError";
}

/**
 * Restore images cannot be made here: IMAGES=off, or no embedded Chroma to make them
 * with (CHROMA_URL, the Worker).
 */
export class ImagesUnavailableError extends BackupError {
  override name = "ImagesUnavailableError";
}

/** The scratch Chroma an image was being made in failed its checks (the drill in `details`): no image was made. */
export class ImageCheckFailedError extends BackupError {
  override name = "ImageCheckFailedError";
}

/**
 * A restore image (lib/images) failed a check: its manifest, a chunk (missing, wrong size,
 * wrong sha256, does not inflate) or a file's size or sha256. Images are a cache: callers
 * fall back to a logical restore of the snapshot.
 */
export class ImageCorruptError extends BackupError {
  override name = "ImageCorruptError";
  constructor(
    message: string,
    readonly image: string,
    readonly chunk: string | null,
    options?: { cause?: unknown },
  ) {
    super(message, { image, chunk }, options);
  }
}
