//! Assembles console input bytes into command lines.

use alloc::string::String;

/// Longest command line accepted; longer input is discarded up to the next newline.
pub const LINE_LENGTH_MAX_BYTES: usize = 512;

/// A bounded line editor: printable ASCII is kept, backspace/DEL remove the last byte,
/// CR or LF ends the line, other control bytes are ignored.
#[derive(Debug, Default)]
pub struct LineBuffer {
    line: String,
    overflowed: bool,
}

/// What feeding one byte produced.
#[derive(Debug, PartialEq, Eq)]
pub enum LineEvent {
    /// Nothing yet.
    Pending,
    /// A complete line (without the terminator); empty lines are reported too.
    Line(String),
    /// The line was longer than [`LINE_LENGTH_MAX_BYTES`] and was dropped.
    Overflow,
}

impl LineBuffer {
    /// An empty buffer.
    pub fn new() -> LineBuffer {
        LineBuffer::default()
    }

    /// Feeds one input byte.
    pub fn push(&mut self, byte: u8) -> LineEvent {
        match byte {
            b'\r' | b'\n' => {
                let line = core::mem::take(&mut self.line);
                if core::mem::take(&mut self.overflowed) {
                    LineEvent::Overflow
                } else {
                    LineEvent::Line(line)
                }
            }
            0x08 | 0x7f => {
                self.line.pop();
                LineEvent::Pending
            }
            0x20..=0x7e if !self.overflowed => {
                if self.line.len() >= LINE_LENGTH_MAX_BYTES {
                    self.overflowed = true;
                    self.line.clear();
                } else {
                    self.line.push(byte as char);
                }
                LineEvent::Pending
            }
            _ => LineEvent::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn feed(buffer: &mut LineBuffer, bytes: &[u8]) -> Vec<LineEvent> {
        bytes
            .iter()
            .map(|&byte| buffer.push(byte))
            .filter(|event| *event != LineEvent::Pending)
            .collect()
    }

    #[test]
    fn lines_backspace_and_control_bytes() {
        let mut buffer = LineBuffer::new();
        assert_eq!(
            feed(&mut buffer, b"lsx\x08 /a\x1b\r"),
            [LineEvent::Line("ls /a".into())]
        );
        assert_eq!(feed(&mut buffer, b"\n"), [LineEvent::Line(String::new())]);
    }

    #[test]
    fn overlong_lines_are_dropped_whole() {
        let mut buffer = LineBuffer::new();
        let long = [b'a'; LINE_LENGTH_MAX_BYTES + 10];
        assert_eq!(feed(&mut buffer, &long), []);
        assert_eq!(feed(&mut buffer, b"\n"), [LineEvent::Overflow]);
        assert_eq!(
            feed(&mut buffer, b"help\n"),
            [LineEvent::Line("help".into())]
        );
    }
}
