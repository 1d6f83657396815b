// Drives Squall's OAuth server with the official @atproto/oauth-client-node as a loopback client
// (tests/service/test_oauth_official_client.py runs it). Protocol with the test, one JSON object
// per line: this script prints {"authorize": url}; the test answers the PDS's consent page and
// writes back the callback's query string; the script then makes the calls of CALLS (JSON) with
// the session and prints {"did", "scope", "results": {name: {status, body}}}.
import { NodeOAuthClient, requestLocalLock } from "@atproto/oauth-client-node"
import { createInterface } from 'node:readline'

const pds = process.env.PDS_URL
const scope = process.env.SCOPE
const calls = JSON.parse(process.env.CALLS || '[]')
const redirect = 'http://127.0.0.1/callback'

const memory = () => {
  const m = new Map()
  return { async get(k) { return m.get(k) }, async set(k, v) { m.set(k, v) }, async del(k) { m.delete(k) } }
}

const client = new NodeOAuthClient({
  clientMetadata: {
    client_id: `http://localhost?redirect_uri=${encodeURIComponent(redirect)}&scope=${encodeURIComponent(scope)}`,
    client_name: 'Official client (loopback)',
    redirect_uris: [redirect],
    scope,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    application_type: 'native',
    token_endpoint_auth_method: 'none',
    dpop_bound_access_tokens: true,
  },
  stateStore: memory(),
  sessionStore: memory(),
  allowHttp: true,
  requestLock: requestLocalLock,
  plcDirectoryUrl: process.env.PLC_URL,
})

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]()
const url = await client.authorize(pds, { scope })
console.log(JSON.stringify({ authorize: url.toString() }))
const query = (await lines.next()).value
const { session } = await client.callback(new URLSearchParams(query))
const info = await session.getTokenInfo()

const results = {}
for (const call of calls) {
  const init = { method: call.method, headers: {} }
  if (call.json !== undefined) {
    init.headers['content-type'] = 'application/json'
    init.body = JSON.stringify(call.json).replaceAll('{did}', session.did)
  } else if (call.base64 !== undefined) {
    init.headers['content-type'] = call.contentType
    init.body = Buffer.from(call.base64, 'base64')
  }
  const path = `/xrpc/${call.nsid}${call.query ? '?' + new URLSearchParams(call.query) : ''}`
  const res = await session.fetchHandler(path, init)
  const text = await res.text()
  let body
  try { body = JSON.parse(text) } catch { body = text }
  results[call.name] = { status: res.status, body }
}
console.log(JSON.stringify({ did: session.did, scope: info.scope, results }))
process.exit(0)
