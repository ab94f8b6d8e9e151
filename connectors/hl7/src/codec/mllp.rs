//! MLLP framing (HL7 v2 Minimal Lower Layer Protocol, release 2):
//! `<VT=0x0B> message <FS=0x1C><CR=0x0D>`, as a tokio-util codec.
//!
//! The decoder never holds more than `max_frame` bytes of one frame: a frame
//! that grows past it is an error at once (the connection is closed), so a
//! sender cannot make the receiver buffer without bound. Whitespace between
//! frames is tolerated (some senders add a line feed); any other byte outside
//! a frame is a protocol error.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

pub const START: u8 = 0x0B;
pub const END: u8 = 0x1C;
pub const CR: u8 = 0x0D;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("frame larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("byte 0x{byte:02x} outside a frame (expected 0x0B)")]
    OutsideFrame { byte: u8 },
    #[error("connection closed inside a frame ({buffered} bytes unterminated)")]
    Truncated { buffered: usize },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Decodes and encodes MLLP frames.
#[derive(Debug, Clone)]
pub struct MllpCodec {
    max_frame: usize,
    /// How far the current frame has been scanned for FS, so a slow sender's
    /// bytes are looked at once, not once per read.
    scanned: usize,
}

impl MllpCodec {
    pub fn new(max_frame: usize) -> Self {
        MllpCodec { max_frame, scanned: 0 }
    }
}

impl Decoder for MllpCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if self.scanned == 0 {
            // Skip whitespace between frames, then expect VT.
            let ws = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
            buf.advance(ws);
            match buf.first() {
                None => return Ok(None),
                Some(&START) => {}
                Some(&byte) => return Err(FrameError::OutsideFrame { byte }),
            }
        }
        // Look for FS CR after VT, resuming where the last call stopped. A
        // loop, not recursion: a frame of many FS bytes without CR is input
        // the sender controls, and must cost neither stack nor rescans.
        let mut from = self.scanned.max(1);
        loop {
            let Some(fs) = memchr::memchr(END, &buf[from..]).map(|i| from + i) else {
                self.scanned = buf.len();
                self.check_size(buf)?;
                return Ok(None);
            };
            if fs + 1 >= buf.len() {
                // FS is the last byte so far: wait for the CR.
                self.scanned = fs;
                self.check_size(buf)?;
                return Ok(None);
            }
            if buf[fs + 1] != CR {
                // FS not followed by CR is data (lenient): keep scanning.
                from = fs + 1;
                if from - 1 > self.max_frame {
                    return Err(FrameError::TooLarge { max: self.max_frame });
                }
                continue;
            }
            if fs - 1 > self.max_frame {
                return Err(FrameError::TooLarge { max: self.max_frame });
            }
            let mut frame = buf.split_to(fs + 2);
            frame.advance(1);
            frame.truncate(fs - 1);
            self.scanned = 0;
            return Ok(Some(frame.freeze()));
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.iter().all(u8::is_ascii_whitespace) => Ok(None),
            None => Err(FrameError::Truncated { buffered: buf.len() }),
        }
    }
}

impl MllpCodec {
    fn check_size(&self, buf: &BytesMut) -> Result<(), FrameError> {
        // VT + payload + FS CR
        if buf.len() > self.max_frame + 3 {
            Err(FrameError::TooLarge { max: self.max_frame })
        } else {
            Ok(())
        }
    }
}

impl<T: AsRef<[u8]>> Encoder<T> for MllpCodec {
    type Error = FrameError;

    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), FrameError> {
        let data = item.as_ref();
        dst.reserve(data.len() + 3);
        dst.put_u8(START);
        dst.put_slice(data);
        dst.put_u8(END);
        dst.put_u8(CR);
        Ok(())
    }
}

/// One frame as bytes, for writers that do not use the codec.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(data.len() + 3);
    v.push(START);
    v.extend_from_slice(data);
    v.push(END);
    v.push(CR);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut MllpCodec, input: &[u8]) -> Result<Vec<Bytes>, FrameError> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(f) = codec.decode(&mut buf)? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn frames_round_trip_and_split_reads_join() {
        let mut codec = MllpCodec::new(1024);
        let mut wire = BytesMut::new();
        codec.encode(b"MSH|one", &mut wire).expect("encode");
        wire.extend_from_slice(b"\n");
        codec.encode(b"MSH|two\x1cinside", &mut wire).expect("encode");
        let all = wire.to_vec();
        // Byte by byte, as a slow sender would.
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for b in &all {
            buf.put_u8(*b);
            while let Some(f) = codec.decode(&mut buf).expect("decode") {
                frames.push(f);
            }
        }
        assert_eq!(frames, [&b"MSH|one"[..], &b"MSH|two\x1cinside"[..]]);
    }

    #[test]
    fn an_oversized_frame_is_refused_before_it_is_buffered() {
        let mut codec = MllpCodec::new(16);
        let mut buf = BytesMut::from(&b"\x0b0123456789"[..]);
        assert!(codec.decode(&mut buf).expect("partial").is_none());
        buf.extend_from_slice(b"0123456789");
        assert!(matches!(codec.decode(&mut buf), Err(FrameError::TooLarge { max: 16 })));
        let mut codec = MllpCodec::new(4);
        assert!(matches!(
            decode_all(&mut codec, b"\x0bMSH|x\x1c\r"),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(
            decode_all(&mut MllpCodec::new(5), b"\x0bMSH|x\x1c\r")
                .expect("fits")
                .len(),
            1
        );
    }

    /// Hardening item 1 (failed on 305005c: stack overflow, the process aborted).
    #[test]
    fn many_fs_bytes_without_cr_neither_recurse_nor_rescan() {
        let mut input = vec![START];
        input.extend(std::iter::repeat_n(END, 200_000));
        // On a small stack, as a connection task has: recursion would overflow it.
        let handle = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let mut codec = MllpCodec::new(1 << 20);
                let mut buf = BytesMut::from(&input[..]);
                let first = codec.decode(&mut buf).map(|f| f.is_none());
                buf.extend_from_slice(b"MSH|x");
                buf.extend_from_slice(&[END, CR]);
                let frame = codec.decode(&mut buf).expect("terminated").expect("a frame");
                (first.expect("no error yet"), frame.len())
            })
            .expect("thread");
        let (waiting, len) = handle.join().expect("no stack overflow");
        assert!(waiting, "an unterminated frame waits for more bytes");
        assert_eq!(len, 200_000 + "MSH|x".len());
        // And past max_frame, FS bytes without CR are refused as too large.
        let mut codec = MllpCodec::new(1000);
        let mut big = vec![START];
        big.extend(std::iter::repeat_n(END, 5000));
        big.push(b'x');
        assert!(matches!(decode_all(&mut codec, &big), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn garbage_outside_a_frame_is_an_error() {
        let mut codec = MllpCodec::new(64);
        assert!(matches!(
            decode_all(&mut codec, b"GET / HTTP/1.1\r\n"),
            Err(FrameError::OutsideFrame { byte: b'G' })
        ));
    }

    #[test]
    fn eof_inside_a_frame_is_reported() {
        let mut codec = MllpCodec::new(64);
        let mut buf = BytesMut::from(&b"\x0bMSH|half"[..]);
        assert!(matches!(codec.decode_eof(&mut buf), Err(FrameError::Truncated { .. })));
        let mut buf = BytesMut::from(&b"\r\n"[..]);
        assert!(MllpCodec::new(64).decode_eof(&mut buf).expect("clean").is_none());
    }
}
