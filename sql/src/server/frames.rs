//! Checks every frontend message's frame before pgwire decodes it.
//!
//! pgwire 0.42.1 decodes a message's fields from its whole read buffer rather than from the
//! frame the length prefix declares, and reads them unchecked: a frame whose declared length is
//! shorter than its fields (or under 4) makes it panic (`fuzz/known-upstream/`). So the
//! connection reads through [`Validating`], which releases bytes to pgwire only a whole,
//! well-formed frame at a time: a length from 4 to [`MAX_FRAME_BYTES`], and for each message
//! type pgwire parses field by field (startup, Query, Parse, Bind, Describe, Execute, Close,
//! CopyFail, and the body-less ones) fields that end exactly where the frame does. A frame that
//! fails is an `InvalidData` read error: the connection is told so (08P01) and closed.
//!
//! The first frame of a connection (after TLS negotiation) is in the startup format, with no
//! type byte; so are a cancel request and an SSL or GSS request (after which another startup
//! frame follows). Every later frame has a type byte.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest frame accepted, in bytes (a statement's text is at most 1 MiB and a value
/// 8 MiB; COPY data comes in frames of its own).
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 8192;

/// Protocol 3.0's startup code, and the codes of the requests sent in its place.
const PROTOCOL_3: u32 = 196_608;
const CANCEL_REQUEST: u32 = 80_877_102;
const SSL_REQUEST: u32 = 80_877_103;
const GSS_REQUEST: u32 = 80_877_104;

/// Where a connection's frontend stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The next frame is in the startup format (no type byte).
    Startup,
    /// Every frame has a type byte; a password message ('p') is the first of its connection,
    /// which SCRAM makes a SASLInitialResponse (pgwire parses it unchecked).
    Typed,
    /// Typed, after the first password message (later ones are raw SASL responses).
    TypedAfterPassword,
}

/// The length of the first frame of `buf` if all of it is there, checked (with the phase
/// that follows it); `Ok(None)` while more bytes are needed.
pub fn next_frame(buf: &[u8], phase: Phase) -> Result<Option<(usize, Phase)>, String> {
    let header = match phase {
        Phase::Startup => 0,
        Phase::Typed | Phase::TypedAfterPassword => 1,
    };
    let Some(length) = buf.get(header..header + 4) else {
        return Ok(None);
    };
    let declared = u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize;
    if !(4..=MAX_FRAME_BYTES).contains(&declared) {
        return Err(format!("a message declares {declared} bytes"));
    }
    let Some(frame) = buf.get(..header + declared) else {
        return Ok(None);
    };
    let body = &frame[header + 4..];
    let next = match (phase, frame[0]) {
        (Phase::Startup, _) => check_startup(body)?,
        (Phase::Typed, b'p') => {
            check_sasl_initial_response(body)?;
            Phase::TypedAfterPassword
        }
        (phase, kind) => {
            check_typed(kind, body)?;
            phase
        }
    };
    Ok(Some((frame.len(), next)))
}

/// A startup-format frame's body; the phase after it.
fn check_startup(body: &[u8]) -> Result<Phase, String> {
    let mut r = Fields(body);
    let code = r.u32()?;
    match code {
        SSL_REQUEST | GSS_REQUEST => {
            r.end()?;
            Ok(Phase::Startup)
        }
        CANCEL_REQUEST => {
            // The process id, then the secret key: 4 bytes, or up to 256 in protocol 3.2.
            r.u32()?;
            if !(4..=256).contains(&r.0.len()) {
                return Err(format!("a cancel key of {} bytes", r.0.len()));
            }
            Ok(Phase::Startup)
        }
        code if code >> 16 == PROTOCOL_3 >> 16 => {
            // Name and value pairs, then an empty name.
            loop {
                if r.cstring()?.is_empty() {
                    break;
                }
                r.cstring()?;
            }
            r.end()?;
            Ok(Phase::Typed)
        }
        other => Err(format!(
            "unsupported protocol {}.{}",
            other >> 16,
            other & 0xffff
        )),
    }
}

/// The first password message's body: a mechanism name, then data of a given length (-1:
/// none).
fn check_sasl_initial_response(body: &[u8]) -> Result<(), String> {
    let mut r = Fields(body);
    r.cstring()?;
    let len = r.i32()?;
    if len >= 0 {
        r.skip(len as usize)?;
    } else if len != -1 {
        return Err(format!("SASL data of length {len}"));
    }
    r.end()
}

/// A typed frame's body.
fn check_typed(kind: u8, body: &[u8]) -> Result<(), String> {
    let mut r = Fields(body);
    match kind {
        // Query, CopyFail: one string.
        b'Q' | b'f' => {
            r.cstring()?;
        }
        // Parse: name, query, parameter types.
        b'P' => {
            r.cstring()?;
            r.cstring()?;
            let types = r.count()?;
            r.skip(types * 4)?;
        }
        // Bind: portal, statement, parameter formats, parameters, result formats.
        b'B' => {
            r.cstring()?;
            r.cstring()?;
            let formats = r.count()?;
            r.skip(formats * 2)?;
            for _ in 0..r.count()? {
                let len = r.i32()?;
                if len > 0 {
                    r.skip(len as usize)?;
                } else if len < -1 {
                    return Err(format!("a Bind parameter of length {len}"));
                }
            }
            let results = r.count()?;
            r.skip(results * 2)?;
        }
        // Describe, Close: 'S' or 'P', then a name.
        b'D' | b'C' => {
            match r.u8()? {
                b'S' | b'P' => {}
                other => return Err(format!("a Describe or Close of kind {other}")),
            }
            r.cstring()?;
        }
        // Execute: portal, row limit.
        b'E' => {
            r.cstring()?;
            r.i32()?;
        }
        // Sync, Flush, Terminate, CopyDone: nothing.
        b'S' | b'H' | b'X' | b'c' => {}
        // CopyData, later password messages (raw bytes) and types pgwire refuses by itself.
        _ => return Ok(()),
    }
    r.end()
}

/// Reads fields off a frame's body, failing rather than reading past it.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.0.len() < n {
            return Err("a message's fields run past its length".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn skip(&mut self, n: usize) -> Result<(), String> {
        self.take(n).map(|_| ())
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i32(&mut self) -> Result<i32, String> {
        self.u32().map(|v| v as i32)
    }

    /// A 16-bit element count (unsigned: up to 65535 parameters).
    fn count(&mut self) -> Result<usize, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]) as usize)
    }

    /// A NUL-terminated string, without its NUL.
    fn cstring(&mut self) -> Result<&[u8], String> {
        let Some(nul) = self.0.iter().position(|b| *b == 0) else {
            return Err("a string without its terminating NUL".into());
        };
        let s = &self.0[..nul];
        self.0 = &self.0[nul + 1..];
        Ok(s)
    }

    fn end(&self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(format!("{} bytes after a message's fields", self.0.len()))
        }
    }
}

/// A connection's stream that hands its reader only whole, checked frames ([`next_frame`]);
/// writes pass through.
pub struct Validating<T> {
    inner: T,
    phase: Phase,
    /// Bytes read but not yet checked.
    pending: BytesMut,
    /// Checked bytes not yet handed over.
    ready: BytesMut,
    /// Why the stream was refused; every later read fails with it.
    refused: Option<String>,
}

impl<T> Validating<T> {
    /// Wraps `inner`, whose first frame is in the startup format; `buffered` holds bytes
    /// already read from it.
    pub fn new(inner: T, buffered: BytesMut) -> Validating<T> {
        Validating {
            inner,
            phase: Phase::Startup,
            pending: buffered,
            ready: BytesMut::new(),
            refused: None,
        }
    }

    /// Moves every whole, checked frame from `pending` to `ready`.
    fn check_pending(&mut self) -> io::Result<()> {
        if let Some(why) = &self.refused {
            return Err(io::Error::new(io::ErrorKind::InvalidData, why.clone()));
        }
        loop {
            match next_frame(&self.pending, self.phase) {
                Ok(Some((len, phase))) => {
                    let frame = self.pending.split_to(len);
                    self.ready.extend_from_slice(&frame);
                    self.phase = phase;
                }
                Ok(None) => return Ok(()),
                Err(why) => {
                    self.refused = Some(why.clone());
                    return Err(io::Error::new(io::ErrorKind::InvalidData, why));
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Validating<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            this.check_pending()?;
            if !this.ready.is_empty() {
                continue;
            }
            this.pending.reserve(READ_CHUNK);
            let read = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.inner),
                cx,
                &mut this.pending
            ))?;
            if read == 0 {
                // End of stream: a partial frame left over is dropped, as the peer is gone.
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Validating<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut frame = vec![kind];
        frame.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        frame.extend_from_slice(body);
        frame
    }

    #[test]
    fn well_formed_frames_pass_and_wait_for_their_bytes() {
        let mut startup = 196_608u32.to_be_bytes().to_vec();
        startup.extend_from_slice(b"user\0root\0\0");
        let mut frame = ((startup.len() + 4) as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&startup);
        assert_eq!(
            next_frame(&frame, Phase::Startup),
            Ok(Some((frame.len(), Phase::Typed)))
        );
        assert_eq!(
            next_frame(&frame[..frame.len() - 1], Phase::Startup),
            Ok(None)
        );

        let query = typed(b'Q', b"SELECT 1\0");
        assert_eq!(
            next_frame(&query, Phase::Typed),
            Ok(Some((query.len(), Phase::Typed)))
        );
        let parse = typed(b'P', b"s1\0SELECT $1\0\0\x01\0\0\0\x17");
        assert!(matches!(next_frame(&parse, Phase::Typed), Ok(Some(_))));
        let bind = typed(
            b'B',
            b"\0s1\0\0\x01\0\x01\0\x01\0\0\0\x04\0\0\0\x2a\0\x01\0\x01",
        );
        assert!(matches!(next_frame(&bind, Phase::Typed), Ok(Some(_))));
        let null_param = typed(b'B', b"\0\0\0\0\0\x01\xff\xff\xff\xff\0\0");
        assert!(matches!(next_frame(&null_param, Phase::Typed), Ok(Some(_))));
        // 40,000 parameters: counts are unsigned.
        let mut many = b"s\0INSERT\0".to_vec();
        many.extend_from_slice(&40_000u16.to_be_bytes());
        many.extend_from_slice(&vec![0u8; 40_000 * 4]);
        assert!(matches!(
            next_frame(&typed(b'P', &many), Phase::Typed),
            Ok(Some(_))
        ));
        for body_less in [b'S', b'H', b'X', b'c'] {
            assert!(matches!(
                next_frame(&typed(body_less, b""), Phase::Typed),
                Ok(Some(_))
            ));
        }
    }

    #[test]
    fn malformed_frames_are_refused() {
        // Shorter than the length field itself, or absurdly long.
        assert!(next_frame(b"Q\0\0\0\x02", Phase::Typed).is_err());
        assert!(next_frame(b"Q\x7f\xff\xff\xff", Phase::Typed).is_err());
        assert!(next_frame(b"\0\0\0\x03", Phase::Startup).is_err());
        // Fields past the declared length: a Parse cut before its type count.
        assert!(next_frame(&typed(b'P', b"s\0SELECT 1\0"), Phase::Typed).is_err());
        assert!(next_frame(&typed(b'P', b"s\0q\0\0\x02\0\0\0\x17"), Phase::Typed).is_err());
        // 65535 parameter types (the count is unsigned), but none of them there.
        assert!(next_frame(&typed(b'P', b"s\0q\0\xff\xff"), Phase::Typed).is_err());
        assert!(next_frame(&typed(b'Q', b"no terminator"), Phase::Typed).is_err());
        assert!(next_frame(&typed(b'Q', b"two\0strings\0"), Phase::Typed).is_err());
        assert!(next_frame(
            &typed(b'B', b"\0\0\0\0\0\x01\0\0\0\x09ab\0\0"),
            Phase::Typed
        )
        .is_err());
        assert!(next_frame(
            &typed(b'B', b"\0\0\0\0\0\x01\xff\xff\xff\xfe\0\0"),
            Phase::Typed
        )
        .is_err());
        assert!(next_frame(&typed(b'D', b"Xname\0"), Phase::Typed).is_err());
        assert!(next_frame(&typed(b'E', b"\0\0\0"), Phase::Typed).is_err());
        assert!(next_frame(&typed(b'S', b"x"), Phase::Typed).is_err());
        // A startup with an unterminated parameter list, or an unknown protocol.
        let mut bad = 196_608u32.to_be_bytes().to_vec();
        bad.extend_from_slice(b"user\0root\0");
        let mut frame = ((bad.len() + 4) as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&bad);
        assert!(next_frame(&frame, Phase::Startup).is_err());
        assert!(next_frame(b"\0\0\0\x08\0\x02\0\0", Phase::Startup).is_err());
    }

    #[test]
    fn the_first_password_message_must_be_a_sasl_initial_response() {
        let good = typed(b'p', b"SCRAM-SHA-256\0\0\0\0\x03abc");
        assert_eq!(
            next_frame(&good, Phase::Typed),
            Ok(Some((good.len(), Phase::TypedAfterPassword)))
        );
        for bad in [
            &b"SCRAM-SHA-256\0\0\0"[..],
            b"SCRAM-SHA-256\0\0\0\0\x09abc",
            b"SCRAM-SHA-256\0\xff\xff\xff\xf0",
            b"no nul",
        ] {
            assert!(
                next_frame(&typed(b'p', bad), Phase::Typed).is_err(),
                "{bad:?}"
            );
        }
        // Later SASL responses are raw bytes.
        let raw = typed(b'p', b"c=biws,r=...");
        assert!(matches!(
            next_frame(&raw, Phase::TypedAfterPassword),
            Ok(Some((_, Phase::TypedAfterPassword)))
        ));
    }

    #[test]
    fn requests_in_the_startup_format_keep_the_startup_phase() {
        let ssl = [0, 0, 0, 8, 4, 210, 22, 47];
        assert_eq!(
            next_frame(&ssl, Phase::Startup),
            Ok(Some((8, Phase::Startup)))
        );
        let mut cancel = vec![0, 0, 0, 16, 4, 210, 22, 46];
        cancel.extend_from_slice(&[0; 8]);
        assert_eq!(
            next_frame(&cancel, Phase::Startup),
            Ok(Some((16, Phase::Startup)))
        );
        // Protocol 3.2's longer keys.
        let mut long_key = vec![0, 0, 0, 44, 4, 210, 22, 46];
        long_key.extend_from_slice(&[0; 36]);
        assert!(matches!(
            next_frame(&long_key, Phase::Startup),
            Ok(Some((44, Phase::Startup)))
        ));
        let short_key = [0, 0, 0, 14, 4, 210, 22, 46, 0, 0, 0, 1, 0, 0];
        assert!(next_frame(&short_key, Phase::Startup).is_err());
    }
}
