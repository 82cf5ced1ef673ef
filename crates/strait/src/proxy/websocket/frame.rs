//! RFC 6455 frame headers: just enough to know where frames begin and end, to read close
//! frames, and to write the gateway's own close frames. Payloads are never copied here, except
//! a close frame's (at most 125 bytes), which is kept unmasked so its code and reason can be read.
//!
//! [`FrameParser`] is incremental: it is fed whatever bytes arrived, in any split, and reports
//! every frame end at the same stream offset however the bytes were cut. It checks what the
//! relay must refuse (RFC 6455 §5.2, §5.4, §5.5): reserved opcodes, oversized or fragmented
//! control frames, 64-bit lengths with the top bit set, continuation frames out of sequence,
//! and (per [`MaskPolicy`]) frames masked the wrong way. RSV bits are refused unless the
//! handshake negotiated an extension end to end (permessage-deflate uses RSV1), see
//! [`FrameParser::allow_reserved_bits`].

use std::borrow::Cow;

use thiserror::Error;

/// The longest frame header: 2 bytes, a 64-bit length and a mask key.
pub const MAX_HEADER_LEN: usize = 14;
/// The largest control frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// The longest close frame: 2 header bytes, a mask key and the largest control payload.
pub const MAX_CLOSE_FRAME_LEN: usize = 2 + 4 + MAX_CONTROL_PAYLOAD;
/// The longest close reason that fits in a control frame (after the 2-byte code).
pub const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;
/// The code reported for a close frame with no payload ("no status received").
pub const CLOSE_NO_STATUS: u16 = 1005;

/// Frame opcodes defined by RFC 6455; the reserved ones are a [`ProtocolError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            0x0 => Some(Self::Continuation),
            0x1 => Some(Self::Text),
            0x2 => Some(Self::Binary),
            0x8 => Some(Self::Close),
            0x9 => Some(Self::Ping),
            0xA => Some(Self::Pong),
            _ => None,
        }
    }

    /// Close, ping and pong.
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    /// RSV1..RSV3 as the low three bits.
    pub rsv: u8,
    pub opcode: OpCode,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
    /// Header length in bytes (2..=14).
    pub header_len: u8,
}

/// Which masking a direction requires (RFC 6455 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaskPolicy {
    /// Accept both.
    #[default]
    Any,
    /// Frames from a client: must be masked.
    Required,
    /// Frames from a server: must not be masked.
    Forbidden,
}

/// A peer broke the framing rules; the connection must be failed with 1002.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ProtocolError {
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    #[error("control frame payload longer than 125 bytes")]
    ControlFrameTooLong,
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    #[error("64-bit payload length with the most significant bit set")]
    LengthOverflow,
    #[error("continuation frame outside a fragmented message")]
    UnexpectedContinuation,
    #[error("new data frame before the fragmented message finished")]
    UnfinishedMessage,
    #[error("unmasked frame where masking is required")]
    Unmasked,
    #[error("masked frame where masking is forbidden")]
    Masked,
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
}

/// Reported when a frame's last byte has been consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameEnd {
    pub header: FrameHeader,
    /// A data frame with FIN set: the message it belongs to is complete. Control frames are
    /// never messages.
    pub ends_message: bool,
}

/// Incremental frame-boundary tracker for one direction of a WebSocket stream.
#[derive(Debug, Clone)]
pub struct FrameParser {
    policy: MaskPolicy,
    /// RSV1..RSV3 may be set (an extension was negotiated).
    reserved_bits: bool,
    /// Header bytes gathered so far for the frame being started (only while `current` is None).
    hdr: [u8; MAX_HEADER_LEN],
    hdr_len: usize,
    /// The frame whose payload is being consumed.
    current: Option<FrameHeader>,
    remaining: u64,
    /// Payload offset within `current` (selects the mask byte).
    payload_pos: u64,
    /// A fragmented data message is open (its first frame had FIN clear).
    in_message: bool,
    /// Unmasked payload of the latest close frame (allocated when a close frame comes, so
    /// an idle session does not carry 125 bytes per direction).
    close_buf: Vec<u8>,
    /// Bytes consumed in total, and where the frame being parsed started.
    position: u64,
    frame_start: u64,
    /// Once set, every later call fails with it: the stream cannot be resynchronised.
    error: Option<ProtocolError>,
}

impl FrameParser {
    /// A parser that refuses RSV bits (see [`Self::allow_reserved_bits`]).
    pub fn new(policy: MaskPolicy) -> Self {
        Self {
            policy,
            reserved_bits: false,
            hdr: [0; MAX_HEADER_LEN],
            hdr_len: 0,
            current: None,
            remaining: 0,
            payload_pos: 0,
            in_message: false,
            close_buf: Vec::new(),
            position: 0,
            frame_start: 0,
            error: None,
        }
    }

    /// Consumes `input` up to the end of the current frame. Returns the bytes consumed and,
    /// if a frame ended at the last of them, that frame. Stops right after a frame ends, so
    /// call again with the rest. A frame with an empty payload ends as its header completes.
    /// On error the offending frame's header is the one that started at [`Self::frame_start`].
    pub fn advance(&mut self, input: &[u8]) -> Result<(usize, Option<FrameEnd>), ProtocolError> {
        if let Some(err) = self.error {
            return Err(err);
        }
        let mut used = 0;
        if self.current.is_none() {
            let header = match *input {
                // The whole header is in `input` (the usual case): decoded where it lies;
                // one split across reads is gathered first.
                [b0, b1, ..] if self.hdr_len == 0 && input.len() >= header_len(b1) => {
                    self.check_first_bytes(b0, b1).map_err(|e| self.fail(e))?;
                    let header = decode_header(input).map_err(|e| self.fail(e))?;
                    used = usize::from(header.header_len);
                    header
                }
                _ => match self.gather_header(input)? {
                    (n, Some(header)) => {
                        used = n;
                        header
                    }
                    (n, None) => {
                        self.position += n as u64;
                        return Ok((n, None));
                    }
                },
            };
            self.start_frame(header);
        }
        let rest = input.get(used..).unwrap_or_default();
        let take = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(rest.len());
        if let Some(header) = self.current
            && header.opcode == OpCode::Close
        {
            self.collect_close(rest.get(..take).unwrap_or_default(), header.mask);
        }
        self.remaining -= take as u64;
        self.payload_pos += take as u64;
        used += take;
        self.position += used as u64;
        if self.remaining == 0 {
            Ok((used, self.finish_frame()))
        } else {
            Ok((used, None))
        }
    }

    /// A header split across reads: gathers its bytes in `hdr`, checking the first two as
    /// soon as they are there. Returns the bytes of `input` taken and the header once whole.
    fn gather_header(
        &mut self,
        input: &[u8],
    ) -> Result<(usize, Option<FrameHeader>), ProtocolError> {
        let mut used = 0;
        loop {
            let need = match self.hdr {
                _ if self.hdr_len < 2 => 2,
                [_, b1, ..] => header_len(b1),
            };
            if self.hdr_len >= need {
                return match decode_header(&self.hdr) {
                    Ok(header) => Ok((used, Some(header))),
                    Err(e) => Err(self.fail(e)),
                };
            }
            let rest = input.get(used..).unwrap_or_default();
            let take = (need - self.hdr_len).min(rest.len());
            if take == 0 {
                return Ok((used, None));
            }
            if let (Some(dst), Some(src)) = (
                self.hdr.get_mut(self.hdr_len..self.hdr_len + take),
                rest.get(..take),
            ) {
                dst.copy_from_slice(src);
            }
            self.hdr_len += take;
            used += take;
            if self.hdr_len == 2 {
                let [b0, b1, ..] = self.hdr;
                self.check_first_bytes(b0, b1).map_err(|e| self.fail(e))?;
            }
        }
    }

    /// Consumes `n` payload bytes of the data frame under way without seeing them (the
    /// kernel moved them), as [`Self::advance`] would; at most what is left of the frame.
    /// Not for control frames, whose payload the parser keeps.
    pub fn skip_payload(&mut self, n: usize) -> Option<FrameEnd> {
        let header = self.current?;
        if header.opcode.is_control() {
            return None;
        }
        let take = u64::try_from(n).unwrap_or(u64::MAX).min(self.remaining);
        self.remaining -= take;
        self.payload_pos += take;
        self.position += take;
        if self.remaining == 0 {
            self.finish_frame()
        } else {
            None
        }
    }

    /// Payload bytes of the frame under way not consumed yet (0 between frames).
    pub fn payload_left(&self) -> u64 {
        if self.current.is_some() {
            self.remaining
        } else {
            0
        }
    }

    /// The header of a forwarded frame has been completed and its payload is under way: the
    /// stream is in the middle of a frame.
    pub fn in_payload(&self) -> bool {
        self.current.is_some()
    }

    /// Header bytes of the next frame consumed so far (0 at a boundary or inside a payload).
    pub fn held_header_len(&self) -> usize {
        if self.current.is_none() {
            self.hdr_len
        } else {
            0
        }
    }

    /// The header of the frame whose payload is being consumed.
    pub fn header(&self) -> Option<FrameHeader> {
        self.current
    }

    /// No frame is partially consumed.
    pub fn at_boundary(&self) -> bool {
        self.current.is_none() && self.hdr_len == 0
    }

    /// Total bytes consumed.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Stream offset where the frame being parsed (or the offending one) started.
    pub fn frame_start(&self) -> u64 {
        self.frame_start
    }

    /// Unmasked payload of the latest close frame (complete once its [`FrameEnd`] is reported).
    pub fn close_payload(&self) -> &[u8] {
        &self.close_buf
    }

    fn fail(&mut self, err: ProtocolError) -> ProtocolError {
        self.error = Some(err);
        err
    }

    /// Lets frames carry RSV bits: the handshake negotiated an extension that defines them
    /// (RFC 6455 §5.2), which the gateway relays without reading.
    pub fn allow_reserved_bits(mut self, allowed: bool) -> Self {
        self.reserved_bits = allowed;
        self
    }

    /// Checks everything the first two bytes decide, before the rest of the header arrives.
    fn check_first_bytes(&self, b0: u8, b1: u8) -> Result<(), ProtocolError> {
        let fin = b0 & 0x80 != 0;
        if b0 & 0x70 != 0 && !self.reserved_bits {
            return Err(ProtocolError::ReservedBits);
        }
        let bits = b0 & 0x0F;
        let opcode = OpCode::from_bits(bits).ok_or(ProtocolError::ReservedOpcode(bits))?;
        if opcode.is_control() {
            if !fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if usize::from(b1 & 0x7F) > MAX_CONTROL_PAYLOAD {
                return Err(ProtocolError::ControlFrameTooLong);
            }
        }
        match opcode {
            OpCode::Continuation if !self.in_message => {
                return Err(ProtocolError::UnexpectedContinuation);
            }
            OpCode::Text | OpCode::Binary if self.in_message => {
                return Err(ProtocolError::UnfinishedMessage);
            }
            _ => {}
        }
        let masked = b1 & 0x80 != 0;
        match self.policy {
            MaskPolicy::Required if !masked => Err(ProtocolError::Unmasked),
            MaskPolicy::Forbidden if masked => Err(ProtocolError::Masked),
            _ => Ok(()),
        }
    }

    fn start_frame(&mut self, header: FrameHeader) {
        if !header.opcode.is_control() {
            self.in_message = !header.fin;
        }
        if header.opcode == OpCode::Close {
            self.close_buf.clear();
        }
        self.hdr_len = 0;
        self.current = Some(header);
        self.remaining = header.payload_len;
        self.payload_pos = 0;
    }

    fn finish_frame(&mut self) -> Option<FrameEnd> {
        let header = self.current.take()?;
        self.frame_start = self.position;
        Some(FrameEnd {
            header,
            ends_message: !header.opcode.is_control() && header.fin,
        })
    }

    fn collect_close(&mut self, chunk: &[u8], mask: Option<[u8; 4]>) {
        for (i, &byte) in chunk.iter().enumerate() {
            let pos = self.payload_pos + i as u64;
            let key = mask.map_or(0, |m| m.get((pos % 4) as usize).copied().unwrap_or(0));
            if self.close_buf.len() < MAX_CONTROL_PAYLOAD {
                self.close_buf.push(byte ^ key);
            }
        }
    }
}

/// The length of a header whose second byte is `b1`.
fn header_len(b1: u8) -> usize {
    let ext = match b1 & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    2 + ext + mask
}

/// `N` bytes of `h` from `at` (zeros past its end: the caller checked the length).
fn bytes_at<const N: usize>(h: &[u8], at: usize) -> [u8; N] {
    h.get(at..at + N)
        .and_then(|b| <[u8; N]>::try_from(b).ok())
        .unwrap_or([0; N])
}

/// Decodes the complete header at the start of `h` (first bytes already checked).
fn decode_header(h: &[u8]) -> Result<FrameHeader, ProtocolError> {
    let [b0, b1] = bytes_at(h, 0);
    let bits = b0 & 0x0F;
    let opcode = OpCode::from_bits(bits).ok_or(ProtocolError::ReservedOpcode(bits))?;
    let (payload_len, mut at) = match b1 & 0x7F {
        126 => {
            let [a, b] = bytes_at(h, 2);
            (u64::from(u16::from_be_bytes([a, b])), 4)
        }
        127 => {
            let len = u64::from_be_bytes(bytes_at(h, 2));
            if len >> 63 != 0 {
                return Err(ProtocolError::LengthOverflow);
            }
            (len, 10)
        }
        len => (u64::from(len), 2),
    };
    let mask = if b1 & 0x80 != 0 {
        let key = bytes_at(h, at);
        at += 4;
        Some(key)
    } else {
        None
    };
    Ok(FrameHeader {
        fin: b0 & 0x80 != 0,
        rsv: (b0 >> 4) & 0x07,
        opcode,
        mask,
        payload_len,
        header_len: at as u8,
    })
}

/// Reads a close payload: `None` when it carries no status code (empty, or a lone byte).
/// Invalid UTF-8 in the reason is replaced, not rejected: the relay only reports it.
pub fn parse_close_payload(payload: &[u8]) -> Option<(u16, Cow<'_, str>)> {
    match payload {
        [hi, lo, reason @ ..] => Some((
            u16::from_be_bytes([*hi, *lo]),
            String::from_utf8_lossy(reason),
        )),
        _ => None,
    }
}

/// A control frame the gateway writes itself (a close or a ping), on the stack.
#[derive(Debug, Clone, Copy)]
pub struct EncodedControl {
    bytes: [u8; MAX_CLOSE_FRAME_LEN],
    len: usize,
}

impl EncodedControl {
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }

    fn push(&mut self, byte: u8) {
        if let Some(slot) = self.bytes.get_mut(self.len) {
            *slot = byte;
            self.len += 1;
        }
    }

    /// A final frame with `opcode_bits` and `payload` (at most 125 bytes, the rest is cut),
    /// masked with `mask` when given (frames toward a server must be masked).
    fn new(opcode_bits: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Self {
        let payload = payload.get(..MAX_CONTROL_PAYLOAD).unwrap_or(payload);
        let mut out = EncodedControl {
            bytes: [0; MAX_CLOSE_FRAME_LEN],
            len: 0,
        };
        out.push(0x80 | opcode_bits);
        out.push(if mask.is_some() { 0x80 } else { 0 } | payload.len() as u8);
        let key = mask.unwrap_or_default();
        if mask.is_some() {
            key.iter().for_each(|&b| out.push(b));
        }
        for (i, byte) in payload.iter().enumerate() {
            out.push(byte ^ key.get(i % 4).copied().unwrap_or(0));
        }
        out
    }
}

/// Encodes a close frame with `code` and `reason` (cut at a character boundary to fit 123
/// bytes), masked with `mask` when given.
pub fn encode_close(code: u16, reason: &str, mask: Option<[u8; 4]>) -> EncodedControl {
    let mut cut = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let reason = reason.get(..cut).unwrap_or_default().as_bytes();
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    let [hi, lo] = code.to_be_bytes();
    payload[0] = hi;
    payload[1] = lo;
    let len = 2 + reason.len();
    if let Some(rest) = payload.get_mut(2..len) {
        rest.copy_from_slice(reason);
    }
    EncodedControl::new(0x8, payload.get(..len).unwrap_or_default(), mask)
}

/// Encodes a ping frame carrying `payload` (at most 125 bytes), masked with `mask` when given.
pub fn encode_ping(payload: &[u8], mask: Option<[u8; 4]>) -> EncodedControl {
    EncodedControl::new(0x9, payload, mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Builds a frame: header with the shortest length encoding, payload masked when a key
    /// is given.
    fn frame(b0: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![b0];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n <= 125 => out.push(m | n as u8),
            n if n <= 0xFFFF => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(m | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let key = mask.unwrap_or_default();
        if mask.is_some() {
            out.extend_from_slice(&key);
        }
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    /// Frame ends (stream offset, end) and the first error (offending frame start, error),
    /// feeding `input` cut at `cuts`.
    type Run = (Vec<(u64, FrameEnd)>, Option<(u64, ProtocolError)>);

    fn run(policy: MaskPolicy, input: &[u8], cuts: &[usize]) -> Run {
        let mut p = FrameParser::new(policy);
        let mut ends = Vec::new();
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        bounds.push(0);
        bounds.push(input.len());
        bounds.sort_unstable();
        for pair in bounds.windows(2) {
            let mut chunk = &input[pair[0]..pair[1]];
            loop {
                match p.advance(chunk) {
                    Err(e) => return (ends, Some((p.frame_start(), e))),
                    Ok((n, end)) => {
                        chunk = &chunk[n..];
                        if let Some(end) = end {
                            ends.push((p.position(), end));
                        } else if chunk.is_empty() {
                            break;
                        }
                    }
                }
            }
        }
        (ends, None)
    }

    #[test]
    fn small_unmasked_frame() {
        let bytes = frame(0x81, b"hello", None);
        let (ends, err) = run(MaskPolicy::Any, &bytes, &[]);
        assert_eq!(err, None);
        assert_eq!(ends.len(), 1);
        let (at, end) = ends[0];
        assert_eq!(at, 7);
        assert!(end.ends_message);
        assert_eq!(end.header.opcode, OpCode::Text);
        assert_eq!(end.header.payload_len, 5);
        assert_eq!(end.header.header_len, 2);
        assert_eq!(end.header.mask, None);
    }

    #[test]
    fn skipped_payload_counts_as_consumed() {
        let first = frame(0x02, &[5u8; 10], None);
        let mut p = FrameParser::new(MaskPolicy::Any);
        assert_eq!(p.advance(&first[..2]), Ok((2, None)), "header only");
        assert_eq!(p.payload_left(), 10);
        assert_eq!(p.skip_payload(4), None);
        assert_eq!(p.payload_left(), 6);
        let end = p.skip_payload(100).expect("the frame ends, no further");
        assert!(!end.ends_message, "FIN clear: the message goes on");
        assert_eq!((p.position(), p.payload_left()), (12, 0));
        assert!(p.at_boundary());
        // The next frame parses as if the payload had been read.
        let last = frame(0x80, b"ok", None);
        let (n, end) = p.advance(&last).expect("continuation parses");
        assert_eq!(n, 4);
        assert!(end.expect("ends").ends_message);
        // A control frame's payload is never skipped: the parser keeps it.
        let close = frame(0x88, &[3, 232], None);
        assert_eq!(p.advance(&close[..2]), Ok((2, None)));
        assert_eq!(p.skip_payload(2), None);
        assert_eq!(p.payload_left(), 2);
    }

    #[test]
    fn extended_lengths_and_mask() {
        let p16 = vec![7u8; 300];
        let p64 = vec![9u8; 70_000];
        let mut bytes = frame(0x82, &p16, Some([1, 2, 3, 4]));
        bytes.extend(frame(0x82, &p64, None));
        let (ends, err) = run(MaskPolicy::Any, &bytes, &[]);
        assert_eq!(err, None);
        assert_eq!(ends.len(), 2);
        assert_eq!(ends[0].1.header.header_len, 8);
        assert_eq!(ends[0].1.header.payload_len, 300);
        assert_eq!(ends[0].1.header.mask, Some([1, 2, 3, 4]));
        assert_eq!(ends[0].0, 308);
        assert_eq!(ends[1].1.header.header_len, 10);
        assert_eq!(ends[1].1.header.payload_len, 70_000);
        assert_eq!(ends[1].0, bytes.len() as u64);
    }

    #[test]
    fn empty_payload_ends_with_header() {
        let mut p = FrameParser::new(MaskPolicy::Any);
        let bytes = frame(0x89, b"", None);
        let (n, end) = p.advance(&bytes).unwrap();
        assert_eq!(n, 2);
        assert_eq!(end.map(|e| e.header.opcode), Some(OpCode::Ping));
        assert!(p.at_boundary());
    }

    #[test]
    fn byte_at_a_time_holds_header_then_enters_payload() {
        let bytes = frame(0x82, &[5u8; 200], Some([9, 9, 9, 9]));
        let mut p = FrameParser::new(MaskPolicy::Required);
        for (i, b) in bytes.iter().enumerate() {
            let (n, end) = p.advance(std::slice::from_ref(b)).unwrap();
            assert_eq!(n, 1);
            if i < 7 {
                assert_eq!(p.held_header_len(), i + 1);
                assert!(!p.in_payload());
            } else if i < bytes.len() - 1 {
                assert!(p.in_payload());
                assert_eq!(p.held_header_len(), 0);
                assert!(end.is_none());
            } else {
                assert!(end.is_some());
                assert!(p.at_boundary());
            }
        }
    }

    #[test]
    fn fragmented_message_counts_once() {
        let mut bytes = frame(0x01, b"he", None);
        bytes.extend(frame(0x89, b"ping", None));
        bytes.extend(frame(0x00, b"ll", None));
        bytes.extend(frame(0x80, b"o", None));
        let (ends, err) = run(MaskPolicy::Forbidden, &bytes, &[3, 9]);
        assert_eq!(err, None);
        let flags: Vec<bool> = ends.iter().map(|(_, e)| e.ends_message).collect();
        assert_eq!(flags, [false, false, false, true]);
    }

    #[test]
    fn close_payload_is_unmasked() {
        let enc = encode_close(1000, "bye", Some([0xAA, 0x55, 0x0F, 0xF0]));
        let mut p = FrameParser::new(MaskPolicy::Required);
        let bytes = enc.as_bytes();
        let (n1, e1) = p.advance(&bytes[..8]).unwrap();
        assert_eq!((n1, e1), (8, None));
        let (n2, e2) = p.advance(&bytes[8..]).unwrap();
        assert_eq!(n2, bytes.len() - 8);
        assert_eq!(e2.map(|e| e.header.opcode), Some(OpCode::Close));
        let (code, reason) = parse_close_payload(p.close_payload()).unwrap();
        assert_eq!((code, reason.as_ref()), (1000, "bye"));
    }

    #[test]
    fn encode_close_unmasked_layout_and_truncation() {
        let enc = encode_close(1001, "idle timeout", None);
        let mut expected = vec![0x88, 14, 0x03, 0xE9];
        expected.extend_from_slice(b"idle timeout");
        assert_eq!(enc.as_bytes(), expected.as_slice());

        // 62 two-byte characters = 124 bytes: cut to 61 characters (122 bytes), not mid-char.
        let long = "é".repeat(62);
        let enc = encode_close(1000, &long, None);
        assert_eq!(enc.as_bytes().len(), 2 + 2 + 122);
        let mut p = FrameParser::new(MaskPolicy::Forbidden);
        let (_, end) = p.advance(enc.as_bytes()).unwrap();
        assert!(end.is_some());
        let (_, reason) = parse_close_payload(p.close_payload()).unwrap();
        assert_eq!(reason, "é".repeat(61));
    }

    #[test]
    fn close_without_status() {
        assert_eq!(parse_close_payload(&[]), None);
        assert_eq!(parse_close_payload(&[3]), None);
    }

    fn first_error(policy: MaskPolicy, bytes: &[u8]) -> Option<(u64, ProtocolError)> {
        run(policy, bytes, &[]).1
    }

    #[test]
    fn violations() {
        let ok = frame(0x81, b"ok", None);
        let with = |bad: &[u8]| [ok.as_slice(), bad].concat();
        let cases: Vec<(Vec<u8>, ProtocolError)> = vec![
            (with(&[0x83, 0]), ProtocolError::ReservedOpcode(3)),
            (with(&[0x8B, 0]), ProtocolError::ReservedOpcode(0xB)),
            (
                with(&[0x89, 126, 0, 126]),
                ProtocolError::ControlFrameTooLong,
            ),
            (with(&[0x09, 0]), ProtocolError::FragmentedControlFrame),
            (
                with(&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1]),
                ProtocolError::LengthOverflow,
            ),
            (with(&[0x80, 0]), ProtocolError::UnexpectedContinuation),
            (with(&[0x01, 0, 0x81, 0]), ProtocolError::UnfinishedMessage),
        ];
        for (bytes, expected) in cases {
            let start = if expected == ProtocolError::UnfinishedMessage {
                6
            } else {
                4
            };
            assert_eq!(
                first_error(MaskPolicy::Any, &bytes),
                Some((start, expected)),
                "{bytes:?}"
            );
        }
        assert_eq!(
            first_error(MaskPolicy::Required, &frame(0x81, b"x", None)),
            Some((0, ProtocolError::Unmasked))
        );
        assert_eq!(
            first_error(MaskPolicy::Forbidden, &frame(0x81, b"x", Some([1; 4]))),
            Some((0, ProtocolError::Masked))
        );
    }

    #[test]
    fn reserved_bits_pass_only_with_a_negotiated_extension() {
        for b0 in [0xC1u8, 0xA2, 0x91, 0xF1] {
            let bytes = [frame(0x81, b"ok", None), frame(b0, b"zz", None)].concat();
            assert_eq!(
                first_error(MaskPolicy::Any, &bytes),
                Some((4, ProtocolError::ReservedBits)),
                "{b0:#x}"
            );
            let mut allowed = FrameParser::new(MaskPolicy::Any).allow_reserved_bits(true);
            let (used, end) = allowed.advance(&bytes[4..]).expect("accepted");
            assert_eq!(used, 4);
            let end = end.expect("the frame ends");
            assert_eq!(end.header.rsv, (b0 >> 4) & 0x07);
        }
    }

    #[test]
    fn error_is_sticky() {
        let mut p = FrameParser::new(MaskPolicy::Any);
        assert_eq!(p.advance(&[0x83]), Ok((1, None)));
        assert_eq!(p.advance(&[0x00]), Err(ProtocolError::ReservedOpcode(3)));
        assert_eq!(
            p.advance(&frame(0x81, b"x", None)),
            Err(ProtocolError::ReservedOpcode(3))
        );
    }

    /// A valid frame for the property tests: (first byte, payload, mask).
    fn arb_frame() -> impl Strategy<Value = (u8, Vec<u8>, Option<[u8; 4]>)> {
        let data = (
            prop::sample::select(vec![0x81u8, 0x82]),
            prop::collection::vec(any::<u8>(), 0..400),
        );
        let control = (
            prop::sample::select(vec![0x88u8, 0x89, 0x8A]),
            prop::collection::vec(any::<u8>(), 0..=125),
        );
        (prop_oneof![data, control], any::<Option<[u8; 4]>>())
            .prop_map(|((b0, payload), mask)| (b0, payload, mask))
    }

    proptest! {
        /// Arbitrary bytes, arbitrarily split: never panics, and the frame ends and the first
        /// error are the same as for the unsplit input.
        #[test]
        fn any_split_same_result(
            input in prop::collection::vec(any::<u8>(), 0..600),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let whole = run(MaskPolicy::Any, &input, &[]);
            let split = run(MaskPolicy::Any, &input, &cuts);
            prop_assert_eq!(whole, split);
        }

        /// Valid frame sequences, arbitrarily split: every frame ends exactly where it was
        /// built to end, and close payloads come back unmasked.
        #[test]
        fn valid_frames_found_at_their_ends(
            frames in prop::collection::vec(arb_frame(), 1..8),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let mut bytes = Vec::new();
            let mut expected = Vec::new();
            for (b0, payload, mask) in &frames {
                bytes.extend(frame(*b0, payload, *mask));
                expected.push(bytes.len() as u64);
            }
            let (ends, err) = run(MaskPolicy::Any, &bytes, &cuts);
            prop_assert_eq!(err, None);
            let at: Vec<u64> = ends.iter().map(|(at, _)| *at).collect();
            prop_assert_eq!(at, expected);
            for ((_, end), (_, payload, mask)) in ends.iter().zip(&frames) {
                prop_assert_eq!(end.header.payload_len, payload.len() as u64);
                prop_assert_eq!(end.header.mask, *mask);
            }
            // The last close frame's payload, collected across the splits.
            if let Some((_, payload, _)) = frames.iter().rev().find(|(b0, ..)| *b0 == 0x88) {
                let mut p = FrameParser::new(MaskPolicy::Any);
                let mut rest = bytes.as_slice();
                while !rest.is_empty() {
                    let (n, _) = p.advance(&rest[..rest.len().min(3)]).unwrap();
                    rest = &rest[n..];
                }
                prop_assert_eq!(p.close_payload(), payload.as_slice());
            }
        }
    }
}
