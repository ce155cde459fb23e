/**
 * Files under /proc kept open and read again from their start (`pread` at offset 0): a /proc file
 * shows the kernel's current values on every read, so one `open` per process serves every check
 * before a send, instead of an open, read and close each time.
 */
import fs from 'node:fs';

export class Descriptors<K> {
  /** null: could not be opened, not tried again until closed (openOnce). */
  readonly #fds = new Map<K, number | null>();
  #buf: Buffer;

  constructor(initialBytes = 1024) {
    this.#buf = Buffer.alloc(initialBytes);
  }

  /** Opens `file` under `key` unless it is open; throws the open's error (nothing kept then). */
  open(key: K, file: string): void {
    if (typeof this.#fds.get(key) === 'number') return;
    this.#fds.set(key, fs.openSync(file, 'r'));
  }

  /** Opens `file` under `key`, trying once: false if it cannot be opened (until `close(key)`). */
  openOnce(key: K, file: string): boolean {
    if (!this.#fds.has(key)) {
      try {
        this.#fds.set(key, fs.openSync(file, 'r'));
      } catch {
        this.#fds.set(key, null);
      }
    }
    return typeof this.#fds.get(key) === 'number';
  }

  isOpen(key: K): boolean {
    return typeof this.#fds.get(key) === 'number';
  }

  /**
   * The whole file as it reads now, undefined when it is not open; throws the read's error (ESRCH
   * once the process is reaped). The bytes are valid until the next read.
   */
  read(key: K): Buffer | undefined {
    const fd = this.#fds.get(key);
    if (typeof fd !== 'number') return undefined;
    let n = fs.readSync(fd, this.#buf, 0, this.#buf.length, 0);
    while (n === this.#buf.length) {
      this.#buf = Buffer.alloc(this.#buf.length * 2);
      n = fs.readSync(fd, this.#buf, 0, this.#buf.length, 0);
    }
    return this.#buf.subarray(0, n);
  }

  close(key: K): void {
    const fd = this.#fds.get(key);
    this.#fds.delete(key);
    if (typeof fd !== 'number') return;
    try {
      fs.closeSync(fd);
    } catch {
      /* already closed */
    }
  }
}
