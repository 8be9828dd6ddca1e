// Sends events to a Forward server with an independent implementation, for the
// collector's interop tests.
//
//   node send.js '{"port": 24224, "mode": "PackedForward", "tag": "node.packed", "count": 5,
//                  "sharedKey": "secret", "clientHostname": "node-client"}'
//
// Modes Message, PackedForward and CompressedPackedForward use fluent-logger (with
// requireAckResponse and, when sharedKey is given, its handshake). fluent-logger has no
// Forward mode, so "Forward" does the handshake and writes one Forward request with
// msgpack-lite over a plain socket, then waits for its ack. Prints one JSON line: {"ok": true, "acked": n} or
// {"ok": false, "error": "..."}; exits 0 or 1. Gives up after 15 seconds.
'use strict';

const net = require('net');
const crypto = require('crypto');
const msgpack = require('msgpack-lite');
const fluent = require('fluent-logger');

const args = JSON.parse(process.argv[2]);
const host = args.host || '127.0.0.1';

function finish(result) {
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(result.ok ? 0 : 1);
}

setTimeout(() => finish({ ok: false, error: 'timed out after 15s' }), 15000).unref();

function eventTime(i) {
  const nowMs = Date.now();
  return new fluent.EventTime(Math.floor(nowMs / 1000), (nowMs % 1000) * 1e6 + i);
}

function record(i) {
  return { message: `${args.tag} event ${i}`, seq: i, source: 'fluent-logger-node' };
}

function viaFluentLogger() {
  const quiet = { info() {}, error() {} };
  const sender = fluent.createFluentSender(null, {
    host,
    port: args.port,
    timeout: 5.0,
    eventMode: args.mode,
    requireAckResponse: true,
    ackResponseTimeout: 5000,
    enableReconnect: false,
    internalLogger: quiet,
    security: args.sharedKey
      ? { clientHostname: args.clientHostname || 'node-client', sharedKey: args.sharedKey }
      : undefined,
  });
  sender.on('error', (err) => finish({ ok: false, error: `${err.name}: ${err.message}` }));
  let acked = 0;
  for (let i = 0; i < args.count; i++) {
    sender.emit(args.tag, record(i), eventTime(i), (err) => {
      if (err) finish({ ok: false, error: `${err.name}: ${err.message}` });
      acked += 1;
      if (acked === args.count) {
        sender.end();
        finish({ ok: true, acked });
      }
    });
  }
}

// Forward mode by hand, handshake included, as an independent reading of the spec.
function viaRawForward() {
  const codec = msgpack.createCodec();
  codec.addExtPacker(0x00, fluent.EventTime, fluent.EventTime.pack);
  const chunk = crypto.randomBytes(16).toString('base64');
  const entries = [];
  for (let i = 0; i < args.count; i++) entries.push([eventTime(i), record(i)]);
  const request = msgpack.encode([args.tag, entries, { chunk, size: args.count }], { codec });
  const sha512 = (...parts) => {
    const hash = crypto.createHash('sha512');
    for (const part of parts) hash.update(part);
    return hash.digest('hex');
  };
  const clientHostname = args.clientHostname || 'node-client';
  const salt = crypto.randomBytes(16);
  let nonce = null;
  let state = args.sharedKey ? 'helo' : 'ack';
  const socket = net.connect(args.port, host, () => {
    if (state === 'ack') socket.write(request);
  });
  const decoder = msgpack.createDecodeStream();
  socket.pipe(decoder);
  decoder.on('data', (message) => {
    if (state === 'helo') {
      if (!Array.isArray(message) || message[0] !== 'HELO') {
        finish({ ok: false, error: `expected HELO, got ${JSON.stringify(message)}` });
      }
      nonce = message[1].nonce;
      const digest = sha512(salt, clientHostname, nonce, args.sharedKey);
      socket.write(msgpack.encode(['PING', clientHostname, salt, digest, '', '']));
      state = 'pong';
    } else if (state === 'pong') {
      if (!Array.isArray(message) || message[0] !== 'PONG') {
        finish({ ok: false, error: `expected PONG, got ${JSON.stringify(message)}` });
      }
      if (!message[1]) finish({ ok: false, error: `Authentication failed: ${message[2]}` });
      if (message[4] !== sha512(salt, message[3], nonce, args.sharedKey)) {
        finish({ ok: false, error: 'shared key mismatch in PONG' });
      }
      state = 'ack';
      socket.write(request);
    } else {
      socket.destroy();
      if (message && message.ack === chunk) finish({ ok: true, acked: args.count });
      finish({ ok: false, error: `unexpected response ${JSON.stringify(message)}` });
    }
  });
  socket.on('error', (err) => finish({ ok: false, error: err.message }));
  socket.on('close', () => finish({ ok: false, error: `connection closed in state ${state}` }));
}

if (args.mode === 'Forward') viaRawForward();
else viaFluentLogger();
