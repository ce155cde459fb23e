'use strict';
/**
 * `pm2 jlist` and `pm2 trigger` without the CLI: the same calls on the sandbox daemon's sockets,
 * through PM2's own axon client (the project's pm2 brings it; the protocol is the same in PM2 5.4,
 * 6.0 and 7.0). A CLI run costs a Node start and PM2's require (about 0.3 s of CPU, seconds of wall
 * time on a busy machine); the tests poll `jlist` while PM2 restarts things.
 *
 * Unlike the CLI, neither starts a daemon where none runs: the call fails, as a poll expects.
 */
const path = require('path');

function load(name) {
  try {
    return require(`pm2/modules/${name}`); // PM2 7 vendors them
  } catch {
    return require(name); // PM2 5 and 6 depend on them
  }
}
const axon = load('pm2-axon');
const rpc = load('pm2-axon-rpc');

/** One call of the daemon's RPC method on a connection of its own, closed after the answer. */
function rpcCall(home, method, args, timeoutMs = 20000) {
  return new Promise((resolve, reject) => {
    const req = axon.socket('req');
    const client = new rpc.Client(req);
    const end = (err, value) => {
      clearTimeout(timer);
      req.close();
      if (err) reject(err);
      else resolve(value);
    };
    const timer = setTimeout(() => end(new Error(`PM2 did not answer ${method} within ${timeoutMs} ms (${home})`)), timeoutMs);
    // axon retries a refused connection forever: a daemon that is not there fails the call instead.
    req.once('error', (err) => end(err));
    req.once('socket error', (err) => end(err));
    req.connect(path.join(home, 'rpc.sock'));
    client.call(method, args, (err, res) => end(err ? new Error(err.message || String(err)) : null, res));
  });
}

/** What `pm2 jlist` prints, parsed. */
function jlist(home, timeoutMs) {
  return rpcCall(home, 'getMonitorData', {}, timeoutMs);
}

/**
 * What `pm2 trigger <name> <action> [param]` prints for the first process of `name` that answers:
 * the action's reply. Listens on the bus before it asks, as the CLI does.
 */
function trigger(home, name, action, param, timeoutMs = 20000) {
  return new Promise((resolve, reject) => {
    const sub = axon.socket('sub-emitter');
    const sock = sub.sock; // the socket under the emitter (its events)
    let timer;
    const end = (err, value) => {
      clearTimeout(timer);
      sub.close();
      if (err) reject(err);
      else resolve(value);
    };
    timer = setTimeout(() => end(new Error(`no reply to ${action} from ${name} within ${timeoutMs} ms`)), timeoutMs);
    sock.once('socket error', (err) => end(err));
    sub.on('axm:reply', (ret) => {
      if (ret?.process?.name === name && ret.data?.action_name === action) end(null, ret.data.return);
    });
    sock.once('connect', () => {
      const cmd = { msg: action, name };
      if (param !== undefined) cmd.opts = param;
      rpcCall(home, 'msgProcess', cmd, timeoutMs).then(
        (res) => {
          if (!res || res.process_count === 0) end(new Error(`no process named ${name} received ${action}`));
        },
        (err) => end(err),
      );
    });
    sub.connect(path.join(home, 'pub.sock'));
  });
}

module.exports = { rpcCall, jlist, trigger };
