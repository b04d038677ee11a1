/*
 * crowd-html-elements.js: the stream_router sandbox's own version of the "crowd HTML elements"
 * that Amazon A2I worker templates load from https://assets.crowd.aws/crowd-html-elements.js.
 *
 * Written here from AWS's documentation of the elements (SageMaker developer guide, "Crowd HTML
 * Elements Reference": one page per element with its attributes, regions and output). No code
 * by AWS or anyone else is copied. Plain ES2020, one file, no dependencies, no build step. The
 * only network request it makes is the answer POST to the URL the page names (see below).
 *
 * Elements: crowd-form, crowd-button, crowd-classifier, crowd-classifier-multi-select,
 * crowd-image-classifier, crowd-image-classifier-multi-select, crowd-input, crowd-text-area,
 * crowd-checkbox, crowd-toggle-button, crowd-radio-group, crowd-radio-button, crowd-slider,
 * crowd-bounding-box, crowd-instructions, crowd-alert, crowd-card. Any other crowd-* element
 * inside a form gets a visible "not available" note.
 *
 * answerContent: each named element inside a crowd-form adds one key (its name attribute).
 * Elements left empty add nothing, except checkboxes, toggle buttons and radio buttons (and
 * native checkboxes), whose documented output includes false.
 *   crowd-classifier, crowd-image-classifier  {name: {"label": "x"}}
 *                                             (image classifier: + "workerComment" when written)
 *   crowd-classifier-multi-select,            {name: {"labels": ["x", "y"]}}  (categories order)
 *   crowd-image-classifier-multi-select       (image: + "workerComment" when written)
 *   crowd-input, crowd-text-area              {name: "text"}  (the text as typed, for every
 *                                             type, number too: the docs say "the text")
 *   crowd-checkbox, crowd-toggle-button       {name: {value: true|false}}  value defaults to "on";
 *                                             boxes sharing a name merge into one object
 *   crowd-radio-button                        {name: {value: true|false}}  likewise, each button
 *                                             at the top level (a radio group adds no key)
 *   crowd-slider                              {name: number}  (absent until moved or preset)
 *   crowd-bounding-box                        {name: {"boundingBoxes": [{"height", "label",
 *                                             "left", "top", "width"}], "inputImageProperties":
 *                                             {"height", "width"}}}  in the image's own pixels;
 *                                             + "initialValueModified" if initial-value is set
 *   a named native <input>/<textarea>/<select> {name: "value"}  (a select with multiple: a list;
 *                                             a checkbox: true|false; a radio: the chosen value)
 *
 * Submitting (the Submit button, a crowd-button with form-action="submit", or form.submit()):
 *   1. required fields are checked; a missing one blocks with a message naming it;
 *   2. a cancelable "submit" Event is dispatched on the crowd-form (templates validate in
 *      onsubmit and call preventDefault to stop, as AWS's examples do);
 *   3. CustomEvent("crowd-submit", {detail: {answerContent}, bubbles: true}) on the crowd-form;
 *   4. delivery: with <meta name="crowd-sandbox-submit" content="URL"> the answer is POSTed as
 *      JSON {"answerContent": ...}; a 2xx shows "Submitted" and follows the response's "next"
 *      URL if it has one; any other status shows the response's {"message": ...} and leaves the
 *      form usable. Without the meta tag (preview) the answer is shown as JSON in
 *      <pre id="crowd-sandbox-answer">, appended to the page.
 *
 * window.crowdSandbox.answerContent(form?) returns the answer a form would submit now.
 */
(() => {
  "use strict";

  if (window.customElements.get("crowd-form")) return; // the page loaded the script twice

  const PREFIX = "crowd-sandbox";
  /** Marks the controls this script creates, so only an author's own controls count as native. */
  const INTERNAL = "data-crowd-internal";

  // ------------------------------------------------------------------------------------------
  // Small helpers
  // ------------------------------------------------------------------------------------------

  let lastId = 0;
  const newId = (what) => `${PREFIX}-${what}-${++lastId}`;
  const cls = (name) => `${PREFIX}-${name}`;

  /**
   * Builds an element: h("label", {class: "x"}, child, "text"). Attribute values are set as
   * strings (true: present, false/null/undefined: left out); strings become text nodes, never
   * markup, so template data cannot inject HTML through this script.
   */
  function h(tag, attributes = {}, ...children) {
    const element = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes)) {
      if (value === false || value === null || value === undefined) continue;
      element.setAttribute(key, value === true ? "" : String(value));
    }
    element.append(...children.filter((child) => child !== null && child !== undefined));
    return element;
  }

  /** A boolean attribute: present, and not written as "false" (templates write pin="true"). */
  function flag(element, name) {
    const value = element.getAttribute(name);
    return value !== null && value.trim().toLowerCase() !== "false";
  }

  /** A numeric attribute, or the fallback when it is absent or not a number. */
  function numberAttribute(element, name, fallback) {
    const raw = element.getAttribute(name);
    const value = raw === null || raw.trim() === "" ? NaN : Number(raw);
    return Number.isFinite(value) ? value : fallback;
  }

  const clamp = (value, low, high) => Math.min(Math.max(value, low), high);

  /** Sets an own property, even one called "__proto__" (keys come from template attributes). */
  function define(target, key, value) {
    Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
  }

  const isPlainObject = (value) =>
    value !== null && typeof value === "object" && !Array.isArray(value);

  /** The element's direct children with this tag name (regions such as short-instructions). */
  const regions = (host, tag) => [...host.children].filter((child) => child.localName === tag);

  /** Child nodes worth keeping: elements, and text that is not only whitespace. */
  const leftovers = (host) =>
    [...host.childNodes].filter(
      (node) =>
        node.nodeType === Node.ELEMENT_NODE || (node.nodeType === Node.TEXT_NODE && node.textContent.trim()),
    );

  /**
   * Runs fn once the document's markup has been parsed. The script is loaded at the top of a
   * template, so elements are upgraded as soon as their start tag is read, before their children
   * (categories, regions, labels) exist; rendering waits for the rest of the page.
   */
  function whenParsed(fn) {
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", fn, { once: true });
    else fn();
  }

  /** Shows a problem with the template itself inside the element, and logs it. */
  function reportTemplateProblem(element, error) {
    console.error(`<${element.localName}>:`, error);
    const text = `<${element.localName}>: ${error.message}`;
    element.prepend(h("p", { class: cls("problem"), role: "alert" }, text));
  }

  // ------------------------------------------------------------------------------------------
  // Reading list and object attributes
  // ------------------------------------------------------------------------------------------

  /**
   * Parses JavaScript-style literals as AWS's examples write them: JSON, or single-quoted
   * strings, unquoted keys and trailing commas ("['Cat', 'Dog']", "{ text: 'None' }").
   * Values only: no expressions, nothing is evaluated.
   */
  function parseLoose(text) {
    const source = String(text);
    let at = 0;
    const fail = (what) => {
      throw new SyntaxError(`${what} at character ${at + 1}`);
    };
    const skipSpace = () => {
      while (at < source.length && /\s/.test(source[at])) at += 1;
    };
    const ESCAPES = { n: "\n", r: "\r", t: "\t", b: "\b", f: "\f", v: "\v", 0: "\0" };

    function string() {
      const quote = source[at];
      at += 1;
      let out = "";
      while (at < source.length && source[at] !== quote) {
        let char = source[at];
        at += 1;
        if (char !== "\\") {
          out += char;
          continue;
        }
        char = source[at];
        at += 1;
        const hexLength = char === "u" ? 4 : char === "x" ? 2 : 0;
        if (hexLength) {
          const hex = source.slice(at, at + hexLength);
          if (!new RegExp(`^[0-9a-fA-F]{${hexLength}}$`).test(hex)) fail("a bad escape");
          out += String.fromCharCode(parseInt(hex, 16));
          at += hexLength;
        } else if (char !== "\n") {
          out += ESCAPES[char] ?? char ?? "";
        }
      }
      if (source[at] !== quote) fail("an unterminated string");
      at += 1;
      return out;
    }

    function number() {
      const match = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?/.exec(source.slice(at));
      if (!match) fail("a bad number");
      at += match[0].length;
      return Number(match[0]);
    }

    function key() {
      skipSpace();
      if (source[at] === '"' || source[at] === "'") return string();
      const match = /^[A-Za-z_$][\w$]*/.exec(source.slice(at));
      if (!match) fail("a missing key");
      at += match[0].length;
      return match[0];
    }

    function value() {
      skipSpace();
      const char = source[at];
      if (char === "[") {
        at += 1;
        const list = [];
        for (;;) {
          skipSpace();
          if (source[at] === "]") {
            at += 1;
            return list;
          }
          list.push(value());
          skipSpace();
          if (source[at] === ",") at += 1;
          else if (source[at] !== "]") fail("a missing , or ]");
        }
      }
      if (char === "{") {
        at += 1;
        const object = {};
        for (;;) {
          skipSpace();
          if (source[at] === "}") {
            at += 1;
            return object;
          }
          const name = key();
          skipSpace();
          if (source[at] !== ":") fail("a missing :");
          at += 1;
          define(object, name, value());
          skipSpace();
          if (source[at] === ",") at += 1;
          else if (source[at] !== "}") fail("a missing , or }");
        }
      }
      if (char === '"' || char === "'") return string();
      const word = /^(true|false|null)\b/.exec(source.slice(at));
      if (word) {
        at += word[0].length;
        return { true: true, false: false, null: null }[word[1]];
      }
      if (char !== undefined && /[-+.\d]/.test(char)) return number();
      return fail(char === undefined ? "an unexpected end" : `an unexpected ${JSON.stringify(char)}`);
    }

    const result = value();
    skipSpace();
    if (at < source.length) fail("unexpected text after the value");
    return result;
  }

  /** Decodes HTML character references (&quot; &#39; ...) left in an attribute value. */
  function decodeEntities(text) {
    const scratch = document.createElement("textarea"); // its content is text, never markup
    scratch.innerHTML = text;
    return scratch.value;
  }

  /**
   * A JSON or JavaScript-literal attribute (categories, labels, initial-value, ...), or
   * undefined when absent. Liquid's `{{ x | to_json | escape }}` writes &quot; for quotes: the
   * browser decodes those in an attribute already; text escaped twice is decoded here.
   */
  function structuredAttribute(element, name) {
    const raw = element.getAttribute(name);
    if (raw === null || raw.trim() === "") return undefined;
    const candidates = [raw];
    if (/&(#\d+|#x[0-9a-f]+|[a-z]+);/i.test(raw)) candidates.push(decodeEntities(raw));
    let problem = null;
    for (const text of candidates) {
      try {
        return JSON.parse(text);
      } catch {
        // not strict JSON: try the looser syntax AWS's examples use
      }
      try {
        return parseLoose(text);
      } catch (error) {
        problem = error;
      }
    }
    throw new Error(`the ${name} attribute could not be read (${problem.message}): ${raw}`);
  }

  /** A list attribute as strings: categories="['a', 'b']" or '["a", "b"]'. */
  function listAttribute(element, name) {
    const value = structuredAttribute(element, name);
    if (value === undefined) return [];
    if (!Array.isArray(value)) {
      throw new Error(`the ${name} attribute must be a list, not ${JSON.stringify(value)}`);
    }
    return value.map((item) => (isPlainObject(item) && "text" in item ? String(item.text) : String(item)));
  }

  // ------------------------------------------------------------------------------------------
  // Instructions (short-instructions / full-instructions regions)
  // ------------------------------------------------------------------------------------------

  /** full-instructions behind a "View full instructions" disclosure, titled by its header. */
  function fullInstructions(region) {
    const summary = h("summary", {}, "View full instructions");
    const details = h("details", { class: cls("full-instructions") }, summary);
    const header = region.getAttribute("header");
    if (header) details.append(h("p", { class: cls("instructions-title") }, header));
    details.append(region);
    return details;
  }

  /** Moves host's instruction regions into an aside; null when it has none. */
  function instructionsPanel(host) {
    const short = regions(host, "short-instructions");
    const full = regions(host, "full-instructions");
    if (!short.length && !full.length) return null;
    const panel = h("aside", { class: cls("instructions"), "aria-label": "Instructions" });
    panel.append(...short, ...full.map(fullInstructions));
    return panel;
  }

  /** A radio button or checkbox with its value as the visible label. */
  const choiceLabel = (input) => h("label", { class: cls("choice") }, input, h("span", {}, input.value));

  /** The two-column layout of the annotation widgets: instructions beside the task. */
  function widgetLayout(panel, ...main) {
    return h("div", { class: cls("widget") }, panel, h("div", { class: cls("main") }, ...main));
  }

  // ------------------------------------------------------------------------------------------
  // Base classes
  // ------------------------------------------------------------------------------------------

  /** Renders once, after the page is parsed. Elements may be moved (crowd-form wraps its
   * content in a <form>), so connectedCallback can run again: the first render is kept. */
  class CrowdElement extends HTMLElement {
    connectedCallback() {
      if (this._rendered || this._waiting) return;
      this._waiting = true;
      whenParsed(() => {
        this._waiting = false;
        if (this._rendered) return;
        this._rendered = true;
        try {
          this.render();
        } catch (error) {
          reportTemplateProblem(this, error);
        }
      });
    }

    render() {}
  }

  /**
   * An element that answers under its name attribute. Subclasses give answerValue()
   * (undefined: empty, left out of the answer), describe() for messages, and the controls.
   */
  class CrowdField extends CrowdElement {
    get name() {
      return this.getAttribute("name") || "";
    }

    get required() {
      return flag(this, "required");
    }

    /** The value this element adds to answerContent, or undefined when it is empty. */
    answerValue() {
      return undefined;
    }

    /** [key, value, merge] triples for answerContent; merge "object" joins objects per key. */
    answerEntries() {
      const value = this.answerValue();
      return this.name && value !== undefined ? [[this.name, value, null]] : [];
    }

    isEmpty() {
      return this.answerValue() === undefined;
    }

    /** Why the element cannot be submitted as it is ("" when it can). */
    problem() {
      return this.required && this.isEmpty() ? "This answer is required." : "";
    }

    /** What the element is called in messages: its header or label, and its name. */
    describe() {
      const label = (this.getAttribute("header") || this.getAttribute("label") || "").trim();
      if (label && this.name && label !== this.name) return `${label} (${this.name})`;
      return label || this.name || `<${this.localName}>`;
    }

    /** The control a person fills in, focused when a submission is blocked. */
    focusControl() {
      const control = this.querySelector("input:not([disabled]), textarea, select, [tabindex]");
      control?.focus();
      (control || this).scrollIntoView?.({ block: "center" });
    }

    /** The line under the control that says what is missing (created by render()). */
    problemLine() {
      this._problemLine ??= h("p", { class: cls("field-problem"), id: newId("problem"), hidden: true });
      return this._problemLine;
    }

    /** Shows or clears the element's problem, and marks its controls invalid. */
    showProblem(text) {
      const line = this.problemLine();
      line.textContent = text;
      line.hidden = !text;
      if (!line.isConnected) this.append(line);
      this.toggleAttribute("data-invalid", Boolean(text));
      for (const control of this.querySelectorAll(`[${INTERNAL}]`)) {
        if (text) {
          control.setAttribute("aria-invalid", "true");
          control.setAttribute("aria-describedby", line.id);
        } else {
          control.removeAttribute("aria-invalid");
        }
      }
    }

    /** Call after the value changed: clears a problem shown earlier once it is solved. */
    changed() {
      if (this.hasAttribute("data-invalid") && !this.problem()) this.showProblem("");
    }

    connectedCallback() {
      super.connectedCallback();
      if (this._listening) return;
      this._listening = true;
      this.addEventListener("input", () => this.changed());
      this.addEventListener("change", () => this.changed());
    }

    /** Back to the template's initial state (crowd-button form-action="reset"). */
    resetValue() {}
  }

  // ------------------------------------------------------------------------------------------
  // Classifiers
  // ------------------------------------------------------------------------------------------

  /** crowd-classifier: one category for the classification-target. */
  class CrowdClassifier extends CrowdField {
    get multiple() {
      return false;
    }

    /** The content being classified. */
    target() {
      const targets = regions(this, "classification-target");
      return targets.length ? h("div", { class: cls("target") }, ...targets) : null;
    }

    /** Choices offered besides the categories (multi-select's exclusion-category). */
    extraChoices() {
      return [];
    }

    render() {
      let categories = [];
      let templateProblem = null;
      try {
        categories = listAttribute(this, "categories");
      } catch (error) {
        templateProblem = error;
      }
      let extras = [];
      try {
        extras = this.extraChoices();
      } catch (error) {
        templateProblem ??= error;
      }
      const group = newId("choice");
      const choices = [...categories, ...extras];
      this._inputs = choices.map((category) =>
        h("input", {
          type: this.multiple ? "checkbox" : "radio",
          name: group,
          value: category,
          [INTERNAL]: true,
          "data-exclusive": !categories.includes(category) || null,
        }),
      );
      const list = h(
        "div",
        { class: cls("choices") },
        ...this._inputs.map(choiceLabel),
      );
      const panel = instructionsPanel(this);
      const target = this.target();
      const comment = this.commentControl();
      const rest = leftovers(this);
      const question = h(
        "fieldset",
        { class: cls("question") },
        h("legend", {}, this.getAttribute("header") || this.name || "Choose a category"),
        target,
        list,
        comment,
        ...rest,
        this.problemLine(),
      );
      this.replaceChildren(widgetLayout(panel, question));
      if (templateProblem) reportTemplateProblem(this, templateProblem);
      if (this.multiple) list.addEventListener("change", (event) => this.keepExclusive(event.target));
    }

    commentControl() {
      return null;
    }

    keepExclusive() {}

    /** The chosen category, or "" (the element's value, for template scripts). */
    get value() {
      return this._inputs?.find((input) => input.checked)?.value ?? "";
    }

    answerValue() {
      const label = this.value;
      return label ? { label } : undefined;
    }

    resetValue() {
      for (const input of this._inputs ?? []) input.checked = false;
    }
  }

  /** crowd-classifier-multi-select: any number of categories (+ an exclusive "none" choice). */
  class CrowdClassifierMultiSelect extends CrowdClassifier {
    get multiple() {
      return true;
    }

    /** exclusion-category="{ text: 'None of the above' }": a choice that clears the others. */
    extraChoices() {
      const exclusion = structuredAttribute(this, "exclusion-category");
      if (exclusion === undefined) return [];
      const text = isPlainObject(exclusion) ? exclusion.text : exclusion;
      return text === undefined || text === null || text === "" ? [] : [String(text)];
    }

    keepExclusive(changed) {
      if (!changed.checked) return;
      const exclusive = changed.hasAttribute("data-exclusive");
      for (const input of this._inputs) {
        if (input !== changed && input.hasAttribute("data-exclusive") !== exclusive) input.checked = false;
      }
    }

    /** The chosen categories, in the order the template lists them. */
    get value() {
      return (this._inputs ?? []).filter((input) => input.checked).map((input) => input.value);
    }

    answerValue() {
      const labels = this.value;
      return labels.length ? { labels } : undefined;
    }
  }

  /**
   * What the image classifiers add to a classifier: the image at src as the target, and the
   * worker-comment region (answered as "workerComment" when the worker wrote one).
   */
  const classifyingAnImage = (Classifier) =>
    class extends Classifier {
      target() {
        const src = this.getAttribute("src");
        if (!src) return null;
        const alt = this.getAttribute("header") || "The image to classify";
        return h("div", { class: cls("target") }, h("img", { class: cls("picture"), src, alt }));
      }

      /** The worker-comment region: a disclosure with a text area (header, link-text, placeholder). */
      commentControl() {
        const [region] = regions(this, "worker-comment");
        if (!region) return null;
        const linkText = region.getAttribute("link-text") || "Add a comment.";
        const title = region.getAttribute("header") || "Add a comment.";
        const id = newId("comment");
        this._comment = h("textarea", {
          id,
          rows: 3,
          placeholder: region.getAttribute("placeholder"),
          [INTERNAL]: true,
        });
        const hint = h("div", { class: cls("comment-hint") }, ...region.childNodes);
        region.remove();
        return h(
          "details",
          { class: cls("comment") },
          h("summary", {}, linkText),
          h("label", { class: cls("field"), for: id }, h("span", { class: cls("label") }, title)),
          hint,
          this._comment,
        );
      }

      answerValue() {
        const value = super.answerValue();
        const comment = this._comment?.value ?? "";
        if (value && comment) value.workerComment = comment;
        return value;
      }

      resetValue() {
        super.resetValue();
        if (this._comment) this._comment.value = "";
      }
    };

  /** crowd-image-classifier: one category for the image. */
  class CrowdImageClassifier extends classifyingAnImage(CrowdClassifier) {}

  /** crowd-image-classifier-multi-select: any number of categories for the image. */
  class CrowdImageClassifierMultiSelect extends classifyingAnImage(CrowdClassifierMultiSelect) {}

  // ------------------------------------------------------------------------------------------
  // Text fields
  // ------------------------------------------------------------------------------------------

  /** crowd-input and crowd-text-area: a labelled native control; the answer is its text. */
  class CrowdTextField extends CrowdField {
    get tagForControl() {
      return "input";
    }

    render() {
      const id = newId("text");
      const label = this.getAttribute("label");
      const placeholder = this.getAttribute("placeholder");
      const control = h(this.tagForControl, {
        id,
        [INTERNAL]: true,
        placeholder,
        disabled: flag(this, "disabled"),
        maxlength: this.getAttribute("max-length"),
        minlength: this.getAttribute("min-length"),
        "aria-label": label ? null : placeholder || this.name || null,
        "aria-required": this.required ? "true" : null,
      });
      this.configure(control);
      const initial = this.getAttribute("value") ?? "";
      control.value = initial;
      control.defaultValue = initial;
      this._control = control;

      const pattern = this.allowedPattern();
      control.addEventListener("input", () => {
        if (pattern) {
          const kept = [...control.value].filter((char) => pattern.test(char)).join("");
          if (kept !== control.value) control.value = kept;
        }
        this.afterInput();
      });

      const parts = [];
      if (label) {
        parts.push(
          h(
            "label",
            { class: cls("label"), for: id },
            label,
            this.required ? h("span", { class: cls("required-mark") }, " (required)") : null,
          ),
        );
      }
      parts.push(control, ...this.extras(), this.problemLine());
      this.replaceChildren(h("div", { class: cls("field") }, ...parts));
      if (flag(this, "auto-focus")) control.focus();
    }

    /** allowed-pattern, when auto-validate is on: the characters a person may type. */
    allowedPattern() {
      const source = this.getAttribute("allowed-pattern");
      if (!flag(this, "auto-validate") || !source) return null;
      try {
        return new RegExp(source);
      } catch {
        return null;
      }
    }

    configure(control) {
      control.type = this.getAttribute("type") || "text";
    }

    extras() {
      return [];
    }

    afterInput() {}

    get value() {
      return this._control ? this._control.value : this.getAttribute("value") ?? "";
    }

    set value(text) {
      if (this._control) this._control.value = String(text);
      else this.setAttribute("value", String(text));
    }

    answerValue() {
      const text = this.value;
      return text === "" ? undefined : text;
    }

    problem() {
      const missing = super.problem();
      if (missing || !this._control || this._control.value === "") return missing;
      if (this._control.checkValidity()) return "";
      return this.getAttribute("error-message") || this._control.validationMessage;
    }

    describe() {
      const label = (this.getAttribute("label") || this.getAttribute("placeholder") || "").trim();
      if (label && this.name && label !== this.name) return `${label} (${this.name})`;
      return label || this.name || `<${this.localName}>`;
    }

    resetValue() {
      if (this._control) this._control.value = this._control.defaultValue;
      this.afterInput();
    }
  }

  /** crowd-input: one line of text (any HTML input type; the answer is always the text). */
  class CrowdInput extends CrowdTextField {}

  /** crowd-text-area: several lines; rows, char-counter. */
  class CrowdTextArea extends CrowdTextField {
    get tagForControl() {
      return "textarea";
    }

    configure(control) {
      control.rows = numberAttribute(this, "rows", 3);
    }

    extras() {
      if (!flag(this, "char-counter")) return [];
      this._counter = h("span", { class: cls("counter"), "aria-live": "polite" });
      this.afterInput();
      return [this._counter];
    }

    afterInput() {
      if (!this._counter) return;
      const max = this.getAttribute("max-length");
      const count = [...this.value].length;
      this._counter.textContent = max ? `${count} / ${max} characters` : `${count} characters`;
    }
  }

  // ------------------------------------------------------------------------------------------
  // Checkboxes and radio buttons
  // ------------------------------------------------------------------------------------------

  /** crowd-checkbox: {name: {value: checked}}; boxes sharing a name fill one object. */
  class CrowdCheckbox extends CrowdField {
    get inputType() {
      return "checkbox";
    }

    /** The native group the box belongs to (radio buttons share one per group). */
    groupName() {
      return null;
    }

    render() {
      this._box = h("input", {
        type: this.inputType,
        name: this.groupName(),
        value: this.value,
        [INTERNAL]: true,
        disabled: flag(this, "disabled"),
      });
      const initial = flag(this, "checked");
      this._box.checked = initial;
      this._box.defaultChecked = initial;
      this._text = h("span", {}, ...this.childNodes);
      if (!this.labelText()) this._box.setAttribute("aria-label", this.name || this.value);
      const label = h("label", { class: cls("check") }, this._box, this._text);
      this.decorate(this._box, label);
      this.replaceChildren(label, this.problemLine());
    }

    /** Changes the native box and its label make (the toggle button's switch). */
    decorate() {}

    /** The text the template wrote inside the element. */
    labelText() {
      return (this._text ?? this).textContent.trim();
    }

    /** The key for the box's state in the answer: the value attribute, "on" by default. */
    get value() {
      return this.getAttribute("value") || "on";
    }

    get checked() {
      return this._box ? this._box.checked : flag(this, "checked");
    }

    set checked(on) {
      if (this._box) this._box.checked = Boolean(on);
      else this.toggleAttribute("checked", Boolean(on));
    }

    answerEntries() {
      return this.name ? [[this.name, { [this.value]: this.checked }, "object"]] : [];
    }

    isEmpty() {
      return !this.checked;
    }

    describe() {
      const text = this.labelText();
      if (text && this.name && text !== this.name) return `${text} (${this.name})`;
      return text || this.name || `<${this.localName}>`;
    }

    resetValue() {
      if (this._box) this._box.checked = this._box.defaultChecked;
    }
  }

  /** crowd-toggle-button: an on/off switch answering like a checkbox; invalid: alert colour when off. */
  class CrowdToggleButton extends CrowdCheckbox {
    decorate(box, label) {
      box.setAttribute("role", "switch");
      label.classList.add(cls("toggle"));
    }
  }

  /** crowd-radio-button: like a checkbox, but one per group (or per name, outside a group). */
  class CrowdRadioButton extends CrowdCheckbox {
    get inputType() {
      return "radio";
    }

    groupName() {
      const group = this.closest("crowd-radio-group");
      return group ? group.groupKey : `${PREFIX}-radio-${this.name || newId("lone")}`;
    }

    /** Radio buttons have no required attribute (the docs): a group may have one here. */
    problem() {
      return "";
    }
  }

  /** crowd-radio-group: makes its buttons exclusive; adds no key of its own. */
  class CrowdRadioGroup extends CrowdField {
    get groupKey() {
      this._groupKey ??= newId("radio-group");
      return this._groupKey;
    }

    render() {
      this.setAttribute("role", "radiogroup");
      const label = this.getAttribute("label") || this.getAttribute("header");
      if (label && !this.hasAttribute("aria-label")) this.setAttribute("aria-label", label);
      this.append(this.problemLine());
    }

    buttons() {
      return [...this.querySelectorAll("crowd-radio-button")];
    }

    isEmpty() {
      return !this.buttons().some((button) => button.checked);
    }

    answerEntries() {
      return [];
    }

    describe() {
      const label = this.getAttribute("label") || this.getAttribute("header");
      if (label) return label;
      const options = this.buttons().map((button) => button.labelText?.() || button.name);
      return `one of ${options.join(", ")}`;
    }
  }

  // ------------------------------------------------------------------------------------------
  // Slider
  // ------------------------------------------------------------------------------------------

  /** crowd-slider: a number between min and max. Empty until moved, unless value presets it. */
  class CrowdSlider extends CrowdField {
    render() {
      const min = numberAttribute(this, "min", 0);
      const max = numberAttribute(this, "max", 100);
      const step = this.getAttribute("step") === "any" ? "any" : numberAttribute(this, "step", 1);
      const label = this.getAttribute("label") || this.name || "Value";
      // min, max and step before type: Chromium fixes a range's starting value when the type is set
      this._range = h("input", {
        min,
        max,
        step,
        type: "range",
        [INTERNAL]: true,
        "aria-label": label,
        disabled: flag(this, "disabled"),
      });
      const preset = numberAttribute(this, "value", null);
      this._preset = preset;
      this._set = preset !== null;
      if (this._set) this._range.value = String(preset);
      this._shown = h("output", { class: cls("slider-value"), "aria-live": "polite" });

      const parts = [h("span", { class: cls("slider-bound") }, String(min)), this._range];
      parts.push(h("span", { class: cls("slider-bound") }, String(max)));
      if (flag(this, "editable")) {
        this._number = h("input", {
          type: "number",
          min,
          max,
          step,
          [INTERNAL]: true,
          "aria-label": `${label} (number)`,
          class: cls("slider-number"),
        });
        this._number.addEventListener("input", () => {
          if (this._number.value === "") return;
          this._range.value = this._number.value;
          this.mark();
        });
        parts.push(this._number);
      }
      parts.push(this._shown);

      // A person "provides input" by moving the knob, clicking the bar, or pressing a key that
      // moves it, even when the knob stays where it was (already at the end).
      const MOVING_KEYS = [
        "ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "Home", "End", "PageUp", "PageDown",
      ];
      this._range.addEventListener("input", () => this.mark());
      this._range.addEventListener("pointerdown", () => this.mark());
      this._range.addEventListener("keydown", (event) => {
        if (MOVING_KEYS.includes(event.key)) queueMicrotask(() => this.mark());
      });
      this.replaceChildren(h("div", { class: cls("slider") }, ...parts), this.problemLine());
      this.show();
    }

    mark() {
      this._set = true;
      this.show();
      this.changed();
    }

    show() {
      const value = this.value;
      this._shown.textContent = value === null ? "No value chosen yet" : String(value);
      if (this._number && value !== null) this._number.value = String(value);
    }

    /** The chosen number, or null when the slider was neither moved nor preset. */
    get value() {
      if (!this._range) return numberAttribute(this, "value", null);
      return this._set ? Number(this._range.value) : null;
    }

    answerValue() {
      const value = this.value;
      return value === null ? undefined : value;
    }

    resetValue() {
      this._set = this._preset !== null;
      if (this._set) this._range.value = String(this._preset);
      this.show();
    }
  }

  // ------------------------------------------------------------------------------------------
  // Bounding boxes
  // ------------------------------------------------------------------------------------------

  /** One box in the image's own pixels, keys in the documented order. */
  function makeBox(height, label, left, top, width) {
    return { height, label, left, top, width };
  }

  /** A box from initial-value, or null when it is not one. */
  function boxFrom(value) {
    if (!isPlainObject(value)) return null;
    const [height, left, top, width] = ["height", "left", "top", "width"].map((key) => Number(value[key]));
    if (![height, left, top, width].every(Number.isFinite)) return null;
    return makeBox(height, String(value.label ?? ""), left, top, width);
  }

  /**
   * crowd-bounding-box: draw rectangles on the image with the mouse (press, drag, release),
   * label each one from labels, move one by dragging it or with the arrow keys, delete it with
   * Delete or its button. Coordinates are kept and answered in the image's natural pixels.
   */
  class CrowdBoundingBox extends CrowdField {
    render() {
      const problems = [];
      try {
        this._labels = listAttribute(this, "labels");
      } catch (error) {
        this._labels = [];
        problems.push(error);
      }
      this._initial = null;
      try {
        const initial = structuredAttribute(this, "initial-value");
        if (initial !== undefined) {
          this._initial = (Array.isArray(initial) ? initial : []).map(boxFrom).filter(Boolean);
        }
      } catch (error) {
        problems.push(error);
      }
      this._boxes = (this._initial ?? []).map((box) => ({ ...box }));
      this._selected = -1;
      this._drag = null;

      const header = this.getAttribute("header") || "Draw boxes on the image";
      const panel = instructionsPanel(this);
      const group = newId("label");
      this._labelInputs = this._labels.map((label, index) =>
        h("input", { type: "radio", name: group, value: label, [INTERNAL]: true, checked: index === 0 }),
      );
      const picker = this._labels.length
        ? h(
            "fieldset",
            { class: cls("label-picker") },
            h("legend", {}, "Label for new boxes"),
            ...this._labelInputs.map(choiceLabel),
          )
        : null;

      this._img = h("img", { alt: header, draggable: "false" });
      this._img.addEventListener("load", () => this.drawBoxes());
      this._img.addEventListener("error", () => {
        this._imageProblem.textContent = `The image could not be loaded: ${this.getAttribute("src")}`;
        this._imageProblem.hidden = false;
      });
      this._img.src = this.getAttribute("src") || "";
      this._layer = h("div", { class: cls("boxes") });
      this._stage = h(
        "div",
        {
          class: cls("stage"),
          tabindex: 0,
          role: "group",
          "aria-label":
            `${header}: drag on the image to draw a box; ` +
            "arrow keys move the selected box, Delete removes it",
        },
        this._img,
        this._layer,
      );
      this._imageProblem = h("p", { class: cls("field-problem"), hidden: true });
      this._list = h("ol", { class: cls("box-list"), "aria-label": "Boxes drawn" });
      this._stage.addEventListener("pointerdown", (event) => this.pointerDown(event));
      this._stage.addEventListener("pointermove", (event) => this.pointerMove(event));
      this._stage.addEventListener("pointerup", (event) => this.pointerUp(event));
      this._stage.addEventListener("pointercancel", () => {
        this._drag = null;
        this.drawBoxes();
      });
      this._stage.addEventListener("keydown", (event) => this.keyDown(event));

      const title = h("p", { class: cls("header") }, header);
      this.replaceChildren(
        widgetLayout(
          panel,
          title,
          picker,
          this._stage,
          this._imageProblem,
          this._list,
          ...leftovers(this),
          this.problemLine(),
        ),
      );
      for (const problem of problems) reportTemplateProblem(this, problem);
      this.drawBoxes();
      this.drawList();
    }

    focusControl() {
      this._stage?.focus();
      this._stage?.scrollIntoView({ block: "center" });
    }

    loaded() {
      return Boolean(this._img?.complete && this._img.naturalWidth > 0);
    }

    /** The label new boxes get: the picker's choice. */
    currentLabel() {
      return this._labelInputs.find((input) => input.checked)?.value ?? this._labels[0] ?? "";
    }

    /** A pointer position in the image's natural pixels, kept inside the image. */
    toImage(event) {
      const rect = this._img.getBoundingClientRect();
      const x = ((event.clientX - rect.left) * this._img.naturalWidth) / rect.width;
      const y = ((event.clientY - rect.top) * this._img.naturalHeight) / rect.height;
      return { x: clamp(x, 0, this._img.naturalWidth), y: clamp(y, 0, this._img.naturalHeight) };
    }

    /** The box between two corners, rounded to whole pixels. */
    spanned(start, end, label) {
      const left = Math.round(Math.min(start.x, end.x));
      const top = Math.round(Math.min(start.y, end.y));
      const right = Math.round(Math.max(start.x, end.x));
      const bottom = Math.round(Math.max(start.y, end.y));
      return makeBox(bottom - top, label, left, top, right - left);
    }

    pointerDown(event) {
      if (event.button !== 0 || !this.loaded()) return;
      event.preventDefault(); // no text selection or image drag while drawing
      this._stage.focus({ preventScroll: true });
      const point = this.toImage(event);
      const hit = event.target.closest(`.${cls("box")}`);
      if (hit) {
        const index = Number(hit.dataset.index);
        const box = this._boxes[index];
        this.select(index);
        this._drag = { mode: "move", index, dx: point.x - box.left, dy: point.y - box.top, moved: false };
      } else {
        const { clientX, clientY } = event;
        this._drag = { mode: "draw", start: point, end: point, clientX, clientY };
      }
      this._stage.setPointerCapture(event.pointerId);
    }

    pointerMove(event) {
      const drag = this._drag;
      if (!drag) return;
      const point = this.toImage(event);
      if (drag.mode === "draw") {
        drag.end = point;
        drag.far = Math.abs(event.clientX - drag.clientX) >= 3 && Math.abs(event.clientY - drag.clientY) >= 3;
      } else {
        const box = this._boxes[drag.index];
        box.left = clamp(Math.round(point.x - drag.dx), 0, this._img.naturalWidth - box.width);
        box.top = clamp(Math.round(point.y - drag.dy), 0, this._img.naturalHeight - box.height);
        drag.moved = true;
      }
      this.drawBoxes();
    }

    pointerUp(event) {
      const drag = this._drag;
      this._drag = null;
      if (!drag) return;
      if (drag.mode === "draw") {
        const box = this.spanned(drag.start, this.toImage(event), this.currentLabel());
        if (drag.far && box.width >= 1 && box.height >= 1) {
          this._boxes.push(box);
          this._selected = this._boxes.length - 1;
          this.update();
          return;
        }
      } else if (drag.moved) {
        this.update();
        return;
      }
      this.drawBoxes();
    }

    keyDown(event) {
      const box = this._boxes[this._selected];
      if (!box) return;
      const step = event.shiftKey ? 10 : 1;
      const moves = {
        ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step],
      };
      if (event.key === "Delete" || event.key === "Backspace") {
        event.preventDefault();
        this.remove(this._selected);
      } else if (event.key === "Escape") {
        this.select(-1);
      } else if (moves[event.key]) {
        event.preventDefault();
        const [dx, dy] = moves[event.key];
        box.left = clamp(box.left + dx, 0, Math.max(0, this._img.naturalWidth - box.width));
        box.top = clamp(box.top + dy, 0, Math.max(0, this._img.naturalHeight - box.height));
        this.update();
      }
    }

    select(index) {
      this._selected = index;
      this.drawBoxes();
      for (const [n, toggle] of this._list.querySelectorAll(`.${cls("box-select")}`).entries()) {
        toggle.setAttribute("aria-pressed", String(n === index));
      }
    }

    remove(index) {
      this._boxes.splice(index, 1);
      this._selected = -1;
      this.update();
      this._stage.focus({ preventScroll: true });
    }

    /** After a change to the boxes: redraw both views and re-check a shown problem. */
    update() {
      this.drawBoxes();
      this.drawList();
      this.changed();
      this.dispatchEvent(new Event("change", { bubbles: true }));
    }

    /** The rectangles over the image, placed in percent so they follow the image's scale. */
    drawBoxes() {
      if (!this._layer) return;
      const width = this._img.naturalWidth || 1;
      const height = this._img.naturalHeight || 1;
      const place = (element, box) => {
        element.style.left = `${(box.left / width) * 100}%`;
        element.style.top = `${(box.top / height) * 100}%`;
        element.style.width = `${(box.width / width) * 100}%`;
        element.style.height = `${(box.height / height) * 100}%`;
        return element;
      };
      const drawn = this._boxes.map((box, index) =>
        place(
          h(
            "div",
            { class: cls("box"), "data-index": index, "data-selected": index === this._selected || null },
            h("span", { class: cls("box-tag") }, box.label),
          ),
          box,
        ),
      );
      const drag = this._drag;
      if (drag?.mode === "draw" && drag.far) {
        const preview = h("div", { class: `${cls("box")} ${cls("drawing")}` });
        drawn.push(place(preview, this.spanned(drag.start, drag.end, "")));
      }
      this._layer.replaceChildren(...drawn);
    }

    /** The list under the image: select, relabel or delete each box without the mouse. */
    drawList() {
      const items = this._boxes.map((box, index) => {
        const name = `Box ${index + 1}`;
        const toggle = h(
          "button",
          { type: "button", class: cls("box-select"), "aria-pressed": String(index === this._selected) },
          `${name}: left ${box.left}, top ${box.top}, width ${box.width}, height ${box.height}`,
        );
        toggle.addEventListener("click", () => {
          this.select(index === this._selected ? -1 : index);
          this._stage.focus({ preventScroll: true });
        });
        const labels = this._labels.includes(box.label) ? this._labels : [box.label, ...this._labels];
        const chooser = h(
          "select",
          { [INTERNAL]: true, "aria-label": `Label of ${name.toLowerCase()}` },
          ...labels.map((label) => h("option", { value: label, selected: label === box.label }, label)),
        );
        chooser.addEventListener("change", () => {
          box.label = chooser.value;
          this.drawBoxes();
          this.changed();
        });
        const remover = h("button", { type: "button", class: cls("box-delete") }, "Delete");
        remover.setAttribute("aria-label", `Delete ${name.toLowerCase()}`);
        remover.addEventListener("click", () => this.remove(index));
        return h("li", {}, toggle, " ", chooser, " ", remover);
      });
      this._list.replaceChildren(...items);
      this._list.hidden = items.length === 0;
    }

    /** {boundingBoxes, inputImageProperties} as answered (for template scripts). */
    get value() {
      const value = {
        boundingBoxes: (this._boxes ?? []).map((b) => makeBox(b.height, b.label, b.left, b.top, b.width)),
      };
      if (this.loaded()) {
        value.inputImageProperties = { height: this._img.naturalHeight, width: this._img.naturalWidth };
      }
      if (this._initial) {
        value.initialValueModified = JSON.stringify(value.boundingBoxes) !== JSON.stringify(this._initial);
      }
      return value;
    }

    answerValue() {
      return this._boxes?.length ? this.value : undefined;
    }

    resetValue() {
      this._boxes = (this._initial ?? []).map((box) => ({ ...box }));
      this._selected = -1;
      this.update();
    }
  }

  // ------------------------------------------------------------------------------------------
  // Instructions, alert, card, button
  // ------------------------------------------------------------------------------------------

  /** crowd-instructions: a link or button opening a dialog with Summary, Detailed
   * Instructions and Examples tabs. */
  class CrowdInstructions extends CrowdElement {
    render() {
      const linkText = this.getAttribute("link-text") || "Click for instructions";
      const asButton = (this.getAttribute("link-type") || "link") === "button";
      const example = (kind, title) => (region) =>
        h("div", { class: cls(kind) }, h("p", { class: cls("instructions-title") }, title), region);
      const examples = [
        ...regions(this, "positive-example").map(example("example-good", "Good example")),
        ...regions(this, "negative-example").map(example("example-bad", "Bad example")),
      ];
      const pages = [
        ["Summary", regions(this, "short-summary")],
        ["Detailed Instructions", regions(this, "detailed-instructions")],
        ["Examples", examples],
      ].filter(([, content]) => content.length);

      const titleId = newId("instructions-title");
      const tablist = h("div", { role: "tablist", class: cls("tabs") });
      const panels = [];
      const tabs = pages.map(([title, content], index) => {
        const panelId = newId("tab-panel");
        const tab = h(
          "button",
          { type: "button", role: "tab", id: newId("tab"), "aria-controls": panelId, class: cls("tab") },
          title,
        );
        const panel = h("div", { role: "tabpanel", id: panelId, "aria-labelledby": tab.id }, ...content);
        panels.push(panel);
        tab.addEventListener("click", () => choose(index));
        return tab;
      });
      const choose = (chosen) => {
        tabs.forEach((tab, index) => {
          tab.setAttribute("aria-selected", String(index === chosen));
          tab.tabIndex = index === chosen ? 0 : -1;
          panels[index].hidden = index !== chosen;
        });
      };
      tablist.addEventListener("keydown", (event) => {
        const current = tabs.indexOf(document.activeElement);
        const offset = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
        if (current < 0 || !offset) return;
        const next = (current + offset + tabs.length) % tabs.length;
        choose(next);
        tabs[next].focus();
      });
      tablist.append(...tabs);
      if (tabs.length) choose(0);

      const close = h("button", { type: "button", class: cls("button") }, "Close");
      const dialog = h(
        "dialog",
        { class: cls("dialog"), "aria-labelledby": titleId },
        h("h2", { id: titleId }, "Instructions"),
        tablist,
        ...panels,
        h("div", { class: cls("dialog-actions") }, close),
      );
      const opener = h(
        "button",
        { type: "button", class: asButton ? cls("button") : cls("link"), "aria-haspopup": "dialog" },
        linkText,
      );
      opener.addEventListener("click", () => dialog.showModal());
      close.addEventListener("click", () => dialog.close());
      dialog.addEventListener("close", () => opener.focus());
      this.replaceChildren(opener, dialog);
    }
  }

  /** crowd-alert: a message box; type info|success|error|warning; dismissible. */
  class CrowdAlert extends CrowdElement {
    render() {
      const type = this.getAttribute("type") || "info";
      const urgent = type === "error" || type === "warning";
      if (!this.hasAttribute("role")) this.setAttribute("role", urgent ? "alert" : "status");
      const body = h("div", { class: cls("alert-body") }, ...this.childNodes);
      this.replaceChildren(body);
      if (flag(this, "dismissible")) {
        const attributes = { type: "button", class: cls("alert-close"), "aria-label": "Dismiss" };
        const close = h("button", attributes, "\u00d7");
        close.addEventListener("click", () => {
          this.hidden = true;
        });
        this.append(close);
      }
    }
  }

  /** crowd-card: a raised box with an optional heading and image. */
  class CrowdCard extends CrowdElement {
    render() {
      const image = this.getAttribute("image");
      const heading = this.getAttribute("heading");
      const top = [];
      if (image) top.push(h("img", { class: cls("card-image"), src: image, alt: heading || "" }));
      if (heading) top.push(h("p", { class: cls("card-heading") }, heading));
      this.prepend(...top);
    }
  }

  /** crowd-button: a button; form-action="submit"|"reset" acts on its crowd-form; href links. */
  class CrowdButton extends CrowdElement {
    static get observedAttributes() {
      return ["disabled", "loading"];
    }

    render() {
      const link = this.getAttribute("href") && !this.formAction;
      if (!this.hasAttribute("role")) this.setAttribute("role", link ? "link" : "button");
      this.addEventListener("click", (event) => this.activate(event));
      this.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          this.activate(event);
        }
      });
      this.syncState();
    }

    attributeChangedCallback() {
      if (this._rendered) this.syncState();
    }

    get formAction() {
      return this.getAttribute("form-action") || "";
    }

    /** The crowd-form it acts on: its own, or the page's first when it stands outside one. */
    get form() {
      return this.closest("crowd-form") || document.querySelector("crowd-form");
    }

    get inactive() {
      return flag(this, "disabled") || flag(this, "loading") || Boolean(this._busy);
    }

    /** While its form is being submitted (set by crowd-form). */
    set busy(on) {
      this._busy = on;
      this.syncState();
    }

    syncState() {
      this.tabIndex = this.inactive ? -1 : 0;
      this.setAttribute("aria-disabled", String(this.inactive));
      this.toggleAttribute("aria-busy", flag(this, "loading") || Boolean(this._busy));
    }

    activate(event) {
      if (this.inactive) {
        event.preventDefault();
        return;
      }
      if (this.formAction === "submit") this.form?.submit();
      else if (this.formAction === "reset") this.form?.reset();
      else if (this.getAttribute("href")) {
        window.open(this.getAttribute("href"), this.getAttribute("target") || "_self");
      }
    }
  }

  // ------------------------------------------------------------------------------------------
  // The answer and the form
  // ------------------------------------------------------------------------------------------

  const SKIPPED_INPUT_TYPES = new Set(["submit", "button", "reset", "image", "file"]);

  /** A named native control the template author wrote (not one this script made). */
  function isAuthorControl(element) {
    return (
      (element instanceof HTMLInputElement ||
        element instanceof HTMLTextAreaElement ||
        element instanceof HTMLSelectElement) &&
      Boolean(element.name) &&
      !element.hasAttribute(INTERNAL) &&
      !element.disabled &&
      !(element instanceof HTMLInputElement && SKIPPED_INPUT_TYPES.has(element.type))
    );
  }

  /** What a native control adds: [key, value, merge] triples (none when empty). */
  function nativeEntries(control) {
    if (control instanceof HTMLSelectElement && control.multiple) {
      const values = [...control.selectedOptions].map((option) => option.value);
      return values.length ? [[control.name, values, null]] : [];
    }
    if (control instanceof HTMLInputElement && control.type === "checkbox") {
      return [[control.name, control.checked, "any"]];
    }
    if (control instanceof HTMLInputElement && control.type === "radio") {
      return control.checked ? [[control.name, control.value, null]] : [];
    }
    return control.value === "" ? [] : [[control.name, control.value, null]];
  }

  /** The answerContent of a crowd-form as it stands: every named element inside it. */
  function collectAnswer(form) {
    const answer = {};
    if (!form) return answer;
    const put = ([key, value, merge]) => {
      const prior = Object.prototype.hasOwnProperty.call(answer, key) ? answer[key] : undefined;
      if (merge === "object" && isPlainObject(prior) && isPlainObject(value)) {
        define(answer, key, { ...prior, ...value }); // checkboxes sharing a name
      } else if (merge === "any" && typeof prior === "boolean") {
        define(answer, key, prior || value); // native checkboxes sharing a name
      } else {
        define(answer, key, value);
      }
    };
    for (const element of form.querySelectorAll("*")) {
      if (element instanceof CrowdField) element.answerEntries().forEach(put);
      else if (isAuthorControl(element)) nativeEntries(element).forEach(put);
    }
    return answer;
  }

  /** A native control's name for messages: its label, and its name. */
  function describeNative(control) {
    const label = control.type === "radio" ? "" : (control.labels?.[0]?.textContent ?? "").trim();
    return label && label !== control.name ? `${label} (${control.name})` : control.name;
  }

  /** Block Enter in one-line fields from submitting the whole task by accident. */
  function blockImplicitSubmit(event) {
    if (event.key === "Enter" && event.target instanceof HTMLInputElement) event.preventDefault();
  }

  /** crowd-form: wraps the task in a <form>, checks it, and submits its answerContent. */
  class CrowdForm extends CrowdElement {
    render() {
      const hasSubmitButton = this.hasSubmitButton(); // asked while the content is in the page
      this._form = h("form", { class: cls("form"), novalidate: true });
      this._form.append(...this.childNodes);
      const panel = instructionsPanel(this._form);
      if (panel) this._form.prepend(panel);

      this._message = h("div", { class: cls("message"), role: "status", "aria-live": "polite" });
      const actions = h("div", { class: cls("actions") });
      if (!hasSubmitButton) {
        const attributes = { type: "submit", class: cls("button"), [INTERNAL]: true };
        this._submitButton = h("button", attributes, "Submit");
        actions.append(this._submitButton);
      }
      actions.append(this._message);
      this._form.append(actions);
      this.append(this._form);

      this._form.addEventListener("submit", (event) => {
        // The native submission becomes ours: the crowd-form gets its own cancelable submit.
        event.preventDefault();
        event.stopPropagation();
        this.submit();
      });
      this._form.addEventListener("keydown", blockImplicitSubmit);
      queueMicrotask(() => this.flagUnsupported()); // after every element is defined
    }

    /** A crowd-button with form-action="submit" in this form (or outside any form, for the first). */
    hasSubmitButton() {
      return [...document.querySelectorAll('crowd-button[form-action="submit"]')].some((button) => {
        const owner = button.closest("crowd-form");
        return owner === this || (owner === null && document.querySelector("crowd-form") === this);
      });
    }

    /** A visible note on crowd elements this sandbox does not implement. */
    flagUnsupported() {
      for (const element of this.querySelectorAll("*")) {
        const tag = element.localName;
        if (!tag.startsWith("crowd-") || customElements.get(tag)) continue;
        if (element.hasAttribute("data-crowd-unsupported")) continue;
        element.setAttribute("data-crowd-unsupported", "");
        const note = `<${tag}> is not available in the stream_router sandbox; it adds nothing to the answer.`;
        element.before(h("p", { class: cls("problem"), role: "note" }, note));
      }
    }

    /** The answer as it would be submitted now. */
    get answerContent() {
      return collectAnswer(this);
    }

    /** Required or invalid fields, each shown on its element; [{text, focus}]. */
    problems() {
      const found = [];
      const nativeSeen = new Set();
      for (const element of this.querySelectorAll("*")) {
        if (element instanceof CrowdField) {
          const problem = element.problem();
          element.showProblem(problem);
          if (problem) found.push({ text: element.describe(), focus: () => element.focusControl() });
        } else if (isAuthorControl(element) && element.willValidate && !element.checkValidity()) {
          const key = element.type === "radio" ? `radio:${element.name}` : element;
          if (nativeSeen.has(key)) continue;
          nativeSeen.add(key);
          found.push({ text: describeNative(element), focus: () => element.focus() });
        }
      }
      return found;
    }

    say(text, kind = "info") {
      if (!this._message) return;
      this._message.textContent = text;
      this._message.dataset.kind = kind;
    }

    setBusy(on) {
      this._busy = on;
      if (this._submitButton) this._submitButton.disabled = on;
      for (const button of this.querySelectorAll('crowd-button[form-action="submit"]')) button.busy = on;
      this._form?.toggleAttribute("aria-busy", on);
    }

    /** Checks, then submits the answer (the Submit button, crowd-button, or a script). */
    async submit() {
      if (this._busy || this._done) return;
      this.say("");
      const problems = this.problems();
      if (problems.length) {
        const names = problems.map((problem) => problem.text).join("; ");
        this.say(`Please complete before submitting: ${names}.`, "error");
        problems[0].focus();
        return;
      }
      if (!this.dispatchEvent(new Event("submit", { bubbles: true, cancelable: true }))) return;
      const answerContent = collectAnswer(this);
      this.dispatchEvent(new CustomEvent("crowd-submit", { detail: { answerContent }, bubbles: true }));
      const url = document.querySelector('meta[name="crowd-sandbox-submit"]')?.getAttribute("content");
      if (url) await this.post(url, answerContent);
      else this.preview(answerContent);
    }

    /** The worker portal: POST the answer; follow "next", or show the server's message. */
    async post(url, answerContent) {
      this.setBusy(true);
      this.say("Submitting…");
      let response;
      try {
        response = await fetch(url, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ answerContent }),
        });
      } catch (error) {
        this.say(`The answer could not be sent (${error.message}). Try again.`, "error");
        this.setBusy(false);
        return;
      }
      const body = await response.json().catch(() => null);
      if (response.ok) {
        this._done = true;
        this.say("Submitted", "success");
        if (body && typeof body.next === "string" && body.next) {
          window.location.assign(new URL(body.next, window.location.href));
        }
        return;
      }
      const message = body && typeof body.message === "string" && body.message;
      this.say(message || `The answer was not accepted (HTTP ${response.status}).`, "error");
      this.setBusy(false);
    }

    /** Preview: nothing is sent; the answer is shown as JSON under the page. */
    preview(answerContent) {
      let shown = document.getElementById("crowd-sandbox-answer");
      if (!shown) {
        shown = h("pre", { id: "crowd-sandbox-answer", "aria-label": "answerContent" });
        document.body.append(shown);
      }
      shown.textContent = JSON.stringify(answerContent, null, 2);
      this.say("Preview: nothing was sent. The answer is shown below the form.", "success");
    }

    /** form-action="reset": every field back to the template's initial state. */
    reset() {
      this._form?.reset();
      for (const element of this.querySelectorAll("*")) {
        if (element instanceof CrowdField) {
          element.resetValue();
          element.showProblem("");
        }
      }
      this.say("");
    }
  }

  // ------------------------------------------------------------------------------------------
  // Styles
  // ------------------------------------------------------------------------------------------

  const STYLE = `
crowd-form, crowd-classifier, crowd-classifier-multi-select, crowd-image-classifier,
crowd-image-classifier-multi-select, crowd-bounding-box, crowd-input, crowd-text-area,
crowd-slider, crowd-radio-group, crowd-checkbox, crowd-toggle-button, crowd-radio-button,
crowd-instructions, crowd-card, crowd-alert, short-instructions, full-instructions,
classification-target { display: block; }
crowd-button { display: inline-block; }
:is(crowd-form, crowd-classifier, crowd-classifier-multi-select, crowd-image-classifier,
crowd-image-classifier-multi-select, crowd-bounding-box, crowd-input, crowd-text-area,
crowd-slider, crowd-radio-group, crowd-checkbox, crowd-toggle-button, crowd-radio-button,
crowd-instructions, crowd-card, crowd-alert, crowd-button)[hidden] { display: none; }
.${PREFIX}-form { font: 15px/1.45 system-ui, sans-serif; color: #16191f; }
.${PREFIX}-widget { display: flex; flex-wrap: wrap; gap: 16px; margin: 12px 0; }
.${PREFIX}-main { flex: 1 1 420px; min-width: 0; }
.${PREFIX}-instructions { flex: 0 1 260px; background: #f2f8fd; border-left: 4px solid #0972d3;
  padding: 8px 12px; margin: 0 0 12px; }
.${PREFIX}-instructions-title, .${PREFIX}-header { font-weight: 600; margin: 8px 0; }
.${PREFIX}-full-instructions summary, .${PREFIX}-comment summary { cursor: pointer; color: #0759a8;
  text-decoration: underline; }
fieldset.${PREFIX}-question, fieldset.${PREFIX}-label-picker { border: 1px solid #c6cbd1;
  border-radius: 6px; padding: 8px 12px 12px; margin: 0 0 8px; }
.${PREFIX}-question > legend { font-weight: 600; font-size: 1.05em; padding: 0 4px; }
.${PREFIX}-target { margin: 4px 0 12px; }
.${PREFIX}-picture { max-width: 100%; height: auto; display: block; }
.${PREFIX}-choices { display: flex; flex-wrap: wrap; gap: 8px; }
.${PREFIX}-choice { display: inline-flex; align-items: center; gap: 6px; padding: 5px 12px;
  border: 2px solid #8d9399; border-radius: 999px; cursor: pointer; background: #fff; }
.${PREFIX}-choice:has(input:checked) { border-color: #0972d3; background: #d9ecfc; font-weight: 600; }
.${PREFIX}-choice:has(input:focus-visible), .${PREFIX}-check:has(input:focus-visible) {
  outline: 3px solid #f89256; outline-offset: 2px; }
.${PREFIX}-check { display: inline-flex; align-items: center; gap: 8px; cursor: pointer; margin: 4px 0; }
.${PREFIX}-toggle input { appearance: none; width: 40px; height: 22px; border-radius: 11px;
  background: #8d9399; position: relative; cursor: pointer; margin: 0; transition: background .15s; }
.${PREFIX}-toggle input::after { content: ""; position: absolute; top: 3px; left: 3px; width: 16px;
  height: 16px; border-radius: 50%; background: #fff; transition: left .15s; }
.${PREFIX}-toggle input:checked { background: #0972d3; }
.${PREFIX}-toggle input:checked::after { left: 21px; }
crowd-toggle-button[invalid] .${PREFIX}-toggle input:not(:checked) { background: #d91515; }
.${PREFIX}-field { display: flex; flex-direction: column; gap: 4px; margin: 8px 0; max-width: 44em; }
.${PREFIX}-field input, .${PREFIX}-field textarea, .${PREFIX}-comment textarea { font: inherit;
  padding: 6px 8px; border: 1px solid #687078; border-radius: 4px; }
.${PREFIX}-label { font-weight: 600; }
.${PREFIX}-required-mark, .${PREFIX}-counter { font-weight: 400; color: #5f6b7a; font-size: .9em; }
[aria-invalid="true"] { border-color: #d91515 !important; outline: 1px solid #d91515; }
.${PREFIX}-field-problem, .${PREFIX}-problem { color: #b40b0b; font-weight: 600; margin: 6px 0; }
.${PREFIX}-slider { display: flex; align-items: center; gap: 8px; flex-wrap: wrap; }
.${PREFIX}-slider input[type=range] { flex: 1 1 200px; accent-color: #0972d3; }
.${PREFIX}-slider-value { min-width: 3em; font-weight: 600; }
.${PREFIX}-slider-number { width: 6em; }
.${PREFIX}-stage { position: relative; width: fit-content; max-width: 100%; line-height: 0;
  cursor: crosshair; touch-action: none; user-select: none; margin: 8px 0; }
.${PREFIX}-stage:focus-visible { outline: 3px solid #f89256; outline-offset: 2px; }
.${PREFIX}-stage img { display: block; max-width: 100%; height: auto; pointer-events: none; }
.${PREFIX}-boxes { position: absolute; inset: 0; }
.${PREFIX}-box { position: absolute; box-sizing: border-box; border: 2px solid #ec7211;
  background: rgba(236, 114, 17, .12); cursor: move; }
.${PREFIX}-box[data-selected] { border: 3px solid #0972d3; background: rgba(9, 114, 211, .18); }
.${PREFIX}-drawing { border-style: dashed; cursor: crosshair; }
.${PREFIX}-box-tag { position: absolute; left: -2px; top: 0; transform: translateY(-100%);
  background: #ec7211; color: #fff; font: 12px/1.5 system-ui, sans-serif; padding: 0 4px;
  white-space: nowrap; }
.${PREFIX}-box[data-selected] .${PREFIX}-box-tag { background: #0972d3; }
.${PREFIX}-box-list { padding-left: 1.5em; }
.${PREFIX}-box-list li { margin: 4px 0; }
.${PREFIX}-box-select[aria-pressed="true"] { font-weight: 600; border-color: #0972d3; background: #d9ecfc; }
.${PREFIX}-button, crowd-button { font: inherit; font-weight: 600; padding: 7px 18px; border-radius: 999px;
  border: 2px solid #0972d3; background: #0972d3; color: #fff; cursor: pointer; }
crowd-button[variant="normal"], crowd-button[variant="link"] { background: #fff; color: #0972d3; }
.${PREFIX}-button:disabled, crowd-button[aria-disabled="true"] { opacity: .55; cursor: not-allowed; }
.${PREFIX}-button:focus-visible, crowd-button:focus-visible, .${PREFIX}-link:focus-visible {
  outline: 3px solid #f89256; outline-offset: 2px; }
.${PREFIX}-link { font: inherit; background: none; border: none; padding: 0; color: #0759a8;
  text-decoration: underline; cursor: pointer; }
.${PREFIX}-actions { display: flex; align-items: center; gap: 16px; margin: 16px 0; flex-wrap: wrap; }
.${PREFIX}-message[data-kind="error"] { color: #b40b0b; font-weight: 600; }
.${PREFIX}-message[data-kind="success"] { color: #037f0c; font-weight: 600; }
.${PREFIX}-dialog { max-width: min(720px, 92vw); border: 1px solid #c6cbd1; border-radius: 8px; }
.${PREFIX}-tabs { display: flex; gap: 4px; border-bottom: 1px solid #c6cbd1; margin-bottom: 8px; }
.${PREFIX}-tab { font: inherit; border: none; background: none; padding: 6px 12px; cursor: pointer;
  border-bottom: 3px solid transparent; }
.${PREFIX}-tab[aria-selected="true"] { border-bottom-color: #0972d3; font-weight: 600; }
.${PREFIX}-dialog-actions { margin-top: 12px; text-align: right; }
.${PREFIX}-example-good { border-left: 4px solid #037f0c; padding-left: 8px; margin: 8px 0; }
.${PREFIX}-example-bad { border-left: 4px solid #d91515; padding-left: 8px; margin: 8px 0; }
crowd-alert { position: relative; padding: 10px 36px 10px 12px; border-radius: 6px; margin: 8px 0;
  border: 1px solid #0972d3; background: #f2f8fd; }
crowd-alert[type="success"] { border-color: #037f0c; background: #f2fcf3; }
crowd-alert[type="error"] { border-color: #d91515; background: #fff7f7; }
crowd-alert[type="warning"] { border-color: #8d6605; background: #fffce9; }
.${PREFIX}-alert-close { position: absolute; top: 4px; right: 6px; font-size: 18px; border: none;
  background: none; cursor: pointer; }
crowd-card { border-radius: 8px; box-shadow: 0 1px 4px rgba(0, 0, 0, .25); padding: 12px;
  margin: 8px 0; background: #fff; }
.${PREFIX}-card-heading { font-weight: 600; margin: 0 0 8px; }
.${PREFIX}-card-image { max-width: 100%; display: block; margin-bottom: 8px; }
#crowd-sandbox-answer { background: #f4f4f4; border: 1px solid #c6cbd1; padding: 12px; overflow: auto; }
`;

  function installStyle() {
    if (document.getElementById(`${PREFIX}-style`)) return;
    const style = h("style", { id: `${PREFIX}-style` }, STYLE);
    (document.head || document.documentElement).append(style);
  }

  // ------------------------------------------------------------------------------------------
  // Registration
  // ------------------------------------------------------------------------------------------

  installStyle();

  const ELEMENTS = [
    ["crowd-button", CrowdButton],
    ["crowd-classifier", CrowdClassifier],
    ["crowd-classifier-multi-select", CrowdClassifierMultiSelect],
    ["crowd-image-classifier", CrowdImageClassifier],
    ["crowd-image-classifier-multi-select", CrowdImageClassifierMultiSelect],
    ["crowd-input", CrowdInput],
    ["crowd-text-area", CrowdTextArea],
    ["crowd-checkbox", CrowdCheckbox],
    ["crowd-toggle-button", CrowdToggleButton],
    ["crowd-radio-group", CrowdRadioGroup],
    ["crowd-radio-button", CrowdRadioButton],
    ["crowd-slider", CrowdSlider],
    ["crowd-bounding-box", CrowdBoundingBox],
    ["crowd-instructions", CrowdInstructions],
    ["crowd-alert", CrowdAlert],
    ["crowd-card", CrowdCard],
    ["crowd-form", CrowdForm], // last: a form already on the page renders as it is defined
  ];
  for (const [tag, element] of ELEMENTS) customElements.define(tag, element);

  /** For template scripts and tests: the answer a crowd-form (default: the page's first) would submit. */
  window.crowdSandbox = Object.freeze({
    answerContent(form) {
      const owner = form?.closest?.("crowd-form") ?? document.querySelector("crowd-form");
      return collectAnswer(owner);
    },
  });
})();
