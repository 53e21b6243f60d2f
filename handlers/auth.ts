import type { Context, MiddlewareHandler } from "hono";
import { timingSafeEqual } from "hono/utils/buffer";
import { HttpError } from "./errors.js";

/** `Authorization: Bearer <token>`, compared in constant time; else 401 with WWW-Authenticate. */
export function bearerAuth<E extends object>(token: (c: Context<E>) => string): MiddlewareHandler<E> {
  return async (c, next) => {
    const header = c.req.header("authorization") ?? "";
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    const ok = match ? await timingSafeEqual(match[1]!, token(c)) : false;
    if (!ok) {
      c.header("WWW-Authenticate", 'Bearer realm="chroma-backup"');
      throw new HttpError(401, "unauthorized", header ? "the bearer token is wrong" : "send Authorization: Bearer <BACKUP_API_TOKEN>");
    }
    await next();
  };
}
