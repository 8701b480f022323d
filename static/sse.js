// Server-sent events read with fetch(): EventSource cannot send the admin
// token, so the stream is read as text and parsed here, as the HTML
// standard's event-stream rules describe (fields id, event, data; comment
// lines start with ":"; an empty line ends an event).

// Feed it text as it arrives (chunks may split lines anywhere); push()
// returns the events completed so far as {id, event, data}.
export class SseParser {
  constructor() {
    this.buffer = '';
    this.lastId = '';
    this.reset();
  }

  reset() {
    this.event = '';
    this.data = [];
    this.hasData = false;
  }

  push(text) {
    const out = [];
    this.buffer += text;
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.buffer);
      // A lone "\r" at the end may be the first half of "\r\n".
      if (!m || (m[0] === '\r' && m.index === this.buffer.length - 1)) break;
      const line = this.buffer.slice(0, m.index);
      this.buffer = this.buffer.slice(m.index + m[0].length);
      this.line(line, out);
    }
    return out;
  }

  // The end of the stream: an event without its empty line is dropped.
  end() {
    this.buffer = '';
    this.reset();
  }

  line(line, out) {
    if (line === '') {
      if (this.hasData) out.push({ id: this.lastId, event: this.event || 'message', data: this.data.join('\n') });
      this.reset();
      return;
    }
    if (line[0] === ':') return; // a comment (keep-alive)
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value[0] === ' ') value = value.slice(1);
    if (field === 'event') this.event = value;
    else if (field === 'data') { this.data.push(value); this.hasData = true; }
    else if (field === 'id' && !value.includes('\0')) this.lastId = value;
  }
}

// Reads an event stream response, calling onEvent({id, event, data}) for
// each event; resolves when the stream ends, rejects on a network error or
// when signal aborts.
export async function readEventStream(res, onEvent, signal) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new SseParser();
  const abort = () => reader.cancel().catch(() => {});
  signal?.addEventListener('abort', abort, { once: true });
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      for (const ev of parser.push(value)) onEvent(ev);
    }
    parser.end();
  } finally {
    signal?.removeEventListener('abort', abort);
  }
  return parser.lastId;
}
