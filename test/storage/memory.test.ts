import { memoryStorage } from "../../lib/storage/memory.js";
import { storageConformance } from "./conformance.js";

storageConformance({ name: "memory", create: async () => ({ storage: memoryStorage() }) });
