import { createHash } from "node:crypto";
import { AwsClient } from "aws4fetch";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startS3rver, type TestS3rver } from "../fixtures/s3rver.js";

// The front test/fixtures/s3rver.ts puts before s3rver, tested on its own with signed raw
// requests: what S3 documents for conditional writes and body checksums.

let server: TestS3rver;
const client = new AwsClient({ accessKeyId: "S3RVER", secretAccessKey: "S3RVER", service: "s3", region: "us-east-1", retries: 0 });
const text = (s: string) => new TextEncoder().encode(s);
const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

beforeAll(async () => {
  server = await startS3rver(["cond"]);
});
afterAll(async () => {
  await server?.close();
});

async function send(base: string, method: string, path: string, options: { body?: Uint8Array; headers?: Record<string, string>; claimedSha256?: string } = {}) {
  const body = options.body;
  const request = await client.sign(`${base}/cond/${path}`, {
    method,
    headers: { ...options.headers, "x-amz-content-sha256": options.claimedSha256 ?? sha256(body ?? new Uint8Array(0)) },
    body: body as Uint8Array<ArrayBuffer> | undefined,
  });
  const response = await fetch(request);
  return { status: response.status, text: await response.text() };
}

const put = (key: string, value: string, headers: Record<string, string> = {}, base = server.endpoint) => send(base, "PUT", key, { body: text(value), headers });
const read = async (key: string) => {
  const answer = await send(server.endpoint, "GET", key);
  return answer.status === 200 ? answer.text : `HTTP ${answer.status}`;
};

describe("s3rver's conditional front", () => {
  it("a PUT with If-None-Match: * creates a missing key and answers 412 PreconditionFailed (S3's XML) on an existing one, writing nothing", async () => {
    expect((await put("single", "first", { "if-none-match": "*" })).status).toBe(200);
    const second = await put("single", "second", { "if-none-match": "*" });
    expect(second.status).toBe(412);
    expect(second.text).toMatch(/^<\?xml version="1.0" encoding="UTF-8"\?>\n<Error><Code>PreconditionFailed<\/Code><Message>At least one of the pre-conditions you specified did not hold<\/Message><Condition>If-None-Match<\/Condition><RequestId>[0-9A-F]+<\/RequestId><HostId>/);
    expect(await read("single")).toBe("first");
    // Without the condition a PUT replaces, as always.
    expect((await put("single", "third")).status).toBe(200);
    expect(await read("single")).toBe("third");
  });

  it("exactly one of 25 concurrent conditional PUTs wins, and the object is the winner's", async () => {
    const answers = await Promise.all(Array.from({ length: 25 }, (_, i) => put("race", `caller-${i}`, { "if-none-match": "*" })));
    const winners = answers.flatMap((a, i) => (a.status === 200 ? [i] : []));
    expect(winners.length).toBe(1);
    expect(answers.filter((a) => a.status === 412).length).toBe(24);
    expect(await read("race")).toBe(`caller-${winners[0]}`);
  });

  it("s3rver alone ignores If-None-Match: the front is what adds it", async () => {
    expect((await put("raw", "first", {}, server.rawEndpoint)).status).toBe(200);
    expect((await put("raw", "second", { "if-none-match": "*" }, server.rawEndpoint)).status).toBe(200);
    expect(await read("raw")).toBe("second");
  });

  it("CompleteMultipartUpload with If-None-Match: * answers 412 on an existing key and completes on a missing one", async () => {
    const complete = async (key: string) => {
      const created = await send(server.endpoint, "POST", `${key}?uploads=`);
      const uploadId = /<UploadId>([^<]+)<\/UploadId>/.exec(created.text)![1]!;
      const part = await client.sign(`${server.endpoint}/cond/${key}?partNumber=1&uploadId=${uploadId}`, {
        method: "PUT",
        headers: { "x-amz-content-sha256": sha256(text(`${key} body`)) },
        body: text(`${key} body`),
      });
      const etag = (await fetch(part)).headers.get("etag")!;
      const xml = text(`<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>${etag}</ETag></Part></CompleteMultipartUpload>`);
      return send(server.endpoint, "POST", `${key}?uploadId=${uploadId}`, { body: xml, headers: { "if-none-match": "*", "content-type": "application/xml" } });
    };
    expect((await put("mp-taken", "already here")).status).toBe(200);
    const refused = await complete("mp-taken");
    expect(refused.status).toBe(412);
    expect(refused.text).toContain("<Code>PreconditionFailed</Code>");
    expect(await read("mp-taken")).toBe("already here");
    const done = await complete("mp-new");
    expect(done.status).toBe(200);
    expect(await read("mp-new")).toBe("mp-new body");
  });

  it("a body whose sha256 is not its signed x-amz-content-sha256 answers 400 XAmzContentSHA256Mismatch and stores nothing", async () => {
    const body = text("the whole body");
    const answer = await send(server.endpoint, "PUT", "damaged", { body: body.subarray(0, 8), claimedSha256: sha256(body) });
    expect(answer.status).toBe(400);
    expect(answer.text).toContain("<Code>XAmzContentSHA256Mismatch</Code>");
    expect(answer.text).toContain(`<ClientComputedContentSHA256>${sha256(body)}</ClientComputedContentSHA256>`);
    expect(await read("damaged")).toBe("HTTP 404");
    // s3rver alone stores the short body.
    expect((await send(server.rawEndpoint, "PUT", "damaged", { body: body.subarray(0, 8), claimedSha256: sha256(body) })).status).toBe(200);
    expect(await read("damaged")).toBe("the whol");
  });

  it("a body cut off mid-request reaches s3rver not at all", async () => {
    const request = await client.sign(`${server.endpoint}/cond/cut`, {
      method: "PUT",
      headers: { "x-amz-content-sha256": "UNSIGNED-PAYLOAD" },
    });
    let sent = false;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent) return controller.error(new Error("cut"));
        sent = true;
        controller.enqueue(new Uint8Array(64 * 1024).fill(1));
      },
    });
    await expect(fetch(new Request(request.url, { method: "PUT", headers: request.headers, body, duplex: "half" } as RequestInit))).rejects.toThrow();
    expect(await read("cut")).toBe("HTTP 404");
  });
});
