import { describe, expect, it } from "vitest";
import { estimateRestore, IMAGE_KIND, type RestoreMeasurement } from "../../lib/rto.js";

const at = "2026-12-07T00:00:00.000Z";
const logical: RestoreMeasurement = { at, snapshot: "s1", kind: "restore", records: 20_000, bytes: 40_000_000, durationMs: 16_000 };
const image: RestoreMeasurement = { at, snapshot: "s1", kind: IMAGE_KIND, records: 20_000, bytes: 68_000_000, durationMs: 2_000 };
const snapshot = { records: 20_000, bytes: 40_000_000 };

describe("estimateRestore with restore images", () => {
  it("without an image: the logical rates only; an image measurement does not speed them up", () => {
    expect(estimateRestore(snapshot, [logical]).estimatedRestoreSeconds).toBe(16);
    expect(estimateRestore(snapshot, [image, logical])).toEqual(estimateRestore(snapshot, [logical]));
  });

  it("with a usable image: its bytes at the measured image rate plus the delta records at the logical rate", () => {
    // 68 MB at 34 MB/s = 2 s, plus 250 records at 1,250 records/s = 0.2 s.
    const estimate = estimateRestore(snapshot, [image, logical], { snapshot: "s1", bytes: 68_000_000, deltaRecords: 250 });
    expect(estimate.estimatedRestoreSeconds).toBe(3);
    expect(estimate.basis).toMatch(/^from the image of s1 \(68\.0 MB; 1 image restore\(s\) measured, 34\.0 MB\/s\) plus 250 records to catch up; logical restores measured: 1 restore/);
    const bigDelta = estimateRestore(snapshot, [image, logical], { snapshot: "s1", bytes: 68_000_000, deltaRecords: 12_500 });
    expect(bigDelta.estimatedRestoreSeconds).toBe(12);
  });

  it("with an image and nothing measured: assumed rates, said so", () => {
    const estimate = estimateRestore(snapshot, [], { snapshot: "s1", bytes: 50_000_000, deltaRecords: 0 });
    expect(estimate.estimatedRestoreSeconds).toBe(5);
    expect(estimate.basis).toMatch(/no image restore measured yet: assumed 10\.0 MB\/s/);
  });
});
