// Placeholder until the benchmark issue lands: says so instead of pretending to measure.
console.log("npm run bench: the benchmark is not written yet (see the benchmark issue).");
process.exitCode = 1;
