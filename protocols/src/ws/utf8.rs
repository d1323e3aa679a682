//! UTF-8 validation of a text message that arrives in pieces: each piece is checked as it
//! comes, a code point cut at a piece boundary is carried over, and the first invalid byte
//! fails the message at once (RFC 6455 section 8.1: fail fast, close with 1007).

/// The validator's state between pieces.
#[derive(Clone, Debug, Default)]
pub struct Utf8Stream {
    /// The start of a code point cut off at the end of the last piece.
    carry: [u8; 4],
    carried: usize,
}

/// The bytes are not UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Utf8Stream {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next piece. A piece may end inside a code point (the rest must follow);
    /// anything that can never become UTF-8 is an error now.
    pub fn feed(&mut self, mut piece: &[u8]) -> Result<(), InvalidUtf8> {
        if self.carried > 0 {
            // Complete the carried code point first.
            let need = sequence_len(self.carry[0]).ok_or(InvalidUtf8)?;
            let take = (need - self.carried).min(piece.len());
            self.carry[self.carried..self.carried + take].copy_from_slice(&piece[..take]);
            self.carried += take;
            piece = &piece[take..];
            match std::str::from_utf8(&self.carry[..self.carried]) {
                Ok(_) => self.carried = 0,
                Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                Err(_) => {
                    // Still incomplete: the piece ran out.
                    debug_assert!(piece.is_empty());
                    return Ok(());
                }
            }
        }
        match std::str::from_utf8(piece) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            Err(e) => {
                // A valid prefix, then the start of a code point the next piece completes.
                let tail = &piece[e.valid_up_to()..];
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carried = tail.len();
                Ok(())
            }
        }
    }

    /// The message ended: no code point may be left open.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let open = self.carried > 0;
        self.carried = 0;
        if open { Err(InvalidUtf8) } else { Ok(()) }
    }
}

/// The length of the sequence a lead byte starts, if it can start one.
fn sequence_len(lead: u8) -> Option<usize> {
    match lead {
        0x00..=0x7F => Some(1),
        0xC2..=0xDF => Some(2),
        0xE0..=0xEF => Some(3),
        0xF0..=0xF4 => Some(4),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_split(bytes: &[u8]) -> Result<(), InvalidUtf8> {
        let whole = std::str::from_utf8(bytes)
            .map(|_| ())
            .map_err(|_| InvalidUtf8);
        for a in 0..=bytes.len() {
            for b in a..=bytes.len() {
                let mut v = Utf8Stream::new();
                let got = v
                    .feed(&bytes[..a])
                    .and_then(|_| v.feed(&bytes[a..b]))
                    .and_then(|_| v.feed(&bytes[b..]))
                    .and_then(|_| v.finish());
                assert_eq!(got, whole, "{bytes:?} split at {a}, {b}");
            }
        }
        whole
    }

    #[test]
    fn agrees_with_whole_validation_at_every_split() {
        assert!(check_split("héllo wörld €𝄞".as_bytes()).is_ok());
        assert!(check_split(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5").is_ok());
        for bad in [
            &b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"[..],
            b"\xf4\x90\x80\x80",
            b"\xc0\xaf",
            b"abc\xff",
            b"\xe1\xbd",
        ] {
            assert!(check_split(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fails_on_the_first_piece_that_cannot_become_utf8() {
        let mut v = Utf8Stream::new();
        // A surrogate's first two bytes are already hopeless: no need to wait for the rest.
        assert_eq!(v.feed(b"ok \xed\xa0"), Err(InvalidUtf8));
        let mut v = Utf8Stream::new();
        assert_eq!(v.feed(b"\xf4"), Ok(()));
        assert_eq!(v.feed(b"\x90"), Err(InvalidUtf8));
    }
}
