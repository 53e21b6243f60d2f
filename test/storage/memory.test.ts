import { memoryStorage } from "../../lib/storage/memory.js";
import { storageConformance } from "./conformance.js";

// A quota is memory's full disk: a write past it is refused whole (kind `full`).
const quota = async (bytes: number) => ({ storage: memoryStorage({ maxBytes: bytes }), kind: "full" as const });

storageConformance({
  name: "memory",
  create: async () => ({ storage: memoryStorage() }),
  faults: { shortWrite: quota, cutWrite: quota },
});
