// An append-only list that keeps its newest `capacity` items. Trimming is amortised: the
// array is compacted only once the dead head is as large as the live part.

export class BoundedLog<T> {
  private items: T[] = [];
  private head = 0;

  constructor(readonly capacity: number) {}

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    this.items.push(item);
    if (this.length > this.capacity) {
      this.head += this.length - this.capacity;
      if (this.head >= this.capacity) {
        this.items = this.items.slice(this.head);
        this.head = 0;
      }
    }
  }

  /** 0 is the oldest kept item. */
  at(index: number): T | undefined {
    return index >= 0 && index < this.length ? this.items[this.head + index] : undefined;
  }

  /** 0 is the newest item. */
  newest(index: number): T | undefined {
    return this.at(this.length - 1 - index);
  }

  /** Drops items from the oldest end while `stale` holds. */
  dropOldestWhile(stale: (item: T) => boolean): void {
    while (this.length > 0 && stale(this.items[this.head])) {
      this.head++;
    }
    if (this.head >= this.capacity) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }

  clear(): void {
    this.items = [];
    this.head = 0;
  }

  forEach(visit: (item: T) => void): void {
    for (let i = this.head; i < this.items.length; i++) {
      visit(this.items[i]);
    }
  }
}
