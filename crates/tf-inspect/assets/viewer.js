// The attention viewer: draws the attention weights embedded in this page (see
// crates/tf-inspect/src/viewer.rs for their layout) as SVG, with no library and no network.
//
//  - Head view: the chosen kind and layer; query tokens on the left, key tokens on the right;
//    one colour per head; a line per (query, key) pair above the threshold, as opaque as its
//    weight. Hover or click a token to see only its links; tick heads on and off.
//  - Model view: every layer × head of the chosen kind as a small heatmap; click one to open it
//    in the head view.
//  - Matrix: the selected head as a heatmap with token labels (for cross-attention, an
//    alignment matrix of output against source).
//  - Attributions (when the page has them): each generated token against the source tokens and
//    the target prefix, by the chosen method, coloured relative to the matrix's largest value,
//    with the source's share of each prediction for the methods whose rows are shares.
//
// The state (kind, layer, heads shown, selected head, view) lives in the URL's hash, so a view
// can be linked to, and tests can open a page in a given state.
'use strict';

const DATA = JSON.parse(document.getElementById('attention-data').textContent);
const SVG_NS = 'http://www.w3.org/2000/svg';

// Okabe & Ito's palette: distinguishable with the common colour-vision deficiencies. Yellow
// comes last (weakest on white). Past 8 heads the colours repeat with a dashed line.
const HEAD_COLOURS = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#56B4E9', '#E69F00',
  '#000000', '#F0E442'];

// Viridis (perceptually uniform, readable in grey and by colour-blind readers), 9 stops.
const VIRIDIS = ['#440154', '#472d7b', '#3b528b', '#2c728e', '#21918c', '#28ae80',
  '#5ec962', '#addc30', '#fde725'];

const KINDS = ['encoder-self', 'decoder-self', 'cross'];
const KIND_NAMES = {
  'encoder-self': 'encoder self-attention',
  'decoder-self': 'decoder self-attention',
  'cross': 'cross-attention',
};

// ---- Data access -----------------------------------------------------------------------------

/** The block of `kind` and `layer`, or undefined. */
function block(kind, layer) {
  return DATA.blocks.find((b) => b.kind === kind && b.layer === layer);
}

/** Layers of `kind`, in order. */
function layersOf(kind) {
  return DATA.blocks.filter((b) => b.kind === kind).map((b) => b.layer);
}

/** Query (left) and key (right) token labels of a kind of attention. */
function labels(kind) {
  switch (kind) {
    case 'encoder-self': return [DATA.source, DATA.source];
    case 'decoder-self': return [DATA.decoder_input, DATA.decoder_input];
    default: return [DATA.decoder_input, DATA.source];
  }
}

/** A stored weight as a number in [0, 1]. */
function weight(value) {
  return value / DATA.scale;
}

// ---- Colours ---------------------------------------------------------------------------------

function headColour(head) {
  return HEAD_COLOURS[head % HEAD_COLOURS.length];
}

function headDash(head) {
  return head >= HEAD_COLOURS.length ? '6 3' : null;
}

/** Viridis at `t` in [0, 1], interpolated between its stops. */
function viridis(t) {
  const x = Math.min(Math.max(t, 0), 1) * (VIRIDIS.length - 1);
  const i = Math.min(Math.floor(x), VIRIDIS.length - 2);
  const mix = (a, b) => Math.round(a + (b - a) * (x - i));
  const rgb = (hex) => [1, 3, 5].map((k) => parseInt(hex.slice(k, k + 2), 16));
  const [a, b] = [rgb(VIRIDIS[i]), rgb(VIRIDIS[i + 1])];
  return `rgb(${mix(a[0], b[0])}, ${mix(a[1], b[1])}, ${mix(a[2], b[2])})`;
}

// ---- State -----------------------------------------------------------------------------------

const state = {
  kind: KINDS.find((k) => layersOf(k).length > 0) || 'encoder-self',
  layer: 0,
  heads: new Set(),   // heads drawn in the head view
  selected: 0,        // the head of the matrix, and of ← →
  view: 'head',       // 'head' or 'model'
  focus: null,        // {side: 'query' | 'key', index} while a token is hovered or clicked
  pinned: false,      // whether the focus came from a click (and stays)
  method: null,       // the attribution method shown
};

/** The attributions the page holds (none in pages written without them). */
function attributions() {
  return DATA.attributions || [];
}

function headCount() {
  const b = block(state.kind, state.layer);
  return b ? b.weights.length : 0;
}

/** Keeps the state inside what the data has. */
function clampState() {
  if (!KINDS.includes(state.kind) || layersOf(state.kind).length === 0) {
    state.kind = KINDS.find((k) => layersOf(k).length > 0) || 'encoder-self';
  }
  const layers = layersOf(state.kind);
  if (!layers.includes(state.layer)) state.layer = layers[0] || 0;
  const n = headCount();
  state.heads = new Set([...state.heads].filter((h) => h >= 0 && h < n));
  if (state.heads.size === 0) for (let h = 0; h < n; h++) state.heads.add(h);
  if (!(state.selected >= 0 && state.selected < n)) state.selected = 0;
  const methods = attributions().map((a) => a.method);
  if (!methods.includes(state.method)) state.method = methods[0] || null;
}

/** Reads `#kind=cross&layer=1&heads=0,2&head=0&view=model`. */
function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.has('kind')) state.kind = params.get('kind');
  if (params.has('layer')) state.layer = Number(params.get('layer'));
  if (params.has('heads')) {
    state.heads = new Set(params.get('heads').split(',').filter((s) => s !== '').map(Number));
  }
  if (params.has('head')) state.selected = Number(params.get('head'));
  else if (params.has('heads') && state.heads.size === 1) state.selected = [...state.heads][0];
  if (params.get('view') === 'model') state.view = 'model';
  if (params.has('method')) state.method = params.get('method');
  clampState();
}

function writeHash() {
  const heads = [...state.heads].sort((a, b) => a - b).join(',');
  const hash = `kind=${state.kind}&layer=${state.layer}&heads=${heads}` +
    `&head=${state.selected}&view=${state.view}` +
    (state.method ? `&method=${encodeURIComponent(state.method)}` : '');
  history.replaceState(null, '', `#${hash}`);
}

// ---- SVG helpers -----------------------------------------------------------------------------

function svgElement(name, attributes = {}, text = null) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) {
    if (value !== null && value !== undefined) element.setAttribute(key, value);
  }
  if (text !== null) element.textContent = text;
  return element;
}

/** An SVG root that stands alone when exported (fonts and background inline). */
function svgRoot(width, height, label) {
  const svg = svgElement('svg', {
    width, height, viewBox: `0 0 ${width} ${height}`,
    'font-family': 'DejaVu Sans, Helvetica, Arial, sans-serif', 'font-size': 13,
    role: 'img', 'aria-label': label,
  });
  svg.appendChild(svgElement('rect', { width, height, fill: 'white' }));
  return svg;
}

/** Rough width of a label in pixels at 13 px (no layout pass needed). */
function textWidth(text) {
  return 7.5 * [...text].length;
}

// ---- Head view -------------------------------------------------------------------------------

function drawHeadView() {
  const b = block(state.kind, state.layer);
  const [queries, keys] = labels(state.kind);
  const rowHeight = 20;
  const top = 40;
  const leftWidth = Math.max(60, ...queries.map(textWidth)) + 10;
  const rightWidth = Math.max(60, ...keys.map(textWidth)) + 10;
  const gap = 220;
  const width = leftWidth + gap + rightWidth;
  const height = top + rowHeight * Math.max(queries.length, keys.length) + 10;
  const svg = svgRoot(width, height,
    `${KIND_NAMES[state.kind]}, layer ${state.layer}: links between tokens`);
  svg.id = 'head-view-svg';
  svg.dataset.kind = state.kind;
  svg.dataset.layer = state.layer;
  svg.dataset.heads = [...state.heads].sort((a, b2) => a - b2).join(',');
  svg.appendChild(svgElement('text', { x: 0, y: 16, 'font-weight': 'bold' },
    `${KIND_NAMES[state.kind]} · layer ${state.layer}`));
  svg.appendChild(svgElement('text', { x: leftWidth - 8, y: 32, 'text-anchor': 'end',
    fill: '#5f5f5f', 'font-size': 11 }, 'queries'));
  svg.appendChild(svgElement('text', { x: leftWidth + gap + 8, y: 32, fill: '#5f5f5f',
    'font-size': 11 }, 'keys'));
  const y = (i) => top + rowHeight * i + rowHeight / 2;

  // Links first, so that tokens sit on top.
  const links = svgElement('g', { class: 'links' });
  const threshold = DATA.threshold * DATA.scale;
  if (b) {
    for (const head of [...state.heads].sort((a, b2) => a - b2)) {
      const rows = b.weights[head];
      rows.forEach((row, i) => row.forEach((value, j) => {
        if (value <= threshold) return;
        const w = weight(value);
        links.appendChild(svgElement('line', {
          class: 'link', 'data-head': head, 'data-query': i, 'data-key': j,
          x1: leftWidth, y1: y(i), x2: leftWidth + gap, y2: y(j),
          stroke: headColour(head), 'stroke-opacity': w.toFixed(3),
          'stroke-width': (1 + 3 * w).toFixed(2), 'stroke-dasharray': headDash(head),
        }));
      }));
    }
  }
  svg.appendChild(links);

  const column = (tokens, side, x, anchor) => {
    tokens.forEach((token, i) => {
      const text = svgElement('text', {
        class: `token ${side}`, 'data-index': i, x, y: y(i) + 4, 'text-anchor': anchor,
        tabindex: 0,
      }, token);
      text.addEventListener('mouseenter', () => { if (!state.pinned) focusToken(side, i); });
      text.addEventListener('mouseleave', () => { if (!state.pinned) focusToken(null); });
      text.addEventListener('click', () => {
        const same = state.focus && state.focus.side === side && state.focus.index === i;
        state.pinned = !same;
        focusToken(same ? null : side, i);
      });
      svg.appendChild(text);
    });
  };
  column(queries, 'query', leftWidth - 8, 'end');
  column(keys, 'key', leftWidth + gap + 8, 'start');
  return svg;
}

/** Shows only the links of one token (or all, with `side` null). */
function focusToken(side, index) {
  state.focus = side === null ? null : { side, index };
  const svg = document.getElementById('head-view-svg');
  if (!svg) return;
  for (const link of svg.querySelectorAll('.link')) {
    const mine = state.focus === null ||
      Number(link.dataset[state.focus.side]) === state.focus.index;
    link.classList.toggle('dimmed', !mine);
  }
  for (const token of svg.querySelectorAll('.token')) {
    token.classList.toggle('focused', state.focus !== null &&
      token.classList.contains(state.focus.side) &&
      Number(token.dataset.index) === state.focus.index);
  }
}

// ---- Heatmaps: model view and matrix ---------------------------------------------------------

/** `rows` (stored weights) as a grid of cells of `cell` pixels at (x, y), into `parent`. */
function drawHeatmap(parent, rows, x, y, cell) {
  const cells = svgElement('g', { 'shape-rendering': 'crispEdges' });
  parent.appendChild(cells);
  rows.forEach((row, i) => row.forEach((value, j) => {
    cells.appendChild(svgElement('rect', {
      x: x + j * cell, y: y + i * cell, width: cell, height: cell, fill: viridis(weight(value)),
    }));
  }));
}

function drawModelView() {
  const layers = layersOf(state.kind);
  const n = headCount();
  const [queries, keys] = labels(state.kind);
  const cell = Math.max(1, Math.floor(120 / Math.max(queries.length, keys.length, 1)));
  const thumbW = cell * keys.length;
  const thumbH = cell * queries.length;
  const pad = 28;
  const width = pad + n * (thumbW + 12);
  const height = pad + layers.length * (thumbH + 24);
  const svg = svgRoot(width, height, `${KIND_NAMES[state.kind]}: every layer and head`);
  svg.id = 'model-view-svg';
  svg.dataset.kind = state.kind;
  for (let h = 0; h < n; h++) {
    svg.appendChild(svgElement('text', { x: pad + h * (thumbW + 12), y: 14 }, `head ${h}`));
  }
  layers.forEach((layer, row) => {
    const b = block(state.kind, layer);
    const y = pad + row * (thumbH + 24);
    svg.appendChild(svgElement('text', { x: 0, y: y + thumbH / 2, 'font-size': 11 }, `L${layer}`));
    b.weights.forEach((rows, h) => {
      const x = pad + h * (thumbW + 12);
      const thumb = svgElement('g', {
        class: 'thumb' + (layer === state.layer && h === state.selected ? ' selected' : ''),
        'data-layer': layer, 'data-head': h, tabindex: 0,
      });
      drawHeatmap(thumb, rows, x, y, cell);
      thumb.appendChild(svgElement('rect', { class: 'frame', x, y, width: thumbW,
        height: thumbH, fill: 'none', stroke: '#d0d0d0' }));
      thumb.addEventListener('click', () => {
        state.layer = layer;
        state.selected = h;
        state.heads = new Set([h]);
        state.view = 'head';
        render();
      });
      svg.appendChild(thumb);
    });
  });
  return svg;
}

function drawMatrix() {
  const b = block(state.kind, state.layer);
  if (!b) return svgRoot(10, 10, 'no attention');
  const rows = b.weights[state.selected];
  const [queries, keys] = labels(state.kind);
  const cell = 18;
  const left = Math.max(40, ...queries.map(textWidth)) + 8;
  const top = Math.max(40, ...keys.map(textWidth)) + 30;
  const title = state.kind === 'cross'
    ? `alignment, layer ${state.layer} head ${state.selected}`
    : `${KIND_NAMES[state.kind]}, layer ${state.layer} head ${state.selected}`;
  const width = Math.max(left + cell * keys.length, 1.1 * textWidth(title)) + 10;
  const height = top + cell * queries.length + 10;
  const svg = svgRoot(width, height, title);
  svg.id = 'matrix-svg';
  svg.appendChild(svgElement('text', { x: 0, y: 16, 'font-weight': 'bold' }, title));
  keys.forEach((token, j) => {
    const x = left + j * cell + cell / 2 + 4;
    svg.appendChild(svgElement('text', { x, y: top - 6, transform: `rotate(-60 ${x} ${top - 6})`,
      'font-size': 11 }, token));
  });
  queries.forEach((token, i) => {
    svg.appendChild(svgElement('text', { x: left - 6, y: top + i * cell + cell / 2 + 4,
      'text-anchor': 'end', 'font-size': 11 }, token));
  });
  drawHeatmap(svg, rows, left, top, cell);
  return svg;
}

/** The chosen attribution: output tokens (rows) against the source tokens, then the prefix. */
function drawAttribution() {
  const a = attributions().find((x) => x.method === state.method);
  if (!a) return null;
  const cell = 18;
  const gap = cell;  // between the source and the prefix columns
  const columns = [...a.source_tokens, ...a.prefix_tokens];
  const x = (j) => j < a.source_tokens.length ? j * cell : j * cell + gap;
  const left = Math.max(40, ...a.rows.map(textWidth)) + 8;
  const top = Math.max(40, ...columns.map(textWidth)) + 30;
  const largest = Math.max(1, ...a.source.flat(), ...a.target.flat());
  const title = `${a.method}: what each output token draws on` +
    (a.shares ? ' (shares of the prediction)' : ' (source and prefix normalised apart)');
  const shareWidth = a.shares ? 60 : 0;
  const width = Math.max(left + x(columns.length) + shareWidth, 1.1 * textWidth(title)) + 10;
  const height = top + cell * a.rows.length + 30;
  const svg = svgRoot(width, height, title);
  svg.id = 'attribution-svg';
  svg.dataset.method = a.method;
  svg.appendChild(svgElement('text', { x: 0, y: 16, 'font-weight': 'bold' }, title));
  columns.forEach((token, j) => {
    const cx = left + x(j) + cell / 2 + 4;
    svg.appendChild(svgElement('text', { class: 'column', x: cx, y: top - 6,
      transform: `rotate(-60 ${cx} ${top - 6})`, 'font-size': 11 }, token));
  });
  const cells = svgElement('g', { 'shape-rendering': 'crispEdges' });
  svg.appendChild(cells);
  a.rows.forEach((token, i) => {
    const y = top + i * cell;
    svg.appendChild(svgElement('text', { class: 'row', x: left - 6, y: y + cell / 2 + 4,
      'text-anchor': 'end', 'font-size': 11 }, token));
    const values = [...a.source[i], ...a.target[i]];
    values.forEach((value, j) => {
      const rect = svgElement('rect', { class: 'cell', x: left + x(j), y, width: cell,
        height: cell, fill: viridis(value / largest) });
      rect.appendChild(svgElement('title', {}, `${token} ← ${columns[j]}: ${weight(value).toFixed(4)}`));
      cells.appendChild(rect);
    });
    if (a.shares) {
      const source = a.source[i].reduce((sum, v) => sum + v, 0);
      const total = source + a.target[i].reduce((sum, v) => sum + v, 0);
      svg.appendChild(svgElement('text', { class: 'share', x: left + x(columns.length) + 8,
        y: y + cell / 2 + 4, 'font-size': 11 }, (source / Math.max(total, 1)).toFixed(2)));
    }
  });
  const foot = top + cell * a.rows.length + 20;
  svg.appendChild(svgElement('text', { x: left, y: foot, 'font-size': 11, fill: '#5f5f5f' },
    `source | target prefix; brightest = ${weight(largest).toFixed(3)}` +
    (a.shares ? '; right: source share' : '')));
  return svg;
}

// ---- Controls --------------------------------------------------------------------------------

function drawHeadList() {
  const list = document.getElementById('heads');
  list.replaceChildren();
  const b = block(state.kind, state.layer);
  if (!b) return;
  b.weights.forEach((_, h) => {
    const stats = b.stats[h];
    const item = document.createElement('label');
    item.className = 'head' + (h === state.selected ? ' selected' : '');
    item.dataset.head = h;
    const box = document.createElement('input');
    box.type = 'checkbox';
    box.checked = state.heads.has(h);
    box.addEventListener('change', () => {
      if (box.checked) state.heads.add(h); else state.heads.delete(h);
      state.selected = h;
      render();
    });
    const name = document.createElement('span');
    name.className = 'name';
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.style.background = headColour(h);
    name.append(swatch, `head ${h}`);
    const text = document.createElement('span');
    text.className = 'stats';
    text.textContent = `entropy ${stats.entropy.toFixed(2)} · distance ` +
      `${stats.distance.toFixed(2)} · confidence ${stats.confidence.toFixed(2)}`;
    item.append(box, name, text);
    list.appendChild(item);
  });
}

function syncControls() {
  const kind = document.getElementById('kind');
  for (const option of kind.options) option.disabled = layersOf(option.value).length === 0;
  kind.value = state.kind;
  const layer = document.getElementById('layer');
  layer.replaceChildren(...layersOf(state.kind).map((l) => new Option(`${l}`, `${l}`)));
  layer.value = `${state.layer}`;
  document.getElementById('show-head-view').setAttribute('aria-pressed', state.view === 'head');
  document.getElementById('show-model-view').setAttribute('aria-pressed', state.view === 'model');
  const method = document.getElementById('method');
  if (method.options.length !== attributions().length) {
    method.replaceChildren(...attributions().map((a) => new Option(a.method, a.method)));
  }
  method.value = state.method || '';
  document.getElementById('attribution').hidden = attributions().length === 0;
}

function render() {
  clampState();
  syncControls();
  drawHeadList();
  const view = document.getElementById('view');
  view.replaceChildren(state.view === 'head' ? drawHeadView() : drawModelView());
  document.getElementById('matrix').replaceChildren(drawMatrix());
  const attribution = drawAttribution();
  document.getElementById('attribution-view').replaceChildren(...(attribution ? [attribution] : []));
  if (state.focus) focusToken(state.focus.side, state.focus.index);
  writeHash();
  document.body.dataset.ready = 'true';
}

/** Saves the view on screen (head view or model view) as a standalone SVG file. */
function exportView() {
  const svg = document.querySelector('#view svg');
  const text = '<?xml version="1.0" encoding="UTF-8"?>\n' +
    new XMLSerializer().serializeToString(svg);
  const url = URL.createObjectURL(new Blob([text], { type: 'image/svg+xml' }));
  const link = document.createElement('a');
  link.href = url;
  link.download = `attention-${state.kind}-layer-${state.layer}-${state.view}.svg`;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function onKey(event) {
  if (event.target instanceof HTMLSelectElement || event.altKey || event.ctrlKey ||
      event.metaKey) return;
  const layers = layersOf(state.kind);
  const n = headCount();
  const at = layers.indexOf(state.layer);
  switch (event.key) {
    case 'ArrowUp': state.layer = layers[Math.max(0, at - 1)]; break;
    case 'ArrowDown': state.layer = layers[Math.min(layers.length - 1, at + 1)]; break;
    case 'ArrowLeft': state.selected = (state.selected + n - 1) % n;
      state.heads = new Set([state.selected]); break;
    case 'ArrowRight': state.selected = (state.selected + 1) % n;
      state.heads = new Set([state.selected]); break;
    case 'a': state.heads = new Set([...Array(n).keys()]); break;
    case 'm': state.view = state.view === 'head' ? 'model' : 'head'; break;
    default: return;
  }
  event.preventDefault();
  render();
}

// ---- Start -----------------------------------------------------------------------------------

/** Errors of this script go into the page too, where a test (or a reader) sees them. */
function reportError(message) {
  const box = document.getElementById('errors');
  box.hidden = false;
  box.textContent += `${message}\n`;
  document.body.dataset.errors = 'true';
}
window.addEventListener('error', (event) => reportError(event.message));

function start() {
  document.getElementById('model').textContent = DATA.info.model;
  document.getElementById('source-text').textContent = DATA.info.source_text;
  document.getElementById('output-text').textContent = DATA.info.output_text;
  document.getElementById('kind').addEventListener('change', (e) => {
    state.kind = e.target.value;
    state.heads = new Set();
    render();
  });
  document.getElementById('layer').addEventListener('change', (e) => {
    state.layer = Number(e.target.value);
    render();
  });
  document.getElementById('show-head-view').addEventListener('click', () => {
    state.view = 'head';
    render();
  });
  document.getElementById('show-model-view').addEventListener('click', () => {
    state.view = 'model';
    render();
  });
  document.getElementById('method').addEventListener('change', (e) => {
    state.method = e.target.value;
    render();
  });
  document.getElementById('export').addEventListener('click', exportView);
  document.addEventListener('keydown', onKey);
  window.addEventListener('hashchange', () => { readHash(); render(); });
  readHash();
  render();
}

try {
  start();
} catch (error) {
  reportError(error.stack || String(error));
}
