import type { CollectionInfo } from "../chroma/rest.js";
import { InvalidRequestError } from "../errors.js";
import { isAsideCollection } from "./aside.js";

/** The collections a backup takes: those named (all must exist), or every one but those a restore builds aside, by name. */
export function selectCollections(all: CollectionInfo[], names: string[] | undefined): CollectionInfo[] {
  // A restore in progress (or one that died) builds collections aside: not data to keep.
  if (!names) return all.filter((c) => !isAsideCollection(c.name)).sort((a, b) => a.name.localeCompare(b.name));
  const missing = names.filter((n) => !all.some((c) => c.name === n));
  if (missing.length > 0) throw new InvalidRequestError(`no such collection in Chroma: ${missing.join(", ")}`, { missing });
  return names.map((n) => all.find((c) => c.name === n)!);
}
