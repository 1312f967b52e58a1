//! Which protocol the client speaks, from its first bytes, and for HTTP/2 whether a header
//! block is open: a HEADERS frame without `END_HEADERS` opens one, the CONTINUATION with
//! `END_HEADERS` closes it (RFC 9113, 6.2 and 6.10). Only the 9-byte frame headers are read;
//! payloads are skipped by their length. hyper's h2 decodes the same bytes for real; this
//! only follows them to know when a block began.

/// The connection preface every HTTP/2 client sends first.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Framing {
    /// The first bytes, so far all a prefix of the preface (`matched` of them).
    Sniffing {
        matched: usize,
    },
    /// HTTP/1.x: anything that is not the preface.
    H1,
    H2(Frames),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Frames {
    header: [u8; FRAME_HEADER],
    have: usize,
    /// Payload bytes of the current frame still to skip.
    skip: usize,
    block_open: bool,
}

impl Framing {
    pub(super) fn new() -> Self {
        Framing::Sniffing { matched: 0 }
    }

    /// The client sent something that is not the HTTP/2 preface.
    pub(super) fn is_h1(&self) -> bool {
        matches!(self, Framing::H1)
    }

    /// Follows `bytes`, the next ones read from the client. Returns the header block's new
    /// state when it changed (`Some(true)`: opened).
    pub(super) fn feed(&mut self, mut bytes: &[u8]) -> Option<bool> {
        if let Framing::Sniffing { matched } = self {
            let want = &PREFACE[*matched..];
            let n = want.len().min(bytes.len());
            if bytes[..n] != want[..n] {
                *self = Framing::H1;
                return None;
            }
            *matched += n;
            bytes = &bytes[n..];
            if *matched < PREFACE.len() {
                return None;
            }
            *self = Framing::H2(Frames::default());
        }
        match self {
            Framing::H2(frames) => frames.feed(bytes),
            _ => None,
        }
    }
}

impl Frames {
    fn feed(&mut self, mut bytes: &[u8]) -> Option<bool> {
        let was = self.block_open;
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (FRAME_HEADER - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have < FRAME_HEADER {
                break;
            }
            self.have = 0;
            let [l0, l1, l2, kind, flags, ..] = self.header;
            self.skip = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
            let ends = flags & END_HEADERS != 0;
            match kind {
                HEADERS => self.block_open = !ends,
                CONTINUATION if ends => self.block_open = false,
                _ => {}
            }
        }
        (self.block_open != was).then_some(self.block_open)
    }
}
