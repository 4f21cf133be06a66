#!/usr/bin/env node
// Serve an in-memory PGlite (WASM PostgreSQL 17.5 + TimescaleDB 2.23) over
// the PostgreSQL wire protocol on loopback, for the test-suite.
//
//   node tests/support/pglite_timescale.mjs --port N [--host 127.0.0.1]
//                                           [--exit-on-stdin-close] [--debug]
//
// Prints exactly one line "READY <port>" on stdout once listening (--port 0
// picks a free port and reports it). Exits 0 on SIGTERM/SIGINT (and, with
// --exit-on-stdin-close, when stdin reaches EOF, i.e. the parent died).
// --debug logs connections and protocol message types to stderr.
// User/password: anything is accepted (use postgres/postgres). The database
// name is ignored: every connection gets database "postgres".
//
// Why not PGLiteSocketServer from @electric-sql/pglite-socket 0.0.20 (which
// package.json still pins)? Its handler feeds each raw TCP chunk straight
// into PGlite. Measured with psycopg 3:
//   * a protocol message split over several chunks (e.g. a ~100 KB query)
//     aborts the WASM module ("RuntimeError: unreachable") and kills node;
//   * an SSLRequest is answered with an auth message, so libpq with the
//     default sslmode=prefer fails ("received invalid response to SSL
//     negotiation: R");
//   * COPY ... FROM STDIN aborts the WASM module (PGlite cannot wait for
//     CopyData that is not already in its input buffer);
//   * PGlite is a single backend: session state (open transaction, SET,
//     temp tables, prepared statements) leaks into the next connection, and
//     a client that leaves after its StartupMessage wedges the backend.
// So this script uses only PGlite + its timescaledb extension and does its
// own small, strict front end:
//   * answers SSLRequest/GSSENCRequest with 'N' (no encryption), closes
//     CancelRequest sockets (cancel is not supported);
//   * does the password exchange itself (cleartext, anything accepted), so
//     only clients that finished it are queued and handed to PGlite;
//   * serves ONE client at a time; later clients wait in a FIFO queue;
//   * reassembles whole protocol messages and hands them to PGlite in
//     batches ending where the client waits for an answer (Sync, Query,
//     Flush, CopyDone, CopyFail, FunctionCall);
//   * emulates COPY FROM STDIN (simple Query, COPY first): answers
//     CopyInResponse itself, then gives PGlite Query + data + CopyDone at once;
//   * after a client goes away (Terminate is not forwarded): Sync, ROLLBACK,
//     DISCARD ALL, then search_path and TimeZone='UTC' again, so the next
//     client starts from a clean session;
//   * a WASM abort or a protocol state it cannot recover from exits 1.

import net from 'node:net'
import process from 'node:process'
import { PGlite } from '@electric-sql/pglite'
import { timescaledb } from '@electric-sql/pglite/timescaledb'

const SSL_REQUEST = 80877103
const GSSENC_REQUEST = 80877104
const CANCEL_REQUEST = 80877102
// Frontend message types after which a client waits for the server.
const FLUSH_AFTER = new Set(['S', 'Q', 'H', 'c', 'f', 'F'])

function parseArgs(argv) {
  const opts = { port: null, host: '127.0.0.1', exitOnStdinClose: false, debug: false }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--port') opts.port = Number(argv[++i])
    else if (a.startsWith('--port=')) opts.port = Number(a.slice(7))
    else if (a === '--host') opts.host = argv[++i]
    else if (a.startsWith('--host=')) opts.host = a.slice(7)
    else if (a === '--exit-on-stdin-close') opts.exitOnStdinClose = true
    else if (a === '--debug') opts.debug = true
    else {
      console.error(`unknown argument: ${a}`)
      process.exit(2)
    }
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
    console.error('usage: node pglite_timescale.mjs --port N [--host 127.0.0.1]')
    process.exit(2)
  }
  return opts
}

const opts = parseArgs(process.argv.slice(2))
const debug = (...args) => {
  if (opts.debug) {
    console.error(`[pglite_timescale ${new Date().toISOString().slice(11, 23)}]`, ...args)
  }
}

const COPY_FROM_STDIN = /\bcopy\b[\s\S]*\bfrom\s+stdin\b/i
const COPY_FROM_STDIN_FIRST = /^(\s|--[^\n]*\n|\/\*[\s\S]*?\*\/)*copy\b[^;]*\bfrom\s+stdin\b[^;]*;?\s*\0?$/i
const COPY_LEAD = /^(\s|--[^\n]*\n|\/\*[\s\S]*?\*\/)*copy\b/i
const COPY_BINARY = /\(\s*format\s+'?binary\b|\bbinary\b/i

function copyInResponse(binary) {
  // 'G', int32 len, int8 overall format, int16 column count (0: unknown).
  const msg = Buffer.alloc(1 + 4 + 1 + 2)
  msg.write('G', 0, 'latin1')
  msg.writeInt32BE(7, 1)
  msg.writeInt8(binary ? 1 : 0, 5)
  msg.writeInt16BE(0, 6)
  return msg
}

function errorResponse(severity, code, message) {
  const fields = Buffer.from(
    `S${severity}\0V${severity}\0C${code}\0M${message}\0\0`, 'utf8')
  const msg = Buffer.alloc(5 + fields.length)
  msg.write('E', 0, 'latin1')
  msg.writeInt32BE(4 + fields.length, 1)
  fields.copy(msg, 5)
  return msg
}

function dropFirstMessage(out, type) {
  // Remove the first backend message of the given type from a response.
  const b = Buffer.from(out)
  for (let off = 0; off + 5 <= b.length;) {
    const len = b.readInt32BE(off + 1)
    if (b[off] === type) {
      return Buffer.concat([b.subarray(0, off), b.subarray(off + 1 + len)])
    }
    off += 1 + len
  }
  return b
}

function simpleQuery(sql) {
  const body = Buffer.from(sql + '\0', 'utf8')
  const msg = Buffer.alloc(5 + body.length)
  msg.write('Q', 0, 'latin1')
  msg.writeInt32BE(4 + body.length, 1)
  body.copy(msg, 5)
  return msg
}
const SYNC = Buffer.from([0x53, 0, 0, 0, 4])

let db
let fatal = false

function die(err) {
  if (fatal) return
  fatal = true
  console.error('[pglite_timescale] fatal:', err && err.stack ? err.stack : err)
  process.exit(1)
}

function messageTypes(b, untyped = false) {
  const types = []
  let off = 0
  if (untyped) {
    types.push('<startup>')
    off = b.readInt32BE(0)
  }
  while (off + 5 <= b.length) {
    types.push(String.fromCharCode(b[off]))
    off += 1 + b.readInt32BE(off + 1)
  }
  return types.join('')
}

function runRaw(buf) {
  // execProtocolRawSync is synchronous, so calls can never interleave.
  // A throw here means the WASM instance is dead: stop the whole server.
  try {
    const out = db.execProtocolRawSync(new Uint8Array(buf.buffer, buf.byteOffset, buf.length))
    if (opts.debug) {
      debug(`-> ${messageTypes(buf, buf[0] === 0)}  <- ${messageTypes(Buffer.from(out))}`)
    }
    return out
  } catch (err) {
    die(err)
    return new Uint8Array(0)
  }
}

function expectReady(out, what) {
  // Every reset step must end in ReadyForQuery, else PGlite's protocol
  // state is off and later clients would hang: fail loudly instead.
  const b = Buffer.from(out)
  let last = -1
  for (let off = 0; off + 5 <= b.length; off += 1 + b.readInt32BE(off + 1)) last = b[off]
  if (last !== 0x5a /* 'Z' */) die(new Error(`no ReadyForQuery after ${what}`))
}

function resetSession() {
  expectReady(runRaw(SYNC), 'Sync')
  expectReady(runRaw(simpleQuery('ROLLBACK')), 'ROLLBACK')
  expectReady(runRaw(simpleQuery('DISCARD ALL')), 'DISCARD ALL')
  initSession()
}

function initSession() {
  // PGlite's built-in reset value of search_path is "pg_catalog" (it SETs
  // "public" itself after boot), so DISCARD ALL would hide every table:
  // restore PostgreSQL's default. TimeZone: like a server configured with
  // timezone = 'UTC' (PGlite's default is 'GMT'). PGlite sends no
  // ParameterStatus after SET, so a client sees at connect time the values
  // set here.
  expectReady(runRaw(simpleQuery('SET search_path TO "$user", public')), 'SET search_path')
  expectReady(runRaw(simpleQuery("SET TIME ZONE 'UTC'")), 'SET TIME ZONE')
}

// ---- one-at-a-time scheduling -------------------------------------------
const queue = []
let active = null
const sockets = new Set()

function pump() {
  while (!fatal && !active && queue.length) {
    const client = queue.shift()
    if (client.sock.destroyed) continue
    active = client
    client.start()
  }
}

function release(client) {
  if (active !== client) return
  active = null
  if (!fatal) resetSession()
  debug('client done, session reset; queued:', queue.length)
  setImmediate(pump)
}

// AuthenticationCleartextPassword. PGlite itself asks for MD5 and accepts
// any password; we ask in front of it, so that a client that gives up while
// queued never leaves PGlite half-way through a startup.
const AUTH_CLEARTEXT = Buffer.from([0x52, 0, 0, 0, 8, 0, 0, 0, 3])

// ---- per-connection protocol front end ----------------------------------
function handleSocket(sock) {
  const tag = `client :${sock.remotePort}`
  debug(`${tag} connected`)
  sockets.add(sock)
  sock.setNoDelay(true)
  let buf = Buffer.alloc(0)
  // negotiate -> auth -> queued -> running
  let phase = 'negotiate'
  let startup = null // StartupMessage, held until our turn
  let password = null // PasswordMessage, held until our turn
  let pending = [] // complete messages not yet handed to PGlite
  let closed = false
  let copyIn = false

  const client = {
    sock,
    start() {
      debug(`${tag} attached`)
      const r = Buffer.from(runRaw(startup))
      if (r[0] !== 0x52 /* 'R' */) {
        write(r) // e.g. an ErrorResponse for a bad startup packet
        return finish()
      }
      phase = 'running'
      write(runRaw(password)) // AuthenticationOk, ParameterStatus..., ReadyForQuery
      process_()
    },
  }

  const write = (out) => {
    if (out && out.length && !sock.destroyed) sock.write(Buffer.from(out))
  }

  function finish() {
    if (closed) return
    closed = true
    debug(`${tag} closed (phase ${phase})`)
    sockets.delete(sock)
    if (!sock.destroyed) sock.destroy()
    const idx = queue.indexOf(client)
    if (idx >= 0) queue.splice(idx, 1)
    release(client)
  }

  function process_() {
    if (closed) return
    if (phase === 'negotiate') {
      // Untyped packets: int32 length, int32 code, ...
      while (buf.length >= 8) {
        const len = buf.readInt32BE(0)
        if (len < 8 || len > 10000) return finish()
        if (buf.length < len) return
        const code = buf.readInt32BE(4)
        const packet = buf.subarray(0, len)
        buf = buf.subarray(len)
        if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
          sock.write('N')
        } else if (code === CANCEL_REQUEST) {
          debug('CancelRequest ignored')
          return finish()
        } else {
          startup = Buffer.from(packet)
          phase = 'auth'
          sock.write(AUTH_CLEARTEXT)
          break
        }
      }
    }
    if (phase === 'auth') {
      if (buf.length < 5) return
      const len = buf.readInt32BE(1)
      if (buf.length < 1 + len) return
      if (buf[0] !== 0x70 /* 'p' */) return finish()
      password = Buffer.from(buf.subarray(0, 1 + len))
      buf = buf.subarray(1 + len)
      phase = 'queued'
      queue.push(client)
      pump()
      return
    }
    if (phase !== 'running') return
    // Typed messages: byte type, int32 length (incl. itself), body.
    while (!closed && buf.length >= 5) {
      const len = buf.readInt32BE(1)
      if (len < 4) return finish()
      if (buf.length < 1 + len) break
      const type = String.fromCharCode(buf[0])
      const msg = buf.subarray(0, 1 + len)
      buf = buf.subarray(1 + len)
      if (type === 'X') {
        // Terminate: never forwarded (the backend must outlive the client).
        return finish()
      }
      if (copyIn) {
        // Emulated COPY FROM STDIN: hold everything until CopyDone/Fail.
        pending.push(msg)
        if (type === 'c' || type === 'f') {
          copyIn = false
          flush(true)
        }
        continue
      }
      if (type === 'Q' || type === 'P') {
        const sql = msg.subarray(5).toString('utf8')
        const text = type === 'Q' ? sql : sql.slice(sql.indexOf('\0') + 1)
        if (COPY_LEAD.test(text) && COPY_FROM_STDIN.test(text)) {
          if (type === 'Q' && COPY_FROM_STDIN_FIRST.test(text)) {
            // PGlite aborts when COPY FROM STDIN waits for data that is not
            // already in its input buffer. So answer CopyInResponse
            // ourselves, collect the data, and hand PGlite the Query plus
            // all CopyData and the CopyDone in a single call.
            pending.push(msg)
            copyIn = true
            write(copyInResponse(COPY_BINARY.test(text)))
            continue
          }
          write(errorResponse('FATAL', '0A000',
            'pglite_timescale: COPY FROM STDIN is only supported as the ' +
            'first statement of a simple Query message'))
          return finish()
        }
      }
      pending.push(msg)
      if (FLUSH_AFTER.has(type)) flush(false)
    }
  }

  function flush(stripCopyIn) {
    const batch = Buffer.concat(pending)
    pending = []
    let out = runRaw(batch)
    if (stripCopyIn) out = dropFirstMessage(out, 0x47 /* 'G' */)
    write(out)
  }

  sock.on('data', (chunk) => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk
    process_()
  })
  sock.on('error', (err) => debug(`${tag} socket error: ${err.message}`))
  sock.on('close', finish)
}

// ---- main ---------------------------------------------------------------
// A fresh in-memory PGlite always runs in database "template1" (its
// `database` option is only honoured for an existing data directory). So
// boot once to run initdb, dump that data directory, and boot the real
// instance from it in database "postgres" (~2 s extra, still all in memory).
{
  const seed = await PGlite.create()
  const datadir = await seed.dumpDataDir('none')
  await seed.close()
  db = await PGlite.create({
    loadDataDir: datadir,
    database: 'postgres',
    username: 'postgres',
    extensions: { timescaledb },
  })
}
await db.waitReady
initSession()

const server = net.createServer(handleSocket)
server.on('error', die)
await new Promise((resolve) => server.listen(opts.port, opts.host, resolve))
const port = server.address().port
process.stdout.write(`READY ${port}\n`)

let stopping = false
async function shutdown(code = 0) {
  if (stopping) return
  stopping = true
  setTimeout(() => process.exit(code), 3000).unref()
  server.close()
  for (const s of sockets) s.destroy()
  try {
    await db.close()
  } catch {
    // ignore: exiting anyway
  }
  process.exit(code)
}
process.on('SIGTERM', () => shutdown(0))
process.on('SIGINT', () => shutdown(0))
if (opts.exitOnStdinClose) {
  process.stdin.on('end', () => shutdown(0))
  process.stdin.on('error', () => shutdown(0))
  process.stdin.resume()
}
