// A plain textarea with a line-number gutter and marked lines: the policy editor. Lines with
// an error get class "error" in the gutter (with the message as a tooltip) and a band
// behind the text.

export interface LineMark {
  line: number;
  message: string;
}

export class CodeEditor {
  readonly element: HTMLElement;
  readonly textarea: HTMLTextAreaElement;
  private readonly gutter: HTMLElement;
  private readonly bands: HTMLElement;
  private lineCount = 0;
  private marks: LineMark[] = [];

  constructor(
    private readonly onChange: () => void,
    readonly lineHeight = 18,
  ) {
    this.element = document.createElement("div");
    this.element.className = "code-editor";
    this.gutter = document.createElement("div");
    this.gutter.className = "gutter";
    this.gutter.setAttribute("aria-hidden", "true");
    const area = document.createElement("div");
    area.className = "code-area";
    this.bands = document.createElement("div");
    this.bands.className = "bands";
    this.textarea = document.createElement("textarea");
    this.textarea.id = "policy-text";
    this.textarea.wrap = "off";
    this.textarea.spellcheck = false;
    this.textarea.setAttribute("aria-label", "Policy JSON");
    this.textarea.style.lineHeight = `${lineHeight}px`;
    area.append(this.bands, this.textarea);
    this.element.append(this.gutter, area);
    this.textarea.addEventListener("input", () => {
      this.syncLines();
      this.onChange();
    });
    this.textarea.addEventListener("scroll", () => this.syncScroll());
    this.textarea.addEventListener("keydown", (event) => {
      if (event.key === "Tab" && !event.shiftKey && !event.ctrlKey && !event.altKey) {
        // Two spaces; Escape then Tab leaves the editor (keyboard users are not trapped).
        if (this.tabIndents) {
          event.preventDefault();
          document.execCommand("insertText", false, "  ");
        }
      } else if (event.key === "Escape") {
        this.tabIndents = false;
      }
    });
    this.textarea.addEventListener("focus", () => (this.tabIndents = true));
  }

  private tabIndents = true;

  get value(): string {
    return this.textarea.value;
  }

  set value(text: string) {
    this.textarea.value = text;
    this.syncLines();
  }

  setMarks(marks: LineMark[]): void {
    this.marks = marks;
    this.renderMarks();
  }

  /** Puts the caret on `line` and scrolls it into the middle. */
  goToLine(line: number): void {
    const lines = this.textarea.value.split("\n");
    let offset = 0;
    for (let k = 0; k < line - 1 && k < lines.length; k++) offset += lines[k].length + 1;
    this.textarea.focus();
    this.textarea.setSelectionRange(offset, offset + (lines[line - 1]?.length ?? 0));
    this.textarea.scrollTop = Math.max(0, (line - 1) * this.lineHeight - this.textarea.clientHeight / 2);
    this.syncScroll();
  }

  private syncLines(): void {
    const count = this.textarea.value.split("\n").length;
    if (count !== this.lineCount) {
      this.lineCount = count;
      const fragment = document.createDocumentFragment();
      for (let n = 1; n <= count; n++) {
        const div = document.createElement("div");
        div.textContent = String(n);
        div.dataset.line = String(n);
        div.style.height = `${this.lineHeight}px`;
        fragment.appendChild(div);
      }
      this.gutter.textContent = "";
      this.gutter.appendChild(fragment);
      this.renderMarks();
    }
    this.syncScroll();
  }

  private renderMarks(): void {
    for (const div of this.gutter.querySelectorAll<HTMLElement>(".error")) {
      div.classList.remove("error");
      div.removeAttribute("title");
    }
    this.bands.textContent = "";
    for (const mark of this.marks) {
      const div = this.gutter.querySelector<HTMLElement>(`[data-line="${mark.line}"]`);
      if (div) {
        div.classList.add("error");
        div.title = div.title ? `${div.title}\n${mark.message}` : mark.message;
      }
      const band = document.createElement("div");
      band.className = "band error";
      band.dataset.line = String(mark.line);
      band.style.top = `${(mark.line - 1) * this.lineHeight}px`;
      band.style.height = `${this.lineHeight}px`;
      this.bands.appendChild(band);
    }
    this.syncScroll();
  }

  private syncScroll(): void {
    this.gutter.scrollTop = this.textarea.scrollTop;
    this.bands.style.transform = `translateY(${-this.textarea.scrollTop}px)`;
  }
}
