'use strict';
// "Do-it-yourself" reference stack for luka's benchmark: a plain Node.js http server
// that produces every POST /orders body to Kafka with kafkajs, one record per request.
//
// Env: PORT (listens on 127.0.0.1:PORT), BROKERS (comma-separated host:port), TOPIC (default "bench").
// Prints "listening <port>" once the HTTP server listens and the producer is connected.

// Must be set before kafkajs is loaded: we pick the partitioner explicitly below, so no need for the warning.
process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';

const http = require('http');
const { Kafka, Partitioners, logLevel } = require('kafkajs');

const PORT = Number(process.env.PORT);
const BROKERS = (process.env.BROKERS || '')
  .split(',')
  .map((b) => b.trim())
  .filter(Boolean);
const TOPIC = process.env.TOPIC || 'bench';
const BODY_LIMIT = 1024 * 1024; // 1 MiB

if (!Number.isInteger(PORT) || PORT <= 0 || PORT > 65535) {
  console.error('PORT must be set to a TCP port number');
  process.exit(2);
}
if (BROKERS.length === 0) {
  console.error('BROKERS must be set (comma-separated host:port)');
  process.exit(2);
}

const kafka = new Kafka({ clientId: 'node-bench', brokers: BROKERS, logLevel: logLevel.ERROR });
const producer = kafka.producer({
  allowAutoTopicCreation: false,
  // Java-compatible murmur2 partitioner (kafkajs 2.x DefaultPartitioner, formerly JavaCompatiblePartitioner):
  // a key lands on the partition a Java producer (and luka) would pick. NOT Partitioners.LegacyPartitioner,
  // which is kafkajs v1's partitioner and hashes differently from Java.
  createPartitioner: Partitioners.DefaultPartitioner,
});

function reply(res, status, obj, extraHeaders) {
  const body = JSON.stringify(obj);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(body),
    ...extraHeaders,
  });
  res.end(body);
}

function randomKey() {
  let s = '';
  for (let i = 0; i < 9; i++) s += String.fromCharCode(97 + Math.floor(Math.random() * 26));
  return s;
}

async function handleOrder(raw, res) {
  let body;
  try {
    body = JSON.parse(raw.toString('utf8'));
  } catch (e) {
    reply(res, 400, { error: `invalid JSON: ${e.message}` });
    return;
  }
  const id = body !== null && typeof body === 'object' ? body.id : undefined;
  const key = id === undefined || id === null ? randomKey() : String(id);
  try {
    const [meta] = await producer.send({
      topic: TOPIC,
      acks: -1,
      messages: [{ key, value: raw }],
    });
    reply(res, 200, { partition: meta.partition, offset: Number(meta.baseOffset) });
  } catch (e) {
    reply(res, 503, { error: e && e.message ? e.message : String(e) });
  }
}

const server = http.createServer((req, res) => {
  const path = req.url.split('?', 1)[0];
  if (path !== '/orders') {
    req.resume();
    reply(res, 404, { error: 'not found' });
    return;
  }
  if (req.method !== 'POST') {
    req.resume();
    reply(res, 405, { error: 'method not allowed' }, { Allow: 'POST' });
    return;
  }

  const chunks = [];
  let size = 0;
  let tooLarge = false;
  req.on('data', (chunk) => {
    if (tooLarge) return; // keep draining so the connection stays usable
    size += chunk.length;
    if (size > BODY_LIMIT) {
      tooLarge = true;
      chunks.length = 0;
      return;
    }
    chunks.push(chunk);
  });
  req.on('end', () => {
    if (tooLarge) {
      reply(res, 413, { error: `body larger than ${BODY_LIMIT} bytes` });
      return;
    }
    handleOrder(Buffer.concat(chunks, size), res).catch((e) => {
      if (!res.headersSent) reply(res, 500, { error: String(e) });
    });
  });
  req.on('error', () => {
    res.destroy();
  });
});
server.keepAliveTimeout = 60000;

let stopping = false;
async function shutdown() {
  if (stopping) return;
  stopping = true;
  server.close();
  if (typeof server.closeIdleConnections === 'function') server.closeIdleConnections();
  try {
    await producer.disconnect();
  } catch (e) {
    // ignore: we are exiting anyway
  }
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

async function main() {
  const listening = new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(PORT, '127.0.0.1', resolve);
  });
  await Promise.all([listening, producer.connect()]);
  console.log(`listening ${PORT}`);
}

main().catch((e) => {
  console.error(`startup failed: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
