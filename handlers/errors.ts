import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type * as v from "valibot";
import { BackupError, ChromaRequestError, ChromaUnavailableError, ConflictError, ImageCheckFailedError, ImageCorruptError, ImagesUnavailableError, InvalidRequestError, NotFoundError, OperationCancelledError, ResourceLimitError, RestoreIncompatibleError, RestorePendingError, SnapshotCorruptError } from "../lib/errors.js";
import { LeaseLostError } from "../lib/lock.js";
import { StorageError } from "../lib/storage/errors.js";

export interface ApiError {
  status: ContentfulStatusCode;
  code: string;
  message: string;
  details?: unknown;
}

/** Raised by the HTTP layer itself (auth, body parsing, validation). */
export class HttpError extends Error {
  constructor(
    readonly status: ContentfulStatusCode,
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
  }
}

export function validationError(issues: [v.BaseIssue<unknown>, ...v.BaseIssue<unknown>[]], where: string): HttpError {
  const details = issues.map((issue) => ({
    path: `${where}${issue.path ? "." + issue.path.map((p) => String(p.key)).join(".") : ""}`,
    message: issue.expected === "never" ? "unknown field: remove it (field names are case-sensitive)" : issue.message,
  }));
  return new HttpError(400, "invalid_request", `invalid request: ${details.map((d) => `${d.path}: ${d.message}`).join("; ")}`, details);
}

/** The one place typed errors become the API's JSON errors. */
export function toApiError(err: unknown): ApiError {
  if (err instanceof HttpError) return { status: err.status, code: err.code, message: err.message, details: err.details };
  if (err instanceof InvalidRequestError) return { status: 400, code: "invalid_request", message: err.message, details: err.details };
  if (err instanceof NotFoundError) return { status: 404, code: "not_found", message: err.message, details: err.details };
  if (err instanceof ConflictError) return { status: 409, code: "conflict", message: err.message, details: err.details };
  if (err instanceof ImagesUnavailableError) return { status: 409, code: "images_unavailable", message: err.message, details: err.details };
  if (err instanceof ImageCheckFailedError) return { status: 422, code: "image_check_failed", message: err.message, details: err.details };
  if (err instanceof RestorePendingError) return { status: 409, code: "restore_pending", message: err.message, details: err.details };
  if (err instanceof SnapshotCorruptError) return { status: 422, code: "snapshot_corrupt", message: err.message, details: { chunk: err.chunk, collection: err.collection } };
  if (err instanceof ImageCorruptError) return { status: 422, code: "image_corrupt", message: err.message, details: { image: err.image, chunk: err.chunk } };
  if (err instanceof RestoreIncompatibleError) return { status: 422, code: "restore_incompatible", message: err.message, details: err.incompatibility };
  // Memory or CPU ran out mid-decode: the data is fine, so never 422 snapshot_corrupt.
  if (err instanceof ResourceLimitError) {
    // A limit the error names (a Worker's subrequests) carries its own advice.
    const named = typeof (err.details as { limit?: unknown } | undefined)?.limit === "string";
    return { status: 503, code: "resource_limit", message: named ? err.message : `${err.message}. The snapshot is not known to be damaged; retry with more memory or CPU time`, details: err.details };
  }
  if (err instanceof ChromaUnavailableError) return { status: 503, code: "chroma_unavailable", message: err.message, details: err.details };
  // The store did not let the lease be renewed: a storage fault, never an internal error.
  if (err instanceof LeaseLostError) return { status: 503, code: "storage_unavailable", message: err.message, details: err.details };
  // Nobody reads this answer (the client left); it is what the log shows.
  if (err instanceof OperationCancelledError) return { status: 503, code: "cancelled", message: err.message };
  if (err instanceof ChromaRequestError) return { status: 502, code: "chroma_error", message: err.message, details: err.details };
  if (err instanceof StorageError) {
    if (err.kind === "invalid_key") return { status: 400, code: "invalid_request", message: err.message };
    if (err.kind === "not_found") return { status: 404, code: "not_found", message: err.message };
    if (err.kind === "full") {
      return {
        status: 507,
        code: "storage_full",
        message: `the store is full: ${err.message}. Nothing partial was committed. Free space with POST /prune (it also removes the chunks of failed backups) or grow the volume / raise the quota, then back up again`,
        details: { driver: err.driver, operation: err.operation, key: err.key ?? null },
      };
    }
    return { status: 503, code: "storage_unavailable", message: `storage (${err.driver}) failed: ${err.message}`, details: { driver: err.driver, operation: err.operation, status: err.status ?? null } };
  }
  if (err instanceof BackupError) return { status: 500, code: "internal", message: err.message, details: err.details };
  return { status: 500, code: "internal", message: "internal error; see the service log" };
}

export function errorBody(e: ApiError) {
  return { error: { code: e.code, message: e.message, ...(e.details === undefined ? {} : { details: e.details }) } };
}

export function errorResponse(c: Context, err: unknown): Response {
  const e = toApiError(err);
  return c.json(errorBody(e), e.status);
}
