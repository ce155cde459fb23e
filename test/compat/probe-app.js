'use strict';
// A tiny PM2 app for test/compat/probe.js: says hello on the bus once (a topic packet and a
// bare 'ready'), then idles. On SIGINT it exits at once.
const env = process.env;
const instanceVar = env.PROBE_INSTANCE_VAR || 'NODE_APP_INSTANCE';
setTimeout(() => {
  if (process.send) {
    process.send({ topic: 'probe:hello', data: { pid: process.pid, instance: env[instanceVar] ?? null } });
    process.send('ready');
  }
}, 300);
process.on('SIGINT', () => process.exit(0));
setInterval(() => {}, 1 << 30);
