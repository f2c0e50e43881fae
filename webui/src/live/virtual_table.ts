// A table that only has DOM rows for what is visible: a fixed row height, a spacer as tall
// as every row together, and a small pool of row elements moved and refilled on scroll or
// when the data changes. Rendering happens at most once per animation frame.

export interface VirtualTableColumn<Row> {
  header: string;
  width: string;
  /** Fills the cell; called with the same cell element each time the row slot is reused. */
  fill: (cell: HTMLElement, row: Row) => void;
}

export class VirtualTable<Row> {
  readonly element: HTMLElement;
  private readonly viewport: HTMLElement;
  private readonly spacer: HTMLElement;
  private readonly pool: { element: HTMLElement; cells: HTMLElement[]; index: number }[] = [];
  private rowCount = 0;
  private frameRequested = false;
  private selectedIndex = -1;
  /** A key per row, put on the row element as data-key (tests and tools find rows by it). */
  keyOf: ((row: Row) => string) | undefined;

  constructor(
    private readonly columns: VirtualTableColumn<Row>[],
    private readonly rowAt: (index: number) => Row | undefined,
    private readonly onActivate: (row: Row) => void,
    readonly rowHeight = 26,
  ) {
    const template = columns.map((c) => c.width).join(" ");
    const header = document.createElement("div");
    header.className = "vt-header";
    header.setAttribute("role", "row");
    header.style.gridTemplateColumns = template;
    for (const column of columns) {
      const cell = document.createElement("div");
      cell.setAttribute("role", "columnheader");
      cell.textContent = column.header;
      header.appendChild(cell);
    }
    this.viewport = document.createElement("div");
    this.viewport.className = "vt-viewport";
    this.viewport.tabIndex = 0;
    this.viewport.setAttribute("role", "rowgroup");
    this.viewport.setAttribute("aria-label", "Drops, newest first; arrow keys move, Enter opens");
    this.spacer = document.createElement("div");
    this.spacer.className = "vt-spacer";
    this.viewport.appendChild(this.spacer);
    this.element = document.createElement("div");
    this.element.className = "vt";
    this.element.setAttribute("role", "table");
    this.element.append(header, this.viewport);
    this.viewport.addEventListener("scroll", () => this.requestRender());
    this.viewport.addEventListener("click", (event) => {
      const rowElement = (event.target as HTMLElement).closest<HTMLElement>(".vt-row");
      if (rowElement && !(event.target as HTMLElement).closest("a")) {
        this.select(Number(rowElement.dataset.index));
      }
    });
    this.viewport.addEventListener("keydown", (event) => this.onKey(event));
    new ResizeObserver(() => this.requestRender()).observe(this.viewport);
  }

  get scrollTop(): number {
    return this.viewport.scrollTop;
  }

  /** New rows were added in front (index 0 = newest): keep what the user reads in place. */
  setRowCount(count: number, addedInFront: number): void {
    this.rowCount = count;
    if (addedInFront > 0) {
      if (this.selectedIndex >= 0) {
        this.selectedIndex += addedInFront;
      }
      if (this.viewport.scrollTop > 0) {
        this.spacer.style.height = `${count * this.rowHeight}px`;
        this.viewport.scrollTop += addedInFront * this.rowHeight;
      }
    }
    this.requestRender();
  }

  reset(count: number): void {
    this.rowCount = count;
    this.selectedIndex = -1;
    this.viewport.scrollTop = 0;
    this.requestRender();
  }

  requestRender(): void {
    if (this.frameRequested) {
      return;
    }
    this.frameRequested = true;
    requestAnimationFrame(() => {
      this.frameRequested = false;
      this.render();
    });
  }

  render(): void {
    this.spacer.style.height = `${this.rowCount * this.rowHeight}px`;
    const height = this.viewport.clientHeight || 400;
    const first = Math.max(0, Math.floor(this.viewport.scrollTop / this.rowHeight) - 2);
    const visible = Math.ceil(height / this.rowHeight) + 4;
    while (this.pool.length < visible) {
      this.pool.push(this.makeRow());
    }
    for (let slot = 0; slot < this.pool.length; slot++) {
      const entry = this.pool[slot];
      const index = first + slot;
      const row = slot < visible && index < this.rowCount ? this.rowAt(index) : undefined;
      if (!row) {
        entry.element.style.display = "none";
        entry.index = -1;
        continue;
      }
      if (entry.index !== index) {
        if (entry.index === -1) {
          entry.element.style.display = "";
        }
        entry.element.style.transform = `translateY(${index * this.rowHeight}px)`;
        entry.element.dataset.index = String(index);
        entry.index = index;
      }
      const selected = index === this.selectedIndex;
      if (entry.element.classList.contains("selected") !== selected) {
        entry.element.classList.toggle("selected", selected);
      }
      if (this.keyOf) {
        const key = this.keyOf(row);
        if (entry.element.dataset.key !== key) {
          entry.element.dataset.key = key;
        }
      }
      for (let c = 0; c < this.columns.length; c++) {
        this.columns[c].fill(entry.cells[c], row);
      }
    }
  }

  private makeRow(): { element: HTMLElement; cells: HTMLElement[]; index: number } {
    const element = document.createElement("div");
    element.className = "vt-row";
    element.setAttribute("role", "row");
    element.style.height = `${this.rowHeight}px`;
    element.style.gridTemplateColumns = this.columns.map((c) => c.width).join(" ");
    const cells = this.columns.map(() => {
      const cell = document.createElement("div");
      cell.setAttribute("role", "cell");
      element.appendChild(cell);
      return cell;
    });
    this.viewport.appendChild(element);
    return { element, cells, index: -1 };
  }

  private select(index: number): void {
    if (index < 0 || index >= this.rowCount) {
      return;
    }
    this.selectedIndex = index;
    const top = index * this.rowHeight;
    if (top < this.viewport.scrollTop) {
      this.viewport.scrollTop = top;
    } else if (top + this.rowHeight > this.viewport.scrollTop + this.viewport.clientHeight) {
      this.viewport.scrollTop = top + this.rowHeight - this.viewport.clientHeight;
    }
    const row = this.rowAt(index);
    if (row) {
      this.onActivate(row);
    }
    this.requestRender();
  }

  private onKey(event: KeyboardEvent): void {
    const page = Math.max(1, Math.floor(this.viewport.clientHeight / this.rowHeight) - 1);
    const moves: Record<string, number> = { ArrowDown: 1, ArrowUp: -1, PageDown: page, PageUp: -page };
    if (event.key in moves) {
      event.preventDefault();
      this.select(Math.min(this.rowCount - 1, Math.max(0, this.selectedIndex + moves[event.key])));
    } else if (event.key === "Home") {
      event.preventDefault();
      this.select(0);
    } else if (event.key === "End") {
      event.preventDefault();
      this.select(this.rowCount - 1);
    }
  }
}
