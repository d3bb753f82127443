// Host memory that backs guest-physical memory: an anonymous mapping (private
// to one process, usable in any number of VMs of this process) or a memfd
// (shareable: the same pages can also be mapped again from the fd). Exposed as
// an ArrayBuffer over the mapping itself: no copies.
//
// Lifetime: dispose() unmaps. It first DETACHES the ArrayBuffer (every view
// becomes length 0), so JS can never touch unmapped memory. A mapping still
// used by a VM memory slot cannot be disposed (the guest would keep using the
// pages KVM resolved): delete the slot or dispose the VM first. A GuestMemory
// that is garbage collected without dispose() is unmapped by its finalizer.
import { DisposedError, HostError } from './errors';
import { PAGE_SIZE } from './constants';
import { native } from './native';

/** Matches native/addon/memory.cc MapFlags. */
const MapFlag = { POPULATE: 1, HUGETLB: 2, LOCK: 4, HUGEPAGE_ADVISE: 8 } as const;

/** How huge pages back the memory. */
export type HugePages =
  /** Ordinary 4 KiB pages. */
  | 'none'
  /** madvise(MADV_HUGEPAGE): transparent huge pages, best effort. */
  | 'transparent'
  /** MAP_HUGETLB / MFD_HUGETLB: pre-reserved 2 MiB hugetlbfs pages (fails if none reserved). */
  | 'hugetlb';

/** Options of GuestMemory.anonymous / GuestMemory.memfd. */
export interface GuestMemoryOptions {
  /** mlock() every page (needs RLIMIT_MEMLOCK headroom). */
  lock?: boolean;
  /** Fault every page in at creation (MAP_POPULATE). */
  populate?: boolean;
  /** Huge page backing; default 'none'. */
  hugePages?: HugePages;
  /** Name of the memfd (shows in /proc/self/maps as /memfd:NAME). */
  name?: string;
}

/** A size: bytes as a number or bigint, or a string such as '64K', '2M', '1G'. */
export type Size = number | bigint | string;

/** Parses a Size into bytes; throws on anything that is not a non-negative integer. */
export function parseSize(size: Size, what = 'size'): number {
  let n: number;
  if (typeof size === 'bigint') n = Number(size);
  else if (typeof size === 'number') n = size;
  else {
    const m = /^\s*(\d+)\s*([KMG]?)(i?B)?\s*$/i.exec(size);
    if (!m) throw new TypeError(`${what} '${size}' is not a size (use bytes or e.g. '64K', '2M', '1G')`);
    n = Number(m[1]) * { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[m[2].toUpperCase() as '' | 'K' | 'M' | 'G'];
  }
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`${what} must be a non-negative integer number of bytes, got ${String(size)}`);
  return n;
}

function checkPageMultiple(bytes: number, hugePages: HugePages): void {
  if (bytes === 0) throw new RangeError('GuestMemory size must not be zero');
  if (bytes % PAGE_SIZE !== 0) throw new RangeError(`GuestMemory size ${bytes} is not a multiple of the ${PAGE_SIZE}-byte page size`);
  const huge = 2 * 1024 * 1024;
  if (hugePages === 'hugetlb' && bytes % huge !== 0) throw new RangeError(`GuestMemory size ${bytes} is not a multiple of the 2 MiB huge page size`);
}

function mapFlags(o: GuestMemoryOptions): number {
  const huge = o.hugePages ?? 'none';
  if (!['none', 'transparent', 'hugetlb'].includes(huge)) throw new TypeError(`unknown hugePages option '${huge}' (none, transparent or hugetlb)`);
  return (o.populate ? MapFlag.POPULATE : 0) | (o.lock ? MapFlag.LOCK : 0) |
    (huge === 'hugetlb' ? MapFlag.HUGETLB : 0) | (huge === 'transparent' ? MapFlag.HUGEPAGE_ADVISE : 0);
}

/** Runs a mapping call, turning ENOMEM for hugetlb memory into an error that says why. */
function withHugetlbHint<T>(huge: HugePages, bytes: number, f: () => T): T {
  try {
    return f();
  } catch (err) {
    if (huge === 'hugetlb' && err instanceof HostError && err.code === 'ENOMEM') {
      throw new HostError(err.syscall, err.errno,
        `not enough free 2 MiB hugetlb pages for ${bytes} bytes (reserve them in /proc/sys/vm/nr_hugepages)`);
    }
    throw err;
  }
}

/** Who holds a GuestMemory in a VM slot (Vm implements it). */
export interface MemoryUser { describeSlot(slot: number): string }

const fdRegistry = new FinalizationRegistry<number>((fd) => { try { native.close(fd); } catch { /* already closed */ } });

/** Page-aligned host memory for guests, exposed as an ArrayBuffer. */
export class GuestMemory implements Disposable {
  #buffer: ArrayBuffer | undefined;
  #fd: number;
  readonly #options: GuestMemoryOptions;
  readonly #users = new Map<MemoryUser, Set<number>>();

  private constructor(buffer: ArrayBuffer, fd: number, readonly kind: 'anonymous' | 'memfd', options: GuestMemoryOptions) {
    this.#buffer = buffer;
    this.#fd = fd;
    this.#options = options;
    this.size = buffer.byteLength;
    if (fd >= 0) fdRegistry.register(this, fd, this);
  }

  /** Size in bytes (a multiple of the page size). */
  readonly size: number;

  /** Private anonymous memory (MAP_PRIVATE|MAP_ANONYMOUS), zero-filled. */
  static anonymous(size: Size, options: GuestMemoryOptions = {}): GuestMemory {
    const bytes = parseSize(size, 'GuestMemory size');
    checkPageMultiple(bytes, options.hugePages ?? 'none');
    const buffer = withHugetlbHint(options.hugePages ?? 'none', bytes, () => native.mmap(-1, BigInt(bytes), 0n, mapFlags(options)));
    return new GuestMemory(buffer, -1, 'anonymous', options);
  }

  /**
   * Shared memory backed by a memfd (MAP_SHARED), zero-filled. The same pages can
   * be put into slots of several VMs, and mapped again at another host address
   * with remap(); writes through any mapping are seen by all.
   */
  static memfd(size: Size, options: GuestMemoryOptions = {}): GuestMemory {
    const bytes = parseSize(size, 'GuestMemory size');
    const huge = options.hugePages ?? 'none';
    checkPageMultiple(bytes, huge);
    const fd = native.memfdCreate(options.name ?? 'elisa-guest', huge === 'hugetlb');
    try {
      native.ftruncate(fd, BigInt(bytes));
      // MFD_HUGETLB already selects hugetlbfs pages: do not pass MAP_HUGETLB again.
      const flags = mapFlags({ ...options, hugePages: huge === 'hugetlb' ? 'none' : huge });
      const buffer = withHugetlbHint(huge, bytes, () => native.mmap(fd, BigInt(bytes), 0n, flags));
      return new GuestMemory(buffer, fd, 'memfd', options);
    } catch (err) {
      native.close(fd);
      throw err;
    }
  }

  /** The mapping. Views of it become empty (detached) when the memory is disposed. */
  get buffer(): ArrayBuffer {
    if (this.#buffer === undefined) throw new DisposedError(this.toString());
    return this.#buffer;
  }

  /** A Uint8Array over [offset, offset+length) of the mapping. */
  bytes(offset = 0, length = this.size - offset): Uint8Array {
    return new Uint8Array(this.buffer, offset, length);
  }

  /** The memfd (-1 for anonymous memory). Owned by this object: do not close it. */
  get fd(): number {
    if (this.#buffer === undefined) throw new DisposedError(this.toString());
    return this.#fd;
  }

  /** True once dispose() ran. */
  get disposed(): boolean { return this.#buffer === undefined; }

  /** Host virtual address of byte 0 (diagnostics; compare with /proc/self/maps). */
  get hostAddress(): bigint { return native.addressOf(this.buffer); }

  /**
   * Maps the same memfd pages again at a new host address, as an independent
   * GuestMemory owning a duplicate of the fd (either can be disposed first).
   * Only for memfd memory.
   */
  remap(): GuestMemory {
    if (this.kind !== 'memfd') throw new TypeError('remap() needs memfd-backed memory (GuestMemory.memfd); this is anonymous memory');
    const huge = this.#options.hugePages ?? 'none';
    const flags = mapFlags({ ...this.#options, hugePages: huge === 'hugetlb' ? 'none' : huge });
    const fd = native.dup(this.fd);
    try {
      return new GuestMemory(native.mmap(fd, BigInt(this.size), 0n, flags), fd, 'memfd', this.#options);
    } catch (err) {
      native.close(fd);
      throw err;
    }
  }

  /** @internal Records that `user` put this memory into `slot`. */
  attach(user: MemoryUser, slot: number): void {
    if (this.#buffer === undefined) throw new DisposedError(this.toString());
    let slots = this.#users.get(user);
    if (!slots) this.#users.set(user, slots = new Set());
    slots.add(slot);
  }

  /** @internal Records that `user` no longer uses this memory in `slot`. */
  detach(user: MemoryUser, slot: number): void {
    const slots = this.#users.get(user);
    slots?.delete(slot);
    if (slots?.size === 0) this.#users.delete(user);
  }

  /** Where this memory is in use, e.g. ['Vm 3 slot 0 (gpa 0x0, 64 KiB)']. */
  get usedBy(): string[] {
    return [...this.#users].flatMap(([user, slots]) => [...slots].map((s) => user.describeSlot(s)));
  }

  /**
   * Unmaps the memory (detaching the ArrayBuffer first) and closes the memfd.
   * Idempotent. Throws if a VM slot still uses it.
   */
  dispose(): void {
    if (this.#buffer === undefined) return;
    if (this.#users.size > 0) {
      throw new Error(`${this} is still in use by ${this.usedBy.join(', ')}: delete those slots or dispose the VM first`);
    }
    native.munmap(this.#buffer);
    this.#buffer = undefined;
    if (this.#fd >= 0) {
      fdRegistry.unregister(this);
      native.close(this.#fd);
      this.#fd = -1;
    }
  }

  /** Same as dispose(), for `using`. */
  [Symbol.dispose](): void { this.dispose(); }

  /** E.g. 'GuestMemory(memfd, 2 MiB)', as used in messages. */
  toString(): string {
    return `GuestMemory(${this.kind}, ${this.size >= 1024 * 1024 ? `${this.size / 1024 / 1024} MiB` : `${this.size / 1024} KiB`})`;
  }
}
