//! A lean WebSocket client for load generation: the upgrade handshake, pre-built masked frames
//! sent as-is, and a frame reader over one reused buffer (no per-message allocation). It binds
//! each socket to a chosen loopback source address so runs can spread over 127.0.0.x.
//! It owns nothing about measuring; `ws_load` builds the modes on top of it.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Largest handshake answer head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest message the reader accepts (the echo backend's own limit).
const MAX_MESSAGE: usize = 64 << 20;

const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;

/// Where the load goes: `ws://host:port/path`, plus the source addresses to spread over.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
    /// Client sockets bind to `sources[i % len]` port 0 before connecting.
    pub sources: Vec<Ipv4Addr>,
}

impl Target {
    /// Parses `ws://127.0.0.1:8080/path`; spreads over `127.0.0.1 ..= 127.0.0.{source_count}`.
    pub fn parse(url: &str, source_count: u8) -> Result<Target> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| anyhow!("{url:?} is not a ws:// URL (only plain ws:// is supported)"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr: SocketAddr = authority.parse().with_context(|| {
            format!("{url:?}: the host must be an IP address with a port, e.g. 127.0.0.1:8080")
        })?;
        let sources = (0..source_count.max(1))
            .map(|i| Ipv4Addr::new(127, 0, 0, 1 + i))
            .collect();
        Ok(Target {
            addr,
            host: authority.to_owned(),
            path: path.to_owned(),
            sources,
        })
    }

    /// Source address for the `i`-th connection.
    pub fn source(&self, i: usize) -> Ipv4Addr {
        i.checked_rem(self.sources.len())
            .and_then(|at| self.sources.get(at))
            .copied()
            .unwrap_or(Ipv4Addr::LOCALHOST)
    }
}

/// A client frame, masked once and then sent many times.
pub struct Frame(Vec<u8>);

impl Frame {
    /// A final binary frame carrying `payload`, masked with `mask`.
    pub fn binary(payload: &[u8], mask: [u8; 4]) -> Frame {
        Frame::build(OP_BINARY, payload, mask)
    }

    fn build(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Frame {
        let len = payload.len();
        let mut out = Vec::with_capacity(len + 14);
        out.push(0x80 | opcode);
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= u16::MAX as usize {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        Frame(out)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A mask key that differs per connection (clients must mask; the key need not be secret here).
pub fn mask_for(seed: u64) -> [u8; 4] {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    x ^= x >> 29;
    (x as u32).to_le_bytes()
}

/// What the reader found.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A whole text or binary message of this many payload bytes.
    Message(usize),
    /// A ping with this payload (the owner of the write half answers it).
    Ping(Vec<u8>),
    /// The server sent a close frame.
    Close,
}

/// Reads frames from one half of a connection into a buffer that is reused.
pub struct FrameReader<R> {
    io: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    fn new(io: R, leftover: &[u8]) -> FrameReader<R> {
        let mut buf = leftover.to_vec();
        buf.resize(4096.max(leftover.len()), 0);
        FrameReader {
            io,
            buf,
            start: 0,
            end: leftover.len(),
        }
    }

    /// The bytes read and not yet consumed.
    fn unread(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }

    /// Makes at least `n` unread bytes available.
    async fn fill(&mut self, n: usize) -> Result<()> {
        if self.end - self.start >= n {
            return Ok(());
        }
        if self.start + n > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if n > self.buf.len() {
                self.buf.resize(n, 0);
            }
        }
        while self.end - self.start < n {
            let space = self.buf.get_mut(self.end..).unwrap_or_default();
            let read = self.io.read(space).await?;
            if read == 0 {
                bail!("the server closed the connection");
            }
            self.end += read;
        }
        Ok(())
    }

    /// Reads frames until a whole data message, a ping or a close; pongs are skipped.
    /// The payload is consumed and dropped; only its length is reported.
    pub async fn next(&mut self) -> Result<Incoming> {
        let mut message_len = 0usize;
        // Bounded: a message of MAX_MESSAGE bytes in one-byte fragments is the worst case.
        for _ in 0..=MAX_MESSAGE {
            self.fill(2).await?;
            let &[b0, b1, ..] = self.unread() else {
                bail!("a frame header went missing");
            };
            let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0F);
            if b1 & 0x80 != 0 {
                bail!("the server sent a masked frame, which servers must not");
            }
            let (header, len) = match b1 & 0x7F {
                126 => {
                    self.fill(4).await?;
                    let &[_, _, hi, lo, ..] = self.unread() else {
                        bail!("a frame header went missing");
                    };
                    (4, u16::from_be_bytes([hi, lo]) as usize)
                }
                127 => {
                    self.fill(10).await?;
                    let Some(Ok(be)) = self.unread().get(2..10).map(<[u8; 8]>::try_from) else {
                        bail!("a frame header went missing");
                    };
                    (10, u64::from_be_bytes(be) as usize)
                }
                short => (2, short as usize),
            };
            if len > MAX_MESSAGE {
                bail!("the server sent a frame of {len} bytes, more than this client accepts");
            }
            self.fill(header + len).await?;
            let ping = (opcode == OP_PING)
                .then(|| self.unread().get(header..header + len).map(<[u8]>::to_vec))
                .flatten();
            self.start += header + len;
            match opcode {
                OP_TEXT | OP_BINARY | OP_CONT => {
                    message_len += len;
                    if fin {
                        return Ok(Incoming::Message(message_len));
                    }
                }
                OP_CLOSE => return Ok(Incoming::Close),
                OP_PING => return Ok(Incoming::Ping(ping.unwrap_or_default())),
                _ => {} // pong or reserved: skip
            }
        }
        bail!("the server sent more fragments than any message may have")
    }
}

/// An open WebSocket connection after a successful 101.
pub struct WsConn {
    pub reader: FrameReader<OwnedReadHalf>,
    pub writer: OwnedWriteHalf,
    mask: [u8; 4],
}

impl WsConn {
    /// TCP connect from `source` (port 0) and the upgrade handshake, with one overall time limit.
    pub async fn connect(
        target: &Target,
        source: Ipv4Addr,
        seed: u64,
        limit: Duration,
    ) -> Result<WsConn> {
        tokio::time::timeout(limit, WsConn::connect_inner(target, source, seed))
            .await
            .map_err(|_| {
                anyhow!(
                    "no WebSocket handshake with {} within {limit:?}",
                    target.addr
                )
            })?
    }

    async fn connect_inner(target: &Target, source: Ipv4Addr, seed: u64) -> Result<WsConn> {
        let socket = TcpSocket::new_v4().context("cannot create a socket (out of descriptors?)")?;
        socket
            .bind(SocketAddr::from((source, 0)))
            .with_context(|| {
                format!("cannot bind a client socket to {source}:0 (out of ephemeral ports?)")
            })?;
        let stream = socket
            .connect(target.addr)
            .await
            .with_context(|| format!("cannot connect to {} from {source}", target.addr))?;
        stream.set_nodelay(true)?;
        let (read, mut writer) = stream.into_split();
        let key = generate_key();
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            target.path, target.host
        );
        writer.write_all(request.as_bytes()).await?;
        let mut reader = FrameReader::new(read, &[]);
        let head_len = read_head(&mut reader).await?;
        let head = reader.buf.get(..head_len).unwrap_or_default();
        let head = String::from_utf8_lossy(head).into_owned();
        reader.start = head_len;
        check_101(&head, &derive_accept_key(key.as_bytes()))?;
        Ok(WsConn {
            reader,
            writer,
            mask: mask_for(seed),
        })
    }

    pub fn mask(&self) -> [u8; 4] {
        self.mask
    }

    pub async fn send(&mut self, frame: &Frame) -> Result<()> {
        self.writer.write_all(frame.bytes()).await?;
        Ok(())
    }

    /// Next data message's length; answers pings on the way; a close is an error.
    pub async fn recv(&mut self) -> Result<usize> {
        for _ in 0..1024 {
            match self.reader.next().await? {
                Incoming::Message(len) => return Ok(len),
                Incoming::Ping(payload) => {
                    let pong = Frame::build(0xA, &payload, self.mask);
                    self.send(&pong).await?;
                }
                Incoming::Close => bail!("the server closed the WebSocket session"),
            }
        }
        bail!("the server sent 1024 pings without a message")
    }

    /// One message out and its echo back; checks the echoed length.
    pub async fn round_trip(&mut self, frame: &Frame, len: usize) -> Result<()> {
        self.send(frame).await?;
        let got = self.recv().await?;
        if got != len {
            bail!("sent {len} bytes, the echo returned {got}");
        }
        Ok(())
    }

    /// Close handshake started by the client, so the server side closes TCP first (and keeps
    /// the TIME_WAIT, not the client's ephemeral port). Bounded by `limit`.
    pub async fn close(mut self, limit: Duration) {
        let close = Frame::build(OP_CLOSE, &1000u16.to_be_bytes(), self.mask);
        let _ = tokio::time::timeout(limit, async {
            self.send(&close).await?;
            for _ in 0..1024 {
                if let Incoming::Close = self.reader.next().await? {
                    break;
                }
            }
            // Wait for the server's FIN.
            let mut sink = [0u8; 64];
            while self.reader.io.read(&mut sink).await? > 0 {}
            anyhow::Ok(())
        })
        .await;
    }
}

/// Reads until the end of the HTTP head; returns its length including the blank line.
async fn read_head<R: AsyncRead + Unpin>(reader: &mut FrameReader<R>) -> Result<usize> {
    let mut scanned = 0;
    for _ in 0..MAX_HEAD {
        if let Some(i) = reader
            .buf
            .get(scanned..reader.end)
            .unwrap_or_default()
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
        {
            return Ok(scanned + i + 4);
        }
        scanned = reader.end.saturating_sub(3);
        if reader.end >= MAX_HEAD {
            break;
        }
        let have = reader.end;
        reader
            .fill(have + 1)
            .await
            .context("the server closed the connection during the handshake")?;
    }
    bail!("the handshake answer head is longer than {MAX_HEAD} bytes")
}

fn check_101(head: &str, expected_accept: &str) -> Result<()> {
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 101") {
        bail!("the server refused the upgrade: {status:?}");
    }
    let accept = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-accept")
            .then(|| value.trim())
    });
    if accept != Some(expected_accept) {
        bail!("the 101 carries a wrong Sec-WebSocket-Accept ({accept:?})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lengths_use_the_three_encodings() {
        assert_eq!(
            Frame::binary(&[0; 10], [1, 2, 3, 4]).bytes().len(),
            2 + 4 + 10
        );
        assert_eq!(
            Frame::binary(&[0; 300], [1, 2, 3, 4]).bytes().len(),
            4 + 4 + 300
        );
        assert_eq!(
            Frame::binary(&[0; 70_000], [1, 2, 3, 4]).bytes().len(),
            10 + 4 + 70_000
        );
    }

    #[tokio::test]
    async fn reader_joins_fragments_and_reports_pings() {
        // Unmasked server frames: "ab" in two fragments, a ping "p", then a close.
        let wire: &[u8] = &[0x02, 1, b'a', 0x80, 1, b'b', 0x89, 1, b'p', 0x88, 0];
        let mut reader = FrameReader::new(wire, &[]);
        assert_eq!(reader.next().await.ok(), Some(Incoming::Message(2)));
        assert_eq!(
            reader.next().await.ok(),
            Some(Incoming::Ping(b"p".to_vec()))
        );
        assert_eq!(reader.next().await.ok(), Some(Incoming::Close));
        assert!(reader.next().await.is_err(), "end of stream is an error");
    }

    #[test]
    fn target_parses_and_spreads_sources() {
        let t = Target::parse("ws://127.0.0.1:9000/x/y", 4).expect("valid");
        assert_eq!(t.path, "/x/y");
        assert_eq!(t.source(5), Ipv4Addr::new(127, 0, 0, 2));
        assert!(Target::parse("http://127.0.0.1:1/", 1).is_err());
    }
}
