//! Server-sent events from an upstream: tolerant of fragmentation (events split anywhere,
//! including inside a line or a CRLF), strict about size.

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with newlines.
    pub data: String,
}

/// The upstream broke the event-stream format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// One event is larger than allowed.
    #[error("upstream event larger than {0} bytes")]
    TooLarge(usize),
    /// An event is not UTF-8.
    #[error("upstream event is not valid UTF-8")]
    InvalidUtf8,
}

/// Incremental parser.
#[derive(Debug)]
pub struct SseParser {
    buf: Vec<u8>,
    max_event: usize,
    pending: SseEvent,
    has_data: bool,
}

impl SseParser {
    /// A parser refusing events above `max_event` bytes.
    pub fn new(max_event: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_event,
            pending: SseEvent::default(),
            has_data: false,
        }
    }

    /// Feeds bytes; returns the events completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n' || b == b'\r') {
            // A CR at the very end may be the first half of CRLF: wait for more.
            let is_cr = self.buf.get(nl) == Some(&b'\r');
            if is_cr && nl + 1 == self.buf.len() {
                break;
            }
            let skip = if is_cr && self.buf.get(nl + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
            let line: Vec<u8> = self.buf.drain(..nl + skip).take(nl).collect();
            let line = String::from_utf8(line).map_err(|_| SseError::InvalidUtf8)?;
            if line.is_empty() {
                if self.has_data {
                    out.push(std::mem::take(&mut self.pending));
                    self.has_data = false;
                } else {
                    self.pending = SseEvent::default();
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match field {
                "data" => {
                    if self.has_data {
                        self.pending.data.push('\n');
                    }
                    self.pending.data.push_str(value);
                    self.has_data = true;
                }
                "event" => self.pending.event = Some(value.to_owned()),
                _ => {}
            }
            if self.pending.data.len() > self.max_event {
                return Err(SseError::TooLarge(self.max_event));
            }
        }
        if self.buf.len() > self.max_event {
            return Err(SseError::TooLarge(self.max_event));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_split_anywhere() {
        let stream =
            b"data: {\"a\":1}\r\n\r\n: comment\n\ndata: x\ndata: y\n\nevent: e\ndata: [DONE]\n\n";
        for split in 1..stream.len() {
            let mut p = SseParser::new(1024);
            let mut events = Vec::new();
            for chunk in stream.chunks(split) {
                events.extend(p.push(chunk).unwrap_or_default());
            }
            let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
            assert_eq!(data, vec!["{\"a\":1}", "x\ny", "[DONE]"], "split {split}");
            assert_eq!(events[2].event.as_deref(), Some("e"));
        }
    }

    #[test]
    fn refuses_oversized_events() {
        let mut p = SseParser::new(8);
        assert_eq!(p.push(b"data: 0123456789\n"), Err(SseError::TooLarge(8)));
        let mut p = SseParser::new(8);
        assert_eq!(p.push(b"data: 0123456789"), Err(SseError::TooLarge(8)));
    }
}
