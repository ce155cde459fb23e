'use strict';
/**
 * Follows a log file from a given offset: counts complete lines as they land and keeps the text
 * for judging. With `watch: true` it also reacts to inotify events (fs.watch) and stamps each
 * chunk with the wall-clock time it became visible, which times a row whose lines are not written
 * by a process we can instrument (row c: PM2's own log writing).
 */
const fs = require('fs');
const { performance } = require('perf_hooks');

const now = () => performance.timeOrigin + performance.now();

class Tail {
  /** @param {string} file @param {{ watch?: boolean, every?: number }} [opts] */
  constructor(file, { watch = false, every = 100 } = {}) {
    this.file = file;
    this.offset = fs.existsSync(file) ? fs.statSync(file).size : 0;
    this.start = this.offset;
    this.lines = 0;
    this.partial = '';
    /** [text of complete lines, time seen] */
    this.chunks = [];
    this.lastGrowth = now();
    this.fd = undefined;
    this.buf = Buffer.allocUnsafe(1 << 20);
    this.timer = setInterval(() => this.read(), every);
    this.watcher = undefined;
    if (watch) this.#watch();
  }

  #watch() {
    try {
      this.watcher = fs.watch(this.file, () => this.read());
      this.watcher.on('error', () => {});
    } catch {
      // The file does not exist yet: try again shortly.
      setTimeout(() => {
        if (this.timer) this.#watch();
      }, 20).unref();
    }
  }

  read() {
    if (this.fd === undefined) {
      try {
        this.fd = fs.openSync(this.file, 'r');
      } catch {
        return;
      }
    }
    const at = now();
    let text = '';
    for (;;) {
      const n = fs.readSync(this.fd, this.buf, 0, this.buf.length, this.offset);
      if (n <= 0) break;
      this.offset += n;
      text += this.buf.toString('utf8', 0, n);
    }
    if (text === '') return;
    this.lastGrowth = at;
    text = this.partial + text;
    const cut = text.lastIndexOf('\n');
    if (cut < 0) {
      this.partial = text;
      return;
    }
    this.partial = text.slice(cut + 1);
    const complete = text.slice(0, cut + 1);
    let count = 0;
    for (let i = complete.indexOf('\n'); i >= 0; i = complete.indexOf('\n', i + 1)) count++;
    this.lines += count;
    this.chunks.push([complete, at]);
  }

  /** Stop following; returns the file's mtime (ms, the time of the last write). */
  stop() {
    this.read();
    clearInterval(this.timer);
    this.timer = undefined;
    if (this.watcher) this.watcher.close();
    let mtime = 0;
    try {
      mtime = fs.fstatSync(this.fd).mtimeMs;
    } catch {
      /* no file */
    }
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
    return mtime;
  }
}

module.exports = { Tail, now };
