/**
 * Intrusive doubly linked queue for the FIFO-based stores: O(1) push at the head, unlink anywhere
 * (delete, replace, promotion) without the index shifting an array would cost.
 */
export class Node<V> {
  /** Toward the head (newer). */
  newer: Node<V> | undefined = undefined;
  /** Toward the tail (older). */
  older: Node<V> | undefined = undefined;
  /** SIEVE's visited bit as 0/1, or S3-FIFO's access count 0..3. */
  freq = 0;
  /** S3-FIFO: which queue holds it. */
  inMain = false;

  constructor(
    readonly key: string,
    public value: V,
    public size: number,
  ) {}
}

export class Queue<V> {
  head: Node<V> | undefined = undefined;
  tail: Node<V> | undefined = undefined;
  bytes = 0;
  length = 0;

  pushHead(n: Node<V>): void {
    n.older = this.head;
    n.newer = undefined;
    if (this.head) this.head.newer = n;
    else this.tail = n;
    this.head = n;
    this.bytes += n.size;
    this.length++;
  }

  unlink(n: Node<V>): void {
    if (n.newer) n.newer.older = n.older;
    else this.head = n.older;
    if (n.older) n.older.newer = n.newer;
    else this.tail = n.newer;
    n.newer = undefined;
    n.older = undefined;
    this.bytes -= n.size;
    this.length--;
  }

  clear(): void {
    this.head = undefined;
    this.tail = undefined;
    this.bytes = 0;
    this.length = 0;
  }
}
