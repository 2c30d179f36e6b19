//! Server-sent events, read incrementally: the wire format of streaming OpenAI-compatible
//! responses (`data: {...}` events, then `data: [DONE]`).

/// An incremental parser of a server-sent events stream: feed it bytes as they arrive,
/// in pieces of any size, and it calls back with each event's data. Lines end with
/// `\n`, `\r\n` or `\r`; a blank line ends an event; `data:` lines of one event are
/// joined with `\n`; comments (`:`) and other fields are ignored.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    after_cr: bool,
}

impl SseParser {
    pub(crate) fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(&str)) {
        for &b in bytes {
            if std::mem::take(&mut self.after_cr) && b == b'\n' {
                continue;
            }
            match b {
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(&mut on_event);
                }
                b'\n' => self.end_line(&mut on_event),
                _ => self.line.push(b),
            }
        }
    }

    fn end_line(&mut self, on_event: &mut impl FnMut(&str)) {
        if self.line.is_empty() {
            if std::mem::take(&mut self.has_data) {
                on_event(&String::from_utf8_lossy(&self.data));
            }
            self.data.clear();
            return;
        }
        let line = &self.line[..];
        if line[0] != b':' {
            let (field, value) = match line.iter().position(|&c| c == b':') {
                Some(at) => {
                    let v = &line[at + 1..];
                    (&line[..at], v.strip_prefix(b" ").unwrap_or(v))
                }
                None => (line, &[][..]),
            };
            if field == b"data" {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
        }
        self.line.clear();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Events of `stream` fed in two pieces split at `at`.
    fn events_split(stream: &[u8], at: usize) -> Vec<String> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        p.feed(&stream[..at], |d| out.push(d.to_string()));
        p.feed(&stream[at..], |d| out.push(d.to_string()));
        out
    }

    /// A stream as vLLM sends it, with the fields and comments a parser must skip.
    pub(crate) const VLLM_LIKE: &str = concat!(
        ": keep-alive comment\n\n",
        "data: {\"choices\":[{\"index\":0,\"text\":\"Hel\",\"finish_reason\":null}],\"usage\":null}\n\n",
        "event: message\nid: 7\nretry: 100\n",
        "data: {\"choices\":[{\"index\":0,\"text\":\"\",\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"text\":\"lo\",\"finish_reason\":\"length\"}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3,\"total_tokens\":8}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn events_survive_a_split_at_every_byte_offset() {
        for text in [
            VLLM_LIKE.to_string(),
            VLLM_LIKE.replace('\n', "\r\n"),
            VLLM_LIKE.replace('\n', "\r"),
        ] {
            let whole = events_split(text.as_bytes(), 0);
            assert_eq!(whole.len(), 5, "{text:?}");
            assert!(whole[0].starts_with("{\"choices\":[{\"index\":0,\"text\":\"Hel\""));
            assert_eq!(whole[4], "[DONE]");
            for at in 0..=text.len() {
                assert_eq!(events_split(text.as_bytes(), at), whole, "split at {at}");
            }
            // And byte by byte.
            let mut p = SseParser::default();
            let mut out = Vec::new();
            for b in text.as_bytes() {
                p.feed(std::slice::from_ref(b), |d| out.push(d.to_string()));
            }
            assert_eq!(out, whole);
        }
    }

    #[test]
    fn multi_line_data_comments_and_unterminated_events() {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        p.feed(
            b":only a comment\n\ndata:a\ndata: b\r\n\r\nfield-without-colon\ndata: tail",
            |d| {
                out.push(d.to_string());
            },
        );
        // "data:a" has no space to strip; the last event has no blank line yet.
        assert_eq!(out, ["a\nb"]);
        p.feed(b"\n\n", |d| out.push(d.to_string()));
        assert_eq!(out, ["a\nb", "tail"]);
    }
}
